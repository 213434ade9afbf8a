//! The HTTP surface (axum): webhooks, the admin API, health and metrics.
//! Handlers translate HTTP to application calls (`crate::orders`) and store reads;
//! they decide nothing and never perform effects (invariant 2).

pub mod api;
pub mod error;
pub mod fulfilment;
pub mod health;
pub mod pages;
pub mod webhooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{Notify, Semaphore};

use crate::clock::Clock;
use crate::connectors::Registry;
use crate::engine::Rules;
use crate::links::LinkSigner;
use crate::metrics::Metrics;
use crate::orders::Orders;
use crate::settings::Settings;
use crate::store::Store;

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Lifecycle steps (the application layer).
    pub orders: Arc<Orders>,
    /// Reads.
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub rules: Arc<Rules>,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    /// False until workers run, and again from the start of shutdown.
    pub ready: Arc<AtomicBool>,
    /// Wakes the dispatcher when new effects were committed.
    pub dispatcher_wake: Arc<Notify>,
    /// Bounds requests in flight (back-pressure, invariant 7).
    pub in_flight: Arc<Semaphore>,
    /// Verifies the signed links pages are opened with; `None`: no link key configured.
    pub links: Option<Arc<LinkSigner>>,
    /// Connectors paused after authentication failures (shared with the dispatcher).
    pub paused: Arc<crate::workers::dispatcher::Paused>,
}

impl AppState {
    pub fn wake_dispatcher(&self) {
        self.dispatcher_wake.notify_one();
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

pub fn router(state: AppState) -> Router {
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
        .route("/store/quarantine", get(api::quarantined))
        .route_layer(middleware::from_fn_with_state(state.clone(), api::require_admin));
    Router::new()
        // Our own limit is enforced in the handler (JSON 413); lift axum's 2 MB default.
        .route("/webhooks/{connector}", post(webhooks::receive).layer(DefaultBodyLimit::disable()))
        .route("/webhooks/{connector}/events", post(fulfilment::system_event).layer(DefaultBodyLimit::disable()))
        .nest("/api", api)
        .route("/pages/survey/{token}", get(pages::survey_form).post(pages::survey_answer))
        .route("/pages/approval/{token}", get(pages::approval_form_page).post(pages::approval_answer))
        .route("/pages/acceptance/{token}", get(pages::acceptance_page).post(pages::acceptance_answer))
        .route("/pages/status/{token}", get(pages::status_page))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(|| async { error::ApiError::not_found("no such route") })
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Request id, concurrency bound, time limit and panic boundary for every request.
async fn guard(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
    // Signed links carry their token in the path: the span gets the route's shape.
    let path = loggable_path(req.extensions().get::<MatchedPath>().map(MatchedPath::as_str), req.uri().path());
    let span = tracing::info_span!("http", method = %req.method(), path = %path, request_id = %request_id);
    let _permit = match app.in_flight.clone().acquire_owned().await {
        Ok(p) => p,
        Err(_) => return with_common_headers(StatusCode::SERVICE_UNAVAILABLE.into_response(), &request_id),
    };
    let fut = tracing::Instrument::instrument(crate::panics::catch_unwind(next.run(req)), span.clone());
    let fut = error::REQUEST_ID.scope(request_id.clone(), fut);
    let resp = match tokio::time::timeout(app.settings.request_timeout, fut).await {
        Ok(Ok(r)) => r,
        // A bug, not the client's fault: answer with the id, count it, keep serving.
        Ok(Err(panic)) => {
            app.metrics.inc(crate::panics::PANICS_TOTAL, &[("task", "http")]);
            span.in_scope(|| tracing::error!(%panic, "request handler panicked; answered 500"));
            error::ApiError::panicked(&request_id).into_response()
        }
        Err(_) => error::ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took too long; if it was a webhook, retry it (delivery is idempotent)",
        )
        .into_response(),
    };
    with_common_headers(resp, &request_id)
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
pub fn loggable_path(route: Option<&str>, path: &str) -> String {
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
