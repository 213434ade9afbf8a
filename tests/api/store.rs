//! The store conformance suite: every backend (`store::Backend::NAMES`: the embedded
//! engines and PostgreSQL, `subjects()`) runs the same cases through the application
//! layer and the `Store` trait: step atomicity and preconditions, the outbox model
//! (claim, attempt, retry, dead, replay, reopen), the indexes and audit chains.
//! Quarantine and tampering are checked on each by damaging rows in its own way.
//! Effects visible only once durable, a failed sync being fatal, and layout upgrades
//! reach under the layout, so they run on the embedded engines only. The SIGKILL
//! recovery of the built binary is in `crash.rs` (embedded engines).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use orderbridge::domain::{ExternalRef, Order};
use orderbridge::engine::{Actor, Rules};
use orderbridge::metrics::Metrics;
use orderbridge::orders::{EffectOutcome, Inbound, OrderError, Orders};
use orderbridge::store::kv::{Batch, Engine, EngineError, KvIter, KvStore, tags};
use orderbridge::store::postgres::PgStore;
use orderbridge::store::records::StepEvents;
use orderbridge::store::{
    self, Backend, ConnectorFilter, EffectId, EffectRecord, EventRecord, Loaded, OrderWrite, Sketch, Step, Store,
    StoreError, UsedLink,
};
use proptest::prelude::*;

/// The embedded engines, for the checks that reach under the layout (held syncs,
/// rows damaged in place, layout upgrades).
fn backends() -> Vec<Backend> {
    Backend::EMBEDDED.iter().map(|n| n.parse().unwrap()).collect()
}

fn options(backend: Backend, dir: &Path) -> store::Options {
    store::Options {
        backend,
        path: dir.join(backend.name()),
        cache_bytes: 4 << 20,
        commit_delay: Duration::ZERO,
        postgres: None,
    }
}

/// One store the conformance checks run on: an embedded engine in a directory of its
/// own, or a database of its own on the test PostgreSQL cluster.
struct Subject {
    options: store::Options,
    _dir: tempfile::TempDir,
}

impl Subject {
    fn name(&self) -> &'static str {
        self.options.backend.name()
    }

    /// Opens the store.
    async fn open(&self) -> Arc<dyn Store> {
        store::open(&self.options, Arc::new(Metrics::default()))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", self.name()))
    }

    /// Closes the store `orders` works on and opens it again (a restart): once closed
    /// and dropped, the store is free at once.
    async fn reopen(&self, orders: Orders) -> Arc<dyn Store> {
        let store = orders.store().clone();
        drop(orders);
        store.close().await.unwrap_or_else(|e| panic!("{}: close: {e}", self.name()));
        drop(store);
        self.open().await
    }
}

/// Every backend, each fresh: the embedded engines and PostgreSQL (which must be
/// there: see `postgres.rs`).
async fn subjects() -> Vec<Subject> {
    let mut out: Vec<Subject> = backends()
        .into_iter()
        .map(|b| {
            let dir = tempfile::tempdir().unwrap();
            Subject { options: options(b, dir.path()), _dir: dir }
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let postgres = Some(crate::postgres::fresh_database().await);
    out.push(Subject {
        options: store::Options { backend: Backend::Postgres, postgres, ..options(Backend::Fjall, dir.path()) },
        _dir: dir,
    });
    out
}

/// Opens an embedded backend, waiting while a previous handle on the same directory is let go.
async fn open(backend: Backend, dir: &Path) -> Arc<dyn Store> {
    Subject { options: options(backend, dir), _dir: tempfile::tempdir().unwrap() }.open().await
}

fn engine(backend: Backend, dir: &Path) -> Box<dyn Engine> {
    store::open_engine(&options(backend, dir)).unwrap()
}

/// The example rules up to execution: one ERP effect per approved order (these cases
/// are about the store, not about tasks).
fn rules() -> Rules {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(dir.join("config/rules.toml")).unwrap();
    let text = &text[..text.find("# --- Execution").expect("an execution section")];
    let file: orderbridge::engine::rules::RulesFile = toml::from_str(text).unwrap();
    file.validate(&|name| std::fs::read_to_string(dir.join("config").join(name)).map_err(|e| e.to_string()))
        .unwrap_or_else(|ps| panic!("{:?}", ps.iter().map(|p| &p.message).collect::<Vec<_>>()))
}

/// A sample order of its own customer (so the velocity and duplicate rules see no history).
fn order(amount: &str, customer: &str) -> Order {
    let mut v: serde_json::Value = serde_json::from_str(include_str!("../fixtures/demo-crm-deal.json")).unwrap();
    v["deal"]["amount"] = amount.into();
    v["deal"]["customer"]["id"] = customer.into();
    let m = toml::from_str::<orderbridge::mapping::MappingFile>(include_str!("../../mappings/demo-crm.toml"))
        .unwrap()
        .validate("demo-crm")
        .unwrap();
    m.apply(&v).unwrap().unwrap().order
}

fn inbound(ext: &str, version: u64, amount: &str, customer: &str) -> Inbound {
    Inbound {
        source: ExternalRef { connector: "demo-crm".parse().unwrap(), id: ext.parse().unwrap() },
        version,
        mapping_version: "1".into(),
        order: order(amount, customer),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Ingest { small: bool },
    Attempt { outcome: u8 },
    Replay,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<bool>().prop_map(|small| Op::Ingest { small }),
        4 => (0u8..3).prop_map(|outcome| Op::Attempt { outcome }),
        1 => Just(Op::Replay),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]
    /// The outbox against an in-memory model: random ingest / attempt / retry /
    /// dead-letter / replay / reopen sequences keep the store and the model equal, and
    /// the audit chains intact (a reopen stands for a restart).
    #[test]
    fn the_outbox_matches_its_model(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            for subject in subjects().await {
                let rules = rules();
                let mut orders = Orders::new(subject.open().await);
                let (mut pending, mut dead) = (BTreeSet::new(), BTreeSet::new());
                let far = Utc::now() + chrono::Duration::days(1);
                for (n, op) in ops.iter().enumerate() {
                    match op {
                        Op::Ingest { small } => {
                            let amount = if *small { "500.00" } else { "5000000.00" };
                            let got = orders.ingest(inbound(&format!("M-{n}"), 1, amount, &format!("C-M{n}")), &rules, Utc::now()).await.unwrap();
                            if *small {
                                let seq = orders.store().events(got.order_id).await.unwrap().len() as u32;
                                pending.insert(EffectId { order_id: got.order_id, seq, index: 0 });
                            }
                        }
                        Op::Attempt { outcome } => {
                            let due = orders.store().due_effects(far, 1).await.unwrap();
                            if let Some(e) = due.first() {
                                let o = match outcome {
                                    0 => EffectOutcome::Done { receipt: "ok".into(), reference: None },
                                    1 => EffectOutcome::Retry { error: "503".into(), next_at: Utc::now() + chrono::Duration::seconds(1) },
                                    _ => EffectOutcome::Dead { error: "400".into() },
                                };
                                orders.finish_effect(e, o, &rules, Utc::now()).await.unwrap();
                                match outcome {
                                    0 => { pending.remove(&e.id); }
                                    1 => {}
                                    _ => { pending.remove(&e.id); dead.insert(e.id); }
                                }
                            }
                        }
                        Op::Replay => {
                            if let Some(id) = dead.iter().next().copied() {
                                orders.replay(&id, Actor::System, Utc::now()).await.unwrap();
                                dead.remove(&id);
                                pending.insert(id);
                            }
                        }
                        Op::Reopen => {
                            orders = Orders::new(subject.reopen(orders).await);
                        }
                    }
                    let ids = |v: Vec<EffectRecord>| v.into_iter().map(|e| e.id).collect::<BTreeSet<_>>();
                    assert_eq!(ids(orders.store().pending_effects(1000).await.unwrap()), pending, "{}", subject.name());
                    assert_eq!(ids(orders.store().dead_letters(1000).await.unwrap()), dead, "{}", subject.name());
                    let c = orders.store().counts();
                    assert_eq!((c.pending, c.dead), (pending.len() as u64, dead.len() as u64), "{}", subject.name());
                    let audit = orders.verify_audit().await.unwrap();
                    assert!(audit.broken.is_none(), "{}: {audit:?}", subject.name());
                }
            }
        });
    }
}

