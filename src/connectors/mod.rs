//! Connectors: one external system each, configured by `connectors/<id>.toml`.
//!
//! A *kind* (`rest` today; vendor presets later) is Rust code; an *instance* is a
//! TOML file named by its id. Capabilities are small traits: webhooks are verified
//! and mapped (`Receive`), effects are performed (`Push`). Errors say what the
//! dispatcher does next: retry, give up, or alert a person (`ConnectorError`).

pub mod limits;
pub mod oauth2;
pub mod odoo;
pub mod presets;
pub mod rest;
pub mod scrub;
pub mod signature;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::diagnostics::Diagnostic;
use crate::domain::ConnectorId;
use crate::mapping::outbound::{OutboundFile, OutboundMapping};
use crate::mapping::{Mapping, MappingFile};
use crate::settings::SecretRef;

/// Installs the process's one TLS crypto provider (ring) if none is installed yet.
/// reqwest is built without a provider of its own, so every HTTP client needs this
/// first; calling it again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What went wrong with an outbound call, and so what to do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// Timeouts, refused connections, 408, 5xx: try again later (an attempt used).
    /// With `retry_after` (the receiver's `Retry-After`), the whole connector waits.
    #[error("temporary failure: {message}")]
    Retryable { message: String, retry_after: Option<Duration> },
    /// 429: the receiver's rate limit. The whole connector waits (until `retry_after`
    /// when given); the effect is tried again without using an attempt, since a rate
    /// limit says nothing about the effect itself.
    #[error("rate limited: {message}")]
    RateLimited { message: String, retry_after: Option<Duration> },
    /// The receiver refused the request itself (other 4xx): retrying cannot help.
    #[error("permanent failure: {message}")]
    Permanent { message: String },
    /// 401/403: credentials are wrong or revoked; a person must act.
    #[error("authentication failed: {message}")]
    Auth { message: String },
}

/// One outbound effect, as the dispatcher hands it to a connector.
#[derive(Debug, Clone)]
pub struct Outbound<'a> {
    pub operation: &'a str,
    pub idempotency_key: &'a str,
    /// The JSON body (order snapshot and effect metadata).
    pub body: &'a serde_json::Value,
}

/// What the receiver answered, kept in the audit trail.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub status: u16,
    /// A short, secret-free summary (e.g. the receiver's id for the created record).
    pub summary: String,
    /// The receiver's id for what it created, when the operation says where to find it.
    pub reference: Option<String>,
}

/// Performs exactly one outbound effect.
pub trait Push: Send + Sync {
    fn perform<'a>(&'a self, effect: Outbound<'a>) -> BoxFuture<'a, Result<Receipt, ConnectorError>>;
}

/// `orderbridge check --online`: is the system there, and do our credentials work?
pub trait Health: Send + Sync {
    /// A one-line success description, or what failed.
    fn check(&self) -> BoxFuture<'_, Result<String, ConnectorError>>;
}

/// Lists records changed since a watermark, one page at a time.
pub trait Poll: Send + Sync {
    fn id(&self) -> &ConnectorId;
    /// When runs start.
    fn schedule(&self) -> &crate::schedule::Schedule;
    /// The mapping applied to each record.
    fn mapping(&self) -> &Arc<Mapping>;
    /// The state of a connector never polled before.
    fn initial(&self) -> PollState;
    /// Fetches the page `state` points at.
    fn fetch<'a>(&'a self, state: &'a PollState) -> BoxFuture<'a, Result<Page, ConnectorError>>;
}

/// Where a polling run stands; committed with every page it ingested.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct PollState {
    /// Records changed at or after this were asked for (the last completed run's maximum).
    pub watermark: Option<String>,
    /// The page to fetch next within the current run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_url: Option<String>,
    /// The highest watermark seen so far in the current run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_max: Option<String>,
    /// Records read so far in the current run.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub run_records: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One fetched page.
