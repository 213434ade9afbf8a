//! Payments as reported by a bank, a finance system or an operator, and what became
//! of each: which order it names, the event it is on that order, and the outcome
//! the reporter is told (matched and settled, or queued as unmatched with a reason).
//! The amounts themselves are matched in `fulfilment::match_payment`, through
//! `decide`. Pure: the caller looks the order up.

use serde::{Deserialize, Serialize};

use super::decide::Decision;
use super::lifecycle::OrderEvent;
use crate::domain::{Money, OrderId};

/// A payment reported by a bank, a finance system or an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentReport {
    /// Who reported it (a connector id, or `api`): payment ids are unique per source.
    pub source: String,
    pub payment_id: String,
    pub amount: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<OrderId>,
    /// Free text from the payer (kept for the operator).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reference: String,
}

/// What became of a reported payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentOutcome {
    pub matched: bool,
    pub(crate) order_id: Option<OrderId>,
    /// The order's state after it (when matched).
    pub(crate) state: Option<String>,
    pub settled: bool,
    pub(crate) outstanding: Option<Money>,
    /// Why it is in the unmatched queue.
    pub(crate) reason: Option<String>,
    /// The same payment was reported before; this is what happened then.
    #[serde(default)]
    pub duplicate: bool,
}

/// A payment no order took, waiting for an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmatchedPayment {
    pub payment: PaymentReport,
    pub(crate) reason: Option<String>,
    pub(crate) at: chrono::DateTime<chrono::Utc>,
}

/// The order a payment names: its order id, else the order its invoice number was
/// issued on (`by_invoice`, looked up by the caller).
///
/// # Errors
/// The reason it cannot be matched, for the unmatched queue.
pub(crate) fn target(p: &PaymentReport, by_invoice: Option<OrderId>) -> Result<OrderId, String> {
    p.order_id.or(by_invoice).ok_or_else(|| match &p.invoice_number {
        Some(n) => format!("no order has invoice `{n}`"),
        None => "the payment names neither an order nor an invoice".into(),
    })
}

/// The event a reported payment is on its order (the engine completes it).
pub(crate) fn event(p: &PaymentReport) -> OrderEvent {
    OrderEvent::PaymentReceived {
        amount: p.amount.clone(),
        settled: false,
        payment_id: p.payment_id.clone(),
        outstanding: None,
        excess: None,
    }
}

/// The outcome of a payment the engine took on order `id`, with `state` the order's
/// state after it.
pub(crate) fn matched(id: OrderId, state: &str, decision: &Decision) -> PaymentOutcome {
    let (settled, outstanding) = decision
        .audit
        .iter()
        .find_map(|a| match &a.event {
            OrderEvent::PaymentReceived { settled, outstanding, .. } => Some((*settled, outstanding.clone())),
            _ => None,
        })
        .unwrap_or((false, None));
    PaymentOutcome {
        matched: true,
        order_id: Some(id),
        state: Some(state.to_owned()),
        settled,
        outstanding,
        reason: None,
        duplicate: false,
    }
}

/// The outcome of a payment that goes to the unmatched queue.
pub(crate) fn unmatched(order_id: Option<OrderId>, reason: String) -> PaymentOutcome {
    PaymentOutcome {
        matched: false,
        order_id,
        state: None,
        settled: false,
        outstanding: None,
        reason: Some(reason),
        duplicate: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(order: Option<OrderId>, invoice: Option<&str>) -> PaymentReport {
        PaymentReport {
            source: "bank".into(),
            payment_id: "P1".into(),
            amount: Money::parse("10.00", "CNY").unwrap(),
            invoice_number: invoice.map(str::to_owned),
            order_id: order,
            reference: String::new(),
        }
    }

    #[test]
    fn a_payment_names_its_order_or_its_invoice_or_goes_unmatched() {
        let (a, b) = (OrderId::new_v7(), OrderId::new_v7());
        assert_eq!(target(&report(Some(a), Some("INV-1")), Some(b)), Ok(a), "the order id wins");
        assert_eq!(target(&report(None, Some("INV-1")), Some(b)), Ok(b));
        assert_eq!(target(&report(None, Some("INV-9")), None), Err("no order has invoice `INV-9`".into()));
        assert_eq!(target(&report(None, None), None), Err("the payment names neither an order nor an invoice".into()));
    }
}
