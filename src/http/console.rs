//! The staff console on the public listener: sign-in by a link mailed to the person's
//! directory address, sessions (`auth::sessions`), sign-out, and "my approvals", the
//! approval levels waiting for the signed-in person, decided with the same checks as
//! the mailed link and recorded with channel `console`. Server-rendered from
//! `pages/console.html` (zh-CN and en), no JavaScript; every form carries a CSRF token
//! (the sign-in form: a double-submit cookie; signed-in forms: the session's token) and
//! a state-changing post without it is refused. Sign-in through an OpenID Connect
//! provider is `http::oidc`; it ends in the same session cookie. The other pages,
//! each behind its action in the policy table and under one navigation bar
//! (`frame`): order search and the order page (`orders`), the live process map
//! (`process`) and the KPIs of a period (`reports`), the work lists of exceptions, dead letters and connectors (`work`),
//! those of flagged orders and unmatched payments (`review`), administration
//! (`admin`) and the review of rule changes (`rules`).

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

pub(crate) mod admin;
pub(crate) mod feedback;
mod frame;
pub(crate) mod orders;
pub(crate) mod process;
pub(crate) mod reports;
pub(crate) mod review;
pub(crate) mod rules;
pub(crate) mod work;

use super::AppState;
use super::pages::{page, texts};
use crate::auth::sessions::{Session, cookie};
use crate::domain::order::Locale;
use crate::engine::OrderState;
use crate::engine::access::{Action, Channel, Principal, authorize};
use crate::engine::answers::{ApprovalDecision, approval_event};

/// The session cookie.
pub(super) const SESSION: &str = "ob_session";
/// The sign-in form's double-submit CSRF cookie.
const SIGNIN_CSRF: &str = "ob_signin_csrf";

pub(super) fn secure(app: &AppState) -> bool {
    app.settings.public_url.as_deref().is_some_and(|u| u.starts_with("https://"))
}

pub(super) fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn locale_of(app: &AppState, person: Option<&str>) -> Locale {
    person
        .and_then(|p| app.rules.notify.directory.person(p))
        .and_then(|p| p.locale)
        .unwrap_or(app.settings.presentation.default_locale)
}

/// A view of `pages/console.html`, as text (escaped HTML).
pub(super) fn view(app: &AppState, l: Locale, name: &str, mut ctx: serde_json::Value) -> String {
    ctx["view"] = name.into();
    texts(app).render_fragment("console", l, ctx).unwrap_or_else(|e| {
        tracing::error!(error = %e, view = name, "console text not rendered");
        String::new()
    })
}

pub(super) fn console_page(app: &AppState, status: StatusCode, l: Locale, title: &str, body: &str) -> Response {
    page(status, l, &app.settings, &view(app, l, title, json!({})), body)
}

pub(super) fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

pub(super) fn with_cookie(mut resp: Response, set: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(set) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// A refusal page (403 and the like) naming why.
fn refused(app: &AppState, status: StatusCode, l: Locale, message: &str) -> Response {
    let body = view(app, l, "refused", json!({"message": message}));
    console_page(app, status, l, "title_refused", &body)
}

fn random_hex() -> String {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut b).expect("the system's random generator works");
    hex::encode(b)
}

/// `GET /signin`: the sign-in form, with a fresh double-submit CSRF cookie.
pub(crate) async fn signin_form(State(app): State<AppState>) -> Response {
    let l = app.settings.presentation.default_locale;
    let csrf = random_hex();
    let oidc = app.oidc.as_ref().map(|o| o.name());
    let body = view(&app, l, "signin", json!({"csrf": csrf, "oidc": oidc}));
    let resp = console_page(&app, StatusCode::OK, l, "title_signin", &body);
    with_cookie(resp, &cookie(SIGNIN_CSRF, Some(&csrf), secure(&app)))
}

#[derive(Deserialize)]
pub(crate) struct SigninForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
}

