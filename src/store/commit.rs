//! Group commit (invariant 1). Writers apply their sled transaction, then wait on
//! `Committer::durable`. One task gathers every waiter, runs sled's blocking `flush()`
//! on a blocking thread, then fsyncs the store's files (sled's own flush uses
//! `sync_file_range`, which is not power-loss durable: sled #1452), and wakes all of
//! them with the result. Writes that arrive during a flush wait for the next one.
//! Never `flush_async`: it hangs under concurrent callers (sled #1241, #1357).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use crate::metrics::Metrics;

type Waiter = oneshot::Sender<Result<(), String>>;

#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Waiter>,
}

/// Most writers waiting for one flush; more wait for channel space (back-pressure).
const QUEUE: usize = 16 * 1024;
/// Waiters that end the gathering delay early.
const GATHER: usize = 256;

impl Committer {
    /// Starts the committer task for `db` stored under `dir`. After the first waiter
    /// arrives it gathers more for up to `delay` (or until `GATHER` are waiting): one
    /// flush and fsync costs the same kernel work for one write as for a hundred, and
    /// on a small machine that work competes with request handling for the CPU.
    pub fn start(db: sled::Db, dir: PathBuf, delay: Duration, metrics: Arc<Metrics>) -> Committer {
        let (tx, mut rx) = mpsc::channel::<Waiter>(QUEUE);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(256);
            while rx.recv_many(&mut batch, QUEUE).await > 0 {
                if !delay.is_zero() {
                    let deadline = tokio::time::Instant::now() + delay;
                    while batch.len() < GATHER {
                        match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, QUEUE)).await {
                            Ok(n) if n > 0 => {}
                            _ => break,
                        }
                    }
                }
                let started = Instant::now();
                let db = db.clone();
                let dir = dir.clone();
                let result = tokio::task::spawn_blocking(move || make_durable(&db, &dir))
                    .await
                    .unwrap_or_else(|e| Err(format!("flush task failed: {e}")));
                metrics.observe_commit(batch.len(), started.elapsed());
                if let Err(e) = &result {
                    tracing::error!(error = %e, waiters = batch.len(), "store flush failed; writes are not acknowledged");
                }
                for w in batch.drain(..) {
                    let _ = w.send(result.clone());
                }
            }
        });
        Committer { tx }
    }

    /// Returns once everything written before the call is on disk.
    pub async fn durable(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).await.map_err(|_| StoreError::Io("committer stopped".into()))?;
        rx.await.map_err(|_| StoreError::Io("committer stopped".into()))?.map_err(StoreError::Io)
    }
}

/// sled's flush, then fsync of its files so the data survives power loss.
pub fn make_durable(db: &sled::Db, dir: &Path) -> Result<(), String> {
    db.flush().map_err(|e| format!("sled flush: {e}"))?;
    fsync_tree(dir).map_err(|e| format!("fsync {}: {e}", dir.display()))
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
