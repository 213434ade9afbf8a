//! From approval to cash: the execution tasks, the open exception, the invoice, the
//! payments and the reminders sent, kept on the order (like the approval progress)
//! and advanced only by `decide`. Payment matching and the dunning schedule are pure
//! functions of this record and the rules.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::Money;
use crate::domain::money::MoneyError;

/// Where an order stands after approval.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fulfilment {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) tasks: Vec<Task>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) exception: Option<OpenException>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) invoice: Option<Invoice>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) payments: Vec<PaymentLine>,
    /// Dunning steps already sent (by step id), so each goes out once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) dunning: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Task {
    pub(crate) id: String,
    pub(crate) name: String,
    /// The role (in the directory) that carries it out.
    pub(crate) department: String,
    pub(crate) required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) done: Option<TaskDone>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TaskDone {
    pub(crate) at: DateTime<Utc>,
    pub(crate) by: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) note: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OpenException {
    pub(crate) reason: String,
    /// The role that must resolve it.
    pub(crate) owner: String,
    pub(crate) opened_at: DateTime<Utc>,
    pub(crate) deadline: DateTime<Utc>,
    /// The role it was escalated to at the deadline, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) escalated_to: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Invoice {
    /// The finance system's invoice number (what payments quote).
    pub(crate) number: String,
    pub(crate) net: Money,
    pub(crate) tax: Money,
    pub(crate) total: Money,
    pub(crate) issued_at: DateTime<Utc>,
    /// Payable by the end of this day (site time zone).
    pub(crate) due: NaiveDate,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PaymentLine {
    /// The payment's id in the system that reported it (deduplication).
    pub(crate) id: String,
    pub(crate) amount: Money,
    pub(crate) at: DateTime<Utc>,
}

impl Fulfilment {
    pub(crate) fn open_required_tasks(&self) -> Vec<&str> {
        self.tasks.iter().filter(|t| t.required && t.done.is_none()).map(|t| t.id.as_str()).collect()
    }

    /// Paid so far, in the invoice's currency.
    ///
    /// # Errors
    /// A payment in another currency (never stored: matching refuses it) or overflow.
    pub(crate) fn paid(&self) -> Result<Option<Money>, MoneyError> {
        let Some(inv) = &self.invoice else { return Ok(None) };
        let mut sum = Money::new(Decimal::ZERO, inv.total.currency())?;
        for p in &self.payments {
            sum = sum.checked_add(&p.amount)?;
        }
        Ok(Some(sum))
    }

    /// What is still owed on the invoice (zero when settled or overpaid).
    pub(crate) fn outstanding(&self) -> Option<Money> {
        let inv = self.invoice.as_ref()?;
        let paid = self.paid().ok()??;
        inv.total.left_after(&paid).ok()
    }

    pub(crate) fn has_payment(&self, id: &str) -> bool {
        self.payments.iter().any(|p| p.id == id)
    }
}

/// How an incoming payment relates to an invoice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Match {
    /// Settles the invoice exactly.
    Full,
    /// Leaves this much to pay.
    Partial { outstanding: Money },
    /// Pays this much more than was owed: recorded, and an exception is opened.
    Over { excess: Money },
    /// Cannot be applied to this invoice; it goes to the unmatched queue.
    Refused(String),
}

/// Matches one payment against an order's invoice.
pub(crate) fn match_payment(f: &Fulfilment, payment_id: &str, amount: &Money) -> Match {
    let Some(inv) = &f.invoice else {
        return Match::Refused("the order has no invoice yet".into());
    };
    if f.has_payment(payment_id) {
        return Match::Refused(format!("payment {payment_id} is already recorded on this order"));
    }
    if amount.currency() != inv.total.currency() {
        return Match::Refused(format!(
            "the payment is in {} but invoice {} is in {}",
            amount.currency(),
            inv.number,
            inv.total.currency()
        ));
    }
    if amount.amount() <= Decimal::ZERO {
        return Match::Refused("the payment amount is not positive".into());
    }
    // Recorded payments must always sum: one that would take the total paid past the
    // largest amount is not applied (it waits for an operator).
    if f.paid().ok().flatten().and_then(|p| p.checked_add(amount).ok()).is_none() {
        return Match::Refused(format!(
            "the payments on invoice {} would total more than the largest amount that can be computed",
            inv.number
        ));
    }
    let owed = f.outstanding().map_or(Decimal::ZERO, |m| m.amount());
    if owed == Decimal::ZERO {
        return Match::Refused(format!("invoice {} is already settled", inv.number));
    }
    // Both are non-negative amounts of at most MAX_SCALE places: their difference is too.
    let cur = inv.total.currency();
    let money = |a: Decimal, b: Decimal| match a.checked_sub(b).map(|d| Money::new(d, cur)) {
        Some(Ok(m)) => Ok(m),
        Some(Err(e)) => Err(e.to_string()),
        None => Err(MoneyError::Overflow.to_string()),
    };
    let matched = match amount.amount().cmp(&owed) {
        std::cmp::Ordering::Equal => return Match::Full,
        std::cmp::Ordering::Less => money(owed, amount.amount()).map(|outstanding| Match::Partial { outstanding }),
        std::cmp::Ordering::Greater => money(amount.amount(), owed).map(|excess| Match::Over { excess }),
    };
    matched.unwrap_or_else(Match::Refused)
}

