//! `decide`: the pure heart of the daemon. Given an order, an event, the rules and the
//! time, it returns the next state, the audit entries and the effects to perform.
//!
//! It also runs the automatic steps that follow an event without waiting for anyone
//! (screening after intake, automatic approval of small orders), so one external
//! stimulus is one decision and one store transaction. No I/O here (invariant 6).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::approval::{ApprovalProgress, Escalation, Given, Refusal, Timer, TimerKind};
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
    /// The approval chain in progress after this decision (stored on the order).
    pub approval: Option<ApprovalProgress>,
    /// The order's due times after this decision (they replace the stored ones).
    pub timers: Vec<Timer>,
}

/// What a decision looks at besides the event: the order as it stands.
#[derive(Clone, Copy, Debug)]
pub struct Case<'a> {
    pub state: &'a OrderState,
    pub order: &'a Order,
    /// The customer's recent orders (velocity and duplicate rules).
    pub history: &'a History,
    pub approval: Option<&'a ApprovalProgress>,
}

/// Why nothing was decided.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    #[error("{0}")]
    Illegal(#[from] IllegalTransition),
    /// A person may not take this decision (not an approver, own order, …).
    #[error("{0}")]
    Refused(#[from] Refusal),
}

/// Applies `event` to an order, then every automatic step that follows.
///
/// A person's approval decision (`Approved`, `ApprovalDeclined`, `InfoRequested` by
/// `Actor::Person`) is checked here: the level must be the one waiting, the person
/// must hold one of its open roles (or stand in for an absent holder), must not own
/// the order and must not have approved it already. Their role is filled in, and an
/// approval that leaves an `all` level incomplete is recorded as `ApprovalGiven`.
///
/// # Errors
/// `Illegal` when `event` is not allowed in the state, `Refused` when the person may
/// not decide; nothing is decided then.
pub fn decide(
    case: &Case<'_>,
    actor: Actor,
    event: OrderEvent,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<Decision, DecideError> {
    let mut d = Decision {
        next: case.state.clone(),
        audit: Vec::new(),
        effects: Vec::new(),
        approval: case.approval.cloned(),
        timers: Vec::new(),
    };
    let event = match event {
        // A release from review takes the route the matrix gives now.
        OrderEvent::ReviewReleased { comment, chain } if chain.is_empty() => {
            let inputs = table::inputs(case.order, rules.watch_list.matches(case.order), case.history);
            let route = rules.route(&inputs).map_err(Refusal::NoRoute)?;
            OrderEvent::ReviewReleased { comment, chain: route.chain }
        }
        other => d.person_decision(case.order, &actor, other, rules, now)?,
    };
    d.apply(case.order, actor, event, rules, now)?;
    d.run_automatic(case.order, case.history, rules, now)?;
    d.timers = d.approval.as_ref().map(|p| p.timers(&d.next, &rules.sla)).unwrap_or_default();
    Ok(d)
}

/// The event a due timer causes (the earliest one due at `now`), if any: a reminder
/// or an escalation of the level waiting. Timers are derived from the order, so a
/// timer of a level that was decided meanwhile no longer exists and fires nothing.
pub fn due_timer_event(case: &Case<'_>, rules: &Rules, now: DateTime<Utc>) -> Option<OrderEvent> {
    let p = case.approval?;
    let mut timers = p.timers(case.state, &rules.sla);
    timers.sort_by_key(|t| t.due);
    let t = timers.into_iter().find(|t| t.due <= now)?;
    Some(match t.kind {
        TimerKind::Remind => OrderEvent::ApprovalReminderDue { level: t.level },
        TimerKind::Escalate => {
            let from_role = p.answerable(t.level).unwrap_or_default();
            let to_role = rules.sla.escalate_to.get(&from_role).cloned().unwrap_or_default();
            OrderEvent::ApprovalEscalated { level: t.level, from_role, to_role }
        }
    })
}

/// The decision for a brand-new order: the `Received` entry, then the automatic steps.
pub fn decide_new(
    order: &Order,
    history: &History,
    actor: Actor,
    received: OrderEvent,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<Decision, DecideError> {
    if !matches!(received, OrderEvent::Received { .. }) {
        return Err(IllegalTransition { state: "new", event: received.name() }.into());
    }
    let next = OrderState::Received;
    let mut d = Decision { audit: Vec::new(), next: next.clone(), effects: Vec::new(), approval: None, timers: vec![] };
    d.record(order, Some(next), actor, received, rules, now);
    d.run_automatic(order, history, rules, now)?;
    d.timers = d.approval.as_ref().map(|p| p.timers(&d.next, &rules.sla)).unwrap_or_default();
    Ok(d)
}

/// Effects of one step: connector pushes from `[[effects]]` and mail from the
/// notification rules, for the state entered (if it changed) and the event recorded.
fn effects_of_step(
    entered: Option<&OrderState>,
    event: &OrderEvent,
    order: &Order,
    at: (&OrderState, Option<&ApprovalProgress>, Option<DateTime<Utc>>),
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
    out.extend(rules.notify.for_step(entered, event, order, at, now));
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

    /// Checks and completes a person's approval decision (see `decide`).
    fn person_decision(
        &self,
        order: &Order,
        actor: &Actor,
        event: OrderEvent,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<OrderEvent, Refusal> {
        let Actor::Person(person) = actor else { return Ok(event) };
        let asked = match &event {
            OrderEvent::Approved { level, .. }
            | OrderEvent::ApprovalDeclined { level, .. }
            | OrderEvent::InfoRequested { level, .. } => *level,
            _ => return Ok(event),
        };
        let (OrderState::AwaitingApproval { level, .. }, Some(progress)) = (&self.next, &self.approval) else {
            return Err(Refusal::NotAwaiting);
        };
        let level = *level;
        if asked != 0 && asked != level {
            return Err(Refusal::WrongLevel { asked, current: level });
        }
        let today = now.with_timezone(&rules.notify.presentation.time_zone).date_naive();
        let standing = progress.standing(&rules.notify.directory, order, person, level, today)?;
        Ok(match event {
            OrderEvent::Approved { comment, .. } if progress.completes(level, &standing.role) => {
                OrderEvent::Approved { level, role: standing.role, comment, on_behalf_of: standing.on_behalf_of }
            }
            OrderEvent::Approved { comment, .. } => {
                OrderEvent::ApprovalGiven { level, role: standing.role, comment, on_behalf_of: standing.on_behalf_of }
            }
            OrderEvent::ApprovalDeclined { comment, .. } => {
                OrderEvent::ApprovalDeclined { level, role: standing.role, comment }
            }
            OrderEvent::InfoRequested { question, .. } => {
                OrderEvent::InfoRequested { level, role: standing.role, question }
            }
            other => other,
        })
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
        let voided = match (&event, &self.approval) {
            (OrderEvent::Amended { material: true, changed, .. }, Some(p)) if !p.given.is_empty() => {
                Some(OrderEvent::ApprovalsVoided {
                    approvals: u32::try_from(p.given.len()).unwrap_or(u32::MAX),
                    reason: format!("material change: {}", changed.join(", ")),
                })
            }
            _ => None,
        };
        self.record(order, entered, actor, event, rules, now);
        if let Some(v) = voided {
            self.record(order, None, Actor::System, v, rules, now);
        }
        Ok(())
    }

    /// Keeps the approval chain in step with the event.
    fn track_approval(&mut self, actor: &Actor, event: &OrderEvent, now: DateTime<Utc>) {
        let next_round = self.approval.as_ref().map_or(1, |p| p.round + 1);
        match event {
            OrderEvent::ScreeningPassed { chain, row, .. } => {
                self.approval = Some(ApprovalProgress::new(next_round, chain.clone(), row.clone()));
            }
            OrderEvent::ReviewReleased { chain, .. } => {
                self.approval = Some(ApprovalProgress::new(next_round, chain.clone(), "review".into()));
            }
            OrderEvent::Approved { level, role, .. } | OrderEvent::ApprovalGiven { level, role, .. } => {
                if let Some(p) = &mut self.approval {
                    let person = match actor {
                        Actor::Person(id) => id.clone(),
                        other => other.to_string(),
                    };
                    p.given.push(Given { level: *level, role: role.clone(), person });
                }
            }
            OrderEvent::ApprovalsVoided { .. } => {
                if let Some(p) = &mut self.approval {
                    p.given.clear();
                    p.chain.clear();
                }
            }
            OrderEvent::ApprovalReminderDue { level } => {
                if let Some(p) = &mut self.approval {
                    p.reminded.push(*level);
                }
            }
            OrderEvent::ApprovalEscalated { level, to_role, .. } => {
                if let Some(p) = &mut self.approval {
                    p.escalated.push(Escalation { level: *level, role: to_role.clone(), at: now });
                }
            }
            _ => {}
        }
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
        self.track_approval(&actor, &event, now);
        let after = entered.clone().unwrap_or_else(|| self.next.clone());
        if let (Some(OrderState::AwaitingApproval { .. }), Some(p)) = (&entered, &mut self.approval) {
            p.level_since = Some(now);
        }
        let due = self.approval.as_ref().and_then(|p| {
            p.timers(&after, &rules.sla).into_iter().find(|t| t.kind == TimerKind::Escalate).map(|t| t.due)
        });
        self.effects.extend(effects_of_step(
            entered.as_ref(),
            &event,
            order,
            (&after, self.approval.as_ref(), due),
            rules,
            now,
        ));
        self.next = after;
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

    /// `decide` on an order in `state` with no history and no chain in progress.
    fn run(
        state: &OrderState,
        order: &Order,
        actor: Actor,
        ev: OrderEvent,
        r: &Rules,
    ) -> Result<Decision, DecideError> {
        let h = History::default();
        decide(&Case { state, order, history: &h, approval: None }, actor, ev, r, Utc::now())
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
        let dir = crate::directory::Directory::parse(
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
            let case = Case { state: &state, order: &o, history: &h, approval: progress.as_ref() };
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
        assert!(
            matches!(&d.audit[0].event, OrderEvent::Approved { level: 2, role, .. } if role == "compliance_officer")
        );
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
            [
                (TimerKind::Remind, at("2026-11-30T14:00:00+08:00")),
                (TimerKind::Escalate, at("2026-12-01T09:30:00+08:00"))
            ]
        );
        let (mut state, mut progress) = (d.next, d.approval);
        let mut fire = |now: DateTime<Utc>| -> Option<Decision> {
            let case = Case { state: &state, order: &o, history: &h, approval: progress.as_ref() };
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
        assert!(
            matches!(&d.audit[0].event, OrderEvent::ApprovalEscalated { to_role, .. } if to_role == "branch_manager")
        );
        // Next: branch_manager has 16 working hours from the escalation: 8 on Tuesday, 8 on Wednesday.
        assert_eq!(
            d.timers.iter().map(|t| (t.kind, t.due)).collect::<Vec<_>>(),
            [(TimerKind::Escalate, at("2026-12-02T17:00:00+08:00"))]
        );
        let d = fire(at("2026-12-02T17:00:00+08:00")).unwrap();
        assert!(
            matches!(&d.audit[0].event, OrderEvent::ApprovalEscalated { to_role, .. } if to_role == "risk_committee")
        );
        assert!(d.timers.is_empty(), "risk_committee escalates nowhere");
    }
}
