//! Validating a `rest` connector file and building the connector from it (no
//! network): every problem is collected with its location, secrets are resolved and
//! judged, templates compiled.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json_path::JsonPath;
use tokio::sync::Semaphore;
use toml::Spanned;

use super::Problems;
use super::client::{Auth, RestHealth, Shared};
use super::config::{AuthFile, Config, OperationFile, PagingFile, PollFile, WebhookFile};
use super::poll::{Paging, PollPlan, RestPoll};
use super::push::{Call, Lookup, Operation, RestPush, SNAPSHOT_BODY};
use crate::connectors::oauth2::ClientCredentials;
use crate::connectors::signature::Verifier;
use crate::connectors::{Connector, Health, Poll, Push, Webhook, resolve_secret};
use crate::domain::ConnectorId;
use crate::engine::reporting::Reported;
use crate::mapping::Mapping;
use crate::mapping::outbound::{OutboundMapping, Snippets};

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
            "oauth2_client_credentials" => self.oauth2(&a, span, &kind, client),
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

    /// `oauth2_client_credentials`: the token URL, the client's id (a reference
    /// resolves) and secret.
    fn oauth2(&mut self, a: &AuthFile, span: Range<usize>, kind: &str, client: &reqwest::Client) -> Auth {
        let client_secret = self.secret(&a.client_secret, &span, kind, "client_secret");
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
                    "auth kind oauth2_client_credentials needs an http(s) `token_url`, `client_id` and `client_secret`"
                        .into(),
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
        let snapshot = op.body.as_ref().is_some_and(|b| b.get_ref() == SNAPSHOT_BODY);
        if snapshot && self.outbound.contains_key(SNAPSHOT_BODY) {
            self.problems.push((
                op.body.as_ref().map(Spanned::span),
                format!("{what}: body = \"{SNAPSHOT_BODY}\" sends the whole order; rename mappings/{SNAPSHOT_BODY}.toml to use it as a mapping"),
            ));
        }
        let body = op.body.as_ref().filter(|_| !snapshot).and_then(|b| self.outbound(b));
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
            snapshot,
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
        let paging = self.paging(p.paging.clone().unwrap_or_default(), &span, &mut query);
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

    /// How a listing pages; the paging's query parameters join `query`.
    fn paging(&mut self, paging: PagingFile, span: &Range<usize>, query: &mut Vec<(String, String)>) -> Option<Paging> {
        match paging {
            PagingFile::None => Some(Paging::None),
            PagingFile::Cursor { next, param } => {
                if let Some(param) = param {
                    query.push((param, self.template(false, "poll.query.$cursor".into(), "{{ cursor }}", span)));
                }
                self.json_path(&next, span, "poll: paging.next").map(|next| Paging::Cursor { next })
            }
            PagingFile::Offset { param, limit_param, limit } => {
                if let Some(param) = param {
                    query.push((param, self.template(false, "poll.query.$offset".into(), "{{ offset }}", span)));
                }
                if let Some(lp) = limit_param {
                    query.push((lp, self.template(false, "poll.query.$limit".into(), "{{ limit }}", span)));
                }
                if limit == 0 {
                    self.problems.push((Some(span.clone()), "poll: paging.limit must be positive".into()));
                }
                Some(Paging::Offset { limit })
            }
            PagingFile::Page { param, start, size, size_param } => {
                if let Some(param) = param {
                    query.push((param, self.template(false, "poll.query.$page".into(), "{{ page }}", span)));
                }
                if let Some(sp) = size_param {
                    query.push((sp, self.template(false, "poll.query.$size".into(), "{{ limit }}", span)));
                }
                if size == 0 {
                    self.problems.push((Some(span.clone()), "poll: paging.size must be positive".into()));
                }
                Some(Paging::Page { start, size })
            }
            PagingFile::LastId { id, more, param } => {
                if let Some(param) = param {
                    query.push((param, self.template(false, "poll.query.$cursor".into(), "{{ cursor }}", span)));
                }
                let id = self.json_path(&id, span, "poll: paging.id");
                let more = self.json_path(&more, span, "poll: paging.more");
                id.zip(more).map(|(id, more)| Paging::LastId { id, more })
            }
            PagingFile::Link => Some(Paging::Link),
        }
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
        crate::connectors::install_crypto_provider();
        let timeout = self.timeout_secs.unwrap_or(10);
        let limits = self
            .limits
            .clone()
            .unwrap_or_default()
            .validate(self.max_concurrency.as_ref(), crate::connectors::limits::DEFAULT_CONCURRENCY);
        let client = http_client(timeout)?;
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
            crate::connectors::limits::Limits::default()
        });
        let webhook = self.webhook.and_then(|w| b.webhook(w));
        let mut operations = BTreeMap::new();
        for (name, op) in self.operations {
            if let Some(op) = b.operation(&name, op) {
                operations.insert(name, op);
            }
        }
        let auth = b.auth(self.auth, &client);
        let headers = b.headers(self.headers);
        let poll = self.poll.and_then(|p| b.poll(p));
        let needs_base = !operations.is_empty() || poll.is_some() || self.health.is_some();
        let base = b.base_url(self.base_url.as_ref(), needs_base);
        if let Some(h) = &self.health
            && !h.path.starts_with('/')
        {
            b.problems.push((None, "health.path must start with `/`".into()));
        }
        if !b.problems.is_empty() {
            return Err(b.problems);
        }
        let mut connector = Connector {
            id: id.clone(),
            kind,
            webhook,
            push: None,
            poll: None,
            health: None,
            operations: Vec::new(),
            limits,
        };
        // Without a base URL: a webhook-only connector.
        if let Some(base) = base {
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
            connector.poll = poll.map(|plan| Arc::new(RestPoll { shared: shared.clone(), plan }) as Arc<dyn Poll>);
            connector.health =
                self.health.map(|h| Arc::new(RestHealth { shared: shared.clone(), path: h.path }) as Arc<dyn Health>);
            connector.operations = operations.keys().cloned().collect();
            // The dispatcher keeps to `limits`; the semaphore also bounds calls that reach
            // the push another way (documents delivered through it, reconciliation).
            connector.push = (!operations.is_empty()).then(|| {
                Arc::new(RestPush { shared, operations, permits: Semaphore::new(limits.concurrency) }) as Arc<dyn Push>
            });
        }
        Ok(connector)
    }
}

