//! Approval SLAs as loaded from `[sla]` in `config/rules.toml`: working time per
//! level, reminders and escalation, on the office calendar.

use std::collections::BTreeMap;

use super::calendar::Calendar;

/// Approval SLAs: working time per level, reminders, escalation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlaRules {
    /// Working hours and holidays; its time zone is `site.time_zone`.
    pub calendar: Calendar,
    /// Working minutes a level may take, by default and per role.
    pub(crate) default_minutes: u32,
    pub(crate) roles: BTreeMap<String, u32>,
    /// The reminder goes out after this share of the SLA (percent).
    pub(crate) remind_percent: u8,
    /// At the SLA, the level is escalated to this role (which may then approve it).
    pub(crate) escalate_to: BTreeMap<String, String>,
}

impl Default for SlaRules {
    fn default() -> Self {
        SlaRules {
            calendar: Calendar::office(chrono_tz::Asia::Shanghai),
            default_minutes: 8 * 60,
            roles: BTreeMap::new(),
            remind_percent: 50,
            escalate_to: BTreeMap::new(),
        }
    }
}

impl SlaRules {
    pub(crate) fn minutes(&self, role: &str) -> u32 {
        self.roles.get(role).copied().unwrap_or(self.default_minutes)
    }
}
