//! Links for people who have no account: approvers following an e-mail, a customer
//! checking status, accepting a delivery or answering the survey.
//!
//! A token is opaque: `v2.` ‖ base64url(nonce ‖ ChaCha20-Poly1305(claims)). The claims
//! (JSON) say what the link may do (purpose), on which order, for whom, until when, and
//! carry a link id; none of it can be read from the URL (proxy logs, browser history, a
//! forwarded mail), and a changed byte fails authentication. The encryption key and the
//! nonce key are derived from each configured link secret with HKDF-SHA256. The nonce is
//! synthetic: HMAC-SHA256 of the claims under the nonce key, cut to 96 bits (as in
//! AES-SIV), so a token is still deterministic for one effect (issued-at is the effect's
//! creation time) and a mail sent again after a crash carries the same link, while two
//! different claims never share a nonce.
//!
//! Tokens of the first format, `base64url(claims) . base64url(HMAC-SHA256(key,
//! "orderbridge-link-v1." ‖ base64url(claims)))`, are still accepted until they expire;
//! none are issued any more.
//!
//! Verification checks authenticity (any configured key), purpose and expiry; *single
//! use* is the store's job: the link id is recorded in the same transaction as the
//! action it performed, so a second use is refused and a revoked link (e.g. approvals
//! voided by a material change) is refused the same way. Several keys may be
//! configured: the first issues, all verify (rotation without breaking mail in flight).
//! Tokens never reach the logs: the request span shows the route's shape
//! (`/pages/approval/…`, see `http::loggable_path`).

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
    /// The feedback form (`/pages/feedback/…`): reusable, on the order the mail was
    /// about (nil for none), for the person it was sent to.
    Feedback,
}

impl LinkPurpose {
    pub(crate) const ALL: [LinkPurpose; 4] =
        [LinkPurpose::Approval, LinkPurpose::Status, LinkPurpose::Acceptance, LinkPurpose::Survey];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LinkPurpose::Approval => "approval",
            LinkPurpose::Status => "status",
            LinkPurpose::Acceptance => "acceptance",
            LinkPurpose::Survey => "survey",
            LinkPurpose::Feedback => "feedback",
        }
    }
}

/// What a link grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkClaims {
    #[serde(rename = "p")]
    pub(crate) purpose: LinkPurpose,
    #[serde(rename = "o")]
    pub(crate) order_id: OrderId,
    /// Who it was sent to: a directory id or an e-mail address.
    #[serde(rename = "s")]
    pub(crate) subject: String,
    /// The link's own id; single use is recorded under it.
    #[serde(rename = "n")]
    pub(crate) link_id: String,
    /// What else the link is bound to (approval links: the round and level), checked
    /// by the page against the order as it is now.
    #[serde(rename = "c", default, skip_serializing_if = "String::is_empty")]
    pub(crate) context: String,
    #[serde(rename = "iat")]
    pub(crate) issued_at: i64,
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
/// Prefix of the current, encrypted format.
const V2: &str = "v2.";
const V2_SALT: &[u8] = b"orderbridge-link-v2";
const NONCE_LEN: usize = 12;
/// How long a mail's feedback link works, in days (it asks nothing of the order).
const FEEDBACK_TTL_DAYS: i64 = 90;

/// The keys one link secret yields for the encrypted format.
struct SealKeys {
    aead: ring::aead::LessSafeKey,
    nonce: ring::hmac::Key,
}

impl SealKeys {
    fn derive(secret: &SecretString) -> Self {
        use ring::{aead, hkdf, hmac};
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, V2_SALT).extract(secret.expose_secret().as_bytes());
        let aead_key: aead::UnboundKey =
            prk.expand(&[b"link aead key"], &aead::CHACHA20_POLY1305).expect("HKDF output length").into();
        let nonce_key: hmac::Key =
            prk.expand(&[b"link nonce key"], hmac::HMAC_SHA256).expect("HKDF output length").into();
        SealKeys { aead: aead::LessSafeKey::new(aead_key), nonce: nonce_key }
    }

    fn seal(&self, plain: &[u8]) -> Vec<u8> {
        use ring::aead::{Aad, Nonce};
        let tag = ring::hmac::sign(&self.nonce, plain);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&tag.as_ref()[..NONCE_LEN]);
        let mut out = nonce.to_vec();
        let mut body = plain.to_vec();
        self.aead
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(V2_SALT), &mut body)
            .expect("claims fit one ChaCha20-Poly1305 message");
        out.extend_from_slice(&body);
        out
    }

    fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        use ring::aead::{Aad, Nonce};
        if sealed.len() < NONCE_LEN + self.aead.algorithm().tag_len() {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain = self.aead.open_in_place(nonce, Aad::from(V2_SALT), &mut body).ok()?;
        Some(plain.to_vec())
    }
}

