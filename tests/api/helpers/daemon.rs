//! `TestApp`: the daemon in this process, on OS-picked ports, with its own copy of
//! the example configuration and data dir, and a `Receiver` playing the ERP. Built
//! with `TestApp::builder()`: the test defaults and a test's own settings are typed
//! changes to the loaded `Settings`, made before `Application::build_with_clock`.
//! Also the one place that names the library's configuration loader (`load`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use orderbridge::clock::Clock;
use orderbridge::connectors::signature::StandardWebhooks;
use orderbridge::startup::Application;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{
    ADMIN_TOKEN, Receiver, SmtpServer, TestDefaults, client, crm_signer, only_approval, signed_headers, wait_until,
    write_config, write_mail_config,
};

// The library's configuration loader and settings, named only here: if they move, this
// is the one place to follow them.
pub use orderbridge::check::{Loaded, load_rules};
pub use orderbridge::settings::{Logo, Settings, SmtpTls};
use orderbridge::telemetry::LogFormat;

/// Loads every file of the configuration in `dir`, as `orderbridge run` does.
pub fn load(dir: &Path) -> Result<Loaded, String> {
    orderbridge::check::load_all(dir).map_err(|ds| ds.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))
}

/// The settings of the configuration in `dir` alone, unresolvable secrets left unset
/// (as offline CLI commands load them).
pub fn load_settings(dir: &Path) -> Settings {
    Settings::load_with(dir, false).unwrap_or_else(|ds| {
        panic!("settings load: {}", ds.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))
    })
}

/// A typed change to loaded settings.
type SettingsEdit = Arc<dyn Fn(&mut Settings) + Send + Sync>;

/// A change to the written configuration files.
type FileEdit = Box<dyn FnOnce(&Path)>;

pub struct TestApp {
    /// The public listener: webhooks, pages, health.
    pub addr: std::net::SocketAddr,
    /// The admin listener: `/api/*` and `/metrics`.
    pub admin: std::net::SocketAddr,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    pub erp: Receiver,
    signer: StandardWebhooks,
    stop: CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub state: orderbridge::http::AppState,
}

/// How a `TestApp` starts: which systems, clock and configuration; typed changes to
/// its settings on top of `TestDefaults`.
#[must_use]
pub struct TestAppBuilder {
    erp: Option<Receiver>,
    clock: Clock,
    smtp_port: Option<u16>,
    dir: Option<tempfile::TempDir>,
    only_approval: bool,
    files: Vec<FileEdit>,
    settings: Vec<SettingsEdit>,
}

/// The example configuration, the system clock, a fresh ERP.
pub async fn spawn_app() -> TestApp {
    TestApp::builder().start().await
}

/// Starts a daemon again on a stopped app's directory.
pub async fn restart(dir: tempfile::TempDir, erp: Receiver) -> TestApp {
    TestApp::builder().in_dir(dir).erp(erp).start().await
}

/// Starts a daemon again on a stopped app's directory, with `clock`.
pub async fn restart_with(dir: tempfile::TempDir, erp: Receiver, clock: Clock) -> TestApp {
    TestApp::builder().in_dir(dir).erp(erp).clock(clock).start().await
}

/// Settings on PostgreSQL at `url` (the store's defaults otherwise), with claims and
/// leases of `lease_secs`.
pub fn on_postgres(url: &str, lease_secs: u64) -> impl Fn(&mut Settings) + Send + Sync + 'static {
    let url = url.to_owned();
    move |s| {
        s.store.backend = orderbridge::store::Backend::Postgres;
        let lease = Duration::from_secs(lease_secs);
        s.store.postgres = Some(orderbridge::settings::postgres_defaults(url.clone().into(), lease));
    }
}

impl TestAppBuilder {
    /// The ERP (and the other systems of the example) this app talks to.
    pub fn erp(mut self, erp: Receiver) -> Self {
        self.erp = Some(erp);
        self
    }

    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Notifications on, mail to `smtp`.
    pub fn mail(self, smtp: &SmtpServer) -> Self {
        self.mail_port(smtp.port)
    }

    /// Notifications on, mail to an SMTP server on `port` (which may start later).
    pub fn mail_port(mut self, port: u16) -> Self {
        self.smtp_port = Some(port);
        self
    }

    /// Without execution, settlement and dunning (see `only_approval`).
    pub fn only_approval(mut self) -> Self {
        self.only_approval = true;
        self
    }

    /// A typed change to the loaded settings, e.g. `|s| s.dispatcher.max_attempts = 3`.
    pub fn settings(mut self, edit: impl Fn(&mut Settings) + Send + Sync + 'static) -> Self {
        self.settings.push(Arc::new(edit));
        self
    }

    /// Changes the written configuration files before start (`edit_file` and the like),
    /// for tests about a connector, rule or mapping file's content.
    pub fn files(mut self, edit: impl FnOnce(&Path) + 'static) -> Self {
        self.files.push(Box::new(edit));
        self
    }

