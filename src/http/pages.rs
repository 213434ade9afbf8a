//! Pages for people who follow a signed link from an e-mail (no account, no session).
//!
//! Each page verifies its link (signature, purpose, expiry) before it shows anything,
//! and an action records the link's id in the same transaction as the event it causes,
//! so a link acts once. Every refusal is a page that says what happened and changes
//! nothing. Text is in the recipient's language; all order data is HTML-escaped.

// A refusal is a whole page: helpers return `Result<_, Response>` on purpose.
#![allow(clippy::result_large_err)]

use axum::Form;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use crate::domain::order::Locale;
use crate::engine::OrderEvent;
use crate::engine::answers::{AcceptanceDecision, AnswerError, ApprovalDecision, acceptance_event, approval_event};
use crate::engine::receivables;
use crate::links::{LinkClaims, LinkError, LinkPurpose};
use crate::orders::OrderError;
use crate::settings::Settings;
use crate::store::OrderRecord;

/// Longest survey comment kept, in characters.
const MAX_COMMENT: usize = 2000;

pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(crate) use crate::mail::unescape;

/// The page text: the configuration's templates, else the shipped ones compiled in
/// (the same files; there is no second copy of the wording).
pub(crate) fn texts(app: &AppState) -> &crate::mail::Templates {
    static BUILTIN: std::sync::OnceLock<crate::mail::Templates> = std::sync::OnceLock::new();
    app.templates
        .as_deref()
        .unwrap_or_else(|| BUILTIN.get_or_init(|| crate::mail::Templates::builtin_pages(app.settings.presentation)))
}

/// One of the pages' own sentences (`pages/words.html`), as HTML; `ctx` adds what the
/// sentence names (`state`, `at`).
fn say(app: &AppState, l: Locale, key: &str, mut ctx: serde_json::Value) -> String {
    if let Some(o) = ctx.as_object_mut() {
        o.insert("key".into(), key.into());
    }
    match texts(app).render_fragment("words", l, ctx) {
        Ok(text) if !text.is_empty() => text,
        Ok(_) => {
            tracing::warn!(key, "page text says nothing for this key");
            esc(key)
        }
        Err(e) => {
            tracing::warn!(error = %e, "page text not rendered");
            esc(key)
        }
    }
}

/// A sentence of `pages/words.html` that names nothing.
pub(crate) fn w(app: &AppState, l: Locale, key: &str) -> String {
    say(app, l, key, serde_json::json!({}))
}

/// The pages' stylesheet (`pages.css`), the accent colour from the settings first.
pub(crate) fn stylesheet(settings: &Settings) -> String {
    format!(":root {{ --accent: {}; }}\n{}", settings.site_color, include_str!("pages.css"))
}

/// `GET /pages/assets/style.css`: the one stylesheet every page uses.
pub(crate) async fn style(State(app): State<AppState>) -> Response {
    let mut resp = ([("content-type", "text/css; charset=utf-8")], stylesheet(&app.settings)).into_response();
    resp.headers_mut().insert("cache-control", "public, max-age=3600".parse().expect("valid"));
    resp
}

/// `GET /pages/assets/logo`: the configured logo (`site.logo`), 404 without one.
pub(crate) async fn logo(State(app): State<AppState>) -> Response {
    let Some(logo) = &app.settings.site_logo else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut resp = ([("content-type", logo.content_type)], logo.bytes.to_vec()).into_response();
    let h = resp.headers_mut();
    h.insert("cache-control", "public, max-age=3600".parse().expect("valid"));
    // An SVG opened on its own runs no script and loads nothing.
    h.insert("content-security-policy", "default-src 'none'; style-src 'unsafe-inline'".parse().expect("valid"));
    h.insert("x-content-type-options", "nosniff".parse().expect("valid"));
    resp
}

/// A whole page; `title` and `body` are HTML (page text, escaped by its templates).
pub(crate) fn page(status: StatusCode, locale: Locale, site: &Settings, title: &str, body: &str) -> Response {
    staff_page(status, locale, site, title, "", body)
}

