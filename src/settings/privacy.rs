//! `[privacy]`: the key-encryption keys that wrap each order's data key
//! (`crate::vault`), the one new data keys use, and how long personal data of an
//! ended order is kept.

use std::collections::BTreeMap;

use secrecy::ExposeSecret as _;
use serde::Deserialize;

use super::{Problems, SecretResolver};
use crate::vault::PrivacyKeys;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawPrivacy {
    /// The KEK new data keys are wrapped under (an id in `keys`). Without it personal
    /// data is stored in clear.
    pub(crate) active_key: Option<String>,
    /// Every KEK by id, each a secret reference (at least 32 bytes). Keep a retired
    /// KEK until `orderbridge keys rotate` has rewrapped the data keys under it.
    pub(crate) keys: BTreeMap<String, String>,
    /// Years after an order ended (closed, cancelled, rejected) its personal data is
    /// erased by deleting its data key; 0: never.
    pub(crate) retain_years: u32,
    /// How often the daemon looks for orders past `retain_years`.
    pub(crate) sweep_interval_secs: u64,
}

impl Default for RawPrivacy {
    fn default() -> Self {
        RawPrivacy { active_key: None, keys: BTreeMap::new(), retain_years: 0, sweep_interval_secs: 3600 }
    }
}

/// The KEKs, resolved and judged.
pub(super) fn keys(raw: &RawPrivacy, secrets: &mut SecretResolver<'_>, p: &mut Problems<'_>) -> PrivacyKeys {
    let mut out = PrivacyKeys::default();
    for (id, r) in &raw.keys {
        match secrets.resolve(r) {
            Ok(Some(k)) => {
                let judged = if secrets.strict { secrets.checks.judge(r, k.expose_secret(), None) } else { Ok(()) };
                match judged {
                    Err(m) => p.bad(&["privacy", "keys", id], m),
                    Ok(()) if k.expose_secret().len() < crate::secrets::MIN_HMAC_KEY => p.bad(
                        &["privacy", "keys", id],
                        "a privacy key must be at least 32 bytes (e.g. `openssl rand -hex 32`)".into(),
                    ),
                    Ok(()) => out.insert(id, k.expose_secret().as_bytes()),
                }
            }
            Ok(None) => {}
            Err(e) => p.bad(&["privacy", "keys", id], e),
        }
    }
    if let Some(id) = &raw.active_key {
        if !raw.keys.contains_key(id) {
            p.bad(&["privacy", "active_key"], format!("key `{id}` is not one of [privacy] keys"));
        }
        out.active = Some(id.clone());
    }
    out.retain_years = (raw.retain_years > 0).then_some(raw.retain_years);
    out.sweep_interval = std::time::Duration::from_secs(raw.sweep_interval_secs.max(1));
    out
}
