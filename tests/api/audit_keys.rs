//! The keyed audit chain: each step's head is sealed with an HMAC key from the
//! configuration, covering the order row. Seals made before a key rotation still
//! verify while their key stays configured; an order row altered on disk is named by
//! `audit verify`, and so is a seal whose key is gone.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::json;

use crate::helpers::*;

fn cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin()).args(args).arg("--config-dir").arg(dir).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `[audit]` with these keys (each in its own secret file) and the current one.
fn keyed(dir: &Path, current: &str, ids: &[&str]) {
    let path = dir.join("config/orderbridge.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.split("\n[audit]\n").next().unwrap().to_owned();
    let keys: Vec<String> = ids.iter().map(|id| format!("{id} = \"file:secrets/audit-{id}\"")).collect();
    std::fs::write(&path, format!("{text}\n[audit]\nkey_id = \"{current}\"\nkeys = {{ {} }}\n", keys.join(", ")))
        .unwrap();
    for id in ids {
        std::fs::write(dir.join(format!("secrets/audit-{id}")), format!("test-audit-key-{id}-0123456789abcdef0123"))
            .unwrap();
    }
}

async fn order_sealed_with(app: &TestApp, deal_id: &str, key: &str) -> String {
    let (s, b) = app.post_webhook(&deal(deal_id, 1, "500000.00")).await;
    assert_eq!(s, 202, "{b}");
    let id = b["order_id"].as_str().unwrap().to_owned();
    let order = app.order(&id).await;
    let last = order["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["seal"]["key_id"], key, "{last}");
    id
}

#[tokio::test]
async fn seals_survive_a_key_rotation_and_an_altered_order_row_is_named() {
    let app = TestApp::builder().files(|d| keyed(d, "k1", &["k1"])).start().await;
    let old = order_sealed_with(&app, "D-SEAL1", "k1").await;
    let dir = app.stop_and_release().await;
    let out = cli(dir.path(), &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    // Rotation: k2 seals from now on, k1 stays to check what it sealed.
    keyed(dir.path(), "k2", &["k1", "k2"]);
    let app = TestApp::builder().in_dir(dir).start().await;
    let new = order_sealed_with(&app, "D-SEAL2", "k2").await;
    assert_eq!(app.order(&old).await["events"].as_array().unwrap().last().unwrap()["seal"]["key_id"], "k1");
    let dir = app.stop_and_release().await;
    let out = cli(dir.path(), &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("audit intact: 2 orders"), "{}", stdout(&out));

    // Without k1, what it sealed cannot be checked: named.
    keyed(dir.path(), "k2", &["k2"]);
    let out = cli(dir.path(), &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains(&format!("audit BROKEN at order {old}")), "{}", stdout(&out));
    assert!(stdout(&out).contains("key `k1`"), "{}", stdout(&out));
    keyed(dir.path(), "k2", &["k1", "k2"]);

    // Someone approves the new order by editing its row on disk (its chain untouched).
    {
        let settings = load_settings(dir.path());
        let engine = orderbridge::store::open_engine(&settings.store).unwrap();
        let oid: orderbridge::domain::OrderId = new.parse().unwrap();
        let mut key = vec![b'o'];
        key.extend_from_slice(oid.as_bytes());
        let row = engine.get(&key).unwrap().expect("the order row");
        // The row: the order's last sequence number (4 bytes), then the record.
        let (seq, record) = row.split_at(4);
        let mut rec: serde_json::Value = orderbridge::store::codec::decode(record).unwrap();
        assert_eq!(rec["state"]["name"], "awaiting_approval", "{rec}");
        rec["state"] = json!({"name": "approved"});
        let mut altered = seq.to_vec();
        altered.extend_from_slice(&orderbridge::store::codec::encode(&rec));
        let mut batch = orderbridge::store::kv::Batch::default();
        batch.put(key, altered);
        engine.write(batch).unwrap();
        engine.sync().unwrap();
    }
    let out = cli(dir.path(), &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("audit BROKEN at order {new}")), "{text}");
    assert!(text.contains("the order row or the chain does not match its seal"), "{text}");
}

#[tokio::test]
async fn an_archived_orders_seals_are_checked_too() {
    use chrono::{Duration, Utc};
    let clock = ManualClock::new(Utc::now() - Duration::days(100));
    let app = TestApp::builder().clock(clock.clock()).files(|d| keyed(d, "k1", &["k1"])).start().await;
    let mut p = deal("D-SEAL-AR", 1, "5000.00");
    p["deal"]["customer"]["credit_rating"] = "CCC".into();
    let (_, b) = app.post_webhook(&p).await;
    assert_eq!(b["state"], "rejected", "{b}");
    let id = b["order_id"].as_str().unwrap().to_owned();
    app.drain_outbox().await;
    clock.advance(Duration::days(91));
    let (_, pass) = app.api_post("/archive/run").await;
    assert_eq!(pass["archived"], 1, "{pass}");
    let dir = app.stop_and_release().await;
    let out = cli(dir.path(), &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("archive: 1 orders"), "{}", stdout(&out));

    // The key that sealed it gone: the archived order's seal cannot be checked, named.
    keyed(dir.path(), "k2", &["k2"]);
    let out = cli(dir.path(), &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("archived order {id}")) && text.contains("key `k1`"), "{text}");
}
