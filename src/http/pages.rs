//! Pages for people who follow a signed link from an e-mail (no account, no session).
//!
//! Each page verifies its link (signature, purpose, expiry) before it shows anything,
//! and an action records the link's id in the same transaction as the event it causes,
//! so a link acts once. Every refusal is a page that says what happened and changes
//! nothing. Text is in the recipient's language; all order data is HTML-escaped.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use crate::domain::order::Locale;
use crate::engine::{Actor, OrderEvent};
use crate::links::{LinkClaims, LinkError, LinkPurpose};
use crate::locale;
use crate::store::{OrderRecord, StoreError};

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

fn page(status: StatusCode, locale: Locale, site: &str, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\"><title>{title} · {site}</title>\
         <style>body{{font-family:system-ui,\"PingFang SC\",\"Microsoft YaHei\",sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#222}}\
         h1{{font-size:1.4rem}}table{{border-collapse:collapse}}td{{padding:.2rem .8rem .2rem 0}}\
         .scores label{{margin-right:1rem}}textarea{{width:100%;min-height:6rem}}button{{padding:.5rem 1.5rem}}\
         .note{{color:#666;font-size:.9rem}}</style></head>\
         <body><header class=\"note\">{site}</header><h1>{title}</h1>{body}</body></html>\n",
        lang = locale.as_str(),
        title = esc(title),
        site = esc(site),
    );
    let mut resp = (status, Html(html)).into_response();
    let h = resp.headers_mut();
    h.insert("cache-control", "no-store".parse().expect("valid"));
    h.insert("x-frame-options", "DENY".parse().expect("valid"));
    h.insert(
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'".parse().expect("valid"),
    );
    resp
}

/// A refusal page: what happened, in the reader's language.
fn refusal(app: &AppState, status: StatusCode, locale: Locale, message: &str) -> Response {
    let title = t(locale, "This link cannot be used", "此链接无法使用");
    page(status, locale, &app.settings.site_name, title, &format!("<p>{}</p>", esc(message)))
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
        "<table><tr><td>{}</td><td>{}</td></tr><tr><td>{}</td><td>{} {}</td></tr><tr><td>{}</td><td>{}</td></tr></table>",
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
        &app.settings.site_name,
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
    let scores: String = (1..=5)
        .map(|n| format!("<label><input type=\"radio\" name=\"score\" value=\"{n}\" required> {n}</label>"))
        .collect();
    let error = error.map(|e| format!("<p role=\"alert\"><strong>{}</strong></p>", esc(e))).unwrap_or_default();
    let body = format!(
        "<p>{intro}</p>{summary}{error}<form method=\"post\" action=\"/pages/survey/{token}\">\
         <p>{q}</p><p class=\"scores\">{scores}</p><p class=\"note\">{scale}</p>\
         <p><label for=\"comment\">{c}</label><br><textarea id=\"comment\" name=\"comment\" maxlength=\"{MAX_COMMENT}\"></textarea></p>\
         <p><label><input type=\"checkbox\" name=\"complaint\" value=\"yes\"> {complaint}</label></p>\
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
    page(status, l, &app.settings.site_name, t(l, "Satisfaction survey", "满意度调查"), &body)
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
            refusal(&app, StatusCode::SERVICE_UNAVAILABLE, l, t(l, "Please try again in a moment.", "请稍后再试。"))
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
pub async fn survey_answer(
    State(app): State<AppState>,
    Path(token): Path<String>,
    form_data: Result<Form<SurveyForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let (claims, order, l) = match open(&app, &token, LinkPurpose::Survey).await {
        Ok(x) => x,
        Err(r) => return r,
    };
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
    match app.store.apply_once(claims.order_id, actor, event, &claims.link_id, &app.rules, app.clock.now()).await {
        Ok(_) => {
            app.wake_dispatcher();
            let text = t(l, "Thank you for your feedback. It has been recorded.", "感谢您的反馈，我们已记录您的评价。");
            page(
                StatusCode::OK,
                l,
                &app.settings.site_name,
                t(l, "Thank you", "感谢您的反馈"),
                &format!("<p>{text}</p>"),
            )
        }
        Err(StoreError::Conflict(_)) => already_answered(&app, l),
        Err(StoreError::Illegal(_)) => refusal(
            &app,
            StatusCode::CONFLICT,
            l,
            t(l, "This order is not open for a survey.", "该订单当前不接受满意度调查。"),
        ),
        Err(e) => {
            tracing::error!(error = %e, "survey answer not recorded");
            refusal(&app, StatusCode::SERVICE_UNAVAILABLE, l, t(l, "Please try again in a moment.", "请稍后再试。"))
        }
    }
}
