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
use tokio::sync::Semaphore;
use toml::Spanned;

use super::oauth2::ClientCredentials;
use super::signature::Verifier;
use super::{BoxFuture, Connector, ConnectorError, Outbound, Push, Receipt, Webhook, resolve_secret};
use crate::domain::ConnectorId;
use crate::mapping::Mapping;

type Problems = Vec<(Option<Range<usize>>, String)>;

/// `connectors/<id>.toml` with `kind = "rest"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Always `rest` for this kind.
    pub kind: String,
    /// Base URL of outbound calls, e.g. `https://erp.bank.example/api`.
    pub base_url: Option<Spanned<String>>,
    /// Time limit of one outbound call, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Most calls in flight to this system at once.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// How outbound calls authenticate.
    pub auth: Option<Spanned<AuthFile>>,
    /// Outbound operations by name; `rules.toml` effects refer to these names.
    #[serde(default)]
    pub operations: BTreeMap<String, Spanned<OperationFile>>,
    /// Inbound webhooks from this system.
    pub webhook: Option<Spanned<WebhookFile>>,
    /// Polling this system for changed records (when it sends no webhooks).
    pub poll: Option<Spanned<PollFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollFile {
    /// Path under `base_url` listing records (GET).
    pub path: String,
    /// Seconds between polling runs.
    #[serde(default = "default_poll_every")]
    pub every_secs: u64,
    /// The mapping (`mappings/<name>.toml`) applied to each record.
    pub mapping: Spanned<String>,
    /// JSONPath to the records in a page (default `$`: the page is the array).
    #[serde(default = "default_records")]
    pub records: String,
    /// JSONPath into a record to its modification mark (a timestamp or a number).
    pub watermark_field: String,
    /// Query parameter that asks for records changed at or after the watermark.
    pub watermark_param: String,
    /// The watermark of the very first run (default: everything).
    pub start_from: Option<String>,
    #[serde(default)]
    pub paging: PagingFile,
}

fn default_poll_every() -> u64 {
    60
}
fn default_records() -> String {
    "$".into()
}

/// How a listing pages: not at all, by a cursor in the body, by offset, or by the
/// `Link: <…>; rel="next"` header.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum PagingFile {
    #[default]
    None,
    Cursor {
        /// JSONPath into the page to the next cursor (absent or null: last page).
        next: String,
        /// Query parameter carrying the cursor.
        param: String,
    },
    Offset {
        param: String,
        limit_param: String,
        limit: u32,
    },
    Link,
}

