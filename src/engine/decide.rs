//! `decide`: the pure heart of the daemon. Given an order, an event, the rules and the
//! time, it returns the next state, the audit entries and the effects to perform.
//!
//! It also runs the automatic steps that follow an event without waiting for anyone
//! (screening after intake, automatic approval of small orders), so one external
//! stimulus is one decision and one store transaction. No I/O here (invariant 6).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::lifecycle::{Actor, IllegalTransition, OrderEvent, OrderState, triggers};
use super::lifecycle::{RuleHit, Severity};
use super::notify::MailSpec;
use super::rules::{NO_ROUTE, Rules, Screening};
use super::table::{self, History};
use crate::domain::{ConnectorId, Order};

/// One audit entry before the store gives it a sequence number and a hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub actor: Actor,
    pub event: OrderEvent,
    /// The state after this event.
    pub state: OrderState,
}

/// An outbound effect, as data. The store gives it an id and an idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectSpec {
    pub connector: ConnectorId,
    pub operation: String,
    /// The state entered or event recorded that caused it (for the audit and metrics).
    pub cause: String,
    /// For mail effects (`connector` = `mail`): what to send to whom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail: Option<MailSpec>,
    /// The event that caused it; receivers get it in the body (e.g. the survey comment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<OrderEvent>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub next: OrderState,
    pub audit: Vec<AuditEntry>,
    pub effects: Vec<EffectSpec>,
}