/// A whole page with `nav` (HTML: the console's navigation) in its header; with a
/// navigation the page is a staff page, laid out wider for its tables.
pub(crate) fn staff_page(
    status: StatusCode,
    locale: Locale,
    site: &Settings,
    title: &str,
    nav: &str,
    body: &str,
) -> Response {
    let logo = if site.site_logo.is_some() { "<img src=\"/pages/assets/logo\" alt=\"\">" } else { "" };
    let class = if nav.is_empty() { "" } else { " class=\"staff\"" };
    let html = format!(
        "<!doctype html>\n<html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\">\
         <meta name=\"referrer\" content=\"no-referrer\"><title>{title} · {name}</title>\
         <link rel=\"stylesheet\" href=\"/pages/assets/style.css\"></head>\
         <body{class}><header class=\"site\"><div class=\"in\">{logo}<span class=\"name\">{name}</span></div>{nav}</header>\
         <main><div class=\"card\"><h1>{title}</h1>{body}</div></main></body></html>\n",
        lang = locale.as_str(),
        name = esc(&site.site_name),
    );
    let mut resp = (status, Html(html)).into_response();
    let h = resp.headers_mut();
    h.insert("cache-control", "no-store".parse().expect("valid"));
    h.insert("x-frame-options", "DENY".parse().expect("valid"));
    // Forms post here, and sign-out may continue at the OIDC provider (a redirect a
    // form's answer makes is held to form-action too).
    let provider = site.oidc.as_ref().and_then(|o| crate::auth::oidc::issuer_origin(&o.issuer));
    let forms = provider.map_or_else(|| "'self'".to_owned(), |o| format!("'self' {o}"));
    let csp = format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action {forms}; base-uri 'none'; frame-ancestors 'none'"
    );
    let strict = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
    h.insert("content-security-policy", csp.parse().unwrap_or_else(|_| axum::http::HeaderValue::from_static(strict)));
    resp
}

/// A refusal page: what happened (HTML from the page text), in the reader's language.
pub(crate) fn refusal(app: &AppState, status: StatusCode, locale: Locale, html: &str) -> Response {
    page(status, locale, &app.settings, &w(app, locale, "title.refused"), &format!("<p>{html}</p>"))
}

/// The store could not be read or written: nothing was recorded; try again.
pub(crate) fn busy(app: &AppState, l: Locale) -> Response {
    refusal(app, StatusCode::SERVICE_UNAVAILABLE, l, &w(app, l, "refused.busy"))
}

/// A page whose body is page text `name` (`pages/<name>.html`) under the title `title`
/// (a key of `pages/words.html`).
fn text_page(
    app: &AppState,
    status: StatusCode,
    l: Locale,
    title: &str,
    name: &str,
    ctx: serde_json::Value,
) -> Response {
    // A page opened from a signed link ends with that person's feedback link.
    let footer = ctx["feedback"].as_str().map(|url| page_footer(app, l, url)).unwrap_or_default();
    match texts(app).render_fragment(name, l, ctx) {
        Ok(body) => page(status, l, &app.settings, &w(app, l, title), &format!("{body}{footer}")),
        Err(e) => {
            tracing::error!(error = %e, page = name, "page text not rendered");
            busy(app, l)
        }
    }
}

/// A page of one sentence (HTML from `pages/words.html`) under a title (a key).
fn sentence_page(app: &AppState, status: StatusCode, l: Locale, title: &str, html: &str) -> Response {
    page(status, l, &app.settings, &w(app, l, title), &format!("<p>{html}</p>"))
}

/// The page after an answer was taken (`html` from the page text), ending with the
/// feedback link for the link's person and order.
fn thanks(app: &AppState, l: Locale, html: &str, claims: &LinkClaims) -> Response {
    let footer = page_link(app, claims).map(|url| page_footer(app, l, &url));
    page(
        StatusCode::OK,
        l,
        &app.settings,
        &w(app, l, "title.thanks"),
        &format!("<p>{html}</p>{}", footer.unwrap_or_default()),
    )
}

