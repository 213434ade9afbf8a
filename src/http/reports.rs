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
