//! OAuth 2.0 client credentials (RFC 6749 §4.4) for outbound calls: the token is
//! fetched on first use, cached, refreshed before it expires, dropped when the API
//! answers 401, and never logged or put in an error message.

use std::time::{Duration, Instant};

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;

use super::ConnectorError;

/// Bytes a form value carries percent-encoded: all but RFC 3986's unreserved ones.
const FORM_VALUE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

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
    /// Seconds; absent means "no expiry stated" (we then refresh hourly). Taken as any
    /// JSON value: endpoints send numbers, numeric strings, and now and then nonsense.
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

/// Lifetime assumed when the endpoint states none (or one we cannot read).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// Longest a token is kept, whatever the endpoint says: a huge `expires_in` must not
/// overflow the clock arithmetic, and a day-old token is renewed anyway.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// How long a token may be used before it is fetched anew: `expires_in` clamped to
/// `0..=MAX_LIFETIME` (negative: already expired, used for this call only), less a
/// margin of a minute, or half the lifetime when that is shorter.
fn use_for(expires_in: Option<&serde_json::Value>) -> Duration {
    use serde_json::Value;
    let secs = match expires_in {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => {
            n.as_u64().map(|s| s as f64).or_else(|| n.as_i64().map(|s| s as f64)).or_else(|| n.as_f64())
        }
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    let lifetime = match secs.filter(|s| s.is_finite()) {
        None => DEFAULT_LIFETIME,
        Some(s) if s <= 0.0 => Duration::ZERO,
        Some(s) => Duration::try_from_secs_f64(s).unwrap_or(MAX_LIFETIME).min(MAX_LIFETIME),
    };
    let margin = Duration::from_secs(60).min(lifetime / 2);
    lifetime.saturating_sub(margin)
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
        let now = Instant::now();
        // `use_for` is at most a day, but never let the clock arithmetic panic.
        let refresh_at = now.checked_add(fetched.1).unwrap_or(now);
        *cache = Some(Cached { token: fetched.0, refresh_at });
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
            body.extend(percent_encoding::utf8_percent_encode(s, FORM_VALUE));
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
                message: format!("token endpoint: {}", super::response::describe(&e.without_url())),
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
            // request would show our credentials, so they are scrubbed (before the cut).
            use base64::Engine as _;
            let pair = format!("{}:{}", self.client_id, self.client_secret.expose_secret());
            let basic = SecretString::from(base64::engine::general_purpose::STANDARD.encode(pair));
            let secrets = [self.client_secret.clone(), basic];
            let message = format!("token endpoint HTTP {status}: {}", super::scrub::excerpt(&text, &secrets));
            let err = match status {
                // The token endpoint's rate limit holds up every call of the connector.
                429 => ConnectorError::RateLimited { message, retry_after },
                500.. => ConnectorError::Retryable { message, retry_after },
                _ => ConnectorError::Auth { message },
            };
            return Err(err.scrubbed(&secrets));
        }
        let parsed: TokenResponse = serde_json::from_str(&text).map_err(|_| ConnectorError::Auth {
            message: format!("token endpoint HTTP {status}: the answer has no access_token"),
        })?;
        Ok((SecretString::from(parsed.access_token), use_for(parsed.expires_in.as_ref())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn any_expires_in_gives_a_bounded_lifetime() {
        let secs = |v: serde_json::Value| use_for(Some(&v)).as_secs();
        assert_eq!(secs(json!(3600)), 3540, "a minute early");
        assert_eq!(secs(json!(60)), 30, "half of a short lifetime early");
        assert_eq!(use_for(None).as_secs(), 3540, "none stated: an hour");
        assert_eq!(secs(json!(null)), 3540);
        assert_eq!(secs(json!("1800")), 1740, "a numeric string");
        let day = MAX_LIFETIME.as_secs() - 60;
        for huge in [json!(u64::MAX), json!(1e300), json!(f64::MAX), json!("99999999999999999999999")] {
            assert_eq!(secs(huge.clone()), day, "{huge} is clamped to a day");
        }
        for expired in [json!(-1), json!(i64::MIN), json!(-1e300), json!(0), json!("-5")] {
            assert_eq!(secs(expired.clone()), 0, "{expired}: fetched again next time");
        }
        for nonsense in [json!("soon"), json!(true), json!([1]), json!({"s": 1})] {
            assert_eq!(secs(nonsense.clone()), 3540, "{nonsense}: the default");
        }
        // Whatever it is, adding it to the clock cannot overflow.
        assert!(Instant::now().checked_add(use_for(Some(&json!(u64::MAX)))).is_some());
    }
}
