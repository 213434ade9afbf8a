//! An OpenID Connect ID token's checks, without I/O: the JWS signature against the
//! provider's published keys (RS256, ES256; `none`, HMAC and every other algorithm are
//! refused), then `iss`, `aud` (and `azp` when there are several audiences), `exp`
//! and `nonce`. Fetching the keys and the token is `auth::oidc`.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Clocks disagree a little: `exp` is allowed this many seconds of skew.
const LEEWAY_SECS: i64 = 60;

/// One key of the provider's JWKS (RFC 7517); only what verification reads.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Jwk {
    pub(crate) kty: String,
    #[serde(default)]
    pub(crate) kid: Option<String>,
    #[serde(default, rename = "use")]
    pub(crate) usage: Option<String>,
    #[serde(default)]
    pub(crate) alg: Option<String>,
    /// RSA modulus and exponent (base64url).
    #[serde(default)]
    pub(crate) n: Option<String>,
    #[serde(default)]
    pub(crate) e: Option<String>,
    /// EC curve and point (base64url).
    #[serde(default)]
    pub(crate) crv: Option<String>,
    #[serde(default)]
    pub(crate) x: Option<String>,
    #[serde(default)]
    pub(crate) y: Option<String>,
}

/// A JWKS document.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct JwkSet {
    pub(crate) keys: Vec<Jwk>,
}

/// What the token must say.
pub(crate) struct Expected<'a> {
    pub(crate) issuer: &'a str,
    pub(crate) client_id: &'a str,
    pub(crate) nonce: &'a str,
    pub(crate) now: DateTime<Utc>,
}

/// Why a token is refused. The messages name the check, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("not a signed JWT")]
    Malformed,
    #[error("signing algorithm `{0}` is not accepted (RS256, ES256)")]
    Algorithm(String),
    #[error("no published key of the provider matches the token's")]
    UnknownKey,
    #[error("the signature does not verify")]
    Signature,
    #[error("issued by `{0}`, not the configured issuer")]
    Issuer(String),
    #[error("not issued for this client")]
    Audience,
    #[error("expired")]
    Expired,
    #[error("the nonce is not this sign-in's")]
    Nonce,
}

fn b64(s: &str) -> Result<Vec<u8>, TokenError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).map_err(|_| TokenError::Malformed)
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// The key `alg`/`kid` name: by `kid` when the token has one, else the only key of
/// the algorithm's type.
fn key_for<'k>(keys: &'k [Jwk], alg: &str, kid: Option<&str>) -> Result<&'k Jwk, TokenError> {
    let kty = if alg == "RS256" { "RSA" } else { "EC" };
    let mut fit = keys.iter().filter(|k| {
        k.kty == kty
            && k.usage.as_deref().is_none_or(|u| u == "sig")
            && k.alg.as_deref().is_none_or(|a| a == alg)
            && kid.is_none_or(|id| k.kid.as_deref() == Some(id))
    });
    match (fit.next(), fit.next()) {
        (Some(k), None) => Ok(k),
        (Some(k), Some(_)) if kid.is_some() => Ok(k),
        _ => Err(TokenError::UnknownKey),
    }
}

fn verify_signature(alg: &str, key: &Jwk, signed: &[u8], signature: &[u8]) -> Result<(), TokenError> {
    use ring::signature;
    let part = |p: &Option<String>| p.as_deref().ok_or(TokenError::UnknownKey).and_then(b64);
    let ok = match alg {
        "RS256" => signature::RsaPublicKeyComponents { n: part(&key.n)?, e: part(&key.e)? }
            .verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, signature)
            .is_ok(),
        _ => {
            if key.crv.as_deref() != Some("P-256") {
                return Err(TokenError::UnknownKey);
            }
            // The uncompressed point: 0x04, x, y.
            let point: Vec<u8> = [vec![4u8], part(&key.x)?, part(&key.y)?].concat();
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(signed, signature)
                .is_ok()
        }
    };
    if ok { Ok(()) } else { Err(TokenError::Signature) }
}

/// The token's algorithm and key id, read before its signature is checked (to know
/// which key to check it with).
///
/// # Errors
/// Not a JWS with a header, or an algorithm this daemon does not accept.
pub(crate) fn key_id(token: &str) -> Result<Option<String>, TokenError> {
    let header = token.split('.').next().ok_or(TokenError::Malformed)?;
    let h: Header = serde_json::from_slice(&b64(header)?).map_err(|_| TokenError::Malformed)?;
    if !matches!(h.alg.as_str(), "RS256" | "ES256") {
        return Err(TokenError::Algorithm(h.alg));
    }
    Ok(h.kid)
}

