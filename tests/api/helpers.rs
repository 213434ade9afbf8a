//! `TestApp`: a daemon on an OS-picked port with its own config copy and data dir,
//! plus a test receiver that plays the ERP. No wall-clock sleeps: waits are bounded
//! polls that fail with a message.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use orderbridge::clock::Clock;
use orderbridge::connectors::signature::StandardWebhooks;
use orderbridge::startup::Application;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub const CRM_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const ERP_TOKEN: &str = "test-erp-token";
pub const SAMPLE: &str = include_str!("../fixtures/demo-crm-deal.json");

pub fn client() -> reqwest::Client {
    orderbridge::connectors::install_crypto_provider();
    reqwest::Client::new()
}

pub fn sample() -> Value {
    serde_json::from_str(SAMPLE).unwrap()
}

/// A deal like the INTERFACE sample, with its own id, version and amount, for a
/// customer of its own (so the velocity and duplicate rules see no history).
pub fn deal(id: &str, version: u64, amount: &str) -> Value {
    let mut v = sample();
    v["deal"]["id"] = id.into();
    v["deal"]["customer"]["id"] = format!("C-{id}").into();
    v["deal"]["version"] = version.into();
    v["deal"]["amount"] = amount.into();
    v
}

pub const LINK_SECRET: &str = "test-link-key-0123456789abcdef0123456789";
pub const DESK_TOKEN: &str = "test-desk-token";
pub const FINANCE_TOKEN: &str = "test-finance-token";

/// Copies the repository's example configuration into `dir`, with secrets moved to
/// files (so tests need no process-wide environment) and the ERP (and service desk)
/// at `erp`. Notifications are off: only mail tests (`write_mail_config`) send mail.
pub fn write_config(dir: &Path, erp: SocketAddr, replace: &[(&str, &str)]) {
    write_config_inner(dir, erp, replace, None);
}

/// The example configuration with notifications on and SMTP at `smtp_port`.
pub fn write_mail_config(dir: &Path, erp: SocketAddr, smtp_port: u16, replace: &[(&str, &str)]) {
    write_config_inner(dir, erp, replace, Some(smtp_port));
}

pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            copy_tree(&p, &to.join(p.file_name().unwrap()));
        } else {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

fn write_config_inner(dir: &Path, erp: SocketAddr, replace: &[(&str, &str)], smtp_port: Option<u16>) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for sub in ["config", "connectors", "mappings", "secrets"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for sub in ["config", "connectors", "mappings"] {
        for e in std::fs::read_dir(repo.join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                let text = std::fs::read_to_string(&p)
                    .unwrap()
                    .replace("${DEMO_CRM_SECRET}", "file:secrets/demo-crm")
                    .replace("${DEMO_ERP_TOKEN}", "file:secrets/demo-erp")
                    .replace("${SERVICE_DESK_TOKEN}", "file:secrets/desk")
                    .replace("${DEMO_FINANCE_TOKEN}", "file:secrets/finance")
                    .replace("${DEMO_ERP_SECRET}", "file:secrets/demo-crm")
                    .replace("${DEMO_FINANCE_SECRET}", "file:secrets/demo-crm")
                    .replace("${ORDERBRIDGE_ADMIN_TOKEN}", "file:secrets/admin")
                    .replace("${ORDERBRIDGE_LINK_SECRET}", "file:secrets/links")
                    .replace("http://127.0.0.1:9090", &format!("http://{erp}"))
                    .replace("http://127.0.0.1:9091", &format!("http://{erp}"))
                    .replace("http://127.0.0.1:9092", &format!("http://{erp}"));
                std::fs::write(dir.join(sub).join(p.file_name().unwrap()), text).unwrap();
            }
        }
    }
    copy_tree(&repo.join("config/templates"), &dir.join("config/templates"));
    std::fs::copy(repo.join("config/watchlist.csv"), dir.join("config/watchlist.csv")).unwrap();
    if smtp_port.is_none() {
        std::fs::write(dir.join("config/notifications.toml"), "# no notifications in this test\n").unwrap();
    }
    std::fs::write(dir.join("secrets/demo-crm"), CRM_SECRET).unwrap();
    std::fs::write(dir.join("secrets/demo-erp"), ERP_TOKEN).unwrap();
    std::fs::write(dir.join("secrets/desk"), DESK_TOKEN).unwrap();
    std::fs::write(dir.join("secrets/finance"), FINANCE_TOKEN).unwrap();
    std::fs::write(dir.join("secrets/links"), LINK_SECRET).unwrap();
    std::fs::write(dir.join("secrets/admin"), format!("{ADMIN_TOKEN}\n")).unwrap();
    let settings = dir.join("config/orderbridge.toml");
    let text = std::fs::read_to_string(&settings).unwrap();
    let text = text
        .replace("port = 8080", "port = 0")
        .replace("port = 8081", "port = 0")
        .replace("backoff_initial_ms = 1000", "backoff_initial_ms = 20")
        .replace("backoff_max_ms = 600000", "backoff_max_ms = 200")
        .replace("sweep_interval_ms = 1000", "sweep_interval_ms = 50")
        .replace("sweep_interval_ms = 10000", "sweep_interval_ms = 50")
        .replace("port = 2525", &format!("port = {}", smtp_port.unwrap_or(2525)));
    let text = replace.iter().fold(text, |t, (from, to)| {
        assert!(t.contains(from), "config has no `{from}` to replace");
        t.replace(from, to)
    });
    std::fs::write(&settings, text).unwrap();
}

