//! A commit on the embedded layout: each step's preconditions checked against the
//! rows as the next commit will find them (stored, or in a batch the committer has
//! not written yet), its rows added to one batch with the indexes they change, and
//! the outbox index moved along as the batch is handed over and made durable.

use std::sync::atomic::{AtomicU64, Ordering};

use super::outbox::Move;
use super::{
    Batch, CUSTOMERS, DEAD, EVENTS, EXTERNAL, Engine, INVOICES, JOBS, KvStore, LINKS, PAYMENTS, WAITING, digest_key,
    key, order_key, order_row, outbox_key, pair, payment_key, seq_of, state_key, timer_key,
};
use crate::store::codec::{decode, encode};
use crate::store::records::{EffectRecord, StepEvents, event_key};
use crate::store::{DigestChange, Loaded, OrderWrite, OutboxChange, PaymentWrite, Step, StoreError, UsedLink};

fn conflict<T>(m: String) -> Result<T, StoreError> {
    Err(StoreError::Conflict(m))
}

impl<E: Engine> KvStore<E> {
    /// Checks a step's preconditions and adds its rows to `b`; adds the outbox rows
    /// it writes and removes to `moves` and the
    /// count changes (pending, dead, unmatched) to `delta`.
    fn add_step(
        &self,
        step: Step,
        b: &mut Batch,
        moves: &mut Vec<Move>,
        delta: &mut [i64; 3],
    ) -> Result<(), StoreError> {
        let Step { order, events, outbox, digests, spend, payment, jobs, archive, left: _ } = step;
        if let Some(w) = order {
            self.write_order(&w, b)?;
        }
        if let Some(first) = events.first() {
            b.put(key(EVENTS, &[&event_key(first.order_id, first.seq)]), StepEvents::encode(&events));
        }
        for c in outbox {
            self.change_outbox(c, b, moves, delta)?;
        }
        for c in digests {
            match c {
                DigestChange::Hold(k, item) => b.put(digest_key(&k), encode(&*item)),
                DigestChange::Release(k) => {
                    let dk = digest_key(&k);
                    if !self.exists(&dk)? {
                        return conflict(format!("digest item {} of {} was sent already", k.effect, k.group));
                    }
                    b.del(dk);
                }
            }
        }
        if let Some((once, used)) = spend {
            let k = key(LINKS, &[once.as_bytes()]);
            if let Some(v) = self.current_row(&k)? {
                let at = decode::<UsedLink>(&v).map(|u| u.at.to_rfc3339()).unwrap_or_else(|_| "earlier".into());
                return conflict(format!("this link was already used ({at})"));
            }
            b.put(k, encode(&used));
        }
        if let Some(p) = payment {
            self.write_payment(p, b, delta)?;
        }
        for (name, value) in jobs {
            b.put(key(JOBS, &[name.as_bytes()]), encode(&value));
        }
        for c in archive {
            self.change_archive(c, b)?;
        }
        Ok(())
    }

