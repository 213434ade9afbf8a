//! The dispatcher: performs due outbox effects through their connector's `Push`,
//! with the effect's idempotency key, bounded concurrency, exponential backoff with
//! jitter, a maximum attempt count and dead letters (invariants 2, 3, 7).
//!
//! An effect is marked done only after the receiver said so; a crash in between
//! means it is sent again with the same key, which the receiver dedupes. A panic in
//! an attempt is a temporary failure like any other (see `panics`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::clock::Clock;
use crate::connectors::{ConnectorError, Outbound, Registry};
use crate::engine::Rules;
use crate::metrics::{LATENCY_BUCKETS, Metrics};
use crate::orders::{EffectOutcome, Orders};
use crate::settings::DispatcherSettings;
use crate::store::{EffectId, EffectRecord, Store};

/// The longest `Retry-After` honoured.
const RETRY_AFTER_CEILING: Duration = Duration::from_secs(3600);

/// Connectors whose credentials were refused twice in a row: their effects wait
/// (attempts unchanged) until an operator resumes them. Shared with the admin API.
#[derive(Default)]
pub struct Paused {
    /// Connector → why it was paused and when.
    pub connectors: Mutex<std::collections::BTreeMap<String, (String, DateTime<Utc>)>>,
    /// Consecutive authentication failures per connector.
    failures: Mutex<std::collections::HashMap<String, u32>>,
}

impl Paused {
    pub fn is_paused(&self, connector: &str) -> bool {
        self.connectors.lock().expect("lock").contains_key(connector)
    }

    /// Resumes a connector; false when it was not paused.
    pub fn resume(&self, connector: &str) -> bool {
        self.failures.lock().expect("lock").remove(connector);
        self.connectors.lock().expect("lock").remove(connector).is_some()
    }

    fn auth_failed(&self, connector: &str, message: &str, now: DateTime<Utc>) -> bool {
        let mut f = self.failures.lock().expect("lock");
        let n = f.entry(connector.to_owned()).or_default();
        *n += 1;
        if *n >= AUTH_FAILURES_TO_PAUSE {
            self.connectors.lock().expect("lock").insert(connector.to_owned(), (message.to_owned(), now));
            return true;
        }
        false
    }

    fn succeeded(&self, connector: &str) {
        self.failures.lock().expect("lock").remove(connector);
    }
}

/// Authentication failures in a row that pause a connector (one is allowed: an OAuth2
/// token may have been revoked early, and the retry fetches a new one).
const AUTH_FAILURES_TO_PAUSE: u32 = 2;

pub struct Dispatcher {
    pub paused: Arc<Paused>,
    orders: Arc<Orders>,
    rules: Arc<Rules>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    settings: DispatcherSettings,
    clock: Clock,
    wake: Arc<Notify>,
    in_flight: Mutex<HashSet<EffectId>>,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
}

impl Dispatcher {
    pub fn new(
        orders: Arc<Orders>,
        rules: Arc<Rules>,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        settings: DispatcherSettings,
        clock: Clock,
        wake: Arc<Notify>,
    ) -> Arc<Self> {
        Arc::new(Dispatcher {
            paused: Arc::new(Paused::default()),
            permits: Arc::new(Semaphore::new(settings.concurrency)),
            orders,
            rules,
            registry,
            metrics,
            settings,
            clock,
            wake,
            in_flight: Mutex::new(HashSet::new()),
            tracker: TaskTracker::new(),
        })
    }

    fn store(&self) -> &Arc<dyn Store> {
        self.orders.store()
    }

