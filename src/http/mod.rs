//! The HTTP surface (axum): webhooks, the admin API, health and metrics.
//! Handlers translate HTTP to application calls (`crate::orders`) and store reads;
//! they decide nothing and never perform effects (invariant 2).
//!
//! Two listeners: the public one (`router`: webhooks, pages, the console, health) and
//! the admin one (`admin_router`: `/api/*`, `/metrics`, health), each with its own
//! slots. `principal` finds who acts and asks the policy table (`engine::access`).
//! `server` owns connections (header-read and idle timeouts); `guard` bounds each
//! request (a slot, the whole-request and body timeouts, the panic boundary).

pub(crate) mod api;
pub(crate) mod archive;
pub(crate) mod console;
pub(crate) mod error;
pub(crate) mod feedback;
pub(crate) mod fulfilment;
pub(crate) mod health;
pub(crate) mod keys;
pub(crate) mod oidc;
pub(crate) mod pages;
pub(crate) mod principal;
pub(crate) mod reports;
pub(crate) mod rules;
pub(crate) mod server;
pub(crate) mod webhooks;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use tokio::sync::{Notify, Semaphore};

use crate::clock::Clock;
use crate::connectors::Registry;
use crate::links::LinkSigner;
use crate::metrics::Metrics;
use crate::orders::Orders;
use crate::settings::Settings;
use crate::store::Store;

/// Shared by every handler: one `Arc`, so a request clones a pointer, not the
/// eighteen shared parts of `App` (their reference counts were 1 % of the daemon's
/// CPU under `scripts/bench.sh`, two clones and drops per request).
#[derive(Clone)]
pub struct AppState(Arc<App>);

impl AppState {
    /// The shared state, built once at startup (`crate::startup`).
    pub fn new(app: App) -> AppState {
        AppState(Arc::new(app))
    }
}

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

/// Copy on write: a changed clone (a test's state with a broken clock) gets its own
/// `App`; the others keep theirs.
impl std::ops::DerefMut for AppState {
    fn deref_mut(&mut self) -> &mut App {
        Arc::make_mut(&mut self.0)
    }
}

/// What every handler shares (`AppState`).
#[derive(Clone)]
pub struct App {
    /// Lifecycle steps (the application layer).
    pub orders: Arc<Orders>,
    /// Reads.
    pub store: Arc<dyn Store>,
    /// Archived orders: finding them, holds, passes.
    pub archive: Arc<crate::archive::Archive>,
    pub(crate) registry: Arc<Registry>,
    /// The live rules (`crate::review::LiveRules`): swapped on activation, read per step.
    pub rules: crate::review::LiveRules,
    pub(crate) settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    /// False until workers run, and again from the start of shutdown.
    pub(crate) ready: Arc<AtomicBool>,
    /// Wakes the dispatcher when new effects were committed.
    pub(crate) dispatcher_wake: Arc<Notify>,
    /// Verifies the signed links pages are opened with; `None`: no link key configured.
    pub links: Option<Arc<LinkSigner>>,
    /// The locale's templates: mail, documents and the pages' text (`pages/*.html`).
    pub(crate) templates: Option<Arc<crate::mail::Templates>>,
    /// Connectors paused after authentication failures (shared with the dispatcher).
    pub(crate) paused: Arc<crate::workers::dispatcher::Paused>,
    /// Console sessions and sign-in links.
    pub(crate) sessions: Arc<crate::auth::sessions::Sessions>,
    /// The base of links in mail: `site.public_url`, else the address the public
    /// listener is bound to (never a request's `Host`).
    pub(crate) public_url: Arc<str>,
    /// Sends console sign-in links now (`None`: no `[smtp]`, so no sign-in by mail).
    pub(crate) mailer: Option<Arc<crate::mail::Mailer>>,
    /// Sign-in through an OpenID Connect provider (`None`: not configured).
    pub(crate) oidc: Option<Arc<crate::auth::oidc::Oidc>>,
    /// Scheduled management reports (`[[reports]]`), for their previews.
    pub(crate) reports: Arc<Vec<crate::reports::ReportSpec>>,
}