/// Tax on a net amount at `rate`, rounded half away from zero to the currency's minor
/// unit (四舍五入 to the fen for CNY).
///
/// # Errors
/// Overflow.
pub(crate) fn tax_on(net: &Money, rate: Decimal) -> Result<Money, MoneyError> {
    let exp = crate::domain::money::minor_unit_exponent(net.currency());
    let tax = net
        .amount()
        .checked_mul(rate)
        .ok_or(MoneyError::Overflow)?
        .round_dp_with_strategy(exp, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    Money::new(tax, net.currency())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(a: &str) -> Money {
        Money::parse(a, "CNY").unwrap()
    }

    fn invoiced(total: &str, paid: &[&str]) -> Fulfilment {
        let at = "2026-11-27T02:00:00Z".parse().unwrap();
        Fulfilment {
            invoice: Some(Invoice {
                number: "INV-0042".into(),
                net: m(total),
                tax: m("0"),
                total: m(total),
                issued_at: at,
                due: "2026-12-27".parse().unwrap(),
            }),
            payments: paid
                .iter()
                .enumerate()
                .map(|(i, a)| PaymentLine { id: format!("P{i}"), amount: m(a), at })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn payments_match_full_partial_over_or_are_refused() {
        let cases: Vec<(Fulfilment, &str, Money, Match)> = vec![
            (invoiced("1250000.00", &[]), "X", m("1250000.00"), Match::Full),
            (invoiced("1250000.00", &[]), "X", m("1250000"), Match::Full),
            (invoiced("1250000.00", &[]), "X", m("250000.00"), Match::Partial { outstanding: m("1000000.00") }),
            (invoiced("1250000.00", &["1000000.00"]), "X", m("250000.00"), Match::Full),
            (invoiced("1250000.00", &["1000000.00"]), "X", m("250000.01"), Match::Over { excess: m("0.01") }),
            (invoiced("1250000.00", &[]), "X", m("1300000.00"), Match::Over { excess: m("50000.00") }),
            (
                invoiced("1250000.00", &[]),
                "X",
                Money::parse("1250000.00", "USD").unwrap(),
                Match::Refused("the payment is in USD but invoice INV-0042 is in CNY".into()),
            ),
            (
                invoiced("1250000.00", &["1250000.00"]),
                "X",
                m("1.00"),
                Match::Refused("invoice INV-0042 is already settled".into()),
            ),
            (
                invoiced("1250000.00", &["5.00"]),
                "P0",
                m("5.00"),
                Match::Refused("payment P0 is already recorded on this order".into()),
            ),
            (invoiced("1250000.00", &[]), "X", m("0"), Match::Refused("the payment amount is not positive".into())),
            (Fulfilment::default(), "X", m("1.00"), Match::Refused("the order has no invoice yet".into())),
        ];
        for (i, (f, id, amount, want)) in cases.into_iter().enumerate() {
            assert_eq!(match_payment(&f, id, &amount), want, "case {i}");
        }
    }

    #[test]
    fn a_payment_that_would_overflow_the_total_paid_is_refused() {
        let max = Decimal::MAX.to_string();
        // Partly paid, then a payment that alone is representable but not the sum.
        let f = invoiced("100.00", &["5.00"]);
        assert_eq!(
            match_payment(&f, "X", &m(&max)),
            Match::Refused(
                "the payments on invoice INV-0042 would total more than the largest amount that can be computed".into()
            )
        );
        // Unpaid, the same payment is an over-payment like any other.
        assert!(matches!(match_payment(&invoiced("100.00", &[]), "X", &m(&max)), Match::Over { .. }));
    }

    #[test]
    fn outstanding_never_goes_below_zero() {
        assert_eq!(invoiced("100.00", &["30.00"]).outstanding(), Some(m("70.00")));
        assert_eq!(invoiced("100.00", &["130.00"]).outstanding(), Some(m("0.00")));
        assert_eq!(Fulfilment::default().outstanding(), None);
    }

    #[test]
    fn tax_rounds_half_up_to_the_fen() {
        assert_eq!(tax_on(&m("1250000.05"), "0.06".parse().unwrap()).unwrap(), m("75000.00"));
        assert_eq!(tax_on(&m("0.25"), "0.06".parse().unwrap()).unwrap(), m("0.02"), "0.015 → 0.02");
        assert_eq!(tax_on(&m("100.00"), Decimal::ZERO).unwrap(), m("0.00"));
        let yen = Money::parse("1005", "JPY").unwrap();
        assert_eq!(tax_on(&yen, "0.10".parse().unwrap()).unwrap(), Money::parse("101", "JPY").unwrap());
    }
}
