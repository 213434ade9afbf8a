//! The store laid out over an ordered key-value engine (`Engine`): one key space per
//! one-byte tag, keys fixed-width big-endian where they are scanned in order, rows
//! encoded by `codec`. Every backend that is an embedded engine shares this file, so
//! the layout, the preconditions, the durable visibility of effects and quarantine
//! have one home; an engine only gets, scans, writes a batch atomically and syncs.
//!
//! Key spaces (`tag`: key → value):
//! - `o` orders: id → `last_seq` (u32 BE) ‖ row. The sequence number leads, so a
//!   step's precondition is checked without decoding the row.
//! - `e` events: id ‖ first seq → the events of one step, in order.
//! - `q` outbox: due ms ‖ effect key → effect. `d` dead letters: effect key → effect.
//! - `i` external ids: connector ‖ 0 ‖ external id → order id (invariant 4).
//! - `s` states: state ‖ 0 ‖ id → ∅. `t` timers: due ms ‖ id → ∅ (each order's
//!   earliest due time). `c` customers: customer ‖ 0 ‖ id → the history entry.
//!   `n` invoice numbers → order id.
//! - `p` payments seen: source ‖ 0 ‖ payment id → outcome; `w` payments waiting for
//!   an operator: the same key → payment.
//! - `u` spent links: link id → use. `g` digest items: group ‖ 0 ‖ effect key → item.
//! - `j` job state: name → JSON. `x` quarantine: tag ‖ key → what was set aside
//!   (and, once resolved, how: `quarantine.rs`).
//! - `a` archive index: order id → where the archived order is; `l` archive log:
//!   seq (u64 BE) → a purge, hold or release (`archive.rs`).
//! - `m` meta: `schema` → layout version (`SCHEMA`).

mod archive;
mod copy;
mod held;
mod outbox;
mod quarantine;
mod step;
mod upgrade;
mod verbs;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};

pub use super::batch::Batch;
use super::codec::{decode, encode};
use super::commit::Committer;
use super::records::{DueEffect, EffectId, EffectRecord, EventRecord, OrderRecord, StepEvents};
use super::{BoxFuture, ConnectorFilter, Counts, DigestKey, Quarantined, Step, Store, StoreError, UsedLink};
use crate::domain::{ExternalRef, OrderId};
use crate::engine::effects::DigestItem;
use crate::engine::payments::{PaymentOutcome, UnmatchedPayment};
use crate::engine::table::Prior;
use crate::metrics::Metrics;

/// Layout version written under `m/schema`; a store of another version is refused.
/// 3: a step's events row may be a `StepEvents` (layout 2's rows still read), so a
/// binary of layout 2 must refuse the store rather than quarantine those rows.
pub const SCHEMA: &[u8] = b"3";

/// A fault of the engine itself (I/O, damage), as text.
#[derive(Debug, Clone)]
pub enum EngineError {
    Corrupt(String),
    Io(String),
}

impl From<EngineError> for StoreError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Corrupt(m) => StoreError::Corrupt(m),
            EngineError::Io(m) => StoreError::Io(m),
        }
    }
}

pub type KvPair = (Vec<u8>, Vec<u8>);
pub type KvIter<'a> = Box<dyn Iterator<Item = Result<KvPair, EngineError>> + Send + 'a>;

/// An ordered key-value engine: what a backend must provide.
pub trait Engine: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;
    /// Keys in `[from, to)`, in order.
    fn range(&self, from: &[u8], to: &[u8]) -> KvIter<'_>;
    /// Applies a batch atomically; it need not be durable yet.
    fn write(&self, batch: Batch) -> Result<(), EngineError>;
    /// Makes every applied batch durable (flush and fsync).
    fn sync(&self) -> Result<(), String>;
    /// The failure the engine latched, if it refuses all work after one (redb).
    fn failure(&self) -> Option<String> {
        None
    }
}

impl Engine for Box<dyn Engine> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        (**self).get(key)
    }
    fn range(&self, from: &[u8], to: &[u8]) -> KvIter<'_> {
        (**self).range(from, to)
    }
    fn write(&self, batch: Batch) -> Result<(), EngineError> {
        (**self).write(batch)
    }
    fn sync(&self) -> Result<(), String> {
        (**self).sync()
    }
    fn failure(&self) -> Option<String> {
        (**self).failure()
    }
}

/// Key spaces, by their tag (see the module documentation).
pub mod tags {
    pub const ORDERS: u8 = b'o';
    pub const OUTBOX: u8 = b'q';
}

