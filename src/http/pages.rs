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
use crate::engine::{Actor, OrderEvent};
use crate::links::{LinkClaims, LinkError, LinkPurpose};
use crate::locale;
use crate::orders::OrderError;
use crate::settings::Settings;
use crate::store::OrderRecord;

/// Longest survey comment kept, in characters.
const MAX_COMMENT: usize = 2000;

fn esc(s: &str) -> String {
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

/// One piece of page text in both languages.
fn t(locale: Locale, en: &'static str, zh: &'static str) -> &'static str {
    match locale {
        Locale::ZhCn => zh,
        Locale::En => en,
    }
}

/// The pages' stylesheet (`pages.css`), the accent colour from the settings first.
pub fn stylesheet(settings: &Settings) -> String {
    format!(":root {{ --accent: {}; }}\n{}", settings.site_color, include_str!("pages.css"))
}

/// `GET /pages/assets/style.css`: the one stylesheet every page uses.
pub async fn style(State(app): State<AppState>) -> Response {
    let mut resp = ([("content-type", "text/css; charset=utf-8")], stylesheet(&app.settings)).into_response();
    resp.headers_mut().insert("cache-control", "public, max-age=3600".parse().expect("valid"));
    resp
}

/// `GET /pages/assets/logo`: the configured logo (`site.logo`), 404 without one.
pub async fn logo(State(app): State<AppState>) -> Response {
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

fn page(status: StatusCode, locale: Locale, site: &Settings, title: &str, body: &str) -> Response {
    let logo = if site.site_logo.is_some() { "<img src=\"/pages/assets/logo\" alt=\"\">" } else { "" };
    let html = format!(
        "<!doctype html>\n<html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\">\
         <meta name=\"referrer\" content=\"no-referrer\"><title>{title} · {name}</title>\
         <link rel=\"stylesheet\" href=\"/pages/assets/style.css\"></head>\
         <body><header class=\"site\"><div class=\"in\">{logo}<span class=\"name\">{name}</span></div></header>\
         <main><div class=\"card\"><h1>{title}</h1>{body}</div></main></body></html>\n",
        lang = locale.as_str(),
        title = esc(title),
        name = esc(&site.site_name),
    );
    let mut resp = (status, Html(html)).into_response();
    let h = resp.headers_mut();
    h.insert("cache-control", "no-store".parse().expect("valid"));
    h.insert("x-frame-options", "DENY".parse().expect("valid"));
    h.insert(
        "content-security-policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
            .parse()
            .expect("valid"),
    );
    resp
}

/// A refusal page: what happened, in the reader's language.
fn refusal(app: &AppState, status: StatusCode, locale: Locale, message: &str) -> Response {
    let title = t(locale, "This link cannot be used", "此链接无法使用");
    page(status, locale, &app.settings, title, &format!("<p>{}</p>", esc(message)))
}

/// A refusal page whose message is already HTML (page text from the templates).
fn refusal_html(app: &AppState, status: StatusCode, locale: Locale, html: &str) -> Response {
    let title = t(locale, "This link cannot be used", "此链接无法使用");
    page(status, locale, &app.settings, title, &format!("<p>{html}</p>"))
}

/// The store could not be read or written: nothing was recorded; try again.
fn busy(app: &AppState, l: Locale) -> Response {
    refusal(app, StatusCode::SERVICE_UNAVAILABLE, l, t(l, "Please try again in a moment.", "请稍后再试。"))
}

fn link_refusal(app: &AppState, e: &LinkError) -> Response {
    let l = app.settings.presentation.default_locale;
    let (status, message) = match e {
        LinkError::Invalid | LinkError::WrongPurpose => (
            StatusCode::FORBIDDEN,
            t(
                l,
                "The link is not valid. Please use the link exactly as it was sent to you.",
                "链接无效，请使用邮件中的原始链接。",
            )
            .to_owned(),
        ),
        LinkError::Expired(at) => (
            StatusCode::GONE,
            match l {
                Locale::ZhCn => {
                    format!("链接已于 {} 过期。", locale::datetime(*at, app.settings.presentation.time_zone, l))
                }
                Locale::En => {
                    format!("The link expired on {}.", locale::datetime(*at, app.settings.presentation.time_zone, l))
                }
            },
        ),
    };
    refusal(app, status, l, &message)
}

/// Verifies a link and loads its order; a refusal page otherwise.
async fn open(
    app: &AppState,
    token: &str,
    purpose: LinkPurpose,
) -> Result<(LinkClaims, OrderRecord, Locale), Response> {
    let Some(signer) = &app.links else {
        return Err(refusal(
            app,
            StatusCode::NOT_FOUND,
            app.settings.presentation.default_locale,
            "links are not enabled on this server",
        ));
    };
    let claims = signer.verify(token, purpose, app.clock.now()).map_err(|e| link_refusal(app, &e))?;
    let order = match app.store.order(claims.order_id).await {
        Ok(Some(o)) => o,
        Ok(None) => {
            let l = app.settings.presentation.default_locale;
            return Err(refusal(app, StatusCode::NOT_FOUND, l, t(l, "The order no longer exists.", "该订单不存在。")));
        }
        Err(e) => {
            tracing::error!(error = %e, "page cannot read the store");
            let l = app.settings.presentation.default_locale;
            return Err(refusal(
                app,
                StatusCode::SERVICE_UNAVAILABLE,
                l,
                t(l, "The service is busy; please try again in a moment.", "系统繁忙，请稍后再试。"),
            ));
        }
    };
    let locale = order.order.customer.locale.unwrap_or(app.settings.presentation.default_locale);
    Ok((claims, order, locale))
}

fn summary(order: &OrderRecord, l: Locale) -> String {
    format!(
        "<table class=\"facts\"><tr><th>{}</th><td>{}</td></tr><tr><th>{}</th><td>{} {}</td></tr><tr><th>{}</th><td>{}</td></tr></table>",
        t(l, "Customer", "客户"),
        esc(order.order.customer.name.as_str()),
        t(l, "Product", "产品"),
        esc(locale::label(order.order.product.kind.as_str(), l)),
        esc(order.order.product.code.as_str()),
        t(l, "Amount", "金额"),
        esc(&locale::money(&order.order.amount, l)),
    )
}

fn already_answered(app: &AppState, l: Locale) -> Response {
    page(
        StatusCode::CONFLICT,
        l,
        &app.settings,
        t(l, "Thank you", "感谢您的反馈"),
        &format!(
            "<p>{}</p>",
            t(
                l,
                "This survey has already been answered. Each survey can be answered once.",
                "此问卷已提交过，每份问卷只能提交一次。"
            )
        ),
    )
}

fn form(
    app: &AppState,
    token: &str,
    order: &OrderRecord,
    l: Locale,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let ctx = serde_json::json!({
        "token": token, "error": error, "max_comment": MAX_COMMENT, "order": order_ctx(order),
    });
    if let Some(body) = from_template(app, "survey", l, ctx) {
        return page(status, l, &app.settings, t(l, "Satisfaction survey", "满意度调查"), &body);
    }
    let scores: String = (1..=5)
        .map(|n| format!("<label><input type=\"radio\" name=\"score\" value=\"{n}\" required> {n}</label>"))
        .collect();
    let error = error.map(|e| format!("<p role=\"alert\" class=\"alert\">{}</p>", esc(e))).unwrap_or_default();
    let body = format!(
        "<p class=\"lead\">{intro}</p>{summary}{error}<form method=\"post\" action=\"/pages/survey/{token}\">\
         <p>{q}</p><div class=\"scores\">{scores}</div><p class=\"note\">{scale}</p>\
         <p><label class=\"field\" for=\"comment\">{c}</label><textarea id=\"comment\" name=\"comment\" maxlength=\"{MAX_COMMENT}\"></textarea></p>\
         <p class=\"check\"><label><input type=\"checkbox\" name=\"complaint\" value=\"yes\"> {complaint}</label></p>\
         <p><button type=\"submit\">{submit}</button></p></form>",
        intro = t(
            l,
            "Thank you for doing business with us. How satisfied are you with this order?",
            "感谢您的信任。您对本次业务办理是否满意？"
        ),
        summary = summary(order, l),
        token = esc(token),
        q = t(l, "Your score", "您的评分"),
        scale = t(l, "1 = very dissatisfied, 5 = very satisfied", "1 = 非常不满意，5 = 非常满意"),
        c = t(l, "Comments (optional)", "意见或建议（选填）"),
        complaint = t(l, "I want to make a complaint and be contacted", "我要投诉，请与我联系"),
        submit = t(l, "Submit", "提交"),
    );
    page(status, l, &app.settings, t(l, "Satisfaction survey", "满意度调查"), &body)
}

/// `GET /pages/survey/{token}`: the form, unless the link is bad or already used.
pub async fn survey_form(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    let (claims, order, l) = match open(&app, &token, LinkPurpose::Survey).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match app.store.used(&claims.link_id).await {
        Ok(Some(_)) => already_answered(&app, l),
        Ok(None) => form(&app, &token, &order, l, None, StatusCode::OK),
        Err(e) => {
            tracing::error!(error = %e, "survey page cannot read the store");
            busy(&app, l)
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct SurveyForm {
    score: Option<String>,
    #[serde(default)]
    comment: String,
    complaint: Option<String>,
}

/// `POST /pages/survey/{token}`: records the answer once; a low score or a complaint
/// asks for an after-sales ticket (the engine decides, the dispatcher pushes it).
pub async fn survey_answer(State(app): State<AppState>, Path(token): Path<String>, req: Request) -> Response {
    let (claims, order, l) = match open(&app, &token, LinkPurpose::Survey).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    // The link is checked before the form is read (a stranger's body is never read).
    let form_data = Form::<SurveyForm>::from_request(req, &app).await;
    let bad = |msg: &str| form(&app, &token, &order, l, Some(msg), StatusCode::UNPROCESSABLE_ENTITY);
    let Ok(Form(f)) = form_data else {
        return bad(t(l, "The form could not be read; please submit it again.", "表单无法读取，请重新提交。"));
    };
    let score = match f.score.as_deref().map(str::trim).map(str::parse::<u8>) {
        Some(Ok(n @ 1..=5)) => n,
        _ => return bad(t(l, "Please choose a score from 1 to 5.", "请选择 1 到 5 分的评分。")),
    };
    let comment: String = f.comment.trim().chars().take(MAX_COMMENT).collect();
    let complaint = f.complaint.is_some();
    let event = OrderEvent::SurveyAnswered { score, comment, complaint };
    let actor = Actor::Person(claims.subject.clone());
    match app
        .orders
        .apply_once(claims.order_id, actor, event, Some(&claims.link_id), None, &app.rules, app.clock.now())
        .await
    {
        Ok(_) => {
            app.wake_dispatcher();
            let text = t(l, "Thank you for your feedback. It has been recorded.", "感谢您的反馈，我们已记录您的评价。");
            page(StatusCode::OK, l, &app.settings, t(l, "Thank you", "感谢您的反馈"), &format!("<p>{text}</p>"))
        }
        Err(OrderError::LinkUsed(_) | OrderError::Conflict(_)) => already_answered(&app, l),
        Err(OrderError::Illegal(_)) => refusal(
            &app,
            StatusCode::CONFLICT,
            l,
            t(l, "This order is not open for a survey.", "该订单当前不接受满意度调查。"),
        ),
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
        return Err(refusal(app, StatusCode::FORBIDDEN, l, t(l, "The link is not valid.", "链接无效。")));
    };
    let now_round = order.approval.as_ref().map(|p| p.round);
    match &order.state {
        crate::engine::OrderState::AwaitingApproval { level: cur, .. } if *cur == level && now_round == Some(round) => {
            Ok((round, level))
        }
        crate::engine::OrderState::AwaitingApproval { .. } if now_round != Some(round) => Err(stale(
            t(
                l,
                "This approval request is no longer current: the order was changed and its approval started again. A new request has been sent.",
                "此审批请求已失效：订单已变更，审批流程已重新开始，新的审批请求已另行发送。",
            )
            .into(),
        )),
        state => Err(stale(match l {
            Locale::ZhCn => format!("此审批请求已失效：该订单当前状态为“{}”。", locale::label(state.name(), l)),
            Locale::En => format!("This approval request is no longer current: the order is now {}.", locale::label(state.name(), l)),
        })),
    }
}

#[allow(clippy::too_many_arguments)]
fn approval_form(
    app: &AppState,
    token: &str,
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
    let ctx = serde_json::json!({
        "token": token, "error": error, "max_comment": MAX_COMMENT, "level": level, "of": of,
        "order": order_ctx, "history": lines,
    });
    if let Some(body) = from_template(app, "approval", l, ctx) {
        return page(status, l, &app.settings, t(l, "Approval request", "审批请求"), &body);
    }
    let mut rows = vec![
        (t(l, "Customer", "客户"), format!("{} ({})", o.customer.name.as_str(), o.customer.id.as_str())),
        (t(l, "Product", "产品"), format!("{} {}", locale::label(o.product.kind.as_str(), l), o.product.code.as_str())),
        (t(l, "Amount", "金额"), locale::money(&o.amount, l)),
    ];
    if let Some(term) = o.term_months {
        rows.push((t(l, "Term", "期限"), format!("{} {}", term.get(), t(l, "months", "个月"))));
    }
    if let Some(r) = o.customer.credit_rating {
        rows.push((t(l, "Credit rating", "信用评级"), r.as_str().to_owned()));
    }
    if let Some(n) = &o.need {
        rows.push((t(l, "Need", "客户需求"), n.as_str().to_owned()));
    }
    if let Some(s) = &o.sales_owner {
        rows.push((t(l, "Sales owner", "客户经理"), s.as_str().to_owned()));
    }
    let table: String = rows.iter().map(|(k, v)| format!("<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v))).collect();
    let tz = app.settings.presentation.time_zone;
    let history: String = events
        .iter()
        .filter_map(|e| {
            let what = describe(app, &e.event, &who_of(app, &e.actor, l), &o.amount, l)?;
            Some(format!("<li><span class=\"when\">{}</span> {what}</li>", esc(&locale::datetime(e.at, tz, l))))
        })
        .collect();
    let error = error.map(|e| format!("<p role=\"alert\" class=\"alert\">{}</p>", esc(e))).unwrap_or_default();
    let body = format!(
        "<p class=\"lead\">{intro}</p><table class=\"facts\">{table}</table><h2>{hist_title}</h2><ul class=\"history\">{history}</ul>{error}\
         <form method=\"post\" action=\"/pages/approval/{token}\">\
         <div class=\"choices\"><label><input type=\"radio\" name=\"decision\" value=\"approve\" required> {approve}</label>\
         <label><input type=\"radio\" name=\"decision\" value=\"reject\"> {reject}</label>\
         <label><input type=\"radio\" name=\"decision\" value=\"request_info\"> {info}</label></div>\
         <p><label class=\"field\" for=\"comment\">{c}</label><textarea id=\"comment\" name=\"comment\" maxlength=\"{MAX_COMMENT}\"></textarea></p>\
         <p><button type=\"submit\">{submit}</button></p></form>",
        intro = match l {
            Locale::ZhCn => format!("请审批以下订单（第 {level} 级，共 {of} 级）。"),
            Locale::En => format!("Please decide on this order (level {level} of {of})."),
        },
        hist_title = t(l, "Screening and earlier decisions", "筛查结果与审批记录"),
        token = esc(token),
        approve = t(l, "Approve", "同意"),
        reject = t(l, "Reject", "拒绝"),
        info = t(l, "Request more information", "要求补充信息"),
        c = t(l, "Comment (required to reject or ask)", "审批意见（拒绝或提问时必填）"),
        submit = t(l, "Submit decision", "提交"),
    );
    page(status, l, &app.settings, t(l, "Approval request", "审批请求"), &body)
}

/// Who did something, as the page names them.
fn who_of(app: &AppState, actor: &crate::engine::Actor, l: Locale) -> String {
    match actor {
        crate::engine::Actor::Person(p) => app.rules.notify.directory.person(p).map_or(p.clone(), |p| p.name.clone()),
        crate::engine::Actor::System => t(l, "The system", "系统").to_owned(),
        crate::engine::Actor::Connector(c) => c.clone(),
    }
}

/// An event in words from the locale's page text (`pages/history.html`, escaped
/// HTML); `None` for events the page does not show.
fn describe(app: &AppState, ev: &OrderEvent, who: &str, amount: &crate::domain::Money, l: Locale) -> Option<String> {
    let templates = app.templates.as_ref()?;
    let ctx = serde_json::json!({
        "event": ev,
        "who": who,
        "amount": {"amount": amount.amount().to_string(), "currency": amount.currency().as_str()},
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
            "needs": needs.split(" or ").collect::<Vec<_>>(),
        }),
        R::UnknownPerson(_) => serde_json::json!({"kind": "unknown_person"}),
        _ => serde_json::json!({"kind": "other"}),
    };
    let words = app.templates.as_ref().and_then(|t| {
        t.render_fragment("refusal", l, serde_json::json!({"refusal": refusal}))
            .map_err(|e| tracing::warn!(error = %e, "page text not rendered"))
            .ok()
    });
    match words {
        Some(w) if !w.is_empty() => w,
        _ => t(l, "You cannot decide on this request at the moment.", "您当前无法处理此审批请求。").to_owned(),
    }
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
pub async fn approval_form_page(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    let (claims, order, _) = match open(&app, &token, LinkPurpose::Approval).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let l = approver_locale(&app, &claims);
    if let Ok(Some(_)) = app.store.used(&claims.link_id).await {
        return refusal(
            &app,
            StatusCode::CONFLICT,
            l,
            t(l, "You have already decided on this request.", "您已处理过此审批请求。"),
        );
    }
    let (_, level) = match current_level(&app, &claims, &order, l) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let today = app.clock.now().with_timezone(&app.settings.presentation.time_zone).date_naive();
    if let Some(p) = &order.approval
        && let Err(why) = p.standing(&app.rules.notify.directory, &order.order, &claims.subject, level, today)
    {
        return refusal_html(&app, StatusCode::FORBIDDEN, l, &refusal_words(&app, &why, l));
    }
    let events = app.store.events(order.id).await.unwrap_or_default();
    approval_form(&app, &token, &order, &events, level, l, None, StatusCode::OK)
}

#[derive(Debug, Deserialize)]
pub struct ApprovalForm {
    decision: Option<String>,
    #[serde(default)]
    comment: String,
}

/// `POST /pages/approval/{token}`: approve or reject once; a question keeps the link.
pub async fn approval_answer(State(app): State<AppState>, Path(token): Path<String>, req: Request) -> Response {
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
        return refusal_html(&app, StatusCode::FORBIDDEN, l, &refusal_words(&app, &why, l));
    }
    let events = app.store.events(order.id).await.unwrap_or_default();
    let again =
        |msg: &str| approval_form(&app, &token, &order, &events, level, l, Some(msg), StatusCode::UNPROCESSABLE_ENTITY);
    let Ok(Form(f)) = form_data else {
        return again(t(l, "The form could not be read; please submit it again.", "表单无法读取，请重新提交。"));
    };
    let comment: String = f.comment.trim().chars().take(MAX_COMMENT).collect();
    let (event, once) = match f.decision.as_deref() {
        Some("approve") => (OrderEvent::Approved { level, role: String::new(), comment, on_behalf_of: None }, true),
        Some("reject") if !comment.is_empty() => {
            (OrderEvent::ApprovalDeclined { level, role: String::new(), comment }, true)
        }
        Some("request_info") if !comment.is_empty() => {
            (OrderEvent::InfoRequested { level, role: String::new(), question: comment }, false)
        }
        Some("reject" | "request_info") => {
            return again(t(l, "Please say why in the comment.", "请在审批意见中说明理由。"));
        }
        _ => return again(t(l, "Please choose a decision.", "请选择审批结果。")),
    };
    let actor = Actor::Person(claims.subject.clone());
    let once = once.then_some(claims.link_id.as_str());
    match app.orders.apply_once(claims.order_id, actor, event, once, Some(round), &app.rules, app.clock.now()).await {
        Ok(rec) => {
            app.wake_dispatcher();
            let text = match (&rec.state, l) {
                (crate::engine::OrderState::AwaitingApproval { level: now, .. }, Locale::ZhCn) if *now == level => {
                    "已记录。此级审批尚需其他审批人，或等待补充信息。".to_owned()
                }
                (crate::engine::OrderState::AwaitingApproval { level: now, .. }, Locale::En) if *now == level => {
                    "Recorded. This level still needs other approvers, or the information you asked for.".to_owned()
                }
                (state, Locale::ZhCn) => format!("已记录，订单当前状态：{}。", locale::label(state.name(), l)),
                (state, Locale::En) => format!("Recorded. The order is now {}.", locale::label(state.name(), l)),
            };
            page(StatusCode::OK, l, &app.settings, t(l, "Thank you", "谢谢"), &format!("<p>{}</p>", esc(&text)))
        }
        // The standing was checked above; a refusal here is a race (e.g. the directory changed).
        Err(OrderError::Refused(why)) => {
            tracing::info!(reason = %why, "approval refused");
            refusal(
                &app,
                StatusCode::FORBIDDEN,
                l,
                t(l, "You cannot decide on this request at the moment.", "您当前无法处理此审批请求。"),
            )
        }
        Err(OrderError::LinkUsed(_)) => refusal(
            &app,
            StatusCode::CONFLICT,
            l,
            t(l, "You have already decided on this request.", "您已处理过此审批请求。"),
        ),
        Err(OrderError::Conflict(why)) => refusal(&app, StatusCode::CONFLICT, l, &why),
        Err(OrderError::Illegal(_)) => refusal(
            &app,
            StatusCode::CONFLICT,
            l,
            t(l, "This approval request is no longer current.", "此审批请求已失效。"),
        ),
        Err(e) => {
            tracing::error!(error = %e, "approval not recorded");
            busy(&app, l)
        }
    }
}

/// Delivery details shown to the customer: what was delivered, the tasks done.
fn delivered_items(order: &OrderRecord, events: &[crate::store::EventRecord], l: Locale) -> String {
    let note = events.iter().rev().find_map(|e| match &e.event {
        OrderEvent::DeliveryRecorded { note } if !note.is_empty() => Some(note.clone()),
        _ => None,
    });
    let tasks: String = order
        .fulfilment
        .iter()
        .flat_map(|f| f.tasks.iter())
        .filter(|t| t.done.is_some())
        .map(|t| format!("<li>{}</li>", esc(locale::bilingual(&t.name, l))))
        .collect();
    let mut out = String::new();
    if let Some(n) = note {
        out.push_str(&format!("<p>{}{}{}</p>", t(l, "Delivery", "交付说明"), t(l, ": ", "："), esc(&n)));
    }
    if !tasks.is_empty() {
        out.push_str(&format!("<p>{}</p><ul>{tasks}</ul>", t(l, "Completed", "已完成事项")));
    }
    out
}

fn acceptance_form(
    app: &AppState,
    token: &str,
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
    let ctx = serde_json::json!({
        "token": token, "error": error, "max_comment": MAX_COMMENT, "order": order_ctx(order),
        "note": note, "tasks": tasks,
    });
    if let Some(body) = from_template(app, "acceptance", l, ctx) {
        return page(status, l, &app.settings, t(l, "Delivery acceptance", "交付验收"), &body);
    }
    let error = error.map(|e| format!("<p role=\"alert\" class=\"alert\">{}</p>", esc(e))).unwrap_or_default();
    let body = format!(
        "<p class=\"lead\">{intro}</p>{summary}{delivered}{error}<form method=\"post\" action=\"/pages/acceptance/{token}\">\
         <div class=\"choices\"><label><input type=\"radio\" name=\"decision\" value=\"accept\" required> {accept}</label>\
         <label><input type=\"radio\" name=\"decision\" value=\"refuse\"> {refuse}</label></div>\
         <p><label class=\"field\" for=\"note\">{why}</label><textarea id=\"note\" name=\"note\" maxlength=\"{MAX_COMMENT}\"></textarea></p>\
         <p><button type=\"submit\">{submit}</button></p></form>",
        intro = t(
            l,
            "Your order has been delivered. Please confirm that you accept the delivery, or tell us what is wrong.",
            "您的订单已交付。请确认验收，或告诉我们存在的问题。"
        ),
        summary = summary(order, l),
        delivered = delivered_items(order, events, l),
        token = esc(token),
        accept = t(l, "I accept the delivery", "确认验收"),
        refuse = t(l, "I do not accept it (please say why)", "不予验收（请说明原因）"),
        why = t(l, "Remarks (required when not accepting)", "备注（不予验收时必填）"),
        submit = t(l, "Submit", "提交"),
    );
    page(status, l, &app.settings, t(l, "Delivery acceptance", "交付验收"), &body)
}

/// `GET /pages/acceptance/{token}`: the acceptance form while the order waits for it.
pub async fn acceptance_page(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    let (claims, order, l) = match open(&app, &token, LinkPurpose::Acceptance).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !matches!(order.state, crate::engine::OrderState::Delivered) {
        return not_waiting_for_acceptance(&app, &order, l);
    }
    match (app.store.used(&claims.link_id).await, app.store.events(order.id).await) {
        (Ok(Some(_)), _) => not_waiting_for_acceptance(&app, &order, l),
        (Ok(None), Ok(events)) => acceptance_form(&app, &token, &order, &events, l, None, StatusCode::OK),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "acceptance page cannot read the store");
            busy(&app, l)
        }
    }
}

fn not_waiting_for_acceptance(app: &AppState, order: &OrderRecord, l: Locale) -> Response {
    let msg = match l {
        Locale::ZhCn => format!("该订单无需再次验收，当前状态为“{}”。", locale::label(order.state.name(), l)),
        Locale::En => {
            format!("This order is not waiting for acceptance; it is now {}.", locale::label(order.state.name(), l))
        }
    };
    refusal(app, StatusCode::CONFLICT, l, &msg)
}

#[derive(Debug, Deserialize)]
pub struct AcceptanceForm {
    decision: Option<String>,
    #[serde(default)]
    note: String,
}

/// `POST /pages/acceptance/{token}`: acceptance (the engine invoices next) or a
/// refusal with its reason (an exception for the owner to resolve); once.
pub async fn acceptance_answer(State(app): State<AppState>, Path(token): Path<String>, req: Request) -> Response {
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
    let bad =
        |msg: &str| acceptance_form(&app, &token, &order, &events, l, Some(msg), StatusCode::UNPROCESSABLE_ENTITY);
    let Ok(Form(f)) = form_data else {
        return bad(t(l, "The form could not be read; please submit it again.", "表单无法读取，请重新提交。"));
    };
    let decision = match f.decision.as_deref() {
        Some("accept") => super::fulfilment::AcceptanceDecision::Accept,
        Some("refuse") => super::fulfilment::AcceptanceDecision::Refuse,
        _ => return bad(t(l, "Please accept the delivery or say that you do not.", "请选择确认验收或不予验收。")),
    };
    let note: String = f.note.trim().chars().take(MAX_COMMENT).collect();
    let Ok(event) = super::fulfilment::acceptance_event(&decision, &note, "the customer") else {
        return bad(t(l, "Please tell us why you do not accept the delivery.", "请说明不予验收的原因。"));
    };
    let accepted = matches!(event, OrderEvent::AcceptanceConfirmed { .. });
    let actor = Actor::Person(claims.subject.clone());
    match app
        .orders
        .apply_once(claims.order_id, actor, event, Some(&claims.link_id), None, &app.rules, app.clock.now())
        .await
    {
        Ok(_) => {
            app.wake_dispatcher();
            let text = if accepted {
                t(l, "Thank you. Your acceptance has been recorded.", "感谢您的确认，验收结果已记录。")
            } else {
                t(
                    l,
                    "Thank you. We have recorded your remarks and will contact you shortly.",
                    "感谢您的反馈，我们已记录您的意见，将尽快与您联系。",
                )
            };
            page(StatusCode::OK, l, &app.settings, t(l, "Thank you", "谢谢"), &format!("<p>{text}</p>"))
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

/// What the customer sees of an event in their order's history: milestones only,
/// never comments, rule ids, names of staff or internal reasons.
fn milestone(ev: &OrderEvent, l: Locale) -> Option<&'static str> {
    Some(match ev {
        OrderEvent::Received { .. } => t(l, "Order received", "订单已接收"),
        OrderEvent::ScreeningPassed { .. } | OrderEvent::ReviewReleased { .. } => {
            t(l, "Checks completed", "审核检查已完成")
        }
        OrderEvent::Approved { .. } => t(l, "Approval step completed", "审批环节已通过"),
        OrderEvent::ApprovalDeclined { .. }
        | OrderEvent::ReviewRejected { .. }
        | OrderEvent::ScreeningRejected { .. } => t(l, "Not approved", "未获批准"),
        OrderEvent::ExecutionStarted => t(l, "Work on your order started", "订单开始办理"),
        OrderEvent::TaskCompleted { .. } => t(l, "A step of the work was completed", "一项办理工作已完成"),
        OrderEvent::DeliveryRecorded { .. } => t(l, "Delivered", "已交付"),
        OrderEvent::AcceptanceConfirmed { .. } => t(l, "You accepted the delivery", "您已确认验收"),
        OrderEvent::ExceptionOpened { .. } => t(l, "A question is being resolved", "有问题正在处理"),
        OrderEvent::ExceptionResolved { .. } => t(l, "The question was resolved", "问题已处理"),
        OrderEvent::InvoiceIssued { .. } => t(l, "Invoice issued", "发票已开具"),
        OrderEvent::PaymentReceived { .. } => t(l, "Payment received", "已收到付款"),
        OrderEvent::Closed => t(l, "Completed", "订单已完成"),
        OrderEvent::Cancelled { .. } => t(l, "Cancelled", "订单已取消"),
        _ => return None,
    })
}

/// The next step, as the customer should understand it.
fn next_step(order: &OrderRecord, l: Locale) -> &'static str {
    use crate::engine::OrderState as S;
    match &order.state {
        S::Received | S::Screening | S::Flagged | S::ManualReview | S::AwaitingApproval { .. } => {
            t(l, "We are reviewing your order.", "我们正在审核您的订单。")
        }
        S::Approved | S::Executing => t(l, "We are preparing your order.", "我们正在为您办理。"),
        S::Delivered => t(l, "Please confirm the delivery (see our e-mail).", "请确认验收（见我们的邮件）。"),
        S::Accepted => t(l, "Your invoice is being prepared.", "我们正在为您开具发票。"),
        S::Exception { .. } => t(l, "We will contact you about an open question.", "我们将就待处理问题与您联系。"),
        S::Invoiced | S::Overdue => t(l, "Please pay the invoice by its due date.", "请在付款截止日前支付发票款项。"),
        S::Paid | S::Closed | S::Archived => t(l, "Nothing more to do. Thank you.", "无需其他操作，感谢您的信任。"),
        S::Rejected | S::Cancelled => t(l, "This order will not proceed.", "该订单不再继续办理。"),
    }
}

/// The stages a customer sees, in order.
const STEPS: [(&str, &str); 8] = [
    ("Received", "已受理"),
    ("Approved", "已审批"),
    ("In progress", "办理中"),
    ("Delivered", "已交付"),
    ("Accepted", "已验收"),
    ("Invoiced", "已开票"),
    ("Paid", "已付款"),
    ("Completed", "已完成"),
];

/// The stage the order is at (an index into `STEPS`).
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

/// The lifecycle as a stepper: stages reached (with their day), the current one, the rest.
fn stepper(order: &OrderRecord, events: &[crate::store::EventRecord], tz: chrono_tz::Tz, l: Locale) -> String {
    let at = stage(&order.state);
    let mut days = [None; 8];
    for e in events {
        if let Some(i) = step_of(&e.event) {
            days[i] = Some(e.at.with_timezone(&tz).date_naive());
        }
    }
    let items: String = STEPS
        .iter()
        .enumerate()
        .map(|(i, (en, zh))| {
            let class = match i.cmp(&at) {
                std::cmp::Ordering::Less => "done",
                std::cmp::Ordering::Equal => "done current",
                std::cmp::Ordering::Greater => "todo",
            };
            let day = days[i]
                .filter(|_| i <= at)
                .map(|d| format!("<span class=\"date\">{}</span>", esc(&locale::short_date(d, l))))
                .unwrap_or_default();
            let aria = if i == at { " aria-current=\"step\"" } else { "" };
            format!("<li class=\"{class}\"{aria}>{}{day}</li>", t(l, en, zh))
        })
        .collect();
    format!("<ol class=\"stepper\">{items}</ol>")
}

/// Page text `name` from the locale's templates; `None` without templates (the
/// built-in wording is used then) or when it cannot be rendered (logged).
fn from_template(app: &AppState, name: &str, l: Locale, ctx: serde_json::Value) -> Option<String> {
    let templates = app.templates.as_ref()?;
    templates.render_fragment(name, l, ctx).map_err(|e| tracing::warn!(error = %e, "page text not rendered")).ok()
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

/// The status page's body from the locale's page text (`pages/status.html`); `None`
/// without templates (the built-in wording is used then).
fn status_from_template(
    app: &AppState,
    order: &OrderRecord,
    events: &[crate::store::EventRecord],
    l: Locale,
) -> Option<String> {
    let templates = app.templates.as_ref()?;
    let tz = app.settings.presentation.time_zone;
    let at = stage(&order.state);
    let mut days = [None; 8];
    for e in events {
        if let Some(i) = step_of(&e.event) {
            days[i] = Some(e.at.with_timezone(&tz).date_naive());
        }
    }
    let steps: Vec<serde_json::Value> = (0..STEPS.len())
        .map(|i| {
            let day = days[i].filter(|_| i <= at).map(|d| d.to_string());
            serde_json::json!({"done": i <= at, "current": i == at, "day": day})
        })
        .collect();
    let money = |m: &crate::domain::Money| serde_json::json!({"amount": m.amount().to_string(), "currency": m.currency().as_str()});
    let invoice = order.fulfilment.as_ref().and_then(|f| f.invoice.as_ref()).map(|inv| {
        let owed = order.fulfilment.as_ref().and_then(|f| f.outstanding()).unwrap_or_else(|| inv.total.clone());
        serde_json::json!({"number": inv.number, "outstanding": money(&owed), "due": inv.due.to_string()})
    });
    let o = &order.order;
    let ctx = serde_json::json!({
        "state": order.state.name(),
        "steps": steps,
        "order": {"customer": o.customer.name.as_str(), "product": o.product.kind.as_str(),
            "code": o.product.code.as_str(), "amount": money(&o.amount)},
        "invoice": invoice,
        "history": events.iter().map(|e| serde_json::json!({"at": e.at.to_rfc3339(), "event": e.event.name()}))
            .collect::<Vec<_>>(),
    });
    templates.render_fragment("status", l, ctx).map_err(|e| tracing::warn!(error = %e, "page text not rendered")).ok()
}

/// `GET /pages/status/{token}`: the order's stage, its milestones and the next step,
/// in the customer's language. The link may be opened again and again (until it
/// expires); it changes nothing.
pub async fn status_page(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    let (_, order, l) = match open(&app, &token, LinkPurpose::Status).await {
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
    let tz = app.settings.presentation.time_zone;
    if let Some(body) = status_from_template(&app, &order, &events, l) {
        return page(StatusCode::OK, l, &app.settings, t(l, "Your order", "订单进度"), &body);
    }
    let history: String = events
        .iter()
        .filter_map(|e| milestone(&e.event, l).map(|m| (e.at, m)))
        .map(|(at, m)| format!("<li><span class=\"when\">{}</span> {}</li>", esc(&locale::datetime(at, tz, l)), esc(m)))
        .collect();
    let mut invoice = String::new();
    if let Some(inv) = order.fulfilment.as_ref().and_then(|f| f.invoice.as_ref()) {
        let owed = order.fulfilment.as_ref().and_then(|f| f.outstanding()).unwrap_or_else(|| inv.total.clone());
        invoice = format!(
            "<table class=\"facts\"><tr><th>{}</th><td>{}</td></tr><tr><th>{}</th><td>{}</td></tr><tr><th>{}</th><td>{}</td></tr></table>",
            t(l, "Invoice", "发票号码"),
            esc(&inv.number),
            t(l, "Outstanding", "待付金额"),
            esc(&locale::money(&owed, l)),
            t(l, "Due", "付款截止日"),
            esc(&locale::date(inv.due, l)),
        );
    }
    let body = format!(
        "{stepper}<p class=\"status\">{stage_label}{colon}{stage}</p><p>{next_label}{colon}{next}</p>{invoice}{summary}<h2>{hist}</h2><ul class=\"history\">{history}</ul>",
        stepper = stepper(&order, &events, tz, l),
        colon = t(l, ": ", "："),
        summary = summary(&order, l),
        stage_label = t(l, "Status", "当前状态"),
        stage = esc(locale::label(order.state.name(), l)),
        next_label = t(l, "Next step", "下一步"),
        next = esc(next_step(&order, l)),
        hist = t(l, "History", "办理记录"),
    );
    page(StatusCode::OK, l, &app.settings, t(l, "Your order", "订单进度"), &body)
}
