//! The feedback form on the process (seed §五), from a mail's link
//! (`GET`/`POST /pages/feedback/{token}`): the link names who it was sent to (a
//! directory person: channel `mail`; a customer's address: channel `customer`, and
//! the report is on the link's order) and the order the mail was about. The checks
//! and the storing are shared with the console's form (`console::feedback`): a
//! category, a text (required, at most `MAX_TEXT` characters), an order that exists
//! if one is named; a bad form is answered 422 at its field and stores nothing. Works
//! without JavaScript. Text from `pages/feedback.html`. Every page opened from a
//! signed link ends with such a link too (`pages::page_link`, `pages::page_footer`).

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::pages::{busy, link_refusal, page, refusal, unescape, view_text, w};
use crate::domain::OrderId;
use crate::domain::order::Locale;
use crate::links::{LinkClaims, LinkPurpose};
use crate::orders::feedback::{Ack, Category, MAX_TEXT, NewFeedback};

/// Who writes, as the report keeps them.
pub(crate) struct Author {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) email: String,
    pub(crate) channel: &'static str,
    pub(crate) locale: Locale,
}

impl Author {
    /// A directory person (staff).
    pub(crate) fn staff(app: &AppState, id: &str, channel: &'static str) -> Option<Author> {
        let p = app.rules.notify.directory.person(id)?;
        Some(Author {
            id: p.id.clone(),
            name: p.name.clone(),
            email: p.email.as_str().to_owned(),
            channel,
            locale: p.locale.unwrap_or(app.settings.presentation.default_locale),
        })
    }
}

#[derive(Deserialize, Default)]
pub(crate) struct FeedbackForm {
    #[serde(default)]
    pub(crate) csrf: String,
    #[serde(default)]
    pub(crate) category: String,
    #[serde(default)]
    pub(crate) order: String,
    #[serde(default)]
    pub(crate) text: String,
}