pub struct Page {
    pub records: Vec<serde_json::Value>,
    /// How each record's numbers were written (same order as `records`), so amounts
    /// are read exactly; empty when the source's numbers are read as parsed (Odoo's
    /// JSON-RPC sends floats, whose shortest form is what Odoo wrote).
    pub numbers: Vec<crate::mapping::Numbers>,
    /// The state to commit with this page's records.
    pub next: PollState,
    /// True when the run continues with another page.
    pub more: bool,
}

impl PollState {
    /// The state after a page: `next` continues the run (same watermark, the run's
    /// maximum so far), `None` ends it (the watermark moves to the run's maximum).
    ///
    /// With `max_run_records`, a run ends once it has read that many records even if
    /// the source has more pages (search APIs that stop paging at a limit, such as
    /// HubSpot's 10 000): the next run continues from the run's maximum watermark.
    pub fn advance(
        &self,
        page_max: Option<String>,
        page_len: usize,
        next: Option<PollState>,
        max_run_records: Option<u64>,
    ) -> (PollState, bool) {
        let run_max = watermark_max(self.run_max.clone(), page_max);
        let run_records = self.run_records + page_len as u64;
        let next = next.filter(|_| max_run_records.is_none_or(|m| run_records < m));
        match next {
            Some(mut n) => {
                n.watermark = self.watermark.clone();
                n.run_max = run_max;
                n.run_records = run_records;
                (n, true)
            }
            None => {
                (PollState { watermark: watermark_max(self.watermark.clone(), run_max), ..Default::default() }, false)
            }
        }
    }
}

