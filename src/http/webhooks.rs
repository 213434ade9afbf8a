//! `POST /webhooks/{connector}`: verify (what the headers can show before the body is
//! read, the rest after), parse, map, check the order template, then ingest. The answer is 202 only after the order is durably stored (invariant 1);
//! every refusal names its reason and writes nothing. A signature scheme whose vendor
//! wants its own acknowledgement (`Verifier::acknowledgement`) gets it instead of 202.

use std::time::Instant;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::{Value, json};

use super::error::ApiError;
use super::{AppState, BodyTimeout};
use crate::connectors::signature::{Acknowledgement, Delivery, SignatureError, Verifier};
use crate::domain::ExternalRef;
use crate::metrics::LATENCY_BUCKETS;
use crate::orders::Inbound;

pub(crate) async fn receive(
    State(app): State<AppState>,
    Path(connector): Path<String>,
    request: axum::extract::Request,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse as _;
    let started = Instant::now();
    let _taking_in = app.orders.taking_in();
    // The request taken apart, not its headers copied out of it.
    let (head, body) = request.into_parts();
    let result = receive_inner(&app, &connector, &head.uri, &head.headers, body).await;
    let status = match &result {
        Ok((s, _)) => *s,
        Err(e) => e.status,
    };
    let label = if app.registry.get(&connector).is_some() { connector.as_str() } else { "unknown" };
    app.metrics.inc("orderbridge_webhooks_total", &[("connector", label), ("status", status.as_str())]);
    app.metrics.observe(
        "orderbridge_webhook_duration_seconds",
        &[("connector", label)],
        started.elapsed().as_secs_f64(),
        LATENCY_BUCKETS,
    );
    if let Err(e) = &result
        && e.status.is_client_error()
    {
        tracing::warn!(connector = label, status = e.status.as_u16(), code = e.code, reason = %e.message, "webhook refused");
    }
    // Some vendors take only their own acknowledgement of an accepted delivery.
    let ack = app
        .registry
        .get(&connector)
        .and_then(|c| c.webhook.as_ref())
        .map_or(Acknowledgement::Answer, |w| w.verifier.acknowledgement());
    result.map(|r| match ack {
        Acknowledgement::Answer => r.into_response(),
        Acknowledgement::EmptyOk => StatusCode::OK.into_response(),
    })
}

async fn receive_inner(
    app: &AppState,
    connector: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let conn = app.registry.get(connector).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_connector",
            format!("no connector `{}` receives webhooks here", clip(connector)),
        )
    })?;
    let hook = conn.webhook.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_connector",
            format!("connector `{connector}` has no [webhook] section"),
        )
    })?;

    let bytes = signed_body(app, &hook.verifier, uri, headers, body).await?;
    let now = app.clock.now();

    let Some(mapping) = &hook.mapping else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_connector",
            format!(
                "connector `{connector}` sends no orders (its [webhook] has no mapping); events go to /webhooks/{connector}/events"
            ),
        ));
    };
    let payload: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", format!("body is not JSON: {e}")))?;

    // Amounts sent as JSON numbers are read as written, never through an f64.
    let numbers = std::sync::Arc::new(crate::mapping::NumberTexts::of(&bytes, &payload)).root();
    let mapped = match mapping.apply_exact(&payload, &numbers) {
        Err(e) => {
            return Err(
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_order", e.to_string()).with_field(e.field)
            );
        }
        Ok(Err(skipped)) => {
            app.metrics.inc("orderbridge_orders_ingested_total", &[("connector", connector), ("outcome", "skipped")]);
            return Ok((
                StatusCode::ACCEPTED,
                Json(json!({"order_id": null, "state": null, "duplicate": false, "skipped": skipped.reason})),
            ));
        }
        Ok(Ok(m)) => m,
    };
    app.settings
        .intake
        .check(&mapped.order)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.code(), e.to_string()).with_field(e.field()))?;

    let inbound = Inbound {
        source: ExternalRef { connector: conn.id.clone(), id: mapped.external_id },
        version: mapped.version,
        mapping_version: mapping.version.clone(),
        order: mapped.order,
    };
    let ingested = app.orders.ingest(inbound, &app.rules, now).await?;
    let outcome = if ingested.duplicate { "duplicate" } else { "accepted" };
    app.metrics.inc("orderbridge_orders_ingested_total", &[("connector", connector), ("outcome", outcome)]);
    if !ingested.duplicate {
        app.metrics.inc("orderbridge_orders_entered_state_total", &[("state", ingested.state.name())]);
        if ingested.effects > 0 {
            app.wake_dispatcher();
        }
    }
    tracing::debug!(order_id = %ingested.order_id, connector, state = ingested.state.name(), duplicate = ingested.duplicate, "webhook accepted");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "order_id": ingested.order_id.to_string(),
            "state": ingested.state.name(),
            "duplicate": ingested.duplicate,
        })),
    ))
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Reads a webhook's body and checks its signature. What the headers alone can refuse
/// (a declared length over `server.max_body_bytes`, a missing or malformed signature
/// header, a timestamp outside the replay window) is refused before a byte of the
/// body is read; the body is then read up to the limit (413) and within
/// `server.body_timeout_secs` (408), and the signature checked over it (401).
pub(super) async fn signed_body(
    app: &AppState,
    verifier: &Verifier,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ApiError> {
    let limit = app.settings.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("body exceeds the {limit}-byte limit"),
        )
    };
    let declared = headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let bad_signature = |e: SignatureError| ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string());
    let path_and_query = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let now = app.clock.now().timestamp();
    verifier.check_headers("POST", path_and_query, headers, now).map_err(bad_signature)?;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if BodyTimeout::caused(&e) {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("the body did not arrive within {}s; send it again", app.settings.body_timeout.as_secs()),
            );
        }
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = src {
            if s.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            src = s.source();
        }
        ApiError::bad_request(format!("could not read the body: {e}"))
    })?;
    let delivery = Delivery { method: "POST", path_and_query, headers, body: &bytes, now };
    verifier.verify(&delivery).map_err(bad_signature)?;
    Ok(bytes)
}