pub(crate) fn link_refusal(app: &AppState, e: &LinkError) -> Response {
    let l = app.settings.presentation.default_locale;
    match e {
        LinkError::Invalid | LinkError::WrongPurpose => {
            refusal(app, StatusCode::FORBIDDEN, l, &w(app, l, "refused.invalid"))
        }
        LinkError::Expired(at) => refusal(
            app,
            StatusCode::GONE,
            l,
            &say(app, l, "refused.expired", serde_json::json!({"at": at.to_rfc3339()})),
        ),
    }
}

/// Verifies a link and loads its order; a refusal page otherwise.
async fn open(
    app: &AppState,
    token: &str,
    purpose: LinkPurpose,
) -> Result<(LinkClaims, OrderRecord, Locale), Response> {
    let Some(signer) = &app.links else {
        let l = app.settings.presentation.default_locale;
        return Err(refusal(app, StatusCode::NOT_FOUND, l, &w(app, l, "refused.disabled")));
    };
    let claims = signer.verify(token, purpose, app.clock.now()).map_err(|e| link_refusal(app, &e))?;
    let order = match app.orders.opened(claims.order_id).await {
        Ok(Some(o)) => o,
        Ok(None) => {
            let l = app.settings.presentation.default_locale;
            return Err(refusal(app, StatusCode::NOT_FOUND, l, &w(app, l, "refused.no_order")));
        }
        Err(e) => {
            tracing::error!(error = %e, "page cannot read the store");
            let l = app.settings.presentation.default_locale;
            return Err(busy(app, l));
        }
    };
    let locale = order.order.customer.locale.unwrap_or(app.settings.presentation.default_locale);
    Ok((claims, order, locale))
}

fn already_answered(app: &AppState, l: Locale) -> Response {
    sentence_page(app, StatusCode::CONFLICT, l, "title.thanks", &w(app, l, "refused.survey_answered"))
}

/// A form's error (a key of `pages/words.html`) as plain text for the form's template.
fn form_error(app: &AppState, l: Locale, key: &str) -> String {
    unescape(&w(app, l, key))
}

fn form(
    app: &AppState,
    (token, claims): (&str, &LinkClaims),
    order: &OrderRecord,
    l: Locale,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let error = error.map(|k| form_error(app, l, k));
    let ctx = serde_json::json!({
        "token": token, "error": error, "max_comment": MAX_COMMENT, "order": order_ctx(order),
        "feedback": page_link(app, claims),
    });
    text_page(app, status, l, "title.survey", "survey", ctx)
}