#[tokio::test]
async fn a_commit_is_all_or_nothing_and_a_stale_step_writes_nothing() {
    for subject in subjects().await {
        let orders = Orders::new(subject.open().await);
        let rules = rules();
        let a = orders.ingest(inbound("AT-1", 1, "500.00", "C-AT1"), &rules, Utc::now()).await.unwrap();
        let store = orders.store();
        let rec = store.order(a.order_id).await.unwrap().unwrap();
        let events_before = store.events(a.order_id).await.unwrap().len();
        let pending_before = store.counts().pending;

        // A step written against an older load of the order is refused...
        let mut stale = Loaded::of(&rec);
        stale.last_seq -= 1;
        let mut moved = rec.clone();
        moved.source_version = 99;
        let bad = Step { order: Some(OrderWrite { record: moved.clone(), loaded: Some(stale) }), ..Step::default() };
        // ...and takes the good step committed with it down too.
        let good = Step {
            outbox: vec![store::OutboxChange::Add(EffectRecord {
                id: EffectId { order_id: rec.id, seq: 999, index: 0 },
                connector: "demo-erp".parse().unwrap(),
                operation: "create_order".into(),
                cause: "test".into(),
                idempotency_key: "orderbridge:test".into(),
                body: serde_json::json!({}),
                attempts: 0,
                next_at: Utc::now(),
                created_at: Utc::now(),
                last_error: None,
            })],
            jobs: vec![("test/job".into(), serde_json::json!(1))],
            ..Step::default()
        };
        let err = store.commit(vec![good, bad]).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{}: {err}", subject.name());
        assert_eq!(store.order(a.order_id).await.unwrap().unwrap(), rec, "{}: the order is untouched", subject.name());
        assert_eq!(store.events(a.order_id).await.unwrap().len(), events_before);
        assert_eq!(store.counts().pending, pending_before, "{}: no effect from the refused commit", subject.name());
        assert_eq!(store.job_state("test/job").await.unwrap(), None);

        // A second order under the same external id is refused as well.
        let mut twin = rec.clone();
        twin.id = orderbridge::domain::OrderId::new_v7();
        twin.last_seq = 0;
        let dup = Step { order: Some(OrderWrite { record: twin, loaded: None }), ..Step::default() };
        assert!(matches!(store.commit(vec![dup]).await, Err(StoreError::Conflict(_))), "{}", subject.name());
    }
}

#[tokio::test]
async fn single_use_links_and_payments_are_taken_once() {
    for subject in subjects().await {
        let orders = Orders::new(subject.open().await);
        let rules = rules();
        let a = orders.ingest(inbound("L-1", 1, "500.00", "C-L1"), &rules, Utc::now()).await.unwrap();
        // A link's use is recorded with its step; a second step spending it is refused.
        let used = UsedLink { at: Utc::now(), order_id: a.order_id, seq: 1 };
        let spend = || Step { spend: Some(("link-1".to_owned(), used.clone())), ..Step::default() };
        orders.store().commit(vec![spend()]).await.unwrap();
        let again = orders.store().commit(vec![spend()]).await;
        assert!(
            matches!(again, Err(StoreError::Conflict(ref m)) if m.contains("already used")),
            "{}: {again:?}",
            subject.name()
        );
        assert_eq!(orders.store().used("link-1").await.unwrap(), Some(used.clone()));
        // A payment is recorded once per (source, id); the repeat returns the first outcome.
        let p = orderbridge::engine::payments::PaymentReport {
            source: "bank".into(),
            payment_id: "P-1".into(),
            amount: orderbridge::domain::Money::parse("10.00", "CNY").unwrap(),
            invoice_number: Some("INV-NONE".into()),
            order_id: None,
            reference: String::new(),
        };
        let first = orders.record_payment(&p, &rules, Utc::now()).await.unwrap();
        assert!(!first.matched && !first.duplicate);
        let again = orders.record_payment(&p, &rules, Utc::now()).await.unwrap();
        assert!(again.duplicate, "{}", subject.name());
        assert_eq!(orders.store().unmatched_payments().await.unwrap().len(), 1, "{}: queued once", subject.name());
        assert_eq!(orders.store().counts().unmatched, 1, "{}: counted for /metrics", subject.name());
        // Assigned by an operator: no longer waiting, also after a reopen (counted at open).
        orders.assign_payment("bank", "P-1", a.order_id, Actor::Person("op".into()), &rules, Utc::now()).await.ok();
        let waiting = orders.store().unmatched_payments().await.unwrap().len() as u64;
        assert_eq!(orders.store().counts().unmatched, waiting, "{}", subject.name());
        assert_eq!(subject.reopen(orders).await.counts().unmatched, waiting, "{}: after a reopen", subject.name());
    }
}

#[tokio::test]
async fn the_dispatcher_reads_only_the_connectors_and_effects_it_asks_for_also_after_a_reopen() {
    for subject in subjects().await {
        let orders = Orders::new(subject.open().await);
        let rules = rules();
        for i in 0..3 {
            orders
                .ingest(inbound(&format!("W-{i}"), 1, "500.00", &format!("C-W{i}")), &rules, Utc::now())
                .await
                .unwrap();
        }
        let far = Utc::now() + chrono::Duration::days(1);
        let name = subject.name();
        let check = |store: Arc<dyn Store>| async move {
            let all = store.due_effects_where(far, 10, &ConnectorFilter::default()).await.unwrap();
            assert_eq!(all.len(), 3, "{}", name);
            assert!(all.iter().all(|e| &*e.connector == "demo-erp"));
            let skip = ConnectorFilter { skip: ["demo-erp".to_owned()].into(), ..Default::default() };
            let others = store.due_effects_where(far, 10, &skip).await.unwrap();
            assert!(others.is_empty(), "{}: {others:?}", name);
            let only = ConnectorFilter { only: Some(["mail".to_owned()].into()), ..Default::default() };
            assert!(store.due_effects_where(far, 10, &only).await.unwrap().is_empty(), "{}", name);
            // Effects being performed are left out; the others are still listed.
            let performing = ConnectorFilter { performing: [all[0].id, all[2].id].into(), ..Default::default() };
            let rest = store.due_effects_where(far, 10, &performing).await.unwrap();
            assert_eq!(rest.iter().map(|e| e.id).collect::<Vec<_>>(), vec![all[1].id], "{}", name);
        };
        check(orders.store().clone()).await;
        check(subject.reopen(orders).await).await;
    }
}

