//! Principals' credentials, kept by the daemon: API tokens for clients and people
//! (`tokens`); console sessions and one-time sign-in links (`sessions`, the layer the
//! console's sign-in and the OpenID Connect callback both end in); sign-in through an
//! OpenID Connect provider (`oidc`, its ID token checks in `id_token`). Who may do
//! what with them is `crate::engine::access`; finding the principal of a request is
//! `crate::http::principal`.

pub(crate) mod id_token;
pub(crate) mod oidc;
pub(crate) mod sessions;
pub(crate) mod tokens;

use std::path::Path;

use chrono::{DateTime, Utc};

/// Issues a token for `holder` (`client:NAME` or `person:ID`) with `scopes` (action
/// names), kept in the data directory `store_path`: its id and its secret (shown only
/// now). The CLI's `tokens create`, for tools and tests.
///
/// # Errors
/// A bad holder, an unknown scope, or the file cannot be written.
pub fn issue(
    store_path: &Path,
    holder: &str,
    scopes: &[&str],
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(String, String), String> {
    let holder = match holder.split_once(':') {
        Some(("client", name)) => tokens::Holder::Client(name.to_owned()),
        Some(("person", id)) => tokens::Holder::Person(id.to_owned()),
        _ => return Err(format!("`{holder}`: a token is for `client:NAME` or `person:ID`")),
    };
    let scopes = scopes.iter().map(|s| s.parse()).collect::<Result<Vec<_>, String>>()?;
    let (rec, secret) =
        tokens::TokenFile::under(store_path).create(holder, scopes, expires_at, now).map_err(|e| e.to_string())?;
    Ok((rec.id, secret))
}

/// Revokes the token `id` of the data directory `store_path` (the CLI's `tokens revoke`).
///
/// # Errors
/// No such token, or the file cannot be written.
pub fn revoke(store_path: &Path, id: &str, now: DateTime<Utc>) -> Result<(), String> {
    tokens::TokenFile::under(store_path).revoke(id, now).map(|_| ()).map_err(|e| e.to_string())
}
