//! Signed links for people who have no account: approvers following an e-mail, a
//! customer checking status, accepting a delivery or answering the survey.
//!
//! A token is `base64url(claims) . base64url(HMAC-SHA256(key, "orderbridge-link-v1." ‖
//! base64url(claims)))`. The claims say what the link may do (purpose), on which order,
//! for whom, until when, and carry a link id. Verification is constant-time and checks
//! purpose and expiry; *single use* is the store's job: the link id is recorded in the
//! same transaction as the action it performed, so a second use is refused and a
//! revoked link (e.g. approvals voided by a material change) is refused the same way.
//!
//! Tokens are deterministic for one effect (issued-at is the effect's creation time),
//! so a mail sent again after a crash carries the same link. Several keys may be
//! configured: the first signs, all verify (rotation without breaking mail in flight).

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::domain::OrderId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkPurpose {
    Approval,
    Status,
    Acceptance,
    Survey,
}

impl LinkPurpose {
    pub const ALL: [LinkPurpose; 4] =
        [LinkPurpose::Approval, LinkPurpose::Status, LinkPurpose::Acceptance, LinkPurpose::Survey];

    pub fn as_str(self) -> &'static str {
        match self {
            LinkPurpose::Approval => "approval",
            LinkPurpose::Status => "status",
            LinkPurpose::Acceptance => "acceptance",
            LinkPurpose::Survey => "survey",
        }
    }

    /// Status pages may be opened again and again; the others act once.
    pub fn single_use(self) -> bool {
        !matches!(self, LinkPurpose::Status)
    }
}

/// What a link grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkClaims {
    #[serde(rename = "p")]
    pub purpose: LinkPurpose,
    #[serde(rename = "o")]
    pub order_id: OrderId,
    /// Who it was sent to: a directory id or an e-mail address.
    #[serde(rename = "s")]
    pub subject: String,
    /// The link's own id; single use is recorded under it.
    #[serde(rename = "n")]
    pub link_id: String,
    /// What else the link is bound to (approval links: the round and level), checked
    /// by the page against the order as it is now.
    #[serde(rename = "c", default, skip_serializing_if = "String::is_empty")]
    pub context: String,
    #[serde(rename = "iat")]
    pub issued_at: i64,
    #[serde(rename = "exp")]
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("this link is not valid (damaged or altered)")]
    Invalid,
    #[error("this link expired on {0}")]
    Expired(DateTime<Utc>),
    #[error("this link is not meant for this page")]
    WrongPurpose,
}

const DOMAIN: &[u8] = b"orderbridge-link-v1.";

/// Issues and verifies links. Holds the keys; never prints them.
pub struct LinkSigner {
    keys: Vec<SecretString>,
    public_url: String,
    ttl: [chrono::Duration; 4],
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSigner").field("keys", &self.keys.len()).field("public_url", &self.public_url).finish()
    }
}

type HmacSha256 = Hmac<Sha256>;

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()
}

