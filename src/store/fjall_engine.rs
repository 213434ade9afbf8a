//! fjall 3 (an LSM tree) as an `Engine`. A batch is one fjall `WriteBatch` (one
//! journal entry, recovered all or nothing) written without a sync; a sync is one
//! `persist(SyncAll)` of the journal. The committer calls both for a whole group
//! (`commit.rs`): fjall holds its journal lock while it syncs, so a writer that
//! wrote its own batch would stall a runtime thread for the length of an fsync.
//!
//! Key spaces with their own life get a fjall keyspace each: orders and events
//! (large, long-lived values, kept apart from the keys by key-value separation so
//! compaction does not rewrite them) and the outbox (written once, deleted soon).
//! Every other key space shares `rows`, keys still led by their tag.
//!
//! Choices measured on the project's 2-core machine (README, "Performance"):
//! - Two background workers. With one, a worker can block sending into the queue
//!   only it reads (fjall-rs/fjall#323, open): a hang. With two, worker 0 hands
//!   compaction work back to the queue for worker 1; released fjall did so in a
//!   busy loop while worker 1 compacted (a tenth of the daemon's CPU under sustained
//!   intake), so we build fjall from `vendor/fjall` with a 1 ms wait there
//!   (`vendor/README.md`).
//! - 2 MiB memtables and a 64 MiB journal (fjall's least; its default is 512 MiB):
//!   fjall's memory is mostly unflushed memtables, bounded only by the journal; at
//!   1 M orders the smaller journal took the store bench's RSS from 154 to 126 MiB.
//!   2 MiB memtables against 4: the daemon's RSS after `scripts/bench.sh 1000000
//!   64` 128 → 106–117 MiB, orders/s not lower (4 055 → 4 383–4 581); 1 MiB
//!   saved nothing more and cost a fifth more CPU per order (flushes and
//!   compactions).
//! - No block compression: rows are LZ4-compressed already (`codec.rs`).
//! - Filter and index blocks partitioned at every level (fjall partitions them in
//!   the last level only), the top-level index of each pinned: memory no longer
//!   grows with the data (a whole filter and index per table, pinned, did), the
//!   partitions a read needs come through the block cache, and a compaction builds
//!   a filter a partition at a time instead of holding a hash of every key of its
//!   table. With 16 MiB tables (fjall's default is 64 MiB) a compaction holds less
//!   and a restart opens less. `cargo bench --bench store -- 1000000 64 fjall`:
//!   RSS 112 → 73–79 MiB (peak 153 → 81–86 MiB), CPU per order and orders/s within
//!   the machine's noise, disk 1 033 → 954–1 010 B per order, reopen 0.80 → 0.40–0.53 s.
//!   (Whole filters must then be pinned, as they were: unpinned, a whole filter
//!   went through the cache for every point read, five times the CPU per step.)
//!   Keyspace options are fixed when a keyspace is created: a store created before
//!   keeps its own until it is copied (`orderbridge store copy`) into a new one.
//! - A failed write or persist poisons the database (every later call fails), which
//!   is our rule too: fatal, never retried.

use std::path::Path;
use std::sync::Arc;

use fjall::compaction::Leveled;
use fjall::config::PartitioningPolicy;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode};

use super::StoreError;
use super::kv::{Batch, Engine, EngineError, KvIter, KvStore};
use crate::metrics::Metrics;