/// `GET /pages/survey/{token}`: the form, unless the link is bad or already used.
pub(crate) async fn survey_form(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    let (claims, order, l) = match open(&app, &token, LinkPurpose::Survey).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match app.store.used(&claims.link_id).await {
        Ok(Some(_)) => already_answered(&app, l),
        Ok(None) => form(&app, (&token, &claims), &order, l, None, StatusCode::OK),
        Err(e) => {
            tracing::error!(error = %e, "survey page cannot read the store");
            busy(&app, l)
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct SurveyForm {
    score: Option<String>,
    #[serde(default)]
    comment: String,
    complaint: Option<String>,
}

/// `POST /pages/survey/{token}`: records the answer once; a low score or a complaint
/// asks for an after-sales ticket (the engine decides, the dispatcher pushes it).
pub(crate) async fn survey_answer(State(app): State<AppState>, Path(token): Path<String>, req: Request) -> Response {
    let (claims, order, l) = match open(&app, &token, LinkPurpose::Survey).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    // The link is checked before the form is read (a stranger's body is never read).
    let form_data = Form::<SurveyForm>::from_request(req, &app).await;
    let bad = |msg: &str| form(&app, (&token, &claims), &order, l, Some(msg), StatusCode::UNPROCESSABLE_ENTITY);
    let Ok(Form(f)) = form_data else {
        return bad("error.form");
    };
    let score = match f.score.as_deref().map(str::trim).map(str::parse::<u8>) {
        Some(Ok(n @ 1..=5)) => n,
        _ => return bad("error.score"),
    };
    let comment: String = f.comment.trim().chars().take(MAX_COMMENT).collect();
    let complaint = f.complaint.is_some();
    let event = OrderEvent::SurveyAnswered { score, comment, complaint };
    let actor = crate::engine::access::Principal::LinkHolder { subject: claims.subject.clone() }.acting();
    match app
        .orders
        .apply_once(claims.order_id, actor, event, Some(&claims.link_id), None, &app.rules, app.clock.now())
        .await
    {
        Ok(_) => {
            app.wake_dispatcher();
            thanks(&app, l, &w(&app, l, "done.survey"), &claims)
        }
        Err(OrderError::LinkUsed(_) | OrderError::Conflict(_)) => already_answered(&app, l),
        Err(OrderError::Illegal(_)) => refusal(&app, StatusCode::CONFLICT, l, &w(&app, l, "refused.survey_closed")),
        Err(e) => {
            tracing::error!(error = %e, "survey answer not recorded");
            busy(&app, l)
        }
    }
}

/// The approval link's round and level (`r<round>.l<level>`).
fn round_level(context: &str) -> Option<(u32, u8)> {
    let (r, l) = context.strip_prefix('r')?.split_once(".l")?;
    Some((r.parse().ok()?, l.parse().ok()?))
}

/// Checks an approval link against the order as it is now: same round, same level,
/// still waiting. A refusal page otherwise.
fn current_level(app: &AppState, claims: &LinkClaims, order: &OrderRecord, l: Locale) -> Result<(u32, u8), Response> {
    let stale = |msg: String| refusal(app, StatusCode::CONFLICT, l, &msg);
    let Some((round, level)) = round_level(&claims.context) else {
        return Err(refusal(app, StatusCode::FORBIDDEN, l, &w(app, l, "refused.invalid")));
    };
    let now_round = order.approval.as_ref().map(|p| p.round);
    match &order.state {
        crate::engine::OrderState::AwaitingApproval { level: cur, .. } if *cur == level && now_round == Some(round) => {
            Ok((round, level))
        }
        crate::engine::OrderState::AwaitingApproval { .. } if now_round != Some(round) => {
            Err(stale(w(app, l, "refused.approval_restarted")))
        }
        state => Err(stale(say(app, l, "refused.approval_state", serde_json::json!({"state": state.name()})))),
    }
}

#[allow(clippy::too_many_arguments)]
fn approval_form(
    app: &AppState,
    (token, claims): (&str, &LinkClaims),
    order: &OrderRecord,
    events: &[crate::store::EventRecord],
    level: u8,
    l: Locale,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let of = match order.state {
        crate::engine::OrderState::AwaitingApproval { of, .. } => of,
        _ => level,
    };
    let o = &order.order;
    let lines: Vec<serde_json::Value> = events
        .iter()
        .filter_map(|e| {
            let text = describe(app, &e.event, &who_of(app, &e.actor, l), &o.amount, l)?;
            Some(serde_json::json!({"at": e.at.to_rfc3339(), "text": text}))
        })
        .collect();
    let mut order_ctx = order_ctx(order);
    order_ctx["customer_id"] = o.customer.id.as_str().into();
    order_ctx["term_months"] = o.term_months.map(|t| t.get()).into();
    order_ctx["credit_rating"] = o.customer.credit_rating.map(|r| r.as_str().to_owned()).into();
    order_ctx["need"] = o.need.as_ref().map(|n| n.as_str().to_owned()).into();
    order_ctx["sales_owner"] = o.sales_owner.as_ref().map(|s| s.as_str().to_owned()).into();
    let error = error.map(|k| form_error(app, l, k));
    let ctx = serde_json::json!({
        "token": token, "error": error, "max_comment": MAX_COMMENT, "level": level, "of": of,
        "order": order_ctx, "history": lines, "feedback": page_link(app, claims),
    });
    text_page(app, status, l, "title.approval", "approval", ctx)
}

/// Who did something, as the page names them.
fn who_of(app: &AppState, actor: &crate::engine::Actor, l: Locale) -> String {
    match actor {
        crate::engine::Actor::Person(p) => app.rules.notify.directory.person(p).map_or(p.clone(), |p| p.name.clone()),
        crate::engine::Actor::System => unescape(&w(app, l, "who.system")),
        crate::engine::Actor::Connector(c) => c.clone(),
    }
}

/// An event in words from the locale's page text (`pages/history.html`, escaped
/// HTML); `None` for events the page does not show.
fn describe(app: &AppState, ev: &OrderEvent, who: &str, amount: &crate::domain::Money, l: Locale) -> Option<String> {
    let templates = texts(app);
    let ctx = serde_json::json!({
        "event": ev,
        "who": who,
        "amount": money_ctx(amount),
    });
    match templates.render_fragment("history", l, ctx) {
        Ok(text) if !text.is_empty() => Some(text),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "page text not rendered");
            None
        }
    }
}

/// Why a person may not decide, in words from the locale's page text
/// (`pages/refusal.html`); never the engine's sentence.
fn refusal_words(app: &AppState, why: &crate::engine::approval::Refusal, l: Locale) -> String {
    use crate::engine::approval::Refusal as R;
    let refusal = match why {
        R::OwnOrder(person) => serde_json::json!({"kind": "own_order", "person": person}),
        R::AlreadyApproved(person, level) => {
            serde_json::json!({"kind": "already_approved", "person": person, "level": level})
        }
        R::NotAnApprover { person, level, needs } => serde_json::json!({
            "kind": "not_an_approver", "person": person, "level": level,
            "needs": needs,
        }),
        R::UnknownPerson(_) => serde_json::json!({"kind": "unknown_person"}),
        _ => serde_json::json!({"kind": "other"}),
    };
    refusal_text(app, refusal, l)
}

/// `pages/refusal.html` for one refusal; its `other` sentence when it says nothing.
fn refusal_text(app: &AppState, refusal: serde_json::Value, l: Locale) -> String {
    let words = |refusal: serde_json::Value| {
        texts(app)
            .render_fragment("refusal", l, serde_json::json!({"refusal": refusal}))
            .map_err(|e| tracing::warn!(error = %e, "page text not rendered"))
            .ok()
            .filter(|w| !w.is_empty())
    };
    words(refusal).or_else(|| words(serde_json::json!({"kind": "other"}))).unwrap_or_default()
}

/// The approver's language: from the directory, else the site default.
fn approver_locale(app: &AppState, claims: &LinkClaims) -> Locale {
    app.rules
        .notify
        .directory
        .person(&claims.subject)
        .and_then(|p| p.locale)
        .unwrap_or(app.settings.presentation.default_locale)
}

/// `GET /pages/approval/{token}`: the order, its screening and earlier decisions, and
/// the decision form, if the link is current and its holder may decide.
pub(crate) async fn approval_form_page(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    let (claims, order, _) = match open(&app, &token, LinkPurpose::Approval).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let l = approver_locale(&app, &claims);
    if let Ok(Some(_)) = app.store.used(&claims.link_id).await {
        return refusal(&app, StatusCode::CONFLICT, l, &w(&app, l, "refused.approval_used"));
    }
    let (_, level) = match current_level(&app, &claims, &order, l) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let today = app.clock.now().with_timezone(&app.settings.presentation.time_zone).date_naive();
    if let Some(p) = &order.approval
        && let Err(why) = p.standing(&app.rules.notify.directory, &order.order, &claims.subject, level, today)
    {
        return refusal(&app, StatusCode::FORBIDDEN, l, &refusal_words(&app, &why, l));
    }
    let events = app.store.events(order.id).await.unwrap_or_default();
    approval_form(&app, (&token, &claims), &order, &events, level, l, None, StatusCode::OK)
}

#[derive(Debug, Deserialize)]
pub(crate) struct ApprovalForm {
    decision: Option<String>,
    #[serde(default)]
    comment: String,
}

/// `POST /pages/approval/{token}`: approve or reject once; a question keeps the link.
pub(crate) async fn approval_answer(State(app): State<AppState>, Path(token): Path<String>, req: Request) -> Response {
    let (claims, order, _) = match open(&app, &token, LinkPurpose::Approval).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    // The link is checked before the form is read (a stranger's body is never read).
    let form_data = Form::<ApprovalForm>::from_request(req, &app).await;
    let l = approver_locale(&app, &claims);
    let (round, level) = match current_level(&app, &claims, &order, l) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let today = app.clock.now().with_timezone(&app.settings.presentation.time_zone).date_naive();
    if let Some(p) = &order.approval
        && let Err(why) = p.standing(&app.rules.notify.directory, &order.order, &claims.subject, level, today)
    {
        return refusal(&app, StatusCode::FORBIDDEN, l, &refusal_words(&app, &why, l));
    }
    let events = app.store.events(order.id).await.unwrap_or_default();
    let again = |msg: &str| {
        approval_form(&app, (&token, &claims), &order, &events, level, l, Some(msg), StatusCode::UNPROCESSABLE_ENTITY)
    };
    let Ok(Form(f)) = form_data else {
        return again("error.form");
    };
    let comment: String = f.comment.trim().chars().take(MAX_COMMENT).collect();
    let decision = match f.decision.as_deref() {
        Some("approve") => ApprovalDecision::Approve,
        Some("reject") => ApprovalDecision::Reject,
        Some("request_info") => ApprovalDecision::RequestInfo,
        _ => return again("error.approval_decision"),
    };
    let event = match approval_event(decision, level, comment) {
        Ok(event) => event,
        Err(AnswerError::CommentMissing | AnswerError::ReasonMissing) => return again("error.approval_reason"),
    };
    let once = decision.is_final();
    let actor = crate::engine::access::Principal::LinkHolder { subject: claims.subject.clone() }.acting();
    let once = once.then_some(claims.link_id.as_str());
    match app.orders.apply_once(claims.order_id, actor, event, once, Some(round), &app.rules, app.clock.now()).await {
        Ok(rec) => {
            app.wake_dispatcher();
            let text = match &rec.state {
                crate::engine::OrderState::AwaitingApproval { level: now, .. } if *now == level => {
                    w(&app, l, "done.approval_waiting")
                }
                state => say(&app, l, "done.approval", serde_json::json!({"state": state.name()})),
            };
            thanks(&app, l, &text, &claims)
        }
        // The standing was checked above; a refusal here is a race (e.g. the directory changed).
        Err(OrderError::Refused(why)) => {
            tracing::info!(reason = %why, "approval refused");
            refusal(&app, StatusCode::FORBIDDEN, l, &refusal_text(&app, serde_json::json!({"kind": "other"}), l))
        }
        Err(OrderError::LinkUsed(_)) => refusal(&app, StatusCode::CONFLICT, l, &w(&app, l, "refused.approval_used")),
        // The engine's reason is for the log, never the page.
        Err(OrderError::Conflict(why)) => {
            tracing::info!(reason = %why, "approval conflict");
            refusal(&app, StatusCode::CONFLICT, l, &w(&app, l, "refused.approval_stale"))
        }
        Err(OrderError::Illegal(_)) => refusal(&app, StatusCode::CONFLICT, l, &w(&app, l, "refused.approval_stale")),
        Err(e) => {
            tracing::error!(error = %e, "approval not recorded");
            busy(&app, l)
        }
    }
}

fn acceptance_form(
    app: &AppState,
    (token, claims): (&str, &LinkClaims),
    order: &OrderRecord,
    events: &[crate::store::EventRecord],
    l: Locale,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let note = events.iter().rev().find_map(|e| match &e.event {
        OrderEvent::DeliveryRecorded { note } if !note.is_empty() => Some(note.clone()),
        _ => None,
    });
    let tasks: Vec<&str> = order
        .fulfilment
        .iter()
        .flat_map(|f| f.tasks.iter())
        .filter(|t| t.done.is_some())
        .map(|t| t.name.as_str())
        .collect();
    let error = error.map(|k| form_error(app, l, k));
    let ctx = serde_json::json!({
        "token": token, "error": error, "max_comment": MAX_COMMENT, "order": order_ctx(order),
        "note": note, "tasks": tasks, "feedback": page_link(app, claims),
    });
    text_page(app, status, l, "title.acceptance", "acceptance", ctx)
}

/// `GET /pages/acceptance/{token}`: the acceptance form while the order waits for it.
pub(crate) async fn acceptance_page(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    let (claims, order, l) = match open(&app, &token, LinkPurpose::Acceptance).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !matches!(order.state, crate::engine::OrderState::Delivered) {
        return not_waiting_for_acceptance(&app, &order, l);
    }
    match (app.store.used(&claims.link_id).await, app.store.events(order.id).await) {
        (Ok(Some(_)), _) => not_waiting_for_acceptance(&app, &order, l),
        (Ok(None), Ok(events)) => acceptance_form(&app, (&token, &claims), &order, &events, l, None, StatusCode::OK),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "acceptance page cannot read the store");
            busy(&app, l)
        }
    }
}

