//! Settings: `config/orderbridge.toml`, then `ORDERBRIDGE__SECTION__KEY` environment
//! overrides (the `config` crate), parsed into typed `Settings`.
//!
//! The file is also read with `toml` so that shape errors carry `line:col`; an error
//! that only appears after the environment is merged is reported against the
//! variable's name. Secrets are references (`${NAME}` or `file:PATH`) resolved into
//! `SecretString` here, never written inline and never logged.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::diagnostics::{Diagnostic, locate};
use crate::locale::{Locale, Presentation};

pub const ENV_PREFIX: &str = "ORDERBRIDGE";

/// `config/orderbridge.toml` as written. Every field has a default that works for the
/// example configuration, except secrets, which are references.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    /// Marks the repository's example configuration: its published demo secrets
    /// (README quick start, scripts) and short ones are accepted, with one note,
    /// while the daemon listens on loopback. Never set it in a deployment.
    #[serde(default)]
    pub example: bool,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub intake: RawIntake,
    #[serde(default)]
    pub dispatcher: RawDispatcher,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub site: RawSite,
    /// Outgoing mail; without it the daemon sends none (and `check` refuses
    /// notification rules).
    pub smtp: Option<RawSmtp>,
    #[serde(default)]
    pub links: RawLinks,
    #[serde(default)]
    pub scheduler: RawScheduler,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSite {
    /// Shown in mail and pages.
    pub name: String,
    /// Where people reach the daemon's pages: the base of every link in mail
    /// (default: `http://` and the address the daemon listens on).
    pub public_url: Option<String>,
    /// IANA zone for everything shown to people (times stay UTC inside).
    pub time_zone: String,
    /// Language for people whose locale is not known: `zh-CN` or `en`.
    pub default_locale: String,
    /// The pages' logo: an SVG, PNG, JPEG or WebP file (relative to the configuration
    /// directory), served by the daemon itself; none: the site's name alone.
    pub logo: Option<String>,
    /// The pages' accent colour (header, buttons, stepper), `#rrggbb`.
    pub color: String,
}

