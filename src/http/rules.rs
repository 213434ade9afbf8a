//! `/api/rules/…` on the admin listener: a reviewed rule change through the API
//! (`crate::review`), with the token's principal as the actor. Propose sends the
//! candidate's text and gets its impact report and id; approve, activate and roll
//! back name a version; `changes` is the verified change log. An activation taking
//! effect now is live when the answer comes (`LiveRules::sync`); so is a shadow run
//! started or stopped (`Shadow::sync`), whose differences `shadow-report` reads.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::api::{ApiJson, ApiQuery};
use super::error::ApiError;
use super::principal::Acting;
use crate::engine::access::Channel;
use crate::review::log::Change;
use crate::review::{self, Actor, ReviewError};
use crate::versions::short;

impl From<ReviewError> for ApiError {
    fn from(e: ReviewError) -> Self {
        let (status, code) = match &e {
            ReviewError::NotProposed(_) => (StatusCode::NOT_FOUND, "not_found"),
            ReviewError::Ambiguous(..) => (StatusCode::BAD_REQUEST, "ambiguous_version"),
            ReviewError::OwnProposal { .. } => (StatusCode::FORBIDDEN, "own_proposal"),
            ReviewError::Denied(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ReviewError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_rules"),
            ReviewError::NotApproved(_) => (StatusCode::CONFLICT, "not_approved"),
            ReviewError::AlreadyApproved { .. } | ReviewError::AlreadyActive(_) => (StatusCode::CONFLICT, "conflict"),
            ReviewError::NothingToRollBack => (StatusCode::CONFLICT, "nothing_to_roll_back"),
            ReviewError::AlreadyShadowed(_) => (StatusCode::CONFLICT, "conflict"),
            ReviewError::NoShadow => (StatusCode::CONFLICT, "no_shadow"),
            ReviewError::Log(_) => return ApiError::unexpected(e),
        };
        ApiError::new(status, code, e.to_string())
    }
}

fn actor(acting: &Acting) -> Actor {
    Actor { id: acting.id(), person: acting.0.person().map(str::to_owned), channel: acting.0.channel() }
}

/// A directory person acting through the console, as the change log records them.
pub(crate) fn person_actor(person: &str) -> Actor {
    Actor { id: person.to_owned(), person: Some(person.to_owned()), channel: Channel::Console }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProposeBody {
    /// The candidate `rules.toml`, as text.
    rules: String,
    note: Option<String>,
    /// Replay only the N most recent orders.
    last: Option<usize>,
}

/// `POST /api/rules/candidates`: check, keep and propose; the impact report.
pub(crate) async fn propose(
    State(app): State<AppState>,
    acting: Acting,
    ApiJson(b): ApiJson<ProposeBody>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(proposed(&app, &actor(&acting), b.rules, b.note, b.last).await?))
}

/// Checks, keeps and proposes the candidate `text` by `by`: its version, label,
/// proposal, impact report and the report's summary line (the API's and the
/// console's answer).
///
/// # Errors
/// The candidate's problems (`ReviewError::Invalid`, each `candidate rules.toml:line:col: …`);
/// the history or the log could not be read.
pub(crate) async fn proposed(
    app: &AppState,
    by: &Actor,
    text: String,
    note: Option<String>,
    last: Option<usize>,
) -> Result<Value, ApiError> {
    let (config_dir, data) = (app.settings.config_dir.clone(), app.settings.store_path.clone());
    let candidate = tokio::task::spawn_blocking(move || {
        review::candidate::check_and_keep(&config_dir, &data, std::path::Path::new("candidate rules.toml"), &text)
    })
    .await
    .map_err(ApiError::unexpected)??;
    let report = crate::rules_diff::over_store(&app.orders, &app.archive, &candidate.rules, last)
        .await
        .map_err(ApiError::unexpected)?;
    let change = review::propose(app.store_path(), &candidate.part.hash, by, note, app.clock.now())?;
    Ok(json!({
        "version": change.version,
        "label": candidate.part.label,
        "proposed": change,
        "impact": report,
        "summary": report.lines().last(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoteBody {
    note: Option<String>,
}

/// `POST /api/rules/candidates/{version}/approve` (`{}` or `{"note": …}`): a second
/// person's approval.
pub(crate) async fn approve(
    State(app): State<AppState>,
    acting: Acting,
    Path(version): Path<String>,
    ApiJson(b): ApiJson<NoteBody>,
) -> Result<Json<Value>, ApiError> {
    let change = review::approve(app.store_path(), &version, &actor(&acting), b.note, app.clock.now())?;
    Ok(Json(json!({ "approved": change })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActivateBody {
    version: String,
    /// When it takes effect (RFC 3339); default now.
    at: Option<DateTime<Utc>>,
}

/// `POST /api/rules/activate`: an approved version live now (or at `at`).
pub(crate) async fn activate(
    State(app): State<AppState>,
    acting: Acting,
    ApiJson(b): ApiJson<ActivateBody>,
) -> Result<Json<Value>, ApiError> {
    let change = activated(&app, &actor(&acting), &b.version, b.at)?;
    Ok(Json(live(&app, json!({ "activated": change }))))
}

/// Activates the approved `version` (now, or at `at`) and follows it here at once.
///
/// # Errors
/// As `review::activate`; the log could not be read again.
pub(crate) fn activated(
    app: &AppState,
    by: &Actor,
    version: &str,
    at: Option<DateTime<Utc>>,
) -> Result<Change, ApiError> {
    let now = app.clock.now();
    let change = review::activate(app.store_path(), version, at, by, &app.rules.version(), now)?;
    app.rules.sync(app.store_path(), now)?;
    Ok(change)
}

/// `POST /api/rules/rollback`: back to the version live before.
pub(crate) async fn rollback(State(app): State<AppState>, acting: Acting) -> Result<Json<Value>, ApiError> {
    let now = app.clock.now();
    let change = review::rollback(app.store_path(), &actor(&acting), now)?;
    app.rules.sync(app.store_path(), now)?;
    Ok(Json(live(&app, json!({ "rolled_back": change }))))
}

/// `GET /api/rules/changes`: the change log, verified, and what is live.
pub(crate) async fn changes(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let log = review::log::read(app.store_path()).map_err(ReviewError::from)?;
    let scheduled: Vec<_> = review::scheduled(&log, app.clock.now()).into_iter().cloned().collect();
    Ok(Json(live(&app, json!({ "changes": log, "scheduled": scheduled }))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ShadowBody {
    /// The approved version to run in shadow (its hash or a unique prefix).
    version: Option<String>,
    /// Stop the shadow run instead.
    #[serde(default)]
    stop: bool,
}

/// `POST /api/rules/shadow` (`{"version": V}` or `{"stop": true}`): an approved
/// version runs beside the live rules on every new order, without effects; or stops.
pub(crate) async fn shadow(
    State(app): State<AppState>,
    acting: Acting,
    ApiJson(b): ApiJson<ShadowBody>,
) -> Result<Json<Value>, ApiError> {
    let version = match (b.version, b.stop) {
        (Some(v), false) => Some(v),
        (None, true) => None,
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "give either {\"version\": V} to start a shadow run or {\"stop\": true} to stop it",
            ));
        }
    };
    let (change, running) = shadowed(&app, &actor(&acting), version.as_deref())?;
    let mut body = json!({ "shadow_version": running });
    body[change.what.name()] = json!(change);
    Ok(Json(live(&app, body)))
}

/// Starts the shadow run of the approved `version` (`None`: stops the one running)
/// and follows it here at once: the change, and the version this daemon now runs in
/// shadow.
///
/// # Errors
/// As `review::shadow::start` and `stop`.
pub(crate) fn shadowed(
    app: &AppState,
    by: &Actor,
    version: Option<&str>,
) -> Result<(Change, Option<String>), ApiError> {
    let now = app.clock.now();
    let change = match version {
        Some(v) => review::shadow::start(app.store_path(), v, by, &app.rules.version(), now)?,
        None => review::shadow::stop(app.store_path(), by, now)?,
    };
    let running = match app.orders.shadow() {
        Some(s) => {
            s.sync()?;
            s.version()
        }
        None => None,
    };
    Ok((change, running))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReportQuery {
    /// The shadow version (default: the one running, else the last one).
    version: Option<String>,
}

/// `GET /api/rules/shadow-report[?version=V]`: the orders the shadow rules decided
/// differently, each with the kinds of decision that differed.
pub(crate) async fn shadow_report(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Json<Value>, ApiError> {
    let data = app.settings.store_path.clone();
    let report = tokio::task::spawn_blocking(move || review::shadow::report(&data, q.version.as_deref()))
        .await
        .map_err(ApiError::unexpected)??;
    let summary = report.lines().last().cloned();
    let mut body = serde_json::to_value(&report).map_err(ApiError::unexpected)?;
    body["summary"] = json!(summary);
    // What this daemon runs in shadow now (it follows the change log within a sweep).
    body["daemon_shadow_version"] = json!(app.orders.shadow().and_then(review::Shadow::version));
    Ok(Json(live(&app, body)))
}

/// `body` with what is live now: the rules version and the configuration's.
fn live(app: &AppState, mut body: Value) -> Value {
    let version = app.rules.version();
    body["live"] = json!({
        "rules_version": version,
        "rules_version_short": short(&version),
        "label": app.rules.version,
        "config_version": app.rules.config_version,
    });
    body
}
