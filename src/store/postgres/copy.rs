//! What `store copy` reads from and writes to a PostgreSQL store beyond the `Store`
//! verbs: whether it is empty, whether a daemon still holds a lease, the `Extras`
//! (payments seen, spent links, job state, quarantine) and copied quarantine rows.

use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use sqlx::Row;

use super::{PgStore, Raw, db};
use crate::store::extras::Extras;
use crate::store::{Quarantined, StoreError, UsedLink};

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
    pub(crate) async fn is_empty(&self) -> Result<bool, StoreError> {
        let sql = DATA_TABLES.iter().map(|t| format!("EXISTS (SELECT 1 FROM {t})")).collect::<Vec<_>>().join(" OR ");
        let any: bool = sqlx::query_scalar(&format!("SELECT {sql}")).fetch_one(&self.pool).await.map_err(db)?;
        Ok(!any)
    }

    /// A job lease still held (its name, holder and end), if any: a daemon runs on
    /// the database, or stopped less than a lease ago (`store copy` refuses then).
    ///
    /// # Errors
    /// `Io` when the database cannot be read.
    pub(crate) async fn live_lease(&self) -> Result<Option<(String, String, DateTime<Utc>)>, StoreError> {
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
    /// seen, spent links, job state and the quarantine (`Extras`).
    ///
    /// # Errors
    /// `Io` when the database cannot be read.
    pub(crate) async fn extras(&self) -> Result<Extras, StoreError> {
        let payments = self.keyed("payments", ["source", "payment_id", "outcome"], "payment").await?;
        let links = self.keyed::<UsedLink>("used_links", ["link_id", "", "used"], "spent link").await?;
        let jobs = self.keyed::<serde_json::Value>("jobs", ["name", "", "state"], "job state").await?;
        let rows = sqlx::query(
            "SELECT space, key, what, error, at, raw, resolution::text FROM quarantine ORDER BY space, key",
        )
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
                    resolved: super::quarantine::resolution(r.get(6)),
                };
                (r.get(0), r.get(1), q)
            })
            .collect();
        Ok(Extras {
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
    pub(crate) async fn add_quarantined(&self, rows: &[(String, String, Quarantined)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        for (space, key, q) in rows {
            let raw = hex::decode(&q.raw_hex).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
            sqlx::query(
                "INSERT INTO quarantine (space, key, what, error, at, raw, resolution)
                 VALUES ($1, $2, $3, $4, $5, $6, $7::json) ON CONFLICT DO NOTHING",
            )
            .bind(format!("copied:{space}"))
            .bind(key)
            .bind(&q.what)
            .bind(&q.error)
            .bind(q.at)
            .bind(raw.replace('\0', "\u{fffd}"))
            .bind(q.resolved.as_ref().map(super::json))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        let unresolved = rows.iter().filter(|(_, _, q)| q.resolved.is_none()).count();
        self.quarantined.fetch_add(unresolved as u64, Ordering::Relaxed);
        Ok(())
    }
}
