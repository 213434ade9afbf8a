//! API tokens: one per API client (an integration, with scopes) or per person (a
//! personal token acting as that person, narrowed by its scopes), each with an
//! expiry, revocable and rotatable. The secret is shown once, when it is made; what
//! is kept is its SHA-256 (a token is 32 random bytes, so a fast hash is enough: no
//! guessing can reach it), looked up by the token's public id and compared in
//! constant time.
//!
//! Kept in one file under the data directory, `<store.path>/auth/tokens.json`
//! (written whole, to a temporary file renamed over it), not in the store: tokens
//! are few and changed by administrators, the CLI manages them whether or not the
//! daemon runs (an embedded store is locked by a running daemon), and the `Store`
//! trait stays about orders. The daemon reads the file when a token it does not know
//! arrives, so a new or revoked token counts at once. Replicas sharing a PostgreSQL
//! store each need the file (a shared volume, or the same file deployed to each).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::engine::access::{Action, Channel, Principal};

/// How a token begins: `obt_<id>_<secret>`.
const PREFIX: &str = "obt_";

/// Who a token acts as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub(crate) enum Holder {
    /// An API client (an integration), by its name.
    Client(String),
    /// A person of the directory, by their id.
    Person(String),
}

/// A token as kept: everything but its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TokenRecord {
    pub(crate) id: String,
    pub(crate) holder: Holder,
    /// What it may do; for a personal token, empty means all its person's roles allow.
    pub(crate) scopes: Vec<Action>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub(crate) revoked_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub(crate) rotated_at: Option<DateTime<Utc>>,
    /// Hex SHA-256 of the secret part.
    sha256: String,
}

impl TokenRecord {
    /// The principal this token stands for.
    pub(crate) fn principal(&self) -> Principal {
        match &self.holder {
            Holder::Client(name) => Principal::Client { name: name.clone(), scopes: self.scopes.clone() },
            Holder::Person(id) => Principal::Person {
                id: id.clone(),
                scopes: (!self.scopes.is_empty()).then(|| self.scopes.clone()),
                channel: Channel::Api,
            },
        }
    }
}

/// Why a token was not accepted, or a token command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("unknown token")]
    Unknown,
    #[error("this token expired at {0}")]
    Expired(DateTime<Utc>),
    #[error("this token was revoked at {0}")]
    Revoked(DateTime<Utc>),
    #[error("no token `{0}`")]
    NoSuchId(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{}: {why}", .path.display())]
    Io { path: PathBuf, why: String },
}

/// The token file of a data directory.
#[derive(Clone, Debug)]
pub(crate) struct TokenFile {
    path: PathBuf,
}

#[derive(Default, Serialize, Deserialize)]
struct Stored {
    tokens: Vec<TokenRecord>,
}