/// Tags with a keyspace of their own (the tag is not part of the key there).
const OWN: [(u8, &str); 3] = [(b'o', "orders"), (b'e', "events"), (b'q', "outbox")];
const SHARED: &str = "rows";
const MEMTABLE: u64 = 2 << 20;
/// The journal, past which the oldest memtables are flushed however small (fjall's
/// default 512 MiB; 64 MiB is its least): what bounds memtables that wait for a
/// flush while the workers compact.
const JOURNALS: u64 = 64 << 20;
/// The size compactions cut tables at (fjall's default 64 MiB).
const TABLE: u64 = 16 << 20;
/// Tables flushed to level 0 before they are merged into level 1 (fjall's default 4).
/// Index keys (external ids, customers) are random, so every merge into level 1
/// rewrites most of it: with 2 MiB memtables the default rewrote level 1 for every
/// 8 MiB flushed. At 16, `scripts/bench.sh 1000000 64`, one run each: fjall's
/// workers wrote 4.6 → 2.3 GB with 81 → 43 s of CPU, p99 46.5 → 36.0 ms, orders/s and
/// the daemon's CPU per order the same (a point read now checks more level-0 filters);
/// the store bench at a million: 8 365 → 9 643 orders/s, p99 34.7 → 24.0 ms, 185 →
/// 158 µs per order, reopen 0.83 → 1.00 s. fjall keeps it with a keyspace when the
/// keyspace is created: a store created before keeps 4 until `store copy`.
const L0_TABLES: u8 = 16;
/// Values from this size on are kept apart from the LSM tree (orders, events), in
/// blob files written once: compaction then moves a key and a pointer, not the row.
/// It was 512 until rows were compressed against a dictionary (`codec.rs`): order
/// rows came down to about 420 B and step events to about 370, and nothing was kept
/// apart any more, so compaction rewrote every row several times. 128 keeps both
/// apart again: `scripts/bench.sh 1000000 64`, one run each, fjall's workers wrote
/// 9.3 → 4.6 GB, p99 57 → 47 ms, 4 150 → 4 371 orders/s, RSS after 119 → 112 MiB;
/// the cost is disk (keyspaces 409 → 465 MiB each for orders and events; after the
/// store bench's drain 954–1 010 → 1 128 B per order) and a slower reopen (0.4–0.5
/// → 0.8 s). A store created before keeps the threshold it was created with.
const SEPARATE_FROM: u32 = 128;

pub(crate) struct FjallEngine {
    db: Database,
    /// `OWN`'s keyspaces, in its order.
    own: Vec<Keyspace>,
    shared: Keyspace,
}

/// The fjall store: the shared layout over fjall.
pub(crate) type FjallStore = KvStore<FjallEngine>;

fn engine_error(e: fjall::Error) -> EngineError {
    match e {
        fjall::Error::Io(io) => EngineError::Io(io.to_string()),
        fjall::Error::Poisoned => EngineError::Io("a previous write or sync failed; the database is poisoned".into()),
        other => EngineError::Corrupt(other.to_string()),
    }
}

impl FjallEngine {
    /// Opens (or creates) fjall at `dir` with a block cache of `cache_bytes`.
    ///
    /// # Errors
    /// `Locked` when another process holds it, `Corrupt` when fjall finds damage or
    /// an unknown format (we never delete data to recover), `Io` otherwise.
    pub(crate) fn open(dir: &Path, cache_bytes: u64) -> Result<FjallEngine, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(format!("create {}: {e}", dir.display())))?;
        let db = Database::builder(dir)
            .cache_size(cache_bytes)
            .manual_journal_persist(true)
            .max_journaling_size(JOURNALS)
            .worker_threads(2)
            .open()
            .map_err(|e| match e {
                fjall::Error::Locked => StoreError::Locked(dir.display().to_string()),
                other => engine_error(other).into(),
            })?;
        let keyspace = |name: &str, separate: bool| {
            db.keyspace(name, || {
                let o = KeyspaceCreateOptions::default()
                    .manual_journal_persist(true)
                    .max_memtable_size(MEMTABLE)
                    .filter_block_partitioning_policy(PartitioningPolicy::all(true))
                    .index_block_partitioning_policy(PartitioningPolicy::all(true))
                    .compaction_strategy(Arc::new(
                        Leveled::default().with_table_target_size(TABLE).with_l0_threshold(L0_TABLES),
                    ))
                    .data_block_compression_policy(fjall::config::CompressionPolicy::disabled());
                if separate {
                    o.with_kv_separation(Some(
                        KvSeparationOptions::default()
                            .separation_threshold(SEPARATE_FROM)
                            .compression(fjall::CompressionType::None),
                    ))
                } else {
                    o
                }
            })
            .map_err(|e| StoreError::from(engine_error(e)))
        };
        let own = OWN.iter().map(|(tag, name)| keyspace(name, *tag != b'q')).collect::<Result<Vec<_>, _>>()?;
        let shared = keyspace(SHARED, false)?;
        Ok(FjallEngine { db, own, shared })
    }

    /// Whether a fjall store exists at `dir`.
    pub(crate) fn exists(dir: &Path) -> bool {
        dir.join("keyspaces").exists()
    }

    /// The keyspace of `tag`, and whether keys there carry the tag.
    fn space(&self, tag: u8) -> (&Keyspace, bool) {
        match OWN.iter().position(|(t, _)| *t == tag) {
            Some(i) => (&self.own[i], false),
            None => (&self.shared, true),
        }
    }

    /// The key as stored in `tag`'s keyspace.
    fn local<'k>(&self, key: &'k [u8]) -> (&Keyspace, &'k [u8]) {
        let (ks, tagged) = self.space(key[0]);
        (ks, if tagged { key } else { &key[1..] })
    }
}

