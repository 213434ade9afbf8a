//! `GET /api/reports/kpis?from=&to=&format=`: the management report of the orders
//! received in a period (JSON by default; `csv`, `text` or `html`).
//! `GET /api/reports/scheduled/{name}?at=`: the mail a scheduled report would send.

use axum::body::Bytes;
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
/// the `x-export-until` header. The body streams as the store is read, so a long
/// export holds a few pages in memory, not the window; should reading fail half-way,
/// the body ends in an error rather than a clean end, so no reader takes a part
/// for the whole.
pub async fn export(State(app): State<AppState>, ApiQuery(q): ApiQuery<ExportQuery>) -> Result<Response, ApiError> {
    let tz = app.settings.presentation.time_zone;
    let (since, until) =
        report::window(q.since.as_deref(), q.until.as_deref(), tz, app.clock.now()).map_err(ApiError::bad_request)?;
    let mut pages = app.orders.export_pages(since, until, app.rules.sla.calendar.clone());
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        while let Some(page) = pages.recv().await {
            let chunk = page
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|(orders, events)| crate::export::json_lines(&orders, &events).map(Bytes::from));
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                return;
            }
        }
    });
    let until = until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let headers = [(header::CONTENT_TYPE, "application/x-ndjson".to_owned()), (UNTIL, until)];
    Ok((headers, axum::body::Body::new(Lines(rx))).into_response())
}

/// A response body fed a chunk at a time through a channel.
struct Lines(tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>);

impl http_body::Body for Lines {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|c| c.map(http_body::Frame::data)))
    }
}