fn sha256_hex(secret: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// `n` random bytes from the system's generator, hex.
fn random_hex(n: usize) -> String {
    use ring::rand::SecureRandom as _;
    let mut bytes = vec![0u8; n];
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("the system's random generator works");
    hex::encode(bytes)
}

impl TokenFile {
    /// The token file under `store_path` (the data directory).
    pub(crate) fn under(store_path: &Path) -> TokenFile {
        TokenFile { path: store_path.join("auth").join("tokens.json") }
    }

    fn read(&self) -> Result<Stored, TokenError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| TokenError::Io { path: self.path.clone(), why: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Stored::default()),
            Err(e) => Err(TokenError::Io { path: self.path.clone(), why: e.to_string() }),
        }
    }

    fn write(&self, stored: &Stored) -> Result<(), TokenError> {
        let io = |e: std::io::Error| TokenError::Io { path: self.path.clone(), why: e.to_string() };
        let dir = self.path.parent().expect("the token file has a directory");
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(stored).expect("tokens serialise");
        {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)
    }

    /// Every token, revoked and expired ones too.
    pub(crate) fn list(&self) -> Result<Vec<TokenRecord>, TokenError> {
        Ok(self.read()?.tokens)
    }

    /// A new token; the answer's string is its secret, shown only now.
    pub(crate) fn create(
        &self,
        holder: Holder,
        scopes: Vec<Action>,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(TokenRecord, String), TokenError> {
        if let Holder::Client(name) | Holder::Person(name) = &holder
            && (name.trim().is_empty() || name.contains(char::is_whitespace))
        {
            return Err(TokenError::Invalid("name the client or person (no spaces)".into()));
        }
        if matches!(holder, Holder::Client(_)) && scopes.is_empty() {
            return Err(TokenError::Invalid("an API client token needs at least one scope".into()));
        }
        let mut stored = self.read()?;
        let id = random_hex(8);
        let secret = random_hex(32);
        let record = TokenRecord {
            id: id.clone(),
            holder,
            scopes,
            created_at: now,
            expires_at,
            revoked_at: None,
            rotated_at: None,
            sha256: sha256_hex(&secret),
        };
        stored.tokens.push(record.clone());
        self.write(&stored)?;
        Ok((record, format!("{PREFIX}{id}_{secret}")))
    }

    fn change(&self, id: &str, f: impl FnOnce(&mut TokenRecord)) -> Result<TokenRecord, TokenError> {
        let mut stored = self.read()?;
        let rec = stored.tokens.iter_mut().find(|t| t.id == id).ok_or_else(|| TokenError::NoSuchId(id.to_owned()))?;
        f(rec);
        let rec = rec.clone();
        self.write(&stored)?;
        Ok(rec)
    }

    /// Revokes a token: it stops working at once.
    pub(crate) fn revoke(&self, id: &str, now: DateTime<Utc>) -> Result<TokenRecord, TokenError> {
        self.change(id, |t| t.revoked_at = t.revoked_at.or(Some(now)))
    }

    /// A new secret for the same token (same id, holder, scopes and expiry); the old
    /// secret stops working at once. The answer's string is shown only now.
    pub(crate) fn rotate(&self, id: &str, now: DateTime<Utc>) -> Result<(TokenRecord, String), TokenError> {
        let secret = random_hex(32);
        let hash = sha256_hex(&secret);
        let rec = self.change(id, |t| {
            if t.revoked_at.is_none() {
                t.sha256 = hash;
                t.rotated_at = Some(now);
            }
        })?;
        if let Some(at) = rec.revoked_at {
            return Err(TokenError::Revoked(at));
        }
        Ok((rec.clone(), format!("{PREFIX}{}_{secret}", rec.id)))
    }

    /// The token `given` is, if it is one of ours and still good at `now`.
    pub(crate) fn verify(&self, given: &str, now: DateTime<Utc>) -> Result<TokenRecord, TokenError> {
        let (id, secret) = given.strip_prefix(PREFIX).and_then(|r| r.split_once('_')).ok_or(TokenError::Unknown)?;
        let stored = self.read()?;
        let rec = stored.tokens.into_iter().find(|t| t.id == id).ok_or(TokenError::Unknown)?;
        if !bool::from(sha256_hex(secret).as_bytes().ct_eq(rec.sha256.as_bytes())) {
            return Err(TokenError::Unknown);
        }
        if let Some(at) = rec.revoked_at {
            return Err(TokenError::Revoked(at));
        }
        match rec.expires_at {
            Some(at) if at <= now => Err(TokenError::Expired(at)),
            _ => Ok(rec),
        }
    }
}

/// Whether `s` looks like one of our tokens (so an admin-token mismatch can say which).
pub(crate) fn looks_like_token(s: &str) -> bool {
    s.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_until_revoked_expired_or_rotated_and_only_their_hash_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = TokenFile::under(dir.path());
        let now = Utc::now();
        let (rec, secret) = file.create(Holder::Client("erp".into()), vec![Action::RecordDelivery], None, now).unwrap();
        assert_eq!(file.verify(&secret, now).unwrap().id, rec.id);
        let text = std::fs::read_to_string(dir.path().join("auth/tokens.json")).unwrap();
        let secret_part = secret.rsplit('_').next().unwrap();
        assert!(!text.contains(secret_part) && text.contains(&sha256_hex(secret_part)), "{text}");
        assert!(matches!(file.verify(&format!("{secret}x"), now), Err(TokenError::Unknown)));
        assert!(matches!(file.verify("obt_nope_nope", now), Err(TokenError::Unknown)));

        let (_, rotated) = file.rotate(&rec.id, now).unwrap();
        assert!(matches!(file.verify(&secret, now), Err(TokenError::Unknown)), "the old secret is gone");
        assert!(file.verify(&rotated, now).is_ok());
        file.revoke(&rec.id, now).unwrap();
        assert!(matches!(file.verify(&rotated, now), Err(TokenError::Revoked(_))));

        let soon = now + chrono::Duration::days(1);
        let (_, personal) = file.create(Holder::Person("wang.fang".into()), Vec::new(), Some(soon), now).unwrap();
        let p = file.verify(&personal, now).unwrap().principal();
        assert_eq!(p, Principal::Person { id: "wang.fang".into(), scopes: None, channel: Channel::Api });
        assert!(matches!(file.verify(&personal, soon), Err(TokenError::Expired(_))));
        assert!(file.create(Holder::Client("x".into()), Vec::new(), None, now).is_err(), "a client needs scopes");
        assert_eq!(file.list().unwrap().len(), 2);
    }
}
