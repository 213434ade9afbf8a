//! One order's way through the lifecycle, read from its audit trail: how long it
//! stayed in each state, each approval level's wait and who ended it, each task's
//! time with its department, and the milestones the KPIs measure between. Pure.

use chrono::{DateTime, Utc};

use crate::engine::{Actor, OrderEvent, OrderState};

/// A stretch of time: from, to.
pub(crate) type Span = (DateTime<Utc>, DateTime<Utc>);

/// One audit entry as the analysis reads it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry<'a> {
    pub(crate) at: DateTime<Utc>,
    pub(crate) actor: &'a Actor,
    pub(crate) event: &'a OrderEvent,
    /// The state after the event.
    pub(crate) state: &'a OrderState,
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
        let here = node(e.state);
        if self.stays.last().is_some_and(|s| s.node == here) {
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
        self.stays.push(Stay { node: here, from: e.at, to: None });
    }

    fn milestone(&mut self, e: &Entry<'_>) {
        use OrderEvent as E;
        match e.event {
            E::Received { .. } => {
                self.received.get_or_insert(e.at);
            }
            E::ExecutionStarted => {
                self.executing.get_or_insert(e.at);
            }
            E::Closed => {
                self.closed.get_or_insert(e.at);
            }
            E::InvoiceIssued { .. } => {
                self.invoiced.get_or_insert(e.at);
            }
            E::PaymentReceived { settled: true, .. } => self.paid = Some(e.at),
            E::Approved { level, role, .. } | E::ApprovalDeclined { level, role, .. } => {
                let approved = matches!(e.event, E::Approved { .. });
                self.auto_approved |= approved && *e.actor == Actor::System;
                let actor = match e.actor {
                    Actor::Person(p) | Actor::Connector(p) => p.clone(),
                    Actor::System => "system".to_owned(),
                };
                // The decision is recorded with the state it led to, so the level's
                // wait may already be closed as `Ended` by `stay`: it was this decision.
                if let Some(wait) = self.approvals.iter_mut().rev().find(|w| w.level == *level) {
                    let at = wait.to.as_ref().map_or(e.at, |(at, _)| *at);
                    wait.to = Some((at, Decided::By { actor, role: role.clone(), approved }));
                }
            }
            E::TaskAssigned { task, department, .. } => {
                self.tasks.push(TaskSpan { task: task.clone(), department: department.clone(), from: e.at, to: None });
            }
            E::TaskCompleted { task, .. } => {
                if let Some(t) = self.tasks.iter_mut().find(|t| &t.task == task && t.to.is_none()) {
                    t.to = Some(e.at);
                }
            }
            E::SurveyAnswered { score, complaint, .. } => self.survey = Some((*score, *complaint)),
            _ => {}
        }
    }

    fn count(&mut self, e: &Entry<'_>) {
        use OrderEvent as E;
        match e.event {
            E::PaymentOverdue => self.overdue = true,
            E::DunningDue { .. } => self.dunning_steps += 1,
            E::ReviewReturned { .. } => self.reviews_returned += 1,
            E::ApprovalsVoided { .. } => self.approvals_voided += 1,
            E::ExceptionOpened { .. } => self.exceptions += 1,
            E::ApprovalEscalated { .. } | E::ExceptionEscalated { .. } => self.sla_breaches += 1,
            E::AfterSalesTicketRequested { .. } => self.ticket = true,
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
            trail.iter().map(|(h, actor, event, state)| Entry { at: t(*h), actor, event, state }),
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
