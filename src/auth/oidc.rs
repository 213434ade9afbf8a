//! Console sign-in through an OpenID Connect provider (`[console.oidc]`): the
//! authorization code flow with PKCE (S256). `begin` makes the request a browser is
//! sent to the provider with (its `state`, `nonce` and code verifier kept here, in
//! memory, for ten minutes); `finish` takes the provider's answer back, exchanges the
//! code at the token endpoint (client_secret_basic, or _post when that is all the
//! provider takes), checks the ID token (`auth::id_token`) and answers the configured
//! claim (from the ID token, else from the userinfo endpoint) with the ID token;
//! `sign_out_url` sends a browser signing out to the provider's end-session endpoint.
//!
//! The provider's discovery document and keys are fetched when first needed and kept;
//! a provider that is down is an error for that sign-in only, tried again on the next.
//! The keys are fetched again when a token names a key not seen yet (rotation). The
//! browser side (routes, cookies, pages) is `crate::http::oidc`; a proven person ends
//! in `auth::sessions` like the mailed link. The client secret is never logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::id_token::{self, Expected, Jwk, JwkSet, TokenError};

/// `[console.oidc]`, checked, its secret resolved.
#[derive(Debug, Clone)]
pub(crate) struct OidcSettings {
    /// Exactly as configured: the ID token's `iss` and the discovery's `issuer` must equal it.
    pub(crate) issuer: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: SecretString,
    /// `None`: `<public url>/signin/oidc/callback`.
    pub(crate) redirect_url: Option<String>,
    pub(crate) claim: String,
    /// The provider's name on the sign-in button.
    pub(crate) name: String,
}

/// How long a started sign-in waits for the provider's answer.
const PENDING_MINUTES: i64 = 10;
/// Most sign-ins waiting at once (the oldest gives way).
const MAX_PENDING: usize = 10_000;
/// Largest answer read from the provider.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// Why an OIDC sign-in did not prove who someone is. Messages never carry a token,
/// a code or the client secret.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OidcError {
    #[error("the sign-in provider cannot be reached: {0}")]
    Unreachable(String),
    #[error("the sign-in provider answered unexpectedly: {0}")]
    Provider(String),
    #[error("this sign-in is unknown or has expired")]
    UnknownState,
    #[error("the ID token was refused: {0}")]
    Token(#[from] TokenError),
    #[error("the provider gave no usable `{0}` claim")]
    NoClaim(String),
}

/// What discovery says (OpenID Connect Discovery 1.0), and the keys.
#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    userinfo_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// RP-Initiated Logout 1.0: where a browser is sent to sign out at the provider.
    #[serde(default)]
    end_session_endpoint: Option<String>,
}

struct Provider {
    discovery: Discovery,
    keys: Mutex<Arc<Vec<Jwk>>>,
}

/// A sign-in sent to the provider, waiting for its answer.
struct Pending {
    verifier: String,
    nonce: String,
    until: DateTime<Utc>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: String,
    #[serde(default)]
    access_token: Option<String>,
}

/// A person the provider signed in: the configured claim, and the ID token (kept
/// with the session for signing out at the provider).
pub(crate) struct SignedIn {
    pub(crate) claim: String,
    pub(crate) id_token: String,
}

