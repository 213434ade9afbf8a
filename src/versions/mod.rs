//! Versions of the configuration by content. Rules, mappings, notifications and
//! templates each get a version that is a SHA-256 over their files, computed at load:
//! the hand-typed `version` of `rules.toml` is only a label shown beside it. The
//! configuration as a whole gets a version too (over the four), which every decision
//! records; `kept.rs` keeps each version's text under the data directory.
//!
//! A part's version is the SHA-256 of its `sha256sum` listing: one line
//! `<sha256 of the file>  <path relative to the configuration directory>` per file,
//! sorted by path, so `cd CONFIG_DIR && sha256sum config/rules.toml
//! config/watchlist.csv | sha256sum` gives the rules' version.

pub(crate) mod kept;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The parts versioned, in the order they are listed.
pub const KINDS: [&str; 4] = ["rules", "mappings", "notifications", "templates"];

/// How many hex digits of a version are shown.
pub const SHORT: usize = 12;

/// One versioned part of the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// One of [`KINDS`].
    pub kind: String,
    /// The SHA-256 (hex) of the part's listing.
    pub hash: String,
    /// The hand-typed label (the rules' `version`), shown beside the hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub files: Vec<FileHash>,
}

/// A file of a part: its path relative to the configuration directory, its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHash {
    pub path: String,
    pub sha256: String,
}

/// The configuration's versions as loaded, with the files' contents (to keep them).
#[derive(Clone, Debug, Default)]
pub struct Versions {
    /// The SHA-256 over the parts' `kind hash` lines: what decisions record.
    pub id: String,
    pub parts: Vec<Part>,
    /// Each file's bytes, by its path relative to the configuration directory.
    pub(crate) contents: Vec<(String, Vec<u8>)>,
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The short form shown to people.
pub fn short(hash: &str) -> &str {
    hash.get(..SHORT).unwrap_or(hash)
}

impl Versions {
    /// Hashes the configuration in `config_dir`; `rules_label` is the rules' `version`.
    /// Files that cannot be read are left out (the loader reports them).
    pub(crate) fn compute(config_dir: &Path, rules_label: Option<&str>) -> Versions {
        let mut v = Versions::default();
        for kind in KINDS {
            let mut files = files_of(config_dir, kind);
            files.sort();
            let mut listing = String::new();
            let mut hashes = Vec::new();
            for path in files {
                let Ok(bytes) = std::fs::read(config_dir.join(&path)) else { continue };
                let sha256 = sha256_hex(&bytes);
                listing.push_str(&format!("{sha256}  {path}\n"));
                hashes.push(FileHash { path: path.clone(), sha256 });
                v.contents.push((path, bytes));
            }
            let label = (kind == "rules").then(|| rules_label.map(str::to_owned)).flatten();
            v.parts.push(Part { kind: kind.to_owned(), hash: sha256_hex(listing.as_bytes()), label, files: hashes });
        }
        v.id = set_id(&v.parts);
        v
    }

    pub fn part(&self, kind: &str) -> Option<&Part> {
        self.parts.iter().find(|p| p.kind == kind)
    }

    /// The rules' part a candidate file would have as `config/rules.toml` of
    /// `config_dir` (the watch list it names read from there), with its files' bytes:
    /// the version `rules propose` stores and the start compares against.
    pub(crate) fn rules_candidate(config_dir: &Path, rules: &[u8], label: Option<&str>) -> Versions {
        let mut files = vec![("config/rules.toml".to_owned(), rules.to_vec())];
        let list = std::str::from_utf8(rules)
            .ok()
            .and_then(|t| toml::from_str::<toml::Table>(t).ok())
            .and_then(|v| v.get("reference")?.get("watch_list")?.as_str().map(|l| format!("config/{l}")));
        if let Some(list) = list
            && let Ok(bytes) = std::fs::read(config_dir.join(&list))
        {
            files.push((list, bytes));
        }
        files.sort();
        let hashes: Vec<FileHash> =
            files.iter().map(|(path, b)| FileHash { path: path.clone(), sha256: sha256_hex(b) }).collect();
        let listing: String = hashes.iter().map(|f| format!("{}  {}\n", f.sha256, f.path)).collect();
        let part = Part {
            kind: "rules".to_owned(),
            hash: sha256_hex(listing.as_bytes()),
            label: label.map(str::to_owned),
            files: hashes,
        };
        Versions { id: set_id(std::slice::from_ref(&part)), parts: vec![part], contents: files }
    }

