//! The runbooks (`docs/src/runbooks/`) as tests. Each command block marked
//! `<!-- runbook-test: NAME -->` is read from its page and run exactly as written,
//! through `sh -e`, with the built binary first on `PATH` and the variables the pages
//! tell the admin to set (`ORDERBRIDGE_CONFIG_DIR`, `ORDERBRIDGE__STORE__PATH`,
//! `ORDERBRIDGE__SERVER__ADMIN__PORT`, `ORDERBRIDGE_ADMIN_URL`, `ORDERBRIDGE_ADMIN_TOKEN`,
//! and a page's own such as `CONNECTOR`), against the failure the page is about: a
//! real SMTP server that is not there yet, an ERP that answers 503, 400 or 401 or wants
//! a rotated token, a stored row damaged in place, a store put back from a copy. Each
//! test then checks what the page promises (the mail arrived, the ERP got each push
//! once, `audit verify` passes), so a wrong command on a page fails here.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

/// Every marked block of every page, by page; a test below runs each of them
/// (`every_marked_block_is_run_by_a_test` holds this list to the pages).
const BLOCKS: &[(&str, &[&str])] = &[
    ("smtp.md", &["smtp-diagnose", "smtp-replay", "smtp-verify"]),
    ("system-down.md", &["system-down-inspect", "system-down-verify"]),
    ("credentials-refused.md", &["credentials-inspect", "credentials-write-file", "credentials-verify"]),
    (
        "dead-letters.md",
        &["dead-letters-inspect", "dead-letters-replay", "dead-letters-replay-one", "dead-letters-verify"],
    ),
    ("paused-connector.md", &["paused-inspect", "paused-resume", "paused-verify"]),
    ("stuck-approval.md", &["stuck-approval-find", "stuck-approval-review"]),
    ("disk-full.md", &["disk-full-verify"]),
    (
        "quarantine.md",
        &["quarantine-list", "quarantine-from-backup", "quarantine-restore", "quarantine-discard", "quarantine-verify"],
    ),
    ("restore.md", &["restore-take-backup", "restore-put-back", "restore-verify"]),
    ("unmatched-payments.md", &["unmatched-list", "unmatched-assign", "unmatched-verify"]),
    ("exceptions.md", &["exception-find", "exception-resolve", "exception-verify"]),
    ("rotate-secrets.md", &["rotate-api-token", "rotate-privacy-status"]),
];

fn runbooks_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/src/runbooks")
}

/// The names of the blocks marked in `page`, in order.
fn marked(page: &str) -> Vec<String> {
    let text = std::fs::read_to_string(runbooks_dir().join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("<!-- runbook-test: ")?.strip_suffix(" -->").map(str::to_owned))
        .collect()
}

/// The commands of the block `name` in `page`, as written: the lines of the ```sh
/// fence right after its marker, the fence's indentation (inside a list item) removed.
fn block(page: &str, name: &str) -> String {
    assert!(
        BLOCKS.iter().any(|(p, names)| *p == page && names.contains(&name)),
        "{page} {name} is not listed in BLOCKS"
    );
    let text = std::fs::read_to_string(runbooks_dir().join(page)).unwrap();
    let marker = format!("<!-- runbook-test: {name} -->");
    let mut lines = text.lines().skip_while(|l| l.trim() != marker);
    assert!(lines.next().is_some(), "{page} has no block marked {name}");
    let fence = lines.next().unwrap_or_default();
    assert_eq!(fence.trim(), "```sh", "{page}: the line after the {name} marker must open a ```sh block");
    let indent = fence.len() - fence.trim_start().len();
    let body: Vec<&str> =
        lines.take_while(|l| l.trim() != "```").map(|l| l.get(indent..).unwrap_or_else(|| l.trim_start())).collect();
    assert!(!body.is_empty(), "{page} {name} is empty");
    body.join("\n") + "\n"
}

/// What a block printed, and how it ended.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// The shell a page's commands run in: the variables it tells the admin to set.
#[derive(Clone)]
struct Shell {
    env: Vec<(String, String)>,
}

