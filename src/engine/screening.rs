//! What screening concludes about an order: the rules that fired, how severe each is,
//! and the verdict. Plain data shared by the lifecycle (events carry it) and the rules
//! (which produce it).

use serde::{Deserialize, Serialize};

/// Outcome of one screening rule that fired.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RuleHit {
    pub(crate) rule_id: String,
    pub(crate) severity: Severity,
    pub(crate) message: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Severity {
    /// Manual review by an operator.
    Flag,
    /// The order is rejected outright.
    Reject,
}

impl Severity {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Severity::Flag => "flag",
            Severity::Reject => "reject",
        }
    }
}

/// What screening concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Screening {
    Passed,
    Flagged(Vec<RuleHit>),
    Rejected(Vec<RuleHit>),
}
