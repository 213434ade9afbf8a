//! The store on PostgreSQL (`store.backend = "postgres"`): the same rows, preconditions
//! and reads as the embedded layout (`kv/`), one table per key space
//! (`migrations/0001_store.sql`, embedded in the binary and applied at open under
//! sqlx's advisory lock, so daemons starting together migrate once).
//!
//! One `commit` is one transaction: every precondition is a statement that finds
//! nothing to change when it no longer holds (`UPDATE orders … WHERE last_seq = $n`,
//! `INSERT … ON CONFLICT DO NOTHING`, `DELETE` of the row as read), and the first that
//! does aborts the transaction as `Conflict`. Concurrent steps on one order are
//! serialised by the row lock the `UPDATE` takes: the later one waits, then finds the
//! sequence moved on. Connections run with `synchronous_commit = on`, so a commit
//! returns once it is durable, and `due_effects` only ever sees committed effects.
//!
//! Decides nothing (no rules, no `decide`): the rows come from the application layer.
//! A record that cannot be decoded is moved to `quarantine` and the others go on.
//!
//! Several daemons on one database (`migrations/0002_leases.sql`): a replica claims
//! an effect before pushing it (`claim`: one `UPDATE` of the row, so two replicas
//! never both win), renews the claim while the push runs, and the outcome's commit
//! removes or replaces the row, which clears the claim. A replica that dies leaves
//! its claims to lapse after `PgOptions::lease`; then another takes them (the push
//! is repeated with the same idempotency key, which the receiver dedupes). Scheduled
//! jobs take a lease by name in `job_leases` (`try_lease`). Lease times are the
//! server's `now()`, so the replicas' clocks need not agree. The row counts are
//! re-read every `COUNTS_REFRESH`, as other replicas change them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::records::{EffectId, EffectRecord, EventRecord, OrderRecord};
use super::{
    BoxFuture, Counts, DigestChange, DigestKey, DueTimer, Loaded, OutboxChange, PaymentWrite, Quarantined, Step, Store,
    StoreError, UsedLink,
};
use crate::domain::{ExternalRef, OrderId};
use crate::engine::effects::DigestItem;
use crate::engine::payments::{PaymentOutcome, UnmatchedPayment};
use crate::engine::table::Prior;

/// The schema, embedded: applied at open and by `orderbridge migrate`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How to reach the database (`[store]` with `backend = "postgres"`).
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// `postgres://user:password@host:port/database?sslmode=…`; a secret (it may carry
    /// the password), never logged.
    pub url: SecretString,
    /// Connections in the pool.
    pub max_connections: u32,
    /// How long a caller waits for a connection (and a new connection to be made).
    pub acquire_timeout: Duration,
    /// The server cancels a statement that runs longer (`statement_timeout`).
    pub statement_timeout: Duration,
    /// How long an effect claim or a job lease lasts unless renewed: a replica that
    /// dies holding one leaves it this long. Claims are renewed every third of it
    /// while their push runs, so it need not cover the connectors' timeouts.
    pub lease: Duration,
}

impl PgOptions {
    /// Parses the URL's form, without connecting.
    ///
    /// # Errors
    /// What is wrong with the URL, never echoing it.
    pub fn connect_options(&self) -> Result<PgConnectOptions, String> {
        let url = self.url.expose_secret();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err("not a PostgreSQL URL (postgres://user:password@host:port/database)".into());
        }
        url.parse::<PgConnectOptions>().map_err(|e| format!("not a usable PostgreSQL URL: {}", redact(&e.to_string())))
    }
}

/// sqlx's errors may quote the URL (with its password); keep what precedes it.
fn redact(message: &str) -> String {
    match message.find("postgres://").or_else(|| message.find("postgresql://")) {
        Some(i) => format!("{}…", &message[..i]),
        None => message.to_owned(),
    }
}

/// Connects a pool and applies the embedded migrations.
///
/// # Errors
/// `Io` when the database cannot be reached or migrated.
pub async fn connect(options: &PgOptions) -> Result<PgPool, StoreError> {
    let connect = options.connect_options().map_err(StoreError::Io)?.options([
        // Invariant 1: a commit returns only once durable, whatever the server's default.
        ("synchronous_commit", "on".to_owned()),
        ("statement_timeout", format!("{}ms", options.statement_timeout.as_millis())),
    ]);
    let pool = PgPoolOptions::new()
        .max_connections(options.max_connections)
        .acquire_timeout(options.acquire_timeout)
        .connect_with(connect)
        .await
        .map_err(|e| StoreError::Io(format!("connecting to PostgreSQL: {}", redact(&e.to_string()))))?;
    // sqlx holds a PostgreSQL advisory lock while it migrates: two daemons starting
    // on an empty database apply the schema once.
    MIGRATOR.run(&pool).await.map_err(|e| StoreError::Io(format!("migrating the PostgreSQL schema: {e}")))?;
    Ok(pool)
}

/// Applies the embedded migrations that the database lacks (`orderbridge migrate`);
/// returns the versions applied now and every version the database has.
///
/// # Errors
/// `Io` when the database cannot be reached or migrated.
pub async fn migrate(options: &PgOptions) -> Result<(Vec<i64>, Vec<i64>), StoreError> {
    let versions = |pool: PgPool| async move {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&pool)
            .await
            .map_err(db)?;
        if !exists {
            return Ok(Vec::new());
        }
        sqlx::query_scalar::<_, i64>("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&pool)
            .await
            .map_err(db)
    };
    let connect = options.connect_options().map_err(StoreError::Io)?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(options.acquire_timeout)
        .connect_with(connect)
        .await
        .map_err(|e| StoreError::Io(format!("connecting to PostgreSQL: {}", redact(&e.to_string()))))?;
    let before = versions(pool.clone()).await?;
    MIGRATOR.run(&pool).await.map_err(|e| StoreError::Io(format!("migrating the PostgreSQL schema: {e}")))?;
    let after = versions(pool.clone()).await?;
    pool.close().await;
    Ok((after.iter().copied().filter(|v| !before.contains(v)).collect(), after))
}

