//! The policy table (`[policy]` in `config/directory.toml`): the actions a principal
//! may be allowed, and for each directory role the actions it grants. Plain data
//! below both the directory (which carries the table it was read with) and `access`
//! (which decides with it).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a principal may be allowed to do: one row name of the policy table each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Decide the approval level waiting (the level's role is checked on top).
    DecideApproval,
    /// Review flagged orders (start, return, release, reject).
    ReviewFlagged,
    /// Record tasks done and deliveries.
    RecordDelivery,
    /// Record a customer's acceptance of a delivery.
    TakeAcceptance,
    /// Open, resolve or cancel on an exception.
    HandleExceptions,
    /// Record payments and assign unmatched ones.
    AssignPayments,
    /// See the outbox and the dead letters, replay them.
    ReplayDeadLetters,
    /// See connectors and resume a paused one.
    ResumeConnectors,
    /// See orders with their personal data (customer, documents, receivables).
    SeePersonalData,
    /// KPIs, reports and the export.
    SeeReports,
    /// Everything about the daemon itself: audit verification, the quarantine,
    /// reconciliation, API clients and their tokens.
    Administer,
    /// Propose a rules change (a candidate with its impact report), read the
    /// change log.
    ProposeRules,
    /// Approve someone else's proposed rules change; activate an approved one, roll
    /// back (a person of the directory approves, never the proposer).
    ApproveRules,
}

/// Every action, in the order the policy table documents them.
pub const ACTIONS: [Action; 13] = [
    Action::DecideApproval,
    Action::ReviewFlagged,
    Action::RecordDelivery,
    Action::TakeAcceptance,
    Action::HandleExceptions,
    Action::AssignPayments,
    Action::ReplayDeadLetters,
    Action::ResumeConnectors,
    Action::SeePersonalData,
    Action::SeeReports,
    Action::Administer,
    Action::ProposeRules,
    Action::ApproveRules,
];

impl Action {
    /// Whether the action works on orders, and so is enough to read them (with the
    /// personal data masked unless `SeePersonalData` is granted too).
    pub(crate) fn works_on_orders(self) -> bool {
        match self {
            Action::SeePersonalData
            | Action::DecideApproval
            | Action::ReviewFlagged
            | Action::RecordDelivery
            | Action::TakeAcceptance
            | Action::HandleExceptions
            | Action::AssignPayments => true,
            Action::ReplayDeadLetters
            | Action::ResumeConnectors
            | Action::SeeReports
            | Action::Administer
            | Action::ProposeRules
            | Action::ApproveRules => false,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::DecideApproval => "decide_approval",
            Action::ReviewFlagged => "review_flagged",
            Action::RecordDelivery => "record_delivery",
            Action::TakeAcceptance => "take_acceptance",
            Action::HandleExceptions => "handle_exceptions",
            Action::AssignPayments => "assign_payments",
            Action::ReplayDeadLetters => "replay_dead_letters",
            Action::ResumeConnectors => "resume_connectors",
            Action::SeePersonalData => "see_personal_data",
            Action::SeeReports => "see_reports",
            Action::Administer => "administer",
            Action::ProposeRules => "propose_rules",
            Action::ApproveRules => "approve_rules",
        }
    }
}

impl std::str::FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ACTIONS
            .iter()
            .copied()
            .find(|a| a.name() == s)
            .ok_or_else(|| format!("unknown action `{s}` (one of: {})", ACTIONS.map(Action::name).join(", ")))
    }
}

/// The policy table: for each directory role, the actions it grants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    grants: BTreeMap<String, Vec<Action>>,
}

impl Policy {
    pub fn new(grants: BTreeMap<String, Vec<Action>>) -> Self {
        Policy { grants }
    }

    /// The actions `roles` grant together.
    pub fn actions_of<'a>(&'a self, roles: &'a [String]) -> impl Iterator<Item = Action> + 'a {
        roles.iter().filter_map(|r| self.grants.get(r)).flatten().copied()
    }
}
