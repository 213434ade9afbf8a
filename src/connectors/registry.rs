//! The `Registry`: every connector and mapping of a configuration, loaded from
//! `connectors/*.toml` and `mappings/*.toml` and cross-checked, in phases: mappings
//! first (connectors name them), then connectors, then what spans files (outbound
//! mappings rendered with a sample order, mappings naming a connector that exists).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::{Connector, ConnectorKind, DOCUMENTS_CONNECTOR, Push, limits, odoo, presets, rest};
use crate::diagnostics::Diagnostic;
use crate::domain::ConnectorId;
use crate::mapping::outbound::{OutboundFile, OutboundMapping};
use crate::mapping::{Mapping, MappingFile};

/// All connectors and mappings, loaded and cross-checked.
#[derive(Default)]
pub struct Registry {
    pub connectors: BTreeMap<ConnectorId, Arc<Connector>>,
    pub mappings: BTreeMap<String, Arc<Mapping>>,
    /// Outbound mappings (request bodies), by name.
    pub outbound: BTreeMap<String, Arc<OutboundMapping>>,
    /// Secret references accepted only because this is the example configuration.
    pub accepted_weak_secrets: Vec<String>,
    /// What `check` points out without refusing (operations sending the whole
    /// order snapshot).
    pub notes: Vec<Diagnostic>,
}

/// The `kind` of a connector file picks the Rust code; the whole file is then read as
/// that kind's `Config` (read in two steps so every value keeps its location).
#[derive(Debug, Deserialize)]
struct KindOnly {
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DirectionOnly {
    direction: Option<Spanned<String>>,
}

/// A mapping file that loaded: where it is, its text, and the connector it names.
struct MappingSource {
    path: PathBuf,
    text: String,
    connector: Spanned<String>,
}

/// The mappings of a configuration, as the first phase of loading leaves them.
#[derive(Default)]
struct Mappings {
    inbound: BTreeMap<String, Arc<Mapping>>,
    outbound: BTreeMap<String, Arc<OutboundMapping>>,
    sources: BTreeMap<String, MappingSource>,
}

impl Registry {
    /// Adds a connector that is part of the daemon rather than a file (`documents`),
    /// with the default limits.
    pub fn add_builtin(&mut self, id: &str, push: Arc<dyn Push>, operations: Vec<String>) {
        self.add_builtin_with_limits(id, push, operations, limits::Limits::default());
    }

