//! The period a scheduled report covers (`period` of `[[reports]]`): the whole day,
//! week (Monday to Sunday) or month before the one its due time falls in, in the
//! site's time zone, and the buckets its orders-per-day chart counts in (hours for
//! a day, days otherwise). Pure: the due time and the zone are arguments.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Period {
    Day,
    Week,
    Month,
}

impl std::str::FromStr for Period {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "previous_day" => Ok(Period::Day),
            "previous_week" => Ok(Period::Week),
            "previous_month" => Ok(Period::Month),
            other => Err(format!("`{other}` is not a period (previous_day, previous_week, previous_month)")),
        }
    }
}

/// A report's period: its first and its last local day, and the instants they span
/// (`from` inclusive, `to` exclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) first_day: NaiveDate,
    pub(crate) last_day: NaiveDate,
    pub(crate) from: DateTime<Utc>,
    pub(crate) to: DateTime<Utc>,
}

impl Period {
    /// The period before the one `due` falls in, in `tz`.
    pub(crate) fn before(self, due: DateTime<Utc>, tz: Tz) -> Span {
        let today = due.with_timezone(&tz).date_naive();
        let (first, next) = match self {
            Period::Day => (today.pred_opt().unwrap_or(today), today),
            Period::Week => {
                let monday = today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
                (monday - Duration::days(7), monday)
            }
            Period::Month => {
                let this = today.with_day(1).unwrap_or(today);
                let prev = this.pred_opt().and_then(|d| d.with_day(1)).unwrap_or(this);
                (prev, this)
            }
        };
        Span {
            first_day: first,
            last_day: next.pred_opt().unwrap_or(next),
            from: start_of(first, tz),
            to: start_of(next, tz),
        }
    }

    /// Where the chart of orders received starts each bar: every hour of a day,
    /// every day of a week or month (a day that a daylight-saving change shortens
    /// still starts at its midnight).
    pub(crate) fn buckets(self, span: &Span, tz: Tz) -> Vec<DateTime<Utc>> {
        match self {
            Period::Day => {
                let hours = (span.to - span.from).num_hours();
                (0..hours).map(|h| span.from + Duration::hours(h)).collect()
            }
            Period::Week | Period::Month => {
                span.first_day.iter_days().take_while(|d| *d <= span.last_day).map(|d| start_of(d, tz)).collect()
            }
        }
    }
}

/// The first instant of `day` in `tz` (midnight, or the first hour after it that
/// exists where a daylight-saving change skips midnight).
pub(crate) fn start_of(day: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let midnight = day.and_hms_opt(0, 0, 0).expect("midnight exists");
    (0..24)
        .find_map(|h| tz.from_local_datetime(&(midnight + Duration::hours(h))).earliest())
        .map_or_else(|| Utc.from_utc_datetime(&midnight), |t| t.with_timezone(&Utc))
}

/// How many of `times` fall in each bucket (`starts` ascending; the last bucket
/// ends at `end`).
pub(crate) fn count_in(
    starts: &[DateTime<Utc>],
    end: DateTime<Utc>,
    times: impl Iterator<Item = DateTime<Utc>>,
) -> Vec<u64> {
    let mut counts = vec![0; starts.len()];
    for t in times.filter(|t| *t < end) {
        if let Some(i) = starts.iter().rposition(|s| *s <= t) {
            counts[i] += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn the_previous_month_crosses_year_and_february_in_the_site_zone() {
        let sh = chrono_tz::Asia::Shanghai;
        // 1 January 08:00 in Shanghai (00:00 UTC): all of December before.
        let s = Period::Month.before(at("2027-01-01T00:00:00Z"), sh);
        assert_eq!((s.first_day, s.last_day), (day("2026-12-01"), day("2026-12-31")));
        assert_eq!((s.from, s.to), (at("2026-11-30T16:00:00Z"), at("2026-12-31T16:00:00Z")));
        // 1 March 2028 (a leap year): 29 days of February.
        let s = Period::Month.before(at("2028-03-01T01:00:00Z"), sh);
        assert_eq!((s.first_day, s.last_day), (day("2028-02-01"), day("2028-02-29")));
        assert_eq!(Period::Month.buckets(&s, sh).len(), 29);
        // 31 March 20:00 UTC is already 1 April in Shanghai: March is the previous month.
        let s = Period::Month.before(at("2026-03-31T20:00:00Z"), sh);
        assert_eq!((s.first_day, s.last_day), (day("2026-03-01"), day("2026-03-31")));
        // In UTC it is still 31 March: February.
        let s = Period::Month.before(at("2026-03-31T20:00:00Z"), Tz::UTC);
        assert_eq!((s.first_day, s.last_day), (day("2026-02-01"), day("2026-02-28")));
    }

    #[test]
    fn the_previous_week_runs_monday_to_sunday() {
        let sh = chrono_tz::Asia::Shanghai;
        // Monday 7 December 2026, 08:00 Shanghai.
        let s = Period::Week.before(at("2026-12-07T00:00:00Z"), sh);
        assert_eq!((s.first_day, s.last_day), (day("2026-11-30"), day("2026-12-06")));
        assert_eq!((s.from, s.to), (at("2026-11-29T16:00:00Z"), at("2026-12-06T16:00:00Z")));
        // Any day of that week gives the same previous week.
        assert_eq!(Period::Week.before(at("2026-12-13T15:59:00Z"), sh), s);
        let days = Period::Week.buckets(&s, sh);
        assert_eq!(days.len(), 7);
        assert_eq!(days[1], at("2026-11-30T16:00:00Z"));
    }

    #[test]
    fn a_day_shortened_by_daylight_saving_has_23_hours() {
        // Berlin, Sunday 29 March 2026: 02:00 CET becomes 03:00 CEST.
        let berlin = chrono_tz::Europe::Berlin;
        let s = Period::Day.before(at("2026-03-30T06:00:00Z"), berlin);
        assert_eq!((s.first_day, s.last_day), (day("2026-03-29"), day("2026-03-29")));
        assert_eq!((s.from, s.to), (at("2026-03-28T23:00:00Z"), at("2026-03-29T22:00:00Z")));
        assert_eq!(Period::Day.buckets(&s, berlin).len(), 23);
        // And the week holding it is 7 days of 167 hours.
        let w = Period::Week.before(at("2026-03-30T06:00:00Z"), berlin);
        assert_eq!((w.to - w.from).num_hours(), 167);
    }

    #[test]
    fn orders_are_counted_in_their_bucket() {
        let starts = [at("2026-11-30T00:00:00Z"), at("2026-12-01T00:00:00Z")];
        let end = at("2026-12-02T00:00:00Z");
        let times =
            [at("2026-11-29T23:59:59Z"), at("2026-11-30T00:00:00Z"), at("2026-12-01T23:59:59Z"), end].into_iter();
        assert_eq!(count_in(&starts, end, times), vec![1, 1]);
        assert!("previous_year".parse::<Period>().unwrap_err().contains("previous_day"));
        assert_eq!("previous_week".parse::<Period>(), Ok(Period::Week));
    }
}