/// How often the counts (`Store::counts`) are re-read: other replicas change them.
pub const COUNTS_REFRESH: Duration = Duration::from_secs(5);

/// The store over a PostgreSQL pool.
pub struct PgStore {
    pool: PgPool,
    /// This process among the replicas: `claimed_by` and `job_leases.holder`.
    holder: String,
    /// `PgOptions::lease`.
    lease: Duration,
    /// Commits made by this process; a re-count that saw one start meanwhile is dropped
    /// (the commit's own change to the counts would be lost).
    commits: AtomicU64,
    pending: AtomicU64,
    dead: AtomicU64,
    quarantined: AtomicU64,
    unmatched: AtomicU64,
}

fn db(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(d) = &e {
        match d.code().as_deref() {
            // unique_violation: another step wrote the row first.
            Some("23505") => return StoreError::Conflict(format!("written concurrently: {}", d.message())),
            // serialization_failure, deadlock_detected: decide again.
            Some("40001" | "40P01") => return StoreError::Conflict(d.message().to_owned()),
            _ => {}
        }
    }
    StoreError::Io(format!("postgres: {}", redact(&e.to_string())))
}

fn uuid(id: OrderId) -> Uuid {
    Uuid::from_bytes(*id.as_bytes())
}

fn order_id(u: Uuid) -> OrderId {
    OrderId::from_bytes(*u.as_bytes())
}

/// Milliseconds since the epoch, as the embedded layout keys due times (before 1970: 0).
fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis().max(0)
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("records serialise")
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn effect_cols(id: &EffectId) -> (Uuid, i64, i32) {
    (uuid(id.order_id), i64::from(id.seq), i32::from(id.index))
}

fn effect_id(order: Uuid, seq: i64, idx: i32) -> Option<EffectId> {
    Some(EffectId { order_id: order_id(order), seq: u32::try_from(seq).ok()?, index: u16::try_from(idx).ok()? })
}

/// A stored row: where it is (its `ctid`, to set it aside) and its JSON text.
struct Raw {
    ctid: String,
    text: String,
}

impl PgStore {
    /// Connects, migrates and counts the rows metrics show (re-read every
    /// `COUNTS_REFRESH` from then on).
    ///
    /// # Errors
    /// `Io` when the database cannot be reached or migrated.
    pub async fn open(options: &PgOptions) -> Result<Arc<PgStore>, StoreError> {
        let pool = connect(options).await?;
        let store = PgStore::over(pool, options.lease).await?;
        store.refresh_counts();
        Ok(store)
    }

    /// The store over a pool whose database is migrated already.
    ///
    /// # Errors
    /// `Io` when the database cannot be read.
    pub async fn over(pool: PgPool, lease: Duration) -> Result<Arc<PgStore>, StoreError> {
        let [pending, dead, quarantined, unmatched] = recount(&pool).await?;
        let store = Arc::new(PgStore {
            pool,
            holder: format!("{}:{}:{:08x}", hostname(), std::process::id(), fastrand::u32(..)),
            lease,
            commits: AtomicU64::new(0),
            pending: AtomicU64::new(pending),
            dead: AtomicU64::new(dead),
            quarantined: AtomicU64::new(quarantined),
            unmatched: AtomicU64::new(unmatched),
        });
        Ok(store)
    }

