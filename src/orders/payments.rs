//! Payments: a reported payment is applied to the order it names (through `decide`)
//! or queued as unmatched with the reason, once per (source, payment id); an
//! operator assigns a queued one.

use chrono::{DateTime, Utc};

use super::step::step_for;
use super::{OrderError, Orders, case};
use crate::domain::OrderId;
use crate::engine::access::Acting;
use crate::engine::payments::{self, PaymentOutcome, PaymentReport, UnmatchedPayment};
use crate::engine::reporting::{self, Reported, Reporter};
use crate::engine::{Actor, History, Rules};
use crate::store::{Loaded, PaymentWrite, Step};

impl Orders {
    /// Applies a payment to its order, or queues it as unmatched with the reason; once
    /// per (source, payment id): a repeat returns the first outcome. Durable when it
    /// returns.
    pub async fn record_payment(
        &self,
        p: &PaymentReport,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<PaymentOutcome, OrderError> {
        self.take_payment(p, None, rules, now).await
    }

    /// `record_payment`; with `reporter`, the payment's order must involve it
    /// (`engine::reporting`), else nothing is recorded. A step that lost a race (its
    /// order moved on, or another daemon recorded the payment first) is taken again
    /// from the start, as every step is.
    pub(super) async fn take_payment(
        &self,
        p: &PaymentReport,
        reporter: Option<Reporter<'_>>,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<PaymentOutcome, OrderError> {
        let _g = self.payment_lock.lock().await;
        self.retrying(|| self.take_payment_once(p, reporter, rules, now)).await
    }

    async fn take_payment_once(
        &self,
        p: &PaymentReport,
        reporter: Option<Reporter<'_>>,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<PaymentOutcome, OrderError> {
        if let Some(mut previous) = self.store.payment(&p.source, &p.payment_id).await? {
            previous.duplicate = true;
            return Ok(previous);
        }
        let by_invoice = match &p.invoice_number {
            Some(n) => self.store.invoice_order(n).await?,
            None => None,
        };
        let unmatched = |order_id: Option<OrderId>, reason: String| {
            let outcome = payments::unmatched(order_id, reason.clone());
            let waiting = UnmatchedPayment { payment: p.clone(), reason: Some(reason), at: now };
            let step = Step {
                payment: Some(PaymentWrite::Reported {
                    source: p.source.clone(),
                    payment_id: p.payment_id.clone(),
                    outcome: outcome.clone(),
                    unmatched: Some(waiting),
                }),
                ..Step::default()
            };
            (outcome, step)
        };
        let target = payments::target(p, by_invoice);
        // Held until the step is committed: a step on the order taken meanwhile (an
        // effect's outcome) would make this one a conflict.
        let _order = match &target {
            Ok(id) => Some(self.lock_order(*id).await),
            Err(_) => None,
        };
        let (outcome, step) = match target {
            Err(reason) => unmatched(None, reason),
            Ok(id) => match self.opened(id).await? {
                None => unmatched(Some(id), format!("order {id} does not exist")),
                Some(rec) => {
                    if let Some(reporter) = reporter {
                        let involvement = self.involvement(&rec, rules).await?;
                        reporting::may_report(reporter, Reported::PaymentReceived, &involvement)?;
                    }
                    let state = rec.state.name();
                    let history = History::default();
                    let actor = Actor::Connector(p.source.clone());
                    match crate::engine::decide(&case(&rec, &history), actor, payments::event(p), rules, now) {
                        Err(e) => unmatched(Some(id), format!("order {id} ({state}): {e}")),
                        Ok(decision) => {
                            let loaded = Loaded::of(&rec);
                            let mut step = step_for(rec, Some(loaded), decision.clone(), now);
                            let after = step.order.as_ref().expect("a decision writes its order").record.state.name();
                            let outcome = payments::matched(id, after, &decision);
                            step.payment = Some(PaymentWrite::Reported {
                                source: p.source.clone(),
                                payment_id: p.payment_id.clone(),
                                outcome: outcome.clone(),
                                unmatched: None,
                            });
                            (outcome, step)
                        }
                    }
                }
            },
        };
        self.commit(vec![step]).await?;
        Ok(outcome)
    }

    /// An operator applies an unmatched payment to an order; the audit names them and
    /// the channel they acted through.
    pub async fn assign_payment(
        &self,
        source: &str,
        payment_id: &str,
        order: OrderId,
        operator: impl Into<Acting>,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<PaymentOutcome, OrderError> {
        let _g = self.payment_lock.lock().await;
        let waiting = self
            .store
            .unmatched_payments()
            .await?
            .into_iter()
            .find(|u| u.payment.source == source && u.payment.payment_id == payment_id)
            .ok_or_else(|| OrderError::NotFound(format!("unmatched payment {source}/{payment_id}")))?;
        let _o = self.lock_order(order).await;
        let rec = self.load(order).await?;
        let history = History::default();
        let Acting { actor, channel } = operator.into();
        let mut decision =
            crate::engine::decide(&case(&rec, &history), actor.clone(), payments::event(&waiting.payment), rules, now)?;
        decision.audit.iter_mut().filter(|e| e.actor == actor).for_each(|e| e.channel = channel);
        let loaded = Loaded::of(&rec);
        let mut step = step_for(rec, Some(loaded), decision.clone(), now);
        let after = step.order.as_ref().expect("a decision writes its order").record.state.name();
        let outcome = payments::matched(order, after, &decision);
        step.payment = Some(PaymentWrite::Assigned {
            source: source.to_owned(),
            payment_id: payment_id.to_owned(),
            outcome: outcome.clone(),
        });
        self.commit(vec![step]).await?;
        Ok(outcome)
    }

    /// Payments no order took, with the reason.
    pub async fn unmatched_payments(&self) -> Result<Vec<UnmatchedPayment>, OrderError> {
        Ok(self.store.unmatched_payments().await?)
    }
}