impl App {
    pub fn wake_dispatcher(&self) {
        self.dispatcher_wake.notify_one();
    }
    /// The data directory (`store.path`): documents and the API token file live there.
    pub fn store_path(&self) -> &std::path::Path {
        &self.settings.store_path
    }
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// The admin listener's routes: `/api/*` (a token; the policy table decides what it
/// may do, `principal::api_gate`), `/metrics`, and health.
pub(crate) fn admin_router(state: AppState) -> Router {
    let api = Router::new()
        .route("/orders", get(api::list_orders))
        .route("/orders/{id}", get(api::get_order))
        .route("/orders/{id}/approvals", post(api::decide_approval))
        .route("/orders/{id}/review", post(api::review))
        .route("/orders/{id}/tasks/{task}/done", post(fulfilment::task_done))
        .route("/orders/{id}/delivery", post(fulfilment::delivery))
        .route("/orders/{id}/documents/{kind}", get(fulfilment::document))
        .route("/orders/{id}/acceptance", post(fulfilment::acceptance))
        .route("/orders/{id}/exception", post(fulfilment::exception))
        .route("/payments", post(fulfilment::payment))
        .route("/reconcile", post(fulfilment::reconcile))
        .route("/customers/{id}/receivables", get(fulfilment::receivables))
        .route("/payments/unmatched", get(fulfilment::unmatched))
        .route("/payments/unmatched/{source}/{payment_id}/assign", post(fulfilment::assign))
        .route("/connectors", get(api::list_connectors))
        .route("/connectors/{id}/resume", post(api::resume_connector))
        .route("/outbox", get(api::list_outbox))
        .route("/outbox/dead", get(api::list_dead))
        .route("/outbox/dead/{id}/replay", post(api::replay_dead))
        .route("/audit/verify", get(api::verify_audit))
        .route("/audit/anchor", post(api::write_anchor))
        .route("/archive/run", post(archive::run))
        .route("/orders/{id}/legal-hold", post(archive::hold).delete(archive::release))
        .route("/keys", get(keys::status))
        .route("/keys/rotate", post(keys::rotate))
        .route("/orders/{id}/erase-personal-data", post(keys::erase))
        .route("/store/quarantine", get(api::quarantined))
        .route("/store/quarantine/resolve", post(api::resolve_quarantined))
        .route("/reports/kpis", get(reports::kpis))
        .route("/reports/scheduled/{name}", get(reports::scheduled))
        .route("/export", get(reports::export))
        .route("/rules/candidates", post(rules::propose))
        .route("/rules/candidates/{version}/approve", post(rules::approve))
        .route("/rules/activate", post(rules::activate))
        .route("/rules/rollback", post(rules::rollback))
        .route("/rules/changes", get(rules::changes))
        .route("/rules/shadow", post(rules::shadow))
        .route("/rules/shadow-report", get(rules::shadow_report))
        .route_layer(middleware::from_fn_with_state(state.clone(), principal::api_gate));
    let gate = Gate::new(&state, "admin");
    Router::new()
        .nest("/api", api)
        .route("/metrics", get(health::metrics))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(|| async { error::ApiError::not_found("no such route") })
        .layer(middleware::from_fn_with_state(gate, guard))
        .with_state(state)
}

/// The public listener's routes: webhooks, pages (signed links) and health. `/api/*`
/// and `/metrics` are not here: they answer 404 and live on the admin listener.
pub fn router(state: AppState) -> Router {
    let gate = Gate::new(&state, "public");
    // Pages take small forms: a tighter limit than axum's 2 MB default.
    let pages_limit = DefaultBodyLimit::max(PAGE_FORM_MAX_BYTES);
    Router::new()
        // Our own limit is enforced in the handler (JSON 413); lift axum's 2 MB default.
        .route("/webhooks/{connector}", post(webhooks::receive).layer(DefaultBodyLimit::disable()))
        .route("/webhooks/{connector}/events", post(fulfilment::system_event).layer(DefaultBodyLimit::disable()))
        .route("/pages/survey/{token}", get(pages::survey_form).post(pages::survey_answer).layer(pages_limit))
        .route(
            "/pages/approval/{token}",
            get(pages::approval_form_page).post(pages::approval_answer).layer(pages_limit),
        )
        .route(
            "/pages/acceptance/{token}",
            get(pages::acceptance_page).post(pages::acceptance_answer).layer(pages_limit),
        )
        .route("/pages/status/{token}", get(pages::status_page))
        .route("/pages/feedback/{token}", get(feedback::feedback_form).post(feedback::feedback_send).layer(pages_limit))
        .route("/signin", get(console::signin_form).post(console::signin).layer(pages_limit))
        .route("/signin/{token}", get(console::signin_confirm).post(console::signin_link).layer(pages_limit))
        .route("/signin/oidc", get(oidc::start))
        .route("/signin/oidc/callback", get(oidc::callback))
        .route("/signout", post(console::signout).layer(pages_limit))
        .route("/console", get(console::inbox))
        .route("/console/orders/{id}/approval", post(console::decide).layer(pages_limit))
        .route("/console/orders", get(console::orders::search))
        .route("/console/orders/{id}", get(console::orders::order))
        .route("/console/orders/{id}/documents/{kind}", get(console::orders::document))
        .route("/console/process", get(console::process::map))
        .route("/console/reports", get(console::reports::kpis))
        .route("/console/exceptions", get(console::work::exceptions))
        .route("/console/exceptions/{id}/resolve", post(console::work::resolve).layer(pages_limit))
        .route("/console/dead-letters", get(console::work::dead_letters))
        .route("/console/dead-letters/{id}/replay", post(console::work::replay).layer(pages_limit))
        .route("/console/connectors", get(console::work::connectors))
        .route("/console/connectors/{id}/resume", post(console::work::resume).layer(pages_limit))
        .route("/console/review", get(console::review::flagged))
        .route("/console/review/{id}", post(console::review::review).layer(pages_limit))
        .route("/console/payments", get(console::review::payments))
        .route("/console/admin", get(console::admin::admin))
        .route("/console/feedback", get(console::feedback::list))
        .route("/console/feedback/new", get(console::feedback::new).post(console::feedback::send).layer(pages_limit))
        .route("/console/receivables", get(console::review::receivables))
        .route("/console/payments/{source}/{payment_id}/assign", post(console::review::assign).layer(pages_limit))
        .route("/console/rules", get(console::rules::page))
        .route("/console/rules/candidates", post(console::rules::propose).layer(pages_limit))
        .route("/console/rules/{version}/approve", post(console::rules::approve).layer(pages_limit))
        .route("/console/rules/{version}/activate", post(console::rules::activate).layer(pages_limit))
        .route("/console/rules/{version}/shadow", post(console::rules::shadow).layer(pages_limit))
        .route("/pages/assets/style.css", get(pages::style))
        .route("/pages/assets/logo", get(pages::logo))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", any(admin_only))
        .route("/api", any(admin_only))
        .route("/api/{*rest}", any(admin_only))
        .fallback(|| async { error::ApiError::not_found("no such route") })
        .layer(middleware::from_fn_with_state(gate, guard))
        .with_state(state)
}

/// Largest form a page accepts, in bytes.
const PAGE_FORM_MAX_BYTES: usize = 64 * 1024;

/// `/api/*` and `/metrics` on the public listener: not here (they moved to the admin
/// listener, `[server.admin]`); the answer says where, not what is there.
async fn admin_only() -> error::ApiError {
    error::ApiError::not_found("no such route on this listener: /api and /metrics are served on the admin listener")
}

/// What a client is told to wait before trying again after a 503, in seconds.
const RETRY_AFTER_SECS: &str = "5";

/// One listener's request bound: its slots, and its name for metrics.
#[derive(Clone)]
struct Gate {
    app: AppState,
    /// Bounds requests in flight on this listener (back-pressure, invariant 7).
    slots: Arc<Semaphore>,
    listener: &'static str,
}

impl Gate {
    fn new(app: &AppState, listener: &'static str) -> Gate {
        Gate { app: app.clone(), slots: Arc::new(Semaphore::new(app.settings.max_concurrent_requests)), listener }
    }
}

/// Request id, concurrency bound, time limits and panic boundary for every request.
/// The whole-request limit starts when the headers are in, so it includes the wait
/// for a slot; that wait is also bounded on its own (`queue_timeout_secs`, HAProxy's
/// `timeout queue`): under FIFO slots with one limit for all, a waiter would always
/// get a slot just before its own deadline and use it for nothing. A request that
/// finds no slot in time gets 503 `busy` with `Retry-After`.
async fn guard(State(gate): State<Gate>, req: Request, next: Next) -> Response {
    let app = &gate.app;
    let deadline = tokio::time::Instant::now() + app.settings.request_timeout;
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| crate::domain::ids::uuid_v7_now().simple().to_string());
    // Signed links carry their token in the path: the span gets the route's shape
    // (worked out only when the span is recorded: not with `log.level = "warn"`).
    let span = tracing::info_span!(
        "http",
        method = %req.method(),
        path = %loggable_path(req.extensions().get::<MatchedPath>().map(MatchedPath::as_str), req.uri().path()),
        request_id = %request_id
    );
    let slot_by = deadline.min(tokio::time::Instant::now() + app.settings.queue_timeout);
    let _permit = match tokio::time::timeout_at(slot_by, gate.slots.clone().acquire_owned()).await {
        Ok(Ok(p)) => p,
        Ok(Err(_)) | Err(_) => {
            app.metrics.inc("orderbridge_http_busy_total", &[("listener", gate.listener)]);
            span.in_scope(|| tracing::warn!("no free request slot within the request timeout; answered 503"));
            let resp = error::ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!(
                    "too many requests in flight; retry after the time in Retry-After (delivery is idempotent) (request id {request_id})"
                ),
            )
            .into_response();
            return with_common_headers(retry_after(resp), &request_id);
        }
    };
    // Every body arrives within body_timeout_secs of the handler's start, or fails.
    let body_timeout = app.settings.body_timeout;
    let req = req.map(|b| Body::new(TimedBody::new(b, body_timeout)));
    let fut = tracing::Instrument::instrument(crate::panics::catch_unwind(next.run(req)), span.clone());
    let fut = error::REQUEST_ID.scope(request_id.clone(), fut);
    let resp = match tokio::time::timeout_at(deadline, fut).await {
        Ok(Ok(r)) => r,
        // A bug, not the client's fault: answer with the id, count it, keep serving.
        Ok(Err(panic)) => {
            app.metrics.inc(crate::panics::PANICS_TOTAL, &[("task", "http")]);
            span.in_scope(|| tracing::error!(%panic, "request handler panicked; answered 500"));
            error::ApiError::panicked(&request_id).into_response()
        }
        Err(_) => retry_after(
            error::ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!(
                    "the request took too long; if it was a webhook, retry it (delivery is idempotent) (request id {request_id})"
                ),
            )
            .into_response(),
        ),
    };
    with_common_headers(resp, &request_id)
}

