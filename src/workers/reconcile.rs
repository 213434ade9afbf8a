//! Reconciliation: on its schedule (or `POST /api/reconcile`), asks the other systems
//! for their status of each order in a checked state and compares it with ours
//! (`[reconciliation]` in rules.toml). A disagreement opens an exception on the order
//! (where its state allows one) naming both sides; every disagreement is reported and
//! counted (`orderbridge_reconcile_mismatches_total`).

use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::connectors::{Outbound, Registry};
use crate::engine::{Actor, OrderEvent, Rules};
use crate::metrics::Metrics;
use crate::orders::{OrderError, Orders};

#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    pub(crate) checked: usize,
    pub(crate) mismatches: Vec<Mismatch>,
    /// Orders whose status could not be asked (the system was down, …).
    pub(crate) errors: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Mismatch {
    pub(crate) order_id: String,
    pub(crate) check: String,
    pub(crate) state: String,
    pub(crate) external: Option<String>,
    /// Whether an exception was opened (not possible in every state).
    pub(crate) exception_opened: bool,
}

/// One pass over every check.
///
/// # Errors
/// Only the store's; a system that cannot be asked is reported in `errors`.
pub(crate) async fn run_once(
    orders: &Orders,
    registry: &Registry,
    rules: &Rules,
    metrics: &Metrics,
    clock: &Clock,
) -> Result<Report, OrderError> {
    let mut report = Report::default();
    let Some(rec) = &rules.reconciliation else { return Ok(report) };
    for check in &rec.checks {
        let Some(push) = registry.connectors.get(&check.connector).and_then(|c| c.push.clone()) else {
            report.errors.push(format!("{}: connector {} pushes nothing", check.id, check.connector));
            continue;
        };
        for (state, allowed) in &check.expect {
            let mut after = None;
            loop {
                let page = orders.store().list(Some(state), after, 200).await?;
                let Some(last) = page.last() else { break };
                after = Some(last.id);
                for order in &page {
                    report.checked += 1;
                    let body = json!({
                        "order_id": order.id.to_string(),
                        "external_id": order.source.id.as_str(),
                        "state": order.state.name(),
                        "order": order.order,
                        "references": order.references,
                    });
                    let key = format!("reconcile:{}:{}", check.id, order.id);
                    let answer = push
                        .perform(Outbound { operation: &check.operation, idempotency_key: &key, body: &body })
                        .await;
                    let external = match answer {
                        Ok(r) => r.reference,
                        Err(e) => {
                            report.errors.push(format!("{} {}: {e}", check.id, order.id));
                            continue;
                        }
                    };
                    if external.as_ref().is_some_and(|s| allowed.contains(s)) {
                        continue;
                    }
                    metrics.inc("orderbridge_reconcile_mismatches_total", &[("check", check.id.as_str())]);
                    let reason = format!(
                        "reconciliation {}: {} reports {} while the order is {}",
                        check.id,
                        check.connector,
                        external.as_deref().map_or_else(|| "no record".to_owned(), |s| format!("`{s}`")),
                        order.state.name()
                    );
                    tracing::warn!(order_id = %order.id, check = %check.id, "{reason}");
                    let opened = orders
                        .apply(order.id, Actor::System, OrderEvent::ExceptionOpened { reason }, rules, clock.now())
                        .await
                        .is_ok();
                    report.mismatches.push(Mismatch {
                        order_id: order.id.to_string(),
                        check: check.id.clone(),
                        state: state.clone(),
                        external,
                        exception_opened: opened,
                    });
                }
            }
        }
    }
    Ok(report)
}

/// The scheduled runs.
pub(crate) struct Reconciler {
    pub(crate) orders: Arc<Orders>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) rules: crate::review::LiveRules,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) clock: Clock,
    pub(crate) time_zone: chrono_tz::Tz,
}

impl Reconciler {
    pub(crate) async fn run(self, stop: CancellationToken) {
        let Some(schedule) = self.rules.reconciliation.as_ref().map(|r| r.schedule.clone()) else { return };
        loop {
            let next = schedule.next_after(self.clock.now(), self.time_zone);
            while self.clock.now() < next {
                let left = (next - self.clock.now()).to_std().unwrap_or_default();
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(left.min(std::time::Duration::from_secs(1))) => {}
                }
            }
            // Once across the daemons sharing a database: whoever takes the lease first.
            match self.orders.store().try_lease("reconcile", crate::schedule::CRON_LEASE).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "reconciliation cannot take its lease; it runs at its next time");
                    continue;
                }
            }
            match run_once(&self.orders, &self.registry, &self.rules, &self.metrics, &self.clock).await {
                Ok(r) => tracing::info!(
                    checked = r.checked,
                    mismatches = r.mismatches.len(),
                    errors = r.errors.len(),
                    "reconciliation done"
                ),
                Err(e) => tracing::error!(error = %e, "reconciliation stopped; it runs again at its next time"),
            }
        }
    }
}
