//! Personal data at rest (`[privacy]`, `orderbridge::vault`): an order's ID number,
//! phone and e-mail never appear in clear under the data directory (files and store
//! rows) or in PostgreSQL's rows, while mail still reaches the customer's address and
//! the API shows them; after a key rotation the old key can leave the configuration
//! and every record still opens; once an ended order's retention passed, its personal
//! data reads `erased` and `audit verify` still passes.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use orderbridge::engine::{Actor, OrderEvent};
use orderbridge::settings::Settings;
use serde_json::Value;
use sqlx::Connection as _;

use crate::helpers::*;

const ID_NUMBER: &str = "11010519491231002X";
const PHONE: &str = "+86 138 0013 8000";
const EMAIL: &str = "zhang.wei@example.com";
const CLEAR: [&str; 3] = [ID_NUMBER, PHONE, EMAIL];

/// `[privacy]` with the keys `ids` (each a 32-byte secret of its own), `active` the
/// active one, a one-year retention and a quick sweep.
fn privacy(ids: &'static [&'static str], active: &'static str) -> impl Fn(&mut Settings) + Send + Sync + 'static {
    move |s| {
        for id in ids {
            s.privacy_keys.insert(id, format!("privacy-key-{id}-0123456789abcdef0123456789").as_bytes());
        }
        s.privacy_keys.active = Some(active.to_owned());
        s.privacy_keys.retain_years = Some(1);
        s.privacy_keys.sweep_interval = Duration::from_millis(100);
    }
}

/// `[audit]` with one key: each step's chain head sealed.
fn sealed(s: &mut Settings) {
    let key = secrecy::SecretString::from("audit-key-a1-0123456789abcdef0123456789abcdef");
    s.audit_keys = orderbridge::orders::seal::AuditKeys {
        current: Some("a1".into()),
        keys: std::collections::BTreeMap::from([("a1".to_owned(), key)]),
    };
}

/// Every file under `dir` holding one of the clear values: (file, value).
fn files_with_clear(dir: &Path) -> Vec<(String, &'static str)> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                for clear in CLEAR {
                    if bytes.windows(clear.len()).any(|w| w == clear.as_bytes()) {
                        found.push((path.display().to_string(), clear));
                    }
                }
            }
        }
    }
    found
}

/// Every row of the stopped daemon's embedded store, decoded, holding a clear value.
fn rows_with_clear(dir: &Path) -> Vec<String> {
    let settings = load_settings(dir);
    let engine = orderbridge::store::open_engine(&settings.store).unwrap();
    let mut found = Vec::new();
    for row in engine.range(&[0], &[0xff]) {
        let (k, v) = row.unwrap();
        let text = String::from_utf8_lossy(&v);
        if CLEAR.iter().any(|c| text.contains(c)) {
            found.push(format!("{}: {text}", String::from_utf8_lossy(&k)));
        }
    }
    found
}

async fn post(app: &TestApp, ext: &str) -> String {
    let (s, b) = app.post_webhook(&deal(ext, 1, "1250000.00")).await;
    assert_eq!(s, 202, "{b}");
    b["order_id"].as_str().unwrap().to_owned()
}

async fn cancel(app: &TestApp, id: &str) {
    let cancel = OrderEvent::Cancelled { reason: "客户撤单".into() };
    let ops = Actor::Person("operator:ops".into());
    app.state.orders.apply(id.parse().unwrap(), ops, cancel, &app.state.rules, app.state.clock.now()).await.unwrap();
}

fn customer(order: &Value) -> &Value {
    &order["order"]["customer"]
}

async fn audit_intact(app: &TestApp) {
    let report = app.state.orders.verify_audit().await.unwrap();
    assert!(report.broken.is_none(), "{report:?}");
}

