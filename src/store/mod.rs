//! The store: persistence verbs only. It keeps orders, their hash-chained events,
//! the transactional outbox, dead letters, digests, payments, job state and the
//! indexes that something reads, and it decides nothing (no rules, no `decide`):
//! the application layer (`crate::orders`) computes every row of a step and hands
//! the store one `Step` to commit atomically.
//!
//! Guarantees every backend gives (the conformance suite in `tests/api/store.rs`
//! checks them on each):
//! - `commit` applies all of its steps or none, also across a crash, and returns
//!   only once they are durable (invariant 1). A step whose preconditions no longer
//!   hold (the order moved on, a link was spent, a payment seen) is a `Conflict` and
//!   writes nothing.
//! - An effect is visible to `due_effects` only after the commit that wrote it is
//!   durable, so nothing is pushed that a crash could take back.
//! - A failed flush or fsync is fatal: the store refuses every later write with
//!   `Failed` and never retries the sync (its failure may have dropped dirty pages).
//! - A row that cannot be decoded is quarantined (kept aside, counted and listed)
//!   and never stops the others.
//!
//! `kv/` lays the store out over any ordered key-value engine (`fjall_engine.rs`,
//! `sled_engine.rs`, `redb_engine.rs`); `postgres/` is the same store on PostgreSQL
//! (several daemons on one database); `dump.rs` is `store copy` between them.
//! `records.rs` holds the row types and `codec.rs` their encoding; `commit.rs` is the
//! group commit of the embedded engines, over `batch.rs` (their unit of writing);
//! `extras.rs` is what `store copy` reads besides the `Store` listings; `archived.rs`
//! the archive index and log (`Step::archive`).

pub mod archived;
mod batch;
pub mod codec;
pub(crate) mod commit;
pub mod dump;
mod extras;
pub(crate) mod fjall_engine;
pub mod kv;
mod lz4;
pub mod postgres;
pub mod records;
pub mod redb_engine;
pub mod sketch;
pub(crate) mod sled_engine;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use archived::{ArchiveChange, ArchiveEntry, ArchiveLogEntry, LegalHold};
pub use records::{DueEffect, EffectId, EffectRecord, EventRecord, OrderRecord};
pub use sketch::{Marked, Sketch};

use crate::domain::{ExternalRef, OrderId};
use crate::engine::effects::DigestItem;
use crate::engine::payments::{PaymentOutcome, UnmatchedPayment};
use crate::engine::table::Prior;

/// What the store's verbs return: the store is a trait object (one backend chosen at
/// start), so its futures are boxed.
pub use crate::future::BoxFuture;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// What was looked for, e.g. `order ord_…` or `dead letter ord_….4.0`.
    #[error("{0} not found")]
    NotFound(String),
    /// A precondition of a step no longer holds (another step came first); nothing
    /// was written. The application reloads and decides again, or reports it.
    #[error("{0}")]
    Conflict(String),
    /// The data directory is held by another process (a running daemon).
    #[error("the store at {0} is in use by another process (is the daemon running?)")]
    Locked(String),
    #[error("the store is corrupt: {0}; refusing to go on (restore from backup, never delete data)")]
    Corrupt(String),
    /// A row could not be decoded; it was set aside (`orderbridge store quarantine`).
    #[error("{0} is quarantined: its stored row cannot be read (see `orderbridge store quarantine`)")]
    Quarantined(String),
    #[error("store I/O failed: {0}")]
    Io(String),
    /// A flush or fsync failed: nothing more is written or acknowledged, and the
    /// daemon stops. The cause is on the data volume (full, read-only, failing).
    #[error("the store can no longer make writes durable ({0}); nothing more is accepted, the daemon stops")]
    Failed(String),
}

/// The order row written by a step, with what the step loaded (its preconditions).
#[derive(Debug, Clone)]
pub struct OrderWrite {
    pub record: OrderRecord,
    /// The order as loaded: `None` for a new order (its external id must be free).
    /// The stored order must still be at `loaded.last_seq`, else `Conflict`.
    pub loaded: Option<Loaded>,
}

/// What the store indexes of an order, as loaded (so a step can move its index keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub last_seq: u32,
    pub state: &'static str,
    /// The earliest due time indexed for the order.
    pub next_timer: Option<DateTime<Utc>>,
    pub invoice: Option<String>,
    pub customer: String,
    /// What the customer's history rules read of the order.
    pub prior: Prior,
}

