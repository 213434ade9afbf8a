//! The store: orders, their hash-chained events, the transactional outbox, dead
//! letters and the indexes, behind `Store`, a trait in domain verbs.
//!
//! Every lifecycle step is one transaction (invariants 1, 2, 4, 5) and every write
//! method returns only after the write is durable (group commit, see `commit.rs`).
//! `sled_store.rs` is the embedded implementation.

pub mod codec;
pub mod commit;
pub mod records;
pub mod sled_store;

use chrono::{DateTime, Utc};

pub use records::{EffectId, EffectRecord, EventRecord, OrderRecord};
pub use sled_store::SledStore;

use crate::connectors::BoxFuture;
use crate::domain::{ExternalRef, Order, OrderId};
use crate::engine::{Actor, IllegalTransition, OrderEvent, OrderState, Rules};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// What was looked for, e.g. `order ord_…` or `dead letter ord_….4.0`.
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Illegal(#[from] IllegalTransition),
    /// A person may not take this decision (not an approver, their own order, …).
    #[error("{0}")]
    Refused(String),
    /// The order cannot take this change in its state (e.g. an amendment after approval).
    #[error("{0}")]
    Conflict(String),
    /// The data directory is held by another process (a running daemon).
    #[error("the store at {0} is in use by another process (is the daemon running?)")]
    Locked(String),
    #[error("the store is corrupt: {0}; refusing to go on (restore from backup, never delete data)")]
    Corrupt(String),
    #[error("store I/O failed: {0}")]
    Io(String),
}

impl From<crate::engine::DecideError> for StoreError {
    fn from(e: crate::engine::DecideError) -> Self {
        match e {
            crate::engine::DecideError::Illegal(i) => StoreError::Illegal(i),
            // Not a matter of who asks but of when: the order has moved on.
            crate::engine::DecideError::Refused(
                r @ (crate::engine::approval::Refusal::NotAwaiting
                | crate::engine::approval::Refusal::WrongLevel { .. }
                | crate::engine::approval::Refusal::TasksOpen(_)
                | crate::engine::approval::Refusal::UnknownTask(_)
                | crate::engine::approval::Refusal::TaskAlreadyDone(_)
                | crate::engine::approval::Refusal::NoException
                | crate::engine::approval::Refusal::PaymentNotApplicable(_)),
            ) => StoreError::Conflict(r.to_string()),
            crate::engine::DecideError::Refused(r) => StoreError::Refused(r.to_string()),
        }
    }
}

/// A payment reported by a bank, a finance system or an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentReport {
    /// Who reported it (a connector id, or `api`): payment ids are unique per source.
    pub source: String,
    pub payment_id: String,
    pub amount: crate::domain::Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<OrderId>,
    /// Free text from the payer (kept for the operator).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reference: String,
}

/// What became of a reported payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentOutcome {
    pub matched: bool,
    pub order_id: Option<OrderId>,
    /// The order's state after it (when matched).
    pub state: Option<String>,
    pub settled: bool,
    pub outstanding: Option<crate::domain::Money>,
    /// Why it is in the unmatched queue.
    pub reason: Option<String>,
    /// The same payment was reported before; this is what happened then.
    #[serde(default)]
    pub duplicate: bool,
}

/// An order as a connector's mapping produced it, ready to ingest.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub source: ExternalRef,
    pub version: u64,
    pub mapping_version: String,
    pub order: Order,
}

/// What intake did with an inbound order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    pub order_id: OrderId,
    pub state: OrderState,
    /// True when this delivery changed nothing (same or older version).
    pub duplicate: bool,
    /// Effects the step put in the outbox (the dispatcher is woken only for these).
    pub effects: usize,
}

/// How an effect attempt ended, as the dispatcher reports it.
#[derive(Debug, Clone)]
pub enum EffectOutcome {
    Done {
        receipt: String,
        /// The receiver's id for what it created, stored on the order.
        reference: Option<String>,
    },
    /// Try again at `next_at`.
    Retry { error: String, next_at: DateTime<Utc> },
    /// Give up: move to dead letters.
    Dead { error: String },
    /// Not attempted (its connector is paused): due again at `next_at`, attempts unchanged.
    Deferred { reason: String, next_at: DateTime<Utc> },
}

/// Result of `audit verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    pub orders: u64,
    pub events: u64,
    /// The first broken chain: order and sequence number, with what is wrong.
    pub broken: Option<(OrderId, u32, String)>,
}

pub trait Store: Send + Sync {
    /// Intake: a new order, an amendment (newer version) or a duplicate; screening and
    /// automatic steps run in the same transaction. Durable when it returns.
    fn ingest<'a>(
        &'a self,
        inbound: Inbound,
        rules: &'a Rules,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Ingested, StoreError>>;

    /// Applies one event (from a person or an external system) and the automatic steps
    /// that follow. Durable when it returns.
    fn apply<'a>(
        &'a self,
        id: OrderId,
        actor: Actor,
        event: OrderEvent,
        rules: &'a Rules,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<OrderRecord, StoreError>>;

