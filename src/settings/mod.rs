//! Settings: `config/orderbridge.toml`, then `ORDERBRIDGE__SECTION__KEY` environment
//! overrides (the `config` crate), parsed into typed `Settings`.
//!
//! The file is also read with `toml` so that shape errors carry `line:col`; an error
//! that only appears after the environment is merged is reported against the
//! variable's name. Secrets are references (`${NAME}` or `file:PATH`) resolved into
//! `SecretString` here, never written inline and never logged.
//!
//! One file per section: `server`, `store`, `site`, `mail` (`[smtp]`, `[links]`),
//! `limits` (`[intake]`, `[dispatcher]`, `[scheduler]`, `[limits]`), `archive`;
//! `secret_ref` for secret references. Each holds the raw shape and the checks that
//! give it meaning; `RawSettings::parse` runs them in file order and assembles `Settings`.

mod archive;
mod audit;
mod console;
mod evidence;
mod limits;
mod mail;
mod privacy;
mod rules;
mod secret_ref;
mod server;
mod site;
mod store;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

pub use self::archive::ArchiveSettings;
use self::archive::RawArchive;
pub use self::limits::{DispatcherSettings, QueueAlerts};
use self::limits::{RawDispatcher, RawIntake, RawLimits, RawScheduler};
pub use self::mail::{LinkSettings, SmtpSettings, SmtpTls};
use self::mail::{RawLinks, RawSmtp};
pub(crate) use self::secret_ref::SecretRef;
pub(crate) use self::secret_ref::SecretResolver;
use self::server::{RawAdmin, RawServer};
pub use self::site::Logo;
use self::site::RawSite;
use self::store::RawStore;
pub use self::store::postgres_defaults;
pub(crate) use crate::auth::oidc::OidcSettings;
use crate::diagnostics::{Diagnostic, locate};
use crate::locale::Presentation;
use crate::telemetry::LogFormat;

pub(crate) const ENV_PREFIX: &str = "ORDERBRIDGE";

/// `config/orderbridge.toml` as written. Every field has a default that works for the
/// example configuration, except secrets, which are references.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSettings {
    /// Marks the repository's example configuration: its published demo secrets
    /// (README quick start, scripts) and short ones are accepted, with one note,
    /// while the daemon listens on loopback. Never set it in a deployment.
    #[serde(default)]
    pub(crate) example: bool,
    #[serde(default)]
    pub(crate) server: RawServer,
    #[serde(default)]
    pub(crate) store: RawStore,
    #[serde(default)]
    pub(crate) log: RawLog,
    #[serde(default)]
    pub(crate) intake: RawIntake,
    #[serde(default)]
    pub(crate) dispatcher: RawDispatcher,
    #[serde(default)]
    pub(crate) limits: RawLimits,
    #[serde(default)]
    pub(crate) site: RawSite,
    /// Outgoing mail; without it the daemon sends none (and `check` refuses
    /// notification rules).
    pub(crate) smtp: Option<RawSmtp>,
    #[serde(default)]
    pub(crate) links: RawLinks,
    #[serde(default)]
    pub(crate) scheduler: RawScheduler,
    #[serde(default)]
    pub(crate) archive: RawArchive,
    #[serde(default)]
    pub(crate) console: console::RawConsole,
    #[serde(default)]
    pub(crate) evidence: evidence::RawEvidence,
    #[serde(default)]
    pub(crate) audit: audit::RawAudit,
    #[serde(default)]
    pub(crate) privacy: privacy::RawPrivacy,
    #[serde(default)]
    pub(crate) rules: rules::RawRules,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLog {
    /// `text` for people, `json` for log collectors.
    pub(crate) format: String,
    /// A tracing filter, e.g. `info` or `orderbridge=debug,info`. `RUST_LOG` wins.
    pub(crate) level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog { format: "text".into(), level: "info".into() }
    }
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
    /// The Ed25519 key that signs evidence packs (`[evidence] signing_key`).
    pub evidence_key: Option<SecretString>,
    /// The keys that seal the audit chain (`[audit]`); empty: plain SHA-256 chains.
    pub audit_keys: crate::orders::seal::AuditKeys,
    /// How often the daemon writes an audit anchor (`[audit] anchor_every_minutes`;
    /// `None`: only `audit anchor`).
    pub audit_anchor_every: Option<Duration>,
    /// The connector operation each new anchor is pushed to (`[audit] anchor_push`).
    pub(crate) audit_anchor_push: Option<(crate::domain::ConnectorId, String)>,
    /// The keys that encrypt personal data, and its retention (`[privacy]`).
    pub privacy_keys: crate::vault::PrivacyKeys,
    pub scheduler_sweep_interval: Duration,
    /// Moving ended orders to the archive, and purging them (`[archive]`).
    pub archive: ArchiveSettings,
    /// How weak secrets are judged (`example = true` on loopback accepts the demo ones).
    pub secret_policy: crate::secrets::Policy,
    /// Secret references accepted only because this is the example configuration.
    pub accepted_weak_secrets: Vec<String>,
    /// Console sessions and sign-in links (`[console]`).
    pub(crate) console: crate::auth::sessions::Limits,
    /// Console sign-in through an OpenID Connect provider (`[console.oidc]`).
    pub(crate) oidc: Option<OidcSettings>,
    /// `rules.require_review`: start only on approved rules (`crate::review`); `run
    /// --allow-unreviewed-rules` turns it off for one process.
    pub require_review: bool,
    /// `check`'s warning when review is off (located at the key).
    pub(crate) review_off: Option<Diagnostic>,
}

