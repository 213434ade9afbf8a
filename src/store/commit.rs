//! Group commit (invariant 1). Writers apply their batch to the engine, then wait on
//! `Committer::durable`. One task gathers every waiter, runs the engine's sync (a
//! flush plus fsync) once on a blocking thread, and wakes all of them with the
//! result. Writes that arrive during a sync wait for the next one.
//!
//! A failed sync is fatal: every waiter and every later caller gets `Failed`, and the
//! sync is never tried again. After a failed fsync the kernel may have dropped the
//! dirty pages and cleared the error, so a second fsync that "succeeds" proves
//! nothing (the PostgreSQL fsync lesson of 2018).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use crate::metrics::Metrics;

type Waiter = oneshot::Sender<Result<(), StoreError>>;

/// Makes everything the engine applied so far durable.
pub type SyncFn = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Waiter>,
    failed: Arc<OnceLock<String>>,
}

/// Most writers waiting for one sync; more wait for channel space (back-pressure).
const QUEUE: usize = 16 * 1024;
/// Waiters that end the gathering delay early.
const GATHER: usize = 256;

impl Committer {
    /// Starts the committer task. After the first waiter arrives it gathers more for
    /// up to `delay` (or until `GATHER` are waiting): one sync costs the same kernel
    /// work for one write as for a hundred, and on a small machine that work competes
    /// with request handling for the CPU.
    pub fn start(sync: SyncFn, delay: Duration, metrics: Arc<Metrics>) -> Committer {
        let (tx, mut rx) = mpsc::channel::<Waiter>(QUEUE);
        let failed: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
        let failure = failed.clone();
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
                let result = match failure.get() {
                    Some(e) => Err(e.clone()),
                    None => {
                        let started = Instant::now();
                        let sync = sync.clone();
                        let r = tokio::task::spawn_blocking(move || sync())
                            .await
                            .unwrap_or_else(|e| Err(format!("sync task failed: {e}")));
                        metrics.observe_commit(batch.len(), started.elapsed());
                        if let Err(e) = &r {
                            let _ = failure.set(e.clone());
                            tracing::error!(error = %e, waiters = batch.len(), "the store cannot make writes durable; nothing more is accepted and the daemon stops");
                        }
                        r
                    }
                };
                for w in batch.drain(..) {
                    let _ = w.send(result.clone().map_err(StoreError::Failed));
                }
            }
        });
        Committer { tx, failed }
    }

    /// Returns once everything applied before the call is durable.
    ///
    /// # Errors
    /// `Failed` when a sync failed (now or before).
    pub async fn durable(&self) -> Result<(), StoreError> {
        if let Some(e) = self.failed.get() {
            return Err(StoreError::Failed(e.clone()));
        }
        let (tx, rx) = oneshot::channel();
        let stopped = || StoreError::Io("the committer stopped".into());
        self.tx.send(tx).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Marks the store failed (a write the engine could not take, e.g. on a full
    /// volume): from now on every waiter and writer gets `Failed`.
    pub fn fail(&self, error: String) {
        if self.failed.set(error.clone()).is_ok() {
            tracing::error!(%error, "the store cannot write; nothing more is accepted and the daemon stops");
        }
    }

    /// The sync failure the store stopped on, if any.
    pub fn failure(&self) -> Option<String> {
        self.failed.get().cloned()
    }
}
