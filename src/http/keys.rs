//! Personal data's keys through the admin API (`administer`; `crate::vault`):
//! `GET /api/keys` (how many data keys each privacy key wraps), `POST /api/keys/rotate`
//! (rewrap them under the active key now) and `POST /api/orders/{id}/erase-personal-data`
//! (`{"reason": …}`: a right-to-erasure request). `orderbridge keys` calls them while a
//! daemon holds the store.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::api::{ApiJson, parse_id};
use super::error::ApiError;
use super::principal::Acting;

pub(crate) async fn status(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let s = app.orders.vault().status().await?;
    Ok(Json(serde_json::to_value(s).map_err(ApiError::unexpected)?))
}

pub(crate) async fn rotate(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let r = app.orders.vault().rotate().await?;
    Ok(Json(serde_json::to_value(r).map_err(ApiError::unexpected)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EraseBody {
    reason: String,
}

pub(crate) async fn erase(
    State(app): State<AppState>,
    acting: Acting,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<EraseBody>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    if body.reason.trim().is_empty() {
        return Err(ApiError::bad_request("an erasure needs a reason").with_field("reason"));
    }
    let erased = app.orders.erase_personal_data(id, body.reason.trim(), acting.0.acting(), app.clock.now()).await?;
    Ok(Json(json!({"order_id": id.to_string(), "erased": erased})))
}