impl Loaded {
    pub fn of(rec: &OrderRecord) -> Loaded {
        Loaded {
            last_seq: rec.last_seq,
            state: rec.state.name(),
            next_timer: rec.next_timer(),
            invoice: rec.invoice_number().map(str::to_owned),
            customer: rec.order.customer.id.as_str().to_owned(),
            prior: Prior { amount: rec.order.amount.clone(), product_code: rec.order.product.code.as_str().to_owned() },
        }
    }
}

/// A change to the outbox or the dead letters.
#[derive(Debug, Clone)]
pub enum OutboxChange {
    /// A new effect, due at its `next_at`.
    Add(EffectRecord),
    /// A pending effect rescheduled (retry, deferral): `from` must still be pending
    /// as it was read, else `Conflict`.
    Reschedule { from: EffectRecord, to: EffectRecord },
    /// A pending effect performed: removed (it must still be pending as read).
    Remove(EffectRecord),
    /// A pending effect given up: moved to the dead letters as `dead`.
    Bury { from: EffectRecord, dead: EffectRecord },
    /// A dead letter back in the outbox as `to` (it must still be a dead letter).
    Revive { dead: EffectId, to: EffectRecord },
}

/// Where a digest item is kept: its group (a person, or a customer's address and
/// template) and the effect the mail would have been.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DigestKey {
    pub group: String,
    pub effect: EffectId,
}

/// A change to the held digest items.
#[derive(Debug, Clone)]
pub enum DigestChange {
    Hold(DigestKey, Box<DigestItem>),
    /// Sent in a digest mail (it must still be held, else `Conflict`).
    Release(DigestKey),
}

/// A single-use key (a link's id) spent by a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsedLink {
    pub at: DateTime<Utc>,
    pub order_id: OrderId,
    /// The last event of the step that used it.
    pub seq: u32,
}

/// A payment written by a step.
#[derive(Debug, Clone)]
pub enum PaymentWrite {
    /// First report of (source, payment id): already seen → `Conflict`. With
    /// `unmatched`, it also waits for an operator.
    Reported { source: String, payment_id: String, outcome: PaymentOutcome, unmatched: Option<UnmatchedPayment> },
    /// An operator assigned a waiting payment (it must still wait, else `Conflict`).
    Assigned { source: String, payment_id: String, outcome: PaymentOutcome },
}

/// Everything one lifecycle step (or one scheduler run) changes. Built by the
/// application layer; the store only encodes, checks preconditions and writes.
#[derive(Debug, Clone, Default)]
pub struct Step {
    pub order: Option<OrderWrite>,
    /// Appended to the order's chain, numbered after the loaded `last_seq`.
    pub events: Vec<EventRecord>,
    pub outbox: Vec<OutboxChange>,
    pub digests: Vec<DigestChange>,
    /// A link id spent by this step (already spent → `Conflict`).
    pub spend: Option<(String, UsedLink)>,
    pub payment: Option<PaymentWrite>,
    /// Background jobs' state written with the step (a poll watermark, digest numbering).
    pub jobs: Vec<(String, serde_json::Value)>,
    /// Orders moved to the archive, archive entries replaced, the archive log.
    pub archive: Vec<ArchiveChange>,
    /// Not stored: the place the order left in this step and how long it stayed
    /// there, for the stage-duration histogram once the step is durable.
    pub left: Option<(String, std::time::Duration)>,
}

impl Step {
    /// Effects this step adds to the outbox.
    pub(crate) fn new_effects(&self) -> usize {
        self.outbox.iter().filter(|c| matches!(c, OutboxChange::Add(_) | OutboxChange::Revive { .. })).count()
    }
}

/// An order with its audit trail.
pub type Trail = (OrderRecord, Vec<EventRecord>);

/// An order whose earliest due time has come, and that time (as indexed).
pub type DueTimer = (OrderId, DateTime<Utc>);

/// A row set aside because it could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    /// What the row was (`order ord_…`, `effect …`, …).
    pub what: String,
    /// Why it could not be read.
    pub error: String,
    pub at: DateTime<Utc>,
    /// The raw row, hex-encoded (for analysis; never edited in place).
    pub raw_hex: String,
    /// How an operator resolved it (`None`: unresolved, counted and alerted on).
    /// A resolved row stays in the quarantine, with who resolved it and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Resolution>,
}

