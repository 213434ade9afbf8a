//! Stored rows and their keys. Keys are fixed-width big-endian so scans come out in
//! order; rows are JSON so an operator can read them with ordinary tools.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{ConnectorId, ExternalRef, Order, OrderId};
use crate::engine::access::Channel;
use crate::engine::{Actor, OrderEvent, OrderState};

/// The hash before an order's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRecord {
    pub id: OrderId,
    pub source: ExternalRef,
    /// The source record's version this data came from.
    pub source_version: u64,
    pub mapping_version: String,
    pub order: Order,
    pub state: OrderState,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Sequence number of the last event (events are numbered from 1).
    pub last_seq: u32,
    /// Hash of the last event: the head of the chain.
    pub last_hash: String,
    /// Ids other systems gave to what they created for this order, by effect name
    /// (`service-desk.create_ticket` → `SD-1024`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub references: std::collections::BTreeMap<String, String>,
    /// The approval chain in progress (or last used), with the approvals given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::engine::approval::ApprovalProgress>,
    /// Tasks, exception, invoice and payments after approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fulfilment: Option<crate::engine::fulfilment::Fulfilment>,
    /// Due reminders and escalations; mirrored in the timer index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timers: Vec<crate::engine::approval::Timer>,
    /// When the order entered its state (approval levels apart); absent on orders
    /// written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_since: Option<DateTime<Utc>>,
}

impl OrderRecord {
    /// The earliest of the order's due times (the timer index holds only this one).
    pub fn next_timer(&self) -> Option<DateTime<Utc>> {
        self.timers.iter().map(|t| t.due).min()
    }

    /// The number of the order's invoice, once issued (payments quote it).
    pub fn invoice_number(&self) -> Option<&str> {
        self.fulfilment.as_ref().and_then(|f| f.invoice.as_ref()).map(|i| i.number.as_str())
    }
}

/// One audit entry, chained: `hash = sha256(prev_hash ‖ canonical JSON of the rest)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub order_id: OrderId,
    pub seq: u32,
    pub at: DateTime<Utc>,
    pub actor: Actor,
    /// Through which door the actor acted (api, console, mail link, cli); none for
    /// the daemon's own steps and for entries older than principals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    pub event: OrderEvent,
    /// The state after this event.
    pub state: OrderState,
    pub prev_hash: String,
    pub hash: String,
    /// The configuration's version the step's decision was taken under (on a step's
    /// first event; `crate::versions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_version: Option<String>,
    /// On a step's last event when the audit is keyed: an HMAC over this event's hash
    /// and the order row the step wrote (`crate::orders::seal`). Not part of the hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<Seal>,
}

/// What one link of a chain says, apart from where it sits (order, sequence number,
/// previous hash).
pub(crate) struct Link {
    pub at: DateTime<Utc>,
    pub actor: Actor,
    pub channel: Option<Channel>,
    pub event: OrderEvent,
    pub state: OrderState,
    pub config_version: Option<String>,
}

/// A keyed seal on a chain head: the key's id and the HMAC-SHA256 (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    pub key_id: String,
    pub mac: String,
}

#[derive(Serialize)]
struct Hashed<'a> {
    order_id: &'a OrderId,
    seq: u32,
    at: &'a DateTime<Utc>,
    actor: &'a Actor,
    // Hashed only when present, so entries written before it still verify.
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<Channel>,
    event: &'a OrderEvent,
    state: &'a OrderState,
    #[serde(skip_serializing_if = "Option::is_none")]
    config_version: Option<&'a String>,
}

impl EventRecord {
    /// SHA-256 of the previous hash and the event's JSON (`Hashed`), in hex. The JSON
    /// is written whole (`codec::with_json`), then hashed at once: written into the
    /// hash piece by piece, a few bytes a call, it cost twice the hashing.
    pub(crate) fn compute_hash(&self) -> String {
        super::codec::with_json(&self.hashed(), |json| {
            let mut h = Sha256::new();
            h.update(self.prev_hash.as_bytes());
            h.update(json);
            hex::encode(h.finalize())
        })
    }

