//! The generic `rest` kind: inbound webhooks (Standard Webhooks signatures, a mapping)
//! and outbound operations (method + path, JSON body, idempotency key header, auth),
//! driven entirely by TOML.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use serde_json_path::JsonPath;
use tokio::sync::Semaphore;
use toml::Spanned;

use super::oauth2::ClientCredentials;
use super::signature::Verifier;
use super::{
    BoxFuture, Connector, ConnectorError, Health, Outbound, Page, Poll, PollState, Push, Receipt, Webhook,
    resolve_secret, watermark_max,
};
use crate::domain::ConnectorId;
use crate::engine::reporting::Reported;
use crate::mapping::Mapping;
use crate::mapping::outbound::{Body, OutboundMapping, Snippets};

type Problems = Vec<(Option<Range<usize>>, String)>;

/// `connectors/<id>.toml` of the `rest` kind or of a preset built on it (`hubspot`,
/// `xero`, `stripe`, `erpnext`): a preset fills in what the file leaves out.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `rest` or a preset's name.
    pub kind: String,
    /// Base URL of outbound calls, e.g. `https://erp.bank.example/api`.
    pub base_url: Option<Spanned<String>>,
    /// Time limit of one outbound call, in seconds (default 10).
    pub timeout_secs: Option<u64>,
    /// The older spelling of `[limits] concurrency`.
    pub max_concurrency: Option<Spanned<usize>>,
    /// Slots and rate of outbound calls (`concurrency`, `rate_per_second`, `burst`).
    pub limits: Option<super::limits::LimitsFile>,
    /// How outbound calls authenticate.
    pub auth: Option<Spanned<AuthFile>>,
    /// Headers sent with every call. A value `${ENV}` or `file:PATH` is a secret.
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<String>>,
    /// Outbound operations by name; `rules.toml` effects refer to these names.
    #[serde(default)]
    pub operations: BTreeMap<String, Spanned<OperationFile>>,
    /// Inbound webhooks from this system.
    pub webhook: Option<Spanned<WebhookFile>>,
    /// Polling this system for changed records (when it sends no webhooks).
    pub poll: Option<Spanned<PollFile>>,
    /// `orderbridge check --online` calls this (GET, path under `base_url`).
    pub health: Option<HealthFile>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    pub path: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PollFile {
    /// `GET` (default) or `POST` (search APIs; the request body is `body`).
    pub method: Option<String>,
    /// Path under `base_url` listing records.
    pub path: Option<String>,
    /// Seconds between polling runs (default 60)…
    pub every_secs: Option<u64>,
    /// …or a cron schedule in `site.time_zone`, e.g. `*/5 8-18 * * MON-FRI`.
    pub cron: Option<String>,
    /// The mapping (`mappings/<name>.toml`) applied to each record.
    pub mapping: Option<Spanned<String>>,
    /// JSONPath to the records in a page (default `$`: the page is the array).
    pub records: Option<String>,
    /// JSONPath into a record to its modification mark (a timestamp or a number).
    pub watermark_field: Option<String>,
    /// Query parameter that asks for records changed at or after the watermark.
    pub watermark_param: Option<String>,
    /// How `{{ watermark }}` is written in requests: `text` (as stored), `rfc3339`,
    /// `unix_s`, `unix_ms`, `odoo` (`YYYY-MM-DD HH:MM:SS`) or `http_date`.
    pub watermark_format: Option<String>,
    /// The watermark of the very first run (default: everything).
    pub start_from: Option<String>,
    /// End a run after this many records even if there are more pages; the next run
    /// continues from the newest watermark seen (for search APIs with a result cap).
    pub max_run_records: Option<u64>,
    /// Query parameters: name → template (`{{ watermark }}`, `{{ cursor }}`,
    /// `{{ offset }}`, `{{ page }}`, `{{ limit }}`); empty values are left out.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Request headers as templates, like `query`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// An outbound mapping rendering the request body (with `method = "POST"`).
    pub body: Option<Spanned<String>>,
    pub paging: Option<PagingFile>,
}

/// How a listing pages.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum PagingFile {
    #[default]
    None,
    /// A cursor in the page body (`next`); absent or null on the last page.
    Cursor {
        next: String,
        /// Query parameter carrying the cursor (or use `{{ cursor }}` in `query`/`body`).
        param: Option<String>,
    },
    /// Offset and limit; a short page is the last.
    Offset { param: Option<String>, limit_param: Option<String>, limit: u32 },
    /// Page numbers from `start` (default 1); a page shorter than `size` is the last.
    Page {
        param: Option<String>,
        #[serde(default = "one")]
        start: u64,
        size: u32,
        size_param: Option<String>,
    },
    /// The last record's id is the next cursor while `more` (a JSONPath into the page)
    /// is true (Stripe's `starting_after` / `has_more`).
    LastId { id: String, more: String, param: Option<String> },
    /// `Link: <…>; rel="next"`.
    Link,
}

