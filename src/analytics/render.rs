//! A report as rows (`section, key, metric, value`), and the rows as text, CSV or
//! HTML. JSON is the `Report` itself. Durations are seconds in CSV and read as
//! `2d 3h 05m` in text and HTML.

use std::fmt::Write as _;

use rust_decimal::Decimal;

use super::kpi::{Headline, Timing};
use super::report::Report;
use super::stats::Summary;

/// How a report is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Format {
    #[default]
    Json,
    Csv,
    Text,
    Html,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            "text" => Ok(Format::Text),
            "html" => Ok(Format::Html),
            _ => Err(format!("`{s}` is not a report format (json, csv, text, html)")),
        }
    }
}

impl Format {
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Text => "text/plain; charset=utf-8",
            Format::Html => "text/html; charset=utf-8",
        }
    }
}

/// `r` written as `format`.
pub(crate) fn write(r: &Report, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(r).expect("a report serializes"),
        Format::Csv => csv(r),
        Format::Text => text(r),
        Format::Html => html(r),
    }
}

/// A figure of a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Figure {
    Count(u64),
    Seconds(i64),
    /// A ratio or a rate; `None` when there was nothing to divide by.
    Number(Option<Decimal>),
}

impl Figure {
    /// Seconds, or `-` when there was nothing to measure.
    fn maybe_seconds(s: Option<i64>) -> Figure {
        s.map_or(Figure::Number(None), Figure::Seconds)
    }

    fn plain(&self) -> String {
        match self {
            Figure::Count(n) => n.to_string(),
            Figure::Seconds(s) => s.to_string(),
            Figure::Number(d) => d.map(|d| d.normalize().to_string()).unwrap_or_default(),
        }
    }

    fn readable(&self) -> String {
        match self {
            Figure::Seconds(s) => duration(*s),
            Figure::Number(None) => "-".to_owned(),
            f => f.plain(),
        }
    }
}

/// `93784` → `1d 2h 03m`; under a minute in seconds.
pub(crate) fn duration(seconds: i64) -> String {
    let (d, h, m) = (seconds / 86_400, seconds % 86_400 / 3600, seconds % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m:02}m"),
        (d, h, m) => format!("{d}d {h}h {m:02}m"),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) section: &'static str,
    pub(crate) key: String,
    pub(crate) metric: &'static str,
    pub(crate) figure: Figure,
}

struct Rows(Vec<Row>);

impl Rows {
    fn push(&mut self, section: &'static str, key: impl Into<String>, metric: &'static str, figure: Figure) {
        self.0.push(Row { section, key: key.into(), metric, figure });
    }

    fn summary(&mut self, section: &'static str, key: &str, prefix: &'static str, s: &Summary) {
        let [count, median, p90, total] = match prefix {
            "business_hours" => ["count", "median_business_hours", "p90_business_hours", "total_business_hours"],
            _ => ["count", "median", "p90", "total"],
        };
        if prefix != "business_hours" {
            self.push(section, key, count, Figure::Count(s.count));
        }
        self.push(section, key, median, Figure::Seconds(s.median_s));
        self.push(section, key, p90, Figure::Seconds(s.p90_s));
        self.push(section, key, total, Figure::Seconds(s.total_s));
    }

    fn timing(&mut self, section: &'static str, key: &str, t: &Timing) {
        self.summary(section, key, "elapsed", &t.elapsed);
        self.summary(section, key, "business_hours", &t.business_hours);
    }

    fn headline(&mut self, section: &'static str, h: &Headline) {
        self.push(section, &h.key, "orders", Figure::Count(h.orders));
        self.push(section, &h.key, "closed", Figure::Count(h.closed));
        self.push(section, &h.key, "median_to_closed", Figure::maybe_seconds(h.to_closed_median_s));
        self.push(section, &h.key, "median_approval_business_hours", Figure::maybe_seconds(h.approval_median_s));
        self.push(section, &h.key, "exceptions_per_100", Figure::Number(h.exceptions_per_100));
        self.push(section, &h.key, "satisfaction", Figure::Number(h.satisfaction));
        self.push(section, &h.key, "overdue_ratio", Figure::Number(h.overdue_ratio));
    }
}

/// Every figure of `r`, one a row, in the order a reader wants them.
pub(crate) fn rows(r: &Report) -> Vec<Row> {
    let mut out = Rows(Vec::new());
    let k = &r.kpis;
    out.headline("period", &r.current);
    out.headline("period", &r.previous);
    for (state, n) in &k.ended {
        out.push("ended", state, "orders", Figure::Count(*n));
    }
    out.timing("processing", "received_to_executing", &k.processing.to_executing);
    out.timing("processing", "received_to_closed", &k.processing.to_closed);
    for d in &k.approval_levels {
        out.push("approval_level", &d.key, "approved", Figure::Count(d.approved));
        out.push("approval_level", &d.key, "declined", Figure::Count(d.declined));
        out.timing("approval_level", &d.key, &d.wait);
    }
    for (name, t) in &k.stages {
        out.timing("stage", name, t);
    }
    for (name, t) in &k.departments {
        out.timing("department", name, t);
    }
    let rates = [
        ("sla_breaches", Figure::Count(k.sla_breaches)),
        ("auto_approval_share", Figure::Number(k.auto_approval_share)),
        ("rework", Figure::Count(k.rework)),
        ("rework_per_100", Figure::Number(k.rework_per_100)),
        ("exceptions_per_100", Figure::Number(k.exceptions_per_100)),
        ("overdue_ratio", Figure::Number(k.overdue_ratio)),
        ("dunning_success", Figure::Number(k.dunning_success)),
        ("tickets_per_100", Figure::Number(k.tickets_per_100)),
    ];
    for (metric, figure) in rates {
        out.push("quality", "all", metric, figure);
    }
    out.summary("invoice_to_cash", "all", "elapsed", &k.invoice_to_cash);
    let s = &k.satisfaction;
    for (metric, figure) in [
        ("answers", Figure::Count(s.answers)),
        ("average", Figure::Number(s.average)),
        ("promoters", Figure::Count(s.promoters)),
        ("passives", Figure::Count(s.passives)),
        ("detractors", Figure::Count(s.detractors)),
        ("net", Figure::Number(s.net)),
        ("complaints", Figure::Count(s.complaints)),
    ] {
        out.push("satisfaction", "all", metric, figure);
    }
    process_rows(&mut out, r);
    for (section, groups) in [
        ("by_product", &k.by_product),
        ("by_sales_owner", &k.by_sales_owner),
        ("by_rating", &k.by_rating),
        ("by_month", &k.by_month),
    ] {
        for h in groups {
            out.headline(section, h);
        }
    }
    out.0
}

