//! A person's answer to a request (an approval, a delivery acceptance) turned into the
//! event it records, with the rules every door shares: a rejection or a question needs
//! a comment, a refused delivery needs its reason. The admin API and the pages both
//! call these and translate `AnswerError` into their own words. Pure: no I/O here.

use serde::Deserialize;

use super::OrderEvent;

/// Why an answer records nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AnswerError {
    /// A rejection or a question without a comment.
    #[error("a rejection or a question needs a comment")]
    CommentMissing,
    /// A refused delivery without its reason.
    #[error("a refusal needs its reason")]
    ReasonMissing,
}

/// What an approver decides on the level waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ApprovalDecision {
    Approve,
    Reject,
    RequestInfo,
}

impl ApprovalDecision {
    /// Whether the answer uses up its link: a question keeps it for the decision after.
    pub(crate) fn is_final(self) -> bool {
        !matches!(self, ApprovalDecision::RequestInfo)
    }
}

/// The event an approver's decision on `level` records; `comment` as the person wrote
/// it, already trimmed.
///
/// # Errors
/// `CommentMissing` when a rejection or a question has no comment.
pub(crate) fn approval_event(
    decision: ApprovalDecision,
    level: u8,
    comment: String,
) -> Result<OrderEvent, AnswerError> {
    let role = String::new();
    match decision {
        ApprovalDecision::Approve => Ok(OrderEvent::Approved { level, role, comment, on_behalf_of: None }),
        _ if comment.is_empty() => Err(AnswerError::CommentMissing),
        ApprovalDecision::Reject => Ok(OrderEvent::ApprovalDeclined { level, role, comment }),
        ApprovalDecision::RequestInfo => Ok(OrderEvent::InfoRequested { level, role, question: comment }),
    }
}

/// Whether the customer accepts a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AcceptanceDecision {
    Accept,
    Refuse,
}

/// The event an acceptance decision records; a refusal needs its reason and opens an
/// exception naming `by`.
///
/// # Errors
/// `ReasonMissing` when a refusal has no note.
pub(crate) fn acceptance_event(decision: AcceptanceDecision, note: &str, by: &str) -> Result<OrderEvent, AnswerError> {
    let note = note.trim().to_owned();
    match decision {
        AcceptanceDecision::Accept => Ok(OrderEvent::AcceptanceConfirmed { note }),
        AcceptanceDecision::Refuse if note.is_empty() => Err(AnswerError::ReasonMissing),
        AcceptanceDecision::Refuse => {
            Ok(OrderEvent::ExceptionOpened { reason: format!("acceptance refused by {by}: {note}") })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejection_or_a_question_needs_a_comment() {
        for d in [ApprovalDecision::Reject, ApprovalDecision::RequestInfo] {
            assert_eq!(approval_event(d, 1, String::new()), Err(AnswerError::CommentMissing));
            assert!(approval_event(d, 1, "why".into()).is_ok());
        }
        let approved = approval_event(ApprovalDecision::Approve, 2, String::new());
        assert!(matches!(approved, Ok(OrderEvent::Approved { level: 2, .. })));
    }

    #[test]
    fn a_refused_delivery_needs_its_reason() {
        assert_eq!(acceptance_event(AcceptanceDecision::Refuse, "  ", "x"), Err(AnswerError::ReasonMissing));
        assert!(matches!(
            acceptance_event(AcceptanceDecision::Refuse, " late ", "the customer"),
            Ok(OrderEvent::ExceptionOpened { reason }) if reason == "acceptance refused by the customer: late"
        ));
        assert!(matches!(
            acceptance_event(AcceptanceDecision::Accept, "", "x"),
            Ok(OrderEvent::AcceptanceConfirmed { .. })
        ));
    }
}
