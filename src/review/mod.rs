//! Reviewed rule changes: a candidate rules file is proposed (checked by the one
//! configuration loader, kept by content version, its impact on history reported),
//! approved by a second person holding `approve_rules` who is not the proposer,
//! activated at a set time without a restart, and rolled back in one step. Every
//! change is a line of the hash-chained change log (`log`); the live rules are one
//! swappable value (`live`) that the running daemon follows (`LiveRules::sync`).
//!
//! The state (which versions are proposed, approved, active when) is computed from
//! the log alone, by the functions here; the CLI (`crate::cli::review`) and the admin
//! API (`crate::http::rules`) only name the actor and call them. At start, the
//! daemon runs only approved rules unless `rules.require_review = false` (`at_start`).
//! An approved version may also run in shadow beside the live rules (`shadow`).

pub(crate) mod candidate;
pub(crate) mod live;
pub(crate) mod log;
pub(crate) mod shadow;

use std::path::Path;

use chrono::{DateTime, Utc};

pub use self::live::LiveRules;
use self::log::{Change, Draft, LogError, What};
pub use self::shadow::Shadow;
use crate::engine::Rules;
use crate::engine::access::Channel;
use crate::versions::{Versions, kept, short};

/// Why a change was refused. Shown to the person as it is.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReviewError {
    #[error(
        "no proposed rules version starts with `{0}` (see `orderbridge rules changes`; propose one with `orderbridge rules propose FILE`)"
    )]
    NotProposed(String),
    #[error("`{0}` is ambiguous: it starts {1}")]
    Ambiguous(String, String),
    #[error(
        "{who} proposed rules {version} and may not approve it: a second person with the rules_approver role approves a change"
    )]
    OwnProposal { who: String, version: String },
    #[error("rules {version} is approved already (by {by})")]
    AlreadyApproved { version: String, by: String },
    #[error(
        "rules {0} is not approved: a second person with the rules_approver role approves it first (`orderbridge rules approve {0} --by PERSON`)"
    )]
    NotApproved(String),
    #[error("rules {0} is the live rules already")]
    AlreadyActive(String),
    #[error("nothing to roll back: no earlier rules version was live")]
    NothingToRollBack,
    #[error("rules {0} runs in shadow already")]
    AlreadyShadowed(String),
    #[error("no rules version runs in shadow")]
    NoShadow,
    /// Not allowed by the policy table, or not a person of the directory.
    #[error("{0}")]
    Denied(String),
    /// The candidate has problems (each `file:line:col: …`).
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// The name a channel has in the change log.
pub(crate) fn channel_name(c: Channel) -> &'static str {
    match c {
        Channel::Api => "api",
        Channel::Console => "console",
        Channel::MailLink => "mail_link",
        Channel::Cli => "cli",
    }
}

fn effective(c: &Change) -> DateTime<Utc> {
    c.effective_at.unwrap_or(c.at)
}

/// The proposal of `version`, if any.
pub(crate) fn proposal<'a>(log: &'a [Change], version: &str) -> Option<&'a Change> {
    log.iter().find(|c| c.what == What::Proposed && c.version == version)
}

/// The approval of `version`, if any.
pub(crate) fn approval<'a>(log: &'a [Change], version: &str) -> Option<&'a Change> {
    log.iter().find(|c| c.what == What::Approved && c.version == version)
}

/// The approved version `prefix` names: what may go live or run in shadow.
///
/// # Errors
/// Not proposed (or ambiguous), or not approved.
pub(crate) fn resolve_approved(log: &[Change], prefix: &str) -> Result<String, ReviewError> {
    let version = resolve(log, prefix)?;
    if approval(log, &version).is_none() {
        return Err(ReviewError::NotApproved(short(&version).to_owned()));
    }
    Ok(version)
}

/// The proposed version `prefix` names (its hash or a unique start of it).
///
/// # Errors
/// None or several proposed versions start so.
pub(crate) fn resolve(log: &[Change], prefix: &str) -> Result<String, ReviewError> {
    let p = prefix.trim().to_ascii_lowercase();
    let mut found: Vec<&str> = log
        .iter()
        .filter(|c| c.what == What::Proposed && !p.is_empty() && c.version.starts_with(&p))
        .map(|c| c.version.as_str())
        .collect();
    found.dedup();
    match found.as_slice() {
        [] => Err(ReviewError::NotProposed(prefix.to_owned())),
        [one] => Ok((*one).to_owned()),
        many => {
            Err(ReviewError::Ambiguous(prefix.to_owned(), many.iter().map(|v| short(v)).collect::<Vec<_>>().join(", ")))
        }
    }
}

