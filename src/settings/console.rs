//! `[console]`: how long a console session and a mailed sign-in link last.

use serde::Deserialize;

use super::Problems;
use crate::auth::sessions::Limits;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawConsole {
    /// Signed out after this long without a request.
    pub(crate) session_idle_minutes: u32,
    /// Signed out this long after signing in, active or not.
    pub(crate) session_absolute_hours: u32,
    /// A mailed sign-in link works once, within this.
    pub(crate) sign_in_link_minutes: u32,
}

impl Default for RawConsole {
    fn default() -> Self {
        RawConsole { session_idle_minutes: 30, session_absolute_hours: 12, sign_in_link_minutes: 15 }
    }
}

/// The limits, none of them 0.
pub(super) fn limits(c: &RawConsole, p: &mut Problems<'_>) -> Limits {
    for (key, v) in [
        ("session_idle_minutes", c.session_idle_minutes),
        ("session_absolute_hours", c.session_absolute_hours),
        ("sign_in_link_minutes", c.sign_in_link_minutes),
    ] {
        if v == 0 {
            p.bad(&["console", key], format!("`{key}` must be at least 1"));
        }
    }
    Limits {
        idle: chrono::Duration::minutes(i64::from(c.session_idle_minutes.max(1))),
        absolute: chrono::Duration::hours(i64::from(c.session_absolute_hours.max(1))),
        sign_in_link: chrono::Duration::minutes(i64::from(c.sign_in_link_minutes.max(1))),
    }
}