impl LinkSigner {
    /// `keys[0]` signs; every key verifies. `ttl` is per purpose, in `LinkPurpose::ALL` order.
    pub fn new(keys: Vec<SecretString>, public_url: &str, ttl: [std::time::Duration; 4]) -> Self {
        assert!(!keys.is_empty(), "at least one link key");
        LinkSigner {
            keys,
            public_url: public_url.trim_end_matches('/').to_owned(),
            ttl: ttl.map(|d| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(7))),
        }
    }

    pub fn ttl(&self, purpose: LinkPurpose) -> chrono::Duration {
        self.ttl[LinkPurpose::ALL.iter().position(|p| *p == purpose).unwrap_or(0)]
    }

    fn mac(key: &SecretString, payload: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(key.expose_secret().as_bytes()).expect("HMAC takes any key length");
        mac.update(DOMAIN);
        mac.update(payload.as_bytes());
        mac
    }

    /// The claims for a link issued at `issued` (expiry from the purpose's TTL).
    pub fn claims(
        &self,
        purpose: LinkPurpose,
        order_id: OrderId,
        subject: &str,
        link_id: &str,
        issued: DateTime<Utc>,
    ) -> LinkClaims {
        LinkClaims {
            purpose,
            order_id,
            subject: subject.to_owned(),
            link_id: link_id.to_owned(),
            context: String::new(),
            issued_at: issued.timestamp(),
            expires_at: (issued + self.ttl(purpose)).timestamp(),
        }
    }

    pub fn token(&self, claims: &LinkClaims) -> String {
        let payload = b64(&serde_json::to_vec(claims).expect("claims serialise"));
        let sig = Self::mac(&self.keys[0], &payload).finalize().into_bytes();
        format!("{payload}.{}", b64(&sig))
    }

    /// The page URL for a link: `{public_url}/pages/{purpose}/{token}`.
    pub fn url(&self, claims: &LinkClaims) -> String {
        format!("{}/pages/{}/{}", self.public_url, claims.purpose.as_str(), self.token(claims))
    }

    /// Checks signature (any configured key, constant time), purpose and expiry.
    ///
    /// # Errors
    /// `Invalid` for anything damaged or signed with another key, `WrongPurpose`,
    /// `Expired` with the moment it expired.
    pub fn verify(&self, token: &str, purpose: LinkPurpose, now: DateTime<Utc>) -> Result<LinkClaims, LinkError> {
        let (payload, sig) = token.split_once('.').ok_or(LinkError::Invalid)?;
        let sig = unb64(sig).ok_or(LinkError::Invalid)?;
        if !self.keys.iter().any(|k| Self::mac(k, payload).verify_slice(&sig).is_ok()) {
            return Err(LinkError::Invalid);
        }
        let claims: LinkClaims =
            unb64(payload).and_then(|b| serde_json::from_slice(&b).ok()).ok_or(LinkError::Invalid)?;
        if claims.purpose != purpose {
            return Err(LinkError::WrongPurpose);
        }
        if now.timestamp() >= claims.expires_at {
            let at = DateTime::from_timestamp(claims.expires_at, 0).unwrap_or_default();
            return Err(LinkError::Expired(at));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn signer(keys: &[&str]) -> LinkSigner {
        let day = Duration::from_secs(86_400);
        LinkSigner::new(
            keys.iter().map(|k| SecretString::from(k.to_string())).collect(),
            "https://orders.bank.example/",
            [day, day * 30, day * 7, day * 30],
        )
    }

    fn now() -> DateTime<Utc> {
        "2026-11-26T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_link_verifies_until_it_expires() {
        let s = signer(&["k1"]);
        let order = OrderId::new_v7();
        let c = s.claims(LinkPurpose::Survey, order, "zhang.wei@example.com", "ord.5.0/survey", now());
        let url = s.url(&c);
        assert!(url.starts_with("https://orders.bank.example/pages/survey/"), "{url}");
        let token = url.rsplit('/').next().unwrap();
        assert_eq!(s.verify(token, LinkPurpose::Survey, now()).unwrap(), c);
        assert_eq!(s.token(&c), token, "deterministic: a resent mail carries the same link");
        let later = now() + chrono::Duration::days(30);
        assert!(matches!(s.verify(token, LinkPurpose::Survey, later), Err(LinkError::Expired(_))));
        assert_eq!(s.verify(token, LinkPurpose::Approval, now()), Err(LinkError::WrongPurpose));
    }

    #[test]
    fn tampering_and_foreign_keys_are_refused() {
        let s = signer(&["k1"]);
        let c = s.claims(LinkPurpose::Approval, OrderId::new_v7(), "li.na", "x/approval", now());
        let token = s.token(&c);
        // Change the claims (a later expiry) but keep the signature.
        let mut forged = c.clone();
        forged.expires_at += 86_400 * 365;
        let payload = b64(&serde_json::to_vec(&forged).unwrap());
        let sig = token.split_once('.').unwrap().1;
        assert_eq!(s.verify(&format!("{payload}.{sig}"), LinkPurpose::Approval, now()), Err(LinkError::Invalid));
        assert_eq!(signer(&["other"]).verify(&token, LinkPurpose::Approval, now()), Err(LinkError::Invalid));
        for junk in ["", ".", "abc", "a.b", &token[..token.len() - 2]] {
            assert_eq!(s.verify(junk, LinkPurpose::Approval, now()), Err(LinkError::Invalid), "{junk}");
        }
        // Rotation: a new first key signs, the old one still verifies.
        assert!(signer(&["k2", "k1"]).verify(&token, LinkPurpose::Approval, now()).is_ok());
    }
}