/// Activations and rollbacks in the order they take effect; an activation still
/// scheduled when a later rollback was recorded is cancelled by it.
fn switches(log: &[Change]) -> Vec<&Change> {
    let mut out: Vec<&Change> = log
        .iter()
        .filter(|c| matches!(c.what, What::Activated | What::RolledBack))
        .filter(|a| {
            a.what == What::RolledBack
                || !log.iter().any(|r| r.what == What::RolledBack && r.seq > a.seq && effective(a) > r.at)
        })
        .collect();
    out.sort_by_key(|c| (effective(c), c.seq));
    out
}

/// The change that made the live rules at `t` (`None`: the log names none yet).
pub(crate) fn active_at(log: &[Change], t: DateTime<Utc>) -> Option<&Change> {
    switches(log).into_iter().rev().find(|c| effective(c) <= t)
}

/// Activations recorded but not in effect yet at `t`.
pub(crate) fn scheduled(log: &[Change], t: DateTime<Utc>) -> Vec<&Change> {
    switches(log).into_iter().filter(|c| effective(c) > t).collect()
}

/// Who acts on a change, as the log records them.
#[derive(Clone, Debug)]
pub(crate) struct Actor {
    /// A directory person's id, `admin:NAME` or `client:NAME`.
    pub(crate) id: String,
    /// The directory person, when it is one (only a person approves).
    pub(crate) person: Option<String>,
    pub(crate) channel: Channel,
}

/// Proposing `version` (already kept and checked): a line, unless it was proposed
/// before (then that proposal).
///
/// # Errors
/// The log could not be read or written.
pub(crate) fn propose(
    data: &Path,
    version: &str,
    by: &Actor,
    note: Option<String>,
    now: DateTime<Utc>,
) -> Result<Change, ReviewError> {
    if let Some(p) = proposal(&log::read(data)?, version) {
        return Ok(p.clone());
    }
    log::append(data, now, |_| {
        Ok::<_, ReviewError>(Draft {
            what: What::Proposed,
            version: version.to_owned(),
            by: by.id.clone(),
            channel: channel_name(by.channel).to_owned(),
            note,
            effective_at: None,
            from: None,
        })
    })
}

/// A second person's approval of a proposed version (the caller has checked that
/// the policy table grants them `approve_rules`).
///
/// # Errors
/// Not proposed, not a person, the proposer themselves, or approved already.
pub(crate) fn approve(
    data: &Path,
    prefix: &str,
    by: &Actor,
    note: Option<String>,
    now: DateTime<Utc>,
) -> Result<Change, ReviewError> {
    log::append(data, now, |log| {
        let version = resolve(log, prefix)?;
        let Some(person) = &by.person else {
            return Err(ReviewError::Denied(format!(
                "`{}` is not a person of the directory: a rules change is approved by a person with the rules_approver role",
                by.id
            )));
        };
        let proposed = proposal(log, &version).expect("resolve finds proposed versions");
        if proposed.by == *person {
            return Err(ReviewError::OwnProposal { who: person.clone(), version: short(&version).to_owned() });
        }
        if let Some(a) = approval(log, &version) {
            return Err(ReviewError::AlreadyApproved { version: short(&version).to_owned(), by: a.by.clone() });
        }
        Ok(Draft {
            what: What::Approved,
            version,
            by: person.clone(),
            channel: channel_name(by.channel).to_owned(),
            note,
            effective_at: None,
            from: None,
        })
    })
}

/// Makes an approved version the live rules at `at` (now when `None`). `running`
/// is the rules version live now when the log names none (the configuration's).
///
/// # Errors
/// Not proposed or not approved, or live already with nothing scheduled.
pub(crate) fn activate(
    data: &Path,
    prefix: &str,
    at: Option<DateTime<Utc>>,
    by: &Actor,
    running: &str,
    now: DateTime<Utc>,
) -> Result<Change, ReviewError> {
    log::append(data, now, |log| {
        let version = resolve_approved(log, prefix)?;
        let live = active_at(log, now).map_or(running, |c| c.version.as_str());
        if live == version && at.is_none() && scheduled(log, now).is_empty() {
            return Err(ReviewError::AlreadyActive(short(&version).to_owned()));
        }
        Ok(Draft {
            what: What::Activated,
            version,
            by: by.id.clone(),
            channel: channel_name(by.channel).to_owned(),
            note: None,
            effective_at: Some(at.unwrap_or(now).max(now)),
            from: Some(live.to_owned()),
        })
    })
}

/// Returns to the version live before the current one (cancelling any activation
/// still scheduled).
///
/// # Errors
/// No earlier version was live.
pub(crate) fn rollback(data: &Path, by: &Actor, now: DateTime<Utc>) -> Result<Change, ReviewError> {
    log::append(data, now, |log| {
        let done: Vec<&Change> = switches(log).into_iter().filter(|c| effective(c) <= now).collect();
        let Some(current) = done.last() else { return Err(ReviewError::NothingToRollBack) };
        let before = done.iter().rev().skip(1).map(|c| c.version.as_str()).find(|v| *v != current.version);
        let Some(target) = before.or(current.from.as_deref()).filter(|v| *v != current.version) else {
            return Err(ReviewError::NothingToRollBack);
        };
        Ok(Draft {
            what: What::RolledBack,
            version: target.to_owned(),
            by: by.id.clone(),
            channel: channel_name(by.channel).to_owned(),
            note: None,
            effective_at: Some(now),
            from: Some(current.version.clone()),
        })
    })
}

