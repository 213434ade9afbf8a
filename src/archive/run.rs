//! One archive pass: segments no store entry names are removed (orphans of a crash
//! between a segment's write and its commit, or of a purge between its commit and
//! the old file's removal); ended orders past `archive.after_days` move to new
//! segments, one commit per segment; archived orders past `archive.retain_years`
//! and under no legal hold are purged, each affected segment rewritten without
//! them and the switch logged in the archive log.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Months, Utc};

use super::{Archive, fault, io, log_draft, segment};
use crate::domain::OrderId;
use crate::orders::OrderError;
use crate::store::{ArchiveChange, ArchiveEntry, Loaded, OrderRecord, Step, StoreError};

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pass {
    /// Orders moved from the hot store to the archive.
    pub archived: u64,
    pub segments_written: u64,
    /// Archived orders purged.
    pub purged: u64,
    /// Segment files no store entry named, removed.
    pub orphans_removed: u64,
    /// Orders due that stay for now: an effect of theirs is still pending, or their
    /// move lost a race (they changed meanwhile). The next pass tries again.
    pub skipped: u64,
}

/// The states an order ends in.
const ENDED: [&str; 3] = ["closed", "cancelled", "rejected"];
const PAGE: usize = 1000;

/// When an order ended: when it entered its (final) state.
fn ended_at(rec: &OrderRecord) -> DateTime<Utc> {
    rec.state_since.unwrap_or(rec.updated_at)
}

fn conflict(e: &StoreError) -> bool {
    matches!(e, StoreError::Conflict(_))
}

impl Archive {
    /// Runs one pass now. `by` names who asked (the sweep, a person) in the log.
    ///
    /// # Errors
    /// Store and file errors; what was committed before stays.
    pub async fn run(&self, by: &str, now: DateTime<Utc>) -> Result<Pass, OrderError> {
        let _pass = self.pass.lock().await;
        let mut pass = Pass { orphans_removed: self.remove_orphans().await?, ..Pass::default() };
        self.move_due(now, &mut pass).await?;
        self.purge_due(now, by, &mut pass).await?;
        if let Some(m) = &self.metrics {
            m.add("orderbridge_archive_orders_total", &[], pass.archived);
            m.add("orderbridge_archive_purged_total", &[], pass.purged);
            let files = segment::files(&self.settings.dir).map_err(io("directory"))?;
            m.set("orderbridge_archive_segments", &[], files.len() as f64);
            m.set("orderbridge_archive_last_run_timestamp_seconds", &[], now.timestamp() as f64);
        }
        Ok(pass)
    }