    /// Starts on the configuration already in `dir` (written by the test, or left by a
    /// stopped app) instead of writing the example.
    pub fn in_dir(mut self, dir: tempfile::TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    pub async fn start(self) -> TestApp {
        let erp = match self.erp {
            Some(erp) => erp,
            None => Receiver::start().await,
        };
        let dir = match self.dir {
            Some(dir) => dir,
            None => {
                // The systems' addresses go into the files (as the ERP's does), so the
                // built binary started later on this directory reaches them too.
                let dir = tempfile::tempdir().unwrap();
                match self.smtp_port {
                    Some(port) => write_mail_config(dir.path(), erp.addr, port),
                    None => write_config(dir.path(), erp.addr),
                }
                dir
            }
        };
        if self.only_approval {
            only_approval(dir.path());
        }
        for edit in self.files {
            edit(dir.path());
        }
        let mut edits = self.settings;
        if let Some(port) = self.smtp_port {
            // Also on a configuration the test wrote itself (`in_dir`).
            edits.insert(0, Arc::new(move |s| s.smtp.as_mut().expect("the mail configuration has [smtp]").port = port));
        }
        edits.insert(0, Arc::new(TestDefaults::apply));
        let app = build(dir.path(), &edits, self.clock).await;
        TestApp::run(app, dir, erp)
    }
}

/// Loads `dir`, applies `edits` and builds.
async fn build(dir: &Path, edits: &[SettingsEdit], clock: Clock) -> Application {
    let mut loaded = load(dir).unwrap_or_else(|e| panic!("example config must load: {e}"));
    for edit in edits {
        edit(&mut loaded.settings);
    }
    Application::build_with_clock(loaded, clock).await.unwrap_or_else(|e| panic!("app builds: {e:#}"))
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            erp: None,
            clock: Clock::system(),
            smtp_port: None,
            dir: None,
            only_approval: false,
            files: Vec::new(),
            settings: Vec::new(),
        }
    }

    fn run(app: Application, dir: tempfile::TempDir, erp: Receiver) -> TestApp {
        let addr = app.address();
        let admin = app.admin_address();
        let state = app.state().clone();
        let stop = CancellationToken::new();
        let s = stop.clone();
        let handle = tokio::spawn(app.run_until_stopped(async move { s.cancelled().await }));
        if std::env::var_os("TEST_LOG").is_some() {
            orderbridge::telemetry::init(LogFormat::Text, "info");
        }
        TestApp { addr, admin, dir, client: client(), erp, signer: crm_signer(), stop, handle: Some(handle), state }
    }

    /// `path` on the public listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `path` on the admin listener (`/api/…`, `/metrics`).
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn signed_headers(&self, id: &str, ts: i64, body: &[u8]) -> Vec<(&'static str, String)> {
        signed_headers(&self.signer, id, ts, body)
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

    /// A personal token acting as the directory person `person` (`orderbridge tokens
    /// create --person`), with every action their roles allow.
    pub fn person_token(&self, person: &str) -> String {
        self.token(&format!("person:{person}"), &[], None)
    }

    /// A token for `holder` (`client:NAME` or `person:ID`) with `scopes`, expiring at `expires_at`.
    pub fn token(&self, holder: &str, scopes: &[&str], expires_at: Option<chrono::DateTime<chrono::Utc>>) -> String {
        let now = self.state.clock.now();
        orderbridge::auth::issue(self.state.store_path(), holder, scopes, expires_at, now).unwrap().1
    }

    /// `POST /api{path}` with `body`, acting as the directory person `person` (their
    /// personal token): how a person decides or records something through the API.
    pub async fn api_post_json_as(&self, person: &str, path: &str, body: &Value) -> (u16, Value) {
        self.api_post_with(&self.person_token(person), path, body).await
    }

    /// `POST /api{path}` with `body` and the bearer `token`.
    pub async fn api_post_with(&self, token: &str, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .client
            .post(self.admin_url(&format!("/api{path}")))
            .bearer_auth(token)
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

    /// Stops the daemon and returns once every task of it has ended and its store is
    /// closed and released: another daemon (or an offline command) may open it now.
    pub async fn stop(self) -> tempfile::TempDir {
        let TestApp { dir, stop, handle, state, .. } = self;
        // The daemon drops its own handles on the store as it returns; this one must
        // be gone by then too.
        drop(state);
        stop.cancel();
        if let Some(h) = handle {
            h.await.unwrap().unwrap();
        }
        dir
    }

    /// Stops (see `stop`) and checks that the store is free for another process, as an
    /// offline CLI command needs it.
    pub async fn stop_and_release(self) -> tempfile::TempDir {
        let dir = self.stop().await;
        // fjall and sled hold an exclusive flock while open (fjall on `lock`, sled on
        // `db`); probe it the same way (opening the engine itself would hold it again
        // for a moment after closing). redb takes byte-range locks instead, which only
        // redb's own open sees: a read-only open fails while a writer holds the file.
        let data = dir.path().join("data");
        for lock in ["lock", "db"].iter().map(|f| data.join(f)).filter(|p| p.exists()) {
            let free = std::fs::File::open(&lock).is_ok_and(|f| f.try_lock().is_ok());
            assert!(free, "{} is still locked after stop", lock.display());
        }
        let redb = orderbridge::store::redb_engine::RedbEngine::file(&data);
        assert!(
            !redb.exists()
                || !matches!(redb::Builder::new().open_read_only(&redb), Err(redb::DatabaseError::DatabaseAlreadyOpen)),
            "{} is still open after stop",
            redb.display()
        );
        dir
    }
}
