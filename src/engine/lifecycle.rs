//! The order lifecycle: states, events and the one function that moves between them.
//!
//! `OrderState::on` lists every legal (state, event) pair; anything else is an
//! `IllegalTransition` naming both. No I/O, no clock: see `decide` for the wrapper.

use serde::{Deserialize, Serialize};

use super::level::Level;
pub use super::screening::{RuleHit, Severity};
use super::table::Inputs;
use crate::domain::Money;

/// Who caused an event: the daemon itself, a person, or an external system.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Actor {
    System,
    Person(String),
    Connector(String),
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::System => f.write_str("system"),
            Actor::Person(p) => write!(f, "person:{p}"),
            Actor::Connector(c) => write!(f, "connector:{c}"),
        }
    }
}

/// Where an order stands. Data that belongs to one state lives in its variant.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum OrderState {
    Received,
    Screening,
    Flagged,
    ManualReview,
    /// Waiting for approval level `level` (1-based) of `of`.
    AwaitingApproval {
        level: u8,
        of: u8,
    },
    Approved,
    Rejected,
    Executing,
    Delivered,
    Accepted,
    /// A problem during `during`; resolving it returns there.
    Exception {
        during: Stage,
    },
    Invoiced,
    Overdue,
    Paid,
    Closed,
    Archived,
    Cancelled,
}

/// The stage an exception interrupted.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Executing,
    Delivered,
    Invoiced,
    /// Settled, but something is wrong (an over-payment to refund).
    Paid,
}

/// Names of every state, as used in `?state=` filters, metrics and the state index.
pub const STATE_NAMES: &[&str] = &[
    "received",
    "screening",
    "flagged",
    "manual_review",
    "awaiting_approval",
    "approved",
    "rejected",
    "executing",
    "delivered",
    "accepted",
    "exception",
    "invoiced",
    "overdue",
    "paid",
    "closed",
    "archived",
    "cancelled",
];

/// Names of every event, as the audit shows them (`type`) and rules name them (`on`).
pub const EVENT_NAMES: &[&str] = &[
    "received",
    "amended",
    "screening_started",
    "screening_passed",
    "screening_flagged",
    "screening_rejected",
    "review_started",
    "review_returned",
    "review_released",
    "review_rejected",
    "approved",
    "approval_declined",
    "approval_given",
    "info_requested",
    "approvals_voided",
    "approval_reminder_due",
    "approval_escalated",
    "execution_started",
    "task_assigned",
    "task_completed",
    "delivery_recorded",
    "acceptance_confirmed",
    "exception_opened",
    "exception_resolved",
    "exception_escalated",
    "invoice_issued",
    "payment_received",
    "payment_overdue",
    "dunning_due",
    "closed",
    "archived",
    "cancelled",
    "survey_answered",
    "after_sales_ticket_requested",
    "effect_succeeded",
    "effect_dead_lettered",
    "effect_replayed",
];

fn yes() -> bool {
    true
}

/// Whether a rule's `on` fires for a step that entered `entered` (when the state
/// changed) and recorded `event`. A name that is both a state and an event (`approved`,
/// `closed`…) means the state: the `approved` event of a middle approval level does
/// not make the order approved.
pub fn triggers(on: &str, entered: Option<&str>, event: &OrderEvent) -> bool {
    if STATE_NAMES.contains(&on) { entered == Some(on) } else { event.name() == on }
}