    /// Re-reads the counts every `COUNTS_REFRESH` while the store lives (other replicas
    /// change them). `open` starts it.
    pub fn refresh_counts(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(COUNTS_REFRESH).await;
                let Some(store) = weak.upgrade() else { return };
                let before = store.commits.load(Ordering::SeqCst);
                match recount(&store.pool).await {
                    Ok([p, d, q, u]) if store.commits.load(Ordering::SeqCst) == before => {
                        store.pending.store(p, Ordering::Relaxed);
                        store.dead.store(d, Ordering::Relaxed);
                        store.quarantined.store(q, Ordering::Relaxed);
                        store.unmatched.store(u, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot re-read the queue counts; will try again"),
                }
            }
        });
    }

    /// This process's name in claims and leases (host, pid and a random part).
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The pool (for `store copy` and tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Sets a row that cannot be decoded aside: removed from `table`, kept whole in
    /// `quarantine` under (`table`, `key`), counted, and said at error level.
    async fn quarantine(&self, table: &'static str, key: &str, raw: &Raw, what: &str, error: &str) -> StoreError {
        tracing::error!(row = what, error, "a stored row cannot be read; it is quarantined and the rest goes on");
        let moved = async {
            let mut tx = self.pool.begin().await.map_err(db)?;
            let gone = sqlx::query(&format!("DELETE FROM {table} WHERE ctid = $1::tid"))
                .bind(&raw.ctid)
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
            if gone == 0 {
                // Changed since it was read: the next read sees the new row.
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO quarantine (space, key, what, error, at, raw) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (space, key) DO UPDATE SET what = EXCLUDED.what, error = EXCLUDED.error,
                 at = EXCLUDED.at, raw = EXCLUDED.raw",
            )
            .bind(table)
            .bind(key)
            .bind(what)
            .bind(error)
            .bind(Utc::now())
            .bind(&raw.text)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)?;
            Ok::<bool, StoreError>(true)
        };
        match moved.await {
            Ok(true) => {
                match table {
                    "outbox" => sub(&self.pending, 1),
                    "dead_letters" => sub(&self.dead, 1),
                    "unmatched_payments" => sub(&self.unmatched, 1),
                    _ => {}
                }
                self.quarantined.fetch_add(1, Ordering::Relaxed);
                StoreError::Quarantined(what.to_owned())
            }
            Ok(false) => StoreError::Conflict(format!("{what} changed while it was read")),
            Err(e) => e,
        }
    }

    /// Decodes a row, quarantining it when it cannot be.
    async fn read<T: DeserializeOwned>(
        &self,
        table: &'static str,
        key: &str,
        raw: &Raw,
        what: impl Fn() -> String,
    ) -> Result<T, StoreError> {
        match serde_json::from_str(&raw.text) {
            Ok(v) => Ok(v),
            Err(e) => Err(self.quarantine(table, key, raw, &what(), &e.to_string()).await),
        }
    }

    /// Rows decoded in order; undecodable ones are quarantined and skipped.
    async fn decode_all<T: DeserializeOwned>(
        &self,
        table: &'static str,
        rows: Vec<(String, Raw)>,
        what: &str,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::with_capacity(rows.len());
        for (key, raw) in rows {
            match self.read(table, &key, &raw, || format!("{what} {key}")).await {
                Ok(v) => out.push(v),
                Err(StoreError::Quarantined(_) | StoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn load_order(&self, id: OrderId) -> Result<Option<OrderRecord>, StoreError> {
        let row = sqlx::query("SELECT ctid::text, record::text FROM orders WHERE id = $1")
            .bind(uuid(id))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        match row {
            Some(r) => {
                let raw = Raw { ctid: r.get(0), text: r.get(1) };
                self.read("orders", &id.to_string(), &raw, || format!("order {id}")).await.map(Some)
            }
            None => {
                let q: Option<i32> = sqlx::query_scalar("SELECT 1 FROM quarantine WHERE space = 'orders' AND key = $1")
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db)?;
                match q {
                    Some(_) => Err(StoreError::Quarantined(format!("order {id}"))),
                    None => Ok(None),
                }
            }
        }
    }

    async fn effects(&self, sql: &str, binds: (Option<i64>, i64)) -> Result<Vec<EffectRecord>, StoreError> {
        let mut q = sqlx::query(sql);
        if let Some(b) = binds.0 {
            q = q.bind(b);
        }
        let rows = q.bind(binds.1).fetch_all(&self.pool).await.map_err(db)?;
        let rows = rows
            .into_iter()
            .map(|r| {
                let key = effect_id(r.get(2), r.get(3), r.get(4)).map(|i| i.to_string()).unwrap_or_default();
                (key, Raw { ctid: r.get(0), text: r.get(1) })
            })
            .collect();
        let table = if sql.contains("FROM dead_letters") { "dead_letters" } else { "outbox" };
        self.decode_all(table, rows, "effect").await
    }

    async fn commit_inner(&self, steps: Vec<Step>) -> Result<(), StoreError> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        let mut delta = [0i64; 3];
        let mut tx = self.pool.begin().await.map_err(db)?;
        for step in steps {
            // On an error the transaction is dropped: rolled back, nothing written.
            add_step(&mut tx, step, &mut delta).await?;
        }
        // Counted before the rows can be read, as on the embedded engines: a listing
        // is never ahead of the count. Taken back if the commit fails.
        add(&self.pending, delta[0]);
        add(&self.dead, delta[1]);
        add(&self.unmatched, delta[2]);
        if let Err(e) = tx.commit().await {
            add(&self.pending, -delta[0]);
            add(&self.dead, -delta[1]);
            add(&self.unmatched, -delta[2]);
            return Err(db(e));
        }
        Ok(())
    }
}

/// The rows `counts` reports: pending, dead, quarantined, unmatched.
async fn recount(pool: &PgPool) -> Result<[u64; 4], StoreError> {
    let row = sqlx::query(
        "SELECT (SELECT count(*) FROM outbox), (SELECT count(*) FROM dead_letters),
                (SELECT count(*) FROM quarantine), (SELECT count(*) FROM unmatched_payments)",
    )
    .fetch_one(pool)
    .await
    .map_err(db)?;
    let n = |i: usize| u64::try_from(row.get::<i64, _>(i)).unwrap_or(0);
    Ok([n(0), n(1), n(2), n(3)])
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn add(a: &AtomicU64, d: i64) {
    if d >= 0 {
        a.fetch_add(d.unsigned_abs(), Ordering::Relaxed);
    } else {
        sub(a, d.unsigned_abs());
    }
}

fn sub(a: &AtomicU64, d: u64) {
    let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(d)));
}

fn conflict<T>(m: String) -> Result<T, StoreError> {
    Err(StoreError::Conflict(m))
}

