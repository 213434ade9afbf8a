//! The application layer. Every lifecycle step has one shape here: lock the order →
//! load it → `engine::decide` → build the step's rows (`step.rs`) → `Store::commit`,
//! which returns once the step is durable. HTTP handlers, the CLI and the workers
//! call these verbs; they decide nothing themselves, and the store decides nothing
//! either.
//!
//! Locks here are in-process (striped by order and by external id) and only spare
//! wasted work: the store checks each step's preconditions again when it commits,
//! and a step that lost a race (`StoreError::Conflict`) is loaded and decided again.
//!
//! Here: intake, events, effect outcomes and replays. `payments.rs`: payments and the
//! unmatched queue; `schedule.rs`: due timers and digests; `report.rs`: events other
//! systems report; `audit.rs`: `audit verify`; `analytics.rs`: the
//! orders and trails a report reads; `reports.rs`: scheduled management reports; `privacy.rs`: erasing personal data;
//! `quarantine.rs`: resolving a quarantined row.

mod analytics;
mod audit;
pub(crate) mod feedback;
mod payments;
mod privacy;
mod quarantine;
mod report;
mod reports;
mod schedule;
pub mod seal;
mod step;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{Mutex, MutexGuard};

pub use audit::AuditReport;
pub use quarantine::{Resolve, quarantined_row};
pub use report::Named;
pub(crate) use reports::ReportContext;
use step::{bookkeeping, step_for};

use crate::domain::{ExternalRef, Order, OrderId};
use crate::engine::access::Acting;
use crate::engine::approval::Refusal;
use crate::engine::intake::{Delivery, Existing, classify};
use crate::engine::{Actor, Case, DecideError, History, IllegalTransition, OrderEvent, OrderState, Rules};
use crate::review::Shadow;
use crate::review::shadow::{self, Compared};
use crate::store::records::GENESIS;
use crate::store::{EffectId, EffectRecord, Loaded, OrderRecord, OutboxChange, Step, Store, StoreError, UsedLink};

const STRIPES: usize = 512;
/// Times a step is decided again after losing a race before the conflict is reported.
const RETRIES: usize = 3;

/// Why a step was not taken.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OrderError {
    /// What was looked for, e.g. `order ord_…`.
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Illegal(#[from] IllegalTransition),
    /// A person may not take this decision (not an approver, their own order, …).
    #[error("{0}")]
    Refused(String),
    /// The order cannot take this change in its state (it has moved on).
    #[error("{0}")]
    Conflict(String),
    /// A single-use link was used before.
    #[error("{0}")]
    LinkUsed(String),
    /// A connector reported what it may not (see `engine::reporting`).
    #[error("{0}")]
    Forbidden(#[from] crate::engine::reporting::ReportRefusal),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for OrderError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => OrderError::NotFound(what),
            other => OrderError::Store(other),
        }
    }
}

impl From<DecideError> for OrderError {
    fn from(e: DecideError) -> Self {
        match e {
            DecideError::Illegal(i) => OrderError::Illegal(i),
            // Not a matter of who asks but of when: the order has moved on.
            DecideError::Refused(
                r @ (Refusal::NotAwaiting
                | Refusal::WrongLevel { .. }
                | Refusal::TasksOpen(_)
                | Refusal::UnknownTask(_)
                | Refusal::TaskAlreadyDone(_)
                | Refusal::NoException
                | Refusal::PaymentNotApplicable(_)),
            ) => OrderError::Conflict(r.to_string()),
            DecideError::Refused(r) => OrderError::Refused(r.to_string()),
        }
    }
}

/// An order as a connector's mapping produced it, ready to ingest.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub source: ExternalRef,
    pub version: u64,
    pub mapping_version: String,
    pub order: Order,
}

/// What intake did with an inbound order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    pub order_id: OrderId,
    pub state: OrderState,
    /// True when this delivery changed nothing (same or older version).
    pub duplicate: bool,
    /// Effects the step put in the outbox (the dispatcher is woken only for these).
    pub effects: usize,
}

