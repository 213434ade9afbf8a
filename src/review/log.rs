//! The change log of the rules: `<data>/config-versions/rules-changes.jsonl`, one line
//! per change (proposed, approved, activated, rolled back, shadow run started or
//! stopped: who, when, which version, through which door), appended and never
//! rewritten. Each line carries the SHA-256
//! of the line before it and its own (`prev`, `hash`), so an edited, removed or
//! reordered line is found when the log is read (`read` names it): the daemon and
//! every command refuse a log that does not verify.
//!
//! Appending takes an exclusive lock on `rules-changes.lock` beside it, so the CLI
//! and a running daemon never write over each other; what may be appended is
//! decided under that lock, on the log as it then is (`append`'s `decide`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::versions::sha256_hex;

const FILE: &str = "rules-changes.jsonl";
const LOCK: &str = "rules-changes.lock";

/// What happened to a rules version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum What {
    /// A candidate was checked, kept and its impact reported.
    Proposed,
    /// A second person with `approve_rules` approved it.
    Approved,
    /// It became (or becomes, at `effective_at`) the live rules.
    Activated,
    /// The live rules went back to `version`, the version active before `from`.
    RolledBack,
    /// An approved version runs beside the live rules on every new order, without
    /// effects (`crate::review::shadow`); `from` is the shadow it replaced.
    ShadowStarted,
    /// The shadow run of `version` stopped.
    ShadowStopped,
}

impl What {
    pub(crate) fn name(self) -> &'static str {
        match self {
            What::Proposed => "proposed",
            What::Approved => "approved",
            What::Activated => "activated",
            What::RolledBack => "rolled_back",
            What::ShadowStarted => "shadow_started",
            What::ShadowStopped => "shadow_stopped",
        }
    }
}

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Change {
    /// 1, 2, …: the line's place in the log.
    pub(crate) seq: u64,
    /// When it was recorded.
    pub(crate) at: DateTime<Utc>,
    pub(crate) what: What,
    /// The rules version (its content hash) this change is about.
    pub(crate) version: String,
    /// Who: a directory person's id, `admin:NAME`, `client:NAME`, or `system` (the
    /// daemon at start).
    pub(crate) by: String,
    /// Through which door: `cli`, `api`, `console` or `start`.
    pub(crate) channel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
    /// Activated: when it takes effect (the time it was recorded, or `--at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) effective_at: Option<DateTime<Utc>>,
    /// Activated and rolled back: the version live before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) from: Option<String>,
    /// The previous line's `hash` (empty on the first).
    pub(crate) prev: String,
    /// SHA-256 over `prev` and this line without `hash`.
    pub(crate) hash: String,
}

/// A change to append: everything but its place and hashes.
#[derive(Clone, Debug)]
pub(crate) struct Draft {
    pub(crate) what: What,
    pub(crate) version: String,
    pub(crate) by: String,
    pub(crate) channel: String,
    pub(crate) note: Option<String>,
    pub(crate) effective_at: Option<DateTime<Utc>>,
    pub(crate) from: Option<String>,
}

/// Why the log could not be read or appended to.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LogError {
    #[error("{path}:{line}: the rules change log was altered (its hash chain breaks here); restore it from a backup")]
    Tampered { path: String, line: usize },
    #[error("{path}:{line}: not a rules change: {reason}")]
    Unreadable { path: String, line: usize, reason: String },
    #[error("{0}")]
    Io(#[from] io::Error),
}

fn dir(data: &Path) -> PathBuf {
    data.join("config-versions")
}

/// The log's path under the data directory.
pub(crate) fn path(data: &Path) -> PathBuf {
    dir(data).join(FILE)
}

fn seal(prev: &str, c: &Change) -> String {
    let mut body = c.clone();
    body.hash = String::new();
    let json = serde_json::to_string(&body).expect("a change serializes");
    sha256_hex(format!("{prev}\n{json}").as_bytes())
}

