//! The console's review and payment work lists, each behind its action in the policy
//! table, with one form per row (CSRF token, no JavaScript) calling what the admin
//! API's route calls: flagged orders and manual review (`review_flagged`; start,
//! return, release, reject: `Orders::apply` with `ReviewDecision::event`, as
//! `POST /api/orders/{id}/review`) and unmatched payments (`assign_payments`; assign:
//! `Orders::assign_payment`, as the API's assign route); and, read only, a customer's
//! receivables and dunning (`see_personal_data`; `fulfilment::customer_receivables`,
//! as `GET /api/customers/{id}/receivables`). Changes are recorded with the signed-in
//! person and channel `console`. Text from `pages/console_work.html`.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::super::AppState;
use super::super::api::{ReviewDecision, parse_id};
use super::super::error::ApiError;
use super::frame::{Staff, staff};
use super::work::{ROWS, failed, list_page};
use crate::engine::OrderEvent;
use crate::engine::access::Action;

#[derive(Deserialize)]
pub(crate) struct ReviewForm {
    #[serde(default)]
    csrf: String,
    decision: Option<ReviewDecision>,
    #[serde(default)]
    comment: String,
}

/// Orders in `flagged` or `manual_review`, each with the rules that fired.
async fn review_page(app: &AppState, staff: &Staff, notice: Option<&str>) -> Response {
    let mut items = Vec::new();
    for state in ["manual_review", "flagged"] {
        let rows = match app.store.list(Some(state), None, ROWS).await {
            Ok(r) => r,
            Err(e) => return ApiError::from(e).into_response(),
        };
        for rec in rows {
            let events = match app.store.events(rec.id).await {
                Ok(e) => e,
                Err(e) => return ApiError::from(e).into_response(),
            };
            let flagged = events.iter().rev().find_map(|e| match &e.event {
                OrderEvent::ScreeningFlagged { fired, .. } => Some((e.at, fired.clone())),
                _ => None,
            });
            let o = &rec.order;
            items.push(json!({"id": rec.id.to_string(), "state": state, "customer": o.customer.name.as_str(),
                "product": o.product.kind.as_str(), "code": o.product.code.as_str(),
                "amount": {"amount": o.amount.amount().to_string(), "currency": o.amount.currency().as_str()},
                "flagged_at": flagged.as_ref().map(|(at, _)| *at),
                "fired": flagged.map(|(_, f)| f).unwrap_or_default()}));
        }
    }
    list_page(app, staff, "review", json!({"items": items}), notice)
}

/// `GET /console/review`
pub(crate) async fn flagged(State(app): State<AppState>, headers: HeaderMap) -> Response {
    match staff(&app, &headers, Action::ReviewFlagged, "review") {
        Ok(s) => review_page(&app, &s, None).await,
        Err(r) => r,
    }
}

/// `POST /console/review/{id}`: start, return, release or reject, with a comment.
pub(crate) async fn review(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<ReviewForm>,
) -> Response {
    let staff = match staff(&app, &headers, Action::ReviewFlagged, "review") {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(r) = staff.check_csrf(&app, "review", &f.csrf) {
        return r;
    }
    let comment = f.comment.trim().to_owned();
    let Some(decision) = f.decision.filter(|_| !comment.is_empty()) else {
        let e = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", "a review decision needs a comment");
        return failed(&staff, &app, "review", e);
    };
    let order = match parse_id(&id) {
        Ok(o) => o,
        Err(e) => return failed(&staff, &app, "review", e),
    };
    match app.orders.apply(order, staff.who.acting(), decision.event(comment), &app.rules, app.clock.now()).await {
        Ok(rec) => {
            app.wake_dispatcher();
            review_page(&app, &staff, Some(&format!("{id}: {}", rec.state.name()))).await
        }
        Err(e) => failed(&staff, &app, "review", ApiError::from(e)),
    }
}

async fn payments_page(app: &AppState, staff: &Staff, notice: Option<&str>) -> Response {
    let list = match app.orders.unmatched_payments().await {
        Ok(l) => l,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let items: Vec<Value> = list.iter().filter_map(|u| serde_json::to_value(u).ok()).collect();
    list_page(app, staff, "payments", json!({"items": items}), notice)
}

/// `GET /console/payments`
pub(crate) async fn payments(State(app): State<AppState>, headers: HeaderMap) -> Response {
    match staff(&app, &headers, Action::AssignPayments, "payments") {
        Ok(s) => payments_page(&app, &s, None).await,
        Err(r) => r,
    }
}

#[derive(Deserialize)]
pub(crate) struct AssignForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    order_id: String,
}

/// `POST /console/payments/{source}/{payment_id}/assign`: applied to the order named.
pub(crate) async fn assign(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((source, payment_id)): Path<(String, String)>,
    Form(f): Form<AssignForm>,
) -> Response {
    let staff = match staff(&app, &headers, Action::AssignPayments, "payments") {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(r) = staff.check_csrf(&app, "payments", &f.csrf) {
        return r;
    }
    let order = match parse_id(f.order_id.trim()) {
        Ok(o) => o,
        Err(e) => return failed(&staff, &app, "payments", e),
    };
    let now = app.clock.now();
    match app.orders.assign_payment(&source, &payment_id, order, staff.who.acting(), &app.rules, now).await {
        Ok(outcome) => {
            app.wake_dispatcher();
            let state = outcome.state.as_deref().unwrap_or_default();
            payments_page(&app, &staff, Some(&format!("{source}/{payment_id} → {order}: {state}"))).await
        }
        Err(e) => failed(&staff, &app, "payments", ApiError::from(e)),
    }
}

#[derive(Deserialize)]
pub(crate) struct CustomerQuery {
    #[serde(default)]
    customer: String,
}

/// `GET /console/receivables?customer=`: the customer's invoices, paid and owed, the
/// dunning steps sent, and the total owed per currency.
pub(crate) async fn receivables(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<CustomerQuery>,
) -> Response {
    let staff = match staff(&app, &headers, Action::SeePersonalData, "receivables") {
        Ok(s) => s,
        Err(r) => return r,
    };
    let customer = q.customer.trim();
    let found = if customer.is_empty() {
        Value::Null
    } else {
        match super::super::fulfilment::customer_receivables(&app, customer).await {
            Ok(v) => v,
            Err(e) => return failed(&staff, &app, "receivables", e),
        }
    };
    list_page(&app, &staff, "receivables", json!({"customer": customer, "found": found, "items": []}), None)
}
