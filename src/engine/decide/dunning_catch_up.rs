//! Tests of dunning when several steps are overdue at once.

use super::tests::{rules_from, sample_order};
use super::*;

#[test]
fn only_the_latest_due_step_goes_out_when_catching_up() {
    let rules = rules_from(
        r#"
version = "t"
[approval]
[[approval.matrix]]
id = "AUTO"
auto = true
[[dunning]]
id = "friendly"
days_overdue = 3
[[dunning]]
id = "firm"
days_overdue = 15
[[dunning]]
id = "escalation"
days_overdue = 30
"#,
    );
    let order = sample_order("1000.00");
    let money = Money::parse("1000.00", "CNY").unwrap();
    let f = Fulfilment {
        invoice: Some(Invoice {
            number: "INV-1".into(),
            net: money.clone(),
            tax: Money::parse("0", "CNY").unwrap(),
            total: money,
            issued_at: "2026-11-01T00:00:00Z".parse().unwrap(),
            due: "2026-12-01".parse().unwrap(),
        }),
        dunning: vec!["friendly".into()],
        ..Default::default()
    };
    let h = History::default();
    let case = Case { state: &OrderState::Overdue, order: &order, history: &h, approval: None, fulfilment: Some(&f) };
    // 40 days after the due date: firm and escalation are both due; only escalation goes.
    let now = "2027-01-10T00:00:00Z".parse().unwrap();
    let ev = due_timer_event(&case, &rules, now).unwrap();
    assert_eq!(ev, OrderEvent::DunningDue { step: "escalation".into(), days_overdue: 30 });
    let d = decide(&case, Actor::System, ev, &rules, now).unwrap();
    assert_eq!(d.fulfilment.unwrap().dunning, ["friendly", "firm", "escalation"], "firm is not sent late");
    assert!(d.timers.is_empty());
}
