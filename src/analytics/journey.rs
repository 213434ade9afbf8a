//! One order's way through the lifecycle, read from its audit trail: how long it
//! stayed in each state, each approval level's wait and who ended it, each task's
//! time with its department, and the milestones the KPIs measure between. Pure.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};

use crate::engine::{Actor, OrderEvent, OrderState};

/// A stretch of time: from, to.
pub(crate) type Span = (DateTime<Utc>, DateTime<Utc>);

/// One audit entry as the analysis reads it.
#[derive(Clone, Debug)]
pub(crate) struct Entry<'a> {
    pub(crate) at: DateTime<Utc>,
    pub(crate) actor: &'a Actor,
    pub(crate) mark: Cow<'a, Mark>,
    /// The state after the event.
    pub(crate) state: &'a OrderState,
}

impl<'a> Entry<'a> {
    /// An entry of a decoded event.
    pub(crate) fn of(at: DateTime<Utc>, actor: &'a Actor, event: &OrderEvent, state: &'a OrderState) -> Entry<'a> {
        Entry { at, actor, mark: Cow::Owned(Mark::of(event)), state }
    }
}

/// What a journey reads of an event: the milestones, decisions, tasks and counts it
/// measures, and nothing else. Made from an [`OrderEvent`], or read straight from an
/// event's JSON (its `Deserialize` takes the event's own JSON form, skipping what it
/// does not measure: a report over a million orders decodes no more than this).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mark {
    Received,
    ExecutionStarted,
    Closed,
    InvoiceIssued,
    /// A payment that settled the invoice.
    Settled,
    /// An approval level approved or declined.
    Decided {
        level: u8,
        role: String,
        approved: bool,
    },
    TaskAssigned {
        task: String,
        department: String,
    },
    TaskCompleted {
        task: String,
    },
    Survey {
        score: u8,
        complaint: bool,
    },
    Overdue,
    DunningDue,
    ReviewReturned,
    ApprovalsVoided,
    ExceptionOpened,
    /// An approval level or an exception escalated past its deadline.
    Escalated,
    TicketRequested,
    /// An event the analysis does not measure.
    Other,
}

impl Mark {
    /// What the analysis reads of `event`.
    pub(crate) fn of(event: &OrderEvent) -> Mark {
        use OrderEvent as E;
        match event {
            E::Received { .. } => Mark::Received,
            E::ExecutionStarted => Mark::ExecutionStarted,
            E::Closed => Mark::Closed,
            E::InvoiceIssued { .. } => Mark::InvoiceIssued,
            E::PaymentReceived { settled: true, .. } => Mark::Settled,
            E::Approved { level, role, .. } => Mark::Decided { level: *level, role: role.clone(), approved: true },
            E::ApprovalDeclined { level, role, .. } => {
                Mark::Decided { level: *level, role: role.clone(), approved: false }
            }
            E::TaskAssigned { task, department, .. } => {
                Mark::TaskAssigned { task: task.clone(), department: department.clone() }
            }
            E::TaskCompleted { task, .. } => Mark::TaskCompleted { task: task.clone() },
            E::SurveyAnswered { score, complaint, .. } => Mark::Survey { score: *score, complaint: *complaint },
            E::PaymentOverdue => Mark::Overdue,
            E::DunningDue { .. } => Mark::DunningDue,
            E::ReviewReturned { .. } => Mark::ReviewReturned,
            E::ApprovalsVoided { .. } => Mark::ApprovalsVoided,
            E::ExceptionOpened { .. } => Mark::ExceptionOpened,
            E::ApprovalEscalated { .. } | E::ExceptionEscalated { .. } => Mark::Escalated,
            E::AfterSalesTicketRequested { .. } => Mark::TicketRequested,
            _ => Mark::Other,
        }
    }
}

/// The fields of an event's JSON that a [`Mark`] reads; serde skips the others
/// without building them.
#[derive(Deserialize)]
struct MarkFields<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    level: Option<u8>,
    role: Option<String>,
    task: Option<String>,
    department: Option<String>,
    settled: Option<bool>,
    score: Option<u8>,
    complaint: Option<bool>,
}