/// The origin (`https://sso.bank.example`) of an issuer URL: where the console's pages
/// let a form lead (sign-out continues at the provider).
pub(crate) fn issuer_origin(issuer: &str) -> Option<String> {
    let origin = reqwest::Url::parse(issuer).ok()?.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// The daemon's OIDC client.
pub(crate) struct Oidc {
    settings: OidcSettings,
    redirect_url: String,
    /// Where the provider sends the browser back after signing out: the sign-in page.
    signed_out_url: String,
    http: reqwest::Client,
    provider: tokio::sync::Mutex<Option<Arc<Provider>>>,
    /// By `state`.
    pending: Mutex<HashMap<String, Pending>>,
}

fn random_b64(n: usize) -> String {
    use ring::rand::SecureRandom as _;
    let mut bytes = vec![0u8; n];
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("the system's random generator works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// PKCE's S256 challenge of a verifier (RFC 7636).
fn challenge(verifier: &str) -> String {
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// A form value, as `application/x-www-form-urlencoded` writes it (also how RFC 6749
/// encodes the client id and secret before HTTP Basic).
fn form_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl Oidc {
    /// The client for `settings`; `public_url` is the base of the default redirect URL.
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub(crate) fn new(settings: OidcSettings, public_url: &str) -> Result<Oidc, String> {
        let redirect_url =
            settings.redirect_url.clone().unwrap_or_else(|| format!("{public_url}/signin/oidc/callback"));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("orderbridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the OIDC HTTP client: {e}"))?;
        Ok(Oidc {
            settings,
            redirect_url,
            signed_out_url: format!("{public_url}/signin"),
            http,
            provider: tokio::sync::Mutex::default(),
            pending: Mutex::default(),
        })
    }

    /// The client of `[console.oidc]`, when it is configured.
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub(crate) fn configured(settings: Option<&OidcSettings>, public_url: &str) -> Result<Option<Arc<Oidc>>, String> {
        settings.map(|s| Oidc::new(s.clone(), public_url).map(Arc::new)).transpose()
    }

    /// For `check --online`: fetches the discovery document and the keys now.
    ///
    /// # Errors
    /// What stopped a sign-in from starting.
    pub(crate) async fn check(&self) -> Result<String, String> {
        let p = self.provider().await.map_err(|e| e.to_string())?;
        let n = p.keys.lock().expect("lock").len();
        Ok(format!("{} publishes its endpoints and {n} key{}", self.settings.issuer, if n == 1 { "" } else { "s" }))
    }

    /// The configured issuer.
    pub(crate) fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// The provider's name, for the sign-in button.
    pub(crate) fn name(&self) -> &str {
        &self.settings.name
    }

    /// Starts a sign-in: the provider's authorization URL to send the browser to, and
    /// the `state` that its answer must bring back.
    ///
    /// # Errors
    /// The provider cannot be reached or its discovery document is unusable.
    pub(crate) async fn begin(&self, now: DateTime<Utc>) -> Result<(String, String), OidcError> {
        let provider = self.provider().await?;
        let (state, nonce, verifier) = (random_b64(32), random_b64(32), random_b64(32));
        let mut url = reqwest::Url::parse(&provider.discovery.authorization_endpoint)
            .map_err(|_| OidcError::Provider("its authorization_endpoint is not a URL".into()))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("redirect_uri", &self.redirect_url)
            .append_pair("scope", &self.scope())
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge(&verifier))
            .append_pair("code_challenge_method", "S256");
        let mut pending = self.pending.lock().expect("lock");
        pending.retain(|_, p| p.until > now);
        if pending.len() >= MAX_PENDING
            && let Some(oldest) = pending.iter().min_by_key(|(_, p)| p.until).map(|(k, _)| k.clone())
        {
            pending.remove(&oldest);
        }
        pending.insert(
            state.clone(),
            Pending { verifier, nonce, until: now + chrono::Duration::minutes(PENDING_MINUTES) },
        );
        Ok((url.to_string(), state))
    }

    /// `openid`, and the standard scope that carries the configured claim.
    fn scope(&self) -> String {
        let extra = match self.settings.claim.as_str() {
            "email" | "email_verified" => " email",
            "preferred_username" | "name" | "nickname" => " profile",
            _ => " email profile",
        };
        format!("openid{extra}")
    }

    /// Forgets a started sign-in (its answer was refused before the exchange).
    pub(crate) fn forget(&self, state: &str) {
        self.pending.lock().expect("lock").remove(state);
    }

    /// Ends a sign-in with the provider's `code`: the configured claim of the person
    /// the provider signed in. A `state` works once.
    ///
    /// # Errors
    /// Unknown or expired `state`, the exchange failed, the ID token was refused, or
    /// the claim is missing (or is an e-mail address the provider marks unverified).
    pub(crate) async fn finish(&self, state: &str, code: &str, now: DateTime<Utc>) -> Result<SignedIn, OidcError> {
        let pending = self.pending.lock().expect("lock").remove(state).filter(|p| p.until > now);
        let pending = pending.ok_or(OidcError::UnknownState)?;
        let provider = self.provider().await?;
        let answer = self.exchange(&provider, code, &pending.verifier).await?;
        let keys = self.keys_for(&provider, &answer.id_token).await?;
        let want =
            Expected { issuer: &self.settings.issuer, client_id: &self.settings.client_id, nonce: &pending.nonce, now };
        let claims = id_token::verify(&answer.id_token, &keys, &want)?;
        let claim = &self.settings.claim;
        let claims = match claims.get(claim) {
            Some(_) => claims,
            None => self.userinfo(&provider, answer.access_token.as_deref(), &claims).await?,
        };
        if claim == "email" && claims.get("email_verified") == Some(&Value::Bool(false)) {
            return Err(OidcError::NoClaim(claim.clone()));
        }
        match claims.get(claim).and_then(Value::as_str).map(str::trim) {
            Some(v) if !v.is_empty() => Ok(SignedIn { claim: v.to_owned(), id_token: answer.id_token }),
            _ => Err(OidcError::NoClaim(claim.clone())),
        }
    }

    /// Where to send a browser whose console session just ended so that it signs out
    /// at the provider too (OpenID Connect RP-Initiated Logout 1.0): the provider's
    /// `end_session_endpoint` with `id_token_hint`, `client_id` and
    /// `post_logout_redirect_uri` (the console's sign-in page). `None` when discovery
    /// publishes no such endpoint, or one off the issuer's origin (the only one the
    /// console's pages let a form lead to), or the provider cannot be reached now.
    pub(crate) async fn sign_out_url(&self, id_token: &str) -> Option<String> {
        let provider = self.provider().await.ok()?;
        let mut url = reqwest::Url::parse(provider.discovery.end_session_endpoint.as_deref()?).ok()?;
        if issuer_origin(url.as_str()) != issuer_origin(&self.settings.issuer) {
            tracing::warn!(
                "the OIDC provider's end_session_endpoint is on another origin: signed out of the console only"
            );
            return None;
        }
        url.query_pairs_mut()
            .append_pair("id_token_hint", id_token)
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("post_logout_redirect_uri", &self.signed_out_url);
        Some(url.into())
    }

    /// The discovery document (fetched once it can be, then kept).
    async fn provider(&self) -> Result<Arc<Provider>, OidcError> {
        let mut held = self.provider.lock().await;
        if let Some(p) = held.as_ref() {
            return Ok(p.clone());
        }
        let url = format!("{}/.well-known/openid-configuration", self.settings.issuer.trim_end_matches('/'));
        let discovery: Discovery = self.get_json(&url, None).await?;
        if discovery.issuer != self.settings.issuer {
            return Err(OidcError::Provider(format!(
                "its discovery document names issuer `{}`, not the configured `{}`",
                discovery.issuer, self.settings.issuer
            )));
        }
        let keys: JwkSet = self.get_json(&discovery.jwks_uri, None).await?;
        let p = Arc::new(Provider { discovery, keys: Mutex::new(Arc::new(keys.keys)) });
        *held = Some(p.clone());
        Ok(p)
    }

    /// The keys to check `token` with: those held, or fetched again when the token
    /// names a key id they lack (the provider rotated its keys).
    async fn keys_for(&self, provider: &Provider, token: &str) -> Result<Arc<Vec<Jwk>>, OidcError> {
        let kid = id_token::key_id(token)?;
        let held = provider.keys.lock().expect("lock").clone();
        let known = kid.as_deref().is_none_or(|id| held.iter().any(|k| k.kid.as_deref() == Some(id)));
        if known {
            return Ok(held);
        }
        let fresh: JwkSet = self.get_json(&provider.discovery.jwks_uri, None).await?;
        let fresh = Arc::new(fresh.keys);
        *provider.keys.lock().expect("lock") = fresh.clone();
        Ok(fresh)
    }

    /// The token endpoint's answer to the code (RFC 6749 §4.1.3, with PKCE's verifier).
    async fn exchange(&self, provider: &Provider, code: &str, verifier: &str) -> Result<TokenAnswer, OidcError> {
        let d = &provider.discovery;
        // Basic unless the provider lists only _post (no list: Basic, the default).
        let methods = d.token_endpoint_auth_methods_supported.as_deref().unwrap_or_default();
        let post = !methods.is_empty()
            && !methods.iter().any(|m| m == "client_secret_basic")
            && methods.iter().any(|m| m == "client_secret_post");
        let (id, secret) = (&self.settings.client_id, self.settings.client_secret.expose_secret());
        let mut req = self.http.post(&d.token_endpoint).header(reqwest::header::ACCEPT, "application/json");
        let mut pairs = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_url.as_str()),
            ("code_verifier", verifier),
        ];
        if post {
            pairs.extend([("client_id", id.as_str()), ("client_secret", secret)]);
        } else {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                form_encode(id),
                form_encode(secret)
            ));
            req = req.header(reqwest::header::AUTHORIZATION, format!("Basic {basic}"));
        }
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        let req = req.header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(body);
        let resp = req.send().await.map_err(|e| OidcError::Unreachable(e.without_url().to_string()))?;
        let status = resp.status();
        let body = read_bounded(resp).await?;
        if !status.is_success() {
            // Only the error code: the rest of an answer is the provider's business.
            let code = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default();
            return Err(OidcError::Provider(format!("its token endpoint answered {status} {code}")));
        }
        serde_json::from_slice(&body)
            .map_err(|_| OidcError::Provider("its token endpoint's answer carries no id_token".into()))
    }

    /// The userinfo endpoint's claims, for a claim the ID token leaves out; its `sub`
    /// must be the ID token's (OpenID Connect Core §5.3.2).
    async fn userinfo(
        &self,
        provider: &Provider,
        access_token: Option<&str>,
        id_claims: &Map<String, Value>,
    ) -> Result<Map<String, Value>, OidcError> {
        let claim = &self.settings.claim;
        let (Some(url), Some(token)) = (provider.discovery.userinfo_endpoint.as_deref(), access_token) else {
            return Err(OidcError::NoClaim(claim.clone()));
        };
        let info: Map<String, Value> = self.get_json(url, Some(token)).await?;
        if info.get("sub").is_none() || info.get("sub") != id_claims.get("sub") {
            return Err(OidcError::Provider("its userinfo answer is about someone else".into()));
        }
        Ok(info)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str, bearer: Option<&str>) -> Result<T, OidcError> {
        let mut req = self.http.get(url).header(reqwest::header::ACCEPT, "application/json");
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| OidcError::Unreachable(e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(OidcError::Unreachable(format!("{url} answered {status}")));
        }
        let body = read_bounded(resp).await?;
        serde_json::from_slice(&body).map_err(|e| OidcError::Provider(format!("{url}: {e}")))
    }
}

/// The answer's body, up to `MAX_ANSWER_BYTES`.
async fn read_bounded(mut resp: reqwest::Response) -> Result<Vec<u8>, OidcError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| OidcError::Unreachable(e.without_url().to_string()))? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(OidcError::Provider("its answer is too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pkce_challenge_is_base64url_sha256_unpadded() {
        // As Python's hashlib.sha256 and base64.urlsafe_b64encode compute it (padding cut).
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r7wW1gFWFOEjXk"),
            "bwWFMyPfdG9qreDhH2lmftFx_dFeLDalzcT1gb_j68g"
        );
    }

    #[test]
    fn basic_credentials_are_form_encoded_first() {
        assert_eq!(form_encode("a b:c/é"), "a+b%3Ac%2F%C3%A9");
    }
}
