//! `/healthz` (the process answers), `/readyz` (store open, workers running, not
//! shutting down) and `/metrics` (Prometheus text).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;

pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    let store_ok = app.store.counts().await.is_ok();
    if app.is_ready() && store_ok {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "store": store_ok, "workers": app.is_ready()})),
        )
    }
}

pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    let (pending, dead) = app.store.counts().await.unwrap_or((0, 0));
    let body = app
        .metrics
        .render(&[("orderbridge_outbox_pending", pending as f64), ("orderbridge_dead_letters", dead as f64)]);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}
