//! Shadow runs: an approved rules version runs beside the live rules, and every step
//! of a live order (intake, and each event applied to it afterwards) is decided a
//! second time with it; where the two decisions differ (`engine::compare`), one line
//! is appended to `<data>/config-versions/shadow-differences.jsonl`. The shadow's
//! decision is thrown away: it writes no order, no event and no effect.
//!
//! Starting and stopping a shadow are lines of the change log (`shadow_started`,
//! `shadow_stopped`: who, when, through which door), so the shadow that runs is the
//! one the log names (`Shadow::sync`, followed by the rules watch like activations).
//! With no shadow running, a step pays one atomic load (`Shadow::running`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::log::{self, Change, Draft, LogError, What};
use super::{Actor, LiveRules, ReviewError, build, channel_name, resolve, resolve_approved};
use crate::engine::compare::{Difference, differences};
use crate::engine::{DecideError, Decision, Rules};
use crate::metrics::Metrics;
use crate::versions::short;

const FILE: &str = "shadow-differences.jsonl";

/// The shadow run the log names now: its `shadow_started` line, unless stopped since.
pub(crate) fn current(log: &[Change]) -> Option<&Change> {
    log.iter()
        .rev()
        .find(|c| matches!(c.what, What::ShadowStarted | What::ShadowStopped))
        .filter(|c| c.what == What::ShadowStarted)
}

/// Runs the approved version `prefix` names in shadow (replacing a shadow running).
/// `live` is the version live now: a shadow of it would compare nothing.
///
/// # Errors
/// Not proposed or not approved, the live version, or shadowed already.
pub(crate) fn start(
    data: &Path,
    prefix: &str,
    by: &Actor,
    live: &str,
    now: DateTime<Utc>,
) -> Result<Change, ReviewError> {
    log::append(data, now, |log| {
        let version = resolve_approved(log, prefix)?;
        if version == live {
            return Err(ReviewError::AlreadyActive(short(&version).to_owned()));
        }
        let from = current(log).map(|c| c.version.clone());
        if from.as_deref() == Some(version.as_str()) {
            return Err(ReviewError::AlreadyShadowed(short(&version).to_owned()));
        }
        Ok(Draft {
            what: What::ShadowStarted,
            version,
            by: by.id.clone(),
            channel: channel_name(by.channel).to_owned(),
            note: None,
            effective_at: None,
            from,
        })
    })
}

/// Stops the shadow run.
///
/// # Errors
/// No shadow runs.
pub(crate) fn stop(data: &Path, by: &Actor, now: DateTime<Utc>) -> Result<Change, ReviewError> {
    log::append(data, now, |log| {
        let Some(running) = current(log) else { return Err(ReviewError::NoShadow) };
        Ok(Draft {
            what: What::ShadowStopped,
            version: running.version.clone(),
            by: by.id.clone(),
            channel: channel_name(by.channel).to_owned(),
            note: None,
            effective_at: None,
            from: None,
        })
    })
}

/// The shadow rules running, built like an activated version.
pub(crate) struct Running {
    pub(crate) rules: Rules,
    /// Their version by content.
    pub(crate) version: String,
}

/// What a shadow decision of one step came to (before the step is durable).
#[derive(Debug)]
pub(crate) struct Compared {
    shadow_version: String,
    /// `intake` (a new order) or the event decided.
    step: String,
    differences: Vec<Difference>,
}

impl Running {
    /// Compares the live decision of a step with the shadow's (`Err`: the shadow
    /// rules could not decide it).
    pub(crate) fn compare(&self, step: &str, live: &Decision, shadow: Result<Decision, DecideError>) -> Compared {
        let differences = match shadow {
            Ok(s) => differences(live, &s),
            Err(e) => vec![Difference { kind: "refused".into(), live: "decided".into(), shadow: e.to_string() }],
        };
        Compared { shadow_version: self.version.clone(), step: step.to_owned(), differences }
    }
}

/// One decision that differed: a line of the shadow file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) at: DateTime<Utc>,
    pub(crate) order_id: String,
    /// `intake` (a new order) or the event decided (`approved`, `execution_started`…).
    pub(crate) step: String,
    pub(crate) live_version: String,
    pub(crate) shadow_version: String,
    pub(crate) differences: Vec<Difference>,
}

