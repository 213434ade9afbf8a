//! Connectors: one external system each, configured by `connectors/<id>.toml`.
//!
//! A *kind* (`rest` today; vendor presets later) is Rust code; an *instance* is a
//! TOML file named by its id. Capabilities are small traits: webhooks are verified
//! and mapped (`Receive`), effects are performed (`Push`). Errors say what the
//! dispatcher does next: retry, give up, or alert a person (`ConnectorError`).

pub mod oauth2;
pub mod rest;
pub mod signature;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::diagnostics::Diagnostic;
use crate::domain::ConnectorId;
use crate::mapping::{Mapping, MappingFile};
use crate::settings::SecretRef;

/// Installs the process's one TLS crypto provider (ring) if none is installed yet.
/// reqwest is built without a provider of its own, so every HTTP client needs this
/// first; calling it again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What went wrong with an outbound call, and so what to do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// Timeouts, refused connections, 408, 429, 5xx: try again later.
    #[error("temporary failure: {message}")]
    Retryable { message: String, retry_after: Option<Duration> },
    /// The receiver refused the request itself (other 4xx): retrying cannot help.
    #[error("permanent failure: {message}")]
    Permanent { message: String },
    /// 401/403: credentials are wrong or revoked; a person must act.
    #[error("authentication failed: {message}")]
    Auth { message: String },
}

/// One outbound effect, as the dispatcher hands it to a connector.
#[derive(Debug, Clone)]
pub struct Outbound<'a> {
    pub operation: &'a str,
    pub idempotency_key: &'a str,
    /// The JSON body (order snapshot and effect metadata).
    pub body: &'a serde_json::Value,
}

/// What the receiver answered, kept in the audit trail.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub status: u16,
    /// A short, secret-free summary (e.g. the receiver's id for the created record).
    pub summary: String,
    /// The receiver's id for what it created, when the operation says where to find it.
    pub reference: Option<String>,
}

/// Performs exactly one outbound effect.
pub trait Push: Send + Sync {
    fn perform<'a>(&'a self, effect: Outbound<'a>) -> BoxFuture<'a, Result<Receipt, ConnectorError>>;
}

/// The `kind` of a connector file picks the Rust code; the whole file is then read as
/// that kind's `Config` (read in two steps so every value keeps its location).
#[derive(Debug, Deserialize)]
struct KindOnly {
    kind: Option<String>,
}

/// Connector kinds this build knows.
pub const KINDS: &[&str] = &["rest"];

/// Everything the daemon needs about one connector instance.
pub struct Connector {
    pub id: ConnectorId,
    pub kind: &'static str,
    pub webhook: Option<Webhook>,
    pub push: Option<Arc<dyn Push>>,
    /// Polling for changed records, when configured.
    pub poll: Option<Arc<rest::RestPoll>>,
    /// Operation names `Push` accepts (checked against `rules.toml`).
    pub operations: Vec<String>,
}

/// Inbound webhooks: the verifier and the mapping that turns payloads into orders.
pub struct Webhook {
    pub verifier: signature::Verifier,
    pub mapping: Arc<Mapping>,
}

/// All connectors and mappings, loaded and cross-checked.
#[derive(Default)]
pub struct Registry {
    pub connectors: BTreeMap<ConnectorId, Arc<Connector>>,
    pub mappings: BTreeMap<String, Arc<Mapping>>,
}

