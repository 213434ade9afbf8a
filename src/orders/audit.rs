//! `audit verify`: every order's events must form an unbroken hash chain from the
//! genesis hash to the head recorded on the order (invariant 5). A row the store
//! could not read (quarantined) is named, never passed over: the audit is not
//! verifiable until it is resolved (`quarantine.rs`).

use super::{OrderError, Orders};
use crate::domain::OrderId;
use crate::store::records::{EventRecord, GENESIS, OrderRecord};
use crate::store::{Quarantined, ResolutionOutcome, StoreError};

/// Result of `audit verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    pub orders: u64,
    pub events: u64,
    /// The first broken chain: order and sequence number, with what is wrong.
    pub broken: Option<(OrderId, u32, String)>,
    /// Rows quarantined and not resolved: what they held was not verified, so the
    /// audit is not verifiable while there is one.
    pub quarantined: Vec<Quarantined>,
    /// Rows an operator gave up (discarded), with who and why: not verified, and
    /// said so.
    pub discarded: Vec<Quarantined>,
}

impl AuditReport {
    /// Every order verified and nothing left unread.
    pub fn intact(&self) -> bool {
        self.broken.is_none() && self.quarantined.is_empty()
    }

    /// The order part of `audit verify`'s JSON answer (the API and the CLI's).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "orders": self.orders,
            "events": self.events,
            "broken": self.broken.as_ref().map(|(o, seq, why)| serde_json::json!({"order_id": o.to_string(), "seq": seq, "problem": why})),
            "quarantined": self.quarantined,
            "discarded": self.discarded,
        })
    }
}

/// Checks one order's chain; returns the events counted or where it breaks.
pub(crate) fn check_chain(rec: &OrderRecord, events: &[EventRecord]) -> Result<u64, (u32, String)> {
    let mut prev = GENESIS;
    let mut expected = 1u32;
    for ev in events {
        let problem = if ev.seq != expected || ev.order_id != rec.id {
            Some(format!("expected event {expected}, found {}", ev.seq))
        } else if ev.prev_hash != prev {
            Some("prev_hash does not match the previous event's hash".to_owned())
        } else if ev.compute_hash() != ev.hash {
            Some("content does not match its hash (this event or an earlier one of its step was altered)".to_owned())
        } else {
            None
        };
        if let Some(p) = problem {
            return Err((ev.seq, p));
        }
        prev = &ev.hash;
        expected += 1;
    }
    if expected - 1 != rec.last_seq || prev != rec.last_hash {
        return Err((
            expected,
            format!(
                "chain ends at event {} but the order records {} (events missing or appended)",
                expected - 1,
                rec.last_seq
            ),
        ));
    }
    Ok(events.len() as u64)
}

impl Orders {
    /// Checks one order's trail: its hash chain up to the head the order records,
    /// and the seals of its steps with the configured audit keys. The events it
    /// checked, or the first broken one and why.
    pub(crate) fn check_trail(&self, rec: &OrderRecord, events: &[EventRecord]) -> Result<u64, (u32, String)> {
        check_chain(rec, events).and_then(|n| self.audit_keys.check(rec, events).map(|_| n))
    }
}

/// Verifies every order's chain. Each order is read under its lock, so a step
/// committed meanwhile (the daemon keeps working) is seen whole or not at all.
pub(crate) async fn verify(orders: &Orders) -> Result<AuditReport, OrderError> {
    let mut report = AuditReport { orders: 0, events: 0, broken: None, quarantined: vec![], discarded: vec![] };
    let mut after = None;
    loop {
        let page = orders.store.list(None, after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for listed in page {
            let id = listed.id;
            let _g = orders.lock_order(id).await;
            let checked = match checked_trail(orders, id).await {
                // Set aside as it was read: named below with the other quarantined rows.
                Err(OrderError::Store(StoreError::Quarantined(_))) => None,
                other => other?,
            };
            match checked {
                None => continue,
                Some(Ok(n)) => {
                    report.orders += 1;
                    report.events += n;
                }
                Some(Err((seq, why))) => {
                    report.orders += 1;
                    report.broken = Some((id, seq, why));
                    break;
                }
            }
        }
        if report.broken.is_some() {
            break;
        }
    }
    // Invariant 5 holds only over what could be read: every row set aside is named.
    for q in orders.store.quarantined().await? {
        match q.resolved.as_ref().map(|r| r.outcome) {
            None => report.quarantined.push(q),
            Some(ResolutionOutcome::Discarded) => report.discarded.push(q),
            Some(ResolutionOutcome::Restored) => {}
        }
    }
    Ok(report)
}

/// One order's trail, checked. The order row and its events are two reads: on a
/// database shared by several daemons, another daemon's step can land between them
/// (the lock taken here is this process's own), so a trail that does not end where
/// the order says is read again. An altered or truncated trail reads the same every
/// time; a trail that only moved on reads whole on a later try.
async fn checked_trail(orders: &Orders, id: OrderId) -> Result<Option<Result<u64, (u32, String)>>, OrderError> {
    let mut tries = 0;
    loop {
        let Some(rec) = orders.store.order(id).await? else { return Ok(None) };
        let events = orders.store.events(id).await?;
        let checked = orders.check_trail(&rec, &events);
        let moved = checked.is_err() && events.last().is_some_and(|e| e.seq > rec.last_seq);
        tries += 1;
        if !moved || tries == 3 {
            return Ok(Some(checked));
        }
    }
}
