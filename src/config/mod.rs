//! Configuration: the one loader that `orderbridge run` and `orderbridge check` share.
//!
//! It reads `config/orderbridge.toml` (+ environment), `config/rules.toml`,
//! `connectors/*.toml` (with `mappings/*.toml`), `config/directory.toml`,
//! `config/notifications.toml` and the mail templates, in phases:
//! 1. **parse** each file kind on its own, collecting every problem with its
//!    `file:line:col` (`parse_files`; the kinds' own loaders do the reading);
//! 2. **cross-check** what one file names in another: connectors and operations,
//!    roles and people, templates (`references`);
//! 3. **build** the runtime values the daemon runs on: the built-in documents
//!    connector, rules with their notifications and time zone (`build`).
//!
//! Printing the problems is `crate::check`'s job; starting on the result is
//! `crate::startup`'s.

mod references;
mod rules;

use std::path::Path;
use std::sync::Arc;

pub use self::rules::load_rules;
pub(crate) use self::rules::{load_rules_file, load_rules_text, rules_path};
use crate::connectors::Registry;
use crate::diagnostics::{Diagnostic, locate};
use crate::directory::Directory;
use crate::engine::Rules;
use crate::engine::notify::{Located, Notifications};
use crate::mail::Templates;
use crate::settings::Settings;

/// Everything the daemon runs on, loaded and cross-checked.
pub struct Loaded {
    pub settings: Settings,
    pub registry: Registry,
    pub rules: Rules,
    /// Mail templates; `None` when the configuration sends no mail and has none.
    pub templates: Option<Arc<Templates>>,
    /// Scheduled management reports (`[[reports]]` in `config/notifications.toml`).
    pub(crate) reports: Vec<crate::reports::ReportSpec>,
    pub files: usize,
    /// Each part's version by content, with the files as read (kept at start).
    pub versions: crate::versions::Versions,
    /// Not problems, but worth saying (`check` prints them, `run` logs them): the
    /// example configuration's note on the demo secrets it accepted.
    pub notes: Vec<Diagnostic>,
}

/// Each file kind as parsed on its own; `None` where it had problems.
struct Parsed {
    settings: Option<Settings>,
    rules: Option<Rules>,
    /// With the number of connector and mapping files read.
    registry: Option<(Registry, usize)>,
    /// With where each rule is, for the cross-checks.
    notifications: Option<(Notifications, Vec<Located>)>,
    templates: Option<Arc<Templates>>,
    /// With where each is, for the cross-checks.
    reports: Option<(Vec<crate::reports::ReportSpec>, Vec<crate::reports::Located>)>,
    /// A candidate in place of `config/rules.toml` (`rules propose`): its path to
    /// show and its text.
    candidate: Option<(std::path::PathBuf, String)>,
}

impl Parsed {
    /// The rules file's path and text, to locate problems in it.
    fn rules_source(&self, config_dir: &Path) -> (std::path::PathBuf, String) {
        self.candidate.clone().unwrap_or_else(|| {
            let path = rules_path(config_dir);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            (path, text)
        })
    }
}

/// Loads and cross-checks everything; returns every problem found.
///
/// # Errors
/// Every problem of every file, in file order: each file's own, then what the files
/// say about each other.
pub fn load_all(config_dir: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    load_all_with(config_dir, None)
}

/// `load_all` with a candidate rules file (its path to show and its text) in place of
/// `config/rules.toml`: how `rules propose` checks a candidate in every phase.
///
/// # Errors
/// As `load_all`, with the candidate's problems located in it.
pub(crate) fn load_all_with(config_dir: &Path, candidate: Option<(&Path, &str)>) -> Result<Loaded, Vec<Diagnostic>> {
    let mut problems = Vec::new();
    let mut parsed = parse_files(config_dir, candidate, &mut problems);
    add_documents(config_dir, &mut parsed, &mut problems);
    check_anchor_push(config_dir, &parsed, &mut problems);
    references::check(config_dir, &parsed, &mut problems);
    build(config_dir, parsed, problems)
}

