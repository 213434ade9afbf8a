//! The `Store` verbs on PostgreSQL: reads and listings, claims of effects and
//! leases of jobs between replicas, and the scans of the outbox, timers and digests.
//! Writes go through `commit.rs`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgPool;
use uuid::Uuid;

use super::{PgStore, Raw, db, effect_cols, effect_id, limit, millis, ms, order_id, uuid};
use crate::domain::{ExternalRef, OrderId};
use crate::engine::effects::DigestItem;
use crate::engine::payments::{PaymentOutcome, UnmatchedPayment};
use crate::engine::table::Prior;
use crate::store::records::{DueEffect, EffectId, EffectRecord, EventRecord, OrderRecord};
use crate::store::{BoxFuture, Counts, DigestKey, DueTimer, InState, Quarantined, Step, Store, StoreError, UsedLink};

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

    /// Closes the pool: waits for connections in use to come back, then closes them.
    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async {
            self.pool.close().await;
            Ok(())
        })
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

    fn in_states<'a>(&'a self, states: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<InState>, StoreError>> {
        Box::pin(async move {
            let names: Vec<String> = states.iter().map(|s| (*s).to_owned()).collect();
            // The oldest by the state index (state, id): PostgreSQL has no min(uuid).
            let rows = sqlx::query(
                "SELECT state, count(*), (SELECT id FROM orders f WHERE f.state = o.state ORDER BY id LIMIT 1)
                 FROM orders o WHERE state = ANY($1) GROUP BY state",
            )
            .bind(&names)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
            Ok(states
                .iter()
                .map(|state| {
                    let row = rows.iter().find(|r| r.get::<String, _>(0) == *state);
                    InState {
                        state: (*state).to_owned(),
                        orders: row.map_or(0, |r| u64::try_from(r.get::<i64, _>(1)).unwrap_or(0)),
                        oldest: row.and_then(|r| r.get::<Option<Uuid>, _>(2)).map(order_id),
                    }
                })
                .collect())
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
    /// (applied in SQL, before the limit); their ids and schedules only, the rows are
    /// read by `claim`.
    fn due_effects_where<'a>(
        &'a self,
        now: DateTime<Utc>,
        n: usize,
        filter: &'a crate::store::ConnectorFilter,
    ) -> BoxFuture<'a, Result<Vec<DueEffect>, StoreError>> {
        Box::pin(async move {
            let skip: Vec<&str> = filter.skip.iter().map(String::as_str).collect();
            let only: Option<Vec<&str>> = filter.only.as_ref().map(|o| o.iter().map(String::as_str).collect());
            let rows = sqlx::query(
                "SELECT order_id, seq, idx, due_ms, record->>'connector' FROM outbox WHERE due_ms <= $1
                 AND (claimed_until IS NULL OR claimed_until < now())
                 AND NOT (record->>'connector' = ANY($2::text[]))
                 AND ($3::text[] IS NULL OR record->>'connector' = ANY($3::text[]))
                 ORDER BY due_ms, order_id, seq, idx LIMIT $4",
            )
            .bind(ms(now))
            .bind(skip)
            .bind(only)
            .bind(limit(n))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
            Ok(rows
                .into_iter()
                .filter_map(|r| {
                    let id = effect_id(r.get(0), r.get(1), r.get(2))?;
                    let next_at = DateTime::<Utc>::from_timestamp_millis(r.get(3))?;
                    let connector: Option<String> = r.get(4);
                    Some(DueEffect { id, connector: connector.unwrap_or_default().into(), next_at })
                })
                .filter(|e| filter.keeps_effect(&e.connector, e.id))
                .collect())
        })
    }

    /// One `UPDATE` of the row as listed: the row lock makes a concurrent claim wait,
    /// then find it claimed.
    fn claim<'a>(
        &'a self,
        effect: &'a DueEffect,
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

    fn current<'a>(&'a self, effect: &'a DueEffect) -> BoxFuture<'a, Result<Option<EffectRecord>, StoreError>> {
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

    fn archived(&self, id: OrderId) -> BoxFuture<'_, Result<Option<crate::store::ArchiveEntry>, StoreError>> {
        Box::pin(self.archived_entry(id))
    }

    fn archive_entries(
        &self,
        after: Option<OrderId>,
        n: usize,
    ) -> BoxFuture<'_, Result<Vec<(OrderId, crate::store::ArchiveEntry)>, StoreError>> {
        Box::pin(self.archive_page(after, n))
    }

    fn archive_log(&self) -> BoxFuture<'_, Result<Vec<crate::store::ArchiveLogEntry>, StoreError>> {
        Box::pin(self.archive_log_entries())
    }

    fn quarantined(&self) -> BoxFuture<'_, Result<Vec<Quarantined>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT what, error, at, raw, resolution::text FROM quarantine ORDER BY space, key")
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
                    resolved: super::quarantine::resolution(r.get(4)),
                })
                .collect())
        })
    }

    fn resolve_quarantined<'a>(
        &'a self,
        what: &'a str,
        resolution: crate::store::Resolution,
        restore: Option<OrderRecord>,
    ) -> BoxFuture<'a, Result<Quarantined, StoreError>> {
        Box::pin(self.resolve(what, resolution, restore))
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
