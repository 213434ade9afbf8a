//! The archive's part of `audit verify`: every segment the store names is there,
//! whole and unaltered (its sha256 and length as recorded when it was written), each
//! archived order's line is that order and its hash chain recomputes to the head it
//! was archived with (its seals checked with the audit keys, as for a hot order), and
//! the archive log's chain is unbroken. Segment files no
//! entry names are listed (a pass removes them).

use std::collections::BTreeMap;

use super::{Archive, segment};
use crate::domain::OrderId;
use crate::orders::{OrderError, Orders};
use crate::store::records::GENESIS;
use crate::store::{ArchiveEntry, ArchiveLogEntry};

/// What `audit verify` found in the archive.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ArchiveAudit {
    pub orders: u64,
    pub events: u64,
    pub segments: u64,
    pub log_entries: u64,
    /// Each problem, naming the segment or order (empty: intact).
    pub problems: Vec<String>,
    /// Segment files no entry names (orphans of a crash; the next pass removes them).
    pub orphans: Vec<String>,
}

impl Archive {
    /// Verifies the archive (see the module documentation).
    ///
    /// # Errors
    /// Store errors, or the archive directory not readable.
    pub async fn verify(&self) -> Result<ArchiveAudit, OrderError> {
        let mut by_segment: BTreeMap<String, Vec<(OrderId, ArchiveEntry)>> = BTreeMap::new();
        self.each_entry(|id, e| by_segment.entry(e.segment.clone()).or_default().push((id, e))).await?;
        let log = self.orders.store().archive_log().await?;
        let (dir, orders) = (self.settings.dir.clone(), self.orders.clone());
        tokio::task::spawn_blocking(move || verify_files(&orders, &dir, &by_segment, &log))
            .await
            .map_err(|e| OrderError::Store(crate::store::StoreError::Io(e.to_string())))?
    }
}

fn verify_files(
    orders: &Orders,
    dir: &std::path::Path,
    by_segment: &BTreeMap<String, Vec<(OrderId, ArchiveEntry)>>,
    log: &[ArchiveLogEntry],
) -> Result<ArchiveAudit, OrderError> {
    let mut a = ArchiveAudit { segments: by_segment.len() as u64, ..ArchiveAudit::default() };
    for (seg, entries) in by_segment {
        a.orders += entries.len() as u64;
        if let Some(p) = verify_segment(orders, dir, seg, entries, &mut a.events) {
            a.problems.push(p);
        }
    }
    a.log_entries = log.len() as u64;
    let mut prev = GENESIS.to_owned();
    for (i, e) in log.iter().enumerate() {
        if e.seq != i as u64 + 1 || e.prev_hash != prev || e.compute_hash() != e.hash {
            a.problems.push(format!(
                "archive log entry {} ({} by {}) was altered or one before it removed",
                e.seq, e.action, e.by
            ));
            break;
        }
        prev = e.hash.clone();
    }
    let files = segment::files(dir)
        .map_err(|e| OrderError::Store(crate::store::StoreError::Io(format!("archive directory: {e}"))))?;
    a.orphans = files.into_iter().filter(|f| !by_segment.contains_key(f)).collect();
    Ok(a)
}

/// The first problem of one segment, if any.
fn verify_segment(
    orders: &Orders,
    dir: &std::path::Path,
    seg: &str,
    entries: &[(OrderId, ArchiveEntry)],
    events: &mut u64,
) -> Option<String> {
    let first = &entries.first()?.1;
    let n = entries.len();
    let body = match std::fs::read(dir.join(seg)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some(format!("archive segment {seg} is missing ({n} archived orders)"));
        }
        Err(e) => return Some(format!("archive segment {seg} cannot be read: {e}")),
    };
    if (body.len() as u64) < first.bytes {
        return Some(format!("archive segment {seg} is truncated ({} of {} bytes)", body.len(), first.bytes));
    }
    let sha = segment::sha256(&body);
    if body.len() as u64 != first.bytes || sha != first.sha256 {
        return Some(format!("archive segment {seg} was altered (sha256 {sha}, the store recorded {})", first.sha256));
    }
    for (id, e) in entries {
        let line = segment::slice(&body, e.offset, e.len).and_then(|l| serde_json::from_slice::<segment::Line>(l).ok());
        let Some(line) = line else {
            return Some(format!("archived order {id}: its line in segment {seg} cannot be read"));
        };
        if line.order.id != *id || line.order.last_hash != e.last_hash {
            return Some(format!("archived order {id}: segment {seg} holds another order or head at its place"));
        }
        match orders.check_trail(&line.order, &line.events) {
            Ok(k) => *events += k,
            Err((seq, why)) => return Some(format!("archived order {id} in segment {seg}, event {seq}: {why}")),
        }
    }
    None
}
