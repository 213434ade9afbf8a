//! A management report: the KPIs and the bottleneck analysis of the orders received
//! in a period, beside the headline figures of the period before it.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::journey::Journey;
use super::kpi::{Headline, Kpis, headline};
use super::process::Process;
use crate::engine::calendar::Calendar;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The orders received from `from` (inclusive) to `to` (exclusive).
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The time zone of months and business hours.
    pub time_zone: String,
    pub kpis: Kpis,
    pub process: Process,
    /// The headline figures of this period and of the one as long before it.
    pub current: Headline,
    pub previous: Headline,
}

impl Report {
    /// The report of `journeys` (received in the period) against `before` (received in
    /// the period as long before it).
    pub fn of(
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
        }
    }

    /// The period before this one, as long.
    pub fn previous_period(from: DateTime<Utc>, to: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        (from - (to - from), from)
    }
}
