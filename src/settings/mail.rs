//! `[smtp]` and `[links]`: the outgoing mail server and the keys that sign links in
//! mail (with how long each kind of link lives).

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use super::{Problems, SecretResolver};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSmtp {
    pub(crate) host: String,
    #[serde(default = "default_smtp_port")]
    pub(crate) port: u16,
    /// `starttls` (required), `tls` (implicit, usually port 465) or `none` (a local relay).
    #[serde(default = "default_smtp_tls")]
    pub(crate) tls: String,
    pub(crate) username: Option<String>,
    /// `${ENV_NAME}` or `file:PATH`.
    pub(crate) password: Option<String>,
    /// PEM file of a private CA to trust besides the system's.
    pub(crate) ca_file: Option<PathBuf>,
    #[serde(default = "default_smtp_timeout")]
    pub(crate) timeout_secs: u64,
    /// Connections kept open to the server.
    #[serde(default = "default_smtp_pool")]
    pub(crate) pool_max: u32,
    /// `Name <address>`; its domain also names every `Message-ID`.
    pub(crate) from: String,
    pub(crate) reply_to: Option<String>,
    /// Name given in EHLO (default: this host's name).
    pub(crate) hello_name: Option<String>,
}

fn default_smtp_port() -> u16 {
    587
}
fn default_smtp_tls() -> String {
    "starttls".into()
}
fn default_smtp_timeout() -> u64 {
    30
}
fn default_smtp_pool() -> u32 {
    4
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLinks {
    /// Key that signs links in mail: `${ENV_NAME}` or `file:PATH` (at least 32 bytes).
    pub(crate) secret: Option<String>,
    /// Earlier keys, still accepted, so rotating the key breaks no mail in flight.
    pub(crate) previous_secrets: Vec<String>,
    pub(crate) approval_ttl_hours: u64,
    pub(crate) status_ttl_hours: u64,
    pub(crate) acceptance_ttl_hours: u64,
    pub(crate) survey_ttl_hours: u64,
}

impl Default for RawLinks {
    fn default() -> Self {
        RawLinks {
            secret: None,
            previous_secrets: Vec::new(),
            approval_ttl_hours: 72,
            status_ttl_hours: 720,
            acceptance_ttl_hours: 168,
            survey_ttl_hours: 720,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    None,
    StartTls,
    Implicit,
}

#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub credentials: Option<(String, SecretString)>,
    pub ca_pem: Option<Vec<u8>>,
    pub(crate) timeout: Duration,
    pub(crate) pool_max: u32,
    pub(crate) from: String,
    pub(crate) reply_to: Option<String>,
    pub(crate) hello_name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// The first signs; all verify.
    pub(crate) keys: Vec<SecretString>,
    /// Per purpose, in `LinkPurpose::ALL` order.
    pub(crate) ttl: [Duration; 4],
}

/// The mail server's settings, checked; the password is resolved and judged.
pub(super) fn smtp(m: &RawSmtp, secrets: &mut SecretResolver<'_>, p: &mut Problems<'_>) -> SmtpSettings {
    let tls = match m.tls.as_str() {
        "none" => SmtpTls::None,
        "starttls" => SmtpTls::StartTls,
        "tls" => SmtpTls::Implicit,
        other => {
            p.bad(&["smtp", "tls"], format!("`{other}` is not a TLS mode (starttls, tls, none)"));
            SmtpTls::StartTls
        }
    };
    let credentials = match (&m.username, &m.password) {
        (None, None) => None,
        (Some(u), Some(pw)) => match secrets.resolve(pw) {
            Ok(Some(secret)) => {
                if secrets.strict
                    && let Err(m) = secrets.checks.judge(pw, secret.expose_secret(), None)
                {
                    p.bad(&["smtp", "password"], m);
                }
                Some((u.clone(), secret))
            }
            Ok(None) => None,
            Err(e) => {
                p.bad(&["smtp", "password"], e);
                None
            }
        },
        _ => {
            p.bad(&["smtp"], "`username` and `password` go together".into());
            None
        }
    };
    let ca_pem = m.ca_file.as_ref().and_then(|f| ca_pem(f, secrets.config_dir, p));
    for (key, v) in [("from", Some(&m.from)), ("reply_to", m.reply_to.as_ref())] {
        if let Some(v) = v
            && v.parse::<lettre::message::Mailbox>().is_err()
        {
            p.bad(&["smtp", key], format!("`{v}` is not a mailbox (`Name <address@domain>` or `address@domain`)"));
        }
    }
    if m.pool_max == 0 || m.timeout_secs == 0 {
        p.bad(&["smtp"], "pool_max and timeout_secs must be positive".into());
    }
    SmtpSettings {
        host: m.host.clone(),
        port: m.port,
        tls,
        credentials,
        ca_pem,
        timeout: Duration::from_secs(m.timeout_secs.max(1)),
        pool_max: m.pool_max.max(1),
        from: m.from.clone(),
        reply_to: m.reply_to.clone(),
        hello_name: m.hello_name.clone(),
    }
}

/// Reads the private CA's PEM file.
fn ca_pem(file: &Path, config_dir: &Path, p: &mut Problems<'_>) -> Option<Vec<u8>> {
    let path = if file.is_absolute() { file.to_owned() } else { config_dir.join(file) };
    match std::fs::read(&path) {
        Ok(b) if b.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => Some(b),
        Ok(_) => {
            p.bad(&["smtp", "ca_file"], format!("{} holds no PEM certificate", path.display()));
            None
        }
        Err(e) => {
            p.bad(&["smtp", "ca_file"], format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}

/// The link keys (current first) and lifetimes; `None` without a key.
pub(super) fn links(l: &RawLinks, secrets: &mut SecretResolver<'_>, p: &mut Problems<'_>) -> Option<LinkSettings> {
    let mut keys = Vec::new();
    for (i, r) in l.secret.iter().chain(l.previous_secrets.iter()).enumerate() {
        let key: &[&str] = if i == 0 { &["links", "secret"] } else { &["links", "previous_secrets"] };
        match secrets.resolve(r) {
            Ok(Some(k)) => {
                let v = k.expose_secret();
                // Empty, placeholder or published first (they say more); then the
                // length, which even the example must meet.
                let judged = if secrets.strict { secrets.checks.judge(r, v, None) } else { Ok(()) };
                match judged {
                    Err(m) => p.bad(key, m),
                    Ok(()) if v.len() < crate::secrets::MIN_HMAC_KEY => {
                        p.bad(key, "a link key must be at least 32 bytes (e.g. `openssl rand -hex 32`)".into());
                    }
                    Ok(()) => keys.push(k),
                }
            }
            Ok(None) => {}
            Err(e) => p.bad(key, e),
        }
    }
    if l.secret.is_none() && !l.previous_secrets.is_empty() {
        p.bad(&["links", "previous_secrets"], "previous_secrets without a current `secret`".into());
    }
    let hours = [l.approval_ttl_hours, l.status_ttl_hours, l.acceptance_ttl_hours, l.survey_ttl_hours];
    if hours.contains(&0) {
        p.bad(&["links"], "every *_ttl_hours must be positive".into());
    }
    (!keys.is_empty()).then(|| LinkSettings { keys, ttl: hours.map(|h| Duration::from_secs(h * 3600)) })
}