/// The connector's HTTP client. Redirects are never followed: reqwest would carry
/// API-key headers to whatever host a Location names. A 3xx is a permanent error
/// instead.
fn http_client(timeout: u64) -> Result<reqwest::Client, Problems> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(timeout.max(1)))
        .connect_timeout(Duration::from_secs(timeout.clamp(1, 10)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("orderbridge/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| vec![(None, format!("cannot build HTTP client: {e}"))])
}

impl Builder<'_, '_> {
    /// `[webhook]`: the verifier (scheme and signing secret), the mapping, the events.
    fn webhook(&mut self, w: Spanned<WebhookFile>) -> Option<Webhook> {
        let span = w.span();
        let w = w.into_inner();
        let (Some(sig), Some(secret)) = (&w.signature, &w.secret) else {
            self.problems.push((Some(span), "[webhook] needs `signature` and `secret`".into()));
            return None;
        };
        // Without a mapping the connector sends events only (/webhooks/<id>/events).
        let mapping = match &w.mapping {
            Some(m) => Some(self.inbound(m)?),
            None => None,
        };
        let mut events = Vec::new();
        for e in w.events.iter().flat_map(|e| e.get_ref()) {
            match e.get_ref().parse::<Reported>() {
                Ok(r) if events.contains(&r) => {
                    self.problems.push((Some(e.span()), format!("[webhook] events: `{r}` is listed twice")))
                }
                Ok(r) => events.push(r),
                Err(m) => self.problems.push((Some(e.span()), format!("[webhook] events: {m}"))),
            }
        }
        let verifier = resolve_secret(secret, self.config_dir, self.checks, webhook_key_need(sig.get_ref()))
            .and_then(|s| {
                Verifier::new(sig.get_ref(), &s, w.tolerance_secs.unwrap_or(300), w.public_url.as_deref()).map_err(
                    |e| {
                        // A malformed secret is the secret's fault; anything else the scheme's.
                        let at = if e.contains("secret") { secret.span() } else { sig.span() };
                        (Some(at), e)
                    },
                )
            })
            .map_err(|p| self.problems.push(p))
            .ok();
        Some(Webhook { verifier: verifier?, mapping, events })
    }

    /// `base_url`: http(s), without credentials; `needed` by operations, polling and
    /// the health call.
    fn base_url(&mut self, base_url: Option<&Spanned<String>>, needed: bool) -> Option<Url> {
        match base_url {
            None if needed => {
                self.problems.push((None, "operations, [poll] and [health] need a `base_url`".into()));
                None
            }
            None => None,
            Some(u) => match Url::parse(u.get_ref()) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.password().is_none() => Some(url),
                Ok(_) => {
                    self.problems
                        .push((Some(u.span()), "base_url must be http(s) without credentials (use [auth])".into()));
                    None
                }
                Err(e) => {
                    self.problems.push((Some(u.span()), format!("base_url: {e}")));
                    None
                }
            },
        }
    }
}
