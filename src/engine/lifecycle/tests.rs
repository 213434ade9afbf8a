//! Tests of the lifecycle: every legal (state, event) pair, illegal pairs, and properties over any state and event.

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
    OrderEvent::PaymentReceived { amount: money(), settled, payment_id: "P1".into(), outstanding: None, excess: None }
}

fn chain(n: usize) -> Vec<Level> {
    (0..n).map(|i| Level::Role(format!("role{i}"))).collect()
}

fn approved(level: u8) -> OrderEvent {
    E::Approved { level, role: "r".into(), comment: String::new(), on_behalf_of: None }
}

type Pair = (OrderState, OrderEvent, OrderState);

/// Legal pairs from intake to the end of approval.
fn screening_and_approval_pairs() -> Vec<Pair> {
    let rv = || "v1".to_owned();
    vec![
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
        (S::Screening, E::ScreeningFlagged { rules_version: rv(), fired: vec![], inputs: Inputs::new() }, S::Flagged),
        (S::Screening, E::ScreeningRejected { rules_version: rv(), fired: vec![], inputs: Inputs::new() }, S::Rejected),
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
    ]
}

/// Legal pairs from execution to the archive.
fn fulfilment_pairs() -> Vec<Pair> {
    vec![
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
    ]
}

#[test]
fn every_legal_pair() {
    for (from, ev, to) in screening_and_approval_pairs().into_iter().chain(fulfilment_pairs()) {
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
        (1u64..100).prop_map(|feedback| E::FeedbackReceived {
            feedback,
            category: "complaint".into(),
            channel: "customer".into()
        }),
    ]
}

proptest! {
    #[test]
    fn feedback_is_legal_in_every_state_and_changes_none(s in any_state(), n in 1u64..1000) {
        let ev = E::FeedbackReceived { feedback: n, category: "problem".into(), channel: "mail".into() };
        prop_assert_eq!(s.on(&ev), Ok(s.clone()));
    }

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