#[tokio::test]
async fn personal_data_is_encrypted_at_rest_survives_rotation_and_is_erased_after_retention() {
    let clock = ManualClock::new(Utc::now());
    let smtp = SmtpServer::start(&[]);
    let erp = Receiver::start().await;
    // The audit keyed too: seals are over what is stored, and still verify after erasure.
    let start = || TestApp::builder().erp(erp.clone()).clock(clock.clock()).mail(&smtp).settings(sealed);
    let app = start().settings(privacy(&["k1"], "k1")).start().await;
    // One order through its whole life (mail to the customer, the ERP, the finance
    // system, the contract), one cancelled.
    let closed = post(&app, "D-PII-1").await;
    crate::mail::close_order(&app, &closed).await;
    let cancelled = post(&app, "D-PII-2").await;
    cancel(&app, &cancelled).await;
    app.drain_outbox().await;
    // Mail still goes to the customer's address in clear.
    let to_customer: Vec<_> = smtp.messages().into_iter().filter(|m| m.rcpt() == [EMAIL]).collect();
    assert!(!to_customer.is_empty(), "mail to the customer");
    assert!(to_customer.iter().all(|m| m.header("To").contains(EMAIL)), "the To header carries the address");
    // The API (admin: sees personal data) shows them in clear.
    let order = app.order(&closed).await;
    assert_eq!(customer(&order)["id_document"]["number"], ID_NUMBER, "{order}");
    assert_eq!(customer(&order)["phone"], PHONE);
    assert_eq!(customer(&order)["email"], EMAIL);
    // The contract is archived with tokens, served and delivered to the ERP opened.
    let delivered = erp.documents();
    let contract = delivered.iter().find(|(_, b)| b["kind"] == "contract").expect("the contract reached the ERP");
    assert!(contract.1["content"].as_str().unwrap().contains(ID_NUMBER), "{}", contract.1);
    let url = app.admin_url(&format!("/api/orders/{closed}/documents/contract"));
    let served = app.client.get(url).bearer_auth(ADMIN_TOKEN).send().await.unwrap().text().await.unwrap();
    assert!(served.contains(ID_NUMBER) && !served.contains("enc:v1:"), "{served}");
    audit_intact(&app).await;
    let last = order["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["seal"]["key_id"], "a1", "sealed: {last}");
    let dir = app.stop().await;
    assert_eq!(files_with_clear(dir.path()), vec![], "clear personal data in the data directory");
    assert_eq!(rows_with_clear(dir.path()), Vec::<String>::new(), "clear personal data in the store's rows");

    // A second key becomes the active one: the daemon rewraps every data key at start.
    let app = start().in_dir(dir).settings(privacy(&["k1", "k2"], "k2")).start().await;
    wait_until("every data key is under k2", || async {
        let s = app.state.orders.vault().status().await.unwrap();
        s.by_key.keys().collect::<Vec<_>>() == ["k2"]
    })
    .await;
    let dir = app.stop().await;

    // The old key leaves the configuration: everything still opens.
    let app = start().in_dir(dir).settings(privacy(&["k2"], "k2")).start().await;
    let order = app.order(&closed).await;
    assert_eq!(customer(&order)["id_document"]["number"], ID_NUMBER, "{order}");
    assert_eq!(customer(&order)["email"], EMAIL);
    let status = app.state.orders.vault().status().await.unwrap();
    assert_eq!((status.by_key.get("k2"), status.missing.len()), (Some(&2), 0), "{status:?}");
    audit_intact(&app).await;

    // A year and a bit later: both ended orders' personal data is erased.
    clock.advance(chrono::Duration::days(400));
    for id in [&cancelled, &closed] {
        wait_until("the order's personal data is erased", || async {
            customer(&app.order(id).await)["id_document"]["number"] == "erased"
        })
        .await;
        let order = app.order(id).await;
        assert_eq!(customer(&order)["phone"], "erased", "{order}");
        assert_eq!(customer(&order)["email"], "erased", "{order}");
        assert_eq!(customer(&order)["name"], "张伟", "names stay");
        let events = order["events"].as_array().unwrap();
        let last = events.last().unwrap();
        assert_eq!(
            (last["event"]["type"].as_str(), last["event"]["reason"].as_str()),
            (Some("personal_data_erased"), Some("retention"))
        );
    }
    assert!(app.metrics().await.contains("orderbridge_personal_data_erased_total{reason=\"retention\"} 2"));
    audit_intact(&app).await;
    let status = app.state.orders.vault().status().await.unwrap();
    assert_eq!(status.erased, 2, "{status:?}");
    let dir = app.stop().await;
    assert_eq!(files_with_clear(dir.path()), vec![]);
}

#[tokio::test]
async fn without_privacy_keys_the_scan_finds_the_clear_values() {
    // The scans above can see: without `[privacy]` the same order is stored in clear.
    let app = spawn_app().await;
    post(&app, "D-PII-CLEAR").await;
    let dir = app.stop().await;
    assert!(!rows_with_clear(dir.path()).is_empty(), "the row scan sees clear values");
    assert!(!files_with_clear(dir.path()).is_empty(), "the file scan sees clear values");
}

#[tokio::test]
async fn on_postgres_no_row_holds_personal_data_in_clear() {
    let pg = crate::postgres::fresh_database().await;
    let url = pg.url.clone();
    let app = TestApp::builder()
        .settings(on_postgres(secrecy::ExposeSecret::expose_secret(&url), 60))
        .settings(privacy(&["k1"], "k1"))
        .start()
        .await;
    let id = post(&app, "D-PII-PG").await;
    app.drain_outbox().await;
    assert_eq!(customer(&app.order(&id).await)["id_document"]["number"], ID_NUMBER);
    audit_intact(&app).await;
    app.stop().await;
    let mut db = sqlx::PgConnection::connect(secrecy::ExposeSecret::expose_secret(&url)).await.unwrap();
    let tables: Vec<(String,)> =
        sqlx::query_as("SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert!(tables.len() > 3, "{tables:?}");
    let mut rows = 0;
    for (t,) in tables {
        let texts: Vec<(String,)> =
            sqlx::query_as(&format!("SELECT t::text FROM \"{t}\" t")).fetch_all(&mut db).await.unwrap();
        rows += texts.len();
        for (text,) in texts {
            for clear in CLEAR {
                assert!(!text.contains(clear), "`{clear}` in clear in table {t}: {text}");
            }
        }
    }
    assert!(rows > 0);
}

/// `[privacy]` in `config/orderbridge.toml`, its key in a file of its own: for the
/// built binary, which reads the files.
fn privacy_in_files(dir: &Path) {
    std::fs::write(
        dir.join("config/privacy-k1.key"),
        "6c0d9a7e2f4b8c1d3e5f7a9b0c2d4e6f8a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d",
    )
    .unwrap();
    set_in_file(
        dir,
        &[
            ("privacy.active_key", "k1".into()),
            ("privacy.keys.k1", "file:config/privacy-k1.key".into()),
            ("privacy.retain_years", 1.into()),
        ],
    );
}

async fn cli(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut c = std::process::Command::new(bin());
    c.args(args).arg("--config-dir").arg(dir);
    let o = tokio::task::spawn_blocking(move || c.output().unwrap()).await.unwrap();
    (o.status.code(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

#[tokio::test]
async fn an_erasure_request_through_the_command_line() {
    let app = TestApp::builder().files(privacy_in_files).start().await;
    assert!(app.state.orders.vault().encrypts(), "[privacy] read from the file");
    let id = post(&app, "D-PII-CLI").await;
    app.drain_outbox().await;
    let dir = app.stop_and_release().await;

    let (code, out) = cli(dir.path(), &["keys", "status", "--json"]).await;
    assert_eq!(code, Some(0), "{out}");
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((status["active"].as_str(), status["by_key"]["k1"].as_u64()), (Some("k1"), Some(1)), "{status}");
    let (code, out) = cli(dir.path(), &["orders", "list", "--json"]).await;
    assert_eq!(code, Some(0), "{out}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(customer(&listed[0])["id_document"]["number"], ID_NUMBER, "opened for the command line: {listed}");
    let (code, out) = cli(dir.path(), &["keys", "erase", &id, "--reason", "PIPL 删除请求 #42"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("personal data erased"), "{out}");
    let (code, out) = cli(dir.path(), &["keys", "erase", &id, "--reason", "again"]).await;
    assert_eq!((code, out.contains("nothing to erase")), (Some(0), true), "{out}");
    let (code, out) = cli(dir.path(), &["audit", "verify"]).await;
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = cli(dir.path(), &["orders", "show", &id, "--json"]).await;
    assert_eq!(code, Some(0), "{out}");
    let order: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(customer(&order)["id_document"]["number"], "erased", "{order}");
    assert_eq!(customer(&order)["email"], "erased");
    let last = order["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["event"], serde_json::json!({"type": "personal_data_erased", "reason": "PIPL 删除请求 #42"}));
    assert_eq!(last["actor"]["kind"], "person", "{last}");
    let (_, out) = cli(dir.path(), &["keys", "status", "--json"]).await;
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((status["erased"].as_u64(), status["by_key"].get("k1")), (Some(1), None), "{status}");
}

#[tokio::test]
async fn sled_and_redb_keep_no_personal_data_in_clear_either() {
    for backend in [orderbridge::store::Backend::Sled, orderbridge::store::Backend::Redb] {
        let edit = move |s: &mut Settings| s.store.backend = backend;
        let app = TestApp::builder().settings(edit).settings(privacy(&["k1"], "k1")).start().await;
        let id = post(&app, &format!("D-PII-{}", backend.name())).await;
        app.drain_outbox().await;
        let dir = app.stop().await;
        set_in_file(dir.path(), &[("store.backend", backend.name().into())]);
        assert_eq!(rows_with_clear(dir.path()), Vec::<String>::new(), "{}", backend.name());
        assert_eq!(files_with_clear(dir.path()), vec![], "{}", backend.name());
        let app = TestApp::builder().in_dir(dir).settings(edit).settings(privacy(&["k1"], "k1")).start().await;
        assert_eq!(customer(&app.order(&id).await)["phone"], PHONE, "{}", backend.name());
        audit_intact(&app).await;
        app.stop().await;
    }
}

#[tokio::test]
async fn an_erasure_request_through_the_api_while_the_daemon_runs() {
    let app = TestApp::builder().settings(privacy(&["k1"], "k1")).start().await;
    let id = post(&app, "D-PII-API").await;
    let (s, keys) = app.api("/keys").await;
    assert_eq!((s, keys["by_key"]["k1"].as_u64()), (200, Some(1)), "{keys}");
    let person = app.person_token("wang.fang");
    let path = format!("/orders/{id}/erase-personal-data");
    let (s, b) = app.api_post_with(&person, &path, &serde_json::json!({"reason": "request 7"})).await;
    assert_eq!(s, 403, "administer only: {b}");
    let (s, b) = app.api_post_json(&path, &serde_json::json!({"reason": " "})).await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = app.api_post_json(&path, &serde_json::json!({"reason": "request 7"})).await;
    assert_eq!((s, b["erased"]["reason"].as_str()), (200, Some("request 7")), "{b}");
    let order = app.order(&id).await;
    assert_eq!(customer(&order)["id_document"]["number"], "erased", "{order}");
    assert!(app.metrics().await.contains("orderbridge_personal_data_erased_total{reason=\"request\"} 1"));
    let (s, b) = app.api_post_json(&path, &serde_json::json!({"reason": "again"})).await;
    assert_eq!((s, &b["erased"]), (200, &Value::Null), "{b}");
    audit_intact(&app).await;
    app.stop().await;
}
