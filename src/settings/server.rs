//! `[server]` and `[server.admin]`: the two listeners, their timeouts and limits, and
//! the admin token. Raw shape (serde defaults) and its meaning checks.

use std::net::IpAddr;

use secrecy::SecretString;
use serde::Deserialize;

use super::{Problems, SecretRef, SecretResolver};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawServer {
    /// Address to listen on. `127.0.0.1` keeps the daemon private to the host.
    pub(crate) host: String,
    /// TCP port; `0` lets the OS pick (tests).
    pub(crate) port: u16,
    /// Largest webhook body accepted, in bytes (larger: 413).
    pub(crate) max_body_bytes: usize,
    /// Time limit for one HTTP request, in seconds, from its headers to its answer,
    /// including the wait for a free slot (`max_concurrent_requests`).
    pub(crate) request_timeout_secs: u64,
    /// Time a client has to send a request's headers, in seconds: from the connection's
    /// start, or from the first byte of a later request on a kept-alive connection.
    /// Past it the connection is closed (slow clients cannot hold connections).
    pub(crate) header_read_timeout_secs: u64,
    /// How long a kept-alive connection may wait for its next request, in seconds.
    pub(crate) idle_timeout_secs: u64,
    /// Time a handler waits for the whole request body, in seconds (past it: 408).
    pub(crate) body_timeout_secs: u64,
    /// Longest wait for a free slot (`max_concurrent_requests`), in seconds, within the
    /// request timeout; past it: 503 with `Retry-After`.
    pub(crate) queue_timeout_secs: u64,
    /// Bearer token for `/api/*`: `${ENV_NAME}` or `file:PATH`.
    pub(crate) admin_token: Option<String>,
    /// `false` switches the bootstrap admin token off (API tokens only, made with
    /// `orderbridge tokens`); the reference is then not even read.
    pub(crate) admin_token_enabled: bool,
    /// Most requests handled at once per listener; more wait, up to the request
    /// timeout, then get 503 with `Retry-After` (back-pressure).
    pub(crate) max_concurrent_requests: usize,
    /// The admin listener (`/api/*`, `/metrics`), apart from webhooks and pages.
    pub(crate) admin: RawAdmin,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            host: "127.0.0.1".into(),
            port: 8080,
            max_body_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            body_timeout_secs: 30,
            queue_timeout_secs: 10,
            admin_token: None,
            admin_token_enabled: true,
            max_concurrent_requests: 1024,
            admin: RawAdmin::default(),
        }
    }
}

/// `[server.admin]`: where the admin API and the metrics are served. Keep it on
/// loopback (or a management network): it is not meant to face the internet.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAdmin {
    /// Address of the admin listener (default loopback).
    pub(crate) host: String,
    /// Its TCP port, other than `server.port`; `0` lets the OS pick (tests).
    pub(crate) port: u16,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin { host: "127.0.0.1".into(), port: 8081 }
    }
}

/// Checks both listeners' addresses and the timeouts; returns the two hosts (public,
/// admin) when both are IP addresses.
pub(super) fn check_listeners(s: &RawServer, p: &mut Problems<'_>) -> Option<(IpAddr, IpAddr)> {
    let host: Option<IpAddr> = match s.host.parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            p.bad(&["server", "host"], format!("`{}` is not an IP address", s.host));
            None
        }
    };
    let admin_host: Option<IpAddr> = match s.admin.host.parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            p.bad(&["server", "admin", "host"], format!("`{}` is not an IP address", s.admin.host));
            None
        }
    };
    if s.admin.port != 0 && s.admin.port == s.port {
        p.bad(
            &["server", "admin", "port"],
            format!(
                "the admin listener needs a port of its own, not server.port ({}): /api and /metrics are not served with webhooks and pages",
                s.port
            ),
        );
    }
    for (key, value) in [
        ("request_timeout_secs", s.request_timeout_secs),
        ("header_read_timeout_secs", s.header_read_timeout_secs),
        ("idle_timeout_secs", s.idle_timeout_secs),
        ("body_timeout_secs", s.body_timeout_secs),
        ("queue_timeout_secs", s.queue_timeout_secs),
    ] {
        if value == 0 {
            p.bad(&["server", key], "must be at least 1 (seconds); there is no \"no limit\"".into());
        }
    }
    if s.queue_timeout_secs > s.request_timeout_secs {
        p.bad(
            &["server", "queue_timeout_secs"],
            format!(
                "must not exceed request_timeout_secs ({}): the wait for a slot is part of the request's time",
                s.request_timeout_secs
            ),
        );
    }
    host.zip(admin_host)
}

/// Resolves and judges the admin token; also checks the body limit.
pub(super) fn admin_token(
    s: &RawServer,
    secrets: &mut SecretResolver<'_>,
    p: &mut Problems<'_>,
) -> Option<SecretString> {
    if !s.admin_token_enabled {
        return None;
    }
    let token = match s.admin_token.as_deref().map(SecretRef::parse) {
        None => None,
        Some(Err(e)) => {
            p.bad(&["server", "admin_token"], e);
            None
        }
        Some(Ok(r)) => match r.resolve(secrets.config_dir) {
            Ok(secret) => {
                let value = secrecy::ExposeSecret::expose_secret(&secret);
                let need = crate::secrets::Need {
                    len: value.len(),
                    min: crate::secrets::MIN_ADMIN_TOKEN,
                    what: "an admin token",
                };
                // Offline commands (`strict = false`) need no secrets: nothing to judge.
                let reference = s.admin_token.as_deref().unwrap_or_default();
                if secrets.strict
                    && let Err(m) = secrets.checks.judge(reference, value, Some(need))
                {
                    p.bad(&["server", "admin_token"], m);
                }
                Some(secret)
            }
            Err(_) if !secrets.strict => None,
            Err(e) => {
                p.bad(&["server", "admin_token"], e);
                None
            }
        },
    };
    if s.max_body_bytes < 1024 {
        p.bad(&["server", "max_body_bytes"], "must be at least 1024".into());
    }
    token
}