    /// The order row, checked against the sequence number loaded (a new order's
    /// external id must be free), with the indexes it changes: state, timer,
    /// invoice number, customer history.
    fn write_order(&self, w: &OrderWrite, b: &mut Batch) -> Result<(), StoreError> {
        let rec = &w.record;
        let k = order_key(rec.id);
        let stored = self.current_row(&k)?;
        let stored_seq = stored.as_deref().and_then(seq_of);
        match (&w.loaded, stored_seq) {
            (None, None) => {
                let ext = pair(EXTERNAL, rec.source.connector.as_str(), rec.source.id.as_str().as_bytes());
                if self.externals.may_hold(&ext) && self.exists(&ext)? {
                    return conflict(format!("{}/{} is already an order", rec.source.connector, rec.source.id));
                }
                // Held by the filter before the batch can be committed (`held`).
                self.externals.insert(&ext);
                b.put(ext, rec.id.as_bytes().to_vec());
            }
            (Some(l), Some(s)) if l.last_seq == s => {}
            (Some(l), s) => {
                return conflict(format!(
                    "order {} moved on (event {} stored, {} loaded)",
                    rec.id,
                    s.unwrap_or(0),
                    l.last_seq
                ));
            }
            (None, Some(_)) => return conflict(format!("order {} exists already", rec.id)),
        }
        let after = Loaded::of(rec);
        let before = w.loaded.as_ref();
        if before.map(|l| l.state) != Some(after.state) {
            if let Some(l) = before {
                b.del(state_key(l.state, rec.id));
            }
            b.put(state_key(after.state, rec.id), Vec::new());
        }
        if before.and_then(|l| l.next_timer) != after.next_timer {
            if let Some(t) = before.and_then(|l| l.next_timer) {
                b.del(timer_key(t, rec.id));
            }
            if let Some(t) = after.next_timer {
                b.put(timer_key(t, rec.id), Vec::new());
            }
        }
        if let Some(n) = &after.invoice
            && before.and_then(|l| l.invoice.as_ref()) != Some(n)
        {
            b.put(key(INVOICES, &[n.as_bytes()]), rec.id.as_bytes().to_vec());
        }
        if before.map(|l| (&l.customer, &l.prior)) != Some((&after.customer, &after.prior)) {
            if let Some(l) = before.filter(|l| l.customer != after.customer) {
                b.del(pair(CUSTOMERS, &l.customer, rec.id.as_bytes()));
            }
            // Held by the filter before the batch can be committed (`customers`).
            self.customers.insert(after.customer.as_bytes());
            b.put(pair(CUSTOMERS, &after.customer, rec.id.as_bytes()), encode(&after.prior));
        }
        b.put(k, order_row(rec));
        Ok(())
    }

    /// One change to the outbox or the dead letters, where the row removed must still
    /// be there as it was read.
    fn change_outbox(
        &self,
        c: OutboxChange,
        b: &mut Batch,
        moves: &mut Vec<Move>,
        delta: &mut [i64; 3],
    ) -> Result<(), StoreError> {
        match c {
            OutboxChange::Add(e) => {
                let k = outbox_key(e.due_key());
                self.note(moves, &e, true);
                b.put(k, encode(&e));
                delta[0] += 1;
            }
            OutboxChange::Reschedule { from, to } => {
                let old = outbox_key(from.due_key());
                if !self.exists(&old)? {
                    return conflict(format!("effect {} is no longer pending as read", from.id));
                }
                self.note(moves, &from, false);
                b.del(old);
                let k = outbox_key(to.due_key());
                self.note(moves, &to, true);
                b.put(k, encode(&to));
            }
            OutboxChange::Remove(e) => {
                let old = outbox_key(e.due_key());
                if !self.exists(&old)? {
                    return conflict(format!("effect {} is no longer pending as read", e.id));
                }
                self.note(moves, &e, false);
                b.del(old);
                delta[0] -= 1;
            }
            OutboxChange::Bury { from, dead } => {
                let old = outbox_key(from.due_key());
                if !self.exists(&old)? {
                    return conflict(format!("effect {} is no longer pending as read", from.id));
                }
                self.note(moves, &from, false);
                b.del(old);
                b.put(key(DEAD, &[&dead.id.key()]), encode(&dead));
                delta[0] -= 1;
                delta[1] += 1;
            }
            OutboxChange::Revive { dead, to } => {
                let old = key(DEAD, &[&dead.key()]);
                if !self.exists(&old)? {
                    return conflict(format!("dead letter {dead} was replayed already"));
                }
                b.del(old);
                let k = outbox_key(to.due_key());
                self.note(moves, &to, true);
                b.put(k, encode(&to));
                delta[0] += 1;
                delta[1] -= 1;
            }
        }
        Ok(())
    }

