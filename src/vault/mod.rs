//! Personal data encrypted at rest (envelope encryption), key rotation and
//! crypto-shredding. The one home for which values are encrypted, with which key,
//! and when they can no longer be read.
//!
//! Each order gets a random 256-bit data key when its first row is written with
//! `[privacy] active_key` set; the key is stored wrapped under that key-encryption key
//! (KEK), in its own row (`dek/<order id>`, written in the same commit as the order).
//! From then on every personal value of the order (`domain::privacy`'s fields: ID
//! document number, phone, e-mail, postal address) is stored as a token
//! (`token.rs`) wherever it occurs: the order row, its events, its effects' bodies,
//! its held digest items. `conceal` (in `crate::orders`' commit, before the chain is
//! sealed) puts the tokens in, so hashes and seals are over what is stored and still
//! verify once the data key is gone; `reveal_*` opens them again for the engine and
//! the edges that need clear text (sending mail, pushing a body, rendering a
//! document, the API and console before masking, evidence packs).
//!
//! `rotate.rs`: rewrapping data keys under the active KEK, and their count per KEK;
//! erasure (deleting a data key, the order's values then read as `erased`) is
//! `erase.rs`.

mod conceal;
mod erase;
mod rotate;
pub(crate) mod token;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use erase::Erased;
pub use rotate::{KeyStatus, Rotated};
use token::Key;

use crate::domain::OrderId;
use crate::store::{Store, StoreError};

/// Data keys kept opened in memory before the cache starts again (bounded memory).
const CACHE: usize = 20_000;

/// The configured key-encryption keys (`[privacy]`).
#[derive(Clone, Debug, Default)]
pub struct PrivacyKeys {
    /// The KEK new data keys are wrapped under (`None`: personal data is stored in clear).
    pub active: Option<String>,
    /// Every configured KEK by id (derived from its secret).
    pub(crate) keys: BTreeMap<String, Key>,
    /// Personal data of an ended order is erased this many years after it ended.
    pub retain_years: Option<u32>,
    /// How often the daemon looks for orders past `retain_years`.
    pub sweep_interval: std::time::Duration,
}

impl PrivacyKeys {
    /// Adds the KEK `id`, derived from `secret`.
    pub fn insert(&mut self, id: &str, secret: &[u8]) {
        self.keys.insert(id.to_owned(), Key::derive(secret));
    }
}

/// A data key's row: wrapped under a KEK, or erased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DekRow {
    /// The KEK it is wrapped under (absent once erased).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kek: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) wrapped: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) erased_at: Option<DateTime<Utc>>,
    /// Why it was erased (`retention`, or an erasure request's reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
}

/// What is known of an order's data key.
#[derive(Debug, Clone)]
pub(crate) enum Dek {
    Live(Key),
    /// Deleted: the order's tokens open no more.
    Erased,
    /// No row: an order stored before encryption, or one without keys configured.
    Absent,
    /// Wrapped under a KEK that is not configured (or does not open it).
    Locked(String),
}

/// The store row of an order's data key.
pub(crate) fn row_key(id: OrderId) -> String {
    format!("dek/{id}")
}

/// Personal data at rest: the configured KEKs, the store holding the data keys, and
/// the data keys opened so far.
pub struct Vault {
    keys: PrivacyKeys,
    store: Arc<dyn Store>,
    cache: Mutex<HashMap<OrderId, Dek>>,
    /// Rotation and erasure, one at a time (`erase.rs`).
    ops: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("active", &self.keys.active).finish_non_exhaustive()
    }
}

impl Vault {
    pub fn new(keys: PrivacyKeys, store: Arc<dyn Store>) -> Vault {
        Vault { keys, store, cache: Mutex::new(HashMap::new()), ops: tokio::sync::Mutex::new(()) }
    }

    /// Whether new personal data is encrypted (`[privacy] active_key` is set).
    pub fn encrypts(&self) -> bool {
        self.keys.active.as_ref().is_some_and(|a| self.keys.keys.contains_key(a))
    }

    pub(crate) fn keys(&self) -> &PrivacyKeys {
        &self.keys
    }

    /// The active KEK and its id.
    fn active(&self) -> Option<(&str, &Key)> {
        let id = self.keys.active.as_deref()?;
        self.keys.keys.get(id).map(|k| (id, k))
    }

    /// A new data key for `id`, and its row wrapped under the active KEK.
    pub(crate) fn new_dek(&self, id: OrderId) -> Option<(Key, (String, serde_json::Value))> {
        let (kek_id, kek) = self.active()?;
        let dek = Key::random();
        let row = DekRow {
            kek: Some(kek_id.to_owned()),
            wrapped: Some(token::wrap(kek, id, &dek)),
            erased_at: None,
            reason: None,
        };
        Some((dek, (row_key(id), serde_json::to_value(row).expect("a key row serialises"))))
    }

    /// The order's data key row as stored.
    pub(crate) async fn row(&self, id: OrderId) -> Result<Option<DekRow>, StoreError> {
        match self.store.job_state(&row_key(id)).await? {
            None => Ok(None),
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("the data key row of order {id}: {e}"))),
        }
    }

    /// The order's data key, opened (cached).
    pub(crate) async fn dek(&self, id: OrderId) -> Result<Dek, StoreError> {
        if let Some(d) = self.cache.lock().expect("the key cache").get(&id) {
            return Ok(d.clone());
        }
        let dek = match self.row(id).await? {
            None => Dek::Absent,
            Some(DekRow { erased_at: Some(_), .. }) => Dek::Erased,
            Some(DekRow { kek: Some(kek), wrapped: Some(w), .. }) => match self.keys.keys.get(&kek) {
                Some(k) => token::unwrap(k, id, &w).map_or_else(|_| Dek::Locked(kek), Dek::Live),
                None => Dek::Locked(kek),
            },
            Some(_) => return Err(StoreError::Corrupt(format!("the data key row of order {id} holds no key"))),
        };
        // Absent is not cached: the order's first encrypted step may write it any time.
        if !matches!(dek, Dek::Absent) {
            self.remember(id, dek.clone());
        }
        Ok(dek)
    }

    fn remember(&self, id: OrderId, dek: Dek) {
        let mut cache = self.cache.lock().expect("the key cache");
        if cache.len() >= CACHE {
            cache.clear();
        }
        cache.insert(id, dek);
    }

    /// Forgets the cached data key of `id` (after erasing or rewrapping it).
    pub(crate) fn forget(&self, id: OrderId) {
        self.cache.lock().expect("the key cache").remove(&id);
    }
}
