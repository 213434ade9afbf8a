//! `[intake]`, `[dispatcher]`, `[scheduler]` and `[limits]`: what an inbound order must
//! carry, how effects are retried, how often the workers sweep, and the queue sizes
//! at which the daemon warns.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{ENV_PREFIX, Problems};
use crate::diagnostics::locate;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawScheduler {
    /// How often the scheduler looks for due approval reminders, escalations and digests.
    pub(crate) sweep_interval_ms: u64,
}

impl Default for RawScheduler {
    fn default() -> Self {
        RawScheduler { sweep_interval_ms: 10_000 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawIntake {
    /// The order template: canonical fields an order must have beyond the always-required
    /// ones (customer id/name/kind, product, amount). Missing ones get a 422.
    pub(crate) required_fields: Vec<String>,
    /// The largest amount an inbound order or payment may carry, by ISO 4217 currency,
    /// as a decimal string (`CNY = "10000000000"`). Larger amounts get a 422 naming
    /// `amount.amount`. Unlisted currencies have no limit of their own.
    pub(crate) max_amount: std::collections::BTreeMap<String, String>,
}

impl Default for RawIntake {
    fn default() -> Self {
        RawIntake {
            required_fields: vec!["customer.id_document".into(), "term_months".into(), "sales_owner".into()],
            max_amount: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawDispatcher {
    /// Effects performed at once, across all connectors.
    pub(crate) concurrency: usize,
    /// Attempts before an effect goes to the dead-letter list.
    pub(crate) max_attempts: u32,
    /// First retry delay; doubles each attempt, with jitter.
    pub(crate) backoff_initial_ms: u64,
    /// Longest retry delay.
    pub(crate) backoff_max_ms: u64,
    /// How often the dispatcher looks for due work when nothing woke it.
    pub(crate) sweep_interval_ms: u64,
    /// How much lower the CPU priority of the dispatcher's and scheduler's threads is
    /// than the listeners' (a nice increment, 0–19).
    pub(crate) background_nice: i32,
    /// Webhook deliveries being taken in at once from which intake is under full
    /// load (0: never).
    pub(crate) busy_intake: usize,
    /// Effects in flight at once while intake is under full load (in place of
    /// `concurrency`; unset: 2, or `concurrency` when that is less).
    pub(crate) busy_concurrency: Option<usize>,
}

impl Default for RawDispatcher {
    fn default() -> Self {
        RawDispatcher {
            concurrency: 16,
            max_attempts: 10,
            backoff_initial_ms: 1000,
            backoff_max_ms: 10 * 60 * 1000,
            sweep_interval_ms: 1000,
            background_nice: 10,
            busy_intake: 16,
            busy_concurrency: None,
        }
    }
}

/// `[limits]`: queue sizes at which the daemon warns (log, and the threshold
/// gauges that `deploy/prometheus-rules.yml` compares the queue gauges with). Nothing
/// is refused or dropped at these sizes: refusing intake would lose orders.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLimits {
    /// Effects waiting in the outbox (due or backing off).
    pub(crate) outbox_alert: u64,
    /// Effects given up on, waiting for an operator to replay them.
    pub(crate) dead_letters_alert: u64,
    /// Payments no order took, waiting for an operator to assign them.
    pub(crate) unmatched_payments_alert: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits { outbox_alert: 100_000, dead_letters_alert: 1_000, unmatched_payments_alert: 1_000 }
    }
}

#[derive(Debug, Clone)]
pub struct DispatcherSettings {
    /// Effects in flight at once across connectors without slots of their own.
    pub concurrency: usize,
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub sweep_interval: Duration,
    /// The nice increment of the background threads (`startup::Background`).
    pub background_nice: i32,
    /// Under full intake load (this many webhook deliveries or more being taken in;
    /// `None`: never), at most `busy_concurrency` effects are in flight.
    pub busy_intake: Option<usize>,
    pub busy_concurrency: usize,
    /// Queue sizes the dispatcher warns about (`[limits]`); `/metrics` shows them.
    pub(crate) queue_alerts: QueueAlerts,
}

/// Queue sizes at which an operator should look (`[limits] *_alert`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueAlerts {
    pub(crate) outbox: u64,
    pub(crate) dead_letters: u64,
    pub(crate) unmatched_payments: u64,
}

impl Default for QueueAlerts {
    fn default() -> Self {
        let r = RawLimits::default();
        QueueAlerts {
            outbox: r.outbox_alert,
            dead_letters: r.dead_letters_alert,
            unmatched_payments: r.unmatched_payments_alert,
        }
    }
}

/// The order template and the per-currency amount limits.
pub(super) fn intake(raw: &RawIntake, p: &mut Problems<'_>) -> crate::engine::IntakeRules {
    for f in &raw.required_fields {
        let known = crate::domain::order::CANONICAL_FIELDS.contains(&f.as_str()) || f == "customer.id_document";
        if !known {
            p.bad(&["intake", "required_fields"], format!("`{f}` is not a canonical order field"));
        }
    }
    crate::engine::IntakeRules { required_fields: raw.required_fields.clone(), max_amount: max_amount(raw, p) }
}

fn max_amount(raw: &RawIntake, p: &mut Problems<'_>) -> BTreeMap<crate::domain::CurrencyCode, rust_decimal::Decimal> {
    let mut max_amount = BTreeMap::new();
    for (key, limit) in &raw.max_amount {
        // Environment keys arrive lower-cased; currency codes are upper case. The
        // config crate hands over both the file's `CNY` and the variable's `cny`:
        // the variable overrides, as for every other key.
        let code = key.to_ascii_uppercase();
        let lower = code.to_ascii_lowercase();
        let env = format!("{ENV_PREFIX}__INTAKE__MAX_AMOUNT__{code}");
        let env_set = std::env::var_os(&env).is_some();
        if *key != lower && env_set && raw.max_amount.contains_key(&lower) {
            continue;
        }
        let in_file =
            [key.as_str(), code.as_str()].into_iter().find(|k| locate(p.text, &["intake", "max_amount", k]).is_some());
        // Point at the key in the file, or at the table when only a variable sets it.
        let mut report = |msg: String| match in_file {
            Some(k) => p.bad(&["intake", "max_amount", k], msg),
            None => {
                let msg = if env_set { format!("{msg} (set by env {env})") } else { msg };
                p.bad(&["intake", "max_amount"], msg);
            }
        };
        let Ok(currency) = code.parse::<crate::domain::CurrencyCode>() else {
            report(format!("`{key}` is not an ISO 4217 currency code (three letters, e.g. CNY)"));
            continue;
        };
        match crate::domain::money::parse_decimal(limit) {
            Ok(d) if d > rust_decimal::Decimal::ZERO => {
                if max_amount.insert(currency, d).is_some() {
                    report(format!("the limit for {currency} is given twice"));
                }
            }
            Ok(_) => report(format!("the limit for {currency} must be positive, got `{limit}`")),
            Err(e) => report(format!("{e}; write the limit as a decimal string, e.g. \"10000000000\"")),
        }
    }
    max_amount
}

/// Effects in flight under full intake load when `busy_concurrency` is not set (or
/// `concurrency`, when that is less).
const BUSY_CONCURRENCY: usize = 2;

/// Retry and sweep settings, with the queue sizes that `[limits]` warns at.
pub(super) fn dispatcher(d: &RawDispatcher, limits: &RawLimits, p: &mut Problems<'_>) -> DispatcherSettings {
    if d.concurrency == 0 || d.max_attempts == 0 || d.backoff_initial_ms == 0 || d.sweep_interval_ms == 0 {
        p.bad(
            &["dispatcher"],
            "concurrency, max_attempts, backoff_initial_ms and sweep_interval_ms must be positive".into(),
        );
    }
    if !(0..=19).contains(&d.background_nice) {
        p.bad(&["dispatcher", "background_nice"], format!("must be 0 to 19, got {}", d.background_nice));
    }
    let busy_concurrency = d.busy_concurrency.unwrap_or(BUSY_CONCURRENCY.min(d.concurrency));
    if busy_concurrency == 0 || busy_concurrency > d.concurrency {
        p.bad(
            &["dispatcher", "busy_concurrency"],
            format!("must be 1 to concurrency ({}), got {busy_concurrency}", d.concurrency),
        );
    }
    if d.backoff_max_ms < d.backoff_initial_ms {
        p.bad(&["dispatcher", "backoff_max_ms"], "must be at least backoff_initial_ms".into());
    }
    let queue_alerts = QueueAlerts {
        outbox: limits.outbox_alert,
        dead_letters: limits.dead_letters_alert,
        unmatched_payments: limits.unmatched_payments_alert,
    };
    for (key, v) in [
        ("outbox_alert", queue_alerts.outbox),
        ("dead_letters_alert", queue_alerts.dead_letters),
        ("unmatched_payments_alert", queue_alerts.unmatched_payments),
    ] {
        if v == 0 {
            p.bad(&["limits", key], "must be at least 1".into());
        }
    }
    DispatcherSettings {
        concurrency: d.concurrency,
        max_attempts: d.max_attempts,
        backoff_initial: Duration::from_millis(d.backoff_initial_ms),
        backoff_max: Duration::from_millis(d.backoff_max_ms),
        sweep_interval: Duration::from_millis(d.sweep_interval_ms),
        background_nice: d.background_nice,
        busy_intake: (d.busy_intake > 0).then_some(d.busy_intake),
        busy_concurrency,
        queue_alerts,
    }
}
