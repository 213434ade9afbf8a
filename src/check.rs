//! Loading and checking every configuration file: `config/orderbridge.toml`,
//! `config/rules.toml`, `connectors/*.toml`, `mappings/*.toml`. `orderbridge check`
//! prints the diagnostics; `orderbridge run` refuses to start on the same ones.

use std::path::Path;
use std::sync::Arc;

use crate::connectors::Registry;
use crate::diagnostics::{Diagnostic, locate};
use crate::directory::Directory;
use crate::engine::Rules;
use crate::engine::notify;
use crate::engine::rules::RulesFile;
use crate::mail::Templates;
use crate::mail::templates::LOCALES;
use crate::settings::Settings;

/// Exit code for configuration errors (sysexits EX_CONFIG).
pub const EX_CONFIG: i32 = 78;

/// Everything the daemon runs on, loaded and cross-checked.
pub struct Loaded {
    pub settings: Settings,
    pub registry: Registry,
    pub rules: Rules,
    /// Mail templates; `None` when the configuration sends no mail and has none.
    pub templates: Option<Arc<Templates>>,
    pub files: usize,
}

pub fn rules_path(config_dir: &Path) -> std::path::PathBuf {
    config_dir.join("config").join("rules.toml")
}

/// Loads `config/rules.toml`.
pub fn load_rules(config_dir: &Path) -> Result<Rules, Vec<Diagnostic>> {
    load_rules_file(&rules_path(config_dir), config_dir)
}

/// Loads a rules file (e.g. a candidate for `rules diff`); files it names are read
/// from `config_dir/config/`.
pub fn load_rules_file(path: &Path, config_dir: &Path) -> Result<Rules, Vec<Diagnostic>> {
    let path = path.to_owned();
    let text =
        std::fs::read_to_string(&path).map_err(|e| vec![Diagnostic::file(&path, format!("cannot read: {e}"))])?;
    let file: RulesFile = toml::from_str(&text).map_err(|e| vec![Diagnostic::from_toml(&path, &text, &e)])?;
    let config = config_dir.join("config");
    let read = |name: &str| -> Result<String, String> {
        std::fs::read_to_string(config.join(name)).map_err(|e| format!("cannot read: {e}"))
    };
    file.validate(&read)
        .map_err(|ps| ps.into_iter().map(|p| Diagnostic::at(&path, &text, Some(p.span), p.message)).collect())
}