fn one() -> u64 {
    1
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// `bearer` (token), `api_key` (header + value), `basic` (username + password),
    /// `oauth2_client_credentials` (token_url + client_id + client_secret [+ scope]; the
    /// client_id may be a reference too) or `frappe` (api_key + api_secret:
    /// `Authorization: token key:secret`).
    pub kind: Option<String>,
    pub token: Option<Spanned<String>>,
    pub header: Option<String>,
    pub value: Option<Spanned<String>>,
    pub username: Option<String>,
    pub password: Option<Spanned<String>>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<Spanned<String>>,
    pub scope: Option<String>,
    pub api_key: Option<Spanned<String>>,
    pub api_secret: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OperationFile {
    /// `POST` (default), `PUT` or `PATCH`.
    pub method: Option<String>,
    /// Path under `base_url`, a template: `{{ order_id }}`, `{{ external_id }}`,
    /// `{{ references["xero.create_invoice"] }}`; values are percent-encoded.
    pub path: Option<String>,
    /// Header carrying the idempotency key (default `Idempotency-Key`; `""`: none).
    pub idempotency_header: Option<String>,
    /// JSONPath into the response body selecting the receiver's id for what it
    /// created (e.g. `$.id`); stored on the order under `<connector>.<operation>`.
    pub reference: Option<String>,
    /// An outbound mapping (`mappings/<name>.toml`, `direction = "outbound"`) that
    /// renders the body; without it the effect (order snapshot and metadata) is sent.
    pub body: Option<Spanned<String>>,
    /// Extra headers, as templates.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Before creating, look for what an earlier, unanswered attempt may have created.
    pub lookup: Option<LookupFile>,
    /// Further calls after the first, in order (e.g. add lines, then finalise); each
    /// sees `{{ reference }}` and `{{ response }}` of the first call.
    #[serde(default)]
    pub then: Vec<StepFile>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct LookupFile {
    /// Path under `base_url` (GET), a template like the operation's.
    pub path: String,
    /// Query parameters as templates.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// JSONPath into the answer: when it selects an id, that is the operation's result.
    pub found: String,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct StepFile {
    #[serde(default = "default_method")]
    pub method: String,
    pub path: String,
    pub body: Option<Spanned<String>>,
}

fn default_method() -> String {
    "POST".into()
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    /// Signature scheme (see `signature::SCHEMES`).
    pub signature: Option<Spanned<String>>,
    /// `${ENV_NAME}` or `file:PATH` holding the signing secret.
    pub secret: Option<Spanned<String>>,
    /// Replay window: deliveries whose timestamp is further from now are refused.
    pub tolerance_secs: Option<u64>,
    /// The mapping (`mappings/<name>.toml`) that turns payloads into orders; without
    /// one the connector only sends events (`POST /webhooks/<id>/events`).
    pub mapping: Option<Spanned<String>>,
    /// The public base URL the sender calls (only `hubspot_v3` signs the URL), e.g.
    /// `https://hooks.bank.example` behind a reverse proxy.
    pub public_url: Option<String>,
    /// Event types this connector may report at `POST /webhooks/<id>/events`
    /// (`task.completed`, `delivery.recorded`, `payment.received`); default none.
    pub events: Option<Spanned<Vec<Spanned<String>>>>,
}

/// Fills what `self` leaves out from a preset.
trait Fill {
    fn fill(&mut self, preset: Self);
}

macro_rules! fill_options {
    ($self:ident, $preset:ident; $($f:ident),*) => {
        $( if $self.$f.is_none() { $self.$f = $preset.$f; } )*
    };
}

/// A section (`[auth]`, `[webhook]`, `[poll]`) is completed only when the file has
/// it: a preset never switches on what the file did not ask for.
impl<T: Fill> Fill for Option<Spanned<T>> {
    fn fill(&mut self, preset: Self) {
        if let (Some(mine), Some(p)) = (self.as_mut(), preset) {
            mine.get_mut().fill(p.into_inner());
        }
    }
}

impl Fill for Config {
    fn fill(&mut self, p: Self) {
        fill_options!(self, p; base_url, timeout_secs, max_concurrency, health);
        // A vendor's published limits apply unless the file sets its own, key by key.
        match (&mut self.limits, p.limits) {
            (None, preset) => self.limits = preset,
            (Some(mine), Some(preset)) => {
                fill_options!(mine, preset; concurrency, rate_per_second, burst);
            }
            (Some(_), None) => {}
        }
        self.auth.fill(p.auth);
        for (k, v) in p.headers {
            self.headers.entry(k).or_insert(v);
        }
        // Only operations the file names are enabled; the preset completes them.
        let mut preset_ops = p.operations;
        for (name, op) in &mut self.operations {
            if let Some(po) = preset_ops.remove(name) {
                op.get_mut().fill(po.into_inner());
            }
        }
        self.webhook.fill(p.webhook);
        self.poll.fill(p.poll);
    }
}

impl Fill for AuthFile {
    fn fill(&mut self, p: Self) {
        if self.kind.is_some() && self.kind != p.kind {
            return;
        }
        fill_options!(self, p; kind, token, header, value, username, password, token_url, client_id, client_secret, scope, api_key, api_secret);
    }
}

impl Fill for OperationFile {
    fn fill(&mut self, p: Self) {
        fill_options!(self, p; method, path, idempotency_header, reference, body, lookup);
        for (k, v) in p.headers {
            self.headers.entry(k).or_insert(v);
        }
        if self.then.is_empty() {
            self.then = p.then;
        }
    }
}

impl Fill for WebhookFile {
    fn fill(&mut self, p: Self) {
        fill_options!(self, p; signature, secret, tolerance_secs, mapping, public_url, events);
    }
}

impl Fill for PollFile {
    fn fill(&mut self, p: Self) {
        fill_options!(self, p; method, path, every_secs, cron, mapping, records, watermark_field, watermark_param, watermark_format, start_from, max_run_records, body, paging);
        for (k, v) in p.query {
            self.query.entry(k).or_insert(v);
        }
        for (k, v) in p.headers {
            self.headers.entry(k).or_insert(v);
        }
    }
}

impl Config {
    /// Completes this file with its preset's defaults (no-op for `rest`).
    pub fn with_preset(mut self, preset: Option<Config>) -> Config {
        if let Some(p) = preset {
            self.fill(p);
        }
        self
    }
}

enum Auth {
    None,
    Bearer(SecretString),
    ApiKey(HeaderName, SecretString),
    Basic(String, SecretString),
    OAuth2(ClientCredentials),
}

/// One HTTP call of an operation.
struct Call {
    method: reqwest::Method,
    /// Template name of the path in `Shared::paths`.
    path: String,
    body: Option<Arc<OutboundMapping>>,
}

struct Lookup {
    path: String,
    query: Vec<(String, String)>,
    found: JsonPath,
}

struct Operation {
    first: Call,
    then: Vec<Call>,
    idempotency_header: Option<HeaderName>,
    reference: Option<JsonPath>,
    headers: Vec<(HeaderName, String)>,
    lookup: Option<Lookup>,
}

/// What pushes and polls of one connector share.
struct Shared {
    id: ConnectorId,
    client: reqwest::Client,
    base: Url,
    auth: Auth,
    /// Connector-wide headers (secret values are marked sensitive).
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Path templates (values percent-encoded).
    paths: Snippets,
    /// Query, header and body templates.
    values: Snippets,
    secrets: Vec<SecretString>,
}

/// The outbound half of a `rest` connector.
pub struct RestPush {
    shared: Arc<Shared>,
    operations: BTreeMap<String, Operation>,
    permits: Semaphore,
}

type Outbounds = BTreeMap<String, Arc<OutboundMapping>>;

/// Validation context of one connector file.
struct Builder<'a, 'p> {
    /// Every secret value the file resolved, scrubbed from error messages.
    secrets: Vec<SecretString>,
    /// Judges each secret (not empty, not published, long enough).
    checks: &'a mut crate::secrets::Checks<'p>,
    config_dir: &'a Path,
    mappings: &'a BTreeMap<String, Arc<Mapping>>,
    outbound: &'a Outbounds,
    problems: Problems,
    paths: Snippets,
    values: Snippets,
}

impl Builder<'_, '_> {
    fn inbound(&mut self, name: &Spanned<String>) -> Option<Arc<Mapping>> {
        let m = self.mappings.get(name.get_ref()).cloned();
        if m.is_none() {
            let hint = if self.outbound.contains_key(name.get_ref()) { " (it is an outbound mapping)" } else { "" };
            self.problems.push((
                Some(name.span()),
                format!(
                    "mapping `{}` does not exist (no inbound mappings/{}.toml, or it has errors){hint}",
                    name.get_ref(),
                    name.get_ref()
                ),
            ));
        }
        m
    }

    fn outbound(&mut self, name: &Spanned<String>) -> Option<Arc<OutboundMapping>> {
        let m = self.outbound.get(name.get_ref()).cloned();
        if m.is_none() {
            self.problems.push((
                Some(name.span()),
                format!(
                    "outbound mapping `{}` does not exist (no mappings/{}.toml with direction = \"outbound\", or it has errors)",
                    name.get_ref(),
                    name.get_ref()
                ),
            ));
        }
        m
    }

    /// Registers a template under a fresh name and returns the name.
    fn template(&mut self, path: bool, name: String, source: &str, span: &Range<usize>) -> String {
        let set = if path { &mut self.paths } else { &mut self.values };
        if let Err(e) = set.add(&name, source) {
            self.problems.push((Some(span.clone()), e));
        }
        name
    }

    fn method(&mut self, text: &str, span: &Range<usize>, what: &str) -> Option<reqwest::Method> {
        match text.to_ascii_uppercase().as_str() {
            "GET" => Some(reqwest::Method::GET),
            "POST" => Some(reqwest::Method::POST),
            "PUT" => Some(reqwest::Method::PUT),
            "PATCH" => Some(reqwest::Method::PATCH),
            "DELETE" => Some(reqwest::Method::DELETE),
            other => {
                self.problems.push((
                    Some(span.clone()),
                    format!("{what}: method `{other}` is not GET, POST, PUT, PATCH or DELETE"),
                ));
                None
            }
        }
    }

    fn secret(
        &mut self,
        v: &Option<Spanned<String>>,
        span: &Range<usize>,
        kind: &str,
        what: &str,
    ) -> Option<SecretString> {
        match v {
            None => {
                self.problems.push((Some(span.clone()), format!("auth kind {kind} needs `{what}`")));
                None
            }
            Some(v) => resolve_secret(v, self.config_dir, self.checks, |_| None)
                .map_err(|p| self.problems.push(p))
                .ok()
                .inspect(|s| self.secrets.push(s.clone())),
        }
    }

    fn auth(&mut self, a: Option<Spanned<AuthFile>>, client: &reqwest::Client) -> Auth {
        let Some(a) = a else { return Auth::None };
        let span = a.span();
        let a = a.into_inner();
        let Some(kind) = a.kind.clone() else {
            self.problems.push((Some(span), "[auth] needs a `kind`".into()));
            return Auth::None;
        };
        match kind.as_str() {
            "bearer" => self.secret(&a.token, &span, &kind, "token").map_or(Auth::None, Auth::Bearer),
            "api_key" => {
                let value = self.secret(&a.value, &span, &kind, "value");
                match a.header.as_deref().map(|h| HeaderName::from_bytes(h.as_bytes())) {
                    Some(Ok(h)) => value.map_or(Auth::None, |v| Auth::ApiKey(h, v)),
                    _ => {
                        self.problems.push((Some(span), "auth kind api_key needs a valid `header`".into()));
                        Auth::None
                    }
                }
            }
            "frappe" => {
                let key = self.secret(&a.api_key, &span, &kind, "api_key");
                let secret = self.secret(&a.api_secret, &span, &kind, "api_secret");
                match (key, secret) {
                    (Some(k), Some(s)) => Auth::ApiKey(
                        HeaderName::from_static("authorization"),
                        SecretString::from(format!("token {}:{}", k.expose_secret(), s.expose_secret())),
                    ),
                    _ => Auth::None,
                }
            }
            "oauth2_client_credentials" => {
                let client_secret = self.secret(&a.client_secret, &span, &kind, "client_secret");
                let url = a.token_url.as_deref().map(Url::parse);
                match (url, &a.client_id, client_secret) {
                    (Some(Ok(url)), Some(id), Some(cs)) if matches!(url.scheme(), "http" | "https") => {
                        // The id is no secret, but files may keep it beside the secret
                        // (`${XERO_CLIENT_ID}`): a reference resolves, plain text is the id.
                        let id = if id.starts_with("${") || id.starts_with("file:") {
                            let r = crate::settings::SecretRef::parse(id).and_then(|r| r.resolve(self.config_dir));
                            match r {
                                Ok(id) => id.expose_secret().to_owned(),
                                Err(e) => {
                                    self.problems.push((Some(span), format!("client_id: {e}")));
                                    return Auth::None;
                                }
                            }
                        } else {
                            id.clone()
                        };
                        Auth::OAuth2(ClientCredentials::new(url, id, cs, a.scope.clone(), client.clone()))
                    }
                    _ => {
                        self.problems.push((
                            Some(span),
                            "auth kind oauth2_client_credentials needs an http(s) `token_url`, `client_id` and `client_secret`".into(),
                        ));
                        Auth::None
                    }
                }
            }
            "basic" => {
                let password = self.secret(&a.password, &span, &kind, "password");
                match (&a.username, password) {
                    (Some(u), Some(p)) => {
                        // An echoed Authorization header carries the pair in base64.
                        use base64::Engine as _;
                        let pair = format!("{u}:{}", p.expose_secret());
                        self.secrets.push(SecretString::from(base64::engine::general_purpose::STANDARD.encode(pair)));
                        Auth::Basic(u.clone(), p)
                    }
                    _ => {
                        self.problems.push((Some(span), "auth kind basic needs `username` and `password`".into()));
                        Auth::None
                    }
                }
            }
            other => {
                self.problems.push((
                    Some(span),
                    format!("auth kind `{other}` is not bearer, api_key, basic, oauth2_client_credentials or frappe"),
                ));
                Auth::None
            }
        }
    }

    fn headers(&mut self, headers: BTreeMap<String, Spanned<String>>) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        for (name, value) in headers {
            let span = value.span();
            let Ok(h) = HeaderName::from_bytes(name.as_bytes()) else {
                self.problems.push((Some(span), format!("`{name}` is not a header name")));
                continue;
            };
            let text = value.get_ref();
            let secret = text.starts_with("${") || text.starts_with("file:");
            let resolved = if secret {
                match resolve_secret(&value, self.config_dir, self.checks, |_| None) {
                    Ok(s) => {
                        self.secrets.push(s.clone());
                        s.expose_secret().to_owned()
                    }
                    Err(p) => {
                        self.problems.push(p);
                        continue;
                    }
                }
            } else {
                text.clone()
            };
            match HeaderValue::from_str(&resolved) {
                Ok(mut v) => {
                    v.set_sensitive(secret);
                    out.push((h, v));
                }
                Err(_) => {
                    self.problems.push((Some(span), format!("header `{name}`: the value is not allowed in a header")))
                }
            }
        }
        out
    }

    fn operation(&mut self, name: &str, op: Spanned<OperationFile>) -> Option<Operation> {
        let span = op.span();
        let op = op.into_inner();
        let what = format!("operation {name}");
        let method = self.method(op.method.as_deref().unwrap_or("POST"), &span, &what);
        let Some(path) = op.path.clone() else {
            self.problems.push((Some(span), format!("{what}: needs a `path`")));
            return None;
        };
        if !path.starts_with('/') {
            self.problems.push((Some(span.clone()), format!("{what}: path must start with `/`")));
        }
        let path = self.template(true, format!("{name}.path"), &legacy_placeholders(&path), &span);
        let body = op.body.as_ref().and_then(|b| self.outbound(b));
        let idempotency_header = match op.idempotency_header.as_deref().unwrap_or("Idempotency-Key") {
            "" => None,
            h => match HeaderName::from_bytes(h.as_bytes()) {
                Ok(h) => Some(h),
                Err(_) => {
                    self.problems.push((Some(span.clone()), format!("{what}: `{h}` is not a header name")));
                    None
                }
            },
        };
        let reference = op.reference.as_deref().and_then(|r| self.json_path(r, &span, &format!("{what}: reference")));
        let mut headers = Vec::new();
        for (h, t) in &op.headers {
            match HeaderName::from_bytes(h.as_bytes()) {
                Ok(hn) => headers.push((hn, self.template(false, format!("{name}.header.{h}"), t, &span))),
                Err(_) => self.problems.push((Some(span.clone()), format!("{what}: `{h}` is not a header name"))),
            }
        }
        let lookup = op.lookup.as_ref().map(|l| Lookup {
            path: self.template(true, format!("{name}.lookup.path"), &legacy_placeholders(&l.path), &span),
            query: l
                .query
                .iter()
                .map(|(k, t)| (k.clone(), self.template(false, format!("{name}.lookup.query.{k}"), t, &span)))
                .collect(),
            found: self
                .json_path(&l.found, &span, &format!("{what}: lookup.found"))
                .unwrap_or_else(|| JsonPath::parse("$").expect("valid")),
        });
        let mut then = Vec::new();
        for (i, step) in op.then.iter().enumerate() {
            let m = self.method(&step.method, &span, &format!("{what}: then[{i}]"));
            let p = self.template(true, format!("{name}.then.{i}.path"), &step.path, &span);
            let b = step.body.as_ref().and_then(|b| self.outbound(b));
            if let Some(m) = m {
                then.push(Call { method: m, path: p, body: b });
            }
        }
        Some(Operation {
            first: Call { method: method?, path, body },
            then,
            idempotency_header,
            reference,
            headers,
            lookup,
        })
    }

    fn json_path(&mut self, text: &str, span: &Range<usize>, what: &str) -> Option<JsonPath> {
        JsonPath::parse(text)
            .map_err(|e| self.problems.push((Some(span.clone()), format!("{what}: `{text}` is not a JSONPath: {e}"))))
            .ok()
    }

    fn poll(&mut self, p: Spanned<PollFile>) -> Option<PollPlan> {
        let span = p.span();
        let p = p.into_inner();
        let bad = |b: &mut Self, m: String| b.problems.push((Some(span.clone()), format!("poll: {m}")));
        let method = self.method(p.method.as_deref().unwrap_or("GET"), &span, "poll");
        let mapping = match &p.mapping {
            Some(m) => self.inbound(m),
            None => {
                bad(self, "needs a `mapping`".into());
                None
            }
        };
        let Some(path) = p.path.clone() else {
            bad(self, "needs a `path`".into());
            return None;
        };
        if !path.starts_with('/') {
            bad(self, "path must start with `/`".into());
        }
        let path = self.template(true, "poll.path".into(), &path, &span);
        let records = self.json_path(p.records.as_deref().unwrap_or("$"), &span, "poll: records");
        let Some(wm) = p.watermark_field.as_deref() else {
            bad(self, "needs a `watermark_field`".into());
            return None;
        };
        let watermark = self.json_path(wm, &span, "poll: watermark_field");
        let format = match p.watermark_format.as_deref().unwrap_or("text") {
            f @ ("text" | "rfc3339" | "unix_s" | "unix_ms" | "odoo" | "http_date") => f.to_owned(),
            other => {
                bad(
                    self,
                    format!("watermark_format `{other}` is not text, rfc3339, unix_s, unix_ms, odoo or http_date"),
                );
                "text".to_owned()
            }
        };
        let schedule = crate::schedule::from_config(p.every_secs, p.cron.as_deref(), 60)
            .map_err(|e| bad(self, e))
            .unwrap_or(crate::schedule::Schedule::Every(Duration::from_secs(60)));
        let mut query: Vec<(String, String)> = Vec::new();
        if let Some(param) = &p.watermark_param {
            query.push((param.clone(), self.template(false, "poll.query.$watermark".into(), "{{ watermark }}", &span)));
        }
        let paging = match p.paging.clone().unwrap_or_default() {
            PagingFile::None => Some(Paging::None),
            PagingFile::Cursor { next, param } => {
                if let Some(param) = param {
                    query.push((param, self.template(false, "poll.query.$cursor".into(), "{{ cursor }}", &span)));
                }
                self.json_path(&next, &span, "poll: paging.next").map(|next| Paging::Cursor { next })
            }
            PagingFile::Offset { param, limit_param, limit } => {
                if let Some(param) = param {
                    query.push((param, self.template(false, "poll.query.$offset".into(), "{{ offset }}", &span)));
                }
                if let Some(lp) = limit_param {
                    query.push((lp, self.template(false, "poll.query.$limit".into(), "{{ limit }}", &span)));
                }
                if limit == 0 {
                    bad(self, "paging.limit must be positive".into());
                }
                Some(Paging::Offset { limit })
            }
            PagingFile::Page { param, start, size, size_param } => {
                if let Some(param) = param {
                    query.push((param, self.template(false, "poll.query.$page".into(), "{{ page }}", &span)));
                }
                if let Some(sp) = size_param {
                    query.push((sp, self.template(false, "poll.query.$size".into(), "{{ limit }}", &span)));
                }
                if size == 0 {
                    bad(self, "paging.size must be positive".into());
                }
                Some(Paging::Page { start, size })
            }
            PagingFile::LastId { id, more, param } => {
                if let Some(param) = param {
                    query.push((param, self.template(false, "poll.query.$cursor".into(), "{{ cursor }}", &span)));
                }
                let id = self.json_path(&id, &span, "poll: paging.id");
                let more = self.json_path(&more, &span, "poll: paging.more");
                id.zip(more).map(|(id, more)| Paging::LastId { id, more })
            }
            PagingFile::Link => Some(Paging::Link),
        };
        for (k, t) in &p.query {
            let name = self.template(false, format!("poll.query.{k}"), t, &span);
            query.push((k.clone(), name));
        }
        let mut headers = Vec::new();
        for (h, t) in &p.headers {
            match HeaderName::from_bytes(h.as_bytes()) {
                Ok(hn) => headers.push((hn, self.template(false, format!("poll.header.{h}"), t, &span))),
                Err(_) => bad(self, format!("`{h}` is not a header name")),
            }
        }
        let body = p.body.as_ref().and_then(|b| self.outbound(b));
        Some(PollPlan {
            method: method?,
            path,
            schedule,
            mapping: mapping?,
            records: records?,
            watermark: watermark?,
            format,
            start_from: p.start_from,
            max_run_records: p.max_run_records,
            query,
            headers,
            body,
            paging: paging?,
        })
    }
}

/// How long a webhook signing key must be: a Standard Webhooks key after `whsec_`
/// and base64, any other scheme's key as written (`crate::secrets`).
fn webhook_key_need(scheme: &str) -> impl FnOnce(&str) -> Option<crate::secrets::Need> + '_ {
    use crate::secrets::{MIN_HMAC_KEY, MIN_STANDARD_WEBHOOKS_KEY, Need};
    use base64::Engine as _;
    move |plain| {
        if scheme == "standard_webhooks" {
            let b64 = plain.strip_prefix("whsec_").unwrap_or(plain);
            // Malformed base64 is the verifier's to report.
            let key = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
            Some(Need {
                len: key.len(),
                min: MIN_STANDARD_WEBHOOKS_KEY,
                what: "a Standard Webhooks key (after whsec_, decoded)",
            })
        } else {
            Some(Need { len: plain.len(), min: MIN_HMAC_KEY, what: "a webhook signing key" })
        }
    }
}

/// `{order_id}` and `{external_id}` (the first path syntax) as templates.
fn legacy_placeholders(path: &str) -> String {
    if path.contains("{{") {
        return path.to_owned();
    }
    path.replace("{order_id}", "{{ order_id }}").replace("{external_id}", "{{ external_id }}")
}

impl Config {
    /// Validates the file and builds the connector (no network).
    pub fn build(
        self,
        id: &ConnectorId,
        kind: &'static str,
        config_dir: &Path,
        mappings: &BTreeMap<String, Arc<Mapping>>,
        outbound: &Outbounds,
        checks: &mut crate::secrets::Checks<'_>,
    ) -> Result<Connector, Problems> {
        super::install_crypto_provider();
        let timeout = self.timeout_secs.unwrap_or(10);
        let limits = self
            .limits
            .clone()
            .unwrap_or_default()
            .validate(self.max_concurrency.as_ref(), super::limits::DEFAULT_CONCURRENCY);
        // Redirects are never followed: reqwest would carry API-key headers to
        // whatever host a Location names. A 3xx is a permanent error instead.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(timeout.max(1)))
            .connect_timeout(Duration::from_secs(timeout.clamp(1, 10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("orderbridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| vec![(None, format!("cannot build HTTP client: {e}"))])?;
        let label = format!("connector {id}");
        let no_lookups = Arc::new(BTreeMap::new());
        let mut b = Builder {
            secrets: Vec::new(),
            checks,
            config_dir,
            mappings,
            outbound,
            problems: Vec::new(),
            paths: Snippets::new(label.clone(), no_lookups.clone()).encoding_segments(),
            values: Snippets::new(label, no_lookups),
        };
        if timeout == 0 {
            b.problems.push((None, "timeout_secs must be positive".into()));
        }
        let limits = limits.unwrap_or_else(|ps| {
            b.problems.extend(ps);
            super::limits::Limits::default()
        });

        let webhook = self.webhook.and_then(|w| {
            let span = w.span();
            let w = w.into_inner();
            let (Some(sig), Some(secret)) = (&w.signature, &w.secret) else {
                b.problems.push((Some(span), "[webhook] needs `signature` and `secret`".into()));
                return None;
            };
            // Without a mapping the connector sends events only (/webhooks/<id>/events).
            let mapping = match &w.mapping {
                Some(m) => Some(b.inbound(m)?),
                None => None,
            };
            let mut events = Vec::new();
            for e in w.events.iter().flat_map(|e| e.get_ref()) {
                match e.get_ref().parse::<Reported>() {
                    Ok(r) if events.contains(&r) => {
                        b.problems.push((Some(e.span()), format!("[webhook] events: `{r}` is listed twice")))
                    }
                    Ok(r) => events.push(r),
                    Err(m) => b.problems.push((Some(e.span()), format!("[webhook] events: {m}"))),
                }
            }
            let verifier = resolve_secret(secret, config_dir, b.checks, webhook_key_need(sig.get_ref()))
                .and_then(|s| {
                    Verifier::new(sig.get_ref(), &s, w.tolerance_secs.unwrap_or(300), w.public_url.as_deref()).map_err(
                        |e| {
                            // A malformed secret is the secret's fault; anything else the scheme's.
                            let at = if e.contains("secret") { secret.span() } else { sig.span() };
                            (Some(at), e)
                        },
                    )
                })
                .map_err(|p| b.problems.push(p))
                .ok();
            Some(Webhook { verifier: verifier?, mapping, events })
        });

        let mut operations = BTreeMap::new();
        for (name, op) in self.operations {
            if let Some(op) = b.operation(&name, op) {
                operations.insert(name, op);
            }
        }
        let auth = b.auth(self.auth, &client);
        let headers = b.headers(self.headers);
        let poll = self.poll.and_then(|p| b.poll(p));

        let base = match &self.base_url {
            None if !operations.is_empty() || poll.is_some() || self.health.is_some() => {
                b.problems.push((None, "operations, [poll] and [health] need a `base_url`".into()));
                None
            }
            None => None,
            Some(u) => match Url::parse(u.get_ref()) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.password().is_none() => Some(url),
                Ok(_) => {
                    b.problems
                        .push((Some(u.span()), "base_url must be http(s) without credentials (use [auth])".into()));
                    None
                }
                Err(e) => {
                    b.problems.push((Some(u.span()), format!("base_url: {e}")));
                    None
                }
            },
        };
        if let Some(h) = &self.health
            && !h.path.starts_with('/')
        {
            b.problems.push((None, "health.path must start with `/`".into()));
        }
        if !b.problems.is_empty() {
            return Err(b.problems);
        }
        let Some(base) = base else {
            // A webhook-only connector.
            return Ok(Connector {
                id: id.clone(),
                kind,
                webhook,
                push: None,
                poll: None,
                health: None,
                operations: Vec::new(),
                limits,
            });
        };
        let shared = Arc::new(Shared {
            id: id.clone(),
            client,
            base,
            auth,
            headers,
            paths: b.paths,
            values: b.values,
            secrets: b.secrets,
        });
        let poll: Option<Arc<dyn Poll>> =
            poll.map(|plan| Arc::new(RestPoll { shared: shared.clone(), plan }) as Arc<dyn Poll>);
        let health: Option<Arc<dyn Health>> =
            self.health.map(|h| Arc::new(RestHealth { shared: shared.clone(), path: h.path }) as Arc<dyn Health>);
        let op_names: Vec<String> = operations.keys().cloned().collect();
        // The dispatcher keeps to `limits`; the semaphore also bounds calls that reach
        // the push another way (documents delivered through it, reconciliation).
        let push: Option<Arc<dyn Push>> = (!operations.is_empty()).then(|| {
            Arc::new(RestPush { shared, operations, permits: Semaphore::new(limits.concurrency) }) as Arc<dyn Push>
        });
        Ok(Connector { id: id.clone(), kind, webhook, push, poll, health, operations: op_names, limits })
    }
}

impl Shared {
    fn url(&self, path_template: &str, ctx: &Value) -> Result<Url, ConnectorError> {
        let path = self.paths.render(path_template, ctx).map_err(|message| ConnectorError::Permanent { message })?;
        // The URL standard resolves `.` and `..` segments, even percent-encoded ones
        // (`%2E%2E`): a value such as an external id must never rewrite the path.
        if let Some(seg) = dot_segment(&path) {
            return Err(ConnectorError::Permanent {
                message: format!(
                    "the path {path} has a `{seg}` segment, which would change where the call goes; refused (a value filled into a path cannot be `.` or `..`)"
                ),
            });
        }
        Url::parse(&join(&self.base, &path)).map_err(|e| ConnectorError::Permanent { message: format!("{path}: {e}") })
    }

    /// A request with the connector's headers and credentials.
    async fn request(&self, method: reqwest::Method, url: Url) -> Result<reqwest::RequestBuilder, ConnectorError> {
        let mut req = self.client.request(method, url);
        for (h, v) in &self.headers {
            req = req.header(h.clone(), v.clone());
        }
        authorize(&self.auth, req).await
    }

    fn value(&self, template: &str, ctx: &Value) -> Result<String, ConnectorError> {
        self.values.render(template, ctx).map_err(|message| ConnectorError::Permanent { message })
    }

    /// Sends and classifies; a 401 drops a cached OAuth2 token.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(Receipt, reqwest::header::HeaderMap), ConnectorError> {
        let resp = req
            .send()
            .await
            .map_err(|e| ConnectorError::Retryable { message: describe(&e.without_url()), retry_after: None })?;
        if let (Auth::OAuth2(cc), 401) = (&self.auth, resp.status().as_u16()) {
            // The token was revoked or expired early: fetch a fresh one next time.
            cc.invalidate().await;
        }
        let headers = resp.headers().clone();
        classify(resp, &self.secrets).await.map(|r| (r, headers))
    }
}

fn with_body(req: reqwest::RequestBuilder, body: &Body) -> reqwest::RequestBuilder {
    req.header(reqwest::header::CONTENT_TYPE, body.content_type).body(body.bytes.clone())
}

fn select_text(path: &JsonPath, v: &Value) -> Option<String> {
    match path.query(v).first()? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl RestPush {
    async fn call(
        &self,
        call: &Call,
        op: &Operation,
        ctx: &Value,
        key: &str,
    ) -> Result<(Receipt, Value), ConnectorError> {
        let s = &self.shared;
        let mut req = s.request(call.method.clone(), s.url(&call.path, ctx)?).await?;
        if let Some(h) = &op.idempotency_header {
            req = req.header(h.clone(), key);
        }
        for (h, t) in &op.headers {
            req = req.header(h.clone(), s.value(t, ctx)?);
        }
        req = match &call.body {
            Some(m) => {
                with_body(req, &m.render(ctx).map_err(|e| ConnectorError::Permanent { message: e.to_string() })?)
            }
            None if call.method == reqwest::Method::GET => req,
            None if std::ptr::eq(call, &op.first) => req.json(&ctx["effect"]),
            None => req,
        };
        let (receipt, _) = s.send(req).await?;
        let json = serde_json::from_str(&receipt.summary).unwrap_or(Value::Null);
        Ok((receipt, json))
    }

    /// Asks whether an earlier attempt already created the record.
    async fn look_up(&self, lookup: &Lookup, ctx: &Value) -> Result<Option<Receipt>, ConnectorError> {
        let s = &self.shared;
        let mut url = s.url(&lookup.path, ctx)?;
        {
            let mut q = url.query_pairs_mut();
            for (k, t) in &lookup.query {
                let v = s.value(t, ctx)?;
                if !v.is_empty() {
                    q.append_pair(k, &v);
                }
            }
        }
        match s.send(s.request(reqwest::Method::GET, url).await?).await {
            Ok((r, _)) => {
                let json: Value = serde_json::from_str(&r.summary).unwrap_or(Value::Null);
                Ok(select_text(&lookup.found, &json).map(|id| Receipt {
                    status: r.status,
                    summary: format!("found {id}, created by an earlier attempt; not created again"),
                    reference: Some(id),
                }))
            }
            Err(ConnectorError::Permanent { message }) if message.starts_with("HTTP 404") => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Push for RestPush {
    fn perform<'a>(&'a self, effect: Outbound<'a>) -> BoxFuture<'a, Result<Receipt, ConnectorError>> {
        Box::pin(async move {
            let op = self.operations.get(effect.operation).ok_or_else(|| ConnectorError::Permanent {
                message: format!("connector {} has no operation `{}`", self.shared.id, effect.operation),
            })?;
            let _permit = self.permits.acquire().await.expect("semaphore is never closed");
            // The template context: the effect's fields at the top, plus the key.
            let mut ctx = effect.body.clone();
            if let Value::Object(m) = &mut ctx {
                m.insert("idempotency_key".into(), Value::String(effect.idempotency_key.to_owned()));
                m.insert("connector".into(), Value::String(self.shared.id.to_string()));
                m.insert("effect".into(), effect.body.clone());
            }
            if let Some(l) = &op.lookup
                && let Some(found) = self.look_up(l, &ctx).await?
            {
                return Ok(found);
            }
            let (mut receipt, response) = self.call(&op.first, op, &ctx, effect.idempotency_key).await?;
            if let Some(path) = &op.reference {
                receipt.reference = select_text(path, &response);
            }
            // The summary goes into the audit trail: the receiver's answer, cut and scrubbed.
            receipt.summary = super::scrub::excerpt(&receipt.summary, &self.shared.secrets);
            if !op.then.is_empty() {
                if let Value::Object(m) = &mut ctx {
                    m.insert("reference".into(), receipt.reference.clone().map_or(Value::Null, Value::String));
                    m.insert("response".into(), response);
                }
                for (i, step) in op.then.iter().enumerate() {
                    let key = format!("{}/{}", effect.idempotency_key, i + 1);
                    self.call(step, op, &ctx, &key).await?;
                }
                receipt.summary = format!("{} (then {} more calls, all answered 2xx)", receipt.summary, op.then.len());
            }
            Ok(receipt)
        })
    }
}

/// Adds the connector's credentials to a request.
async fn authorize(auth: &Auth, req: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder, ConnectorError> {
    Ok(match auth {
        Auth::None => req,
        Auth::Bearer(t) => req.bearer_auth(t.expose_secret()),
        Auth::ApiKey(h, v) => {
            let mut hv = HeaderValue::from_str(v.expose_secret()).map_err(|_| ConnectorError::Auth {
                message: "API key contains characters not allowed in a header".into(),
            })?;
            hv.set_sensitive(true);
            req.header(h.clone(), hv)
        }
        Auth::Basic(u, p) => req.basic_auth(u, Some(p.expose_secret())),
        Auth::OAuth2(cc) => req.bearer_auth(cc.token().await?.expose_secret()),
    })
}

fn join(base: &Url, path: &str) -> String {
    format!("{}{}", base.as_str().trim_end_matches('/'), path)
}

/// The URL of the next page a `Link` header names, resolved against the page's own
/// URL; only on the connector's own scheme, host and port (`base`), the only place its
/// credentials go.
fn next_page(base: &Url, page: &Url, link: &str) -> Result<Url, ConnectorError> {
    let next = page.join(link).map_err(|e| ConnectorError::Permanent { message: format!("next link: {e}") })?;
    if next.origin() != base.origin() {
        return Err(ConnectorError::Permanent {
            message: format!(
                "the next page link points to {}, not to this connector's {}; paging stopped (credentials go only to base_url's scheme, host and port)",
                origin_text(&next),
                origin_text(base)
            ),
        });
    }
    Ok(next)
}

/// `scheme://host:port` of a URL (never its path or query, which may carry tokens).
fn origin_text(u: &Url) -> String {
    let host = u.host_str().unwrap_or("?");
    match u.port_or_known_default() {
        Some(p) => format!("{}://{host}:{p}", u.scheme()),
        None => format!("{}://{host}", u.scheme()),
    }
}

/// The first segment of `path` (before any query) that the URL standard treats as
/// `.` or `..`, percent-encoded or not.
fn dot_segment(path: &str) -> Option<&str> {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    path.split('/').find(|seg| {
        let s = seg.to_ascii_lowercase().replace("%2e", ".");
        s == "." || s == ".."
    })
}

/// One URL path segment: everything but unreserved characters is percent-encoded
/// (so `/`, `?`, `#` and `%` cannot end the segment), and a segment that is exactly
/// `.` or `..` has its dots encoded too.
pub(crate) fn encode_segment(s: &str) -> String {
    if s == "." || s == ".." {
        return "%2E".repeat(s.len());
    }
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut msg = format!("{what}: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().ok()
}

/// Largest answer read (a page of records, an invoice): more is refused, not buffered.
const MAX_RESPONSE: usize = 16 << 20;

async fn read_bounded(mut resp: reqwest::Response) -> Result<String, ConnectorError> {
    let mut buf = Vec::new();
    while let Some(chunk) =
        resp.chunk().await.map_err(|e| ConnectorError::Retryable { message: describe(&e), retry_after: None })?
    {
        if buf.len() + chunk.len() > MAX_RESPONSE {
            return Err(ConnectorError::Permanent {
                message: format!(
                    "HTTP {}: the answer is larger than {} MiB",
                    resp.status().as_u16(),
                    MAX_RESPONSE >> 20
                ),
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Maps a response to success or to what the dispatcher should do next. An error
/// quotes at most `scrub::EXCERPT_CHARS` of the body, without `secrets` and without
/// anything shaped like a credential (it reaches logs, the audit and dead letters).
pub async fn classify(resp: reqwest::Response, secrets: &[SecretString]) -> Result<Receipt, ConnectorError> {
    let status = resp.status();
    let retry_after = retry_after(resp.headers());
    // Where a redirect points: its scheme, host and port only.
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| resp.url().join(l).ok())
        .map(|u| origin_text(&u));
    let body = read_bounded(resp).await?;
    if status.is_success() {
        // Kept whole (bounded by the client's limits) so references and pages parse.
        return Ok(Receipt { status: status.as_u16(), summary: body, reference: None });
    }
    if status.is_redirection() {
        let to = location.map_or_else(|| "no Location".to_owned(), |l| format!("Location on {l}"));
        return Err(ConnectorError::Permanent {
            message: format!(
                "HTTP {}: a redirect ({to}) is not followed, so credentials never go to another address; set base_url to where the system answers",
                status.as_u16()
            ),
        });
    }
    let message = format!("HTTP {}: {}", status.as_u16(), super::scrub::excerpt(&body, secrets));
    let e = match status.as_u16() {
        401 | 403 => ConnectorError::Auth { message },
        429 => ConnectorError::RateLimited { message, retry_after },
        408 | 425 | 500..=599 => ConnectorError::Retryable { message, retry_after },
        _ => ConnectorError::Permanent { message },
    };
    Err(e.scrubbed(secrets))
}

enum Paging {
    None,
    Cursor { next: JsonPath },
    Offset { limit: u32 },
    Page { start: u64, size: u32 },
    LastId { id: JsonPath, more: JsonPath },
    Link,
}

struct PollPlan {
    method: reqwest::Method,
    path: String,
    schedule: crate::schedule::Schedule,
    mapping: Arc<Mapping>,
    records: JsonPath,
    watermark: JsonPath,
    format: String,
    start_from: Option<String>,
    max_run_records: Option<u64>,
    query: Vec<(String, String)>,
    headers: Vec<(HeaderName, String)>,
    body: Option<Arc<OutboundMapping>>,
    paging: Paging,
}

/// The polling half of a `rest` connector.
pub struct RestPoll {
    shared: Arc<Shared>,
    plan: PollPlan,
}

/// How a stored watermark is written into a request.
fn render_watermark(w: &str, format: &str) -> String {
    let t = || crate::mapping::outbound::parse_time(w);
    match format {
        "rfc3339" => t().map_or_else(|| w.to_owned(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        "unix_s" => t().map_or_else(|| w.to_owned(), |t| t.timestamp().to_string()),
        "unix_ms" => t().map_or_else(|| w.to_owned(), |t| t.timestamp_millis().to_string()),
        "odoo" => t().map_or_else(|| w.to_owned(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string()),
        "http_date" => t().map_or_else(|| w.to_owned(), |t| t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()),
        _ => w.to_owned(),
    }
}

impl RestPoll {
    fn context(&self, state: &PollState) -> Value {
        let p = &self.plan;
        let (limit, page) = match p.paging {
            Paging::Offset { limit } => (u64::from(limit), 0),
            Paging::Page { start, size } => (u64::from(size), start + state.offset),
            _ => (0, 0),
        };
        serde_json::json!({
            "watermark": state.watermark.as_deref().map(|w| render_watermark(w, &p.format)).unwrap_or_default(),
            "cursor": state.cursor.clone().unwrap_or_default(),
            "offset": state.offset,
            "page": page,
            "limit": limit,
        })
    }

    async fn fetch_page(&self, state: &PollState) -> Result<Page, ConnectorError> {
        let s = &self.shared;
        let p = &self.plan;
        let ctx = self.context(state);
        let url = match (&p.paging, &state.next_url) {
            // Checked again here: a state stored by an earlier version may hold any URL.
            (Paging::Link, Some(url)) => next_page(&s.base, &s.base, url)?,
            _ => {
                let mut url = s.url(&p.path, &ctx)?;
                let mut pairs = Vec::new();
                for (k, t) in &p.query {
                    let v = s.value(t, &ctx)?;
                    if !v.is_empty() {
                        pairs.push((k, v));
                    }
                }
                if !pairs.is_empty() {
                    url.query_pairs_mut().extend_pairs(pairs);
                }
                url
            }
        };
        let page_url = url.clone();
        let mut req = s.request(p.method.clone(), url).await?;
        for (h, t) in &p.headers {
            let v = s.value(t, &ctx)?;
            if !v.is_empty() {
                req = req.header(h.clone(), v);
            }
        }
        if let Some(b) = &p.body {
            req = with_body(req, &b.render(&ctx).map_err(|e| ConnectorError::Permanent { message: e.to_string() })?);
        }
        let (receipt, headers) = s.send(req).await?;
        let link_next = headers
            .get_all(reqwest::header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .find(|part| part.contains("rel=\"next\"") || part.contains("rel=next"))
            .and_then(|part| part.split(';').next())
            .map(|u| u.trim().trim_start_matches('<').trim_end_matches('>').to_owned());
        let page: Value = serde_json::from_str(&receipt.summary)
            .map_err(|e| ConnectorError::Permanent { message: format!("the page is not JSON: {e}") })?;
        // Each record keeps where it sits in the page, so its amounts are read as the
        // page wrote them (see mapping::numbers).
        let texts = std::sync::Arc::new(crate::mapping::NumberTexts::scan(receipt.summary.as_bytes()));
        let located: Vec<_> = p.records.query_located(&page).into_iter().collect();
        let (records, numbers): (Vec<Value>, Vec<crate::mapping::Numbers>) = match located.as_slice() {
            [one] => match one.node() {
                Value::Array(a) => {
                    let base = texts.clone().at(one.location());
                    a.iter().enumerate().map(|(i, r)| (r.clone(), base.element(i))).unzip()
                }
                r => (vec![r.clone()], vec![texts.clone().at(one.location())]),
            },
            many => many.iter().map(|l| (l.node().clone(), texts.clone().at(l.location()))).unzip(),
        };
        let page_max = records
            .iter()
            .filter_map(|r| p.watermark.query(r).first().and_then(super::normalize_watermark))
            .fold(None, |m, w| watermark_max(m, Some(w)));
        let next = match &p.paging {
            Paging::None => None,
            Paging::Cursor { next } => {
                select_text(next, &page).map(|c| PollState { cursor: Some(c), ..Default::default() })
            }
            Paging::Offset { limit } | Paging::Page { size: limit, .. } if records.len() >= *limit as usize => {
                let step = if matches!(p.paging, Paging::Page { .. }) { 1 } else { u64::from(*limit) };
                Some(PollState { offset: state.offset + step, ..Default::default() })
            }
            Paging::Offset { .. } | Paging::Page { .. } => None,
            Paging::LastId { id, more } => {
                let more = matches!(more.query(&page).first(), Some(Value::Bool(true)));
                records
                    .last()
                    .and_then(|r| select_text(id, r))
                    .filter(|_| more)
                    .map(|c| PollState { cursor: Some(c), ..Default::default() })
            }
            Paging::Link => match link_next {
                Some(u) => Some(PollState {
                    next_url: Some(next_page(&s.base, &page_url, &u)?.to_string()),
                    ..Default::default()
                }),
                None => None,
            },
        };
        let (next, more) = state.advance(page_max, records.len(), next, p.max_run_records);
        Ok(Page { records, numbers, next, more })
    }
}

impl Poll for RestPoll {
    fn id(&self) -> &ConnectorId {
        &self.shared.id
    }
    fn schedule(&self) -> &crate::schedule::Schedule {
        &self.plan.schedule
    }
    fn mapping(&self) -> &Arc<Mapping> {
        &self.plan.mapping
    }
    fn initial(&self) -> PollState {
        PollState { watermark: self.plan.start_from.clone(), ..Default::default() }
    }
    fn fetch<'a>(&'a self, state: &'a PollState) -> BoxFuture<'a, Result<Page, ConnectorError>> {
        Box::pin(self.fetch_page(state))
    }
}

/// `check --online`: one GET to the connector's health path.
struct RestHealth {
    shared: Arc<Shared>,
    path: String,
}

impl Health for RestHealth {
    fn check(&self) -> BoxFuture<'_, Result<String, ConnectorError>> {
        Box::pin(async move {
            let s = &self.shared;
            let url = Url::parse(&join(&s.base, &self.path))
                .map_err(|e| ConnectorError::Permanent { message: format!("health path: {e}") })?;
            let (r, _) = s.send(s.request(reqwest::Method::GET, url).await?).await?;
            Ok(format!("GET {} answered {}", self.path, r.status))
        })
    }
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn a_value_stays_one_path_segment() {
        assert_eq!(encode_segment(".."), "%2E%2E");
        assert_eq!(encode_segment("."), "%2E");
        assert_eq!(encode_segment("a/../b?c#d%"), "a%2F..%2Fb%3Fc%23d%25");
        assert_eq!(encode_segment("v1.2"), "v1.2", "dots inside a segment are plain");
        assert_eq!(encode_segment("订单"), "%E8%AE%A2%E5%8D%95");
    }

    #[test]
    fn dot_segments_are_found_even_when_encoded() {
        assert_eq!(dot_segment("/orders/%2E%2E/confirm"), Some("%2E%2E"));
        assert_eq!(dot_segment("/orders/%2e./x"), Some("%2e."));
        assert_eq!(dot_segment("/orders/./x"), Some("."));
        assert_eq!(dot_segment("/orders/SO-1/confirm?next=.."), None, "the query is not the path");
        assert_eq!(dot_segment("/orders/v1.2/...x"), None);
        // What the URL standard would do with one: drop a segment.
        let u = Url::parse("http://erp.example/api/orders/%2E%2E/confirm").unwrap();
        assert_eq!(u.path(), "/api/confirm");
    }

    #[test]
    fn next_page_links_stay_on_the_connectors_own_origin() {
        let base = Url::parse("https://crm.bank.example/api").unwrap();
        let page = Url::parse("https://crm.bank.example/api/deals?page=1").unwrap();
        let same = next_page(&base, &page, "https://crm.bank.example/api/deals?page=2").unwrap();
        assert_eq!(same.as_str(), "https://crm.bank.example/api/deals?page=2");
        assert_eq!(
            next_page(&base, &page, "/api/deals?page=3").unwrap().as_str(),
            "https://crm.bank.example/api/deals?page=3"
        );
        assert!(next_page(&base, &page, "https://crm.bank.example:443/x").is_ok(), "the default port is the same port");
        for elsewhere in [
            "https://evil.example/api/deals?page=2",
            "http://crm.bank.example/api/deals?page=2",
            "https://crm.bank.example:8443/api/deals",
            "//evil.example/steal",
        ] {
            let e = next_page(&base, &page, elsewhere).unwrap_err();
            let ConnectorError::Permanent { message } = &e else { panic!("{e:?}") };
            assert!(
                message.contains("paging stopped") && message.contains("https://crm.bank.example:443"),
                "{message}"
            );
            assert!(!message.contains("steal") && !message.contains("page=2"), "no path or query: {message}");
        }
    }
}

#[cfg(test)]
mod poll_tests {
    use super::*;

    #[test]
    fn watermarks_compare_as_numbers_times_or_text() {
        let m = |a: Option<&str>, b: Option<&str>| watermark_max(a.map(String::from), b.map(String::from));
        assert_eq!(m(Some("9"), Some("10")).as_deref(), Some("10"), "numbers, not text");
        assert_eq!(m(Some("1700000000000"), Some("999")).as_deref(), Some("1700000000000"));
        assert_eq!(
            m(Some("2026-11-26T10:09:00Z"), Some("2026-11-26T09:59:00Z")).as_deref(),
            Some("2026-11-26T10:09:00Z")
        );
        assert_eq!(
            m(Some("2026-11-26T10:09:00.500Z"), Some("2026-11-26T10:09:01Z")).as_deref(),
            Some("2026-11-26T10:09:01Z"),
            "times, not text"
        );
        assert_eq!(m(None, Some("5")).as_deref(), Some("5"));
        assert_eq!(m(Some("5"), None).as_deref(), Some("5"));
        assert_eq!(m(None, None), None);
    }

    #[test]
    fn a_capped_run_ends_early_and_the_next_continues_from_its_newest_mark() {
        let start = PollState { watermark: Some("100".into()), ..Default::default() };
        let more = || Some(PollState { cursor: Some("c".into()), ..Default::default() });
        let (s1, go) = start.advance(Some("150".into()), 100, more(), Some(250));
        assert!(go && s1.run_records == 100 && s1.watermark.as_deref() == Some("100"));
        let (s2, go) = s1.advance(Some("180".into()), 100, more(), Some(250));
        assert!(go && s2.run_records == 200);
        // The third page reaches the cap: the run ends although the source has more.
        let (s3, go) = s2.advance(Some("199".into()), 100, more(), Some(250));
        assert!(!go);
        assert_eq!(s3, PollState { watermark: Some("199".into()), ..Default::default() });
        // Without a cap the run goes on.
        assert!(s2.advance(Some("199".into()), 100, more(), None).1);
    }

    #[test]
    fn watermarks_are_stored_alike_and_written_as_each_vendor_wants() {
        let n = |v: Value| super::super::normalize_watermark(&v).unwrap();
        assert_eq!(n(serde_json::json!(42)), "42");
        assert_eq!(n(serde_json::json!("2026-11-26 02:03:04")), "2026-11-26 02:03:04");
        // Every shape a vendor writes, rewritten the way its API reads it.
        for w in ["2026-11-26T02:03:04Z", "/Date(1795658584000+0000)/", "2026-11-26 02:03:04", "1795658584000"] {
            assert_eq!(render_watermark(w, "rfc3339"), "2026-11-26T02:03:04.000Z", "{w}");
            assert_eq!(render_watermark(w, "unix_ms"), "1795658584000", "{w}");
            assert_eq!(render_watermark(w, "unix_s"), "1795658584", "{w}");
            assert_eq!(render_watermark(w, "odoo"), "2026-11-26 02:03:04", "{w}");
            assert_eq!(render_watermark(w, "http_date"), "Thu, 26 Nov 2026 02:03:04 GMT", "{w}");
            assert_eq!(render_watermark(w, "text"), w);
        }
        // Marks of one source compare as times even when written differently.
        assert_eq!(
            watermark_max(Some("/Date(1795658584000+0000)/".into()), Some("/Date(1795658583000+0000)/".into()))
                .as_deref(),
            Some("/Date(1795658584000+0000)/")
        );
    }
}