pub struct TestApp {
    /// The public listener: webhooks, pages, health.
    pub addr: SocketAddr,
    /// The admin listener: `/api/*` and `/metrics`.
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    pub erp: Receiver,
    signer: StandardWebhooks,
    stop: CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub state: orderbridge::http::AppState,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Receiver::start().await, &[]).await
}

/// `replace` edits `config/orderbridge.toml` (text replacements) before start.
/// Leaves out execution, settlement and dunning (rules.toml from `# --- Execution`
/// on): approved orders stay `approved` and push one effect, for tests about the
/// outbox itself.
pub fn only_approval(dir: &Path) {
    let p = dir.join("config/rules.toml");
    let text = std::fs::read_to_string(&p).unwrap();
    let cut = text.find("# --- Execution").expect("rules.toml has an execution section");
    std::fs::write(&p, &text[..cut]).unwrap();
}

/// The example configuration without execution (see `only_approval`).
pub async fn spawn_outbox_app(erp: Receiver, replace: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), erp.addr, replace);
    only_approval(dir.path());
    start_in(dir, erp).await
}

pub async fn spawn_app_with(erp: Receiver, replace: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), erp.addr, replace);
    start_in(dir, erp).await
}

/// The example configuration with mail on, a test SMTP server, and `clock`.
pub async fn spawn_mail_app(clock: Clock, replace: &[(&str, &str)]) -> (TestApp, SmtpServer) {
    let smtp = SmtpServer::start(&[]);
    let erp = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_mail_config(dir.path(), erp.addr, smtp.port, replace);
    (start_in_with(dir, erp, clock).await, smtp)
}

async fn start_in(dir: tempfile::TempDir, erp: Receiver) -> TestApp {
    start_in_with(dir, erp, Clock::system()).await
}

/// Starts a daemon again on a stopped app's directory, with `clock`.
pub async fn restart_with(dir: tempfile::TempDir, erp: Receiver, clock: Clock) -> TestApp {
    start_in_with(dir, erp, clock).await
}

