//! Prometheus metrics, kept in-process and rendered as text on `/metrics`.
//! Names are prefixed `orderbridge_`; label names follow the audit's words
//! (`connector`, `operation`, `state`, `outcome`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Bucket bounds for latencies, in seconds.
/// Stages last minutes to weeks: 1 min, 5 min, 15 min, 1 h, 4 h, 8 h, 1 d, 3 d, 7 d, 30 d.
const STAGE_BUCKETS: &[f64] =
    &[60.0, 300.0, 900.0, 3600.0, 14_400.0, 28_800.0, 86_400.0, 259_200.0, 604_800.0, 2_592_000.0];

pub(crate) const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

const HELP: &[(&str, &str, &str)] = &[
    ("orderbridge_webhooks_total", "counter", "Webhook deliveries by connector and HTTP status."),
    (
        "orderbridge_webhook_duration_seconds",
        "histogram",
        "Time from request to answer for webhook deliveries, including the durable commit.",
    ),
    (
        "orderbridge_orders_ingested_total",
        "counter",
        "Inbound deliveries by connector and outcome (accepted: new or amended, duplicate, skipped).",
    ),
    ("orderbridge_orders_entered_state_total", "counter", "Orders that ended an intake step in each state."),
    (
        "orderbridge_effect_attempts_total",
        "counter",
        "Outbound effect attempts by connector, operation and outcome (success, retry, dead, rate_limited, deferred).",
    ),
    ("orderbridge_effect_duration_seconds", "histogram", "Duration of outbound effect attempts."),
    (
        "orderbridge_effects_in_flight",
        "gauge",
        "Effects being performed now, by connector (at most its `[limits] concurrency`).",
    ),
    (
        "orderbridge_dispatcher_concurrency",
        "gauge",
        "Effects the dispatcher lets be in flight at once now: `dispatcher.concurrency`, or `busy_concurrency` while intake is under full load.",
    ),
    ("orderbridge_commit_batch_size", "histogram", "Writes made durable by one group commit (flush + fsync)."),
    ("orderbridge_commit_duration_seconds", "histogram", "Duration of one group commit (flush + fsync)."),
    ("orderbridge_outbox_pending", "gauge", "Effects waiting in the outbox (due or backing off)."),
    (
        "orderbridge_dead_letters",
        "gauge",
        "Effects that gave up and wait for an operator (`orderbridge outbox replay`).",
    ),
    (
        "orderbridge_unmatched_payments",
        "gauge",
        "Payments no order took, waiting for an operator (`POST /api/payments/unmatched/{source}/{payment_id}/assign`).",
    ),
    (
        "orderbridge_outbox_alert_threshold",
        "gauge",
        "`limits.outbox_alert`: the outbox size an operator should look at (compare orderbridge_outbox_pending).",
    ),
    (
        "orderbridge_dead_letters_alert_threshold",
        "gauge",
        "`limits.dead_letters_alert` (compare orderbridge_dead_letters).",
    ),
    (
        "orderbridge_unmatched_payments_alert_threshold",
        "gauge",
        "`limits.unmatched_payments_alert` (compare orderbridge_unmatched_payments).",
    ),
    (
        "orderbridge_disk_free_bytes",
        "gauge",
        "Bytes the daemon may still write on a volume it writes (data: the store and documents; archive: its segments). A full volume stops the daemon.",
    ),
    ("orderbridge_disk_size_bytes", "gauge", "Size of that volume, in bytes."),
    (
        "orderbridge_quarantined_rows",
        "gauge",
        "Stored rows that could not be decoded and were set aside (`orderbridge store quarantine`).",
    ),
    (
        "orderbridge_poll_failures_total",
        "counter",
        "Polling runs stopped by the source, by connector and kind (auth, other).",
    ),
    (
        "orderbridge_reconcile_mismatches_total",
        "counter",
        "Orders whose state another system disagreed with, by reconciliation check.",
    ),
    (
        "orderbridge_connector_paused_total",
        "counter",
        "Times a connector was paused after its credentials were refused.",
    ),
    (
        "orderbridge_connector_paused",
        "gauge",
        "1 while a connector sends nothing, by reason: rate_limit (a 429 or a Retry-After; ends by itself) or auth (credentials refused; ends with POST /api/connectors/{id}/resume).",
    ),
    (
        "orderbridge_connector_rate_limited_total",
        "counter",
        "Answers that paused a connector: 429, or a temporary failure with Retry-After.",
    ),
    (
        "orderbridge_panics_total",
        "counter",
        "Panics caught by task (http: a request answered 500; dispatcher: an attempt recorded as a retryable failure). Each is a bug: report it.",
    ),
    (
        "orderbridge_http_busy_total",
        "counter",
        "Requests answered 503 busy because no request slot came free in time (server.queue_timeout_secs), by listener.",
    ),
    (
        "orderbridge_stage_duration_seconds",
        "histogram",
        "How long orders stayed in a stage (a state, approval levels apart) before they left it, by stage.",
    ),
    ("orderbridge_orders", "gauge", "Orders in each open state now (from the store's state index)."),
    (
        "orderbridge_oldest_order_age_seconds",
        "gauge",
        "Age (since received) of the oldest order in each open state; 0 when the state is empty.",
    ),
    (
        "orderbridge_outbox_lag_seconds",
        "gauge",
        "How long the oldest due effect has been waiting past its due time; 0 when none is due.",
    ),
    ("orderbridge_build_info", "gauge", "Build information."),
    ("orderbridge_archive_orders_total", "counter", "Orders moved from the hot store to the archive."),
    ("orderbridge_archive_purged_total", "counter", "Archived orders purged after `archive.retain_years`."),
    (
        "orderbridge_shadow_orders_compared_total",
        "counter",
        "New orders decided a second time under the shadow rules, by shadow rules_version.",
    ),
    (
        "orderbridge_shadow_orders_differing_total",
        "counter",
        "New orders whose intake decision differs under the shadow rules, by shadow rules_version.",
    ),
    (
        "orderbridge_shadow_later_decisions_differing_total",
        "counter",
        "Later steps of orders (approvals, execution, invoices…) decided differently under the shadow rules.",
    ),
    (
        "orderbridge_personal_data_erased_total",
        "counter",
        "Orders whose personal data was erased (data key deleted), by reason (`retention`, `request`).",
    ),
    ("orderbridge_archive_segments", "gauge", "Segment files in the archive after the last pass."),
    (
        "orderbridge_archive_last_run_timestamp_seconds",
        "gauge",
        "When the last archive pass finished (Unix time, the daemon's clock).",
    ),
];

