//! Warehouse export (lifecycle step 8): `orderbridge export` writes the orders and
//! the audit trail changed in a window as files a warehouse loads, partitioned by
//! month the way Hive, DuckDB, Spark and pyarrow read them:
//!
//! ```text
//! OUT/orders/month=2026-11/part-20261206T101500Z.parquet
//! OUT/events/month=2026-12/part-20261206T101500Z.parquet
//! OUT/.export-state.json          {"until": "2026-12-06T10:15:00Z"}
//! ```
//!
//! Incremental: without `--since`, the window starts where the last export into OUT
//! ended, so each run adds only what changed since. An order changed in the window
//! gets a new row (the warehouse keeps the latest by `order_id`, `updated_at`); the
//! events table only ever appends. Files are written aside and moved into place, and
//! the state file is written last: a run that stops half-way is simply run again (its
//! rows may then repeat, which `order_id, updated_at` and `order_id, seq` key away).
//!
//! - `rows`: the two tables' rows and columns (no personal data).
//! - `write`: rows as Parquet, CSV or JSON lines.

pub(crate) mod rows;
pub mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use rows::{EventRow, OrderRow, Table};
use write::Format;

/// The state file an export leaves in its directory.
const STATE: &str = ".export-state.json";

/// What one export wrote.
#[derive(Debug)]
pub struct Exported {
    pub(crate) since: Option<DateTime<Utc>>,
    pub(crate) until: DateTime<Utc>,
    pub orders: usize,
    pub events: usize,
    pub files: Vec<PathBuf>,
}

/// Where the last export into `out` ended, if one did.
///
/// # Errors
/// A state file that cannot be read.
pub(crate) fn last_until(out: &Path) -> anyhow::Result<Option<DateTime<Utc>>> {
    let path = out.join(STATE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let v: serde_json::Value =
                serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))?;
            let until = v["until"].as_str().with_context(|| format!("{} has no `until`", path.display()))?;
            Ok(Some(until.parse().with_context(|| format!("{}: `until`", path.display()))?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the rows of the window `since..until` into `out` and records `until`.
///
/// # Errors
/// A file that cannot be written.
pub fn write_all(
    out: &Path,
    orders: &[OrderRow],
    events: &[EventRow],
    format: Format,
    since: Option<DateTime<Utc>>,
    until: DateTime<Utc>,
) -> anyhow::Result<Exported> {
    let part = format!("part-{}.{}", until.format("%Y%m%dT%H%M%S%.3fZ"), format.extension());
    let aside = out.join(".partial");
    let mut files = Vec::new();
    let mut written = Vec::new();
    written.extend(partitions(&aside, orders, &part, format)?);
    written.extend(partitions(&aside, events, &part, format)?);
    for rel in written {
        let to = out.join(&rel);
        std::fs::create_dir_all(to.parent().expect("a partition has a directory"))?;
        std::fs::rename(aside.join(&rel), &to).with_context(|| format!("moving {} into place", to.display()))?;
        files.push(to);
    }
    let _ = std::fs::remove_dir_all(&aside);
    let state = out.join(format!("{STATE}.new"));
    let until_text = until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    std::fs::write(&state, serde_json::json!({ "until": until_text }).to_string())?;
    std::fs::File::open(&state)?.sync_all()?;
    std::fs::rename(&state, out.join(STATE))?;
    Ok(Exported { since, until, orders: orders.len(), events: events.len(), files })
}

/// Writes `rows` into `dir/TABLE/month=M/part`, one file a month; their paths under `dir`.
fn partitions<T: Table + Clone>(dir: &Path, rows: &[T], part: &str, format: Format) -> anyhow::Result<Vec<PathBuf>> {
    let mut months: BTreeMap<String, Vec<T>> = BTreeMap::new();
    for row in rows {
        months.entry(row.month()).or_default().push(row.clone());
    }
    let mut out = Vec::new();
    for (month, rows) in months {
        let rel = Path::new(T::NAME).join(format!("month={month}")).join(part);
        let path = dir.join(&rel);
        std::fs::create_dir_all(path.parent().expect("a partition has a directory"))?;
        write::write(&path, &rows, format).with_context(|| format!("writing {}", path.display()))?;
        out.push(rel);
    }
    Ok(out)
}
