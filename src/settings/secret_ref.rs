//! Secret references: `${ENV_NAME}` or `file:PATH`, never the value itself; resolved
//! into `SecretString` while the settings are parsed, and judged (`crate::secrets`).
//!
//! The example configuration writes `${ENV_NAME:-demo}`: the variable when it is set,
//! else the value of `ENV_NAME` in `config/demo-secrets.toml` (the example's published
//! demo secrets, in one file, so its first command needs no exports). Those values are
//! published, so outside the example configuration (`example = true`, on loopback) the
//! secret policy refuses them, naming the file (`crate::secrets`).

use std::path::{Path, PathBuf};

use secrecy::SecretString;

/// A reference to a secret: an environment variable or a file.
use crate::secrets::{DEMO_FALLBACK, DEMO_SECRETS_FILE};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SecretRef {
    Env(String),
    File(PathBuf),
    /// `${NAME:-demo}`: the variable, else its demo value in `DEMO_SECRETS_FILE`.
    EnvOrDemo(String),
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl SecretRef {
    /// Parses `${NAME}` or `file:PATH`. Anything else is refused, so a secret is never
    /// written into a config file by accident.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        if let Some(name) = s.strip_prefix("${").and_then(|r| r.strip_suffix(DEMO_FALLBACK))
            && is_env_name(name)
        {
            return Ok(SecretRef::EnvOrDemo(name.to_owned()));
        }
        if let Some(name) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}'))
            && is_env_name(name)
        {
            return Ok(SecretRef::Env(name.to_owned()));
        }
        if let Some(p) = s.strip_prefix("file:")
            && !p.is_empty()
        {
            return Ok(SecretRef::File(p.into()));
        }
        Err("a secret must be a reference, `${ENV_NAME}` or `file:PATH`, never the value itself".into())
    }

    /// Reads the secret. The error names the variable or file, never the value.
    pub(crate) fn resolve(&self, base: &Path) -> Result<SecretString, String> {
        match self {
            SecretRef::Env(n) => match std::env::var(n) {
                Ok(v) if !v.is_empty() => Ok(SecretString::from(v)),
                _ => Err(format!("secret ${{{n}}}: environment variable {n} is not set")),
            },
            SecretRef::File(p) => {
                let p = if p.is_absolute() { p.clone() } else { base.join(p) };
                std::fs::read_to_string(&p)
                    .map(|v| SecretString::from(v.trim_end_matches(['\n', '\r']).to_owned()))
                    .map_err(|e| format!("secret file {}: {e}", p.display()))
            }
            SecretRef::EnvOrDemo(n) => match std::env::var(n) {
                Ok(v) if !v.is_empty() => Ok(SecretString::from(v)),
                _ => demo_secret(base, n),
            },
        }
    }
}

/// The demo value of `name` in the example's `DEMO_SECRETS_FILE`.
fn demo_secret(base: &Path, name: &str) -> Result<SecretString, String> {
    let path = base.join(DEMO_SECRETS_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "secret ${{{name}}}: environment variable {name} is not set, and its demo value cannot be read ({}: {e})",
            path.display()
        )
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
    match table.get(name) {
        Some(toml::Value::String(v)) => Ok(SecretString::from(v.clone())),
        _ => Err(format!(
            "secret ${{{name}}}: environment variable {name} is not set, and {} has no string `{name}`",
            path.display()
        )),
    }
}

/// Resolves the secrets of one settings file and judges them under its policy.
pub(crate) struct SecretResolver<'a> {
    pub(crate) config_dir: &'a Path,
    /// `false` for offline commands: a secret that cannot be resolved stays unset.
    pub(crate) strict: bool,
    pub(crate) checks: crate::secrets::Checks<'a>,
}

impl SecretResolver<'_> {
    /// Parses and reads a reference; `Ok(None)` when it cannot be read and `strict` is off.
    pub(crate) fn resolve(&self, reference: &str) -> Result<Option<SecretString>, String> {
        match SecretRef::parse(reference)?.resolve(self.config_dir) {
            Ok(s) => Ok(Some(s)),
            Err(_) if !self.strict => Ok(None),
            Err(e) => Err(e),
        }
    }
}