impl Quarantined {
    /// The order the row was, when it was an order row (`order ord_…`).
    pub fn order_id(&self) -> Option<OrderId> {
        self.what.strip_prefix("order ")?.parse().ok()
    }
}

/// How a quarantined row was resolved, by whom and why (the application layer
/// decides; the store records it with the row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    pub outcome: ResolutionOutcome,
    /// The person who resolved it.
    pub by: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// What became of a quarantined row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolutionOutcome {
    /// Its row was put back (readable again, its audit chain verified).
    Restored,
    /// Given up by an operator: the row stays unreadable, kept in the quarantine.
    Discarded,
}

impl ResolutionOutcome {
    pub fn name(self) -> &'static str {
        match self {
            ResolutionOutcome::Restored => "restored",
            ResolutionOutcome::Discarded => "discarded",
        }
    }
}

/// Row counts for metrics and health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub pending: u64,
    pub dead: u64,
    pub quarantined: u64,
    /// Payments no order took, waiting for an operator.
    pub unmatched: u64,
}

/// Which connectors' effects `Store::due_effects_where` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectorFilter {
    /// Left out.
    pub skip: std::collections::HashSet<String>,
    /// When set, only these (and not those in `skip`).
    pub only: Option<std::collections::HashSet<String>>,
    /// Effects this process is performing now: left out before their rows are read,
    /// so a backlog in flight is not decoded again every round.
    pub performing: std::collections::HashSet<EffectId>,
}

impl ConnectorFilter {
    pub fn keeps(&self, connector: &str) -> bool {
        !self.skip.contains(connector) && self.only.as_ref().is_none_or(|o| o.contains(connector))
    }

    /// `keeps` for one effect: its connector is kept and it is not being performed.
    pub fn keeps_effect(&self, connector: &str, id: EffectId) -> bool {
        self.keeps(connector) && !self.is_performing(|| Some(id))
    }

    /// Whether this process is performing the effect now (`id` is asked for only when
    /// it performs any: the key-value store reads it from the outbox key).
    pub fn is_performing(&self, id: impl FnOnce() -> Option<EffectId>) -> bool {
        !self.performing.is_empty() && id().is_some_and(|id| self.performing.contains(&id))
    }
}

pub trait Store: Send + Sync {
    /// Applies `steps` atomically (all or none) and returns once they are durable.
    ///
    /// # Errors
    /// `Conflict` when a precondition of a step fails (nothing is written); `Failed`
    /// when the store can no longer make writes durable.
    fn commit(&self, steps: Vec<Step>) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Returns once everything committed so far is durable.
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Makes everything committed so far durable and stops the store's own tasks:
    /// once it returns, the store holds its files only through itself, and dropping
    /// the last handle releases them (an embedded store's lock goes with it). Called
    /// last at shutdown, when nothing writes any more; a commit after it fails.
    ///
    /// # Errors
    /// `Failed` when the store could not make writes durable.
    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
    /// The fatal error the store stopped on, if it did.
    fn failure(&self) -> Option<String>;
    /// How long the sync in progress has been running (`None`: none is). A sync
    /// that does not return (a hung disk) makes the daemon not ready.
    fn sync_running_for(&self) -> Option<std::time::Duration>;