impl Default for RawSite {
    fn default() -> Self {
        RawSite {
            name: "orderbridge".into(),
            public_url: None,
            time_zone: "Asia/Shanghai".into(),
            default_locale: "zh-CN".into(),
            logo: None,
            color: DEFAULT_COLOR.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmtp {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// `starttls` (required), `tls` (implicit, usually port 465) or `none` (a local relay).
    #[serde(default = "default_smtp_tls")]
    pub tls: String,
    pub username: Option<String>,
    /// `${ENV_NAME}` or `file:PATH`.
    pub password: Option<String>,
    /// PEM file of a private CA to trust besides the system's.
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_smtp_timeout")]
    pub timeout_secs: u64,
    /// Connections kept open to the server.
    #[serde(default = "default_smtp_pool")]
    pub pool_max: u32,
    /// `Name <address>`; its domain also names every `Message-ID`.
    pub from: String,
    pub reply_to: Option<String>,
    /// Name given in EHLO (default: this host's name).
    pub hello_name: Option<String>,
}

fn default_smtp_port() -> u16 {
    587
}
fn default_smtp_tls() -> String {
    "starttls".into()
}
fn default_smtp_timeout() -> u64 {
    30
}
fn default_smtp_pool() -> u32 {
    4
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLinks {
    /// Key that signs links in mail: `${ENV_NAME}` or `file:PATH` (at least 32 bytes).
    pub secret: Option<String>,
    /// Earlier keys, still accepted, so rotating the key breaks no mail in flight.
    pub previous_secrets: Vec<String>,
    pub approval_ttl_hours: u64,
    pub status_ttl_hours: u64,
    pub acceptance_ttl_hours: u64,
    pub survey_ttl_hours: u64,
}

impl Default for RawLinks {
    fn default() -> Self {
        RawLinks {
            secret: None,
            previous_secrets: Vec::new(),
            approval_ttl_hours: 72,
            status_ttl_hours: 720,
            acceptance_ttl_hours: 168,
            survey_ttl_hours: 720,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawScheduler {
    /// How often the scheduler looks for due approval reminders, escalations and digests.
    pub sweep_interval_ms: u64,
}

impl Default for RawScheduler {
    fn default() -> Self {
        RawScheduler { sweep_interval_ms: 10_000 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// Address to listen on. `127.0.0.1` keeps the daemon private to the host.
    pub host: String,
    /// TCP port; `0` lets the OS pick (tests).
    pub port: u16,
    /// Largest webhook body accepted, in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Time limit for one HTTP request, in seconds, from its headers to its answer,
    /// including the wait for a free slot (`max_concurrent_requests`).
    pub request_timeout_secs: u64,
    /// Time a client has to send a request's headers, in seconds: from the connection's
    /// start, or from the first byte of a later request on a kept-alive connection.
    /// Past it the connection is closed (slow clients cannot hold connections).
    pub header_read_timeout_secs: u64,
    /// How long a kept-alive connection may wait for its next request, in seconds.
    pub idle_timeout_secs: u64,
    /// Time a handler waits for the whole request body, in seconds (past it: 408).
    pub body_timeout_secs: u64,
    /// Longest wait for a free slot (`max_concurrent_requests`), in seconds, within the
    /// request timeout; past it: 503 with `Retry-After`.
    pub queue_timeout_secs: u64,
    /// Bearer token for `/api/*`: `${ENV_NAME}` or `file:PATH`.
    pub admin_token: Option<String>,
    /// Most requests handled at once per listener; more wait, up to the request
    /// timeout, then get 503 with `Retry-After` (back-pressure).
    pub max_concurrent_requests: usize,
    /// The admin listener (`/api/*`, `/metrics`), apart from webhooks and pages.
    pub admin: RawAdmin,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            host: "127.0.0.1".into(),
            port: 8080,
            max_body_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            body_timeout_secs: 30,
            queue_timeout_secs: 10,
            admin_token: None,
            max_concurrent_requests: 1024,
            admin: RawAdmin::default(),
        }
    }
}

/// `[server.admin]`: where the admin API and the metrics are served. Keep it on
/// loopback (or a management network): it is not meant to face the internet.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// Address of the admin listener (default loopback).
    pub host: String,
    /// Its TCP port, other than `server.port`; `0` lets the OS pick (tests).
    pub port: u16,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin { host: "127.0.0.1".into(), port: 8081 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    /// `fjall`, `redb` or `sled`: embedded engines, one process per data directory; or
    /// `postgres`: a PostgreSQL database (`url`), which several daemons may share. Unset:
    /// the engine of the store already at `path`, or `fjall` for a new one.
    pub backend: Option<String>,
    /// PostgreSQL only (required there): the database URL as a secret reference,
    /// `${ORDERBRIDGE_DATABASE_URL}` or `file:PATH`, holding `postgres://user:password@host:port/db`.
    pub url: Option<String>,
    /// PostgreSQL only: connections in the pool (1 to 1000).
    pub pool_size: u32,
    /// PostgreSQL only: how long a request waits for a pooled connection, or a new one
    /// to be made, before it fails (a webhook then answers 503), in seconds.
    pub acquire_timeout_secs: u64,
    /// PostgreSQL only: the server cancels a statement running longer, in seconds.
    pub statement_timeout_secs: u64,
    /// PostgreSQL only: how long an effect claim or a job lease lasts unless renewed,
    /// in seconds (at least 3). A replica renews its claims every third of it while
    /// a push runs; one that dies leaves its effects and jobs this long to the others.
    pub lease_secs: u64,
    /// Data directory of the embedded store, relative to the config dir unless absolute.
    pub path: PathBuf,
    /// The engine's cache, in MiB (fjall: block cache; sled: page cache, resident memory a few times this, sled #1309; redb: read cache and write buffer).
    pub cache_capacity_mb: u64,
    /// Group commit: how long the first waiting write waits for others before the
    /// flush + fsync that makes them all durable, in microseconds (0: flush at once).
    pub group_commit_delay_us: u64,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            backend: None,
            url: None,
            pool_size: 16,
            acquire_timeout_secs: 5,
            statement_timeout_secs: 30,
            lease_secs: 60,
            path: "data".into(),
            cache_capacity_mb: 16,
            group_commit_delay_us: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// `text` for people, `json` for log collectors.
    pub format: String,
    /// A tracing filter, e.g. `info` or `orderbridge=debug,info`. `RUST_LOG` wins.
    pub level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog { format: "text".into(), level: "info".into() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawIntake {
    /// The order template: canonical fields an order must have beyond the always-required
    /// ones (customer id/name/kind, product, amount). Missing ones get a 422.
    pub required_fields: Vec<String>,
    /// The largest amount an inbound order or payment may carry, by ISO 4217 currency,
    /// as a decimal string (`CNY = "10000000000"`). Larger amounts get a 422 naming
    /// `amount.amount`. Unlisted currencies have no limit of their own.
    pub max_amount: std::collections::BTreeMap<String, String>,
}

impl Default for RawIntake {
    fn default() -> Self {
        RawIntake {
            required_fields: vec!["customer.id_document".into(), "term_months".into(), "sales_owner".into()],
            max_amount: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDispatcher {
    /// Effects performed at once, across all connectors.
    pub concurrency: usize,
    /// Attempts before an effect goes to the dead-letter list.
    pub max_attempts: u32,
    /// First retry delay; doubles each attempt, with jitter.
    pub backoff_initial_ms: u64,
    /// Longest retry delay.
    pub backoff_max_ms: u64,
    /// How often the dispatcher looks for due work when nothing woke it.
    pub sweep_interval_ms: u64,
}

impl Default for RawDispatcher {
    fn default() -> Self {
        RawDispatcher {
            concurrency: 16,
            max_attempts: 10,
            backoff_initial_ms: 1000,
            backoff_max_ms: 10 * 60 * 1000,
            sweep_interval_ms: 1000,
        }
    }
}

/// `[limits]`: queue sizes at which the daemon warns (log, and the threshold
/// gauges that `deploy/prometheus-rules.yml` compares the queue gauges with). Nothing
/// is refused or dropped at these sizes: refusing intake would lose orders.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Effects waiting in the outbox (due or backing off).
    pub outbox_alert: u64,
    /// Effects given up on, waiting for an operator to replay them.
    pub dead_letters_alert: u64,
    /// Payments no order took, waiting for an operator to assign them.
    pub unmatched_payments_alert: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits { outbox_alert: 100_000, dead_letters_alert: 1_000, unmatched_payments_alert: 1_000 }
    }
}

/// A reference to a secret: an environment variable or a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl SecretRef {
    /// Parses `${NAME}` or `file:PATH`. Anything else is refused, so a secret is never
    /// written into a config file by accident.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(name) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}'))
            && !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Ok(SecretRef::Env(name.to_owned()));
        }
        if let Some(p) = s.strip_prefix("file:")
            && !p.is_empty()
        {
            return Ok(SecretRef::File(p.into()));
        }
        Err("a secret must be a reference, `${ENV_NAME}` or `file:PATH`, never the value itself".into())
    }

    /// Reads the secret. The error names the variable or file, never the value.
    pub fn resolve(&self, base: &Path) -> Result<SecretString, String> {
        match self {
            SecretRef::Env(n) => match std::env::var(n) {
                Ok(v) if !v.is_empty() => Ok(SecretString::from(v)),
                _ => Err(format!("secret ${{{n}}}: environment variable {n} is not set")),
            },
            SecretRef::File(p) => {
                let p = if p.is_absolute() { p.clone() } else { base.join(p) };
                std::fs::read_to_string(&p)
                    .map(|v| SecretString::from(v.trim_end_matches(['\n', '\r']).to_owned()))
                    .map_err(|e| format!("secret file {}: {e}", p.display()))
            }
        }
    }
}

/// The pages' accent colour when none is configured.
pub const DEFAULT_COLOR: &str = "#1f3a5f";
/// Largest logo file served.
const MAX_LOGO_BYTES: u64 = 512 * 1024;

/// The pages' logo, read once at start.
#[derive(Clone, PartialEq, Eq)]
pub struct Logo {
    pub content_type: &'static str,
    pub bytes: std::sync::Arc<[u8]>,
}

impl std::fmt::Debug for Logo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logo").field("content_type", &self.content_type).field("bytes", &self.bytes.len()).finish()
    }
}

impl Logo {
    /// Reads a logo file; the type follows the extension.
    fn read(path: &Path) -> Result<Logo, String> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
        let content_type = match ext.as_str() {
            "svg" => "image/svg+xml",
            "png" => "image/png",
            "jpg" | "jpeg" => "image/jpeg",
            "webp" => "image/webp",
            _ => return Err(format!("`{}`: a logo is an .svg, .png, .jpg or .webp file", path.display())),
        };
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        if meta.len() > MAX_LOGO_BYTES {
            return Err(format!("`{}` is larger than {MAX_LOGO_BYTES} bytes", path.display()));
        }
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        Ok(Logo { content_type, bytes: bytes.into() })
    }
}

/// `#rrggbb`.
fn is_hex_color(s: &str) -> bool {
    s.len() == 7 && s.starts_with('#') && s[1..].chars().all(|c| c.is_ascii_hexdigit())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Parsed settings: every value typed, every secret resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The directory holding `config/`, `connectors/` and `mappings/`.
    pub config_dir: PathBuf,
    /// The public listener: webhooks, pages, health.
    pub listen: SocketAddr,
    /// The admin listener: `/api/*`, `/metrics` (and health).
    pub admin_listen: SocketAddr,
    pub max_body_bytes: usize,
    /// Whole request, including the wait for a slot.
    pub request_timeout: Duration,
    /// Read by the server's connection watchdog (`http::server`).
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// Read by the request guard, which bounds every request body.
    pub body_timeout: Duration,
    /// Longest wait for a request slot (within `request_timeout`).
    pub queue_timeout: Duration,
    pub max_concurrent_requests: usize,
    /// `None` disables `/api/*` (every call answers 401).
    pub admin_token: Option<SecretString>,
    /// Where and on which engine the store lives (`[store]`).
    pub store: crate::store::Options,
    /// `store.path`, resolved against the configuration directory (documents live under it too).
    pub store_path: PathBuf,
    pub log_format: LogFormat,
    pub log_level: String,
    /// The order template and amount limits every inbound order is checked against.
    pub intake: crate::engine::IntakeRules,
    pub dispatcher: DispatcherSettings,
    pub site_name: String,
    /// The pages' logo (`site.logo`), served at `/pages/assets/logo`.
    pub site_logo: Option<Logo>,
    /// The pages' accent colour (`site.color`), `#rrggbb`.
    pub site_color: String,
    /// `None`: links use the address the daemon listens on.
    pub public_url: Option<String>,
    pub presentation: Presentation,
    pub smtp: Option<SmtpSettings>,
    /// `None` when no link secret is configured (mail then carries no links).
    pub links: Option<LinkSettings>,
    pub scheduler_sweep_interval: Duration,
    /// How weak secrets are judged (`example = true` on loopback accepts the demo ones).
    pub secret_policy: crate::secrets::Policy,
    /// Secret references accepted only because this is the example configuration.
    pub accepted_weak_secrets: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    None,
    StartTls,
    Implicit,
}

#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub credentials: Option<(String, SecretString)>,
    pub ca_pem: Option<Vec<u8>>,
    pub timeout: Duration,
    pub pool_max: u32,
    pub from: String,
    pub reply_to: Option<String>,
    pub hello_name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// The first signs; all verify.
    pub keys: Vec<SecretString>,
    /// Per purpose, in `LinkPurpose::ALL` order.
    pub ttl: [Duration; 4],
}

#[derive(Debug, Clone)]
pub struct DispatcherSettings {
    /// Effects in flight at once across connectors without slots of their own.
    pub concurrency: usize,
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub sweep_interval: Duration,
    /// Queue sizes the dispatcher warns about (`[limits]`); `/metrics` shows them.
    pub queue_alerts: QueueAlerts,
}

/// Queue sizes at which an operator should look (`[limits] *_alert`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueAlerts {
    pub outbox: u64,
    pub dead_letters: u64,
    pub unmatched_payments: u64,
}

impl Default for QueueAlerts {
    fn default() -> Self {
        let r = RawLimits::default();
        QueueAlerts {
            outbox: r.outbox_alert,
            dead_letters: r.dead_letters_alert,
            unmatched_payments: r.unmatched_payments_alert,
        }
    }
}

impl Settings {
    pub fn file_path(config_dir: &Path) -> PathBuf {
        config_dir.join("config").join("orderbridge.toml")
    }

    /// Loads the file and the environment, and parses both.
    ///
    /// # Errors
    /// Every problem found, located in the file or named by its environment variable.
    pub fn load(config_dir: &Path) -> Result<Settings, Vec<Diagnostic>> {
        Settings::load_with(config_dir, true)
    }

    /// Like `load`; with `strict = false` a secret that cannot be resolved is left
    /// unset instead of failing (offline CLI commands need no secrets).
    pub fn load_with(config_dir: &Path, strict: bool) -> Result<Settings, Vec<Diagnostic>> {
        let path = Settings::file_path(config_dir);
        let text =
            std::fs::read_to_string(&path).map_err(|e| vec![Diagnostic::file(&path, format!("cannot read: {e}"))])?;
        // Pass 1: the file alone, for located shape errors.
        if let Err(e) = toml::from_str::<RawSettings>(&text) {
            return Err(vec![Diagnostic::from_toml(&path, &text, &e)]);
        }
        // Pass 2: file + environment, as the daemon will run.
        let merged = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .add_source(config::Environment::with_prefix(ENV_PREFIX).prefix_separator("__").separator("__"))
            .build()
            .and_then(|c| c.try_deserialize::<RawSettings>());
        let raw = merged.map_err(|e| {
            let text = e.to_string();
            let vars: Vec<String> =
                std::env::vars().map(|(k, _)| k).filter(|k| k.starts_with("ORDERBRIDGE__")).collect();
            // "… for key `server.port` in the environment": name the variable itself.
            let key = text.split("for key `").nth(1).and_then(|r| r.split('`').next());
            let reason = text.split(" for key `").next().unwrap_or(&text).to_owned();
            match key.map(|k| format!("{ENV_PREFIX}__{}", k.replace('.', "__").to_uppercase())) {
                Some(var) if vars.contains(&var) => vec![Diagnostic::file(Path::new(&format!("env {var}")), reason)],
                // An unknown key names its section: name the variables under it.
                Some(section) => {
                    let under: Vec<&String> = vars.iter().filter(|v| v.starts_with(&format!("{section}__"))).collect();
                    let names = under.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ");
                    vec![Diagnostic::file(Path::new(&format!("env {names}")), reason)]
                }
                None => {
                    vec![Diagnostic::file(&path, format!("with environment overrides ({}): {text}", vars.join(", ")))]
                }
            }
        })?;
        raw.parse(config_dir, &path, &text, strict)
    }
}

impl RawSettings {
    /// Meaning checks and secret resolution. `text` locates problems in the file.
    pub fn parse(self, config_dir: &Path, path: &Path, text: &str, strict: bool) -> Result<Settings, Vec<Diagnostic>> {
        let mut problems = Vec::new();
        let mut bad = |keys: &[&str], msg: String| {
            let env = format!("{ENV_PREFIX}__{}", keys.join("__").to_uppercase());
            let msg = if std::env::var_os(&env).is_some() { format!("{msg} (set by env {env})") } else { msg };
            problems.push(Diagnostic::at(path, text, locate(text, keys), msg));
        };
        let host: Option<IpAddr> = match self.server.host.parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                bad(&["server", "host"], format!("`{}` is not an IP address", self.server.host));
                None
            }
        };
        let admin_host: Option<IpAddr> = match self.server.admin.host.parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                bad(&["server", "admin", "host"], format!("`{}` is not an IP address", self.server.admin.host));
                None
            }
        };
        if self.server.admin.port != 0 && self.server.admin.port == self.server.port {
            bad(
                &["server", "admin", "port"],
                format!(
                    "the admin listener needs a port of its own, not server.port ({}): /api and /metrics are not served with webhooks and pages",
                    self.server.port
                ),
            );
        }
        for (key, value) in [
            ("request_timeout_secs", self.server.request_timeout_secs),
            ("header_read_timeout_secs", self.server.header_read_timeout_secs),
            ("idle_timeout_secs", self.server.idle_timeout_secs),
            ("body_timeout_secs", self.server.body_timeout_secs),
            ("queue_timeout_secs", self.server.queue_timeout_secs),
        ] {
            if value == 0 {
                bad(&["server", key], "must be at least 1 (seconds); there is no \"no limit\"".into());
            }
        }
        if self.server.queue_timeout_secs > self.server.request_timeout_secs {
            bad(
                &["server", "queue_timeout_secs"],
                format!(
                    "must not exceed request_timeout_secs ({}): the wait for a slot is part of the request's time",
                    self.server.request_timeout_secs
                ),
            );
        }
        let secret_policy = secret_policy(self.example, host.zip(admin_host), path, text);
        let mut checks = crate::secrets::Checks::new(&secret_policy);
        let admin_token = match self.server.admin_token.as_deref().map(SecretRef::parse) {
            None => None,
            Some(Err(e)) => {
                bad(&["server", "admin_token"], e);
                None
            }
            Some(Ok(r)) => match r.resolve(config_dir) {
                Ok(s) => {
                    let value = secrecy::ExposeSecret::expose_secret(&s);
                    let need = crate::secrets::Need {
                        len: value.len(),
                        min: crate::secrets::MIN_ADMIN_TOKEN,
                        what: "an admin token",
                    };
                    // Offline commands (`strict = false`) need no secrets: nothing to judge.
                    let reference = self.server.admin_token.as_deref().unwrap_or_default();
                    if strict && let Err(m) = checks.judge(reference, value, Some(need)) {
                        bad(&["server", "admin_token"], m);
                    }
                    Some(s)
                }
                Err(_) if !strict => None,
                Err(e) => {
                    bad(&["server", "admin_token"], e);
                    None
                }
            },
        };
        if self.server.max_body_bytes < 1024 {
            bad(&["server", "max_body_bytes"], "must be at least 1024".into());
        }
        let store_path =
            if self.store.path.is_absolute() { self.store.path.clone() } else { config_dir.join(&self.store.path) };
        let backend = match self.store.backend.as_deref().map(str::parse::<crate::store::Backend>) {
            Some(Ok(b)) => Some(b),
            Some(Err(e)) => {
                bad(&["store", "backend"], e);
                None
            }
            // The store that is there (a store written before the default changed
            // keeps its engine), or the default for a new one.
            None => Some(crate::store::Backend::detect(&store_path).unwrap_or(crate::store::Backend::DEFAULT)),
        };
        let postgres = match (backend, self.store.url.as_deref()) {
            (Some(crate::store::Backend::Postgres), None) => {
                bad(
                    &["store", "url"],
                    "required with backend = \"postgres\": a secret reference such as \"${ORDERBRIDGE_DATABASE_URL}\""
                        .into(),
                );
                None
            }
            (Some(crate::store::Backend::Postgres), Some(url)) => {
                match SecretRef::parse(url).and_then(|r| r.resolve(config_dir)) {
                    Ok(secret) => {
                        let o = crate::store::postgres::PgOptions {
                            url: secret,
                            max_connections: self.store.pool_size,
                            acquire_timeout: Duration::from_secs(self.store.acquire_timeout_secs),
                            statement_timeout: Duration::from_secs(self.store.statement_timeout_secs),
                            lease: Duration::from_secs(self.store.lease_secs.max(3)),
                        };
                        if self.store.lease_secs < 3 {
                            bad(
                                &["store", "lease_secs"],
                                "must be at least 3 (claims are renewed every third of it)".into(),
                            );
                        }
                        if let Err(e) = o.connect_options() {
                            // The message names the reference, never the URL (it may hold a password).
                            bad(&["store", "url"], format!("{url}: {e}"));
                        }
                        Some(o)
                    }
                    Err(_) if !strict => None,
                    Err(e) => {
                        bad(&["store", "url"], e);
                        None
                    }
                }
            }
            (_, Some(_)) => {
                bad(&["store", "url"], "only for backend = \"postgres\" (the embedded engines use store.path)".into());
                None
            }
            (_, None) => None,
        };
        if !(1..=1000).contains(&self.store.pool_size) {
            bad(&["store", "pool_size"], "must be between 1 and 1000".into());
        }
        if self.store.acquire_timeout_secs == 0 {
            bad(&["store", "acquire_timeout_secs"], "must be at least 1".into());
        }
        if self.store.statement_timeout_secs == 0 {
            bad(&["store", "statement_timeout_secs"], "must be at least 1".into());
        }
        if self.store.group_commit_delay_us > 100_000 {
            bad(&["store", "group_commit_delay_us"], "must be at most 100000 (0.1 s)".into());
        }
        if self.store.cache_capacity_mb == 0 {
            bad(&["store", "cache_capacity_mb"], "must be at least 1".into());
        }
        let log_format = match self.log.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                bad(&["log", "format"], format!("`{other}` is not a log format (text, json)"));
                LogFormat::Text
            }
        };
        for f in &self.intake.required_fields {
            let known = crate::domain::order::CANONICAL_FIELDS.contains(&f.as_str()) || f == "customer.id_document";
            if !known {
                bad(&["intake", "required_fields"], format!("`{f}` is not a canonical order field"));
            }
        }
        let mut max_amount = std::collections::BTreeMap::new();
        for (key, limit) in &self.intake.max_amount {
            // Environment keys arrive lower-cased; currency codes are upper case. The
            // config crate hands over both the file's `CNY` and the variable's `cny`:
            // the variable overrides, as for every other key.
            let code = key.to_ascii_uppercase();
            let lower = code.to_ascii_lowercase();
            let env_set = std::env::var_os(format!("{ENV_PREFIX}__INTAKE__MAX_AMOUNT__{code}")).is_some();
            if *key != lower && env_set && self.intake.max_amount.contains_key(&lower) {
                continue;
            }
            let in_file = [key.as_str(), code.as_str()]
                .into_iter()
                .find(|k| locate(text, &["intake", "max_amount", k]).is_some());
            // Point at the key in the file, or at the table when only a variable sets it.
            let mut report = |msg: String| match in_file {
                Some(k) => bad(&["intake", "max_amount", k], msg),
                None => {
                    let env = format!("{ENV_PREFIX}__INTAKE__MAX_AMOUNT__{code}");
                    let msg = if std::env::var_os(&env).is_some() { format!("{msg} (set by env {env})") } else { msg };
                    bad(&["intake", "max_amount"], msg);
                }
            };
            let Ok(currency) = code.parse::<crate::domain::CurrencyCode>() else {
                report(format!("`{key}` is not an ISO 4217 currency code (three letters, e.g. CNY)"));
                continue;
            };
            match crate::domain::money::parse_decimal(limit) {
                Ok(d) if d > rust_decimal::Decimal::ZERO => {
                    if max_amount.insert(currency, d).is_some() {
                        report(format!("the limit for {currency} is given twice"));
                    }
                }
                Ok(_) => report(format!("the limit for {currency} must be positive, got `{limit}`")),
                Err(e) => report(format!("{e}; write the limit as a decimal string, e.g. \"10000000000\"")),
            }
        }
        let d = &self.dispatcher;
        if d.concurrency == 0 || d.max_attempts == 0 || d.backoff_initial_ms == 0 || d.sweep_interval_ms == 0 {
            bad(
                &["dispatcher"],
                "concurrency, max_attempts, backoff_initial_ms and sweep_interval_ms must be positive".into(),
            );
        }
        if d.backoff_max_ms < d.backoff_initial_ms {
            bad(&["dispatcher", "backoff_max_ms"], "must be at least backoff_initial_ms".into());
        }
        let queue_alerts = QueueAlerts {
            outbox: self.limits.outbox_alert,
            dead_letters: self.limits.dead_letters_alert,
            unmatched_payments: self.limits.unmatched_payments_alert,
        };
        for (key, v) in [
            ("outbox_alert", queue_alerts.outbox),
            ("dead_letters_alert", queue_alerts.dead_letters),
            ("unmatched_payments_alert", queue_alerts.unmatched_payments),
        ] {
            if v == 0 {
                bad(&["limits", key], "must be at least 1".into());
            }
        }
        let time_zone = match self.site.time_zone.parse::<chrono_tz::Tz>() {
            Ok(tz) => tz,
            Err(_) => {
                bad(
                    &["site", "time_zone"],
                    format!("`{}` is not an IANA time zone (e.g. Asia/Shanghai)", self.site.time_zone),
                );
                chrono_tz::UTC
            }
        };
        let default_locale = match self.site.default_locale.parse::<Locale>() {
            Ok(l) => l,
            Err(e) => {
                bad(&["site", "default_locale"], e.to_string());
                Locale::ZhCn
            }
        };
        if let Some(u) = &self.site.public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            bad(&["site", "public_url"], format!("`{u}` is not an http(s) URL"));
        }
        if !is_hex_color(&self.site.color) {
            bad(&["site", "color"], format!("`{}` is not a colour written #rrggbb", self.site.color));
        }
        let site_logo = match self.site.logo.as_deref().map(|l| Logo::read(&config_dir.join(l))) {
            Some(Ok(logo)) => Some(logo),
            Some(Err(e)) => {
                bad(&["site", "logo"], e);
                None
            }
            None => None,
        };
        let resolve = |r: &str| -> Result<Option<SecretString>, String> {
            match SecretRef::parse(r)?.resolve(config_dir) {
                Ok(s) => Ok(Some(s)),
                Err(_) if !strict => Ok(None),
                Err(e) => Err(e),
            }
        };
        let smtp = match &self.smtp {
            None => None,
            Some(m) => {
                let tls = match m.tls.as_str() {
                    "none" => SmtpTls::None,
                    "starttls" => SmtpTls::StartTls,
                    "tls" => SmtpTls::Implicit,
                    other => {
                        bad(&["smtp", "tls"], format!("`{other}` is not a TLS mode (starttls, tls, none)"));
                        SmtpTls::StartTls
                    }
                };
                let credentials = match (&m.username, &m.password) {
                    (None, None) => None,
                    (Some(u), Some(p)) => match resolve(p) {
                        Ok(Some(secret)) => {
                            if strict
                                && let Err(m) = checks.judge(p, secrecy::ExposeSecret::expose_secret(&secret), None)
                            {
                                bad(&["smtp", "password"], m);
                            }
                            Some((u.clone(), secret))
                        }
                        Ok(None) => None,
                        Err(e) => {
                            bad(&["smtp", "password"], e);
                            None
                        }
                    },
                    _ => {
                        bad(&["smtp"], "`username` and `password` go together".into());
                        None
                    }
                };
                let ca_pem = match &m.ca_file {
                    None => None,
                    Some(p) => {
                        let p = if p.is_absolute() { p.clone() } else { config_dir.join(p) };
                        match std::fs::read(&p) {
                            Ok(b) if b.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => Some(b),
                            Ok(_) => {
                                bad(&["smtp", "ca_file"], format!("{} holds no PEM certificate", p.display()));
                                None
                            }
                            Err(e) => {
                                bad(&["smtp", "ca_file"], format!("cannot read {}: {e}", p.display()));
                                None
                            }
                        }
                    }
                };
                for (key, v) in [("from", Some(&m.from)), ("reply_to", m.reply_to.as_ref())] {
                    if let Some(v) = v
                        && v.parse::<lettre::message::Mailbox>().is_err()
                    {
                        bad(
                            &["smtp", key],
                            format!("`{v}` is not a mailbox (`Name <address@domain>` or `address@domain`)"),
                        );
                    }
                }
                if m.pool_max == 0 || m.timeout_secs == 0 {
                    bad(&["smtp"], "pool_max and timeout_secs must be positive".into());
                }
                Some(SmtpSettings {
                    host: m.host.clone(),
                    port: m.port,
                    tls,
                    credentials,
                    ca_pem,
                    timeout: Duration::from_secs(m.timeout_secs.max(1)),
                    pool_max: m.pool_max.max(1),
                    from: m.from.clone(),
                    reply_to: m.reply_to.clone(),
                    hello_name: m.hello_name.clone(),
                })
            }
        };
        let l = &self.links;
        let mut keys = Vec::new();
        for (i, r) in l.secret.iter().chain(l.previous_secrets.iter()).enumerate() {
            let key: &[&str] = if i == 0 { &["links", "secret"] } else { &["links", "previous_secrets"] };
            match resolve(r) {
                Ok(Some(k)) => {
                    let v = secrecy::ExposeSecret::expose_secret(&k);
                    // Empty, placeholder or published first (they say more); then the
                    // length, which even the example must meet.
                    let judged = if strict { checks.judge(r, v, None) } else { Ok(()) };
                    match judged {
                        Err(m) => bad(key, m),
                        Ok(()) if v.len() < crate::secrets::MIN_HMAC_KEY => {
                            bad(key, "a link key must be at least 32 bytes (e.g. `openssl rand -hex 32`)".into())
                        }
                        Ok(()) => keys.push(k),
                    }
                }
                Ok(None) => {}
                Err(e) => bad(key, e),
            }
        }
        if l.secret.is_none() && !l.previous_secrets.is_empty() {
            bad(&["links", "previous_secrets"], "previous_secrets without a current `secret`".into());
        }
        let hours = [l.approval_ttl_hours, l.status_ttl_hours, l.acceptance_ttl_hours, l.survey_ttl_hours];
        if hours.contains(&0) {
            bad(&["links"], "every *_ttl_hours must be positive".into());
        }
        let links =
            (!keys.is_empty()).then(|| LinkSettings { keys, ttl: hours.map(|h| Duration::from_secs(h * 3600)) });
        let accepted_weak_secrets = checks.accepted;
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Settings {
            config_dir: config_dir.to_owned(),
            listen: SocketAddr::new(host.expect("checked above"), self.server.port),
            admin_listen: SocketAddr::new(admin_host.expect("checked above"), self.server.admin.port),
            max_body_bytes: self.server.max_body_bytes,
            request_timeout: Duration::from_secs(self.server.request_timeout_secs),
            header_read_timeout: Duration::from_secs(self.server.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(self.server.idle_timeout_secs),
            body_timeout: Duration::from_secs(self.server.body_timeout_secs),
            queue_timeout: Duration::from_secs(self.server.queue_timeout_secs),
            max_concurrent_requests: self.server.max_concurrent_requests.max(1),
            admin_token,
            store: crate::store::Options {
                backend: backend.expect("checked above"),
                path: store_path.clone(),
                cache_bytes: self.store.cache_capacity_mb * 1024 * 1024,
                commit_delay: Duration::from_micros(self.store.group_commit_delay_us),
                postgres,
            },
            store_path,
            log_format,
            log_level: self.log.level.clone(),
            intake: crate::engine::IntakeRules { required_fields: self.intake.required_fields.clone(), max_amount },
            dispatcher: DispatcherSettings {
                concurrency: d.concurrency,
                max_attempts: d.max_attempts,
                backoff_initial: Duration::from_millis(d.backoff_initial_ms),
                backoff_max: Duration::from_millis(d.backoff_max_ms),
                sweep_interval: Duration::from_millis(d.sweep_interval_ms),
                queue_alerts,
            },
            site_name: self.site.name.clone(),
            site_logo,
            site_color: self.site.color.clone(),
            public_url: self.site.public_url.as_deref().map(|u| u.trim_end_matches('/').to_owned()),
            presentation: Presentation { time_zone, default_locale },
            smtp,
            links,
            scheduler_sweep_interval: Duration::from_millis(self.scheduler.sweep_interval_ms.max(10)),
            secret_policy,
            accepted_weak_secrets,
        })
    }
}

