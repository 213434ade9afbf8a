//! Connectors: one external system each, configured by `connectors/<id>.toml`.
//!
//! A *kind* (`rest` today; vendor presets later) is Rust code; an *instance* is a
//! TOML file named by its id. Capabilities are small traits: webhooks are verified
//! and mapped (`Receive`), effects are performed (`Push`). Errors say what the
//! dispatcher does next: retry, give up, or alert a person (`ConnectorError`).

pub mod limits;
pub(crate) mod oauth2;
pub(crate) mod odoo;
pub(crate) mod presets;
mod registry;
pub(crate) mod response;
pub(crate) mod rest;
pub(crate) mod scrub;
pub mod signature;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::domain::ConnectorId;
use crate::mapping::Mapping;
use crate::settings::SecretRef;

/// Installs the process's one TLS crypto provider (ring) if none is installed yet.
/// reqwest is built without a provider of its own, so every HTTP client needs this
/// first; calling it again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub use crate::future::BoxFuture;
pub use registry::Registry;

/// The name of the built-in document generator (`crate::documents`), reserved: no
/// connector file may take it.
pub const DOCUMENTS_CONNECTOR: &str = "documents";

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

/// Connector kinds this build knows: the generic `rest`, presets built on it, and
/// `odoo` (JSON-RPC). A file's `kind` is parsed into one once, when it loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectorKind {
    Rest,
    Hubspot,
    Xero,
    Stripe,
    Erpnext,
    Odoo,
}

impl ConnectorKind {
    pub const ALL: [ConnectorKind; 6] = [
        ConnectorKind::Rest,
        ConnectorKind::Hubspot,
        ConnectorKind::Xero,
        ConnectorKind::Stripe,
        ConnectorKind::Erpnext,
        ConnectorKind::Odoo,
    ];

    /// The name a connector file writes as its `kind`.
    pub const fn name(self) -> &'static str {
        match self {
            ConnectorKind::Rest => "rest",
            ConnectorKind::Hubspot => "hubspot",
            ConnectorKind::Xero => "xero",
            ConnectorKind::Stripe => "stripe",
            ConnectorKind::Erpnext => "erpnext",
            ConnectorKind::Odoo => "odoo",
        }
    }

    /// Every kind's name, in `ALL`'s order.
    pub fn names() -> Vec<&'static str> {
        ConnectorKind::ALL.iter().map(|k| k.name()).collect()
    }
}

impl std::str::FromStr for ConnectorKind {
    type Err = String;

    /// # Errors
    /// An unknown name, with the list of known ones.
    fn from_str(s: &str) -> Result<Self, String> {
        ConnectorKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown connector kind `{s}` (one of: {})", ConnectorKind::names().join(", ")))
    }
}

impl std::fmt::Display for ConnectorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The names of [`ConnectorKind::ALL`].
pub const KINDS: &[&str] = &[
    ConnectorKind::Rest.name(),
    ConnectorKind::Hubspot.name(),
    ConnectorKind::Xero.name(),
    ConnectorKind::Stripe.name(),
    ConnectorKind::Erpnext.name(),
    ConnectorKind::Odoo.name(),
];

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
