//! The console's work lists, each behind its action in the policy table, with one
//! form per row (CSRF token, no JavaScript) calling what the admin API's route calls:
//! exceptions (`handle_exceptions`; resolve: `Orders::apply` with
//! `ExceptionResolved`), dead letters (`replay_dead_letters`; replay:
//! `Orders::replay`) and connectors (`resume_connectors`; health, paused, resume:
//! `api::resume`). Changes are recorded with the signed-in person and channel
//! `console`. Text from `pages/console_work.html`.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::super::AppState;
use super::super::error::ApiError;
use super::frame::{Staff, staff, text};
use crate::engine::OrderEvent;
use crate::engine::access::Action;
use crate::store::EffectId;

/// Most rows a work list shows.
pub(super) const ROWS: usize = 200;

#[derive(Deserialize)]
pub(crate) struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    note: String,
}

pub(super) fn failed(staff: &Staff, app: &AppState, current: &str, e: ApiError) -> Response {
    staff.refused(app, e.status, current, &e.message)
}

/// A work list page: `view` of `pages/console_work.html` with `ctx`, and a notice.
pub(super) fn list_page(app: &AppState, staff: &Staff, view: &str, mut ctx: Value, notice: Option<&str>) -> Response {
    let l = staff.locale;
    ctx["csrf"] = staff.session.csrf.clone().into();
    ctx["notice"] = notice.into();
    // Links to an order's page only for those who may open it.
    ctx["see_orders"] = staff.may(app, Action::SeePersonalData).into();
    let title = text(app, "console_work", l, &format!("title_{view}"), json!({}));
    let body = text(app, "console_work", l, view, ctx);
    staff.page(app, StatusCode::OK, view, &title, &body)
}

/// Orders in `exception`, each with the reason it was opened for.
async fn exceptions_page(app: &AppState, staff: &Staff, notice: Option<&str>) -> Response {
    let rows = match app.store.list(Some("exception"), None, ROWS).await {
        Ok(r) => r,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let mut items = Vec::with_capacity(rows.len());
    for rec in rows {
        let events = match app.store.events(rec.id).await {
            Ok(e) => e,
            Err(e) => return ApiError::from(e).into_response(),
        };
        let opened = events.iter().rev().find_map(|e| match &e.event {
            OrderEvent::ExceptionOpened { reason } => Some((e.at, reason.clone())),
            _ => None,
        });
        let o = &rec.order;
        items.push(json!({"id": rec.id.to_string(), "customer": o.customer.name.as_str(),
            "product": o.product.kind.as_str(), "code": o.product.code.as_str(),
            "amount": {"amount": o.amount.amount().to_string(), "currency": o.amount.currency().as_str()},
            "opened_at": opened.as_ref().map(|(at, _)| *at), "reason": opened.map(|(_, r)| r)}));
    }
    list_page(app, staff, "exceptions", json!({"items": items}), notice)
}

/// `GET /console/exceptions`
pub(crate) async fn exceptions(State(app): State<AppState>, headers: HeaderMap) -> Response {
    match staff(&app, &headers, Action::HandleExceptions, "exceptions") {
        Ok(s) => exceptions_page(&app, &s, None).await,
        Err(r) => r,
    }
}

/// `POST /console/exceptions/{id}/resolve`: the order resumes where it stopped.
pub(crate) async fn resolve(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<ActionForm>,
) -> Response {
    let staff = match staff(&app, &headers, Action::HandleExceptions, "exceptions") {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(r) = staff.check_csrf(&app, "exceptions", &f.csrf) {
        return r;
    }
    let note = f.note.trim().to_owned();
    if note.is_empty() {
        let e = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", "say how it was resolved");
        return failed(&staff, &app, "exceptions", e);
    }
    let order = match super::super::api::parse_id(&id) {
        Ok(o) => o,
        Err(e) => return failed(&staff, &app, "exceptions", e),
    };
    let event = OrderEvent::ExceptionResolved { resolution: note, cancel: false };
    match app.orders.apply(order, staff.who.acting(), event, &app.rules, app.clock.now()).await {
        Ok(rec) => {
            app.wake_dispatcher();
            exceptions_page(&app, &staff, Some(&format!("{id}: {}", rec.state.name()))).await
        }
        Err(e) => failed(&staff, &app, "exceptions", ApiError::from(e)),
    }
}

async fn dead_letters_page(app: &AppState, staff: &Staff, notice: Option<&str>) -> Response {
    let rows = match app.store.dead_letters(ROWS).await {
        Ok(r) => r,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let items: Vec<Value> = rows
        .iter()
        .map(|e| {
            json!({"id": e.id.to_string(), "order_id": (!e.id.order_id.is_nil()).then(|| e.id.order_id.to_string()),
                "effect": e.name(), "attempts": e.attempts, "created_at": e.created_at, "last_error": e.last_error})
        })
        .collect();
    list_page(app, staff, "dead_letters", json!({"items": items}), notice)
}

/// `GET /console/dead-letters`
pub(crate) async fn dead_letters(State(app): State<AppState>, headers: HeaderMap) -> Response {
    match staff(&app, &headers, Action::ReplayDeadLetters, "dead_letters") {
        Ok(s) => dead_letters_page(&app, &s, None).await,
        Err(r) => r,
    }
}

/// `POST /console/dead-letters/{id}/replay`: back to the outbox, attempts reset.
pub(crate) async fn replay(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<ActionForm>,
) -> Response {
    let staff = match staff(&app, &headers, Action::ReplayDeadLetters, "dead_letters") {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(r) = staff.check_csrf(&app, "dead_letters", &f.csrf) {
        return r;
    }
    let effect: EffectId = match id.parse() {
        Ok(e) => e,
        Err(e) => return failed(&staff, &app, "dead_letters", ApiError::bad_request(e)),
    };
    match app.orders.replay(&effect, staff.who.acting(), app.clock.now()).await {
        Ok(_) => {
            app.wake_dispatcher();
            dead_letters_page(&app, &staff, Some(&id)).await
        }
        Err(e) => failed(&staff, &app, "dead_letters", ApiError::from(e)),
    }
}

fn connectors_page(app: &AppState, staff: &Staff, notice: Option<&str>) -> Response {
    let items = super::super::api::connectors_status(app);
    list_page(app, staff, "connectors", json!({"items": items}), notice)
}

/// `GET /console/connectors`
pub(crate) async fn connectors(State(app): State<AppState>, headers: HeaderMap) -> Response {
    match staff(&app, &headers, Action::ResumeConnectors, "connectors") {
        Ok(s) => connectors_page(&app, &s, None),
        Err(r) => r,
    }
}

/// `POST /console/connectors/{id}/resume`
pub(crate) async fn resume(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<ActionForm>,
) -> Response {
    let staff = match staff(&app, &headers, Action::ResumeConnectors, "connectors") {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(r) = staff.check_csrf(&app, "connectors", &f.csrf) {
        return r;
    }
    match super::super::api::resume(&app, &id, &staff.who) {
        Ok(_) => connectors_page(&app, &staff, Some(&id)),
        Err(e) => failed(&staff, &app, "connectors", e),
    }
}