/// The shadow run of the daemon: which rules (if any), and where differences go.
/// Cheap to clone (all clones see a switch).
#[derive(Clone)]
pub struct Shadow(Arc<Inner>);

struct Inner {
    /// Set while a shadow runs: the one load a step pays when none does.
    on: AtomicBool,
    running: RwLock<Option<Arc<Running>>>,
    /// One `sync` at a time.
    syncing: Mutex<()>,
    /// One append to the file at a time.
    writing: Mutex<()>,
    live: LiveRules,
    /// The data directory (the change log, kept versions, the shadow file).
    data: PathBuf,
    metrics: Option<Arc<Metrics>>,
}

impl Shadow {
    pub fn new(live: LiveRules, data: PathBuf, metrics: Option<Arc<Metrics>>) -> Shadow {
        Shadow(Arc::new(Inner {
            on: AtomicBool::new(false),
            running: RwLock::new(None),
            syncing: Mutex::new(()),
            writing: Mutex::new(()),
            live,
            data,
            metrics,
        }))
    }

    /// The shadow rules running now, if any.
    pub(crate) fn running(&self) -> Option<Arc<Running>> {
        if !self.0.on.load(Ordering::Acquire) {
            return None;
        }
        self.0.running.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The version running in shadow, if any.
    pub(crate) fn version(&self) -> Option<String> {
        self.running().map(|r| r.version.clone())
    }

    fn set(&self, running: Option<Running>) {
        let mut slot = self.0.running.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.0.on.store(running.is_some(), Ordering::Release);
        *slot = running.map(Arc::new);
    }

    /// Follows the change log: the shadow it names (built) or none. Returns whether
    /// the shadow changed.
    ///
    /// # Errors
    /// The log does not verify, or the version no longer loads (no shadow runs then).
    pub(crate) fn sync(&self) -> Result<bool, ReviewError> {
        let _one = self.0.syncing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let log = log::read(&self.0.data)?;
        let wanted = current(&log).map(|c| c.version.clone());
        if wanted == self.version() {
            return Ok(false);
        }
        let Some(version) = wanted else {
            tracing::info!("the shadow run stopped");
            self.set(None);
            return Ok(true);
        };
        match build(&self.0.data, &version, self.0.live.current(), &self.0.live.versions()) {
            Ok((rules, _)) => {
                tracing::info!(rules_version = short(&version), "rules {} now run in shadow", short(&version));
                self.set(Some(Running { rules, version }));
                Ok(true)
            }
            Err(e) => {
                self.set(None);
                Err(e)
            }
        }
    }

    /// Counts a compared step of `order_id` and, when it differed, appends its line
    /// (off the async threads). A failure is logged: a shadow run never fails a step.
    pub(crate) async fn record(&self, order_id: String, c: Compared, now: DateTime<Utc>) {
        let label = short(&c.shadow_version).to_owned();
        let differs = !c.differences.is_empty();
        if let Some(m) = &self.0.metrics {
            let labels = [("rules_version", label.as_str())];
            match (c.step.as_str(), differs) {
                ("intake", true) => {
                    m.inc("orderbridge_shadow_orders_compared_total", &labels);
                    m.inc("orderbridge_shadow_orders_differing_total", &labels);
                }
                ("intake", false) => m.inc("orderbridge_shadow_orders_compared_total", &labels),
                (_, true) => m.inc("orderbridge_shadow_later_decisions_differing_total", &labels),
                (_, false) => {}
            }
        }
        if !differs {
            return;
        }
        let record = Record {
            at: now,
            order_id,
            step: c.step,
            live_version: self.0.live.version(),
            shadow_version: c.shadow_version,
            differences: c.differences,
        };
        let this = self.clone();
        let written = tokio::task::spawn_blocking(move || this.append(&record).map_err(|e| e.to_string()))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        if let Err(e) = written {
            tracing::error!(error = %e, "a shadow difference could not be recorded");
        }
    }

    fn append(&self, r: &Record) -> std::io::Result<()> {
        let _one = self.0.writing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let path = path(&self.0.data);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
        line.push(b'\n');
        std::fs::OpenOptions::new().create(true).append(true).open(path)?.write_all(&line)
    }
}

/// The shadow file's path under the data directory.
pub(crate) fn path(data: &Path) -> PathBuf {
    data.join("config-versions").join(FILE)
}

/// Every recorded difference, oldest first (a torn last line, from a crash, is skipped).
///
/// # Errors
/// The file could not be read, or a line before the last does not parse.
pub(crate) fn records(data: &Path) -> Result<Vec<Record>, LogError> {
    let path = path(data);
    let text = match std::fs::read_to_string(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        r => r?,
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(r) => out.push(r),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => {
                return Err(LogError::Unreadable {
                    path: path.display().to_string(),
                    line: i + 1,
                    reason: e.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// One order whose decisions differed under the shadow rules.
#[derive(Debug, Serialize)]
pub(crate) struct OrderDifferences {
    pub(crate) order_id: String,
    /// Every kind of decision that differed, over all its steps.
    pub(crate) kinds: BTreeSet<String>,
    pub(crate) live_versions: BTreeSet<String>,
    pub(crate) decisions: Vec<Record>,
}

/// `rules shadow-report`: the orders a shadow version decided differently.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// The shadow version reported (`None`: no shadow ever ran).
    pub(crate) shadow_version: Option<String>,
    /// Its `shadow_started` and `shadow_stopped` lines.
    pub(crate) started: Vec<Change>,
    pub(crate) stopped: Vec<Change>,
    /// Whether the change log names it as the shadow now.
    pub(crate) running: bool,
    pub(crate) orders: Vec<OrderDifferences>,
    /// How many orders differed in each kind of decision.
    pub(crate) kinds: BTreeMap<String, usize>,
}

/// The report of the shadow version `prefix` names (default: the one running, else
/// the last one started).
///
/// # Errors
/// The log or the file could not be read; `prefix` names no proposed version.
pub(crate) fn report(data: &Path, prefix: Option<&str>) -> Result<Report, ReviewError> {
    let log = log::read(data)?;
    let version = match prefix {
        Some(p) => Some(resolve(&log, p)?),
        None => current(&log)
            .or_else(|| log.iter().rev().find(|c| c.what == What::ShadowStarted))
            .map(|c| c.version.clone()),
    };
    let of = |w: What| -> Vec<Change> {
        log.iter().filter(|c| c.what == w && Some(&c.version) == version.as_ref()).cloned().collect()
    };
    let mut orders: BTreeMap<String, OrderDifferences> = BTreeMap::new();
    for r in records(data)?.into_iter().filter(|r| Some(&r.shadow_version) == version.as_ref()) {
        let o = orders.entry(r.order_id.clone()).or_insert_with(|| OrderDifferences {
            order_id: r.order_id.clone(),
            kinds: BTreeSet::new(),
            live_versions: BTreeSet::new(),
            decisions: Vec::new(),
        });
        o.kinds.extend(r.differences.iter().map(|d| d.kind.clone()));
        o.live_versions.insert(r.live_version.clone());
        o.decisions.push(r);
    }
    let orders: Vec<OrderDifferences> = orders.into_values().collect();
    let mut kinds = BTreeMap::new();
    for k in orders.iter().flat_map(|o| o.kinds.iter()) {
        *kinds.entry(k.clone()).or_insert(0) += 1;
    }
    Ok(Report {
        running: version.is_some() && current(&log).map(|c| &c.version) == version.as_ref(),
        started: of(What::ShadowStarted),
        stopped: of(What::ShadowStopped),
        shadow_version: version,
        orders,
        kinds,
    })
}

impl Report {
    /// The report as text: one line per differing decision, then a summary.
    pub(crate) fn lines(&self) -> Vec<String> {
        let Some(v) = &self.shadow_version else {
            return vec![
                "no rules version was run in shadow (start one with `orderbridge rules shadow VERSION --by PERSON`)"
                    .into(),
            ];
        };
        let mut out = vec![format!("shadow rules {}: {}", short(v), if self.running { "running" } else { "stopped" })];
        for o in &self.orders {
            for r in &o.decisions {
                for d in &r.differences {
                    out.push(format!(
                        "{} {} {}: {} → {} (live {})",
                        o.order_id,
                        r.step,
                        d.kind,
                        d.live,
                        d.shadow,
                        short(&r.live_version)
                    ));
                }
            }
        }
        let kinds: Vec<String> = self.kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
        out.push(format!(
            "{} order(s) decided differently under rules {}{}",
            self.orders.len(),
            short(v),
            if kinds.is_empty() { String::new() } else { format!(" ({})", kinds.join(", ")) }
        ));
        out
    }
}
