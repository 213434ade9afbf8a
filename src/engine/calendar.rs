//! Business hours: SLAs count working time only, in the configured time zone, skipping
//! weekends and holidays. Pure and bounded.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Calendar {
    pub(crate) tz: Tz,
    pub(crate) start: NaiveTime,
    pub(crate) end: NaiveTime,
    pub(crate) days: Vec<Weekday>,
    pub(crate) holidays: BTreeSet<NaiveDate>,
    /// Days worked although their weekday is not (make-up working days, 调休).
    pub(crate) workdays: BTreeSet<NaiveDate>,
}

/// Longest search for working time: ten years of calendar days.
const MAX_DAYS: u32 = 3660;

impl Calendar {
    /// Mon–Fri 09:00–17:30 in `tz`, no holidays.
    pub(crate) fn office(tz: Tz) -> Self {
        Calendar {
            tz,
            start: NaiveTime::from_hms_opt(9, 0, 0).expect("valid"),
            end: NaiveTime::from_hms_opt(17, 30, 0).expect("valid"),
            days: vec![Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri],
            holidays: BTreeSet::new(),
            workdays: BTreeSet::new(),
        }
    }

    pub(crate) fn is_working_day(&self, d: NaiveDate) -> bool {
        (self.days.contains(&d.weekday()) || self.workdays.contains(&d)) && !self.holidays.contains(&d)
    }

    fn at(&self, d: NaiveDate, t: NaiveTime) -> DateTime<Utc> {
        // A local time skipped by a DST change is taken at its earliest valid instant.
        let local = self
            .tz
            .from_local_datetime(&d.and_time(t))
            .earliest()
            .or_else(|| self.tz.from_local_datetime(&(d.and_time(t) + Duration::hours(1))).earliest())
            .expect("a local time exists within an hour");
        local.with_timezone(&Utc)
    }

    /// The moment `work` of working time after `from`. Outside working hours the
    /// clock starts at the next opening.
    pub(crate) fn add(&self, from: DateTime<Utc>, work: Duration) -> DateTime<Utc> {
        let mut left = work.max(Duration::zero());
        let mut day = from.with_timezone(&self.tz).date_naive();
        for _ in 0..MAX_DAYS {
            if self.is_working_day(day) {
                let open = self.at(day, self.start).max(from);
                let close = self.at(day, self.end);
                if open < close {
                    let available = close - open;
                    if left <= available {
                        return open + left;
                    }
                    left -= available;
                }
            }
            day = day.succ_opt().expect("dates do not run out");
        }
        // No working time within ten years (e.g. no working days configured).
        from + work
    }

    /// The working time between `from` and `to`: the part of it inside opening hours
    /// on working days (zero when `to` is not after `from`). The inverse of `add`.
    pub(crate) fn working_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
        let mut total = Duration::zero();
        if to <= from {
            return total;
        }
        let last = to.with_timezone(&self.tz).date_naive();
        let mut day = from.with_timezone(&self.tz).date_naive();
        for _ in 0..MAX_DAYS {
            if day > last {
                break;
            }
            if self.is_working_day(day) {
                let open = self.at(day, self.start).max(from);
                let close = self.at(day, self.end).min(to);
                if open < close {
                    total += close - open;
                }
            }
            day = day.succ_opt().expect("dates do not run out");
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(s: &str) -> DateTime<Utc> {
        let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        chrono_tz::Asia::Shanghai.from_local_datetime(&naive).unwrap().with_timezone(&Utc)
    }

    fn cal() -> Calendar {
        let mut c = Calendar::office(chrono_tz::Asia::Shanghai);
        // 2027-01-01 (Friday) is New Year's Day.
        c.holidays.insert("2027-01-01".parse().unwrap());
        c
    }

    #[test]
    fn working_time_skips_nights_weekends_and_holidays() {
        let c = cal();
        let h = Duration::hours;
        // Monday 2026-11-30 10:00 + 4 h = 14:00 the same day.
        assert_eq!(c.add(sh("2026-11-30 10:00"), h(4)), sh("2026-11-30 14:00"));
        // + 8 h: 7.5 h on Monday, 0.5 h on Tuesday.
        assert_eq!(c.add(sh("2026-11-30 10:00"), h(8)), sh("2026-12-01 09:30"));
        // Friday 16:00 + 2 h: 1.5 h on Friday, 0.5 h on Monday.
        assert_eq!(c.add(sh("2026-12-04 16:00"), h(2)), sh("2026-12-07 09:30"));
        // Saturday night counts from Monday's opening.
        assert_eq!(c.add(sh("2026-12-05 23:00"), h(1)), sh("2026-12-07 10:00"));
        // Thursday 2026-12-31 17:00 + 1 h: the holiday and the weekend are skipped.
        assert_eq!(c.add(sh("2026-12-31 17:00"), h(1)), sh("2027-01-04 09:30"));
        // Before opening, the clock starts at 09:00.
        assert_eq!(c.add(sh("2026-11-30 07:00"), Duration::minutes(30)), sh("2026-11-30 09:30"));
        assert_eq!(c.add(sh("2026-11-30 10:00"), Duration::zero()), sh("2026-11-30 10:00"));
        // A make-up working Saturday counts.
        let mut c = cal();
        c.workdays.insert("2026-12-05".parse().unwrap());
        assert_eq!(c.add(sh("2026-12-04 16:00"), h(2)), sh("2026-12-05 09:30"));
    }

    #[test]
    fn working_time_between_two_instants_is_the_inverse_of_add() {
        let c = cal();
        let h = Duration::hours;
        // Friday 2026-12-04 16:00 → Monday 10:00: 1.5 h on Friday, 1 h on Monday.
        assert_eq!(c.working_between(sh("2026-12-04 16:00"), sh("2026-12-07 10:00")), Duration::minutes(150));
        // Thursday 2026-12-31 12:00 → Monday 2027-01-04 12:00: New Year's Day and the
        // weekend do not count: 5.5 h on Thursday, 3 h on Monday.
        assert_eq!(c.working_between(sh("2026-12-31 12:00"), sh("2027-01-04 12:00")), Duration::minutes(510));
        // A night and a weekend alone are no working time.
        assert_eq!(c.working_between(sh("2026-12-05 08:00"), sh("2026-12-06 20:00")), Duration::zero());
        assert_eq!(c.working_between(sh("2026-11-30 10:00"), sh("2026-11-30 09:00")), Duration::zero());
        for (from, work) in [("2026-11-30 10:00", h(8)), ("2026-12-04 16:00", h(2)), ("2026-12-31 17:00", h(20))] {
            let start = sh(from);
            let end = c.add(start, work);
            assert_eq!(c.working_between(start, end), work, "from {from}");
        }
    }

    #[test]
    fn a_calendar_without_working_days_still_ends() {
        let mut c = cal();
        c.days.clear();
        let from = sh("2026-11-30 10:00");
        assert_eq!(c.add(from, Duration::hours(1)), from + Duration::hours(1));
    }
}
