//! `ApiError`: every error answer is `{"error": {"code", "message"[, "field"]}}`.
//! A 4xx says what was wrong; a 5xx is opaque, carries the request id (the same as the
//! `x-request-id` header), and is logged once.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) field: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), field: None }
    }

    pub(crate) fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// An internal failure: logged with its cause and the request id; the caller sees only the id.
    pub(crate) fn unexpected(cause: impl std::fmt::Display) -> Self {
        let request_id = current_request_id();
        tracing::error!(request_id, error = %cause, "request failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("internal error, nothing was accepted; retry later (request id {request_id})"),
        )
    }

    /// A handler panicked (a bug): 500 with the request id, nothing else. What was
    /// durably committed before the panic stays; intake is idempotent, so a retried
    /// webhook finds it.
    pub(crate) fn panicked(request_id: &str) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("internal error; retry later, a repeated delivery is safe (request id {request_id})"),
        )
    }
}

tokio::task_local! {
    /// The id of the request being handled (the `x-request-id` answered), set by the
    /// HTTP guard, so an error logged anywhere below names the same id.
    pub(crate) static REQUEST_ID: String;
}

/// The current request's id, or a fresh one outside a request.
pub(crate) fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_else(|_| crate::domain::ids::uuid_v7_now().simple().to_string())
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError as E;
        match e {
            E::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            E::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            // Nothing was accepted; the sender retries against a healthy daemon.
            E::Failed(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_failed",
                "the daemon can no longer store anything durably and is stopping; nothing was accepted, retry later",
            ),
            other => ApiError::unexpected(other),
        }
    }
}

impl From<crate::engine::answers::AnswerError> for ApiError {
    fn from(e: crate::engine::answers::AnswerError) -> Self {
        use crate::engine::answers::AnswerError as E;
        let field = match e {
            E::CommentMissing => "comment",
            E::ReasonMissing => "note",
        };
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", e.to_string()).with_field(field)
    }
}

impl From<crate::orders::OrderError> for ApiError {
    fn from(e: crate::orders::OrderError) -> Self {
        use crate::orders::OrderError as E;
        match e {
            E::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            E::Illegal(t) => ApiError::new(StatusCode::CONFLICT, "illegal_transition", t.to_string()),
            E::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            E::LinkUsed(m) => ApiError::new(StatusCode::CONFLICT, "link_used", m),
            E::Refused(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
            E::Forbidden(r) => ApiError::new(StatusCode::FORBIDDEN, r.code(), r.to_string()),
            E::Store(s) => s.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut err = json!({"code": self.code, "message": self.message});
        if let Some(f) = self.field {
            err["field"] = json!(f);
        }
        let mut resp = (self.status, Json(json!({ "error": err }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_errors_carry_the_request_id_being_answered() {
        let e = REQUEST_ID.scope("req-42".to_owned(), async { ApiError::unexpected("disk full") }).await;
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.message.contains("(request id req-42)"), "{}", e.message);
        assert!(!e.message.contains("disk full"), "the cause is logged, not answered");
        let p = ApiError::panicked("req-43");
        assert_eq!((p.status, p.code), (StatusCode::INTERNAL_SERVER_ERROR, "internal"));
        assert!(p.message.contains("req-43"));
        // Outside a request there is still an id to quote.
        assert!(ApiError::unexpected("x").message.contains("request id "));
    }
}
