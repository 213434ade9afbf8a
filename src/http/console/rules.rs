//! The console's rules review page (`GET /console/rules`), for people the policy table
//! grants `propose_rules` or `approve_rules`: the rules live now, scheduled
//! activations, the shadow run and the change log; a form proposing a candidate
//! (`propose_rules`; its impact summary, or its problems with the text kept); for
//! each candidate the approve, activate and shadow buttons (`approve_rules`; the
//! proposer's own approval is refused as the API refuses it); and the shadow report,
//! read only. Every action calls what `/api/rules/*` calls (`http::rules`), recorded
//! with the signed-in person and channel `console`. Text from
//! `pages/console_rules.html`.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::super::AppState;
use super::super::error::ApiError;
use super::super::rules::{activated, person_actor, proposed, shadowed};
use super::frame::{Staff, staff_any, text};
use crate::engine::access::Action;
use crate::review::log::{self, Change, What};
use crate::review::{self, ReviewError};
use crate::versions::{kept, short};

/// Either grant opens the page.
const GRANTS: &[Action] = &[Action::ProposeRules, Action::ApproveRules];

/// What the page shows after a form: a notice, or the propose form's outcome.
#[derive(Default)]
struct After {
    notice: Option<Value>,
    /// The proposal's answer (version, summary …), or its problems with the text.
    proposed: Option<Value>,
    problems: Vec<String>,
    text: String,
    note: String,
}

/// A change as the page lists it: short version, the person's name.
fn change_row(app: &AppState, c: &Change) -> Value {
    let name = app.rules.notify.directory.person(&c.by).map(|p| p.name.clone());
    json!({"seq": c.seq, "at": c.at, "what": c.what.name(), "version": short(&c.version), "by": c.by,
        "name": name, "channel": c.channel, "note": c.note, "effective_at": c.effective_at})
}

/// Every proposed version, newest first, with what may be done with it.
fn candidates(app: &AppState, log: &[Change], live: &str, shadow: Option<&str>) -> Vec<Value> {
    log.iter()
        .rev()
        .filter(|c| c.what == What::Proposed)
        .map(|p| {
            let approval = review::approval(log, &p.version).map(|a| change_row(app, a));
            let label = kept::part(app.store_path(), "rules", &p.version).ok().flatten().and_then(|k| k.label);
            json!({"version": p.version, "short": short(&p.version), "label": label, "proposed": change_row(app, p),
                "approved": approval, "live": p.version == live, "shadow": Some(p.version.as_str()) == shadow})
        })
        .collect()
}

async fn rules_page(app: &AppState, staff: &Staff, status: StatusCode, after: After) -> Response {
    let data = app.settings.store_path.clone();
    let read = tokio::task::spawn_blocking(move || {
        let log = log::read(&data)?;
        let report = review::shadow::report(&data, None)?;
        Ok::<_, ReviewError>((log, report))
    })
    .await;
    let (log, report) = match read {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return ApiError::from(e).into_response(),
        Err(e) => return ApiError::unexpected(e).into_response(),
    };
    let now = app.clock.now();
    let live = app.rules.version();
    let shadow = review::shadow::current(&log).filter(|c| c.what == What::ShadowStarted);
    let summary = report.lines().last().cloned();
    let ctx = json!({
        "csrf": staff.session.csrf, "me": staff.session.person,
        "may_propose": staff.may(app, Action::ProposeRules), "may_approve": staff.may(app, Action::ApproveRules),
        "live": {"version": live, "short": short(&live), "label": app.rules.version},
        "scheduled": review::scheduled(&log, now).into_iter().map(|c| change_row(app, c)).collect::<Vec<_>>(),
        "shadow": shadow.map(|c| change_row(app, c)),
        "candidates": candidates(app, &log, &live, shadow.map(|c| c.version.as_str())),
        "changes": log.iter().rev().map(|c| change_row(app, c)).collect::<Vec<_>>(),
        "report": report, "report_summary": summary,
        "notice": after.notice, "proposed": after.proposed, "problems": after.problems,
        "text": after.text, "note": after.note,
    });
    let l = staff.locale;
    let title = text(app, "console_rules", l, "title", json!({}));
    let body = text(app, "console_rules", l, "rules", ctx);
    staff.page(app, status, "rules", &title, &body)
}

