//! The daemon's Ed25519 signing key for evidence packs (`evidence.signing_key`): read
//! from a secret as a 32-byte seed in hex (`openssl rand -hex 32`) or a PKCS#8 private
//! key (`openssl genpkey -algorithm ed25519`, as PEM or base64 DER); the public key as
//! PEM (SubjectPublicKeyInfo), which `openssl pkeyutl -verify -pubin` reads.

use base64::Engine as _;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};

/// DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32 key bytes follow.
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// What a signing key may be written as, for messages.
pub(crate) const KEY_FORMS: &str = "an Ed25519 key: a 32-byte seed in hex (`openssl rand -hex 32`) or PKCS#8 as PEM or base64 (`openssl genpkey -algorithm ed25519`)";

/// Parses a signing key; the error never contains the key.
///
/// # Errors
/// The value is none of the accepted forms.
pub fn signing_key(value: &str) -> Result<Ed25519KeyPair, String> {
    let v = value.trim();
    if v.len() == 64
        && let Ok(seed) = hex::decode(v)
    {
        return Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| format!("not {KEY_FORMS}"));
    }
    let b64: String = v.lines().filter(|l| !l.starts_with("-----")).collect::<Vec<_>>().concat();
    let der = base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|_| format!("not {KEY_FORMS}"))?;
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|_| format!("not {KEY_FORMS}"))
}

/// The public key of `key` as a PEM `PUBLIC KEY` block.
pub fn public_pem(key: &Ed25519KeyPair) -> String {
    let mut der = SPKI_PREFIX.to_vec();
    der.extend_from_slice(key.public_key().as_ref());
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n")
}

/// The 32 key bytes of a PEM `PUBLIC KEY` block (Ed25519).
///
/// # Errors
/// Not a PEM Ed25519 public key.
pub fn parse_public_pem(pem: &str) -> Result<Vec<u8>, String> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "not a PEM public key (-----BEGIN PUBLIC KEY-----)".to_owned())?;
    match der.strip_prefix(&SPKI_PREFIX[..]) {
        Some(k) if k.len() == 32 => Ok(k.to_vec()),
        _ => Err("not an Ed25519 public key".to_owned()),
    }
}

/// Whether `signature` over `message` is `public_key`'s.
pub(crate) fn verifies(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key).verify(message, signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_and_its_pkcs8_forms_are_the_same_key() {
        let seed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
        let k = signing_key(seed).unwrap();
        // RFC 8032 test 1: this seed's public key.
        assert_eq!(
            hex::encode(k.public_key().as_ref()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        let pkcs8 = format!(
            "MC4CAQAwBQYDK2VwBCIEI{}",
            &base64::engine::general_purpose::STANDARD.encode(
                [
                    &[0x30u8, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20]
                        [..],
                    &hex::decode(seed).unwrap()
                ]
                .concat()
            )[21..]
        );
        let pem = format!("-----BEGIN PRIVATE KEY-----\n{pkcs8}\n-----END PRIVATE KEY-----\n");
        assert_eq!(signing_key(&pem).unwrap().public_key().as_ref(), k.public_key().as_ref());
        assert_eq!(parse_public_pem(&public_pem(&k)).unwrap(), k.public_key().as_ref());
        let sig = k.sign(b"manifest");
        assert!(verifies(k.public_key().as_ref(), b"manifest", sig.as_ref()));
        assert!(!verifies(k.public_key().as_ref(), b"manifesT", sig.as_ref()));
        let e = signing_key("not-a-key-0123").unwrap_err();
        assert!(!e.contains("not-a-key-0123"), "{e}");
    }
}
