//! Tests of decide after approval: tasks, exceptions, invoicing, payments.

use super::tests::{rules_from, sample_order};
use super::*;

const RULES: &str = r#"
version = "test-cash-1"
[approval]
[[approval.matrix]]
id = "AUTO"
auto = true
[[tasks]]
id = "contract"
name = "合同生成"
department = "operations"
connector = "erp"
operation = "create_task"
[[tasks]]
id = "kyc_file"
name = "Archive KYC"
department = "compliance"
required = false
[[tasks]]
id = "loan_setup"
name = "Loan account"
products = ["loan"]
department = "credit_ops"
[exceptions]
owner = "operations"
resolve_within_hours = 24
escalate_to = "branch_manager"
[settlement]
connector = "xero"
operation = "create_invoice"
tax_rate = "0.06"
due_days = 30
[[dunning]]
id = "friendly"
days_overdue = 1
[[dunning]]
id = "firm"
days_overdue = 15
[[dunning]]
id = "escalation"
days_overdue = 45
ratings = ["BB", "B", "CCC"]
to = ["customer", "sales_owner"]
"#;

/// An order carried through `decide` step by step, as the store would.
struct Run {
    rules: Rules,
    order: Order,
    state: OrderState,
    approval: Option<ApprovalProgress>,
    fulfilment: Option<Fulfilment>,
    now: DateTime<Utc>,
    audit: Vec<AuditEntry>,
    effects: Vec<EffectSpec>,
    timers: Vec<Timer>,
}

impl Run {
    fn new(amount: &str) -> Run {
        let rules = rules_from(RULES);
        let order = sample_order(amount);
        let now: DateTime<Utc> = "2026-11-27T02:00:00Z".parse().unwrap();
        let h = History::default();
        let received = OrderEvent::Received { connector: "crm".into(), external_id: "D-1".into(), version: 1 };
        let d = decide_new(&order, &h, Actor::System, received, &rules, now).unwrap();
        let mut r = Run {
            rules,
            order,
            state: OrderState::Received,
            approval: None,
            fulfilment: None,
            now,
            audit: Vec::new(),
            effects: Vec::new(),
            timers: Vec::new(),
        };
        r.take(d);
        r
    }

    fn take(&mut self, d: Decision) {
        self.state = d.next;
        self.approval = d.approval;
        self.fulfilment = d.fulfilment;
        self.audit.extend(d.audit);
        self.effects = d.effects;
        self.timers = d.timers;
    }

    fn step(&mut self, actor: Actor, ev: OrderEvent) -> Result<(), DecideError> {
        let h = History::default();
        let case = Case {
            state: &self.state,
            order: &self.order,
            history: &h,
            approval: self.approval.as_ref(),
            fulfilment: self.fulfilment.as_ref(),
        };
        let d = decide(&case, actor, ev, &self.rules, self.now)?;
        self.take(d);
        Ok(())
    }

    /// Advances the clock and fires every timer due, as the scheduler does.
    fn wait(&mut self, by: chrono::Duration) -> Vec<String> {
        self.now += by;
        let mut fired = Vec::new();
        loop {
            let h = History::default();
            let case = Case {
                state: &self.state,
                order: &self.order,
                history: &h,
                approval: self.approval.as_ref(),
                fulfilment: self.fulfilment.as_ref(),
            };
            let Some(ev) = due_timer_event(&case, &self.rules, self.now) else { break };
            fired.push(ev.name().to_owned());
            let d = decide(&case, Actor::System, ev, &self.rules, self.now).unwrap();
            self.take(d);
        }
        fired
    }

    fn events(&self) -> Vec<&'static str> {
        self.audit.iter().map(|a| a.event.name()).collect()
    }

    fn f(&self) -> &Fulfilment {
        self.fulfilment.as_ref().unwrap()
    }

    fn settle(&mut self, reference: &str) {
        self.step(
            Actor::Connector("xero".into()),
            OrderEvent::EffectSucceeded {
                effect_id: "e".into(),
                effect: "xero.create_invoice".into(),
                attempts: 1,
                receipt: "HTTP 200".into(),
                reference: Some(reference.into()),
            },
        )
        .unwrap();
    }

    fn pay(&mut self, id: &str, amount: &str) -> Result<(), DecideError> {
        self.step(
            Actor::Connector("bank".into()),
            OrderEvent::PaymentReceived {
                amount: Money::parse(amount, "CNY").unwrap(),
                settled: false,
                payment_id: id.into(),
                outstanding: None,
                excess: None,
            },
        )
    }

    fn to_invoiced(amount: &str) -> Run {
        let mut r = Run::new(amount);
        r.step(
            Actor::Connector("erp".into()),
            OrderEvent::TaskCompleted { task: "contract".into(), note: String::new() },
        )
        .unwrap();
        r.step(Actor::Person("ops".into()), OrderEvent::DeliveryRecorded { note: String::new() }).unwrap();
        r.step(Actor::Person("customer".into()), OrderEvent::AcceptanceConfirmed { note: String::new() }).unwrap();
        r.settle("INV-0042");
        r
    }
}

