//! The console's KPI page (`GET /console/reports?from=&to=`), for people the policy
//! table grants `see_reports`: the management report of the orders received in a
//! period (`Orders::kpi_report`, what `GET /api/reports/kpis` answers), as tables. The
//! period is chosen with a plain GET form (dates in the site's time zone, `to`
//! included; by default the last 30 days up to today); a period that does not parse is
//! said at its field (422), with no report. Every lifecycle state has a row in the
//! time-in-state table (`#state-<state>`), which the process map links to. Text from
//! `pages/console_reports.html`. Beside the orders' figures, the feedback on the process
//! received in the period, per category (the report's `feedback`).

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::super::AppState;
use super::super::error::ApiError;
use super::frame::{staff, text};
use crate::analytics::report::{self, Report};
use crate::engine::access::Action;
use crate::engine::lifecycle::{OPEN_STATES, STATE_NAMES};

/// The default period's length, in days up to and including today.
const DEFAULT_DAYS: u64 = 30;

#[derive(Deserialize)]
pub(crate) struct PeriodQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

/// `GET /console/reports?from=&to=`
pub(crate) async fn kpis(State(app): State<AppState>, headers: HeaderMap, Query(q): Query<PeriodQuery>) -> Response {
    let staff = match staff(&app, &headers, Action::SeeReports, "reports") {
        Ok(s) => s,
        Err(r) => return r,
    };
    let tz = app.settings.presentation.time_zone;
    let now = app.clock.now();
    let today = now.with_timezone(&tz).date_naive();
    let given = |s: &str, default: chrono::NaiveDate| {
        if s.trim().is_empty() { default.to_string() } else { s.trim().to_owned() }
    };
    let from = given(&q.from, today - chrono::Days::new(DEFAULT_DAYS - 1));
    let to = given(&q.to, today);
    let mut ctx = json!({"from": from, "to": to, "time_zone": tz.name()});
    let status = match report::period(&from, Some(&to), tz, now) {
        Ok((start, end)) => match app.orders.kpi_report(start, end, &app.rules.sla.calendar).await {
            Ok(r) => {
                ctx["report"] = serde_json::to_value(&r).unwrap_or_default();
                ctx["states"] = by_state(&r);
                ctx["people"] = people(&app);
                ctx["feedback"] = serde_json::to_value(r.feedback).unwrap_or_default();
                StatusCode::OK
            }
            Err(e) => return ApiError::from(e).into_response(),
        },
        Err(_) => {
            // Which field to correct: each bound alone, else their order.
            let parses = |s: &str| report::period(s, None, tz, DateTime::<Utc>::MAX_UTC).is_ok();
            ctx["error"] = if !parses(&from) {
                "from"
            } else if !parses(&to) {
                "to"
            } else {
                "order"
            }
            .into();
            StatusCode::UNPROCESSABLE_ENTITY
        }
    };
    let l = staff.locale;
    let title = text(&app, "console_reports", l, "title", json!({}));
    let body = text(&app, "console_reports", l, "report", ctx);
    staff.page(&app, status, "reports", &title, &body)
}

/// Every lifecycle state in order, with the stays in its places of the process map
/// (an approval's levels apart: `awaiting_approval.2`) and the orders that ended in it.
fn by_state(r: &Report) -> Value {
    STATE_NAMES
        .iter()
        .map(|state| {
            let places: Vec<Value> = r
                .kpis
                .stages
                .iter()
                .filter(|(node, _)| {
                    node.as_str() == *state || node.strip_prefix(state).is_some_and(|rest| rest.starts_with('.'))
                })
                .map(|(node, timing)| json!({"node": node, "level": node.split_once('.').map(|(_, l)| l), "timing": timing}))
                .collect();
            json!({"state": state, "open": OPEN_STATES.contains(state), "places": places,
                "ended": r.kpis.ended.get(*state).copied().unwrap_or(0)})
        })
        .collect()
}

/// Directory names by id and by address, for the approvers a report names.
fn people(app: &AppState) -> Value {
    let mut names = BTreeMap::new();
    for p in app.rules.notify.directory.people() {
        names.insert(p.id.clone(), p.name.clone());
        names.insert(p.email.as_str().to_owned(), p.name.clone());
    }
    json!(names)
}
