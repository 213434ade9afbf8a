//! The embedded store on sled 0.34.
//!
//! Everything lives in one sled tree, `orderbridge`, split into key spaces by a
//! one-byte tag: `o` orders (id → row), `e` events (id ‖ first seq → the events of one
//! step, in order), `q` outbox (due ms ‖ effect key → row), `d` dead letters
//! (effect key → row), `i` external ids (connector ‖ 0 ‖ external id → order id), `s`
//! state index (state ‖ 0 ‖ order id → ∅), `g` digest items (person ‖ 0 ‖ effect
//! key → item), `u` used links (link id → when and by which event), `c` customer
//! history (customer id ‖ 0 ‖ order id → amount and product, for velocity rules),
//! `t` timers (due ms ‖ order id ‖ kind → ∅: each order's earliest due reminder or
//! escalation),
//! `m` metadata.
//!
//! One lifecycle step is one atomic `Batch` on that tree (sled applies a batch all or
//! nothing, also across a crash). sled's cost is per key written (about 20 µs here,
//! see `benches/store.rs`), so a step writes as few keys as it can: one row for all
//! its events, one for the order, one per effect, and the index keys. Every
//! decision, row and id is computed before it, and steps on one order are serialised
//! by striped locks, so the read-decide-write sequence cannot interleave.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;

use super::commit::Committer;
use super::records::{
    DigestItem, EffectId, EffectRecord, EventRecord, GENESIS, OrderRecord, digest_key, event_key, state_key, timer_key,
};
use super::{AuditReport, EffectOutcome, Inbound, Ingested, Store, StoreError};
use crate::connectors::BoxFuture;
use crate::domain::{ExternalRef, OrderId};
use crate::engine::table::Prior;
use crate::engine::{Actor, Case, Decision, History, OrderEvent, Rules, decide, decide_new};
use crate::metrics::Metrics;

const STRIPES: usize = 512;

/// Layout version written under `m/schema`; a store of another version is refused.
const SCHEMA: &[u8] = b"1";

/// One key space of the store's tree: keys are `tag ‖ key`.
#[derive(Clone)]
struct Space {
    tree: sled::Tree,
    tag: u8,
}

type Row = sled::Result<(Vec<u8>, sled::IVec)>;

impl Space {
    fn key(&self, k: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(k.len() + 1);
        v.push(self.tag);
        v.extend_from_slice(k);
        v
    }
    fn strip(r: sled::Result<(sled::IVec, sled::IVec)>) -> Row {
        r.map(|(k, v)| (k[1..].to_vec(), v))
    }
    fn get(&self, k: &[u8]) -> sled::Result<Option<sled::IVec>> {
        self.tree.get(self.key(k))
    }
    fn iter(&self) -> impl Iterator<Item = Row> + use<> {
        self.tree.scan_prefix([self.tag]).map(Self::strip)
    }
    fn scan_prefix(&self, p: &[u8]) -> impl Iterator<Item = Row> + use<> {
        self.tree.scan_prefix(self.key(p)).map(Self::strip)
    }
    /// Keys from `start` (inclusive) to `end` (exclusive).
    fn range(&self, start: &[u8], end: &[u8]) -> impl Iterator<Item = Row> + use<> {
        self.tree.range(self.key(start)..self.key(end)).map(Self::strip)
    }
    /// Keys from `start` (inclusive) to the end of the space.
    fn range_from(&self, start: &[u8]) -> impl Iterator<Item = Row> + use<> {
        self.tree.range(self.key(start)..vec![self.tag + 1]).map(Self::strip)
    }
    /// Keys from the start of the space to `end` (exclusive).
    fn range_to(&self, end: &[u8]) -> impl Iterator<Item = Row> + use<> {
        self.tree.range(vec![self.tag]..self.key(end)).map(Self::strip)
    }
    fn count(&self) -> i64 {
        self.tree.scan_prefix([self.tag]).keys().count() as i64
    }
}

pub struct SledStore {
    db: sled::Db,
    dir: PathBuf,
    tree: sled::Tree,
    orders: Space,
    events: Space,
    /// Pending effects, keyed by due time so the dispatcher reads them in order.
    outbox: Space,
    dead: Space,
    ext_index: Space,
    state_index: Space,
    digests: Space,
    used_links: Space,
    customers: Space,
    timers: Space,
    meta: Space,
    /// Serialises digest runs (they number their effects from `m/digest_seq`).
    digest_lock: Mutex<()>,
    /// One payment report at a time (deduplication by payment id).
    payment_lock: Mutex<()>,
    committer: Committer,
    /// Rows in `outbox` and `dead_letter`, kept current so metrics need no scan.
    pending: AtomicI64,
    dead_count: AtomicI64,
    ext_locks: Vec<Mutex<()>>,
    order_locks: Vec<Mutex<()>>,
}

fn io(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Corruption { .. } => StoreError::Corrupt(e.to_string()),
        other => StoreError::Io(other.to_string()),
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn stripe<T: Hash + ?Sized>(v: &T) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    (h.finish() as usize) % STRIPES
}

/// Rows one step writes, computed before the transaction.
#[derive(Default)]
struct StepRows {
    order: Option<(OrderId, Vec<u8>)>,
    events: Option<([u8; 20], Vec<u8>)>,
    outbox_put: Vec<([u8; 30], Vec<u8>)>,
    outbox_del: Vec<[u8; 30]>,
    dead_put: Vec<([u8; 22], Vec<u8>)>,
    dead_del: Vec<[u8; 22]>,
    ext: Option<(Vec<u8>, OrderId)>,
    state_del: Option<Vec<u8>>,
    state_put: Option<Vec<u8>>,
    digest_put: Vec<(Vec<u8>, Vec<u8>)>,
    digest_del: Vec<Vec<u8>>,
    link_put: Option<(Vec<u8>, Vec<u8>)>,
    meta_put: Option<(Vec<u8>, Vec<u8>)>,
    customer_put: Option<(Vec<u8>, Vec<u8>)>,
    timer_del: Vec<[u8; 25]>,
    timer_put: Vec<[u8; 25]>,
    /// Further meta keys: the invoice-number index, payments seen, unmatched payments.
    meta_more: Vec<(Vec<u8>, Vec<u8>)>,
    meta_del: Vec<Vec<u8>>,
}

/// What intake does with one record.
enum Planned {
    Write(Box<StepRows>, Ingested),
    Duplicate(Ingested),
}

fn invoice_key(number: &str) -> Vec<u8> {
    format!("invoice/{number}").into_bytes()
}

fn payment_key(source: &str, id: &str) -> Vec<u8> {
    format!("payment/{source}/{id}").into_bytes()
}

fn unmatched_key(source: &str, id: &str) -> Vec<u8> {
    format!("unmatched/{source}/{id}").into_bytes()
}

