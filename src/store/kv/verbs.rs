//! The `Store` verbs of `KvStore`: the commit path is in `mod.rs`; here are the reads,
//! each a get or a range over one key space.

use chrono::{DateTime, Utc};

use super::*;
use crate::store::sketch::{self, Marked, Sketch, SketchRow};
use crate::store::{InState, Trail};

impl<E: Engine> Store for KvStore<E> {
    fn commit(&self, steps: Vec<Step>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.commit_inner(steps))
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.committer.durable())
    }

    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.committer.close())
    }

    fn failure(&self) -> Option<String> {
        self.committer.failure()
    }

    fn sync_running_for(&self) -> Option<std::time::Duration> {
        self.committer.sync_running_for()
    }

    fn order(&self, id: OrderId) -> BoxFuture<'_, Result<Option<OrderRecord>, StoreError>> {
        Box::pin(async move { self.load_order(id) })
    }

    fn events(&self, id: OrderId) -> BoxFuture<'_, Result<Vec<EventRecord>, StoreError>> {
        Box::pin(async move {
            let from = key(EVENTS, &[id.as_bytes()]);
            let to = prefix_end(&from);
            let steps = self.scan_with(&from, &to, usize::MAX, "events", |_| true, StepEvents::decode)?;
            Ok(steps.into_iter().flat_map(|(_, s)| s).collect())
        })
    }

    fn archived(&self, id: OrderId) -> BoxFuture<'_, Result<Option<crate::store::ArchiveEntry>, StoreError>> {
        Box::pin(async move { self.archived_entry(id) })
    }

    fn archive_entries(
        &self,
        after: Option<OrderId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(OrderId, crate::store::ArchiveEntry)>, StoreError>> {
        Box::pin(async move { self.archive_page(after, limit) })
    }

    fn archive_log(&self) -> BoxFuture<'_, Result<Vec<crate::store::ArchiveLogEntry>, StoreError>> {
        Box::pin(async move { self.archive_log_entries() })
    }

    fn trails<'a>(&'a self, after: Option<OrderId>, limit: usize) -> BoxFuture<'a, Result<Vec<Trail>, StoreError>> {
        Box::pin(async move { self.page_with(after, limit, Self::read_order_row, |r| r.id, StepEvents::decode) })
    }

    fn sketches<'a>(&'a self, after: Option<OrderId>, limit: usize) -> BoxFuture<'a, Result<Vec<Sketch>, StoreError>> {
        Box::pin(async move {
            // A step that does not read as marks is read whole: it is quarantined
            // only when that fails too.
            let step = |v: &[u8]| {
                sketch::marks(v).or_else(|_| StepEvents::decode(v).map(|e| e.iter().map(Marked::of).collect()))
            };
            let page = self.page_with(after, limit, Self::read_sketch_row, |s| s.id, step)?;
            Ok(page.into_iter().map(|(s, entries)| Sketch { entries, ..s }).collect())
        })
    }

    fn find_external<'a>(&'a self, source: &'a ExternalRef) -> BoxFuture<'a, Result<Option<OrderId>, StoreError>> {
        Box::pin(async move {
            let k = pair(EXTERNAL, source.connector.as_str(), source.id.as_str().as_bytes());
            if !self.externals.may_hold(&k) {
                return Ok(None);
            }
            match self.get(&k)? {
                None => Ok(None),
                Some(v) => {
                    id_of(&v).map(Some).ok_or_else(|| StoreError::Corrupt("external-id index: bad order id".into()))
                }
            }
        })
    }

    fn list<'a>(
        &'a self,
        state: Option<&'a str>,
        after: Option<OrderId>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<OrderRecord>, StoreError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            match state {
                None => out = self.order_rows(after, limit, Self::read_order_row)?,
                Some(s) => {
                    let prefix = pair(STATES, s, &[]);
                    let from = match after {
                        Some(a) => pair(STATES, s, &[a.as_bytes().as_slice(), &[0]].concat()),
                        None => prefix.clone(),
                    };
                    for row in self.engine.range(&from, &prefix_end(&prefix)) {
                        if out.len() >= limit {
                            break;
                        }
                        let (k, _) = row.map_err(|e| self.fault(e))?;
                        let Some(id) = id_of(&k[prefix.len()..]) else { continue };
                        match self.load_order(id) {
                            Ok(Some(r)) => out.push(r),
                            Ok(None) | Err(StoreError::Quarantined(_)) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            Ok(out)
        })
    }

    fn in_states<'a>(&'a self, states: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<InState>, StoreError>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(states.len());
            for state in states {
                let prefix = pair(STATES, state, &[]);
                let mut row = InState { state: (*state).to_owned(), orders: 0, oldest: None };
                for key in self.engine.range(&prefix, &prefix_end(&prefix)) {
                    let (k, _) = key.map_err(|e| self.fault(e))?;
                    row.oldest = row.oldest.or_else(|| id_of(&k[prefix.len()..]));
                    row.orders += 1;
                }
                out.push(row);
            }
            Ok(out)
        })
    }

    fn customer_orders<'a>(
        &'a self,
        customer: &'a str,
        since: Option<DateTime<Utc>>,
    ) -> BoxFuture<'a, Result<Vec<(OrderId, Prior)>, StoreError>> {
        Box::pin(async move {
            if !self.customers.may_hold(customer.as_bytes()) {
                return Ok(Vec::new());
            }
            let prefix = pair(CUSTOMERS, customer, &[]);
            // Order ids are UUIDv7: their first 48 bits are the creation time in ms,
            // so the window's start is a key.
            let from = match since {
                Some(t) => {
                    let mut k = prefix.clone();
                    k.extend_from_slice(&ms(t)[2..]);
                    k
                }
                None => prefix.clone(),
            };
            let since_ms = since.map(|t| t.timestamp_millis());
            let rows = self.scan::<Prior>(&from, &prefix_end(&prefix), usize::MAX, "customer history", |_| true)?;
            Ok(rows
                .into_iter()
                .filter_map(|(k, p)| id_of(&k[prefix.len()..]).map(|id| (id, p)))
                .filter(|(id, _)| since_ms.is_none_or(|s| id.created_ms() >= s))
                .collect())
        })
    }

    fn invoice_order<'a>(&'a self, number: &'a str) -> BoxFuture<'a, Result<Option<OrderId>, StoreError>> {
        Box::pin(async move { Ok(self.get(&key(INVOICES, &[number.as_bytes()]))?.and_then(|v| id_of(&v))) })
    }

    fn payment<'a>(
        &'a self,
        source: &'a str,
        payment_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<PaymentOutcome>, StoreError>> {
        Box::pin(async move {
            let k = payment_key(PAYMENTS, source, payment_id);
            match self.get(&k)? {
                None => Ok(None),
                Some(v) => self.read(&k, &v, || format!("payment {source}/{payment_id}")).map(Some),
            }
        })
    }

    fn unmatched_payments(&self) -> BoxFuture<'_, Result<Vec<UnmatchedPayment>, StoreError>> {
        Box::pin(async move {
            let rows =
                self.scan::<UnmatchedPayment>(&[WAITING], &[WAITING + 1], usize::MAX, "unmatched payment", |_| true)?;
            Ok(rows.into_iter().map(|(_, p)| p).collect())
        })
    }

    fn used<'a>(&'a self, once: &'a str) -> BoxFuture<'a, Result<Option<UsedLink>, StoreError>> {
        Box::pin(async move {
            let k = key(LINKS, &[once.as_bytes()]);
            match self.get(&k)? {
                None => Ok(None),
                Some(v) => self.read(&k, &v, || "a spent link".to_owned()).map(Some),
            }
        })
    }

    fn job_state<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<serde_json::Value>, StoreError>> {
        Box::pin(async move {
            let k = key(JOBS, &[name.as_bytes()]);
            match self.get(&k)? {
                None => Ok(None),
                Some(v) => self.read(&k, &v, || format!("job state {name}")).map(Some),
            }
        })
    }

    fn due_timers(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::store::DueTimer>, StoreError>> {
        Box::pin(async move {
            let end = key(TIMERS, &[&(u64::from_be_bytes(ms(now)).saturating_add(1)).to_be_bytes()]);
            let mut out = Vec::new();
            for row in self.engine.range(&[TIMERS], &end) {
                if out.len() >= limit {
                    break;
                }
                let (k, _) = row.map_err(|e| self.fault(e))?;
                let (Some(due), Some(id)) = (
                    k.get(1..9).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes),
                    k.get(9..25).and_then(id_of),
                ) else {
                    continue;
                };
                let due = DateTime::from_timestamp_millis(i64::try_from(due).unwrap_or(i64::MAX)).unwrap_or(now);
                out.push((id, due));
            }
            Ok(out)
        })
    }

    fn digest_items(&self) -> BoxFuture<'_, Result<Vec<(DigestKey, DigestItem)>, StoreError>> {
        Box::pin(async move {
            let rows = self.scan::<DigestItem>(&[DIGESTS], &[DIGESTS + 1], usize::MAX, "digest item", |_| true)?;
            Ok(rows
                .into_iter()
                .filter_map(|(k, item)| {
                    let body = &k[1..];
                    // group ‖ 0 ‖ a 22-byte effect key (which may hold zero bytes itself)
                    let nul = body.len().checked_sub(23).filter(|&i| body[i] == 0)?;
                    let group = String::from_utf8_lossy(&body[..nul]).into_owned();
                    let effect = EffectId::from_key(&body[nul + 1..])?;
                    Some((DigestKey { group, effect }, item))
                })
                .collect())
        })
    }

    fn due_effects(&self, now: DateTime<Utc>, limit: usize) -> BoxFuture<'_, Result<Vec<EffectRecord>, StoreError>> {
        Box::pin(async move { self.outbox_effects(limit, Some(&due_end(now)), true) })
    }

    /// Read from the outbox index alone: no row is read or decoded.
    fn due_effects_where<'a>(
        &'a self,
        now: DateTime<Utc>,
        limit: usize,
        filter: &'a ConnectorFilter,
    ) -> BoxFuture<'a, Result<Vec<DueEffect>, StoreError>> {
        Box::pin(async move {
            let keys = self.outbox_keys(limit, Some(&due_end(now)), true, Some(filter));
            Ok(keys.into_iter().filter_map(|(due, connector)| due_effect(&due, connector)).collect())
        })
    }

    fn current<'a>(&'a self, effect: &'a DueEffect) -> BoxFuture<'a, Result<Option<EffectRecord>, StoreError>> {
        Box::pin(async move {
            let k = outbox_key(effect.due_key());
            match self.get(&k)? {
                None => Ok(None),
                Some(v) => self.read(&k, &v, || format!("effect {}", effect.id)).map(Some),
            }
        })
    }

    fn pending_effects(&self, limit: usize) -> BoxFuture<'_, Result<Vec<EffectRecord>, StoreError>> {
        Box::pin(async move { self.outbox_effects(limit, None, false) })
    }

    fn dead_letters(&self, limit: usize) -> BoxFuture<'_, Result<Vec<EffectRecord>, StoreError>> {
        Box::pin(async move { self.dead_effects(limit) })
    }

    fn dead_letter<'a>(&'a self, id: &'a EffectId) -> BoxFuture<'a, Result<Option<EffectRecord>, StoreError>> {
        Box::pin(async move {
            let k = key(DEAD, &[&id.key()]);
            match self.get(&k)? {
                None => Ok(None),
                Some(v) => self.read(&k, &v, || format!("dead letter {id}")).map(Some),
            }
        })
    }

    fn quarantined(&self) -> BoxFuture<'_, Result<Vec<Quarantined>, StoreError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for row in self.engine.range(&[QUARANTINE], &[QUARANTINE + 1]) {
                let (k, v) = row.map_err(|e| self.fault(e))?;
                out.push(decode::<Quarantined>(&v).unwrap_or_else(|e| Quarantined {
                    what: hex::encode(&k[1..]),
                    error: format!("the quarantine entry itself cannot be read: {e}"),
                    at: Utc::now(),
                    raw_hex: hex::encode(&v),
                    resolved: None,
                }));
            }
            Ok(out)
        })
    }

    fn resolve_quarantined<'a>(
        &'a self,
        what: &'a str,
        resolution: crate::store::Resolution,
        restore: Option<OrderRecord>,
    ) -> BoxFuture<'a, Result<Quarantined, StoreError>> {
        Box::pin(async move { self.resolve(what, resolution, restore) })
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