/// A record's modification mark as stored: as the source wrote it (numbers as
/// text). Marks are compared as numbers or times ([`watermark_max`]) and rewritten
/// for requests by the connector's `watermark_format`.
pub fn normalize_watermark(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// The later of two watermarks: as decimals when both are numbers, as times when
/// both are times, else as text.
pub fn watermark_max(a: Option<String>, b: Option<String>) -> Option<String> {
    use crate::mapping::outbound::parse_time;
    match (a, b) {
        (None, x) | (x, None) => x,
        (Some(a), Some(b)) => {
            let newer = match (a.parse::<rust_decimal::Decimal>(), b.parse::<rust_decimal::Decimal>()) {
                (Ok(x), Ok(y)) => y > x,
                _ => match (parse_time(&a), parse_time(&b)) {
                    (Some(x), Some(y)) => y > x,
                    _ => b > a,
                },
            };
            Some(if newer { b } else { a })
        }
    }
}

/// The `kind` of a connector file picks the Rust code; the whole file is then read as
/// that kind's `Config` (read in two steps so every value keeps its location).
#[derive(Debug, Deserialize)]
struct KindOnly {
    kind: Option<String>,
}

/// Connector kinds this build knows: the generic `rest`, presets built on it, and
/// `odoo` (JSON-RPC).
pub const KINDS: &[&str] = &["rest", "hubspot", "xero", "stripe", "erpnext", "odoo"];

#[derive(Debug, Deserialize)]
struct DirectionOnly {
    direction: Option<toml::Spanned<String>>,
}

/// Everything the daemon needs about one connector instance.
pub struct Connector {
    pub id: ConnectorId,
    pub kind: &'static str,
    pub webhook: Option<Webhook>,
    pub push: Option<Arc<dyn Push>>,
    /// Polling for changed records, when configured.
    pub poll: Option<Arc<dyn Poll>>,
    /// The health call of `check --online`, when configured.
    pub health: Option<Arc<dyn Health>>,
    /// Operation names `Push` accepts (checked against `rules.toml`).
    pub operations: Vec<String>,
    /// Slots and rate of its outbound effects (`[limits]`), enforced by the dispatcher.
    pub limits: limits::Limits,
}

/// Inbound webhooks: the verifier and the mapping that turns payloads into orders.
pub struct Webhook {
    pub verifier: signature::Verifier,
    /// Orders arrive at `/webhooks/<id>` through it; `None`: events only.
    pub mapping: Option<Arc<Mapping>>,
    /// Event types it may report at `/webhooks/<id>/events` (`[webhook] events`).
    pub events: Vec<crate::engine::reporting::Reported>,
}

/// All connectors and mappings, loaded and cross-checked.
#[derive(Default)]
pub struct Registry {
    pub connectors: BTreeMap<ConnectorId, Arc<Connector>>,
    pub mappings: BTreeMap<String, Arc<Mapping>>,
    /// Outbound mappings (request bodies), by name.
    pub outbound: BTreeMap<String, Arc<OutboundMapping>>,
    /// Secret references accepted only because this is the example configuration.
    pub accepted_weak_secrets: Vec<String>,
}

impl Registry {
    /// Adds a connector that is part of the daemon rather than a file (`documents`),
    /// with the default limits.
    pub fn add_builtin(&mut self, id: &str, push: Arc<dyn Push>, operations: Vec<String>) {
        self.add_builtin_with_limits(id, push, operations, limits::Limits::default());
    }

    /// `add_builtin` with its own limits (`mail`: slots of its own, see `Limits::own_slots`).
    pub fn add_builtin_with_limits(
        &mut self,
        id: &str,
        push: Arc<dyn Push>,
        operations: Vec<String>,
        limits: limits::Limits,
    ) {
        let id: ConnectorId = id.parse().expect("built-in connector ids are valid");
        self.connectors.insert(
            id.clone(),
            Arc::new(Connector {
                id,
                kind: "builtin",
                webhook: None,
                push: Some(push),
                poll: None,
                health: None,
                operations,
                limits,
            }),
        );
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Connector>> {
        id.parse::<ConnectorId>().ok().and_then(|id| self.connectors.get(&id))
    }

    /// Loads `connectors/*.toml` and `mappings/*.toml` under `config_dir`, judging
    /// secrets by the configuration's own policy (`Settings::secret_policy`).
    ///
    /// # Errors
    /// Every problem in every file, located; and cross-file problems (a mapping for
    /// an unknown connector, a webhook naming an unknown mapping).
    pub fn load(config_dir: &Path) -> Result<(Registry, usize), Vec<Diagnostic>> {
        Registry::load_with(config_dir, &crate::settings::Settings::secret_policy(config_dir))
    }

    /// `load`, judging secrets by `policy`.
    ///
    /// # Errors
    /// As `load`.
    pub fn load_with(config_dir: &Path, policy: &crate::secrets::Policy) -> Result<(Registry, usize), Vec<Diagnostic>> {
        let mut checks = crate::secrets::Checks::new(policy);
        let mut problems = Vec::new();
        let mut files = 0;
        let mut mappings = BTreeMap::new();
        let mut mapping_files = BTreeMap::new();
        let mut outbound = BTreeMap::new();
        for (path, text) in toml_files(&config_dir.join("mappings"), &mut problems) {
            files += 1;
            let id = stem(&path);
            let direction = match toml::from_str::<DirectionOnly>(&text) {
                Ok(d) => d.direction,
                Err(e) => {
                    problems.push(Diagnostic::from_toml(&path, &text, &e));
                    continue;
                }
            };
            let parsed = match direction.as_ref().map(|d| d.get_ref().as_str()) {
                None | Some("inbound") => {
                    toml::from_str::<MappingFile>(&text).map_err(|e| Diagnostic::from_toml(&path, &text, &e)).map(|f| {
                        let connector = f.connector.clone();
                        (f.validate(&id).map(|m| mappings.insert(id.clone(), Arc::new(m))).map(drop), connector)
                    })
                }
                Some("outbound") => toml::from_str::<OutboundFile>(&text)
                    .map_err(|e| Diagnostic::from_toml(&path, &text, &e))
                    .map(|f| {
                        let connector = f.connector.clone();
                        (f.validate(&id).map(|m| outbound.insert(id.clone(), Arc::new(m))).map(drop), connector)
                    }),
                Some(other) => {
                    let span = direction.as_ref().map(toml::Spanned::span);
                    problems.push(Diagnostic::at(
                        &path,
                        &text,
                        span,
                        format!("direction `{other}` is not inbound or outbound"),
                    ));
                    continue;
                }
            };
            match parsed {
                Err(d) => problems.push(d),
                Ok((Err(ps), _)) => {
                    problems.extend(ps.into_iter().map(|p| Diagnostic::at(&path, &text, Some(p.span), p.message)))
                }
                Ok((Ok(()), connector)) => {
                    mapping_files.insert(id, (path, text, connector));
                }
            }
        }

        let mut connectors = BTreeMap::new();
        for (path, text) in toml_files(&config_dir.join("connectors"), &mut problems) {
            files += 1;
            let name = stem(&path);
            let id = match name.parse::<ConnectorId>() {
                Ok(_) if name == crate::engine::notify::MAIL_CONNECTOR => {
                    problems
                        .push(Diagnostic::file(&path, "`mail` is the built-in e-mail connector; choose another name"));
                    continue;
                }
                Ok(_) if name == crate::documents::DOCUMENTS_CONNECTOR => {
                    problems.push(Diagnostic::file(
                        &path,
                        "`documents` is the built-in document generator; choose another name",
                    ));
                    continue;
                }
                Ok(id) => id,
                Err(e) => {
                    problems.push(Diagnostic::file(&path, format!("file name: {e}")));
                    continue;
                }
            };
            let kind = match toml::from_str::<KindOnly>(&text) {
                Ok(KindOnly { kind: Some(k) }) => k,
                Ok(KindOnly { kind: None }) => {
                    problems.push(Diagnostic::at(
                        &path,
                        &text,
                        None,
                        format!("missing `kind` (one of: {})", KINDS.join(", ")),
                    ));
                    continue;
                }
                Err(e) => {
                    problems.push(Diagnostic::from_toml(&path, &text, &e));
                    continue;
                }
            };
            let built = match kind.as_str() {
                "odoo" => match toml::from_str::<odoo::Config>(&text) {
                    Ok(cfg) => cfg.build(&id, config_dir, &mappings, &outbound, &mut checks),
                    Err(e) => Err(vec![(e.span(), e.message().trim().replace('\n', " "))]),
                },
                k => match (KINDS.iter().find(|x| **x == k), toml::from_str::<rest::Config>(&text)) {
                    (None, _) => Err(vec![(
                        crate::diagnostics::locate(&text, &["kind"]),
                        format!("unknown connector kind `{k}` (one of: {})", KINDS.join(", ")),
                    )]),
                    (Some(_), Err(e)) => Err(vec![(e.span(), e.message().trim().replace('\n', " "))]),
                    (Some(kind), Ok(cfg)) => cfg.with_preset(presets::preset(kind)).build(
                        &id,
                        kind,
                        config_dir,
                        &mappings,
                        &outbound,
                        &mut checks,
                    ),
                },
            };
            match built {
                Ok(c) => {
                    connectors.insert(id, Arc::new(c));
                }
                Err(ps) => {
                    problems.extend(ps.into_iter().map(|(span, m)| Diagnostic::at(&path, &text, span, m)));
                }
            }
        }

        // Outbound mappings render with a sample order: a misspelt field is found now,
        // not when the first effect dead-letters.
        let order = crate::mail::templates::sample_context(crate::locale::Locale::ZhCn)["order"].clone();
        let mut references: Vec<String> = Vec::new();
        for (path, text) in toml_files(&config_dir.join("connectors"), &mut Vec::new()) {
            // Every operation a connector file names (even one with errors elsewhere).
            if let Ok(t) = toml::from_str::<toml::Table>(&text)
                && let Some(ops) = t.get("operations").and_then(toml::Value::as_table)
            {
                references.extend(ops.keys().map(|op| format!("{}.{op}", stem(&path))));
            }
        }
        for m in outbound.values() {
            let mut ctx = crate::mapping::outbound::sample_context(&order, &references);
            ctx["connector"] = m.connector.clone().into();
            if let Err(e) = m.render(&ctx)
                && let Some((path, text, _)) = mapping_files.get(&m.id)
            {
                problems.push(Diagnostic::at(
                    path,
                    text,
                    Some(m.span.clone()),
                    format!("{}: {} (rendered with a sample order)", e.field, e.reason),
                ));
            }
        }

        for (path, text, connector) in mapping_files.values() {
            // A connector file with errors is reported once, not again by each mapping.
            let file = config_dir.join("connectors").join(format!("{}.toml", connector.get_ref()));
            let known =
                file.exists() || connector.get_ref().parse::<ConnectorId>().is_ok_and(|c| connectors.contains_key(&c));
            if !known {
                problems.push(Diagnostic::at(
                    path,
                    text,
                    Some(connector.span()),
                    format!(
                        "connector `{}` does not exist (no connectors/{}.toml)",
                        connector.get_ref(),
                        connector.get_ref()
                    ),
                ));
            }
        }

        if problems.is_empty() {
            Ok((Registry { connectors, mappings, outbound, accepted_weak_secrets: checks.accepted }, files))
        } else {
            Err(problems)
        }
    }
}

impl ConnectorError {
    /// The same error with every secret value in its message, and anything shaped like
    /// a credential, replaced by `[redacted]` (a receiver may echo our credentials back
    /// in its error body), and the message cut to `scrub::MESSAGE_CHARS`.
    pub fn scrubbed(self, secrets: &[secrecy::SecretString]) -> Self {
        let clean = |m: String| scrub::cut(&scrub::scrub(&m, secrets), scrub::MESSAGE_CHARS);
        match self {
            ConnectorError::Retryable { message, retry_after } => {
                ConnectorError::Retryable { message: clean(message), retry_after }
            }
            ConnectorError::RateLimited { message, retry_after } => {
                ConnectorError::RateLimited { message: clean(message), retry_after }
            }
            ConnectorError::Permanent { message } => ConnectorError::Permanent { message: clean(message) },
            ConnectorError::Auth { message } => ConnectorError::Auth { message: clean(message) },
        }
    }
}

/// A secret reference in a connector file, resolved and judged (`crate::secrets`:
/// not empty, not published, at least `need` long), with a located error.
pub(crate) fn resolve_secret(
    value: &toml::Spanned<String>,
    config_dir: &Path,
    checks: &mut crate::secrets::Checks<'_>,
    need: impl FnOnce(&str) -> Option<crate::secrets::Need>,
) -> Result<secrecy::SecretString, (Option<std::ops::Range<usize>>, String)> {
    use secrecy::ExposeSecret as _;
    let at = || Some(value.span());
    let secret = SecretRef::parse(value.get_ref()).and_then(|r| r.resolve(config_dir)).map_err(|e| (at(), e))?;
    let plain = secret.expose_secret();
    checks.judge(value.get_ref(), plain, need(plain)).map_err(|e| (at(), e))?;
    Ok(secret)
}

fn stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The `*.toml` files of a directory, sorted, with their text.
fn toml_files(dir: &Path, problems: &mut Vec<Diagnostic>) -> Vec<(std::path::PathBuf, String)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push(Diagnostic::file(dir, format!("cannot read directory: {e}")));
            return Vec::new();
        }
    };
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| match std::fs::read_to_string(&p) {
            Ok(t) => Some((p, t)),
            Err(e) => {
                problems.push(Diagnostic::file(&p, format!("cannot read: {e}")));
                None
            }
        })
        .collect()
}