    fn hashed(&self) -> Hashed<'_> {
        Hashed {
            order_id: &self.order_id,
            seq: self.seq,
            at: &self.at,
            actor: &self.actor,
            channel: self.channel,
            event: &self.event,
            state: &self.state,
            config_version: self.config_version.as_ref(),
        }
    }

    /// Builds the next link of a chain.
    pub fn chained(
        order_id: OrderId,
        seq: u32,
        prev_hash: &str,
        at: DateTime<Utc>,
        actor: Actor,
        event: OrderEvent,
        state: OrderState,
    ) -> Self {
        Self::link(order_id, seq, prev_hash, Link { at, actor, channel: None, event, state, config_version: None })
    }

    /// Builds the next link of a chain with everything its hash covers, hashed once.
    pub(crate) fn link(order_id: OrderId, seq: u32, prev_hash: &str, link: Link) -> Self {
        let Link { at, actor, channel, event, state, config_version } = link;
        let mut e = EventRecord {
            order_id,
            seq,
            at,
            actor,
            channel,
            event,
            state,
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
            config_version,
            seal: None,
        };
        e.hash = e.compute_hash();
        e
    }

    pub fn key(&self) -> [u8; 20] {
        event_key(self.order_id, self.seq)
    }
}

/// How one step's events are stored: where the chain enters the step and its head
/// after it, and the events without their hashes, which are recomputed on reading.
/// A step writes several events at once (eight when an order is approved at
/// intake), and their hashes were half of the row after compression: 64 hex digits
/// each that nothing compresses. Tampering is still found: a changed event changes
/// every hash after it, and the last no longer matches the stored head.
///
/// Rows written before this form are a JSON array of whole `EventRecord`s and are
/// still read (`StepEvents::decode`).
///
/// One type for writing and reading: written borrowed from the step's records (the
/// events are not copied to be stored), read owned.
#[derive(Debug, Serialize, Deserialize)]
pub struct StepEvents<'a> {
    order_id: OrderId,
    /// The first event's sequence number; the others follow one by one.
    seq: u32,
    /// The time of the events that do not carry their own.
    at: DateTime<Utc>,
    prev_hash: Cow<'a, str>,
    /// The last event's hash: the chain head after the step.
    hash: Cow<'a, str>,
    events: Vec<StepEvent<'a>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StepEvent<'a> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<DateTime<Utc>>,
    actor: Cow<'a, Actor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    channel: Option<Channel>,
    event: Cow<'a, OrderEvent>,
    state: Cow<'a, OrderState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config_version: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seal: Option<Cow<'a, Seal>>,
}

