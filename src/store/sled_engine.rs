//! sled 0.34 as an `Engine`: one tree, a batch is one `apply_batch` (atomic, also
//! across a crash), and a sync is sled's `flush()` followed by an fsync of its files,
//! because sled's own flush uses `sync_file_range`, which is not power-loss durable
//! (sled #1351, #1452). Never `flush_async`: it hangs under concurrent callers
//! (sled #1241, #1357).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::StoreError;
use super::kv::{Batch, Engine, EngineError, KvIter, KvStore};
use crate::metrics::Metrics;

pub(crate) struct SledEngine {
    db: sled::Db,
    tree: sled::Tree,
    dir: PathBuf,
}

fn engine_error(e: sled::Error) -> EngineError {
    match e {
        sled::Error::Corruption { .. } => EngineError::Corrupt(e.to_string()),
        other => EngineError::Io(other.to_string()),
    }
}

/// The sled store: the shared layout over sled.
pub(crate) type SledStore = KvStore<SledEngine>;

impl SledEngine {
    /// Opens (or creates) sled at `dir` with a page cache of `cache_bytes`.
    ///
    /// # Errors
    /// `Locked` when another process holds it, `Corrupt` when sled finds damage (we
    /// never delete data to recover), `Io` otherwise.
    pub(crate) fn open(dir: &Path, cache_bytes: u64) -> Result<SledEngine, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(format!("create {}: {e}", dir.display())))?;
        let ours = opened_here(dir);
        let mut waited = std::time::Duration::ZERO;
        let db = loop {
            let opened = sled::Config::new()
                .path(dir)
                .cache_capacity(cache_bytes)
                .flush_every_ms(None)
                .mode(sled::Mode::HighThroughput)
                .open();
            match opened {
                Ok(db) => break db,
                Err(sled::Error::Io(ref ioe))
                    if ioe.kind() == std::io::ErrorKind::WouldBlock || ioe.to_string().contains("lock") =>
                {
                    // A handle this process closed may hold sled's file lock a moment
                    // longer (its I/O threads end after the handle is dropped): wait
                    // for it, briefly. Another process's lock is refused at once.
                    if !ours || waited >= OWN_LOCK_WAIT {
                        return Err(StoreError::Locked(dir.display().to_string()));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    waited += std::time::Duration::from_millis(20);
                }
                Err(other) => return Err(engine_error(other).into()),
            }
        };
        let tree = db.open_tree("orderbridge").map_err(|e| StoreError::from(engine_error(e)))?;
        let engine = SledEngine { db, tree, dir: dir.to_owned() };
        engine.sync().map_err(StoreError::Io)?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(engine)
    }

    /// Whether a sled store exists at `dir`.
    pub(crate) fn exists(dir: &Path) -> bool {
        dir.join("db").exists()
    }
}

/// How long an open waits for a handle this process closed to let go of sled's lock.
const OWN_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether this process has opened a sled store at `dir` before (and records that it
/// now has).
fn opened_here(dir: &Path) -> bool {
    static OPENED: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let mut opened = OPENED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if opened.contains(&dir) {
        return true;
    }
    opened.push(dir);
    false
}

/// Opens the sled store at `dir`.
///
/// # Errors
/// As `SledEngine::open` and `KvStore::open`.
pub(crate) fn open(
    dir: &Path,
    cache_bytes: u64,
    commit_delay: std::time::Duration,
    metrics: Arc<Metrics>,
) -> Result<Arc<SledStore>, StoreError> {
    KvStore::open(SledEngine::open(dir, cache_bytes)?, commit_delay, metrics)
}

impl Engine for SledEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.tree.get(key).map(|v| v.map(|v| v.to_vec())).map_err(engine_error)
    }

    fn range(&self, from: &[u8], to: &[u8]) -> KvIter<'_> {
        Box::new(
            self.tree
                .range(from.to_vec()..to.to_vec())
                .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(engine_error)),
        )
    }

    fn write(&self, batch: Batch) -> Result<(), EngineError> {
        let mut b = sled::Batch::default();
        for (k, v) in batch.ops {
            match v {
                Some(v) => b.insert(&k[..], &v[..]),
                None => b.remove(&k[..]),
            }
        }
        self.tree.apply_batch(b).map_err(engine_error)
    }

    fn sync(&self) -> Result<(), String> {
        self.db.flush().map_err(|e| format!("sled flush: {e}"))?;
        fsync_tree(&self.dir).map_err(|e| format!("fsync {}: {e}", self.dir.display()))
    }
}

fn fsync_tree(dir: &Path) -> std::io::Result<()> {
    File::open(dir.join("db"))?.sync_all()?;
    let blobs = dir.join("blobs");
    if let Ok(entries) = std::fs::read_dir(&blobs) {
        for e in entries.flatten() {
            File::open(e.path())?.sync_all()?;
        }
        File::open(&blobs)?.sync_all()?;
    }
    Ok(())
}
