//! What a customer owes: one amount per invoice (`owed`) and the sum per currency
//! (`Receivables`), computed on `Money` (currency-checked), so no amount is ever added
//! to one in another currency. The e-mails, the status page and the
//! receivables API all read these. Pure: no I/O here.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use super::fulfilment::Fulfilment;
use crate::domain::money::{CurrencyCode, Money, MoneyError};

/// What the customer is asked to pay on the invoice: what is outstanding, else (the
/// payments cannot be summed) the invoice's total. `None` without an invoice.
pub(crate) fn owed(f: &Fulfilment) -> Option<Money> {
    let total = &f.invoice.as_ref()?.total;
    Some(f.outstanding().unwrap_or_else(|| total.clone()))
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
    fn what_is_owed_is_the_outstanding_amount_else_the_total() {
        assert_eq!(owed(&Fulfilment::default()), None);
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