/// Opens the fjall store at `dir`.
///
/// # Errors
/// As `FjallEngine::open` and `KvStore::open`.
pub(crate) fn open(
    dir: &Path,
    cache_bytes: u64,
    commit_delay: std::time::Duration,
    metrics: Arc<Metrics>,
) -> Result<Arc<FjallStore>, StoreError> {
    KvStore::open(FjallEngine::open(dir, cache_bytes)?, commit_delay, metrics)
}

impl Engine for FjallEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        if key.is_empty() {
            return Ok(None);
        }
        let (ks, k) = self.local(key);
        ks.get(k).map(|v| v.map(|v| v.to_vec())).map_err(engine_error)
    }

    fn range(&self, from: &[u8], to: &[u8]) -> KvIter<'_> {
        // A range may span tags (a copy reads everything): one keyspace range per tag,
        // in tag order, so keys come out in the same order as one sorted space.
        let first = from.first().copied().unwrap_or(0);
        let Some(&end_tag) = to.first() else { return Box::new(std::iter::empty()) };
        let mut parts: Vec<KvIter<'_>> = Vec::new();
        for tag in first..=end_tag {
            let lower: &[u8] = if tag == first && !from.is_empty() { &from[1..] } else { &[] };
            let upper: Option<&[u8]> = if tag == end_tag { Some(&to[1..]) } else { None };
            if upper.is_some_and(|u| u <= lower) {
                continue;
            }
            let (ks, tagged) = self.space(tag);
            let prefix = move |k: &[u8]| if tagged { k.to_vec() } else { [&[tag][..], k].concat() };
            let lo = [&[tag][..], lower].concat();
            let iter = match (tagged, upper) {
                (true, Some(u)) => ks.range(lo..[&[tag][..], u].concat()),
                (true, None) => ks.range(lo..),
                (false, Some(u)) => ks.range(lower.to_vec()..u.to_vec()),
                (false, None) => ks.range(lower.to_vec()..),
            };
            // In `rows`, an open upper bound stops where the next tag begins.
            let open_shared = tagged && upper.is_none();
            parts.push(Box::new(
                iter.map(move |g| g.into_inner().map(|(k, v)| (prefix(&k), v.to_vec())).map_err(engine_error))
                    .take_while(move |r| !open_shared || r.as_ref().map_or(true, |(k, _)| k[0] == tag)),
            ));
        }
        Box::new(parts.into_iter().flatten())
    }

    fn write(&self, batch: Batch) -> Result<(), EngineError> {
        let mut b = self.db.batch().durability(None);
        for (key, value) in batch.ops {
            if key.is_empty() {
                continue;
            }
            let (ks, tagged) = self.space(key[0]);
            let k = if tagged { &key[..] } else { &key[1..] };
            match value {
                Some(v) => b.insert(ks, k, &v[..]),
                None => b.remove(ks, k),
            }
        }
        b.commit().map_err(engine_error)
    }

    fn sync(&self) -> Result<(), String> {
        self.db.persist(PersistMode::SyncAll).map_err(|e| format!("fjall persist: {e}"))
    }
}
