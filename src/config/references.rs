//! Cross-checks: what one configuration file names in another. Notification rules
//! name templates, roles and people; scheduled reports name roles and people; the
//! approval matrix, SLAs, tasks, exceptions and dunning name roles; effects, tasks
//! and settlement name connector operations; the roles of approval chains must be
//! granted `decide_approval` in the policy table.
//! Every problem is located in the file that names the missing thing.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::Parsed;
use crate::connectors::Registry;
use crate::diagnostics::{Diagnostic, locate};
use crate::directory::Directory;
use crate::engine::Rules;
use crate::engine::notify::{self, Located, Notifications};
use crate::mail::Templates;
use crate::settings::Settings;

/// A file's path and text, to locate problems in it.
struct Source {
    path: PathBuf,
    text: String,
}

impl Source {
    fn read(path: PathBuf) -> Source {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        Source { path, text }
    }

    fn at(&self, span: Option<Range<usize>>, message: String) -> Diagnostic {
        Diagnostic::at(&self.path, &self.text, span, message)
    }
}

/// Runs every cross-check whose files parsed.
pub(super) fn check(config_dir: &Path, parsed: &Parsed, problems: &mut Vec<Diagnostic>) {
    if let (Some((n, located)), Some(settings)) = (&parsed.notifications, &parsed.settings) {
        let source = Source::read(crate::notifications::path(config_dir));
        notifications(&source, n, located, settings, parsed.templates.as_deref(), problems);
    }
    if let (Some((reports, located)), Some((n, _)), Some(settings)) =
        (&parsed.reports, &parsed.notifications, &parsed.settings)
    {
        let source = Source::read(crate::notifications::path(config_dir));
        scheduled_reports(&source, reports, located, &n.directory, settings, problems);
    }
    let (path, text) = parsed.rules_source(config_dir);
    let source = Source { path, text };
    // Every role the approval matrix and the SLAs name must have somebody to act.
    if let (Some(rules), Some((n, _))) = (&parsed.rules, &parsed.notifications)
        && !n.directory.is_empty()
    {
        approval_roles(&source, rules, &n.directory, problems);
        approval_grants(&source, rules, &n.directory, problems);
    }
    if let (Some(rules), Some((registry, _))) = (&parsed.rules, &parsed.registry) {
        effect_operations(&source, rules, registry, problems);
        push_operations(&source, rules, registry, problems);
    }
    // Every role execution names must have somebody in the directory.
    if let (Some(rules), Some((n, _))) = (&parsed.rules, &parsed.notifications)
        && !n.directory.is_empty()
    {
        execution_roles(&source, rules, &n.directory, problems);
    }
}