#[tokio::test]
async fn indexes_find_orders_by_external_id_state_customer_and_due_time() {
    for subject in subjects().await {
        let orders = Orders::new(subject.open().await);
        let rules = crate::helpers::load_rules(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        let now = Utc::now();
        let small = orders.ingest(inbound("IX-1", 1, "500.00", "C-IX"), &rules, now).await.unwrap();
        // Ids are UUIDv7: a later millisecond sorts later.
        let big = orders
            .ingest(inbound("IX-2", 1, "5000000.00", "C-IY"), &rules, now + chrono::Duration::milliseconds(1))
            .await
            .unwrap();
        let again = orders
            .ingest(inbound("IX-3", 1, "700.00", "C-IX"), &rules, now + chrono::Duration::milliseconds(2))
            .await
            .unwrap();
        let store = orders.store();
        let ext = ExternalRef { connector: "demo-crm".parse().unwrap(), id: "IX-2".parse().unwrap() };
        assert_eq!(store.find_external(&ext).await.unwrap(), Some(big.order_id), "{}", subject.name());
        let waiting = store.list(Some(big.state.name()), None, 10).await.unwrap();
        assert_eq!(waiting.iter().map(|r| r.id).collect::<Vec<_>>(), vec![big.order_id], "{}", subject.name());
        // Counting by state (for /metrics) agrees with the records, oldest first.
        let counted = store.in_states(orderbridge::engine::STATE_NAMES).await.unwrap();
        let by_state = |s: &str| counted.iter().find(|c| c.state == s).unwrap().clone();
        assert_eq!((by_state("manual_review").orders, by_state("manual_review").oldest), (0, None));
        assert_eq!(by_state(big.state.name()).oldest, Some(big.order_id), "{}", subject.name());
        let total: u64 = counted.iter().map(|c| c.orders).sum();
        assert_eq!(total, 3, "{}: {counted:?}", subject.name());
        // Orders with their trails, as reports read them: the same events as one by one.
        let trails = store.trails(None, 10).await.unwrap();
        assert_eq!(trails.len(), 3, "{}", subject.name());
        for (rec, events) in &trails {
            assert!(!events.is_empty());
            assert_eq!(events, &store.events(rec.id).await.unwrap(), "{}", subject.name());
        }
        // As a report reads them: what the trails say, decoded only as far as needed.
        let sketches = store.sketches(None, 10).await.unwrap();
        let expected: Vec<Sketch> = trails.iter().map(Sketch::of).collect();
        assert_eq!(sketches, expected, "{}", subject.name());
        let after_first = store.trails(Some(trails[0].0.id), 1).await.unwrap();
        assert_eq!(after_first[0].0.id, trails[1].0.id, "{}: pages go on after `after`", subject.name());
        let mine: Vec<_> = store.customer_orders("C-IX", None).await.unwrap().into_iter().map(|(id, _)| id).collect();
        assert_eq!(mine, vec![small.order_id, again.order_id], "{}: oldest first", subject.name());
        let later = now + chrono::Duration::days(1);
        assert!(store.customer_orders("C-IX", Some(later)).await.unwrap().is_empty(), "{}", subject.name());
        // The big order waits for approval: its reminder is indexed at its due time.
        let rec = store.order(big.order_id).await.unwrap().unwrap();
        let due = rec.next_timer().unwrap_or_else(|| panic!("a reminder in {:?}", rec.state));
        assert!(store.due_timers(due - chrono::Duration::seconds(1), 10).await.unwrap().is_empty());
        assert_eq!(
            store.due_timers(due, 10).await.unwrap(),
            vec![(big.order_id, truncated(due))],
            "{}",
            subject.name()
        );
        // A newer version moves the order in every index it is in.
        let amended = orders.ingest(inbound("IX-2", 2, "500.00", "C-IZ"), &rules, now).await.unwrap();
        assert_ne!(amended.state, big.state);
        assert!(store.list(Some(big.state.name()), None, 10).await.unwrap().is_empty(), "{}", subject.name());
        assert!(store.customer_orders("C-IY", None).await.unwrap().is_empty(), "{}", subject.name());
        assert_eq!(store.customer_orders("C-IZ", None).await.unwrap().len(), 1, "{}", subject.name());
        assert!(store.due_timers(due, 10).await.unwrap().is_empty(), "{}: no reminder any more", subject.name());
        // A customer's orders are found after a reopen too (the embedded stores keep
        // which customers they hold in memory and build it again at open), and a
        // customer with none has none.
        orders.ingest(inbound("IX-4", 1, "500.00", "客户-浦东-7"), &rules, now).await.unwrap();
        let store = subject.reopen(orders).await;
        assert_eq!(store.customer_orders("C-IX", None).await.unwrap().len(), 2, "{}", subject.name());
        assert_eq!(store.customer_orders("客户-浦东-7", None).await.unwrap().len(), 1, "{}", subject.name());
        assert!(store.customer_orders("客户-浦东-8", None).await.unwrap().is_empty(), "{}", subject.name());
        let orders = Orders::new(store.clone());
        orders.ingest(inbound("IX-5", 1, "500.00", "C-NEW"), &rules, now).await.unwrap();
        assert_eq!(store.customer_orders("C-NEW", None).await.unwrap().len(), 1, "{}", subject.name());
        // External ids too (kept in memory the same way): taken before the reopen or
        // after it, found; a redelivery of either is the same order, not a new one.
        let ix5 = ExternalRef { connector: "demo-crm".parse().unwrap(), id: "IX-5".parse().unwrap() };
        assert_eq!(store.find_external(&ext).await.unwrap(), Some(big.order_id), "{}", subject.name());
        assert!(store.find_external(&ix5).await.unwrap().is_some(), "{}", subject.name());
        let unknown = ExternalRef { connector: "demo-crm".parse().unwrap(), id: "IX-404".parse().unwrap() };
        assert_eq!(store.find_external(&unknown).await.unwrap(), None, "{}", subject.name());
        for (id, version, customer) in [("IX-2", 2, "C-IZ"), ("IX-5", 1, "C-NEW")] {
            let again = orders.ingest(inbound(id, version, "500.00", customer), &rules, now).await.unwrap();
            assert!(again.duplicate, "{}: {id} delivered again", subject.name());
        }
        let counted = store.in_states(orderbridge::engine::STATE_NAMES).await.unwrap();
        assert_eq!(counted.iter().map(|c| c.orders).sum::<u64>(), 5, "{}: {counted:?}", subject.name());
    }
}

fn truncated(t: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
    chrono::DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap()
}

#[tokio::test]
async fn audit_verify_finds_an_altered_event() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let store = KvStore::open(engine(backend, dir.path()), Duration::ZERO, Arc::new(Metrics::default())).unwrap();
        let orders = Orders::new(store.clone());
        let rules = rules();
        let a = orders.ingest(inbound("AV-1", 1, "500.00", "C-AV"), &rules, Utc::now()).await.unwrap();
        assert!(orders.verify_audit().await.unwrap().broken.is_none());
        // Rewrite the first step's events with an altered actor, as an attacker with
        // access to the data directory could: in the stored form, where the step's
        // head hash no longer matches, and as whole records with their hashes (the
        // form rows had before), where the altered event's own hash does not.
        let events = store.events(a.order_id).await.unwrap();
        let mut key = vec![b'e'];
        key.extend_from_slice(&events[0].key());
        let rows = store.engine().range(&key, b"f").next().unwrap().unwrap();
        let mut step = StepEvents::decode(&rows.1).unwrap();
        assert!(step.len() > 1, "the intake step writes several events");
        step[0].actor = Actor::Person("mallory".into());
        let last = step.last().unwrap().seq;
        for (row, broken_at) in [(StepEvents::encode(&step), last), (orderbridge::store::codec::encode(&step), 1)] {
            let mut b = Batch::default();
            b.put(rows.0.clone(), row);
            store.engine().write(b).unwrap();
            let report = orders.verify_audit().await.unwrap();
            let (id, seq, why) = report.broken.expect("the alteration is found");
            assert_eq!((id, seq), (a.order_id, broken_at), "{}", backend.name());
            assert!(why.contains("altered"), "{why}");
        }
    }
}

#[test]
fn step_events_read_back_as_written_in_both_forms() {
    let id = orderbridge::domain::OrderId::new_v7();
    let t0 = Utc::now();
    let mut events: Vec<EventRecord> = Vec::new();
    for (i, state) in ["received", "screening"].iter().enumerate() {
        let prev = events.last().map_or(orderbridge::store::records::GENESIS.to_owned(), |e| e.hash.clone());
        let state: orderbridge::engine::OrderState =
            serde_json::from_value(serde_json::json!({"name": state})).unwrap();
        events.push(EventRecord::chained(
            id,
            u32::try_from(i).unwrap() + 1,
            &prev,
            t0 + chrono::Duration::milliseconds(i64::try_from(i).unwrap()),
            Actor::System,
            orderbridge::engine::OrderEvent::ScreeningStarted { rules_version: "1".into() },
            state,
        ));
    }
    assert_eq!(StepEvents::decode(&StepEvents::encode(&events)).unwrap(), events);
    assert_eq!(StepEvents::decode(&orderbridge::store::codec::encode(&events)).unwrap(), events);
    // Not one chained run: stored whole, read back the same.
    let mut loose = events.clone();
    loose[1].prev_hash = "x".repeat(64);
    assert_eq!(StepEvents::decode(&StepEvents::encode(&loose)).unwrap(), loose);
    // The packed form is smaller: the hashes inside the step are not stored.
    assert!(StepEvents::encode(&events).len() < orderbridge::store::codec::encode(&events).len());
}

