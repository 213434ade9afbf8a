//! The archive (application layer, beside `crate::orders`): orders that ended long
//! ago leave the hot store for immutable segment files (`segment.rs`), with their
//! audit chains, so the hot store stays small; reads and `audit verify` see both.
//!
//! The store decides where an order is. A pass (`run.rs`) first writes a segment
//! (temporary name, fsync, rename, fsync of the directory), then makes one store
//! commit that removes the orders from the hot store and records each one's segment
//! in the archive index. A crash before that commit leaves a segment no entry names:
//! the next pass deletes it (the orders are still hot). A crash after it leaves the
//! orders archived. Either way each order is in exactly one place.
//!
//! Here: finding an order wherever it is (`find`, the one home for it), legal holds;
//! `run.rs`: the pass (orphans, moves, purges); `verify.rs`: the archive's part of
//! `audit verify`.

mod run;
mod segment;
mod verify;

use std::sync::Arc;

use chrono::{DateTime, Utc};

pub use run::Pass;
pub use verify::ArchiveAudit;

use crate::domain::OrderId;
use crate::orders::{OrderError, Orders};
use crate::settings::ArchiveSettings;
use crate::store::{
    ArchiveChange, ArchiveEntry, ArchiveLogEntry, EventRecord, LegalHold, OrderRecord, Step, StoreError,
};

/// An order found hot or in the archive.
#[derive(Debug, Clone)]
pub struct Found {
    pub record: OrderRecord,
    pub events: Vec<EventRecord>,
    /// Where it is archived (`None`: in the hot store).
    pub archived: Option<ArchiveEntry>,
}

/// The archive of one daemon (or command): its settings and the pass lock.
pub struct Archive {
    orders: Arc<Orders>,
    settings: ArchiveSettings,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// One pass at a time in this process (a pass deletes segments no entry names,
    /// so it must not run beside another one writing a segment).
    pass: tokio::sync::Mutex<()>,
}

fn io(what: &str) -> impl Fn(std::io::Error) -> OrderError + '_ {
    move |e| OrderError::Store(StoreError::Io(format!("archive {what}: {e}")))
}

/// Test hook: with `ORDERBRIDGE_FAULT=archive:<point>`, a debug build aborts at that
/// point of a pass, as a SIGKILL would (release builds ignore it).
fn fault(point: &str) {
    if cfg!(debug_assertions) && std::env::var("ORDERBRIDGE_FAULT").is_ok_and(|v| v == format!("archive:{point}")) {
        eprintln!("ORDERBRIDGE_FAULT: aborting at archive:{point}");
        std::process::abort();
    }
}

/// The external id of the archived order `id`, read from its line in the segment
/// `entry` names under `dir`: what `store copy` takes for it on the target.
///
/// # Errors
/// A segment that cannot be read there, or that holds another order.
pub fn archived_source(
    dir: &std::path::Path,
    id: OrderId,
    entry: &ArchiveEntry,
) -> Result<crate::domain::ExternalRef, String> {
    let line = segment::read_line(dir, &entry.segment, entry.offset, entry.len)?;
    if line.order.id != id {
        return Err(format!(
            "segment {} holds order {} at byte {}, not {id}",
            entry.segment, line.order.id, entry.offset
        ));
    }
    Ok(line.order.source)
}

impl Archive {
    pub fn new(orders: Arc<Orders>, settings: ArchiveSettings) -> Archive {
        Archive { orders, settings, metrics: None, pass: tokio::sync::Mutex::new(()) }
    }

    /// The same, counting what passes do (`orderbridge_archive_*`).
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Archive {
        self.metrics = Some(metrics);
        self
    }

    pub(crate) fn orders(&self) -> &Arc<Orders> {
        &self.orders
    }

    pub fn settings(&self) -> &ArchiveSettings {
        &self.settings
    }

    /// An order wherever it is: the hot store, else the archive. The one home for
    /// finding an order (the API, `orders show` and `explain` read through it).
    ///
    /// # Errors
    /// Store errors; an archived order whose segment cannot be read.
    pub async fn find(&self, id: OrderId) -> Result<Option<Found>, OrderError> {
        let store = self.orders.store();
        if let Some(record) = store.order(id).await? {
            let events = store.events(id).await?;
            return Ok(Some(Found { record, events, archived: None }));
        }
        let Some(entry) = store.archived(id).await? else { return Ok(None) };
        let (dir, e) = (self.settings.dir.clone(), entry.clone());
        let line = tokio::task::spawn_blocking(move || segment::read_line(&dir, &e.segment, e.offset, e.len))
            .await
            .map_err(|e| OrderError::Store(StoreError::Io(e.to_string())))?
            .map_err(|e| OrderError::Store(StoreError::Io(format!("archived order {id}: {e}"))))?;
        if line.order.id != id {
            return Err(OrderError::Store(StoreError::Corrupt(format!(
                "the archive entry of order {id} points at order {} in {}",
                line.order.id, entry.segment
            ))));
        }
        Ok(Some(Found { record: line.order, events: line.events, archived: Some(entry) }))
    }

    /// Sets (`Some(reason)`) or releases (`None`) the legal hold of an archived
    /// order, and logs it in the archive log.
    ///
    /// # Errors
    /// `NotFound` for an unknown order, `Conflict` for one not archived (a hot order
    /// is never purged) or already so.
    pub async fn hold(
        &self,
        id: OrderId,
        reason: Option<&str>,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<ArchiveEntry, OrderError> {
        let store = self.orders.store();
        let Some(from) = store.archived(id).await? else {
            return Err(match store.order(id).await? {
                Some(_) => OrderError::Conflict(format!(
                    "order {id} is not archived: legal holds apply to archived orders (a hot order is never purged)"
                )),
                None => OrderError::NotFound(format!("order {id}")),
            });
        };
        let mut to = from.clone();
        to.hold = reason.map(|r| LegalHold { reason: r.to_owned(), by: by.to_owned(), at: now });
        if from.hold.is_some() == to.hold.is_some() {
            let is = if from.hold.is_some() { "under a legal hold already" } else { "not under a legal hold" };
            return Err(OrderError::Conflict(format!("order {id} is {is}")));
        }
        let action = if reason.is_some() { "hold" } else { "release" };
        let mut draft = log_draft(action, by, now, vec![id], &from.segment);
        draft.reason = reason.unwrap_or_default().to_owned();
        let log = self.chained(draft).await?;
        let step = Step {
            archive: vec![ArchiveChange::Replace { id, from, to: Some(to.clone()) }, ArchiveChange::Log(log)],
            ..Step::default()
        };
        self.orders.commit(vec![step]).await?;
        Ok(to)
    }

    /// `e` as the next archive log entry, chained to the last one.
    async fn chained(&self, mut e: ArchiveLogEntry) -> Result<ArchiveLogEntry, OrderError> {
        let log = self.orders.store().archive_log().await?;
        (e.seq, e.prev_hash) =
            log.last().map_or((1, crate::store::records::GENESIS.to_owned()), |l| (l.seq + 1, l.hash.clone()));
        e.hash = e.compute_hash();
        Ok(e)
    }
}

/// An archive log entry before it is numbered and chained.
fn log_draft(action: &str, by: &str, at: DateTime<Utc>, orders: Vec<OrderId>, segment: &str) -> ArchiveLogEntry {
    ArchiveLogEntry {
        seq: 0,
        at,
        by: by.to_owned(),
        action: action.to_owned(),
        orders,
        segment: segment.to_owned(),
        replaced_by: None,
        reason: String::new(),
        prev_hash: String::new(),
        hash: String::new(),
    }
}