    /// `add_builtin` with its own limits (`mail`: slots of its own, see `Limits::own_slots`).
    pub fn add_builtin_with_limits(
        &mut self,
        id: &str,
        push: Arc<dyn Push>,
        operations: Vec<String>,
        limits: limits::Limits,
    ) {
        let id: ConnectorId = id.parse().expect("built-in connector ids are valid");
        self.connectors.insert(
            id.clone(),
            Arc::new(Connector {
                id,
                kind: "builtin",
                webhook: None,
                push: Some(push),
                poll: None,
                health: None,
                operations,
                limits,
            }),
        );
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Connector>> {
        id.parse::<ConnectorId>().ok().and_then(|id| self.connectors.get(&id))
    }

    /// Loads `connectors/*.toml` and `mappings/*.toml` under `config_dir`, judging
    /// secrets by the configuration's own policy (`Settings::secret_policy`).
    ///
    /// # Errors
    /// Every problem in every file, located; and cross-file problems (a mapping for
    /// an unknown connector, a webhook naming an unknown mapping).
    pub fn load(config_dir: &Path) -> Result<(Registry, usize), Vec<Diagnostic>> {
        Registry::load_with(config_dir, &crate::settings::Settings::secret_policy(config_dir))
    }

    /// `load`, judging secrets by `policy`.
    ///
    /// # Errors
    /// As `load`.
    pub fn load_with(config_dir: &Path, policy: &crate::secrets::Policy) -> Result<(Registry, usize), Vec<Diagnostic>> {
        let mut checks = crate::secrets::Checks::new(policy);
        let mut problems = Vec::new();
        let mapping_files = toml_files(&config_dir.join("mappings"), &mut problems);
        let mut files = mapping_files.len();
        let mappings = load_mappings(mapping_files, &mut problems);
        let connector_files = toml_files(&config_dir.join("connectors"), &mut problems);
        files += connector_files.len();
        let mut connectors = BTreeMap::new();
        let mut notes = Vec::new();
        for (path, text) in connector_files {
            notes.extend(snapshot_notes(&path, &text));
            let built = load_connector(&path, &text, config_dir, &mappings, &mut checks);
            match built {
                Ok(Some((id, c))) => {
                    connectors.insert(id, Arc::new(c));
                }
                Ok(None) => {}
                Err(ps) => problems.extend(ps),
            }
        }
        check_outbound_renders(config_dir, &mappings, &mut problems);
        check_mapping_connectors(config_dir, &mappings, &connectors, &mut problems);

        if problems.is_empty() {
            let Mappings { inbound: mappings, outbound, .. } = mappings;
            Ok((Registry { connectors, mappings, outbound, accepted_weak_secrets: checks.accepted, notes }, files))
        } else {
            Err(problems)
        }
    }
}

/// The first phase: every mapping file, inbound or outbound (`direction`).
fn load_mappings(files: Vec<(PathBuf, String)>, problems: &mut Vec<Diagnostic>) -> Mappings {
    let mut m = Mappings::default();
    for (path, text) in files {
        let id = stem(&path);
        let direction = match toml::from_str::<DirectionOnly>(&text) {
            Ok(d) => d.direction,
            Err(e) => {
                problems.push(Diagnostic::from_toml(&path, &text, &e));
                continue;
            }
        };
        let parsed = match direction.as_ref().map(|d| d.get_ref().as_str()) {
            None | Some("inbound") => {
                toml::from_str::<MappingFile>(&text).map_err(|e| Diagnostic::from_toml(&path, &text, &e)).map(|f| {
                    let connector = f.connector.clone();
                    (f.validate(&id).map(|v| m.inbound.insert(id.clone(), Arc::new(v))).map(drop), connector)
                })
            }
            Some("outbound") => {
                toml::from_str::<OutboundFile>(&text).map_err(|e| Diagnostic::from_toml(&path, &text, &e)).map(|f| {
                    let connector = f.connector.clone();
                    (f.validate(&id).map(|v| m.outbound.insert(id.clone(), Arc::new(v))).map(drop), connector)
                })
            }
            Some(other) => {
                let span = direction.as_ref().map(Spanned::span);
                problems.push(Diagnostic::at(
                    &path,
                    &text,
                    span,
                    format!("direction `{other}` is not inbound or outbound"),
                ));
                continue;
            }
        };
        match parsed {
            Err(d) => problems.push(d),
            Ok((Err(ps), _)) => {
                problems.extend(ps.into_iter().map(|p| Diagnostic::at(&path, &text, Some(p.span), p.message)))
            }
            Ok((Ok(()), connector)) => {
                m.sources.insert(id, MappingSource { path, text, connector });
            }
        }
    }
    m
}

/// One connector file: its id (the file name, not a reserved one), its kind, and the
/// connector that kind builds from it. `Ok(None)`: the file's problems were reported.
fn load_connector(
    path: &Path,
    text: &str,
    config_dir: &Path,
    mappings: &Mappings,
    checks: &mut crate::secrets::Checks<'_>,
) -> Result<Option<(ConnectorId, Connector)>, Vec<Diagnostic>> {
    let id = connector_id(path).map_err(|d| vec![d])?;
    let kind = match toml::from_str::<KindOnly>(text) {
        Ok(KindOnly { kind: Some(k) }) => k,
        Ok(KindOnly { kind: None }) => {
            let known = ConnectorKind::names().join(", ");
            return Err(vec![Diagnostic::at(path, text, None, format!("missing `kind` (one of: {known})"))]);
        }
        Err(e) => return Err(vec![Diagnostic::from_toml(path, text, &e)]),
    };
    let toml_error = |e: toml::de::Error| vec![(e.span(), e.message().trim().replace('\n', " "))];
    let built = match kind.parse::<ConnectorKind>() {
        Err(message) => Err(vec![(crate::diagnostics::locate(text, &["kind"]), message)]),
        Ok(ConnectorKind::Odoo) => toml::from_str::<odoo::Config>(text)
            .map_err(toml_error)
            .and_then(|cfg| cfg.build(&id, config_dir, &mappings.inbound, &mappings.outbound, checks)),
        Ok(
            kind @ (ConnectorKind::Rest
            | ConnectorKind::Hubspot
            | ConnectorKind::Xero
            | ConnectorKind::Stripe
            | ConnectorKind::Erpnext),
        ) => toml::from_str::<rest::Config>(text).map_err(toml_error).and_then(|cfg| {
            cfg.with_preset(presets::preset(kind)).build(
                &id,
                kind.name(),
                config_dir,
                &mappings.inbound,
                &mappings.outbound,
                checks,
            )
        }),
    };
    match built {
        Ok(c) => Ok(Some((id, c))),
        Err(ps) => Err(ps.into_iter().map(|(span, m)| Diagnostic::at(path, text, span, m)).collect()),
    }
}

/// Each operation of a connector file that sends the whole order snapshot
/// (`body = "snapshot"`): the customer's personal data leaves with it.
fn snapshot_notes(path: &Path, text: &str) -> Vec<Diagnostic> {
    let Ok(table) = toml::from_str::<toml::Table>(text) else { return Vec::new() };
    let Some(ops) = table.get("operations").and_then(toml::Value::as_table) else { return Vec::new() };
    ops.iter()
        .filter(|(_, op)| op.get("body").and_then(toml::Value::as_str) == Some(rest::SNAPSHOT_BODY))
        .map(|(name, _)| {
            Diagnostic::at(
                path,
                text,
                crate::diagnostics::locate(text, &["operations", name, "body"]),
                format!(
                    "note: operation {name} sends the whole order snapshot, the customer's personal data (ID number, phone, e-mail) with it; map only the fields the receiver needs (mappings/, direction = \"outbound\")"
                ),
            )
        })
        .collect()
}

/// A connector's id: its file name, unless that is invalid or a built-in's.
fn connector_id(path: &Path) -> Result<ConnectorId, Diagnostic> {
    let name = stem(path);
    match name.parse::<ConnectorId>() {
        Ok(_) if name == crate::engine::notify::MAIL_CONNECTOR => {
            Err(Diagnostic::file(path, "`mail` is the built-in e-mail connector; choose another name"))
        }
        Ok(_) if name == DOCUMENTS_CONNECTOR => {
            Err(Diagnostic::file(path, "`documents` is the built-in document generator; choose another name"))
        }
        Ok(id) => Ok(id),
        Err(e) => Err(Diagnostic::file(path, format!("file name: {e}"))),
    }
}

/// Outbound mappings render with a sample order: a misspelt field is found now, not
/// when the first effect dead-letters.
fn check_outbound_renders(config_dir: &Path, mappings: &Mappings, problems: &mut Vec<Diagnostic>) {
    let order = crate::sample::order();
    let mut references: Vec<String> = Vec::new();
    for (path, text) in toml_files(&config_dir.join("connectors"), &mut Vec::new()) {
        // Every operation a connector file names (even one with errors elsewhere).
        if let Ok(t) = toml::from_str::<toml::Table>(&text)
            && let Some(ops) = t.get("operations").and_then(toml::Value::as_table)
        {
            references.extend(ops.keys().map(|op| format!("{}.{op}", stem(&path))));
        }
    }
    for m in mappings.outbound.values() {
        let mut ctx = crate::mapping::outbound::sample_context(&order, &references);
        ctx["connector"] = m.connector.clone().into();
        if let Err(e) = m.render(&ctx)
            && let Some(source) = mappings.sources.get(&m.id)
        {
            problems.push(Diagnostic::at(
                &source.path,
                &source.text,
                Some(m.span.clone()),
                format!("{}: {} (rendered with a sample order)", e.field, e.reason),
            ));
        }
    }
}

/// Every mapping names a connector that exists. A connector file with errors is
/// reported once, not again by each mapping.
fn check_mapping_connectors(
    config_dir: &Path,
    mappings: &Mappings,
    connectors: &BTreeMap<ConnectorId, Arc<Connector>>,
    problems: &mut Vec<Diagnostic>,
) {
    for MappingSource { path, text, connector } in mappings.sources.values() {
        let file = config_dir.join("connectors").join(format!("{}.toml", connector.get_ref()));
        let known =
            file.exists() || connector.get_ref().parse::<ConnectorId>().is_ok_and(|c| connectors.contains_key(&c));
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
}

fn stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The `*.toml` files of a directory, sorted, with their text.
fn toml_files(dir: &Path, problems: &mut Vec<Diagnostic>) -> Vec<(PathBuf, String)> {
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