/// Every change, oldest first, with the chain verified.
///
/// # Errors
/// A line that does not parse or whose hash does not follow (named by its number).
pub(crate) fn read(data: &Path) -> Result<Vec<Change>, LogError> {
    let path = path(data);
    let text = match fs::read_to_string(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        r => r?,
    };
    let shown = path.display().to_string();
    let mut out: Vec<Change> = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let c: Change = serde_json::from_str(line).map_err(|e| LogError::Unreadable {
            path: shown.clone(),
            line: i + 1,
            reason: e.to_string(),
        })?;
        let prev = out.last().map_or("", |p| p.hash.as_str());
        if c.prev != prev || c.seq != out.len() as u64 + 1 || seal(prev, &c) != c.hash {
            return Err(LogError::Tampered { path: shown, line: i + 1 });
        }
        out.push(c);
    }
    Ok(out)
}

/// Appends what `decide` makes of the log as it is, under the log's lock, synced
/// before it returns; `decide`'s error leaves the log as it was.
///
/// # Errors
/// `decide`'s refusal, or the log could not be read, verified or written.
pub(crate) fn append<E: From<LogError>>(
    data: &Path,
    now: DateTime<Utc>,
    decide: impl FnOnce(&[Change]) -> Result<Draft, E>,
) -> Result<Change, E> {
    let dir = dir(data);
    fs::create_dir_all(&dir).map_err(LogError::from)?;
    let lock =
        OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(LOCK)).map_err(LogError::from)?;
    lock.lock().map_err(LogError::from)?;
    let log = read(data)?;
    let d = decide(&log)?;
    let prev = log.last().map_or(String::new(), |c| c.hash.clone());
    let mut c = Change {
        seq: log.len() as u64 + 1,
        at: now,
        what: d.what,
        version: d.version,
        by: d.by,
        channel: d.channel,
        note: d.note,
        effective_at: d.effective_at,
        from: d.from,
        prev: prev.clone(),
        hash: String::new(),
    };
    c.hash = seal(&prev, &c);
    write_line(&path(data), &c).map_err(LogError::from)?;
    drop(lock);
    Ok(c)
}

fn write_line(path: &Path, c: &Change) -> io::Result<()> {
    let new = !path.exists();
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    let mut line = serde_json::to_vec(c).map_err(io::Error::other)?;
    line.push(b'\n');
    f.write_all(&line)?;
    f.sync_all()?;
    if new && let Some(parent) = path.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(what: What, v: &str, by: &str) -> Draft {
        Draft {
            what,
            version: v.into(),
            by: by.into(),
            channel: "cli".into(),
            note: Some("提高限额".into()),
            effective_at: None,
            from: None,
        }
    }

    #[test]
    fn changes_are_chained_and_an_edited_line_is_named() {
        let data = tempfile::tempdir().unwrap();
        let now = Utc::now();
        for (w, by) in [(What::Proposed, "chen.jing"), (What::Approved, "james.wong"), (What::Activated, "james.wong")]
        {
            append::<LogError>(data.path(), now, |_| Ok(draft(w, "abc", by))).unwrap();
        }
        let log = read(data.path()).unwrap();
        assert_eq!(
            log.iter().map(|c| (c.seq, c.what)).collect::<Vec<_>>(),
            [(1, What::Proposed), (2, What::Approved), (3, What::Activated)]
        );
        assert_eq!(log[1].prev, log[0].hash);

        let p = path(data.path());
        let text = fs::read_to_string(&p).unwrap();
        fs::write(&p, text.replacen("james.wong", "chen.jing", 1)).unwrap();
        let e = read(data.path()).unwrap_err().to_string();
        assert!(e.ends_with("rules-changes.jsonl:2: the rules change log was altered (its hash chain breaks here); restore it from a backup"), "{e}");
        // A removed line breaks the chain too.
        let lines: Vec<&str> = text.lines().collect();
        fs::write(&p, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
        assert!(matches!(read(data.path()), Err(LogError::Tampered { line: 2, .. })));
    }
}
