//! The archive index and log on PostgreSQL (`migrations/0003_archive.sql`): a move
//! deletes the order's rows and inserts its entry in the step's transaction; every
//! precondition is a statement that changes nothing when it no longer holds.

use sqlx::PgConnection;

use super::{PgStore, db, json, limit, order_id, uuid};
use crate::domain::OrderId;
use crate::store::{ArchiveChange, ArchiveEntry, ArchiveLogEntry, StoreError};

async fn exec(
    tx: &mut PgConnection,
    q: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<u64, StoreError> {
    Ok(q.execute(tx).await.map_err(db)?.rows_affected())
}

fn conflict<T>(m: String) -> Result<T, StoreError> {
    Err(StoreError::Conflict(m))
}

/// The archive index entry of order `id`; `Conflict` when it has one already.
async fn insert_entry(tx: &mut PgConnection, id: OrderId, entry: &ArchiveEntry) -> Result<(), StoreError> {
    let q = sqlx::query(
        "INSERT INTO archive_index (order_id, segment, entry) VALUES ($1, $2, $3::json) ON CONFLICT DO NOTHING",
    )
    .bind(uuid(id))
    .bind(&entry.segment)
    .bind(json(entry));
    if exec(tx, q).await? == 0 {
        return conflict(format!("order {id} is archived already"));
    }
    Ok(())
}

/// One archive change in the transaction `tx`.
pub(super) async fn change(tx: &mut PgConnection, c: ArchiveChange) -> Result<(), StoreError> {
    match c {
        ArchiveChange::Move { id, loaded, entry } => {
            let q = sqlx::query("DELETE FROM orders WHERE id = $1 AND last_seq = $2")
                .bind(uuid(id))
                .bind(i64::from(loaded.last_seq));
            if exec(tx, q).await? == 0 {
                return conflict(format!("order {id} moved on or is gone; not archived"));
            }
            exec(tx, sqlx::query("DELETE FROM events WHERE order_id = $1").bind(uuid(id))).await?;
            if let Some(n) = &loaded.invoice {
                let q = sqlx::query("DELETE FROM invoices WHERE number = $1 AND order_id = $2").bind(n).bind(uuid(id));
                exec(tx, q).await?;
            }
            insert_entry(tx, id, &entry).await?;
        }
        ArchiveChange::Replace { id, from, to } => {
            let n = match to {
                Some(to) => {
                    let q = sqlx::query(
                        "UPDATE archive_index SET segment = $3, entry = $4::json WHERE order_id = $1 AND entry::text = $2",
                    )
                    .bind(uuid(id))
                    .bind(json(&from))
                    .bind(&to.segment)
                    .bind(json(&to));
                    exec(tx, q).await?
                }
                None => {
                    let q = sqlx::query("DELETE FROM archive_index WHERE order_id = $1 AND entry::text = $2")
                        .bind(uuid(id))
                        .bind(json(&from));
                    exec(tx, q).await?
                }
            };
            if n == 0 {
                return conflict(format!("the archive entry of order {id} changed meanwhile"));
            }
        }
        ArchiveChange::Restore { id, source, entry } => {
            let q = sqlx::query(
                "INSERT INTO external_ids (connector, external_id, order_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(source.connector.as_str())
            .bind(source.id.as_str())
            .bind(uuid(id));
            let hot = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM orders WHERE id = $1").bind(uuid(id));
            if exec(tx, q).await? == 0 || hot.fetch_one(&mut *tx).await.map_err(db)? > 0 {
                return conflict(format!("order {id} or {}/{} is here already", source.connector, source.id));
            }
            insert_entry(tx, id, &entry).await?;
        }
        ArchiveChange::Log(entry) => {
            let q = sqlx::query("INSERT INTO archive_log (seq, record) VALUES ($1, $2::json) ON CONFLICT DO NOTHING")
                .bind(i64::try_from(entry.seq).unwrap_or(i64::MAX))
                .bind(json(&entry));
            if exec(tx, q).await? == 0 {
                return conflict(format!("archive log entry {} is written already", entry.seq));
            }
        }
    }
    Ok(())
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what} cannot be read: {e}")))
}

impl PgStore {
    pub(super) async fn archived_entry(&self, id: OrderId) -> Result<Option<ArchiveEntry>, StoreError> {
        let text: Option<String> = sqlx::query_scalar("SELECT entry::text FROM archive_index WHERE order_id = $1")
            .bind(uuid(id))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        text.map(|t| parse(&format!("archive entry {id}"), &t)).transpose()
    }

    pub(super) async fn archive_page(
        &self,
        after: Option<OrderId>,
        n: usize,
    ) -> Result<Vec<(OrderId, ArchiveEntry)>, StoreError> {
        let rows: Vec<(uuid::Uuid, String)> = sqlx::query_as(
            "SELECT order_id, entry::text FROM archive_index WHERE ($1::uuid IS NULL OR order_id > $1)
             ORDER BY order_id LIMIT $2",
        )
        .bind(after.map(uuid))
        .bind(limit(n))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter().map(|(u, t)| Ok((order_id(u), parse(&format!("archive entry {u}"), &t)?))).collect()
    }

    pub(super) async fn archive_log_entries(&self) -> Result<Vec<ArchiveLogEntry>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar("SELECT record::text FROM archive_log ORDER BY seq")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(|t| parse("an archive log entry", t)).collect()
    }
}
