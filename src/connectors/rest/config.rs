//! The `rest` connector file as written (`connectors/<id>.toml` of the `rest` kind or
//! of a preset built on it), and how a preset fills in what the file leaves out.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// `connectors/<id>.toml` of the `rest` kind or of a preset built on it (`hubspot`,
/// `xero`, `stripe`, `erpnext`): a preset fills in what the file leaves out.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `rest` or a preset's name.
    #[allow(dead_code, reason = "the registry parses the kind first; kept so deny_unknown_fields accepts it")]
    pub kind: String,
    /// Base URL of outbound calls, e.g. `https://erp.bank.example/api`.
    pub base_url: Option<Spanned<String>>,
    /// Time limit of one outbound call, in seconds (default 10).
    pub timeout_secs: Option<u64>,
    /// The older spelling of `[limits] concurrency`.
    pub max_concurrency: Option<Spanned<usize>>,
    /// Slots and rate of outbound calls (`concurrency`, `rate_per_second`, `burst`).
    pub limits: Option<crate::connectors::limits::LimitsFile>,
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
    /// renders the body; without it a minimal envelope is sent (ids, state, amounts,
    /// no personal data: `engine::effects::envelope`); `"snapshot"` sends the whole
    /// order (an explicit opt-in that `check` notes).
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