/// Phase 1: every file kind, each on its own.
fn parse_files(config_dir: &Path, candidate: Option<(&Path, &str)>, problems: &mut Vec<Diagnostic>) -> Parsed {
    let settings = Settings::load(config_dir).map_err(|p| problems.extend(p)).ok();
    let rules = match candidate {
        Some((path, text)) => load_rules_text(path, text, config_dir),
        None => load_rules(config_dir),
    }
    .map_err(|p| problems.extend(p))
    .ok();
    let candidate = candidate.map(|(p, t)| (p.to_owned(), t.to_owned()));
    let registry = Registry::load(config_dir).map_err(|p| problems.extend(p)).ok();
    let presentation = settings.as_ref().map(|s| s.presentation).unwrap_or_default();
    let directory = Directory::load(config_dir).map_err(|p| problems.extend(p)).ok();
    let notifications = directory
        .map(Arc::new)
        .and_then(|d| crate::notifications::load(config_dir, d, presentation).map_err(|p| problems.extend(p)).ok());
    let reports = crate::reports::load(config_dir).map_err(|p| problems.extend(p)).ok();
    let wants_mail = settings.as_ref().is_some_and(|s| s.smtp.is_some())
        || notifications.as_ref().is_some_and(|(n, _)| !n.rules.is_empty())
        || reports.as_ref().is_some_and(|(r, _)| !r.is_empty());
    let templates = if wants_mail || crate::mail::templates::dir(config_dir).exists() {
        Templates::load(config_dir, presentation).map_err(|p| problems.extend(p)).ok().map(Arc::new)
    } else {
        None
    };
    Parsed { settings, rules, registry, notifications, templates, reports, candidate }
}

/// Documents are generated by a built-in connector when their templates exist; the
/// rules may name a connector operation that receives them (checked here).
fn add_documents(config_dir: &Path, parsed: &mut Parsed, problems: &mut Vec<Diagnostic>) {
    let (Some((reg, _)), Some(t)) = (parsed.registry.as_mut(), &parsed.templates) else { return };
    // (With broken settings the defaults stand in: nothing runs then anyway.)
    let (store, locale, site) = parsed.settings.as_ref().map_or_else(
        || (config_dir.join("data"), crate::domain::order::Locale::ZhCn, String::new()),
        |s| (s.store_path.clone(), s.presentation.default_locale, s.site_name.clone()),
    );
    let mut docs = crate::documents::Documents::new(&store, t.clone(), locale, &site);
    if let Some((c, op)) = parsed.rules.as_ref().and_then(|r| r.documents_push.clone()) {
        match reg.connectors.get(&c).and_then(|x| x.push.clone().filter(|_| x.operations.contains(&op))) {
            Some(push) => docs = docs.delivering_to(push, op),
            None => {
                let (path, text) = parsed.candidate.clone().unwrap_or_else(|| {
                    let path = rules_path(config_dir);
                    (path.clone(), std::fs::read_to_string(&path).unwrap_or_default())
                });
                problems.push(Diagnostic::at(
                    &path,
                    &text,
                    locate(&text, &["documents"]),
                    format!("documents.push: connector `{c}` has no operation `{op}`"),
                ));
            }
        }
    }
    let kinds = docs.kinds();
    if !kinds.is_empty() {
        reg.add_builtin(crate::documents::DOCUMENTS_CONNECTOR, Arc::new(docs), kinds);
    }
}

/// `[audit] anchor_push` names a connector operation that exists.
fn check_anchor_push(config_dir: &Path, parsed: &Parsed, problems: &mut Vec<Diagnostic>) {
    let (Some(s), Some((reg, _))) = (&parsed.settings, &parsed.registry) else { return };
    let Some((c, op)) = &s.audit_anchor_push else { return };
    if reg.connectors.get(c).is_some_and(|x| x.push.is_some() && x.operations.contains(op)) {
        return;
    }
    let path = Settings::file_path(config_dir);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    problems.push(Diagnostic::at(
        &path,
        &text,
        locate(&text, &["audit", "anchor_push"]),
        format!("audit.anchor_push: connector `{c}` has no operation `{op}`"),
    ));
}

/// Phase 3: the runtime values, when no file had a problem.
fn build(config_dir: &Path, parsed: Parsed, problems: Vec<Diagnostic>) -> Result<Loaded, Vec<Diagnostic>> {
    let Parsed { settings, rules, registry, notifications, templates, reports, .. } = parsed;
    match (settings, rules, registry, notifications, reports) {
        (Some(settings), Some(mut rules), Some((registry, n)), Some((notifications, _)), Some((reports, _)))
            if problems.is_empty() =>
        {
            rules.notify = Arc::new(notifications);
            rules.sla.calendar.tz = settings.presentation.time_zone;
            let versions = crate::versions::Versions::compute(config_dir, Some(&rules.version));
            rules.config_version.clone_from(&versions.id);
            let mut accepted = settings.accepted_weak_secrets.clone();
            for r in &registry.accepted_weak_secrets {
                if !accepted.contains(r) {
                    accepted.push(r.clone());
                }
            }
            let mut notes: Vec<Diagnostic> = settings.secret_policy.note(&accepted).into_iter().collect();
            notes.extend(settings.review_off.clone());
            notes.extend(registry.notes.iter().cloned());
            Ok(Loaded { settings, registry, rules, templates, reports, files: n + 2, versions, notes })
        }
        _ => Err(problems),
    }
}