    fn order(&self, id: OrderId) -> BoxFuture<'_, Result<Option<OrderRecord>, StoreError>>;
    fn events(&self, id: OrderId) -> BoxFuture<'_, Result<Vec<EventRecord>, StoreError>>;
    /// The order a source system knows by `source` (invariant 4's index).
    fn find_external<'a>(&'a self, source: &'a ExternalRef) -> BoxFuture<'a, Result<Option<OrderId>, StoreError>>;
    /// A page of orders in id (= arrival) order, optionally in one state, after `after`.
    fn list<'a>(
        &'a self,
        state: Option<&'a str>,
        after: Option<OrderId>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<OrderRecord>, StoreError>>;
    /// A customer's orders (oldest first) with what the history rules read of each;
    /// with `since`, only orders created from then on.
    fn customer_orders<'a>(
        &'a self,
        customer: &'a str,
        since: Option<DateTime<Utc>>,
    ) -> BoxFuture<'a, Result<Vec<(OrderId, Prior)>, StoreError>>;
    /// The order an invoice number was issued on.
    fn invoice_order<'a>(&'a self, number: &'a str) -> BoxFuture<'a, Result<Option<OrderId>, StoreError>>;
    /// What became of a payment reported before, if it was.
    fn payment<'a>(
        &'a self,
        source: &'a str,
        payment_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<PaymentOutcome>, StoreError>>;
    /// Payments waiting for an operator, by source and payment id.
    fn unmatched_payments(&self) -> BoxFuture<'_, Result<Vec<UnmatchedPayment>, StoreError>>;
    /// When a single-use key was spent, if it was.
    fn used<'a>(&'a self, once: &'a str) -> BoxFuture<'a, Result<Option<UsedLink>, StoreError>>;
    /// A background job's state, as last committed.
    fn job_state<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<serde_json::Value>, StoreError>>;
    /// Orders whose earliest due time is at or before `now`, earliest first, with it.
    fn due_timers(&self, now: DateTime<Utc>, limit: usize) -> BoxFuture<'_, Result<Vec<DueTimer>, StoreError>>;
    /// Every held digest item, by group.
    fn digest_items(&self) -> BoxFuture<'_, Result<Vec<(DigestKey, DigestItem)>, StoreError>>;

    /// Durable effects due at `now`, oldest due first.
    fn due_effects(&self, now: DateTime<Utc>, limit: usize) -> BoxFuture<'_, Result<Vec<EffectRecord>, StoreError>>;
    /// `due_effects` of the connectors `filter` keeps: the dispatcher leaves out those
    /// that cannot take an effect now, so a backlog of one never hides the others'
    /// effects. A backend should apply it before reading rows (the key-value store
    /// does); this default filters what `due_effects` read.
    ///
    /// Only what the dispatcher chooses and claims by is listed (`DueEffect`): the
    /// rows are read by `claim`, for the effects it starts.
    fn due_effects_where<'a>(
        &'a self,
        now: DateTime<Utc>,
        limit: usize,
        filter: &'a ConnectorFilter,
    ) -> BoxFuture<'a, Result<Vec<DueEffect>, StoreError>> {
        Box::pin(async move {
            let due = self.due_effects(now, limit).await?;
            Ok(due.iter().filter(|e| filter.keeps_effect(e.connector.as_str(), e.id)).map(DueEffect::from).collect())
        })
    }
    /// The effect as stored now, if it is still pending with the same schedule
    /// (`None` once it finished, was rescheduled or dead-lettered).
    fn current<'a>(&'a self, effect: &'a DueEffect) -> BoxFuture<'a, Result<Option<EffectRecord>, StoreError>>;
    /// Claims a listed effect for this process before it is performed: the effect as
    /// stored now if it is still pending with the same schedule, due at `now` and
    /// claimed by no other live process; `None` otherwise. On PostgreSQL the claim is
    /// a lease in the row (several daemons share the outbox): it lapses unless renewed
    /// (`renew_claim`), and the outcome's commit clears it. An embedded store belongs
    /// to one process, whose dispatcher keeps its claims in memory: this default only
    /// checks the effect is still due.
    fn claim<'a>(
        &'a self,
        effect: &'a DueEffect,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<EffectRecord>, StoreError>> {
        Box::pin(async move { Ok(self.current(effect).await?.filter(|e| e.next_at <= now)) })
    }
    /// Extends this process's claim on `effect`; false when it no longer holds it
    /// (performed, rescheduled, or lapsed and taken over). Embedded: always true.
    fn renew_claim<'a>(&'a self, effect: &'a EffectRecord) -> BoxFuture<'a, Result<bool, StoreError>> {
        let _ = effect;
        Box::pin(async { Ok(true) })
    }
    /// How often a claim must be renewed while its effect is performed (`None`: claims
    /// do not lapse, as on the embedded stores).
    fn claim_renewal(&self) -> Option<std::time::Duration> {
        None
    }
    /// Takes or renews the lease on a scheduled job (`scheduler`, `poll:<connector>`,
    /// `reconcile`) for `ttl`: true when this process holds it now, so the job runs
    /// once across the daemons sharing a database. Embedded: always true (one process).
    fn try_lease<'a>(&'a self, job: &'a str, ttl: std::time::Duration) -> BoxFuture<'a, Result<bool, StoreError>> {
        let _ = (job, ttl);
        Box::pin(async { Ok(true) })
    }
    /// Whether the store answers now (PostgreSQL: a round trip); for `/readyz`.
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
    fn pending_effects(&self, limit: usize) -> BoxFuture<'_, Result<Vec<EffectRecord>, StoreError>>;
    fn dead_letters(&self, limit: usize) -> BoxFuture<'_, Result<Vec<EffectRecord>, StoreError>>;
    fn dead_letter<'a>(&'a self, id: &'a EffectId) -> BoxFuture<'a, Result<Option<EffectRecord>, StoreError>>;

    /// Where an archived order is (`None`: not archived).
    fn archived(&self, id: OrderId) -> BoxFuture<'_, Result<Option<ArchiveEntry>, StoreError>>;
    /// A page of the archive index in order id order, after `after`.
    fn archive_entries(
        &self,
        after: Option<OrderId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(OrderId, ArchiveEntry)>, StoreError>>;
    /// The archive log (purges, holds, releases), in order.
    fn archive_log(&self) -> BoxFuture<'_, Result<Vec<ArchiveLogEntry>, StoreError>>;

    /// Rows set aside because they could not be decoded, resolved ones included.
    fn quarantined(&self) -> BoxFuture<'_, Result<Vec<Quarantined>, StoreError>>;
    /// Records `resolution` on the unresolved quarantined row `what` (its `what`, as
    /// listed): the row stays in the quarantine, no longer counted. With `restore`
    /// (an order row only), that order row is written back in the same write, where
    /// its indexes expect it; the caller has checked it (it decodes, its chain holds).
    /// A discarded order row takes the order out of the state and timer indexes.
    ///
    /// # Errors
    /// `NotFound` when no unresolved row is `what`; `Conflict` when `restore` is not
    /// the order `what` names, or that order has a row again.
    fn resolve_quarantined<'a>(
        &'a self,
        what: &'a str,
        resolution: Resolution,
        restore: Option<OrderRecord>,
    ) -> BoxFuture<'a, Result<Quarantined, StoreError>>;
    /// Counts for metrics and health, kept current (no scan).
    fn counts(&self) -> Counts;
    /// A page of orders in id (= arrival) order after `after`, each with its events:
    /// what a report or an export reads. The key-value store reads the page's events
    /// in one range; this default asks for each order's events.
    fn trails<'a>(&'a self, after: Option<OrderId>, limit: usize) -> BoxFuture<'a, Result<Vec<Trail>, StoreError>> {
        Box::pin(async move {
            let page = self.list(None, after, limit).await?;
            let mut out = Vec::with_capacity(page.len());
            for rec in page {
                let events = self.events(rec.id).await?;
                out.push((rec, events));
            }
            Ok(out)
        })
    }
    /// The page `trails` would give, as a report reads it ([`Sketch`]). This default
    /// reads the trails whole; the key-value store decodes only what a sketch holds.
    fn sketches<'a>(&'a self, after: Option<OrderId>, limit: usize) -> BoxFuture<'a, Result<Vec<Sketch>, StoreError>> {
        Box::pin(async move { Ok(self.trails(after, limit).await?.iter().map(Sketch::of).collect()) })
    }
    /// Orders in each of `states` now, with the oldest (the smallest id, so the
    /// earliest received). For `/metrics`: the key-value store counts index keys and
    /// PostgreSQL groups its state index, neither reads a record; this default reads
    /// them page by page.
    fn in_states<'a>(&'a self, states: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<InState>, StoreError>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(states.len());
            for state in states {
                let mut row = InState { state: (*state).to_owned(), orders: 0, oldest: None };
                let mut after = None;
                loop {
                    let page = self.list(Some(state), after, 1000).await?;
                    row.oldest = row.oldest.or_else(|| page.first().map(|r| r.id));
                    row.orders += page.len() as u64;
                    match page.last() {
                        Some(last) if page.len() == 1000 => after = Some(last.id),
                        _ => break,
                    }
                }
                out.push(row);
            }
            Ok(out)
        })
    }
}