impl OrderState {
    pub fn name(&self) -> &'static str {
        use OrderState as S;
        match self {
            S::Received => "received",
            S::Screening => "screening",
            S::Flagged => "flagged",
            S::ManualReview => "manual_review",
            S::AwaitingApproval { .. } => "awaiting_approval",
            S::Approved => "approved",
            S::Rejected => "rejected",
            S::Executing => "executing",
            S::Delivered => "delivered",
            S::Accepted => "accepted",
            S::Exception { .. } => "exception",
            S::Invoiced => "invoiced",
            S::Overdue => "overdue",
            S::Paid => "paid",
            S::Closed => "closed",
            S::Archived => "archived",
            S::Cancelled => "cancelled",
        }
    }

    /// States in which the source system may still change the order's data.
    pub fn accepts_amendments(&self) -> bool {
        use OrderState as S;
        matches!(self, S::Received | S::Screening | S::Flagged | S::ManualReview | S::AwaitingApproval { .. })
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, OrderState::Rejected | OrderState::Archived | OrderState::Cancelled)
    }

    /// The only place a state changes.
    ///
    /// # Errors
    /// `IllegalTransition` naming the state and the event when the pair is not listed.
    pub fn on(&self, ev: &OrderEvent) -> Result<OrderState, IllegalTransition> {
        use OrderEvent as E;
        use OrderState as S;
        Ok(match (self, ev) {
            // Bookkeeping events are legal everywhere and change nothing.
            (s, E::EffectSucceeded { .. } | E::EffectDeadLettered { .. } | E::EffectReplayed { .. }) => s.clone(),

            (S::Received, E::ScreeningStarted { .. }) => S::Screening,
            (S::Screening, E::ScreeningPassed { chain, .. }) => awaiting(chain.len()),
            (S::Screening, E::ScreeningFlagged { .. }) => S::Flagged,
            (S::Screening, E::ScreeningRejected { .. }) => S::Rejected,
            (s, E::Amended { material: false, .. }) if s.accepts_amendments() => s.clone(),
            (s, E::Amended { .. }) if s.accepts_amendments() => S::Received,
            (S::Received, E::ApprovalsVoided { .. }) => S::Received,

            (S::Flagged, E::ReviewStarted { .. }) => S::ManualReview,
            (S::ManualReview, E::ReviewReturned { .. }) => S::Flagged,
            (S::Flagged | S::ManualReview, E::ReviewReleased { chain, .. }) => awaiting(chain.len()),
            (S::Flagged | S::ManualReview, E::ReviewRejected { .. }) => S::Rejected,

            (S::AwaitingApproval { level, of }, E::Approved { level: l, .. }) if l == level && level < of => {
                S::AwaitingApproval { level: level + 1, of: *of }
            }
            (S::AwaitingApproval { level, .. }, E::Approved { level: l, .. }) if l == level => S::Approved,
            (S::AwaitingApproval { level, .. }, E::ApprovalDeclined { level: l, .. }) if l == level => S::Rejected,
            (
                S::AwaitingApproval { level, .. },
                E::ApprovalGiven { level: l, .. }
                | E::InfoRequested { level: l, .. }
                | E::ApprovalReminderDue { level: l }
                | E::ApprovalEscalated { level: l, .. },
            ) if l == level => self.clone(),

            (S::Approved, E::ExecutionStarted) => S::Executing,
            (S::Executing, E::TaskAssigned { .. }) => S::Executing,
            (S::Executing | S::Exception { during: Stage::Executing }, E::TaskCompleted { .. }) => self.clone(),
            (S::Executing, E::DeliveryRecorded { .. }) => S::Delivered,
            (S::Delivered, E::AcceptanceConfirmed { .. }) => S::Accepted,
            (S::Executing, E::ExceptionOpened { .. }) => S::Exception { during: Stage::Executing },
            (S::Delivered, E::ExceptionOpened { .. }) => S::Exception { during: Stage::Delivered },
            (S::Invoiced | S::Overdue, E::ExceptionOpened { .. }) => S::Exception { during: Stage::Invoiced },
            (S::Paid, E::ExceptionOpened { .. }) => S::Exception { during: Stage::Paid },
            (S::Exception { .. }, E::ExceptionEscalated { .. }) => self.clone(),
            // Cancelling is possible before invoicing only (after it, a credit note is
            // the finance system's business).
            (
                S::Exception { during: Stage::Executing | Stage::Delivered },
                E::ExceptionResolved { cancel: true, .. },
            ) => S::Cancelled,
            (S::Exception { during }, E::ExceptionResolved { cancel: false, .. }) => match during {
                Stage::Executing => S::Executing,
                Stage::Delivered => S::Delivered,
                Stage::Invoiced => S::Invoiced,
                Stage::Paid => S::Paid,
            },
            // A payment during a dispute is recorded; settling it leaves the dispute open.
            (S::Exception { during: Stage::Invoiced }, E::PaymentReceived { settled, .. }) => {
                if *settled {
                    S::Exception { during: Stage::Paid }
                } else {
                    self.clone()
                }
            }
            (S::Accepted, E::InvoiceIssued { .. }) => S::Invoiced,
            (S::Invoiced | S::Overdue, E::PaymentReceived { settled: true, .. }) => S::Paid,
            (S::Invoiced, E::PaymentReceived { settled: false, .. }) => S::Invoiced,
            (S::Overdue, E::PaymentReceived { settled: false, .. }) => S::Overdue,
            (S::Invoiced, E::PaymentOverdue) => S::Overdue,
            (S::Overdue, E::DunningDue { .. }) => S::Overdue,
            (S::Paid, E::Closed) => S::Closed,
            (S::Closed, E::Archived) => S::Archived,
            (S::Closed | S::Archived, E::SurveyAnswered { .. } | E::AfterSalesTicketRequested { .. }) => self.clone(),
            (S::Rejected | S::Cancelled, E::Archived) => S::Archived,

            (s, E::Cancelled { .. }) if !s.is_terminal() && !matches!(s, S::Paid | S::Closed) => S::Cancelled,

            (s, e) => {
                return Err(IllegalTransition { state: s.name(), event: e.name() });
            }
        })
    }
}