/// Loads and cross-checks everything; returns every problem found.
pub fn load_all(config_dir: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    let mut problems = Vec::new();
    let settings = Settings::load(config_dir).map_err(|p| problems.extend(p)).ok();
    let rules = load_rules(config_dir).map_err(|p| problems.extend(p)).ok();
    let registry = Registry::load(config_dir).map_err(|p| problems.extend(p)).ok();
    let presentation = settings.as_ref().map(|s| s.presentation).unwrap_or_default();
    let directory = Directory::load(config_dir).map_err(|p| problems.extend(p)).ok();
    let notifications = directory
        .map(Arc::new)
        .and_then(|d| notify::load(config_dir, d, presentation).map_err(|p| problems.extend(p)).ok());
    let wants_mail = settings.as_ref().is_some_and(|s| s.smtp.is_some())
        || notifications.as_ref().is_some_and(|(n, _)| !n.rules.is_empty());
    let templates = if wants_mail || crate::mail::templates::dir(config_dir).exists() {
        Templates::load(config_dir, presentation).map_err(|p| problems.extend(p)).ok().map(Arc::new)
    } else {
        None
    };
    if let (Some((n, located)), Some(settings)) = (&notifications, &settings) {
        let path = notify::path(config_dir);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for (rule, at) in n.rules.iter().zip(located) {
            let mut bad = |m: String| problems.push(Diagnostic::at(&path, &text, Some(at.span.clone()), m));
            if let Some(t) = &templates
                && !t.has(&rule.template)
            {
                bad(format!(
                    "notify: template `{}` does not exist (no config/templates/<locale>/{}.txt)",
                    rule.template, rule.template
                ));
            }
            for a in &rule.to {
                match a {
                    notify::Audience::Role(r) if !n.directory.has_role(r) => {
                        bad(format!("notify: nobody in config/directory.toml has role `{r}`"))
                    }
                    notify::Audience::Person(p) if n.directory.person(p).is_none() => {
                        bad(format!("notify: person `{p}` is not in config/directory.toml"))
                    }
                    _ => {}
                }
            }
            if settings.smtp.is_none() {
                bad("notify: mail needs an [smtp] section in config/orderbridge.toml".into());
            }
            if rule.link.is_some() && settings.links.is_none() {
                bad("notify: a mail with a link needs [links] secret in config/orderbridge.toml".into());
            }
        }
    }

    // Every role the approval matrix and the SLAs name must have somebody to act.
    if let (Some(rules), Some((n, _))) = (&rules, &notifications)
        && !n.directory.is_empty()
    {
        let path = rules_path(config_dir);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for (i, row) in rules.approval.matrix.iter().enumerate() {
            let roles: Vec<&String> = match &row.chain {
                Some(chain) => chain.iter().flat_map(|l| l.roles()).collect(),
                None => vec![&rules.approval.auto_role],
            };
            for role in roles {
                if !n.directory.has_role(role) && row.chain.is_some() {
                    problems.push(Diagnostic::at(
                        &path,
                        &text,
                        locate_matrix_row(&text, i),
                        format!("approval matrix row {}: nobody in config/directory.toml has role `{role}`", row.id),
                    ));
                }
            }
        }
        for (from, to) in &rules.sla.escalate_to {
            for role in [from, to] {
                if !n.directory.has_role(role) {
                    problems.push(Diagnostic::at(
                        &path,
                        &text,
                        locate(&text, &["sla", "escalate_to"]),
                        format!("sla.escalate_to: nobody in config/directory.toml has role `{role}`"),
                    ));
                }
            }
        }
    }

    if let (Some(rules), Some((registry, _))) = (&rules, &registry) {
        let path = rules_path(config_dir);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for (i, e) in rules.effects.iter().enumerate() {
            let span = locate_effect(&text, i);
            match registry.connectors.get(&e.connector) {
                None => problems.push(Diagnostic::at(
                    &path,
                    &text,
                    span,
                    format!("effects: connector `{}` does not exist (no connectors/{}.toml)", e.connector, e.connector),
                )),
                Some(c) if !c.operations.contains(&e.operation) => problems.push(Diagnostic::at(
                    &path,
                    &text,
                    span,
                    format!(
                        "effects: connector `{}` has no operation `{}` (it has: {})",
                        e.connector,
                        e.operation,
                        if c.operations.is_empty() { "none".into() } else { c.operations.join(", ") }
                    ),
                )),
                Some(_) => {}
            }
        }
        // Task pushes and the invoice push name a connector operation too.
        let mut pushes: Vec<(String, Option<std::ops::Range<usize>>, &crate::domain::ConnectorId, &String)> =
            Vec::new();
        for (i, t) in rules.tasks.iter().enumerate() {
            if let Some((c, op)) = &t.push {
                pushes.push((format!("tasks {}", t.id), locate_array_item(&text, "tasks", i), c, op));
            }
        }
        if let Some(s) = &rules.settlement {
            pushes.push(("settlement".into(), locate(&text, &["settlement"]), &s.connector, &s.operation));
        }
        for (what, span, connector, op) in pushes {
            match registry.connectors.get(connector) {
                None => problems.push(Diagnostic::at(
                    &path,
                    &text,
                    span,
                    format!("{what}: connector `{connector}` does not exist (no connectors/{connector}.toml)"),
                )),
                Some(c) if !c.operations.contains(op) => problems.push(Diagnostic::at(
                    &path,
                    &text,
                    span,
                    format!(
                        "{what}: connector `{connector}` has no operation `{op}` (it has: {})",
                        if c.operations.is_empty() { "none".into() } else { c.operations.join(", ") }
                    ),
                )),
                Some(_) => {}
            }
        }
    }

    // Every role execution names must have somebody in the directory.
    if let (Some(rules), Some((n, _))) = (&rules, &notifications)
        && !n.directory.is_empty()
    {
        let path = rules_path(config_dir);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut roles: Vec<(String, Option<std::ops::Range<usize>>, &str)> = Vec::new();
        for (i, t) in rules.tasks.iter().enumerate() {
            roles.push((format!("tasks {}", t.id), locate_array_item(&text, "tasks", i), t.department.as_str()));
        }
        if !rules.tasks.is_empty() || rules.settlement.is_some() {
            roles.push(("exceptions.owner".into(), locate(&text, &["exceptions"]), rules.exceptions.owner.as_str()));
        }
        if let Some(r) = &rules.exceptions.escalate_to {
            roles.push(("exceptions.escalate_to".into(), locate(&text, &["exceptions"]), r.as_str()));
        }
        for (i, d) in rules.dunning.iter().enumerate() {
            for a in &d.to {
                if let Some(r) = a.strip_prefix("role:") {
                    roles.push((format!("dunning {}", d.id), locate_array_item(&text, "dunning", i), r));
                }
            }
        }
        for (what, span, role) in roles {
            if !n.directory.has_role(role) {
                problems.push(Diagnostic::at(
                    &path,
                    &text,
                    span,
                    format!("{what}: nobody in config/directory.toml has role `{role}`"),
                ));
            }
        }
    }

    match (settings, rules, registry, notifications) {
        (Some(settings), Some(mut rules), Some((registry, n)), Some((notifications, _))) if problems.is_empty() => {
            rules.notify = Arc::new(notifications);
            rules.sla.calendar.tz = settings.presentation.time_zone;
            Ok(Loaded { settings, registry, rules, templates, files: n + 2 })
        }
        _ => Err(problems),
    }
}