const ORDERS: u8 = b'o';
const EVENTS: u8 = b'e';
const OUTBOX: u8 = b'q';
const DEAD: u8 = b'd';
const EXTERNAL: u8 = b'i';
const STATES: u8 = b's';
const TIMERS: u8 = b't';
const CUSTOMERS: u8 = b'c';
const INVOICES: u8 = b'n';
const PAYMENTS: u8 = b'p';
const WAITING: u8 = b'w';
const LINKS: u8 = b'u';
const DIGESTS: u8 = b'g';
const JOBS: u8 = b'j';
const QUARANTINE: u8 = b'x';
const META: u8 = b'm';
const ARCHIVE: u8 = b'a';
const ARCHIVE_LOG: u8 = b'l';

fn key(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + parts.iter().map(|p| p.len()).sum::<usize>());
    k.push(tag);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

/// `a ‖ 0 ‖ b`: a text part that sorts and prefixes cleanly (texts hold no NUL).
fn pair(tag: u8, a: &str, b: &[u8]) -> Vec<u8> {
    key(tag, &[a.as_bytes(), &[0], b])
}

fn ms(t: DateTime<Utc>) -> [u8; 8] {
    u64::try_from(t.timestamp_millis()).unwrap_or(0).to_be_bytes()
}

/// An outbox key: OUTBOX ‖ the effect's due key (due time, 8 bytes ‖ its id's key).
fn outbox_key(due: [u8; 30]) -> Vec<u8> {
    key(OUTBOX, &[&due])
}

/// The due effect a due key names.
fn due_effect(due: &outbox::Due, connector: Arc<str>) -> Option<DueEffect> {
    let ms = i64::try_from(u64::from_be_bytes(due[..8].try_into().ok()?)).ok()?;
    let next_at = DateTime::<Utc>::from_timestamp_millis(ms)?;
    Some(DueEffect { id: EffectId::from_key(&due[8..])?, connector, next_at })
}

/// The due key of an outbox key (`None` for a key of another shape).
fn due_of(k: &[u8]) -> Option<outbox::Due> {
    k.get(1..)?.try_into().ok()
}

fn order_key(id: OrderId) -> Vec<u8> {
    key(ORDERS, &[id.as_bytes()])
}

fn timer_key(due: DateTime<Utc>, id: OrderId) -> Vec<u8> {
    key(TIMERS, &[&ms(due), id.as_bytes()])
}

fn state_key(state: &str, id: OrderId) -> Vec<u8> {
    pair(STATES, state, id.as_bytes())
}

fn digest_key(k: &DigestKey) -> Vec<u8> {
    pair(DIGESTS, &k.group, &k.effect.key())
}

fn payment_key(tag: u8, source: &str, id: &str) -> Vec<u8> {
    pair(tag, source, id.as_bytes())
}

fn order_row(rec: &OrderRecord) -> Vec<u8> {
    let mut row = rec.last_seq.to_be_bytes().to_vec();
    row.extend_from_slice(&encode(rec));
    row
}

fn seq_of(row: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(row.get(..4)?.try_into().ok()?))
}

fn id_of(v: &[u8]) -> Option<OrderId> {
    <[u8; 16]>::try_from(v).ok().map(OrderId::from_bytes)
}

/// The end of every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

/// Only the connector of an effect row (the rest of the JSON is skipped).
#[derive(serde::Deserialize)]
struct ConnectorOnly {
    connector: String,
}

/// A row of a batch the committer has not written yet (`None`: a removal), with
/// the generation of that batch.
type PendingRow = (Option<bytes::Bytes>, u64);

/// The store over an engine `E`.
pub struct KvStore<E: Engine> {
    engine: Arc<E>,
    committer: Committer,
    /// Checks preconditions and writes one batch at a time, so a check still holds
    /// when its batch lands.
    write_lock: std::sync::Mutex<()>,
    /// Every outbox row by connector and due key, with where it stands (`outbox`).
    /// Built at open, changed under the write lock in commit order and again once
    /// each commit is durable.
    outbox: std::sync::Mutex<outbox::OutboxIndex>,
    /// Which customers the customer index holds rows for (`held`).
    customers: held::Held,
    /// Which keys the external-id index holds (`held`).
    externals: held::Held,
    /// Rows of batches handed to the committer and not yet written, with the batch's
    /// generation: precondition checks see them (readers do not).
    pending_writes: std::sync::Mutex<HashMap<bytes::Bytes, PendingRow>>,
    generation: AtomicU64,
    pending: AtomicU64,
    dead: AtomicU64,
    quarantined: AtomicU64,
    unmatched: AtomicU64,
}

