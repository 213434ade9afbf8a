//! Crypto-shredding: an order's data key replaced by a note of when and why it was
//! erased. Its tokens then open no more, anywhere they are stored (the hot store,
//! archive segments, backups), while the audit chain, computed over the tokens,
//! still verifies. The audited step around it is `crate::orders` (`erase_personal_data`).
//!
//! The row is overwritten, not kept beside: the engines drop the old version when
//! they compact (fjall, sled, redb) or vacuum (PostgreSQL).

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{DekRow, Vault, row_key};
use crate::domain::OrderId;

/// One order whose personal data was erased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Erased {
    pub order_id: OrderId,
    pub at: DateTime<Utc>,
    pub reason: String,
}

impl Vault {
    /// The row that replaces the order's data key.
    pub(crate) fn erased_row(id: OrderId, reason: &str, now: DateTime<Utc>) -> (String, serde_json::Value) {
        let row = DekRow { kek: None, wrapped: None, erased_at: Some(now), reason: Some(reason.to_owned()) };
        (row_key(id), serde_json::to_value(row).expect("a key row serialises"))
    }

    /// Held while data keys are rewrapped or erased, so a rotation never writes back
    /// a key erased meanwhile.
    pub(crate) async fn exclusive(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.ops.lock().await
    }
}
