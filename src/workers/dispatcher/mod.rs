//! The dispatcher: performs due outbox effects through their connector's `Push`,
//! with the effect's idempotency key, exponential backoff with jitter, a maximum
//! attempt count and dead letters (invariants 2, 3, 7), within each connector's
//! limits (`fair.rs`: slots, rate, pauses after a rate limit; mail has slots of its
//! own), so one slow or rate-limited system never holds up the others.
//!
//! Before an attempt the effect is claimed in the store (`Store::claim`): in memory
//! for an embedded store (`in_flight`), and on PostgreSQL as a lease in the outbox
//! row, renewed while the push runs, so that of several daemons sharing a database
//! only one performs it. The outcome's commit clears the claim.
//!
//! An effect is marked done only after the receiver said so; a crash in between
//! means it is sent again with the same key, which the receiver dedupes. A panic in
//! an attempt is a temporary failure like any other (see `panics`). A rate limit
//! (429) pauses its connector and uses no attempt: it never makes a dead letter.

pub(crate) mod fair;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::clock::Clock;
use crate::connectors::{ConnectorError, Outbound, Registry};
use crate::metrics::{LATENCY_BUCKETS, Metrics};
use crate::orders::{EffectOutcome, Orders};
use crate::settings::DispatcherSettings;
use crate::store::{DueEffect, EffectId, EffectRecord, Store};

use fair::{PAUSE_CEILING, Round, Scheduler};

/// The longest `Retry-After` honoured.
const RETRY_AFTER_CEILING: Duration = PAUSE_CEILING;
/// Pages of due effects read in one round at most (each page skips the connectors
/// the ones before found unable to take more).
const PAGES_PER_ROUND: usize = 8;
/// The shortest sleep before a throttled connector's next token.
const SHORTEST_NAP: Duration = Duration::from_millis(5);

/// Connectors whose credentials were refused twice in a row: their effects wait
/// (attempts unchanged) until an operator resumes them. Shared with the admin API.
#[derive(Default)]
pub(crate) struct Paused {
    /// Connector → why it was paused and when.
    pub(crate) connectors: Mutex<BTreeMap<String, (String, DateTime<Utc>)>>,
    /// Connector → until when it is paused by its receiver's rate limit (these end
    /// by themselves; shown by `GET /api/connectors`).
    pub(crate) rate_limited: Mutex<BTreeMap<String, DateTime<Utc>>>,
    /// Consecutive authentication failures per connector.
    failures: Mutex<std::collections::HashMap<String, u32>>,
}

impl Paused {
    pub(crate) fn is_paused(&self, connector: &str) -> bool {
        self.connectors.lock().expect("lock").contains_key(connector)
    }

    /// Resumes a connector; false when it was not paused.
    pub(crate) fn resume(&self, connector: &str) -> bool {
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
    pub(crate) paused: Arc<Paused>,
    orders: Arc<Orders>,
    rules: crate::review::LiveRules,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    settings: DispatcherSettings,
    clock: Clock,
    wake: Arc<Notify>,
    in_flight: Mutex<HashSet<EffectId>>,
    /// Slots, tokens and pauses per connector, and the shared cap.
    scheduler: Mutex<Scheduler>,
    /// Due effects read per page: four times all slots (effects in flight are read too).
    window: usize,
    /// Queues at or above their alert size (outbox, dead letters, unmatched
    /// payments), so crossing is logged once each way.
    queues_above: Mutex<[bool; 3]>,
    tracker: TaskTracker,
}

/// What one round did.
#[derive(Debug, Default)]
pub(crate) struct Dispatched {
    /// Effects started.
    pub(crate) started: usize,
    /// When a throttled or paused connector may go on.
    pub(crate) wake_in: Option<Duration>,
}

/// An effect being performed: its id in `in_flight` and its connector's slot, both
/// given back when dropped (also after a panic), which wakes the dispatcher.
struct Claim {
    dispatcher: Arc<Dispatcher>,
    id: EffectId,
    connector: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let d = &self.dispatcher;
        d.in_flight.lock().expect("lock").remove(&self.id);
        d.release(&self.connector);
        d.wake.notify_one();
    }
}

