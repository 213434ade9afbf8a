//! redb 5 (a copy-on-write B-tree in one file) as an `Engine`: every key in one
//! table of bytes to bytes, keys still led by their tag. A batch is one write
//! transaction committed with `Durability::None`: visible to readers at once, atomic,
//! and kept in redb's write buffer, not written to the file. A sync is an empty write
//! transaction committed with `Durability::Immediate`: its commit writes every page
//! the earlier non-durable commits left, flips the header to the newest root (which
//! holds their changes) and fsyncs, so they all become durable together. A crash
//! before it rolls back to the last durable commit, never to half a batch.
//!
//! Choices, and what redb does that the others do not:
//! - Memory: `cache_bytes` is redb's whole cache, read cache and write buffer
//!   together (the write buffer holds at most half; the rest of a large non-durable
//!   group is written out early, best effort). redb's default is 1 GiB.
//! - Locking: redb takes byte-range (OFD) locks on the file, not `flock`, so a probe
//!   must open the file with redb to tell whether it is in use.
//! - Crash recovery: after an unclean stop (kill -9, power loss) redb's open walks the
//!   whole file to check its checksums and rebuild the allocator state, so that open
//!   takes time in proportion to the store. A clean close records the allocator state
//!   and the next open is quick.
//! - A failed I/O latches inside redb (every later call fails with `PreviousIo`), and a
//!   failed commit refuses later write transactions; this engine also refuses every
//!   write and sync after one failed, which is our rule (`commit.rs`).
//! - redb may panic, rather than return `Corrupted`, on a file damaged outside it; the
//!   open turns such a panic into `Corrupt` (its integrity check on every open would
//!   read the whole file).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::StoreError;
use super::kv::{Batch, Engine, EngineError, KvIter, KvStore};
use crate::metrics::Metrics;

/// The file that holds the store, inside the data directory.
const FILE: &str = "orderbridge.redb";
const ROWS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("rows");

pub struct RedbEngine {
    db: Database,
    /// Why a write or sync failed, once one did: every later one is refused.
    failed: OnceLock<String>,
}

/// The redb store: the shared layout over redb.
pub(crate) type RedbStore = KvStore<RedbEngine>;

fn engine_error(e: impl Into<redb::Error>) -> EngineError {
    match e.into() {
        e @ (redb::Error::Corrupted(_)
        | redb::Error::UpgradeRequired(_)
        | redb::Error::TableTypeMismatch(_)
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TypeDefinitionChanged(_)) => EngineError::Corrupt(e.to_string()),
        // redb says "not a redb database" as an I/O error of this kind.
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => EngineError::Corrupt(io.to_string()),
        other => EngineError::Io(other.to_string()),
    }
}

impl RedbEngine {
    /// Opens (or creates) redb at `dir` with a cache of `cache_bytes`.
    ///
    /// # Errors
    /// `Locked` when another process holds it, `Corrupt` when redb finds damage or an
    /// unknown format (we never delete data to recover), `Io` otherwise.
    pub(crate) fn open(dir: &Path, cache_bytes: u64) -> Result<RedbEngine, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(format!("create {}: {e}", dir.display())))?;
        let path = Self::file(dir);
        let created = !path.exists();
        let cache = usize::try_from(cache_bytes).unwrap_or(usize::MAX);
        // A file damaged outside redb can make its open panic (see the module documentation).
        let opened =
            std::panic::catch_unwind(|| redb::Builder::new().set_cache_size(cache).create(&path)).map_err(|panic| {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                StoreError::Corrupt(format!("redb could not open {}: {why}", path.display()))
            })?;
        let db = opened.map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen | redb::DatabaseError::LockProtocolMismatch => {
                StoreError::Locked(dir.display().to_string())
            }
            other => engine_error(other).into(),
        })?;
        let engine = RedbEngine { db, failed: OnceLock::new() };
        // The table exists from the start, so a read never meets a missing one.
        let txn = engine.db.begin_write().map_err(|e| StoreError::from(engine_error(e)))?;
        txn.open_table(ROWS).map_err(|e| StoreError::from(engine_error(e)))?;
        txn.commit().map_err(|e| StoreError::from(engine_error(e)))?;
        if created {
            // The new file's name is durable only once its directory is synced.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| StoreError::Io(format!("fsync {}: {e}", dir.display())))?;
        }
        Ok(engine)
    }

    /// The redb file of the store at `dir`.
    pub fn file(dir: &Path) -> PathBuf {
        dir.join(FILE)
    }

    /// Whether a redb store exists at `dir`.
    pub(crate) fn exists(dir: &Path) -> bool {
        Self::file(dir).exists()
    }

    /// Runs a write transaction `fill` with `durability`, unless one failed before.
    fn commit(
        &self,
        durability: Durability,
        fill: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), EngineError> {
        if let Some(e) = self.failed.get() {
            return Err(EngineError::Io(format!("a previous write or sync failed ({e}); the store is refused")));
        }
        let run = || -> Result<(), redb::Error> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(durability)?;
            if matches!(durability, Durability::Immediate) {
                // Quick repair: each durable commit also saves the allocator state (a
                // two-phase commit), so opening after a crash does not walk the whole
                // file to rebuild it (4.2 s at 1 M orders without). Its cost did not
                // show in the store bench (README, Performance).
                txn.set_quick_repair(true);
            }
            fill(&txn)?;
            txn.commit()?;
            Ok(())
        };
        run().map_err(|e| {
            let e = engine_error(e);
            let (EngineError::Io(m) | EngineError::Corrupt(m)) = &e;
            let _ = self.failed.set(m.clone());
            e
        })
    }
}

