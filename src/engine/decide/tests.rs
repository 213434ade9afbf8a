//! Tests of decide: screening, routing, approvals and their refusals, timers, mail effects; shared sample orders and rules for other engine tests.

use super::*;
use crate::engine::rules::EffectRule;

pub(crate) fn sample_order(amount: &str) -> Order {
    serde_json::from_value(serde_json::json!({
        "customer": {"id": "C-778", "name": "张伟", "kind": "individual",
            "id_document": {"type": "cn_resident_id", "number": "11010519491231002X"},
            "credit_rating": "A", "kyc_verified": true, "email": "zhang.wei@example.com"},
        "product": {"type": "wealth_management", "code": "WM-STABLE-12M"},
        "need": "客户希望配置稳健型理财产品，期限一年",
        "amount": {"amount": amount, "currency": "CNY"},
        "term_months": 12
    }))
    .unwrap()
}

pub(crate) fn rules_from(text: &str) -> Rules {
    let file: crate::engine::rules::RulesFile = toml::from_str(text).unwrap();
    file.validate(&|_| Err("no files in tests".into()))
        .unwrap_or_else(|ps| panic!("{:?}", ps.iter().map(|p| &p.message).collect::<Vec<_>>()))
}

fn rules() -> Rules {
    rules_from(
        r#"
version = "test-1"
[[screening]]
id = "KYC"
when = { "customer.kyc_verified" = "false" }
message = "kyc"
[[screening]]
id = "ID"
when = { "customer.id_document_valid" = "false" }
message = "id"
[[screening]]
id = "CREDIT"
when = { "customer.credit_rank" = "> 4" }
severity = "reject"
message = "credit"
[approval]
[[approval.matrix]]
id = "AUTO"
when = { amount = "<= 100000" }
auto = true
[[approval.matrix]]
id = "ONE"
when = { amount = "<= 1000000" }
chain = ["line_supervisor"]
[[approval.matrix]]
id = "TWO"
chain = ["line_supervisor", "branch_manager"]
[[effects]]
on = "approved"
connector = "erp"
operation = "create"
"#,
    )
}

/// `decide` on an order in `state` with no history and no chain in progress.
fn run(state: &OrderState, order: &Order, actor: Actor, ev: OrderEvent, r: &Rules) -> Result<Decision, DecideError> {
    let h = History::default();
    decide(&Case { state, order, history: &h, approval: None, fulfilment: None }, actor, ev, r, Utc::now())
}

fn received() -> OrderEvent {
    OrderEvent::Received { connector: "crm".into(), external_id: "D-1".into(), version: 1 }
}

#[test]
fn small_order_is_screened_and_auto_approved_with_its_effect() {
    let d = decide_new(
        &sample_order("5000.00"),
        &History::default(),
        Actor::Connector("crm".into()),
        received(),
        &rules(),
        Utc::now(),
    )
    .unwrap();
    assert_eq!(d.next, OrderState::Approved);
    let names: Vec<_> = d.audit.iter().map(|a| a.event.name()).collect();
    assert_eq!(names, ["received", "screening_started", "screening_passed", "approved"]);
    assert!(matches!(&d.audit[3].event, OrderEvent::Approved { on_behalf_of: Some(r), .. } if r == "line_supervisor"));
    assert_eq!(d.effects.len(), 1);
    assert_eq!(d.effects[0].operation, "create");
}

#[test]
fn large_order_waits_for_two_levels() {
    let d =
        decide_new(&sample_order("1250000.00"), &History::default(), Actor::System, received(), &rules(), Utc::now())
            .unwrap();
    assert_eq!(d.next, OrderState::AwaitingApproval { level: 1, of: 2 });
    assert!(d.effects.is_empty());
}

#[test]
fn failing_rules_flag_or_reject_and_record_which_fired() {
    let mut o = sample_order("5000.00");
    o.customer.kyc_verified = false;
    let d = decide_new(&o, &History::default(), Actor::System, received(), &rules(), Utc::now()).unwrap();
    assert_eq!(d.next, OrderState::Flagged);
    assert!(
        matches!(&d.audit.last().unwrap().event, OrderEvent::ScreeningFlagged { fired, .. } if fired[0].rule_id == "KYC")
    );

    o.customer.credit_rating = Some(crate::domain::order::CreditRating::B);
    let d = decide_new(&o, &History::default(), Actor::System, received(), &rules(), Utc::now()).unwrap();
    assert_eq!(d.next, OrderState::Rejected);
}

#[test]
fn illegal_event_decides_nothing() {
    let err =
        run(&OrderState::Approved, &sample_order("1.00"), Actor::System, OrderEvent::Closed, &rules()).unwrap_err();
    assert_eq!(err.to_string(), "event `closed` is not allowed in state `approved`");
}

fn approve(level: u8) -> OrderEvent {
    OrderEvent::Approved { level, role: "r".into(), comment: String::new(), on_behalf_of: None }
}