/// An engine whose sync waits until the test lets it go, or fails.
struct Held {
    inner: Box<dyn Engine>,
    hold: Arc<AtomicBool>,
    fail: Arc<AtomicBool>,
    syncs: Arc<AtomicUsize>,
    waiting: Arc<AtomicBool>,
}

impl Engine for Held {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.inner.get(key)
    }
    fn range(&self, from: &[u8], to: &[u8]) -> KvIter<'_> {
        self.inner.range(from, to)
    }
    fn write(&self, batch: Batch) -> Result<(), EngineError> {
        self.inner.write(batch)
    }
    fn sync(&self) -> Result<(), String> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        while self.hold.load(Ordering::SeqCst) {
            self.waiting.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(2));
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err("fsync: No space left on device (os error 28)".into());
        }
        self.inner.sync()
    }
}

struct HeldStore {
    store: Arc<KvStore<Held>>,
    hold: Arc<AtomicBool>,
    fail: Arc<AtomicBool>,
    syncs: Arc<AtomicUsize>,
    waiting: Arc<AtomicBool>,
}

fn held(backend: Backend, dir: &Path) -> HeldStore {
    let (hold, fail, syncs, waiting) = (Arc::default(), Arc::default(), Arc::default(), Arc::default());
    let engine = Held {
        inner: engine(backend, dir),
        hold: Arc::clone(&hold),
        fail: Arc::clone(&fail),
        syncs: Arc::clone(&syncs),
        waiting: Arc::clone(&waiting),
    };
    let store = KvStore::open(engine, Duration::ZERO, Arc::new(Metrics::default())).unwrap();
    HeldStore { store, hold, fail, syncs, waiting }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_effect_is_visible_to_the_dispatcher_only_once_its_commit_is_durable() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let h = held(backend, dir.path());
        let orders = Arc::new(Orders::new(h.store.clone()));
        let rules = Arc::new(rules());
        h.hold.store(true, Ordering::SeqCst);
        let task = {
            let (orders, rules) = (orders.clone(), rules.clone());
            tokio::spawn(async move { orders.ingest(inbound("DV-1", 1, "500.00", "C-DV"), &rules, Utc::now()).await })
        };
        // The step is written and its sync is held: the effect is stored, not durable.
        for _ in 0..2000 {
            if h.waiting.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(h.waiting.load(Ordering::SeqCst), "{}: the sync is held", backend.name());
        assert_eq!(h.store.pending_effects(10).await.unwrap().len(), 1, "{}: written, not yet durable", backend.name());
        let far = Utc::now() + chrono::Duration::days(1);
        assert!(
            h.store.due_effects(far, 10).await.unwrap().is_empty(),
            "{}: nothing is handed to the dispatcher before the sync returns",
            backend.name()
        );
        assert!(!task.is_finished(), "{}: the webhook is not answered before the sync", backend.name());
        h.hold.store(false, Ordering::SeqCst);
        task.await.unwrap().unwrap();
        assert_eq!(h.store.due_effects(far, 10).await.unwrap().len(), 1, "{}: visible once durable", backend.name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_is_fatal_and_never_retried() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let h = held(backend, dir.path());
        let orders = Orders::new(h.store.clone());
        let rules = rules();
        orders.ingest(inbound("FS-1", 1, "500.00", "C-FS"), &rules, Utc::now()).await.unwrap();
        let syncs = h.syncs.load(Ordering::SeqCst);
        h.fail.store(true, Ordering::SeqCst);
        let err = orders.ingest(inbound("FS-2", 1, "500.00", "C-FS2"), &rules, Utc::now()).await.unwrap_err();
        assert!(matches!(err, OrderError::Store(StoreError::Failed(_))), "{}: {err}", backend.name());
        assert!(h.store.failure().unwrap().contains("No space left"));
        // Healthy again underneath: still refused, and the sync is never tried again.
        h.fail.store(false, Ordering::SeqCst);
        let again = orders.ingest(inbound("FS-3", 1, "500.00", "C-FS3"), &rules, Utc::now()).await.unwrap_err();
        assert!(matches!(again, OrderError::Store(StoreError::Failed(_))), "{}: {again}", backend.name());
        assert!(matches!(h.store.flush().await, Err(StoreError::Failed(_))));
        assert_eq!(h.syncs.load(Ordering::SeqCst), syncs + 1, "{}: one failed sync, no retry", backend.name());
        let ext = ExternalRef { connector: "demo-crm".parse().unwrap(), id: "FS-3".parse().unwrap() };
        assert_eq!(
            h.store.find_external(&ext).await.unwrap(),
            None,
            "{}: nothing written after the failure",
            backend.name()
        );
    }
}

#[tokio::test]
async fn an_unreadable_row_is_quarantined_and_the_others_go_on() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let rules = rules();
        let (bad_order, good_order) = {
            let store =
                KvStore::open(engine(backend, dir.path()), Duration::ZERO, Arc::new(Metrics::default())).unwrap();
            let orders = Orders::new(store.clone());
            let a = orders.ingest(inbound("Q-1", 1, "500.00", "C-Q1"), &rules, Utc::now()).await.unwrap();
            let b = orders.ingest(inbound("Q-2", 1, "500.00", "C-Q2"), &rules, Utc::now()).await.unwrap();
            // Damage one effect row and one order row in place.
            let effects = store.pending_effects(10).await.unwrap();
            let bad_effect = effects.iter().find(|e| e.id.order_id == a.order_id).unwrap();
            let mut b1 = Batch::default();
            let mut k = vec![tags::OUTBOX];
            k.extend_from_slice(&bad_effect.due_key());
            b1.put(k, b"\x01garbage".to_vec());
            let mut k = vec![tags::ORDERS];
            k.extend_from_slice(a.order_id.as_bytes());
            b1.put(k, b"\x00\x00\x00\x05{not json".to_vec());
            // And an outbox key that is no due key at all.
            b1.put(vec![tags::OUTBOX, 0xab, 0xcd], b"{}".to_vec());
            store.engine().write(b1).unwrap();
            store.close().await.unwrap();
            (a.order_id, b.order_id)
        };
        let store = open(backend, dir.path()).await;
        let orders = Orders::new(store.clone());
        let far = Utc::now() + chrono::Duration::days(1);
        let due = store.due_effects(far, 10).await.unwrap();
        assert_eq!(due.iter().map(|e| e.id.order_id).collect::<Vec<_>>(), vec![good_order], "{}", backend.name());
        assert!(matches!(store.order(bad_order).await, Err(StoreError::Quarantined(_))), "{}", backend.name());
        assert!(store.order(good_order).await.unwrap().is_some());
        assert_eq!(store.counts().quarantined, 3, "{}", backend.name());
        assert_eq!(store.counts().pending, due.len() as u64, "{}: the bad rows no longer count", backend.name());
        let q = store.quarantined().await.unwrap();
        assert_eq!(q.len(), 3);
        assert!(q.iter().any(|r| r.what.starts_with("order ")), "{q:?}");
        assert!(q.iter().any(|r| r.what == "effect abcd" && r.error.contains("3 bytes")), "{q:?}");
        // Listing, timers and new orders go on.
        assert_eq!(store.list(None, None, 10).await.unwrap().len(), 1);
        orders.run_timers(&rules, far).await.unwrap();
        orders.ingest(inbound("Q-3", 1, "500.00", "C-Q3"), &rules, Utc::now()).await.unwrap();
    }
}

