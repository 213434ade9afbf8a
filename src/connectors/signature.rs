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

/// What a verifier looks at in one delivery.
pub struct Delivery<'a> {
    pub method: &'a str,
    /// Path and query as received, e.g. `/webhooks/hubspot?x=1`.
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// Unix seconds.
    pub now: i64,
}

/// Signature schemes a connector's `[webhook] signature` can name.
pub const SCHEMES: &[&str] = &["standard_webhooks", "stripe", "hubspot_v3", "xero", "shopify", "github", "frappe"];

/// One webhook signature scheme, with its secret.
pub enum Verifier {
    /// See [`StandardWebhooks`].
    StandardWebhooks(StandardWebhooks),
    /// `Stripe-Signature: t=<unix>,v1=<hex>[,v1=…]`; HMAC-SHA256 of `t.body` keyed by the
    /// endpoint secret as written (`whsec_…`); timestamp within the tolerance.
    Stripe { key: SecretString, tolerance_secs: u64 },
    /// `X-HubSpot-Signature-v3` (base64 HMAC-SHA256 of method ‖ URL ‖ body ‖ timestamp)
    /// and `X-HubSpot-Request-Timestamp` (ms); the URL is the public one HubSpot called.
    HubspotV3 { key: SecretString, public_base: String, tolerance_secs: u64 },
    /// `x-xero-signature`: base64 HMAC-SHA256 of the body. No timestamp in the scheme.
    Xero { key: SecretString },
    /// `X-Shopify-Hmac-Sha256`: base64 HMAC-SHA256 of the body. No timestamp.
    Shopify { key: SecretString },
    /// `X-Hub-Signature-256: sha256=<hex>` of the body (GitHub style). No timestamp.
    Github { key: SecretString },
    /// `X-Frappe-Webhook-Signature`: base64 HMAC-SHA256 of the body, keyed by the
    /// webhook secret (Frappe/ERPNext). No timestamp.
    Frappe { key: SecretString },
}

/// How a vendor wants an accepted delivery answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acknowledgement {
    /// Our own answer: its status (202 …) and JSON body.
    Answer,
    /// `200` with an empty body, whatever was done (Xero, its Intent-to-Receive check too).
    EmptyOk,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.scheme())
    }
}

fn mac_with(key: &SecretString) -> HmacSha256 {
    HmacSha256::new_from_slice(key.expose_secret().as_bytes()).expect("HMAC takes any key length")
}

fn header<'a>(h: &'a HeaderMap, name: &'static str) -> Result<&'a str, SignatureError> {
    h.get(name).ok_or(SignatureError::MissingHeader(name))?.to_str().map_err(|_| SignatureError::Malformed(name))
}

fn within(ts: i64, now: i64, tolerance: u64) -> Result<(), SignatureError> {
    let skew = now.saturating_sub(ts);
    if skew.unsigned_abs() > tolerance { Err(SignatureError::OutsideWindow(skew, tolerance)) } else { Ok(()) }
}

/// Constant-time check of a base64 HMAC against `mac`.
fn check_b64(mac: HmacSha256, given: &str, name: &'static str) -> Result<(), SignatureError> {
    let sig = B64.decode(given.trim()).map_err(|_| SignatureError::Malformed(name))?;
    mac.verify_slice(&sig).map_err(|_| SignatureError::Mismatch)
}

/// Constant-time check of header `name`: a base64 HMAC of the body alone.
fn check_body_b64(key: &SecretString, d: &Delivery<'_>, name: &'static str) -> Result<(), SignatureError> {
    let mut mac = mac_with(key);
    mac.update(d.body);
    check_b64(mac, header(d.headers, name)?, name)
}

/// Constant-time check of a hex HMAC against `mac`.
fn check_hex(mac: HmacSha256, given: &str, name: &'static str) -> Result<(), SignatureError> {
    let sig = hex::decode(given.trim()).map_err(|_| SignatureError::Malformed(name))?;
    mac.verify_slice(&sig).map_err(|_| SignatureError::Mismatch)
}

/// HubSpot signs the URL with these characters decoded (its documentation lists them).
fn hubspot_decode(uri: &str) -> String {
    const DECODE: &[(&str, &str)] = &[
        ("%3A", ":"),
        ("%2F", "/"),
        ("%3F", "?"),
        ("%40", "@"),
        ("%21", "!"),
        ("%24", "$"),
        ("%27", "'"),
        ("%28", "("),
        ("%29", ")"),
        ("%2A", "*"),
        ("%2C", ","),
        ("%3B", ";"),
    ];
    let mut out = uri.to_owned();
    for (enc, dec) in DECODE {
        out = out.replace(enc, dec).replace(&enc.to_lowercase(), dec);
    }
    out
}

