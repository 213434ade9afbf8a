//! When periodic work runs: every N seconds, or on a cron schedule in the site's time
//! zone (`minute hour day-of-month month day-of-week`, as in crontab(5): `*`, lists,
//! ranges, steps, `JAN`…`DEC`, `SUN`…`SAT`; when both day fields are restricted, a day
//! matching either runs, as Vixie cron does).

use std::time::Duration;

/// How long a daemon holds the lease of a cron job's occurrence (`Store::try_lease`):
/// under a minute, the finest cron step, so the next occurrence is free again; far
/// above the seconds by which the daemons sharing a database wake apart.
pub const CRON_LEASE: Duration = Duration::from_secs(50);

use chrono::{DateTime, Datelike, Duration as Span, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Every(Duration),
    Cron(Cron),
}

impl Schedule {
    /// The first run time strictly after `now`.
    pub fn next_after(&self, now: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
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
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    days_any: bool,
    weekdays_any: bool,
}

const MONTHS: [&str; 12] = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn field(text: &str, what: &str, lo: u32, hi: u32, names: &[&str]) -> Result<(u64, bool), String> {
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(lo + u32::try_from(i).expect("few names"));
        }
        let n: u32 = s.parse().map_err(|_| format!("{what}: `{s}` is not a number"))?;
        if n < lo || n > hi { Err(format!("{what}: {n} is outside {lo}-{hi}")) } else { Ok(n) }
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let s: u32 = s.parse().map_err(|_| format!("{what}: step `{s}` is not a number"))?;
                if s == 0 {
                    return Err(format!("{what}: a step of 0"));
                }
                (r, s)
            }
            None => (part, 1),
        };
        let (a, b) = match range {
            "*" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                None if part.contains('/') => (value(r)?, hi),
                None => {
                    let v = value(r)?;
                    (v, v)
                }
            },
        };
        if a > b {
            return Err(format!("{what}: range {a}-{b} runs backwards"));
        }
        for v in (a..=b).step_by(step as usize) {
            bits |= 1 << v;
        }
    }
    Ok((bits, text == "*"))
}

impl std::str::FromStr for Cron {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let f: Vec<&str> = text.split_whitespace().collect();
        let [m, h, dom, mon, dow] = f.as_slice() else {
            return Err(format!(
                "`{text}` is not a cron expression: five fields, minute hour day-of-month month day-of-week"
            ));
        };
        let (minutes, _) = field(m, "minute", 0, 59, &[])?;
        let (hours, _) = field(h, "hour", 0, 23, &[])?;
        let (days, days_any) = field(dom, "day of month", 1, 31, &[])?;
        let (months, _) = field(mon, "month", 1, 12, &MONTHS)?;
        let (mut weekdays, weekdays_any) = field(dow, "day of week", 0, 7, &DAYS)?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1; // 7 is Sunday too
        }
        Ok(Cron {
            text: text.to_owned(),
            minutes,
            hours: u32::try_from(hours).expect("24 bits"),
            days: u32::try_from(days >> 1).expect("31 bits"),
            months: u16::try_from(months >> 1).expect("12 bits"),
            weekdays: u8::try_from(weekdays & 0x7f).expect("7 bits"),
            days_any,
            weekdays_any,
        })
    }
}

impl Cron {
    fn day_matches(&self, d: NaiveDate) -> bool {
        let dom = self.days & (1 << (d.day() - 1)) != 0;
        let dow = self.weekdays & (1 << d.weekday().num_days_from_sunday()) != 0;
        match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    /// The first matching minute strictly after `now`, in `tz`. A local time skipped
    /// by a daylight-saving change is skipped; a repeated one runs once.
    pub fn next_after(&self, now: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        // An expression that never matches (31 February) is refused at load time.
        self.find(now, tz).unwrap_or(now + Span::days(1))
    }

    fn find(&self, now: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&tz).naive_local();
        let mut day = local.date();
        let mut from_minute = local.hour() * 60 + local.minute() + 1;
        // At most four years ahead (29 February on a Monday, say).
        for _ in 0..(366 * 4 + 1) {
            if self.months & (1 << (day.month() - 1)) != 0 && self.day_matches(day) {
                for minute_of_day in from_minute..24 * 60 {
                    let (h, m) = (minute_of_day / 60, minute_of_day % 60);
                    if self.hours & (1 << h) != 0 && self.minutes & (1 << m) != 0 {
                        let t = day.and_hms_opt(h, m, 0).expect("valid time");
                        if let Some(at) = tz.from_local_datetime(&t).earliest() {
                            let at = at.with_timezone(&Utc);
                            if at > now {
                                return Some(at);
                            }
                        }
                    }
                }
            }
            day = day.succ_opt().expect("far from the end of time");
            from_minute = 0;
        }
        None
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

/// Reads `every_secs` / `cron` of a configuration section.
///
/// # Errors
/// Both given, a zero interval, or a cron expression that is malformed or never runs.
pub fn from_config(every_secs: Option<u64>, cron: Option<&str>, default_secs: u64) -> Result<Schedule, String> {
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
    fn bad_expressions_say_what_is_wrong() {
        for (text, want) in [
            ("* * * *", "five fields"),
            ("60 * * * *", "minute: 60 is outside 0-59"),
            ("* 5-2 * * *", "runs backwards"),
            ("*/0 * * * *", "step of 0"),
            ("* * * * FUNDAY", "not a number"),
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
