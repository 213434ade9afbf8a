//! When periodic work runs: every N seconds, or on a cron schedule in the site's time
//! zone (`minute hour day-of-month month day-of-week`, as in crontab(5): `*`, lists,
//! ranges, steps, `JAN`…`DEC`, `SUN`…`SAT`; when both day fields are restricted, a day
//! matching either runs, as Vixie cron does).
//!
//! Expressions are parsed and matched by the `croner` crate, not the `cron` crate the
//! owner first named: `cron` wants a seconds field (six or seven fields, so every
//! crontab line would need rewriting), numbers the days of the week 1–7 from Sunday
//! (crontab's `0` is refused and `7` is Saturday, not Sunday), and requires both day
//! fields to match where crontab runs on a day matching either. `croner` follows
//! crontab on all three; we refuse its seconds and year fields so users keep writing
//! five fields, and search on the site's wall clock so daylight-saving changes are
//! handled as before (a skipped local time is skipped, a repeated one runs once).

use std::time::Duration;

/// How long a daemon holds the lease of a cron job's occurrence (`Store::try_lease`):
/// under a minute, the finest cron step, so the next occurrence is free again; far
/// above the seconds by which the daemons sharing a database wake apart.
pub(crate) const CRON_LEASE: Duration = Duration::from_secs(50);

use chrono::{DateTime, Duration as Span, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Every(Duration),
    Cron(Cron),
}

impl Schedule {
    /// The first run time strictly after `now`.
    pub(crate) fn next_after(&self, now: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        match self {
            Schedule::Every(d) => now + Span::from_std(*d).unwrap_or(Span::minutes(1)),
            Schedule::Cron(c) => c.next_after(now, tz),
        }
    }
}

/// A parsed five-field cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    // Boxed: the parsed pattern is large, and most schedules are `Every`.
    pattern: Box<croner::Cron>,
}

impl std::str::FromStr for Cron {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if text.split_whitespace().count() != 5 {
            return Err(format!(
                "`{text}` is not a cron expression: five fields, minute hour day-of-month month day-of-week"
            ));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            // Either day field matches when both are restricted (crontab(5)).
            .dom_and_dow(false)
            // `5/15` means `5-59/15`, as before.
            .sloppy_ranges(true)
            .build();
        let pattern = parser.parse(text).map_err(|e| format!("cron `{text}`: {e}"))?;
        Ok(Cron { text: text.to_owned(), pattern: Box::new(pattern) })
    }
}

impl Cron {
    /// The first matching minute strictly after `now`, in `tz`. A local time skipped
    /// by a daylight-saving change is skipped; a repeated one runs once.
    pub(crate) fn next_after(&self, now: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        // An expression that never matches (31 February) is refused at load time.
        self.find(now, tz).unwrap_or(now + Span::days(1))
    }

    /// Searches the site's wall clock (so a 02:30 job means 02:30 local whatever the
    /// offset) at most four years ahead (29 February on a Monday, say), then maps each
    /// match to an instant: the earlier one where the clock repeats, none where it
    /// skips.
    fn find(&self, now: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let mut local = now.with_timezone(&tz).naive_local();
        let limit = local + Span::days(366 * 4 + 1);
        loop {
            local = self.pattern.find_next_occurrence(&local, false).ok()?;
            if local > limit {
                return None;
            }
            if let Some(at) = tz.from_local_datetime(&local).earliest() {
                let at = at.with_timezone(&Utc);
                if at > now {
                    return Some(at);
                }
            }
        }
    }
}

