//! Segment files: one JSON line per archived order (its stored row and its audit
//! events, as the store held them), between a header line and a trailer line with
//! the count and the sha256 of everything before it. Written once under a temporary
//! name, synced, renamed and the directory synced; never changed after (a purge
//! writes a new segment). Files live in a directory per month of ending:
//! `2026-03/seg-20260612T020000-1a2b3c4d.jsonl`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{EventRecord, OrderRecord};

/// The format named in each segment's header.
const FORMAT: &str = "orderbridge-archive-1";
const EXT: &str = "jsonl";
const TMP: &str = "tmp";

/// One archived order, as a line of a segment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Line {
    pub(crate) order: OrderRecord,
    pub(crate) events: Vec<EventRecord>,
}

/// One order's line: its stored row and events as JSON.
pub(crate) fn encode_line(order: &OrderRecord, events: &[EventRecord]) -> Vec<u8> {
    #[derive(Serialize)]
    struct LineRef<'a> {
        order: &'a OrderRecord,
        events: &'a [EventRecord],
    }
    serde_json::to_vec(&LineRef { order, events }).expect("records serialise")
}

/// A segment as written: its name, hash and length, and each line's place.
#[derive(Debug, Clone)]
pub(crate) struct Written {
    pub(crate) name: String,
    pub(crate) sha256: String,
    pub(crate) bytes: u64,
    /// Offset and length of each line given, in order (without its newline).
    pub(crate) spans: Vec<(u64, u64)>,
}

/// A new segment's name in the directory of `month` (`YYYY-MM`).
pub(crate) fn new_name(month: &str, now: DateTime<Utc>) -> String {
    let id = crate::domain::ids::uuid_v7_now().simple().to_string();
    format!("{month}/seg-{}-{}.{EXT}", now.format("%Y%m%dT%H%M%S"), &id[id.len() - 8..])
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes the segment `name` under `dir` from encoded lines (each one JSON object),
/// crash-safe: a temporary file, synced, renamed into place, its directory synced.
/// Only then may the store record it.
///
/// # Errors
/// Any I/O error; the temporary file may be left (an orphan, removed by the next pass).
pub(crate) fn write(dir: &Path, name: &str, lines: &[Vec<u8>], now: DateTime<Utc>) -> std::io::Result<Written> {
    let path = dir.join(name);
    let parent = path.parent().unwrap_or(dir).to_owned();
    std::fs::create_dir_all(&parent)?;
    let mut body = serde_json::to_vec(&serde_json::json!({"format": FORMAT, "segment": name, "created_at": now}))
        .map_err(std::io::Error::other)?;
    body.push(b'\n');
    let mut spans = Vec::with_capacity(lines.len());
    for l in lines {
        spans.push((body.len() as u64, l.len() as u64));
        body.extend_from_slice(l);
        body.push(b'\n');
    }
    let head = hex::encode(Sha256::digest(&body));
    let trailer = serde_json::json!({"end": true, "orders": lines.len(), "sha256": head});
    body.extend_from_slice(&serde_json::to_vec(&trailer).map_err(std::io::Error::other)?);
    body.push(b'\n');
    let tmp = path.with_extension(TMP);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    sync_dir(&parent)?;
    Ok(Written { name: name.to_owned(), sha256: hex::encode(Sha256::digest(&body)), bytes: body.len() as u64, spans })
}

/// One line of a segment at `offset` (`len` bytes).
///
/// # Errors
/// I/O, or a line that does not parse.
pub(crate) fn read_line(dir: &Path, name: &str, offset: u64, len: u64) -> Result<Line, String> {
    use std::io::{Read as _, Seek as _};
    let mut f = std::fs::File::open(dir.join(name)).map_err(|e| format!("segment {name}: {e}"))?;
    f.seek(std::io::SeekFrom::Start(offset)).map_err(|e| format!("segment {name}: {e}"))?;
    let mut buf = vec![0; usize::try_from(len).unwrap_or(0)];
    f.read_exact(&mut buf).map_err(|e| format!("segment {name} at byte {offset}: {e}"))?;
    serde_json::from_slice(&buf).map_err(|e| format!("segment {name} at byte {offset}: {e}"))
}

/// The raw line at `offset` in a segment read whole.
pub(crate) fn slice(body: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    body.get(start..start.checked_add(usize::try_from(len).ok()?)?)
}

pub(crate) fn sha256(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// Removes a segment file and syncs its directory.
///
/// # Errors
/// I/O errors other than the file being gone already.
pub(crate) fn remove(dir: &Path, name: &str) -> std::io::Result<()> {
    let path = dir.join(name);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    }
    sync_dir(path.parent().unwrap_or(dir))
}

/// Every segment file and temporary file under `dir`, by name relative to it.
///
/// # Errors
/// I/O errors reading the directories (none: an archive not made yet).
pub(crate) fn files(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    let months = match std::fs::read_dir(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for month in months {
        let month = month?;
        if !month.file_type()?.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(month.path())? {
            let p: PathBuf = f?.path();
            let ext = p.extension().and_then(|e| e.to_str());
            if matches!(ext, Some(EXT | TMP))
                && let (Some(m), Some(n)) = (month.file_name().to_str(), p.file_name().and_then(|n| n.to_str()))
            {
                out.push(format!("{m}/{n}"));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_reads_back_line_by_line_and_its_hash_covers_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let now: DateTime<Utc> = "2026-06-12T02:00:00Z".parse().unwrap();
        let name = new_name("2026-03", now);
        assert!(name.starts_with("2026-03/seg-20260612T020000-") && name.ends_with(".jsonl"), "{name}");
        let lines = vec![r#"{"a":"订单"}"#.as_bytes().to_vec(), br#"{"b":2}"#.to_vec()];
        let w = write(dir.path(), &name, &lines, now).unwrap();
        let body = std::fs::read(dir.path().join(&name)).unwrap();
        assert_eq!((w.bytes, w.sha256.clone()), (body.len() as u64, sha256(&body)));
        for (line, (offset, len)) in lines.iter().zip(&w.spans) {
            assert_eq!(slice(&body, *offset, *len), Some(&line[..]));
        }
        let trailer: serde_json::Value =
            serde_json::from_slice(body.trim_ascii_end().rsplit(|b| *b == b'\n').next().unwrap()).unwrap();
        assert_eq!(trailer["orders"], 2);
        assert_eq!(files(dir.path()).unwrap(), vec![name.clone()], "no temporary file is left");
        remove(dir.path(), &name).unwrap();
        remove(dir.path(), &name).unwrap();
        assert!(files(dir.path()).unwrap().is_empty());
    }
}
