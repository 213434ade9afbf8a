//! `orderbridge rules diff --against-history`: replays stored decisions through a
//! candidate rule set and lists every order whose screening result or approval route
//! would change, and the later decisions it took that would differ: the execution
//! tasks, the invoice (tax, due date) and the dunning steps sent. The
//! change-management gate for `config/rules.toml`, and the impact report of `rules
//! propose`.
//!
//! Each order is replayed from its last screening decision, on the inputs that
//! decision recorded (so history-based inputs are what they were then); an order
//! decided before inputs were recorded is rebuilt from its data, with no history.

use serde::Serialize;
use serde_json::Value;

use crate::engine::OrderEvent;
pub(crate) use crate::engine::compare::{Outcome, outcome};
use crate::engine::compare::{dunning_text, invoice_text};
use crate::engine::rules::Rules;
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
        let mut order = crate::view::found_json(&found);
        // Rules read the customer's data in clear (an ID number's checksum, say).
        orders.vault().reveal_order_doc(&mut order).await?;
        let events: Vec<EventRecord> = serde_json::from_value(order["events"].clone())?;
        report.add(candidate, &order, &events);
    }
    Ok(report)
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
    /// Later decisions that would differ (tasks, invoices, dunning steps).
    pub(crate) later: Vec<LaterChange>,
    pub(crate) tasks_changed: usize,
    pub(crate) settlement_changed: usize,
    pub(crate) dunning_changed: usize,
}

/// A later decision of an order that would differ under the candidate.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LaterChange {
    pub(crate) order_id: String,
    /// `tasks`, `invoice` or `dunning`.
    pub(crate) what: &'static str,
    pub(crate) before: String,
    pub(crate) after: String,
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

impl Report {
    pub(crate) fn new(candidate: &Rules) -> Self {
        Report { candidate_version: candidate.version.clone(), ..Default::default() }
    }

    /// Replays one order (`order` as the API shows it, with its events).
    pub(crate) fn add(&mut self, candidate: &Rules, order: &Value, events: &[EventRecord]) {
        self.add_later(candidate, order, events);
        self.add_screening(candidate, order, events);
    }

