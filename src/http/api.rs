//! The admin API under `/api`, behind `Authorization: Bearer <token>`: the bootstrap
//! admin token or an API token (`principal`), each action allowed by the policy table.
//! The actor of every change is the request's principal (`Acting`).

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::principal::Acting;
use crate::domain::OrderId;
use crate::domain::privacy::mask_order_json;
use crate::engine::OrderEvent;
use crate::engine::access::{Action, Principal, authorize};
use crate::engine::answers::{ApprovalDecision, approval_event};
use crate::store::EffectId;
use crate::view::{found_json, order_json};

/// `Query` whose rejection is our JSON error, naming the bad parameter.
pub(crate) struct ApiQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| ApiQuery(t))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

pub(crate) fn parse_id(id: &str) -> Result<OrderId, ApiError> {
    id.parse().map_err(|e: crate::domain::IdError| ApiError::bad_request(e.to_string()).with_field("id"))
}

/// Whether `who` sees personal data in clear: the policy table grants them
/// `see_personal_data` (the bootstrap admin token always does).
pub(crate) fn sees_personal_data(app: &AppState, who: &Principal) -> bool {
    let directory = &app.rules.notify.directory;
    authorize(who, Action::SeePersonalData, directory.policy(), directory).is_ok()
}

/// An order document (`order_json`, `found_json`) as `who` may see it: masked by
/// `domain::privacy` unless they see personal data.
/// Personal data is opened first (`crate::vault`; events stay as stored): masked from
/// clear text, and an erased order's values read `erased`.
pub(crate) async fn as_seen_by(app: &AppState, who: &Principal, mut doc: Value) -> Result<Value, ApiError> {
    app.orders.vault().reveal_order_doc(&mut doc).await?;
    if !sees_personal_data(app, who) {
        mask_order_json(&mut doc);
    }
    Ok(doc)
}