    /// Records a payment seen once (and waiting, when unmatched), or assigns one
    /// that is still waiting.
    fn write_payment(&self, p: PaymentWrite, b: &mut Batch, delta: &mut [i64; 3]) -> Result<(), StoreError> {
        match p {
            PaymentWrite::Reported { source, payment_id, outcome, unmatched } => {
                let k = payment_key(PAYMENTS, &source, &payment_id);
                if self.exists(&k)? {
                    return conflict(format!("payment {source}/{payment_id} was recorded already"));
                }
                b.put(k, encode(&outcome));
                if let Some(u) = unmatched {
                    b.put(payment_key(WAITING, &source, &payment_id), encode(&u));
                    delta[2] += 1;
                }
            }
            PaymentWrite::Assigned { source, payment_id, outcome } => {
                let w = payment_key(WAITING, &source, &payment_id);
                if !self.exists(&w)? {
                    return conflict(format!("payment {source}/{payment_id} is no longer waiting"));
                }
                b.del(w);
                delta[2] -= 1;
                b.put(payment_key(PAYMENTS, &source, &payment_id), encode(&outcome));
            }
        }
        Ok(())
    }

    pub(super) async fn commit_inner(&self, steps: Vec<Step>) -> Result<(), StoreError> {
        if let Some(e) = self.committer.failure() {
            return Err(StoreError::Failed(e));
        }
        let mut moves = Vec::new();
        let mut delta = [0i64; 3];
        let (batch, generation) = {
            let _guard = self.write_lock.lock().expect("write lock");
            let mut b = Batch::default();
            for step in steps {
                self.add_step(step, &mut b, &mut moves, &mut delta)?;
            }
            if b.ops.is_empty() {
                drop(_guard);
                return self.committer.durable().await;
            }
            // Until the committer has written it, later checks see this batch here.
            let generation = self.generation.fetch_add(1, Ordering::Relaxed);
            let mut pending = self.pending_writes.lock().expect("pending writes");
            for (k, v) in &b.ops {
                pending.insert(k.clone(), (v.clone(), generation));
            }
            if !moves.is_empty() {
                self.outbox.lock().expect("outbox index").written(&moves, generation);
            }
            // Counted with the batch, before anyone can read its rows: a listing that
            // shows a dead letter is never ahead of the count (a failed commit is fatal,
            // so a count is never taken back).
            let add = |a: &AtomicU64, d: i64| {
                if d >= 0 {
                    a.fetch_add(d as u64, Ordering::Relaxed);
                } else {
                    a.fetch_sub(d.unsigned_abs(), Ordering::Relaxed);
                }
            };
            add(&self.pending, delta[0]);
            add(&self.dead, delta[1]);
            add(&self.unmatched, delta[2]);
            (b, generation)
        };
        let written: Vec<bytes::Bytes> = batch.ops.iter().map(|(k, _)| k.clone()).collect();
        let durable = self.committer.commit(Some(batch)).await;
        {
            let mut pending = self.pending_writes.lock().expect("pending writes");
            for k in &written {
                if pending.get(k).is_some_and(|(_, g)| *g == generation) {
                    pending.remove(k);
                }
            }
        }
        if durable.is_ok() {
            self.now_durable(&moves, generation);
        }
        durable
    }

    /// Notes that the batch writes (`added`) or removes `e`'s outbox row.
    fn note(&self, moves: &mut Vec<Move>, e: &EffectRecord, added: bool) {
        let connector = self.outbox.lock().expect("outbox index").name(e.connector.as_str());
        moves.push(Move { due: e.due_key(), connector, added });
    }

    /// Shows the outbox rows a durable commit of `generation` added to the
    /// dispatcher and drops those it removed (unless a later commit changed them
    /// again).
    fn now_durable(&self, moves: &[Move], generation: u64) {
        if !moves.is_empty() {
            self.outbox.lock().expect("outbox index").durable(moves, generation);
        }
    }
}
