//! The scheduler's steps: due timers (approval reminders and escalations, exception
//! deadlines, overdue invoices, dunning), each fired as one step at most once, and
//! due digests, each turned into one mail effect in the same commit that releases
//! its items.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::step::step_for;
use super::{OrderError, Orders, case};
use crate::domain::OrderId;
use crate::engine::effects::DigestItem;
use crate::engine::{Actor, History, Rules};
use crate::store::{DigestChange, DigestKey, EffectId, EffectRecord, Loaded, OutboxChange, Step, StoreError};

/// The job state that numbers digest mails (their effects belong to no order).
const DIGEST_SEQ: &str = "digest_seq";

impl Orders {
    /// Fires due approval reminders, escalations, exception deadlines, overdue
    /// invoices and dunning steps (each one step, at most once); returns how many fired.
    pub async fn run_timers(&self, rules: &Rules, now: DateTime<Utc>) -> Result<usize, OrderError> {
        let mut fired = 0;
        // Bounded: at most this many rounds per sweep; the next sweep goes on.
        for _ in 0..100 {
            let due = self.store.due_timers(now, 64).await?;
            if due.is_empty() {
                break;
            }
            let mut progressed = false;
            for (id, indexed) in due {
                match self.fire_timer(id, indexed, rules, now).await {
                    Ok(true) => {
                        fired += 1;
                        progressed = true;
                    }
                    Ok(false) => progressed = true,
                    // One order's trouble must not hold up the others' reminders.
                    Err(e @ (OrderError::Illegal(_) | OrderError::Refused(_) | OrderError::Conflict(_))) => {
                        tracing::error!(order_id = %id, error = %e, "a due timer cannot fire; it stays due");
                    }
                    // Another step on the order came first (a webhook, or another daemon
                    // sharing the database): the next round reloads it and decides again,
                    // so a timer the other one fired is no longer due and fires nothing.
                    Err(OrderError::Store(StoreError::Conflict(reason))) => {
                        tracing::debug!(order_id = %id, %reason, "a due timer's order moved on; deciding again");
                        progressed = true;
                    }
                    Err(OrderError::Store(StoreError::Quarantined(what))) => {
                        tracing::error!(order_id = %id, row = %what, "a due timer's order is quarantined; skipped");
                    }
                    Err(e) => return Err(e),
                }
            }
            if !progressed {
                break;
            }
        }
        Ok(fired)
    }

    /// Fires the order's earliest due timer (one step); returns whether one fired.
    /// When nothing is due (the rules changed since the due time was indexed), the
    /// order's due times are recomputed and the index follows.
    async fn fire_timer(
        &self,
        id: OrderId,
        indexed: DateTime<Utc>,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<bool, OrderError> {
        let _g = self.lock_order(id).await;
        let Some(rec) = self.opened(id).await? else { return Ok(false) };
        let history = History::default();
        let mut loaded = Loaded::of(&rec);
        match crate::engine::decide::due_timer_event(&case(&rec, &history), rules, now) {
            Some(event) => {
                let shadow = self.shadow_running().map(|s| {
                    let d = crate::engine::decide(&case(&rec, &history), Actor::System, event.clone(), &s.rules, now);
                    (s, d)
                });
                let step_name = event.name();
                let decision = crate::engine::decide(&case(&rec, &history), Actor::System, event, rules, now)?;
                let compared = shadow.map(|(s, d)| s.compare(step_name, &decision, d));
                self.commit(vec![step_for(rec, Some(loaded), decision, now)]).await?;
                self.record_shadow(id, compared, now).await;
                Ok(true)
            }
            None => {
                let current = crate::engine::decide::all_timers(
                    &rec.state,
                    rec.approval.as_ref(),
                    rec.fulfilment.as_ref(),
                    &rec.order,
                    rules,
                );
                // The index entry that brought us here goes; the current earliest is indexed.
                loaded.next_timer = Some(indexed);
                let mut rec = rec;
                rec.timers = current;
                if rec.next_timer() == Some(indexed) {
                    return Ok(false);
                }
                let step = Step {
                    order: Some(crate::store::OrderWrite { record: rec, loaded: Some(loaded) }),
                    ..Step::default()
                };
                self.commit(vec![step]).await?;
                Ok(false)
            }
        }
    }

    /// Turns every due digest into one mail effect; returns how many. Per group, the
    /// items gathered since the oldest became `every` old; the items go and the mail
    /// comes in one commit.
    pub async fn run_digests(&self, now: DateTime<Utc>) -> Result<usize, OrderError> {
        let _g = self.digest_lock.lock().await;
        let mut groups: BTreeMap<String, Vec<(DigestKey, DigestItem)>> = BTreeMap::new();
        for (k, item) in self.store.digest_items().await? {
            groups.entry(k.group.clone()).or_default().push((k, item));
        }
        let mut seq: u32 = self
            .store
            .job_state(DIGEST_SEQ)
            .await?
            .and_then(|v| v.as_u64())
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0);
        let mut sent = 0;
        for (group, items) in groups {
            if items.iter().map(|(_, i)| i.due()).min().is_none_or(|d| d > now) {
                continue;
            }
            seq += 1;
            let id = EffectId { order_id: OrderId::nil(), seq, index: 0 };
            let to = items.last().map(|(_, i)| i.to.clone()).expect("a group has items");
            let mail = if DigestItem::is_for_customer(&group) {
                let only = match items.as_slice() {
                    [(_, single)] => self.opened(single.order_id).await.ok().flatten(),
                    _ => None,
                };
                let plain: Vec<DigestItem> = items.iter().map(|(_, i)| i.clone()).collect();
                crate::engine::effects::customer_digest(
                    &id.to_string(),
                    to,
                    &plain,
                    only.as_ref().map(|r| (&r.order, &r.state)),
                    now,
                )
            } else {
                let mut listed = Vec::with_capacity(items.len());
                for (_, i) in &items {
                    let state = self.store.order(i.order_id).await.ok().flatten().map(|r| r.state.name());
                    listed.push((i.clone(), state));
                }
                crate::engine::effects::staff_digest(&id.to_string(), to, &listed, now)
            };
            let effect = EffectRecord {
                idempotency_key: format!("orderbridge:{id}"),
                id,
                connector: crate::engine::notify::MAIL_CONNECTOR.parse().expect("valid id"),
                operation: mail.operation,
                cause: "digest".into(),
                body: mail.body,
                attempts: 0,
                next_at: now,
                created_at: now,
                last_error: None,
            };
            let step = Step {
                outbox: vec![OutboxChange::Add(effect)],
                digests: items.into_iter().map(|(k, _)| DigestChange::Release(k)).collect(),
                jobs: vec![(DIGEST_SEQ.to_owned(), serde_json::json!(seq))],
                ..Step::default()
            };
            self.commit(vec![step]).await?;
            sent += 1;
        }
        Ok(sent)
    }
}