/// Opens the redb store at `dir`.
///
/// # Errors
/// As `RedbEngine::open` and `KvStore::open`.
pub(crate) fn open(
    dir: &Path,
    cache_bytes: u64,
    commit_delay: std::time::Duration,
    metrics: Arc<Metrics>,
) -> Result<Arc<RedbStore>, StoreError> {
    KvStore::open(RedbEngine::open(dir, cache_bytes)?, commit_delay, metrics)
}

impl Engine for RedbEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let txn = self.db.begin_read().map_err(engine_error)?;
        let table = txn.open_table(ROWS).map_err(engine_error)?;
        let found = table.get(key).map_err(engine_error)?;
        Ok(found.map(|v| v.value().to_vec()))
    }

    fn range(&self, from: &[u8], to: &[u8]) -> KvIter<'_> {
        if from >= to {
            return Box::new(std::iter::empty());
        }
        // One read transaction per range: the owned range keeps it (a snapshot) alive
        // while the caller iterates, and reads pages as it goes.
        let rows = self
            .db
            .begin_read()
            .map_err(engine_error)
            .and_then(|txn| txn.open_table(ROWS).map_err(engine_error))
            .and_then(|table| table.range_owned(from..to).map_err(engine_error));
        match rows {
            Ok(rows) => Box::new(
                rows.map(|row| row.map(|(k, v)| (k.value().to_vec(), v.value().to_vec())).map_err(engine_error)),
            ),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    fn write(&self, batch: Batch) -> Result<(), EngineError> {
        // Group commit: durable only with the next sync.
        self.commit(Durability::None, |txn| {
            let mut table = txn.open_table(ROWS)?;
            for (k, v) in &batch.ops {
                match v {
                    Some(v) => {
                        table.insert(&k[..], &v[..])?;
                    }
                    None => {
                        table.remove(&k[..])?;
                    }
                }
            }
            Ok(())
        })
    }

    fn failure(&self) -> Option<String> {
        self.failed.get().cloned()
    }

    fn sync(&self) -> Result<(), String> {
        // An empty durable commit makes every non-durable commit before it durable.
        self.commit(Durability::Immediate, |_| Ok(())).map_err(|e| match e {
            EngineError::Io(m) | EngineError::Corrupt(m) => format!("redb commit: {m}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a process crash would leave: the file as written so far, opened apart.
    fn after_crash(dir: &Path) -> RedbEngine {
        let copy = dir.join("after-crash");
        std::fs::create_dir_all(&copy).unwrap();
        std::fs::copy(RedbEngine::file(dir), RedbEngine::file(&copy)).unwrap();
        RedbEngine::open(&copy, 1 << 20).unwrap()
    }

    #[test]
    fn a_write_is_visible_at_once_and_in_the_file_only_after_a_sync() {
        let dir = tempfile::tempdir().unwrap();
        let engine = RedbEngine::open(dir.path(), 1 << 20).unwrap();
        let mut b = Batch::default();
        b.put(b"ka".to_vec(), b"1".to_vec());
        b.put(b"kb".to_vec(), b"2".to_vec());
        engine.write(b).unwrap();
        assert_eq!(engine.get(b"ka").unwrap(), Some(b"1".to_vec()));
        assert_eq!(after_crash(dir.path()).get(b"ka").unwrap(), None, "not durable yet");
        std::fs::remove_dir_all(dir.path().join("after-crash")).unwrap();
        engine.sync().unwrap();
        let crashed = after_crash(dir.path());
        let rows: Vec<_> = crashed.range(b"k", b"l").map(Result::unwrap).collect();
        assert_eq!(rows, vec![(b"ka".to_vec(), b"1".to_vec()), (b"kb".to_vec(), b"2".to_vec())]);
    }

    #[test]
    fn a_second_open_is_locked_and_an_empty_range_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let engine = RedbEngine::open(dir.path(), 1 << 20).unwrap();
        assert!(matches!(RedbEngine::open(dir.path(), 1 << 20), Err(StoreError::Locked(_))));
        assert!(engine.range(b"b", b"a").next().is_none());
        assert!(RedbEngine::exists(dir.path()));
    }

    #[test]
    fn a_file_that_is_not_redb_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(RedbEngine::file(dir.path()), vec![0x5a; 8192]).unwrap();
        assert!(matches!(RedbEngine::open(dir.path(), 1 << 20), Err(StoreError::Corrupt(_))));
    }
}