/// What the daemon runs at start.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AtStart {
    /// `config/rules.toml` (approved, or review is off).
    File,
    /// The version the change log made live, which is not `config/rules.toml`.
    Kept(String),
}

/// Decides what the daemon starts on: with review on, `config/rules.toml` must be an
/// approved version; when the log made another version live since, that one runs.
/// With review off the file runs. When the file runs and the log names another
/// version live, its start is recorded as an activation (so a rollback knows it).
///
/// # Errors
/// The file's version was not approved (the message says how to get it approved), or
/// the log does not verify.
pub(crate) fn at_start(
    data: &Path,
    file: &Versions,
    require_review: bool,
    now: DateTime<Utc>,
) -> Result<AtStart, ReviewError> {
    let part = file.part("rules").expect("the rules are always a part");
    let log = log::read(data)?;
    let active = active_at(&log, now).map(|c| c.version.clone());
    if require_review && approval(&log, &part.hash).is_none() {
        return Err(ReviewError::Denied(refusal(&part.hash, part.label.as_deref())));
    }
    match active {
        Some(a) if a == part.hash => Ok(AtStart::File),
        Some(a) if require_review => Ok(AtStart::Kept(a)),
        from => {
            let note = if require_review {
                "config/rules.toml at start"
            } else {
                "config/rules.toml at start, unreviewed (rules.require_review = false)"
            };
            log::append(data, now, |_| {
                Ok::<_, ReviewError>(Draft {
                    what: What::Activated,
                    version: part.hash.clone(),
                    by: "system".into(),
                    channel: "start".into(),
                    note: Some(note.into()),
                    effective_at: Some(now),
                    from,
                })
            })?;
            Ok(AtStart::File)
        }
    }
}

/// The live rules the daemon starts on (`at_start`), with their versions kept and
/// this load recorded.
///
/// # Errors
/// As `at_start`; a kept version that no longer loads; the versions not kept.
pub(crate) fn start(
    data: &Path,
    rules: Rules,
    versions: Versions,
    require_review: bool,
    now: DateTime<Utc>,
) -> Result<LiveRules, ReviewError> {
    let (rules, versions) = match at_start(data, &versions, require_review, now)? {
        AtStart::File => (rules, versions),
        AtStart::Kept(v) => {
            let built = build(data, &v, &rules, &versions)?;
            tracing::warn!(
                rules_version = short(&v),
                "config/rules.toml is rules version {}, not the live version {} the change log activated: running {} (activate the file's version to run it)",
                short(&versions.part("rules").map(|p| p.hash.clone()).unwrap_or_default()),
                short(&v),
                short(&v)
            );
            built
        }
    };
    kept::record(data, &versions, now).map_err(LogError::from)?;
    Ok(LiveRules::new(rules, versions))
}

fn refusal(version: &str, label: Option<&str>) -> String {
    let v = short(version);
    format!(
        "refusing to start: config/rules.toml is rules version {v}{}, which nobody approved (rules.require_review is on). Propose it with `orderbridge rules propose config/rules.toml --by PERSON`, have a second person with the rules_approver role approve it with `orderbridge rules approve {v} --by PERSON`, and start again. For development only: `orderbridge run --allow-unreviewed-rules`, or `[rules] require_review = false`",
        label.map(|l| format!(" (\"{l}\")")).unwrap_or_default()
    )
}

/// The rules of a kept version, built to run beside what runs now (the same
/// notifications, directory and time zone), with the configuration's versions it
/// makes.
///
/// # Errors
/// The version is not kept, or its files no longer load.
pub(crate) fn build(
    data: &Path,
    version: &str,
    running: &Rules,
    versions: &Versions,
) -> Result<(Rules, Versions), ReviewError> {
    let part = kept::part(data, "rules", version).map_err(LogError::from)?.ok_or_else(|| {
        ReviewError::Invalid(vec![format!("rules version {} is not kept under {}", short(version), data.display())])
    })?;
    let files = kept::files_dir(data, &part);
    let mut contents = Vec::new();
    for f in &part.files {
        contents.push((f.path.clone(), kept::file(data, &part, &f.path).map_err(LogError::from)?));
    }
    let mut rules = crate::config::load_rules_file(&files.join("config/rules.toml"), &files)
        .map_err(|ps| ReviewError::Invalid(ps.iter().map(ToString::to_string).collect()))?;
    rules.notify = running.notify.clone();
    rules.sla.calendar.tz = running.sla.calendar.tz;
    let versions = versions.with_part(part, contents);
    rules.config_version.clone_from(&versions.id);
    Ok((rules, versions))
}

#[cfg(test)]
mod tests;