impl Registry {
    /// Adds a connector that is part of the daemon rather than a file (`mail`).
    pub fn add_builtin(&mut self, id: &str, push: Arc<dyn Push>, operations: Vec<String>) {
        let id: ConnectorId = id.parse().expect("built-in connector ids are valid");
        self.connectors.insert(
            id.clone(),
            Arc::new(Connector { id, kind: "builtin", webhook: None, push: Some(push), poll: None, operations }),
        );
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Connector>> {
        id.parse::<ConnectorId>().ok().and_then(|id| self.connectors.get(&id))
    }

    /// Loads `connectors/*.toml` and `mappings/*.toml` under `config_dir`.
    ///
    /// # Errors
    /// Every problem in every file, located; and cross-file problems (a mapping for
    /// an unknown connector, a webhook naming an unknown mapping).
    pub fn load(config_dir: &Path) -> Result<(Registry, usize), Vec<Diagnostic>> {
        let mut problems = Vec::new();
        let mut files = 0;
        let mut mappings = BTreeMap::new();
        let mut mapping_files = BTreeMap::new();
        for (path, text) in toml_files(&config_dir.join("mappings"), &mut problems) {
            files += 1;
            let id = stem(&path);
            match toml::from_str::<MappingFile>(&text) {
                Err(e) => problems.push(Diagnostic::from_toml(&path, &text, &e)),
                Ok(file) => {
                    let connector = file.connector.clone();
                    match file.validate(&id) {
                        Ok(m) => {
                            mappings.insert(id.clone(), Arc::new(m));
                            mapping_files.insert(id, (path, text, connector));
                        }
                        Err(ps) => problems
                            .extend(ps.into_iter().map(|p| Diagnostic::at(&path, &text, Some(p.span), p.message))),
                    }
                }
            }
        }

        let mut connectors = BTreeMap::new();
        for (path, text) in toml_files(&config_dir.join("connectors"), &mut problems) {
            files += 1;
            let name = stem(&path);
            let id = match name.parse::<ConnectorId>() {
                Ok(_) if name == crate::engine::notify::MAIL_CONNECTOR => {
                    problems
                        .push(Diagnostic::file(&path, "`mail` is the built-in e-mail connector; choose another name"));
                    continue;
                }
                Ok(id) => id,
                Err(e) => {
                    problems.push(Diagnostic::file(&path, format!("file name: {e}")));
                    continue;
                }
            };
            let kind = match toml::from_str::<KindOnly>(&text) {
                Ok(KindOnly { kind: Some(k) }) => k,
                Ok(KindOnly { kind: None }) => {
                    problems.push(Diagnostic::at(
                        &path,
                        &text,
                        None,
                        format!("missing `kind` (one of: {})", KINDS.join(", ")),
                    ));
                    continue;
                }
                Err(e) => {
                    problems.push(Diagnostic::from_toml(&path, &text, &e));
                    continue;
                }
            };
            let built = match kind.as_str() {
                "rest" => match toml::from_str::<rest::Config>(&text) {
                    Ok(cfg) => cfg.build(&id, config_dir, &mappings),
                    Err(e) => Err(vec![(e.span(), e.message().trim().replace('\n', " "))]),
                },
                other => Err(vec![(
                    crate::diagnostics::locate(&text, &["kind"]),
                    format!("unknown connector kind `{other}` (one of: {})", KINDS.join(", ")),
                )]),
            };
            match built {
                Ok(c) => {
                    connectors.insert(id, Arc::new(c));
                }
                Err(ps) => {
                    problems.extend(ps.into_iter().map(|(span, m)| Diagnostic::at(&path, &text, span, m)));
                }
            }
        }

        for (path, text, connector) in mapping_files.values() {
            let known = connector.get_ref().parse::<ConnectorId>().is_ok_and(|c| connectors.contains_key(&c));
            if !known {
                problems.push(Diagnostic::at(
                    path,
                    text,
                    Some(connector.span()),
                    format!(
                        "connector `{}` does not exist (no connectors/{}.toml)",
                        connector.get_ref(),
                        connector.get_ref()
                    ),
                ));
            }
        }

        if problems.is_empty() { Ok((Registry { connectors, mappings }, files)) } else { Err(problems) }
    }
}

/// A secret reference in a connector file, resolved, with a located error.
pub(crate) fn resolve_secret(
    value: &toml::Spanned<String>,
    config_dir: &Path,
) -> Result<secrecy::SecretString, (Option<std::ops::Range<usize>>, String)> {
    SecretRef::parse(value.get_ref()).and_then(|r| r.resolve(config_dir)).map_err(|e| (Some(value.span()), e))
}

fn stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The `*.toml` files of a directory, sorted, with their text.
fn toml_files(dir: &Path, problems: &mut Vec<Diagnostic>) -> Vec<(std::path::PathBuf, String)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push(Diagnostic::file(dir, format!("cannot read directory: {e}")));
            return Vec::new();
        }
    };
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| match std::fs::read_to_string(&p) {
            Ok(t) => Some((p, t)),
            Err(e) => {
                problems.push(Diagnostic::file(&p, format!("cannot read: {e}")));
                None
            }
        })
        .collect()
}
