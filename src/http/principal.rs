//! The principal of a request, found once: a bearer token (the bootstrap admin token
//! or an API token, on the admin listener) or a console session cookie (on the public
//! one). `api_gate` finds it for every `/api/*` request, looks up the route's action
//! in `API_ACTIONS` and asks `engine::access::authorize`; handlers get the principal
//! from the request (`Acting`) and record it as the actor, never a name in the body.

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use crate::auth::tokens::{TokenError, TokenFile, looks_like_token};
use crate::engine::access::{Action, Principal, authorize};
use crate::engine::policy::ACTIONS;

/// The audit name of the bootstrap admin token's principal (`admin:bootstrap`).
pub(crate) const BOOTSTRAP_ADMIN: &str = "bootstrap";

/// Each admin API route and the action it takes; a route not listed needs `administer`.
const API_ACTIONS: &[(Method, &str, Action)] = &[
    (Method::GET, "/api/orders", Action::SeePersonalData),
    (Method::GET, "/api/orders/{id}", Action::SeePersonalData),
    (Method::GET, "/api/orders/{id}/documents/{kind}", Action::SeePersonalData),
    (Method::GET, "/api/customers/{id}/receivables", Action::SeePersonalData),
    (Method::POST, "/api/orders/{id}/approvals", Action::DecideApproval),
    (Method::POST, "/api/orders/{id}/review", Action::ReviewFlagged),
    (Method::POST, "/api/orders/{id}/tasks/{task}/done", Action::RecordDelivery),
    (Method::POST, "/api/orders/{id}/delivery", Action::RecordDelivery),
    (Method::POST, "/api/orders/{id}/acceptance", Action::TakeAcceptance),
    (Method::POST, "/api/orders/{id}/exception", Action::HandleExceptions),
    (Method::POST, "/api/payments", Action::AssignPayments),
    (Method::GET, "/api/payments/unmatched", Action::AssignPayments),
    (Method::POST, "/api/payments/unmatched/{source}/{payment_id}/assign", Action::AssignPayments),
    (Method::GET, "/api/connectors", Action::ResumeConnectors),
    (Method::POST, "/api/connectors/{id}/resume", Action::ResumeConnectors),
    (Method::GET, "/api/outbox", Action::ReplayDeadLetters),
    (Method::GET, "/api/outbox/dead", Action::ReplayDeadLetters),
    (Method::POST, "/api/outbox/dead/{id}/replay", Action::ReplayDeadLetters),
    (Method::GET, "/api/reports/kpis", Action::SeeReports),
    (Method::GET, "/api/export", Action::SeeReports),
    (Method::GET, "/api/reports/scheduled/{name}", Action::SeeReports),
    (Method::POST, "/api/rules/candidates", Action::ProposeRules),
    (Method::GET, "/api/rules/changes", Action::ProposeRules),
    (Method::POST, "/api/rules/candidates/{version}/approve", Action::ApproveRules),
    (Method::POST, "/api/rules/activate", Action::ApproveRules),
    (Method::POST, "/api/rules/rollback", Action::ApproveRules),
    (Method::POST, "/api/rules/shadow", Action::ApproveRules),
    (Method::GET, "/api/rules/shadow-report", Action::ProposeRules),
];

/// Routes that read orders: open to a principal granted any action that works on
/// orders (`Action::works_on_orders`);
/// the handlers mask the personal data unless `see_personal_data` is granted too
/// (`api::as_seen_by`). Documents and receivables stay behind `see_personal_data`.
const ORDER_READS: &[&str] = &["/api/orders", "/api/orders/{id}"];

/// The action a request to `route` takes (`administer` for any route not listed).
pub(crate) fn api_action(method: &Method, route: &str) -> Action {
    API_ACTIONS.iter().find(|(m, r, _)| m == method && *r == route).map_or(Action::Administer, |(_, _, a)| *a)
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// The principal a bearer token stands for.
///
/// # Errors
/// 401 for a missing, unknown, expired or revoked token.
pub(crate) fn bearer_principal(app: &AppState, parts: &Parts) -> Result<Principal, ApiError> {
    let given = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("missing `Authorization: Bearer <token>`"))?;
    if let Some(admin) = &app.settings.admin_token
        && bool::from(given.as_bytes().ct_eq(admin.expose_secret().as_bytes()))
    {
        return Ok(Principal::Admin { name: BOOTSTRAP_ADMIN.to_owned() });
    }
    if !looks_like_token(given) {
        return Err(unauthorized(if app.settings.admin_token.is_some() {
            "invalid token"
        } else {
            "invalid token (the bootstrap admin token is switched off: server.admin_token_enabled = false or unset)"
        }));
    }
    match TokenFile::under(&app.settings.store_path).verify(given, app.clock.now()) {
        Ok(rec) => Ok(rec.principal()),
        Err(e @ (TokenError::Unknown | TokenError::Expired(_) | TokenError::Revoked(_))) => {
            Err(unauthorized(e.to_string()))
        }
        Err(e) => Err(ApiError::unexpected(e)),
    }
}