fn locate_matrix_row(text: &str, index: usize) -> Option<std::ops::Range<usize>> {
    use toml::de::{DeTable, DeValue};
    let table = DeTable::parse(text).ok()?;
    let root = DeValue::Table(table.into_inner());
    root.get("approval")?.get_ref().get("matrix")?.get_ref().get(index).map(|v| v.span())
}

fn locate_array_item(text: &str, key: &str, index: usize) -> Option<std::ops::Range<usize>> {
    use toml::de::{DeTable, DeValue};
    let table = DeTable::parse(text).ok()?;
    let root = DeValue::Table(table.into_inner());
    root.get(key)?.get_ref().get(index).map(|v| v.span()).or_else(|| locate(text, &[key]))
}

fn locate_effect(text: &str, index: usize) -> Option<std::ops::Range<usize>> {
    use toml::de::{DeTable, DeValue};
    let table = DeTable::parse(text).ok()?;
    let root = DeValue::Table(table.into_inner());
    root.get("effects")?.get_ref().get(index).map(|v| v.span()).or_else(|| locate(text, &["effects"]))
}

/// Counts the files `check` looks at (for its summary line).
pub fn count_files(config_dir: &Path) -> usize {
    let n = |d: &str| {
        std::fs::read_dir(config_dir.join(d))
            .map(|r| r.filter_map(Result::ok).filter(|e| e.path().extension().is_some_and(|x| x == "toml")).count())
            .unwrap_or(0)
    };
    let templates = LOCALES
        .iter()
        .map(|l| {
            std::fs::read_dir(crate::mail::templates::dir(config_dir).join(l.as_str()))
                .map(|r| r.filter_map(Result::ok).filter(|e| e.path().is_file()).count())
                .unwrap_or(0)
        })
        .sum::<usize>();
    n("config") + n("connectors") + n("mappings") + templates
}

/// `orderbridge check`: prints every problem and a summary; returns the exit code.
pub fn run_check(config_dir: &Path) -> i32 {
    let files = count_files(config_dir);
    match load_all(config_dir) {
        Ok(_) => {
            println!("{files} files checked, 0 problems");
            0
        }
        Err(problems) => {
            for p in &problems {
                println!("{p}");
            }
            println!("{files} files checked, {} problem{}", problems.len(), if problems.len() == 1 { "" } else { "s" });
            EX_CONFIG
        }
    }
}

/// Exit code of `check --online` when a system cannot be reached or refuses us.
pub const EX_UNAVAILABLE: i32 = 69;

/// `orderbridge check --online`: calls each connector's health check (and the SMTP
/// server), at most 20 seconds each; prints one line per system.
pub async fn run_online(config_dir: &Path) -> i32 {
    let Ok(loaded) = load_all(config_dir) else { return EX_CONFIG };
    let limit = std::time::Duration::from_secs(20);
    let mut failed = 0;
    let mut report = |name: &str, r: Result<String, String>| match r {
        Ok(m) => println!("{name}: ok ({m})"),
        Err(e) => {
            failed += 1;
            println!("{name}: FAILED: {e}");
        }
    };
    for c in loaded.registry.connectors.values() {
        match &c.health {
            None => println!("{}: no health check ({} kind without [health])", c.id, c.kind),
            Some(h) => {
                let r = match tokio::time::timeout(limit, h.check()).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("no answer within {} s", limit.as_secs())),
                };
                report(c.id.as_str(), r);
            }
        }
    }
    if let (Some(smtp), Some(templates)) = (&loaded.settings.smtp, &loaded.templates) {
        let public = loaded.settings.public_url.clone().unwrap_or_default();
        let r = match crate::mail::Mailer::new(smtp, templates.clone(), None, &loaded.settings.site_name, &public) {
            Ok(m) => match tokio::time::timeout(limit, m.test_connection()).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {} s", limit.as_secs())),
            },
            Err(e) => Err(e),
        };
        report(crate::engine::notify::MAIL_CONNECTOR, r);
    }
    if failed == 0 {
        println!("every system answered");
        0
    } else {
        println!("{failed} system{} did not answer as expected", if failed == 1 { "" } else { "s" });
        EX_UNAVAILABLE
    }
}
