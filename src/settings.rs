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

pub const ENV_PREFIX: &str = "ORDERBRIDGE";

/// `config/orderbridge.toml` as written. Every field has a default that works for the
/// example configuration, except secrets, which are references.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
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
    /// Time limit for one HTTP request, in seconds.
    pub request_timeout_secs: u64,
    /// Bearer token for `/api/*`: `${ENV_NAME}` or `file:PATH`.
    pub admin_token: Option<String>,
    /// Most requests handled at once; more wait (back-pressure).
    pub max_concurrent_requests: usize,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            host: "127.0.0.1".into(),
            port: 8080,
            max_body_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            admin_token: None,
            max_concurrent_requests: 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    /// `sled` (embedded, one process). PostgreSQL comes with the scale-out backend.
    pub backend: String,
    /// Data directory of the embedded store, relative to the config dir unless absolute.
    pub path: PathBuf,
    /// sled's page cache, in MiB. Resident memory is a few times this (sled #1309).
    pub cache_capacity_mb: u64,
    /// Group commit: how long the first waiting write waits for others before the
    /// flush + fsync that makes them all durable, in microseconds (0: flush at once).
    pub group_commit_delay_us: u64,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore { backend: "sled".into(), path: "data".into(), cache_capacity_mb: 32, group_commit_delay_us: 1000 }
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
}

impl Default for RawIntake {
    fn default() -> Self {
        RawIntake { required_fields: vec!["customer.id_document".into(), "term_months".into(), "sales_owner".into()] }
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
        if let Some(name) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
            if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Ok(SecretRef::Env(name.to_owned()));
            }
        }
        if let Some(p) = s.strip_prefix("file:") {
            if !p.is_empty() {
                return Ok(SecretRef::File(p.into()));
            }
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
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub max_concurrent_requests: usize,
    /// `None` disables `/api/*` (every call answers 401).
    pub admin_token: Option<SecretString>,
    pub store_path: PathBuf,
    pub cache_capacity_bytes: u64,
    pub group_commit_delay: Duration,
    pub log_format: LogFormat,
    pub log_level: String,
    pub required_fields: Vec<String>,
    pub dispatcher: DispatcherSettings,
}

#[derive(Debug, Clone)]
pub struct DispatcherSettings {
    pub concurrency: usize,
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub sweep_interval: Duration,
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
        let admin_token = match self.server.admin_token.as_deref().map(SecretRef::parse) {
            None => None,
            Some(Err(e)) => {
                bad(&["server", "admin_token"], e);
                None
            }
            Some(Ok(r)) => match r.resolve(config_dir) {
                Ok(s) => Some(s),
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
        if self.store.backend != "sled" {
            bad(&["store", "backend"], format!("unknown store backend `{}` (available: sled)", self.store.backend));
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
        if !problems.is_empty() {
            return Err(problems);
        }
        let store_path =
            if self.store.path.is_absolute() { self.store.path.clone() } else { config_dir.join(&self.store.path) };
        Ok(Settings {
            config_dir: config_dir.to_owned(),
            listen: SocketAddr::new(host.expect("checked above"), self.server.port),
            max_body_bytes: self.server.max_body_bytes,
            request_timeout: Duration::from_secs(self.server.request_timeout_secs.max(1)),
            max_concurrent_requests: self.server.max_concurrent_requests.max(1),
            admin_token,
            store_path,
            cache_capacity_bytes: self.store.cache_capacity_mb * 1024 * 1024,
            group_commit_delay: Duration::from_micros(self.store.group_commit_delay_us),
            log_format,
            log_level: self.log.level.clone(),
            required_fields: self.intake.required_fields.clone(),
            dispatcher: DispatcherSettings {
                concurrency: d.concurrency,
                max_attempts: d.max_attempts,
                backoff_initial: Duration::from_millis(d.backoff_initial_ms),
                backoff_max: Duration::from_millis(d.backoff_max_ms),
                sweep_interval: Duration::from_millis(d.sweep_interval_ms),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
