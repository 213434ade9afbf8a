//! `orderbridge rules diff --against-history`: replays stored decisions through a
//! candidate rule set and lists every order whose screening result or approval route
//! would change. The change-management gate for `config/rules.toml`.
//!
//! Each order is replayed from its last screening decision, on the inputs that
//! decision recorded (so history-based inputs are what they were then); an order
//! decided before inputs were recorded is rebuilt from its data, with no history.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;

use crate::engine::OrderEvent;
use crate::engine::lifecycle::RuleHit;
use crate::engine::rules::{Level, NO_ROUTE, Rules, Screening};
use crate::engine::table::{self, History, INPUTS, Input, Inputs};
use crate::store::EventRecord;

/// Replays the orders of the store (the last `last`, or all; archived ones found in
/// the archive) through `candidate`: the impact report of `rules diff` and `rules
/// propose` on the store itself (the CLI without a daemon, and the daemon's API).
///
/// # Errors
/// The store or the archive could not be read.
pub(crate) async fn over_store(
    orders: &crate::orders::Orders,
    archive: &crate::archive::Archive,
    candidate: &Rules,
    last: Option<usize>,
) -> anyhow::Result<Report> {
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page: Vec<_> = orders.store().list(None, after, 1000).await?.into_iter().map(|r| r.id).collect();
        let Some(l) = page.last().copied() else { break };
        after = Some(l);
        ids.extend(page);
    }
    if let Some(n) = last {
        ids = ids.split_off(ids.len().saturating_sub(n));
    }
    let mut report = Report::new(candidate);
    for id in ids {
        let Some(found) = archive.find(id).await? else { continue };
        let order = crate::http::api::found_json(&found);
        let events: Vec<EventRecord> = serde_json::from_value(order["events"].clone())?;
        report.add(candidate, &order, &events);
    }
    Ok(report)
}

/// A screening outcome, comparable across rule sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Outcome {
    /// `passed`, `flagged` or `rejected`.
    pub(crate) result: &'static str,
    pub(crate) fired: BTreeSet<String>,
    pub(crate) row: Option<String>,
    pub(crate) chain: Vec<String>,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.result)?;
        if !self.fired.is_empty() {
            write!(f, " [{}]", self.fired.iter().cloned().collect::<Vec<_>>().join(", "))?;
        }
        if let Some(row) = &self.row {
            write!(f, " via {row} ({})", if self.chain.is_empty() { "—".into() } else { self.chain.join(" → ") })?;
        }
        Ok(())
    }
}

fn chain_text(c: &[Level]) -> Vec<String> {
    c.iter().map(ToString::to_string).collect()
}

fn fired_ids(h: &[RuleHit]) -> BTreeSet<String> {
    h.iter().map(|h| h.rule_id.clone()).collect()
}

/// One order whose decision would change.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Change {
    pub(crate) order_id: String,
    pub(crate) source: String,
    pub(crate) amount: String,
    pub(crate) before: Outcome,
    pub(crate) after: Outcome,
    pub(crate) rules_version: String,
    /// The recorded inputs were missing; they were rebuilt from the order's data.
    pub(crate) rebuilt: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Report {
    pub(crate) candidate_version: String,
    pub(crate) replayed: usize,
    pub(crate) not_screened: usize,
    pub(crate) rebuilt: usize,
    pub(crate) changes: Vec<Change>,
    pub(crate) result_changed: usize,
    pub(crate) fired_changed: usize,
    pub(crate) route_changed: usize,
}

/// Inputs read back from the audit: numbers were written as text; make them numbers
/// again (the input list says which are).
pub(crate) fn restore(recorded: &Inputs) -> Inputs {
    const NUMERIC: &[&str] =
        &["amount", "term_months", "customer.credit_rank", "history.orders", "history.amount", "history.same_product"];
    debug_assert!(NUMERIC.iter().all(|n| INPUTS.iter().any(|(i, _)| i == n)));
    recorded
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Input::Text(t) if NUMERIC.contains(&k.as_str()) => t.parse().map_or(v.clone(), Input::Number),
                other => other.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}