pub async fn start_in_with(dir: tempfile::TempDir, erp: Receiver, clock: Clock) -> TestApp {
    let loaded = orderbridge::check::load_all(dir.path()).unwrap_or_else(|ds| {
        panic!("example config must load: {}", ds.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))
    });
    // A stopped in-process daemon releases the store when its last task ends, which
    // can be a moment after `stop` returns: retry while the store is still locked.
    let mut loaded = Some(loaded);
    let mut tries = 0;
    let app = loop {
        let l = loaded.take().unwrap_or_else(|| orderbridge::check::load_all(dir.path()).ok().unwrap());
        match Application::build_with_clock(l, clock.clone()).await {
            Ok(app) => break app,
            Err(e) if tries < 250 && format!("{e:#}").contains("in use by another process") => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("app builds: {e:#}"),
        }
    };
    let addr = app.address();
    let admin = app.admin_address();
    let state = app.state().clone();
    let stop = CancellationToken::new();
    let s = stop.clone();
    let handle = tokio::spawn(app.run_until_stopped(async move { s.cancelled().await }));
    if std::env::var_os("TEST_LOG").is_some() {
        orderbridge::telemetry::init(orderbridge::settings::LogFormat::Text, "info");
    }
    TestApp {
        addr,
        admin,
        dir,
        client: client(),
        erp,
        signer: StandardWebhooks::new(&SecretString::from(CRM_SECRET), 300).unwrap(),
        stop,
        handle: Some(handle),
        state,
    }
}

