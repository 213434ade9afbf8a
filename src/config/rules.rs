//! `config/rules.toml`: read, parse, and validate (the validation itself is the
//! engine's, `RulesFile::validate`); problems come back located in the file.

use std::path::{Path, PathBuf};

use crate::diagnostics::Diagnostic;
use crate::engine::Rules;
use crate::engine::rules::RulesFile;

pub(crate) fn rules_path(config_dir: &Path) -> PathBuf {
    config_dir.join("config").join("rules.toml")
}

/// Loads `config/rules.toml`.
pub fn load_rules(config_dir: &Path) -> Result<Rules, Vec<Diagnostic>> {
    load_rules_file(&rules_path(config_dir), config_dir)
}

/// Loads a rules file (e.g. a candidate for `rules diff`); files it names are read
/// from `config_dir/config/`.
pub(crate) fn load_rules_file(path: &Path, config_dir: &Path) -> Result<Rules, Vec<Diagnostic>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![Diagnostic::file(path, format!("cannot read: {e}"))])?;
    load_rules_text(path, &text, config_dir)
}

/// Parses and validates rules text (a candidate sent to the API); problems are
/// located in `path` (the name shown); files it names are read from
/// `config_dir/config/`.
pub(crate) fn load_rules_text(path: &Path, text: &str, config_dir: &Path) -> Result<Rules, Vec<Diagnostic>> {
    let file: RulesFile = toml::from_str(text).map_err(|e| vec![Diagnostic::from_toml(path, text, &e)])?;
    let config = config_dir.join("config");
    let read = |name: &str| -> Result<String, String> {
        std::fs::read_to_string(config.join(name)).map_err(|e| format!("cannot read: {e}"))
    };
    file.validate(&read)
        .map_err(|ps| ps.into_iter().map(|p| Diagnostic::at(path, text, Some(p.span), p.message)).collect())
}