/// What `rules` decide on `inputs`.
pub(crate) fn outcome(rules: &Rules, inputs: &Inputs) -> Outcome {
    match rules.screen(inputs) {
        Screening::Passed => match rules.route(inputs) {
            Ok(r) => {
                Outcome { result: "passed", fired: BTreeSet::new(), row: Some(r.row), chain: chain_text(&r.chain) }
            }
            Err(_) => Outcome { result: "flagged", fired: [NO_ROUTE.to_owned()].into(), row: None, chain: vec![] },
        },
        Screening::Flagged(h) => Outcome { result: "flagged", fired: fired_ids(&h), row: None, chain: vec![] },
        Screening::Rejected(h) => Outcome { result: "rejected", fired: fired_ids(&h), row: None, chain: vec![] },
    }
}

impl Report {
    pub(crate) fn new(candidate: &Rules) -> Self {
        Report { candidate_version: candidate.version.clone(), ..Default::default() }
    }

    /// Replays one order (`order` as the API shows it, with its events).
    pub(crate) fn add(&mut self, candidate: &Rules, order: &Value, events: &[EventRecord]) {
        let last = events.iter().rev().find_map(|e| match &e.event {
            OrderEvent::ScreeningPassed { rules_version, chain, row, inputs, .. } => Some((
                rules_version,
                Outcome { result: "passed", fired: BTreeSet::new(), row: Some(row.clone()), chain: chain_text(chain) },
                inputs,
            )),
            OrderEvent::ScreeningFlagged { rules_version, fired, inputs } => Some((
                rules_version,
                Outcome { result: "flagged", fired: fired_ids(fired), row: None, chain: vec![] },
                inputs,
            )),
            OrderEvent::ScreeningRejected { rules_version, fired, inputs } => Some((
                rules_version,
                Outcome { result: "rejected", fired: fired_ids(fired), row: None, chain: vec![] },
                inputs,
            )),
            _ => None,
        });
        let Some((version, before, recorded)) = last else {
            self.not_screened += 1;
            return;
        };
        self.replayed += 1;
        let (inputs, rebuilt) = if recorded.is_empty() {
            match serde_json::from_value::<crate::domain::Order>(order["order"].clone()) {
                Ok(o) => (table::inputs(&o, candidate.watch_list.matches(&o), &History::default()), true),
                Err(_) => return,
            }
        } else {
            (restore(recorded), false)
        };
        self.rebuilt += usize::from(rebuilt);
        let after = outcome(candidate, &inputs);
        // A recorded route's row was not kept before rows had ids: compare chains only then.
        let route_differs = before.chain != after.chain
            || (before.row.as_deref().is_some_and(|r| !r.is_empty()) && before.row != after.row);
        if before.result == after.result && before.fired == after.fired && !route_differs {
            return;
        }
        self.result_changed += usize::from(before.result != after.result);
        self.fired_changed += usize::from(before.fired != after.fired);
        self.route_changed += usize::from(before.result == "passed" && after.result == "passed" && route_differs);
        self.changes.push(Change {
            order_id: order["id"].as_str().unwrap_or("?").to_owned(),
            source: format!(
                "{}/{}",
                order["source"]["connector"].as_str().unwrap_or("?"),
                order["source"]["external_id"].as_str().unwrap_or("?")
            ),
            amount: format!(
                "{} {}",
                order["order"]["amount"]["amount"].as_str().unwrap_or("?"),
                order["order"]["amount"]["currency"].as_str().unwrap_or("")
            ),
            before,
            after,
            rules_version: version.clone(),
            rebuilt,
        });
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .changes
            .iter()
            .map(|c| {
                format!(
                    "{} {} {}: {} → {}{}",
                    c.order_id,
                    c.source,
                    c.amount,
                    c.before,
                    c.after,
                    if c.rebuilt { " (inputs rebuilt)" } else { "" }
                )
            })
            .collect();
        out.push(format!(
            "{} order(s) replayed through rules {}: {} would change ({} screening result, {} rules fired, {} approval route){}{}",
            self.replayed,
            self.candidate_version,
            self.changes.len(),
            self.result_changed,
            self.fired_changed,
            self.route_changed,
            if self.rebuilt > 0 { format!("; {} with inputs rebuilt from the order (no history)", self.rebuilt) } else { String::new() },
            if self.not_screened > 0 { format!("; {} never screened", self.not_screened) } else { String::new() },
        ));
        out
    }
}
