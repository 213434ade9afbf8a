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
//!
//! This file opens the store (pool, migrations, counts); `commit.rs` is the step
//! commit with its SQL preconditions, `verbs.rs` the reads, claims, leases and scans
//! of the `Store` trait, `rows.rs` decoding rows and setting the unreadable aside, and
//! `copy.rs` what `store copy` reads and writes beyond the trait, `archive.rs` the
//! archive index and log (`migrations/0003_archive.sql`).

mod archive;
mod commit;
mod copy;
mod quarantine;
mod rows;
mod verbs;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use uuid::Uuid;

use super::StoreError;
use super::records::EffectId;
use crate::domain::OrderId;

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
    pub(crate) fn connect_options(&self) -> Result<PgConnectOptions, String> {
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
pub(crate) async fn migrate(options: &PgOptions) -> Result<(Vec<i64>, Vec<i64>), StoreError> {
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
pub(crate) const COUNTS_REFRESH: Duration = Duration::from_secs(5);

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
    pub(crate) async fn over(pool: PgPool, lease: Duration) -> Result<Arc<PgStore>, StoreError> {
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
    pub(crate) fn refresh_counts(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(COUNTS_REFRESH).await;
                let Some(store) = weak.upgrade() else { return };
                if store.pool.is_closed() {
                    return;
                }
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

    /// The pool (for `store copy` and tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// The rows `counts` reports: pending, dead, quarantined, unmatched.
async fn recount(pool: &PgPool) -> Result<[u64; 4], StoreError> {
    let row = sqlx::query(
        "SELECT (SELECT count(*) FROM outbox), (SELECT count(*) FROM dead_letters),
                (SELECT count(*) FROM quarantine WHERE resolution IS NULL), (SELECT count(*) FROM unmatched_payments)",
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
