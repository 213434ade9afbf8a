//! The archive's admin routes: `POST /api/archive/run` (one pass now, its counts),
//! `POST /api/orders/{id}/legal-hold` (`{"reason": …}`) and `DELETE` of it.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::api::{ApiJson, parse_id};
use super::error::ApiError;
use super::principal::Acting;

/// Who the archive log names: the principal calling (a person's id, `client:NAME`, the
/// bootstrap admin).
fn by(acting: &Acting) -> String {
    acting.id()
}

pub(crate) async fn run(State(app): State<AppState>, acting: Acting) -> Result<Json<Value>, ApiError> {
    let pass = app.archive.run(&by(&acting), app.clock.now()).await?;
    Ok(Json(serde_json::to_value(pass).map_err(ApiError::unexpected)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HoldBody {
    reason: String,
}

pub(crate) async fn hold(
    State(app): State<AppState>,
    acting: Acting,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<HoldBody>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    if body.reason.trim().is_empty() {
        return Err(ApiError::bad_request("a legal hold needs a reason").with_field("reason"));
    }
    let entry = app.archive.hold(id, Some(body.reason.trim()), &by(&acting), app.clock.now()).await?;
    Ok(Json(json!({"order_id": id.to_string(), "segment": entry.segment, "legal_hold": entry.hold})))
}

pub(crate) async fn release(
    State(app): State<AppState>,
    acting: Acting,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let entry = app.archive.hold(id, None, &by(&acting), app.clock.now()).await?;
    Ok(Json(json!({"order_id": id.to_string(), "segment": entry.segment, "legal_hold": entry.hold})))
}
