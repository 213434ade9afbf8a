//! Webhook signature verifiers. Each compares in constant time and, where the scheme
//! carries a timestamp, refuses deliveries outside the replay window.

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a delivery was refused. Messages name the header, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing `{0}` header")]
    MissingHeader(&'static str),
    #[error("`{0}` header is malformed")]
    Malformed(&'static str),
    #[error("timestamp is {0}s away from now, outside the {1}s replay window")]
    OutsideWindow(i64, u64),
    #[error("no signature matches")]
    Mismatch,
}

/// The Standard Webhooks scheme (standardwebhooks.com): headers `webhook-id`,
/// `webhook-timestamp` (Unix seconds) and `webhook-signature` (space-separated
/// `v1,<base64>` entries); HMAC-SHA256 over `id.timestamp.body` with the base64 key
/// that follows `whsec_` in the secret.
pub struct StandardWebhooks {
    key: SecretString,
    tolerance_secs: u64,
}

impl std::fmt::Debug for StandardWebhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandardWebhooks").field("tolerance_secs", &self.tolerance_secs).finish_non_exhaustive()
    }
}

impl StandardWebhooks {
    /// # Errors
    /// When the secret is not `whsec_` followed by base64 (the message never shows it).
    pub fn new(secret: &SecretString, tolerance_secs: u64) -> Result<Self, String> {
        let s = secret.expose_secret();
        let b64 = s.strip_prefix("whsec_").unwrap_or(s);
        let key = B64.decode(b64).map_err(|_| "webhook secret must be `whsec_` followed by base64".to_owned())?;
        if key.len() < 16 {
            return Err("webhook secret key is shorter than 16 bytes".into());
        }
        Ok(StandardWebhooks { key: SecretString::from(B64.encode(key)), tolerance_secs })
    }

    fn mac(&self) -> HmacSha256 {
        let key = B64.decode(self.key.expose_secret()).expect("stored as valid base64");
        HmacSha256::new_from_slice(&key).expect("HMAC takes any key length")
    }

    /// The `webhook-signature` value for a delivery (used by the load generator and tests).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
    }

    /// Verifies a delivery at time `now` (Unix seconds). Returns the `webhook-id`.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<String, SignatureError> {
        let get = |name: &'static str| {
            headers
                .get(name)
                .ok_or(SignatureError::MissingHeader(name))?
                .to_str()
                .map_err(|_| SignatureError::Malformed(name))
        };
        let id = get("webhook-id")?;
        let ts_text = get("webhook-timestamp")?;
        let sigs = get("webhook-signature")?;
        if id.is_empty() || id.len() > 256 {
            return Err(SignatureError::Malformed("webhook-id"));
        }
        let ts: i64 = ts_text.trim().parse().map_err(|_| SignatureError::Malformed("webhook-timestamp"))?;
        let skew = now.saturating_sub(ts);
        if skew.unsigned_abs() > self.tolerance_secs {
            return Err(SignatureError::OutsideWindow(skew, self.tolerance_secs));
        }
        let mut mac = self.mac();
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(body);
        let mut any_v1 = false;
        for entry in sigs.split(' ').filter(|s| !s.is_empty()) {
            let Some(b64) = entry.strip_prefix("v1,") else {
                continue;
            };
            any_v1 = true;
            let Ok(sig) = B64.decode(b64) else { continue };
            // Constant-time comparison (hmac's verify_slice).
            if mac.clone().verify_slice(&sig).is_ok() {
                return Ok(id.to_owned());
            }
        }
        if any_v1 { Err(SignatureError::Mismatch) } else { Err(SignatureError::Malformed("webhook-signature")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    // Test vector from the Standard Webhooks reference libraries (webhook-id
    // msg_p5jXN8AQM9LWM0D4loKWxJek, timestamp 1614265330, body {"test": 2432232314}).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn headers(id: &str, ts: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", HeaderValue::from_str(id).unwrap());
        h.insert("webhook-timestamp", HeaderValue::from_str(ts).unwrap());
        h.insert("webhook-signature", HeaderValue::from_str(sig).unwrap());
        h
    }

    fn v() -> StandardWebhooks {
        StandardWebhooks::new(&SecretString::from(SECRET), 300).unwrap()
    }

    #[test]
    fn accepts_the_reference_vector() {
        let h = headers("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", SIG);
        assert_eq!(v().verify(&h, BODY, 1614265330).unwrap(), "msg_p5jXN8AQM9LWM0D4loKWxJek");
        assert_eq!(v().sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, BODY), SIG);
        // Several signatures (key rotation): any match passes.
        let h = headers("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", &format!("v1,Zm9v {SIG}"));
        assert!(v().verify(&h, BODY, 1614265330).is_ok());
    }

    #[test]
    fn refuses_tampered_expired_and_malformed() {
        let h = headers("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", SIG);
        assert_eq!(v().verify(&h, br#"{"test": 2432232315}"#, 1614265330), Err(SignatureError::Mismatch));
        assert!(matches!(v().verify(&h, BODY, 1614265330 + 301), Err(SignatureError::OutsideWindow(301, 300))));
        assert!(matches!(v().verify(&h, BODY, 1614265330 - 400), Err(SignatureError::OutsideWindow(..))));
        let h = headers("msg_other", "1614265330", SIG);
        assert_eq!(v().verify(&h, BODY, 1614265330), Err(SignatureError::Mismatch));
        let h = headers("msg", "soon", SIG);
        assert_eq!(v().verify(&h, BODY, 0), Err(SignatureError::Malformed("webhook-timestamp")));
        let mut h = headers("msg", "1", SIG);
        h.remove("webhook-signature");
        assert_eq!(v().verify(&h, BODY, 1), Err(SignatureError::MissingHeader("webhook-signature")));
    }

    #[test]
    fn bad_secret_is_refused_without_echoing_it() {
        let e = StandardWebhooks::new(&SecretString::from("whsec_!!notbase64!!"), 300).unwrap_err();
        assert!(!e.contains("notbase64"));
    }
}
