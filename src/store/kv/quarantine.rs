//! Resolving a quarantined row on the key-value layout: its entry under `x` gets the
//! resolution (it is kept, never deleted), and a restored order row goes back under
//! `o` (a discarded one leaves the state and timer indexes), in one batch. The application layer decided; this only writes.

use std::sync::atomic::Ordering;

use super::{Batch, Engine, KvStore, ORDERS, QUARANTINE, STATES, TIMERS, order_key, order_row};
use crate::store::codec::{decode, encode};
use crate::store::records::OrderRecord;
use crate::store::{Quarantined, Resolution, StoreError};

impl<E: Engine> KvStore<E> {
    /// The unresolved quarantined rows, counted at open (resolved ones are kept but
    /// no longer count). An entry that cannot itself be read counts.
    pub(super) fn count_unresolved(engine: &E) -> Result<u64, StoreError> {
        let mut n = 0;
        for row in engine.range(&[QUARANTINE], &[QUARANTINE + 1]) {
            let (_, v) = row?;
            if decode::<Quarantined>(&v).map_or(true, |q| q.resolved.is_none()) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// `Store::resolve_quarantined` on this layout.
    pub(super) fn resolve(
        &self,
        what: &str,
        resolution: Resolution,
        restore: Option<OrderRecord>,
    ) -> Result<Quarantined, StoreError> {
        let _guard = self.write_lock.lock().expect("write lock");
        let mut found = None;
        for row in self.engine.range(&[QUARANTINE], &[QUARANTINE + 1]) {
            let (k, v) = row.map_err(|e| self.fault(e))?;
            if let Ok(q) = decode::<Quarantined>(&v)
                && q.what == what
                && q.resolved.is_none()
            {
                found = Some((k, q));
                break;
            }
        }
        let (k, mut q) =
            found.ok_or_else(|| StoreError::NotFound(format!("an unresolved quarantined row `{what}`")))?;
        let mut b = Batch::default();
        if let Some(rec) = restore {
            if q.order_id() != Some(rec.id) {
                return Err(StoreError::Conflict(format!("`{what}` is not the row of order {}", rec.id)));
            }
            let ok = order_key(rec.id);
            debug_assert_eq!(ok[0], ORDERS);
            if self.current_row(&ok)?.is_some() {
                return Err(StoreError::Conflict(format!("order {} has a row again", rec.id)));
            }
            b.put(ok, order_row(&rec));
        } else if let Some(id) = q.order_id() {
            // A discarded order leaves the state and timer indexes (PostgreSQL keeps
            // them in the order row, gone with it): no longer counted as open, no
            // timer fires for it. Its external id and customer history stay.
            for tag in [STATES, TIMERS] {
                for row in self.engine.range(&[tag], &[tag + 1]) {
                    let (k, _) = row.map_err(|e| self.fault(e))?;
                    if k.ends_with(id.as_bytes()) {
                        b.del(k);
                    }
                }
            }
        }
        q.resolved = Some(resolution);
        b.put(k, encode(&q));
        self.engine.write(b).map_err(|e| self.fault(e))?;
        self.engine.sync().map_err(StoreError::Failed)?;
        self.quarantined.fetch_sub(1, Ordering::Relaxed);
        Ok(q)
    }
}