impl Shell {
    /// The shell of "Before you start", for the configuration in `dir` with the daemon
    /// stopped (the CLI opens the store itself).
    fn offline(dir: &Path) -> Shell {
        Shell {
            env: vec![
                ("ORDERBRIDGE_CONFIG_DIR".into(), dir.display().to_string()),
                ("ORDERBRIDGE__STORE__PATH".into(), dir.join("data").display().to_string()),
                ("ORDERBRIDGE_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
            ],
        }
    }

    /// The same while `app` runs: its admin listener as an override (as the daemon's
    /// environment file would set it) and as the URL `curl` uses.
    fn of(app: &TestApp) -> Shell {
        Shell::offline(app.dir.path())
            .set("ORDERBRIDGE__SERVER__ADMIN__PORT", &app.admin.port().to_string())
            .set("ORDERBRIDGE_ADMIN_URL", &format!("http://{}", app.admin))
    }

    /// With one more variable a page asks for (`CONNECTOR`, `BACKUP`, …).
    fn set(mut self, name: &str, value: &str) -> Shell {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Runs the block through `sh -e` (on a blocking thread: the daemon under test runs
    /// on this test's runtime and must answer the CLI meanwhile).
    async fn run(&self, page: &str, name: &str) -> Ran {
        let script = block(page, name);
        let env = self.env.clone();
        let bin_dir = bin().parent().unwrap().to_owned();
        let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
        let out = tokio::task::spawn_blocking(move || {
            let mut cmd = std::process::Command::new("sh");
            cmd.arg("-e").arg("-c").arg(&script);
            // Nothing of the test process's own ORDERBRIDGE environment leaks in.
            for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ORDERBRIDGE")) {
                cmd.env_remove(k);
            }
            cmd.env("PATH", path).envs(env).output().expect("sh runs")
        })
        .await
        .unwrap();
        let ran = Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        if std::env::var_os("TEST_LOG").is_some() {
            eprintln!("== {page} {name}: {:?}\n{}{}", ran.code, ran.stdout, ran.stderr);
        }
        ran
    }

    /// Runs the block, which must succeed; its standard output.
    async fn ok(&self, page: &str, name: &str) -> String {
        let ran = self.run(page, name).await;
        assert_eq!(
            ran.code,
            Some(0),
            "{page} {name} failed:\n{}\nstdout:\n{}\nstderr:\n{}",
            block(page, name),
            ran.stdout,
            ran.stderr
        );
        ran.stdout
    }
}

#[test]
fn every_marked_block_is_run_by_a_test() {
    let mut pages: Vec<String> = std::fs::read_dir(runbooks_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .collect();
    pages.sort();
    for page in &pages {
        let listed: Vec<String> = BLOCKS
            .iter()
            .find(|(p, _)| p == page)
            .map(|(_, names)| names.iter().map(|n| (*n).to_owned()).collect())
            .unwrap_or_default();
        assert_eq!(marked(page), listed, "{page}: its marked blocks and the ones BLOCKS lists differ");
        for name in &listed {
            block(page, name);
        }
    }
}

async fn dead_letters(app: &TestApp) -> Vec<Value> {
    app.api("/outbox/dead").await.1["effects"].as_array().cloned().unwrap_or_default()
}

async fn wait_dead(app: &TestApp, n: usize) -> Vec<Value> {
    wait_until(&format!("{n} dead letter(s)"), || async { dead_letters(app).await.len() >= n }).await;
    dead_letters(app).await
}

async fn post(app: &TestApp, payload: &Value) -> String {
    let (status, body) = app.post_webhook(payload).await;
    assert_eq!(status, 202, "{body}");
    body["order_id"].as_str().unwrap().to_owned()
}

/// Waits until the connector `id` is paused after refused credentials.
async fn wait_paused(app: &TestApp, id: &str) {
    wait_until(&format!("{id} is paused"), || async {
        let (_, v) = app.api("/connectors").await;
        v["connectors"].as_array().into_iter().flatten().any(|c| c["id"] == id && c["paused"] == true)
    })
    .await;
}

#[tokio::test]
async fn smtp_down_then_back_the_dead_mail_is_replayed_as_the_runbook_says() {
    // Arrange: nothing listens on the SMTP port; mail gives up after 3 attempts.
    let port = SmtpServer::free_port();
    let app = TestApp::builder()
        .mail_port(port)
        .only_approval()
        .files(|d| {
            let one = "[[notify]]\non = \"received\"\ntemplate = \"order_received\"\nto = [\"customer\"]\n";
            std::fs::write(d.join("config/notifications.toml"), one).unwrap();
        })
        .settings(|s| s.dispatcher.max_attempts = 3)
        .start()
        .await;
    for id in ["RB-MAIL-1", "RB-MAIL-2"] {
        post(&app, &deal(id, 1, "8000.00")).await;
    }
    let dead = wait_dead(&app, 2).await;
    assert!(dead.iter().all(|e| e["connector"] == "mail"), "{dead:?}");
    let sh = Shell::of(&app);

    // Act 1: the diagnosis names the mail waiting and the server that does not answer.
    let diagnosis = sh.run("smtp.md", "smtp-diagnose").await;
    assert_eq!(diagnosis.code, Some(69), "check --online exits 69 while SMTP is down: {}", diagnosis.stdout);
    assert!(diagnosis.stdout.contains("mail: FAILED"), "{}", diagnosis.stdout);

    // Act 2: the server is back; the dead mail is replayed as written.
    let maildir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start_on(port, maildir.path(), &[]);
    let replayed = sh.ok("smtp.md", "smtp-replay").await;
    for e in &dead {
        assert!(replayed.contains(&format!("replayed {}", e["id"].as_str().unwrap())), "{replayed}");
    }

    // Assert: each mail arrives once, and the checks say so.
    smtp.wait_for(2).await;
    app.drain_outbox().await;
    let mails = smtp.messages();
    assert_eq!(mails.len(), 2, "each mail once");
    let mut ids: Vec<String> = mails.iter().map(|m| m.header("Message-ID").to_owned()).collect();
    ids.sort();
    let mut want: Vec<String> = dead.iter().map(|e| format!("<{}@bank.example>", e["id"].as_str().unwrap())).collect();
    want.sort();
    assert_eq!(ids, want, "the replayed effects are the mails that arrived");
    let verified = sh.ok("smtp.md", "smtp-verify").await;
    assert!(verified.contains("mail: ok") && verified.contains("every system answered"), "{verified}");
    assert!(verified.contains("0 mail effect(s) waiting"), "{verified}");
    assert!(verified.contains(r#"outcome="success"} 2"#), "{verified}");
    assert!(dead_letters(&app).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn an_erp_down_past_its_attempts_is_replayed_as_the_runbooks_say_and_gets_each_push_once() {
    // Arrange: the ERP answers 503; pushes give up after 2 attempts.
    let erp = Receiver::start().await;
    erp.set_down(true);
    let app =
        TestApp::builder().erp(erp.clone()).only_approval().settings(|s| s.dispatcher.max_attempts = 2).start().await;
    for id in ["RB-DOWN-1", "RB-DOWN-2"] {
        post(&app, &deal(id, 1, "8000.00")).await;
    }
    let dead = wait_dead(&app, 2).await;
    let sh = Shell::of(&app).set("CONNECTOR", "demo-erp");

    // Act 1: inspect, as the pages say.
    let inspected = sh.ok("system-down.md", "system-down-inspect").await;
    assert!(inspected.contains(r#"orderbridge_effect_attempts_total{connector="demo-erp""#), "{inspected}");
    assert!(inspected.contains(r#"outcome="dead"} 2"#), "{inspected}");
    let listed = sh.ok("dead-letters.md", "dead-letters-inspect").await;
    for e in &dead {
        assert!(listed.contains(e["id"].as_str().unwrap()), "{listed}");
    }
    assert!(listed.contains("HTTP 503") && listed.contains("2 effect(s)"), "{listed}");

    // Act 2: the ERP is back; replay every dead letter of the connector.
    erp.set_down(false);
    let replayed = sh.ok("dead-letters.md", "dead-letters-replay").await;
    assert_eq!(replayed.matches("queued for delivery").count(), 2, "{replayed}");

    // Assert: each push accepted once, under the key it always had.
    wait_until("both pushes accepted", || async { erp.accepted_per_key().len() == 2 }).await;
    app.drain_outbox().await;
    let accepted = erp.accepted_per_key();
    for e in &dead {
        let key = format!("orderbridge:{}", e["id"].as_str().unwrap());
        assert_eq!(accepted.get(&key), Some(&1), "{key} once: {accepted:?}");
    }
    let verified = sh.ok("dead-letters.md", "dead-letters-verify").await;
    assert_eq!(verified.matches("0 effect(s)").count(), 2, "{verified}");
    let verified = sh.ok("system-down.md", "system-down-verify").await;
    assert!(verified.contains("0 effect(s) waiting for demo-erp."), "{verified}");
    assert!(verified.contains("0 dead letter(s) of demo-erp."), "{verified}");
    app.stop().await;
}

#[tokio::test]
async fn a_refused_push_is_replayed_by_its_id_through_the_api_as_the_runbook_says() {
    // Arrange: the ERP refuses the push for good (400).
    let erp = Receiver::start().await;
    erp.set_refuse(true);
    let app = TestApp::builder().erp(erp.clone()).only_approval().start().await;
    post(&app, &deal("RB-400", 1, "8000.00")).await;
    let dead = wait_dead(&app, 1).await;
    assert_eq!(dead[0]["attempts"], 1, "a 400 is not retried");
    let effect = dead[0]["id"].as_str().unwrap().to_owned();

    // Act: the ERP's data is fixed; replay that one effect.
    erp.set_refuse(false);
    let answer = Shell::of(&app).set("EFFECT_ID", &effect).ok("dead-letters.md", "dead-letters-replay-one").await;
    let answer: Value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert_eq!(answer["replayed"]["id"], effect.as_str(), "{answer}");

    // Assert
    wait_until("the push is accepted", || async { !erp.accepted_per_key().is_empty() }).await;
    app.drain_outbox().await;
    assert_eq!(erp.accepted_per_key().get(&format!("orderbridge:{effect}")), Some(&1));
    assert!(dead_letters(&app).await.is_empty());
    app.stop().await;
}

/// An ERP that takes pushes only with its current bearer token (`401` otherwise) and
/// records the idempotency key of each push it took.
#[derive(Clone, Default)]
struct TokenErp {
    token: Arc<Mutex<String>>,
    accepted: Arc<Mutex<Vec<String>>>,
    refused: Arc<AtomicU32>,
}

async fn token_erp_orders(State(erp): State<TokenErp>, headers: HeaderMap) -> (StatusCode, axum::Json<Value>) {
    let want = format!("Bearer {}", erp.token.lock().unwrap());
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(want.as_str()) {
        erp.refused.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "invalid token"})));
    }
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    erp.accepted.lock().unwrap().push(key);
    (StatusCode::OK, axum::Json(json!({"erp_order": "SO-1"})))
}

impl TokenErp {
    async fn start(token: &str) -> (TokenErp, std::net::SocketAddr) {
        let erp = TokenErp::default();
        *erp.token.lock().unwrap() = token.to_owned();
        let app = axum::Router::new().route("/orders", axum::routing::post(token_erp_orders)).with_state(erp.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (erp, addr)
    }
}

#[tokio::test]
async fn a_rotated_erp_token_is_written_checked_and_each_waiting_push_goes_once() {
    // Arrange: the ERP's owner rotated our token; we still send the old one.
    const ROTATED: &str = "erp-token-rotated-2027-7f3a9c";
    let (erp, addr) = TokenErp::start(ROTATED).await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), addr);
    only_approval(dir.path());
    let app = restart(dir, Receiver::start().await).await;
    post(&app, &deal("RB-AUTH", 1, "8000.00")).await;
    wait_paused(&app, "demo-erp").await;
    let sh = Shell::of(&app).set("CONNECTOR", "demo-erp");

    // Act 1: see the pause and where the secret comes from.
    let inspected = sh.ok("credentials-refused.md", "credentials-inspect").await;
    assert!(inspected.contains(r#""id":"demo-erp""#) && inspected.contains(r#""paused":true"#), "{inspected}");
    assert!(inspected.contains(r#"token = "file:secrets/demo-erp""#), "{inspected}");

    // Act 2: write the new secret where the reference points, check, restart.
    let secret_file = app.dir.path().join("secrets/demo-erp");
    let written = sh
        .clone()
        .set("SECRET_FILE", &secret_file.display().to_string())
        .set("NEW_SECRET", ROTATED)
        .ok("credentials-refused.md", "credentials-write-file")
        .await;
    assert!(written.contains("0 problems"), "{written}");
    assert_eq!(std::fs::read_to_string(&secret_file).unwrap(), ROTATED, "written without a newline");
    let dir = app.stop().await;
    let app = restart(dir, Receiver::start().await).await;

    // Assert: the waiting push goes out once with the new token; no dead letter.
    wait_until("the push is accepted", || async { !erp.accepted.lock().unwrap().is_empty() }).await;
    app.drain_outbox().await;
    let verified =
        Shell::of(&app).set("CONNECTOR", "demo-erp").ok("credentials-refused.md", "credentials-verify").await;
    assert!(verified.contains(r#""paused":false"#), "{verified}");
    assert!(verified.contains("0 effect(s) waiting for demo-erp."), "{verified}");
    let accepted = erp.accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), 1, "pushed once: {accepted:?}");
    assert!(accepted[0].starts_with("orderbridge:ord_"), "{accepted:?}");
    assert_eq!(erp.refused.load(Ordering::SeqCst), 2, "two refusals paused it, none after");
    assert!(dead_letters(&app).await.is_empty(), "refused credentials make no dead letters");
    app.stop().await;
}

#[tokio::test]
async fn a_connector_paused_after_refused_credentials_is_resumed_as_the_runbook_says() {
    // Arrange: the ERP refuses the first two pushes (an account locked, then unlocked).
    let erp = Receiver::start().await;
    erp.unauthorized_next(2);
    let app = TestApp::builder().erp(erp.clone()).only_approval().start().await;
    post(&app, &deal("RB-PAUSE", 1, "8000.00")).await;
    wait_paused(&app, "demo-erp").await;
    let sh = Shell::of(&app).set("CONNECTOR", "demo-erp");
    let inspected = sh.ok("paused-connector.md", "paused-inspect").await;
    assert!(inspected.contains(r#""paused":true"#) && inspected.contains("demo-erp.create_order"), "{inspected}");

    // Act
    let resumed = sh.ok("paused-connector.md", "paused-resume").await;
    assert_eq!(serde_json::from_str::<Value>(&resumed).unwrap(), json!({"connector": "demo-erp", "resumed": true}));

    // Assert
    wait_until("the push is accepted", || async { !erp.accepted_per_key().is_empty() }).await;
    app.drain_outbox().await;
    let accepted = erp.accepted_per_key();
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert!(accepted.values().all(|n| *n == 1), "{accepted:?}");
    let verified = sh.ok("paused-connector.md", "paused-verify").await;
    assert!(verified.contains(r#""paused":false"#), "{verified}");
    assert!(verified.contains("0 effect(s) waiting for demo-erp."), "{verified}");
    app.stop().await;
}

#[tokio::test]
async fn a_stuck_approval_is_found_and_explained_as_the_runbook_says() {
    let app = TestApp::builder().only_approval().start().await;
    let id = post(&app, &deal("RB-STUCK", 1, "1250000.00")).await;
    assert_eq!(app.order(&id).await["state"], "awaiting_approval");
    let found = Shell::of(&app).set("ORDER_ID", &id).ok("stuck-approval.md", "stuck-approval-find").await;
    assert!(found.contains(&id) && found.contains("awaiting_approval"), "{found}");
    assert!(found.contains("line_supervisor"), "explain names the role the level waits for: {found}");
    app.stop().await;
}

#[tokio::test]
async fn a_flagged_order_is_reviewed_and_released_as_the_runbook_says() {
    // Arrange: an order flagged for manual review (KYC not verified).
    let app = TestApp::builder().only_approval().start().await;
    let mut p = deal("RB-REVIEW", 1, "500000.00");
    p["deal"]["customer"]["kyc_verified"] = false.into();
    let id = post(&app, &p).await;
    assert_eq!(app.order(&id).await["state"], "flagged");

    // Act: a risk officer's personal token, as the page says.
    let token = app.person_token("chen.jing");
    let out = Shell::of(&app)
        .set("ORDER_ID", &id)
        .set("TOKEN", &token)
        .ok("stuck-approval.md", "stuck-approval-review")
        .await;

    // Assert: started, then released into the matrix route, by that person.
    let answers: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let states: Vec<&str> = answers.iter().map(|a| a["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["manual_review", "awaiting_approval"], "{out}");
    let order = app.order(&id).await;
    let released = order["events"].as_array().unwrap().iter().find(|e| e["event"]["type"] == "review_released");
    assert_eq!(released.and_then(|e| e["actor"]["id"].as_str()), Some("chen.jing"), "{order}");
    app.stop().await;
}

/// Writes an unreadable order row for `order` into the stopped store of `dir`.
fn damage_order_row(dir: &Path, order: &str) {
    use orderbridge::store::kv::{Batch, tags};
    let options = load_settings(dir).store;
    let engine = orderbridge::store::open_engine(&options).unwrap();
    let id: orderbridge::domain::OrderId = order.parse().unwrap();
    let mut key = vec![tags::ORDERS];
    key.extend_from_slice(id.as_bytes());
    let mut batch = Batch::default();
    batch.put(key, b"\x00\x00\x00\x05{not json".to_vec());
    engine.write(batch).unwrap();
    engine.sync().unwrap();
}

#[tokio::test]
async fn quarantined_orders_are_named_by_the_audit_then_restored_or_discarded_as_the_runbook_says() {
    // Arrange: two orders and a backup taken as restore.md says; then an order the
    // backup lacks; then the rows of the first and of the last damaged in place.
    let app = TestApp::builder().only_approval().start().await;
    let restorable = post(&app, &deal("RB-Q-1", 1, "8000.00")).await;
    let intact = post(&app, &deal("RB-Q-2", 1, "8000.00")).await;
    app.drain_outbox().await;
    let erp = app.erp.clone();
    let dir = app.stop().await;
    let backups = tempfile::tempdir().unwrap();
    let backup = backups.path().join("data-backup");
    Shell::offline(dir.path())
        .set("BACKUP", &backup.display().to_string())
        .ok("restore.md", "restore-take-backup")
        .await;
    let app = restart(dir, erp.clone()).await;
    let newer = post(&app, &deal("RB-Q-3", 1, "8000.00")).await;
    app.drain_outbox().await;
    let dir = app.stop().await;
    damage_order_row(dir.path(), &restorable);
    damage_order_row(dir.path(), &newer);
    let app = restart(dir, erp).await;
    for id in [&restorable, &newer] {
        assert_ne!(app.api(&format!("/orders/{id}")).await.0, 200, "the damaged order cannot be read");
    }
    assert!(app.metrics().await.contains("orderbridge_quarantined_rows 2"));
    let sh = Shell::of(&app)
        .set("BACKUP", &backup.display().to_string())
        .set("PERSON", "li.na")
        .set("REASON", "INC-4711: row damaged on disk");

    // Act 1: the list and the audit name both rows; the audit is not verifiable.
    let listed = sh.run("quarantine.md", "quarantine-list").await;
    assert_eq!(listed.code, Some(1), "audit verify fails while a row is quarantined: {}", listed.stdout);
    for id in [&restorable, &newer] {
        assert!(
            listed.stdout.contains(&format!("audit NOT VERIFIABLE: order {id} is quarantined")),
            "{}",
            listed.stdout
        );
    }
    assert!(
        listed.stdout.contains("2 quarantined row(s)") && !listed.stdout.contains("audit intact"),
        "{}",
        listed.stdout
    );
    let sh1 = sh.clone().set("ORDER_ID", &restorable);
    let from_backup = sh1.ok("quarantine.md", "quarantine-from-backup").await;
    assert!(from_backup.contains(&format!("order     {restorable}")), "{from_backup}");
    assert!(from_backup.contains("state     approved") && from_backup.contains("RB-Q-1"), "{from_backup}");

    // Act 2: the first is put back from the backup; the newer one is not in it, so
    // the restore refuses and it is discarded.
    let restored = sh1.ok("quarantine.md", "quarantine-restore").await;
    assert!(restored.contains(&format!("order {restorable} restored by li.na")), "{restored}");
    let sh3 = sh.clone().set("ORDER_ID", &newer);
    let refused = sh3.run("quarantine.md", "quarantine-restore").await;
    assert_eq!(refused.code, Some(1), "{}", refused.stdout);
    assert!(refused.stderr.contains("the backup does not hold this order"), "{}", refused.stderr);
    let discarded = sh3.ok("quarantine.md", "quarantine-discard").await;
    assert!(discarded.contains(&format!("order {newer} discarded by li.na")), "{discarded}");

    // Assert: nothing unresolved, the audit passes and names the discarded order.
    let verified = sh.ok("quarantine.md", "quarantine-verify").await;
    assert!(verified.contains("0 quarantined row(s) (2 resolved, kept for the record)"), "{verified}");
    assert!(verified.contains("audit intact: 2 orders"), "{verified}");
    assert!(verified.contains(&format!("note: order {newer} was discarded by li.na")), "{verified}");
    assert!(verified.contains(r#"{"status":"ready"}"#), "{verified}");
    assert!(app.metrics().await.contains("orderbridge_quarantined_rows 0"));
    assert_eq!(app.order(&restorable).await["state"], "approved", "the restored order reads again");
    assert_eq!(app.order(&intact).await["state"], "approved");
    post(&app, &deal("RB-Q-4", 1, "8000.00")).await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"orderbridge_orders{state="approved"} 3"#),
        "the discarded order is not counted: {metrics}"
    );
    assert!(backup.exists(), "the backup itself is left as it was");
    app.stop().await;
}

/// Two orders delivered, accepted and invoiced; their ids and invoice numbers.
async fn two_invoiced(app: &TestApp) -> Vec<(String, String)> {
    let mut invoiced = Vec::new();
    for ext in ["RB-CASH-1", "RB-CASH-2"] {
        let id = post(app, &deal(ext, 1, "8000.00")).await;
        crate::cash::deliver(app, &id).await;
        app.api_post_json_as("sun.li", &format!("/orders/{id}/acceptance"), &json!({"decision": "accept"})).await;
        wait_until("invoiced", || async { app.order(&id).await["state"] == "invoiced" }).await;
        let number = app.order(&id).await["fulfilment"]["invoice"]["number"].as_str().unwrap().to_owned();
        invoiced.push((id, number));
    }
    invoiced
}

#[tokio::test]
async fn an_unmatched_payment_is_assigned_by_hand_as_the_runbook_says() {
    // Arrange: a payment quoting an invoice number nobody issued waits for an operator.
    let app = TestApp::builder().erp(Receiver::start().await).start().await;
    let invoiced = two_invoiced(&app).await;
    let pay = json!({"payment_id": "RB-PAY-1", "amount": {"amount": "8000.00", "currency": "CNY"},
        "invoice_number": "INV-TYPO", "reference": "张伟 货款"});
    let (s, b) = app.api_post_json("/payments", &pay).await;
    assert_eq!((s, b["matched"].as_bool()), (202, Some(false)), "{b}");
    let sh = Shell::of(&app);
    let listed = sh.ok("unmatched-payments.md", "unmatched-list").await;
    assert!(listed.contains("RB-PAY-1") && listed.contains("INV-TYPO"), "{listed}");
    assert!(listed.contains(&invoiced[0].0) && listed.contains("2 order(s)"), "{listed}");

    // Act: credit operations (he.jun) assign it to the order it pays.
    let assigned = sh
        .clone()
        .set("TOKEN", &app.person_token("he.jun"))
        .set("SOURCE", "api")
        .set("PAYMENT_ID", "RB-PAY-1")
        .set("ORDER_ID", &invoiced[0].0)
        .ok("unmatched-payments.md", "unmatched-assign")
        .await;
    let assigned: Value = serde_json::from_str(&assigned).unwrap_or_else(|e| panic!("{e}: {assigned}"));
    assert_eq!(assigned["matched"], true, "{assigned}");

    // Assert: the queue is empty, the order moved on, the assignment is he.jun's.
    let verified = sh.ok("unmatched-payments.md", "unmatched-verify").await;
    assert!(verified.contains(r#"{"payments":[]}"#), "{verified}");
    assert!(verified.contains("orderbridge_unmatched_payments 0"), "{verified}");
    let order = app.order(&invoiced[0].0).await;
    assert_ne!(order["state"], "invoiced", "{order}");
    let by =
        order["events"].as_array().unwrap().iter().rev().find_map(|e| e["actor"]["id"].as_str().map(str::to_owned));
    assert!(order["events"].to_string().contains("he.jun"), "the trail names who assigned it: {by:?}");
    assert_eq!(app.order(&invoiced[1].0).await["state"], "invoiced", "the other order is untouched");
    app.stop().await;
}

#[tokio::test]
async fn a_reconciliation_mismatch_is_explained_and_its_exception_resolved_as_the_runbook_says() {
    // Arrange: the finance system voided an invoice; reconciliation opens an exception.
    let erp = Receiver::start().await;
    let app = TestApp::builder().erp(erp.clone()).start().await;
    let invoiced = two_invoiced(&app).await;
    let (id, number) = invoiced[1].clone();
    erp.set_invoice_status(&number, "voided");
    let (s, r) = app.api_post("/reconcile").await;
    assert_eq!((s, r["mismatches"].as_array().map(Vec::len)), (200, Some(1)), "{r}");
    assert!(app.metrics().await.contains(r#"orderbridge_reconcile_mismatches_total{check="FINANCE-INVOICE"} 1"#));
    let sh = Shell::of(&app).set("ORDER_ID", &id);

    // Act 1: the page finds the order and shows why.
    let found = sh.ok("exceptions.md", "exception-find").await;
    assert!(found.contains(&id) && found.contains("1 order(s)"), "{found}");
    assert!(found.contains("reconciliation FINANCE-INVOICE: demo-finance reports `voided`"), "{found}");

    // Act 2: finance reinstates the invoice; operations (sun.li) resolve the exception.
    erp.set_invoice_status(&number, "open");
    let resolved = sh
        .clone()
        .set("TOKEN", &app.person_token("sun.li"))
        .set("NOTE", "INC-12: invoice reinstated in the finance system")
        .ok("exceptions.md", "exception-resolve")
        .await;
    let resolved: Value = serde_json::from_str(&resolved).unwrap_or_else(|e| panic!("{e}: {resolved}"));
    assert_eq!(resolved["state"], "invoiced", "{resolved}");

    // Assert: nothing in exception, and reconciliation agrees now.
    let verified = sh.ok("exceptions.md", "exception-verify").await;
    assert!(verified.contains("0 order(s)"), "{verified}");
    assert!(verified.contains(r#""mismatches":[]"#) && verified.contains(r#""checked":2"#), "{verified}");
    let order = app.order(&id).await;
    assert!(order["events"].to_string().contains("INC-12"), "the resolution is in the trail: {order}");
    app.stop().await;
}

#[tokio::test]
async fn a_store_restored_from_a_backup_as_written_verifies_and_holds_what_the_backup_held() {
    // Arrange: an order, a backup (daemon stopped), then an order the backup lacks.
    let app = TestApp::builder().only_approval().start().await;
    let kept = post(&app, &deal("RB-R-1", 1, "8000.00")).await;
    app.drain_outbox().await;
    let erp = app.erp.clone();
    let dir = app.stop().await;
    let backups = tempfile::tempdir().unwrap();
    let backup = backups.path().join("data-backup");
    let offline = Shell::offline(dir.path()).set("BACKUP", &backup.display().to_string());
    offline.ok("restore.md", "restore-take-backup").await;
    let app = restart(dir, erp.clone()).await;
    let lost = post(&app, &deal("RB-R-2", 1, "8000.00")).await;
    app.drain_outbox().await;
    let dir = app.stop().await;

    // Act: put the backup back (daemon stopped), then start it and check.
    let restored = offline.ok("restore.md", "restore-put-back").await;
    assert!(restored.contains("audit intact: 1 orders"), "{restored}");
    let aside: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("data.before-restore-"))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged directory is kept aside: {aside:?}");
    let app = restart(dir, erp).await;
    let sh = Shell::of(&app).set("BACKUP", &backup.display().to_string());
    let verified = sh.ok("restore.md", "restore-verify").await;
    let ready = sh.ok("disk-full.md", "disk-full-verify").await;

    // Assert
    for out in [&verified, &ready] {
        assert!(out.contains(r#"{"status":"ready"}"#) && out.contains("audit intact: 1 orders"), "{out}");
    }
    assert!(verified.contains("RB-R-1") && !verified.contains("RB-R-2"), "{verified}");
    assert!(ready.contains("0 effect(s)"), "{ready}");
    assert_eq!(app.order(&kept).await["state"], "approved");
    assert_eq!(app.api(&format!("/orders/{lost}")).await.0, 404, "acknowledged after the backup: gone");
    app.stop().await;
}

#[tokio::test]
async fn an_api_token_rotated_as_written_works_and_the_old_one_stops() {
    // Arrange: a client's token that may read the dead letters.
    let app = spawn_app().await;
    let now = app.state.clock.now();
    let (id, old) =
        orderbridge::auth::issue(app.state.store_path(), "client:reporting", &["replay_dead_letters"], None, now)
            .unwrap();
    let get = |token: String| {
        let (client, url) = (app.client.clone(), app.admin_url("/api/outbox/dead"));
        async move { client.get(url).bearer_auth(token).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get(old.clone()).await, 200);

    // Act
    let out = Shell::of(&app).set("TOKEN_ID", &id).ok("rotate-secrets.md", "rotate-api-token").await;

    // Assert: the new token is printed once, on the line after the token's details.
    let lines: Vec<&str> = out.lines().collect();
    let at = lines.iter().rposition(|l| l.starts_with(&id)).unwrap_or_else(|| panic!("{out}"));
    let new = lines.get(at + 1).unwrap_or_else(|| panic!("{out}")).trim().to_owned();
    assert!(new.starts_with("obt_") && new != old, "{out}");
    assert_eq!(out.matches(&new).count(), 1, "shown once: {out}");
    assert_eq!(get(old).await, 401, "the old token stops at once");
    assert_eq!(get(new).await, 200, "the new one works");
    app.stop().await;
}

#[test]
fn every_runbook_an_alert_names_is_a_page_of_the_book() {
    let rules =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus-rules.yml")).unwrap();
    let pages: Vec<&str> =
        rules.lines().filter_map(|l| l.trim().strip_prefix("runbook_url: docs/src/runbooks/")).collect();
    assert!(pages.len() >= 10, "the alerts name their runbooks: {pages:?}");
    let summary = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/src/SUMMARY.md")).unwrap();
    for page in pages {
        assert!(runbooks_dir().join(page).exists(), "{page} does not exist");
        assert!(summary.contains(&format!("(runbooks/{page})")), "{page} is not in docs/src/SUMMARY.md");
    }
}

/// Adds the privacy key `id` (a file of its own) to `config/orderbridge.toml` and makes
/// it the active one, as rotate-secrets.md says.
fn add_active_privacy_key(dir: &Path, id: &str, key: &str) {
    std::fs::write(dir.join(format!("config/privacy-{id}.key")), key).unwrap();
    set_in_file(
        dir,
        &[
            ("privacy.active_key", id.into()),
            (&format!("privacy.keys.{id}"), format!("file:config/privacy-{id}.key").into()),
        ],
    );
}

#[tokio::test]
async fn a_privacy_key_rotated_as_written_rewraps_every_order_and_the_old_key_can_go() {
    // Arrange: two orders under p2026.
    let app = TestApp::builder()
        .only_approval()
        .files(|d| {
            add_active_privacy_key(d, "p2026", "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0")
        })
        .start()
        .await;
    let ids = [post(&app, &deal("RB-KEY-1", 1, "8000.00")).await, post(&app, &deal("RB-KEY-2", 1, "8000.00")).await];
    let erp = app.erp.clone();
    let dir = app.stop().await;

    // Act 1: p2027 becomes the active key; the daemon rewraps at start.
    add_active_privacy_key(dir.path(), "p2027", "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9");
    let app = restart(dir, erp.clone()).await;
    wait_until("every data key is under p2027", || async { app.api("/keys").await.1["by_key"] == json!({"p2027": 2}) })
        .await;
    let status = Shell::of(&app).ok("rotate-secrets.md", "rotate-privacy-status").await;
    assert!(status.contains("active key: p2027") && status.contains("p2027: 2 data keys"), "{status}");
    assert!(!status.contains("p2026:"), "{status}");
    assert!(status.contains("audit intact: 2 orders"), "{status}");
    let dir = app.stop().await;

    // Act 2: the old key leaves the configuration.
    let path = dir.path().join("config/orderbridge.toml");
    let mut doc: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    doc["privacy"]["keys"].as_table_mut().unwrap().remove("p2026").expect("p2026 was configured");
    std::fs::write(&path, toml::to_string(&doc).unwrap()).unwrap();
    let app = restart(dir, erp).await;

    // Assert: the commands still pass, and every order opens without the old key.
    let status = Shell::of(&app).ok("rotate-secrets.md", "rotate-privacy-status").await;
    assert!(status.contains("p2027: 2 data keys") && status.contains("audit intact: 2 orders"), "{status}");
    for id in &ids {
        assert_eq!(app.order(id).await["order"]["customer"]["email"], "zhang.wei@example.com");
    }
    app.stop().await;
}