/// How weak secrets are judged: `example = true` counts only while both listeners
/// (public and admin) are on loopback addresses (the example's published secrets must
/// never face a network).
fn secret_policy(example: bool, hosts: Option<(IpAddr, IpAddr)>, path: &Path, text: &str) -> crate::secrets::Policy {
    let on_loopback = hosts.is_some_and(|(public, admin)| public.is_loopback() && admin.is_loopback());
    let at = match locate(text, &["example"]) {
        Some(span) => Diagnostic::at(path, text, Some(span), ""),
        None => Diagnostic::file(Path::new(&format!("env {ENV_PREFIX}__EXAMPLE")), ""),
    };
    crate::secrets::Policy {
        example: (example && on_loopback).then_some(at),
        example_off_loopback: example && !on_loopback,
    }
}

impl Settings {
    /// The secret policy of the configuration in `config_dir`, read from its
    /// `example` and `server.host` (file and environment) without the rest of the
    /// settings, for loaders that must judge secrets even when the settings have
    /// problems of their own.
    pub fn secret_policy(config_dir: &Path) -> crate::secrets::Policy {
        let path = Settings::file_path(config_dir);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let table: toml::Table = toml::from_str(&text).unwrap_or_default();
        let env = |k: &str| std::env::var(format!("{ENV_PREFIX}__{k}")).ok();
        let example = match env("EXAMPLE") {
            Some(v) => v.trim().eq_ignore_ascii_case("true"),
            None => table.get("example").and_then(toml::Value::as_bool).unwrap_or(false),
        };
        let host = env("SERVER__HOST")
            .or_else(|| table.get("server")?.get("host")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| RawServer::default().host);
        let admin_host = env("SERVER__ADMIN__HOST")
            .or_else(|| table.get("server")?.get("admin")?.get("host")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| RawAdmin::default().host);
        secret_policy(example, host.parse().ok().zip(admin_host.parse().ok()), &path, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, Vec<Diagnostic>> {
        let raw: RawSettings = toml::from_str(text).unwrap();
        raw.parse(Path::new("."), Path::new("orderbridge.toml"), text, false)
    }

    #[test]
    fn intake_max_amount_is_read_per_currency_and_checked_with_its_line() {
        let s = parse("[intake.max_amount]\nCNY = \"10000000000\"\nusd = \"1500000000.50\"\n").unwrap();
        let limits: Vec<String> = s.intake.max_amount.iter().map(|(c, d)| format!("{c} {d}")).collect();
        assert_eq!(limits, ["CNY 10000000000", "USD 1500000000.50"]);
        assert!(parse("").unwrap().intake.max_amount.is_empty(), "no limits unless configured");

        let text = "[intake.max_amount]\nCNY = \"ten billion\"\nUSD = \"0\"\nEURO = \"5\"\nJPY = \"1e9\"\n";
        let problems: Vec<String> = parse(text).unwrap_err().iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "orderbridge.toml:2:7: `ten billion` is not a decimal amount; write the limit as a decimal string, e.g. \"10000000000\"",
                "orderbridge.toml:4:8: `EURO` is not an ISO 4217 currency code (three letters, e.g. CNY)",
                "orderbridge.toml:5:7: `1e9` is not a decimal amount; write the limit as a decimal string, e.g. \"10000000000\"",
                "orderbridge.toml:3:7: the limit for USD must be positive, got `0`",
            ]
        );
        // A number instead of a string is a shape error, located by toml.
        assert!(toml::from_str::<RawSettings>("[intake.max_amount]\nCNY = 10000000000\n").is_err());
    }

