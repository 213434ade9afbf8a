//! `[evidence]`: the key that signs evidence packs (`orderbridge evidence`).

use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use super::{Problems, SecretResolver};

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawEvidence {
    /// A secret reference to the daemon's Ed25519 key: a 32-byte seed in hex
    /// (`openssl rand -hex 32`) or PKCS#8 (PEM or base64). Without it, packs cannot be
    /// made (they can still be verified with a public key).
    pub(crate) signing_key: Option<String>,
}

/// The signing key, resolved, judged and checked to be an Ed25519 key.
pub(super) fn signing_key(
    raw: &RawEvidence,
    secrets: &mut SecretResolver<'_>,
    p: &mut Problems<'_>,
) -> Option<SecretString> {
    let r = raw.signing_key.as_ref()?;
    let keys = &["evidence", "signing_key"];
    match secrets.resolve(r) {
        Ok(Some(k)) => {
            let judged = if secrets.strict { secrets.checks.judge(r, k.expose_secret(), None) } else { Ok(()) };
            match judged.and_then(|()| crate::evidence::key::signing_key(k.expose_secret()).map(|_| ())) {
                Ok(()) => Some(k),
                Err(m) => {
                    p.bad(keys, if m.starts_with("secret ") { m } else { format!("secret {r}: {m}") });
                    None
                }
            }
        }
        Ok(None) => None,
        Err(e) => {
            p.bad(keys, e);
            None
        }
    }
}
