//! Resolving a quarantined row on PostgreSQL: its `quarantine` row gets the
//! resolution (kept, never deleted) and a restored order row goes back into
//! `orders`, in one transaction. The application layer decided; this only writes.

use sqlx::Row;

use super::{PgStore, db, json, ms, sub, uuid};
use crate::store::records::OrderRecord;
use crate::store::{Loaded, Quarantined, Resolution, StoreError};

impl PgStore {
    /// `Store::resolve_quarantined` on PostgreSQL.
    pub(super) async fn resolve(
        &self,
        what: &str,
        resolution: Resolution,
        restore: Option<OrderRecord>,
    ) -> Result<Quarantined, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let row = sqlx::query(
            "SELECT space, key, error, at, raw FROM quarantine WHERE what = $1 AND resolution IS NULL
             ORDER BY space, key LIMIT 1 FOR UPDATE",
        )
        .bind(what)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::NotFound(format!("an unresolved quarantined row `{what}`")))?;
        let (space, key): (String, String) = (row.get(0), row.get(1));
        let q = Quarantined {
            what: what.to_owned(),
            error: row.get(2),
            at: row.get(3),
            raw_hex: hex::encode(row.get::<String, _>(4)),
            resolved: Some(resolution),
        };
        if let Some(rec) = restore {
            if q.order_id() != Some(rec.id) {
                return Err(StoreError::Conflict(format!("`{what}` is not the row of order {}", rec.id)));
            }
            let after = Loaded::of(&rec);
            let put = sqlx::query(
                "INSERT INTO orders (id, last_seq, state, timer_ms, customer, prior, record)
                 VALUES ($1, $2, $3, $4, $5, $6::json, $7::json) ON CONFLICT (id) DO NOTHING",
            )
            .bind(uuid(rec.id))
            .bind(i64::from(rec.last_seq))
            .bind(after.state)
            .bind(after.next_timer.map(ms))
            .bind(&after.customer)
            .bind(json(&after.prior))
            .bind(json(&rec))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            if put.rows_affected() == 0 {
                return Err(StoreError::Conflict(format!("order {} has a row again", rec.id)));
            }
        }
        sqlx::query("UPDATE quarantine SET resolution = $1::json WHERE space = $2 AND key = $3")
            .bind(json(&q.resolved))
            .bind(&space)
            .bind(&key)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        sub(&self.quarantined, 1);
        Ok(q)
    }
}

/// A stored resolution (`NULL`: unresolved); one that does not read is kept as unresolved.
pub(super) fn resolution(text: Option<String>) -> Option<Resolution> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}