impl Verifier {
    /// Builds the verifier a connector file names.
    ///
    /// # Errors
    /// An unknown scheme, a malformed secret, or `hubspot_v3` without `public_url`.
    pub fn new(
        scheme: &str,
        secret: &SecretString,
        tolerance_secs: u64,
        public_url: Option<&str>,
    ) -> Result<Self, String> {
        let key = secret.clone();
        Ok(match scheme {
            "standard_webhooks" => Verifier::StandardWebhooks(StandardWebhooks::new(secret, tolerance_secs)?),
            "stripe" => Verifier::Stripe { key, tolerance_secs },
            "hubspot_v3" => Verifier::HubspotV3 {
                key,
                public_base: public_url
                    .ok_or("hubspot_v3 signs the public URL: set `public_url` in [webhook] (e.g. https://hooks.bank.example)")?
                    .trim_end_matches('/')
                    .to_owned(),
                tolerance_secs,
            },
            "xero" => Verifier::Xero { key },
            "shopify" => Verifier::Shopify { key },
            "github" => Verifier::Github { key },
            "frappe" => Verifier::Frappe { key },
            other => return Err(format!("unknown signature scheme `{other}` (one of: {})", SCHEMES.join(", "))),
        })
    }

    pub fn scheme(&self) -> &'static str {
        match self {
            Verifier::StandardWebhooks(_) => "standard_webhooks",
            Verifier::Stripe { .. } => "stripe",
            Verifier::HubspotV3 { .. } => "hubspot_v3",
            Verifier::Xero { .. } => "xero",
            Verifier::Shopify { .. } => "shopify",
            Verifier::Github { .. } => "github",
            Verifier::Frappe { .. } => "frappe",
        }
    }

    /// How the vendor wants an accepted delivery answered.
    pub fn acknowledgement(&self) -> Acknowledgement {
        match self {
            Verifier::Xero { .. } => Acknowledgement::EmptyOk,
            _ => Acknowledgement::Answer,
        }
    }

    /// What can be checked before the body is read: every header the scheme needs is
    /// there and well formed, and a signed timestamp lies within the replay window.
    /// (`verify` with an empty body fails only at the signature comparison when the
    /// headers are right: the same code decides, so the two cannot drift apart.)
    ///
    /// # Errors
    /// Everything `verify` would refuse for these headers whatever the body.
    pub fn check_headers(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &HeaderMap,
        now: i64,
    ) -> Result<(), SignatureError> {
        match self.verify(&Delivery { method, path_and_query, headers, body: b"", now }) {
            Ok(()) | Err(SignatureError::Mismatch) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Verifies one delivery; constant-time comparisons throughout.
    pub fn verify(&self, d: &Delivery<'_>) -> Result<(), SignatureError> {
        match self {
            Verifier::StandardWebhooks(v) => v.verify(d.headers, d.body, d.now).map(drop),
            Verifier::Stripe { key, tolerance_secs } => {
                const H: &str = "stripe-signature";
                let value = header(d.headers, H)?;
                let mut ts = None;
                let mut sigs = Vec::new();
                for part in value.split(',') {
                    match part.trim().split_once('=') {
                        Some(("t", t)) => ts = Some(t.parse::<i64>().map_err(|_| SignatureError::Malformed(H))?),
                        Some(("v1", s)) => sigs.push(s),
                        _ => {}
                    }
                }
                let ts = ts.ok_or(SignatureError::Malformed(H))?;
                if sigs.is_empty() {
                    return Err(SignatureError::Malformed(H));
                }
                within(ts, d.now, *tolerance_secs)?;
                let mut mac = mac_with(key);
                mac.update(format!("{ts}.").as_bytes());
                mac.update(d.body);
                if sigs.iter().any(|s| check_hex(mac.clone(), s, H).is_ok()) {
                    Ok(())
                } else {
                    Err(SignatureError::Mismatch)
                }
            }
            Verifier::HubspotV3 { key, public_base, tolerance_secs } => {
                const SIG: &str = "x-hubspot-signature-v3";
                const TS: &str = "x-hubspot-request-timestamp";
                let sig = header(d.headers, SIG)?;
                let ts_text = header(d.headers, TS)?;
                let ts_ms: i64 = ts_text.trim().parse().map_err(|_| SignatureError::Malformed(TS))?;
                within(ts_ms / 1000, d.now, *tolerance_secs)?;
                let mut mac = mac_with(key);
                mac.update(d.method.as_bytes());
                mac.update(hubspot_decode(&format!("{public_base}{}", d.path_and_query)).as_bytes());
                mac.update(d.body);
                mac.update(ts_text.trim().as_bytes());
                check_b64(mac, sig, SIG)
            }
            Verifier::Xero { key } => check_body_b64(key, d, "x-xero-signature"),
            Verifier::Shopify { key } => check_body_b64(key, d, "x-shopify-hmac-sha256"),
            Verifier::Frappe { key } => check_body_b64(key, d, "x-frappe-webhook-signature"),
            Verifier::Github { key } => {
                const H: &str = "x-hub-signature-256";
                let hex_sig = header(d.headers, H)?.strip_prefix("sha256=").ok_or(SignatureError::Malformed(H))?;
                let mut mac = mac_with(key);
                mac.update(d.body);
                check_hex(mac, hex_sig, H)
            }
        }
    }
}

#[cfg(test)]
mod scheme_tests {
    //! Expected signatures were computed with Python's `hmac` module (an independent
    //! implementation), except GitHub's, which is the example in GitHub's documentation,
    //! the known-answer vectors, which the vendors' own libraries produced (see
    //! `vendor_known_answer_vectors`), and Frappe's, computed with the `openssl` CLI.

    use super::*;
    use axum::http::HeaderValue;

    const BODY: &[u8] = br#"{"id":"evt_1","type":"invoice.paid"}"#;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn check(v: &Verifier, h: &HeaderMap, body: &[u8], uri: &str, now: i64) -> Result<(), SignatureError> {
        v.verify(&Delivery { method: "POST", path_and_query: uri, headers: h, body, now })
    }

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn headers_alone_refuse_what_no_body_can_mend_and_nothing_else() {
        let sw =
            Verifier::new("standard_webhooks", &secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), 300, None).unwrap();
        let at = |v: &Verifier, h: &HeaderMap, now| v.check_headers("POST", "/webhooks/x", h, now);
        let good =
            headers(&[("webhook-id", "msg_1"), ("webhook-timestamp", "1700000000"), ("webhook-signature", "v1,AAAA")]);
        // A signature that cannot match this body is the body's business: allowed here.
        assert_eq!(at(&sw, &good, 1700000010), Ok(()));
        assert_eq!(at(&sw, &headers(&[]), 1700000010), Err(SignatureError::MissingHeader("webhook-id")));
        assert!(matches!(at(&sw, &good, 1700001000), Err(SignatureError::OutsideWindow(1000, 300))));
        let stripe = Verifier::new("stripe", &secret("whsec_test_secret_123"), 300, None).unwrap();
        let h = headers(&[("stripe-signature", "t=1700000000,v1=deadbeef")]);
        assert_eq!(at(&stripe, &h, 1700000000), Ok(()));
        assert!(matches!(at(&stripe, &h, 1700009000), Err(SignatureError::OutsideWindow(..))));
        // Body-only schemes: the header must be there.
        let github = Verifier::new("github", &secret("It's a Secret to Everybody"), 300, None).unwrap();
        assert_eq!(at(&github, &headers(&[]), 0), Err(SignatureError::MissingHeader("x-hub-signature-256")));
        assert_eq!(at(&github, &headers(&[("x-hub-signature-256", "sha256=00")]), 0), Ok(()));
    }

    #[test]
    fn stripe() {
        let v = Verifier::new("stripe", &secret("whsec_test_secret_123"), 300, None).unwrap();
        let sig = "fb65fb792fdc6ce9b89101869b03ebbb61d6d28446d6ecd24f12cd830a7182fb";
        let h = headers(&[("stripe-signature", &format!("t=1700000000,v1=deadbeef,v1={sig},v0=00"))]);
        assert_eq!(check(&v, &h, BODY, "/", 1700000100), Ok(()));
        assert_eq!(check(&v, &h, b"{}", "/", 1700000100), Err(SignatureError::Mismatch));
        assert!(matches!(check(&v, &h, BODY, "/", 1700000400), Err(SignatureError::OutsideWindow(400, 300))));
        let h = headers(&[("stripe-signature", &format!("v1={sig}"))]);
        assert_eq!(check(&v, &h, BODY, "/", 1700000000), Err(SignatureError::Malformed("stripe-signature")));
    }

    #[test]
    fn hubspot_v3() {
        let v = Verifier::new("hubspot_v3", &secret("hubspot-client-secret"), 300, Some("https://hooks.bank.example/"))
            .unwrap();
        let h = headers(&[
            ("x-hubspot-signature-v3", "RpLUIesls3FyAvj50FaG4sAQIyFYG/SoLyMUvxPjdIw="),
            ("x-hubspot-request-timestamp", "1700000000123"),
        ]);
        assert_eq!(check(&v, &h, BODY, "/webhooks/hubspot?x=1", 1700000010), Ok(()));
        // Percent-encoded characters HubSpot decodes before signing still verify.
        assert_eq!(check(&v, &h, BODY, "/webhooks%2Fhubspot%3Fx=1", 1700000010), Ok(()));
        assert_eq!(check(&v, &h, BODY, "/webhooks/hubspot?x=2", 1700000010), Err(SignatureError::Mismatch));
        assert!(matches!(
            check(&v, &h, BODY, "/webhooks/hubspot?x=1", 1700001000),
            Err(SignatureError::OutsideWindow(..))
        ));
        assert!(Verifier::new("hubspot_v3", &secret("s"), 300, None).unwrap_err().contains("public_url"));
    }

    #[test]
    fn body_only_schemes() {
        let b64 = "1oIAX/T2uqq7ahP60FSiKd+h2+6Syh2zPx6kVql0JGQ=";
        for (scheme, name) in [("shopify", "x-shopify-hmac-sha256"), ("xero", "x-xero-signature")] {
            let v = Verifier::new(scheme, &secret("shpss_secret"), 300, None).unwrap();
            assert_eq!(check(&v, &headers(&[(name, b64)]), BODY, "/", 0), Ok(()), "{scheme}");
            assert_eq!(check(&v, &headers(&[(name, b64)]), b"tampered", "/", 0), Err(SignatureError::Mismatch));
            assert_eq!(check(&v, &headers(&[]), BODY, "/", 0), Err(SignatureError::MissingHeader(name)));
        }
        let v = Verifier::new("github", &secret("It's a Secret to Everybody"), 300, None).unwrap();
        let h = headers(&[(
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )]);
        assert_eq!(check(&v, &h, b"Hello, World!", "/", 0), Ok(()));
        assert_eq!(check(&v, &h, b"Hello, World?", "/", 0), Err(SignatureError::Mismatch));
        assert!(Verifier::new("md5", &secret("x"), 300, None).unwrap_err().contains("unknown signature scheme"));
    }

    /// The 58-byte body of the vendor known-answer vectors.
    const VENDOR_BODY: &[u8] = br#"{"id":"evt_test_1","object":"event","type":"invoice.paid"}"#;

    /// One known-answer vector: a delivery of [`VENDOR_BODY`] signed at [`VENDOR_NOW`].
    struct Vector {
        scheme: &'static str,
        secret: &'static str,
        public_url: Option<&'static str>,
        path_and_query: &'static str,
        headers: &'static [(&'static str, &'static str)],
    }

    const VENDOR_NOW: i64 = 1_700_000_000;

    const VECTORS: &[Vector] = &[
        Vector {
            scheme: "stripe",
            secret: "whsec_test_secret",
            public_url: None,
            path_and_query: "/",
            headers: &[(
                "stripe-signature",
                "t=1700000000,v1=3e3e661992c26c45d9105cbea450acc1a34f8c6dbafbd891f858c6fd9054fe3e",
            )],
        },
        Vector {
            scheme: "hubspot_v3",
            secret: "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy",
            public_url: Some("https://example.com"),
            path_and_query: "/webhooks/hubspot?portal=62515",
            headers: &[
                ("x-hubspot-signature-v3", "WiHZe4YCTlb7Z+wdUJh/wzv6McrLi1iAJRBhZKXblJc="),
                ("x-hubspot-request-timestamp", "1700000000000"),
            ],
        },
        Vector {
            scheme: "xero",
            secret: "xero-webhook-key",
            public_url: None,
            path_and_query: "/",
            headers: &[("x-xero-signature", "xMb1pNX0tX3EsOwicxD1RCGhdv6Gsfpf7zWWpqwoMA4=")],
        },
        Vector {
            scheme: "shopify",
            secret: "shpss_test",
            public_url: None,
            path_and_query: "/",
            headers: &[("x-shopify-hmac-sha256", "xNbYViNpsDHNVJ6umtbj2rec/SYZhgTV1zUt7qvDFLw=")],
        },
        Vector {
            scheme: "standard_webhooks",
            // The key is the 32 ASCII bytes `0123456789abcdef0123456789abcdef`.
            secret: "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
            public_url: None,
            path_and_query: "/",
            headers: &[
                ("webhook-id", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"),
                ("webhook-timestamp", "1700000000"),
                ("webhook-signature", "v1,0AtMtLWP8Is/vwxcRu3UEJld4ECwFmKABkYqnYhpzjQ="),
            ],
        },
    ];

    #[test]
    fn vendor_known_answer_vectors() {
        // Each vector was produced by the vendor's own library (stripe-node,
        // @hubspot/api-client, standardwebhooks) or, where none exists (Xero, Shopify),
        // by the `openssl` CLI, and cross-checked with `openssl`; the list is in
        // shared/vendor-specs/README.md. `now` is the vector's own timestamp. GitHub's
        // documented example is in `body_only_schemes`.
        for t in VECTORS {
            let v = Verifier::new(t.scheme, &secret(t.secret), 300, t.public_url).unwrap();
            let h = headers(t.headers);
            assert_eq!(check(&v, &h, VENDOR_BODY, t.path_and_query, VENDOR_NOW), Ok(()), "{}", t.scheme);
            let mut tampered = VENDOR_BODY.to_vec();
            tampered[7] ^= 1;
            let r = check(&v, &h, &tampered, t.path_and_query, VENDOR_NOW);
            assert_eq!(r, Err(SignatureError::Mismatch), "{}", t.scheme);
            let other = if t.scheme == "standard_webhooks" {
                "whsec_ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="
            } else {
                "another-secret"
            };
            let v = Verifier::new(t.scheme, &secret(other), 300, t.public_url).unwrap();
            let r = check(&v, &h, VENDOR_BODY, t.path_and_query, VENDOR_NOW);
            assert_eq!(r, Err(SignatureError::Mismatch), "{}", t.scheme);
        }
    }

    #[test]
    fn frappe() {
        // What Frappe's `get_webhook_headers` signs: `json.dumps(data)` (ASCII-escaped),
        // the same bytes it sends. Expected value from
        // `openssl dgst -sha256 -hmac frappe-webhook-secret -binary < body | base64`.
        let body = concat!(
            r#"{"doctype": "Sales Order", "name": "SAL-ORD-2026-00001", "#,
            r#""customer_name": "\u5f20\u4f1f", "grand_total": 1250000.0}"#
        )
        .as_bytes();
        let h = headers(&[("x-frappe-webhook-signature", "O7XCmsgVk/P8FAgqfweqpRAIzJo90q3ganb5WrW1mME=")]);
        let v = Verifier::new("frappe", &secret("frappe-webhook-secret"), 300, None).unwrap();
        assert_eq!(v.scheme(), "frappe");
        assert_eq!(check(&v, &h, body, "/", 0), Ok(()));
        // No timestamp in the scheme: any `now` is the same.
        assert_eq!(check(&v, &h, body, "/", 1_700_000_000), Ok(()));
        // 张 (\u5f20) becomes 漠 (\u6f20).
        let mut tampered = body.to_vec();
        let at = tampered.iter().position(|&c| c == b'5').unwrap();
        tampered[at] = b'6';
        assert_eq!(check(&v, &h, &tampered, "/", 0), Err(SignatureError::Mismatch));
        let wrong = Verifier::new("frappe", &secret("frappe-webhook-secreT"), 300, None).unwrap();
        assert_eq!(check(&wrong, &h, body, "/", 0), Err(SignatureError::Mismatch));
        assert_eq!(
            check(&v, &headers(&[]), body, "/", 0),
            Err(SignatureError::MissingHeader("x-frappe-webhook-signature"))
        );
        let h = headers(&[("x-frappe-webhook-signature", "not base64!")]);
        assert_eq!(check(&v, &h, body, "/", 0), Err(SignatureError::Malformed("x-frappe-webhook-signature")));
        assert!(SCHEMES.contains(&"frappe"));
    }
}
