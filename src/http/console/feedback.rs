//! Feedback in the console: the form for the person signed in
//! (`GET`/`POST /console/feedback/new`, channel `console`, CSRF-checked; every
//! signed-in person has it in the navigation) and the listing for the process owner
//! (`GET /console/feedback?order=`, for people the policy table grants
//! `see_reports`): newest first, only one order's when `order` is given. The checks
//! and the storing are `http::feedback`'s. Text from `pages/feedback.html`.

// A refusal is a whole page: helpers return `Result<_, Response>` on purpose.
#![allow(clippy::result_large_err)]

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::super::AppState;
use super::super::error::ApiError;
use super::super::feedback::{Author, FeedbackForm, answer, blank};
use super::super::pages::view_text;
use super::frame::{Staff, staff};
use super::{back_to_signin, signed_in};
use crate::domain::OrderId;
use crate::engine::access::Action;

const ACTION: &str = "/console/feedback/new";

/// The person signed in, as an author; back to sign-in otherwise.
fn writer(app: &AppState, headers: &HeaderMap) -> Result<(Staff, Author), Response> {
    let Some((_, session)) = signed_in(app, headers) else { return Err(back_to_signin(app)) };
    let staff = Staff::of(app, session);
    let mut author = Author::staff(app, &staff.session.person, "console").ok_or_else(|| back_to_signin(app))?;
    author.locale = staff.locale;
    Ok((staff, author))
}

/// `GET /console/feedback/new`
pub(crate) async fn new(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let (staff, author) = match writer(&app, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let f = FeedbackForm { csrf: staff.session.csrf.clone(), ..FeedbackForm::default() };
    let show = |status: StatusCode, title: &str, body: &str| staff.page(&app, status, "feedback_new", title, body);
    blank(&app, &author, &f, ACTION, &show)
}

/// `POST /console/feedback/new`
pub(crate) async fn send(State(app): State<AppState>, headers: HeaderMap, Form(f): Form<FeedbackForm>) -> Response {
    let (staff, author) = match writer(&app, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Err(r) = staff.check_csrf(&app, "feedback_new", &f.csrf) {
        return r;
    }
    let show = |status: StatusCode, title: &str, body: &str| staff.page(&app, status, "feedback_new", title, body);
    answer(&app, &author, &f, ACTION, &show).await
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    order: String,
}

/// `GET /console/feedback?order=`
pub(crate) async fn list(State(app): State<AppState>, headers: HeaderMap, Query(q): Query<ListQuery>) -> Response {
    let staff = match staff(&app, &headers, Action::SeeReports, "feedback") {
        Ok(s) => s,
        Err(r) => return r,
    };
    let l = staff.locale;
    let given = q.order.trim();
    let (filter, error) = match given {
        "" => (None, false),
        s => match s.parse::<OrderId>() {
            Ok(id) => (Some(id), false),
            Err(_) => (None, true),
        },
    };
    let items = if error {
        Vec::new()
    } else {
        match app.orders.feedback(filter).await {
            Ok(items) => items,
            Err(e) => return ApiError::from(e).into_response(),
        }
    };
    let directory = &app.rules.notify.directory;
    let items: Vec<_> = items
        .iter()
        .map(|f| {
            let author = directory.person(&f.author).map_or(f.author.clone(), |p| p.name.clone());
            json!({"id": f.id, "at": f.at, "category": f.category, "order_id": f.order_id.map(|o| o.to_string()),
                "author": author, "channel": f.channel, "text": f.text})
        })
        .collect();
    let status = if error { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    let body = view_text(&app, l, "list", json!({"items": items, "order": given, "error": error}));
    staff.page(&app, status, "feedback", &view_text(&app, l, "title_list", json!({})), &body)
}
