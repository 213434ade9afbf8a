//! The step commit on PostgreSQL: one transaction per `commit`, where every
//! precondition is a statement that finds nothing to change when it no longer holds
//! (`UPDATE orders … WHERE last_seq = $n`, `INSERT … ON CONFLICT DO NOTHING`,
//! `DELETE` of the row as read); the first that does aborts the transaction as
//! `Conflict`, and nothing is written.

use std::sync::atomic::Ordering;

use sqlx::PgConnection;
use uuid::Uuid;

use super::{PgStore, add, db, effect_cols, json, ms, uuid};
use crate::store::records::{EffectRecord, EventRecord};
use crate::store::{DigestChange, Loaded, OrderWrite, OutboxChange, PaymentWrite, Step, StoreError, UsedLink};

impl PgStore {
    pub(super) async fn commit_inner(&self, steps: Vec<Step>) -> Result<(), StoreError> {
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
/// the changes to the pending, dead and unmatched counts to `delta`.
async fn add_step(tx: &mut PgConnection, step: Step, delta: &mut [i64; 3]) -> Result<(), StoreError> {
    let Step { order, events, outbox, digests, spend, payment, jobs, archive, left: _ } = step;
    if let Some(w) = order {
        write_order(tx, &w).await?;
    }
    if !events.is_empty() {
        write_events(tx, &events).await?;
    }
    for c in outbox {
        change_outbox(tx, c, delta).await?;
    }
    for c in digests {
        change_digest(tx, c).await?;
    }
    if let Some((once, used)) = spend {
        spend_link(tx, &once, &used).await?;
    }
    if let Some(p) = payment {
        write_payment(tx, p, delta).await?;
    }
    for (name, value) in jobs {
        let q = sqlx::query(
            "INSERT INTO jobs (name, state) VALUES ($1, $2::json) ON CONFLICT (name) DO UPDATE SET state = EXCLUDED.state",
        )
        .bind(&name)
        .bind(json(&value));
        exec(tx, q).await?;
    }
    for c in archive {
        super::archive::change(tx, c).await?;
    }
    Ok(())
}

/// Writes the order row (inserted when new, its external id then taken; else updated
/// where it still has the sequence number loaded) and its invoice number.
async fn write_order(tx: &mut PgConnection, w: &OrderWrite) -> Result<(), StoreError> {
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
    Ok(())
}

/// Appends a step's events in one statement.
async fn write_events(tx: &mut PgConnection, events: &[EventRecord]) -> Result<(), StoreError> {
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
    exec(tx, q).await.map(drop)
}

/// One change to the outbox or the dead letters, where the row removed must still
/// be as it was read.
async fn change_outbox(tx: &mut PgConnection, c: OutboxChange, delta: &mut [i64; 3]) -> Result<(), StoreError> {
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
    Ok(())
}

/// Holds a digest item, or releases one that must still be held.
async fn change_digest(tx: &mut PgConnection, c: DigestChange) -> Result<(), StoreError> {
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
            let q = sqlx::query("DELETE FROM digest_items WHERE grp = $1 AND order_id = $2 AND seq = $3 AND idx = $4")
                .bind(&k.group)
                .bind(o)
                .bind(s)
                .bind(i);
            if exec(tx, q).await? == 0 {
                return conflict(format!("digest item {} of {} was sent already", k.effect, k.group));
            }
        }
    }
    Ok(())
}

/// Spends a single-use link; `Conflict` (saying when) if it was spent already.
async fn spend_link(tx: &mut PgConnection, once: &str, used: &UsedLink) -> Result<(), StoreError> {
    let q = sqlx::query("INSERT INTO used_links (link_id, used) VALUES ($1, $2::json) ON CONFLICT DO NOTHING")
        .bind(once)
        .bind(json(used));
    if exec(tx, q).await? == 0 {
        let before: Option<String> = sqlx::query_scalar("SELECT used::text FROM used_links WHERE link_id = $1")
            .bind(once)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let at = before
            .and_then(|t| serde_json::from_str::<UsedLink>(&t).ok())
            .map(|u| u.at.to_rfc3339())
            .unwrap_or_else(|| "earlier".into());
        return conflict(format!("this link was already used ({at})"));
    }
    Ok(())
}

/// Records a payment seen once (and waiting, when unmatched), or assigns one that
/// is still waiting.
async fn write_payment(tx: &mut PgConnection, p: PaymentWrite, delta: &mut [i64; 3]) -> Result<(), StoreError> {
    match p {
        PaymentWrite::Reported { source, payment_id, outcome, unmatched } => {
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
        PaymentWrite::Assigned { source, payment_id, outcome } => {
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
    Ok(())
}
