//! The `odoo` kind: Odoo's external JSON-RPC API (`/jsonrpc`, `execute_kw`).
//!
//! Quirks handled here: the user id comes from `common.login` and is cached (dropped
//! when Odoo refuses it); errors arrive as HTTP 200 with an `error` member, classified
//! by the exception name; Odoo has no idempotency key, so a create first searches for
//! a record whose `idempotency_field` already holds the value our mapping writes.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Mutex, Semaphore};
use toml::Spanned;

use super::response::{classify, describe};
use super::{
    BoxFuture, Connector, ConnectorError, Health, Outbound, Page, Poll, PollState, Push, Receipt, normalize_watermark,
    resolve_secret, watermark_max,
};
use crate::domain::ConnectorId;
use crate::mapping::Mapping;
use crate::mapping::outbound::OutboundMapping;

type Problems = Vec<(Option<Range<usize>>, String)>;

/// `connectors/<id>.toml` with `kind = "odoo"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[allow(dead_code, reason = "the registry parses the kind first; kept so deny_unknown_fields accepts it")]
    pub kind: String,
    /// The Odoo server, e.g. `https://erp.bank.example`.
    pub url: Spanned<String>,
    pub database: String,
    /// The user the API key belongs to.
    pub login: String,
    /// `${ENV}` or `file:PATH`: an API key (or password).
    pub api_key: Spanned<String>,
    #[serde(default = "ten")]
    pub timeout_secs: u64,
    /// The older spelling of `[limits] concurrency`.
    pub max_concurrency: Option<Spanned<usize>>,
    /// Slots and rate of outbound calls (default concurrency 4).
    #[serde(default)]
    pub limits: super::limits::LimitsFile,
    #[serde(default)]
    pub operations: BTreeMap<String, Spanned<OperationFile>>,
    pub poll: Option<Spanned<PollFile>>,
}

fn ten() -> u64 {
    10
}
/// Odoo workers are few (a `workers = 4` server is common): four calls at once.
const DEFAULT_CONCURRENCY: usize = 4;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationFile {
    /// e.g. `sale.order`.
    pub model: String,
    /// `create` (default) or `write` (the record id is the order's external id).
    #[serde(default = "create")]
    pub method: String,
    /// Outbound mapping rendering the values (a JSON object).
    pub body: Spanned<String>,
    /// A field our mapping fills with a unique value (e.g. `client_order_ref` =
    /// `{{ order_id }}`): searched before creating, so a retry finds the first record.
    pub idempotency_field: Option<String>,
}

