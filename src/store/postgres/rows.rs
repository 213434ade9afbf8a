//! Reading rows on PostgreSQL: a JSON row decoded, or, when it cannot be, moved to
//! `quarantine` (counted and said) while the other rows go on.

use std::sync::atomic::Ordering;

use chrono::Utc;
use serde::de::DeserializeOwned;
use sqlx::Row;

use super::{PgStore, Raw, db, effect_id, sub, uuid};
use crate::domain::OrderId;
use crate::store::StoreError;
use crate::store::records::{EffectRecord, OrderRecord};

impl PgStore {
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
                 at = EXCLUDED.at, raw = EXCLUDED.raw, resolution = NULL",
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
    pub(super) async fn read<T: DeserializeOwned>(
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
    pub(super) async fn decode_all<T: DeserializeOwned>(
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

    pub(super) async fn load_order(&self, id: OrderId) -> Result<Option<OrderRecord>, StoreError> {
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

    pub(super) async fn effects(&self, sql: &str, binds: (Option<i64>, i64)) -> Result<Vec<EffectRecord>, StoreError> {
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
}