fn not_waiting_for_acceptance(app: &AppState, order: &OrderRecord, l: Locale) -> Response {
    let msg = say(app, l, "refused.acceptance_state", serde_json::json!({"state": order.state.name()}));
    refusal(app, StatusCode::CONFLICT, l, &msg)
}

#[derive(Debug, Deserialize)]
pub(crate) struct AcceptanceForm {
    decision: Option<String>,
    #[serde(default)]
    note: String,
}

/// `POST /pages/acceptance/{token}`: acceptance (the engine invoices next) or a
/// refusal with its reason (an exception for the owner to resolve); once.
pub(crate) async fn acceptance_answer(
    State(app): State<AppState>,
    Path(token): Path<String>,
    req: Request,
) -> Response {
    let (claims, order, l) = match open(&app, &token, LinkPurpose::Acceptance).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    // The link is checked before the form is read (a stranger's body is never read).
    let form_data = Form::<AcceptanceForm>::from_request(req, &app).await;
    let events = match app.store.events(order.id).await {
        Ok(e) => e,
        Err(_) => return busy(&app, l),
    };
    let bad = |msg: &str| {
        acceptance_form(&app, (&token, &claims), &order, &events, l, Some(msg), StatusCode::UNPROCESSABLE_ENTITY)
    };
    let Ok(Form(f)) = form_data else {
        return bad("error.form");
    };
    let decision = match f.decision.as_deref() {
        Some("accept") => AcceptanceDecision::Accept,
        Some("refuse") => AcceptanceDecision::Refuse,
        _ => return bad("error.acceptance_decision"),
    };
    let note: String = f.note.trim().chars().take(MAX_COMMENT).collect();
    let event = match acceptance_event(decision, &note, "the customer") {
        Ok(event) => event,
        Err(AnswerError::ReasonMissing | AnswerError::CommentMissing) => return bad("error.acceptance_reason"),
    };
    let accepted = matches!(event, OrderEvent::AcceptanceConfirmed { .. });
    let actor = crate::engine::access::Principal::LinkHolder { subject: claims.subject.clone() }.acting();
    match app
        .orders
        .apply_once(claims.order_id, actor, event, Some(&claims.link_id), None, &app.rules, app.clock.now())
        .await
    {
        Ok(_) => {
            app.wake_dispatcher();
            let text = w(&app, l, if accepted { "done.accepted" } else { "done.not_accepted" });
            thanks(&app, l, &text, &claims)
        }
        Err(OrderError::LinkUsed(_) | OrderError::Conflict(_) | OrderError::Illegal(_)) => {
            not_waiting_for_acceptance(&app, &order, l)
        }
        Err(e) => {
            tracing::error!(error = %e, "acceptance not recorded");
            busy(&app, l)
        }
    }
}