/// A quarantined order row (`bad`, whose good record is `good`) and effect row on
/// `store`, resolved as an operator would: audit verify names both and is not
/// verifiable; the order cannot be restored from a backup that lacks it, nor without
/// a person and a reason; it is restored from one that holds it, the effect row is
/// discarded; then nothing counts, both stay listed, and the audit passes, naming the
/// discarded row. `name` is the backend, for messages.
async fn resolve_quarantine(
    name: &str,
    store: Arc<dyn Store>,
    bad: orderbridge::domain::OrderId,
    good: Arc<dyn Store>,
) {
    use orderbridge::orders::Resolve;
    use orderbridge::store::ResolutionOutcome;
    let orders = Orders::new(store.clone());
    let report = orders.verify_audit().await.unwrap();
    assert!(!report.intact(), "{name}: {report:?}");
    assert_eq!(report.quarantined.len(), 2, "{name}: both rows named: {report:?}");
    let order_row = format!("order {bad}");
    let effect_row = report.quarantined.iter().find(|q| q.what != order_row).unwrap().what.clone();
    let empty_dir = tempfile::tempdir().unwrap();
    let empty = open(Backend::Fjall, empty_dir.path()).await;
    let now = Utc::now();
    let lacking = orders
        .resolve_quarantined(&order_row, Resolve::Restore { from: empty }, "li.na", "INC-7", now)
        .await
        .unwrap_err();
    assert!(matches!(&lacking, OrderError::Conflict(m) if m.contains("does not hold")), "{name}: {lacking}");
    let nobody = orders.resolve_quarantined(&effect_row, Resolve::Discard, " ", "INC-7", now).await.unwrap_err();
    assert!(matches!(nobody, OrderError::Refused(_)), "{name}: {nobody}");
    assert_eq!(store.counts().quarantined, 2, "{name}: nothing resolved yet");

    let restored = orders
        .resolve_quarantined(&order_row, Resolve::Restore { from: good }, "li.na", "INC-7 restored from backup", now)
        .await
        .unwrap();
    assert_eq!(restored.resolved.as_ref().map(|r| r.outcome), Some(ResolutionOutcome::Restored), "{name}");
    let discarded = orders
        .resolve_quarantined(&effect_row, Resolve::Discard, "wang.fang", "INC-8 pushed by hand", now)
        .await
        .unwrap();
    assert_eq!(discarded.resolved.as_ref().map(|r| r.by.as_str()), Some("wang.fang"), "{name}");

    assert_eq!(store.counts().quarantined, 0, "{name}");
    assert_eq!(store.order(bad).await.unwrap().map(|r| r.id), Some(bad), "{name}: the order reads again");
    let kept = store.quarantined().await.unwrap();
    assert_eq!(kept.len(), 2, "{name}: resolved rows are kept: {kept:?}");
    assert!(kept.iter().all(|q| q.resolved.is_some()), "{name}: {kept:?}");
    let report = orders.verify_audit().await.unwrap();
    assert!(report.intact(), "{name}: {report:?}");
    assert_eq!(report.orders, 2, "{name}: the restored order is verified again");
    assert_eq!(report.discarded.iter().map(|q| q.what.as_str()).collect::<Vec<_>>(), [effect_row.as_str()], "{name}");
    let again = orders.resolve_quarantined(&effect_row, Resolve::Discard, "li.na", "twice", now).await.unwrap_err();
    assert!(matches!(again, OrderError::NotFound(_)), "{name}: {again}");
}

/// A quarantined row is resolved on each embedded engine, and stays resolved (not
/// counted) when the store opens again.
#[tokio::test]
async fn a_quarantined_row_is_restored_from_a_backup_or_discarded_and_stops_counting() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let backup = tempfile::tempdir().unwrap();
        let rules = rules();
        let bad = {
            let store =
                KvStore::open(engine(backend, dir.path()), Duration::ZERO, Arc::new(Metrics::default())).unwrap();
            let orders = Orders::new(store.clone());
            let a = orders.ingest(inbound("QR-1", 1, "500.00", "C-QR1"), &rules, Utc::now()).await.unwrap();
            orders.ingest(inbound("QR-2", 1, "500.00", "C-QR2"), &rules, Utc::now()).await.unwrap();
            store.close().await.unwrap();
            drop((orders, store));
            store::copy(&options(backend, dir.path()), &options(backend, backup.path()), Arc::new(Metrics::default()))
                .await
                .unwrap();
            // Then one effect row and the order row damaged in place.
            let store =
                KvStore::open(engine(backend, dir.path()), Duration::ZERO, Arc::new(Metrics::default())).unwrap();
            let e = store.pending_effects(10).await.unwrap().into_iter().find(|e| e.id.order_id == a.order_id);
            let mut b = Batch::default();
            let mut k = vec![tags::OUTBOX];
            k.extend_from_slice(&e.unwrap().due_key());
            b.put(k, b"\x01garbage".to_vec());
            let mut k = vec![tags::ORDERS];
            k.extend_from_slice(a.order_id.as_bytes());
            b.put(k, b"\x00\x00\x00\x05{not json".to_vec());
            store.engine().write(b).unwrap();
            store.close().await.unwrap();
            a.order_id
        };
        let store = open(backend, dir.path()).await;
        let far = Utc::now() + chrono::Duration::days(1);
        store.due_effects(far, 10).await.unwrap();
        assert!(matches!(store.order(bad).await, Err(StoreError::Quarantined(_))), "{}", backend.name());
        let good = store::open_backup(&backup.path().join(backend.name())).await.unwrap();
        resolve_quarantine(backend.name(), store.clone(), bad, good).await;
        store.close().await.unwrap();
        drop(store);
        let store = open(backend, dir.path()).await;
        assert_eq!(store.counts().quarantined, 0, "{}: still resolved after a restart", backend.name());
        assert_eq!(store.quarantined().await.unwrap().len(), 2, "{}", backend.name());
    }
}

/// A store written by layout 1 (before the application layer) opens: it is upgraded
/// in place, and every order, index, payment and job state reads as before.
#[tokio::test]
async fn a_layout_1_store_is_upgraded_in_place() {
    use orderbridge::store::codec::decode;
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let rules = crate::helpers::load_rules(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        let now = Utc::now();
        let (big, payment) = {
            let store =
                KvStore::open(engine(backend, dir.path()), Duration::ZERO, Arc::new(Metrics::default())).unwrap();
            let orders = Orders::new(store.clone());
            let big = orders.ingest(inbound("UP-1", 1, "5000000.00", "C-UP"), &rules, now).await.unwrap();
            let p = orderbridge::engine::payments::PaymentReport {
                source: "bank".into(),
                payment_id: "P-UP".into(),
                amount: orderbridge::domain::Money::parse("10.00", "CNY").unwrap(),
                invoice_number: Some("INV-UP".into()),
                order_id: None,
                reference: String::new(),
            };
            orders.record_payment(&p, &rules, now).await.unwrap();
            let page = vec![inbound("UP-2", 1, "500.00", "C-UP2")];
            orders.ingest_page(page, "demo-crm", serde_json::json!({"cursor": "c-9"}), &rules, now).await.unwrap();
            // Rewrite what layout 2 changed back into layout 1.
            let e = store.engine();
            let mut b = Batch::default();
            // Layout 1 wrote an order row as JSON (LZ4 or plain), without the seq.
            for (k, v) in e.range(b"o", b"p").map(Result::unwrap) {
                b.put(k, orderbridge::store::codec::json(&v[4..]).unwrap().into_owned());
            }
            for (k, _) in e.range(b"t", b"u").map(Result::unwrap) {
                b.put([k.as_slice(), &[0]].concat(), Vec::new());
                b.del(k);
            }
            let meta = |name: String| [b"m".as_slice(), name.as_bytes()].concat();
            for (k, v) in e.range(b"p", b"q").map(Result::unwrap) {
                let (src, id) = k[1..].split(|b| *b == 0).fold((None, None), |(a, _), part| match a {
                    None => (Some(String::from_utf8_lossy(part).into_owned()), None),
                    Some(a) => (Some(a), Some(String::from_utf8_lossy(part).into_owned())),
                });
                b.put(meta(format!("payment/{}/{}", src.unwrap(), id.unwrap())), v);
                b.del(k);
            }
            for (k, v) in e.range(b"w", b"x").map(Result::unwrap) {
                let key = String::from_utf8_lossy(&k[1..]).replace('\0', "/");
                b.put(meta(format!("unmatched/{key}")), v);
                b.del(k);
            }
            for (k, v) in e.range(b"j", b"k").map(Result::unwrap) {
                let name = String::from_utf8_lossy(&k[1..]).into_owned();
                b.put(meta(name), v);
                b.del(k);
            }
            b.put(b"mschema".to_vec(), b"1".to_vec());
            e.write(b).unwrap();
            e.sync().unwrap();
            assert!(decode::<serde_json::Value>(&e.get(b"mpoll/demo-crm").unwrap().unwrap()).is_ok());
            store.close().await.unwrap();
            (big, p)
        };
        let store = open(backend, dir.path()).await;
        let orders = Orders::new(store.clone());
        let rec = store.order(big.order_id).await.unwrap().expect("the order reads after the upgrade");
        assert_eq!(rec.state, big.state, "{}", backend.name());
        let due = rec.next_timer().unwrap();
        assert_eq!(
            store.due_timers(due, 10).await.unwrap(),
            vec![(big.order_id, truncated(due))],
            "{}",
            backend.name()
        );
        assert_eq!(orders.poll_state("demo-crm").await.unwrap(), Some(serde_json::json!({"cursor": "c-9"})));
        assert!(orders.record_payment(&payment, &rules, now).await.unwrap().duplicate, "{}", backend.name());
        assert_eq!(store.unmatched_payments().await.unwrap().len(), 1, "{}", backend.name());
        assert!(orders.verify_audit().await.unwrap().broken.is_none());
        // And it goes on working as a store of the current layout.
        orders.ingest(inbound("UP-3", 1, "500.00", "C-UP3"), &rules, now).await.unwrap();
    }
}