impl<'de> Deserialize<'de> for Mark {
    /// Reads an [`OrderEvent`]'s JSON (`{"type": "approved", "level": 1, …}`) as
    /// [`Mark::of`] would see the event; a field a measured event needs is required.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Mark, D::Error> {
        use serde::de::Error as _;
        let f = MarkFields::deserialize(d)?;
        let need = |name: &'static str| D::Error::missing_field(name);
        let decided = |approved: bool| -> Result<Mark, D::Error> {
            Ok(Mark::Decided {
                level: f.level.ok_or_else(|| need("level"))?,
                role: f.role.clone().ok_or_else(|| need("role"))?,
                approved,
            })
        };
        Ok(match f.kind.as_ref() {
            "received" => Mark::Received,
            "execution_started" => Mark::ExecutionStarted,
            "closed" => Mark::Closed,
            "invoice_issued" => Mark::InvoiceIssued,
            "payment_received" if f.settled.ok_or_else(|| need("settled"))? => Mark::Settled,
            "approved" => decided(true)?,
            "approval_declined" => decided(false)?,
            "task_assigned" => Mark::TaskAssigned {
                task: f.task.clone().ok_or_else(|| need("task"))?,
                department: f.department.clone().ok_or_else(|| need("department"))?,
            },
            "task_completed" => Mark::TaskCompleted { task: f.task.clone().ok_or_else(|| need("task"))? },
            "survey_answered" => Mark::Survey {
                score: f.score.ok_or_else(|| need("score"))?,
                complaint: f.complaint.ok_or_else(|| need("complaint"))?,
            },
            "payment_overdue" => Mark::Overdue,
            "dunning_due" => Mark::DunningDue,
            "review_returned" => Mark::ReviewReturned,
            "approvals_voided" => Mark::ApprovalsVoided,
            "exception_opened" => Mark::ExceptionOpened,
            "approval_escalated" | "exception_escalated" => Mark::Escalated,
            "after_sales_ticket_requested" => Mark::TicketRequested,
            _ => Mark::Other,
        })
    }
}

/// What a report groups orders by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Subject {
    pub(crate) product: String,
    /// The sales owner's address, or `-` when the order names none.
    pub(crate) sales_owner: String,
    /// The customer's credit rating, or `-`.
    pub(crate) rating: String,
}

/// A time an order spent in one place of the process map. `to` is `None` while the
/// order is still there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stay {
    /// The node of the process map: the state's name, with the level for approvals
    /// (`awaiting_approval.2`).
    pub(crate) node: String,
    pub(crate) from: DateTime<Utc>,
    pub(crate) to: Option<DateTime<Utc>>,
}

/// How an approval level's wait ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decided {
    /// Approved or declined by this person (`Actor::Person`), connector or `system`
    /// (an automatic approval).
    By { actor: String, role: String, approved: bool },
    /// The wait ended otherwise: voided by an amendment, the order cancelled.
    Ended,
}

/// One wait of an approval level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ApprovalWait {
    pub(crate) level: u8,
    pub(crate) from: DateTime<Utc>,
    /// `None` while the level still waits.
    pub(crate) to: Option<(DateTime<Utc>, Decided)>,
}

/// One task handed to a department.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TaskSpan {
    pub(crate) task: String,
    pub(crate) department: String,
    pub(crate) from: DateTime<Utc>,
    pub(crate) to: Option<DateTime<Utc>>,
}