impl StepEvents<'_> {
    /// The stored form of a step's events, or `None` when they are not one chained
    /// run of one order (then they are stored whole).
    fn pack(events: &[EventRecord]) -> Option<StepEvents<'_>> {
        let (first, last) = (events.first()?, events.last()?);
        let chained = events.windows(2).all(|w| {
            w[1].order_id == w[0].order_id && w[1].seq == w[0].seq.wrapping_add(1) && w[1].prev_hash == w[0].hash
        });
        if !chained {
            return None;
        }
        Some(StepEvents {
            order_id: first.order_id,
            seq: first.seq,
            at: first.at,
            prev_hash: Cow::Borrowed(&first.prev_hash),
            hash: Cow::Borrowed(&last.hash),
            events: events
                .iter()
                .map(|e| StepEvent {
                    at: (e.at != first.at).then_some(e.at),
                    actor: Cow::Borrowed(&e.actor),
                    channel: e.channel,
                    event: Cow::Borrowed(&e.event),
                    state: Cow::Borrowed(&e.state),
                    config_version: e.config_version.as_deref().map(Cow::Borrowed),
                    seal: e.seal.as_ref().map(Cow::Borrowed),
                })
                .collect(),
        })
    }

    /// The events again, each hash recomputed from the one before; the last keeps
    /// the stored head, so `audit verify` finds any change to the step there.
    pub(crate) fn unpack(self) -> Vec<EventRecord> {
        let n = self.events.len();
        let mut prev = self.prev_hash.into_owned();
        let mut out = Vec::with_capacity(n);
        for (i, e) in self.events.into_iter().enumerate() {
            let mut rec = EventRecord {
                order_id: self.order_id,
                seq: self.seq.wrapping_add(u32::try_from(i).unwrap_or(u32::MAX)),
                at: e.at.unwrap_or(self.at),
                actor: e.actor.into_owned(),
                channel: e.channel,
                event: e.event.into_owned(),
                state: e.state.into_owned(),
                prev_hash: prev,
                hash: String::new(),
                config_version: e.config_version.map(Cow::into_owned),
                seal: e.seal.map(Cow::into_owned),
            };
            rec.hash = if i + 1 == n { self.hash.to_string() } else { rec.compute_hash() };
            prev = rec.hash.clone();
            out.push(rec);
        }
        out
    }

    /// A step's events row (`codec::encode`d), in either form.
    pub fn encode(events: &[EventRecord]) -> Vec<u8> {
        match StepEvents::pack(events) {
            Some(packed) => super::codec::encode(&packed),
            None => super::codec::encode(&events),
        }
    }

    /// Reads a step's events row in either form.
    ///
    /// # Errors
    /// What is wrong with the row, as `codec::decode` says it.
    pub fn decode(row: &[u8]) -> Result<Vec<EventRecord>, String> {
        let json = super::codec::json(row)?;
        if json.first() == Some(&b'{') {
            serde_json::from_slice::<StepEvents>(&json).map(StepEvents::unpack).map_err(|e| e.to_string())
        } else {
            serde_json::from_slice(&json).map_err(|e| e.to_string())
        }
    }
}

pub(crate) fn event_key(id: OrderId, seq: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(id.as_bytes());
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// An effect's id: the order, the sequence number of the last event of the step that
/// created it, and its index among that step's effects. Deterministic, so the
/// idempotency key survives restarts and replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EffectId {
    pub order_id: OrderId,
    pub seq: u32,
    pub index: u16,
}

impl EffectId {
    pub fn key(&self) -> [u8; 22] {
        let mut k = [0u8; 22];
        k[..16].copy_from_slice(self.order_id.as_bytes());
        k[16..20].copy_from_slice(&self.seq.to_be_bytes());
        k[20..].copy_from_slice(&self.index.to_be_bytes());
        k
    }

    pub(crate) fn from_key(k: &[u8]) -> Option<Self> {
        let k: &[u8; 22] = k.try_into().ok()?;
        Some(EffectId {
            order_id: OrderId::from_bytes(k[..16].try_into().ok()?),
            seq: u32::from_be_bytes(k[16..20].try_into().ok()?),
            index: u16::from_be_bytes(k[20..].try_into().ok()?),
        })
    }
}

impl fmt::Display for EffectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.order_id, self.seq, self.index)
    }
}

impl FromStr for EffectId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not an effect id (ord_….SEQ.INDEX)");
        let mut parts = s.split('.');
        let (Some(o), Some(seq), Some(i), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        Ok(EffectId {
            order_id: o.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
            index: i.parse().map_err(|_| bad())?,
        })
    }
}
impl TryFrom<String> for EffectId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}
impl From<EffectId> for String {
    fn from(e: EffectId) -> String {
        e.to_string()
    }
}

/// An outbound effect waiting in the outbox (or, after giving up, in dead letters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectRecord {
    pub id: EffectId,
    pub connector: ConnectorId,
    pub operation: String,
    /// The state whose entry caused it.
    pub cause: String,
    /// Sent with every attempt; receivers dedupe on it (invariant 3).
    pub idempotency_key: String,
    /// The body, fixed when the effect was created.
    pub body: serde_json::Value,
    pub attempts: u32,
    pub next_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A due effect as the dispatcher lists it: what it chooses by (the connector) and