fn retry_after(mut resp: Response) -> Response {
    resp.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
    resp
}

/// The request body did not arrive within `server.body_timeout_secs`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub(crate) struct BodyTimeout(pub(crate) Duration);

impl BodyTimeout {
    /// Whether `e` (or one of its causes) is a body timeout.
    pub(crate) fn caused(e: &(dyn std::error::Error + 'static)) -> bool {
        let mut src = Some(e);
        while let Some(s) = src {
            if s.is::<BodyTimeout>() {
                return true;
            }
            src = s.source();
        }
        false
    }
}

/// A request body that fails with `BodyTimeout` once its time is up, so a client that
/// trickles its body cannot hold a request slot for long.
struct TimedBody {
    inner: Body,
    limit: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl TimedBody {
    fn new(inner: Body, limit: Duration) -> TimedBody {
        TimedBody { inner, limit, deadline: Box::pin(tokio::time::sleep(limit)) }
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match this.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyTimeout(this.limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Headers on every answer: the request id, and `nosniff` (no answer is ever read as
/// another type than it says).
fn with_common_headers(mut resp: Response, request_id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp.headers_mut().insert(axum::http::header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

/// The request path as logs show it. A matched route keeps the request's own segments
/// except its `{token}` parameter (a signed link, which works for whoever holds it),
/// written `…`; a path no route matched keeps short segments only (a token is long).
pub(crate) fn loggable_path(route: Option<&str>, path: &str) -> String {
    let shown: Vec<&str> = match route {
        Some(route) if route.split('/').count() == path.split('/').count() => {
            route.split('/').zip(path.split('/')).map(|(r, p)| if r == "{token}" { "…" } else { p }).collect()
        }
        Some(route) => return route.to_owned(),
        None => path.split('/').map(|p| if p.chars().count() > 24 { "…" } else { p }).collect(),
    };
    let joined = shown.join("/");
    match joined.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &joined[..at]),
        None => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::loggable_path;

    #[test]
    fn link_tokens_never_reach_the_logged_path() {
        let token = "eyJvIjoib3JkXzAxIiwicCI6ImFwcHJvdmFsIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
        let path = format!("/pages/approval/{token}");
        assert_eq!(loggable_path(Some("/pages/approval/{token}"), &path), "/pages/approval/…");
        assert_eq!(loggable_path(Some("/api/orders/{id}"), "/api/orders/ord_01"), "/api/orders/ord_01");
        assert_eq!(loggable_path(None, &format!("{path}/extra")), "/pages/approval/…/extra");
        assert_eq!(loggable_path(None, "/no/such/route"), "/no/such/route");
        // A trailing slash that made the shapes differ: the route alone.
        assert_eq!(
            loggable_path(Some("/pages/status/{token}"), &format!("/pages/status/{token}/")),
            "/pages/status/{token}"
        );
        assert!(loggable_path(None, &"/a".repeat(300)).chars().count() <= 201);
    }
}
