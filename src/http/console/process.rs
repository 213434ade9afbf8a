//! The live process map (`GET /console/process`), for people the policy table grants
//! `see_reports`: every lifecycle state in order with how many orders are in it now
//! and how long ago the oldest of them was received, each linking to the order search
//! in that state (for those who may see orders) and to the state's row on the KPI
//! page (`reports`). The counts are the ones `/metrics` reports (`health::orders_in_states`).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::super::AppState;
use super::super::health::orders_in_states;
use super::frame::{staff, text};
use crate::engine::access::Action;
use crate::engine::lifecycle::{OPEN_STATES, STATE_NAMES};

/// `GET /console/process`
pub(crate) async fn map(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let staff = match staff(&app, &headers, Action::SeeReports, "process") {
        Ok(s) => s,
        Err(r) => return r,
    };
    let loads = match orders_in_states(&app, STATE_NAMES).await {
        Ok(l) => l,
        Err(e) => return super::super::error::ApiError::from(e).into_response(),
    };
    let busiest = loads.iter().map(|s| s.orders).max().unwrap_or(0).max(1);
    let states: Vec<_> = loads
        .iter()
        .map(|s| {
            let minutes = s.oldest_age_ms / 60_000;
            json!({"state": s.state, "orders": s.orders, "open": OPEN_STATES.contains(&s.state.as_str()),
                // The bar's length, 0–100, against the busiest state.
                "share": s.orders * 100 / busiest,
                "age": (s.orders > 0).then(|| json!({"days": minutes / 1440, "hours": minutes / 60 % 24, "minutes": minutes % 60}))})
        })
        .collect();
    let at = app.clock.now();
    let l = staff.locale;
    let title = text(&app, "console_process", l, "title", json!({}));
    // Each state links to its orders only for those who may see them.
    let see_orders = staff.may(&app, Action::SeePersonalData);
    let body = text(&app, "console_process", l, "map", json!({"states": states, "at": at, "see_orders": see_orders}));
    staff.page(&app, StatusCode::OK, "process", &title, &body)
}