impl Dispatcher {
    pub fn new(
        orders: Arc<Orders>,
        rules: crate::review::LiveRules,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        settings: DispatcherSettings,
        clock: Clock,
        wake: Arc<Notify>,
    ) -> Arc<Self> {
        let limits = registry.connectors.values().map(|c| (c.id.to_string(), c.limits));
        let scheduler = Scheduler::new(settings.concurrency, limits, Instant::now());
        Arc::new(Dispatcher {
            paused: Arc::new(Paused::default()),
            window: scheduler.capacity().saturating_mul(4),
            scheduler: Mutex::new(scheduler),
            queues_above: Mutex::new([false; 3]),
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
            let round = match self.round().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "dispatcher cannot read the outbox");
                    Dispatched::default()
                }
            };
            if round.started == 0 {
                let sweep = self.settings.sweep_interval;
                let nap = round.wake_in.map_or(sweep, |w| w.clamp(SHORTEST_NAP, sweep));
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(nap) => {}
                }
            } else if stop.is_cancelled() {
                break;
            }
        }
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// One round: ends pauses that are over, then reads due effects page by page
    /// (each page leaves out the connectors found busy, throttled or paused, so a
    /// backlog of one never hides the others' effects) and starts what may start.
    async fn round(self: &Arc<Self>) -> Result<Dispatched, crate::store::StoreError> {
        let now = self.clock.now();
        let mono = Instant::now();
        self.end_pauses(now);
        self.watch_queues();
        let cap = self.shared_cap();
        let mut round: Round = {
            let mut scheduler = self.scheduler.lock().expect("lock");
            scheduler.set_cap(cap);
            scheduler.round(now, mono)
        };
        let mut started = 0;
        for _ in 0..PAGES_PER_ROUND {
            let mut filter = round.filter();
            filter.performing = self.in_flight.lock().expect("lock").clone();
            let page = self.scheduler.lock().expect("lock").room(&round).min(self.window);
            let due = self.store().due_effects_where(now, page, &filter).await?;
            let full_page = due.len() >= page;
            let fresh: Vec<DueEffect> = {
                let in_flight = self.in_flight.lock().expect("lock");
                due.into_iter().filter(|e| !in_flight.contains(&e.id)).collect()
            };
            let learnt = round.learnt();
            let chosen = {
                let connectors: Vec<&str> = fresh.iter().map(|e| &*e.connector).collect();
                self.scheduler.lock().expect("lock").choose(&connectors, &mut round, now, mono)
            };
            let mut chosen = chosen.into_iter().peekable();
            let mut started_here = 0;
            for (i, effect) in fresh.into_iter().enumerate() {
                if chosen.next_if_eq(&i).is_some() {
                    self.note_in_flight(&effect.connector);
                    if self.start(effect, now).await? {
                        started_here += 1;
                    }
                }
            }
            started += started_here;
            // Nothing started and nothing learnt: the next page would be the same.
            if !full_page || (started_here == 0 && round.learnt() == learnt) {
                break;
            }
        }
        Ok(Dispatched { started, wake_in: round.wake_in })
    }

    /// Starts one effect whose slot `choose` took: claims it in memory, then in the
    /// store, which checks it is still due (the list may be stale: it can have
    /// finished, been rescheduled or been claimed by another daemon since it was
    /// read), and spawns its attempt. False when it was not started.
    async fn start(self: &Arc<Self>, listed: DueEffect, now: DateTime<Utc>) -> Result<bool, crate::store::StoreError> {
        let connector = listed.connector.to_string();
        if !self.in_flight.lock().expect("lock").insert(listed.id) {
            self.release(&connector);
            return Ok(false);
        }
        let claim = Claim { dispatcher: self.clone(), id: listed.id, connector };
        let Some(effect) = self.store().claim(&listed, now).await? else { return Ok(false) };
        let this = self.clone();
        let span = tracing::info_span!("effect", order_id = %effect.id.order_id, effect_id = %effect.id, connector = %effect.connector, operation = %effect.operation, attempt = effect.attempts + 1);
        self.tracker.spawn(
            async move {
                // An attempt's own panic is caught in `attempt_push`; this catches one
                // anywhere else. Either way the claim is given back, so the effect is
                // never left marked in flight (it stays due and is taken again).
                let _claim = claim;
                let performed = crate::panics::catch_unwind(this.dispatch_one(effect.clone()));
                let performed = tokio::select! {
                    r = performed => r,
                    () = this.keep_claim(&effect) => Ok(()),
                };
                if let Err(panic) = performed {
                    this.metrics.inc(crate::panics::PANICS_TOTAL, &[("task", "dispatcher")]);
                    tracing::error!(%panic, "effect task panicked; the effect stays due and is tried again");
                }
            }
            .instrument(span),
        );
        Ok(true)
    }

    /// Renews the store's claim on `effect` while its attempt runs (never returns
    /// while renewals are due). A claim lost (the database unreachable for longer than
    /// the lease, then another daemon took it) is said at warn: the receiver may get
    /// the effect twice, with the same idempotency key.
    async fn keep_claim(&self, effect: &EffectRecord) {
        let Some(every) = self.store().claim_renewal() else { return std::future::pending().await };
        loop {
            tokio::time::sleep(every).await;
            match self.store().renew_claim(effect).await {
                Ok(true) => {}
                // Recorded meanwhile (the row is gone or replaced): nothing to keep.
                Ok(false) => return std::future::pending().await,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the claim on an effect being performed; will try again")
                }
            }
        }
    }

    /// Effects in flight at once across connectors without slots of their own:
    /// `dispatcher.concurrency`, or `busy_concurrency` while intake is under full load
    /// (acknowledgements come first; the outbox holds the rest durably). Read at each
    /// round, so the full cap is back at the first round after intake eases.
    fn shared_cap(&self) -> usize {
        let s = &self.settings;
        let busy = s.busy_intake.is_some_and(|from| self.orders.intake_load() >= from);
        let cap = if busy { s.busy_concurrency.min(s.concurrency) } else { s.concurrency };
        self.metrics.set("orderbridge_dispatcher_concurrency", &[], cap as f64);
        cap
    }

    /// Gives a connector's slot back.
    fn release(&self, connector: &str) {
        self.scheduler.lock().expect("lock").release(connector);
        self.note_in_flight(connector);
    }

    fn note_in_flight(&self, connector: &str) {
        let n = self.scheduler.lock().expect("lock").in_flight(connector);
        self.metrics.set("orderbridge_effects_in_flight", &[("connector", connector)], n as f64);
    }

    /// Pauses a connector after a rate limit (or a `Retry-After`); says so once, at
    /// warn, when the pause starts. Returns when it ends.
    fn pause_connector(&self, connector: &str, retry_after: Option<Duration>, error: &str) -> DateTime<Utc> {
        let now = self.clock.now();
        let s = &self.settings;
        let pause = self.scheduler.lock().expect("lock").rate_limited(
            connector,
            retry_after,
            now,
            s.backoff_initial,
            s.backoff_max,
        );
        self.metrics.inc("orderbridge_connector_rate_limited_total", &[("connector", connector)]);
        self.paused.rate_limited.lock().expect("lock").insert(connector.to_owned(), pause.until);
        if pause.started {
            self.metrics.set(
                "orderbridge_connector_paused",
                &[("connector", connector), ("reason", "rate_limit")],
                1.0,
            );
            tracing::warn!(connector, until = %pause.until, %error, "connector paused by its receiver's rate limit: nothing is sent to it until then (a 429 uses no attempt)");
        }
        pause.until
    }

    /// Ends the rate-limit pauses that are over.
    fn end_pauses(&self, now: DateTime<Utc>) {
        let ended = self.scheduler.lock().expect("lock").ended_pauses(now);
        for connector in ended {
            self.paused.rate_limited.lock().expect("lock").remove(&connector);
            self.metrics.set(
                "orderbridge_connector_paused",
                &[("connector", &connector), ("reason", "rate_limit")],
                0.0,
            );
            tracing::info!(connector, "rate-limit pause over; sending again");
        }
    }

    /// Logs, once each way, a queue reaching or leaving its alert size (`[limits]`).
    /// Nothing is refused at that size: refusing intake would lose orders.
    fn watch_queues(&self) {
        let c = self.store().counts();
        let a = self.settings.queue_alerts;
        let queues = [
            (
                "outbox",
                c.pending,
                a.outbox,
                "effects pile up in the outbox: a connector is down, slow or rate-limited (see orderbridge_connector_paused and orderbridge_effect_attempts_total); orders are still taken",
            ),
            (
                "dead_letters",
                c.dead,
                a.dead_letters,
                "dead letters pile up: look at `orderbridge outbox dead`, fix the cause, then replay them",
            ),
            (
                "unmatched_payments",
                c.unmatched,
                a.unmatched_payments,
                "unmatched payments pile up: look at GET /api/payments/unmatched and assign them",
            ),
        ];
        let mut above = self.queues_above.lock().expect("lock");
        for (i, (queue, size, alert, advice)) in queues.into_iter().enumerate() {
            let now_above = size >= alert;
            if now_above != above[i] {
                above[i] = now_above;
                if now_above {
                    tracing::warn!(queue, size, alert, "{advice}");
                } else {
                    tracing::info!(queue, size, alert, "queue back under its alert size");
                }
            }
        }
    }

    /// Performs one effect and records the outcome.
    pub(crate) async fn dispatch_one(&self, effect: EffectRecord) {
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
            EffectOutcome::RateLimited { .. } => "rate_limited",
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
            EffectOutcome::RateLimited { error, next_at } => {
                tracing::info!(%error, %next_at, "effect waits for its connector's rate limit; no attempt used")
            }
            EffectOutcome::Deferred { .. } => {}
        }
        // Recording must not be lost: retry the store write a few times before giving up
        // (the effect then stays due and is simply attempted again, with the same key).
        // A database that cannot be reached (PostgreSQL restarting, failing over) is
        // waited for instead: giving up would push the effect again once it is back.
        for i in 1u32.. {
            match self.orders.finish_effect(&effect, outcome.clone(), &self.rules, self.clock.now()).await {
                Ok(()) => return,
                Err(e @ crate::orders::OrderError::Store(crate::store::StoreError::Failed(_))) => {
                    tracing::error!(error = %e, "cannot record effect outcome; the effect stays due and is attempted again after a restart");
                    return;
                }
                Err(e @ crate::orders::OrderError::Store(crate::store::StoreError::Io(_))) => {
                    tracing::warn!(error = %e, try_ = i, "cannot reach the store to record an effect outcome; waiting for it");
                }
                Err(e) if i >= 5 => {
                    tracing::error!(error = %e, try_ = i, "cannot record effect outcome; the effect stays due and is attempted again");
                    return;
                }
                Err(e) => tracing::error!(error = %e, try_ = i, "cannot record effect outcome"),
            }
            tokio::time::sleep(Duration::from_millis(100u64 << i.min(6))).await;
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
            self.scheduler.lock().expect("lock").succeeded(connector);
        }
        outcome
    }

    /// The body to send: personal data leaves encrypted storage here only, so the
    /// receiver gets it in clear. The documents connector also gets the body as stored
    /// (`documents::STORED`): it archives that one, with the tokens (opened when served).
    async fn opened_body(&self, effect: &EffectRecord) -> Result<serde_json::Value, EffectOutcome> {
        let mut body = effect.body.clone();
        match self.orders.vault().reveal_value(&mut body).await {
            Ok(()) if body != effect.body && effect.connector.as_str() == crate::documents::DOCUMENTS_CONNECTOR => {
                if let Some(o) = body.as_object_mut() {
                    o.insert(crate::documents::STORED.into(), effect.body.clone());
                }
                Ok(body)
            }
            Ok(()) => Ok(body),
            Err(e) => Err(EffectOutcome::Retry {
                error: format!("opening the effect's personal data: {e}"),
                next_at: self.next_attempt(effect.attempts.saturating_add(1), None),
            }),
        }
    }

    async fn attempt_push(&self, effect: &EffectRecord) -> EffectOutcome {
        let Some(push) = self.registry.get(effect.connector.as_str()).and_then(|c| c.push.clone()) else {
            return EffectOutcome::Dead {
                error: format!("connector `{}` is not configured for outbound operations", effect.connector),
            };
        };
        let body = match self.opened_body(effect).await {
            Ok(b) => b,
            Err(outcome) => return outcome,
        };
        let out = Outbound { operation: &effect.operation, idempotency_key: &effect.idempotency_key, body: &body };
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
        // The receiver said when to come back: nothing more goes to it before then.
        if let Err(ConnectorError::Retryable { retry_after: Some(d), message }) = &performed {
            self.pause_connector(effect.connector.as_str(), Some(*d), message);
        }
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
            // Never counted as an attempt, so a rate limit never makes a dead letter.
            Err(ConnectorError::RateLimited { message, retry_after }) => {
                let next_at = self.pause_connector(effect.connector.as_str(), retry_after, &message);
                EffectOutcome::RateLimited { error: format!("rate limited: {message}"), next_at }
            }
            Err(ConnectorError::Auth { message }) => {
                let connector = effect.connector.as_str();
                if self.paused.auth_failed(connector, &message, self.clock.now()) {
                    tracing::error!(connector, error = %message, "connector PAUSED: its credentials were refused twice in a row; its effects wait (no attempts used) until `POST /api/connectors/{connector}/resume`");
                    self.metrics.inc("orderbridge_connector_paused_total", &[("connector", connector)]);
                    self.metrics.set(
                        "orderbridge_connector_paused",
                        &[("connector", connector), ("reason", "auth")],
                        1.0,
                    );
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