fn customer_key(customer: &str, id: OrderId) -> Vec<u8> {
    let mut k = Vec::with_capacity(customer.len() + 17);
    k.extend_from_slice(customer.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

fn prior_of(order: &crate::domain::Order) -> Prior {
    Prior { amount: order.amount.clone(), product_code: order.product.code.as_str().to_owned() }
}

use super::codec::{decode, encode as json};

impl SledStore {
    /// Opens (or creates) the store at `dir` with a page cache of `cache_bytes`.
    ///
    /// # Errors
    /// `Locked` when another process holds it, `Corrupt` when sled finds damage (we
    /// never delete data to recover), `Io` otherwise.
    pub fn open(
        dir: &Path,
        cache_bytes: u64,
        commit_delay: std::time::Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<SledStore>, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(format!("create {}: {e}", dir.display())))?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .flush_every_ms(None)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(ref ioe)
                    if ioe.kind() == std::io::ErrorKind::WouldBlock || ioe.to_string().contains("lock") =>
                {
                    StoreError::Locked(dir.display().to_string())
                }
                other => io(other),
            })?;
        let tree = db.open_tree("orderbridge").map_err(io)?;
        match tree.get(b"m/schema").map_err(io)? {
            None => {
                tree.insert(b"m/schema", SCHEMA).map_err(io)?;
            }
            Some(v) if v.as_ref() == SCHEMA => {}
            Some(v) => {
                return Err(StoreError::Corrupt(format!(
                    "store layout version {} is not the supported {}",
                    String::from_utf8_lossy(&v),
                    String::from_utf8_lossy(SCHEMA)
                )));
            }
        }
        let space = |tag: u8| Space { tree: tree.clone(), tag };
        let store = SledStore {
            orders: space(b'o'),
            events: space(b'e'),
            outbox: space(b'q'),
            dead: space(b'd'),
            ext_index: space(b'i'),
            state_index: space(b's'),
            digests: space(b'g'),
            used_links: space(b'u'),
            customers: space(b'c'),
            timers: space(b't'),
            meta: space(b'm'),
            digest_lock: Mutex::new(()),
            payment_lock: Mutex::new(()),
            tree,
            committer: Committer::start(db.clone(), dir.to_owned(), commit_delay, metrics),
            pending: AtomicI64::new(0),
            dead_count: AtomicI64::new(0),
            ext_locks: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            order_locks: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            dir: dir.to_owned(),
            db,
        };
        store.pending.store(store.outbox.count(), Ordering::Relaxed);
        store.dead_count.store(store.dead.count(), Ordering::Relaxed);
        super::commit::make_durable(&store.db, &store.dir).map_err(StoreError::Io)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(Arc::new(store))
    }

    fn read_order(&self, id: OrderId) -> Result<Option<OrderRecord>, StoreError> {
        match self.orders.get(id.as_bytes()).map_err(io)? {
            None => Ok(None),
            Some(v) => decode(&v).map(Some).map_err(|e| corrupt(&format!("order {id}"), e)),
        }
    }

    /// The customer's other orders placed in the last `days` days (order ids are
    /// UUIDv7, so their first 48 bits are the creation time in ms).
    fn history(
        &self,
        order: &crate::domain::Order,
        this: Option<OrderId>,
        now: DateTime<Utc>,
        days: u32,
    ) -> Result<History, StoreError> {
        let since = (now - chrono::Duration::days(i64::from(days))).timestamp_millis();
        let mut prefix = order.customer.id.as_str().as_bytes().to_vec();
        prefix.push(0);
        // Keys sort by order id, i.e. by creation time: start at the window's beginning.
        let mut start = prefix.clone();
        start.extend_from_slice(&u64::try_from(since.max(0)).unwrap_or(0).to_be_bytes()[2..]);
        let mut end = prefix.clone();
        *end.last_mut().expect("prefix ends with 0") = 1;
        let mut priors = Vec::new();
        for row in self.customers.range(&start, &end) {
            let (k, v) = row.map_err(io)?;
            let Some(id) = k.get(prefix.len()..).and_then(|b| <[u8; 16]>::try_from(b).ok()).map(OrderId::from_bytes)
            else {
                continue;
            };
            if Some(id) == this || id.created_ms() < since {
                continue;
            }
            priors.push(decode::<Prior>(&v).map_err(|e| corrupt("customer history", e))?);
        }
        Ok(History::of(order, &priors))
    }

    fn read_effect(tree: &Space, key: &[u8]) -> Result<Option<EffectRecord>, StoreError> {
        match tree.get(key).map_err(io)? {
            None => Ok(None),
            Some(v) => decode(&v).map(Some).map_err(|e| corrupt("effect", e)),
        }
    }

    /// Turns a decision into rows: chained events, effects, the updated order.
    fn rows_for(
        &self,
        mut rec: OrderRecord,
        decision: Decision,
        now: DateTime<Utc>,
        rows: &mut StepRows,
    ) -> OrderRecord {
        let is_new = rec.last_seq == 0;
        let old_state = rec.state.clone();
        let first_seq = rec.last_seq + 1;
        let mut events = Vec::with_capacity(decision.audit.len());
        for entry in decision.audit {
            let seq = rec.last_seq + 1;
            let ev = EventRecord::chained(rec.id, seq, &rec.last_hash, entry.at, entry.actor, entry.event, entry.state);
            rec.last_seq = seq;
            rec.last_hash = ev.hash.clone();
            events.push(ev);
        }
        let effect_seq = rec.last_seq;
        if !events.is_empty() {
            rows.events = Some((event_key(rec.id, first_seq), json(&events)));
        }
        rec.state = decision.next;
        rec.approval = decision.approval;
        // A new invoice number is indexed, so payments quoting it find the order.
        let new_invoice = decision.fulfilment.as_ref().and_then(|f| f.invoice.as_ref()).map(|i| i.number.clone());
        let old_invoice = rec.fulfilment.as_ref().and_then(|f| f.invoice.as_ref()).map(|i| i.number.clone());
        if let Some(n) = new_invoice
            && old_invoice.as_ref() != Some(&n)
        {
            rows.meta_more.push((invoice_key(&n), rec.id.as_bytes().to_vec()));
        }
        rec.fulfilment = decision.fulfilment;
        if rec.timers != decision.timers {
            // The index holds only each order's earliest due time (one key per order):
            // firing it recomputes what is due next.
            let earliest =
                |ts: &[crate::engine::approval::Timer]| ts.iter().min_by_key(|t| t.due).map(|t| timer_key(rec.id, t));
            let (old, new) = (earliest(&rec.timers), earliest(&decision.timers));
            if old != new {
                rows.timer_del.extend(old);
                rows.timer_put.extend(new);
            }
            rec.timers = decision.timers;
        }
        rec.updated_at = now;
        for (i, spec) in decision.effects.into_iter().enumerate() {
            let id = EffectId { order_id: rec.id, seq: effect_seq, index: u16::try_from(i).unwrap_or(u16::MAX) };
            if let Some(mail) = &spec.mail
                && let Some(every) = mail.digest_every_secs
            {
                // Staff digests gather by person; a customer's by address and template
                // (all their payment reminders in one mail).
                let key = match &mail.to.person {
                    Some(person) => person.clone(),
                    None => format!("customer:{}:{}", mail.to.email.to_ascii_lowercase(), mail.template),
                };
                let mut extra = mail.extra.clone();
                if let (serde_json::Value::Object(x), Some(inv)) =
                    (&mut extra, rec.fulfilment.as_ref().and_then(|f| f.invoice.as_ref()))
                {
                    let owed =
                        rec.fulfilment.as_ref().and_then(|f| f.outstanding()).unwrap_or_else(|| inv.total.clone());
                    x.insert(
                        "invoice".into(),
                        serde_json::json!({"number": inv.number, "amount": owed, "due_date": inv.due}),
                    );
                }
                let item = DigestItem {
                    to: mail.to.clone(),
                    every_secs: every,
                    order_id: rec.id,
                    template: mail.template.clone(),
                    customer: rec.order.customer.name.to_string(),
                    amount: rec.order.amount.clone(),
                    at: now,
                    extra,
                };
                rows.digest_put.push((digest_key(&key, &id), json(&item)));
                continue;
            }
            let mut body = serde_json::json!({
                "effect_id": id.to_string(),
                "order_id": rec.id.to_string(),
                "source": {"connector": rec.source.connector.as_str(), "external_id": rec.source.id.as_str()},
                "external_id": rec.source.id.as_str(),
                "operation": spec.operation,
                "cause": spec.cause,
                "state": rec.state.name(),
                "order": rec.order,
                // Ids other systems gave this order so far (`<connector>.<operation>`).
                "references": rec.references,
            });
            if let Some(ev) = &spec.trigger {
                body["event"] = serde_json::to_value(ev).expect("event serialises");
            }
            body["created_at"] = serde_json::to_value(now).expect("time serialises");
            if let Some(mail) = &spec.mail {
                body["mail"] = serde_json::to_value(mail).expect("mail spec serialises");
            }
            let e = EffectRecord {
                idempotency_key: format!("orderbridge:{id}"),
                id,
                connector: spec.connector,
                operation: spec.operation,
                cause: spec.cause,
                body,
                attempts: 0,
                next_at: now,
                created_at: now,
                last_error: None,
            };
            rows.outbox_put.push((e.due_key(), json(&e)));
        }
        if is_new || old_state.name() != rec.state.name() {
            if !is_new {
                rows.state_del = Some(state_key(&old_state, rec.id));
            }
            rows.state_put = Some(state_key(&rec.state, rec.id));
        }
        rows.order = Some((rec.id, json(&rec)));
        rec
    }

    /// Writes one step's rows in one atomic batch, then waits until it is durable.
    async fn commit(&self, rows: StepRows) -> Result<(), StoreError> {
        self.commit_all(std::slice::from_ref(&rows)).await
    }

    /// Writes several steps' rows in one atomic batch (a polled page and its
    /// watermark), then waits until it is durable.
    async fn commit_all(&self, all: &[StepRows]) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for rows in all {
            self.add_to_batch(&mut b, rows);
        }
        self.tree.apply_batch(b).map_err(io)?;
        let delta = |put: usize, del: usize| put as i64 - del as i64;
        for rows in all {
            self.pending.fetch_add(delta(rows.outbox_put.len(), rows.outbox_del.len()), Ordering::Relaxed);
            self.dead_count.fetch_add(delta(rows.dead_put.len(), rows.dead_del.len()), Ordering::Relaxed);
        }
        self.committer.durable().await
    }

    fn add_to_batch(&self, b: &mut sled::Batch, rows: &StepRows) {
        if let Some((id, row)) = &rows.order {
            b.insert(self.orders.key(id.as_bytes()), &row[..]);
        }
        if let Some((k, v)) = &rows.events {
            b.insert(self.events.key(k), &v[..]);
        }
        // Deletes first, in case a put reuses a key.
        for k in &rows.outbox_del {
            b.remove(self.outbox.key(k));
        }
        for (k, v) in &rows.outbox_put {
            b.insert(self.outbox.key(k), &v[..]);
        }
        for k in &rows.dead_del {
            b.remove(self.dead.key(k));
        }
        for (k, v) in &rows.dead_put {
            b.insert(self.dead.key(k), &v[..]);
        }
        if let Some((k, id)) = &rows.ext {
            b.insert(self.ext_index.key(k), &id.as_bytes()[..]);
        }
        if let Some(k) = &rows.state_del {
            b.remove(self.state_index.key(k));
        }
        if let Some(k) = &rows.state_put {
            b.insert(self.state_index.key(k), &[][..]);
        }
        for k in &rows.digest_del {
            b.remove(self.digests.key(k));
        }
        for (k, v) in &rows.digest_put {
            b.insert(self.digests.key(k), &v[..]);
        }
        if let Some((k, v)) = &rows.link_put {
            b.insert(self.used_links.key(k), &v[..]);
        }
        if let Some((k, v)) = &rows.meta_put {
            b.insert(self.meta.key(k), &v[..]);
        }
        for (k, v) in &rows.meta_more {
            b.insert(self.meta.key(k), &v[..]);
        }
        for k in &rows.meta_del {
            b.remove(self.meta.key(k));
        }
        if let Some((k, v)) = &rows.customer_put {
            b.insert(self.customers.key(k), &v[..]);
        }
        for k in &rows.timer_del {
            b.remove(self.timers.key(k));
        }
        for k in &rows.timer_put {
            b.insert(self.timers.key(k), &[][..]);
        }
    }

    async fn ingest_inner(&self, inbound: Inbound, rules: &Rules, now: DateTime<Utc>) -> Result<Ingested, StoreError> {
        let ext_key = inbound.source.key();
        let _ext_guard = self.ext_locks[stripe(&ext_key)].lock().await;
        let existing = self.existing(&ext_key)?;
        let _order_guard = match existing {
            Some(id) => Some(self.order_locks[stripe(id.as_bytes())].lock().await),
            None => None,
        };
        match self.plan_ingest(inbound, existing, rules, now)? {
            Planned::Write(rows, ingested) => {
                self.commit(*rows).await?;
                Ok(ingested)
            }
            Planned::Duplicate(ingested) => {
                // The first delivery may still be waiting for its flush: ack only once durable.
                self.committer.durable().await?;
                Ok(ingested)
            }
        }
    }

    /// The order a source record maps to, if it exists (caller holds the ext lock).
    fn existing(&self, ext_key: &[u8]) -> Result<Option<OrderId>, StoreError> {
        match self.ext_index.get(ext_key).map_err(io)? {
            None => Ok(None),
            Some(b) => {
                Ok(Some(OrderId::from_bytes(b.as_ref().try_into().map_err(|_| corrupt("ext_index", "bad order id"))?)))
            }
        }
    }

    /// Decides what one inbound record does (new order, amendment, duplicate) and the
    /// rows that record it. The caller holds its ext lock and, for an existing order,
    /// the order lock.
    fn plan_ingest(
        &self,
        inbound: Inbound,
        existing: Option<OrderId>,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<Planned, StoreError> {
        let ext_key = inbound.source.key();
        let actor = Actor::Connector(inbound.source.connector.to_string());
        let Some(id) = existing else {
            let id = OrderId::at(now);
            let received = OrderEvent::Received {
                connector: inbound.source.connector.to_string(),
                external_id: inbound.source.id.to_string(),
                version: inbound.version,
            };
            let history = self.history(&inbound.order, None, now, rules.history_days)?;
            let decision = decide_new(&inbound.order, &history, actor, received, rules, now)?;
            let customer = (customer_key(inbound.order.customer.id.as_str(), id), json(&prior_of(&inbound.order)));
            let rec = OrderRecord {
                id,
                source: inbound.source,
                source_version: inbound.version,
                mapping_version: inbound.mapping_version,
                order: inbound.order,
                state: crate::engine::OrderState::Received,
                created_at: now,
                updated_at: now,
                last_seq: 0,
                last_hash: GENESIS.to_owned(),
                references: Default::default(),
                approval: None,
                fulfilment: None,
                timers: Vec::new(),
            };
            let mut rows = StepRows { ext: Some((ext_key, id)), customer_put: Some(customer), ..Default::default() };
            let rec = self.rows_for(rec, decision, now, &mut rows);
            let effects = rows.outbox_put.len();
            let ingested = Ingested { order_id: id, state: rec.state, duplicate: false, effects };
            return Ok(Planned::Write(Box::new(rows), ingested));
        };
        let rec = self.read_order(id)?.ok_or_else(|| corrupt("ext_index", format!("points at missing order {id}")))?;
        if inbound.version <= rec.source_version {
            return Ok(Planned::Duplicate(Ingested { order_id: id, state: rec.state, duplicate: true, effects: 0 }));
        }
        if !rec.state.accepts_amendments() {
            return Err(StoreError::Conflict(format!(
                "order {id} is {} and can no longer be changed by the source system (version {} after {})",
                rec.state.name(),
                inbound.version,
                rec.source_version
            )));
        }
        let changed = changed_fields(&rec.order, &inbound.order);
        let material = changed.iter().any(|f| crate::engine::approval::is_material(f));
        let event = OrderEvent::Amended { version: inbound.version, changed, material };
        let history = self.history(&inbound.order, Some(id), now, rules.history_days)?;
        let case = Case {
            state: &rec.state,
            order: &inbound.order,
            history: &history,
            approval: rec.approval.as_ref(),
            fulfilment: rec.fulfilment.as_ref(),
        };
        let decision = decide(&case, actor, event, rules, now)?;
        let mut rec = rec;
        rec.order = inbound.order;
        rec.source_version = inbound.version;
        rec.mapping_version = inbound.mapping_version;
        let mut rows = StepRows {
            customer_put: Some((customer_key(rec.order.customer.id.as_str(), id), json(&prior_of(&rec.order)))),
            ..Default::default()
        };
        let rec = self.rows_for(rec, decision, now, &mut rows);
        let effects = rows.outbox_put.len();
        Ok(Planned::Write(Box::new(rows), Ingested { order_id: id, state: rec.state, duplicate: false, effects }))
    }

    /// A polled page: every record and the connector's new poll state in one atomic
    /// batch, so a crash never skips or repeats a page. A record that cannot be
    /// taken (e.g. an amendment after approval) is reported, not fatal to the page.
    async fn ingest_page_inner(
        &self,
        page: Vec<Inbound>,
        poll_key: &str,
        poll_state: serde_json::Value,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<Ingested, StoreError>>, StoreError> {
        // Several versions of one record in a page: the newest stands for all.
        let mut latest: std::collections::BTreeMap<Vec<u8>, Inbound> = std::collections::BTreeMap::new();
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
        let mut plans = Vec::with_capacity(latest.len());
        for (k, i) in latest {
            let existing = self.existing(&k)?;
            plans.push((i, existing));
        }
        let mut order_stripes: Vec<usize> =
            plans.iter().filter_map(|(_, e)| e.map(|id| stripe(id.as_bytes()))).collect();
        order_stripes.sort_unstable();
        order_stripes.dedup();
        let mut _order_guards = Vec::with_capacity(order_stripes.len());
        for s in order_stripes {
            _order_guards.push(self.order_locks[s].lock().await);
        }
        let mut rows = Vec::with_capacity(plans.len() + 1);
        let mut out = Vec::with_capacity(plans.len());
        for (inbound, existing) in plans {
            match self.plan_ingest(inbound, existing, rules, now) {
                Ok(Planned::Write(r, ingested)) => {
                    rows.push(*r);
                    out.push(Ok(ingested));
                }
                Ok(Planned::Duplicate(ingested)) => out.push(Ok(ingested)),
                Err(e @ (StoreError::Conflict(_) | StoreError::Illegal(_) | StoreError::Refused(_))) => {
                    out.push(Err(e))
                }
                Err(e) => return Err(e),
            }
        }
        rows.push(StepRows {
            meta_put: Some((format!("poll/{poll_key}").into_bytes(), json(&poll_state))),
            ..Default::default()
        });
        self.commit_all(&rows).await?;
        Ok(out)
    }

    async fn apply_inner(
        &self,
        id: OrderId,
        actor: Actor,
        event: OrderEvent,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<OrderRecord, StoreError> {
        let _g = self.order_locks[stripe(id.as_bytes())].lock().await;
        let rec = self.read_order(id)?.ok_or_else(|| StoreError::NotFound(format!("order {id}")))?;
        let history = self.history(&rec.order, Some(id), now, rules.history_days)?;
        let case = rec.case(&history);
        let decision = decide(&case, actor, event, rules, now)?;
        let mut rows = StepRows::default();
        let rec = self.rows_for(rec, decision, now, &mut rows);
        self.commit(rows).await?;
        Ok(rec)
    }

    /// The engine's decision on a payment for one order (matched, settled, what is
    /// left), with the rows that record it.
    fn payment_step(
        &self,
        rec: OrderRecord,
        actor: Actor,
        p: &super::PaymentReport,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<(super::PaymentOutcome, StepRows), crate::engine::DecideError> {
        let history = History::default();
        let case = rec.case(&history);
        let ev = OrderEvent::PaymentReceived {
            amount: p.amount.clone(),
            settled: false,
            payment_id: p.payment_id.clone(),
            outstanding: None,
            excess: None,
        };
        let decision = decide(&case, actor, ev, rules, now)?;
        let (settled, outstanding) = decision
            .audit
            .iter()
            .find_map(|a| match &a.event {
                OrderEvent::PaymentReceived { settled, outstanding, .. } => Some((*settled, outstanding.clone())),
                _ => None,
            })
            .unwrap_or((false, None));
        let mut rows = StepRows::default();
        let rec = self.rows_for(rec, decision, now, &mut rows);
        let outcome = super::PaymentOutcome {
            matched: true,
            order_id: Some(rec.id),
            state: Some(rec.state.name().to_owned()),
            settled,
            outstanding,
            reason: None,
            duplicate: false,
        };
        Ok((outcome, rows))
    }

    /// Applies a reported payment to the order it names (by order id or invoice
    /// number), or queues it as unmatched with the reason; once per (source, id).
    async fn record_payment_inner(
        &self,
        p: &super::PaymentReport,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<super::PaymentOutcome, StoreError> {
        use super::PaymentOutcome;
        let _g = self.payment_lock.lock().await;
        let seen = payment_key(&p.source, &p.payment_id);
        if let Some(v) = self.meta.get(&seen).map_err(io)? {
            let mut previous: PaymentOutcome = decode(&v).map_err(|e| corrupt("payment", e))?;
            previous.duplicate = true;
            return Ok(previous);
        }
        let by_invoice = match &p.invoice_number {
            Some(n) => self
                .meta
                .get(&invoice_key(n))
                .map_err(io)?
                .and_then(|v| <[u8; 16]>::try_from(v.as_ref()).ok())
                .map(OrderId::from_bytes),
            None => None,
        };
        let target = p.order_id.or(by_invoice);
        let refused = |reason: String| {
            let outcome = PaymentOutcome {
                matched: false,
                order_id: target,
                state: None,
                settled: false,
                outstanding: None,
                reason: Some(reason),
                duplicate: false,
            };
            let mut rows = StepRows::default();
            rows.meta_more.push((seen.clone(), json(&outcome)));
            rows.meta_more.push((
                unmatched_key(&p.source, &p.payment_id),
                json(&serde_json::json!({"payment": p, "reason": outcome.reason, "at": now})),
            ));
            (outcome, rows)
        };
        let (outcome, rows) = match target {
            None => refused(match &p.invoice_number {
                Some(n) => format!("no order has invoice `{n}`"),
                None => "the payment names neither an order nor an invoice".into(),
            }),
            Some(id) => {
                let _o = self.order_locks[stripe(id.as_bytes())].lock().await;
                match self.read_order(id)? {
                    None => refused(format!("order {id} does not exist")),
                    Some(rec) => {
                        let state = rec.state.name();
                        match self.payment_step(rec, Actor::Connector(p.source.clone()), p, rules, now) {
                            Err(e) => refused(format!("order {id} ({state}): {e}")),
                            Ok((outcome, mut rows)) => {
                                rows.meta_more.push((seen.clone(), json(&outcome)));
                                (outcome, rows)
                            }
                        }
                    }
                }
            }
        };
        self.commit(rows).await?;
        Ok(outcome)
    }

    /// Payments waiting for an operator, oldest key first.
    fn unmatched_inner(&self) -> Result<Vec<serde_json::Value>, StoreError> {
        let mut out = Vec::new();
        for row in self.meta.scan_prefix(b"unmatched/") {
            let (_, v) = row.map_err(io)?;
            out.push(decode(&v).map_err(|e| corrupt("unmatched payment", e))?);
        }
        Ok(out)
    }

    /// An operator applies an unmatched payment to an order.
    async fn assign_payment_inner(
        &self,
        source: &str,
        payment_id: &str,
        order: OrderId,
        operator: &str,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<super::PaymentOutcome, StoreError> {
        let _g = self.payment_lock.lock().await;
        let key = unmatched_key(source, payment_id);
        let v = self
            .meta
            .get(&key)
            .map_err(io)?
            .ok_or_else(|| StoreError::NotFound(format!("unmatched payment {source}/{payment_id}")))?;
        let entry: serde_json::Value = decode(&v).map_err(|e| corrupt("unmatched payment", e))?;
        let report: super::PaymentReport =
            serde_json::from_value(entry["payment"].clone()).map_err(|e| corrupt("unmatched payment", e))?;
        let _o = self.order_locks[stripe(order.as_bytes())].lock().await;
        let rec = self.read_order(order)?.ok_or_else(|| StoreError::NotFound(format!("order {order}")))?;
        let (outcome, mut rows) = self
            .payment_step(rec, Actor::Person(operator.to_owned()), &report, rules, now)
            .map_err(StoreError::from)?;
        rows.meta_del.push(key);
        rows.meta_more.push((payment_key(source, payment_id), json(&outcome)));
        self.commit(rows).await?;
        Ok(outcome)
    }

    /// `apply`, once per `once` key: the key is recorded in the same batch, and a
    /// second call with it is refused (single-use links).
    #[allow(clippy::too_many_arguments)]
    async fn apply_once_inner(
        &self,
        id: OrderId,
        actor: Actor,
        event: OrderEvent,
        once: Option<&str>,
        round: Option<u32>,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<OrderRecord, StoreError> {
        let _g = self.order_locks[stripe(id.as_bytes())].lock().await;
        if let Some(once) = once
            && let Some(used) = self.used_links.get(once.as_bytes()).map_err(io)?
        {
            let used: serde_json::Value = decode(&used).map_err(|e| corrupt("used link", e))?;
            return Err(StoreError::Conflict(format!(
                "this link was already used ({})",
                used.get("at").and_then(|v| v.as_str()).unwrap_or("earlier")
            )));
        }
        let rec = self.read_order(id)?.ok_or_else(|| StoreError::NotFound(format!("order {id}")))?;
        if let Some(round) = round
            && rec.approval.as_ref().map(|p| p.round) != Some(round)
        {
            return Err(StoreError::Conflict(
                "this approval request is no longer current: the order changed and its approval started again".into(),
            ));
        }
        let history = self.history(&rec.order, Some(id), now, rules.history_days)?;
        let case = rec.case(&history);
        let decision = decide(&case, actor, event, rules, now)?;
        let mut rows = StepRows::default();
        let rec = self.rows_for(rec, decision, now, &mut rows);
        if let Some(once) = once {
            let mark = serde_json::json!({"at": now, "order_id": id.to_string(), "seq": rec.last_seq});
            rows.link_put = Some((once.as_bytes().to_vec(), json(&mark)));
        }
        self.commit(rows).await?;
        Ok(rec)
    }

    /// Sends every digest that is due: per person, the items gathered since the oldest
    /// became `every` old. Items and the new mail effect change in one batch.
    async fn run_digests_inner(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let _g = self.digest_lock.lock().await;
        let mut by_person: std::collections::BTreeMap<String, Vec<(Vec<u8>, DigestItem)>> = Default::default();
        for row in self.digests.iter() {
            let (k, v) = row.map_err(io)?;
            let item: DigestItem = decode(&v).map_err(|e| corrupt("digest item", e))?;
            let person =
                k.split(|b| *b == 0).next().map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default();
            by_person.entry(person).or_default().push((k, item));
        }
        let mut seq: u32 = match self.meta.get(b"digest_seq").map_err(io)? {
            Some(v) => v.as_ref().try_into().map(u32::from_be_bytes).unwrap_or(0),
            None => 0,
        };
        let mut sent = 0;
        for (key, items) in by_person {
            let due = items.iter().map(|(_, i)| i.at + chrono::Duration::seconds(i.every_secs as i64)).min();
            if due.is_none_or(|d| d > now) {
                continue;
            }
            seq += 1;
            let id = EffectId { order_id: OrderId::nil(), seq, index: 0 };
            let to = items.last().map(|(_, i)| i.to.clone()).expect("a person has items");
            let effect = if key.starts_with("customer:") {
                self.customer_digest(id, to, &items, now)?
            } else {
                self.staff_digest(id, to, &items, now)?
            };
            let rows = StepRows {
                outbox_put: vec![(effect.due_key(), json(&effect))],
                digest_del: items.into_iter().map(|(k, _)| k).collect(),
                meta_put: Some((b"digest_seq".to_vec(), seq.to_be_bytes().to_vec())),
                ..Default::default()
            };
            self.commit(rows).await?;
            sent += 1;
        }
        Ok(sent)
    }

    /// One `digest` mail to a staff member listing their gathered order updates.
    fn staff_digest(
        &self,
        id: EffectId,
        to: crate::engine::notify::Recipient,
        items: &[(Vec<u8>, DigestItem)],
        now: DateTime<Utc>,
    ) -> Result<EffectRecord, StoreError> {
        let mut listed = Vec::with_capacity(items.len());
        for (_, i) in items {
            let state = self.read_order(i.order_id)?.map(|r| r.state.name()).unwrap_or("unknown");
            listed.push(serde_json::json!({
                "order_id": i.order_id.to_string(),
                "template": i.template,
                "state": state,
                "customer": i.customer,
                "amount": i.amount,
                "at": i.at,
            }));
        }
        let mail = crate::engine::notify::MailSpec {
            template: "digest".into(),
            to,
            link: None,
            link_context: None,
            extra: serde_json::Value::Null,
            digest_every_secs: None,
            event: None,
        };
        Ok(EffectRecord {
            idempotency_key: format!("orderbridge:{id}"),
            id,
            connector: crate::engine::notify::MAIL_CONNECTOR.parse().expect("valid id"),
            operation: "digest".into(),
            cause: "digest".into(),
            body: serde_json::json!({
                "effect_id": id.to_string(),
                "items": listed,
                "mail": mail,
                "created_at": now,
            }),
            attempts: 0,
            next_at: now,
            created_at: now,
            last_error: None,
        })
    }

    /// One mail to a customer for all their gathered items of one template (payment
    /// reminders): every invoice with what is owed, the highest stage, the total when
    /// all are in one currency. A single item also carries its order.
    fn customer_digest(
        &self,
        id: EffectId,
        to: crate::engine::notify::Recipient,
        items: &[(Vec<u8>, DigestItem)],
        now: DateTime<Utc>,
    ) -> Result<EffectRecord, StoreError> {
        let template = items[0].1.template.clone();
        let invoices: Vec<serde_json::Value> =
            items.iter().filter_map(|(_, i)| i.extra.get("invoice").cloned()).collect();
        let amounts: Vec<crate::domain::Money> =
            invoices.iter().filter_map(|i| serde_json::from_value(i["amount"].clone()).ok()).collect();
        let total = amounts
            .split_first()
            .and_then(|(first, rest)| rest.iter().try_fold(first.clone(), |s, m| s.checked_add(m).ok()));
        let last = &items[items.len() - 1].1;
        let days =
            items.iter().filter_map(|(_, i)| i.extra.get("days_overdue").and_then(serde_json::Value::as_u64)).max();
        let mut extra = last.extra.clone();
        if let serde_json::Value::Object(x) = &mut extra {
            x.remove("invoice");
            x.insert("invoices".into(), serde_json::json!(invoices));
            x.insert("days_overdue".into(), serde_json::json!(days));
            if let Some(t) = &total {
                x.insert("total".into(), serde_json::json!(t));
            }
        }
        let mut body = serde_json::json!({
            "effect_id": id.to_string(),
            "orders": items.iter().map(|(_, i)| i.order_id.to_string()).collect::<Vec<_>>(),
            "created_at": now,
        });
        if let [(_, only)] = items
            && let Some(rec) = self.read_order(only.order_id)?
        {
            body["order_id"] = serde_json::json!(rec.id.to_string());
            body["order"] = serde_json::json!(rec.order);
            body["state"] = serde_json::json!(rec.state.name());
        }
        body["mail"] = serde_json::json!(crate::engine::notify::MailSpec {
            template: template.clone(),
            to,
            link: None,
            link_context: None,
            extra,
            digest_every_secs: None,
            event: None,
        });
        Ok(EffectRecord {
            idempotency_key: format!("orderbridge:{id}"),
            id,
            connector: crate::engine::notify::MAIL_CONNECTOR.parse().expect("valid id"),
            operation: template,
            cause: "digest".into(),
            body,
            attempts: 0,
            next_at: now,
            created_at: now,
            last_error: None,
        })
    }

    /// Orders with a timer due at `now` (oldest first), and stale index keys to drop.
    fn due_timer_orders(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<OrderId>, StoreError> {
        let end = u64::try_from(now.timestamp_millis() + 1).unwrap_or(0).to_be_bytes();
        let mut out = Vec::new();
        for row in self.timers.range_to(&end) {
            let (k, _) = row.map_err(io)?;
            let Some(id) = k.get(8..24).and_then(|b| <[u8; 16]>::try_from(b).ok()).map(OrderId::from_bytes) else {
                continue;
            };
            if !out.contains(&id) {
                out.push(id);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Fires the order's earliest due timer (one step), or drops stale index keys.
    async fn fire_timer_inner(&self, id: OrderId, rules: &Rules, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let _g = self.order_locks[stripe(id.as_bytes())].lock().await;
        let Some(rec) = self.read_order(id)? else { return Ok(false) };
        let history = History::default();
        let case = rec.case(&history);
        match crate::engine::decide::due_timer_event(&case, rules, now) {
            Some(event) => {
                let decision = decide(&case, Actor::System, event, rules, now)?;
                let mut rows = StepRows::default();
                self.rows_for(rec, decision, now, &mut rows);
                self.commit(rows).await?;
                Ok(true)
            }
            None => {
                // Nothing due for this order: its index keys up to now are stale
                // (e.g. written by rules that have changed since). Re-sync them.
                let end = u64::try_from(now.timestamp_millis() + 1).unwrap_or(0).to_be_bytes();
                let mut rows = StepRows::default();
                for row in self.timers.range_to(&end) {
                    let (k, _) = row.map_err(io)?;
                    if k.get(8..24) == Some(&id.as_bytes()[..]) {
                        rows.timer_del.push(k.as_slice().try_into().map_err(|_| corrupt("timer index", "bad key"))?);
                    }
                }
                let current = crate::engine::decide::all_timers(
                    &rec.state,
                    rec.approval.as_ref(),
                    rec.fulfilment.as_ref(),
                    &rec.order,
                    rules,
                );
                if let Some(next) = current.iter().min_by_key(|t| t.due) {
                    rows.timer_put.push(timer_key(id, next));
                }
                if current != rec.timers {
                    let mut rec = rec;
                    rec.timers = current;
                    rows.order = Some((id, json(&rec)));
                }
                if !rows.timer_del.is_empty() || rows.order.is_some() {
                    self.commit(rows).await?;
                }
                Ok(false)
            }
        }
    }

    /// Appends a bookkeeping event (no state change) to an order's chain.
    fn bookkeeping(&self, rec: OrderRecord, actor: Actor, event: OrderEvent, now: DateTime<Utc>, rows: &mut StepRows) {
        let state = rec.state.clone();
        let decision = Decision {
            next: state.clone(),
            audit: vec![crate::engine::AuditEntry { at: now, actor, event, state }],
            effects: Vec::new(),
            approval: rec.approval.clone(),
            timers: rec.timers.clone(),
            fulfilment: rec.fulfilment.clone(),
        };
        self.rows_for(rec, decision, now, rows);
    }

    async fn finish_inner(
        &self,
        effect: &EffectRecord,
        outcome: EffectOutcome,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let id = effect.id.order_id;
        let _g = self.order_locks[stripe(id.as_bytes())].lock().await;
        // The row may have changed since it was claimed (e.g. replayed): use the stored one.
        let Some(current) = Self::read_effect(&self.outbox, &effect.due_key())? else {
            return Ok(());
        };
        let attempts = current.attempts + 1;
        let mut rows = StepRows::default();
        match outcome {
            EffectOutcome::Retry { error, next_at } => {
                let mut next = current.clone();
                next.attempts = attempts;
                next.next_at = next_at;
                next.last_error = Some(error);
                rows.outbox_del.push(current.due_key());
                rows.outbox_put.push((next.due_key(), json(&next)));
            }
            EffectOutcome::Deferred { reason, next_at } => {
                let mut next = current.clone();
                next.next_at = next_at;
                next.last_error = Some(reason);
                rows.outbox_del.push(current.due_key());
                rows.outbox_put.push((next.due_key(), json(&next)));
            }
            EffectOutcome::Done { receipt, reference } => {
                rows.outbox_del.push(current.due_key());
                if !id.is_nil() {
                    let mut rec = self
                        .read_order(id)?
                        .ok_or_else(|| corrupt("outbox", format!("effect for missing order {id}")))?;
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
                    let case = rec.case(&history);
                    match decide(&case, actor.clone(), ev.clone(), rules, now) {
                        Ok(decision) => {
                            self.rows_for(rec, decision, now, &mut rows);
                        }
                        Err(e) => {
                            tracing::error!(order_id = %id, error = %e, "the engine refused an effect's success; recorded as is");
                            self.bookkeeping(rec, actor, ev, now, &mut rows);
                        }
                    }
                }
            }
            EffectOutcome::Dead { error } => {
                let mut dead = current.clone();
                dead.attempts = attempts;
                dead.last_error = Some(error.clone());
                rows.outbox_del.push(current.due_key());
                rows.dead_put.push((dead.id.key(), json(&dead)));
                if id.is_nil() {
                    return self.commit(rows).await;
                }
                let rec =
                    self.read_order(id)?.ok_or_else(|| corrupt("outbox", format!("effect for missing order {id}")))?;
                let ev = OrderEvent::EffectDeadLettered {
                    effect_id: current.id.to_string(),
                    effect: current.name(),
                    attempts,
                    error,
                };
                self.bookkeeping(rec, Actor::System, ev, now, &mut rows);
            }
        }
        self.commit(rows).await
    }

    async fn replay_inner(&self, id: &EffectId, actor: Actor, now: DateTime<Utc>) -> Result<EffectRecord, StoreError> {
        let _g = self.order_locks[stripe(id.order_id.as_bytes())].lock().await;
        let dead = Self::read_effect(&self.dead, &id.key())?
            .ok_or_else(|| StoreError::NotFound(format!("dead letter {id}")))?;
        if id.order_id.is_nil() {
            let mut again = dead.clone();
            again.attempts = 0;
            again.next_at = now;
            let rows = StepRows {
                dead_del: vec![dead.id.key()],
                outbox_put: vec![(again.due_key(), json(&again))],
                ..Default::default()
            };
            tracing::info!(effect_id = %id, actor = %actor, "daemon effect replayed");
            self.commit(rows).await?;
            return Ok(again);
        }
        let rec = self
            .read_order(id.order_id)?
            .ok_or_else(|| corrupt("dead_letter", format!("effect for missing order {}", id.order_id)))?;
        let mut again = dead.clone();
        again.attempts = 0;
        again.next_at = now;
        let mut rows = StepRows::default();
        rows.dead_del.push(dead.id.key());
        rows.outbox_put.push((again.due_key(), json(&again)));
        let ev = OrderEvent::EffectReplayed { effect_id: id.to_string(), effect: dead.name() };
        self.bookkeeping(rec, actor, ev, now, &mut rows);
        self.commit(rows).await?;
        Ok(again)
    }

    fn scan_effects(tree: &Space, limit: usize) -> Result<Vec<EffectRecord>, StoreError> {
        tree.iter()
            .take(limit)
            .map(|kv| {
                let (_, v) = kv.map_err(io)?;
                decode(&v).map_err(|e| corrupt("effect", e))
            })
            .collect()
    }

    /// Verifies every order's chain. Each order is read under its lock, so a step
    /// committed meanwhile (the daemon keeps working) is seen whole or not at all.
    async fn verify_inner(&self) -> Result<AuditReport, StoreError> {
        let mut report = AuditReport { orders: 0, events: 0, broken: None };
        let mut ids = Vec::new();
        for kv in self.orders.iter() {
            let (_, v) = kv.map_err(io)?;
            let rec: OrderRecord = decode(&v).map_err(|e| corrupt("order", e))?;
            ids.push(rec.id);
        }
        for id in ids {
            let _g = self.order_locks[stripe(id.as_bytes())].lock().await;
            let Some(rec) = self.read_order(id)? else { continue };
            report.orders += 1;
            let mut prev = GENESIS.to_owned();
            let mut expected = 1u32;
            for ekv in self.events.scan_prefix(rec.id.as_bytes()) {
                let (k, v) = ekv.map_err(io)?;
                let broken = |seq: u32, why: String| Some((rec.id, seq, why));
                let step: Vec<EventRecord> = match decode(&v) {
                    Ok(step) => step,
                    Err(e) => {
                        report.broken = broken(expected, format!("event row unreadable: {e}"));
                        return Ok(report);
                    }
                };
                if k.as_slice() != event_key(rec.id, expected) {
                    report.broken = broken(expected, format!("expected a step starting at event {expected}"));
                    return Ok(report);
                }
                for ev in step {
                    report.events += 1;
                    let problem = if ev.seq != expected || ev.order_id != rec.id {
                        Some(format!("expected event {expected}, found {}", ev.seq))
                    } else if ev.prev_hash != prev {
                        Some("prev_hash does not match the previous event's hash".to_owned())
                    } else if ev.compute_hash() != ev.hash {
                        Some("content does not match its hash (event was altered)".to_owned())
                    } else {
                        None
                    };
                    if let Some(p) = problem {
                        report.broken = broken(ev.seq, p);
                        return Ok(report);
                    }
                    prev = ev.hash;
                    expected += 1;
                }
            }
            if expected - 1 != rec.last_seq || prev != rec.last_hash {
                report.broken = Some((
                    rec.id,
                    expected,
                    format!(
                        "chain ends at event {} but the order records {} (events missing or appended)",
                        expected - 1,
                        rec.last_seq
                    ),
                ));
                return Ok(report);
            }
        }
        Ok(report)
    }
}

/// Canonical fields that differ between two versions of an order (for the audit).
fn changed_fields(old: &crate::domain::Order, new: &crate::domain::Order) -> Vec<String> {
    let (a, b) = (serde_json::to_value(old).unwrap_or_default(), serde_json::to_value(new).unwrap_or_default());
    let mut out = Vec::new();
    diff("", &a, &b, &mut out);
    out
}

fn diff(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                diff(&p, x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), out);
            }
        }
        _ if a != b => out.push(prefix.to_owned()),
        _ => {}
    }
}

impl Store for SledStore {
    fn ingest<'a>(
        &'a self,
        inbound: Inbound,
        rules: &'a Rules,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Ingested, StoreError>> {
        Box::pin(self.ingest_inner(inbound, rules, now))
    }

    fn apply<'a>(
        &'a self,
        id: OrderId,
        actor: Actor,
        event: OrderEvent,
        rules: &'a Rules,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<OrderRecord, StoreError>> {
        Box::pin(self.apply_inner(id, actor, event, rules, now))
    }

    fn apply_once<'a>(
        &'a self,
        id: OrderId,
        actor: Actor,
        event: OrderEvent,
        once: Option<&'a str>,
        round: Option<u32>,
        rules: &'a Rules,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<OrderRecord, StoreError>> {
        Box::pin(self.apply_once_inner(id, actor, event, once, round, rules, now))
    }

    fn used<'a>(&'a self, once: &'a str) -> BoxFuture<'a, Result<Option<DateTime<Utc>>, StoreError>> {
        Box::pin(async move {
            match self.used_links.get(once.as_bytes()).map_err(io)? {
                None => Ok(None),
                Some(v) => {
                    let v: serde_json::Value = decode(&v).map_err(|e| corrupt("used link", e))?;
                    Ok(v.get("at").and_then(|a| serde_json::from_value(a.clone()).ok()))
                }
            }
        })
    }

    fn run_timers<'a>(&'a self, rules: &'a Rules, now: DateTime<Utc>) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(async move {
            let mut fired = 0;
            // Bounded: at most this many steps per sweep; the next sweep goes on.
            for _ in 0..100 {
                let due = self.due_timer_orders(now, 64)?;
                if due.is_empty() {
                    break;
                }
                let mut progressed = false;
                for id in due {
                    match self.fire_timer_inner(id, rules, now).await {
                        Ok(true) => {
                            fired += 1;
                            progressed = true;
                        }
                        Ok(false) => {}
                        // One order's trouble must not hold up the others' reminders.
                        Err(e @ (StoreError::Illegal(_) | StoreError::Refused(_))) => {
                            tracing::error!(order_id = %id, error = %e, "a due timer cannot fire; it stays due");
                        }
                        Err(e) => return Err(e),
                    }
                }
                if !progressed {
                    break;
                }
            }
            Ok(fired)
        })
    }

    fn ingest_page<'a>(
        &'a self,
        page: Vec<Inbound>,
        poll_key: &'a str,
        poll_state: serde_json::Value,
        rules: &'a Rules,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<Result<Ingested, StoreError>>, StoreError>> {
        Box::pin(self.ingest_page_inner(page, poll_key, poll_state, rules, now))
    }

    fn poll_state<'a>(&'a self, poll_key: &'a str) -> BoxFuture<'a, Result<Option<serde_json::Value>, StoreError>> {
        Box::pin(async move {
            match self.meta.get(format!("poll/{poll_key}").as_bytes()).map_err(io)? {
                None => Ok(None),
                Some(v) => decode(&v).map(Some).map_err(|e| corrupt("poll state", e)),
            }
        })
    }

    fn run_digests(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(self.run_digests_inner(now))
    }

    fn record_payment<'a>(
        &'a self,
        payment: &'a super::PaymentReport,
        rules: &'a Rules,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<super::PaymentOutcome, StoreError>> {
        Box::pin(self.record_payment_inner(payment, rules, now))
    }

    fn customer_orders<'a>(&'a self, customer: &'a str) -> BoxFuture<'a, Result<Vec<OrderRecord>, StoreError>> {
        Box::pin(async move {
            let mut prefix = customer.as_bytes().to_vec();
            prefix.push(0);
            let mut out = Vec::new();
            for row in self.customers.scan_prefix(&prefix) {
                let (k, _) = row.map_err(io)?;
                let Some(id) =
                    k.get(prefix.len()..).and_then(|b| <[u8; 16]>::try_from(b).ok()).map(OrderId::from_bytes)
                else {
                    continue;
                };
                if let Some(rec) = self.read_order(id)? {
                    out.push(rec);
                }
            }
            Ok(out)
        })
    }

    fn unmatched_payments(&self) -> BoxFuture<'_, Result<Vec<serde_json::Value>, StoreError>> {
        Box::pin(async move { self.unmatched_inner() })
    }

    fn assign_payment<'a>(
        &'a self,
        source: &'a str,
        payment_id: &'a str,
        order: OrderId,
        operator: &'a str,
        rules: &'a Rules,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<super::PaymentOutcome, StoreError>> {
        Box::pin(self.assign_payment_inner(source, payment_id, order, operator, rules, now))
    }

    fn order(&self, id: OrderId) -> BoxFuture<'_, Result<Option<OrderRecord>, StoreError>> {
        Box::pin(async move { self.read_order(id) })
    }

    fn find_external<'a>(&'a self, source: &'a ExternalRef) -> BoxFuture<'a, Result<Option<OrderId>, StoreError>> {
        Box::pin(async move {
            match self.ext_index.get(&source.key()).map_err(io)? {
                None => Ok(None),
                Some(v) => Ok(Some(OrderId::from_bytes(
                    v.as_ref().try_into().map_err(|_| corrupt("ext_index", "bad order id"))?,
                ))),
            }
        })
    }

    fn events(&self, id: OrderId) -> BoxFuture<'_, Result<Vec<EventRecord>, StoreError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for kv in self.events.scan_prefix(id.as_bytes()) {
                let (_, v) = kv.map_err(io)?;
                let step: Vec<EventRecord> = decode(&v).map_err(|e| corrupt("event", e))?;
                out.extend(step);
            }
            Ok(out)
        })
    }

    fn list<'a>(
        &'a self,
        state: Option<&'a str>,
        after: Option<OrderId>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<OrderRecord>, StoreError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            match state {
                None => {
                    let start = after.map(|a| {
                        let mut k = a.as_bytes().to_vec();
                        k.push(0);
                        k
                    });
                    let iter: Box<dyn Iterator<Item = Row>> = match &start {
                        Some(s) => Box::new(self.orders.range_from(s)),
                        None => Box::new(self.orders.iter()),
                    };
                    for kv in iter.take(limit) {
                        let (_, v) = kv.map_err(io)?;
                        out.push(decode(&v).map_err(|e| corrupt("order", e))?);
                    }
                }
                Some(s) => {
                    let mut prefix = s.as_bytes().to_vec();
                    prefix.push(0);
                    let mut start = prefix.clone();
                    if let Some(a) = after {
                        start.extend_from_slice(a.as_bytes());
                        start.push(0);
                    }
                    for kv in self.state_index.range_from(&start).take(limit) {
                        let (k, _) = kv.map_err(io)?;
                        if !k.starts_with(&prefix) {
                            break;
                        }
                        let id = OrderId::from_bytes(
                            k[prefix.len()..].try_into().map_err(|_| corrupt("state_index", "bad key"))?,
                        );
                        if let Some(rec) = self.read_order(id)? {
                            out.push(rec);
                        }
                    }
                }
            }
            Ok(out)
        })
    }

    fn due_effects(&self, now: DateTime<Utc>, limit: usize) -> BoxFuture<'_, Result<Vec<EffectRecord>, StoreError>> {
        Box::pin(async move {
            let now_ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
            let mut out = Vec::new();
            for kv in self.outbox.range_to(&(now_ms + 1).to_be_bytes()).take(limit) {
                let (_, v) = kv.map_err(io)?;
                out.push(decode(&v).map_err(|e| corrupt("effect", e))?);
            }
            Ok(out)
        })
    }

    fn current(&self, effect: &EffectRecord) -> BoxFuture<'_, Result<Option<EffectRecord>, StoreError>> {
        let key = effect.due_key();
        Box::pin(async move { Self::read_effect(&self.outbox, &key) })
    }

    fn pending_effects(&self, limit: usize) -> BoxFuture<'_, Result<Vec<EffectRecord>, StoreError>> {
        Box::pin(async move { Self::scan_effects(&self.outbox, limit) })
    }

    fn dead_letters(&self, limit: usize) -> BoxFuture<'_, Result<Vec<EffectRecord>, StoreError>> {
        Box::pin(async move { Self::scan_effects(&self.dead, limit) })
    }

    fn finish_effect<'a>(
        &'a self,
        effect: &'a EffectRecord,
        outcome: EffectOutcome,
        rules: &'a Rules,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.finish_inner(effect, outcome, rules, now))
    }

    fn replay<'a>(
        &'a self,
        id: &'a EffectId,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<EffectRecord, StoreError>> {
        Box::pin(self.replay_inner(id, actor, now))
    }

    fn verify_audit(&self) -> BoxFuture<'_, Result<AuditReport, StoreError>> {
        Box::pin(self.verify_inner())
    }

    fn counts(&self) -> BoxFuture<'_, Result<(u64, u64), StoreError>> {
        let get = |a: &AtomicI64| u64::try_from(a.load(Ordering::Relaxed)).unwrap_or(0);
        Box::pin(async move { Ok((get(&self.pending), get(&self.dead_count))) })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.committer.durable())
    }
}

