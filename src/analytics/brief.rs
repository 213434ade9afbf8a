//! What a scheduled management report mail shows: a period's headline figures beside
//! the period before, the orders received per hour or day, the top bottlenecks and
//! the wait per approval level, from the `Report` of that period. It is stored in
//! the mail effect (so a retry sends the same mail) and drawn as charts when the
//! mail is composed (`charts`). Figures are codes and numbers: the templates say
//! them in the reader's language. Pure.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::chart::{Orientation, bars};
use super::period::Span;
use super::report::{FeedbackCounts, Report};

/// Bottlenecks a report mail shows (the report ranks them by total business hours).
const BOTTLENECKS: usize = 6;
/// Chart sizes: as wide as the mail's content column (600 px card, 20 px padding).
const CHART_WIDTH: u32 = 560;
const SERIES_HEIGHT: u32 = 180;
/// Height of one row of a ranking chart.
const ROW_HEIGHT: u32 = 28;

/// One headline figure of the period and of the period before (`-`: nothing to
/// measure). `key` names it for the template (`orders`, `approval_median_h`…).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Figure {
    pub(crate) key: String,
    pub(crate) current: String,
    pub(crate) previous: String,
}

/// One bar of a chart with what the HTML says beside it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Bar {
    /// A bucket's start (`11-30`, `08:00`), a stage or department, an approval level.
    pub(crate) label: String,
    /// `stage` or `department` for bottlenecks; empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) kind: String,
    /// What the bar's length is: orders, or seconds of business hours (a bottleneck's
    /// total, an approval level's mean).
    pub(crate) value: u64,
    /// The value as shown: a count, or hours with one decimal.
    pub(crate) shown: String,
    /// Bottlenecks and levels: how many stays, tasks or decisions, and their median
    /// in hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) median_hours: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Brief {
    /// The `[[reports]]` entry's name.
    pub(crate) name: String,
    /// `previous_day`, `previous_week` or `previous_month`.
    pub(crate) period: String,
    /// The period's first and last day in `time_zone`.
    pub(crate) first_day: NaiveDate,
    pub(crate) last_day: NaiveDate,
    pub(crate) time_zone: String,
    pub(crate) figures: Vec<Figure>,
    /// Orders received per hour (a day) or per day (a week, a month).
    pub(crate) received: Vec<Bar>,
    /// The places orders waited longest for the firm's people, as the report ranks
    /// them: total business hours.
    pub(crate) bottlenecks: Vec<Bar>,
    /// Each approval level's mean wait, business hours.
    pub(crate) levels: Vec<Bar>,
    /// Feedback on the process reported in the period, per category (zero in a mail
    /// queued before it was counted).
    #[serde(default)]
    pub(crate) feedback: FeedbackCounts,
}

/// A chart of a brief, ready to embed: `id` is how the mail refers to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Chart {
    pub(crate) id: &'static str,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) png: Vec<u8>,
}

/// Seconds as hours with one decimal (`5400` → `1.5`).
fn hours(seconds: i64) -> String {
    (Decimal::from(seconds) / Decimal::from(3600)).round_dp(1).normalize().to_string()
}

fn opt_hours(seconds: Option<i64>) -> String {
    seconds.map_or_else(|| "-".to_owned(), hours)
}

fn opt_number(d: Option<Decimal>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| d.round_dp(2).normalize().to_string())
}

impl Brief {
    /// The brief of `report` (the period `span` of a `[[reports]]` entry `name`),
    /// with `received` counted in the buckets starting at `buckets`.
    pub(crate) fn of(
        (name, period): (&str, &str),
        span: &Span,
        tz: Tz,
        report: &Report,
        buckets: &[DateTime<Utc>],
        received: &[u64],
    ) -> Brief {
        let (c, p) = (&report.current, &report.previous);
        let k = &report.kpis;
        let figure = |key: &str, current: String, previous: String| Figure { key: key.to_owned(), current, previous };
        let figures = vec![
            figure("orders", c.orders.to_string(), p.orders.to_string()),
            figure("closed", c.closed.to_string(), p.closed.to_string()),
            figure("to_closed_median_h", opt_hours(c.to_closed_median_s), opt_hours(p.to_closed_median_s)),
            figure("approval_median_h", opt_hours(c.approval_median_s), opt_hours(p.approval_median_s)),
            figure("exceptions_per_100", opt_number(c.exceptions_per_100), opt_number(p.exceptions_per_100)),
            figure("satisfaction", opt_number(c.satisfaction), opt_number(p.satisfaction)),
            figure("overdue_ratio", opt_number(c.overdue_ratio), opt_number(p.overdue_ratio)),
            figure("auto_approval_share", opt_number(k.auto_approval_share), "-".into()),
            figure("sla_breaches", k.sla_breaches.to_string(), "-".into()),
            figure("rework", k.rework.to_string(), "-".into()),
        ];
        let hourly = buckets.len() > 1 && (buckets[1] - buckets[0]).num_hours() < 24;
        let received = buckets
            .iter()
            .zip(received)
            .map(|(start, n)| {
                let local = start.with_timezone(&tz);
                let label = if hourly { local.format("%H:%M") } else { local.format("%m-%d") }.to_string();
                Bar { label, kind: String::new(), value: *n, shown: n.to_string(), count: None, median_hours: None }
            })
            .collect();
        let bottlenecks = report
            .process
            .bottlenecks
            .iter()
            .take(BOTTLENECKS)
            .map(|b| Bar {
                label: b.name.clone(),
                kind: b.kind.to_owned(),
                value: u64::try_from(b.business_hours.total_s).unwrap_or(0),
                shown: hours(b.business_hours.total_s),
                count: Some(b.business_hours.count),
                median_hours: Some(hours(b.business_hours.median_s)),
            })
            .collect();
        let levels = k
            .approval_levels
            .iter()
            .map(|d| {
                let wait = &d.wait.business_hours;
                Bar {
                    label: d.key.clone(),
                    kind: String::new(),
                    value: u64::try_from(wait.mean_s).unwrap_or(0),
                    shown: hours(wait.mean_s),
                    count: Some(d.approved + d.declined),
                    median_hours: Some(hours(wait.median_s)),
                }
            })
            .collect();
        Brief {
            name: name.to_owned(),
            period: period.to_owned(),
            first_day: span.first_day,
            last_day: span.last_day,
            time_zone: tz.name().to_owned(),
            figures,
            received,
            bottlenecks,
            levels,
            feedback: report.feedback,
        }
    }