#[test]
fn an_approved_order_executes_its_products_tasks_and_delivery_waits_for_the_required_ones() {
    let mut r = Run::new("50000.00");
    assert_eq!(r.state, OrderState::Executing);
    let tasks: Vec<&str> = r.f().tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(tasks, ["contract", "kyc_file"], "loan_setup is for loans only");
    assert!(r.events().ends_with(&["approved", "execution_started", "task_assigned", "task_assigned"]));
    // The task with a system was pushed to it, in the step that assigned it.
    let pushes: Vec<_> = r.effects.iter().filter(|e| e.connector.as_str() == "erp").collect();
    assert_eq!(pushes.len(), 1);
    assert!(matches!(&pushes[0].trigger, Some(OrderEvent::TaskAssigned { task, .. }) if task == "contract"));

    let refused = r.step(Actor::Person("ops".into()), OrderEvent::DeliveryRecorded { note: String::new() });
    assert_eq!(refused.unwrap_err().to_string(), "delivery waits for the required tasks still open: contract");
    let unknown = r.step(Actor::System, OrderEvent::TaskCompleted { task: "nope".into(), note: String::new() });
    assert_eq!(unknown.unwrap_err().to_string(), "the order has no task `nope`");
    r.step(
        Actor::Connector("erp".into()),
        OrderEvent::TaskCompleted { task: "contract".into(), note: "ERP SO-1".into() },
    )
    .unwrap();
    let again = r.step(Actor::System, OrderEvent::TaskCompleted { task: "contract".into(), note: String::new() });
    assert_eq!(again.unwrap_err().to_string(), "task `contract` is already done");
    // The optional task may stay open.
    r.step(Actor::Person("ops".into()), OrderEvent::DeliveryRecorded { note: String::new() }).unwrap();
    assert_eq!(r.state, OrderState::Delivered);
    assert_eq!(r.f().tasks[0].done.as_ref().unwrap().by, "connector:erp");
}

#[test]
fn acceptance_invoices_once_the_finance_system_answers_and_payments_settle_it() {
    let mut r = Run::new("1250000.05");
    r.step(Actor::System, OrderEvent::TaskCompleted { task: "contract".into(), note: String::new() }).unwrap();
    r.step(Actor::Person("ops".into()), OrderEvent::DeliveryRecorded { note: String::new() }).unwrap();
    r.step(Actor::Person("customer".into()), OrderEvent::AcceptanceConfirmed { note: String::new() }).unwrap();
    assert_eq!(r.state, OrderState::Accepted);
    let invoice_push: Vec<_> = r.effects.iter().filter(|e| e.connector.as_str() == "xero").collect();
    assert_eq!(invoice_push.len(), 1);
    assert_eq!(invoice_push[0].operation, "create_invoice");

    // Another effect's success does not invoice.
    r.step(
        Actor::Connector("erp".into()),
        OrderEvent::EffectSucceeded {
            effect_id: "e0".into(),
            effect: "erp.create_task".into(),
            attempts: 1,
            receipt: String::new(),
            reference: Some("T-1".into()),
        },
    )
    .unwrap();
    assert_eq!(r.state, OrderState::Accepted);
    r.settle("INV-0042");
    assert_eq!(r.state, OrderState::Invoiced);
    let inv = r.f().invoice.clone().unwrap();
    assert_eq!(inv.number, "INV-0042");
    assert_eq!(inv.tax.to_string(), "75000.00 CNY", "6 %, rounded to the fen");
    assert_eq!(inv.total.to_string(), "1325000.05 CNY");
    assert_eq!(inv.due.to_string(), "2026-12-27", "30 days from the day in Shanghai");

    r.pay("P-1", "325000.05").unwrap();
    assert_eq!(r.state, OrderState::Invoiced);
    assert!(
        matches!(r.audit.last().unwrap().event, OrderEvent::PaymentReceived { settled: false, outstanding: Some(ref o), .. } if o.to_string() == "1000000.00 CNY")
    );
    let dup = r.pay("P-1", "325000.05").unwrap_err();
    assert_eq!(dup.to_string(), "payment P-1 is already recorded on this order");
    r.pay("P-2", "1000000.00").unwrap();
    assert_eq!(r.state, OrderState::Closed, "paid, then closed");
    assert!(r.events().ends_with(&["payment_received", "closed"]));
    assert!(r.timers.is_empty(), "nothing due after payment");
}