#[tokio::test]
async fn a_layout_2_store_is_marked_layout_3_and_its_event_rows_still_read() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        // A layout-2 store: the version marker and a step's events as whole records.
        let id = orderbridge::domain::OrderId::new_v7();
        let state: orderbridge::engine::OrderState =
            serde_json::from_value(serde_json::json!({"name": "received"})).unwrap();
        let event = EventRecord::chained(
            id,
            1,
            orderbridge::store::records::GENESIS,
            now,
            Actor::System,
            orderbridge::engine::OrderEvent::ScreeningStarted { rules_version: "1".into() },
            state,
        );
        {
            let e = engine(backend, dir.path());
            let mut b = Batch::default();
            b.put(b"mschema".to_vec(), b"2".to_vec());
            let mut key = vec![b'e'];
            key.extend_from_slice(&event.key());
            b.put(key, orderbridge::store::codec::encode(&vec![event.clone()]));
            e.write(b).unwrap();
            e.sync().unwrap();
        }
        let store = KvStore::open(engine(backend, dir.path()), Duration::ZERO, Arc::new(Metrics::default()))
            .unwrap_or_else(|e| panic!("{}: {e}", backend.name()));
        assert_eq!(store.engine().get(b"mschema").unwrap().as_deref(), Some(orderbridge::store::kv::SCHEMA));
        assert_eq!(store.events(id).await.unwrap(), vec![event], "{}", backend.name());
    }
}

/// `audit verify` on PostgreSQL: an event altered in its table (as someone with
/// write access to the database could) breaks the chain at that event.
#[tokio::test]
async fn audit_verify_finds_an_altered_event_in_postgres() {
    let store = PgStore::open(&crate::postgres::fresh_database().await).await.unwrap();
    let orders = Orders::new(store.clone());
    let a = orders.ingest(inbound("AV-1", 1, "500.00", "C-AV"), &rules(), Utc::now()).await.unwrap();
    assert!(orders.verify_audit().await.unwrap().broken.is_none());
    let mut first = store.events(a.order_id).await.unwrap().remove(0);
    first.actor = Actor::Person("mallory".into());
    sqlx::query("UPDATE events SET record = $1::json WHERE order_id = $2 AND seq = 1")
        .bind(serde_json::to_string(&first).unwrap())
        .bind(uuid::Uuid::from_bytes(*a.order_id.as_bytes()))
        .execute(store.pool())
        .await
        .unwrap();
    let (id, seq, why) = orders.verify_audit().await.unwrap().broken.expect("the alteration is found");
    assert_eq!((id, seq), (a.order_id, 1));
    assert!(why.contains("altered"), "{why}");
}

/// Quarantine on PostgreSQL: a record that no longer decodes (edited by hand, written
/// by another version) is set aside, and the other orders and effects go on.
#[tokio::test]
async fn an_unreadable_row_in_postgres_is_quarantined_and_the_others_go_on() {
    let pg = crate::postgres::fresh_database().await;
    let rules = rules();
    let (bad_order, good_order) = {
        let store = PgStore::open(&pg).await.unwrap();
        let orders = Orders::new(store.clone());
        let a = orders.ingest(inbound("Q-1", 1, "500.00", "C-Q1"), &rules, Utc::now()).await.unwrap();
        let b = orders.ingest(inbound("Q-2", 1, "500.00", "C-Q2"), &rules, Utc::now()).await.unwrap();
        let id = uuid::Uuid::from_bytes(*a.order_id.as_bytes());
        for sql in [
            "UPDATE outbox SET record = '\"garbage\"' WHERE order_id = $1",
            "UPDATE orders SET record = '{\"not\": \"an order\"}' WHERE id = $1",
        ] {
            assert_eq!(sqlx::query(sql).bind(id).execute(store.pool()).await.unwrap().rows_affected(), 1);
        }
        (a.order_id, b.order_id)
    };
    let store = PgStore::open(&pg).await.unwrap();
    let orders = Orders::new(store.clone());
    let far = Utc::now() + chrono::Duration::days(1);
    let due = store.due_effects(far, 10).await.unwrap();
    assert_eq!(due.iter().map(|e| e.id.order_id).collect::<Vec<_>>(), vec![good_order]);
    assert!(matches!(store.order(bad_order).await, Err(StoreError::Quarantined(_))));
    assert!(store.order(good_order).await.unwrap().is_some());
    assert_eq!(store.counts().quarantined, 2);
    let q = store.quarantined().await.unwrap();
    assert_eq!(q.len(), 2);
    assert!(q.iter().any(|r| r.what.starts_with("order ")), "{q:?}");
    assert_eq!(store.list(None, None, 10).await.unwrap().len(), 1);
    orders.run_timers(&rules, far).await.unwrap();
    orders.ingest(inbound("Q-3", 1, "500.00", "C-Q3"), &rules, Utc::now()).await.unwrap();
}

/// The same resolution on PostgreSQL: the order row put back from a backup (here an
/// embedded copy taken before the damage), the effect row discarded.
#[tokio::test]
async fn a_quarantined_row_in_postgres_is_restored_or_discarded_and_stops_counting() {
    let pg = crate::postgres::fresh_database().await;
    let rules = rules();
    let backup = tempfile::tempdir().unwrap();
    let bad = {
        let store = PgStore::open(&pg).await.unwrap();
        let orders = Orders::new(store.clone());
        let a = orders.ingest(inbound("QR-1", 1, "500.00", "C-QR1"), &rules, Utc::now()).await.unwrap();
        orders.ingest(inbound("QR-2", 1, "500.00", "C-QR2"), &rules, Utc::now()).await.unwrap();
        let copy = options(Backend::Fjall, backup.path());
        let from = store::Options { backend: Backend::Postgres, postgres: Some(pg.clone()), ..copy.clone() };
        store.close().await.unwrap();
        store::dump::copy(&from, &copy, Arc::new(Metrics::default()), &|_, _| unreachable!("nothing archived"))
            .await
            .unwrap();
        let store = PgStore::open(&pg).await.unwrap();
        let id = uuid::Uuid::from_bytes(*a.order_id.as_bytes());
        for sql in [
            "UPDATE outbox SET record = '\"garbage\"' WHERE order_id = $1",
            "UPDATE orders SET record = '{\"not\": \"an order\"}' WHERE id = $1",
        ] {
            assert_eq!(sqlx::query(sql).bind(id).execute(store.pool()).await.unwrap().rows_affected(), 1);
        }
        a.order_id
    };
    let store = PgStore::open(&pg).await.unwrap();
    store.due_effects(Utc::now() + chrono::Duration::days(1), 10).await.unwrap();
    assert!(matches!(store.order(bad).await, Err(StoreError::Quarantined(_))));
    let good = store::open_backup(&backup.path().join("fjall")).await.unwrap();
    resolve_quarantine("postgres", store.clone(), bad, good).await;
    let store = PgStore::open(&pg).await.unwrap();
    assert_eq!(store.counts().quarantined, 0, "still resolved after a restart");
}