fn awaiting(levels: usize) -> OrderState {
    if levels == 0 {
        OrderState::Approved
    } else {
        OrderState::AwaitingApproval { level: 1, of: u8::try_from(levels).unwrap_or(u8::MAX) }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("event `{event}` is not allowed in state `{state}`")]
pub struct IllegalTransition {
    pub state: &'static str,
    pub event: &'static str,
}

/// Something that happened to an order. Past tense; each is one audit entry.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OrderEvent {
    /// First delivery of an external record.
    Received {
        connector: String,
        external_id: String,
        version: u64,
    },
    /// A newer version of the external record replaced the order's data. A material
    /// change (amount, product, customer, term, owner) screens the order again;
    /// another (contact details, notes) keeps its state and approvals.
    Amended {
        version: u64,
        changed: Vec<String>,
        #[serde(default = "yes")]
        material: bool,
    },
    /// The level waited past the reminder point of its SLA; its approvers are reminded.
    ApprovalReminderDue {
        level: u8,
    },
    /// The level waited its whole SLA: `to_role` may now approve it too.
    ApprovalEscalated {
        level: u8,
        from_role: String,
        to_role: String,
    },
    /// A material change voided the approvals already given; the chain starts again.
    ApprovalsVoided {
        approvals: u32,
        reason: String,
    },
    ScreeningStarted {
        rules_version: String,
    },
    /// No rule fired; `chain` is the approval route the matrix row `row` chose,
    /// from `inputs` (the values the rules looked at).
    ScreeningPassed {
        rules_version: String,
        chain: Vec<Level>,
        reason: String,
        #[serde(default)]
        row: String,
        /// Set when the route is an automatic approval on this role's behalf.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auto_on_behalf_of: Option<String>,
        #[serde(default, skip_serializing_if = "Inputs::is_empty")]
        inputs: Inputs,
    },
    ScreeningFlagged {
        rules_version: String,
        fired: Vec<RuleHit>,
        #[serde(default, skip_serializing_if = "Inputs::is_empty")]
        inputs: Inputs,
    },
    ScreeningRejected {
        rules_version: String,
        fired: Vec<RuleHit>,
        #[serde(default, skip_serializing_if = "Inputs::is_empty")]
        inputs: Inputs,
    },
    ReviewStarted {
        comment: String,
    },
    ReviewReturned {
        comment: String,
    },
    ReviewReleased {
        comment: String,
        chain: Vec<Level>,
    },
    ReviewRejected {
        comment: String,
    },
    /// `on_behalf_of` is set for automatic approvals (recorded as the role they stand in for).
    Approved {
        level: u8,
        role: String,
        comment: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on_behalf_of: Option<String>,
    },
    ApprovalDeclined {
        level: u8,
        role: String,
        comment: String,
    },
    /// One approval of an `all` level that still needs others.
    ApprovalGiven {
        level: u8,
        role: String,
        comment: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on_behalf_of: Option<String>,
    },
    /// An approver asked the sales owner for more information; the level stays open.
    InfoRequested {
        level: u8,
        role: String,
        question: String,
    },
    ExecutionStarted,
    /// A task of `[[tasks]]` for this product was handed to its department (and
    /// pushed to its system, when it has one).
    TaskAssigned {
        task: String,
        name: String,
        department: String,
    },
    /// The system or the person doing a task reported it done.
    TaskCompleted {
        task: String,
        #[serde(default)]
        note: String,
    },
    DeliveryRecorded {
        note: String,
    },
    AcceptanceConfirmed {
        note: String,
    },
    ExceptionOpened {
        reason: String,
    },
    ExceptionResolved {
        resolution: String,
        /// Cancel the order instead of resuming it (before invoicing only).
        #[serde(default)]
        cancel: bool,
    },
    /// An exception passed its deadline unresolved and went to `to_role`.
    ExceptionEscalated {
        to_role: String,
    },
    InvoiceIssued {
        number: String,
        net: Money,
        tax: Money,
        total: Money,
        /// Payable by the end of this day (site time zone).
        due: chrono::NaiveDate,
    },
    PaymentReceived {
        amount: Money,
        settled: bool,
        /// The payment's id in the system that reported it.
        #[serde(default)]
        payment_id: String,
        /// What remains to be paid after it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outstanding: Option<Money>,
        /// Paid beyond the invoice (an exception is opened to refund it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        excess: Option<Money>,
    },
    PaymentOverdue,
    /// A dunning step's day came (`[[dunning]]` in rules.toml).
    DunningDue {
        step: String,
        days_overdue: u32,
    },
    Closed,
    Archived,
    Cancelled {
        reason: String,
    },
    /// The customer answered the satisfaction survey (once; from the signed link).
    SurveyAnswered {
        score: u8,
        comment: String,
        complaint: bool,
    },
    /// A low score or a complaint: an after-sales ticket is to be opened.
    AfterSalesTicketRequested {
        score: u8,
        comment: String,
        reason: String,
    },
    EffectSucceeded {
        effect_id: String,
        effect: String,
        attempts: u32,
        receipt: String,
        /// The receiver's id for what it created (ticket, invoice…), when it gave one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    EffectDeadLettered {
        effect_id: String,
        effect: String,
        attempts: u32,
        error: String,
    },
    EffectReplayed {
        effect_id: String,
        effect: String,
    },
}

