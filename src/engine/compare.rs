//! Comparing decisions across rule sets: the one home of "what would this rule set
//! decide differently". `rules diff` replays a recorded screening through a candidate
//! (`outcome`, `Outcome::of_event`); a shadow run decides the same step of a live
//! order twice, with the live rules and with the shadow rules, and `differences`
//! names each kind of decision that differs: the screening result and the rules
//! fired, the approval route, the state entered, the tasks assigned, the invoice, the
//! dunning steps and the effects (pushes and mails, by receiver).
//!
//! Pure: no I/O; the caller records what differs (`crate::review::shadow`).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::Decision;
use super::effects::EffectSpec;
use super::lifecycle::{OrderEvent, RuleHit};
use super::rules::{Level, NO_ROUTE, Rules, Screening};
use super::table::Inputs;

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

impl Outcome {
    /// The outcome a screening event records, with the rules version and the inputs
    /// it was decided on; `None` for any other event.
    pub(crate) fn of_event(e: &OrderEvent) -> Option<(&String, Outcome, &Inputs)> {
        match e {
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
        }
    }

    /// The route differs: another chain, or another matrix row (a row recorded
    /// before rows had ids is empty: then only the chains are compared).
    pub(crate) fn route_differs(&self, other: &Outcome) -> bool {
        self.chain != other.chain || (self.row.as_deref().is_some_and(|r| !r.is_empty()) && self.row != other.row)
    }
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

/// An invoice as `rules diff` and shadow runs show it.
pub(crate) fn invoice_text(tax: impl std::fmt::Display, due: impl std::fmt::Display) -> String {
    format!("tax {tax}, due {due}")
}

/// A dunning step as `rules diff` and shadow runs show it.
pub(crate) fn dunning_text(step: &str, days_overdue: impl std::fmt::Display) -> String {
    format!("{step} at {days_overdue} days")
}

/// One kind of decision that differs between two rule sets, with each side's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Difference {
    /// `screening`, `route`, `state`, `tasks`, `invoice`, `dunning`, `effects`, or
    /// `refused` (one side could not decide the step at all).
    pub(crate) kind: String,
    pub(crate) live: String,
    pub(crate) shadow: String,
}

/// One decision as its parts, each shown as text.
#[derive(Default)]
struct Parts {
    screening: Option<Outcome>,
    state: String,
    tasks: Vec<String>,
    invoices: Vec<String>,
    dunning: Vec<String>,
    effects: Vec<String>,
}

/// An effect as a line of a report kept on disk: a mail names the directory person
/// it goes to, or the customer's address masked (personal data stays out of it).
fn effect_text(e: &EffectSpec) -> String {
    match &e.mail {
        Some(m) => match &m.to.person {
            Some(person) => format!("mail {} to {person}", m.template),
            None => format!("mail {} to {}", m.template, crate::domain::privacy::mask_email(&m.to.email)),
        },
        None => format!("{}.{}", e.connector, e.operation),
    }
}

fn parts(d: &Decision) -> Parts {
    let mut p = Parts { state: d.next.name().to_owned(), ..Parts::default() };
    for a in &d.audit {
        if let Some((_, o, _)) = Outcome::of_event(&a.event) {
            p.screening = Some(o);
        }
        match &a.event {
            OrderEvent::TaskAssigned { task, .. } => p.tasks.push(task.clone()),
            OrderEvent::InvoiceIssued { tax, due, .. } => p.invoices.push(invoice_text(tax, due)),
            OrderEvent::DunningDue { step, days_overdue } => p.dunning.push(dunning_text(step, days_overdue)),
            _ => {}
        }
    }
    p.tasks.sort_unstable();
    p.effects = d.effects.iter().map(effect_text).collect();
    p.effects.sort_unstable();
    p
}

fn listed(v: &[String]) -> String {
    if v.is_empty() { "none".to_owned() } else { v.join(", ") }
}

/// Every kind of decision in which `shadow` differs from `live` (the same step of
/// the same order, decided under two rule sets); empty when they agree.
pub(crate) fn differences(live: &Decision, shadow: &Decision) -> Vec<Difference> {
    let (l, s) = (parts(live), parts(shadow));
    let mut out = Vec::new();
    let mut differ = |kind: &str, live: String, shadow: String| {
        if live != shadow {
            out.push(Difference { kind: kind.to_owned(), live, shadow });
        }
    };
    let shown = |o: &Option<Outcome>| o.as_ref().map_or_else(|| "not screened".to_owned(), ToString::to_string);
    match (&l.screening, &s.screening) {
        (Some(a), Some(b)) if a.result == b.result && a.fired == b.fired => {
            if a.route_differs(b) {
                differ("route", a.to_string(), b.to_string());
            }
        }
        (a, b) => differ("screening", shown(a), shown(b)),
    }
    differ("state", l.state, s.state);
    differ("tasks", listed(&l.tasks), listed(&s.tasks));
    differ("invoice", listed(&l.invoices), listed(&s.invoices));
    differ("dunning", listed(&l.dunning), listed(&s.dunning));
    differ("effects", listed(&l.effects), listed(&s.effects));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::decide::tests::{rules_from, sample_order};
    use crate::engine::{Actor, History, OrderEvent, decide_new};

    const RULES: &str = r#"
version = "live"
[approval]
auto_approver_role = "line_supervisor"
[[approval.matrix]]
id = "AUTO"
when = { amount = "<= 100000" }
auto = true
[[approval.matrix]]
id = "STANDARD"
when = { amount = "> 100000" }
chain = ["line_supervisor"]
"#;

    fn decided(rules: &Rules, amount: &str) -> Decision {
        let received = OrderEvent::Received { connector: "demo-crm".into(), external_id: "D-1".into(), version: 1 };
        let now = "2026-12-06T02:00:00Z".parse().unwrap();
        decide_new(&sample_order(amount), &History::default(), Actor::System, received, rules, now).unwrap()
    }

    #[test]
    fn a_mail_to_the_customer_is_reported_with_the_address_masked() {
        let mut mail: EffectSpec = serde_json::from_value(serde_json::json!({
            "connector": "mail", "operation": "send", "cause": "received",
            "mail": {"template": "order_received",
                "to": {"email": "zhang.wei@example.com", "name": "张伟", "locale": "zh-CN"}}
        }))
        .unwrap();
        assert_eq!(effect_text(&mail), "mail order_received to z***@example.com");
        mail.mail.as_mut().unwrap().to.person = Some("li.na".into());
        assert_eq!(effect_text(&mail), "mail order_received to li.na");
    }

    #[test]
    fn a_lowered_limit_differs_in_route_and_state_only_where_it_applies() {
        let live = rules_from(RULES);
        let shadow = rules_from(&RULES.replace("<= 100000", "<= 50000").replace("> 100000", "> 50000"));
        assert!(differences(&decided(&live, "30000.00"), &decided(&shadow, "30000.00")).is_empty());
        assert!(differences(&decided(&live, "500000.00"), &decided(&shadow, "500000.00")).is_empty());

        let d = differences(&decided(&live, "80000.00"), &decided(&shadow, "80000.00"));
        let kinds: Vec<&str> = d.iter().map(|d| d.kind.as_str()).collect();
        assert_eq!(kinds, ["route", "state"], "{d:?}");
        assert_eq!(
            (d[0].live.as_str(), d[0].shadow.as_str()),
            ("passed via AUTO (line_supervisor)", "passed via STANDARD (line_supervisor)")
        );
        assert_eq!((d[1].live.as_str(), d[1].shadow.as_str()), ("approved", "awaiting_approval"));
    }
}
