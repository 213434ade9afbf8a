//! Group commit (invariant 1). Writers hand their batch to one committer task and
//! wait. The committer gathers every waiting batch, and on a blocking thread writes
//! them to the engine as one batch and syncs once (a flush plus fsync), then wakes
//! all of them with the result. Batches that arrive during a sync wait for the next.
//!
//! The committer writes, not each writer: an engine may hold its journal lock for
//! the length of a sync (fjall does), and a writer blocked on it would stall a
//! runtime thread; one write per group is also one journal entry per group.
//!
//! A failed write or sync is fatal: every waiter and every later caller gets
//! `Failed`, and nothing is tried again. After a failed fsync the kernel may have
//! dropped the dirty pages and cleared the error, so a second fsync that "succeeds"
//! proves nothing (the PostgreSQL fsync lesson of 2018).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::StoreError;
use super::batch::Batch;
use crate::metrics::Metrics;

/// Writes one batch (if any) and makes everything written durable.
pub(crate) type WriteSyncFn = Arc<dyn Fn(Option<Batch>) -> Result<(), String> + Send + Sync>;

struct Job {
    batch: Option<Batch>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

#[derive(Clone)]
pub(crate) struct Committer {
    tx: mpsc::Sender<Job>,
    failed: Arc<OnceLock<String>>,
    /// When the sync in progress started (ms since the epoch), 0 when none is.
    syncing_since: Arc<AtomicI64>,
    /// Ends the committer task (`close`).
    stop: CancellationToken,
    /// The committer task, until `close` awaits it: the engine handle it writes
    /// through is gone once the task has ended.
    task: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

/// Most writers waiting for one sync; more wait for channel space (back-pressure).
const QUEUE: usize = 16 * 1024;
/// Waiters that end the gathering delay early.
const GATHER: usize = 256;

impl Committer {
    /// Starts the committer task. After the first batch arrives it gathers more for
    /// up to `delay` (or until `GATHER` are waiting): one sync costs the same kernel
    /// work for one write as for a hundred, and on a small machine that work competes
    /// with request handling for the CPU.
    pub(crate) fn start(write_sync: WriteSyncFn, delay: Duration, metrics: Arc<Metrics>) -> Committer {
        let (tx, mut rx) = mpsc::channel::<Job>(QUEUE);
        let failed: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
        let syncing_since = Arc::new(AtomicI64::new(0));
        let (failure, since) = (failed.clone(), syncing_since.clone());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut jobs = Vec::with_capacity(256);
            loop {
                // Batches handed over before `close` are written first.
                let received = tokio::select! {
                    biased;
                    n = rx.recv_many(&mut jobs, QUEUE) => n,
                    () = stopped.cancelled() => 0,
                };
                if received == 0 {
                    break;
                }
                if !delay.is_zero() {
                    let deadline = tokio::time::Instant::now() + delay;
                    while jobs.len() < GATHER {
                        match tokio::time::timeout_at(deadline, rx.recv_many(&mut jobs, QUEUE)).await {
                            Ok(n) if n > 0 => {}
                            _ => break,
                        }
                    }
                }
                let result = match failure.get() {
                    Some(e) => Err(e.clone()),
                    None => {
                        let started = Instant::now();
                        let merged = merge(jobs.iter_mut().filter_map(|j| j.batch.take()));
                        let write_sync = write_sync.clone();
                        since.store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
                        let r = tokio::task::spawn_blocking(move || write_sync(merged))
                            .await
                            .unwrap_or_else(|e| Err(format!("sync task failed: {e}")));
                        since.store(0, Ordering::Relaxed);
                        metrics.observe_commit(jobs.len(), started.elapsed());
                        if let Err(e) = &r {
                            let _ = failure.set(e.clone());
                            tracing::error!(error = %e, waiters = jobs.len(), "the store cannot make writes durable; nothing more is accepted and the daemon stops");
                        }
                        r
                    }
                };
                for j in jobs.drain(..) {
                    let _ = j.done.send(result.clone().map_err(StoreError::Failed));
                }
            }
        });
        let task = Arc::new(std::sync::Mutex::new(Some(task)));
        Committer { tx, failed, syncing_since, stop, task }
    }

    /// Makes everything handed over so far durable, ends the committer task and
    /// returns once it has ended (with it the engine handle it wrote through).
    /// Writers after this get `Io` ("the committer stopped").
    ///
    /// # Errors
    /// `Failed` when a write or sync failed (now or before).
    pub(crate) async fn close(&self) -> Result<(), StoreError> {
        let durable = self.durable().await;
        self.stop.cancel();
        let task = self.task.lock().expect("committer task").take();
        if let Some(task) = task {
            task.await.map_err(|e| StoreError::Io(format!("the committer task failed: {e}")))?;
        }
        durable
    }

    /// Writes `batch` with the next group and returns once it is durable; with
    /// `None`, returns once everything handed over before is durable.
    ///
    /// # Errors
    /// `Failed` when a write or sync failed (now or before).
    pub(crate) async fn commit(&self, batch: Option<Batch>) -> Result<(), StoreError> {
        if let Some(e) = self.failed.get() {
            return Err(StoreError::Failed(e.clone()));
        }
        let (done, rx) = oneshot::channel();
        let stopped = || StoreError::Io("the committer stopped".into());
        self.tx.send(Job { batch, done }).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Returns once everything handed over before the call is durable.
    ///
    /// # Errors
    /// `Failed` when a write or sync failed (now or before).
    pub(crate) async fn durable(&self) -> Result<(), StoreError> {
        self.commit(None).await
    }

    /// The failure the store stopped on, if any.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failed.get().cloned()
    }

    /// How long the sync in progress has taken so far (`None`: no sync running). A
    /// sync that never returns (a hung disk, an engine deadlock) shows here, and
    /// `/readyz` reports it.
    pub(crate) fn sync_running_for(&self) -> Option<Duration> {
        match self.syncing_since.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(u64::try_from(chrono::Utc::now().timestamp_millis() - ms).unwrap_or(0))),
        }
    }
}

/// One batch out of several, in order; where two write the same key, the later
/// wins and the earlier is dropped (an engine batch holds each key once).
fn merge(batches: impl Iterator<Item = Batch>) -> Option<Batch> {
    let mut ops: Vec<(bytes::Bytes, Option<bytes::Bytes>)> = Vec::new();
    let mut at: HashMap<bytes::Bytes, usize> = HashMap::new();
    for b in batches {
        for (k, v) in b.ops {
            match at.get(&k) {
                Some(&i) => ops[i].1 = v,
                None => {
                    at.insert(k.clone(), ops.len());
                    ops.push((k, v));
                }
            }
        }
    }
    (!ops.is_empty()).then_some(Batch { ops })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merged_batch_holds_each_key_once_with_its_last_write() {
        let mut a = Batch::default();
        a.put(b"k1".to_vec(), b"a".to_vec());
        a.del(b"k2".to_vec());
        let mut b = Batch::default();
        b.put(b"k2".to_vec(), b"b".to_vec());
        b.del(b"k1".to_vec());
        b.put(b"k3".to_vec(), b"c".to_vec());
        let m = merge([a, b].into_iter()).unwrap();
        let ops: Vec<(&[u8], Option<&[u8]>)> = m.ops.iter().map(|(k, v)| (&k[..], v.as_deref())).collect();
        assert_eq!(ops, [(&b"k1"[..], None), (&b"k2"[..], Some(&b"b"[..])), (&b"k3"[..], Some(&b"c"[..]))]);
        assert!(merge(std::iter::empty()).is_none());
    }
}
