//! A management report: the KPIs and the bottleneck analysis of the orders received
//! in a period, beside the headline figures of the period before it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::journey::Journey;
use super::kpi::{Headline, Kpis, headline};
use super::process::Process;
use crate::engine::calendar::Calendar;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The orders received from `from` (inclusive) to `to` (exclusive).
    pub(crate) from: DateTime<Utc>,
    pub(crate) to: DateTime<Utc>,
    /// The time zone of months and business hours.
    pub(crate) time_zone: String,
    pub kpis: Kpis,
    pub process: Process,
    /// The headline figures of this period and of the one as long before it.
    pub(crate) current: Headline,
    pub(crate) previous: Headline,
    /// The feedback on the process reported in the period, per category (filled in
    /// by the application layer, which reads the reports; zero in `of`).
    pub(crate) feedback: FeedbackCounts,
}

/// Feedback on the process reported in a period, per category.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackCounts {
    pub problem: u64,
    pub suggestion: u64,
    pub complaint: u64,
    pub total: u64,
}

impl Report {
    /// The report of `journeys` (received in the period) against `before` (received in
    /// the period as long before it).
    pub(crate) fn of(
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        journeys: &[Journey],
        before: &[Journey],
        calendar: &Calendar,
    ) -> Report {
        Report {
            from,
            to,
            time_zone: calendar.tz.name().to_owned(),
            kpis: Kpis::of(journeys, calendar),
            process: Process::of(journeys, calendar),
            current: headline("current".into(), &journeys.iter().collect::<Vec<_>>(), calendar),
            previous: headline("previous".into(), &before.iter().collect::<Vec<_>>(), calendar),
            feedback: FeedbackCounts::default(),
        }
    }

    /// The period before this one, as long.
    pub(crate) fn previous_period(from: DateTime<Utc>, to: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        (from - (to - from), from)
    }
}

/// A report's period from what a person types: a date is a whole day in `tz`
/// (`--to 2026-11-30` includes the 30th), an RFC 3339 instant is exact (`to`
/// excluded). `to` defaults to `now`.
///
/// # Errors
/// Which bound is neither, or a period that ends before it starts.
pub(crate) fn period(
    from: &str,
    to: Option<&str>,
    tz: chrono_tz::Tz,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), String> {
    let start = bound(from, tz, false)
        .ok_or_else(|| format!("from: `{from}` is not a date (2026-11-01) or an RFC 3339 time"))?;
    let end = match to {
        None => now,
        Some(t) => {
            bound(t, tz, true).ok_or_else(|| format!("to: `{t}` is not a date (2026-11-30) or an RFC 3339 time"))?
        }
    };
    if end <= start {
        return Err(format!("the period ends ({end}) before it starts ({start})"));
    }
    Ok((start, end))
}

/// An export's window: like `period`, but open at the start when `since` is absent.
///
/// # Errors
/// Which bound is neither a date nor a time, or a window that ends before it starts.
pub(crate) fn window(
    since: Option<&str>,
    until: Option<&str>,
    tz: chrono_tz::Tz,
    now: DateTime<Utc>,
) -> Result<(Option<DateTime<Utc>>, DateTime<Utc>), String> {
    // Whole milliseconds, as the window's end is written down for the next export.
    let now = chrono::SubsecRound::trunc_subsecs(now, 3);
    match since {
        Some(s) => period(s, until, tz, now).map(|(a, b)| (Some(a), b)),
        None => match until {
            None => Ok((None, now)),
            Some(t) => bound(t, tz, true)
                .map(|b| (None, b))
                .ok_or_else(|| format!("until: `{t}` is not a date or an RFC 3339 time")),
        },
    }
}

/// A date's first instant (or the next day's, for an inclusive end), or an instant.
fn bound(s: &str, tz: chrono_tz::Tz, end: bool) -> Option<DateTime<Utc>> {
    use chrono::TimeZone as _;
    if let Ok(t) = DateTime::parse_from_rfc3339(s.trim()) {
        return Some(t.with_timezone(&Utc));
    }
    let day = chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()?;
    let day = if end { day.succ_opt()? } else { day };
    tz.from_local_datetime(&day.and_hms_opt(0, 0, 0)?).earliest().map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_is_whole_days_in_the_zone_or_exact_instants() {
        let tz = chrono_tz::Asia::Shanghai;
        let now: DateTime<Utc> = "2026-12-06T00:00:00Z".parse().unwrap();
        let (a, b) = period("2026-11-01", Some("2026-11-30"), tz, now).unwrap();
        assert_eq!(a, "2026-10-31T16:00:00Z".parse::<DateTime<Utc>>().unwrap());
        assert_eq!(b, "2026-11-30T16:00:00Z".parse::<DateTime<Utc>>().unwrap());
        let (_, b) = period("2026-11-01", None, tz, now).unwrap();
        assert_eq!(b, now);
        let (a, _) = period("2026-11-01T08:00:00+08:00", None, tz, now).unwrap();
        assert_eq!(a, "2026-11-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap());
        assert!(period("yesterday", None, tz, now).unwrap_err().starts_with("from: `yesterday`"));
        assert!(period("2026-11-30", Some("2026-11-01"), tz, now).unwrap_err().contains("ends"));
        assert_eq!(Report::previous_period(a, a + chrono::Duration::days(30)), (a - chrono::Duration::days(30), a));
    }
}