/// The token's claims, once its signature (by one of `keys`) and claims check out.
///
/// # Errors
/// The first check that failed.
pub(crate) fn verify(token: &str, keys: &[Jwk], want: &Expected<'_>) -> Result<Map<String, Value>, TokenError> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts[..] else { return Err(TokenError::Malformed) };
    let h: Header = serde_json::from_slice(&b64(header)?).map_err(|_| TokenError::Malformed)?;
    if !matches!(h.alg.as_str(), "RS256" | "ES256") {
        return Err(TokenError::Algorithm(h.alg));
    }
    let key = key_for(keys, &h.alg, h.kid.as_deref())?;
    let signed = &token.as_bytes()[..header.len() + 1 + payload.len()];
    verify_signature(&h.alg, key, signed, &b64(signature)?)?;
    let claims: Map<String, Value> = serde_json::from_slice(&b64(payload)?).map_err(|_| TokenError::Malformed)?;
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or_default();
    if iss != want.issuer {
        return Err(TokenError::Issuer(iss.to_owned()));
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let azp = claims.get("azp").and_then(Value::as_str);
    if !audiences.contains(&want.client_id) || (audiences.len() > 1 && azp != Some(want.client_id)) {
        return Err(TokenError::Audience);
    }
    let exp = claims.get("exp").and_then(Value::as_i64).ok_or(TokenError::Expired)?;
    if want.now.timestamp() >= exp + LEEWAY_SECS {
        return Err(TokenError::Expired);
    }
    let nonce = claims.get("nonce").and_then(Value::as_str).unwrap_or_default();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(nonce.as_bytes(), want.nonce.as_bytes())) || want.nonce.is_empty() {
        return Err(TokenError::Nonce);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
    use serde_json::json;

    use super::*;

    fn enc(b: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    fn key_pair() -> EcdsaKeyPair {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap()
    }

    fn jwk(k: &EcdsaKeyPair, kid: &str) -> Jwk {
        let p = k.public_key().as_ref();
        serde_json::from_value(json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
            "x": enc(&p[1..33]), "y": enc(&p[33..65])}))
        .unwrap()
    }

    fn sign(k: &EcdsaKeyPair, header: Value, claims: &Value) -> String {
        let signed = format!("{}.{}", enc(header.to_string().as_bytes()), enc(claims.to_string().as_bytes()));
        let sig = k.sign(&SystemRandom::new(), signed.as_bytes()).unwrap();
        format!("{signed}.{}", enc(sig.as_ref()))
    }

    fn claims(now: DateTime<Utc>) -> Value {
        json!({"iss": "https://id.bank.example", "aud": "orderbridge", "sub": "u1", "nonce": "n-1",
            "exp": now.timestamp() + 300, "iat": now.timestamp(), "email": "wang.fang@bank.example"})
    }

    fn expected(now: DateTime<Utc>) -> Expected<'static> {
        Expected { issuer: "https://id.bank.example", client_id: "orderbridge", nonce: "n-1", now }
    }

    #[test]
    fn a_token_signed_by_a_published_key_with_the_right_claims_is_accepted() {
        let (k, now) = (key_pair(), Utc::now());
        let t = sign(&k, json!({"alg": "ES256", "kid": "k1"}), &claims(now));
        let got = verify(&t, &[jwk(&key_pair(), "k0"), jwk(&k, "k1")], &expected(now)).unwrap();
        assert_eq!(got["email"], "wang.fang@bank.example");
        assert_eq!(key_id(&t), Ok(Some("k1".into())));
    }

    #[test]
    fn forged_altered_or_misaddressed_tokens_are_refused() {
        let (k, now) = (key_pair(), Utc::now());
        let keys = [jwk(&k, "k1")];
        let header = json!({"alg": "ES256", "kid": "k1"});
        let check = |c: &Value| verify(&sign(&k, header.clone(), c), &keys, &expected(now));
        // Signed by another key under the published key's id.
        let other = sign(&key_pair(), header.clone(), &claims(now));
        assert_eq!(verify(&other, &keys, &expected(now)), Err(TokenError::Signature));
        // A claim changed after signing.
        let good = sign(&k, header.clone(), &claims(now));
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let mut c = claims(now);
        c["email"] = "boss@bank.example".into();
        parts[1] = enc(c.to_string().as_bytes());
        assert_eq!(verify(&parts.join("."), &keys, &expected(now)), Err(TokenError::Signature));
        // Unsigned, or HMAC-signed (with whatever secret).
        let none = format!("{}.{}.", enc(br#"{"alg":"none"}"#), enc(claims(now).to_string().as_bytes()));
        assert_eq!(verify(&none, &keys, &expected(now)), Err(TokenError::Algorithm("none".into())));
        let hs = format!("{}.{}.c2ln", enc(br#"{"alg":"HS256"}"#), enc(claims(now).to_string().as_bytes()));
        assert_eq!(key_id(&hs), Err(TokenError::Algorithm("HS256".into())));
        assert_eq!(verify("garbage", &keys, &expected(now)), Err(TokenError::Malformed));
        let unknown = sign(&k, json!({"alg": "ES256", "kid": "k9"}), &claims(now));
        assert_eq!(verify(&unknown, &keys, &expected(now)), Err(TokenError::UnknownKey));
        for (key, value, why) in [
            ("iss", json!("https://evil.example"), TokenError::Issuer("https://evil.example".into())),
            ("aud", json!("another-client"), TokenError::Audience),
            ("aud", json!(["orderbridge", "another-client"]), TokenError::Audience),
            ("exp", json!(now.timestamp() - LEEWAY_SECS), TokenError::Expired),
            ("nonce", json!("n-2"), TokenError::Nonce),
        ] {
            let mut c = claims(now);
            c[key] = value;
            assert_eq!(check(&c), Err(why), "{key}");
        }
        let mut c = claims(now);
        c.as_object_mut().unwrap().remove("nonce");
        assert_eq!(check(&c), Err(TokenError::Nonce));
        // Several audiences are fine when this client is the authorized party.
        let mut c = claims(now);
        c["aud"] = json!(["orderbridge", "another-client"]);
        c["azp"] = json!("orderbridge");
        assert!(check(&c).is_ok());
    }
}
