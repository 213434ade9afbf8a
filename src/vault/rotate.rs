//! Key rotation: every data key rewrapped under the active KEK, a page at a time
//! (`Vault::rotate`), so an old KEK can leave the configuration; and how many data
//! keys each KEK wraps (`Vault::status`).
//!
//! A pass is idempotent: a data key already under the active KEK is left alone, so a
//! pass stopped half-way (a crash, a restart) is resumed by running it again. Each
//! page of rewrapped keys is one commit.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{DekRow, Vault, row_key, token};
use crate::domain::OrderId;
use crate::store::{Step, StoreError};

/// Orders read (and keys rewrapped in one commit) per page.
const PAGE: usize = 500;

/// What a rotation pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Rotated {
    /// The KEK the data keys are wrapped under now.
    pub active: String,
    pub rewrapped: u64,
    /// Already under the active KEK.
    pub current: u64,
    /// Erased data keys (nothing to rewrap).
    pub erased: u64,
    /// Orders stored before encryption, without a data key.
    pub without_key: u64,
    /// Data keys under a KEK that is not configured: order and KEK id.
    pub locked: Vec<(OrderId, String)>,
}

/// How many data keys each KEK wraps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KeyStatus {
    pub active: Option<String>,
    /// Data keys by the KEK wrapping them.
    pub by_key: BTreeMap<String, u64>,
    pub erased: u64,
    pub without_key: u64,
    /// KEK ids data keys are wrapped under that are not configured.
    pub missing: Vec<String>,
}

impl Vault {
    /// Every order id, hot and archived (16 bytes each).
    async fn all_orders(&self) -> Result<Vec<OrderId>, StoreError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self.store.list(None, after, PAGE).await?;
            after = page.last().map(|r| r.id);
            out.extend(page.iter().map(|r| r.id));
            if page.len() < PAGE {
                break;
            }
        }
        let mut after = None;
        loop {
            let page = self.store.archive_entries(after, PAGE).await?;
            after = page.last().map(|(id, _)| *id);
            out.extend(page.iter().map(|(id, _)| *id));
            if page.len() < PAGE {
                break;
            }
        }
        Ok(out)
    }

    /// Counts the data keys under each KEK.
    ///
    /// # Errors
    /// From the store.
    pub async fn status(&self) -> Result<KeyStatus, StoreError> {
        let mut s = KeyStatus { active: self.keys.active.clone(), ..KeyStatus::default() };
        for id in self.all_orders().await? {
            match self.row(id).await? {
                None => s.without_key += 1,
                Some(DekRow { erased_at: Some(_), .. }) => s.erased += 1,
                Some(DekRow { kek, .. }) => *s.by_key.entry(kek.unwrap_or_default()).or_default() += 1,
            }
        }
        s.missing = s.by_key.keys().filter(|k| !self.keys.keys.contains_key(*k)).cloned().collect();
        Ok(s)
    }

    /// Rewraps every data key not under the active KEK (see the module's note).
    ///
    /// # Errors
    /// `Io` without an active key; from the store.
    pub async fn rotate(&self) -> Result<Rotated, StoreError> {
        let Some((active, kek)) = self.active().map(|(id, k)| (id.to_owned(), k.clone())) else {
            return Err(StoreError::Io("[privacy] active_key is not set: there is no key to rotate to".into()));
        };
        let _one = self.exclusive().await;
        let mut r = Rotated { active: active.clone(), ..Rotated::default() };
        for ids in self.all_orders().await?.chunks(PAGE) {
            let mut step = Step::default();
            for &id in ids {
                if let Some(row) = self.rewrapped(id, &active, &kek, &mut r).await? {
                    step.jobs.push(row);
                }
            }
            if !step.jobs.is_empty() {
                self.store.commit(vec![step]).await?;
                ids.iter().for_each(|id| self.forget(*id));
            }
        }
        Ok(r)
    }

    /// The row of `id`'s data key rewrapped under `kek` (`active`), if it needs it;
    /// counted in `r`.
    async fn rewrapped(
        &self,
        id: OrderId,
        active: &str,
        kek: &token::Key,
        r: &mut Rotated,
    ) -> Result<Option<(String, serde_json::Value)>, StoreError> {
        match self.row(id).await? {
            None => r.without_key += 1,
            Some(DekRow { erased_at: Some(_), .. }) => r.erased += 1,
            Some(DekRow { kek: Some(k), .. }) if k == active => r.current += 1,
            Some(DekRow { kek: Some(old), wrapped: Some(w), .. }) => {
                let Some(dek) = self.keys.keys.get(&old).and_then(|o| token::unwrap(o, id, &w).ok()) else {
                    r.locked.push((id, old));
                    return Ok(None);
                };
                let row = DekRow {
                    kek: Some(active.to_owned()),
                    wrapped: Some(token::wrap(kek, id, &dek)),
                    erased_at: None,
                    reason: None,
                };
                r.rewrapped += 1;
                return Ok(Some((row_key(id), serde_json::to_value(row).expect("a key row serialises"))));
            }
            Some(_) => return Err(StoreError::Corrupt(format!("the data key row of order {id} holds no key"))),
        }
        Ok(None)
    }
}