#[derive(Default)]
struct Histogram {
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

#[derive(Default)]
pub struct Metrics {
    counters: Mutex<Series<u64>>,
    histograms: Mutex<Series<Histogram>>,
    /// Gauges with labels, set by their owner (the dispatcher) as things change.
    gauges: Mutex<Series<f64>>,
}

/// Values by metric name, then by their labels as exposed (`a="x",b="y"`).
type Series<T> = BTreeMap<&'static str, BTreeMap<String, T>>;

/// Changes the value of one series, made with `new` when it is first seen. A series
/// seen before costs no allocation: its labels are written into a buffer the thread
/// keeps, outside the lock, and looked up by that text.
fn update<T>(
    map: &Mutex<Series<T>>,
    name: &'static str,
    pairs: &[(&str, &str)],
    new: impl FnOnce() -> T,
    f: impl FnOnce(&mut T),
) {
    thread_local!(static LABELS: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) });
    LABELS.with_borrow_mut(|text| {
        text.clear();
        write_labels(text, pairs);
        let mut map = map.lock().expect("metrics lock");
        let of_name = map.entry(name).or_default();
        if let Some(v) = of_name.get_mut(text.as_str()) {
            f(v);
        } else {
            let mut v = new();
            f(&mut v);
            of_name.insert(text.clone(), v);
        }
    });
}

/// A series' name with its labels, or bare when it has none.
fn series(name: &str, labels: &str) -> String {
    if labels.is_empty() { name.to_owned() } else { format!("{name}{{{labels}}}") }
}

fn write_labels(s: &mut String, pairs: &[(&str, &str)]) {
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(k);
        s.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
}

impl Metrics {
    pub(crate) fn inc(&self, name: &'static str, pairs: &[(&str, &str)]) {
        update(&self.counters, name, pairs, || 0, |c| *c += 1);
    }

    pub(crate) fn add(&self, name: &'static str, pairs: &[(&str, &str)], n: u64) {
        update(&self.counters, name, pairs, || 0, |c| *c += n);
    }

    /// Sets a labelled gauge.
    pub(crate) fn set(&self, name: &'static str, pairs: &[(&str, &str)], value: f64) {
        update(&self.gauges, name, pairs, || value, |g| *g = value);
    }

    pub(crate) fn observe(&self, name: &'static str, pairs: &[(&str, &str)], value: f64, bounds: &'static [f64]) {
        let new = || Histogram { buckets: bounds.iter().map(|b| (*b, 0)).collect(), ..Default::default() };
        update(&self.histograms, name, pairs, new, |h| {
            for (b, n) in &mut h.buckets {
                if value <= *b {
                    *n += 1;
                }
            }
            h.sum += value;
            h.count += 1;
        });
    }

    /// An order left `stage` after staying `stayed`.
    pub(crate) fn observe_stage(&self, stage: &str, stayed: Duration) {
        self.observe("orderbridge_stage_duration_seconds", &[("stage", stage)], stayed.as_secs_f64(), STAGE_BUCKETS);
    }