/// claims with (the id and the schedule), without the effect's row, which is read
/// only for an effect it claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueEffect {
    pub id: EffectId,
    pub connector: std::sync::Arc<str>,
    pub next_at: DateTime<Utc>,
}

impl DueEffect {
    /// Due-index key: due time (ms, big-endian) then the effect key.
    pub fn due_key(&self) -> [u8; 30] {
        due_key(self.id, self.next_at)
    }
}

impl From<&EffectRecord> for DueEffect {
    fn from(e: &EffectRecord) -> Self {
        DueEffect { id: e.id, connector: e.connector.as_str().into(), next_at: e.next_at }
    }
}

fn due_key(id: EffectId, next_at: DateTime<Utc>) -> [u8; 30] {
    let mut k = [0u8; 30];
    let ms = u64::try_from(next_at.timestamp_millis()).unwrap_or(0);
    k[..8].copy_from_slice(&ms.to_be_bytes());
    k[8..].copy_from_slice(&id.key());
    k
}

impl EffectRecord {
    /// Due-index key: due time (ms, big-endian) then the effect key.
    pub fn due_key(&self) -> [u8; 30] {
        due_key(self.id, self.next_at)
    }

    pub fn name(&self) -> String {
        format!("{}.{}", self.connector, self.operation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn effect_ids_round_trip(b in any::<[u8; 16]>(), seq in any::<u32>(), index in any::<u16>()) {
            let id = EffectId { order_id: OrderId::from_bytes(b), seq, index };
            prop_assert_eq!(id.to_string().parse::<EffectId>().unwrap(), id);
            prop_assert_eq!(EffectId::from_key(&id.key()).unwrap(), id);
        }
    }

    #[test]
    fn a_changed_event_breaks_its_hash() {
        let e = EventRecord::chained(
            OrderId::new_v7(),
            1,
            GENESIS,
            Utc::now(),
            Actor::System,
            OrderEvent::Closed,
            OrderState::Closed,
        );
        assert_eq!(e.compute_hash(), e.hash);
        // What verifiers recompute: SHA-256 over the previous hash, then the JSON.
        let mut whole = e.prev_hash.as_bytes().to_vec();
        whole.extend(serde_json::to_vec(&e.hashed()).unwrap());
        assert_eq!(e.hash, hex::encode(Sha256::digest(&whole)));
        let mut t = e.clone();
        t.actor = Actor::Person("mallory".into());
        assert_ne!(t.compute_hash(), e.hash);
    }

    #[test]
    fn a_packed_step_keeps_its_configuration_version_and_seal() {
        let id = OrderId::new_v7();
        let link = Link {
            at: Utc::now(),
            actor: Actor::System,
            channel: None,
            event: OrderEvent::Closed,
            state: OrderState::Closed,
            config_version: Some("c0ffee".into()),
        };
        let first = EventRecord::link(id, 1, GENESIS, link);
        let mut last =
            EventRecord::chained(id, 2, &first.hash, Utc::now(), Actor::System, OrderEvent::Closed, OrderState::Closed);
        last.seal = Some(Seal { key_id: "k1".into(), mac: "ab".repeat(32) });
        let events = vec![first.clone(), last.clone()];
        assert!(StepEvents::pack(&events).is_some(), "stored packed");
        let row = StepEvents::encode(&events);
        let back = StepEvents::decode(&row).unwrap();
        assert_eq!(back, events);
        assert_eq!(back[0].compute_hash(), back[0].hash, "the version is part of the hash");
        let mut moved = first;
        moved.config_version = Some("decaf".into());
        assert_ne!(moved.compute_hash(), back[0].hash);
    }
}