/// Issues and verifies links. Holds the keys; never prints them.
pub struct LinkSigner {
    keys: Vec<SecretString>,
    sealers: Vec<SealKeys>,
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
    pub(crate) fn new(keys: Vec<SecretString>, public_url: &str, ttl: [std::time::Duration; 4]) -> Self {
        assert!(!keys.is_empty(), "at least one link key");
        LinkSigner {
            sealers: keys.iter().map(SealKeys::derive).collect(),
            keys,
            public_url: public_url.trim_end_matches('/').to_owned(),
            ttl: ttl.map(|d| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(7))),
        }
    }

    pub(crate) fn ttl(&self, purpose: LinkPurpose) -> chrono::Duration {
        if purpose == LinkPurpose::Feedback {
            return chrono::Duration::days(FEEDBACK_TTL_DAYS);
        }
        self.ttl[LinkPurpose::ALL.iter().position(|p| *p == purpose).unwrap_or(0)]
    }

    fn mac(key: &SecretString, payload: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(key.expose_secret().as_bytes()).expect("HMAC takes any key length");
        mac.update(DOMAIN);
        mac.update(payload.as_bytes());
        mac
    }

    /// The claims for a link issued at `issued` (expiry from the purpose's TTL).
    pub(crate) fn claims(
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

    /// The opaque token for `claims` (the current format, under the first key).
    pub(crate) fn token(&self, claims: &LinkClaims) -> String {
        let plain = serde_json::to_vec(claims).expect("claims serialise");
        format!("{V2}{}", b64(&self.sealers[0].seal(&plain)))
    }

    /// A token of the first format (readable claims, HMAC-signed); for tests of the
    /// links issued before the encrypted format.
    #[doc(hidden)]
    pub fn legacy_token(&self, claims: &LinkClaims) -> String {
        let payload = b64(&serde_json::to_vec(claims).expect("claims serialise"));
        let sig = Self::mac(&self.keys[0], &payload).finalize().into_bytes();
        format!("{payload}.{}", b64(&sig))
    }

    /// The claims of a token of either format, if some configured key made it.
    fn claims_of(&self, token: &str) -> Option<LinkClaims> {
        if let Some(sealed) = token.strip_prefix(V2) {
            let sealed = unb64(sealed)?;
            let plain = self.sealers.iter().find_map(|k| k.open(&sealed))?;
            return serde_json::from_slice(&plain).ok();
        }
        let (payload, sig) = token.split_once('.')?;
        let sig = unb64(sig)?;
        if !self.keys.iter().any(|k| Self::mac(k, payload).verify_slice(&sig).is_ok()) {
            return None;
        }
        unb64(payload).and_then(|b| serde_json::from_slice(&b).ok())
    }

    /// The page URL for a link: `{public_url}/pages/{purpose}/{token}`.
    pub(crate) fn url(&self, claims: &LinkClaims) -> String {
        format!("{}/pages/{}/{}", self.public_url, claims.purpose.as_str(), self.token(claims))
    }

    /// Checks authenticity (either format, any configured key), purpose and expiry.
    ///
    /// # Errors
    /// `Invalid` for anything damaged or signed with another key, `WrongPurpose`,
    /// `Expired` with the moment it expired.
    pub fn verify(&self, token: &str, purpose: LinkPurpose, now: DateTime<Utc>) -> Result<LinkClaims, LinkError> {
        let claims = self.claims_of(token).ok_or(LinkError::Invalid)?;
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

    /// Everything base64 can be made to show of a token: each `.`-separated part and the
    /// part after the version prefix, decoded as bytes, read as (lossy) text.
    pub(crate) fn decoded(token: &str) -> String {
        let mut out = String::new();
        for part in token.split('.').chain(token.strip_prefix(V2)) {
            if let Some(b) = unb64(part) {
                out.push_str(&String::from_utf8_lossy(&b));
            }
        }
        out
    }

    #[test]
    fn a_token_reveals_nothing_when_base64_decoded() {
        let s = signer(&["k1"]);
        let order = OrderId::new_v7();
        let c = s.claims(LinkPurpose::Status, order, "zhang.wei@example.com", "ord.7.0/status", now());
        let token = s.token(&c);
        assert!(token.starts_with("v2."), "{token}");
        let shown = decoded(&token);
        for secret in ["zhang.wei", "example.com", "ord.7.0", "status", &order.to_string(), "\"exp\"", "\"s\""] {
            assert!(!shown.contains(secret), "`{secret}` readable in {token}: {shown:?}");
        }
        let uuid = order.to_string();
        let bare = uuid.trim_start_matches("ord_");
        assert!(!shown.contains(bare) && !token.contains(bare), "order id readable");
        // Different claims, different nonces; the same claims, the same token.
        let other = s.claims(LinkPurpose::Status, order, "zhang.wei@example.com", "ord.7.1/status", now());
        assert_ne!(s.token(&other)[3..19], token[3..19]);
        assert_eq!(s.token(&c), token);
        // The first format showed everything, which is why it is no longer issued.
        assert!(decoded(&s.legacy_token(&c)).contains("zhang.wei@example.com"));
    }

    #[test]
    fn links_of_the_first_format_keep_working_until_they_expire() {
        let s = signer(&["k2", "k1"]);
        let c = signer(&["k1"]).claims(LinkPurpose::Approval, OrderId::new_v7(), "li.na", "x/approval", now());
        let old = signer(&["k1"]).legacy_token(&c);
        assert_eq!(s.verify(&old, LinkPurpose::Approval, now()).unwrap(), c);
        assert_eq!(s.verify(&old, LinkPurpose::Status, now()), Err(LinkError::WrongPurpose));
        let later = now() + chrono::Duration::days(2);
        assert!(matches!(s.verify(&old, LinkPurpose::Approval, later), Err(LinkError::Expired(_))));
        assert_eq!(signer(&["k3"]).verify(&old, LinkPurpose::Approval, now()), Err(LinkError::Invalid));
    }

    #[test]
    fn a_tampered_encrypted_token_is_refused() {
        let s = signer(&["k1"]);
        let c = s.claims(LinkPurpose::Approval, OrderId::new_v7(), "li.na", "x/approval", now());
        let token = s.token(&c);
        let mut bytes = unb64(&token[3..]).unwrap();
        for i in [0, 12, bytes.len() / 2, bytes.len() - 1] {
            bytes[i] ^= 1;
            let forged = format!("v2.{}", b64(&bytes));
            assert_eq!(s.verify(&forged, LinkPurpose::Approval, now()), Err(LinkError::Invalid), "byte {i}");
            bytes[i] ^= 1;
        }
        for junk in ["v2.", "v2.AAAA", "v2.!!", &token[..token.len() - 3]] {
            assert_eq!(s.verify(junk, LinkPurpose::Approval, now()), Err(LinkError::Invalid), "{junk}");
        }
    }

    #[test]
    fn tampering_and_foreign_keys_are_refused() {
        let s = signer(&["k1"]);
        let c = s.claims(LinkPurpose::Approval, OrderId::new_v7(), "li.na", "x/approval", now());
        let token = s.legacy_token(&c);
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
        // Rotation: a new first key signs, the old one still verifies (both formats).
        assert!(signer(&["k2", "k1"]).verify(&token, LinkPurpose::Approval, now()).is_ok());
        assert!(signer(&["k2", "k1"]).verify(&s.token(&c), LinkPurpose::Approval, now()).is_ok());
        assert_eq!(signer(&["other"]).verify(&s.token(&c), LinkPurpose::Approval, now()), Err(LinkError::Invalid));
    }
}