impl OrderEvent {
    /// The event as mail to someone outside the directory (an unknown sales owner,
    /// the customer) may show it: without screening results (the rules that fired,
    /// watch-list hits among them, and the inputs they read) and without reviewers'
    /// comments. Telling a customer or an outsider why an order was held is
    /// tipping-off.
    pub fn without_screening_details(&self) -> OrderEvent {
        use OrderEvent as E;
        let mut e = self.clone();
        match &mut e {
            E::ScreeningFlagged { fired, inputs, .. } | E::ScreeningRejected { fired, inputs, .. } => {
                fired.clear();
                inputs.clear();
            }
            E::ScreeningPassed { inputs, .. } => inputs.clear(),
            E::ReviewStarted { comment }
            | E::ReviewReturned { comment }
            | E::ReviewReleased { comment, .. }
            | E::ReviewRejected { comment } => comment.clear(),
            _ => {}
        }
        e
    }

    pub fn name(&self) -> &'static str {
        use OrderEvent as E;
        match self {
            E::Received { .. } => "received",
            E::Amended { .. } => "amended",
            E::ScreeningStarted { .. } => "screening_started",
            E::ScreeningPassed { .. } => "screening_passed",
            E::ScreeningFlagged { .. } => "screening_flagged",
            E::ScreeningRejected { .. } => "screening_rejected",
            E::ReviewStarted { .. } => "review_started",
            E::ReviewReturned { .. } => "review_returned",
            E::ReviewReleased { .. } => "review_released",
            E::ReviewRejected { .. } => "review_rejected",
            E::Approved { .. } => "approved",
            E::ApprovalDeclined { .. } => "approval_declined",
            E::ApprovalGiven { .. } => "approval_given",
            E::InfoRequested { .. } => "info_requested",
            E::ApprovalsVoided { .. } => "approvals_voided",
            E::ApprovalReminderDue { .. } => "approval_reminder_due",
            E::ApprovalEscalated { .. } => "approval_escalated",
            E::ExecutionStarted => "execution_started",
            E::TaskAssigned { .. } => "task_assigned",
            E::TaskCompleted { .. } => "task_completed",
            E::DeliveryRecorded { .. } => "delivery_recorded",
            E::AcceptanceConfirmed { .. } => "acceptance_confirmed",
            E::ExceptionOpened { .. } => "exception_opened",
            E::ExceptionResolved { .. } => "exception_resolved",
            E::ExceptionEscalated { .. } => "exception_escalated",
            E::InvoiceIssued { .. } => "invoice_issued",
            E::PaymentReceived { .. } => "payment_received",
            E::PaymentOverdue => "payment_overdue",
            E::DunningDue { .. } => "dunning_due",
            E::Closed => "closed",
            E::Archived => "archived",
            E::Cancelled { .. } => "cancelled",
            E::SurveyAnswered { .. } => "survey_answered",
            E::AfterSalesTicketRequested { .. } => "after_sales_ticket_requested",
            E::EffectSucceeded { .. } => "effect_succeeded",
            E::EffectDeadLettered { .. } => "effect_dead_lettered",
            E::EffectReplayed { .. } => "effect_replayed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderEvent as E;
    use OrderState as S;
    use proptest::prelude::*;

    fn money() -> Money {
        Money::parse("10.00", "CNY").unwrap()
    }

    fn invoice() -> OrderEvent {
        OrderEvent::InvoiceIssued {
            number: "INV-1".into(),
            net: money(),
            tax: money(),
            total: money(),
            due: "2026-12-27".parse().unwrap(),
        }
    }

    fn paid(settled: bool) -> OrderEvent {
        OrderEvent::PaymentReceived {
            amount: money(),
            settled,
            payment_id: "P1".into(),
            outstanding: None,
            excess: None,
        }
    }

    fn chain(n: usize) -> Vec<Level> {
        (0..n).map(|i| Level::Role(format!("role{i}"))).collect()
    }

    fn approved(level: u8) -> OrderEvent {
        E::Approved { level, role: "r".into(), comment: String::new(), on_behalf_of: None }
    }

    #[test]
    fn every_legal_pair() {
        let rv = || "v1".to_owned();
        let table: Vec<(OrderState, OrderEvent, OrderState)> = vec![
            (S::Received, E::ScreeningStarted { rules_version: rv() }, S::Screening),
            (
                S::Screening,
                E::ScreeningPassed {
                    rules_version: rv(),
                    chain: chain(2),
                    reason: String::new(),
                    row: "R".into(),
                    auto_on_behalf_of: None,
                    inputs: Inputs::new(),
                },
                S::AwaitingApproval { level: 1, of: 2 },
            ),
            (
                S::Screening,
                E::ScreeningPassed {
                    rules_version: rv(),
                    chain: vec![],
                    reason: String::new(),
                    row: "R".into(),
                    auto_on_behalf_of: None,
                    inputs: Inputs::new(),
                },
                S::Approved,
            ),
            (
                S::Screening,
                E::ScreeningFlagged { rules_version: rv(), fired: vec![], inputs: Inputs::new() },
                S::Flagged,
            ),
            (
                S::Screening,
                E::ScreeningRejected { rules_version: rv(), fired: vec![], inputs: Inputs::new() },
                S::Rejected,
            ),
            (S::Flagged, E::Amended { version: 2, changed: vec![], material: true }, S::Received),
            (
                S::AwaitingApproval { level: 2, of: 3 },
                E::Amended { version: 2, changed: vec![], material: true },
                S::Received,
            ),
            (
                S::AwaitingApproval { level: 2, of: 3 },
                E::Amended { version: 3, changed: vec!["customer.phone".into()], material: false },
                S::AwaitingApproval { level: 2, of: 3 },
            ),
            (S::Received, E::ApprovalsVoided { approvals: 1, reason: "amount changed".into() }, S::Received),
            (
                S::AwaitingApproval { level: 1, of: 2 },
                E::ApprovalReminderDue { level: 1 },
                S::AwaitingApproval { level: 1, of: 2 },
            ),
            (
                S::AwaitingApproval { level: 1, of: 2 },
                E::ApprovalEscalated { level: 1, from_role: "a".into(), to_role: "b".into() },
                S::AwaitingApproval { level: 1, of: 2 },
            ),
            (
                S::AwaitingApproval { level: 2, of: 3 },
                E::ApprovalGiven { level: 2, role: "r".into(), comment: String::new(), on_behalf_of: None },
                S::AwaitingApproval { level: 2, of: 3 },
            ),
            (
                S::AwaitingApproval { level: 1, of: 1 },
                E::InfoRequested { level: 1, role: "r".into(), question: "?".into() },
                S::AwaitingApproval { level: 1, of: 1 },
            ),
            (S::Flagged, E::ReviewStarted { comment: String::new() }, S::ManualReview),
            (S::ManualReview, E::ReviewReturned { comment: String::new() }, S::Flagged),
            (
                S::ManualReview,
                E::ReviewReleased { comment: String::new(), chain: chain(1) },
                S::AwaitingApproval { level: 1, of: 1 },
            ),
            (S::Flagged, E::ReviewRejected { comment: String::new() }, S::Rejected),
            (S::AwaitingApproval { level: 1, of: 2 }, approved(1), S::AwaitingApproval { level: 2, of: 2 }),
            (S::AwaitingApproval { level: 2, of: 2 }, approved(2), S::Approved),
            (
                S::AwaitingApproval { level: 1, of: 2 },
                E::ApprovalDeclined { level: 1, role: "r".into(), comment: String::new() },
                S::Rejected,
            ),
            (S::Approved, E::ExecutionStarted, S::Executing),
            (S::Executing, E::DeliveryRecorded { note: String::new() }, S::Delivered),
            (S::Delivered, E::AcceptanceConfirmed { note: String::new() }, S::Accepted),
            (S::Delivered, E::ExceptionOpened { reason: String::new() }, S::Exception { during: Stage::Delivered }),
            (
                S::Exception { during: Stage::Delivered },
                E::ExceptionResolved { resolution: String::new(), cancel: false },
                S::Delivered,
            ),
            (
                S::Exception { during: Stage::Executing },
                E::ExceptionResolved { resolution: String::new(), cancel: true },
                S::Cancelled,
            ),
            (S::Executing, E::TaskCompleted { task: "t".into(), note: String::new() }, S::Executing),
            (S::Accepted, invoice(), S::Invoiced),
            (S::Invoiced, paid(false), S::Invoiced),
            (S::Invoiced, E::PaymentOverdue, S::Overdue),
            (S::Overdue, E::DunningDue { step: "D1".into(), days_overdue: 3 }, S::Overdue),
            (S::Overdue, paid(true), S::Paid),
            (S::Exception { during: Stage::Invoiced }, paid(true), S::Exception { during: Stage::Paid }),
            (S::Paid, E::ExceptionOpened { reason: String::new() }, S::Exception { during: Stage::Paid }),
            (
                S::Exception { during: Stage::Paid },
                E::ExceptionResolved { resolution: String::new(), cancel: false },
                S::Paid,
            ),
            (S::Paid, E::Closed, S::Closed),
            (S::Closed, E::Archived, S::Archived),
            (S::Closed, E::SurveyAnswered { score: 5, comment: String::new(), complaint: false }, S::Closed),
            (S::Executing, E::Cancelled { reason: String::new() }, S::Cancelled),
            (
                S::Paid,
                E::EffectSucceeded {
                    effect_id: "e".into(),
                    effect: "x".into(),
                    attempts: 1,
                    receipt: String::new(),
                    reference: None,
                },
                S::Paid,
            ),
        ];
        for (from, ev, to) in table {
            assert_eq!(from.on(&ev), Ok(to.clone()), "{} + {}", from.name(), ev.name());
        }
    }

    #[test]
    fn illegal_pairs_name_state_and_event() {
        let err = S::Received.on(&E::Closed).unwrap_err();
        assert_eq!(err.to_string(), "event `closed` is not allowed in state `received`");
        // An approval for the wrong level is refused, not applied to the current one.
        assert!(S::AwaitingApproval { level: 2, of: 3 }.on(&approved(1)).is_err());
        assert!(S::Paid.on(&E::Cancelled { reason: String::new() }).is_err());
        let cancel = E::ExceptionResolved { resolution: String::new(), cancel: true };
        assert!(S::Exception { during: Stage::Invoiced }.on(&cancel).is_err(), "no cancelling once invoiced");
        assert!(S::Approved.on(&E::Amended { version: 9, changed: vec![], material: true }).is_err());
    }

    fn any_state() -> impl Strategy<Value = OrderState> {
        prop_oneof![
            Just(S::Received),
            Just(S::Screening),
            Just(S::Flagged),
            Just(S::ManualReview),
            (1u8..5, 1u8..5).prop_map(|(l, o)| S::AwaitingApproval { level: l.min(o), of: o }),
            Just(S::Approved),
            Just(S::Rejected),
            Just(S::Executing),
            Just(S::Delivered),
            Just(S::Accepted),
            Just(S::Exception { during: Stage::Invoiced }),
            Just(S::Exception { during: Stage::Paid }),
            Just(S::Exception { during: Stage::Executing }),
            Just(S::Invoiced),
            Just(S::Overdue),
            Just(S::Paid),
            Just(S::Closed),
            Just(S::Archived),
            Just(S::Cancelled),
        ]
    }

    fn any_event() -> impl Strategy<Value = OrderEvent> {
        prop_oneof![
            Just(E::ScreeningStarted { rules_version: "v".into() }),
            (0usize..4).prop_map(|n| E::ScreeningPassed {
                rules_version: "v".into(),
                chain: chain(n),
                reason: String::new(),
                row: "R".into(),
                auto_on_behalf_of: None,
                inputs: Inputs::new(),
            }),
            Just(E::ScreeningFlagged { rules_version: "v".into(), fired: vec![], inputs: Inputs::new() }),
            Just(E::ScreeningRejected { rules_version: "v".into(), fired: vec![], inputs: Inputs::new() }),
            any::<bool>().prop_map(|material| E::Amended { version: 2, changed: vec![], material }),
            (0u8..4).prop_map(|level| E::ApprovalGiven {
                level,
                role: "r".into(),
                comment: String::new(),
                on_behalf_of: None
            }),
            (0u8..4).prop_map(|level| E::InfoRequested { level, role: "r".into(), question: "?".into() }),
            Just(E::ApprovalsVoided { approvals: 2, reason: String::new() }),
            (0u8..4).prop_map(|level| E::ApprovalReminderDue { level }),
            (0u8..4).prop_map(|level| E::ApprovalEscalated { level, from_role: "a".into(), to_role: "b".into() }),
            Just(E::ReviewStarted { comment: String::new() }),
            Just(E::ReviewReturned { comment: String::new() }),
            (0usize..3).prop_map(|n| E::ReviewReleased { comment: String::new(), chain: chain(n) }),
            Just(E::ReviewRejected { comment: String::new() }),
            (0u8..6).prop_map(approved),
            (0u8..6).prop_map(|l| E::ApprovalDeclined { level: l, role: "r".into(), comment: String::new() }),
            Just(E::ExecutionStarted),
            Just(E::DeliveryRecorded { note: String::new() }),
            Just(E::AcceptanceConfirmed { note: String::new() }),
            Just(E::ExceptionOpened { reason: String::new() }),
            any::<bool>().prop_map(|cancel| E::ExceptionResolved { resolution: String::new(), cancel }),
            Just(E::ExceptionEscalated { to_role: "branch_manager".into() }),
            Just(invoice()),
            any::<bool>().prop_map(paid),
            Just(E::TaskAssigned { task: "t".into(), name: "合同".into(), department: "ops".into() }),
            Just(E::TaskCompleted { task: "t".into(), note: String::new() }),
            Just(E::DunningDue { step: "D1".into(), days_overdue: 3 }),
            Just(E::PaymentOverdue),
            Just(E::Closed),
            Just(E::Archived),
            Just(E::Cancelled { reason: String::new() }),
            (1u8..=5).prop_map(|score| E::SurveyAnswered { score, comment: "慢".into(), complaint: score < 3 }),
        ]
    }

    proptest! {
        #[test]
        fn random_sequences_never_panic_and_stay_in_listed_states(start in any_state(), evs in proptest::collection::vec(any_event(), 0..40)) {
            let mut s = start;
            for e in &evs {
                if let Ok(next) = s.on(e) {
                    prop_assert!(STATE_NAMES.contains(&next.name()));
                    if let S::AwaitingApproval { level, of } = next { prop_assert!(level >= 1 && level <= of); }
                    s = next;
                }
            }
        }

        #[test]
        fn events_round_trip_through_json(e in any_event()) {
            prop_assert!(EVENT_NAMES.contains(&e.name()), "{} missing from EVENT_NAMES", e.name());
            let json = serde_json::to_string(&e).unwrap();
            prop_assert_eq!(serde_json::from_str::<OrderEvent>(&json).unwrap(), e);
        }
    }
}