/// Reads `every_secs` / `cron` of a configuration section.
///
/// # Errors
/// Both given, a zero interval, or a cron expression that is malformed or never runs.
pub(crate) fn from_config(every_secs: Option<u64>, cron: Option<&str>, default_secs: u64) -> Result<Schedule, String> {
    match (every_secs, cron) {
        (Some(_), Some(_)) => Err("give either `every_secs` or `cron`, not both".into()),
        (Some(0), None) => Err("every_secs must be positive".into()),
        (Some(s), None) => Ok(Schedule::Every(Duration::from_secs(s))),
        (None, None) => Ok(Schedule::Every(Duration::from_secs(default_secs))),
        (None, Some(text)) => {
            let c: Cron = text.parse()?;
            // Refuse expressions that never run (e.g. 30 February).
            let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().expect("valid");
            if c.find(start, Tz::UTC).is_none() {
                return Err(format!("cron `{text}` never runs"));
            }
            Ok(Schedule::Cron(c))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn runs_on_business_days_in_the_site_time_zone() {
        let c: Cron = "*/15 9-17 * * MON-FRI".parse().unwrap();
        let sh = chrono_tz::Asia::Shanghai;
        // Friday 17:50 Shanghai (09:50 UTC): the next run is Monday 09:00 Shanghai.
        assert_eq!(c.next_after(at("2026-11-27T09:50:00Z"), sh), at("2026-11-30T01:00:00Z"));
        // Monday 10:07 → 10:15.
        assert_eq!(c.next_after(at("2026-11-30T02:07:00Z"), sh), at("2026-11-30T02:15:00Z"));
        // Exactly on a run time: the next one, not the same.
        assert_eq!(c.next_after(at("2026-11-30T02:15:00Z"), sh), at("2026-11-30T02:30:00Z"));
    }

    #[test]
    fn day_fields_follow_vixie_cron() {
        // The 1st of the month or any Sunday, at 06:30 UTC.
        let c: Cron = "30 6 1 * 0".parse().unwrap();
        assert_eq!(c.next_after(at("2026-11-26T00:00:00Z"), Tz::UTC), at("2026-11-29T06:30:00Z"), "Sunday 29th");
        assert_eq!(c.next_after(at("2026-11-29T07:00:00Z"), Tz::UTC), at("2026-12-01T06:30:00Z"), "the 1st");
        let c: Cron = "0 0 29 FEB *".parse().unwrap();
        assert_eq!(c.next_after(at("2026-03-01T00:00:00Z"), Tz::UTC), at("2028-02-29T00:00:00Z"));
        let c: Cron = "0 12 * * 7".parse().unwrap();
        assert_eq!(c.next_after(at("2026-11-26T00:00:00Z"), Tz::UTC), at("2026-11-29T12:00:00Z"), "7 is Sunday");
    }

    #[test]
    fn a_step_from_a_start_runs_to_the_end_of_the_range() {
        let c: Cron = "5/20 * * * *".parse().unwrap();
        assert_eq!(c.next_after(at("2026-11-26T10:06:00Z"), Tz::UTC), at("2026-11-26T10:25:00Z"));
        assert_eq!(c.next_after(at("2026-11-26T10:46:00Z"), Tz::UTC), at("2026-11-26T11:05:00Z"));
    }

    #[test]
    fn a_local_time_the_spring_change_skips_does_not_run_that_day() {
        // New York, Sunday 8 March 2026: 02:00 EST becomes 03:00 EDT; 02:30 never happens.
        let ny = chrono_tz::America::New_York;
        let c: Cron = "30 2 * * *".parse().unwrap();
        // Saturday 02:30 EST (07:30 UTC) ran; the next run is Monday 02:30 EDT (06:30 UTC).
        assert_eq!(c.next_after(at("2026-03-07T07:30:00Z"), ny), at("2026-03-09T06:30:00Z"));
        // Berlin, Sunday 29 March 2026: 02:00 CET becomes 03:00 CEST.
        let berlin = chrono_tz::Europe::Berlin;
        assert_eq!(c.next_after(at("2026-03-28T01:30:00Z"), berlin), at("2026-03-30T00:30:00Z"));
        // A job every 15 minutes goes from 01:45 EST straight to 03:00 EDT.
        let c: Cron = "*/15 * * * *".parse().unwrap();
        assert_eq!(c.next_after(at("2026-03-08T06:45:00Z"), ny), at("2026-03-08T07:00:00Z"));
    }

    #[test]
    fn a_local_time_the_autumn_change_repeats_runs_once() {
        // New York, Sunday 1 November 2026: 02:00 EDT becomes 01:00 EST; 01:00–01:59 twice.
        let ny = chrono_tz::America::New_York;
        let c: Cron = "30 1 * * *".parse().unwrap();
        // Saturday 01:30 EDT (05:30 UTC) → Sunday's first 01:30 (EDT, 05:30 UTC).
        assert_eq!(c.next_after(at("2026-10-31T05:30:00Z"), ny), at("2026-11-01T05:30:00Z"));
        // After it, not the second 01:30 (EST, 06:30 UTC) but Monday's (EST, 06:30 UTC).
        assert_eq!(c.next_after(at("2026-11-01T05:30:00Z"), ny), at("2026-11-02T06:30:00Z"));
        // 02:30 exists once on the day: 02:30 EST (07:30 UTC).
        let c: Cron = "30 2 * * *".parse().unwrap();
        assert_eq!(c.next_after(at("2026-10-31T06:30:00Z"), ny), at("2026-11-01T07:30:00Z"));
        // Berlin, Sunday 25 October 2026: 03:00 CEST becomes 02:00 CET; 02:30 runs once,
        // at the first (CEST, 00:30 UTC), and next on Monday (CET, 01:30 UTC).
        let berlin = chrono_tz::Europe::Berlin;
        assert_eq!(c.next_after(at("2026-10-24T00:30:00Z"), berlin), at("2026-10-25T00:30:00Z"));
        assert_eq!(c.next_after(at("2026-10-25T00:30:00Z"), berlin), at("2026-10-26T01:30:00Z"));
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        for (text, want) in [
            ("* * * *", "five fields"),
            ("0 * * * * *", "five fields"),
            ("60 * * * *", "cron `60 * * * *`"),
            ("* 5-2 * * *", "Range out of bounds"),
            ("*/0 * * * *", "Step cannot be zero"),
            ("* * * * FUNDAY", "cron `* * * * FUNDAY`"),
        ] {
            let e = text.parse::<Cron>().unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        assert!(from_config(None, Some("0 0 30 2 *"), 60).unwrap_err().contains("never runs"));
        assert!(from_config(Some(5), Some("* * * * *"), 60).is_err());
        assert!(from_config(Some(0), None, 60).is_err());
        assert_eq!(from_config(None, None, 60).unwrap(), Schedule::Every(Duration::from_secs(60)));
    }
}
