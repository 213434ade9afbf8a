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
use write::{Format, Part};

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

/// An export being written into a directory: rows go to their month's file as
/// they come, aside under `.partial/`, and [`Export::finish`] moves every file into
/// place and records the window's end.
pub struct Export {
    out: PathBuf,
    aside: PathBuf,
    part: String,
    format: Format,
    since: Option<DateTime<Utc>>,
    until: DateTime<Utc>,
    orders: Parts<OrderRow>,
    events: Parts<EventRow>,
}

/// A table's open files, by month.
struct Parts<T> {
    open: BTreeMap<String, Part<T>>,
    rows: usize,
}

impl<T: Table> Parts<T> {
    fn new() -> Self {
        Parts { open: BTreeMap::new(), rows: 0 }
    }

    fn push(&mut self, aside: &Path, part: &str, format: Format, row: T) -> anyhow::Result<()> {
        let month = row.month();
        let file = match self.open.get_mut(&month) {
            Some(file) => file,
            None => {
                let path = aside.join(Self::relative(&month, part));
                std::fs::create_dir_all(path.parent().expect("a partition has a directory"))?;
                let file = Part::create(&path, format).with_context(|| format!("creating {}", path.display()))?;
                self.open.entry(month).or_insert(file)
            }
        };
        file.push(row)?;
        self.rows += 1;
        Ok(())
    }

    fn relative(month: &str, part: &str) -> PathBuf {
        Path::new(T::NAME).join(format!("month={month}")).join(part)
    }

    /// Finishes every file; their paths under the export's directory.
    fn finish(self, part: &str) -> anyhow::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for (month, file) in self.open {
            let rel = Self::relative(&month, part);
            file.finish().with_context(|| format!("writing {}", rel.display()))?;
            out.push(rel);
        }
        Ok(out)
    }
}

/// A page of rows as the daemon's JSON lines (`GET /api/export`):
/// `{"table":"orders"|"events","row":{…}}`, the table named first.
///
/// # Errors
/// A row that cannot be serialised.
pub(crate) fn json_lines(orders: &[OrderRow], events: &[EventRow]) -> std::io::Result<Vec<u8>> {
    fn line<T: serde::Serialize>(out: &mut Vec<u8>, table: &str, row: &T) -> std::io::Result<()> {
        out.extend_from_slice(br#"{"table":""#);
        out.extend_from_slice(table.as_bytes());
        out.extend_from_slice(br#"","row":"#);
        serde_json::to_writer(&mut *out, row)?;
        out.extend_from_slice(b"}\n");
        Ok(())
    }
    let mut out = Vec::with_capacity((orders.len() + events.len()) * 512);
    orders.iter().try_for_each(|r| line(&mut out, "orders", r))?;
    events.iter().try_for_each(|r| line(&mut out, "events", r))?;
    Ok(out)
}

impl Export {
    /// Adds the row of one line of the daemon's JSON lines (see [`json_lines`]).
    ///
    /// # Errors
    /// A line that is not one of them; a file that cannot be written.
    pub(crate) fn json_line(&mut self, line: &[u8]) -> anyhow::Result<()> {
        #[derive(serde::Deserialize)]
        #[serde(tag = "table", content = "row", rename_all = "snake_case")]
        enum Line {
            Orders(Box<OrderRow>),
            Events(EventRow),
        }
        match serde_json::from_slice(line).context("reading the daemon's export")? {
            Line::Orders(row) => self.order(*row),
            Line::Events(row) => self.event(row),
        }
    }

    /// Starts an export of the window `since..until` into `out`.
    ///
    /// # Errors
    /// The directory cannot be written.
    pub fn begin(
        out: &Path,
        format: Format,
        since: Option<DateTime<Utc>>,
        until: DateTime<Utc>,
    ) -> anyhow::Result<Export> {
        let aside = out.join(".partial");
        // What a run that stopped half-way left aside is written again.
        match std::fs::remove_dir_all(&aside) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("clearing {}", aside.display()));
            }
            _ => {}
        }
        Ok(Export {
            out: out.to_path_buf(),
            aside,
            part: format!("part-{}.{}", until.format("%Y%m%dT%H%M%S%.3fZ"), format.extension()),
            format,
            since,
            until,
            orders: Parts::new(),
            events: Parts::new(),
        })
    }

    /// Adds a row of the `orders` table.
    ///
    /// # Errors
    /// Its file cannot be written.
    pub fn order(&mut self, row: OrderRow) -> anyhow::Result<()> {
        self.orders.push(&self.aside, &self.part, self.format, row)
    }

    /// Adds a row of the `events` table.
    ///
    /// # Errors
    /// Its file cannot be written.
    pub fn event(&mut self, row: EventRow) -> anyhow::Result<()> {
        self.events.push(&self.aside, &self.part, self.format, row)
    }

    /// Moves the files into place, then records the window's end: a run that stops
    /// before this wrote nothing the next run does not write again.
    ///
    /// # Errors
    /// A file that cannot be written or moved.
    pub fn finish(self) -> anyhow::Result<Exported> {
        let (orders, events) = (self.orders.rows, self.events.rows);
        let mut written = self.orders.finish(&self.part)?;
        written.extend(self.events.finish(&self.part)?);
        let mut files = Vec::new();
        for rel in written {
            let to = self.out.join(&rel);
            std::fs::create_dir_all(to.parent().expect("a partition has a directory"))?;
            std::fs::rename(self.aside.join(&rel), &to)
                .with_context(|| format!("moving {} into place", to.display()))?;
            files.push(to);
        }
        let _ = std::fs::remove_dir_all(&self.aside);
        let state = self.out.join(format!("{STATE}.new"));
        let until_text = self.until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        std::fs::write(&state, serde_json::json!({ "until": until_text }).to_string())?;
        std::fs::File::open(&state)?.sync_all()?;
        std::fs::rename(&state, self.out.join(STATE))?;
        Ok(Exported { since: self.since, until: self.until, orders, events, files })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemons_json_lines_come_back_as_the_rows_they_were() {
        let order = OrderRow { order_id: "o-1".into(), sales_owner: Some("王芳".into()), ..OrderRow::default() };
        let event = EventRow { order_id: "o-1".into(), seq: 3, kind: "approved".into(), ..EventRow::default() };
        let text = json_lines(std::slice::from_ref(&order), std::slice::from_ref(&event)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let until = "2026-12-06T00:00:00Z".parse().unwrap();
        let mut export = Export::begin(dir.path(), Format::Jsonl, None, until).unwrap();
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            export.json_line(line).unwrap();
        }
        let done = export.finish().unwrap();
        assert_eq!((done.orders, done.events), (1, 1));
        let read = |table: &str| {
            let file = done.files.iter().find(|f| f.starts_with(dir.path().join(table))).unwrap();
            std::fs::read_to_string(file).unwrap()
        };
        assert_eq!(serde_json::from_str::<OrderRow>(read("orders").trim()).unwrap(), order);
        assert_eq!(serde_json::from_str::<EventRow>(read("events").trim()).unwrap(), event);
        assert!(Export::begin(dir.path(), Format::Jsonl, None, until).unwrap().json_line(br#"{"table":"x"}"#).is_err());
    }
}
