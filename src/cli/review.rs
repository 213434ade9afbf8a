//! `rules propose | approve | activate | rollback | changes | shadow | shadow-report`:
//! reviewed rule changes and shadow runs from the command line (`crate::review`).
//! The person is named with `--by` (the CLI
//! runs beside the data directory, so it names who acts; the API takes the token's
//! principal instead) and must hold the action in the policy table. They write the
//! change log under the data directory whether or not the daemon runs; a running
//! daemon follows it within a sweep.

use std::path::Path;

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use super::source::Source;
use crate::engine::access::{Action, Channel, Principal, authorize};
use crate::review::log::{self, Change};
use crate::review::{self, Actor};
use crate::versions::{kept, short};

/// `--by PERSON`, checked against the directory and the policy table.
fn person(dir: &Path, id: &str, action: Action) -> anyhow::Result<Actor> {
    let directory = crate::directory::Directory::load(dir)
        .map_err(|p| anyhow::anyhow!(p.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))?;
    let principal = Principal::Person { id: id.to_owned(), scopes: None, channel: Channel::Cli };
    authorize(&principal, action, directory.policy(), &directory).map_err(anyhow::Error::msg)?;
    Ok(Actor { id: id.to_owned(), person: Some(id.to_owned()), channel: Channel::Cli })
}

/// One change as a line: `seq at what version by (channel) …`.
pub(super) fn line(c: &Change) -> String {
    let mut s = format!(
        "{:>3} {} {:<11} {} by {} ({})",
        c.seq,
        c.at.format("%Y-%m-%dT%H:%M:%SZ"),
        c.what.name(),
        short(&c.version),
        c.by,
        c.channel
    );
    if let Some(at) = c.effective_at.filter(|at| *at != c.at) {
        s.push_str(&format!(", effective {}", at.format("%Y-%m-%dT%H:%M:%SZ")));
    }
    if let Some(from) = &c.from {
        s.push_str(&format!(", from {}", short(from)));
    }
    if let Some(n) = &c.note {
        s.push_str(&format!(": {n}"));
    }
    s
}

pub(super) async fn propose(
    dir: &Path,
    file: &Path,
    note: Option<String>,
    by: &str,
    last: Option<usize>,
) -> anyhow::Result<i32> {
    let actor = person(dir, by, Action::ProposeRules)?;
    let data = super::versions::data_dir(dir)?;
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let candidate = match review::candidate::check_and_keep(dir, &data, file, &text) {
        Ok(c) => c,
        Err(review::ReviewError::Invalid(problems)) => {
            problems.iter().for_each(|p| eprintln!("{p}"));
            eprintln!("not proposed: {} problem(s) in {}", problems.len(), file.display());
            return Ok(crate::check::EX_CONFIG);
        }
        Err(e) => return Err(e.into()),
    };
    println!("impact on the stored orders:");
    if has_store(dir)? {
        let report = super::config_tools::impact(&Source::open(dir).await?, &candidate.rules, last).await?;
        report.lines().iter().for_each(|l| println!("  {l}"));
    } else {
        println!("  no store yet under {}: no orders to replay", data.display());
    }
    let change = review::propose(&data, &candidate.part.hash, &actor, note, Utc::now())?;
    if change.by != actor.id {
        println!("rules {} was proposed already: {}", short(&change.version), line(&change));
    }
    println!("candidate {}", change.version);
    eprintln!(
        "next: a second person with the rules_approver role runs `orderbridge rules approve {} --by PERSON`",
        short(&change.version)
    );
    Ok(0)
}

pub(super) fn approve(dir: &Path, version: &str, by: &str, note: Option<String>) -> anyhow::Result<i32> {
    let actor = person(dir, by, Action::ApproveRules)?;
    let data = super::versions::data_dir(dir)?;
    let c = review::approve(&data, version, &actor, note, Utc::now())?;
    println!("{}", line(&c));
    Ok(0)
}

pub(super) fn activate(dir: &Path, version: &str, at: Option<&str>, by: &str) -> anyhow::Result<i32> {
    let actor = person(dir, by, Action::ApproveRules)?;
    let data = super::versions::data_dir(dir)?;
    let at = at
        .map(|t| DateTime::parse_from_rfc3339(t).map(|t| t.with_timezone(&Utc)))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--at: expected an RFC 3339 time such as 2026-12-07T02:00:00+08:00 ({e})"))?;
    let c = review::activate(&data, version, at, &actor, &last_loaded(&data)?, Utc::now())?;
    println!("{}", line(&c));
    eprintln!("a running daemon makes it live within a scheduler sweep; a stopped one starts on it");
    Ok(0)
}

pub(super) fn rollback(dir: &Path, by: &str) -> anyhow::Result<i32> {
    let actor = person(dir, by, Action::ApproveRules)?;
    let data = super::versions::data_dir(dir)?;
    let c = review::rollback(&data, &actor, Utc::now())?;
    println!("{}", line(&c));
    Ok(0)
}

pub(super) fn changes(dir: &Path, json: bool) -> anyhow::Result<i32> {
    let data = super::versions::data_dir(dir)?;
    let changes = log::read(&data)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&changes)?);
    } else if changes.is_empty() {
        println!("no rules changes recorded under {}", data.display());
    } else {
        changes.iter().for_each(|c| println!("{}", line(c)));
        println!("{} change(s); the chain verifies", changes.len());
    }
    Ok(0)
}

fn has_store(dir: &Path) -> anyhow::Result<bool> {
    let settings = crate::settings::Settings::load_with(dir, false)
        .map_err(|p| anyhow::anyhow!(p.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))?;
    Ok(crate::store::exists(&settings.store))
}

/// The rules version the daemon last started on (none yet: empty).
fn last_loaded(data: &Path) -> anyhow::Result<String> {
    let loads = kept::loads(data).with_context(|| format!("reading {}", data.display()))?;
    Ok(loads.last().and_then(|l| l.parts.get("rules").cloned()).unwrap_or_default())
}

pub(super) fn shadow(dir: &Path, version: Option<&str>, stop: bool, by: &str) -> anyhow::Result<i32> {
    let actor = person(dir, by, Action::ApproveRules)?;
    let data = super::versions::data_dir(dir)?;
    let c = match version {
        Some(v) if !stop => review::shadow::start(&data, v, &actor, &live_now(&data)?, Utc::now())?,
        _ => review::shadow::stop(&data, &actor, Utc::now())?,
    };
    println!("{}", line(&c));
    eprintln!(
        "a running daemon follows within a scheduler sweep; `orderbridge rules shadow-report` lists what differs"
    );
    Ok(0)
}

pub(super) fn shadow_report(dir: &Path, version: Option<&str>, json: bool) -> anyhow::Result<i32> {
    let data = super::versions::data_dir(dir)?;
    let report = review::shadow::report(&data, version)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report.lines().iter().for_each(|l| println!("{l}"));
    }
    Ok(0)
}

/// The rules version live now: the one the change log made live, else the one the
/// daemon last started on.
fn live_now(data: &Path) -> anyhow::Result<String> {
    match review::active_at(&log::read(data)?, Utc::now()) {
        Some(c) => Ok(c.version.clone()),
        None => last_loaded(data),
    }
}
