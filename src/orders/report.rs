//! Events reported by the systems doing the work (`POST /webhooks/{connector}/events`):
//! the engine's `reporting` rules decide whether the connector may report the event
//! for the order; only then is it applied like any other step.

use chrono::{DateTime, Utc};

use super::{OrderError, Orders};
use crate::domain::{ExternalRef, OrderId};
use crate::engine::payments::{PaymentOutcome, PaymentReport};
use crate::engine::reporting::{self, Involvement, Reported, Reporter};
use crate::engine::{Actor, OrderEvent, Rules};
use crate::store::OrderRecord;

/// The order an event names: by our id, or by a source system's id for it.
#[derive(Clone, Debug)]
pub enum Named {
    Id(OrderId),
    External(ExternalRef),
}

impl Orders {
    /// The connectors `rec` involves (its source, and where it was pushed), from the
    /// record and its audit trail.
    pub(super) async fn involvement(&self, rec: &OrderRecord, rules: &Rules) -> Result<Involvement, OrderError> {
        let events = self.store.events(rec.id).await?;
        Ok(Involvement::of(
            rec.id,
            rec.source.connector.as_str(),
            &rec.references,
            rec.fulfilment.as_ref(),
            events.iter().map(|e| &e.event),
            rules,
        ))
    }

    /// Applies an event `reporter` sent about an order, if the reporting rules let it;
    /// durable when it returns.
    ///
    /// # Errors
    /// `Forbidden` naming the rule when they do not (nothing is recorded); otherwise
    /// as `apply`.
    pub async fn report(
        &self,
        order: Named,
        reporter: Reporter<'_>,
        event: OrderEvent,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<OrderRecord, OrderError> {
        let kind = Reported::of(&event).ok_or_else(|| OrderError::Conflict("not an event connectors report".into()))?;
        // The type first: a connector that may not report it learns nothing of orders.
        reporting::may_report_type(reporter, kind)?;
        let id = match order {
            Named::Id(id) => id,
            Named::External(ext) => {
                self.store.find_external(&ext).await?.ok_or_else(|| OrderError::NotFound(format!("order {ext}")))?
            }
        };
        // An order's involvement only grows (its source never changes; references,
        // tasks and the audit trail are only added to), so what is allowed now stays
        // allowed when the step is taken under the order's lock.
        let rec = self.load(id).await?;
        reporting::may_report(reporter, kind, &self.involvement(&rec, rules).await?)?;
        self.apply(id, Actor::Connector(reporter.connector.to_owned()), event, rules, now).await
    }

    /// A payment `reporter` sent: its order (when one matches) must involve it, and
    /// it must be allowed to report payments; otherwise as `record_payment`.
    ///
    /// # Errors
    /// `Forbidden` naming the rule (nothing is recorded, not even as unmatched).
    pub async fn report_payment(
        &self,
        p: &PaymentReport,
        reporter: Reporter<'_>,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<PaymentOutcome, OrderError> {
        reporting::may_report_type(reporter, Reported::PaymentReceived)?;
        self.take_payment(p, Some(reporter), rules, now).await
    }
}
