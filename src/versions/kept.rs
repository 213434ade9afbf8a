//! Where each configuration version is kept: an append-only directory under the data
//! directory, `config-versions/`. A version's files are written once, exactly as
//! loaded, under `<kind>/<hash>/files/`, with `part.json` (its files and their
//! hashes); `loads.jsonl` gets one line per start of the daemon, saying which versions
//! it ran. Files are synced before they count (written to a temporary directory,
//! fsynced, renamed into place, the parent fsynced), and nothing is rewritten.
//!
//! A directory rather than the store: offline commands (`rules history`, `evidence`)
//! read it while the daemon runs, and it sits beside the generated documents, which
//! live in the data directory with every store backend.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Part, Versions};

const DIR: &str = "config-versions";
const LOADS: &str = "loads.jsonl";

/// One start of the daemon: which versions it loaded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    pub at: DateTime<Utc>,
    /// The configuration's version (what decisions record).
    pub id: String,
    /// Each part's version, by kind.
    pub parts: BTreeMap<String, String>,
}

/// A part's version as `rules history` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Seen {
    pub kind: String,
    pub hash: String,
    pub label: Option<String>,
    pub first_loaded: DateTime<Utc>,
    pub last_loaded: DateTime<Utc>,
    /// In the last load.
    pub active: bool,
}

fn root(data: &Path) -> PathBuf {
    data.join(DIR)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Keeps every part not kept yet, then records this load.
///
/// # Errors
/// A file that could not be written or synced.
pub fn record(data: &Path, versions: &Versions, at: DateTime<Utc>) -> io::Result<()> {
    let root = root(data);
    fs::create_dir_all(&root)?;
    for part in &versions.parts {
        keep(&root, part, &versions.contents)?;
    }
    let load = Load {
        at,
        id: versions.id.clone(),
        parts: versions.parts.iter().map(|p| (p.kind.clone(), p.hash.clone())).collect(),
    };
    let path = root.join(LOADS);
    let new = !path.exists();
    let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
    let mut line = serde_json::to_vec(&load).map_err(io::Error::other)?;
    line.push(b'\n');
    f.write_all(&line)?;
    f.sync_all()?;
    if new {
        sync_dir(&root)?;
    }
    Ok(())
}

/// Keeps one part version (a proposed candidate) without recording a load.
///
/// # Errors
/// A file that could not be written or synced.
pub(crate) fn keep_part(data: &Path, part: &Part, contents: &[(String, Vec<u8>)]) -> io::Result<()> {
    let root = root(data);
    fs::create_dir_all(&root)?;
    keep(&root, part, contents)
}

/// Where a kept part version's files are, under their paths relative to the
/// configuration directory (`config/rules.toml`, …).
pub(crate) fn files_dir(data: &Path, part: &Part) -> PathBuf {
    root(data).join(&part.kind).join(&part.hash).join("files")
}

/// Writes one part's files, unless that version is kept already.
fn keep(root: &Path, part: &Part, contents: &[(String, Vec<u8>)]) -> io::Result<()> {
    let kind_dir = root.join(&part.kind);
    let dest = kind_dir.join(&part.hash);
    if dest.join("part.json").is_file() {
        return Ok(());
    }
    fs::create_dir_all(&kind_dir)?;
    let tmp = kind_dir.join(format!(".tmp-{}-{}", part.hash, std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    let mut dirs = vec![tmp.clone()];
    for f in &part.files {
        let Some((_, bytes)) = contents.iter().find(|(p, _)| *p == f.path) else { continue };
        let to = tmp.join("files").join(&f.path);
        let parent = to.parent().expect("a file under files/ has a parent");
        fs::create_dir_all(parent)?;
        let mut p = parent.to_owned();
        while p != tmp {
            dirs.push(p.clone());
            p.pop();
        }
        let mut out = File::create(&to)?;
        out.write_all(bytes)?;
        out.sync_all()?;
    }
    let mut out = File::create(tmp.join("part.json"))?;
    out.write_all(&serde_json::to_vec_pretty(part).map_err(io::Error::other)?)?;
    out.sync_all()?;
    dirs.sort();
    dirs.dedup();
    for d in dirs.iter().rev() {
        sync_dir(d)?;
    }
    match fs::rename(&tmp, &dest) {
        // Another process kept the same version meanwhile: same content, same name.
        Err(_) if dest.join("part.json").is_file() => fs::remove_dir_all(&tmp)?,
        r => r?,
    }
    sync_dir(&kind_dir)
}

/// Every load, oldest first.
///
/// # Errors
/// The log could not be read, or a line is not a load (named by its number).
pub fn loads(data: &Path) -> io::Result<Vec<Load>> {
    let path = root(data).join(LOADS);
    let text = match fs::read_to_string(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        r => r?,
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| io::Error::other(format!("{}:{}: {e}", path.display(), i + 1)))
        })
        .collect()
}

/// Every part version loaded, by kind then first load.
///
/// # Errors
/// As [`loads`] and [`part`].
pub fn history(data: &Path) -> io::Result<Vec<Seen>> {
    let loads = loads(data)?;
    let mut seen: Vec<Seen> = Vec::new();
    for l in &loads {
        for (kind, hash) in &l.parts {
            match seen.iter_mut().find(|s| s.kind == *kind && s.hash == *hash) {
                Some(s) => s.last_loaded = l.at,
                None => seen.push(Seen {
                    kind: kind.clone(),
                    hash: hash.clone(),
                    label: part(data, kind, hash)?.and_then(|p| p.label),
                    first_loaded: l.at,
                    last_loaded: l.at,
                    active: false,
                }),
            }
        }
    }
    if let Some(last) = loads.last() {
        for s in &mut seen {
            s.active = last.parts.get(&s.kind) == Some(&s.hash);
        }
    }
    let order = |k: &str| super::KINDS.iter().position(|x| *x == k).unwrap_or(usize::MAX);
    seen.sort_by(|a, b| order(&a.kind).cmp(&order(&b.kind)).then(a.first_loaded.cmp(&b.first_loaded)));
    Ok(seen)
}

/// A kept part version (`None`: not kept).
///
/// # Errors
/// `part.json` could not be read or parsed.
pub fn part(data: &Path, kind: &str, hash: &str) -> io::Result<Option<Part>> {
    if !is_hex(hash) {
        return Ok(None);
    }
    match fs::read(root(data).join(kind).join(hash).join("part.json")) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(io::Error::other),
    }
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The part versions whose hash starts with `prefix` (hex), of any kind.
///
/// # Errors
/// A directory or `part.json` that could not be read.
pub fn find(data: &Path, prefix: &str) -> io::Result<Vec<Part>> {
    let prefix = prefix.to_ascii_lowercase();
    let mut found = Vec::new();
    if !is_hex(&prefix) {
        return Ok(found);
    }
    for kind in super::KINDS {
        let Ok(entries) = fs::read_dir(root(data).join(kind)) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix)
                && let Some(p) = part(data, kind, &name)?
            {
                found.push(p);
            }
        }
    }
    Ok(found)
}

