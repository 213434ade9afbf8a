//! `[console]`: how long a console session and a mailed sign-in link last;
//! `[console.oidc]`: sign-in through an OpenID Connect provider (`crate::auth::oidc`).

use secrecy::ExposeSecret as _;
use serde::Deserialize;

use super::{Problems, SecretResolver};
use crate::auth::oidc::OidcSettings;
use crate::auth::sessions::Limits;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawConsole {
    /// Signed out after this long without a request.
    pub(crate) session_idle_minutes: u32,
    /// Signed out this long after signing in, active or not.
    pub(crate) session_absolute_hours: u32,
    /// A mailed sign-in link works once, within this.
    pub(crate) sign_in_link_minutes: u32,
    /// Sign-in through an OpenID Connect provider, beside the mailed link.
    pub(crate) oidc: Option<RawOidc>,
}

impl Default for RawConsole {
    fn default() -> Self {
        RawConsole { session_idle_minutes: 30, session_absolute_hours: 12, sign_in_link_minutes: 15, oidc: None }
    }
}

/// `[console.oidc]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOidc {
    /// The provider's issuer URL (its discovery document is
    /// `<issuer>/.well-known/openid-configuration`); https, or http on loopback.
    pub(crate) issuer: String,
    /// This daemon's client id at the provider.
    pub(crate) client_id: String,
    /// A secret reference to the client secret.
    pub(crate) client_secret: String,
    /// Where the provider sends people back (registered at the provider); default
    /// `<site.public_url>/signin/oidc/callback`.
    pub(crate) redirect_url: Option<String>,
    /// The claim matched against the directory's mailboxes (default `email`).
    #[serde(default = "default_claim")]
    pub(crate) claim: String,
    /// Shown on the sign-in button ("Sign in with …"); default: the issuer's host.
    pub(crate) name: Option<String>,
}

fn default_claim() -> String {
    "email".into()
}

/// An http(s) URL; plain http only to a loopback host (a provider on this machine).
fn provider_url(s: &str) -> Result<reqwest::Url, String> {
    let u = reqwest::Url::parse(s).map_err(|e| format!("`{s}` is not a URL: {e}"))?;
    let host = u.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match u.scheme() {
        "https" => Ok(u),
        "http" if loopback => Ok(u),
        _ => Err(format!("`{s}` must be an https URL (plain http only on loopback)")),
    }
}

/// The OIDC sign-in, when configured; `None` also when its secret cannot be read
/// offline (`strict` off).
pub(super) fn oidc(c: &RawConsole, secrets: &mut SecretResolver<'_>, p: &mut Problems<'_>) -> Option<OidcSettings> {
    let o = c.oidc.as_ref()?;
    let at = |key: &'static str| ["console", "oidc", key];
    let issuer = provider_url(&o.issuer).map_err(|m| p.bad(&at("issuer"), m)).ok();
    if let Some(r) = &o.redirect_url
        && let Err(m) = provider_url(r)
    {
        p.bad(&at("redirect_url"), m);
    }
    for (key, v) in [("client_id", &o.client_id), ("claim", &o.claim)] {
        if v.trim().is_empty() {
            p.bad(&at(key), format!("`{key}` must not be empty"));
        }
    }
    let secret = match secrets.resolve(&o.client_secret) {
        Ok(Some(s)) => {
            let judged =
                if secrets.strict { secrets.checks.judge(&o.client_secret, s.expose_secret(), None) } else { Ok(()) };
            judged.map_err(|m| p.bad(&at("client_secret"), m)).ok().map(|()| s)
        }
        Ok(None) => None,
        Err(e) => {
            p.bad(&at("client_secret"), e);
            None
        }
    };
    let host = issuer.as_ref().and_then(|u| u.host_str().map(str::to_owned));
    Some(OidcSettings {
        issuer: o.issuer.clone(),
        client_id: o.client_id.clone(),
        client_secret: secret?,
        redirect_url: o.redirect_url.clone(),
        claim: o.claim.clone(),
        name: o.name.clone().or(host).unwrap_or_else(|| o.issuer.clone()),
    })
}

/// The limits, none of them 0.
pub(super) fn limits(c: &RawConsole, p: &mut Problems<'_>) -> Limits {
    for (key, v) in [
        ("session_idle_minutes", c.session_idle_minutes),
        ("session_absolute_hours", c.session_absolute_hours),
        ("sign_in_link_minutes", c.sign_in_link_minutes),
    ] {
        if v == 0 {
            p.bad(&["console", key], format!("`{key}` must be at least 1"));
        }
    }
    Limits {
        idle: chrono::Duration::minutes(i64::from(c.session_idle_minutes.max(1))),
        absolute: chrono::Duration::hours(i64::from(c.session_absolute_hours.max(1))),
        sign_in_link: chrono::Duration::minutes(i64::from(c.sign_in_link_minutes.max(1))),
    }
}
