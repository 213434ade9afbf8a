//! A proposed rules file as a candidate: checked in every phase of the one
//! configuration loader (in place of `config/rules.toml`, beside the rest of the
//! configuration as it is now), versioned by content as it would be at
//! `config/rules.toml`, and kept under the data directory so that it can be shown,
//! approved and activated later.

use std::path::Path;

use super::ReviewError;
use crate::engine::Rules;
use crate::versions::{Part, Versions, kept};

/// A checked and kept candidate.
pub(crate) struct Candidate {
    /// Its rules, as `rules diff` replays them.
    pub(crate) rules: Rules,
    /// Its version (`hash`), label and files.
    pub(crate) part: Part,
}

/// Checks `text` (shown as `shown`) as the rules of the configuration in
/// `config_dir` and keeps it under `data`.
///
/// # Errors
/// Every problem the loader finds (`file:line:col: …`), or it could not be kept.
pub(crate) fn check_and_keep(
    config_dir: &Path,
    data: &Path,
    shown: &Path,
    text: &str,
) -> Result<Candidate, ReviewError> {
    let loaded = crate::config::load_all_with(config_dir, Some((shown, text)))
        .map_err(|ps| ReviewError::Invalid(ps.iter().map(ToString::to_string).collect()))?;
    let versions = Versions::rules_candidate(config_dir, text.as_bytes(), Some(&loaded.rules.version));
    let part = versions.part("rules").expect("a candidate has its rules part").clone();
    kept::keep_part(data, &part, &versions.contents).map_err(super::log::LogError::from)?;
    Ok(Candidate { rules: loaded.rules, part })
}