    /// Runs until `stop`, or until the store fails (nothing can be recorded any
    /// more: sending on would repeat effects); then waits for the attempts in flight
    /// to be recorded.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            if let Some(e) = self.store().failure() {
                tracing::error!(error = %e, "the dispatcher stops: the store can no longer record outcomes");
                break;
            }
            let started = match self.clone().dispatch_due().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "dispatcher cannot read the outbox");
                    0
                }
            };
            if started == 0 {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(self.settings.sweep_interval) => {}
                }
            } else if stop.is_cancelled() {
                break;
            }
        }
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// One step: starts every due effect not already in flight (waiting for a free
    /// slot when all are busy). Returns how many it started.
    pub async fn dispatch_due(self: Arc<Self>) -> Result<usize, crate::store::StoreError> {
        let now = self.clock.now();
        let due = self.store().due_effects(now, self.settings.concurrency * 4).await?;
        let mut started = 0;
        for listed in due {
            if !self.in_flight.lock().expect("lock").insert(listed.id) {
                continue;
            }
            // The list may be stale: the effect can have finished (or been rescheduled)
            // since it was read. Claimed now, so re-read it; skip unless still due.
            let effect = match self.store().current(&listed).await {
                Ok(Some(e)) if e.next_at <= now => e,
                other => {
                    self.in_flight.lock().expect("lock").remove(&listed.id);
                    other?;
                    continue;
                }
            };
            let permit = self.permits.clone().acquire_owned().await.expect("semaphore is never closed");
            let this = self.clone();
            let span = tracing::info_span!("effect", order_id = %effect.id.order_id, effect_id = %effect.id, connector = %effect.connector, operation = %effect.operation, attempt = effect.attempts + 1);
            self.tracker.spawn(
                async move {
                    let id = effect.id;
                    // An attempt's own panic is caught in `attempt_push`; this catches
                    // one anywhere else, so the effect is never left marked in flight
                    // (it stays due and the next sweep takes it again).
                    if let Err(panic) = crate::panics::catch_unwind(this.dispatch_one(effect)).await {
                        this.metrics.inc(crate::panics::PANICS_TOTAL, &[("task", "dispatcher")]);
                        tracing::error!(%panic, "effect task panicked; the effect stays due and is tried again");
                    }
                    this.in_flight.lock().expect("lock").remove(&id);
                    drop(permit);
                    this.wake.notify_one();
                }
                .instrument(span),
            );
            started += 1;
        }
        Ok(started)
    }

    /// Performs one effect and records the outcome.
    pub async fn dispatch_one(&self, effect: EffectRecord) {
        let started = Instant::now();
        let outcome = self.attempt(&effect).await;
        let labels = [("connector", effect.connector.as_str()), ("operation", effect.operation.as_str())];
        self.metrics.observe(
            "orderbridge_effect_duration_seconds",
            &labels,
            started.elapsed().as_secs_f64(),
            LATENCY_BUCKETS,
        );
        let outcome_label = match &outcome {
            EffectOutcome::Done { .. } => "success",
            EffectOutcome::Retry { .. } => "retry",
            EffectOutcome::Dead { .. } => "dead",
            EffectOutcome::Deferred { .. } => "deferred",
        };
        self.metrics.inc("orderbridge_effect_attempts_total", &[labels[0], labels[1], ("outcome", outcome_label)]);
        match &outcome {
            EffectOutcome::Done { .. } => tracing::info!("effect performed"),
            EffectOutcome::Retry { error, next_at } => {
                tracing::warn!(%error, %next_at, "effect failed; will retry")
            }
            EffectOutcome::Dead { error } => {
                tracing::error!(%error, "effect gave up and moved to dead letters; replay with `orderbridge outbox replay`")
            }
            EffectOutcome::Deferred { .. } => {}
        }
        // Recording must not be lost: retry the store write a few times before giving up
        // (the effect then stays due and is simply attempted again, with the same key).
        for i in 0..5u32 {
            match self.orders.finish_effect(&effect, outcome.clone(), &self.rules, self.clock.now()).await {
                Ok(()) => return,
                Err(e @ crate::orders::OrderError::Store(crate::store::StoreError::Failed(_))) => {
                    tracing::error!(error = %e, "cannot record effect outcome; the effect stays due and is attempted again after a restart");
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, try_ = i + 1, "cannot record effect outcome");
                    tokio::time::sleep(Duration::from_millis(100 << i)).await;
                }
            }
        }
    }

    async fn attempt(&self, effect: &EffectRecord) -> EffectOutcome {
        let connector = effect.connector.as_str();
        if self.paused.is_paused(connector) {
            return EffectOutcome::Deferred {
                reason: format!(
                    "connector `{connector}` is paused after authentication failures; resume it once its credentials are fixed"
                ),
                // Looked at again within a minute: soon after a resume, yet no churn.
                next_at: self.clock.now()
                    + chrono::Duration::from_std(self.settings.backoff_max.min(Duration::from_secs(60)))
                        .unwrap_or(chrono::Duration::minutes(1)),
            };
        }
        let outcome = self.attempt_push(effect).await;
        if let EffectOutcome::Done { .. } = &outcome {
            self.paused.succeeded(connector);
        }
        outcome
    }

    async fn attempt_push(&self, effect: &EffectRecord) -> EffectOutcome {
        let Some(push) = self.registry.get(effect.connector.as_str()).and_then(|c| c.push.clone()) else {
            return EffectOutcome::Dead {
                error: format!("connector `{}` is not configured for outbound operations", effect.connector),
            };
        };
        let out =
            Outbound { operation: &effect.operation, idempotency_key: &effect.idempotency_key, body: &effect.body };
        let attempts = effect.attempts.saturating_add(1);
        // A connector that panics (a bug) fails this attempt like a timeout would: it is
        // recorded, backs off and is retried (or dead-lettered after max_attempts). The
        // panic's text goes to the log only; it may name internals.
        let performed = crate::panics::catch_unwind(push.perform(out)).await.unwrap_or_else(|panic| {
            self.metrics.inc(crate::panics::PANICS_TOTAL, &[("task", "dispatcher")]);
            tracing::error!(%panic, "connector panicked during an attempt; recorded as a temporary failure");
            Err(ConnectorError::Retryable {
                message: format!(
                    "connector `{}` panicked during the attempt (a bug; the log has the details)",
                    effect.connector
                ),
                retry_after: None,
            })
        });
        match performed {
            Ok(receipt) => {
                let summary: String = receipt.summary.chars().take(300).collect();
                let receipt_text = if effect.connector.as_str() == crate::engine::notify::MAIL_CONNECTOR {
                    format!("SMTP {}: {summary}", receipt.status)
                } else {
                    format!("HTTP {}: {summary}", receipt.status)
                };
                EffectOutcome::Done { receipt: receipt_text, reference: receipt.reference }
            }
            Err(ConnectorError::Permanent { message }) => EffectOutcome::Dead { error: message },
            Err(ConnectorError::Auth { message }) => {
                let connector = effect.connector.as_str();
                if self.paused.auth_failed(connector, &message, self.clock.now()) {
                    tracing::error!(connector, error = %message, "connector PAUSED: its credentials were refused twice in a row; its effects wait (no attempts used) until `POST /api/connectors/{connector}/resume`");
                    self.metrics.inc("orderbridge_connector_paused_total", &[("connector", connector)]);
                    EffectOutcome::Deferred {
                        reason: format!("authentication failed: {message}; connector paused"),
                        next_at: self.next_attempt(attempts, None),
                    }
                } else {
                    tracing::error!(connector, "authentication failed; check the connector's credentials");
                    EffectOutcome::Retry {
                        error: format!("authentication failed: {message}"),
                        next_at: self.next_attempt(attempts, None),
                    }
                }
            }
            Err(e) if attempts >= self.settings.max_attempts => {
                EffectOutcome::Dead { error: format!("{e} (gave up after {attempts} attempts)") }
            }
            Err(e) => {
                let retry_after = match &e {
                    ConnectorError::Retryable { retry_after, .. } => *retry_after,
                    _ => None,
                };
                EffectOutcome::Retry { error: e.to_string(), next_at: self.next_attempt(attempts, retry_after) }
            }
        }
    }

    /// Exponential backoff with equal jitter. A receiver's `Retry-After` wins when
    /// longer, even beyond `backoff_max` (it knows its own limits), up to an hour.
    fn next_attempt(&self, attempts: u32, retry_after: Option<Duration>) -> DateTime<Utc> {
        let s = &self.settings;
        let exp =
            s.backoff_initial.saturating_mul(1u32.checked_shl(attempts.saturating_sub(1).min(20)).unwrap_or(u32::MAX));
        let capped = exp.min(s.backoff_max);
        let half = capped / 2;
        let jitter = Duration::from_millis(fastrand::u64(0..=half.as_millis() as u64));
        let delay = (half + jitter).max(retry_after.unwrap_or_default().min(RETRY_AFTER_CEILING));
        self.clock.now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::seconds(1))
    }
}