/// Every `/api/*` request: who (401 when nobody), and whether the policy table lets
/// them take the route's action (403 naming what is missing).
pub(crate) async fn api_gate(State(app): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    let principal = bearer_principal(&app, &parts)?;
    let route = parts.extensions.get::<MatchedPath>().map(|m| m.as_str().to_owned()).unwrap_or_default();
    let action = api_action(&parts.method, &route);
    let directory = &app.rules.notify.directory;
    let may = |a: Action| authorize(&principal, a, directory.policy(), directory);
    let reads_orders = parts.method == Method::GET && ORDER_READS.contains(&route.as_str());
    match may(action) {
        Err(_) if reads_orders && ACTIONS.iter().any(|a| a.works_on_orders() && may(*a).is_ok()) => {}
        allowed => allowed.map_err(|d| ApiError::new(StatusCode::FORBIDDEN, "forbidden", d.to_string()))?,
    }
    parts.extensions.insert(principal);
    Ok(next.run(Request::from_parts(parts, body)).await)
}

/// The principal a gate established for this request.
pub(crate) struct Acting(pub(crate) Principal);

impl<S: Send + Sync> FromRequestParts<S> for Acting {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Acting)
            .ok_or_else(|| unauthorized("this route needs a principal (sign in, or send a token)"))
    }
}

impl Acting {
    /// The audit id of this principal (`wang.fang`, `client:erp`, `admin:bootstrap`).
    pub(crate) fn id(&self) -> String {
        match self.0.actor() {
            crate::engine::Actor::Person(id) | crate::engine::Actor::Connector(id) => id,
            crate::engine::Actor::System => "system".to_owned(),
        }
    }

    /// Checks a body's `field` (`approver`, `operator`) against the principal: absent,
    /// or the principal's own id. A request never acts as somebody else.
    ///
    /// # Errors
    /// 403 when the body names someone else.
    pub(crate) fn named_in_body(&self, field: &str, named: Option<&str>) -> Result<(), ApiError> {
        let me = self.id();
        match named.map(str::trim) {
            None | Some("") => Ok(()),
            Some(n) if n == me => Ok(()),
            Some(n) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "not_the_principal",
                format!(
                    "`{field}` is `{n}`, but this request is authenticated as `{me}`: a request acts as its principal only (leave `{field}` out)"
                ),
            )
            .with_field(field)),
        }
    }

    /// For decisions only a person of the directory may take (approvals).
    ///
    /// # Errors
    /// 403 for the admin token and API clients.
    pub(crate) fn person(&self) -> Result<&str, ApiError> {
        self.0.person().ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "not_a_person",
                format!(
                    "`{}` is not a person of the directory: an approval is a person's own decision (sign in to the console, or use a personal token)",
                    self.id()
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_route_names_one_action_and_the_rest_need_administer() {
        assert_eq!(api_action(&Method::POST, "/api/orders/{id}/approvals"), Action::DecideApproval);
        assert_eq!(api_action(&Method::GET, "/api/orders/{id}"), Action::SeePersonalData);
        assert_eq!(api_action(&Method::GET, "/api/audit/verify"), Action::Administer);
        assert_eq!(api_action(&Method::POST, "/api/store/quarantine/resolve"), Action::Administer);
        assert_eq!(api_action(&Method::DELETE, "/api/orders/{id}"), Action::Administer);
        // Order reads open to order work are the routes `see_personal_data` unmasks.
        assert!(ORDER_READS.iter().all(|r| api_action(&Method::GET, r) == Action::SeePersonalData));
        assert!(Action::SeePersonalData.works_on_orders() && !Action::SeeReports.works_on_orders());
        for (i, (m, r, _)) in API_ACTIONS.iter().enumerate() {
            assert!(API_ACTIONS[..i].iter().all(|(m2, r2, _)| !(m == m2 && r == r2)), "{m} {r} twice");
        }
    }
}
