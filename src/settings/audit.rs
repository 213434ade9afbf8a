//! `[audit]`: the keys that seal the audit chain (`crate::orders::seal`), and how
//! often the daemon anchors it (`crate::anchor`).

use std::collections::BTreeMap;

use secrecy::ExposeSecret as _;
use serde::Deserialize;

use super::{Problems, SecretResolver};
use crate::orders::seal::AuditKeys;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAudit {
    /// The key new seals use (an id in `keys`). Without it the chain is plain SHA-256.
    pub(crate) key_id: Option<String>,
    /// Every key by id, each a secret reference (at least 32 bytes). Keep a retired
    /// key here after a rotation: seals made with it are checked with it.
    pub(crate) keys: BTreeMap<String, String>,
    /// How often the daemon writes an audit anchor (`crate::anchor`); 0: never.
    pub(crate) anchor_every_minutes: u64,
    /// A connector operation each new anchor is pushed to (e.g. write-once storage).
    pub(crate) anchor_push: Option<RawPush>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPush {
    pub(crate) connector: String,
    pub(crate) operation: String,
}

impl Default for RawAudit {
    fn default() -> Self {
        RawAudit { key_id: None, keys: BTreeMap::new(), anchor_every_minutes: 60, anchor_push: None }
    }
}

/// The connector operation anchors are pushed to, if any (that it exists is checked
/// with the connectors, `crate::config`).
pub(super) fn anchor_push(raw: &RawAudit, p: &mut Problems<'_>) -> Option<(crate::domain::ConnectorId, String)> {
    let push = raw.anchor_push.as_ref()?;
    match push.connector.parse() {
        Ok(c) => Some((c, push.operation.clone())),
        Err(e) => {
            p.bad(&["audit", "anchor_push", "connector"], format!("{e}"));
            None
        }
    }
}

/// How often the daemon writes an audit anchor (`None`: only on demand).
pub(super) fn anchor_every(raw: &RawAudit) -> Option<std::time::Duration> {
    (raw.anchor_every_minutes > 0).then(|| std::time::Duration::from_secs(raw.anchor_every_minutes.saturating_mul(60)))
}

pub(super) fn keys(raw: &RawAudit, secrets: &mut SecretResolver<'_>, p: &mut Problems<'_>) -> AuditKeys {
    let mut out = AuditKeys::default();
    for (id, r) in &raw.keys {
        match secrets.resolve(r) {
            Ok(Some(k)) => {
                let judged = if secrets.strict { secrets.checks.judge(r, k.expose_secret(), None) } else { Ok(()) };
                match judged {
                    Err(m) => p.bad(&["audit", "keys", id], m),
                    Ok(()) if k.expose_secret().len() < crate::secrets::MIN_HMAC_KEY => {
                        p.bad(
                            &["audit", "keys", id],
                            "an audit key must be at least 32 bytes (e.g. `openssl rand -hex 32`)".into(),
                        );
                    }
                    Ok(()) => {
                        out.keys.insert(id.clone(), k);
                    }
                }
            }
            Ok(None) => {}
            Err(e) => p.bad(&["audit", "keys", id], e),
        }
    }
    if let Some(id) = &raw.key_id {
        if !raw.keys.contains_key(id) {
            p.bad(&["audit", "key_id"], format!("key `{id}` is not one of [audit] keys"));
        }
        out.current = Some(id.clone());
    }
    out
}