/// The stages a customer sees (received … completed); the words are the page text's.
const STEPS: usize = 8;

/// The stage the order is at (0 … `STEPS` - 1).
fn stage(state: &crate::engine::OrderState) -> usize {
    use crate::engine::OrderState as S;
    match state {
        S::Received | S::Screening | S::Flagged | S::ManualReview | S::AwaitingApproval { .. } => 0,
        S::Rejected | S::Cancelled => 0,
        S::Approved => 1,
        S::Executing => 2,
        S::Delivered | S::Exception { .. } => 3,
        S::Accepted => 4,
        S::Invoiced | S::Overdue => 5,
        S::Paid => 6,
        S::Closed | S::Archived => 7,
    }
}

/// The event that completes each stage (the last one, if it happened more than once).
fn step_of(ev: &OrderEvent) -> Option<usize> {
    Some(match ev {
        OrderEvent::Received { .. } => 0,
        OrderEvent::Approved { .. } | OrderEvent::ApprovalGiven { .. } => 1,
        OrderEvent::ExecutionStarted => 2,
        OrderEvent::DeliveryRecorded { .. } => 3,
        OrderEvent::AcceptanceConfirmed { .. } => 4,
        OrderEvent::InvoiceIssued { .. } => 5,
        OrderEvent::PaymentReceived { .. } => 6,
        OrderEvent::Closed => 7,
        _ => return None,
    })
}