/// Collects the problems of one settings file, each located at its key in the file
/// (and naming the variable when the environment set it).
pub(crate) struct Problems<'a> {
    path: &'a Path,
    text: &'a str,
    found: Vec<Diagnostic>,
}

impl<'a> Problems<'a> {
    fn new(path: &'a Path, text: &'a str) -> Self {
        Problems { path, text, found: Vec::new() }
    }

    fn bad(&mut self, keys: &[&str], msg: String) {
        let env = format!("{ENV_PREFIX}__{}", keys.join("__").to_uppercase());
        let msg = if std::env::var_os(&env).is_some() { format!("{msg} (set by env {env})") } else { msg };
        self.found.push(Diagnostic::at(self.path, self.text, locate(self.text, keys), msg));
    }
}

impl Settings {
    pub(crate) fn file_path(config_dir: &Path) -> PathBuf {
        config_dir.join("config").join("orderbridge.toml")
    }

    /// Loads the file and the environment, and parses both.
    ///
    /// # Errors
    /// Every problem found, located in the file or named by its environment variable.
    pub(crate) fn load(config_dir: &Path) -> Result<Settings, Vec<Diagnostic>> {
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
        let raw = merged.map_err(|e| vec![env_problem(&path, &e.to_string())])?;
        raw.parse(config_dir, &path, &text, strict)
    }
}

/// An error that only appeared once the environment was merged, named by the
/// variables that caused it.
fn env_problem(path: &Path, text: &str) -> Diagnostic {
    let vars: Vec<String> = std::env::vars().map(|(k, _)| k).filter(|k| k.starts_with("ORDERBRIDGE__")).collect();
    // "… for key `server.port` in the environment": name the variable itself.
    let key = text.split("for key `").nth(1).and_then(|r| r.split('`').next());
    let reason = text.split(" for key `").next().unwrap_or(text).to_owned();
    match key.map(|k| format!("{ENV_PREFIX}__{}", k.replace('.', "__").to_uppercase())) {
        Some(var) if vars.contains(&var) => Diagnostic::file(Path::new(&format!("env {var}")), reason),
        // An unknown key names its section: name the variables under it.
        Some(section) => {
            let under: Vec<&String> = vars.iter().filter(|v| v.starts_with(&format!("{section}__"))).collect();
            let names = under.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ");
            Diagnostic::file(Path::new(&format!("env {names}")), reason)
        }
        None => Diagnostic::file(path, format!("with environment overrides ({}): {text}", vars.join(", "))),
    }
}