/// `GET /api/orders/{id}`: the order with its events, masked unless the principal
/// sees personal data.
pub(crate) async fn get_order(
    State(app): State<AppState>,
    acting: Acting,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let found = app.archive.find(id).await?.ok_or_else(|| ApiError::not_found(format!("order {id} not found")))?;
    Ok(Json(as_seen_by(&app, &acting.0, found_json(&found)).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    state: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
    /// With `external_id`: the order a source system knows by that id (0 or 1 result).
    connector: Option<String>,
    external_id: Option<String>,
}

/// `GET /api/orders`: a page of orders, masked unless the principal sees personal data.
pub(crate) async fn list_orders(
    State(app): State<AppState>,
    acting: Acting,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    match (&q.connector, &q.external_id) {
        (Some(c), Some(x)) => {
            let bad = |field: &'static str| {
                move |e: crate::domain::IdError| ApiError::bad_request(e.to_string()).with_field(field)
            };
            let source = crate::domain::ExternalRef {
                connector: c.parse().map_err(bad("connector"))?,
                id: x.parse().map_err(bad("external_id"))?,
            };
            let found = match app.store.find_external(&source).await? {
                Some(id) => app.archive.find(id).await?,
                None => None,
            };
            let mut listed = None;
            if let Some(f) = found {
                let mut v = found_json(&f);
                v.as_object_mut().map(|o| o.remove("events"));
                listed = Some(as_seen_by(&app, &acting.0, v).await?);
            }
            return Ok(Json(json!({"orders": listed.into_iter().collect::<Vec<_>>(), "next_after": null})));
        }
        (None, None) => {}
        _ => return Err(ApiError::bad_request("`connector` and `external_id` go together").with_field("external_id")),
    }
    if let Some(s) = &q.state
        && !crate::engine::lifecycle::STATE_NAMES.contains(&s.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "unknown state `{s}` (one of: {})",
            crate::engine::lifecycle::STATE_NAMES.join(", ")
        ))
        .with_field("state"));
    }
    let after = q.after.as_deref().map(parse_id).transpose()?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let page = app.store.list(q.state.as_deref(), after, limit).await?;
    let next = if page.len() == limit { page.last().map(|r| r.id.to_string()) } else { None };
    let mut orders: Vec<Value> = Vec::with_capacity(page.len());
    for r in &page {
        orders.push(as_seen_by(&app, &acting.0, order_json(r)).await?);
    }
    Ok(Json(json!({"orders": orders, "next_after": next})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitQuery {
    limit: Option<usize>,
}

pub(crate) async fn list_outbox(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> Result<Json<Value>, ApiError> {
    let rows = app.store.pending_effects(q.limit.unwrap_or(100).clamp(1, 10_000)).await?;
    Ok(Json(json!({ "effects": rows })))
}

pub(crate) async fn list_dead(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> Result<Json<Value>, ApiError> {
    let rows = app.store.dead_letters(q.limit.unwrap_or(100).clamp(1, 10_000)).await?;
    Ok(Json(json!({ "effects": rows })))
}

pub(crate) async fn replay_dead(
    State(app): State<AppState>,
    acting: Acting,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: EffectId = id.parse().map_err(|e: String| ApiError::bad_request(e).with_field("id"))?;
    let effect = app.orders.replay(&id, acting.0.acting(), app.clock.now()).await?;
    app.wake_dispatcher();
    Ok(Json(json!({ "replayed": effect })))
}

/// `GET /api/store/quarantine`: rows set aside because they could not be decoded.
pub(crate) async fn quarantined(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let rows = app.store.quarantined().await?;
    Ok(Json(json!({"rows": rows})))
}

/// The body of `POST /api/store/quarantine/resolve`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResolveBody {
    /// The row as listed (`order ord_…`).
    row: String,
    by: String,
    reason: String,
    #[serde(default)]
    discard: bool,
    /// A copy of a backup of the data directory, on the daemon's host.
    #[serde(default)]
    from: Option<std::path::PathBuf>,
}

/// `POST /api/store/quarantine/resolve`: a quarantined row put back from a copy of a
/// backup (`from`) or given up (`discard`), by a person (`by`: the principal itself
/// when it is a person) for a reason.
pub(crate) async fn resolve_quarantined(
    State(app): State<AppState>,
    acting: Acting,
    ApiJson(body): ApiJson<ResolveBody>,
) -> Result<Json<Value>, ApiError> {
    // A person resolves as themselves; the admin token (the CLI) names the person.
    if acting.person().is_ok() {
        acting.named_in_body("by", Some(&body.by))?;
    }
    let how = match (&body.from, body.discard) {
        (Some(path), false) => crate::orders::Resolve::Restore {
            from: crate::store::open_backup(path)
                .await
                .map_err(|e| ApiError::bad_request(format!("the backup copy: {e}")).with_field("from"))?,
        },
        (None, true) => crate::orders::Resolve::Discard,
        _ => return Err(ApiError::bad_request("give either `from` (a backup copy) or `discard`").with_field("from")),
    };
    let what = crate::orders::quarantined_row(&body.row);
    let result = app.orders.resolve_quarantined(&what, how.clone(), &body.by, &body.reason, app.clock.now()).await;
    if let crate::orders::Resolve::Restore { from } = how {
        from.close().await?;
    }
    Ok(Json(json!({ "resolved": result? })))
}

pub(crate) async fn verify_audit(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let r = app.orders.verify_audit().await?;
    let archive = app.archive.verify().await?;
    let anchors = crate::anchor::verify::check(&app.archive).await?;
    let mut v = r.to_json();
    v["intact"] = json!(r.intact() && archive.problems.is_empty() && anchors.problems.is_empty());
    v["archive"] = json!(archive);
    v["anchors"] = json!(anchors);
    Ok(Json(v))
}

/// `POST /api/audit/anchor`: writes an audit anchor now (`crate::anchor`); 409 when
/// the latest one no longer holds.
pub(crate) async fn write_anchor(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    // Several daemons on one database: the anchor is written where the lease is.
    if !app.store.try_lease(crate::anchor::LEASE, std::time::Duration::from_secs(60)).await? {
        let held = "another daemon is writing audit anchors (it holds the `audit-anchor` lease); try again later";
        return Err(ApiError::new(StatusCode::CONFLICT, "conflict", held));
    }
    let a = crate::anchor::write(&app.archive, app.settings.audit_anchor_push.as_ref(), app.clock.now()).await?;
    Ok(Json(json!(a)))
}

/// A JSON body whose rejection is our JSON error (422 naming the field when it can).
pub(crate) struct ApiJson<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("cannot read the body: {e}")))?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(de).map(ApiJson).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            let err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", inner.to_string());
            if field == "." { err } else { err.with_field(field) }
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApprovalBody {
    /// The approver's directory id: the principal's own, or left out (a request never
    /// decides for somebody else).
    #[serde(default)]
    approver: Option<String>,
    decision: ApprovalDecision,
    #[serde(default)]
    comment: String,
    /// The level decided on; default: the level waiting now.
    #[serde(default)]
    level: u8,
}

/// `POST /api/orders/{id}/approvals`: the principal's decision on the level waiting,
/// checked like a decision from an approval page (only a person decides).
pub(crate) async fn decide_approval(
    State(app): State<AppState>,
    acting: Acting,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ApprovalBody>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    acting.named_in_body("approver", b.approver.as_deref())?;
    acting.person()?;
    let event = approval_event(b.decision, b.level, b.comment.trim().to_owned())?;
    let rec = app.orders.apply(id, acting.0.acting(), event, &app.rules, app.clock.now()).await?;
    app.wake_dispatcher();
    Ok(Json(as_seen_by(&app, &acting.0, order_json(&rec)).await?))
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReviewDecision {
    Start,
    Return,
    Release,
    Reject,
}

impl ReviewDecision {
    /// The event this decision on a flagged order records (the API's review route
    /// and the console's review page).
    pub(crate) fn event(self, comment: String) -> OrderEvent {
        match self {
            ReviewDecision::Start => OrderEvent::ReviewStarted { comment },
            ReviewDecision::Return => OrderEvent::ReviewReturned { comment },
            ReviewDecision::Release => OrderEvent::ReviewReleased { comment, chain: Vec::new() },
            ReviewDecision::Reject => OrderEvent::ReviewRejected { comment },
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReviewBody {
    /// Who reviews: the principal's own id, or left out.
    #[serde(default)]
    operator: Option<String>,
    decision: ReviewDecision,
    comment: String,
}

/// `POST /api/orders/{id}/review`: manual review of a flagged order. `release` sends
/// it to the approval chain the matrix gives now; `reject` rejects it.
pub(crate) async fn review(
    State(app): State<AppState>,
    acting: Acting,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ReviewBody>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let comment = b.comment.trim().to_owned();
    if comment.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "a review decision needs a comment",
        )
        .with_field("comment"));
    }
    acting.named_in_body("operator", b.operator.as_deref())?;
    let event = b.decision.event(comment);
    let rec = app.orders.apply(id, acting.0.acting(), event, &app.rules, app.clock.now()).await?;
    app.wake_dispatcher();
    Ok(Json(as_seen_by(&app, &acting.0, order_json(&rec)).await?))
}

/// `GET /api/connectors`: every connector, what it does, and whether it is paused.
pub(crate) async fn list_connectors(State(app): State<AppState>) -> Json<Value> {
    Json(json!({ "connectors": connectors_status(&app) }))
}

/// Every connector, what it does, and whether it is paused or rate limited now: what
/// the API's `GET /api/connectors` and the console's connectors page show.
pub(crate) fn connectors_status(app: &AppState) -> Vec<Value> {
    let paused = app.paused.connectors.lock().expect("lock").clone();
    let now = app.clock.now();
    let rate_limited = app.paused.rate_limited.lock().expect("lock").clone();
    app.registry
        .connectors
        .values()
        .map(|c| {
            let p = paused.get(c.id.as_str());
            json!({
                "id": c.id.as_str(),
                "kind": c.kind,
                "webhook": c.webhook.is_some(),
                "events": c.webhook.as_ref().map(|w| w.events.iter().map(|e| e.name()).collect::<Vec<_>>()).unwrap_or_default(),
                "poll": c.poll.is_some(),
                "operations": c.operations,
                "paused": p.is_some(),
                "paused_because": p.map(|(why, _)| why.clone()),
                "paused_at": p.map(|(_, at)| *at),
                "rate_limited_until": rate_limited.get(c.id.as_str()).filter(|until| **until > now),
            })
        })
        .collect()
}

/// `POST /api/connectors/{id}/resume`: after fixing a paused connector's credentials.
pub(crate) async fn resume_connector(
    State(app): State<AppState>,
    acting: Acting,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let resumed = resume(&app, &id, &acting.0)?;
    Ok(Json(json!({ "connector": id, "resumed": resumed })))
}

/// Resumes connector `id` if it is paused (its effects go out again), logged with who
/// did it and through which door; whether it was paused.
///
/// # Errors
/// 404 for a connector that does not exist.
pub(crate) fn resume(app: &AppState, id: &str, by: &crate::engine::access::Principal) -> Result<bool, ApiError> {
    if app.registry.get(id).is_none() {
        return Err(ApiError::not_found(format!("connector {id} not found")));
    }
    let resumed = app.paused.resume(id);
    if resumed {
        let (who, channel) = (by.actor(), by.channel());
        tracing::warn!(connector = %id, by = %who, ?channel, "connector resumed by an operator");
        app.metrics.set("orderbridge_connector_paused", &[("connector", id), ("reason", "auth")], 0.0);
        app.wake_dispatcher();
    }
    Ok(resumed)
}