/// What became of a form.
pub(crate) enum Outcome {
    Stored(u64),
    /// The field to correct (`category`, `text`, `text_long`, `order`); nothing stored.
    Invalid(&'static str),
    /// The store could not be read or written; nothing stored.
    Failed,
}

/// Checks `f` and stores it with its acknowledgement.
pub(crate) async fn submit(app: &AppState, author: &Author, f: &FeedbackForm) -> Outcome {
    let Some(category) = Category::parse(f.category.trim()) else { return Outcome::Invalid("category") };
    let text = f.text.trim();
    if text.is_empty() {
        return Outcome::Invalid("text");
    }
    if text.chars().count() > MAX_TEXT {
        return Outcome::Invalid("text_long");
    }
    let order_id = match f.order.trim() {
        "" => None,
        given => match given.parse::<OrderId>() {
            Err(_) => return Outcome::Invalid("order"),
            Ok(id) => match app.store.order(id).await {
                Ok(Some(_)) => Some(id),
                Ok(None) => return Outcome::Invalid("order"),
                Err(e) => {
                    tracing::error!(error = %e, "feedback cannot read the store");
                    return Outcome::Failed;
                }
            },
        },
    };
    let (l, now) = (author.locale, app.clock.now());
    let ack = |id: u64| {
        let mail = |view: &str| unescape(&view_text(app, l, view, json!({"id": id, "site": app.settings.site_name})));
        Ack { subject: mail("mail_subject"), text: mail("mail_text") }
    };
    let new = NewFeedback {
        category,
        order_id,
        author: author.id.clone(),
        email: author.email.clone(),
        channel: author.channel,
        text: text.to_owned(),
    };
    match app.orders.add_feedback(new, ack, &app.rules, now).await {
        Ok(n) => {
            app.wake_dispatcher();
            Outcome::Stored(n)
        }
        Err(e) => {
            tracing::error!(error = %e, "feedback not recorded");
            Outcome::Failed
        }
    }
}

/// The form's context: as given (or prefilled), with the field to correct.
pub(crate) fn form_ctx(action: &str, author: &Author, f: &FeedbackForm, error: Option<&str>) -> Value {
    json!({"action": action, "person": author.name, "category": f.category, "order_ref": f.order.trim(),
        "text": f.text, "max_text": MAX_TEXT, "error": error, "order_fixed": author.channel == "customer"})
}

/// Who a link was sent to, and the order it is on (`None`: no order).
async fn author_of(app: &AppState, claims: &LinkClaims) -> Option<Author> {
    let directory = &app.rules.notify.directory;
    if let Some(p) = directory.person(&claims.subject).or_else(|| directory.by_email(&claims.subject)) {
        return Author::staff(app, &p.id.clone(), "mail");
    }
    if !claims.subject.contains('@') || claims.order_id == OrderId::nil() {
        return None;
    }
    let order = app.orders.opened(claims.order_id).await.ok().flatten()?;
    Some(Author {
        id: claims.subject.clone(),
        name: order.order.customer.name.as_str().to_owned(),
        email: claims.subject.clone(),
        channel: "customer",
        locale: order.order.customer.locale.unwrap_or(app.settings.presentation.default_locale),
    })
}

async fn opened(app: &AppState, token: &str) -> Result<(LinkClaims, Author), Response> {
    let l = app.settings.presentation.default_locale;
    let Some(signer) = &app.links else {
        return Err(refusal(app, StatusCode::NOT_FOUND, l, &w(app, l, "refused.disabled")));
    };
    let claims = signer.verify(token, LinkPurpose::Feedback, app.clock.now()).map_err(|e| link_refusal(app, &e))?;
    match author_of(app, &claims).await {
        Some(a) => Ok((claims, a)),
        None => Err(refusal(app, StatusCode::FORBIDDEN, l, &w(app, l, "refused.invalid"))),
    }
}

/// Shows a page: status, title and body (HTML).
pub(crate) type Show<'a> = dyn Fn(StatusCode, &str, &str) -> Response + Send + Sync + 'a;

/// Stores `f` and thanks the author, or shows the form again at the field to correct.
pub(crate) async fn answer(
    app: &AppState,
    author: &Author,
    f: &FeedbackForm,
    action: &str,
    show: &Show<'_>,
) -> Response {
    let l = author.locale;
    let title = view_text(app, l, "title", json!({}));
    match submit(app, author, f).await {
        Outcome::Stored(id) => show(StatusCode::OK, &title, &view_text(app, l, "done", json!({"id": id}))),
        Outcome::Invalid(error) => {
            let body = view_text(app, l, "form", form_ctx(action, author, f, Some(error)));
            show(StatusCode::UNPROCESSABLE_ENTITY, &title, &body)
        }
        Outcome::Failed => busy(app, l),
    }
}

/// The empty form (the order filled in as given).
pub(crate) fn blank(app: &AppState, author: &Author, f: &FeedbackForm, action: &str, show: &Show<'_>) -> Response {
    let l = author.locale;
    let body = view_text(app, l, "form", form_ctx(action, author, f, None));
    show(StatusCode::OK, &view_text(app, l, "title", json!({})), &body)
}

fn link_order(claims: &LinkClaims) -> String {
    if claims.order_id == OrderId::nil() { String::new() } else { claims.order_id.to_string() }
}

/// `GET /pages/feedback/{token}`: the form, the mail's order filled in.
pub(crate) async fn feedback_form(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    let (claims, author) = match opened(&app, &token).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let f = FeedbackForm { order: link_order(&claims), ..FeedbackForm::default() };
    let show = |status: StatusCode, title: &str, body: &str| page(status, author.locale, &app.settings, title, body);
    blank(&app, &author, &f, &format!("/pages/feedback/{token}"), &show)
}

/// `POST /pages/feedback/{token}`: stores the report (a customer's is on the link's order).
pub(crate) async fn feedback_send(
    State(app): State<AppState>,
    Path(token): Path<String>,
    Form(mut f): Form<FeedbackForm>,
) -> Response {
    let (claims, author) = match opened(&app, &token).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if author.channel == "customer" {
        f.order = link_order(&claims);
    }
    let show = |status: StatusCode, title: &str, body: &str| page(status, author.locale, &app.settings, title, body);
    answer(&app, &author, &f, &format!("/pages/feedback/{token}"), &show).await
}