impl TestApp {
    /// `path` on the public listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `path` on the admin listener (`/api/…`, `/metrics`).
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn signed_headers(&self, id: &str, ts: i64, body: &[u8]) -> Vec<(&'static str, String)> {
        vec![
            ("content-type", "application/json".into()),
            ("webhook-id", id.into()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", self.signer.sign(id, ts, body)),
        ]
    }

    pub async fn post_raw(&self, connector: &str, body: Vec<u8>, headers: Vec<(&'static str, String)>) -> (u16, Value) {
        let mut req = self.client.post(self.url(&format!("/webhooks/{connector}"))).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.expect("daemon answers");
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Posts a correctly signed delivery of `payload` to demo-crm.
    pub async fn post_webhook(&self, payload: &Value) -> (u16, Value) {
        let body = serde_json::to_vec(payload).unwrap();
        let id = format!("msg_{}", uuid::Uuid::now_v7().simple());
        // Signed "now" as the daemon sees it (tests may run it on a manual clock).
        let headers = self.signed_headers(&id, self.state.clock.now().timestamp(), &body);
        self.post_raw("demo-crm", body, headers).await
    }

    pub async fn api(&self, path: &str) -> (u16, Value) {
        let resp =
            self.client.get(self.admin_url(&format!("/api{path}"))).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn api_post(&self, path: &str) -> (u16, Value) {
        let resp =
            self.client.post(self.admin_url(&format!("/api{path}"))).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn api_post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .client
            .post(self.admin_url(&format!("/api{path}")))
            .bearer_auth(ADMIN_TOKEN)
            .json(body)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn order(&self, id: &str) -> Value {
        let (status, body) = self.api(&format!("/orders/{id}")).await;
        assert_eq!(status, 200, "GET order {id}: {body}");
        body
    }

    pub async fn metrics(&self) -> String {
        self.client.get(self.admin_url("/metrics")).send().await.unwrap().text().await.unwrap()
    }

    /// Waits until the outbox is empty (everything delivered or dead-lettered).
    pub async fn drain_outbox(&self) {
        wait_until("the outbox drains", || async {
            let (_, v) = self.api("/outbox").await;
            v["effects"].as_array().is_some_and(|a| a.is_empty())
        })
        .await;
    }

    pub async fn stop(mut self) -> tempfile::TempDir {
        self.stop.cancel();
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
        self.dir
    }

    /// Stops and waits until the store is free for another process (offline CLI).
    pub async fn stop_and_release(self) -> tempfile::TempDir {
        let state = self.state.clone();
        let dir = self.stop().await;
        drop(state);
        // fjall and sled hold an exclusive flock while open (fjall on `lock`, sled on
        // `db`); probe it the same way (opening the engine itself would hold it again
        // for a moment after closing). redb takes byte-range locks instead, which only
        // redb's own open sees: a read-only open fails while a writer holds the file.
        let data = dir.path().join("data");
        wait_until("the store is released", || {
            let data = data.clone();
            async move {
                let flocks_free = ["lock", "db"]
                    .iter()
                    .map(|f| data.join(f))
                    .filter(|p| p.exists())
                    .all(|p| std::fs::File::open(&p).is_ok_and(|f| f.try_lock().is_ok()));
                let redb = orderbridge::store::redb_engine::RedbEngine::file(&data);
                let redb_free = !redb.exists()
                    || !matches!(
                        redb::Builder::new().open_read_only(&redb),
                        Err(redb::DatabaseError::DatabaseAlreadyOpen)
                    );
                flocks_free && redb_free
            }
        })
        .await;
        dir
    }
}

/// Polls `cond` until true; panics naming `what` after a generous bound.
pub async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..3000 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

/// One delivery the receiver saw.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `/orders` (the ERP) or `/tickets` (the service desk).
    pub path: String,
    pub key: String,
    pub status: u16,
    pub epoch: u32,
    pub body: Value,
    pub authorization: Option<String>,
}

#[derive(Default)]
struct ReceiverState {
    deliveries: Mutex<Vec<Delivery>>,
    tasks: Mutex<Vec<(String, Value)>>,
    invoices: Mutex<Vec<(String, String, Value)>>,
    lose_invoice_answers: AtomicU32,
    invoice_status: Mutex<HashMap<String, String>>,
    vouchers: Mutex<Vec<(String, Value)>>,
    documents: Mutex<Vec<(String, Value)>>,
    /// Answer 503 to this many requests first.
    fail_next: AtomicU32,
    /// Answer 503 to everything while set.
    down: AtomicBool,
    /// Answer 400 to everything while set.
    refuse: AtomicBool,
    /// Answer this many requests only after 2 s (slower than a 1 s client timeout).
    slow_next: AtomicU32,
    /// Answer this many requests with 429 and `Retry-After: 2`.
    throttle_next: AtomicU32,
    /// Answer this many requests with 401.
    unauthorized_next: AtomicU32,
    epoch: AtomicU32,
}

/// A small ERP stand-in over TCP that records idempotency keys.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = Arc::new(ReceiverState::default());
        let app = axum::Router::new()
            .route("/orders", post(receive))
            .route("/tickets", post(receive))
            // The ERP's tasks and the finance system's invoices: always answered,
            // kept apart from the order pushes the fault switches act on.
            .route("/tasks", post(receive_task))
            .route("/invoices", post(create_invoice).get(find_invoice))
            .route("/vouchers", post(create_voucher))
            .route("/documents", post(store_document))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, state }
    }

    pub fn fail_next(&self, n: u32) {
        self.state.fail_next.store(n, Ordering::SeqCst);
    }
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }
    pub fn slow_next(&self, n: u32) {
        self.state.slow_next.store(n, Ordering::SeqCst);
    }
    pub fn unauthorized_next(&self, n: u32) {
        self.state.unauthorized_next.store(n, Ordering::SeqCst);
    }
    pub fn throttle_next(&self, n: u32) {
        self.state.throttle_next.store(n, Ordering::SeqCst);
    }
    pub fn set_refuse(&self, refuse: bool) {
        self.state.refuse.store(refuse, Ordering::SeqCst);
    }
    pub fn next_epoch(&self) {
        self.state.epoch.fetch_add(1, Ordering::SeqCst);
    }
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state.deliveries.lock().unwrap().clone()
    }
    /// Tasks pushed to `/tasks`: (idempotency key, body).
    pub fn tasks(&self) -> Vec<(String, Value)> {
        self.state.tasks.lock().unwrap().clone()
    }
    /// Invoices created at `/invoices`: (number, idempotency key, body).
    pub fn invoices(&self) -> Vec<(String, String, Value)> {
        self.state.invoices.lock().unwrap().clone()
    }
    /// Accounts-receivable vouchers pushed to `/vouchers`: (idempotency key, body).
    pub fn vouchers(&self) -> Vec<(String, Value)> {
        self.state.vouchers.lock().unwrap().clone()
    }
    /// Documents delivered to `/documents`: (idempotency key, body).
    pub fn documents(&self) -> Vec<(String, Value)> {
        self.state.documents.lock().unwrap().clone()
    }
    /// What the finance system says of an invoice (default `open`).
    pub fn set_invoice_status(&self, number: &str, status: &str) {
        self.state.invoice_status.lock().unwrap().insert(number.to_owned(), status.to_owned());
    }
    /// The next `n` invoices are created but answered only after the caller timed out.
    pub fn lose_invoice_answers(&self, n: u32) {
        self.state.lose_invoice_answers.store(n, Ordering::SeqCst);
    }
    /// Successful (200) deliveries per idempotency key.
    pub fn accepted_per_key(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for d in self.deliveries().into_iter().filter(|d| d.status == 200) {
            *m.entry(d.key).or_default() += 1;
        }
        m
    }
}

