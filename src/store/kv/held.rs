//! Which keys an index holds, as a Bloom filter in memory: for the indexes intake
//! asks about keys that are mostly not there.
//!
//! - Customers (`c`): intake reads a customer's recent orders (`Store::customer_orders`,
//!   for screening). Most customers at intake have none, and for those an LSM
//!   engine's range scan still consults every table (Bloom filters answer point
//!   reads, not ranges): 6 % of the daemon's CPU under `scripts/bench.sh 80000 64`.
//! - External ids (`i`): every delivery asks whether its external id is an order
//!   already, and a new order's commit asks again inside the write lock. Nearly every
//!   answer is no, and fjall's no still walks the memtables and a filter per table
//!   (9.5 µs a read at 40 000 orders, with 16 level-0 tables).
//!
//! A key the filter does not hold is not there, and is not read; one it holds (or a
//! false positive, under 1 % at the size chosen) is read as before.
//!
//! Built at open from the index's keys; a key is added when a batch that writes it
//! is built, before the batch reaches the committer, so a reader never misses a
//! committed row. Never cleared: a key removed costs a read that finds nothing.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use super::Engine;
use crate::store::StoreError;

/// Bits per key the filter is sized for, and probes per key: about 0.3 % false
/// positives at that load.
const BITS_PER_KEY: usize = 16;
const PROBES: u64 = 4;
/// Keys a new filter is sized for at least (2 MiB of bits).
const MIN_KEYS: usize = 1 << 20;

pub(super) struct Held {
    words: Box<[AtomicU64]>,
    /// Bits − 1 (a power of two).
    mask: u64,
}

impl Held {
    /// A filter for `keys` now and twice as many later, at least `MIN_KEYS`.
    pub(super) fn sized_for(keys: usize) -> Held {
        let bits = (keys.saturating_mul(2).max(MIN_KEYS) * BITS_PER_KEY).next_power_of_two();
        let words = (0..bits / 64).map(|_| AtomicU64::new(0)).collect();
        Held { words, mask: bits as u64 - 1 }
    }

    /// A filter of the index `tag` in `engine`: what `hash_of` makes of each key.
    pub(super) fn built(
        engine: &dyn Engine,
        tag: u8,
        hash_of: impl Fn(&[u8]) -> Option<u64>,
    ) -> Result<Held, StoreError> {
        let mut hashes = Vec::new();
        for row in engine.range(&[tag], &[tag + 1]) {
            hashes.extend(hash_of(&row?.0));
        }
        let filter = Held::sized_for(hashes.len());
        hashes.into_iter().for_each(|h| filter.insert_hash(h));
        Ok(filter)
    }

    pub(super) fn insert(&self, key: &[u8]) {
        self.insert_hash(hash(key));
    }

    /// Inserts a key by its `hash`.
    pub(super) fn insert_hash(&self, hash: u64) {
        for bit in self.bits(hash) {
            self.words[(bit / 64) as usize].fetch_or(1 << (bit % 64), Ordering::Release);
        }
    }

    /// False only for a key never inserted.
    pub(super) fn may_hold(&self, key: &[u8]) -> bool {
        self.bits(hash(key)).all(|bit| self.words[(bit / 64) as usize].load(Ordering::Acquire) & (1 << (bit % 64)) != 0)
    }

    fn bits(&self, h: u64) -> impl Iterator<Item = u64> + use<> {
        let (a, b) = (h, h.rotate_left(32) | 1);
        let mask = self.mask;
        (0..PROBES).map(move |i| a.wrapping_add(i.wrapping_mul(b)) & mask)
    }
}

/// A key's hash: SipHash with fixed keys, the same in every process (nothing is
/// stored).
pub(super) fn hash(key: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// The customer a customer-index key names: tag ‖ customer ‖ 0 ‖ 16-byte order id.
pub(super) fn customer_of_key(k: &[u8]) -> Option<&[u8]> {
    k.get(1..k.len().checked_sub(17)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inserted_key_is_always_held_and_few_others_are() {
        let f = Held::sized_for(0);
        let held: Vec<String> = (0..100_000).map(|i| format!("C-{i}")).collect();
        for c in &held {
            f.insert(c.as_bytes());
        }
        assert!(held.iter().all(|c| f.may_hold(c.as_bytes())), "no false negative");
        let false_positives = (0..100_000).filter(|i| f.may_hold(format!("D-{i}").as_bytes())).count();
        assert!(false_positives < 100, "{false_positives} of 100 000 strangers");
        assert!(f.may_hold("客户-上海".as_bytes()) == f.may_hold("客户-上海".as_bytes()));
    }

    #[test]
    fn a_key_names_its_customer() {
        let mut k = vec![b'c'];
        k.extend_from_slice("客户 1".as_bytes());
        k.push(0);
        k.extend_from_slice(&[7; 16]);
        assert_eq!(customer_of_key(&k), Some("客户 1".as_bytes()));
        assert_eq!(customer_of_key(&[b'c', 0]), None);
    }
}
