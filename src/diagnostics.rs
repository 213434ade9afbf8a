//! Located problems in configuration files: `path:line:col: message`.
//!
//! Every loader (settings, connectors, mappings, rules) reports through `Diagnostic`,
//! so `orderbridge check` and `orderbridge run` print the same text.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in one file. `line` and `col` are 1-based; 0 means "the whole file".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub(crate) path: PathBuf,
    pub(crate) line: usize,
    pub(crate) col: usize,
    pub(crate) message: String,
}

impl Diagnostic {
    /// A problem at a byte span of `text` (the file's contents).
    pub(crate) fn at(path: &Path, text: &str, span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        let (line, col) = span.map_or((1, 1), |s| line_col(text, s.start));
        Diagnostic { path: path.to_owned(), line, col, message: message.into() }
    }

    /// A problem about the file as a whole (unreadable, missing).
    pub(crate) fn file(path: &Path, message: impl Into<String>) -> Self {
        Diagnostic { path: path.to_owned(), line: 0, col: 0, message: message.into() }
    }

    /// A TOML syntax or shape error, located by its span.
    pub(crate) fn from_toml(path: &Path, text: &str, e: &toml::de::Error) -> Self {
        Diagnostic::at(path, text, e.span(), e.message().trim().replace('\n', " "))
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.message)
        } else {
            write!(f, "{}:{}:{}: {}", self.path.display(), self.line, self.col, self.message)
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The span of the value at `keys` (e.g. `["server", "admin_token"]`) in a TOML text.
pub(crate) fn locate(text: &str, keys: &[&str]) -> Option<Range<usize>> {
    use toml::de::{DeTable, DeValue};
    let table = DeTable::parse(text).ok()?;
    let root = DeValue::Table(table.into_inner());
    let mut cur: &DeValue<'_> = &root;
    let mut span = None;
    for k in keys {
        let next = cur.get(*k)?;
        span = Some(next.span());
        cur = next.get_ref();
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters() {
        let text = "a = 1\n名字 = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        let off = text.find('2').unwrap();
        assert_eq!(line_col(text, off), (2, 6));
    }

    #[test]
    fn locates_nested_keys() {
        let text = "[server]\nport = 8080\n\n[store]\npath = \"x\"\n";
        let span = locate(text, &["store", "path"]).unwrap();
        assert_eq!(line_col(text, span.start), (5, 8));
        assert!(locate(text, &["store", "nope"]).is_none());
    }
}