#[test]
fn a_middle_approval_level_does_not_fire_approved_effects() {
    let (o, r) = (sample_order("1250000.00"), rules());
    let level1 = OrderState::AwaitingApproval { level: 1, of: 2 };
    let d = run(&level1, &o, Actor::System, approve(1), &r).unwrap();
    assert_eq!(d.next, OrderState::AwaitingApproval { level: 2, of: 2 });
    assert!(d.effects.is_empty(), "{:?}", d.effects);
    let d = run(&d.next, &o, Actor::System, approve(2), &r).unwrap();
    assert_eq!(d.next, OrderState::Approved);
    assert_eq!(d.effects.len(), 1);
    assert_eq!(d.effects[0].trigger.as_ref().map(OrderEvent::name), Some("approved"));
}

#[test]
fn survey_answers_ask_for_a_ticket_at_or_below_the_threshold_or_on_complaint() {
    let mut r = rules();
    r.effects.push(EffectRule {
        on: "after_sales_ticket_requested".into(),
        connector: "desk".parse().unwrap(),
        operation: "create_ticket".into(),
    });
    let o = sample_order("100.00");
    for (score, complaint, ticket) in
        [(1, false, true), (2, false, true), (3, false, false), (5, false, false), (5, true, true), (4, true, true)]
    {
        let ev = OrderEvent::SurveyAnswered { score, comment: "评价".into(), complaint };
        let d = run(&OrderState::Closed, &o, Actor::Person("c".into()), ev, &r).unwrap();
        assert_eq!(d.next, OrderState::Closed);
        let requested = d.audit.iter().any(|a| a.event.name() == "after_sales_ticket_requested");
        assert_eq!(requested, ticket, "score {score}, complaint {complaint}");
        assert_eq!(d.effects.iter().any(|e| e.operation == "create_ticket"), ticket);
    }
    // Only a closed (or archived) order takes a survey answer.
    let ev = OrderEvent::SurveyAnswered { score: 1, comment: String::new(), complaint: false };
    assert!(run(&OrderState::Paid, &o, Actor::System, ev, &r).is_err());
}

#[test]
fn feedback_on_an_order_is_one_entry_in_any_state_and_decides_nothing_else() {
    let o = sample_order("100.00");
    let states = [
        OrderState::AwaitingApproval { level: 1, of: 2 },
        OrderState::Executing,
        OrderState::Delivered,
        OrderState::Invoiced,
        OrderState::Closed,
        OrderState::Rejected,
        OrderState::Cancelled,
    ];
    for state in states {
        let ev = OrderEvent::FeedbackReceived { feedback: 7, category: "problem".into(), channel: "mail".into() };
        let d = run(&state, &o, Actor::Person("wang.fang".into()), ev.clone(), &rules()).unwrap();
        assert_eq!(d.next, state);
        assert_eq!(d.audit.len(), 1, "{state:?}: {:?}", d.audit);
        assert_eq!((&d.audit[0].event, &d.audit[0].actor), (&ev, &Actor::Person("wang.fang".into())));
        assert!(d.effects.is_empty(), "{state:?}: {:?}", d.effects);
    }
}

#[test]
fn an_all_of_level_waits_for_each_role_and_refuses_outsiders() {
    let mut r = rules_from(
        r#"
version = "t"
[approval]
[[approval.matrix]]
id = "RISKY"
chain = ["line_supervisor", { all = ["risk_officer", "compliance_officer"] }]
"#,
    );
    let dir = crate::engine::directory::Directory::parse(
        std::path::Path::new("d.toml"),
        r#"
[[person]]
id = "wang"
name = "王芳"
email = "wang@bank.example"
roles = ["line_supervisor"]
[[person]]
id = "chen"
name = "陈静"
email = "chen@bank.example"
roles = ["risk_officer"]
[[person]]
id = "sun"
name = "孙丽"
email = "sun@bank.example"
roles = ["compliance_officer"]
"#,
    )
    .unwrap();
    r.notify = std::sync::Arc::new(crate::engine::notify::Notifications {
        directory: std::sync::Arc::new(dir),
        ..Default::default()
    });
    let o = sample_order("5000000.00");
    let h = History::default();
    let d = decide_new(&o, &h, Actor::System, received(), &r, Utc::now()).unwrap();
    assert_eq!(d.next, OrderState::AwaitingApproval { level: 1, of: 2 });
    let mut state = d.next;
    let mut progress = d.approval;
    let mut step = |who: &str| -> Result<Decision, DecideError> {
        let case = Case { state: &state, order: &o, history: &h, approval: progress.as_ref(), fulfilment: None };
        let d = decide(&case, Actor::Person(who.into()), approve(0), &r, Utc::now())?;
        state = d.next.clone();
        progress = d.approval.clone();
        Ok(d)
    };
    assert!(matches!(step("chen"), Err(DecideError::Refused(Refusal::NotAnApprover { level: 1, .. }))));
    let d = step("wang").unwrap();
    assert_eq!(d.next, OrderState::AwaitingApproval { level: 2, of: 2 });
    let d = step("chen").unwrap();
    assert_eq!(d.next, OrderState::AwaitingApproval { level: 2, of: 2 }, "compliance still missing");
    assert!(matches!(&d.audit[0].event, OrderEvent::ApprovalGiven { role, .. } if role == "risk_officer"));
    assert!(matches!(step("chen"), Err(DecideError::Refused(Refusal::AlreadyApproved(_, 2)))));
    let d = step("sun").unwrap();
    assert_eq!(d.next, OrderState::Approved);
    assert!(matches!(&d.audit[0].event, OrderEvent::Approved { level: 2, role, .. } if role == "compliance_officer"));
    assert_eq!(d.approval.unwrap().given.len(), 3);
}