/// `GET /console/rules`
pub(crate) async fn page(State(app): State<AppState>, headers: HeaderMap) -> Response {
    match staff_any(&app, &headers, GRANTS, "rules") {
        Ok(s) => rules_page(&app, &s, StatusCode::OK, After::default()).await,
        Err(r) => r,
    }
}

/// The signed-in person granted `action`, with the form's CSRF token checked.
#[allow(clippy::result_large_err)] // a refusal is a whole page, as in `frame`
fn acting(app: &AppState, headers: &HeaderMap, action: Action, csrf: &str) -> Result<Staff, Response> {
    let staff = super::frame::staff(app, headers, action, "rules")?;
    staff.check_csrf(app, "rules", csrf)?;
    Ok(staff)
}

#[derive(Deserialize)]
pub(crate) struct ProposeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    rules: String,
    #[serde(default)]
    note: String,
}

/// `POST /console/rules/candidates`: proposes the text as a candidate; the page with
/// its impact summary, or with its problems and the text kept (422).
pub(crate) async fn propose(State(app): State<AppState>, headers: HeaderMap, Form(f): Form<ProposeForm>) -> Response {
    let staff = match acting(&app, &headers, Action::ProposeRules, &f.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let note = Some(f.note.trim().to_owned()).filter(|n| !n.is_empty());
    let by = person_actor(&staff.session.person);
    match proposed(&app, &by, f.rules.clone(), note, None).await {
        Ok(answer) => {
            let after = After { proposed: Some(answer), ..After::default() };
            rules_page(&app, &staff, StatusCode::OK, after).await
        }
        Err(e) if e.status == StatusCode::UNPROCESSABLE_ENTITY => {
            let problems = e.message.lines().map(str::to_owned).collect();
            let after = After { problems, text: f.rules, note: f.note, ..After::default() };
            rules_page(&app, &staff, StatusCode::UNPROCESSABLE_ENTITY, after).await
        }
        Err(e) => staff.refused(&app, e.status, "rules", &e.message),
    }
}

#[derive(Deserialize)]
pub(crate) struct VersionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    note: String,
    /// The shadow form: `start` or `stop`.
    #[serde(default)]
    shadow: String,
}

/// After an action on a version: the page with a notice, or the refusal.
async fn done(app: &AppState, staff: &Staff, outcome: Result<Change, ApiError>) -> Response {
    match outcome {
        Ok(c) => {
            let notice = json!({"what": c.what.name(), "version": short(&c.version)});
            let after = After { notice: Some(notice), ..After::default() };
            rules_page(app, staff, StatusCode::OK, after).await
        }
        Err(e) => staff.refused(app, e.status, "rules", &e.message),
    }
}

/// `POST /console/rules/{version}/approve`: a second person's approval.
pub(crate) async fn approve(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(version): Path<String>,
    Form(f): Form<VersionForm>,
) -> Response {
    let staff = match acting(&app, &headers, Action::ApproveRules, &f.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let note = Some(f.note.trim().to_owned()).filter(|n| !n.is_empty());
    let by = person_actor(&staff.session.person);
    let outcome = review::approve(app.store_path(), &version, &by, note, app.clock.now()).map_err(ApiError::from);
    done(&app, &staff, outcome).await
}

/// `POST /console/rules/{version}/activate`: live now.
pub(crate) async fn activate(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(version): Path<String>,
    Form(f): Form<VersionForm>,
) -> Response {
    let staff = match acting(&app, &headers, Action::ApproveRules, &f.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let outcome = activated(&app, &person_actor(&staff.session.person), &version, None);
    done(&app, &staff, outcome).await
}

/// `POST /console/rules/{version}/shadow` (`shadow=start` or `stop`): runs the
/// version in shadow, or stops the shadow run.
pub(crate) async fn shadow(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(version): Path<String>,
    Form(f): Form<VersionForm>,
) -> Response {
    let staff = match acting(&app, &headers, Action::ApproveRules, &f.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let by = person_actor(&staff.session.person);
    let outcome = shadowed(&app, &by, (f.shadow != "stop").then_some(version.as_str())).map(|(c, _)| c);
    done(&app, &staff, outcome).await
}