#[cfg(test)]
mod model_test {
    //! The outbox against an in-memory model: random ingest / attempt / retry /
    //! dead-letter / replay / reopen sequences keep the store and the model equal,
    //! and the audit chains intact (a reopen stands for a restart).

    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

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

    /// The example rules up to execution: one effect per approved order (the model
    /// is about the outbox, not about tasks).
    fn rules() -> Rules {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(dir.join("config/rules.toml")).unwrap();
        let text = &text[..text.find("# --- Execution").expect("an execution section")];
        let file: crate::engine::rules::RulesFile = toml::from_str(text).unwrap();
        file.validate(&|name| std::fs::read_to_string(dir.join("config").join(name)).map_err(|e| e.to_string()))
            .unwrap_or_else(|ps| panic!("{:?}", ps.iter().map(|p| &p.message).collect::<Vec<_>>()))
    }

    /// A sample order of its own customer (the velocity and duplicate rules see no history).
    fn order(amount: &str, customer: usize) -> crate::domain::Order {
        let mut v: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/demo-crm-deal.json")).unwrap();
        v["deal"]["amount"] = amount.into();
        v["deal"]["customer"]["id"] = format!("C-M{customer}").into();
        let m = toml::from_str::<crate::mapping::MappingFile>(include_str!("../../mappings/demo-crm.toml"))
            .unwrap()
            .validate("demo-crm")
            .unwrap();
        m.apply(&v).unwrap().unwrap().order
    }