#[test]
fn sla_timers_remind_then_escalate_along_the_chain() {
    let mut r = rules_from(
        r#"
version = "t"
[approval]
[[approval.matrix]]
id = "ONE"
chain = ["line_supervisor"]
[sla]
hours = 8
remind_at_percent = 50
[sla.roles]
branch_manager = 16
[sla.escalate_to]
line_supervisor = "branch_manager"
branch_manager = "risk_committee"
"#,
    );
    r.sla.calendar.tz = chrono_tz::Asia::Shanghai;
    let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
    let o = sample_order("500000.00");
    let h = History::default();
    let d = decide_new(&o, &h, Actor::System, received(), &r, at("2026-11-30T10:00:00+08:00")).unwrap();
    let due: Vec<(TimerKind, DateTime<Utc>)> = d.timers.iter().map(|t| (t.kind, t.due)).collect();
    assert_eq!(
        due,
        [(TimerKind::Remind, at("2026-11-30T14:00:00+08:00")), (TimerKind::Escalate, at("2026-12-01T09:30:00+08:00"))]
    );
    let (mut state, mut progress) = (d.next, d.approval);
    let mut fire = |now: DateTime<Utc>| -> Option<Decision> {
        let case = Case { state: &state, order: &o, history: &h, approval: progress.as_ref(), fulfilment: None };
        let ev = due_timer_event(&case, &r, now)?;
        let d = decide(&case, Actor::System, ev, &r, now).unwrap();
        state = d.next.clone();
        progress = d.approval.clone();
        Some(d)
    };
    assert!(fire(at("2026-11-30T13:59:00+08:00")).is_none());
    let d = fire(at("2026-11-30T14:00:00+08:00")).unwrap();
    assert_eq!(d.audit[0].event, OrderEvent::ApprovalReminderDue { level: 1 });
    assert_eq!(d.timers.len(), 1, "the reminder is gone, the escalation stays");
    assert!(fire(at("2026-11-30T17:00:00+08:00")).is_none(), "never twice");
    let d = fire(at("2026-12-01T09:30:00+08:00")).unwrap();
    assert!(matches!(&d.audit[0].event, OrderEvent::ApprovalEscalated { to_role, .. } if to_role == "branch_manager"));
    // Next: branch_manager has 16 working hours from the escalation: 8 on Tuesday, 8 on Wednesday.
    assert_eq!(
        d.timers.iter().map(|t| (t.kind, t.due)).collect::<Vec<_>>(),
        [(TimerKind::Escalate, at("2026-12-02T17:00:00+08:00"))]
    );
    let d = fire(at("2026-12-02T17:00:00+08:00")).unwrap();
    assert!(matches!(&d.audit[0].event, OrderEvent::ApprovalEscalated { to_role, .. } if to_role == "risk_committee"));
    assert!(d.timers.is_empty(), "risk_committee escalates nowhere");
}

#[test]
fn an_automatic_approval_asks_nobody_to_approve() {
    let mut r = rules();
    let dir = crate::directory::Directory::parse(
        std::path::Path::new("directory.toml"),
        "[[person]]\nid = \"wang\"\nname = \"王芳\"\nemail = \"wang@bank.example\"\nroles = [\"line_supervisor\"]\n",
    )
    .unwrap();
    let text = "[[notify]]\non = \"awaiting_approval\"\ntemplate = \"approval_request\"\nto = [\"approvers\"]\n";
    let (n, _) = crate::engine::notify::parse(
        std::path::Path::new("notifications.toml"),
        text,
        std::sync::Arc::new(dir),
        crate::locale::Presentation::default(),
    )
    .unwrap();
    r.notify = std::sync::Arc::new(n);
    let asked = |amount: &str| {
        let d =
            decide_new(&sample_order(amount), &History::default(), Actor::System, received(), &r, Utc::now()).unwrap();
        d.effects.iter().filter(|e| e.cause == "awaiting_approval").count()
    };
    assert_eq!(asked("5000.00"), 0, "approved automatically at screening");
    assert_eq!(asked("500000.00"), 1, "the line supervisor is asked");
}