/// An order's journey, as far as its audit trail goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Journey {
    pub(crate) subject: Subject,
    pub(crate) received: Option<DateTime<Utc>>,
    pub(crate) stays: Vec<Stay>,
    pub(crate) approvals: Vec<ApprovalWait>,
    pub(crate) tasks: Vec<TaskSpan>,
    pub(crate) executing: Option<DateTime<Utc>>,
    pub(crate) closed: Option<DateTime<Utc>>,
    /// The state it ended in (`closed`, `cancelled`, `rejected`) and when.
    pub(crate) ended: Option<(&'static str, DateTime<Utc>)>,
    pub(crate) invoiced: Option<DateTime<Utc>>,
    /// When the last payment settled the invoice.
    pub(crate) paid: Option<DateTime<Utc>>,
    pub(crate) overdue: bool,
    /// Dunning steps that came due.
    pub(crate) dunning_steps: u32,
    /// Approved on the matrix's behalf, with no person deciding.
    pub(crate) auto_approved: bool,
    pub(crate) reviews_returned: u32,
    pub(crate) approvals_voided: u32,
    pub(crate) exceptions: u32,
    /// Approval levels and exceptions that ran past their deadline.
    pub(crate) sla_breaches: u32,
    /// The survey's score (1–5) and whether it was a complaint.
    pub(crate) survey: Option<(u8, bool)>,
    pub(crate) ticket: bool,
}

/// The process map's node for a state.
pub(crate) fn node(state: &OrderState) -> String {
    match state {
        OrderState::AwaitingApproval { level, .. } => format!("awaiting_approval.{level}"),
        s => s.name().to_owned(),
    }
}

/// Whether `state` is the process map's node `name`, without building the name (a
/// report asks this for every audit entry).
fn is_node(state: &OrderState, name: &str) -> bool {
    match state {
        OrderState::AwaitingApproval { level, .. } => {
            name.strip_prefix("awaiting_approval.").and_then(|l| l.parse::<u8>().ok()) == Some(*level)
        }
        s => s.name() == name,
    }
}

