//! `store copy` to and from PostgreSQL: the store read as typed records through the
//! `Store` verbs (orders with their events, pending effects, dead letters, digest
//! items, unmatched payments) and each backend's `extras` (payments seen, spent
//! links, job state, quarantine), and written into an empty target as steps committed
//! through `Store::commit`. The target's commit derives every index (external ids,
//! states, timers, customers, invoice numbers) from the order rows, as it does for a
//! live step. Between two embedded engines `store::copy` copies the raw rows instead.

use std::collections::HashMap;
use std::sync::Arc;

use super::extras::Extras;
use super::kv::{Engine, KvStore};
use super::postgres::PgStore;
use super::{
    ArchiveChange, ArchiveEntry, Backend, DigestChange, Options, OrderWrite, OutboxChange, PaymentWrite, Quarantined,
    Step, Store, StoreError,
};
use crate::domain::{ExternalRef, OrderId};
use crate::metrics::Metrics;

/// What `copy` moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    pub orders: u64,
    pub events: u64,
    pub pending: u64,
    pub dead: u64,
    pub digest_items: u64,
    pub payments: u64,
    pub unmatched: u64,
    pub links: u64,
    pub jobs: u64,
    pub quarantined: u64,
    pub archived: u64,
    pub archive_log: u64,
}

impl std::fmt::Display for Moved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} orders, {} events, {} pending effects, {} dead letters, {} digest items, {} payments ({} unmatched), \
             {} spent links, {} job states, {} quarantined rows, {} archived orders, {} archive log entries",
            self.orders,
            self.events,
            self.pending,
            self.dead,
            self.digest_items,
            self.payments,
            self.unmatched,
            self.links,
            self.jobs,
            self.quarantined,
            self.archived,
            self.archive_log
        )
    }
}

/// One side of a copy.
enum Side {
    Kv(Arc<KvStore<Box<dyn Engine>>>),
    Pg(Arc<PgStore>),
}

impl Side {
    fn store(&self) -> &dyn Store {
        match self {
            Side::Kv(s) => s.as_ref(),
            Side::Pg(s) => s.as_ref(),
        }
    }

    async fn extras(&self) -> Result<Extras, StoreError> {
        match self {
            Side::Kv(s) => s.extras(),
            Side::Pg(s) => s.extras().await,
        }
    }

    async fn add_quarantined(&self, rows: &[(String, String, Quarantined)]) -> Result<(), StoreError> {
        match self {
            Side::Kv(s) => s.add_quarantined(rows),
            Side::Pg(s) => s.add_quarantined(rows).await,
        }
    }
}

fn pg_options(o: &Options) -> Result<&super::postgres::PgOptions, StoreError> {
    o.postgres.as_ref().ok_or_else(super::no_postgres)
}

/// Opens the source (an embedded store's layout is upgraded first, as at any open).
/// A database a daemon still works on (a job lease held) is refused, as an embedded
/// store in use is (`Locked`).
async fn open_source(from: &Options, metrics: Arc<Metrics>) -> Result<Side, StoreError> {
    Ok(match from.backend {
        Backend::Postgres => {
            let s = PgStore::open(pg_options(from)?).await?;
            if let Some((job, holder, until)) = s.live_lease().await? {
                return Err(StoreError::Locked(format!(
                    "the database (daemon {holder} holds the lease on `{job}` until {until}; a stopped daemon's \
                     lease lapses then)"
                )));
            }
            Side::Pg(s)
        }
        _ => Side::Kv(KvStore::open(super::open_engine(from)?, std::time::Duration::ZERO, metrics)?),
    })
}

/// Opens the target and refuses it unless it is empty.
async fn open_empty_target(to: &Options, metrics: Arc<Metrics>) -> Result<Side, StoreError> {
    match to.backend {
        Backend::Postgres => {
            let s = PgStore::open(pg_options(to)?).await?;
            if !s.is_empty().await? {
                return Err(StoreError::Conflict("the target database already holds data".into()));
            }
            Ok(Side::Pg(s))
        }
        _ => {
            let engine = super::open_engine(to)?;
            if engine.range(&[0], &[0xff]).next().is_some() {
                return Err(StoreError::Conflict(format!("the target {} already holds data", to.path.display())));
            }
            Ok(Side::Kv(KvStore::open(engine, std::time::Duration::ZERO, metrics)?))
        }
    }
}

/// Steps per commit.
const CHUNK: usize = 500;

async fn commit_chunks(target: &dyn Store, steps: Vec<Step>) -> Result<(), StoreError> {
    let mut steps = steps.into_iter().peekable();
    while steps.peek().is_some() {
        target.commit(steps.by_ref().take(CHUNK).collect()).await?;
    }
    Ok(())
}

/// Copies the store `from` names into the empty store `to` names, where either (or
/// both) may be PostgreSQL: typed records, committed as steps. `from` must not be in
/// use (a stopped daemon). Everything is durable when it returns; the caller verifies
/// the copy (`orderbridge store copy` runs `audit verify` on it).
///
/// # Errors
/// `Conflict` when the target holds data, `Locked` when an embedded store is in use,
/// `Io`/`Corrupt` from either side.
/// An archived order's external id, read from its segment (the archive's business,
/// handed in by the caller): the copy takes it for the order on the target.
pub type ArchivedSource<'a> = &'a (dyn Fn(OrderId, &ArchiveEntry) -> Result<ExternalRef, String> + Sync);