fn create() -> String {
    "create".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollFile {
    pub model: String,
    /// Fields to read (the mapping's input).
    pub fields: Vec<String>,
    /// Extra domain terms as JSON, e.g. `[["state", "in", ["sale", "done"]]]`.
    pub domain: Option<String>,
    #[serde(default = "write_date")]
    pub watermark_field: String,
    #[serde(default = "hundred")]
    pub limit: u32,
    pub every_secs: Option<u64>,
    /// A cron schedule instead of `every_secs`.
    pub cron: Option<String>,
    pub mapping: Spanned<String>,
    pub start_from: Option<String>,
}

fn write_date() -> String {
    "write_date".into()
}
fn hundred() -> u32 {
    100
}

struct Rpc {
    id: ConnectorId,
    client: reqwest::Client,
    endpoint: Url,
    database: String,
    login: String,
    key: SecretString,
    uid: Mutex<Option<i64>>,
    seq: AtomicU64,
}

impl Rpc {
    async fn call(&self, service: &str, method: &str, args: Value) -> Result<Value, ConnectorError> {
        let id = self.seq.fetch_add(1, Ordering::Relaxed);
        let envelope = json!({"jsonrpc": "2.0", "method": "call", "params": {"service": service, "method": method, "args": args}, "id": id});
        let resp = self
            .client
            .post(self.endpoint.clone())
            .json(&envelope)
            .send()
            .await
            .map_err(|e| ConnectorError::Retryable { message: describe(&e.without_url()), retry_after: None })?;
        let receipt = classify(resp, std::slice::from_ref(&self.key)).await?;
        let body: Value = serde_json::from_str(&receipt.summary).map_err(|e| ConnectorError::Retryable {
            message: format!("Odoo answered something that is not JSON-RPC: {e}"),
            retry_after: None,
        })?;
        if let Some(err) = body.get("error") {
            let name = err.pointer("/data/name").and_then(Value::as_str).unwrap_or_default();
            let text = err
                .pointer("/data/message")
                .or_else(|| err.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("unknown error");
            let text = super::scrub::excerpt(text, std::slice::from_ref(&self.key));
            let message = format!("Odoo {}: {text}", if name.is_empty() { "error" } else { name });
            return Err(match name.rsplit('.').next().unwrap_or_default() {
                "AccessDenied" | "AccessError" => ConnectorError::Auth { message },
                "ValidationError" | "UserError" | "MissingError" | "ValueError" | "KeyError" | "TypeError" => {
                    ConnectorError::Permanent { message }
                }
                _ => ConnectorError::Retryable { message, retry_after: None },
            }
            .scrubbed(std::slice::from_ref(&self.key)));
        }
        Ok(body.get("result").cloned().unwrap_or(Value::Null))
    }

    async fn uid(&self) -> Result<i64, ConnectorError> {
        let mut cached = self.uid.lock().await;
        if let Some(uid) = *cached {
            return Ok(uid);
        }
        let r = self.call("common", "login", json!([self.database, self.login, self.key.expose_secret()])).await?;
        let uid = r.as_i64().ok_or_else(|| ConnectorError::Auth {
            message: format!("Odoo refused the login of `{}` to database `{}`", self.login, self.database),
        })?;
        *cached = Some(uid);
        Ok(uid)
    }

    async fn execute(&self, model: &str, method: &str, args: Value, kwargs: Value) -> Result<Value, ConnectorError> {
        let uid = self.uid().await?;
        let result = self
            .call(
                "object",
                "execute_kw",
                json!([self.database, uid, self.key.expose_secret(), model, method, args, kwargs]),
            )
            .await;
        if let Err(ConnectorError::Auth { .. }) = &result {
            // The key may be revoked: log in again next time. Done here, not in `call`,
            // which `uid` runs while holding this lock (re-locking there never returns).
            *self.uid.lock().await = None;
        }
        result
    }
}

struct Operation {
    model: String,
    method: String,
    body: Arc<OutboundMapping>,
    idempotency_field: Option<String>,
}

pub struct OdooPush {
    rpc: Arc<Rpc>,
    operations: BTreeMap<String, Operation>,
    permits: Semaphore,
}

impl Config {
    /// Validates the file and builds the connector (no network).
    pub fn build(
        self,
        id: &ConnectorId,
        config_dir: &Path,
        mappings: &BTreeMap<String, Arc<Mapping>>,
        outbound: &BTreeMap<String, Arc<OutboundMapping>>,
        checks: &mut crate::secrets::Checks<'_>,
    ) -> Result<Connector, Problems> {
        super::install_crypto_provider();
        let mut problems: Problems = Vec::new();
        let endpoint = match Url::parse(self.url.get_ref()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.password().is_none() => {
                Url::parse(&format!("{}/jsonrpc", u.as_str().trim_end_matches('/'))).ok()
            }
            _ => {
                problems.push((Some(self.url.span()), "url must be an http(s) URL without credentials".into()));
                None
            }
        };
        let key = resolve_secret(&self.api_key, config_dir, checks, |_| None).map_err(|p| problems.push(p)).ok();
        let operations = operations(self.operations, outbound, &mut problems);
        let poll = self.poll.map(|p| poll_plan(p, mappings, &mut problems));
        if self.timeout_secs == 0 {
            problems.push((None, "timeout_secs must be positive".into()));
        }
        let limits = self.limits.validate(self.max_concurrency.as_ref(), DEFAULT_CONCURRENCY).unwrap_or_else(|ps| {
            problems.extend(ps);
            super::limits::Limits::default()
        });
        // Redirects are not followed (a 3xx is a permanent error): the API key stays
        // with the configured URL.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(self.timeout_secs.max(1)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("orderbridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| vec![(None, format!("cannot build HTTP client: {e}"))])?;
        let (Some(endpoint), Some(key), true) = (endpoint, key, problems.is_empty()) else {
            return Err(problems);
        };
        let rpc = Arc::new(Rpc {
            id: id.clone(),
            client,
            endpoint,
            database: self.database,
            login: self.login,
            key,
            uid: Mutex::new(None),
            seq: AtomicU64::new(1),
        });
        let poll: Option<Arc<dyn Poll>> = match poll {
            Some((p, Some(mapping), domain, schedule)) => Some(Arc::new(OdooPoll {
                rpc: rpc.clone(),
                model: p.model,
                fields: p.fields,
                domain,
                watermark_field: p.watermark_field,
                limit: p.limit,
                schedule,
                mapping,
                start_from: p.start_from,
            })),
            _ => None,
        };
        let names: Vec<String> = operations.keys().cloned().collect();
        let push: Option<Arc<dyn Push>> = (!operations.is_empty()).then(|| {
            Arc::new(OdooPush { rpc: rpc.clone(), operations, permits: Semaphore::new(limits.concurrency) })
                as Arc<dyn Push>
        });
        Ok(Connector {
            id: id.clone(),
            kind: "odoo",
            webhook: None,
            push,
            poll,
            health: Some(Arc::new(OdooHealth { rpc })),
            operations: names,
            limits,
        })
    }
}

/// The operations a file enables, each with its outbound mapping.
fn operations(
    files: BTreeMap<String, Spanned<OperationFile>>,
    outbound: &BTreeMap<String, Arc<OutboundMapping>>,
    problems: &mut Problems,
) -> BTreeMap<String, Operation> {
    let mut operations = BTreeMap::new();
    for (name, op) in files {
        let span = op.span();
        let op = op.into_inner();
        if !matches!(op.method.as_str(), "create" | "write") {
            problems.push((Some(span.clone()), format!("operation {name}: method must be create or write")));
        }
        match outbound.get(op.body.get_ref()) {
            Some(body) => {
                operations.insert(
                    name,
                    Operation {
                        model: op.model,
                        method: op.method,
                        body: body.clone(),
                        idempotency_field: op.idempotency_field,
                    },
                );
            }
            None => problems.push((
                Some(op.body.span()),
                format!(
                    "outbound mapping `{}` does not exist (no mappings/{}.toml with direction = \"outbound\")",
                    op.body.get_ref(),
                    op.body.get_ref()
                ),
            )),
        }
    }
    operations
}

/// `[poll]`: the model's changed records, read with an inbound mapping.
fn poll_plan(
    p: Spanned<PollFile>,
    mappings: &BTreeMap<String, Arc<Mapping>>,
    problems: &mut Problems,
) -> (PollFile, Option<Arc<Mapping>>, Vec<Value>, crate::schedule::Schedule) {
    let span = p.span();
    let p = p.into_inner();
    let mapping = mappings.get(p.mapping.get_ref()).cloned();
    if mapping.is_none() {
        problems.push((Some(p.mapping.span()), format!("mapping `{}` does not exist", p.mapping.get_ref())));
    }
    let domain = match p.domain.as_deref().map(serde_json::from_str::<Vec<Value>>) {
        None => Vec::new(),
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            problems.push((Some(span.clone()), format!("poll.domain is not a JSON list of terms: {e}")));
            Vec::new()
        }
    };
    if p.limit == 0 {
        problems.push((Some(span.clone()), "poll.limit must be positive".into()));
    }
    let schedule = crate::schedule::from_config(p.every_secs, p.cron.as_deref(), 60)
        .map_err(|e| problems.push((Some(span), format!("poll: {e}"))))
        .unwrap_or(crate::schedule::Schedule::Every(Duration::from_secs(60)));
    (p, mapping, domain, schedule)
}

impl Push for OdooPush {
    fn perform<'a>(&'a self, effect: Outbound<'a>) -> BoxFuture<'a, Result<Receipt, ConnectorError>> {
        Box::pin(async move {
            let op = self.operations.get(effect.operation).ok_or_else(|| ConnectorError::Permanent {
                message: format!("connector {} has no operation `{}`", self.rpc.id, effect.operation),
            })?;
            let _permit = self.permits.acquire().await.expect("semaphore is never closed");
            let mut ctx = effect.body.clone();
            if let Value::Object(m) = &mut ctx {
                m.insert("idempotency_key".into(), Value::String(effect.idempotency_key.to_owned()));
            }
            let body = op.body.render(&ctx).map_err(|e| ConnectorError::Permanent { message: e.to_string() })?;
            let vals: Value = serde_json::from_slice(&body.bytes)
                .map_err(|e| ConnectorError::Permanent { message: format!("{}: {e}", op.body.id) })?;
            if !vals.is_object() {
                return Err(ConnectorError::Permanent {
                    message: format!("mapping {}: Odoo values must be a JSON object", op.body.id),
                });
            }
            let vals = self.resolve_links(vals).await?;
            if op.method == "write" {
                let id: i64 =
                    effect.body.get("external_id").and_then(Value::as_str).and_then(|s| s.parse().ok()).ok_or_else(
                        || ConnectorError::Permanent {
                            message: "write needs the order's external id to be an Odoo record id".into(),
                        },
                    )?;
                self.rpc.execute(&op.model, "write", json!([[id], vals]), json!({})).await?;
                return Ok(Receipt {
                    status: 200,
                    summary: format!("{} {id} written", op.model),
                    reference: Some(id.to_string()),
                });
            }
            if let Some(field) = &op.idempotency_field {
                let value = vals.get(field).cloned().ok_or_else(|| ConnectorError::Permanent {
                    message: format!("mapping {} does not set `{field}`, the idempotency field", op.body.id),
                })?;
                let found =
                    self.rpc.execute(&op.model, "search", json!([[[field, "=", value]]]), json!({"limit": 1})).await?;
                if let Some(id) = found.as_array().and_then(|a| a.first()).and_then(Value::as_i64) {
                    return Ok(Receipt {
                        status: 200,
                        summary: format!("found {} {id}, created by an earlier attempt; not created again", op.model),
                        reference: Some(id.to_string()),
                    });
                }
            }
            let created = self.rpc.execute(&op.model, "create", json!([vals]), json!({})).await?;
            let id = created.as_i64().or_else(|| created.as_array().and_then(|a| a.first()).and_then(Value::as_i64));
            Ok(Receipt {
                status: 200,
                summary: format!("{} created: {created}", op.model),
                reference: id.map(|i| i.to_string()),
            })
        })
    }
}

impl OdooPush {
    /// Replaces each `{"find_or_create": {"model", "search", "create"}}` value, at
    /// any depth (a many2one such as `partner_id`, or a line's `product_id`), by the
    /// id of the record the search finds, or of the one created from `create`.
    async fn resolve_links(&self, mut vals: Value) -> Result<Value, ConnectorError> {
        let mut pointers = Vec::new();
        find_links(&vals, String::new(), &mut pointers);
        for pointer in pointers {
            let spec = vals.pointer(&pointer).and_then(|v| v.get("find_or_create")).cloned().unwrap_or_default();
            let bad =
                |what: &str| ConnectorError::Permanent { message: format!("`{pointer}`: find_or_create needs {what}") };
            let model = spec.get("model").and_then(Value::as_str).ok_or_else(|| bad("a `model`"))?;
            let search = spec.get("search").filter(|s| s.is_array()).ok_or_else(|| bad("a `search` domain"))?;
            let create = spec.get("create").filter(|c| c.is_object()).ok_or_else(|| bad("`create` values"))?;
            let found = self.rpc.execute(model, "search", json!([search]), json!({"limit": 1})).await?;
            let id = match found.as_array().and_then(|a| a.first()).and_then(Value::as_i64) {
                Some(id) => id,
                None => self
                    .rpc
                    .execute(model, "create", json!([create]), json!({}))
                    .await?
                    .as_i64()
                    .ok_or_else(|| bad("a create that returns an id"))?,
            };
            if let Some(slot) = vals.pointer_mut(&pointer) {
                *slot = Value::from(id);
            }
        }
        Ok(vals)
    }
}

/// JSON pointers of the `find_or_create` objects in `v`.
fn find_links(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) if m.contains_key("find_or_create") => out.push(at),
        Value::Object(m) => {
            for (k, x) in m {
                find_links(x, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                find_links(x, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

pub struct OdooPoll {
    rpc: Arc<Rpc>,
    model: String,
    fields: Vec<String>,
    domain: Vec<Value>,
    watermark_field: String,
    limit: u32,
    schedule: crate::schedule::Schedule,
    mapping: Arc<Mapping>,
    start_from: Option<String>,
}

impl OdooPoll {
    async fn fetch_page(&self, state: &PollState) -> Result<Page, ConnectorError> {
        let mut domain = self.domain.clone();
        if let Some(w) = &state.watermark {
            let t = crate::mapping::outbound::parse_time(w)
                .map_or_else(|| w.clone(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string());
            domain.push(json!([self.watermark_field, ">=", t]));
        }
        // search_read returns only the fields asked for: the watermark must be one.
        let mut fields = self.fields.clone();
        if !fields.contains(&self.watermark_field) {
            fields.push(self.watermark_field.clone());
        }
        let records = self
            .rpc
            .execute(
                &self.model,
                "search_read",
                json!([domain]),
                json!({"fields": fields, "order": format!("{} asc, id asc", self.watermark_field), "limit": self.limit, "offset": state.offset}),
            )
            .await?;
        let records = match records {
            Value::Array(a) => a,
            other => {
                return Err(ConnectorError::Permanent {
                    message: format!(
                        "search_read answered {}, not a list",
                        other.to_string().chars().take(80).collect::<String>()
                    ),
                });
            }
        };
        let page_max = records
            .iter()
            .filter_map(|r| r.get(&self.watermark_field).and_then(normalize_watermark))
            .fold(None, |m, w| watermark_max(m, Some(w)));
        let next = (records.len() >= self.limit as usize)
            .then(|| PollState { offset: state.offset + u64::from(self.limit), ..Default::default() });
        let (next, more) = state.advance(page_max, records.len(), next, None);
        Ok(Page { records, numbers: Vec::new(), next, more })
    }
}

impl Poll for OdooPoll {
    fn id(&self) -> &ConnectorId {
        &self.rpc.id
    }
    fn schedule(&self) -> &crate::schedule::Schedule {
        &self.schedule
    }
    fn mapping(&self) -> &Arc<Mapping> {
        &self.mapping
    }
    fn initial(&self) -> PollState {
        PollState { watermark: self.start_from.clone(), ..Default::default() }
    }
    fn fetch<'a>(&'a self, state: &'a PollState) -> BoxFuture<'a, Result<Page, ConnectorError>> {
        Box::pin(self.fetch_page(state))
    }
}

/// `check --online`: logs in (which proves URL, database and key).
struct OdooHealth {
    rpc: Arc<Rpc>,
}

impl Health for OdooHealth {
    fn check(&self) -> BoxFuture<'_, Result<String, ConnectorError>> {
        Box::pin(async move {
            *self.rpc.uid.lock().await = None;
            let uid = self.rpc.uid().await?;
            Ok(format!("logged in to database `{}` as user {uid}", self.rpc.database))
        })
    }
}