impl RawSettings {
    /// Meaning checks and secret resolution, section by section in file order. `text`
    /// locates problems in the file.
    pub(crate) fn parse(
        self,
        config_dir: &Path,
        path: &Path,
        text: &str,
        strict: bool,
    ) -> Result<Settings, Vec<Diagnostic>> {
        let mut p = Problems::new(path, text);
        let hosts = server::check_listeners(&self.server, &mut p);
        let secret_policy = secret_policy(self.example, hosts, path, text);
        let mut secrets = SecretResolver { config_dir, strict, checks: crate::secrets::Checks::new(&secret_policy) };
        let admin_token = server::admin_token(&self.server, &mut secrets, &mut p);
        let store = store::options(&self.store, config_dir, strict, &mut p);
        let log_format = match self.log.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                p.bad(&["log", "format"], format!("`{other}` is not a log format (text, json)"));
                LogFormat::Text
            }
        };
        let intake = limits::intake(&self.intake, &mut p);
        let dispatcher = limits::dispatcher(&self.dispatcher, &self.limits, &mut p);
        let (presentation, site_logo) = site::parse(&self.site, config_dir, &mut p);
        let smtp = self.smtp.as_ref().map(|m| mail::smtp(m, &mut secrets, &mut p));
        let links = mail::links(&self.links, &mut secrets, &mut p);
        let archive = archive::parse(&self.archive, config_dir, &store::path(&self.store, config_dir), &mut p);
        let console = console::limits(&self.console, &mut p);
        let oidc = console::oidc(&self.console, &mut secrets, &mut p);
        let evidence_key = evidence::signing_key(&self.evidence, &mut secrets, &mut p);
        let audit_keys = audit::keys(&self.audit, &mut secrets, &mut p);
        let privacy_keys = privacy::keys(&self.privacy, &mut secrets, &mut p);
        let (require_review, review_off) = rules::review(&self.rules, path, text);
        let audit_anchor_push = audit::anchor_push(&self.audit, &mut p);
        let accepted_weak_secrets = secrets.checks.accepted;
        let (Some((host, admin_host)), Some(store), true) = (hosts, store, p.found.is_empty()) else {
            return Err(p.found);
        };
        let s = self.server;
        Ok(Settings {
            config_dir: config_dir.to_owned(),
            listen: SocketAddr::new(host, s.port),
            admin_listen: SocketAddr::new(admin_host, s.admin.port),
            max_body_bytes: s.max_body_bytes,
            request_timeout: Duration::from_secs(s.request_timeout_secs),
            header_read_timeout: Duration::from_secs(s.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(s.idle_timeout_secs),
            body_timeout: Duration::from_secs(s.body_timeout_secs),
            queue_timeout: Duration::from_secs(s.queue_timeout_secs),
            max_concurrent_requests: s.max_concurrent_requests.max(1),
            admin_token,
            store_path: store.path.clone(),
            store,
            log_format,
            log_level: self.log.level,
            intake,
            dispatcher,
            site_name: self.site.name,
            site_logo,
            site_color: self.site.color,
            public_url: self.site.public_url.as_deref().map(|u| u.trim_end_matches('/').to_owned()),
            presentation,
            smtp,
            links,
            evidence_key,
            audit_keys,
            audit_anchor_every: audit::anchor_every(&self.audit),
            audit_anchor_push,
            privacy_keys,
            scheduler_sweep_interval: Duration::from_millis(self.scheduler.sweep_interval_ms.max(10)),
            archive,
            secret_policy,
            accepted_weak_secrets,
            console,
            oidc,
            require_review,
            review_off,
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
    pub(crate) fn secret_policy(config_dir: &Path) -> crate::secrets::Policy {
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