/// How many orders are in a state, and the oldest of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InState {
    pub state: String,
    pub orders: u64,
    pub oldest: Option<OrderId>,
}

/// The engines a store can run on (`store.backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// fjall 3, an LSM tree, embedded (one process per data directory): the default
    /// for a new store.
    Fjall,
    /// sled 0.34, embedded (one process per data directory).
    Sled,
    /// redb 5, a copy-on-write B-tree in one file, embedded (one process per data directory).
    Redb,
    /// PostgreSQL (`postgres.rs`), a server that several daemons may share.
    Postgres,
}

impl Backend {
    pub const NAMES: &'static [&'static str] = &["fjall", "sled", "redb", "postgres"];
    /// The embedded engines (`kv/` over a data directory).
    pub const EMBEDDED: &'static [&'static str] = &["fjall", "sled", "redb"];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Fjall => "fjall",
            Backend::Sled => "sled",
            Backend::Redb => "redb",
            Backend::Postgres => "postgres",
        }
    }

    /// An engine in a data directory of this process (not a database server).
    pub(crate) fn is_embedded(self) -> bool {
        self != Backend::Postgres
    }

    /// The engine of a new store when `store.backend` is not set (chosen by
    /// measurement: README, Performance).
    pub const DEFAULT: Backend = Backend::Fjall;

    /// The embedded engine whose store is at `path`, if one is.
    pub fn detect(path: &std::path::Path) -> Option<Backend> {
        [Backend::Fjall, Backend::Sled, Backend::Redb].into_iter().find(|b| b.holds_store(path))
    }

    fn holds_store(self, path: &std::path::Path) -> bool {
        match self {
            Backend::Postgres => false,
            Backend::Fjall => fjall_engine::FjallEngine::exists(path),
            Backend::Sled => sled_engine::SledEngine::exists(path),
            Backend::Redb => redb_engine::RedbEngine::exists(path),
        }
    }
}