/// How an effect attempt ended, as the dispatcher reports it.
#[derive(Debug, Clone)]
pub enum EffectOutcome {
    Done {
        receipt: String,
        /// The receiver's id for what it created, stored on the order.
        reference: Option<String>,
    },
    /// Try again at `next_at`.
    Retry { error: String, next_at: DateTime<Utc> },
    /// Give up: move to dead letters.
    Dead { error: String },
    /// Not attempted (its connector is paused): due again at `next_at`, attempts unchanged.
    Deferred { reason: String, next_at: DateTime<Utc> },
    /// The receiver's rate limit (429): due again at `next_at`, attempts unchanged, so
    /// a rate limit never makes a dead letter.
    RateLimited { error: String, next_at: DateTime<Utc> },
}

/// What intake does with one record.
enum Planned {
    /// The step, what intake did, and the shadow run's comparison (recorded once the
    /// step is durable).
    Write(Box<Step>, Ingested, Option<Compared>),
    Duplicate(Ingested),
}

/// The application: lifecycle steps over a store.
pub struct Orders {
    store: Arc<dyn Store>,
    ext_locks: Vec<Mutex<()>>,
    order_locks: Vec<Mutex<()>>,
    /// One payment report at a time (deduplication by payment id).
    payment_lock: Mutex<()>,
    /// Serialises digest runs (they number their effects from the `digest_seq` job state).
    digest_lock: Mutex<()>,
    /// Where durable steps report the stages orders left (`None`: nowhere).
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Seals each step's chain head (`seal.rs`); no keys: plain SHA-256 chains.
    audit_keys: Arc<seal::AuditKeys>,
    /// The shadow run each step is also decided under (`crate::review::shadow`).
    shadow: Option<Shadow>,
    /// Encrypts personal data in each step and opens it for decisions (`crate::vault`).
    vault: Arc<crate::vault::Vault>,
    /// Deliveries being taken in now (`taking_in`).
    intake_load: std::sync::atomic::AtomicUsize,
}

/// One delivery being taken in, counted in `Orders::intake_load` until dropped.
pub struct TakingIn<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for TakingIn<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn stripe<T: Hash + ?Sized>(v: &T) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    (h.finish() as usize) % STRIPES
}

/// What `decide` looks at for an order, with the customer's `history`.
pub(crate) fn case<'a>(rec: &'a OrderRecord, history: &'a History) -> Case<'a> {
    Case {
        state: &rec.state,
        order: &rec.order,
        history,
        approval: rec.approval.as_ref(),
        fulfilment: rec.fulfilment.as_ref(),
    }
}