/// Daemons starting together on an empty database all come up: the schema is
/// applied once, under the migration lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stores_opening_together_migrate_once() {
    let pg = crate::postgres::fresh_database().await;
    let opened = futures_join((0..4).map(|_| {
        let pg = pg.clone();
        tokio::spawn(async move { PgStore::open(&pg).await.map(|_| ()) })
    }))
    .await;
    for r in opened {
        r.unwrap().unwrap();
    }
    let store = PgStore::open(&pg).await.unwrap();
    let applied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations").fetch_one(store.pool()).await.unwrap();
    assert_eq!(applied, orderbridge::store::postgres::MIGRATOR.iter().count() as i64);
}

async fn futures_join<T>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::new();
    for h in handles.collect::<Vec<_>>() {
        out.push(h.await);
    }
    out
}

#[tokio::test]
async fn a_store_of_one_engine_is_never_opened_as_another_and_an_unset_backend_finds_it() {
    let at = |backend: Backend, dir: &Path| store::Options { path: dir.join("data"), ..options(backend, dir) };
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        drop(store::open(&at(backend, dir.path()), Arc::new(Metrics::default())).await.unwrap());
        assert_eq!(Backend::detect(&dir.path().join("data")), Some(backend), "{}", backend.name());
        for other in backends().into_iter().filter(|b| *b != backend) {
            let err = match store::open(&at(other, dir.path()), Arc::new(Metrics::default())).await {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{} opened a {} store", other.name(), backend.name()),
            };
            assert!(
                err.contains(&format!("holds a {} store, but store.backend is {}", backend.name(), other.name())),
                "{err}"
            );
            assert!(store::open_engine(&at(other, dir.path())).is_err());
        }
    }
    assert_eq!(Backend::detect(&tempfile::tempdir().unwrap().path().join("data")), None);
}

/// Several daemons on one database: an effect is claimed by one store at a time (the
/// others neither list nor claim it), a claim that lapsed is taken over, and the
/// outcome's commit ends it. A job lease has one holder, who renews it, until it lapses.
#[tokio::test]
async fn postgres_claims_and_job_leases_have_one_holder_until_they_lapse() {
    let pg = crate::postgres::fresh_database().await;
    let (a, b) = (PgStore::open(&pg).await.unwrap(), PgStore::open(&pg).await.unwrap());
    let (a, b): (Arc<dyn Store>, Arc<dyn Store>) = (a, b);
    let rules = rules();
    let orders_a = Orders::new(a.clone());
    let orders_b = Orders::new(b.clone());
    orders_a.ingest(inbound("CLAIM-1", 1, "500.00", "C-CLAIM"), &rules, Utc::now()).await.unwrap();
    let far = Utc::now() + chrono::Duration::days(1);
    let all = ConnectorFilter::default();
    let listed = a.due_effects_where(far, 10, &all).await.unwrap();
    assert_eq!(listed.len(), 1);

    let claimed = a.claim(&listed[0], far).await.unwrap().expect("a claims the effect");
    assert!(b.claim(&listed[0], far).await.unwrap().is_none(), "b cannot claim what a holds");
    assert!(b.due_effects_where(far, 10, &all).await.unwrap().is_empty(), "a claimed effect is not listed");
    assert!(a.renew_claim(&claimed).await.unwrap());
    assert!(!b.renew_claim(&claimed).await.unwrap(), "only the holder renews");

    // a dies: its claim lapses (set back rather than waited for), and b takes it over.
    let lapse = |sql: &'static str| {
        let pg = pg.clone();
        async move {
            let s = PgStore::open(&pg).await.unwrap();
            sqlx::query(sql).execute(s.pool()).await.unwrap();
        }
    };
    lapse("UPDATE outbox SET claimed_until = now() - interval '1 second'").await;
    assert_eq!(b.due_effects_where(far, 10, &all).await.unwrap().len(), 1, "a lapsed claim is listed again");
    let taken = b.claim(&listed[0], far).await.unwrap().expect("b takes the lapsed claim over");
    assert!(!a.renew_claim(&claimed).await.unwrap(), "a no longer holds it");
    orders_b
        .finish_effect(&taken, EffectOutcome::Done { receipt: "HTTP 200".into(), reference: None }, &rules, far)
        .await
        .unwrap();
    assert!(a.claim(&listed[0], far).await.unwrap().is_none(), "performed: nothing left to claim");
    assert!(a.due_effects_where(far, 10, &all).await.unwrap().is_empty());
    drop(orders_a);

    let ttl = Duration::from_secs(60);
    assert!(a.try_lease("scheduler", ttl).await.unwrap());
    assert!(!b.try_lease("scheduler", ttl).await.unwrap(), "one holder");
    assert!(a.try_lease("scheduler", ttl).await.unwrap(), "the holder renews");
    assert!(b.try_lease("poll:demo-crm", ttl).await.unwrap(), "leases are per job");
    lapse("UPDATE job_leases SET until = now() - interval '1 second' WHERE name = 'scheduler'").await;
    assert!(b.try_lease("scheduler", ttl).await.unwrap(), "a lapsed lease is taken over");
    assert!(!a.try_lease("scheduler", ttl).await.unwrap());
}

/// `store::dump::copy` carries what the CLI test does not reach: spent links, job
/// state, quarantined rows and a timer, from sled into PostgreSQL and on into fjall;
/// each target answers the same, its timer index derived from the order.
#[tokio::test]
async fn a_copy_through_postgres_keeps_links_jobs_timers_and_quarantine() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules();
    let sled = options(Backend::Sled, dir.path());
    let (big, used) = {
        let store =
            KvStore::open(engine(Backend::Sled, dir.path()), Duration::ZERO, Arc::new(Metrics::default())).unwrap();
        let orders = Orders::new(store.clone());
        let big = orders.ingest(inbound("CP-1", 1, "5000000.00", "C-CP"), &rules, Utc::now()).await.unwrap();
        let bad = orders.ingest(inbound("CP-2", 1, "500.00", "C-CP"), &rules, Utc::now()).await.unwrap();
        let used = UsedLink { at: Utc::now(), order_id: big.order_id, seq: 1 };
        let step = Step {
            spend: Some(("link-cp".to_owned(), used.clone())),
            jobs: vec![("poll:demo".into(), serde_json::json!({"watermark": 7}))],
            ..Step::default()
        };
        store.commit(vec![step]).await.unwrap();
        // One order archived, with an entry in the archive's log.
        let gone = orders.ingest(inbound("CP-3", 1, "500.00", "C-CP"), &rules, Utc::now()).await.unwrap();
        let rec = store.order(gone.order_id).await.unwrap().unwrap();
        let entry = archive_entry(&rec, "2026-01/seg-cp.jsonl");
        let archive = vec![
            store::ArchiveChange::Move { id: rec.id, loaded: Loaded::of(&rec), entry },
            store::ArchiveChange::Log(archive_log(1)),
        ];
        store.commit(vec![Step { archive, ..Step::default() }]).await.unwrap();
        // One order row damaged in place, then read: quarantined.
        let mut b = Batch::default();
        let mut k = vec![tags::ORDERS];
        k.extend_from_slice(bad.order_id.as_bytes());
        b.put(k, b"\x00\x00\x00\x05{not json".to_vec());
        store.engine().write(b).unwrap();
        assert!(store.order(bad.order_id).await.is_err());
        store.close().await.unwrap();
        (big, used)
    };
    let pg = store::Options {
        backend: Backend::Postgres,
        postgres: Some(crate::postgres::fresh_database().await),
        ..sled.clone()
    };
    let fjall = options(Backend::Fjall, dir.path());
    // The archived order's external id, as the archive reads it from its segment.
    let archived = |_: orderbridge::domain::OrderId, e: &store::ArchiveEntry| {
        assert_eq!(e.segment, "2026-01/seg-cp.jsonl");
        Ok(ExternalRef { connector: "demo-crm".parse().unwrap(), id: "CP-3".parse().unwrap() })
    };
    for (from, to) in [(&sled, &pg), (&pg, &fjall)] {
        let moved = store::dump::copy(from, to, Arc::new(Metrics::default()), &archived).await.unwrap();
        assert_eq!((moved.orders, moved.links, moved.jobs, moved.quarantined), (1, 1, 1, 1), "{moved}");
        assert_eq!((moved.archived, moved.archive_log), (1, 1), "{moved}");
        let store = Subject { options: to.clone(), _dir: tempfile::tempdir().unwrap() }.open().await;
        let name = to.backend.name();
        assert_eq!(store.used("link-cp").await.unwrap(), Some(used.clone()), "{name}");
        assert_eq!(store.job_state("poll:demo").await.unwrap(), Some(serde_json::json!({"watermark": 7})), "{name}");
        assert_eq!(store.counts().quarantined, 1, "{name}");
        assert!(store.quarantined().await.unwrap()[0].what.starts_with("order "), "{name}");
        let rec = store.order(big.order_id).await.unwrap().unwrap();
        let due = rec.next_timer().unwrap();
        assert_eq!(store.due_timers(due, 10).await.unwrap(), vec![(big.order_id, truncated(due))], "{name}");
        // The archived order is archived there too, its external id still taken.
        let ext = ExternalRef { connector: "demo-crm".parse().unwrap(), id: "CP-3".parse().unwrap() };
        let id = store.find_external(&ext).await.unwrap().unwrap_or_else(|| panic!("{name}: CP-3 is taken"));
        assert_eq!(store.archived(id).await.unwrap().unwrap().segment, "2026-01/seg-cp.jsonl", "{name}");
        assert_eq!(store.order(id).await.unwrap(), None, "{name}: not hot");
        let log = store.archive_log().await.unwrap();
        assert_eq!(log.iter().map(|l| (l.seq, l.action.as_str())).collect::<Vec<_>>(), [(1, "purge")], "{name}");
        assert_eq!(Orders::new(store).verify_audit().await.unwrap().broken, None, "{name}");
    }
}