/// A file of a kept part version, exactly as it was loaded.
///
/// # Errors
/// The file is not part of that version, or could not be read.
pub fn file(data: &Path, part: &Part, path: &str) -> io::Result<Vec<u8>> {
    if !part.files.iter().any(|f| f.path == path) {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("{path} is not a file of this version")));
    }
    fs::read(root(data).join(&part.kind).join(&part.hash).join("files").join(path))
}

#[cfg(test)]
mod tests {
    use super::super::short;
    use super::*;

    fn config(dir: &Path, rules: &str) -> Versions {
        fs::create_dir_all(dir.join("config/templates/en")).unwrap();
        fs::write(dir.join("config/rules.toml"), rules).unwrap();
        fs::write(dir.join("config/templates/en/a.txt"), "你好").unwrap();
        Versions::compute(dir, Some("v"))
    }

    #[test]
    fn each_version_is_kept_once_and_listed_with_its_loads() {
        let (cfg, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let t = |h: i64| DateTime::<Utc>::from_timestamp(1_700_000_000 + h * 3600, 0).unwrap();
        let v1 = config(cfg.path(), "version = \"v\"\n# one\n");
        record(data.path(), &v1, t(0)).unwrap();
        record(data.path(), &v1, t(1)).unwrap();
        let v2 = config(cfg.path(), "version = \"v\"\n# two\n");
        record(data.path(), &v2, t(2)).unwrap();

        let h = history(data.path()).unwrap();
        let rules: Vec<_> = h.iter().filter(|s| s.kind == "rules").collect();
        assert_eq!(rules.len(), 2);
        assert_eq!((rules[0].first_loaded, rules[0].last_loaded, rules[0].active), (t(0), t(1), false));
        assert_eq!((rules[1].first_loaded, rules[1].active), (t(2), true));
        assert_eq!(h.iter().filter(|s| s.kind == "templates").count(), 1, "templates did not change");
        assert_eq!(loads(data.path()).unwrap().len(), 3);

        let old = &find(data.path(), short(&v1.part("rules").unwrap().hash)).unwrap()[0];
        assert_eq!(file(data.path(), old, "config/rules.toml").unwrap(), b"version = \"v\"\n# one\n");
        assert!(file(data.path(), old, "../loads.jsonl").is_err());
        assert!(find(data.path(), "../").unwrap().is_empty());
    }
}