/// An amount as the templates' `money` filter reads it.
fn money_ctx(m: &crate::domain::Money) -> serde_json::Value {
    serde_json::json!({"amount": m.amount().to_string(), "currency": m.currency().as_str()})
}

/// The order summary every customer page shows.
fn order_ctx(order: &OrderRecord) -> serde_json::Value {
    let o = &order.order;
    serde_json::json!({"customer": o.customer.name.as_str(), "product": o.product.kind.as_str(),
        "code": o.product.code.as_str(), "amount": money_ctx(&o.amount)})
}

/// What the status page's text (`pages/status.html`) is rendered with.
fn status_ctx(app: &AppState, order: &OrderRecord, events: &[crate::store::EventRecord]) -> serde_json::Value {
    let tz = app.settings.presentation.time_zone;
    let at = stage(&order.state);
    let mut days = [None; STEPS];
    for e in events {
        if let Some(i) = step_of(&e.event) {
            days[i] = Some(e.at.with_timezone(&tz).date_naive());
        }
    }
    let steps: Vec<serde_json::Value> = (0..STEPS)
        .map(|i| {
            let day = days[i].filter(|_| i <= at).map(|d| d.to_string());
            serde_json::json!({"done": i <= at, "current": i == at, "day": day})
        })
        .collect();
    let invoice = order.fulfilment.as_ref().and_then(|f| Some((f.invoice.as_ref()?, receivables::owed(f)?))).map(|(inv, owed)| {
        serde_json::json!({"number": inv.number, "outstanding": money_ctx(&owed), "due": inv.due.to_string()})
    });
    serde_json::json!({
        "state": order.state.name(),
        "steps": steps,
        "order": order_ctx(order),
        "invoice": invoice,
        "history": events.iter().map(|e| serde_json::json!({"at": e.at.to_rfc3339(), "event": e.event.name()}))
            .collect::<Vec<_>>(),
    })
}