impl<E: Engine> KvStore<E> {
    /// Opens the layout on `engine`: writes or checks the layout version and counts
    /// the rows that metrics show.
    ///
    /// # Errors
    /// `Corrupt` for a store of another layout, `Io` when the engine fails.
    pub fn open(
        engine: E,
        commit_delay: std::time::Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<KvStore<E>>, StoreError> {
        let engine = Arc::new(engine);
        let schema = key(META, &[b"schema"]);
        match engine.get(&schema)? {
            None if engine.range(&[0], &[0xff]).next().is_none() => {
                let mut b = Batch::default();
                b.put(schema, SCHEMA.to_vec());
                engine.write(b)?;
                engine.sync().map_err(StoreError::Io)?;
            }
            Some(v) if v == SCHEMA => {}
            Some(v) if v == b"1" => upgrade::from_1(engine.as_ref())?,
            Some(v) if v == b"2" => upgrade::from_2(engine.as_ref())?,
            found => {
                return Err(StoreError::Corrupt(format!(
                    "store layout version {} is not the supported {} (restore the backup taken before the upgrade and run the version that wrote it)",
                    found.map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_else(|| "1".into()),
                    String::from_utf8_lossy(SCHEMA)
                )));
            }
        }
        let count = |tag: u8| engine.range(&[tag], &[tag + 1]).count() as u64;
        let (dead, unmatched) = (count(DEAD), count(WAITING));
        let quarantined = Self::count_unresolved(&engine)?;
        let mut outbox = outbox::OutboxIndex::default();
        let mut pending = 0;
        // Keys of another shape than a due key: quarantined once the store is open.
        let mut misshapen = Vec::new();
        for row in engine.range(&[OUTBOX], &[OUTBOX + 1]) {
            let (k, v) = row?;
            pending += 1;
            let Some(due) = due_of(&k) else {
                misshapen.push((k, v));
                continue;
            };
            // A row that cannot be read keeps an empty connector: the dispatcher reads
            // it like any other and quarantines it then.
            let connector = decode::<ConnectorOnly>(&v).map(|c| c.connector).unwrap_or_default();
            outbox.insert_durable(&connector, due);
        }
        let customers = held::Held::built(&*engine, CUSTOMERS, |k| held::customer_of_key(k).map(held::hash))?;
        let externals = held::Held::built(&*engine, EXTERNAL, |k| Some(held::hash(k)))?;
        let sync_engine = engine.clone();
        let committer = Committer::start(
            Arc::new(move |batch| {
                if let Some(b) = batch {
                    // A write the engine refused (full or read-only volume, I/O error)
                    // may have reached part of its files: fatal, as a failed sync.
                    sync_engine.write(b).map_err(|e| match e {
                        EngineError::Io(m) | EngineError::Corrupt(m) => format!("write: {m}"),
                    })?;
                }
                sync_engine.sync()
            }),
            commit_delay,
            metrics,
        );
        let store = KvStore {
            engine,
            committer,
            write_lock: std::sync::Mutex::new(()),
            outbox: std::sync::Mutex::new(outbox),
            customers,
            externals,
            pending_writes: std::sync::Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            pending: AtomicU64::new(pending),
            dead: AtomicU64::new(dead),
            quarantined: AtomicU64::new(quarantined),
            unmatched: AtomicU64::new(unmatched),
        };
        for (k, v) in misshapen {
            let error = format!("an outbox key of {} bytes, not 31", k.len());
            store.quarantine(&k, &v, &format!("effect {}", hex::encode(&k[1..])), &error);
        }
        Ok(Arc::new(store))
    }

    /// The engine underneath (for `store copy` and tests).
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// Sets a row that cannot be decoded aside (in one batch: removed from its space,
    /// kept whole under `x`), counts it and says so at error level.
    fn quarantine(&self, k: &[u8], raw: &[u8], what: &str, error: &str) -> StoreError {
        tracing::error!(row = what, error, "a stored row cannot be read; it is quarantined and the rest goes on");
        let q = Quarantined {
            what: what.to_owned(),
            error: error.to_owned(),
            at: Utc::now(),
            raw_hex: hex::encode(raw),
            resolved: None,
        };
        let mut b = Batch::default();
        b.del(k.to_vec());
        b.put(key(QUARANTINE, &[k]), encode(&q));
        let _guard = self.write_lock.lock().expect("write lock");
        if let Err(e) = self.engine.write(b) {
            return e.into();
        }
        match k.first() {
            Some(&OUTBOX) => {
                if let Some(due) = due_of(k) {
                    self.outbox.lock().expect("outbox index").forget(&due);
                }
                self.pending.fetch_sub(1, Ordering::Relaxed);
            }
            Some(&DEAD) => {
                self.dead.fetch_sub(1, Ordering::Relaxed);
            }
            Some(&WAITING) => {
                self.unmatched.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
        self.quarantined.fetch_add(1, Ordering::Relaxed);
        StoreError::Quarantined(what.to_owned())
    }

    /// Decodes a row, quarantining it when it cannot be.
    fn read<T: serde::de::DeserializeOwned>(
        &self,
        k: &[u8],
        v: &[u8],
        what: impl Fn() -> String,
    ) -> Result<T, StoreError> {
        decode(v).map_err(|e| self.quarantine(k, v, &what(), &e))
    }

    fn read_order_row(&self, k: &[u8], v: &[u8]) -> Result<OrderRecord, StoreError> {
        let what = || format!("order {}", id_of(&k[1..]).map(|i| i.to_string()).unwrap_or_default());
        match v.get(4..).map(decode::<OrderRecord>) {
            Some(Ok(rec)) => Ok(rec),
            Some(Err(e)) => Err(self.quarantine(k, v, &what(), &e)),
            None => Err(self.quarantine(k, v, &what(), "row too short")),
        }
    }

    fn load_order(&self, id: OrderId) -> Result<Option<OrderRecord>, StoreError> {
        let k = order_key(id);
        match self.get(&k)? {
            Some(v) => self.read_order_row(&k, &v).map(Some),
            None if self.get(&key(QUARANTINE, &[&k]))?.is_some() => Err(StoreError::Quarantined(format!("order {id}"))),
            None => Ok(None),
        }
    }

    /// Rows of a range, decoded; undecodable ones are quarantined and skipped.
    fn scan<T: serde::de::DeserializeOwned>(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
        what: &str,
        keep: impl FnMut(&[u8]) -> bool,
    ) -> Result<Vec<(Vec<u8>, T)>, StoreError> {
        self.scan_with(from, to, limit, what, keep, decode::<T>)
    }

    /// As `scan`, with rows read by `decode`.
    fn scan_with<T>(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
        what: &str,
        mut keep: impl FnMut(&[u8]) -> bool,
        decode: impl Fn(&[u8]) -> Result<T, String>,
    ) -> Result<Vec<(Vec<u8>, T)>, StoreError> {
        let mut out = Vec::new();
        for row in self.engine.range(from, to) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = row.map_err(|e| self.fault(e))?;
            if !keep(&k) {
                continue;
            }
            match decode(&v) {
                Ok(t) => out.push((k, t)),
                Err(e) => {
                    self.quarantine(&k, &v, &format!("{what} {}", hex::encode(&k[1..])), &e);
                }
            }
        }
        Ok(out)
    }

    /// A row as the engine holds it.
    fn get(&self, k: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.engine.get(k).map_err(|e| self.fault(e))
    }

    /// An engine error as readers report it: once the store has failed (a write or
    /// sync was refused), every error after is that failure, so a request answers
    /// `store_failed` and not a generic error.
    fn fault(&self, e: EngineError) -> StoreError {
        match self.committer.failure().or_else(|| self.engine.failure()) {
            Some(f) => StoreError::Failed(f),
            None => e.into(),
        }
    }

    /// A row as the next commit will find it: written by a batch the committer has
    /// not written yet, or else stored. Only the precondition checks (under the
    /// write lock) read through this; readers see what the engine holds.
    fn current_row(&self, k: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some((v, _)) = self.pending_writes.lock().expect("pending writes").get(k) {
            return Ok(v.as_deref().map(<[u8]>::to_vec));
        }
        self.get(k)
    }

    fn exists(&self, k: &[u8]) -> Result<bool, StoreError> {
        Ok(self.current_row(k)?.is_some())
    }

    /// Outbox keys in due order before the due key `to`, with their connector, as the
    /// outbox index lists them (`OutboxIndex::list`).
    fn outbox_keys(
        &self,
        limit: usize,
        to: Option<&outbox::Due>,
        durable_only: bool,
        filter: Option<&ConnectorFilter>,
    ) -> Vec<(outbox::Due, Arc<str>)> {
        self.outbox.lock().expect("outbox index").list(limit, to, durable_only, filter)
    }

    /// Pending effects as `outbox_keys` lists them, their rows read.
    fn outbox_effects(
        &self,
        limit: usize,
        to: Option<&outbox::Due>,
        durable_only: bool,
    ) -> Result<Vec<EffectRecord>, StoreError> {
        let keys = self.outbox_keys(limit, to, durable_only, None);
        let mut out = Vec::with_capacity(keys.len());
        for (due, _) in keys {
            let k = outbox_key(due);
            // Gone since the index was read: performed or rescheduled meanwhile.
            let Some(v) = self.get(&k)? else { continue };
            match decode::<EffectRecord>(&v) {
                Ok(e) => out.push(e),
                Err(e) => {
                    self.quarantine(&k, &v, &format!("effect {}", hex::encode(&k[1..])), &e);
                }
            }
        }
        Ok(out)
    }

    /// Dead letters, in key order.
    fn dead_effects(&self, limit: usize) -> Result<Vec<EffectRecord>, StoreError> {
        Ok(self
            .scan::<EffectRecord>(&[DEAD], &[DEAD + 1], limit, "effect", |_| true)?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }
}
