//! The token format of an encrypted personal value, and the keys behind it: pure
//! functions over `ring` (no I/O).
//!
//! A token is `enc:v1:<order id>:<base64url(nonce ‖ ciphertext ‖ tag)>`: AES-256-GCM
//! under the order's data key, with the order id as associated data (a token moved to
//! another order does not open). The nonce is the first 12 bytes of
//! HMAC-SHA256(data key, value), so one value gives one token within an order:
//! equality, amendments and replacing a value inside text all still work, and
//! nothing but equality is revealed. Different orders have different data keys, so
//! the same value gives unrelated tokens across orders.
//!
//! A data key is stored wrapped: AES-256-GCM under a key-encryption key (KEK) derived
//! from a configured secret, with a random nonce and the order id as associated data
//! (`wrap`, `unwrap`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};

use crate::domain::OrderId;
pub(crate) use crate::domain::privacy::TOKEN_PREFIX;

/// A 256-bit key: an order's data key, or a key-encryption key.
#[derive(Clone)]
pub(crate) struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(…)")
    }
}

impl Key {
    /// A fresh random key.
    pub(crate) fn random() -> Key {
        let mut k = [0u8; 32];
        SystemRandom::new().fill(&mut k).expect("the system's random source works");
        Key(k)
    }

    /// The key-encryption key derived from a configured secret (HKDF-SHA256).
    pub(crate) fn derive(secret: &[u8]) -> Key {
        let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"orderbridge-privacy").extract(secret);
        let okm = prk.expand(&[b"kek/1"], ring::hkdf::HKDF_SHA256).expect("32 bytes is a valid HKDF length");
        let mut k = [0u8; 32];
        okm.fill(&mut k).expect("32 bytes fit");
        Key(k)
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0).expect("a 32-byte AES-256 key"))
    }
}

/// Why a token or a wrapped key did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("not an encrypted value")]
    NotAToken,
    #[error("the value does not open with its order's data key (altered, or another order's)")]
    Unopened,
}

/// The token of `clear` under the order's data key `dek`.
pub(crate) fn seal(dek: &Key, order: OrderId, clear: &str) -> String {
    let mac = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &dek.0), clear.as_bytes());
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&mac.as_ref()[..NONCE_LEN]);
    let mut buf = clear.as_bytes().to_vec();
    dek.aead()
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(order.as_bytes()), &mut buf)
        .expect("AES-GCM seals any value of this size");
    let mut raw = nonce.to_vec();
    raw.extend_from_slice(&buf);
    format!("{TOKEN_PREFIX}{order}:{}", B64.encode(raw))
}

/// The order a token belongs to, and its sealed bytes.
pub(crate) fn parse(token: &str) -> Result<(OrderId, Vec<u8>), TokenError> {
    let rest = token.strip_prefix(TOKEN_PREFIX).ok_or(TokenError::NotAToken)?;
    let (order, sealed) = rest.split_once(':').ok_or(TokenError::NotAToken)?;
    let order: OrderId = order.parse().map_err(|_| TokenError::NotAToken)?;
    let raw = B64.decode(sealed).map_err(|_| TokenError::NotAToken)?;
    if raw.len() < NONCE_LEN + AES_256_GCM.tag_len() {
        return Err(TokenError::NotAToken);
    }
    Ok((order, raw))
}

/// The clear value of `token`, sealed under `dek` for `order`.
pub(crate) fn open(dek: &Key, order: OrderId, raw: &[u8]) -> Result<String, TokenError> {
    String::from_utf8(open_raw(dek, order, raw)?).map_err(|_| TokenError::Unopened)
}

/// Each token in `text`: its byte range (tokens can sit inside free text).
pub(crate) fn find_all(text: &str) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find(TOKEN_PREFIX) {
        let start = from + i;
        let body = start + TOKEN_PREFIX.len();
        // `ord_<32 hex>:` then base64url.
        let id_end = text[body..].find(':').map(|j| body + j);
        let end = id_end.map(|e| {
            e + 1 + text[e + 1..].bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_').count()
        });
        match end {
            Some(end) if parse(&text[start..end]).is_ok() => {
                out.push(start..end);
                from = end;
            }
            _ => from = body,
        }
    }
    out
}

/// `dek` wrapped under the key-encryption key `kek`, for `order`: base64url.
pub(crate) fn wrap(kek: &Key, order: OrderId, dek: &Key) -> String {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).expect("the system's random source works");
    let mut buf = dek.0.to_vec();
    kek.aead()
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(order.as_bytes()), &mut buf)
        .expect("AES-GCM seals 32 bytes");
    let mut raw = nonce.to_vec();
    raw.extend_from_slice(&buf);
    B64.encode(raw)
}