    /// The charts of the brief that have bars: `received` (columns over the period),
    /// `bottlenecks` and `levels` (rows, in the order the HTML lists them).
    pub(crate) fn charts(&self) -> Vec<Chart> {
        let values = |bars: &[Bar]| bars.iter().map(|b| b.value).collect::<Vec<_>>();
        let mut out = Vec::new();
        if !self.received.is_empty() {
            let png = bars(&values(&self.received), Orientation::Columns, CHART_WIDTH, SERIES_HEIGHT);
            out.push(Chart { id: "received", width: CHART_WIDTH, height: SERIES_HEIGHT, png });
        }
        for (id, list) in [("bottlenecks", &self.bottlenecks), ("levels", &self.levels)] {
            if !list.is_empty() {
                let height = ROW_HEIGHT * u32::try_from(list.len()).unwrap_or(1) + 12;
                let png = bars(&values(list), Orientation::Rows, CHART_WIDTH, height);
                out.push(Chart { id, width: CHART_WIDTH, height, png });
            }
        }
        out
    }

    /// A brief with every part filled, for checking the templates.
    pub(crate) fn sample() -> Brief {
        let bar = |label: &str, kind: &str, value: u64| Bar {
            label: label.to_owned(),
            kind: kind.to_owned(),
            value,
            shown: hours(i64::try_from(value).unwrap_or(0)),
            count: Some(3),
            median_hours: Some(hours(i64::try_from(value / 3).unwrap_or(0))),
        };
        Brief {
            name: "weekly".into(),
            period: "previous_week".into(),
            first_day: NaiveDate::from_ymd_opt(2026, 11, 30).expect("a date"),
            last_day: NaiveDate::from_ymd_opt(2026, 12, 6).expect("a date"),
            time_zone: "Asia/Shanghai".into(),
            figures: vec![Figure { key: "orders".into(), current: "12".into(), previous: "9".into() }],
            received: (0..7)
                .map(|d| Bar {
                    label: (NaiveDate::from_ymd_opt(2026, 11, 30).expect("a date") + chrono::Duration::days(d as i64))
                        .format("%m-%d")
                        .to_string(),
                    kind: String::new(),
                    value: d,
                    shown: d.to_string(),
                    count: None,
                    median_hours: None,
                })
                .collect(),
            bottlenecks: vec![bar("awaiting_approval.2", "stage", 7200), bar("legal", "department", 3600)],
            levels: vec![bar("1", "", 1800)],
            feedback: FeedbackCounts { problem: 2, suggestion: 1, complaint: 0, total: 3 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_brief_keeps_its_figures_through_the_outbox_and_draws_its_charts() {
        let b = Brief::sample();
        let stored = serde_json::to_value(&b).unwrap();
        assert_eq!(serde_json::from_value::<Brief>(stored).unwrap(), b);
        let charts = b.charts();
        let ids: Vec<_> = charts.iter().map(|c| c.id).collect();
        assert_eq!(ids, ["received", "bottlenecks", "levels"]);
        for c in &charts {
            let info = png::Decoder::new(std::io::Cursor::new(&c.png)).read_info().unwrap().info().clone();
            assert_eq!((info.width, info.height), (c.width, c.height), "{}", c.id);
        }
        assert_eq!(charts[1].height, 2 * ROW_HEIGHT + 12);
        let empty = Brief { received: Vec::new(), bottlenecks: Vec::new(), levels: Vec::new(), ..b };
        assert!(empty.charts().is_empty());
        assert_eq!((hours(5400), hours(0), hours(3601)), ("1.5".into(), "0".into(), "1".into()));
    }
}