/// An archive entry for `rec` in `segment` (the store keeps it as given).
fn archive_entry(rec: &orderbridge::store::OrderRecord, segment: &str) -> store::ArchiveEntry {
    store::ArchiveEntry {
        segment: segment.into(),
        sha256: "0".repeat(64),
        bytes: 100,
        offset: 10,
        len: 50,
        ended: rec.state.name().into(),
        ended_at: rec.updated_at,
        archived_at: Utc::now(),
        last_hash: rec.last_hash.clone(),
        hold: None,
    }
}

/// A log entry numbered `seq` (the store checks only that the number is free).
fn archive_log(seq: u64) -> store::ArchiveLogEntry {
    store::ArchiveLogEntry {
        seq,
        at: Utc::now(),
        by: "test".into(),
        action: "purge".into(),
        orders: Vec::new(),
        segment: "2026-01/seg-a.jsonl".into(),
        replaced_by: None,
        reason: String::new(),
        prev_hash: String::new(),
        hash: String::new(),
    }
}

#[tokio::test]
async fn an_archived_order_leaves_the_hot_store_in_one_commit_and_its_entry_changes_only_as_read() {
    use store::ArchiveChange;
    for subject in subjects().await {
        let name = subject.name();
        let orders = Orders::new(subject.open().await);
        let rules = rules();
        let a = orders.ingest(inbound("AR-1", 1, "500.00", "C-AR1"), &rules, Utc::now()).await.unwrap();
        let kept = orders.ingest(inbound("AR-2", 1, "500.00", "C-AR1"), &rules, Utc::now()).await.unwrap();
        let store = orders.store().clone();
        let rec = store.order(a.order_id).await.unwrap().unwrap();
        let state = rec.state.name();
        let entry = archive_entry(&rec, "2026-01/seg-a.jsonl");
        let mv = |entry: store::ArchiveEntry| ArchiveChange::Move { id: rec.id, loaded: Loaded::of(&rec), entry };

        // A move that fails with another change of its commit writes nothing.
        let log_twice = Step { archive: vec![ArchiveChange::Log(archive_log(1))], ..Step::default() };
        store.commit(vec![log_twice.clone()]).await.unwrap();
        let both = Step { archive: vec![mv(entry.clone())], ..Step::default() };
        let err = store.commit(vec![both, log_twice]).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{name}: {err}");
        assert!(store.order(rec.id).await.unwrap().is_some(), "{name}: still hot");
        assert_eq!(store.archived(rec.id).await.unwrap(), None, "{name}");

        // The move: gone from the hot store and its indexes, found in the index.
        store.commit(vec![Step { archive: vec![mv(entry.clone())], ..Step::default() }]).await.unwrap();
        assert_eq!(store.order(rec.id).await.unwrap(), None, "{name}");
        assert!(store.events(rec.id).await.unwrap().is_empty(), "{name}: its events went with it");
        assert_eq!(store.archived(rec.id).await.unwrap(), Some(entry.clone()), "{name}");
        assert!(store.list(Some(state), None, 100).await.unwrap().iter().all(|r| r.id != rec.id), "{name}");
        let listed: Vec<_> = store.list(None, None, 100).await.unwrap().iter().map(|r| r.id).collect();
        assert_eq!(listed, vec![kept.order_id], "{name}: the listings lost it");
        let history: Vec<_> = store.customer_orders("C-AR1", None).await.unwrap().into_iter().map(|(i, _)| i).collect();
        assert_eq!(history, vec![kept.order_id], "{name}: the customer index lost it");
        let source = ExternalRef { connector: "demo-crm".parse().unwrap(), id: "AR-1".parse().unwrap() };
        assert_eq!(store.find_external(&source).await.unwrap(), Some(rec.id), "{name}: its external id stays taken");

        // Moved once only; a redelivery is refused, never a second order.
        let again = store.commit(vec![Step { archive: vec![mv(entry.clone())], ..Step::default() }]).await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{name}");
        let redelivered = orders.ingest(inbound("AR-1", 2, "600.00", "C-AR1"), &rules, Utc::now()).await;
        assert!(
            matches!(redelivered, Err(OrderError::Conflict(ref m)) if m.contains("archived")),
            "{name}: {redelivered:?}"
        );

        // An entry changes only from what was read.
        let mut held = entry.clone();
        held.hold = Some(store::LegalHold { reason: "诉讼保全".into(), by: "test".into(), at: Utc::now() });
        let stale = ArchiveChange::Replace { id: rec.id, from: held.clone(), to: None };
        let err = store.commit(vec![Step { archive: vec![stale], ..Step::default() }]).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{name}: {err}");
        let hold = ArchiveChange::Replace { id: rec.id, from: entry.clone(), to: Some(held.clone()) };
        store.commit(vec![Step { archive: vec![hold], ..Step::default() }]).await.unwrap();
        assert_eq!(store.archive_entries(None, 10).await.unwrap(), vec![(rec.id, held.clone())], "{name}");
        let seqs: Vec<u64> = store.archive_log().await.unwrap().iter().map(|l| l.seq).collect();
        assert_eq!(seqs, vec![1], "{name}: the refused commit logged nothing");
        drop(store);

        // Durable: after a restart it is still archived, and purged it is gone.
        let store = subject.reopen(orders).await;
        assert_eq!(store.order(rec.id).await.unwrap(), None, "{name}");
        assert_eq!(store.archived(rec.id).await.unwrap(), Some(held.clone()), "{name}");
        assert_eq!(store.archive_log().await.unwrap().len(), 1, "{name}");
        let purge = ArchiveChange::Replace { id: rec.id, from: held, to: None };
        store
            .commit(vec![Step { archive: vec![purge, ArchiveChange::Log(archive_log(2))], ..Step::default() }])
            .await
            .unwrap();
        assert_eq!(store.archived(rec.id).await.unwrap(), None, "{name}");
        assert!(store.archive_entries(None, 10).await.unwrap().is_empty(), "{name}");
        let seqs: Vec<u64> = store.archive_log().await.unwrap().iter().map(|l| l.seq).collect();
        assert_eq!(seqs, vec![1, 2], "{name}");
        assert!(store.order(kept.order_id).await.unwrap().is_some(), "{name}: the other order is untouched");
    }
}