/// `GET /pages/status/{token}`: the order's stage, its milestones and the next step,
/// in the customer's language. The link may be opened again and again (until it
/// expires); it changes nothing.
pub(crate) async fn status_page(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    let (claims, order, l) = match open(&app, &token, LinkPurpose::Status).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let events = match app.store.events(order.id).await {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "status page cannot read the store");
            return busy(&app, l);
        }
    };
    let mut ctx = status_ctx(&app, &order, &events);
    ctx["feedback"] = page_link(&app, &claims).into();
    text_page(&app, StatusCode::OK, l, "title.status", "status", ctx)
}

/// The feedback link that ends a page opened from `claims` (approval, acceptance,
/// survey, status): for the same person or address and order, issued now, so it
/// is valid as long as a mail's. `None` without link keys.
pub(crate) fn page_link(app: &AppState, claims: &LinkClaims) -> Option<String> {
    let signer = app.links.as_ref()?;
    let link_id = format!("{}/feedback", claims.link_id);
    let fb = signer.claims(LinkPurpose::Feedback, claims.order_id, &claims.subject, &link_id, app.clock.now());
    Some(format!("/pages/feedback/{}", signer.token(&fb)))
}

/// The paragraph with that link (HTML), worded by `pages/feedback.html` (`page_footer`).
pub(crate) fn page_footer(app: &AppState, l: Locale, url: &str) -> String {
    let words = view_text(app, l, "page_footer", serde_json::json!({}));
    format!("<p class=\"feedback\"><a href=\"{}\">{words}</a></p>", esc(url))
}

/// A view of `pages/feedback.html`, as HTML.
pub(crate) fn view_text(app: &AppState, l: Locale, view: &str, mut ctx: serde_json::Value) -> String {
    ctx["view"] = view.into();
    texts(app).render_fragment("feedback", l, ctx).unwrap_or_else(|e| {
        tracing::error!(error = %e, view, "feedback text not rendered");
        String::new()
    })
}