    fn open(dir: &Path) -> Arc<SledStore> {
        SledStore::open(dir, 4 << 20, std::time::Duration::ZERO, Arc::new(Metrics::default())).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn outbox_matches_its_model(ops in proptest::collection::vec(op(), 1..40)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let rules = rules();
                let mut store = open(dir.path());
                let (mut pending, mut dead) = (BTreeSet::new(), BTreeSet::new());
                let far = Utc::now() + chrono::Duration::days(1);
                for (n, op) in ops.into_iter().enumerate() {
                    match op {
                        Op::Ingest { small } => {
                            let inbound = Inbound {
                                source: ExternalRef { connector: "demo-crm".parse().unwrap(), id: format!("M-{n}").parse().unwrap() },
                                version: 1,
                                mapping_version: "1".into(),
                                order: order(if small { "500.00" } else { "5000000.00" }, n),
                            };
                            let got = store.ingest(inbound, &rules, Utc::now()).await.unwrap();
                            if small {
                                let seq = store.events(got.order_id).await.unwrap().len() as u32;
                                pending.insert(EffectId { order_id: got.order_id, seq, index: 0 });
                            }
                        }
                        Op::Attempt { outcome } => {
                            let due = store.due_effects(far, 1).await.unwrap();
                            if let Some(e) = due.first() {
                                let o = match outcome {
                                    0 => EffectOutcome::Done { receipt: "ok".into(), reference: None },
                                    1 => EffectOutcome::Retry { error: "503".into(), next_at: Utc::now() + chrono::Duration::seconds(1) },
                                    _ => EffectOutcome::Dead { error: "400".into() },
                                };
                                store.finish_effect(e, o, &rules, Utc::now()).await.unwrap();
                                match outcome {
                                    0 => { pending.remove(&e.id); }
                                    1 => {}
                                    _ => { pending.remove(&e.id); dead.insert(e.id); }
                                }
                            }
                        }
                        Op::Replay => {
                            if let Some(id) = dead.iter().next().copied() {
                                store.replay(&id, Actor::System, Utc::now()).await.unwrap();
                                dead.remove(&id);
                                pending.insert(id);
                            }
                        }
                        Op::Reopen => {
                            drop(store);
                            // Let the committer task release its handle on the database.
                            let mut reopened = None;
                            for _ in 0..200 {
                                match SledStore::open(dir.path(), 4 << 20, std::time::Duration::ZERO, Arc::new(Metrics::default())) {
                                    Ok(s) => { reopened = Some(s); break; }
                                    Err(StoreError::Locked(_)) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                                    Err(e) => panic!("{e}"),
                                }
                            }
                            store = reopened.expect("store reopens");
                        }
                    }
                    let ids = |v: Vec<EffectRecord>| v.into_iter().map(|e| e.id).collect::<BTreeSet<_>>();
                    assert_eq!(ids(store.pending_effects(1000).await.unwrap()), pending);
                    assert_eq!(ids(store.dead_letters(1000).await.unwrap()), dead);
                    assert_eq!(store.counts().await.unwrap(), (pending.len() as u64, dead.len() as u64));
                    let audit = store.verify_audit().await.unwrap();
                    assert!(audit.broken.is_none(), "{audit:?}");
                }
            });
        }
    }
}