    /// These versions with `part` in place of the part of its kind (the configuration's
    /// id computed again): what runs after a rules version is activated.
    pub(crate) fn with_part(&self, part: Part, contents: Vec<(String, Vec<u8>)>) -> Versions {
        let mut v = self.clone();
        if let Some(old) = v.parts.iter_mut().find(|p| p.kind == part.kind) {
            let gone: Vec<String> = old.files.iter().map(|f| f.path.clone()).collect();
            v.contents.retain(|(p, _)| !gone.contains(p));
            *old = part;
        } else {
            v.parts.push(part);
        }
        v.contents.extend(contents);
        v.id = set_id(&v.parts);
        v
    }
}

/// The configuration's version: SHA-256 over `kind hash` lines.
pub(crate) fn set_id(parts: &[Part]) -> String {
    let lines: String = parts.iter().map(|p| format!("{} {}\n", p.kind, p.hash)).collect();
    sha256_hex(lines.as_bytes())
}

/// The files of a part, relative to the configuration directory, `/`-separated.
fn files_of(config_dir: &Path, kind: &str) -> Vec<String> {
    match kind {
        "rules" => {
            let mut files = vec!["config/rules.toml".to_owned()];
            if let Some(list) = watch_list(config_dir) {
                files.push(format!("config/{list}"));
            }
            files
        }
        "notifications" => ["config/notifications.toml", "config/directory.toml"]
            .into_iter()
            .filter(|p| config_dir.join(p).is_file())
            .map(str::to_owned)
            .collect(),
        "mappings" => walk(config_dir, Path::new("mappings")),
        _ => walk(config_dir, Path::new("config/templates")),
    }
}

/// The watch list `rules.toml` names (`[reference] watch_list`).
fn watch_list(config_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(config_dir.join("config/rules.toml")).ok()?;
    let v: toml::Table = toml::from_str(&text).ok()?;
    v.get("reference")?.get("watch_list")?.as_str().map(str::to_owned)
}

/// Every file under `config_dir/rel`, recursively.
fn walk(config_dir: &Path, rel: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo: Vec<PathBuf> = vec![rel.to_owned()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(config_dir.join(&d)) else { continue };
        for e in entries.flatten() {
            let p = d.join(e.file_name());
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(p),
                Ok(t) if t.is_file() => out.push(p.to_string_lossy().replace('\\', "/")),
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_version_is_the_hash_of_its_sha256sum_listing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        std::fs::write(dir.path().join("config/rules.toml"), "version = \"x\"\n[reference]\nwatch_list = \"w.csv\"\n")
            .unwrap();
        std::fs::write(dir.path().join("config/w.csv"), "name,张伟\n").unwrap();
        let v = Versions::compute(dir.path(), Some("x"));
        let rules = v.part("rules").unwrap();
        let listing = format!(
            "{}  config/rules.toml\n{}  config/w.csv\n",
            sha256_hex(b"version = \"x\"\n[reference]\nwatch_list = \"w.csv\"\n"),
            sha256_hex("name,张伟\n".as_bytes())
        );
        assert_eq!(rules.hash, sha256_hex(listing.as_bytes()));
        assert_eq!(rules.label.as_deref(), Some("x"));
        let before = (v.id.clone(), rules.hash.clone(), v.part("templates").unwrap().hash.clone());
        std::fs::write(dir.path().join("config/w.csv"), "name,李四\n").unwrap();
        let after = Versions::compute(dir.path(), Some("x"));
        assert_ne!(after.part("rules").unwrap().hash, before.1, "the watch list is part of the rules");
        assert_ne!(after.id, before.0);
        assert_eq!(after.part("templates").unwrap().hash, before.2, "other parts keep theirs");
    }
}