    /// The decisions after approval, each compared with what was recorded: the tasks
    /// of the product (once execution started), each invoice's tax and due date, each
    /// dunning step sent (does the candidate still send it, at the same day?).
    fn add_later(&mut self, candidate: &Rules, order: &Value, events: &[EventRecord]) {
        let id = order["id"].as_str().unwrap_or("?");
        let product = order["order"]["product"]["type"].as_str().unwrap_or_default();
        let rating = order["order"]["customer"]["credit_rating"].as_str();
        let mut found: Vec<(&'static str, String, String)> = Vec::new();
        if events.iter().any(|e| matches!(e.event, OrderEvent::ExecutionStarted)) {
            let mut before: Vec<&str> = events
                .iter()
                .filter_map(|e| match &e.event {
                    OrderEvent::TaskAssigned { task, .. } => Some(task.as_str()),
                    _ => None,
                })
                .collect();
            let mut after: Vec<&str> = candidate.tasks_for(product).map(|t| t.id.as_str()).collect();
            before.sort_unstable();
            after.sort_unstable();
            found.push(("tasks", before.join(", "), after.join(", ")));
        }
        for e in events {
            match &e.event {
                OrderEvent::InvoiceIssued { net, tax, due, .. } => {
                    let after = match &candidate.settlement {
                        None => "no invoicing".to_owned(),
                        Some(s) => {
                            let day = e.at.with_timezone(&candidate.sla.calendar.tz).date_naive();
                            let due = day + chrono::Duration::days(i64::from(s.due_days));
                            match crate::engine::fulfilment::tax_on(net, s.tax_rate) {
                                Ok(t) => invoice_text(t, due),
                                Err(e) => format!("tax not computable ({e})"),
                            }
                        }
                    };
                    found.push(("invoice", invoice_text(tax, due), after));
                }
                OrderEvent::DunningDue { step, days_overdue } => {
                    let after = candidate
                        .dunning_for(rating)
                        .find(|s| s.id == *step)
                        .map_or_else(|| "not sent".to_owned(), |s| dunning_text(&s.id, s.days_overdue));
                    found.push(("dunning", dunning_text(step, days_overdue), after));
                }
                _ => {}
            }
        }
        for (what, before, after) in found.into_iter().filter(|(_, b, a)| b != a) {
            match what {
                "tasks" => self.tasks_changed += 1,
                "invoice" => self.settlement_changed += 1,
                _ => self.dunning_changed += 1,
            }
            self.later.push(LaterChange { order_id: id.to_owned(), what, before, after });
        }
    }

    fn add_screening(&mut self, candidate: &Rules, order: &Value, events: &[EventRecord]) {
        let last = events.iter().rev().find_map(|e| Outcome::of_event(&e.event));
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
        let route_differs = before.route_differs(&after);
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
        out.extend(self.later.iter().map(|c| format!("{} {}: {} → {}", c.order_id, c.what, c.before, c.after)));
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
        if !self.later.is_empty() {
            out.push(format!(
                "later decisions that would change: {} tasks, {} invoices, {} dunning steps",
                self.tasks_changed, self.settlement_changed, self.dunning_changed
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An event of the order as the store keeps it (hashes are not checked here).
    fn event(seq: u32, event: Value) -> EventRecord {
        serde_json::from_value(json!({
            "order_id": "ord_01a24c09fe607416b9416b24bec34980", "seq": seq, "at": "2026-12-01T02:00:00Z",
            "actor": {"kind": "system"}, "event": event, "state": {"name": "executing"},
            "prev_hash": "", "hash": ""
        }))
        .unwrap()
    }

    #[test]
    fn tasks_invoices_and_dunning_steps_that_would_differ_are_listed() {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(repo.join("config/rules.toml")).unwrap();
        let edited = text
            .replace("tax_rate = \"0\"", "tax_rate = \"0.06\"")
            .replace("due_days = 30", "due_days = 45")
            .replace("id = \"firm\"\ndays_overdue = 15", "id = \"firm\"\ndays_overdue = 20")
            .replace(
                "products = [\"wealth_management\", \"fund\", \"deposit\", \"brokerage\"]",
                "products = [\"fund\"]",
            );
        assert_ne!(edited, text);
        let candidate =
            crate::config::load_rules_text(std::path::Path::new("candidate.toml"), &edited, repo).expect("it loads");
        let order = json!({"id": "ord_1", "order": {"product": {"type": "wealth_management"},
            "customer": {"credit_rating": "A"}}});
        let cny = |a: &str| json!({"amount": a, "currency": "CNY"});
        let events = [
            event(1, json!({"type": "execution_started"})),
            event(2, json!({"type": "task_assigned", "task": "contract", "name": "", "department": ""})),
            event(3, json!({"type": "task_assigned", "task": "product_setup", "name": "", "department": ""})),
            event(4, json!({"type": "task_assigned", "task": "client_briefing", "name": "", "department": ""})),
            event(
                5,
                json!({"type": "invoice_issued", "number": "INV-1", "net": cny("100.00"), "tax": cny("0.00"),
                "total": cny("100.00"), "due": "2026-12-31"}),
            ),
            event(6, json!({"type": "dunning_due", "step": "friendly", "days_overdue": 3})),
            event(7, json!({"type": "dunning_due", "step": "firm", "days_overdue": 15})),
        ];
        let mut report = Report::new(&candidate);
        report.add(&candidate, &order, &events);
        let got: Vec<String> = report.later.iter().map(|c| format!("{}: {} → {}", c.what, c.before, c.after)).collect();
        assert_eq!(
            got,
            [
                "tasks: client_briefing, contract, product_setup → client_briefing, contract",
                "invoice: tax 0.00 CNY, due 2026-12-31 → tax 6.00 CNY, due 2027-01-15",
                "dunning: firm at 15 days → firm at 20 days",
            ]
        );
        assert_eq!((report.tasks_changed, report.settlement_changed, report.dunning_changed), (1, 1, 1));
        assert_eq!(
            report.lines().last().unwrap(),
            "later decisions that would change: 1 tasks, 1 invoices, 1 dunning steps"
        );
    }
}