    pub(crate) fn observe_commit(&self, batch: usize, took: Duration) {
        self.observe("orderbridge_commit_batch_size", &[], batch as f64, BATCH_BUCKETS);
        self.observe("orderbridge_commit_duration_seconds", &[], took.as_secs_f64(), LATENCY_BUCKETS);
    }

    /// Prometheus text exposition, with `gauges` sampled by the caller.
    pub fn render(&self, gauges: &[(&'static str, f64)]) -> String {
        let mut out = String::new();
        let counters = self.counters.lock().expect("metrics lock");
        let histograms = self.histograms.lock().expect("metrics lock");
        let stored = self.gauges.lock().expect("metrics lock");
        for (name, kind, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            match *kind {
                "counter" => {
                    for (l, v) in counters.get(name).into_iter().flatten() {
                        let _ = writeln!(out, "{} {v}", series(name, l));
                    }
                }
                "histogram" => {
                    for (l, h) in histograms.get(name).into_iter().flatten() {
                        let n = name;
                        let sep = if l.is_empty() { "" } else { "," };
                        for (b, c) in &h.buckets {
                            let _ = writeln!(out, "{n}_bucket{{{l}{sep}le=\"{b}\"}} {c}");
                        }
                        let _ = writeln!(out, "{n}_bucket{{{l}{sep}le=\"+Inf\"}} {}", h.count);
                        let _ = writeln!(out, "{} {}", series(&format!("{n}_sum"), l), h.sum);
                        let _ = writeln!(out, "{} {}", series(&format!("{n}_count"), l), h.count);
                    }
                }
                _ if *name == "orderbridge_build_info" => {
                    let _ = writeln!(out, "{name}{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
                }
                _ => {
                    for (g, v) in gauges.iter().filter(|(g, _)| g == name) {
                        let _ = writeln!(out, "{g} {v}");
                    }
                    for (l, v) in stored.get(name).into_iter().flatten() {
                        let _ = writeln!(out, "{} {v}", series(name, l));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric the shipped dashboard and alert rules query is one the daemon
    /// exports (a renamed metric would leave a panel empty and an alert silent).
    #[test]
    fn the_dashboard_and_the_alert_rules_query_metrics_that_exist() {
        let known: Vec<&str> = HELP.iter().map(|(n, _, _)| *n).collect();
        let shipped =
            [include_str!("../deploy/grafana-dashboard.json"), include_str!("../deploy/prometheus-rules.yml")];
        let mut used = 0;
        for text in shipped {
            for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if !word.starts_with("orderbridge_") || word == "orderbridge_" {
                    continue;
                }
                let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| word.strip_suffix(s)).unwrap_or(word);
                assert!(known.contains(&word) || known.contains(&base), "{word} is not a metric the daemon exports");
                used += 1;
            }
        }
        assert!(used > 20, "the dashboard and rules name metrics ({used})");
        let dashboard: serde_json::Value = serde_json::from_str(shipped[0]).unwrap();
        assert!(
            dashboard["panels"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| !p["targets"][0]["expr"].as_str().unwrap().is_empty())
        );
    }

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        m.inc("orderbridge_webhooks_total", &[("connector", "demo-crm"), ("status", "202")]);
        m.inc("orderbridge_webhooks_total", &[("connector", "demo-crm"), ("status", "202")]);
        m.observe("orderbridge_webhook_duration_seconds", &[("connector", "demo-crm")], 0.003, LATENCY_BUCKETS);
        let text = m.render(&[("orderbridge_outbox_pending", 7.0)]);
        assert!(text.contains("orderbridge_webhooks_total{connector=\"demo-crm\",status=\"202\"} 2"), "{text}");
        assert!(text.contains("orderbridge_webhook_duration_seconds_bucket{connector=\"demo-crm\",le=\"0.005\"} 1"));
        assert!(text.contains("orderbridge_webhook_duration_seconds_bucket{connector=\"demo-crm\",le=\"0.002\"} 0"));
        assert!(text.contains("orderbridge_outbox_pending 7"));
        m.set("orderbridge_connector_paused", &[("connector", "demo-erp"), ("reason", "rate_limit")], 1.0);
        let text = m.render(&[]);
        assert!(text.contains("# TYPE orderbridge_connector_paused gauge"), "{text}");
        assert!(
            text.contains("orderbridge_connector_paused{connector=\"demo-erp\",reason=\"rate_limit\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped_as_the_text_format_asks() {
        let m = Metrics::default();
        m.inc("orderbridge_webhooks_total", &[("connector", "a\"b\\c\nd 订单"), ("status", "202")]);
        let text = m.render(&[]);
        assert!(text.contains(r#"orderbridge_webhooks_total{connector="a\"b\\c\nd 订单",status="202"} 1"#), "{text}");
    }
}
