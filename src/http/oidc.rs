//! The console's sign-in through an OpenID Connect provider, the browser's side:
//! `GET /signin/oidc` sends the browser to the provider (the sign-in's `state` in a
//! short-lived HttpOnly cookie, so only the browser that started it can finish it);
//! `GET /signin/oidc/callback` takes the answer back, lets `auth::oidc` exchange the
//! code and check the ID token, finds the directory person whose mailbox the
//! configured claim names, and starts a session exactly as a mailed link does
//! (`console`'s cookie, 303 to `/console`), keeping the ID token for signing out at
//! the provider too (`console::signout`). Every refusal is a page of
//! `pages/console.html` (`oidc_refused`) that names no token, claim or address.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::console::{SESSION, console_page, cookie_value, redirect, secure, view, with_cookie};
use crate::auth::oidc::OidcError;
use crate::auth::sessions::{IdTokenHint, cookie};

/// The started sign-in's `state`, for the callback only.
const STATE_COOKIE: &str = "ob_oidc";

fn state_cookie(value: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    let (value, age) = value.map_or(("", 0), |v| (v, 600));
    format!("{STATE_COOKIE}={value}; Path=/signin/oidc; HttpOnly; SameSite=Lax; Max-Age={age}{secure}")
}

/// A sign-in that signed nobody in, and why (`reason`, see `pages/console.html`);
/// the state cookie is cleared.
fn refused(app: &AppState, status: StatusCode, reason: &str) -> Response {
    let l = app.settings.presentation.default_locale;
    let provider = app.oidc.as_ref().map(|o| o.name());
    let body = view(app, l, "oidc_refused", json!({"reason": reason, "provider": provider}));
    with_cookie(console_page(app, status, l, "title_refused", &body), &state_cookie(None, secure(app)))
}

/// `GET /signin/oidc`: to the provider.
pub(crate) async fn start(State(app): State<AppState>) -> Response {
    let Some(oidc) = app.oidc.clone() else { return refused(&app, StatusCode::NOT_FOUND, "off") };
    match oidc.begin(app.clock.now()).await {
        Ok((url, state)) => with_cookie(redirect(&url), &state_cookie(Some(&state), secure(&app))),
        Err(e) => {
            tracing::warn!(error = %e, "an OIDC sign-in could not start");
            refused(&app, StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
    }
}

/// The provider's answer (OAuth 2.0: a code, or an error), with the sign-in's state.
#[derive(Deserialize)]
pub(crate) struct ProviderAnswer {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: String,
    #[serde(default)]
    error: Option<String>,
    /// The issuer, when the provider names it (RFC 9207, against mix-up attacks).
    #[serde(default)]
    iss: Option<String>,
}

/// `GET /signin/oidc/callback`: the provider's answer; signs the person in.
pub(crate) async fn callback(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(answer): Query<ProviderAnswer>,
) -> Response {
    let Some(oidc) = app.oidc.clone() else { return refused(&app, StatusCode::NOT_FOUND, "off") };
    let mine = cookie_value(&headers, STATE_COOKIE).unwrap_or_default();
    // Login CSRF: an answer to a sign-in this browser did not start is refused.
    if answer.state.is_empty() || !bool::from(subtle::ConstantTimeEq::ct_eq(answer.state.as_bytes(), mine.as_bytes())) {
        tracing::info!("an OIDC answer was refused: its state is not the browser's");
        return refused(&app, StatusCode::BAD_REQUEST, "state");
    }
    if answer.iss.as_deref().is_some_and(|i| i != oidc.issuer()) {
        oidc.forget(&answer.state);
        tracing::warn!("an OIDC answer was refused: it names another issuer");
        return refused(&app, StatusCode::BAD_REQUEST, "failed");
    }
    let (Some(code), None) = (answer.code, answer.error.as_deref()) else {
        oidc.forget(&answer.state);
        let error: String = answer.error.unwrap_or_default().chars().filter(char::is_ascii_graphic).take(64).collect();
        tracing::info!(error = %error, "the OIDC provider did not sign anyone in");
        return refused(&app, StatusCode::FORBIDDEN, "denied");
    };
    let now = app.clock.now();
    let signed_in = match oidc.finish(&answer.state, &code, now).await {
        Ok(v) => v,
        Err(e) => {
            let (status, reason) = match &e {
                OidcError::Unreachable(_) | OidcError::Provider(_) => (StatusCode::BAD_GATEWAY, "unavailable"),
                OidcError::UnknownState => (StatusCode::BAD_REQUEST, "state"),
                OidcError::Token(_) | OidcError::NoClaim(_) => (StatusCode::BAD_REQUEST, "failed"),
            };
            tracing::warn!(error = %e, "an OIDC sign-in was refused");
            return refused(&app, status, reason);
        }
    };
    let Some(person) = app.rules.notify.directory.by_email(&signed_in.claim) else {
        // The address is personal data: not logged.
        tracing::info!("an OIDC sign-in named no one in the directory");
        return refused(&app, StatusCode::FORBIDDEN, "unknown_person");
    };
    let started = app.sessions.start_holding(&person.id, Some(IdTokenHint::new(signed_in.id_token)), now);
    tracing::info!(person = %person.id, channel = "console", "signed in through OIDC");
    let resp = with_cookie(redirect("/console"), &cookie(SESSION, Some(&started.cookie), secure(&app)));
    with_cookie(resp, &state_cookie(None, secure(&app)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_cookie_is_http_only_lax_short_lived_and_scoped_to_the_callback() {
        assert_eq!(
            state_cookie(Some("s1"), true),
            "ob_oidc=s1; Path=/signin/oidc; HttpOnly; SameSite=Lax; Max-Age=600; Secure"
        );
        assert_eq!(state_cookie(None, false), "ob_oidc=; Path=/signin/oidc; HttpOnly; SameSite=Lax; Max-Age=0");
    }
}
