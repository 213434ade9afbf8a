//! What a store holds besides the listings of the `Store` trait (`Extras`): each
//! backend reads it for `store copy` (`dump.rs`). Below the backends and the copy,
//! so the backends need not import the copy.

use super::{Quarantined, UsedLink};
use crate::engine::payments::PaymentOutcome;

/// What a store holds besides what the `Store` trait lists.
#[derive(Debug, Clone, Default)]
pub(crate) struct Extras {
    /// Payments seen: source, payment id, what became of it.
    pub(crate) payments: Vec<(String, String, PaymentOutcome)>,
    /// Spent single-use keys.
    pub(crate) links: Vec<(String, UsedLink)>,
    /// Background jobs' state, by name.
    pub(crate) jobs: Vec<(String, serde_json::Value)>,
    /// Rows set aside: where they were (space, key) and what they were.
    pub(crate) quarantine: Vec<(String, String, Quarantined)>,
}
