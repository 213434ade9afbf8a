//! A decision turned into the rows of one step: the events chained onto the order's
//! audit trail, the effects numbered and given their bodies (or held for a digest),
//! and the order as it stands afterwards.

use chrono::{DateTime, Utc};

use crate::analytics::journey::node;
use crate::engine::OrderState;
use crate::engine::effects::{self, Subject};
use crate::engine::{AuditEntry, Decision, OrderEvent};
use crate::store::records::Link;
use crate::store::{
    DigestChange, DigestKey, EffectId, EffectRecord, EventRecord, Loaded, OrderRecord, OrderWrite, OutboxChange, Step,
};

/// The step that records `decision` on `rec` (loaded as `loaded`; `None` for a new
/// order).
pub(crate) fn step_for(mut rec: OrderRecord, loaded: Option<Loaded>, decision: Decision, now: DateTime<Utc>) -> Step {
    let mut events = Vec::with_capacity(decision.audit.len());
    for (i, entry) in decision.audit.into_iter().enumerate() {
        let seq = rec.last_seq + 1;
        let config_version = (i == 0 && !decision.config_version.is_empty()).then(|| decision.config_version.clone());
        let link = Link {
            at: entry.at,
            actor: entry.actor,
            channel: entry.channel,
            event: entry.event,
            state: entry.state,
            config_version,
        };
        let ev = EventRecord::link(rec.id, seq, &rec.last_hash, link);
        rec.last_seq = seq;
        rec.last_hash.clone_from(&ev.hash);
        events.push(ev);
    }
    // Effects are numbered after the step's last event: deterministic, so the
    // idempotency key survives restarts and replays.
    let effect_seq = rec.last_seq;
    let left = leaving(&rec, &decision.next, now);
    if node(&rec.state) != node(&decision.next) {
        rec.state_since = Some(now);
    }
    rec.state = decision.next;
    rec.approval = decision.approval;
    rec.fulfilment = decision.fulfilment;
    rec.timers = decision.timers;
    rec.updated_at = now;
    let subject = Subject {
        id: rec.id,
        source: &rec.source,
        state: &rec.state,
        order: &rec.order,
        references: &rec.references,
        fulfilment: rec.fulfilment.as_ref(),
    };
    let mut outbox = Vec::with_capacity(decision.effects.len());
    let mut digests = Vec::new();
    for (i, spec) in decision.effects.into_iter().enumerate() {
        let id = EffectId { order_id: rec.id, seq: effect_seq, index: u16::try_from(i).unwrap_or(u16::MAX) };
        if let Some(item) = spec.mail.as_ref().and_then(|m| effects::digest_item(&subject, m, now)) {
            digests.push(DigestChange::Hold(DigestKey { group: item.group(), effect: id }, Box::new(item)));
            continue;
        }
        let body = effects::body(&subject, &id.to_string(), &spec, now);
        outbox.push(OutboxChange::Add(EffectRecord {
            idempotency_key: format!("orderbridge:{id}"),
            id,
            connector: spec.connector,
            operation: spec.operation,
            cause: spec.cause,
            body,
            attempts: 0,
            next_at: now,
            created_at: now,
            last_error: None,
        }));
    }
    Step { order: Some(OrderWrite { record: rec, loaded }), events, outbox, digests, left, ..Step::default() }
}

/// The step that appends a bookkeeping event (no state change) to an order's chain.
pub(crate) fn bookkeeping(
    rec: OrderRecord,
    loaded: Loaded,
    acting: impl Into<crate::engine::access::Acting>,
    event: OrderEvent,
    now: DateTime<Utc>,
) -> Step {
    let crate::engine::access::Acting { actor, channel } = acting.into();
    let state = rec.state.clone();
    let decision = Decision {
        next: state.clone(),
        audit: vec![AuditEntry { at: now, actor, channel, event, state }],
        effects: Vec::new(),
        approval: rec.approval.clone(),
        timers: rec.timers.clone(),
        fulfilment: rec.fulfilment.clone(),
        config_version: String::new(),
    };
    step_for(rec, Some(loaded), decision, now)
}

/// The place `rec` leaves when it moves to `next` (approval levels apart), and how
/// long it stayed there; `None` when it stays, or when its arrival there is unknown
/// (an order written before that was kept).
fn leaving(rec: &OrderRecord, next: &OrderState, now: DateTime<Utc>) -> Option<(String, std::time::Duration)> {
    let here = node(&rec.state);
    if here == node(next) {
        return None;
    }
    Some((here, (now - rec.state_since?).to_std().unwrap_or_default()))
}