    #[test]
    fn server_timeouts_have_defaults_and_zero_is_refused_with_its_line() {
        let s = parse("").unwrap();
        assert_eq!(
            (s.header_read_timeout, s.idle_timeout, s.body_timeout, s.queue_timeout, s.request_timeout),
            (
                Duration::from_secs(10),
                Duration::from_secs(60),
                Duration::from_secs(30),
                Duration::from_secs(10),
                Duration::from_secs(30)
            )
        );
        assert_eq!(s.admin_listen, "127.0.0.1:8081".parse().unwrap());

        let text = "[server]\nheader_read_timeout_secs = 0\nidle_timeout_secs = 0\nbody_timeout_secs = 0\nrequest_timeout_secs = 5\nqueue_timeout_secs = 6\n";
        let problems: Vec<String> = parse(text).unwrap_err().iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "orderbridge.toml:2:28: must be at least 1 (seconds); there is no \"no limit\"",
                "orderbridge.toml:3:21: must be at least 1 (seconds); there is no \"no limit\"",
                "orderbridge.toml:4:21: must be at least 1 (seconds); there is no \"no limit\"",
                "orderbridge.toml:6:22: must not exceed request_timeout_secs (5): the wait for a slot is part of the request's time",
            ]
        );
    }

    #[test]
    fn the_admin_listener_is_an_address_with_a_port_of_its_own() {
        let s = parse("[server.admin]\nhost = \"10.0.0.5\"\nport = 9443\n").unwrap();
        assert_eq!(s.admin_listen, "10.0.0.5:9443".parse().unwrap());
        let problems: Vec<String> =
            parse("[server]\nport = 8080\n[server.admin]\nhost = \"admin.local\"\nport = 8080\n")
                .unwrap_err()
                .iter()
                .map(ToString::to_string)
                .collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("`admin.local` is not an IP address"), "{problems:?}");
        assert!(problems[1].contains("needs a port of its own, not server.port (8080)"), "{problems:?}");
        // Off loopback, the example's demo secrets are not accepted any more.
        let s = parse("example = true\n[server.admin]\nhost = \"0.0.0.0\"\n").unwrap();
        assert!(s.secret_policy.example.is_none() && s.secret_policy.example_off_loopback);
    }

    #[test]
    fn the_pages_logo_and_colour_are_read_and_checked() {
        let s = parse("").unwrap();
        assert_eq!((s.site_color.as_str(), s.site_logo.is_none()), (DEFAULT_COLOR, true));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("logo.svg"), "<svg xmlns=\"http://www.w3.org/2000/svg\"/>").unwrap();
        std::fs::write(dir.path().join("logo.gif"), "GIF89a").unwrap();
        let parse_in = |text: &str| {
            let raw: RawSettings = toml::from_str(text).unwrap();
            raw.parse(dir.path(), Path::new("orderbridge.toml"), text, false)
        };
        let s = parse_in("[site]\nlogo = \"logo.svg\"\ncolor = \"#8a1c2b\"\n").unwrap();
        assert_eq!(s.site_color, "#8a1c2b");
        assert_eq!(s.site_logo.as_ref().map(|l| l.content_type), Some("image/svg+xml"));
        let problems: Vec<String> = parse_in("[site]\nlogo = \"logo.gif\"\ncolor = \"red\"\n")
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("`red` is not a colour written #rrggbb"), "{problems:?}");
        assert!(problems[1].contains("a logo is an .svg, .png, .jpg or .webp file"), "{problems:?}");
        assert!(parse_in("[site]\nlogo = \"missing.png\"\n").is_err());
    }

    #[test]
    fn queue_alert_sizes_have_defaults_and_must_be_positive() {
        let alerts = parse("").unwrap().dispatcher.queue_alerts;
        assert_eq!(alerts, QueueAlerts { outbox: 100_000, dead_letters: 1_000, unmatched_payments: 1_000 });
        assert_eq!(alerts, QueueAlerts::default());
        assert_eq!(parse("[limits]\noutbox_alert = 5000\n").unwrap().dispatcher.queue_alerts.outbox, 5000);
        let problems: Vec<String> =
            parse("[limits]\ndead_letters_alert = 0\n").unwrap_err().iter().map(ToString::to_string).collect();
        assert_eq!(problems, ["orderbridge.toml:2:22: must be at least 1"]);
        assert!(toml::from_str::<RawSettings>("[limits]\noutbox = 5\n").is_err(), "unknown keys are refused");
    }

    #[test]
    fn the_postgres_backend_needs_a_url_reference_and_never_echoes_it() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("url");
        let parse_in = |text: &str| {
            let raw: RawSettings = toml::from_str(text).unwrap();
            raw.parse(dir.path(), Path::new("orderbridge.toml"), text, true)
        };
        let problems = |text: &str| -> Vec<String> {
            parse_in(text).err().unwrap_or_default().iter().map(ToString::to_string).collect()
        };
        std::fs::write(&url, "postgres://orderbridge:s3cret-pw@db.internal:5432/orderbridge\n").unwrap();
        let ok = "[store]\nbackend = \"postgres\"\nurl = \"file:url\"\npool_size = 8\n";
        let s = parse_in(ok).unwrap_or_else(|ps| panic!("{ps:?}"));
        let pg = s.store.postgres.expect("postgres options");
        assert_eq!((s.store.backend, pg.max_connections), (crate::store::Backend::Postgres, 8));
        assert!(!format!("{pg:?}").contains("s3cret-pw"), "the URL is a secret");

        let missing = problems("[store]\nbackend = \"postgres\"\n");
        assert!(missing.iter().any(|p| p.contains("store.url") || p.contains("required")), "{missing:?}");
        let inline = problems("[store]\nbackend = \"postgres\"\nurl = \"postgres://u:pw@h/db\"\n");
        assert!(inline.iter().any(|p| p.contains("a secret must be a reference")), "{inline:?}");
        assert!(!inline.concat().contains("u:pw"), "{inline:?}");
        std::fs::write(&url, "mysql://u:s3cret-pw@h/db").unwrap();
        let other = problems(ok);
        assert!(other.iter().any(|p| p.contains("not a PostgreSQL URL")), "{other:?}");
        assert!(!other.concat().contains("s3cret-pw"), "{other:?}");
        let embedded = problems("[store]\nurl = \"file:url\"\n");
        assert!(embedded.iter().any(|p| p.contains("only for backend")), "{embedded:?}");
        let zero = problems("[store]\npool_size = 0\nacquire_timeout_secs = 0\n");
        assert_eq!(zero.len(), 2, "{zero:?}");
    }

    #[test]
    fn secret_refs() {
        assert_eq!(SecretRef::parse("${A_B}"), Ok(SecretRef::Env("A_B".into())));
        assert_eq!(SecretRef::parse("file:/run/secrets/x"), Ok(SecretRef::File("/run/secrets/x".into())));
        assert!(SecretRef::parse("hunter2").is_err());
        assert!(SecretRef::parse("${}").is_err());
        let e = SecretRef::Env("ORDERBRIDGE_TEST_SURELY_UNSET".into()).resolve(Path::new(".")).unwrap_err();
        assert!(e.contains("ORDERBRIDGE_TEST_SURELY_UNSET"));
    }
}