async fn receive_task(State(s): State<Arc<ReceiverState>>, headers: HeaderMap, Json(body): Json<Value>) -> Json<Value> {
    let mut tasks = s.tasks.lock().unwrap();
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let id = format!("T-{}", 100 + tasks.len());
    tasks.push((key, body));
    Json(serde_json::json!({"id": id}))
}

#[derive(serde::Deserialize)]
struct InvoiceQuery {
    order_id: Option<String>,
}

/// The finance system: one invoice per order id; `lose_invoice_answers` drops the
/// answer after creating (a timeout seen by the caller).
async fn create_invoice(
    State(s): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let number = {
        let mut invoices = s.invoices.lock().unwrap();
        let number = format!("INV-{}", 2026_0001 + invoices.len());
        invoices.push((number.clone(), key, body));
        number
    };
    let take = |n: &AtomicU32| n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    if take(&s.lose_invoice_answers) {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    (StatusCode::CREATED, Json(serde_json::json!({"invoice_number": number, "status": "open"})))
}

async fn create_voucher(
    State(s): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let mut v = s.vouchers.lock().unwrap();
    let id = format!("AR-{}", 500 + v.len());
    v.push((key, body));
    Json(serde_json::json!({"voucher_id": id}))
}

async fn store_document(
    State(s): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    s.documents.lock().unwrap().push((key, body));
    Json(serde_json::json!({"stored": true}))
}

async fn find_invoice(State(s): State<Arc<ReceiverState>>, Query(q): Query<InvoiceQuery>) -> Json<Value> {
    let invoices = s.invoices.lock().unwrap();
    let found: Vec<Value> = invoices
        .iter()
        .filter(|(_, _, b)| b["order_id"].as_str().is_some() && b["order_id"].as_str() == q.order_id.as_deref())
        .map(|(n, _, _)| {
            let status = s.invoice_status.lock().unwrap().get(n).cloned().unwrap_or_else(|| "open".into());
            serde_json::json!({"invoice_number": n, "status": status})
        })
        .collect();
    Json(serde_json::json!({"invoices": found}))
}

async fn receive(
    State(s): State<Arc<ReceiverState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, HeaderMap, Json<Value>) {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let take = |n: &AtomicU32| n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    let slow = take(&s.slow_next);
    let status = if take(&s.unauthorized_next) {
        StatusCode::UNAUTHORIZED
    } else if take(&s.throttle_next) {
        StatusCode::TOO_MANY_REQUESTS
    } else if s.down.load(Ordering::SeqCst) {
        StatusCode::SERVICE_UNAVAILABLE
    } else if s.refuse.load(Ordering::SeqCst) {
        StatusCode::BAD_REQUEST
    } else if take(&s.fail_next) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let ticket = format!("SD-{}", 1000 + s.deliveries.lock().unwrap().iter().filter(|d| d.path == "/tickets").count());
    s.deliveries.lock().unwrap().push(Delivery {
        path: uri.path().to_owned(),
        key,
        status: status.as_u16(),
        epoch: s.epoch.load(Ordering::SeqCst),
        body,
        authorization: headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned),
    });
    if slow {
        // The work is done (recorded above) but the answer comes after the caller gave up.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let answer = match status {
        StatusCode::OK if uri.path() == "/tickets" => serde_json::json!({"id": ticket, "status": "open"}),
        StatusCode::OK => serde_json::json!({"erp_order": "SO-1"}),
        StatusCode::BAD_REQUEST => serde_json::json!({"error": "product code unknown to ERP"}),
        StatusCode::TOO_MANY_REQUESTS => serde_json::json!({"error": "slow down"}),
        _ => serde_json::json!({"error": "maintenance"}),
    };
    // Only the rate limit says when to come back (a Retry-After pauses the connector).
    let mut reply = HeaderMap::new();
    if status == StatusCode::TOO_MANY_REQUESTS {
        reply.insert("retry-after", axum::http::HeaderValue::from_static("2"));
    }
    (status, reply, Json(answer))
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_orderbridge"))
}