#[test]
fn an_over_payment_opens_an_exception_and_a_foreign_currency_is_refused() {
    let mut r = Run::to_invoiced("1000.00");
    let usd = r.step(
        Actor::Connector("bank".into()),
        OrderEvent::PaymentReceived {
            amount: Money::parse("1060.00", "USD").unwrap(),
            settled: false,
            payment_id: "P-9".into(),
            outstanding: None,
            excess: None,
        },
    );
    assert_eq!(usd.unwrap_err().to_string(), "the payment is in USD but invoice INV-0042 is in CNY");
    r.pay("P-1", "1100.00").unwrap();
    assert_eq!(r.state, OrderState::Exception { during: super::super::lifecycle::Stage::Paid });
    assert!(r.f().exception.as_ref().unwrap().reason.contains("over-payment of 40.00 CNY"));
    r.step(
        Actor::Person("ops".into()),
        OrderEvent::ExceptionResolved { resolution: "refunded 40.00".into(), cancel: false },
    )
    .unwrap();
    assert_eq!(r.state, OrderState::Closed);
}

#[test]
fn an_exception_escalates_at_its_deadline_once_and_may_cancel_before_invoicing() {
    let mut r = Run::new("50000.00");
    r.step(Actor::Person("ops".into()), OrderEvent::ExceptionOpened { reason: "合同信息有误".into() }).unwrap();
    assert_eq!(r.state, OrderState::Exception { during: super::super::lifecycle::Stage::Executing });
    assert!(r.wait(chrono::Duration::hours(23)).is_empty());
    assert_eq!(r.wait(chrono::Duration::hours(2)), ["exception_escalated"]);
    assert_eq!(r.f().exception.as_ref().unwrap().escalated_to.as_deref(), Some("branch_manager"));
    assert!(r.wait(chrono::Duration::days(10)).is_empty(), "escalated once");
    r.step(
        Actor::Person("bm".into()),
        OrderEvent::ExceptionResolved { resolution: "customer withdrew".into(), cancel: true },
    )
    .unwrap();
    assert_eq!(r.state, OrderState::Cancelled);
}

#[test]
fn dunning_goes_out_on_its_days_by_rating_and_stops_with_payment() {
    // Rating A: the escalation step (BB and worse) does not apply.
    let mut r = Run::to_invoiced("1000.00");
    assert!(r.wait(chrono::Duration::days(30)).is_empty(), "due 2026-12-27, not yet overdue");
    // Overdue from 2026-12-28 00:00 Shanghai (16:00 UTC the day before).
    r.now = "2026-12-27T15:59:00Z".parse().unwrap();
    assert!(r.wait(chrono::Duration::zero()).is_empty());
    assert_eq!(r.wait(chrono::Duration::minutes(2)), ["payment_overdue"]);
    assert_eq!(r.state, OrderState::Overdue);
    assert_eq!(r.wait(chrono::Duration::days(1)), ["dunning_due"]);
    assert!(r.wait(chrono::Duration::days(13)).is_empty());
    assert_eq!(r.wait(chrono::Duration::days(1)), ["dunning_due"]);
    let mails: Vec<_> = r.effects.iter().filter_map(|e| e.mail.as_ref()).collect();
    assert_eq!(mails.len(), 1, "to the customer only");
    assert_eq!(mails[0].extra["stage"], "firm");
    assert_eq!(mails[0].digest_every_secs, Some(crate::engine::notify::DUNNING_GATHER_SECS));
    assert!(r.wait(chrono::Duration::days(60)).is_empty(), "no escalation for rating A");
    r.pay("P-1", "1060.00").unwrap();
    assert_eq!(r.state, OrderState::Closed);
    assert!(r.wait(chrono::Duration::days(90)).is_empty());
    assert_eq!(r.f().dunning, ["friendly", "firm"]);

    // Rating BB gets the escalation on day 45, to the customer and the sales owner.
    let mut r = Run::to_invoiced("1000.00");
    r.order.customer.credit_rating = Some("BB".parse().unwrap());
    r.now = "2026-12-27T16:01:00Z".parse().unwrap();
    assert_eq!(r.wait(chrono::Duration::zero()), ["payment_overdue"]);
    // 45 days on at once (a daemon that was down): only the escalation goes out.
    assert_eq!(r.wait(chrono::Duration::days(45)), ["dunning_due"]);
    assert_eq!(r.f().dunning, ["friendly", "firm", "escalation"]);
    assert!(matches!(&r.audit.last().unwrap().event, OrderEvent::DunningDue { step, .. } if step == "escalation"));
}
