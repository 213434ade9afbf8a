//! `[rules]`: whether the daemon runs only reviewed rules (`crate::review`).

use std::path::Path;

use serde::Deserialize;

use crate::diagnostics::{Diagnostic, locate};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRules {
    /// Run only rules whose content version a second person approved (`orderbridge
    /// rules propose` / `approve`); read by `crate::review` at start. `false` is for
    /// development only (the example configuration), and `check` warns about it.
    pub(crate) require_review: bool,
}

impl Default for RawRules {
    fn default() -> Self {
        RawRules { require_review: true }
    }
}

/// Whether review is required, and `check`'s warning when it is not.
pub(super) fn review(r: &RawRules, path: &Path, text: &str) -> (bool, Option<Diagnostic>) {
    if r.require_review {
        return (true, None);
    }
    let mut warning = match locate(text, &["rules", "require_review"]) {
        Some(span) => Diagnostic::at(path, text, Some(span), ""),
        None => Diagnostic::file(Path::new(&format!("env {}__RULES__REQUIRE_REVIEW", super::ENV_PREFIX)), ""),
    };
    warning.message = "warning: `rules.require_review = false` is a development setting: the daemon runs rules nobody approved. A firm sets it to true (the default) and changes rules with `orderbridge rules propose` / `approve` / `activate`".to_owned();
    (false, Some(warning))
}