    /// `apply`, at most once per `once` key (a single-use link's id): the key is
    /// recorded in the same transaction; a second use is a `Conflict`. With `round`,
    /// the order's approval chain must still be in that round (else `Conflict`).
    #[allow(clippy::too_many_arguments)]
    fn apply_once<'a>(
        &'a self,
        id: OrderId,
        actor: Actor,
        event: OrderEvent,
        once: Option<&'a str>,
        round: Option<u32>,
        rules: &'a Rules,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<OrderRecord, StoreError>>;
    /// When a `once` key was used, if it was.
    fn used<'a>(&'a self, once: &'a str) -> BoxFuture<'a, Result<Option<DateTime<Utc>>, StoreError>>;
    /// Fires due approval reminders and escalations (each one step, at most once);
    /// returns how many fired. Durable when it returns.
    fn run_timers<'a>(&'a self, rules: &'a Rules, now: DateTime<Utc>) -> BoxFuture<'a, Result<usize, StoreError>>;
    /// A polled page: every record (as `ingest` would take it) and the connector's
    /// new poll state (`poll_key`) in one atomic transaction. Per-record refusals are
    /// returned, not fatal. Durable when it returns.
    fn ingest_page<'a>(
        &'a self,
        page: Vec<Inbound>,
        poll_key: &'a str,
        poll_state: serde_json::Value,
        rules: &'a Rules,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<Result<Ingested, StoreError>>, StoreError>>;
    /// The poll state last committed with a page.
    fn poll_state<'a>(&'a self, poll_key: &'a str) -> BoxFuture<'a, Result<Option<serde_json::Value>, StoreError>>;
    /// Turns every due digest into one mail effect; returns how many. Durable when it returns.
    fn run_digests(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<usize, StoreError>>;
    /// Applies a payment to its order, or queues it as unmatched; once per (source,
    /// payment id): a repeat returns the first outcome. Durable when it returns.
    fn record_payment<'a>(
        &'a self,
        payment: &'a PaymentReport,
        rules: &'a Rules,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<PaymentOutcome, StoreError>>;
    /// Every order of one customer (by the customer's id), oldest first.
    fn customer_orders<'a>(&'a self, customer: &'a str) -> BoxFuture<'a, Result<Vec<OrderRecord>, StoreError>>;
    /// Payments no order took, with the reason.
    fn unmatched_payments(&self) -> BoxFuture<'_, Result<Vec<serde_json::Value>, StoreError>>;
    /// An operator applies an unmatched payment to an order.
    fn assign_payment<'a>(
        &'a self,
        source: &'a str,
        payment_id: &'a str,
        order: OrderId,
        operator: &'a str,
        rules: &'a Rules,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<PaymentOutcome, StoreError>>;

    fn order(&self, id: OrderId) -> BoxFuture<'_, Result<Option<OrderRecord>, StoreError>>;
    /// The order a source system knows by `source` (invariant 4's index).
    fn find_external<'a>(&'a self, source: &'a ExternalRef) -> BoxFuture<'a, Result<Option<OrderId>, StoreError>>;
    fn events(&self, id: OrderId) -> BoxFuture<'_, Result<Vec<EventRecord>, StoreError>>;
    /// A page of orders in id (= arrival) order, optionally in one state, after `after`.
    fn list<'a>(
        &'a self,
        state: Option<&'a str>,
        after: Option<OrderId>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<OrderRecord>, StoreError>>;

    /// Effects due at `now`, oldest due first.
    fn due_effects(&self, now: DateTime<Utc>, limit: usize) -> BoxFuture<'_, Result<Vec<EffectRecord>, StoreError>>;
    /// The effect as stored now, if it is still pending with the same schedule
    /// (`None` once it finished, was rescheduled or dead-lettered).
    fn current(&self, effect: &EffectRecord) -> BoxFuture<'_, Result<Option<EffectRecord>, StoreError>>;
    fn pending_effects(&self, limit: usize) -> BoxFuture<'_, Result<Vec<EffectRecord>, StoreError>>;
    fn dead_letters(&self, limit: usize) -> BoxFuture<'_, Result<Vec<EffectRecord>, StoreError>>;
    /// Records an attempt's outcome. Durable when it returns. A success goes through
    /// `decide` with `rules` (the engine may act on it: an invoice number issues the
    /// invoice) in the same transaction.
    fn finish_effect<'a>(
        &'a self,
        effect: &'a EffectRecord,
        outcome: EffectOutcome,
        rules: &'a Rules,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Moves a dead letter back to the outbox, due now, attempts reset. Durable when it returns.
    fn replay<'a>(
        &'a self,
        id: &'a EffectId,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<EffectRecord, StoreError>>;

    fn verify_audit(&self) -> BoxFuture<'_, Result<AuditReport, StoreError>>;
    /// Counts for metrics: (pending effects, dead letters).
    fn counts(&self) -> BoxFuture<'_, Result<(u64, u64), StoreError>>;
    /// Makes everything written so far durable (used at shutdown).
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}
