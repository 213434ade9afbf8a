//! Evidence packs: everything an auditor needs about one order in one zip file that
//! is checked offline. The pack holds the order, its audit chain (re-verified here),
//! each decision with the configuration in force and that configuration's files as
//! kept (`crate::versions::kept`), approvals with who, when and through which
//! channel, effects with their receipts (mail included: mail is not kept as sent,
//! its effect and the SMTP server's receipt are), and the generated documents.
//!
//! `manifest.json` lists every file with its SHA-256 and is signed with the daemon's
//! Ed25519 key (`manifest.sig`, the raw 64-byte signature); `manifest.sha256` is the
//! same list in `sha256sum -c` form (its own hash is in the manifest), so the pack is
//! also checked with standard tools (README, "Evidence packs"). `verify.rs` checks it.

pub mod key;
mod verify;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};
use ring::signature::Ed25519KeyPair;
use serde_json::{Value, json};

pub use self::verify::{Checked, verify};
use crate::engine::{Actor, OrderEvent};
use crate::store::EventRecord;
use crate::versions::{kept, sha256_hex};

pub(crate) const FORMAT: &str = "orderbridge-evidence/1";
pub(crate) const MANIFEST: &str = "manifest.json";
pub(crate) const SIGNATURE: &str = "manifest.sig";
pub(crate) const SUMS: &str = "manifest.sha256";
pub(crate) const PUBLIC_KEY: &str = "public-key.pem";

/// Builds the pack of `order` (as `GET /api/orders/{id}` shows it, with its events),
/// reading kept configuration versions and documents from the data directory `data`.
///
/// # Errors
/// The events do not parse, or a kept file or document could not be read.
pub fn build(order: &Value, data: &Path, key: &Ed25519KeyPair, now: DateTime<Utc>) -> Result<Vec<u8>, String> {
    let events: Vec<EventRecord> =
        serde_json::from_value(order["events"].clone()).map_err(|e| format!("events do not parse: {e}"))?;
    let order_id = order["id"].as_str().unwrap_or_default().to_owned();
    let mut order_row = order.clone();
    if let Some(o) = order_row.as_object_mut() {
        o.remove("events");
    }
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("order.json".into(), pretty(&order_row)),
        ("audit/events.json".into(), pretty(&serde_json::to_value(&events).map_err(|e| e.to_string())?)),
        ("audit/chain.txt".into(), chain_check(&events).into_bytes()),
    ];
    let (decisions, configs) = decisions(&events);
    files.push(("decisions.json".into(), pretty(&decisions)));
    files.extend(configuration(data, &configs)?);
    files.push(("approvals.json".into(), pretty(&approvals(&events))));
    files.push(("effects.json".into(), pretty(&effects(&events))));
    files.extend(documents(data, &order_id)?);
    files.push((PUBLIC_KEY.into(), key::public_pem(key).into_bytes()));
    seal(files, &order_id, key, now)
}

fn pretty(v: &Value) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).expect("JSON values serialise");
    b.push(b'\n');
    b
}

/// The chain re-verified: each link's hash from the one before.
fn chain_check(events: &[EventRecord]) -> String {
    let mut prev = String::new();
    for (i, e) in events.iter().enumerate() {
        if i > 0 && e.prev_hash != prev {
            return format!("BROKEN at event {}: it does not follow the event before\n", e.seq);
        }
        if e.compute_hash() != e.hash {
            return format!("BROKEN at event {}: its hash does not match its content\n", e.seq);
        }
        prev.clone_from(&e.hash);
    }
    let sealed = match events.last().and_then(|e| e.seal.as_ref()) {
        Some(s) => format!(
            "head sealed with audit key `{}` (HMAC-SHA256 {}; `audit verify` checks it with the key)\n",
            s.key_id, s.mac
        ),
        None => String::new(),
    };
    format!("chain intact: {} events, head {}\n{sealed}", events.len(), prev)
}