/// Each notification rule's template, audience, mail server and link key.
fn notifications(
    source: &Source,
    n: &Notifications,
    located: &[Located],
    settings: &Settings,
    templates: Option<&Templates>,
    problems: &mut Vec<Diagnostic>,
) {
    for (rule, at) in n.rules.iter().zip(located) {
        let mut bad = |m: String| problems.push(source.at(Some(at.span.clone()), m));
        if let Some(t) = templates
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

/// Each scheduled report's audience and mail server.
fn scheduled_reports(
    source: &Source,
    reports: &[crate::reports::ReportSpec],
    located: &[crate::reports::Located],
    directory: &Directory,
    settings: &Settings,
    problems: &mut Vec<Diagnostic>,
) {
    use crate::reports::Audience;
    for (r, at) in reports.iter().zip(located) {
        let mut bad = |m: String| problems.push(source.at(Some(at.span.clone()), format!("reports {}: {m}", r.name)));
        for a in &r.audience {
            match a {
                Audience::Role(role) if !directory.has_role(role) => {
                    bad(format!("nobody in config/directory.toml has role `{role}`"))
                }
                Audience::Person(p) if directory.person(p).is_none() => {
                    bad(format!("person `{p}` is not in config/directory.toml"))
                }
                _ => {}
            }
        }
        if settings.smtp.is_none() {
            bad("mail needs an [smtp] section in config/orderbridge.toml".into());
        }
    }
}

/// Roles in approval chains and SLA escalations.
fn approval_roles(source: &Source, rules: &Rules, directory: &Directory, problems: &mut Vec<Diagnostic>) {
    let text = &source.text;
    for (i, row) in rules.approval.matrix.iter().enumerate() {
        let roles: Vec<&String> = match &row.chain {
            Some(chain) => chain.iter().flat_map(|l| l.roles()).collect(),
            None => vec![&rules.approval.auto_role],
        };
        for role in roles {
            if !directory.has_role(role) && row.chain.is_some() {
                problems.push(source.at(
                    locate_matrix_row(text, i),
                    format!("approval matrix row {}: nobody in config/directory.toml has role `{role}`", row.id),
                ));
            }
        }
    }
    for (from, to) in &rules.sla.escalate_to {
        for role in [from, to] {
            if !directory.has_role(role) {
                problems.push(source.at(
                    locate(text, &["sla", "escalate_to"]),
                    format!("sla.escalate_to: nobody in config/directory.toml has role `{role}`"),
                ));
            }
        }
    }
}

/// Roles of approval chains that the policy table does not let decide an approval:
/// their holders could never approve (a role nobody holds is reported above).
fn approval_grants(source: &Source, rules: &Rules, directory: &Directory, problems: &mut Vec<Diagnostic>) {
    use crate::engine::access::Action;
    for (i, row) in rules.approval.matrix.iter().enumerate() {
        for (l, level) in row.chain.iter().flatten().enumerate() {
            for role in level.roles() {
                let granted =
                    directory.policy().actions_of(std::slice::from_ref(role)).any(|a| a == Action::DecideApproval);
                if !granted && directory.has_role(role) {
                    problems.push(source.at(
                        locate_chain_level(&source.text, i, l),
                        format!(
                            "approval matrix row {}, level {}: role `{role}` is not granted `decide_approval` in the policy table ([policy] in config/directory.toml), so its holders can never approve",
                            row.id,
                            l + 1
                        ),
                    ));
                }
            }
        }
    }
}

/// What a connector offers, for a message naming a missing operation.
fn offered(operations: &[String]) -> String {
    if operations.is_empty() { "none".into() } else { operations.join(", ") }
}

/// Each effect's connector and operation.
fn effect_operations(source: &Source, rules: &Rules, registry: &Registry, problems: &mut Vec<Diagnostic>) {
    for (i, e) in rules.effects.iter().enumerate() {
        let span = locate_array_item(&source.text, "effects", i);
        match registry.connectors.get(&e.connector) {
            None => problems.push(source.at(
                span,
                format!("effects: connector `{}` does not exist (no connectors/{}.toml)", e.connector, e.connector),
            )),
            Some(c) if !c.operations.contains(&e.operation) => problems.push(source.at(
                span,
                format!(
                    "effects: connector `{}` has no operation `{}` (it has: {})",
                    e.connector,
                    e.operation,
                    offered(&c.operations)
                ),
            )),
            Some(_) => {}
        }
    }
}

/// Task pushes and the invoice push name a connector operation too.
fn push_operations(source: &Source, rules: &Rules, registry: &Registry, problems: &mut Vec<Diagnostic>) {
    let text = &source.text;
    let mut pushes: Vec<(String, Option<Range<usize>>, &crate::domain::ConnectorId, &String)> = Vec::new();
    for (i, t) in rules.tasks.iter().enumerate() {
        if let Some((c, op)) = &t.push {
            pushes.push((format!("tasks {}", t.id), locate_array_item(text, "tasks", i), c, op));
        }
    }
    if let Some(s) = &rules.settlement {
        pushes.push(("settlement".into(), locate(text, &["settlement"]), &s.connector, &s.operation));
        if let Some((c, op)) = &s.voucher {
            pushes.push(("settlement.voucher".into(), locate(text, &["settlement"]), c, op));
        }
    }
    for (what, span, connector, op) in pushes {
        match registry.connectors.get(connector) {
            None => {
                problems.push(source.at(
                    span,
                    format!("{what}: connector `{connector}` does not exist (no connectors/{connector}.toml)"),
                ))
            }
            Some(c) if !c.operations.contains(op) => problems.push(source.at(
                span,
                format!("{what}: connector `{connector}` has no operation `{op}` (it has: {})", offered(&c.operations)),
            )),
            Some(_) => {}
        }
    }
}

/// Roles that tasks, exceptions and dunning name.
fn execution_roles(source: &Source, rules: &Rules, directory: &Directory, problems: &mut Vec<Diagnostic>) {
    let text = &source.text;
    let mut roles: Vec<(String, Option<Range<usize>>, &str)> = Vec::new();
    for (i, t) in rules.tasks.iter().enumerate() {
        roles.push((format!("tasks {}", t.id), locate_array_item(text, "tasks", i), t.department.as_str()));
    }
    if !rules.tasks.is_empty() || rules.settlement.is_some() {
        roles.push(("exceptions.owner".into(), locate(text, &["exceptions"]), rules.exceptions.owner.as_str()));
    }
    if let Some(r) = &rules.exceptions.escalate_to {
        roles.push(("exceptions.escalate_to".into(), locate(text, &["exceptions"]), r.as_str()));
    }
    for (i, d) in rules.dunning.iter().enumerate() {
        for a in &d.to {
            if let Some(r) = a.strip_prefix("role:") {
                roles.push((format!("dunning {}", d.id), locate_array_item(text, "dunning", i), r));
            }
        }
    }
    for (what, span, role) in roles {
        if !directory.has_role(role) {
            problems.push(source.at(span, format!("{what}: nobody in config/directory.toml has role `{role}`")));
        }
    }
}

fn locate_matrix_row(text: &str, index: usize) -> Option<Range<usize>> {
    use toml::de::{DeTable, DeValue};
    let table = DeTable::parse(text).ok()?;
    let root = DeValue::Table(table.into_inner());
    root.get("approval")?.get_ref().get("matrix")?.get_ref().get(index).map(|v| v.span())
}

/// Level `level` of the chain of matrix row `row`, or the row itself.
fn locate_chain_level(text: &str, row: usize, level: usize) -> Option<Range<usize>> {
    use toml::de::{DeTable, DeValue};
    let table = DeTable::parse(text).ok()?;
    let root = DeValue::Table(table.into_inner());
    let at = root.get("approval")?.get_ref().get("matrix")?.get_ref().get(row)?.get_ref().get("chain");
    at.and_then(|c| c.get_ref().get(level)).map(|v| v.span()).or_else(|| locate_matrix_row(text, row))
}

/// The `index`th entry of the array `key`, or the array itself.
fn locate_array_item(text: &str, key: &str, index: usize) -> Option<Range<usize>> {
    use toml::de::{DeTable, DeValue};
    let table = DeTable::parse(text).ok()?;
    let root = DeValue::Table(table.into_inner());
    root.get(key)?.get_ref().get(index).map(|v| v.span()).or_else(|| locate(text, &[key]))
}
