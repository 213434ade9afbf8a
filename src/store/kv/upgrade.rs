//! Upgrades of older layouts, run by `KvStore::open` before anything else reads the
//! store.

use super::{
    Batch, Engine, INVOICES, JOBS, META, ORDERS, PAYMENTS, SCHEMA, TIMERS, WAITING, decode, encode, key, order_row,
    payment_key,
};
use crate::store::StoreError;
use crate::store::records::OrderRecord;

/// Rewrites a layout-1 store (orderbridge 0.1 before the application layer) into
/// layout 2, in batches that are each atomic and that can be run again: a crash
/// half-way leaves the version at 1 and the next start goes on where it stopped.
/// Order rows gain their sequence-number prefix, timer keys lose their kind byte,
/// and the `m/` keys move to their own spaces (invoices, payments, waiting
/// payments, job state).
pub(super) fn from_1(engine: &dyn Engine) -> Result<(), StoreError> {
    const CHUNK: usize = 10_000;
    tracing::info!("upgrading the store from layout 1 to layout {}", String::from_utf8_lossy(SCHEMA));
    let mut migrated = 0usize;
    // Order rows are scanned once, from where the last batch stopped.
    let mut orders_from = vec![ORDERS];
    loop {
        let mut b = Batch::default();
        for row in engine.range(&orders_from, &[ORDERS + 1]) {
            let (k, v) = row?;
            orders_from = [k.as_slice(), &[0]].concat();
            // A layout-1 row is LZ4 (0x01) or JSON; a layout-2 row starts with a u32 seq.
            if !matches!(v.first(), Some(0x01 | b'{')) {
                continue;
            }
            let rec: OrderRecord =
                decode(&v).map_err(|e| StoreError::Corrupt(format!("upgrading {}: {e}", hex::encode(&k))))?;
            b.put(k, order_row(&rec));
            if b.ops.len() >= CHUNK {
                break;
            }
        }
        for row in engine.range(&[TIMERS], &[TIMERS + 1]) {
            if b.ops.len() >= CHUNK {
                break;
            }
            let (k, _) = row?;
            if k.len() == 26 {
                b.put(k[..25].to_vec(), Vec::new());
                b.del(k);
            }
        }
        for row in engine.range(&key(META, &[b"a"]), &[META + 1]) {
            if b.ops.len() >= CHUNK {
                break;
            }
            let (k, v) = row?;
            let name = String::from_utf8_lossy(&k[1..]).into_owned();
            let moved = if let Some(n) = name.strip_prefix("invoice/") {
                Some((key(INVOICES, &[n.as_bytes()]), v))
            } else if let Some((tag, rest)) = name
                .strip_prefix("payment/")
                .map(|r| (PAYMENTS, r))
                .or_else(|| name.strip_prefix("unmatched/").map(|r| (WAITING, r)))
            {
                let (source, id) = rest.split_once('/').unwrap_or((rest, ""));
                Some((payment_key(tag, source, id), v))
            } else if name.starts_with("poll/") {
                Some((key(JOBS, &[name.as_bytes()]), v))
            } else if name == "digest_seq" {
                let n = <[u8; 4]>::try_from(v.as_slice()).map(u32::from_be_bytes).unwrap_or(0);
                Some((key(JOBS, &[b"digest_seq"]), encode(&serde_json::json!(n))))
            } else {
                None
            };
            if let Some((to, v)) = moved {
                b.put(to, v);
                b.del(k);
            }
        }
        if b.ops.is_empty() {
            break;
        }
        migrated += b.ops.len();
        engine.write(b)?;
        engine.sync().map_err(StoreError::Io)?;
    }
    let mut b = Batch::default();
    b.put(key(META, &[b"schema"]), SCHEMA.to_vec());
    engine.write(b)?;
    engine.sync().map_err(StoreError::Io)?;
    tracing::info!(rows = migrated, "store upgraded to layout {}", String::from_utf8_lossy(SCHEMA));
    Ok(())
}

/// Layout 2 → 3: nothing to rewrite (layout 3 reads layout 2's event rows and writes
/// new steps packed); only the version changes, so that an older binary refuses the
/// store instead of setting the packed rows aside as unreadable.
///
/// # Errors
/// `Io` when the engine fails.
pub(super) fn from_2<E: Engine>(engine: &E) -> Result<(), StoreError> {
    let mut b = Batch::default();
    b.put(key(META, &[b"schema"]), SCHEMA.to_vec());
    engine.write(b)?;
    engine.sync().map_err(StoreError::Io)?;
    tracing::info!("store upgraded from layout 2 to layout {}", String::from_utf8_lossy(SCHEMA));
    Ok(())
}
