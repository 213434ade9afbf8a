//! The keyed audit chain: each step's last event carries a seal, an HMAC-SHA256 over
//! that event's hash (which chains every event before it) and over the order row the
//! step wrote (state, approvals, fulfilment and payments, the order itself). Someone
//! who can write the data directory can still recompute SHA-256 chains, but not the
//! seals without the key, so `audit verify` finds a chain or an order row rewritten.
//!
//! Keys have ids (`[audit] keys`, the current one `[audit] key_id`); a seal names its
//! key, so after a rotation old seals verify as long as their key stays configured.
//! Events written before keys were configured carry no seal and are checked as plain
//! SHA-256 chains.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::Sha256;

use crate::store::Step;
use crate::store::records::{EventRecord, OrderRecord, Seal};

/// The audit keys by id, and the one new seals use.
#[derive(Clone, Debug, Default)]
pub struct AuditKeys {
    pub current: Option<String>,
    pub keys: BTreeMap<String, SecretString>,
}

/// The MAC of `event_hash` and the order row `rec` under `key`.
fn mac(key: &SecretString, event_hash: &str, rec: &OrderRecord) -> Hmac<Sha256> {
    let row = serde_json::to_vec(&serde_json::json!({
        "id": rec.id, "order": rec.order, "state": rec.state, "approval": rec.approval,
        "fulfilment": rec.fulfilment, "last_seq": rec.last_seq, "last_hash": rec.last_hash,
    }))
    .expect("an order row serialises");
    let mut m = Hmac::<Sha256>::new_from_slice(key.expose_secret().as_bytes()).expect("HMAC takes any key length");
    m.update(b"orderbridge-seal/1\n");
    m.update(event_hash.as_bytes());
    m.update(b"\n");
    m.update(&row);
    m
}

/// The MAC of an audit anchor's hash (`crate::anchor`) under `key`.
fn anchor_mac(key: &SecretString, anchor_hash: &str) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key.expose_secret().as_bytes()).expect("HMAC takes any key length");
    m.update(b"orderbridge-anchor/1\n");
    m.update(anchor_hash.as_bytes());
    m
}

impl AuditKeys {
    /// The seal of an audit anchor whose hash is `anchor_hash`, with the current key
    /// (`None` without keys: the anchor is then a plain hash chain).
    pub(crate) fn seal_anchor(&self, anchor_hash: &str) -> Option<Seal> {
        let (id, key) = self.current.as_ref().and_then(|id| self.keys.get(id).map(|k| (id, k)))?;
        let mac = hex::encode(anchor_mac(key, anchor_hash).finalize().into_bytes());
        Some(Seal { key_id: id.clone(), mac })
    }

    /// Checks an anchor's seal against its hash; `after_sealed`: an earlier anchor is
    /// sealed, so this one must be too (a seal removed to hide a rewrite).
    pub(crate) fn check_anchor(
        &self,
        seal: Option<&Seal>,
        anchor_hash: &str,
        after_sealed: bool,
    ) -> Result<(), String> {
        let Some(s) = seal else {
            return if after_sealed {
                Err("it is not sealed but an earlier anchor is (seal removed)".to_owned())
            } else {
                Ok(())
            };
        };
        let Some(key) = self.keys.get(&s.key_id) else {
            return Err(format!("sealed with key `{}`, which is not configured ([audit] keys)", s.key_id));
        };
        if hex::decode(&s.mac).is_ok_and(|b| anchor_mac(key, anchor_hash).verify_slice(&b).is_ok()) {
            Ok(())
        } else {
            Err("it does not match its seal (altered)".to_owned())
        }
    }

    /// Seals the last event of each step that writes its order row.
    pub(crate) fn seal(&self, steps: &mut [Step]) {
        let Some((id, key)) = self.current.as_ref().and_then(|id| self.keys.get(id).map(|k| (id, k))) else {
            return;
        };
        for step in steps {
            let (Some(write), Some(last)) = (&step.order, step.events.last_mut()) else { continue };
            if last.seq != write.record.last_seq {
                continue;
            }
            let m = mac(key, &last.hash, &write.record);
            last.seal = Some(Seal { key_id: id.clone(), mac: hex::encode(m.finalize().into_bytes()) });
        }
    }

    /// Checks one order's chain: every seal names a configured key, and the last
    /// event's seal matches the chain head and the order row as stored now (earlier
    /// heads are covered through the hash chain: their rows are not kept). Returns
    /// whether the chain is sealed, or where it fails.
    pub(crate) fn check(&self, rec: &OrderRecord, events: &[EventRecord]) -> Result<bool, (u32, String)> {
        for e in events {
            if let Some(s) = e.seal.as_ref().filter(|s| !self.keys.contains_key(&s.key_id)) {
                return Err((e.seq, format!("sealed with key `{}`, which is not configured ([audit] keys)", s.key_id)));
            }
        }
        if !events.iter().any(|e| e.seal.is_some()) {
            return Ok(false);
        }
        let Some(last) = events.last() else { return Ok(false) };
        let Some(s) = &last.seal else {
            return Err((last.seq, "the chain is sealed but its last event is not (seal removed)".to_owned()));
        };
        let key = &self.keys[&s.key_id];
        let ok = hex::decode(&s.mac).is_ok_and(|b| mac(key, &last.hash, rec).verify_slice(&b).is_ok());
        if ok {
            Ok(true)
        } else {
            Err((last.seq, "the order row or the chain does not match its seal (altered)".to_owned()))
        }
    }
}
