//! Which customers the customer index holds rows for, as a Bloom filter in memory.
//!
//! Intake reads a customer's recent orders (`Store::customer_orders`, for
//! screening). Most customers at intake have none, and for those an LSM engine's
//! range scan still consults every table (Bloom filters answer point reads, not
//! ranges): 6 % of the daemon's CPU under `scripts/bench.sh 80000 64`. A customer
//! the filter does not hold has no rows and is not scanned; one it holds (or a false
//! positive, under 1 % at the size chosen) is scanned as before.
//!
//! Built at open from the index's keys; a customer is added when a batch that
//! writes one of its rows is built, before the batch reaches the committer, so a
//! reader never misses a committed row. Never cleared: an archived customer costs a
//! scan that finds nothing.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bits per customer the filter is sized for, and probes per customer: about
/// 0.3 % false positives at that load.
const BITS_PER_CUSTOMER: usize = 16;
const PROBES: u64 = 4;
/// Customers a new filter is sized for at least (2 MiB of bits).
const MIN_CUSTOMERS: usize = 1 << 20;

pub(super) struct Customers {
    words: Box<[AtomicU64]>,
    /// Bits − 1 (a power of two).
    mask: u64,
}

impl Customers {
    /// A filter for `customers` now and twice as many later, at least `MIN_CUSTOMERS`.
    pub(super) fn sized_for(customers: usize) -> Customers {
        let bits = (customers.saturating_mul(2).max(MIN_CUSTOMERS) * BITS_PER_CUSTOMER).next_power_of_two();
        let words = (0..bits / 64).map(|_| AtomicU64::new(0)).collect();
        Customers { words, mask: bits as u64 - 1 }
    }

    pub(super) fn insert(&self, customer: &[u8]) {
        self.insert_hash(hash(customer));
    }

    /// Inserts a customer by its `hash`.
    pub(super) fn insert_hash(&self, hash: u64) {
        for bit in self.bits(hash) {
            self.words[(bit / 64) as usize].fetch_or(1 << (bit % 64), Ordering::Release);
        }
    }

    /// False only for a customer never inserted.
    pub(super) fn may_hold(&self, customer: &[u8]) -> bool {
        self.bits(hash(customer))
            .all(|bit| self.words[(bit / 64) as usize].load(Ordering::Acquire) & (1 << (bit % 64)) != 0)
    }

    fn bits(&self, h: u64) -> impl Iterator<Item = u64> + use<> {
        let (a, b) = (h, h.rotate_left(32) | 1);
        let mask = self.mask;
        (0..PROBES).map(move |i| a.wrapping_add(i.wrapping_mul(b)) & mask)
    }
}

/// A customer's hash: SipHash with fixed keys, the same in every process (nothing
/// is stored).
pub(super) fn hash(customer: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    customer.hash(&mut h);
    h.finish()
}

/// The customer a customer-index key names: tag ‖ customer ‖ 0 ‖ 16-byte order id.
pub(super) fn of_key(k: &[u8]) -> Option<&[u8]> {
    k.get(1..k.len().checked_sub(17)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inserted_customer_is_always_held_and_few_others_are() {
        let f = Customers::sized_for(0);
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
        assert_eq!(of_key(&k), Some("客户 1".as_bytes()));
        assert_eq!(of_key(&[b'c', 0]), None);
    }
}