/// Starts a daemon again on a stopped app's directory.
pub async fn restart(dir: tempfile::TempDir, erp: Receiver) -> TestApp {
    start_in(dir, erp).await
}

/// The built binary running as a child process.
pub struct Daemon {
    pub child: std::process::Child,
    /// The public listener.
    pub addr: SocketAddr,
    /// The admin listener (`/api/*`, `/metrics`).
    pub admin: SocketAddr,
    /// Every line it wrote to stderr so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

/// A failing test must not leave a daemon behind.
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `orderbridge run` on `dir` and waits until it reports its address.
pub fn start_daemon(dir: &Path, args: &[&str]) -> Daemon {
    use std::io::BufRead;
    let mut child = std::process::Command::new(bin())
        .arg("run")
        .args(args)
        .arg("--config-dir")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().unwrap();
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    // Keep draining stderr so the daemon never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            // "orderbridge listening on http://A (admin API and metrics on http://B)"
            if let Some(rest) = line.split("listening on http://").nth(1)
                && let Some(admin) = line.split("admin API and metrics on http://").nth(1)
                && let Some(t) = tx.take()
            {
                let addr = |s: &str| -> String {
                    s.chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect()
                };
                let _ = t.send((addr(rest), addr(admin)));
            }
            if std::env::var_os("TEST_LOG").is_some() {
                eprintln!("daemon: {line}");
            }
            sink.lock().unwrap().push(line);
        }
    });
    let (addr, admin) = rx.recv_timeout(Duration::from_secs(60)).expect("daemon reports its addresses");
    Daemon { child, addr: addr.parse().unwrap(), admin: admin.parse().unwrap(), log }
}

/// A settable clock for tests (no wall-clock sleeps to make time pass).
#[derive(Clone)]
pub struct ManualClock(Arc<Mutex<chrono::DateTime<chrono::Utc>>>);

impl ManualClock {
    pub fn new(start: chrono::DateTime<chrono::Utc>) -> Self {
        ManualClock(Arc::new(Mutex::new(start)))
    }
    pub fn clock(&self) -> Clock {
        let at = self.0.clone();
        Clock::from_fn(move || *at.lock().unwrap())
    }
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        *self.0.lock().unwrap()
    }
    pub fn advance(&self, by: chrono::Duration) {
        *self.0.lock().unwrap() += by;
    }
}

/// One message the test SMTP server accepted: envelope, raw bytes, and the decoded
/// view (`parsed`: subject, headers, parts) from Python's `email` package.
#[derive(Debug, Clone)]
pub struct Mail {
    pub raw: String,
    pub meta: Value,
}