/// `POST /signin`: mails a one-time sign-in link to the person whose directory
/// mailbox this is. The answer is the same whether or not there is one.
pub(crate) async fn signin(State(app): State<AppState>, headers: HeaderMap, Form(f): Form<SigninForm>) -> Response {
    let l = app.settings.presentation.default_locale;
    let expected = cookie_value(&headers, SIGNIN_CSRF).unwrap_or_default();
    if f.csrf.is_empty() || !bool::from(subtle::ConstantTimeEq::ct_eq(f.csrf.as_bytes(), expected.as_bytes())) {
        return refused(&app, StatusCode::FORBIDDEN, l, "CSRF");
    }
    let minutes = app.settings.console.sign_in_link.num_minutes();
    if let Some(person) = app.rules.notify.directory.by_email(&f.email) {
        let token = app.sessions.sign_in_link(&person.id, app.clock.now());
        let base = &app.public_url;
        let pl = person.locale.unwrap_or(l);
        let ctx = json!({"site": app.settings.site_name, "minutes": minutes, "url": format!("{base}/signin/{token}")});
        let subject = super::pages::unescape(&view(&app, pl, "mail_subject", ctx.clone()));
        let text = super::pages::unescape(&view(&app, pl, "mail_text", ctx));
        // Sent apart from the answer, which must not take longer for a known address.
        match app.mailer.clone() {
            Some(m) => {
                let (to, id) = (person.email.as_str().to_owned(), person.id.clone());
                tokio::spawn(async move {
                    if let Err(e) = m.send_now(&to, &subject, text).await {
                        tracing::warn!(error = %e, person = %id, "the sign-in link could not be mailed");
                    }
                });
            }
            None => tracing::warn!("a sign-in link was asked for, but no [smtp] is configured"),
        }
    }
    let body = view(&app, l, "sent", json!({"minutes": minutes}));
    console_page(&app, StatusCode::OK, l, "title_signin", &body)
}

/// `GET /signin/{token}`: asks to confirm (a mail scanner opening the link does not
/// use it up).
pub(crate) async fn signin_confirm(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    let l = app.settings.presentation.default_locale;
    let token: String = token.chars().filter(char::is_ascii_hexdigit).collect();
    let body = view(&app, l, "confirm", json!({"token": token, "site": app.settings.site_name}));
    console_page(&app, StatusCode::OK, l, "title_signin", &body)
}

/// `POST /signin/{token}`: uses the link once and starts a session.
pub(crate) async fn signin_link(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    let now = app.clock.now();
    // Unknown, used or expired: back to the sign-in form.
    let Some(person) = app.sessions.redeem(&token, now) else {
        return with_cookie(redirect("/signin"), &cookie(SESSION, None, secure(&app)));
    };
    let started = app.sessions.start(&person, now);
    tracing::info!(person = %person, channel = "console", "signed in with a mailed link");
    with_cookie(redirect("/console"), &cookie(SESSION, Some(&started.cookie), secure(&app)))
}

/// The signed-in session of a request (its cookie and session), if any.
fn signed_in(app: &AppState, headers: &HeaderMap) -> Option<(String, Session)> {
    let c = cookie_value(headers, SESSION)?;
    let s = app.sessions.find(&c, app.clock.now()).ok()?;
    Some((c, s))
}

/// Not signed in (any more): back to the sign-in form, the stale cookie cleared.
fn back_to_signin(app: &AppState) -> Response {
    with_cookie(redirect("/signin"), &cookie(SESSION, None, secure(app)))
}

fn principal(s: &Session) -> Principal {
    Principal::Person { id: s.person.clone(), scopes: None, channel: Channel::Console }
}

/// The levels waiting for `person` now, with what the inbox shows of each order.
async fn inbox_items(app: &AppState, person: &str) -> Result<Vec<serde_json::Value>, crate::store::StoreError> {
    let directory = &app.rules.notify.directory;
    if authorize(
        &Principal::Person { id: person.into(), scopes: None, channel: Channel::Console },
        Action::DecideApproval,
        directory.policy(),
        directory,
    )
    .is_err()
    {
        return Ok(Vec::new());
    }
    let today = app.clock.now().with_timezone(&app.settings.presentation.time_zone).date_naive();
    let waiting = app.store.list(Some("awaiting_approval"), None, 1000).await?;
    Ok(waiting
        .iter()
        .filter_map(|rec| {
            let (OrderState::AwaitingApproval { level, of }, Some(p)) = (&rec.state, rec.approval.as_ref()) else {
                return None;
            };
            let standing = p.standing(directory, &rec.order, person, *level, today).ok()?;
            let o = &rec.order;
            Some(json!({"id": rec.id.to_string(), "customer": o.customer.name.as_str(), "product": o.product.kind.as_str(),
                "code": o.product.code.as_str(),
                "amount": {"amount": o.amount.amount().to_string(), "currency": o.amount.currency().as_str()},
                "level": level, "of": of, "role": standing.role}))
        })
        .collect())
}