/// Every event with the configuration in force (a step's version holds for the
/// events after it until the next), and the configurations used.
fn decisions(events: &[EventRecord]) -> (Value, BTreeSet<String>) {
    let mut in_force: Option<&String> = None;
    let mut used = BTreeSet::new();
    let list: Vec<Value> = events
        .iter()
        .map(|e| {
            if let Some(v) = &e.config_version {
                in_force = Some(v);
                used.insert(v.clone());
            }
            json!({"seq": e.seq, "at": e.at, "actor": e.actor, "event": e.event, "state": e.state,
                "config_version": in_force})
        })
        .collect();
    (
        json!({"decisions": list, "note": "config_version: the configuration in force (versions/loads.json names its parts; versions/<kind>/<hash>/ holds their files). Events recorded before versions were kept have none."}),
        used,
    )
}

/// The kept files of each configuration used, with the loads that name them.
fn configuration(data: &Path, configs: &BTreeSet<String>) -> Result<Vec<(String, Vec<u8>)>, String> {
    let loads = kept::loads(data).map_err(|e| format!("reading the kept versions: {e}"))?;
    let mut named: BTreeMap<&String, &kept::Load> = BTreeMap::new();
    for l in loads.iter().filter(|l| configs.contains(&l.id)) {
        named.entry(&l.id).or_insert(l);
    }
    let mut out = Vec::new();
    let mut parts = BTreeSet::new();
    for load in named.values() {
        for (kind, hash) in &load.parts {
            if !parts.insert((kind.clone(), hash.clone())) {
                continue;
            }
            let Some(part) = kept::part(data, kind, hash).map_err(|e| e.to_string())? else { continue };
            for f in &part.files {
                let bytes = kept::file(data, &part, &f.path).map_err(|e| format!("{kind} {hash} {}: {e}", f.path))?;
                out.push((format!("versions/{kind}/{hash}/{}", f.path), bytes));
            }
        }
    }
    let missing: Vec<&String> = configs.iter().filter(|c| !named.contains_key(c)).collect();
    out.push((
        "versions/loads.json".into(),
        pretty(&json!({"loads": named.values().collect::<Vec<_>>(), "not_kept": missing})),
    ));
    Ok(out)
}

/// Through which channel an actor acted: the one the event records (`api`,
/// `console`, `mail_link`, `cli`), else what the actor alone tells.
fn channel(e: &EventRecord, on_behalf_of: Option<&String>) -> Value {
    if let Some(channel) = e.channel {
        return json!(channel);
    }
    Value::from(match (&e.actor, on_behalf_of) {
        (Actor::System, Some(role)) => {
            format!("automatic approval by the daemon on behalf of {role} (approval matrix)")
        }
        (Actor::System, None) => "the daemon".into(),
        (Actor::Person(_), _) => {
            "not recorded (an entry older than channels in the audit: a person signed in or through their signed approval link)".into()
        }
        (Actor::Connector(c), _) => format!("connector {c}"),
    })
}

fn approvals(events: &[EventRecord]) -> Value {
    let list: Vec<Value> = events
        .iter()
        .filter_map(|e| {
            let (decision, level, role, comment, behalf) = match &e.event {
                OrderEvent::Approved { level, role, comment, on_behalf_of } => {
                    ("approved", level, role, comment, on_behalf_of.as_ref())
                }
                OrderEvent::ApprovalGiven { level, role, comment, on_behalf_of } => {
                    ("approval_given", level, role, comment, on_behalf_of.as_ref())
                }
                OrderEvent::ApprovalDeclined { level, role, comment } => ("declined", level, role, comment, None),
                _ => return None,
            };
            Some(json!({"seq": e.seq, "at": e.at, "who": e.actor, "channel": channel(e, behalf),
                "decision": decision, "level": level, "role": role, "comment": comment, "on_behalf_of": behalf}))
        })
        .collect();
    json!({"approvals": list})
}