pub async fn copy(
    from: &Options,
    to: &Options,
    metrics: Arc<Metrics>,
    archived_source: ArchivedSource<'_>,
) -> Result<Moved, StoreError> {
    let source = open_source(from, metrics.clone()).await?;
    let target = match open_empty_target(to, metrics).await {
        Ok(target) => target,
        Err(e) => {
            let _ = source.store().close().await;
            return Err(e);
        }
    };
    let moved = move_rows(&source, &target, archived_source).await;
    // Both closed also after a failure: the stores are free again when this returns.
    let closed = (target.store().close().await, source.store().close().await);
    let moved = moved?;
    closed.0?;
    closed.1?;
    Ok(moved)
}

/// Every row of `source` into `target`, durable when it returns.
async fn move_rows(source: &Side, target: &Side, archived_source: ArchivedSource<'_>) -> Result<Moved, StoreError> {
    let (src, dst) = (source.store(), target.store());
    let mut moved = Moved::default();

    // Orders with their events, a page at a time: the target derives the indexes.
    let mut after = None;
    loop {
        let page = src.list(None, after, CHUNK).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        let mut steps = Vec::with_capacity(page.len());
        for record in page {
            let events = src.events(record.id).await?;
            moved.orders += 1;
            moved.events += events.len() as u64;
            steps.push(Step { order: Some(OrderWrite { record, loaded: None }), events, ..Step::default() });
        }
        dst.commit(steps).await?;
    }

    move_archive(src, dst, archived_source, &mut moved).await?;

    // The outbox, then the dead letters (added, then buried as they were).
    let pending = src.pending_effects(usize::MAX).await?;
    moved.pending = pending.len() as u64;
    for chunk in pending.chunks(CHUNK) {
        let outbox = chunk.iter().cloned().map(OutboxChange::Add).collect();
        dst.commit(vec![Step { outbox, ..Step::default() }]).await?;
    }
    let dead = src.dead_letters(usize::MAX).await?;
    moved.dead = dead.len() as u64;
    for chunk in dead.chunks(CHUNK) {
        let add = chunk.iter().cloned().map(OutboxChange::Add).collect();
        dst.commit(vec![Step { outbox: add, ..Step::default() }]).await?;
        let bury = chunk.iter().map(|e| OutboxChange::Bury { from: e.clone(), dead: e.clone() }).collect();
        dst.commit(vec![Step { outbox: bury, ..Step::default() }]).await?;
    }

    let digests = src.digest_items().await?;
    moved.digest_items = digests.len() as u64;
    for chunk in digests.chunks(CHUNK) {
        let digests = chunk.iter().map(|(k, item)| DigestChange::Hold(k.clone(), Box::new(item.clone()))).collect();
        dst.commit(vec![Step { digests, ..Step::default() }]).await?;
    }

    // Payments seen, with the unmatched ones still waiting for an operator.
    let extras = source.extras().await?;
    let mut waiting: HashMap<(String, String), _> = src
        .unmatched_payments()
        .await?
        .into_iter()
        .map(|u| ((u.payment.source.clone(), u.payment.payment_id.clone()), u))
        .collect();
    moved.payments = extras.payments.len() as u64;
    let steps = extras
        .payments
        .into_iter()
        .map(|(source, payment_id, outcome)| {
            let unmatched = waiting.remove(&(source.clone(), payment_id.clone()));
            moved.unmatched += u64::from(unmatched.is_some());
            Step { payment: Some(PaymentWrite::Reported { source, payment_id, outcome, unmatched }), ..Step::default() }
        })
        .collect();
    commit_chunks(dst, steps).await?;
    if let Some(((source, id), _)) = waiting.into_iter().next() {
        return Err(StoreError::Corrupt(format!(
            "the unmatched payment {source}/{id} has no row among the payments seen; nothing after the payments was copied"
        )));
    }

    moved.links = extras.links.len() as u64;
    let steps = extras.links.into_iter().map(|l| Step { spend: Some(l), ..Step::default() }).collect();
    commit_chunks(dst, steps).await?;
    moved.jobs = extras.jobs.len() as u64;
    if !extras.jobs.is_empty() {
        dst.commit(vec![Step { jobs: extras.jobs, ..Step::default() }]).await?;
    }
    moved.quarantined = extras.quarantine.len() as u64;
    target.add_quarantined(&extras.quarantine).await?;
    dst.flush().await?;
    Ok(moved)
}

/// The archive's index (each archived order with its external id) and its log.
async fn move_archive(
    src: &dyn Store,
    dst: &dyn Store,
    archived_source: ArchivedSource<'_>,
    moved: &mut Moved,
) -> Result<(), StoreError> {
    let mut after = None;
    loop {
        let page = src.archive_entries(after, CHUNK).await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(*last);
        let mut archive = Vec::with_capacity(page.len());
        for (id, entry) in page {
            let source = archived_source(id, &entry).map_err(|e| {
                StoreError::Corrupt(format!("archived order {id}: {e}; nothing after the orders was copied"))
            })?;
            archive.push(ArchiveChange::Restore { id, source, entry });
        }
        moved.archived += archive.len() as u64;
        dst.commit(vec![Step { archive, ..Step::default() }]).await?;
    }
    let log = src.archive_log().await?;
    moved.archive_log = log.len() as u64;
    let steps = log.into_iter().map(|l| Step { archive: vec![ArchiveChange::Log(l)], ..Step::default() }).collect();
    commit_chunks(dst, steps).await
}
