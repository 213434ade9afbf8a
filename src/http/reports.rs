//! `GET /api/reports/kpis?from=&to=&format=`: the management report of the orders
//! received in a period (JSON by default; `csv`, `text` or `html`).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::api::ApiQuery;
use super::error::ApiError;
use crate::analytics::render::{self, Format};
use crate::analytics::report;

#[derive(Deserialize)]
pub struct KpiQuery {
    from: String,
    to: Option<String>,
    #[serde(default)]
    format: Format,
}

pub async fn kpis(State(app): State<AppState>, ApiQuery(q): ApiQuery<KpiQuery>) -> Result<Response, ApiError> {
    let tz = app.settings.presentation.time_zone;
    let (from, to) = report::period(&q.from, q.to.as_deref(), tz, app.clock.now()).map_err(ApiError::bad_request)?;
    let r = app.orders.kpi_report(from, to, &app.rules.sla.calendar).await?;
    Ok(([(header::CONTENT_TYPE, q.format.content_type())], render::write(&r, q.format)).into_response())
}

/// The header that carries an export's window end.
pub const UNTIL: header::HeaderName = header::HeaderName::from_static("x-export-until");

#[derive(Deserialize)]
pub struct ExportQuery {
    since: Option<String>,
    until: Option<String>,
}

/// `GET /api/export?since=&until=`: the warehouse's rows of the window as JSON lines,
/// `{"table": "orders" | "events", "row": {…}}` (what `orderbridge export` writes
/// when the daemon holds the store). The window's end, by the daemon's clock, is in
/// the `x-export-until` header.
pub async fn export(State(app): State<AppState>, ApiQuery(q): ApiQuery<ExportQuery>) -> Result<Response, ApiError> {
    let tz = app.settings.presentation.time_zone;
    let (since, until) =
        report::window(q.since.as_deref(), q.until.as_deref(), tz, app.clock.now()).map_err(ApiError::bad_request)?;
    let (orders, events) = app.orders.export_rows(since, until, &app.rules.sla.calendar).await?;
    let mut body = String::new();
    for row in &orders {
        body.push_str(&serde_json::json!({"table": "orders", "row": row}).to_string());
        body.push('\n');
    }
    for row in &events {
        body.push_str(&serde_json::json!({"table": "events", "row": row}).to_string());
        body.push('\n');
    }
    let until = until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson".to_owned()), (UNTIL, until)], body).into_response())
}
