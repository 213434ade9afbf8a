//! The order lifecycle: states, events and the one function that moves between them.
//!
//! `OrderState::on` lists every legal (state, event) pair; anything else is an
//! `IllegalTransition` naming both. No I/O, no clock: see `decide` for the wrapper.

use serde::{Deserialize, Serialize};

use super::level::Level;
pub(crate) use super::screening::RuleHit;
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

/// The states in which an order is still on its way (every state but the ends:
/// closed, archived, rejected, cancelled): what monitoring watches for orders stuck.
pub const OPEN_STATES: &[&str] = &[
    "received",
    "screening",
    "flagged",
    "manual_review",
    "awaiting_approval",
    "approved",
    "executing",
    "delivered",
    "accepted",
    "exception",
    "invoiced",
    "overdue",
    "paid",
];

/// Names of every event, as the audit shows them (`type`) and rules name them (`on`).
pub(crate) const EVENT_NAMES: &[&str] = &[
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
    "feedback_received",
];

fn yes() -> bool {
    true
}

/// Whether a rule's `on` fires for a step that entered `entered` (when the state
/// changed) and recorded `event`. A name that is both a state and an event (`approved`,
/// `closed`…) means the state: the `approved` event of a middle approval level does
/// not make the order approved.
pub(crate) fn triggers(on: &str, entered: Option<&str>, event: &OrderEvent) -> bool {
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
    pub(crate) fn accepts_amendments(&self) -> bool {
        use OrderState as S;
        matches!(self, S::Received | S::Screening | S::Flagged | S::ManualReview | S::AwaitingApproval { .. })
    }

    pub(crate) fn is_terminal(&self) -> bool {
        matches!(self, OrderState::Rejected | OrderState::Archived | OrderState::Cancelled)
    }

    /// The only place a state changes.
    ///
    /// # Errors
    /// `IllegalTransition` naming the state and the event when the pair is not listed.
    pub(crate) fn on(&self, ev: &OrderEvent) -> Result<OrderState, IllegalTransition> {
        use OrderEvent as E;
        use OrderState as S;
        Ok(match (self, ev) {
            // Bookkeeping events are legal everywhere and change nothing.
            (
                s,
                E::EffectSucceeded { .. }
                | E::EffectDeadLettered { .. }
                | E::EffectReplayed { .. }
                | E::FeedbackReceived { .. }
                | E::PersonalDataErased { .. },
            ) => s.clone(),

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
    pub(crate) state: &'static str,
    pub(crate) event: &'static str,
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
    /// Feedback on the process named this order (`orders::feedback`): its number and
    /// category, and through which channel it came (`mail`, `console`, `customer`).
    /// The text stays with the report, not in the trail.
    FeedbackReceived {
        feedback: u64,
        category: String,
        channel: String,
    },
    /// The order's data key was deleted (`crate::vault`): its personal data reads
    /// `erased` from now on. `reason`: `retention`, or an erasure request's.
    PersonalDataErased {
        reason: String,
    },
}

impl OrderEvent {
    /// The event as mail to someone outside the directory (an unknown sales owner,
    /// the customer) may show it: without screening results (the rules that fired,
    /// watch-list hits among them, and the inputs they read) and without reviewers'
    /// comments. Telling a customer or an outsider why an order was held is
    /// tipping-off.
    pub(crate) fn without_screening_details(&self) -> OrderEvent {
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
            E::FeedbackReceived { .. } => "feedback_received",
            E::PersonalDataErased { .. } => "personal_data_erased",
        }
    }
}

#[cfg(test)]
mod tests;