fn default_timeout() -> u64 {
    10
}
fn default_concurrency() -> usize {
    8
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// `bearer` (token), `api_key` (header + value), `basic` (username + password) or
    /// `oauth2_client_credentials` (token_url + client_id + client_secret [+ scope]).
    pub kind: String,
    pub token: Option<Spanned<String>>,
    pub header: Option<String>,
    pub value: Option<Spanned<String>>,
    pub username: Option<String>,
    pub password: Option<Spanned<String>>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<Spanned<String>>,
    pub scope: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationFile {
    /// `POST`, `PUT` or `PATCH`.
    #[serde(default = "default_method")]
    pub method: String,
    /// Path under `base_url`; `{order_id}` and `{external_id}` are filled in.
    pub path: String,
    /// Header carrying the idempotency key.
    #[serde(default = "default_idempotency_header")]
    pub idempotency_header: String,
    /// JSONPath into the response body selecting the receiver's id for what it
    /// created (e.g. `$.id`); stored on the order under `<connector>.<operation>`.
    pub reference: Option<String>,
}

fn default_method() -> String {
    "POST".into()
}
fn default_idempotency_header() -> String {
    "Idempotency-Key".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    /// Signature scheme: `standard_webhooks`, `stripe`, `hubspot_v3`, `xero`, `shopify`
    /// or `github`.
    pub signature: Spanned<String>,
    /// `${ENV_NAME}` or `file:PATH` holding `whsec_…`.
    pub secret: Spanned<String>,
    /// Replay window: deliveries whose timestamp is further from now are refused.
    #[serde(default = "default_tolerance")]
    pub tolerance_secs: u64,
    /// The mapping (`mappings/<name>.toml`) applied to payloads.
    pub mapping: Spanned<String>,
    /// The public base URL the sender calls (only `hubspot_v3` signs the URL), e.g.
    /// `https://hooks.bank.example` behind a reverse proxy.
    pub public_url: Option<String>,
}

fn default_tolerance() -> u64 {
    300
}

enum Auth {
    None,
    Bearer(SecretString),
    ApiKey(HeaderName, SecretString),
    Basic(String, SecretString),
    OAuth2(ClientCredentials),
}

struct Operation {
    method: reqwest::Method,
    path: String,
    idempotency_header: HeaderName,
    reference: Option<serde_json_path::JsonPath>,
}

/// The outbound half of a `rest` connector.
pub struct RestPush {
    id: ConnectorId,
    client: reqwest::Client,
    base: Url,
    auth: Arc<Auth>,
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
    ) -> Result<Connector, Problems> {
        super::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(self.timeout_secs.max(1)))
            .connect_timeout(Duration::from_secs(self.timeout_secs.clamp(1, 10)))
            .user_agent(concat!("orderbridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| vec![(None, format!("cannot build HTTP client: {e}"))])?;
        let mut problems: Problems = Vec::new();
        let webhook = self.webhook.and_then(|w| {
            let w = w.into_inner();
            let mapping = mappings.get(w.mapping.get_ref()).cloned();
            if mapping.is_none() {
                problems.push((
                    Some(w.mapping.span()),
                    format!(
                        "mapping `{}` does not exist (no mappings/{}.toml, or it has errors)",
                        w.mapping.get_ref(),
                        w.mapping.get_ref()
                    ),
                ));
            }
            let verifier = resolve_secret(&w.secret, config_dir)
                .and_then(|s| {
                    Verifier::new(w.signature.get_ref(), &s, w.tolerance_secs, w.public_url.as_deref()).map_err(|e| {
                        // A malformed secret is the secret's fault; anything else the scheme's.
                        let at = if e.contains("secret") { w.secret.span() } else { w.signature.span() };
                        (Some(at), e)
                    })
                })
                .map_err(|p| problems.push(p))
                .ok();
            Some(Webhook { verifier: verifier?, mapping: mapping? })
        });

        let mut operations = BTreeMap::new();
        for (name, op) in self.operations {
            let span = op.span();
            let op = op.into_inner();
            let method = match op.method.to_ascii_uppercase().as_str() {
                "POST" => reqwest::Method::POST,
                "PUT" => reqwest::Method::PUT,
                "PATCH" => reqwest::Method::PATCH,
                other => {
                    problems
                        .push((Some(span), format!("operation {name}: method `{other}` is not POST, PUT or PATCH")));
                    continue;
                }
            };
            let Ok(idempotency_header) = HeaderName::from_bytes(op.idempotency_header.as_bytes()) else {
                problems
                    .push((Some(span), format!("operation {name}: `{}` is not a header name", op.idempotency_header)));
                continue;
            };
            if !op.path.starts_with('/') {
                problems.push((Some(span), format!("operation {name}: path must start with `/`")));
                continue;
            }
            let reference = match op.reference.as_deref().map(serde_json_path::JsonPath::parse) {
                None => None,
                Some(Ok(p)) => Some(p),
                Some(Err(e)) => {
                    problems.push((Some(span), format!("operation {name}: reference is not a JSONPath: {e}")));
                    continue;
                }
            };
            operations.insert(name, Operation { method, path: op.path, idempotency_header, reference });
        }

        let base = match &self.base_url {
            None if !operations.is_empty() => {
                problems.push((None, "operations need a `base_url`".into()));
                None
            }
            None => None,
            Some(u) => match Url::parse(u.get_ref()) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.password().is_none() => Some(url),
                Ok(_) => {
                    problems.push((Some(u.span()), "base_url must be http(s) without credentials (use [auth])".into()));
                    None
                }
                Err(e) => {
                    problems.push((Some(u.span()), format!("base_url: {e}")));
                    None
                }
            },
        };

        let auth = match self.auth {
            None => Auth::None,
            Some(a) => {
                let span = a.span();
                let a = a.into_inner();
                let mut secret = |v: &Option<Spanned<String>>, what: &str| match v {
                    None => {
                        problems.push((Some(span.clone()), format!("auth kind {} needs `{what}`", a.kind)));
                        None
                    }
                    Some(v) => resolve_secret(v, config_dir).map_err(|p| problems.push(p)).ok(),
                };
                match a.kind.as_str() {
                    "bearer" => secret(&a.token, "token").map(Auth::Bearer).unwrap_or(Auth::None),
                    "api_key" => {
                        let value = secret(&a.value, "value");
                        match a.header.as_deref().map(|h| HeaderName::from_bytes(h.as_bytes())) {
                            Some(Ok(h)) => value.map(|v| Auth::ApiKey(h, v)).unwrap_or(Auth::None),
                            _ => {
                                problems.push((Some(span.clone()), "auth kind api_key needs a valid `header`".into()));
                                Auth::None
                            }
                        }
                    }
                    "oauth2_client_credentials" => {
                        let client_secret = secret(&a.client_secret, "client_secret");
                        let url = a.token_url.as_deref().map(Url::parse);
                        match (url, &a.client_id, client_secret) {
                            (Some(Ok(url)), Some(id), Some(cs)) if matches!(url.scheme(), "http" | "https") => {
                                Auth::OAuth2(ClientCredentials::new(
                                    url,
                                    id.clone(),
                                    cs,
                                    a.scope.clone(),
                                    client.clone(),
                                ))
                            }
                            _ => {
                                problems.push((
                                    Some(span.clone()),
                                    "auth kind oauth2_client_credentials needs an http(s) `token_url`, `client_id` and `client_secret`".into(),
                                ));
                                Auth::None
                            }
                        }
                    }
                    "basic" => {
                        let password = secret(&a.password, "password");
                        match (&a.username, password) {
                            (Some(u), Some(p)) => Auth::Basic(u.clone(), p),
                            _ => {
                                problems.push((
                                    Some(span.clone()),
                                    "auth kind basic needs `username` and `password`".into(),
                                ));
                                Auth::None
                            }
                        }
                    }
                    other => {
                        problems.push((
                            Some(span.clone()),
                            format!("auth kind `{other}` is not bearer, api_key, basic or oauth2_client_credentials"),
                        ));
                        Auth::None
                    }
                }
            }
        };
        if self.timeout_secs == 0 || self.max_concurrency == 0 {
            problems.push((None, "timeout_secs and max_concurrency must be positive".into()));
        }
        if !problems.is_empty() {
            return Err(problems);
        }

        let auth = Arc::new(auth);
        let poll = match self.poll {
            None => None,
            Some(p) => {
                let span = p.span();
                let p = p.into_inner();
                let mut bad = |m: String| problems.push((Some(span.clone()), format!("poll: {m}")));
                let mapping = mappings.get(p.mapping.get_ref()).cloned();
                if mapping.is_none() {
                    bad(format!(
                        "mapping `{}` does not exist (no mappings/{}.toml, or it has errors)",
                        p.mapping.get_ref(),
                        p.mapping.get_ref()
                    ));
                }
                let path_of = |what: &str, s: &str| {
                    serde_json_path::JsonPath::parse(s).map_err(|e| format!("{what} `{s}` is not a JSONPath: {e}"))
                };
                let records = path_of("records", &p.records).map_err(&mut bad).ok();
                let watermark = path_of("watermark_field", &p.watermark_field).map_err(&mut bad).ok();
                let paging = match &p.paging {
                    PagingFile::Cursor { next, param } => path_of("paging.next", next)
                        .map_err(&mut bad)
                        .ok()
                        .map(|n| Paging::Cursor { next: n, param: param.clone() }),
                    PagingFile::Offset { param, limit_param, limit } if *limit > 0 => {
                        Some(Paging::Offset { param: param.clone(), limit_param: limit_param.clone(), limit: *limit })
                    }
                    PagingFile::Offset { .. } => {
                        bad("paging.limit must be positive".into());
                        None
                    }
                    PagingFile::Link => Some(Paging::Link),
                    PagingFile::None => Some(Paging::None),
                };
                if !p.path.starts_with('/') {
                    bad("path must start with `/`".into());
                }
                if p.every_secs == 0 {
                    bad("every_secs must be positive".into());
                }
                match (&base, mapping, records, watermark, paging) {
                    (Some(base), Some(mapping), Some(records), Some(watermark), Some(paging)) => {
                        Some(Arc::new(RestPoll {
                            id: id.clone(),
                            client: client.clone(),
                            base: base.clone(),
                            auth: auth.clone(),
                            path: p.path,
                            every: Duration::from_secs(p.every_secs),
                            mapping,
                            records,
                            watermark,
                            watermark_param: p.watermark_param,
                            start_from: p.start_from,
                            paging,
                        }))
                    }
                    (None, ..) => {
                        problems.push((Some(span), "poll needs a `base_url`".into()));
                        None
                    }
                    _ => None,
                }
            }
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        let op_names: Vec<String> = operations.keys().cloned().collect();
        let push: Option<Arc<dyn Push>> = match base {
            Some(base) if !operations.is_empty() => Some(Arc::new(RestPush {
                id: id.clone(),
                client,
                base,
                auth,
                operations,
                permits: Semaphore::new(self.max_concurrency),
            })),
            _ => None,
        };
        Ok(Connector { id: id.clone(), kind: "rest", webhook, push, poll, operations: op_names })
    }
}

impl Push for RestPush {
    fn perform<'a>(&'a self, effect: Outbound<'a>) -> BoxFuture<'a, Result<Receipt, ConnectorError>> {
        Box::pin(async move {
            let op = self.operations.get(effect.operation).ok_or_else(|| ConnectorError::Permanent {
                message: format!("connector {} has no operation `{}`", self.id, effect.operation),
            })?;
            let _permit = self.permits.acquire().await.expect("semaphore is never closed");
            let fill =
                |key: &str| effect.body.get(key).and_then(|v| v.as_str()).map(encode_segment).unwrap_or_default();
            let path = op.path.replace("{order_id}", &fill("order_id")).replace("{external_id}", &fill("external_id"));
            let url = join(&self.base, &path);
            let mut req = self
                .client
                .request(op.method.clone(), url)
                .json(effect.body)
                .header(op.idempotency_header.clone(), effect.idempotency_key);
            req = authorize(&self.auth, req).await?;
            let resp = req
                .send()
                .await
                .map_err(|e| ConnectorError::Retryable { message: describe(&e.without_url()), retry_after: None })?;
            if let (Auth::OAuth2(cc), 401) = (&*self.auth, resp.status().as_u16()) {
                // The token was revoked or expired early: fetch a fresh one next time.
                cc.invalidate().await;
            }
            let mut receipt = classify(resp).await?;
            if let Some(path) = &op.reference {
                receipt.reference = serde_json::from_str::<serde_json::Value>(&receipt.summary).ok().and_then(|v| {
                    match path.query(&v).exactly_one().ok()? {
                        serde_json::Value::String(s) => Some(s.clone()),
                        serde_json::Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    }
                });
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

pub(crate) fn encode_segment(s: &str) -> String {
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

/// Maps a response to success or to what the dispatcher should do next.
pub async fn classify(resp: reqwest::Response) -> Result<Receipt, ConnectorError> {
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = resp.text().await.unwrap_or_default();
    let snippet: String = body.chars().take(2000).collect();
    let message = format!("HTTP {}: {}", status.as_u16(), snippet.trim());
    match status.as_u16() {
        200..=299 => Ok(Receipt { status: status.as_u16(), summary: snippet, reference: None }),
        401 | 403 => Err(ConnectorError::Auth { message }),
        408 | 425 | 429 | 500..=599 => Err(ConnectorError::Retryable { message, retry_after }),
        _ => Err(ConnectorError::Permanent { message }),
    }
}

enum Paging {
    None,
    Cursor { next: serde_json_path::JsonPath, param: String },
    Offset { param: String, limit_param: String, limit: u32 },
    Link,
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
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One fetched page.
pub struct Page {
    pub records: Vec<serde_json::Value>,
    /// The state to commit with this page's records.
    pub next: PollState,
    /// True when the run continues with another page.
    pub more: bool,
}

/// Compares two watermarks: as decimals when both are numbers, else as text
/// (ISO 8601 timestamps in one zone sort as text).
pub fn watermark_max(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (None, x) | (x, None) => x,
        (Some(a), Some(b)) => {
            let newer = match (a.parse::<rust_decimal::Decimal>(), b.parse::<rust_decimal::Decimal>()) {
                (Ok(x), Ok(y)) => y > x,
                _ => b > a,
            };
            Some(if newer { b } else { a })
        }
    }
}

/// The polling half of a `rest` connector.
pub struct RestPoll {
    pub id: ConnectorId,
    client: reqwest::Client,
    base: Url,
    auth: Arc<Auth>,
    path: String,
    pub every: Duration,
    pub mapping: Arc<Mapping>,
    records: serde_json_path::JsonPath,
    watermark: serde_json_path::JsonPath,
    watermark_param: String,
    start_from: Option<String>,
    paging: Paging,
}

impl RestPoll {
    /// The state of a connector never polled before.
    pub fn initial(&self) -> PollState {
        PollState { watermark: self.start_from.clone(), ..Default::default() }
    }

    /// Fetches the page `state` points at.
    ///
    /// # Errors
    /// What the call's answer means, as for pushes (`Retryable`, `Permanent`, `Auth`).
    pub async fn fetch(&self, state: &PollState) -> Result<Page, ConnectorError> {
        let url = match (&self.paging, &state.next_url) {
            (Paging::Link, Some(url)) => url.clone(),
            _ => {
                let mut url = Url::parse(&join(&self.base, &self.path))
                    .map_err(|e| ConnectorError::Permanent { message: format!("poll path: {e}") })?;
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(w) = &state.watermark {
                        q.append_pair(&self.watermark_param, w);
                    }
                    match &self.paging {
                        Paging::Cursor { param, .. } => {
                            if let Some(c) = &state.cursor {
                                q.append_pair(param, c);
                            }
                        }
                        Paging::Offset { param, limit_param, limit } => {
                            q.append_pair(param, &state.offset.to_string());
                            q.append_pair(limit_param, &limit.to_string());
                        }
                        Paging::None | Paging::Link => {}
                    }
                }
                url.to_string()
            }
        };
        let mut req = self.client.get(url);
        req = authorize(&self.auth, req).await?;
        let resp = req
            .send()
            .await
            .map_err(|e| ConnectorError::Retryable { message: describe(&e.without_url()), retry_after: None })?;
        let link_next = resp
            .headers()
            .get_all(reqwest::header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .find(|part| part.contains("rel=\"next\"") || part.contains("rel=next"))
            .and_then(|part| part.split(';').next())
            .map(|u| u.trim().trim_start_matches('<').trim_end_matches('>').to_owned());
        if let (Auth::OAuth2(cc), 401) = (&*self.auth, resp.status().as_u16()) {
            cc.invalidate().await;
        }
        let status = resp.status();
        let body =
            resp.text().await.map_err(|e| ConnectorError::Retryable { message: describe(&e), retry_after: None })?;
        if !status.is_success() {
            let message = format!("HTTP {}: {}", status.as_u16(), body.chars().take(300).collect::<String>().trim());
            return Err(match status.as_u16() {
                401 | 403 => ConnectorError::Auth { message },
                408 | 425 | 429 | 500..=599 => ConnectorError::Retryable { message, retry_after: None },
                _ => ConnectorError::Permanent { message },
            });
        }
        let page: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| ConnectorError::Permanent { message: format!("the page is not JSON: {e}") })?;
        let records: Vec<serde_json::Value> = match self.records.query(&page).all().as_slice() {
            [serde_json::Value::Array(a)] => a.clone(),
            [] => Vec::new(),
            many => many.iter().map(|v| (*v).clone()).collect(),
        };
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let page_max = records
            .iter()
            .filter_map(|r| self.watermark.query(r).exactly_one().ok().and_then(text))
            .fold(None, |m, w| watermark_max(m, Some(w)));
        let run_max = watermark_max(state.run_max.clone(), page_max);
        let next = match &self.paging {
            Paging::None => None,
            Paging::Cursor { next, .. } => next
                .query(&page)
                .exactly_one()
                .ok()
                .and_then(text)
                .map(|c| PollState { cursor: Some(c), ..Default::default() }),
            Paging::Offset { limit, .. } if records.len() >= *limit as usize => {
                Some(PollState { offset: state.offset + u64::from(*limit), ..Default::default() })
            }
            Paging::Offset { .. } => None,
            Paging::Link => link_next.map(|u| PollState { next_url: Some(u), ..Default::default() }),
        };
        Ok(match next {
            Some(mut n) => {
                n.watermark = state.watermark.clone();
                n.run_max = run_max;
                Page { records, next: n, more: true }
            }
            None => Page {
                records,
                next: PollState { watermark: watermark_max(state.watermark.clone(), run_max), ..Default::default() },
                more: false,
            },
        })
    }
}

#[cfg(test)]
mod poll_tests {
    use super::watermark_max;

    #[test]
    fn watermarks_compare_as_numbers_or_as_text() {
        let m = |a: Option<&str>, b: Option<&str>| watermark_max(a.map(String::from), b.map(String::from));
        assert_eq!(m(Some("9"), Some("10")).as_deref(), Some("10"), "numbers, not text");
        assert_eq!(m(Some("1700000000000"), Some("999")).as_deref(), Some("1700000000000"));
        assert_eq!(
            m(Some("2026-11-26T10:09:00Z"), Some("2026-11-26T09:59:00Z")).as_deref(),
            Some("2026-11-26T10:09:00Z")
        );
        assert_eq!(m(None, Some("5")).as_deref(), Some("5"));
        assert_eq!(m(Some("5"), None).as_deref(), Some("5"));
        assert_eq!(m(None, None), None);
    }
}