impl Journey {
    /// Reads `entries` (one order's audit trail, oldest first).
    pub(crate) fn of<'a>(subject: Subject, entries: impl IntoIterator<Item = Entry<'a>>) -> Journey {
        let mut j = Journey { subject, ..Journey::default() };
        for e in entries {
            j.stay(&e);
            j.milestone(&e);
            j.count(&e);
        }
        j
    }

    /// The nodes the order passed through, in order: its variant.
    pub(crate) fn path(&self) -> Vec<&str> {
        self.stays.iter().map(|s| s.node.as_str()).collect()
    }

    fn stay(&mut self, e: &Entry<'_>) {
        if self.stays.last().is_some_and(|s| is_node(e.state, &s.node)) {
            return;
        }
        if let Some(last) = self.stays.last_mut() {
            last.to = Some(e.at);
        }
        // A level's wait that the state left without a decision ended otherwise.
        for wait in self.approvals.iter_mut().filter(|w| w.to.is_none()) {
            wait.to = Some((e.at, Decided::Ended));
        }
        if let OrderState::AwaitingApproval { level, .. } = e.state {
            self.approvals.push(ApprovalWait { level: *level, from: e.at, to: None });
        }
        if matches!(e.state, OrderState::Closed | OrderState::Cancelled | OrderState::Rejected) {
            self.ended.get_or_insert((e.state.name(), e.at));
        }
        self.stays.push(Stay { node: node(e.state), from: e.at, to: None });
    }

    fn milestone(&mut self, e: &Entry<'_>) {
        match e.mark.as_ref() {
            Mark::Received => {
                self.received.get_or_insert(e.at);
            }
            Mark::ExecutionStarted => {
                self.executing.get_or_insert(e.at);
            }
            Mark::Closed => {
                self.closed.get_or_insert(e.at);
            }
            Mark::InvoiceIssued => {
                self.invoiced.get_or_insert(e.at);
            }
            Mark::Settled => self.paid = Some(e.at),
            Mark::Decided { level, role, approved } => {
                self.auto_approved |= *approved && *e.actor == Actor::System;
                let actor = match e.actor {
                    Actor::Person(p) | Actor::Connector(p) => p.clone(),
                    Actor::System => "system".to_owned(),
                };
                // The decision is recorded with the state it led to, so the level's
                // wait may already be closed as `Ended` by `stay`: it was this decision.
                if let Some(wait) = self.approvals.iter_mut().rev().find(|w| w.level == *level) {
                    let at = wait.to.as_ref().map_or(e.at, |(at, _)| *at);
                    wait.to = Some((at, Decided::By { actor, role: role.clone(), approved: *approved }));
                }
            }
            Mark::TaskAssigned { task, department } => {
                self.tasks.push(TaskSpan { task: task.clone(), department: department.clone(), from: e.at, to: None });
            }
            Mark::TaskCompleted { task } => {
                if let Some(t) = self.tasks.iter_mut().find(|t| &t.task == task && t.to.is_none()) {
                    t.to = Some(e.at);
                }
            }
            Mark::Survey { score, complaint } => self.survey = Some((*score, *complaint)),
            _ => {}
        }
    }

    fn count(&mut self, e: &Entry<'_>) {
        match e.mark.as_ref() {
            Mark::Overdue => self.overdue = true,
            Mark::DunningDue => self.dunning_steps += 1,
            Mark::ReviewReturned => self.reviews_returned += 1,
            Mark::ApprovalsVoided => self.approvals_voided += 1,
            Mark::ExceptionOpened => self.exceptions += 1,
            Mark::Escalated => self.sla_breaches += 1,
            Mark::TicketRequested => self.ticket = true,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::lifecycle::Stage;

    fn t(h: i64) -> DateTime<Utc> {
        "2026-11-30T01:00:00Z".parse::<DateTime<Utc>>().unwrap() + chrono::Duration::hours(h)
    }

    #[test]
    fn a_state_is_its_own_node_and_no_other() {
        let states = [
            OrderState::Received,
            OrderState::AwaitingApproval { level: 1, of: 2 },
            OrderState::AwaitingApproval { level: 2, of: 2 },
            OrderState::Closed,
        ];
        for a in &states {
            for b in &states {
                assert_eq!(is_node(a, &node(b)), a == b, "{a:?} {b:?}");
            }
        }
        assert!(!is_node(&states[1], "awaiting_approval.x"));
    }

    #[test]
    fn a_mark_read_from_an_events_json_is_the_events_mark() {
        use crate::domain::Money;
        let cny = |a: &str| Money::new(a.parse().unwrap(), "CNY".parse().unwrap()).unwrap();
        let paid = |settled| OrderEvent::PaymentReceived {
            amount: cny("10.00"),
            settled,
            payment_id: "p".into(),
            outstanding: None,
            excess: None,
        };
        let events = [
            OrderEvent::Received { connector: "crm".into(), external_id: "1".into(), version: 1 },
            OrderEvent::ExecutionStarted,
            OrderEvent::Closed,
            OrderEvent::InvoiceIssued {
                number: "I".into(),
                net: cny("10.00"),
                tax: cny("0.00"),
                total: cny("10.00"),
                due: "2027-01-07".parse().unwrap(),
            },
            paid(true),
            paid(false),
            OrderEvent::Approved {
                level: 2,
                role: "经理".into(),
                comment: "好".into(),
                on_behalf_of: Some("r".into()),
            },
            OrderEvent::ApprovalDeclined { level: 1, role: "r".into(), comment: "no".into() },
            OrderEvent::ApprovalGiven { level: 1, role: "r".into(), comment: String::new(), on_behalf_of: None },
            OrderEvent::TaskAssigned { task: "t".into(), name: "T".into(), department: "运营".into() },
            OrderEvent::TaskCompleted { task: "t".into(), note: String::new() },
            OrderEvent::SurveyAnswered { score: 2, comment: "慢".into(), complaint: true },
            OrderEvent::PaymentOverdue,
            OrderEvent::DunningDue { step: "first".into(), days_overdue: 3 },
            OrderEvent::ReviewReturned { comment: "c".into() },
            OrderEvent::ApprovalsVoided { approvals: 1, reason: "r".into() },
            OrderEvent::ExceptionOpened { reason: "r".into() },
            OrderEvent::ApprovalEscalated { level: 1, from_role: "a".into(), to_role: "b".into() },
            OrderEvent::ExceptionEscalated { to_role: "b".into() },
            OrderEvent::AfterSalesTicketRequested { score: 1, comment: "c".into(), reason: "r".into() },
            OrderEvent::ApprovalReminderDue { level: 1 },
            OrderEvent::InfoRequested { level: 1, role: "r".into(), question: "q".into() },
        ];
        for e in &events {
            let read: Mark = serde_json::from_value(serde_json::to_value(e).unwrap()).unwrap();
            assert_eq!(read, Mark::of(e), "{e:?}");
        }
        let others = events.iter().filter(|e| Mark::of(e) == Mark::Other).count();
        assert_eq!(others, 4, "each measured kind above is measured");
        // A measured event without a field it needs is an error, not a guess.
        let broken = serde_json::json!({"type": "approved", "role": "r", "comment": ""});
        assert!(serde_json::from_value::<Mark>(broken).unwrap_err().to_string().contains("level"));
    }

    #[test]
    fn stays_approvals_tasks_and_milestones_come_from_the_trail() {
        let sys = Actor::System;
        let boss = Actor::Person("wang.li@example.cn".into());
        let erp = Actor::Connector("erp".into());
        let aw = |level| OrderState::AwaitingApproval { level, of: 2 };
        let approved = |level: u8| OrderEvent::Approved {
            level,
            role: format!("r{level}"),
            comment: String::new(),
            on_behalf_of: None,
        };
        let trail = [
            (
                0,
                &erp,
                OrderEvent::Received { connector: "crm".into(), external_id: "1".into(), version: 1 },
                OrderState::Received,
            ),
            (0, &sys, OrderEvent::ScreeningStarted { rules_version: "v".into() }, OrderState::Screening),
            (1, &sys, OrderEvent::ApprovalReminderDue { level: 1 }, aw(1)),
            (3, &boss, approved(1), aw(2)),
            (7, &boss, approved(2), OrderState::Approved),
            (7, &sys, OrderEvent::ExecutionStarted, OrderState::Executing),
            (
                7,
                &sys,
                OrderEvent::TaskAssigned { task: "t".into(), name: "T".into(), department: "ops".into() },
                OrderState::Executing,
            ),
            (
                8,
                &sys,
                OrderEvent::ExceptionOpened { reason: "x".into() },
                OrderState::Exception { during: Stage::Executing },
            ),
            (9, &sys, OrderEvent::ExceptionResolved { resolution: "y".into(), cancel: false }, OrderState::Executing),
            (10, &erp, OrderEvent::TaskCompleted { task: "t".into(), note: String::new() }, OrderState::Delivered),
            (12, &sys, OrderEvent::Closed, OrderState::Closed),
        ];
        let j = Journey::of(
            Subject::default(),
            trail.iter().map(|(h, actor, event, state)| Entry::of(t(*h), actor, event, state)),
        );
        assert_eq!(
            j.path(),
            [
                "received",
                "screening",
                "awaiting_approval.1",
                "awaiting_approval.2",
                "approved",
                "executing",
                "exception",
                "executing",
                "delivered",
                "closed"
            ]
        );
        assert_eq!(j.stays[2], Stay { node: "awaiting_approval.1".into(), from: t(1), to: Some(t(3)) });
        assert_eq!(j.stays.last().unwrap().to, None);
        assert_eq!(j.approvals.len(), 2);
        assert_eq!(
            j.approvals[1],
            ApprovalWait {
                level: 2,
                from: t(3),
                to: Some((t(7), Decided::By { actor: "wang.li@example.cn".into(), role: "r2".into(), approved: true })),
            }
        );
        assert_eq!(j.tasks[0].to, Some(t(10)));
        assert_eq!((j.received, j.executing, j.closed), (Some(t(0)), Some(t(7)), Some(t(12))));
        assert_eq!(j.ended, Some(("closed", t(12))));
        assert_eq!((j.exceptions, j.auto_approved, j.sla_breaches), (1, false, 0));
    }
}