/// Refuses to create a store of one engine where a store of another one is: the
/// daemon would start on an empty store and the orders would seem gone.
fn not_another_engines(options: &Options) -> Result<(), StoreError> {
    if !options.backend.is_embedded() || options.backend.holds_store(&options.path) {
        return Ok(());
    }
    match Backend::detect(&options.path) {
        Some(other) => Err(StoreError::Io(format!(
            "{} holds a {} store, but store.backend is {}: set store.backend = \"{}\", or move the store with \
             `orderbridge store copy --to-backend {} --to-path NEW_DIR` and point store.path at NEW_DIR",
            options.path.display(),
            other.name(),
            options.backend.name(),
            other.name(),
            options.backend.name()
        ))),
        None => Ok(()),
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fjall" => Ok(Backend::Fjall),
            "sled" => Ok(Backend::Sled),
            "redb" => Ok(Backend::Redb),
            "postgres" => Ok(Backend::Postgres),
            other => Err(format!("unknown store backend `{other}` (available: {})", Backend::NAMES.join(", "))),
        }
    }
}

/// Where and how to open a store.
#[derive(Clone, Debug)]
pub struct Options {
    pub backend: Backend,
    pub path: std::path::PathBuf,
    /// The engine's cache, in bytes.
    pub cache_bytes: u64,
    /// How long the group commit gathers writers before one sync.
    pub commit_delay: std::time::Duration,
    /// The database, for `Backend::Postgres` (`None` for the embedded engines).
    pub postgres: Option<postgres::PgOptions>,
}

impl Options {
    /// A small fjall store under `dir` that syncs at once: what unit tests open.
    #[cfg(test)]
    pub(crate) fn test_fjall(dir: &std::path::Path) -> Options {
        Options {
            backend: Backend::Fjall,
            path: dir.join("data"),
            cache_bytes: 4 << 20,
            commit_delay: std::time::Duration::ZERO,
            postgres: None,
        }
    }
}

pub(crate) fn no_postgres() -> StoreError {
    StoreError::Io("store.backend = \"postgres\" needs store.url".into())
}

/// Opens (or creates) the store `options` name.
///
/// # Errors
/// `Locked` when another process holds it, `Corrupt` for damage or another layout,
/// `Io` when PostgreSQL cannot be reached or migrated.
pub async fn open(
    options: &Options,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    not_another_engines(options)?;
    match options.backend {
        Backend::Postgres => Ok(postgres::PgStore::open(options.postgres.as_ref().ok_or_else(no_postgres)?).await?),
        Backend::Fjall => Ok(fjall_engine::open(&options.path, options.cache_bytes, options.commit_delay, metrics)?),
        Backend::Sled => Ok(sled_engine::open(&options.path, options.cache_bytes, options.commit_delay, metrics)?),
        Backend::Redb => Ok(redb_engine::open(&options.path, options.cache_bytes, options.commit_delay, metrics)?),
    }
}

