//! What `store copy` reads from and writes to an embedded store beyond the `Store`
//! verbs: the `Extras` (payments seen, spent links, job state, quarantine) and
//! copied quarantine rows.

use std::sync::atomic::Ordering;

use chrono::Utc;

use super::{Batch, Engine, JOBS, KvStore, LINKS, PAYMENTS, QUARANTINE, key};
use crate::engine::payments::PaymentOutcome;
use crate::store::codec::{decode, encode};
use crate::store::extras::Extras;
use crate::store::{Quarantined, StoreError, UsedLink};

impl<E: Engine> KvStore<E> {
    /// What `store copy` reads besides the listings of the `Store` trait: payments
    /// seen, spent links, job state and the quarantine (`Extras`). Rows that
    /// cannot be read are quarantined, as by any reader.
    ///
    /// # Errors
    /// `Io`/`Corrupt` from the engine.
    pub(crate) fn extras(&self) -> Result<Extras, StoreError> {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let split = |k: &[u8]| {
            let rest = &k[1..];
            let nul = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            (text(&rest[..nul]), text(rest.get(nul + 1..).unwrap_or_default()))
        };
        let payments = self
            .scan::<PaymentOutcome>(&[PAYMENTS], &[PAYMENTS + 1], usize::MAX, "payment", |_| true)?
            .into_iter()
            .map(|(k, o)| {
                let (source, id) = split(&k);
                (source, id, o)
            })
            .collect();
        let links = self
            .scan::<UsedLink>(&[LINKS], &[LINKS + 1], usize::MAX, "spent link", |_| true)?
            .into_iter()
            .map(|(k, u)| (text(&k[1..]), u))
            .collect();
        let jobs = self
            .scan::<serde_json::Value>(&[JOBS], &[JOBS + 1], usize::MAX, "job state", |_| true)?
            .into_iter()
            .map(|(k, v)| (text(&k[1..]), v))
            .collect();
        let mut quarantine = Vec::new();
        for row in self.engine.range(&[QUARANTINE], &[QUARANTINE + 1]) {
            let (k, v) = row?;
            let space = k.get(1).map(|t| char::from(*t).to_string()).unwrap_or_default();
            let q = decode::<Quarantined>(&v).unwrap_or_else(|e| Quarantined {
                what: hex::encode(&k[1..]),
                error: format!("the quarantine entry itself cannot be read: {e}"),
                at: Utc::now(),
                raw_hex: hex::encode(&v),
                resolved: None,
            });
            quarantine.push((space, hex::encode(k.get(2..).unwrap_or_default()), q));
        }
        Ok(Extras { payments, links, jobs, quarantine })
    }

    /// Keeps quarantined rows copied from another store (`store copy`) under
    /// `x` ‖ `copied:` ‖ space ‖ 0 ‖ key, and syncs.
    ///
    /// # Errors
    /// `Io` when the engine fails.
    pub(crate) fn add_quarantined(&self, rows: &[(String, String, Quarantined)]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut b = Batch::default();
        for (space, k, q) in rows {
            b.put(key(QUARANTINE, &[b"copied:", space.as_bytes(), &[0], k.as_bytes()]), encode(q));
        }
        let _guard = self.write_lock.lock().expect("write lock");
        self.engine.write(b)?;
        self.engine.sync().map_err(StoreError::Failed)?;
        let unresolved = rows.iter().filter(|(_, _, q)| q.resolved.is_none()).count();
        self.quarantined.fetch_add(unresolved as u64, Ordering::Relaxed);
        Ok(())
    }
}
