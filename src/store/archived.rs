//! The store's side of the archive: which segment file holds each archived order
//! (the archive index) and the archive's own log (purges and legal holds), both
//! written by `Step::archive` in the same atomic commit as the orders they move.
//! The store decides where an order is: an order is hot (its row is in the store)
//! or archived (an index entry names its segment), never both, and a segment file
//! no entry names is an orphan of a crash (`crate::archive` deletes it).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Loaded;
use crate::domain::{ExternalRef, OrderId};

/// Where an archived order is, and what it was archived as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveEntry {
    /// The segment file, relative to the archive directory (`2026-03/seg-….jsonl`).
    pub segment: String,
    /// The segment's sha256 (hex) and length in bytes, as written: `audit verify`
    /// compares the file with these, so an altered or truncated segment is named.
    pub sha256: String,
    pub bytes: u64,
    /// The order's line in the segment: byte offset and length.
    pub offset: u64,
    pub len: u64,
    /// The state the order ended in (`closed`, `cancelled`, `rejected`) and when.
    pub ended: String,
    pub ended_at: DateTime<Utc>,
    pub archived_at: DateTime<Utc>,
    /// The head of its audit chain when it was archived.
    pub last_hash: String,
    /// A legal hold: the order is never purged while it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<LegalHold>,
}

/// Why and by whom an archived order is kept past its retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegalHold {
    pub reason: String,
    pub by: String,
    pub at: DateTime<Utc>,
}

/// A change to the archive index or log, committed with the rest of its step.
#[derive(Debug, Clone)]
pub enum ArchiveChange {
    /// The order leaves the hot store: its row, events and index entries (state,
    /// timer, invoice, customer history) are removed and `entry` records where it is
    /// now. Its external id stays taken (invariant 4: a redelivery finds it archived).
    /// The stored order must still be at `loaded.last_seq`, else `Conflict`.
    Move { id: OrderId, loaded: Loaded, entry: ArchiveEntry },
    /// An archived order's entry replaced (another segment after a purge, a hold set
    /// or released) or removed (`to: None`: purged). It must still be `from`.
    Replace { id: OrderId, from: ArchiveEntry, to: Option<ArchiveEntry> },
    /// An entry appended to the archive log; its number must be free.
    Log(ArchiveLogEntry),
    /// An archived order as another store held it (`store copy`): its entry, and its
    /// external id taken for it. The order must be neither hot nor archived here and
    /// the external id free, else `Conflict`.
    Restore { id: OrderId, source: ExternalRef, entry: ArchiveEntry },
}

/// One entry of the archive log: a purge, a hold or a release, hash-chained like an
/// order's events (`hash = sha256(prev_hash ‖ JSON of the rest)`), so `audit verify`
/// finds an entry altered or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveLogEntry {
    /// 1, 2, … with no gaps.
    pub seq: u64,
    pub at: DateTime<Utc>,
    /// Who did it (`archive sweep`, `cli:<user>`, `admin api`).
    pub by: String,
    /// `purge`, `hold` or `release`.
    pub action: String,
    pub orders: Vec<OrderId>,
    /// The segment the orders were in and, for a purge, the segment that replaced it
    /// (`None`: no order of it was left).
    pub segment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub prev_hash: String,
    pub hash: String,
}

impl ArchiveLogEntry {
    /// The hash this entry must carry.
    pub fn compute_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut body = self.clone();
        body.hash = String::new();
        body.prev_hash = String::new();
        let mut h = Sha256::new();
        h.update(self.prev_hash.as_bytes());
        h.update(serde_json::to_vec(&body).expect("log entry serialises"));
        hex::encode(h.finalize())
    }
}