/// Opens the engine `options` name, without the store's layout on it (the layout
/// is `kv::KvStore::open`): for `store copy` and for tests that wrap an engine.
///
/// # Errors
/// As `open`; `Io` for PostgreSQL, which is not a key-value engine.
pub fn open_engine(options: &Options) -> Result<Box<dyn kv::Engine>, StoreError> {
    not_another_engines(options)?;
    match options.backend {
        Backend::Postgres => Err(StoreError::Io("PostgreSQL is not an embedded engine".into())),
        Backend::Fjall => Ok(Box::new(fjall_engine::FjallEngine::open(&options.path, options.cache_bytes)?)),
        Backend::Sled => Ok(Box::new(sled_engine::SledEngine::open(&options.path, options.cache_bytes)?)),
        Backend::Redb => Ok(Box::new(redb_engine::RedbEngine::open(&options.path, options.cache_bytes)?)),
    }
}

/// Opens a copy of a backup to read rows from (`store quarantine resolve --from`):
/// the embedded store at `path`, its engine detected. Use a copy: opening a store
/// may write to it. Close it (`Store::close`) when done.
///
/// # Errors
/// `NotFound` when no store is at `path`; as `open` otherwise.
pub async fn open_backup(path: &std::path::Path) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    let backend =
        Backend::detect(path).ok_or_else(|| StoreError::NotFound(format!("a store at {}", path.display())))?;
    let options = Options {
        backend,
        path: path.to_owned(),
        cache_bytes: 4 << 20,
        commit_delay: std::time::Duration::ZERO,
        postgres: None,
    };
    open(&options, std::sync::Arc::new(crate::metrics::Metrics::default())).await
}

/// Whether a store of `options.backend` exists at `options.path` (PostgreSQL: the
/// database is created by its operator, the schema at open).
pub fn exists(options: &Options) -> bool {
    options.backend == Backend::Postgres || options.backend.holds_store(&options.path)
}

/// What `copy` moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub keys: u64,
    pub bytes: u64,
}

impl std::fmt::Display for Copied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} rows ({} bytes)", self.keys, self.bytes)
    }
}

/// Copies every row of the embedded store at `from` into a new store at `to` (another
/// engine, or the same engine in another directory: a compacted copy); to or from
/// PostgreSQL, `dump::copy`. The target
/// must be empty; `from` must not be in use. The copy is synced before it returns;
/// the caller verifies it (`orderbridge store copy` runs `audit verify` on it).
///
/// # Errors
/// `Conflict` when the target holds data, `Locked` when either store is in use,
/// `Io`/`Corrupt` from the engines.
pub async fn copy(
    from: &Options,
    to: &Options,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> Result<Copied, StoreError> {
    // Opening the source through the layout upgrades an older layout first.
    let source = kv::KvStore::open(open_engine(from)?, std::time::Duration::ZERO, metrics)?;
    let copied = copy_rows(&source, to);
    // The source is free again when this returns (its committer holds the engine too).
    source.close().await?;
    copied
}

/// Every row of `source` into a new engine at `to`, synced.
fn copy_rows(source: &kv::KvStore<Box<dyn kv::Engine>>, to: &Options) -> Result<Copied, StoreError> {
    let target = open_engine(to)?;
    if target.range(&[0], &[0xff]).next().is_some() {
        return Err(StoreError::Conflict(format!("the target {} already holds data", to.path.display())));
    }
    let mut copied = Copied { keys: 0, bytes: 0 };
    let mut batch = kv::Batch::default();
    for row in source.engine().range(&[0], &[0xff]) {
        let (k, v) = row?;
        copied.keys += 1;
        copied.bytes += (k.len() + v.len()) as u64;
        batch.put(k, v);
        if batch.ops.len() >= 10_000 {
            target.write(std::mem::take(&mut batch))?;
        }
    }
    target.write(batch)?;
    target.sync().map_err(StoreError::Io)?;
    Ok(copied)
}
