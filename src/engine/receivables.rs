//! What a customer owes: one amount per invoice (`outstanding`, `owed`) and the sum
//! per currency (`Receivables`), all computed on `Money`, so no amount is ever added
//! to or taken from one in another currency. The e-mails, the status page and the
//! receivables API all read these. Pure: no I/O here.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use super::fulfilment::Fulfilment;
use crate::domain::money::{CurrencyCode, Money, MoneyError};

/// What is still owed on the invoice: its total less what was paid, never below zero
/// (an overpayment owes nothing). `None` without an invoice, or when the payments
/// cannot be summed in the invoice's currency.
pub(crate) fn outstanding(f: &Fulfilment) -> Option<Money> {
    let total = &f.invoice.as_ref()?.total;
    let paid = f.paid().ok()??;
    remaining(total, &paid).ok()
}

/// What the customer is asked to pay on the invoice: what is outstanding, else (the
/// payments cannot be summed) the invoice's total. `None` without an invoice.
pub fn owed(f: &Fulfilment) -> Option<Money> {
    let total = &f.invoice.as_ref()?.total;
    Some(outstanding(f).unwrap_or_else(|| total.clone()))
}

/// `total - paid`, floored at zero, in `total`'s currency.
///
/// # Errors
/// `CurrencyMismatch` when the two are in different currencies.
fn remaining(total: &Money, paid: &Money) -> Result<Money, MoneyError> {
    if total.currency() != paid.currency() {
        return Err(MoneyError::CurrencyMismatch(total.currency(), paid.currency()));
    }
    let left = total.amount().checked_sub(paid.amount()).ok_or(MoneyError::Overflow)?;
    Money::new(left.max(Decimal::ZERO), total.currency())
}

/// The sum owed per currency, in currency order. A sum past what an amount holds is
/// kept as the error (`Overflow`) rather than a wrong number.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Receivables(BTreeMap<CurrencyCode, Result<Money, MoneyError>>);

impl Receivables {
    /// Adds an amount to its currency's sum.
    pub(crate) fn add(&mut self, amount: &Money) {
        let sum = self.0.entry(amount.currency()).or_insert_with(|| Money::new(Decimal::ZERO, amount.currency()));
        *sum = sum.as_ref().map_err(Clone::clone).and_then(|s| s.checked_add(amount));
    }

    /// Each currency with its sum, or why it could not be computed.
    pub(crate) fn totals(&self) -> impl Iterator<Item = (CurrencyCode, &Result<Money, MoneyError>)> {
        self.0.iter().map(|(c, sum)| (*c, sum))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(amount: &str, currency: &str) -> Money {
        Money::parse(amount, currency).unwrap()
    }

    #[test]
    fn what_remains_never_goes_below_zero_and_keeps_its_currency() {
        assert_eq!(remaining(&m("100.00", "CNY"), &m("30.00", "CNY")), Ok(m("70.00", "CNY")));
        assert_eq!(remaining(&m("100.00", "CNY"), &m("130.00", "CNY")), Ok(m("0.00", "CNY")));
        assert!(matches!(remaining(&m("100.00", "CNY"), &m("30.00", "USD")), Err(MoneyError::CurrencyMismatch(..))));
    }

    #[test]
    fn receivables_are_summed_per_currency_and_an_overflow_is_kept() {
        let mut r = Receivables::default();
        r.add(&m("10.00", "USD"));
        r.add(&m("1.50", "CNY"));
        r.add(&m("2.50", "USD"));
        r.add(&m("79228162514264337593543950335", "EUR"));
        r.add(&m("1", "EUR"));
        let totals: Vec<_> = r.totals().map(|(c, s)| (c.as_str().to_owned(), s.clone())).collect();
        assert_eq!(
            totals,
            vec![
                ("CNY".into(), Ok(m("1.50", "CNY"))),
                ("EUR".into(), Err(MoneyError::Overflow)),
                ("USD".into(), Ok(m("12.50", "USD"))),
            ]
        );
    }
}
