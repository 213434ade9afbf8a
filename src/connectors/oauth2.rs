//! OAuth 2.0 client credentials (RFC 6749 §4.4) for outbound calls: the token is
//! fetched on first use, cached, refreshed before it expires, dropped when the API
//! answers 401, and never logged or put in an error message.

use std::time::{Duration, Instant};

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;

use super::ConnectorError;

pub struct ClientCredentials {
    token_url: Url,
    client_id: String,
    client_secret: SecretString,
    scope: Option<String>,
    client: reqwest::Client,
    cache: Mutex<Option<Cached>>,
}

struct Cached {
    token: SecretString,
    refresh_at: Instant,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    /// Seconds; absent means "no expiry stated" (we then refresh hourly).
    expires_in: Option<u64>,
}

impl ClientCredentials {
    pub fn new(
        token_url: Url,
        client_id: String,
        client_secret: SecretString,
        scope: Option<String>,
        client: reqwest::Client,
    ) -> Self {
        ClientCredentials { token_url, client_id, client_secret, scope, client, cache: Mutex::new(None) }
    }

    /// A valid access token, fetching a new one when none is cached or it is due.
    pub async fn token(&self) -> Result<SecretString, ConnectorError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        let fetched = self.fetch().await?;
        let token = fetched.0.clone();
        *cache = Some(Cached { token: fetched.0, refresh_at: Instant::now() + fetched.1 });
        Ok(token)
    }

    /// Forgets the cached token (the API said 401): the next call fetches a new one.
    pub async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    async fn fetch(&self) -> Result<(SecretString, Duration), ConnectorError> {
        let mut body = "grant_type=client_credentials".to_owned();
        if let Some(s) = &self.scope {
            body.push_str("&scope=");
            body.push_str(&super::rest::encode_segment(s));
        }
        let resp = self
            .client
            .post(self.token_url.clone())
            .basic_auth(&self.client_id, Some(self.client_secret.expose_secret()))
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| ConnectorError::Retryable {
                message: format!("token endpoint: {}", super::rest::describe(&e.without_url())),
                retry_after: None,
            })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp.text().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            // Token endpoints answer {"error", "error_description"}; one that echoes the
            // request would show our credentials, so they are scrubbed.
            let message = format!("token endpoint HTTP {status}: {}", text.chars().take(300).collect::<String>());
            let err = if status >= 500 || status == 429 {
                ConnectorError::Retryable { message, retry_after }
            } else {
                ConnectorError::Auth { message }
            };
            use base64::Engine as _;
            let pair = format!("{}:{}", self.client_id, self.client_secret.expose_secret());
            let basic = SecretString::from(base64::engine::general_purpose::STANDARD.encode(pair));
            return Err(err.scrubbed(&[self.client_secret.clone(), basic]));
        }
        let parsed: TokenResponse = serde_json::from_str(&text).map_err(|_| ConnectorError::Auth {
            message: format!("token endpoint HTTP {status}: the answer has no access_token"),
        })?;
        let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(3600));
        // Refresh a little before expiry: a minute, or half the lifetime when shorter.
        let margin = Duration::from_secs(60).min(lifetime / 2);
        Ok((SecretString::from(parsed.access_token), lifetime - margin))
    }
}