/// The data key `wrap` wrapped.
pub(crate) fn unwrap(kek: &Key, order: OrderId, wrapped: &str) -> Result<Key, TokenError> {
    let raw = B64.decode(wrapped).map_err(|_| TokenError::NotAToken)?;
    if raw.len() != NONCE_LEN + 32 + AES_256_GCM.tag_len() {
        return Err(TokenError::NotAToken);
    }
    let clear = open_raw(kek, order, &raw)?;
    let mut k = [0u8; 32];
    k.copy_from_slice(&clear);
    Ok(Key(k))
}

fn open_raw(key: &Key, order: OrderId, raw: &[u8]) -> Result<Vec<u8>, TokenError> {
    let (nonce, sealed) = raw.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| TokenError::NotAToken)?;
    let mut buf = sealed.to_vec();
    key.aead()
        .open_in_place(nonce, Aad::from(order.as_bytes()), &mut buf)
        .map(|c| c.to_vec())
        .map_err(|_| TokenError::Unopened)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> OrderId {
        "ord_0190a0b0c0d07e008000000000000001".parse().unwrap()
    }

    #[test]
    fn a_value_round_trips_and_gives_one_token_per_order() {
        let (dek, id) = (Key::random(), order());
        let t = seal(&dek, id, "11010519491231002X");
        assert!(t.starts_with("enc:v1:ord_0190a0b0c0d07e008000000000000001:"), "{t}");
        assert!(!t.contains("11010519491231002X"));
        assert_eq!(seal(&dek, id, "11010519491231002X"), t, "deterministic within an order");
        assert_ne!(seal(&dek, id, "11010519491231002x"), t);
        let (o, raw) = parse(&t).unwrap();
        assert_eq!(o, id);
        assert_eq!(open(&dek, id, &raw).unwrap(), "11010519491231002X");
        // Chinese text and e-mail addresses are just bytes.
        let zh = seal(&dek, id, "北京市朝阳区建国路88号");
        assert_eq!(open(&dek, id, &parse(&zh).unwrap().1).unwrap(), "北京市朝阳区建国路88号");
    }

    #[test]
    fn another_key_another_order_or_a_changed_byte_does_not_open() {
        let (dek, id) = (Key::random(), order());
        let t = seal(&dek, id, "+86 138 0013 8000");
        let (_, raw) = parse(&t).unwrap();
        assert_eq!(open(&Key::random(), id, &raw), Err(TokenError::Unopened));
        let other: OrderId = "ord_0190a0b0c0d07e008000000000000002".parse().unwrap();
        assert_eq!(open(&dek, other, &raw), Err(TokenError::Unopened));
        assert_ne!(seal(&Key::random(), id, "+86 138 0013 8000"), t, "another order's key, another token");
        let mut bad = raw.clone();
        bad[14] ^= 1;
        assert_eq!(open(&dek, id, &bad), Err(TokenError::Unopened));
        for not in [
            "",
            "enc:v1:",
            "enc:v1:ord_x:AAAA",
            "zhang.wei@example.com",
            "enc:v1:ord_0190a0b0c0d07e008000000000000001:!!",
        ] {
            assert_eq!(parse(not).map(|_| ()), Err(TokenError::NotAToken), "{not}");
        }
    }

    #[test]
    fn tokens_are_found_inside_text() {
        let (dek, id) = (Key::random(), order());
        let t = seal(&dek, id, "13800138000");
        let text = format!("called {t} twice, then {t}.");
        let found = find_all(&text);
        assert_eq!(found.len(), 2);
        assert_eq!(&text[found[0].clone()], t);
        assert_eq!(&text[found[1].clone()], t);
        assert!(find_all("enc:v1: nothing here enc:v1:ord_1:").is_empty());
    }

    #[test]
    fn a_data_key_wraps_under_a_kek_and_opens_only_with_it() {
        let (kek, dek, id) = (Key::derive(b"0123456789abcdef0123456789abcdef"), Key::random(), order());
        let w = wrap(&kek, id, &dek);
        assert_ne!(wrap(&kek, id, &dek), w, "a random nonce per wrapping");
        let back = unwrap(&kek, id, &w).unwrap();
        assert_eq!(back.0, dek.0);
        assert_eq!(
            unwrap(&Key::derive(b"another secret of at least 32 bytes"), id, &w).map(|_| ()),
            Err(TokenError::Unopened)
        );
        assert_eq!(Key::derive(b"s").0, Key::derive(b"s").0, "derivation is stable across restarts");
    }
}