    /// Every archive entry, a page at a time, to `each`.
    pub(crate) async fn each_entry(&self, mut each: impl FnMut(OrderId, ArchiveEntry)) -> Result<(), OrderError> {
        let mut after = None;
        loop {
            let page = self.orders.store().archive_entries(after, PAGE).await?;
            let full = page.len() == PAGE;
            after = page.last().map(|(id, _)| *id);
            for (id, e) in page {
                each(id, e);
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Removes the segment files no entry names; the store decides, never the file.
    async fn remove_orphans(&self) -> Result<u64, OrderError> {
        let mut named = HashSet::new();
        self.each_entry(|_, e| {
            named.insert(e.segment);
        })
        .await?;
        let mut removed = 0;
        for f in segment::files(&self.settings.dir).map_err(io("directory"))? {
            if !named.contains(&f) {
                tracing::warn!(segment = %f, "an archive segment no order refers to (left by a crash or a purge) is removed");
                segment::remove(&self.settings.dir, &f).map_err(io("segment"))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Moves the ended orders past `after_days`, by month of ending.
    async fn move_due(&self, now: DateTime<Utc>, pass: &mut Pass) -> Result<(), OrderError> {
        let cutoff = now - chrono::Duration::days(i64::from(self.settings.after_days));
        // An order with an effect still pending stays until it is performed (the
        // dispatcher reads the order when it records the outcome).
        let busy: HashSet<OrderId> =
            self.orders.store().pending_effects(usize::MAX).await?.iter().map(|e| e.id.order_id).collect();
        let mut buckets: BTreeMap<String, Vec<OrderRecord>> = BTreeMap::new();
        for state in ENDED {
            let mut after = None;
            loop {
                let page = self.orders.store().list(Some(state), after, PAGE).await?;
                let full = page.len() == PAGE;
                after = page.last().map(|r| r.id);
                for rec in page.into_iter().filter(|r| ended_at(r) <= cutoff) {
                    if busy.contains(&rec.id) {
                        pass.skipped += 1;
                        continue;
                    }
                    let month = ended_at(&rec).format("%Y-%m").to_string();
                    let bucket = buckets.entry(month.clone()).or_default();
                    bucket.push(rec);
                    if bucket.len() >= self.settings.segment_orders {
                        let recs = std::mem::take(bucket);
                        self.move_segment(&month, recs, now, pass).await?;
                    }
                }
                if !full {
                    break;
                }
            }
        }
        for (month, recs) in buckets.into_iter().filter(|(_, r)| !r.is_empty()) {
            self.move_segment(&month, recs, now, pass).await?;
        }
        Ok(())
    }

    /// Writes one segment of `recs`, then commits their move in one step.
    async fn move_segment(
        &self,
        month: &str,
        recs: Vec<OrderRecord>,
        now: DateTime<Utc>,
        pass: &mut Pass,
    ) -> Result<(), OrderError> {
        let mut lines = Vec::with_capacity(recs.len());
        for rec in &recs {
            let events = self.orders.store().events(rec.id).await?;
            lines.push(segment::encode_line(rec, &events));
        }
        let (dir, name) = (self.settings.dir.clone(), segment::new_name(month, now));
        let written = tokio::task::spawn_blocking(move || segment::write(&dir, &name, &lines, now))
            .await
            .map_err(|e| OrderError::Store(StoreError::Io(e.to_string())))?
            .map_err(io("segment"))?;
        fault("after-segment");
        let changes = recs
            .iter()
            .zip(&written.spans)
            .map(|(rec, (offset, len))| ArchiveChange::Move {
                id: rec.id,
                loaded: Loaded::of(rec),
                entry: ArchiveEntry {
                    segment: written.name.clone(),
                    sha256: written.sha256.clone(),
                    bytes: written.bytes,
                    offset: *offset,
                    len: *len,
                    ended: rec.state.name().to_owned(),
                    ended_at: ended_at(rec),
                    archived_at: now,
                    last_hash: rec.last_hash.clone(),
                    hold: None,
                },
            })
            .collect();
        match self.orders.commit(vec![Step { archive: changes, ..Step::default() }]).await {
            Ok(()) => {}
            Err(e) if conflict(&e) => {
                // Nothing was committed: the segment is nobody's.
                tracing::warn!(error = %e, segment = %written.name, "an order changed while it was archived; the next pass tries again");
                segment::remove(&self.settings.dir, &written.name).map_err(io("segment"))?;
                pass.skipped += recs.len() as u64;
                return Ok(());
            }
            // Committed or not, the store says which at the next pass.
            Err(e) => return Err(e.into()),
        }
        fault("after-commit");
        tracing::info!(segment = %written.name, orders = recs.len(), "orders archived");
        pass.archived += recs.len() as u64;
        pass.segments_written += 1;
        Ok(())
    }

    /// Purges the archived orders past `retain_years` that are under no legal hold.
    async fn purge_due(&self, now: DateTime<Utc>, by: &str, pass: &mut Pass) -> Result<(), OrderError> {
        let cut = now.checked_sub_months(Months::new(12 * self.settings.retain_years)).unwrap_or(now);
        let due = |e: &ArchiveEntry| e.hold.is_none() && e.ended_at <= cut;
        let mut segments = BTreeSet::new();
        self.each_entry(|_, e| {
            if due(&e) {
                segments.insert(e.segment);
            }
        })
        .await?;
        if segments.is_empty() {
            return Ok(());
        }
        let mut of: BTreeMap<String, Vec<(OrderId, ArchiveEntry)>> = BTreeMap::new();
        self.each_entry(|id, e| {
            if segments.contains(&e.segment) {
                of.entry(e.segment.clone()).or_default().push((id, e));
            }
        })
        .await?;
        for (seg, entries) in of {
            let (purge, keep): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(_, e)| due(e));
            pass.purged += self.purge_segment(&seg, purge, keep, by, now).await?;
        }
        Ok(())
    }

    /// Rewrites one segment without the orders in `purge`: a new segment of `keep`
    /// (none when nothing is left), one commit switching their entries and logging
    /// the purge, then the old file removed. Returns the orders purged.
    async fn purge_segment(
        &self,
        seg: &str,
        purge: Vec<(OrderId, ArchiveEntry)>,
        keep: Vec<(OrderId, ArchiveEntry)>,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, OrderError> {
        let dir = self.settings.dir.clone();
        let body = match std::fs::read(dir.join(seg)) {
            Ok(b) if purge.first().is_some_and(|(_, e)| segment::sha256(&b) == e.sha256) => b,
            Ok(_) | Err(_) => {
                tracing::error!(segment = %seg, "an archive segment is missing or altered; nothing of it is purged (run `orderbridge audit verify`)");
                return Ok(0);
            }
        };
        let mut lines = Vec::with_capacity(keep.len());
        for (id, e) in &keep {
            let line = segment::slice(&body, e.offset, e.len).ok_or_else(|| {
                OrderError::Store(StoreError::Corrupt(format!("order {id}'s line is outside segment {seg}")))
            })?;
            lines.push(line.to_vec());
        }
        let written = if keep.is_empty() {
            None
        } else {
            let (d, month) = (dir.clone(), seg.split('/').next().unwrap_or("unknown").to_owned());
            let name = segment::new_name(&month, now);
            let w = tokio::task::spawn_blocking(move || segment::write(&d, &name, &lines, now))
                .await
                .map_err(|e| OrderError::Store(StoreError::Io(e.to_string())))?
                .map_err(io("segment"))?;
            Some(w)
        };
        let mut changes: Vec<ArchiveChange> =
            purge.iter().map(|(id, e)| ArchiveChange::Replace { id: *id, from: e.clone(), to: None }).collect();
        if let Some(w) = &written {
            for ((id, e), (offset, len)) in keep.iter().zip(&w.spans) {
                let to = ArchiveEntry {
                    segment: w.name.clone(),
                    sha256: w.sha256.clone(),
                    bytes: w.bytes,
                    offset: *offset,
                    len: *len,
                    ..e.clone()
                };
                changes.push(ArchiveChange::Replace { id: *id, from: e.clone(), to: Some(to) });
            }
        }
        let mut draft = log_draft("purge", by, now, purge.iter().map(|(id, _)| *id).collect(), seg);
        draft.replaced_by = written.as_ref().map(|w| w.name.clone());
        changes.push(ArchiveChange::Log(self.chained(draft).await?));
        match self.orders.commit(vec![Step { archive: changes, ..Step::default() }]).await {
            Ok(()) => {}
            Err(e) if conflict(&e) => {
                tracing::warn!(error = %e, segment = %seg, "an archive entry changed during the purge; the next pass tries again");
                if let Some(w) = &written {
                    segment::remove(&dir, &w.name).map_err(io("segment"))?;
                }
                return Ok(0);
            }
            Err(e) => return Err(e.into()),
        }
        fault("after-purge-commit");
        segment::remove(&dir, seg).map_err(io("segment"))?;
        tracing::info!(segment = %seg, purged = purge.len(), kept = keep.len(), by, "archived orders purged");
        Ok(purge.len() as u64)
    }
}