fn process_rows(out: &mut Rows, r: &Report) {
    for b in &r.process.bottlenecks {
        out.summary("bottleneck", &format!("{} {}", b.kind, b.name), "business_hours", &b.business_hours);
    }
    for b in &r.process.approvers {
        out.summary("approver_wait", &b.name, "business_hours", &b.business_hours);
    }
    for a in &r.process.arcs {
        let key = format!("{} -> {}", a.from, a.to);
        out.push("process_map", &key, "count", Figure::Count(a.count));
        out.push("process_map", &key, "median", Figure::Seconds(a.median_s));
        out.push("process_map", &key, "p90", Figure::Seconds(a.p90_s));
    }
    for v in &r.process.variants {
        let key = v.path.join(" > ");
        out.push("variant", &key, "orders", Figure::Count(v.orders));
        out.push("variant", &key, "share", Figure::Number(v.share));
    }
}

/// The rows as CSV with a header (RFC 4180 quoting).
pub(crate) fn csv(r: &Report) -> String {
    let mut s = String::from("section,key,metric,value\r\n");
    for row in rows(r) {
        let fields = [row.section, &row.key, row.metric, &row.figure.plain()].map(csv_field);
        s.push_str(&fields.join(","));
        s.push_str("\r\n");
    }
    s
}

/// A CSV field, quoted when it must be (RFC 4180).
pub(crate) fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

/// The period's bounds in the report's time zone, as people read them.
fn local(r: &Report) -> (String, String) {
    let tz: chrono_tz::Tz = r.time_zone.parse().unwrap_or(chrono_tz::UTC);
    let show = |t: chrono::DateTime<chrono::Utc>| t.with_timezone(&tz).format("%F %H:%M").to_string();
    (show(r.from), show(r.to))
}

/// The rows for people: a block per section, aligned.
pub(crate) fn text(r: &Report) -> String {
    let (from, to) = local(r);
    let mut s = format!("orders received {from} to {to} ({})\n", r.time_zone);
    let rows = rows(r);
    let width = rows.iter().map(|r| r.key.chars().count()).max().unwrap_or(0).min(60);
    let mut section = "";
    for row in &rows {
        if row.section != section {
            section = row.section;
            let _ = write!(s, "\n{section}\n");
        }
        let pad = width.saturating_sub(row.key.chars().count());
        let _ = writeln!(s, "  {}{}  {:<30} {}", row.key, " ".repeat(pad), row.metric, row.figure.readable());
    }
    s
}

/// A readable page on a phone or a desk, printable, with no outside resources.
const STYLE: &str = "body{font-family:system-ui,'Noto Sans CJK SC',sans-serif;margin:1rem;color:#1f2933}\
h1{font-size:1.3rem}h2{font-size:1.05rem;margin-top:1.5rem;border-bottom:1px solid #cbd2d9}\
table{border-collapse:collapse;width:100%;max-width:60rem}td,th{padding:.25rem .5rem;text-align:left;\
border-bottom:1px solid #e4e7eb;overflow-wrap:break-word}td:last-child{text-align:right;white-space:nowrap}\
tr:nth-child(even){background:#f5f7fa}";

/// The rows as an HTML page: a table per section.
pub(crate) fn html(r: &Report) -> String {
    let esc = |t: &str| t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let mut s = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>orderbridge report</title><style>{STYLE}</style></head><body>\
         <h1>Orders received {} to {} ({})</h1>",
        local(r).0,
        local(r).1,
        esc(&r.time_zone)
    );
    let mut section = "";
    for row in rows(r) {
        if row.section != section {
            if !section.is_empty() {
                s.push_str("</table>");
            }
            section = row.section;
            let _ = write!(s, "<h2>{section}</h2><table><tr><th>key</th><th>metric</th><th>value</th></tr>");
        }
        // Long names may break after an underscore on a phone.
        let (key, metric) = (esc(&row.key).replace('_', "_<wbr>"), row.metric.replace('_', "_<wbr>"));
        let _ = write!(s, "<tr><td>{key}</td><td>{metric}</td><td>{}</td></tr>", esc(&row.figure.readable()));
    }
    if !section.is_empty() {
        s.push_str("</table>");
    }
    s.push_str("</body></html>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_days_hours_minutes() {
        assert_eq!(duration(42), "42s");
        assert_eq!(duration(600), "10m");
        assert_eq!(duration(3 * 3600 + 5 * 60), "3h 05m");
        assert_eq!(duration(93_784), "1d 2h 03m");
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("a > b"), "a > b");
        assert_eq!(csv_field("wang, li"), "\"wang, li\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