/// The first due key after every effect due at `now` (due keys lead with the due ms).
fn due_end(now: DateTime<Utc>) -> outbox::Due {
    let mut end = [0; 30];
    end[..8].copy_from_slice(&u64::from_be_bytes(ms(now)).saturating_add(1).to_be_bytes());
    end
}

impl<E: Engine> KvStore<E> {
    /// The order rows after `after` in id order, each read by `read`; a row it
    /// quarantines is left out.
    fn order_rows<R>(
        &self,
        after: Option<OrderId>,
        limit: usize,
        read: impl Fn(&Self, &[u8], &[u8]) -> Result<R, StoreError>,
    ) -> Result<Vec<R>, StoreError> {
        let from = match after {
            Some(a) => key(ORDERS, &[a.as_bytes(), &[0]]),
            None => vec![ORDERS],
        };
        let mut out = Vec::new();
        for row in self.engine.range(&from, &[ORDERS + 1]) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = row.map_err(|e| self.fault(e))?;
            match read(self, &k, &v) {
                Ok(r) => out.push(r),
                Err(StoreError::Quarantined(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// A page of orders after `after`, each with its events: the rows read by `row`
    /// (`id` names their order), each step's events row by `step`. The page's
    /// events are read in one range: event keys lead with the order's id.
    fn page_with<R, T>(
        &self,
        after: Option<OrderId>,
        limit: usize,
        row: impl Fn(&Self, &[u8], &[u8]) -> Result<R, StoreError>,
        id: impl Fn(&R) -> OrderId,
        step: impl Fn(&[u8]) -> Result<Vec<T>, String>,
    ) -> Result<Vec<(R, Vec<T>)>, StoreError> {
        let page = self.order_rows(after, limit, row)?;
        let (Some(first), Some(last)) = (page.first().map(&id), page.last().map(&id)) else { return Ok(Vec::new()) };
        let from = key(EVENTS, &[first.as_bytes()]);
        let to = prefix_end(&key(EVENTS, &[last.as_bytes()]));
        let mut steps = self.scan_with(&from, &to, usize::MAX, "events", |_| true, step)?.into_iter().peekable();
        let mut out = Vec::with_capacity(page.len());
        for r in page {
            let this = id(&r);
            let mut events = Vec::new();
            while let Some((k, _)) = steps.peek() {
                match k.get(1..17).and_then(id_of) {
                    Some(id) if id > this => break,
                    Some(id) if id == this => events.extend(steps.next().map(|(_, s)| s).into_iter().flatten()),
                    // An order not on the page (quarantined) or a key that names none.
                    _ => {
                        steps.next();
                    }
                }
            }
            out.push((r, events));
        }
        Ok(out)
    }

    /// An order row as a sketch; a row that does not read that way is read whole
    /// (and quarantined if that fails too).
    fn read_sketch_row(&self, k: &[u8], v: &[u8]) -> Result<Sketch, StoreError> {
        let lean = v.get(4..).and_then(|row| decode::<SketchRow>(row).ok());
        match (lean, k.get(1..).and_then(id_of)) {
            (Some(row), Some(id)) => Ok(row.sketch(id)),
            _ => self.read_order_row(k, v).map(|rec| Sketch::head(&rec)),
        }
    }
}