impl Mail {
    pub fn subject(&self) -> &str {
        self.meta["parsed"]["subject"].as_str().unwrap_or_default()
    }
    pub fn header(&self, name: &str) -> &str {
        self.meta["parsed"]["headers"][name].as_str().unwrap_or_default()
    }
    pub fn rcpt(&self) -> Vec<String> {
        self.meta["rcpt_tos"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
    }
    /// The decoded content of the part with this content type.
    pub fn part(&self, content_type: &str) -> &str {
        self.meta["parsed"]["parts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["content_type"] == content_type)
            .and_then(|p| p["content"].as_str())
            .unwrap_or_else(|| panic!("no {content_type} part in {}", self.meta))
    }
    /// The first link to one of the daemon's pages in the text part.
    pub fn page_link(&self) -> String {
        let text = self.part("text/plain");
        let start = text.find("http://").unwrap_or_else(|| panic!("no link in: {text}"));
        text[start..].split_whitespace().next().unwrap().to_owned()
    }
}

/// `tests/support/smtp_server.py` (aiosmtpd, installed by scripts/test.sh) as a child
/// process on its own maildir. Killed on drop.
pub struct SmtpServer {
    child: std::process::Child,
    pub port: u16,
    pub maildir: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SmtpServer {
    pub fn start(args: &[&str]) -> SmtpServer {
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("mail");
        let mut s = SmtpServer::start_on(0, &maildir, args);
        s._dir = Some(dir);
        s
    }

    /// Starts on `port` (0: any) with `maildir`, e.g. again after `stop`.
    pub fn start_on(port: u16, maildir: &Path, args: &[&str]) -> SmtpServer {
        use std::io::BufRead;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_server.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--maildir"])
            .arg(maildir)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                std::process::Stdio::inherit()
            } else {
                std::process::Stdio::null()
            })
            .spawn()
            .expect("python3 runs (scripts/test.sh installs what the tests need)");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line).unwrap();
        let port = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("the test SMTP server did not start (got {line:?}); run the tests with scripts/test.sh, which installs aiosmtpd")
            });
        SmtpServer { child, port, maildir: maildir.to_owned(), _dir: None }
    }

    /// A port that is free now (to start a server on later).
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Every message accepted so far, in arrival order.
    pub fn messages(&self) -> Vec<Mail> {
        messages_in(&self.maildir)
    }

    /// Waits until at least `n` messages arrived; returns all of them.
    pub async fn wait_for(&self, n: usize) -> Vec<Mail> {
        let dir = self.maildir.clone();
        wait_until(&format!("{n} mails arrive"), || {
            let dir = dir.clone();
            async move { messages_in(&dir).len() >= n }
        })
        .await;
        self.messages()
    }
}

pub fn messages_in(dir: &Path) -> Vec<Mail> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut jsons: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    jsons.sort();
    jsons
        .into_iter()
        .map(|j| Mail {
            meta: serde_json::from_slice(&std::fs::read(&j).unwrap()).unwrap(),
            raw: String::from_utf8_lossy(&std::fs::read(j.with_extension("eml")).unwrap()).into_owned(),
        })
        .collect()
}

/// `GET /api{path}` on a running daemon whose admin listener is `addr`, with the admin token.
pub async fn daemon_api(client: &reqwest::Client, addr: SocketAddr, path: &str) -> Value {
    client.get(format!("http://{addr}/api{path}")).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap()
}

/// Every order a running daemon (admin listener `addr`) holds (`filter`: e.g. `&state=approved`),
/// paging through `/api/orders`.
pub async fn all_orders(client: &reqwest::Client, addr: SocketAddr, filter: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let page = daemon_api(client, addr, &format!("/orders?limit=1000{filter}{after}")).await;
        out.extend(page["orders"].as_array().unwrap().iter().cloned());
        match page["next_after"].as_str() {
            Some(n) => after = format!("&after={n}"),
            None => return out,
        }
    }
}

/// One request a `Scripted` server saw: path and query, and the API key it carried.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub api_key: Option<String>,
}

/// What a `Scripted` server answers, by path and query prefix (the first that matches).
pub type Script = Vec<(String, Box<dyn Fn() -> Response + Send + Sync>)>;
type Recorded = (Arc<Mutex<Vec<Seen>>>, Arc<Script>);

/// A server on loopback that answers by path prefix (a `Script`), else 200
/// `{"id": "X-1"}`, and records every request.
#[derive(Clone)]
pub struct Scripted {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    pub async fn start(script: Script) -> Scripted {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let state = (seen.clone(), Arc::new(script));
        let app = axum::Router::new().fallback(scripted_answer).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Scripted { addr, seen }
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn scripted_answer(State((seen, script)): State<Recorded>, req: Request) -> Response {
    let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let path = req.uri().path_and_query().map_or_else(|| req.uri().path().to_owned(), |p| p.to_string());
    seen.lock().unwrap().push(Seen { path: path.clone(), api_key: h("x-api-key") });
    match script.iter().find(|(prefix, _)| path.starts_with(prefix.as_str())) {
        Some((_, answer)) => answer(),
        None => (StatusCode::OK, axum::Json(json!({"id": "X-1"}))).into_response(),
    }
}