/// `GET /console`: my approvals.
pub(crate) async fn inbox(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let Some((_, s)) = signed_in(&app, &headers) else { return back_to_signin(&app) };
    render_inbox(&app, &s, None).await
}

async fn render_inbox(app: &AppState, s: &Session, notice: Option<&str>) -> Response {
    let l = locale_of(app, Some(&s.person));
    let items = match inbox_items(app, &s.person).await {
        Ok(i) => i,
        Err(e) => return super::error::ApiError::from(e).into_response(),
    };
    let name = app.rules.notify.directory.person(&s.person).map_or(s.person.clone(), |p| p.name.clone());
    let body = view(app, l, "inbox", json!({"person": name, "csrf": s.csrf, "items": items, "notice": notice}));
    let staff = frame::Staff::of(app, s.clone());
    staff.page(app, StatusCode::OK, "inbox", &view(app, l, "title_console", json!({})), &body)
}

#[derive(Deserialize)]
pub(crate) struct DecisionForm {
    #[serde(default)]
    csrf: String,
    decision: Option<ApprovalDecision>,
    #[serde(default)]
    comment: String,
}

/// `POST /console/orders/{id}/approval`: the signed-in person's decision on the level
/// waiting, through the policy table and the engine's approval checks.
pub(crate) async fn decide(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<DecisionForm>,
) -> Response {
    let Some((_, s)) = signed_in(&app, &headers) else { return back_to_signin(&app) };
    let l = locale_of(&app, Some(&s.person));
    if !s.csrf_matches(&f.csrf) {
        return refused(&app, StatusCode::FORBIDDEN, l, "CSRF");
    }
    let who = principal(&s);
    let directory = &app.rules.notify.directory;
    if let Err(d) = authorize(&who, Action::DecideApproval, directory.policy(), directory) {
        return refused(&app, StatusCode::FORBIDDEN, l, &d.to_string());
    }
    let Ok(order) = id.parse() else { return refused(&app, StatusCode::NOT_FOUND, l, "order") };
    let Some(decision) = f.decision else { return refused(&app, StatusCode::UNPROCESSABLE_ENTITY, l, "decision") };
    let event = match approval_event(decision, 0, f.comment.trim().to_owned()) {
        Ok(e) => e,
        Err(e) => return refused(&app, StatusCode::UNPROCESSABLE_ENTITY, l, &e.to_string()),
    };
    match app.orders.apply(order, who.acting(), event, &app.rules, app.clock.now()).await {
        Ok(rec) => {
            app.wake_dispatcher();
            render_inbox(&app, &s, Some(&format!("{id}: {}", rec.state.name()))).await
        }
        Err(e) => {
            let e = super::error::ApiError::from(e);
            refused(&app, e.status, l, &e.message)
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct SignoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /signout`
pub(crate) async fn signout(State(app): State<AppState>, headers: HeaderMap, Form(f): Form<SignoutForm>) -> Response {
    let Some((c, s)) = signed_in(&app, &headers) else { return back_to_signin(&app) };
    if !s.csrf_matches(&f.csrf) {
        let l = locale_of(&app, Some(&s.person));
        return refused(&app, StatusCode::FORBIDDEN, l, "CSRF");
    }
    // A person signed in at the provider signs out there too when it publishes an
    // end-session endpoint (it sends them back to `/signin`).
    let hint = app.sessions.end(&c).and_then(|s| s.id_token);
    let to = match (app.oidc.as_ref(), hint) {
        (Some(oidc), Some(token)) => oidc.sign_out_url(token.as_str()).await,
        _ => None,
    };
    with_cookie(redirect(to.as_deref().unwrap_or("/signin")), &cookie(SESSION, None, secure(&app)))
}
