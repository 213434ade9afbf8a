//! `GET /api/reports/kpis?from=&to=&format=`: the management report of the orders
//! received in a period (JSON by default; `csv`, `text` or `html`).
//! `GET /api/reports/scheduled/{name}?at=`: the mail a scheduled report would send.

use axum::extract::{Path, State};
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

#[derive(Deserialize)]
pub struct PreviewQuery {
    /// When it would be sent (a date: its first instant in the site's zone); default now.
    at: Option<String>,
}

/// The HTML of the mail the `[[reports]]` entry `name` would send at `at`: the
/// period before it, its charts inline as `data:` URLs.
pub async fn scheduled(
    State(app): State<AppState>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<PreviewQuery>,
) -> Result<Response, ApiError> {
    let tz = app.settings.presentation.time_zone;
    let Some(spec) = app.reports.iter().find(|r| r.name == name) else {
        return Err(ApiError::not_found(format!("scheduled report `{name}`")));
    };
    let at = match &q.at {
        None => app.clock.now(),
        Some(at) => {
            report::period(at, None, tz, chrono::DateTime::<chrono::Utc>::MAX_UTC)
                .map_err(|_| ApiError::bad_request(format!("at: `{at}` is not a date or an RFC 3339 time")))?
                .0
        }
    };
    let templates = app.templates.as_deref().ok_or_else(|| ApiError::bad_request("no mail templates configured"))?;
    let site = &app.settings.site_name;
    let html = crate::mail::report_preview(
        &app.orders,
        (spec, at, &app.rules.sla.calendar),
        templates,
        site,
        app.settings.presentation.default_locale,
    )
    .await
    .map_err(ApiError::unexpected)?;
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response())
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
