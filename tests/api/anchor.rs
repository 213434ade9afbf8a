//! The audit anchor: a sealed Merkle root over every order's chain head, chained to
//! the anchor before it. An order deleted from the store, or its chain truncated
//! together with its row (both rewritten consistently, so its own chain still
//! verifies), is named by `audit verify`; so is an anchor altered; orders added after
//! the anchor verify intact.

use std::path::Path;
use std::process::{Command, Output};

use orderbridge::store::kv::{Batch, Engine as _};
use serde_json::{Value, json};

use crate::helpers::*;

fn cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin()).args(args).arg("--config-dir").arg(dir).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `[audit]` with one key (`k1`), sealing steps and anchors.
fn keyed(dir: &Path) {
    let path = dir.join("config/orderbridge.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.split("\n[audit]\n").next().unwrap().to_owned();
    std::fs::write(&path, format!("{text}\n[audit]\nkey_id = \"k1\"\nkeys = {{ k1 = \"file:secrets/audit-k1\" }}\n"))
        .unwrap();
    std::fs::write(dir.join("secrets/audit-k1"), "test-audit-key-k1-0123456789abcdef0123").unwrap();
}

async fn new_order(app: &TestApp, deal_id: &str) -> String {
    let (s, b) = app.post_webhook(&deal(deal_id, 1, "500000.00")).await;
    assert_eq!(s, 202, "{b}");
    b["order_id"].as_str().unwrap().to_owned()
}

fn order_key(tag: u8, id: &str) -> Vec<u8> {
    let oid: orderbridge::domain::OrderId = id.parse().unwrap();
    let mut key = vec![tag];
    key.extend_from_slice(oid.as_bytes());
    key
}

fn edit(dir: &Path, change: impl FnOnce(&dyn orderbridge::store::kv::Engine, &mut Batch)) {
    let settings = load_settings(dir);
    let engine = orderbridge::store::open_engine(&settings.store).unwrap();
    let mut batch = Batch::default();
    change(engine.as_ref(), &mut batch);
    engine.write(batch).unwrap();
    engine.sync().unwrap();
}

/// The keys of an order's event rows (one per step), in order.
fn event_rows(engine: &dyn orderbridge::store::kv::Engine, id: &str) -> Vec<Vec<u8>> {
    let from = order_key(b'e', id);
    let to = [from.clone(), vec![0xff; 8]].concat();
    engine.range(&from, &to).map(|r| r.unwrap().0).collect()
}

/// The order's row, decoded: (its sequence prefix, the record).
fn order_row(engine: &dyn orderbridge::store::kv::Engine, id: &str) -> Value {
    let row = engine.get(&order_key(b'o', id)).unwrap().expect("the order row");
    orderbridge::store::codec::decode(&row[4..]).unwrap()
}

fn put_order_row(batch: &mut Batch, id: &str, rec: &Value) {
    let seq = u32::try_from(rec["last_seq"].as_u64().unwrap()).unwrap();
    let mut row = seq.to_be_bytes().to_vec();
    row.extend_from_slice(&orderbridge::store::codec::encode(rec));
    batch.put(order_key(b'o', id), row);
}

#[tokio::test]
async fn a_deleted_order_and_a_truncated_chain_are_named_against_the_anchor() {
    let app = TestApp::builder().start().await;
    let kept = new_order(&app, "D-ANC1").await;
    let deleted = new_order(&app, "D-ANC2").await;
    let truncated = new_order(&app, "D-ANC3").await;
    // Two steps on the order to truncate (a newer version of the deal): its last one
    // can go with its row rewritten.
    let (s, b) = app.post_webhook(&deal("D-ANC3", 2, "600000.00")).await;
    assert_eq!(s, 202, "{b}");
    let events = app.order(&truncated).await["events"].as_array().unwrap().clone();
    assert!(events.len() >= 2, "{events:?}");
    let (s, anchor) = app.api_post("/audit/anchor").await;
    assert_eq!(s, 200, "{anchor}");
    assert_eq!(anchor["seq"], 1, "{anchor}");
    assert_eq!(anchor["orders"], 3, "{anchor}");
    assert!(anchor["seal"].is_null(), "no keys: a plain hash chain: {anchor}");
    // Orders added after the anchor are fine.
    new_order(&app, "D-ANC4").await;
    let dir = app.stop_and_release().await;
    let out = cli(dir.path(), &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("anchors intact: 1 anchors"), "{}", stdout(&out));
    assert!(stdout(&out).contains("covers 3 orders"), "{}", stdout(&out));

    // The order deleted, row and events: its own chain is gone with it.
    edit(dir.path(), |e, b| {
        b.del(order_key(b'o', &deleted));
        for k in event_rows(e, &deleted) {
            b.del(k);
        }
    });
    // The other one's last step removed and its row rewritten to the step before.
    edit(dir.path(), |e, b| {
        let rows = event_rows(e, &truncated);
        assert!(rows.len() >= 2, "one row per step");
        let last = rows.last().unwrap().clone();
        let first_seq = u32::from_be_bytes(last[last.len() - 4..].try_into().unwrap());
        b.del(last);
        let head = &events[first_seq as usize - 2];
        let mut rec = order_row(e, &truncated);
        rec["last_seq"] = head["seq"].clone();
        rec["last_hash"] = head["hash"].clone();
        put_order_row(b, &truncated, &rec);
    });
    let out = cli(dir.path(), &["audit", "verify"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(!text.contains("audit BROKEN at order"), "each order's own chain still verifies: {text}");
    assert!(text.contains(&format!("order {deleted} is gone: audit anchor 1 covers it")), "{text}");
    assert!(
        text.contains(&format!(
            "order {truncated}: its chain was truncated: audit anchor 1 covers it at event {}",
            events.len()
        )),
        "{text}"
    );
    assert!(!text.contains(&format!("order {kept}")), "{text}");

    // No new anchor covers the damage over.
    let out = cli(dir.path(), &["audit", "anchor"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("audit anchor NOT written"), "{}", stdout(&out));
    assert!(stdout(&out).contains(&deleted), "{}", stdout(&out));
}

#[tokio::test]
async fn anchors_chain_and_are_sealed_and_an_altered_or_removed_one_is_named() {
    let app = TestApp::builder().files(keyed).start().await;
    new_order(&app, "D-ANC-K1").await;
    let dir = app.stop_and_release().await;
    for n in 1..=3 {
        let out = cli(dir.path(), &["audit", "anchor"]);
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
        let a: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(a["seq"], n, "{a}");
        assert_eq!(a["seal"]["key_id"], "k1", "{a}");
    }
    let out = cli(dir.path(), &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("anchors intact: 3 anchors"), "{}", stdout(&out));

    // Someone lowers the order count of anchor 2 and recomputes nothing.
    let job = |n: u64| [vec![b'j'], format!("audit-anchor/{n:012}").into_bytes()].concat();
    let original = {
        let settings = load_settings(dir.path());
        let engine = orderbridge::store::open_engine(&settings.store).unwrap();
        engine.get(&job(2)).unwrap().expect("anchor 2")
    };
    edit(dir.path(), |_, b| {
        let mut a: Value = orderbridge::store::codec::decode(&original).unwrap();
        a["orders"] = json!(0);
        b.put(job(2), orderbridge::store::codec::encode(&a));
    });
    let out = cli(dir.path(), &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("audit anchor 2 was altered"), "{}", stdout(&out));

    // Removed instead: named too.
    edit(dir.path(), |_, b| b.del(job(2)));
    let out = cli(dir.path(), &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("audit anchor 2 is missing"), "{}", stdout(&out));

    // Back as it was, but checked without its key: the seal cannot be checked.
    edit(dir.path(), |_, b| b.put(job(2), original.clone()));
    let out = cli(dir.path(), &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let path = dir.path().join("config/orderbridge.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("key_id = \"k1\"\nkeys = { k1 = \"file:secrets/audit-k1\" }", "")).unwrap();
    let out = cli(dir.path(), &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("audit anchor 1: sealed with key `k1`"), "{}", stdout(&out));
}

/// On PostgreSQL: anchors are written through the daemon's API (and its lease), an
/// order deleted by SQL is named by the daemon's `GET /api/audit/verify`, and no new
/// anchor is written over it.
#[tokio::test]
async fn on_postgres_a_deleted_order_is_named_against_the_anchor() {
    use secrecy::ExposeSecret as _;
    use sqlx::Connection as _;

    let pg = crate::postgres::fresh_database().await;
    let secret = tempfile::tempdir().unwrap();
    let url_file = secret.path().join("url");
    std::fs::write(&url_file, pg.url.expose_secret()).unwrap();
    let store: [(&str, toml::Value); 2] =
        [("store.backend", "postgres".into()), ("store.url", format!("file:{}", url_file.display()).into())];
    let app = TestApp::builder().files(move |d| set_in_file(d, &store)).start().await;
    let kept = new_order(&app, "PG-ANC1").await;
    let deleted = new_order(&app, "PG-ANC2").await;
    for n in 1..=2 {
        let (s, a) = app.api_post("/audit/anchor").await;
        assert_eq!((s, a["seq"].as_u64(), a["orders"].as_u64()), (200, Some(n), Some(2)), "{a}");
    }
    new_order(&app, "PG-ANC3").await;
    let (s, v) = app.api("/audit/verify").await;
    assert_eq!((s, v["intact"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(v["anchors"]["latest"], 2, "{v}");

    let mut db = sqlx::PgConnection::connect(pg.url.expose_secret()).await.unwrap();
    let uuid = |id: &str| uuid::Uuid::from_bytes(*id.parse::<orderbridge::domain::OrderId>().unwrap().as_bytes());
    sqlx::query("DELETE FROM events WHERE order_id = $1").bind(uuid(&deleted)).execute(&mut db).await.unwrap();
    sqlx::query("DELETE FROM orders WHERE id = $1").bind(uuid(&deleted)).execute(&mut db).await.unwrap();
    db.close().await.unwrap();

    let (s, v) = app.api("/audit/verify").await;
    assert_eq!((s, v["intact"].as_bool(), v["broken"].is_null()), (200, Some(false), true), "{v}");
    let problems = v["anchors"]["problems"].to_string();
    assert!(problems.contains(&format!("order {deleted} is gone: audit anchor 2 covers it")), "{v}");
    assert!(!problems.contains(&kept), "{v}");
    let (s, b) = app.api_post("/audit/anchor").await;
    assert_eq!(s, 409, "{b}");
    assert!(b.to_string().contains(&deleted), "{b}");
}

/// A rejected order (ends at once, so the archive takes it after its retention).
async fn rejected(app: &TestApp, deal_id: &str) -> String {
    let mut p = deal(deal_id, 1, "5000.00");
    p["deal"]["customer"]["credit_rating"] = "CCC".into();
    let (_, b) = app.post_webhook(&p).await;
    assert_eq!(b["state"], "rejected", "{b}");
    b["order_id"].as_str().unwrap().to_owned()
}

/// Anchored orders that move to the archive, and are purged with a log entry, still
/// verify; an archived order whose index entry is deleted is named.
#[tokio::test]
async fn archived_and_purged_orders_hold_and_a_deleted_archive_entry_is_named() {
    use chrono::{Duration, Utc};
    let clock = ManualClock::new(Utc::now() - Duration::days(100));
    let app = TestApp::builder().clock(clock.clock()).start().await;
    let (a, b, held) =
        (rejected(&app, "D-ANC-A1").await, rejected(&app, "D-ANC-A2").await, rejected(&app, "D-ANC-A3").await);
    app.drain_outbox().await;
    let (s, anchor) = app.api_post("/audit/anchor").await;
    assert_eq!((s, anchor["orders"].as_u64(), anchor["archived"].as_u64()), (200, Some(3), Some(0)), "{anchor}");
    clock.advance(Duration::days(91));
    let (_, pass) = app.api_post("/archive/run").await;
    assert_eq!(pass["archived"], 3, "{pass}");
    // Anchored hot, archived since: found in their segment, the anchored event there.
    let (_, v) = app.api("/audit/verify").await;
    assert_eq!(v["intact"], true, "{v}");
    let (s, anchor) = app.api_post("/audit/anchor").await;
    assert_eq!((s, anchor["orders"].as_u64(), anchor["archived"].as_u64()), (200, Some(3), Some(3)), "{anchor}");

    // Ten years on, two are purged (logged); the held one stays.
    let (s, body) = app.api_post_json(&format!("/orders/{held}/legal-hold"), &json!({"reason": "审计保全"})).await;
    assert_eq!(s, 200, "{body}");
    clock.advance(Duration::days(3653));
    let (_, pass) = app.api_post("/archive/run").await;
    assert_eq!(pass["purged"], 2, "{pass}");
    let (_, v) = app.api("/audit/verify").await;
    assert_eq!(v["intact"], true, "purges are logged: {v}");
    let (s, anchor) = app.api_post("/audit/anchor").await;
    assert_eq!((s, anchor["seq"].as_u64(), anchor["orders"].as_u64()), (200, Some(3), Some(1)), "{anchor}");
    let dir = app.stop_and_release().await;

    // The held order's archive entry deleted: it is nowhere, and no purge says so.
    edit(dir.path(), |_, batch| batch.del(order_key(b'a', &held)));
    let out = cli(dir.path(), &["audit", "verify"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("order {held} is gone: audit anchor 3 covers it as archived")), "{text}");
    assert!(!text.contains(&a) && !text.contains(&b), "{text}");
}

/// `[audit] anchor_push`: each anchor is pushed to that connector operation by the
/// outbox, with an idempotency key of its own; `check` names an operation that does
/// not exist.
#[tokio::test]
async fn each_anchor_is_pushed_to_the_configured_connector_operation() {
    let erp = Receiver::start().await;
    let push = |d: &Path| {
        let path = d.join("config/orderbridge.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let push = "anchor_push = { connector = \"demo-erp\", operation = \"store_document\" }";
        std::fs::write(&path, format!("{text}\n[audit]\n{push}\n")).unwrap();
    };
    let app = TestApp::builder().erp(erp.clone()).files(push).start().await;
    new_order(&app, "D-ANC-PUSH").await;
    app.drain_outbox().await;
    let (s, anchor) = app.api_post("/audit/anchor").await;
    assert_eq!(s, 200, "{anchor}");
    app.drain_outbox().await;
    let pushed: Vec<(String, Value)> =
        erp.documents().into_iter().filter(|(k, _)| k.starts_with("orderbridge:audit-anchor:")).collect();
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    assert_eq!(pushed[0].1, anchor, "the anchor as written");
    assert_eq!(pushed[0].0, format!("orderbridge:audit-anchor:1:{}", anchor["hash"].as_str().unwrap()));
    let dir = app.stop_and_release().await;

    let path = dir.path().join("config/orderbridge.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("operation = \"store_document\"", "operation = \"keep_anchor\"")).unwrap();
    let out = cli(dir.path(), &["check"]);
    let all = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert_ne!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("audit.anchor_push: connector `demo-erp` has no operation `keep_anchor`"), "{all}");
    assert!(all.contains("orderbridge.toml:"), "file:line: {all}");
}

/// The anchored heads are paged by the day orders were created: a page edited to
/// hide an order, or removed, is named; the root over all heads is unchanged by it.
#[tokio::test]
async fn an_altered_or_removed_page_of_anchored_heads_is_named() {
    let app = TestApp::builder().start().await;
    let first = new_order(&app, "D-PAGE1").await;
    new_order(&app, "D-PAGE2").await;
    let created = app.order(&first).await["created_at"].as_str().unwrap()[..10].to_owned();
    for n in 1..=2 {
        let (s, anchor) = app.api_post("/audit/anchor").await;
        assert_eq!((s, anchor["seq"].as_u64()), (200, Some(n)), "{anchor}");
    }
    let dir = app.stop_and_release().await;
    let out = cli(dir.path(), &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("anchors intact: 2 anchors"), "{}", stdout(&out));

    let page = [vec![b'j'], format!("audit-anchor/heads/{created}").into_bytes()].concat();
    let original = {
        let settings = load_settings(dir.path());
        let engine = orderbridge::store::open_engine(&settings.store).unwrap();
        engine.get(&page).unwrap().unwrap_or_else(|| panic!("the page of {created}"))
    };
    edit(dir.path(), |_, b| {
        let mut p: Value = orderbridge::store::codec::decode(&original).unwrap();
        assert_eq!(p["heads"].as_array().unwrap().len(), 2, "{p}");
        p["heads"].as_array_mut().unwrap().remove(0);
        b.put(page.clone(), orderbridge::store::codec::encode(&p));
    });
    let out = cli(dir.path(), &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!("the anchored order heads of {created} do not match their index entry")),
        "{}",
        stdout(&out)
    );

    edit(dir.path(), |_, b| b.del(page.clone()));
    let out = cli(dir.path(), &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains(&format!("the anchored order heads of {created} are missing")), "{}", stdout(&out));
}
