//! The archive index (`a`: order id → `ArchiveEntry`) and log (`l`: seq (u64 BE) →
//! `ArchiveLogEntry`) on the embedded layout: a move removes the order's rows and
//! index keys and records its entry in the same batch.

use super::{
    ARCHIVE, ARCHIVE_LOG, Batch, CUSTOMERS, EVENTS, EXTERNAL, Engine, INVOICES, KvStore, key, order_key, pair,
    prefix_end, seq_of, state_key, timer_key,
};
use crate::domain::OrderId;
use crate::store::codec::{decode, encode};
use crate::store::{ArchiveChange, ArchiveEntry, ArchiveLogEntry, StoreError};

fn entry_key(id: OrderId) -> Vec<u8> {
    key(ARCHIVE, &[id.as_bytes()])
}

impl<E: Engine> KvStore<E> {
    /// Checks one archive change against the rows as the next commit finds them and
    /// adds its writes to `b`.
    pub(super) fn change_archive(&self, c: ArchiveChange, b: &mut Batch) -> Result<(), StoreError> {
        match c {
            ArchiveChange::Move { id, loaded, entry } => {
                let k = order_key(id);
                let stored = self.current_row(&k)?;
                if stored.as_deref().and_then(seq_of) != Some(loaded.last_seq) {
                    return Err(StoreError::Conflict(format!("order {id} moved on or is gone; not archived")));
                }
                let ek = entry_key(id);
                if self.exists(&ek)? {
                    return Err(StoreError::Conflict(format!("order {id} is archived already")));
                }
                b.del(k);
                let from = key(EVENTS, &[id.as_bytes()]);
                for row in self.engine.range(&from, &prefix_end(&from)) {
                    let (ek, _) = row.map_err(|e| self.fault(e))?;
                    b.del(ek);
                }
                b.del(state_key(loaded.state, id));
                if let Some(t) = loaded.next_timer {
                    b.del(timer_key(t, id));
                }
                if let Some(n) = &loaded.invoice {
                    b.del(key(INVOICES, &[n.as_bytes()]));
                }
                b.del(pair(CUSTOMERS, &loaded.customer, id.as_bytes()));
                b.put(ek, encode(&entry));
            }
            ArchiveChange::Replace { id, from, to } => {
                let ek = entry_key(id);
                let now = self.current_row(&ek)?.map(|v| decode::<ArchiveEntry>(&v)).transpose();
                if now.ok().flatten().as_ref() != Some(&from) {
                    return Err(StoreError::Conflict(format!("the archive entry of order {id} changed meanwhile")));
                }
                match to {
                    Some(to) => b.put(ek, encode(&to)),
                    None => b.del(ek),
                }
            }
            ArchiveChange::Restore { id, source, entry } => {
                let (ek, ext) =
                    (entry_key(id), pair(EXTERNAL, source.connector.as_str(), source.id.as_str().as_bytes()));
                if self.exists(&order_key(id))? || self.exists(&ek)? || self.exists(&ext)? {
                    return Err(StoreError::Conflict(format!(
                        "order {id} or {}/{} is here already",
                        source.connector, source.id
                    )));
                }
                // Held by the filter before the batch can be committed (`held`).
                self.externals.insert(&ext);
                b.put(ext, id.as_bytes().to_vec());
                b.put(ek, encode(&entry));
            }
            ArchiveChange::Log(entry) => {
                let k = key(ARCHIVE_LOG, &[&entry.seq.to_be_bytes()]);
                if self.exists(&k)? {
                    return Err(StoreError::Conflict(format!("archive log entry {} is written already", entry.seq)));
                }
                b.put(k, encode(&entry));
            }
        }
        Ok(())
    }

    pub(super) fn archived_entry(&self, id: OrderId) -> Result<Option<ArchiveEntry>, StoreError> {
        let k = entry_key(id);
        match self.get(&k)? {
            Some(v) => self.read(&k, &v, || format!("archive entry {id}")).map(Some),
            None => Ok(None),
        }
    }

    pub(super) fn archive_page(
        &self,
        after: Option<OrderId>,
        limit: usize,
    ) -> Result<Vec<(OrderId, ArchiveEntry)>, StoreError> {
        let from = after.map_or_else(|| vec![ARCHIVE], |a| [entry_key(a), vec![0]].concat());
        let rows = self.scan::<ArchiveEntry>(&from, &[ARCHIVE + 1], limit, "archive entry", |_| true)?;
        Ok(rows.into_iter().filter_map(|(k, e)| super::id_of(&k[1..]).map(|id| (id, e))).collect())
    }

    pub(super) fn archive_log_entries(&self) -> Result<Vec<ArchiveLogEntry>, StoreError> {
        let rows =
            self.scan::<ArchiveLogEntry>(&[ARCHIVE_LOG], &[ARCHIVE_LOG + 1], usize::MAX, "archive log", |_| true)?;
        Ok(rows.into_iter().map(|(_, e)| e).collect())
    }
}
