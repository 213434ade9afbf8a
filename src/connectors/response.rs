//! What an HTTP answer means for the dispatcher: success (a `Receipt`) or a
//! `ConnectorError` saying whether to retry, wait, give up or alert a person. Shared
//! by every HTTP connector kind (`rest`, `odoo`) and the OAuth2 token fetch.

use std::time::Duration;

use reqwest::Url;
use secrecy::SecretString;

use super::{ConnectorError, Receipt};

/// A transport error with its chain of causes (timeouts and refused connections
/// named as such).
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut msg = format!("{what}: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

/// `Retry-After` in seconds or as an HTTP date.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().ok()
}

/// Largest answer read (a page of records, an invoice): more is refused, not buffered.
const MAX_RESPONSE: usize = 16 << 20;

async fn read_bounded(mut resp: reqwest::Response) -> Result<String, ConnectorError> {
    let mut buf = Vec::new();
    while let Some(chunk) =
        resp.chunk().await.map_err(|e| ConnectorError::Retryable { message: describe(&e), retry_after: None })?
    {
        if buf.len() + chunk.len() > MAX_RESPONSE {
            return Err(ConnectorError::Permanent {
                message: format!(
                    "HTTP {}: the answer is larger than {} MiB",
                    resp.status().as_u16(),
                    MAX_RESPONSE >> 20
                ),
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Maps a response to success or to what the dispatcher should do next. An error
/// quotes at most `scrub::EXCERPT_CHARS` of the body, without `secrets` and without
/// anything shaped like a credential (it reaches logs, the audit and dead letters).
pub(crate) async fn classify(resp: reqwest::Response, secrets: &[SecretString]) -> Result<Receipt, ConnectorError> {
    let status = resp.status();
    let retry_after = retry_after(resp.headers());
    // Where a redirect points: its scheme, host and port only.
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| resp.url().join(l).ok())
        .map(|u| origin_text(&u));
    let body = read_bounded(resp).await?;
    if status.is_success() {
        // Kept whole (bounded by the client's limits) so references and pages parse.
        return Ok(Receipt { status: status.as_u16(), summary: body, reference: None });
    }
    if status.is_redirection() {
        let to = location.map_or_else(|| "no Location".to_owned(), |l| format!("Location on {l}"));
        return Err(ConnectorError::Permanent {
            message: format!(
                "HTTP {}: a redirect ({to}) is not followed, so credentials never go to another address; set base_url to where the system answers",
                status.as_u16()
            ),
        });
    }
    let message = format!("HTTP {}: {}", status.as_u16(), super::scrub::excerpt(&body, secrets));
    let e = match status.as_u16() {
        401 | 403 => ConnectorError::Auth { message },
        429 => ConnectorError::RateLimited { message, retry_after },
        408 | 425 | 500..=599 => ConnectorError::Retryable { message, retry_after },
        _ => ConnectorError::Permanent { message },
    };
    Err(e.scrubbed(secrets))
}

/// `scheme://host:port` of a URL (never its path or query, which may carry tokens).
pub(crate) fn origin_text(u: &Url) -> String {
    let host = u.host_str().unwrap_or("?");
    match u.port_or_known_default() {
        Some(p) => format!("{}://{host}:{p}", u.scheme()),
        None => format!("{}://{host}", u.scheme()),
    }
}