async fn exec(
    tx: &mut PgConnection,
    q: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<u64, StoreError> {
    Ok(q.execute(tx).await.map_err(db)?.rows_affected())
}

/// Removes a pending effect as it was read (id and due time); `false` when it is not.
async fn take_pending(tx: &mut PgConnection, e: &EffectRecord) -> Result<bool, StoreError> {
    let (o, s, i) = effect_cols(&e.id);
    let q = sqlx::query("DELETE FROM outbox WHERE order_id = $1 AND seq = $2 AND idx = $3 AND due_ms = $4")
        .bind(o)
        .bind(s)
        .bind(i)
        .bind(ms(e.next_at));
    Ok(exec(tx, q).await? == 1)
}

async fn put_pending(tx: &mut PgConnection, e: &EffectRecord) -> Result<(), StoreError> {
    let (o, s, i) = effect_cols(&e.id);
    let q = sqlx::query("INSERT INTO outbox (order_id, seq, idx, due_ms, record) VALUES ($1, $2, $3, $4, $5::json)")
        .bind(o)
        .bind(s)
        .bind(i)
        .bind(ms(e.next_at))
        .bind(json(e));
    exec(tx, q).await.map(drop)
}

/// Checks a step's preconditions and writes its rows in the transaction `tx`; adds
/// the changes to the pending and dead counts to `delta`.
async fn add_step(tx: &mut PgConnection, step: Step, delta: &mut [i64; 3]) -> Result<(), StoreError> {
    let Step { order, events, outbox, digests, spend, payment, jobs } = step;
    if let Some(w) = order {
        let rec = &w.record;
        let after = Loaded::of(rec);
        let timer = after.next_timer.map(ms);
        match &w.loaded {
            None => {
                let q = sqlx::query(
                    "INSERT INTO external_ids (connector, external_id, order_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(rec.source.connector.as_str())
                .bind(rec.source.id.as_str())
                .bind(uuid(rec.id));
                if exec(tx, q).await? == 0 {
                    return conflict(format!("{}/{} is already an order", rec.source.connector, rec.source.id));
                }
                let q = sqlx::query(
                    "INSERT INTO orders (id, last_seq, state, timer_ms, customer, prior, record)
                     VALUES ($1, $2, $3, $4, $5, $6::json, $7::json) ON CONFLICT (id) DO NOTHING",
                )
                .bind(uuid(rec.id))
                .bind(i64::from(rec.last_seq))
                .bind(after.state)
                .bind(timer)
                .bind(&after.customer)
                .bind(json(&after.prior))
                .bind(json(rec));
                if exec(tx, q).await? == 0 {
                    return conflict(format!("order {} exists already", rec.id));
                }
            }
            Some(l) => {
                // The row lock taken here serialises steps of one order: a concurrent
                // step waits for this transaction, then finds `last_seq` moved on.
                let q = sqlx::query(
                    "UPDATE orders SET last_seq = $2, state = $3, timer_ms = $4, customer = $5, prior = $6::json,
                     record = $7::json WHERE id = $1 AND last_seq = $8",
                )
                .bind(uuid(rec.id))
                .bind(i64::from(rec.last_seq))
                .bind(after.state)
                .bind(timer)
                .bind(&after.customer)
                .bind(json(&after.prior))
                .bind(json(rec))
                .bind(i64::from(l.last_seq));
                if exec(tx, q).await? == 0 {
                    let stored: Option<i64> = sqlx::query_scalar("SELECT last_seq FROM orders WHERE id = $1")
                        .bind(uuid(rec.id))
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db)?;
                    return conflict(format!(
                        "order {} moved on (event {} stored, {} loaded)",
                        rec.id,
                        stored.unwrap_or(0),
                        l.last_seq
                    ));
                }
            }
        }
        if let Some(n) = &after.invoice
            && w.loaded.as_ref().and_then(|l| l.invoice.as_ref()) != Some(n)
        {
            let q = sqlx::query(
                "INSERT INTO invoices (number, order_id) VALUES ($1, $2)
                 ON CONFLICT (number) DO UPDATE SET order_id = EXCLUDED.order_id",
            )
            .bind(n)
            .bind(uuid(rec.id));
            exec(tx, q).await?;
        }
    }
    if !events.is_empty() {
        let ids: Vec<Uuid> = events.iter().map(|e| uuid(e.order_id)).collect();
        let seqs: Vec<i64> = events.iter().map(|e| i64::from(e.seq)).collect();
        let rows: Vec<String> = events.iter().map(json).collect();
        // A sequence number taken already is a unique violation: `Conflict`.
        let q = sqlx::query(
            "INSERT INTO events (order_id, seq, record)
             SELECT o, s, r::json FROM UNNEST($1::uuid[], $2::bigint[], $3::text[]) AS t(o, s, r)",
        )
        .bind(ids)
        .bind(seqs)
        .bind(rows);
        exec(tx, q).await?;
    }
    for c in outbox {
        match c {
            OutboxChange::Add(e) => {
                put_pending(tx, &e).await?;
                delta[0] += 1;
            }
            OutboxChange::Reschedule { from, to } => {
                if !take_pending(tx, &from).await? {
                    return conflict(format!("effect {} is no longer pending as read", from.id));
                }
                put_pending(tx, &to).await?;
            }
            OutboxChange::Remove(e) => {
                if !take_pending(tx, &e).await? {
                    return conflict(format!("effect {} is no longer pending as read", e.id));
                }
                delta[0] -= 1;
            }
            OutboxChange::Bury { from, dead } => {
                if !take_pending(tx, &from).await? {
                    return conflict(format!("effect {} is no longer pending as read", from.id));
                }
                let (o, s, i) = effect_cols(&dead.id);
                let q = sqlx::query(
                    "INSERT INTO dead_letters (order_id, seq, idx, record) VALUES ($1, $2, $3, $4::json)
                     ON CONFLICT (order_id, seq, idx) DO UPDATE SET record = EXCLUDED.record",
                )
                .bind(o)
                .bind(s)
                .bind(i)
                .bind(json(&dead));
                exec(tx, q).await?;
                delta[0] -= 1;
                delta[1] += 1;
            }
            OutboxChange::Revive { dead, to } => {
                let (o, s, i) = effect_cols(&dead);
                let q = sqlx::query("DELETE FROM dead_letters WHERE order_id = $1 AND seq = $2 AND idx = $3")
                    .bind(o)
                    .bind(s)
                    .bind(i);
                if exec(tx, q).await? == 0 {
                    return conflict(format!("dead letter {dead} was replayed already"));
                }
                put_pending(tx, &to).await?;
                delta[0] += 1;
                delta[1] -= 1;
            }
        }
    }
    for c in digests {
        match c {
            DigestChange::Hold(k, item) => {
                let (o, s, i) = effect_cols(&k.effect);
                let q = sqlx::query(
                    "INSERT INTO digest_items (grp, order_id, seq, idx, item) VALUES ($1, $2, $3, $4, $5::json)
                     ON CONFLICT (grp, order_id, seq, idx) DO UPDATE SET item = EXCLUDED.item",
                )
                .bind(&k.group)
                .bind(o)
                .bind(s)
                .bind(i)
                .bind(json(&*item));
                exec(tx, q).await?;
            }
            DigestChange::Release(k) => {
                let (o, s, i) = effect_cols(&k.effect);
                let q =
                    sqlx::query("DELETE FROM digest_items WHERE grp = $1 AND order_id = $2 AND seq = $3 AND idx = $4")
                        .bind(&k.group)
                        .bind(o)
                        .bind(s)
                        .bind(i);
                if exec(tx, q).await? == 0 {
                    return conflict(format!("digest item {} of {} was sent already", k.effect, k.group));
                }
            }
        }
    }
    if let Some((once, used)) = spend {
        let q = sqlx::query("INSERT INTO used_links (link_id, used) VALUES ($1, $2::json) ON CONFLICT DO NOTHING")
            .bind(&once)
            .bind(json(&used));
        if exec(tx, q).await? == 0 {
            let before: Option<String> = sqlx::query_scalar("SELECT used::text FROM used_links WHERE link_id = $1")
                .bind(&once)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
            let at = before
                .and_then(|t| serde_json::from_str::<UsedLink>(&t).ok())
                .map(|u| u.at.to_rfc3339())
                .unwrap_or_else(|| "earlier".into());
            return conflict(format!("this link was already used ({at})"));
        }
    }
    match payment {
        None => {}
        Some(PaymentWrite::Reported { source, payment_id, outcome, unmatched }) => {
            let q = sqlx::query(
                "INSERT INTO payments (source, payment_id, outcome) VALUES ($1, $2, $3::json) ON CONFLICT DO NOTHING",
            )
            .bind(&source)
            .bind(&payment_id)
            .bind(json(&outcome));
            if exec(tx, q).await? == 0 {
                return conflict(format!("payment {source}/{payment_id} was recorded already"));
            }
            if let Some(u) = unmatched {
                let q = sqlx::query(
                    "INSERT INTO unmatched_payments (source, payment_id, payment) VALUES ($1, $2, $3::json)
                     ON CONFLICT (source, payment_id) DO UPDATE SET payment = EXCLUDED.payment",
                )
                .bind(&source)
                .bind(&payment_id)
                .bind(json(&u));
                exec(tx, q).await?;
                delta[2] += 1;
            }
        }
        Some(PaymentWrite::Assigned { source, payment_id, outcome }) => {
            let q = sqlx::query("DELETE FROM unmatched_payments WHERE source = $1 AND payment_id = $2")
                .bind(&source)
                .bind(&payment_id);
            if exec(tx, q).await? == 0 {
                return conflict(format!("payment {source}/{payment_id} is no longer waiting"));
            }
            delta[2] -= 1;
            let q = sqlx::query(
                "INSERT INTO payments (source, payment_id, outcome) VALUES ($1, $2, $3::json)
                 ON CONFLICT (source, payment_id) DO UPDATE SET outcome = EXCLUDED.outcome",
            )
            .bind(&source)
            .bind(&payment_id)
            .bind(json(&outcome));
            exec(tx, q).await?;
        }
    }
    for (name, value) in jobs {
        let q = sqlx::query(
            "INSERT INTO jobs (name, state) VALUES ($1, $2::json) ON CONFLICT (name) DO UPDATE SET state = EXCLUDED.state",
        )
        .bind(&name)
        .bind(json(&value));
        exec(tx, q).await?;
    }
    Ok(())
}

/// Reads one JSON column of one row by a text key; `(ctid, text)`.
async fn one(pool: &PgPool, sql: &str, binds: &[&str]) -> Result<Option<Raw>, StoreError> {
    let mut q = sqlx::query(sql);
    for b in binds {
        q = q.bind(*b);
    }
    let row = q.fetch_optional(pool).await.map_err(db)?;
    Ok(row.map(|r| Raw { ctid: r.get(0), text: r.get(1) }))
}

const EFFECT_COLS: &str = "ctid::text, record::text, order_id, seq, idx";

impl Store for PgStore {
    fn commit(&self, steps: Vec<Step>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.commit_inner(steps))
    }

    /// Every commit is durable when it returns (synchronous commit).
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// PostgreSQL being unreachable is not fatal: commits fail (`Io`, a 503) until
    /// it is back, and nothing is lost.
    fn failure(&self) -> Option<String> {
        None
    }

    fn sync_running_for(&self) -> Option<Duration> {
        None
    }

    fn order(&self, id: OrderId) -> BoxFuture<'_, Result<Option<OrderRecord>, StoreError>> {
        Box::pin(self.load_order(id))
    }

    fn events(&self, id: OrderId) -> BoxFuture<'_, Result<Vec<EventRecord>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT ctid::text, record::text, seq FROM events WHERE order_id = $1 ORDER BY seq")
                .bind(uuid(id))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
            let rows = rows
                .into_iter()
                .map(|r| (format!("{id}.{}", r.get::<i64, _>(2)), Raw { ctid: r.get(0), text: r.get(1) }))
                .collect();
            self.decode_all("events", rows, "event").await
        })
    }

    fn find_external<'a>(&'a self, source: &'a ExternalRef) -> BoxFuture<'a, Result<Option<OrderId>, StoreError>> {
        Box::pin(async move {
            let id: Option<Uuid> =
                sqlx::query_scalar("SELECT order_id FROM external_ids WHERE connector = $1 AND external_id = $2")
                    .bind(source.connector.as_str())
                    .bind(source.id.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db)?;
            Ok(id.map(order_id))
        })
    }

    fn list<'a>(
        &'a self,
        state: Option<&'a str>,
        after: Option<OrderId>,
        n: usize,
    ) -> BoxFuture<'a, Result<Vec<OrderRecord>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT ctid::text, record::text, id FROM orders
                 WHERE ($1::text IS NULL OR state = $1) AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3",
            )
            .bind(state)
            .bind(after.map(uuid))
            .bind(limit(n))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
            let rows = rows
                .into_iter()
                .map(|r| (order_id(r.get(2)).to_string(), Raw { ctid: r.get(0), text: r.get(1) }))
                .collect();
            self.decode_all("orders", rows, "order").await
        })
    }

    fn customer_orders<'a>(
        &'a self,
        customer: &'a str,
        since: Option<DateTime<Utc>>,
    ) -> BoxFuture<'a, Result<Vec<(OrderId, Prior)>, StoreError>> {
        Box::pin(async move {
            // Order ids are UUIDv7: their first 48 bits are the creation time in ms,
            // so the window's start is an id.
            let from = since.map(|t| {
                let mut b = [0u8; 16];
                b[..6].copy_from_slice(&ms(t).to_be_bytes()[2..]);
                Uuid::from_bytes(b)
            });
            let rows = sqlx::query(
                "SELECT ctid::text, prior::text, id FROM orders
                 WHERE customer = $1 AND ($2::uuid IS NULL OR id >= $2) ORDER BY id",
            )
            .bind(customer)
            .bind(from)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
            let since_ms = since.map(|t| t.timestamp_millis());
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let id = order_id(r.get(2));
                let raw = Raw { ctid: r.get(0), text: r.get(1) };
                match self.read::<Prior>("orders", &id.to_string(), &raw, || format!("order {id}")).await {
                    Ok(p) if since_ms.is_none_or(|s| id.created_ms() >= s) => out.push((id, p)),
                    Ok(_) | Err(StoreError::Quarantined(_) | StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(out)
        })
    }

    fn invoice_order<'a>(&'a self, number: &'a str) -> BoxFuture<'a, Result<Option<OrderId>, StoreError>> {
        Box::pin(async move {
            let id: Option<Uuid> = sqlx::query_scalar("SELECT order_id FROM invoices WHERE number = $1")
                .bind(number)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
            Ok(id.map(order_id))
        })
    }

    fn payment<'a>(
        &'a self,
        source: &'a str,
        payment_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<PaymentOutcome>, StoreError>> {
        Box::pin(async move {
            let sql = "SELECT ctid::text, outcome::text FROM payments WHERE source = $1 AND payment_id = $2";
            match one(&self.pool, sql, &[source, payment_id]).await? {
                None => Ok(None),
                Some(raw) => {
                    let key = format!("{source}/{payment_id}");
                    self.read("payments", &key, &raw, || format!("payment {key}")).await.map(Some)
                }
            }
        })
    }

    fn unmatched_payments(&self) -> BoxFuture<'_, Result<Vec<UnmatchedPayment>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT ctid::text, payment::text, source, payment_id FROM unmatched_payments ORDER BY source, payment_id",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
            let rows = rows
                .into_iter()
                .map(|r| {
                    (
                        format!("{}/{}", r.get::<String, _>(2), r.get::<String, _>(3)),
                        Raw { ctid: r.get(0), text: r.get(1) },
                    )
                })
                .collect();
            self.decode_all("unmatched_payments", rows, "unmatched payment").await
        })
    }

    fn used<'a>(&'a self, once: &'a str) -> BoxFuture<'a, Result<Option<UsedLink>, StoreError>> {
        Box::pin(async move {
            let sql = "SELECT ctid::text, used::text FROM used_links WHERE link_id = $1";
            match one(&self.pool, sql, &[once]).await? {
                None => Ok(None),
                Some(raw) => self.read("used_links", once, &raw, || "a spent link".to_owned()).await.map(Some),
            }
        })
    }

    fn job_state<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<serde_json::Value>, StoreError>> {
        Box::pin(async move {
            let sql = "SELECT ctid::text, state::text FROM jobs WHERE name = $1";
            match one(&self.pool, sql, &[name]).await? {
                None => Ok(None),
                Some(raw) => self.read("jobs", name, &raw, || format!("job state {name}")).await.map(Some),
            }
        })
    }

    fn due_timers(&self, now: DateTime<Utc>, n: usize) -> BoxFuture<'_, Result<Vec<DueTimer>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT id, timer_ms FROM orders WHERE timer_ms IS NOT NULL AND timer_ms <= $1 ORDER BY timer_ms, id LIMIT $2",
            )
            .bind(ms(now))
            .bind(limit(n))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
            Ok(rows
                .into_iter()
                .map(|r| {
                    let due = DateTime::from_timestamp_millis(r.get(1)).unwrap_or(now);
                    (order_id(r.get(0)), due)
                })
                .collect())
        })
    }

    fn digest_items(&self) -> BoxFuture<'_, Result<Vec<(DigestKey, DigestItem)>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT ctid::text, item::text, grp, order_id, seq, idx FROM digest_items ORDER BY grp, order_id, seq, idx",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let Some(effect) = effect_id(r.get(3), r.get(4), r.get(5)) else { continue };
                let group: String = r.get(2);
                let raw = Raw { ctid: r.get(0), text: r.get(1) };
                let key = format!("{group}/{effect}");
                match self.read::<DigestItem>("digest_items", &key, &raw, || format!("digest item {key}")).await {
                    Ok(item) => out.push((DigestKey { group, effect }, item)),
                    Err(StoreError::Quarantined(_) | StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(out)
        })
    }

    fn due_effects(&self, now: DateTime<Utc>, n: usize) -> BoxFuture<'_, Result<Vec<EffectRecord>, StoreError>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT {EFFECT_COLS} FROM outbox WHERE due_ms <= $1 ORDER BY due_ms, order_id, seq, idx LIMIT $2"
            );
            self.effects(&sql, (Some(ms(now)), limit(n))).await
        })
    }

    /// Due effects not claimed by a live replica, of the connectors `filter` keeps
    /// (applied in SQL, before the limit).
    fn due_effects_where<'a>(
        &'a self,
        now: DateTime<Utc>,
        n: usize,
        filter: &'a super::ConnectorFilter,
    ) -> BoxFuture<'a, Result<Vec<EffectRecord>, StoreError>> {
        Box::pin(async move {
            let skip: Vec<&str> = filter.skip.iter().map(String::as_str).collect();
            let only: Option<Vec<&str>> = filter.only.as_ref().map(|o| o.iter().map(String::as_str).collect());
            let sql = format!(
                "SELECT {EFFECT_COLS} FROM outbox WHERE due_ms <= $1
                 AND (claimed_until IS NULL OR claimed_until < now())
                 AND NOT (record->>'connector' = ANY($2::text[]))
                 AND ($3::text[] IS NULL OR record->>'connector' = ANY($3::text[]))
                 ORDER BY due_ms, order_id, seq, idx LIMIT $4"
            );
            let rows = sqlx::query(&sql)
                .bind(ms(now))
                .bind(skip)
                .bind(only)
                .bind(limit(n))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
            let rows = rows
                .into_iter()
                .map(|r| {
                    let key = effect_id(r.get(2), r.get(3), r.get(4)).map(|i| i.to_string()).unwrap_or_default();
                    (key, Raw { ctid: r.get(0), text: r.get(1) })
                })
                .collect();
            self.decode_all("outbox", rows, "effect").await
        })
    }

    /// One `UPDATE` of the row as listed: the row lock makes a concurrent claim wait,
    /// then find it claimed.
    fn claim<'a>(
        &'a self,
        effect: &'a EffectRecord,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<EffectRecord>, StoreError>> {
        Box::pin(async move {
            let (o, s, i) = effect_cols(&effect.id);
            let row = sqlx::query(
                "UPDATE outbox SET claimed_by = $5, claimed_until = now() + $6 * interval '1 millisecond'
                 WHERE order_id = $1 AND seq = $2 AND idx = $3 AND due_ms = $4 AND due_ms <= $7
                 AND (claimed_until IS NULL OR claimed_until < now() OR claimed_by = $5)
                 RETURNING ctid::text, record::text",
            )
            .bind(o)
            .bind(s)
            .bind(i)
            .bind(ms(effect.next_at))
            .bind(&self.holder)
            .bind(millis(self.lease))
            .bind(ms(now))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
            match row {
                None => Ok(None),
                Some(r) => {
                    let raw = Raw { ctid: r.get(0), text: r.get(1) };
                    let key = effect.id.to_string();
                    self.read("outbox", &key, &raw, || format!("effect {key}")).await.map(Some)
                }
            }
        })
    }

    fn renew_claim<'a>(&'a self, effect: &'a EffectRecord) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let (o, s, i) = effect_cols(&effect.id);
            let q = sqlx::query(
                "UPDATE outbox SET claimed_until = now() + $5 * interval '1 millisecond'
                 WHERE order_id = $1 AND seq = $2 AND idx = $3 AND claimed_by = $4",
            )
            .bind(o)
            .bind(s)
            .bind(i)
            .bind(&self.holder)
            .bind(millis(self.lease));
            Ok(q.execute(&self.pool).await.map_err(db)?.rows_affected() > 0)
        })
    }

    fn claim_renewal(&self) -> Option<Duration> {
        Some(self.lease / 3)
    }

    /// Inserts the lease, or takes it over when it lapsed or is ours already; a row
    /// comes back only when this process holds it.
    fn try_lease<'a>(&'a self, job: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let held: Option<i32> = sqlx::query_scalar(
                "INSERT INTO job_leases (name, holder, until) VALUES ($1, $2, now() + $3 * interval '1 millisecond')
                 ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, until = EXCLUDED.until
                 WHERE job_leases.until < now() OR job_leases.holder = EXCLUDED.holder
                 RETURNING 1",
            )
            .bind(job)
            .bind(&self.holder)
            .bind(millis(ttl))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
            Ok(held.is_some())
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { sqlx::query("SELECT 1").execute(&self.pool).await.map(drop).map_err(db) })
    }

    fn current<'a>(&'a self, effect: &'a EffectRecord) -> BoxFuture<'a, Result<Option<EffectRecord>, StoreError>> {
        Box::pin(async move {
            let (o, s, i) = effect_cols(&effect.id);
            let row = sqlx::query(
                "SELECT ctid::text, record::text FROM outbox WHERE order_id = $1 AND seq = $2 AND idx = $3 AND due_ms = $4",
            )
            .bind(o)
            .bind(s)
            .bind(i)
            .bind(ms(effect.next_at))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
            match row {
                None => Ok(None),
                Some(r) => {
                    let raw = Raw { ctid: r.get(0), text: r.get(1) };
                    let key = effect.id.to_string();
                    self.read("outbox", &key, &raw, || format!("effect {key}")).await.map(Some)
                }
            }
        })
    }

    fn pending_effects(&self, n: usize) -> BoxFuture<'_, Result<Vec<EffectRecord>, StoreError>> {
        Box::pin(async move {
            let sql = format!("SELECT {EFFECT_COLS} FROM outbox ORDER BY due_ms, order_id, seq, idx LIMIT $1");
            self.effects(&sql, (None, limit(n))).await
        })
    }

    fn dead_letters(&self, n: usize) -> BoxFuture<'_, Result<Vec<EffectRecord>, StoreError>> {
        Box::pin(async move {
            let sql = format!("SELECT {EFFECT_COLS} FROM dead_letters ORDER BY order_id, seq, idx LIMIT $1");
            self.effects(&sql, (None, limit(n))).await
        })
    }

    fn dead_letter<'a>(&'a self, id: &'a EffectId) -> BoxFuture<'a, Result<Option<EffectRecord>, StoreError>> {
        Box::pin(async move {
            let (o, s, i) = effect_cols(id);
            let row = sqlx::query(
                "SELECT ctid::text, record::text FROM dead_letters WHERE order_id = $1 AND seq = $2 AND idx = $3",
            )
            .bind(o)
            .bind(s)
            .bind(i)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
            match row {
                None => Ok(None),
                Some(r) => {
                    let raw = Raw { ctid: r.get(0), text: r.get(1) };
                    let key = id.to_string();
                    self.read("dead_letters", &key, &raw, || format!("dead letter {key}")).await.map(Some)
                }
            }
        })
    }

    fn quarantined(&self) -> BoxFuture<'_, Result<Vec<Quarantined>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT what, error, at, raw FROM quarantine ORDER BY space, key")
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
            Ok(rows
                .into_iter()
                .map(|r| Quarantined {
                    what: r.get(0),
                    error: r.get(1),
                    at: r.get(2),
                    raw_hex: hex::encode(r.get::<String, _>(3)),
                })
                .collect())
        })
    }

    fn counts(&self) -> Counts {
        Counts {
            pending: self.pending.load(Ordering::Relaxed),
            dead: self.dead.load(Ordering::Relaxed),
            quarantined: self.quarantined.load(Ordering::Relaxed),
            unmatched: self.unmatched.load(Ordering::Relaxed),
        }
    }
}