fn effects(events: &[EventRecord]) -> Value {
    let list: Vec<Value> = events
        .iter()
        .filter(|e| {
            matches!(
                e.event,
                OrderEvent::EffectSucceeded { .. }
                    | OrderEvent::EffectDeadLettered { .. }
                    | OrderEvent::EffectReplayed { .. }
            )
        })
        .map(|e| json!({"seq": e.seq, "at": e.at, "actor": e.actor, "event": e.event}))
        .collect();
    json!({"effects": list, "note": "mail is not kept as sent: each mail is an effect of connector `mail`, with the SMTP server's answer as its receipt"})
}

/// The order's generated documents, as archived (`<data>/documents/<order>/`).
fn documents(data: &Path, order_id: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let dir = data.join("documents").join(order_id);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(Vec::new()) };
    let mut names: Vec<String> = entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
        .into_iter()
        .filter(|n| !n.ends_with(".tmp"))
        .map(|n| std::fs::read(dir.join(&n)).map(|b| (format!("documents/{n}"), b)).map_err(|e| format!("{n}: {e}")))
        .collect()
}

/// Adds the manifest, its `sha256sum` form and the signature; writes the zip.
fn seal(
    files: Vec<(String, Vec<u8>)>,
    order_id: &str,
    key: &Ed25519KeyPair,
    now: DateTime<Utc>,
) -> Result<Vec<u8>, String> {
    let listed: Vec<Value> =
        files.iter().map(|(p, b)| json!({"path": p, "sha256": sha256_hex(b), "bytes": b.len()})).collect();
    let sums: String = files.iter().map(|(p, b)| format!("{}  {p}\n", sha256_hex(b))).collect();
    let manifest = pretty(&json!({
        "format": FORMAT, "order_id": order_id, "created_at": now,
        "files": listed, "sha256sums": {"path": SUMS, "sha256": sha256_hex(sums.as_bytes())},
    }));
    let signature = key.sign(&manifest);
    let mut all = files;
    all.push((SUMS.into(), sums.into_bytes()));
    all.push((MANIFEST.into(), manifest));
    all.push((SIGNATURE.into(), signature.as_ref().to_vec()));
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (path, bytes) in &all {
        zip.start_file(path.as_str(), options).map_err(|e| e.to_string())?;
        zip.write_all(bytes).map_err(|e| e.to_string())?;
    }
    Ok(zip.finish().map_err(|e| e.to_string())?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OrderId;
    use crate::engine::OrderState;
    use crate::engine::access::Channel;

    fn approved(actor: Actor, channel: Option<Channel>, on_behalf_of: Option<&str>) -> EventRecord {
        EventRecord {
            order_id: OrderId::new_v7(),
            seq: 3,
            at: Utc::now(),
            actor,
            channel,
            event: OrderEvent::Approved {
                level: 1,
                role: "line_supervisor".into(),
                comment: "同意".into(),
                on_behalf_of: on_behalf_of.map(str::to_owned),
            },
            state: OrderState::Approved,
            prev_hash: String::new(),
            hash: String::new(),
            config_version: None,
            seal: None,
        }
    }

    #[test]
    fn the_channel_is_the_recorded_one_else_what_the_actor_tells() {
        let channel_of = |e: EventRecord| approvals(&[e])["approvals"][0]["channel"].clone();
        let wang = || Actor::Person("wang.fang".into());
        assert_eq!(channel_of(approved(wang(), Some(Channel::Api), None)), "api");
        assert_eq!(channel_of(approved(wang(), Some(Channel::MailLink), None)), "mail_link");
        assert_eq!(channel_of(approved(wang(), Some(Channel::Console), None)), "console");
        let old = channel_of(approved(wang(), None, None));
        assert!(old.as_str().unwrap().starts_with("not recorded"), "{old}");
        let auto = channel_of(approved(Actor::System, None, Some("line_supervisor")));
        assert!(auto.as_str().unwrap().contains("on behalf of line_supervisor"), "{auto}");
    }
}