impl Orders {
    pub fn new(store: Arc<dyn Store>) -> Orders {
        Orders {
            ext_locks: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            order_locks: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            payment_lock: Mutex::new(()),
            digest_lock: Mutex::new(()),
            metrics: None,
            audit_keys: Arc::default(),
            shadow: None,
            vault: Arc::new(crate::vault::Vault::new(crate::vault::PrivacyKeys::default(), store.clone())),
            store,
            intake_load: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Counts a delivery (a webhook's, from its first byte to its answer) as being
    /// taken in until the guard is dropped.
    pub fn taking_in(&self) -> TakingIn<'_> {
        self.intake_load.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        TakingIn(&self.intake_load)
    }

    /// Deliveries being taken in now. The dispatcher holds back while intake is under
    /// full load (`dispatcher.busy_intake`): acknowledgements come first.
    pub fn intake_load(&self) -> usize {
        self.intake_load.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The same, deciding every step a second time under the shadow rules when a
    /// shadow runs, and recording where the decisions differ.
    pub fn with_shadow(mut self, shadow: Shadow) -> Orders {
        self.shadow = Some(shadow);
        self
    }

    /// The shadow run, if this application has one.
    pub(crate) fn shadow(&self) -> Option<&Shadow> {
        self.shadow.as_ref()
    }

    /// The shadow rules running now (one atomic load when none).
    fn shadow_running(&self) -> Option<Arc<shadow::Running>> {
        self.shadow.as_ref().and_then(Shadow::running)
    }

    /// Records a shadow comparison of a durable step of `id`.
    async fn record_shadow(&self, id: OrderId, compared: Option<Compared>, now: DateTime<Utc>) {
        if let (Some(s), Some(c)) = (&self.shadow, compared) {
            s.record(id.to_string(), c, now).await;
        }
    }

    /// The same, encrypting personal data with `keys` (`[privacy]`).
    pub fn with_privacy_keys(mut self, keys: crate::vault::PrivacyKeys) -> Orders {
        self.vault = Arc::new(crate::vault::Vault::new(keys, self.store.clone()));
        self
    }

    /// Personal data at rest: opening it for the edges, rotation, erasure.
    pub fn vault(&self) -> &Arc<crate::vault::Vault> {
        &self.vault
    }

    /// The same, sealing the audit chain with `keys` and checking seals with them.
    pub fn with_audit_keys(mut self, keys: seal::AuditKeys) -> Orders {
        self.audit_keys = Arc::new(keys);
        self
    }

    /// The same, reporting how long orders stayed in each stage they leave
    /// (`orderbridge_stage_duration_seconds`).
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Orders {
        self.metrics = Some(metrics);
        self
    }

    /// Commits `steps` (see `Store::commit`); once they are durable, the stages
    /// orders left are observed. Every step of the application layer goes through here.
    pub(crate) async fn commit(&self, mut steps: Vec<Step>) -> Result<(), StoreError> {
        self.vault.conceal(&mut steps).await?;
        self.audit_keys.seal(&mut steps);
        let left: Vec<(String, std::time::Duration)> = steps.iter().filter_map(|s| s.left.clone()).collect();
        self.store.commit(steps).await?;
        if let Some(m) = &self.metrics {
            for (stage, stayed) in left {
                m.observe_stage(&stage, stayed);
            }
        }
        Ok(())
    }

    /// The keys that seal the audit chain, and its anchors (`crate::anchor`).
    pub(crate) fn audit_keys(&self) -> &seal::AuditKeys {
        &self.audit_keys
    }

    /// The store, for reads.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    async fn lock_order(&self, id: OrderId) -> MutexGuard<'_, ()> {
        self.order_locks[stripe(id.as_bytes())].lock().await
    }

    async fn load(&self, id: OrderId) -> Result<OrderRecord, OrderError> {
        self.opened(id).await?.ok_or_else(|| OrderError::NotFound(format!("order {id}")))
    }

    /// The order row with its personal data in clear (`crate::vault`), for a decision.
    pub(crate) async fn opened(&self, id: OrderId) -> Result<Option<OrderRecord>, StoreError> {
        let Some(mut rec) = self.store.order(id).await? else { return Ok(None) };
        self.vault.reveal_record(&mut rec).await?;
        Ok(Some(rec))
    }

    /// The customer's other orders placed in the last `days` days.
    async fn history(
        &self,
        order: &Order,
        this: Option<OrderId>,
        now: DateTime<Utc>,
        days: u32,
    ) -> Result<History, OrderError> {
        let since = now - chrono::Duration::days(i64::from(days));
        let priors: Vec<_> = self
            .store
            .customer_orders(order.customer.id.as_str(), Some(since))
            .await?
            .into_iter()
            .filter(|(id, _)| Some(*id) != this)
            .map(|(_, p)| p)
            .collect();
        Ok(History::of(order, &priors))
    }

    /// Runs `attempt` again (from loading on) when its commit lost a race.
    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T, OrderError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, OrderError>>,
    {
        let mut tries = 0;
        loop {
            match attempt().await {
                Err(OrderError::Store(StoreError::Conflict(m))) => {
                    tries += 1;
                    if tries >= RETRIES {
                        return Err(OrderError::Conflict(m));
                    }
                    tracing::debug!(conflict = %m, "a step lost a race; deciding it again");
                }
                other => return other,
            }
        }
    }

    /// Intake: a new order, an amendment (newer version) or a duplicate; screening and
    /// the automatic steps run in the same step. Durable when it returns.
    pub async fn ingest(&self, inbound: Inbound, rules: &Rules, now: DateTime<Utc>) -> Result<Ingested, OrderError> {
        let _ext = self.ext_locks[stripe(&inbound.source.key())].lock().await;
        self.retrying(|| async {
            let existing = self.store.find_external(&inbound.source).await?;
            let _order = match existing {
                Some(id) => Some(self.lock_order(id).await),
                None => None,
            };
            match self.plan_ingest(&inbound, existing, rules, now).await? {
                Planned::Write(step, ingested, compared) => {
                    self.commit(vec![*step]).await?;
                    self.record_shadow(ingested.order_id, compared, now).await;
                    Ok(ingested)
                }
                Planned::Duplicate(ingested) => {
                    // The first delivery may still be waiting for its sync: ack only once durable.
                    self.store.flush().await?;
                    Ok(ingested)
                }
            }
        })
        .await
    }

    /// Decides what one inbound record does and the step that records it. The caller
    /// holds its external-id lock and, for an existing order, the order lock.
    async fn plan_ingest(
        &self,
        inbound: &Inbound,
        existing: Option<OrderId>,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<Planned, OrderError> {
        let actor = Actor::Connector(inbound.source.connector.to_string());
        let rec = match existing {
            Some(id) => match self.opened(id).await? {
                Some(rec) => Some(rec),
                // Archived: ended long ago, and it stays as it ended.
                None if self.store.archived(id).await?.is_some() => {
                    return Err(OrderError::Conflict(format!(
                        "order {id} ({}/{}) is archived; it takes no new version",
                        inbound.source.connector, inbound.source.id
                    )));
                }
                None => {
                    return Err(
                        StoreError::Corrupt(format!("the external-id index points at missing order {id}")).into()
                    );
                }
            },
            None => None,
        };
        let seen = rec.as_ref().map(|r| Existing { state: &r.state, version: r.source_version, order: &r.order });
        let delivery = classify(seen, inbound.version, &inbound.order).map_err(|e| {
            OrderError::Conflict(format!("order {}: {e}", existing.map(|i| i.to_string()).unwrap_or_default()))
        })?;
        match (delivery, rec) {
            (Delivery::New, _) => self.plan_new(inbound, actor, rules, now).await,
            (Delivery::Duplicate, Some(rec)) => {
                Ok(Planned::Duplicate(Ingested { order_id: rec.id, state: rec.state, duplicate: true, effects: 0 }))
            }
            (Delivery::Amendment(event), Some(mut rec)) => {
                let history = self.history(&inbound.order, Some(rec.id), now, rules.history_days).await?;
                let loaded = Loaded::of(&rec);
                let case = Case { order: &inbound.order, ..case(&rec, &history) };
                let shadow = self.shadow_running().map(|s| {
                    let d = crate::engine::decide(&case, actor.clone(), event.clone(), &s.rules, now);
                    (s, d)
                });
                let step_name = event.name();
                let decision = crate::engine::decide(&case, actor, event, rules, now)?;
                let compared = shadow.map(|(s, d)| s.compare(step_name, &decision, d));
                rec.order = inbound.order.clone();
                rec.source_version = inbound.version;
                rec.mapping_version = inbound.mapping_version.clone();
                let step = step_for(rec, Some(loaded), decision, now);
                let ingested = ingested(&step, false);
                Ok(Planned::Write(Box::new(step), ingested, compared))
            }
            (_, None) => Err(StoreError::Corrupt("an existing delivery without its order".into()).into()),
        }
    }

    /// Intake of an order not seen before: decided (and shadowed) as a new record.
    async fn plan_new(
        &self,
        inbound: &Inbound,
        actor: Actor,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<Planned, OrderError> {
        let id = OrderId::at(now);
        let received = OrderEvent::Received {
            connector: inbound.source.connector.to_string(),
            external_id: inbound.source.id.to_string(),
            version: inbound.version,
        };
        let history = self.history(&inbound.order, None, now, rules.history_days).await?;
        let shadow = self.shadow_running().map(|s| {
            let d = crate::engine::decide_new(&inbound.order, &history, actor.clone(), received.clone(), &s.rules, now);
            (s, d)
        });
        let decision = crate::engine::decide_new(&inbound.order, &history, actor, received, rules, now)?;
        let compared = shadow.map(|(s, d)| s.compare("intake", &decision, d));
        let rec = OrderRecord {
            id,
            source: inbound.source.clone(),
            source_version: inbound.version,
            mapping_version: inbound.mapping_version.clone(),
            order: inbound.order.clone(),
            state: OrderState::Received,
            created_at: now,
            updated_at: now,
            last_seq: 0,
            last_hash: GENESIS.to_owned(),
            references: BTreeMap::new(),
            approval: None,
            fulfilment: None,
            timers: Vec::new(),
            state_since: Some(now),
        };
        let step = step_for(rec, None, decision, now);
        let ingested = ingested(&step, false);
        Ok(Planned::Write(Box::new(step), ingested, compared))
    }

    /// A polled page: every record (as `ingest` would take it) and the connector's new
    /// poll state in one atomic commit, so a crash never skips or repeats a page.
    /// Per-record refusals are returned, not fatal to the page.
    pub async fn ingest_page(
        &self,
        page: Vec<Inbound>,
        poll_key: &str,
        poll_state: serde_json::Value,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<Ingested, OrderError>>, OrderError> {
        // Several versions of one record in a page: the newest stands for all.
        let mut latest: BTreeMap<Vec<u8>, Inbound> = BTreeMap::new();
        for i in page {
            let k = i.source.key();
            if latest.get(&k).is_none_or(|cur| cur.version < i.version) {
                latest.insert(k, i);
            }
        }
        // Lock in stripe order (each stripe once): no deadlock with other writers.
        let mut ext_stripes: Vec<usize> = latest.keys().map(stripe).collect();
        ext_stripes.sort_unstable();
        ext_stripes.dedup();
        let mut _ext_guards = Vec::with_capacity(ext_stripes.len());
        for s in ext_stripes {
            _ext_guards.push(self.ext_locks[s].lock().await);
        }
        self.retrying(|| async {
            let mut plans = Vec::with_capacity(latest.len());
            for i in latest.values() {
                plans.push((i, self.store.find_external(&i.source).await?));
            }
            let mut order_stripes: Vec<usize> =
                plans.iter().filter_map(|(_, e)| e.map(|id| stripe(id.as_bytes()))).collect();
            order_stripes.sort_unstable();
            order_stripes.dedup();
            let mut _order_guards = Vec::with_capacity(order_stripes.len());
            for s in order_stripes {
                _order_guards.push(self.order_locks[s].lock().await);
            }
            let mut steps = Vec::with_capacity(plans.len() + 1);
            let mut out = Vec::with_capacity(plans.len());
            let mut shadowed = Vec::new();
            for (inbound, existing) in plans {
                match self.plan_ingest(inbound, existing, rules, now).await {
                    Ok(Planned::Write(step, ingested, compared)) => {
                        steps.push(*step);
                        shadowed.push((ingested.order_id, compared));
                        out.push(Ok(ingested));
                    }
                    Ok(Planned::Duplicate(ingested)) => out.push(Ok(ingested)),
                    Err(e @ (OrderError::Conflict(_) | OrderError::Illegal(_) | OrderError::Refused(_))) => {
                        out.push(Err(e))
                    }
                    Err(e) => return Err(e),
                }
            }
            steps.push(Step { jobs: vec![(poll_job(poll_key), poll_state.clone())], ..Step::default() });
            self.commit(steps).await?;
            for (id, compared) in shadowed {
                self.record_shadow(id, compared, now).await;
            }
            Ok(out)
        })
        .await
    }

    /// The poll state last committed with a page.
    pub async fn poll_state(&self, poll_key: &str) -> Result<Option<serde_json::Value>, OrderError> {
        Ok(self.store.job_state(&poll_job(poll_key)).await?)
    }

    /// Applies one event (from a person or an external system) and the automatic steps
    /// that follow. Durable when it returns.
    pub async fn apply(
        &self,
        id: OrderId,
        actor: impl Into<Acting>,
        event: OrderEvent,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<OrderRecord, OrderError> {
        self.apply_once(id, actor, event, None, None, rules, now).await
    }

    /// `apply`, at most once per `once` key (a single-use link's id): the key is spent
    /// in the same step; a second use is `LinkUsed`. With `round`, the order's
    /// approval chain must still be in that round (else `Conflict`).
    #[allow(clippy::too_many_arguments)]
    pub async fn apply_once(
        &self,
        id: OrderId,
        acting: impl Into<Acting>,
        event: OrderEvent,
        once: Option<&str>,
        round: Option<u32>,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<OrderRecord, OrderError> {
        let Acting { actor, channel } = acting.into();
        let _g = self.lock_order(id).await;
        let result = self
            .retrying(|| async {
                if let Some(once) = once
                    && let Some(used) = self.store.used(once).await?
                {
                    return Err(OrderError::LinkUsed(format!("this link was already used ({})", used.at.to_rfc3339())));
                }
                let rec = self.load(id).await?;
                if let Some(round) = round
                    && rec.approval.as_ref().map(|p| p.round) != Some(round)
                {
                    return Err(OrderError::Conflict(
                        "this approval request is no longer current: the order changed and its approval started again"
                            .into(),
                    ));
                }
                let history = self.history(&rec.order, Some(id), now, rules.history_days).await?;
                let shadow = self.shadow_running().map(|s| {
                    let d = crate::engine::decide(&case(&rec, &history), actor.clone(), event.clone(), &s.rules, now);
                    (s, d)
                });
                let mut decision =
                    crate::engine::decide(&case(&rec, &history), actor.clone(), event.clone(), rules, now)?;
                let compared = shadow.map(|(s, d)| s.compare(event.name(), &decision, d));
                // The principal's own entries say through which door they acted.
                decision.audit.iter_mut().filter(|e| e.actor == actor).for_each(|e| e.channel = channel);
                let loaded = Loaded::of(&rec);
                let mut step = step_for(rec, Some(loaded), decision, now);
                let rec = step.order.as_ref().expect("a decision writes its order").record.clone();
                if let Some(once) = once {
                    step.spend = Some((once.to_owned(), UsedLink { at: now, order_id: id, seq: rec.last_seq }));
                }
                self.commit(vec![step]).await?;
                self.record_shadow(id, compared, now).await;
                Ok(rec)
            })
            .await;
        match result {
            // The link was spent between the check and the commit.
            Err(OrderError::Conflict(m)) if m.contains("already used") => Err(OrderError::LinkUsed(m)),
            other => other,
        }
    }

    /// Every order of one customer, oldest first.
    pub async fn customer_orders(&self, customer: &str) -> Result<Vec<OrderRecord>, OrderError> {
        let mut out = Vec::new();
        for (id, _) in self.store.customer_orders(customer, None).await? {
            if let Some(rec) = self.opened(id).await? {
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// Records an attempt's outcome. Durable when it returns. A success goes through
    /// `decide` (the engine may act on it: an invoice number issues the invoice) in
    /// the same step; a success the engine refuses is recorded as is.
    pub async fn finish_effect(
        &self,
        effect: &EffectRecord,
        outcome: EffectOutcome,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<(), OrderError> {
        let id = effect.id.order_id;
        let _g = self.lock_order(id).await;
        self.retrying(|| async {
            // The row may have changed since it was claimed (e.g. replayed): use the stored one.
            let Some(current) = self.store.current(&effect.into()).await? else { return Ok(()) };
            let attempts = current.attempts.saturating_add(1);
            let mut step = Step::default();
            match outcome.clone() {
                EffectOutcome::Retry { error, next_at } => {
                    let to = EffectRecord { attempts, next_at, last_error: Some(error), ..current.clone() };
                    step.outbox.push(OutboxChange::Reschedule { from: current, to });
                }
                EffectOutcome::Deferred { reason, next_at } | EffectOutcome::RateLimited { error: reason, next_at } => {
                    let to = EffectRecord { next_at, last_error: Some(reason), ..current.clone() };
                    step.outbox.push(OutboxChange::Reschedule { from: current, to });
                }
                EffectOutcome::Done { receipt, reference } => {
                    step.outbox.push(OutboxChange::Remove(current.clone()));
                    if !id.is_nil() {
                        let mut rec = self.load_for_effect(id).await?;
                        let loaded = Loaded::of(&rec);
                        if let Some(r) = &reference {
                            rec.references.insert(current.name(), r.clone());
                        }
                        let ev = OrderEvent::EffectSucceeded {
                            effect_id: current.id.to_string(),
                            effect: current.name(),
                            attempts,
                            receipt,
                            reference,
                        };
                        let actor = Actor::Connector(current.connector.to_string());
                        let history = History::default();
                        let order_step =
                            match crate::engine::decide(&case(&rec, &history), actor.clone(), ev.clone(), rules, now) {
                                Ok(decision) => step_for(rec, Some(loaded), decision, now),
                                Err(e) => {
                                    tracing::error!(order_id = %id, error = %e, "the engine refused an effect's success; recorded as is");
                                    bookkeeping(rec, loaded, actor, ev, now)
                                }
                            };
                        step = merge(step, order_step);
                    }
                }
                EffectOutcome::Dead { error } => {
                    let dead = EffectRecord { attempts, last_error: Some(error.clone()), ..current.clone() };
                    step.outbox.push(OutboxChange::Bury { from: current.clone(), dead });
                    if !id.is_nil() {
                        let rec = self.load_for_effect(id).await?;
                        let loaded = Loaded::of(&rec);
                        let ev = OrderEvent::EffectDeadLettered {
                            effect_id: current.id.to_string(),
                            effect: current.name(),
                            attempts,
                            error,
                        };
                        step = merge(step, bookkeeping(rec, loaded, Actor::System, ev, now));
                    }
                }
            }
            self.commit(vec![step]).await?;
            Ok(())
        })
        .await
    }

    async fn load_for_effect(&self, id: OrderId) -> Result<OrderRecord, OrderError> {
        self.opened(id).await?.ok_or_else(|| StoreError::Corrupt(format!("an effect for missing order {id}")).into())
    }

    /// Moves a dead letter back to the outbox, due now, attempts reset (same
    /// idempotency key). Durable when it returns.
    pub async fn replay(
        &self,
        id: &EffectId,
        acting: impl Into<Acting>,
        now: DateTime<Utc>,
    ) -> Result<EffectRecord, OrderError> {
        let acting = acting.into();
        let actor = &acting.actor;
        let _g = self.lock_order(id.order_id).await;
        let dead =
            self.store.dead_letter(id).await?.ok_or_else(|| OrderError::NotFound(format!("dead letter {id}")))?;
        let again = EffectRecord { attempts: 0, next_at: now, ..dead.clone() };
        let mut step = Step { outbox: vec![OutboxChange::Revive { dead: *id, to: again.clone() }], ..Step::default() };
        if id.order_id.is_nil() {
            tracing::info!(effect_id = %id, actor = %actor, "daemon effect replayed");
        } else {
            let rec = self.load_for_effect(id.order_id).await?;
            let loaded = Loaded::of(&rec);
            let ev = OrderEvent::EffectReplayed { effect_id: id.to_string(), effect: dead.name() };
            step = merge(step, bookkeeping(rec, loaded, acting.clone(), ev, now));
        }
        self.commit(vec![step]).await?;
        Ok(again)
    }

    /// Verifies every order's hash chain (see `audit.rs`).
    pub async fn verify_audit(&self) -> Result<AuditReport, OrderError> {
        audit::verify(self).await
    }
}

fn poll_job(poll_key: &str) -> String {
    format!("poll/{poll_key}")
}

fn ingested(step: &Step, duplicate: bool) -> Ingested {
    let rec = &step.order.as_ref().expect("intake writes its order").record;
    Ingested { order_id: rec.id, state: rec.state.clone(), duplicate, effects: step.new_effects() }
}

/// One step out of two that touch different rows (an outbox change and its order's).
fn merge(mut a: Step, b: Step) -> Step {
    a.order = a.order.or(b.order);
    a.events.extend(b.events);
    a.outbox.extend(b.outbox);
    a.digests.extend(b.digests);
    a
}