/// The tables `store copy` requires empty in a target database.
const DATA_TABLES: &[&str] = &[
    "orders",
    "events",
    "external_ids",
    "outbox",
    "dead_letters",
    "invoices",
    "payments",
    "unmatched_payments",
    "used_links",
    "digest_items",
    "jobs",
    "quarantine",
];

impl PgStore {
    /// Whether no table of the store holds a row (`store copy` writes only into an
    /// empty database).
    ///
    /// # Errors
    /// `Io` when the database cannot be read.
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        let sql = DATA_TABLES.iter().map(|t| format!("EXISTS (SELECT 1 FROM {t})")).collect::<Vec<_>>().join(" OR ");
        let any: bool = sqlx::query_scalar(&format!("SELECT {sql}")).fetch_one(&self.pool).await.map_err(db)?;
        Ok(!any)
    }

    /// A job lease still held (its name, holder and end), if any: a daemon runs on
    /// the database, or stopped less than a lease ago (`store copy` refuses then).
    ///
    /// # Errors
    /// `Io` when the database cannot be read.
    pub async fn live_lease(&self) -> Result<Option<(String, String, DateTime<Utc>)>, StoreError> {
        let row =
            sqlx::query("SELECT name, holder, until FROM job_leases WHERE until > now() ORDER BY until DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
    }

    /// Rows of `table` as (first key, second key, record), decoded; undecodable ones
    /// are quarantined and skipped. `cols` names the key columns (the second may be empty) and the record.
    async fn keyed<T: DeserializeOwned>(
        &self,
        table: &'static str,
        cols: [&str; 3],
        what: &str,
    ) -> Result<Vec<(String, String, T)>, StoreError> {
        let [a, b, body] = cols;
        let order = if b.is_empty() { a.to_owned() } else { format!("{a}, {b}") };
        let b = if b.is_empty() { "''::text" } else { b };
        let rows = sqlx::query(&format!("SELECT {a}, {b}, ctid::text, {body}::text FROM {table} ORDER BY {order}"))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let (ka, kb): (String, String) = (r.get(0), r.get(1));
            let raw = Raw { ctid: r.get(2), text: r.get(3) };
            let key = if kb.is_empty() { ka.clone() } else { format!("{ka}/{kb}") };
            match self.read(table, &key, &raw, || format!("{what} {key}")).await {
                Ok(v) => out.push((ka, kb, v)),
                Err(StoreError::Quarantined(_) | StoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// What `store copy` reads besides the listings of the `Store` trait: payments
    /// seen, spent links, job state and the quarantine (`dump::Extras`).
    ///
    /// # Errors
    /// `Io` when the database cannot be read.
    pub async fn extras(&self) -> Result<super::dump::Extras, StoreError> {
        let payments = self.keyed("payments", ["source", "payment_id", "outcome"], "payment").await?;
        let links = self.keyed::<UsedLink>("used_links", ["link_id", "", "used"], "spent link").await?;
        let jobs = self.keyed::<serde_json::Value>("jobs", ["name", "", "state"], "job state").await?;
        let rows = sqlx::query("SELECT space, key, what, error, at, raw FROM quarantine ORDER BY space, key")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let quarantine = rows
            .into_iter()
            .map(|r| {
                let q = Quarantined {
                    what: r.get(2),
                    error: r.get(3),
                    at: r.get(4),
                    raw_hex: hex::encode(r.get::<String, _>(5)),
                };
                (r.get(0), r.get(1), q)
            })
            .collect();
        Ok(super::dump::Extras {
            payments,
            links: links.into_iter().map(|(k, _, v)| (k, v)).collect(),
            jobs: jobs.into_iter().map(|(k, _, v)| (k, v)).collect(),
            quarantine,
        })
    }

    /// Keeps quarantined rows copied from another store (`store copy`) under
    /// (`copied:` ‖ space, key); the raw bytes as text (invalid UTF-8 replaced).
    ///
    /// # Errors
    /// `Io` when the database cannot be written.
    pub async fn add_quarantined(&self, rows: &[(String, String, Quarantined)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        for (space, key, q) in rows {
            let raw = hex::decode(&q.raw_hex).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
            sqlx::query(
                "INSERT INTO quarantine (space, key, what, error, at, raw) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT DO NOTHING",
            )
            .bind(format!("copied:{space}"))
            .bind(key)
            .bind(&q.what)
            .bind(&q.error)
            .bind(q.at)
            .bind(raw.replace('\0', "\u{fffd}"))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        self.quarantined.fetch_add(rows.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}