/// Applies `event` to an order in `state`, then every automatic step that follows.
///
/// # Errors
/// `IllegalTransition` when `event` is not allowed in `state`; nothing is decided then.
pub fn decide(
    state: &OrderState,
    order: &Order,
    history: &History,
    actor: Actor,
    event: OrderEvent,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<Decision, IllegalTransition> {
    let mut d = Decision { next: state.clone(), audit: Vec::new(), effects: Vec::new() };
    d.apply(order, actor, event, rules, now)?;
    d.run_automatic(order, history, rules, now)?;
    Ok(d)
}

/// The decision for a brand-new order: the `Received` entry, then the automatic steps.
pub fn decide_new(
    order: &Order,
    history: &History,
    actor: Actor,
    received: OrderEvent,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<Decision, IllegalTransition> {
    if !matches!(received, OrderEvent::Received { .. }) {
        return Err(IllegalTransition { state: "new", event: received.name() });
    }
    let next = OrderState::Received;
    let mut d = Decision { audit: Vec::new(), next: next.clone(), effects: Vec::new() };
    d.record(order, Some(next), actor, received, rules, now);
    d.run_automatic(order, history, rules, now)?;
    Ok(d)
}

/// Effects of one step: connector pushes from `[[effects]]` and mail from the
/// notification rules, for the state entered (if it changed) and the event recorded.
fn effects_of_step(
    entered: Option<&OrderState>,
    event: &OrderEvent,
    order: &Order,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Vec<EffectSpec> {
    let entered = entered.map(OrderState::name);
    let mut out: Vec<EffectSpec> = rules
        .effects
        .iter()
        .filter(|r| triggers(&r.on, entered, event))
        .map(|r| EffectSpec {
            connector: r.connector.clone(),
            operation: r.operation.clone(),
            cause: r.on.clone(),
            mail: None,
            trigger: Some(event.clone()),
        })
        .collect();
    out.extend(rules.notify.for_step(entered, event, order, now));
    out
}

impl Decision {
    /// Automatic steps; bounded (at most one screening and one automatic approval).
    fn run_automatic(
        &mut self,
        order: &Order,
        history: &History,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<(), IllegalTransition> {
        for _ in 0..4 {
            let follow = match &self.next {
                OrderState::Received => Some(OrderEvent::ScreeningStarted { rules_version: rules.version.clone() }),
                OrderState::Screening => Some(screening_event(order, history, rules)),
                OrderState::AwaitingApproval { level: 1, .. } => auto_approval(&self.audit),
                OrderState::Closed | OrderState::Archived => after_sales(&self.audit, rules),
                _ => None,
            };
            match follow {
                Some(ev) => self.apply(order, Actor::System, ev, rules, now)?,
                None => break,
            }
        }
        Ok(())
    }

    fn apply(
        &mut self,
        order: &Order,
        actor: Actor,
        event: OrderEvent,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<(), IllegalTransition> {
        let next = self.next.on(&event)?;
        let entered = (next != self.next).then_some(next);
        self.record(order, entered, actor, event, rules, now);
        Ok(())
    }

    fn record(
        &mut self,
        order: &Order,
        entered: Option<OrderState>,
        actor: Actor,
        event: OrderEvent,
        rules: &Rules,
        now: DateTime<Utc>,
    ) {
        self.effects.extend(effects_of_step(entered.as_ref(), &event, order, rules, now));
        if let Some(next) = entered {
            self.next = next;
        }
        self.audit.push(AuditEntry { at: now, actor, event, state: self.next.clone() });
    }
}

/// A survey answer at or below the threshold, or a complaint, asks for a ticket.
fn after_sales(audit: &[AuditEntry], rules: &Rules) -> Option<OrderEvent> {
    let Some(OrderEvent::SurveyAnswered { score, comment, complaint }) = audit.last().map(|a| &a.event) else {
        return None;
    };
    let low = *score <= rules.survey.ticket_at_or_below;
    let reason = match (low, complaint) {
        (true, true) => format!("score {score} (at or below {}) and a complaint", rules.survey.ticket_at_or_below),
        (true, false) => format!("score {score} (at or below {})", rules.survey.ticket_at_or_below),
        (false, true) => "complaint".to_owned(),
        (false, false) => return None,
    };
    Some(OrderEvent::AfterSalesTicketRequested { score: *score, comment: comment.clone(), reason })
}

/// Screening and routing: every rule over the order's inputs, then the matrix. No
/// matching matrix row flags the order for a person, naming why.
fn screening_event(order: &Order, history: &History, rules: &Rules) -> OrderEvent {
    let rules_version = rules.version.clone();
    let inputs = table::inputs(order, rules.watch_list.matches(order), history);
    match rules.screen(&inputs) {
        Screening::Passed => match rules.route(&inputs) {
            Ok(route) => OrderEvent::ScreeningPassed {
                rules_version,
                chain: route.chain,
                reason: route.reason,
                row: route.row,
                auto_on_behalf_of: route.auto_on_behalf_of,
                inputs,
            },
            Err(why) => OrderEvent::ScreeningFlagged {
                rules_version,
                fired: vec![RuleHit { rule_id: NO_ROUTE.into(), severity: Severity::Flag, message: why }],
                inputs,
            },
        },
        Screening::Flagged(fired) => OrderEvent::ScreeningFlagged { rules_version, fired, inputs },
        Screening::Rejected(fired) => OrderEvent::ScreeningRejected { rules_version, fired, inputs },
    }
}

/// Level 1 is approved automatically when screening just chose an automatic route.
fn auto_approval(audit: &[AuditEntry]) -> Option<OrderEvent> {
    match audit.last().map(|a| &a.event) {
        Some(OrderEvent::ScreeningPassed { auto_on_behalf_of: Some(role), reason, .. }) => Some(OrderEvent::Approved {
            level: 1,
            role: role.clone(),
            comment: format!("automatic approval: {reason}"),
            on_behalf_of: Some(role.clone()),
        }),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
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
        assert!(
            matches!(&d.audit[3].event, OrderEvent::Approved { on_behalf_of: Some(r), .. } if r == "line_supervisor")
        );
        assert_eq!(d.effects.len(), 1);
        assert_eq!(d.effects[0].operation, "create");
    }

    #[test]
    fn large_order_waits_for_two_levels() {
        let d = decide_new(
            &sample_order("1250000.00"),
            &History::default(),
            Actor::System,
            received(),
            &rules(),
            Utc::now(),
        )
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

        o.customer.credit_rating = Some(crate::domain::CreditRating::B);
        let d = decide_new(&o, &History::default(), Actor::System, received(), &rules(), Utc::now()).unwrap();
        assert_eq!(d.next, OrderState::Rejected);
    }

    #[test]
    fn illegal_event_decides_nothing() {
        let err = decide(
            &OrderState::Approved,
            &sample_order("1.00"),
            &History::default(),
            Actor::System,
            OrderEvent::Closed,
            &rules(),
            Utc::now(),
        )
        .unwrap_err();
        assert_eq!(err.state, "approved");
        assert_eq!(err.event, "closed");
    }

    fn approve(level: u8) -> OrderEvent {
        OrderEvent::Approved { level, role: "r".into(), comment: String::new(), on_behalf_of: None }
    }

    #[test]
    fn a_middle_approval_level_does_not_fire_approved_effects() {
        let (o, r) = (sample_order("1250000.00"), rules());
        let level1 = OrderState::AwaitingApproval { level: 1, of: 2 };
        let d =
            decide(&level1, &o, &History::default(), Actor::Person("a".into()), approve(1), &r, Utc::now()).unwrap();
        assert_eq!(d.next, OrderState::AwaitingApproval { level: 2, of: 2 });
        assert!(d.effects.is_empty(), "{:?}", d.effects);
        let d =
            decide(&d.next, &o, &History::default(), Actor::Person("b".into()), approve(2), &r, Utc::now()).unwrap();
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
            let d = decide(&OrderState::Closed, &o, &History::default(), Actor::Person("c".into()), ev, &r, Utc::now())
                .unwrap();
            assert_eq!(d.next, OrderState::Closed);
            let requested = d.audit.iter().any(|a| a.event.name() == "after_sales_ticket_requested");
            assert_eq!(requested, ticket, "score {score}, complaint {complaint}");
            assert_eq!(d.effects.iter().any(|e| e.operation == "create_ticket"), ticket);
        }
        // Only a closed (or archived) order takes a survey answer.
        let ev = OrderEvent::SurveyAnswered { score: 1, comment: String::new(), complaint: false };
        assert!(decide(&OrderState::Paid, &o, &History::default(), Actor::System, ev, &r, Utc::now()).is_err());
    }
}
