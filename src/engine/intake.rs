//! The intake template (`[intake]` in `config/orderbridge.toml`): the fields every
//! inbound order must carry and the largest amount it may name, per currency. Checked
//! on every order from a webhook or a poll, and on every reported payment, before
//! anything is stored. Pure: the settings loader builds it, HTTP and workers call it.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use crate::domain::{CurrencyCode, Money, Order};

/// What an inbound order must satisfy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntakeRules {
    /// Canonical fields an order must have beyond the always-required ones.
    pub required_fields: Vec<String>,
    /// The largest amount an order or a payment may carry, by currency; a currency
    /// not listed has no limit of its own (sums stay checked regardless).
    pub max_amount: BTreeMap<CurrencyCode, Decimal>,
}

/// Why an inbound order (or payment) is refused; each names the field to blame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    #[error("the order template requires `{0}`, which the payload does not provide")]
    MissingField(String),
    #[error("amount {amount} {currency} is above intake.max_amount for {currency} ({limit})")]
    AmountAboveLimit { amount: Decimal, currency: CurrencyCode, limit: Decimal },
}

impl IntakeError {
    /// The canonical field the refusal names.
    pub fn field(&self) -> &str {
        match self {
            IntakeError::MissingField(f) => f,
            IntakeError::AmountAboveLimit { .. } => "amount.amount",
        }
    }

    /// The error code of the HTTP answer.
    pub fn code(&self) -> &'static str {
        match self {
            IntakeError::MissingField(_) => "missing_field",
            IntakeError::AmountAboveLimit { .. } => "amount_above_limit",
        }
    }
}

impl IntakeRules {
    /// # Errors
    /// The first required field missing, else an amount above its currency's limit.
    pub fn check(&self, order: &Order) -> Result<(), IntakeError> {
        if let Some(missing) = self.required_fields.iter().find(|f| !order.has_field(f)) {
            return Err(IntakeError::MissingField(missing.clone()));
        }
        self.check_amount(&order.amount)
    }

    /// # Errors
    /// `AmountAboveLimit` when `amount` is larger than its currency's `max_amount`.
    pub fn check_amount(&self, amount: &Money) -> Result<(), IntakeError> {
        match self.max_amount.get(&amount.currency()) {
            Some(limit) if amount.amount() > *limit => Err(IntakeError::AmountAboveLimit {
                amount: amount.amount(),
                currency: amount.currency(),
                limit: *limit,
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> IntakeRules {
        IntakeRules {
            required_fields: vec!["term_months".into()],
            max_amount: [("CNY".parse().unwrap(), "10000000000".parse().unwrap())].into(),
        }
    }

    #[test]
    fn amounts_up_to_the_limit_pass_and_above_it_name_the_field() {
        let r = rules();
        let at = crate::engine::decide::tests::sample_order("10000000000");
        assert_eq!(r.check(&at), Ok(()), "the limit itself is allowed");
        let above = crate::engine::decide::tests::sample_order("10000000000.01");
        let e = r.check(&above).unwrap_err();
        assert_eq!((e.field(), e.code()), ("amount.amount", "amount_above_limit"));
        assert_eq!(e.to_string(), "amount 10000000000.01 CNY is above intake.max_amount for CNY (10000000000)");
        // Other currencies have no limit unless listed.
        assert_eq!(r.check_amount(&Money::parse("79228162514264337593543950335", "USD").unwrap()), Ok(()));
    }

    #[test]
    fn a_missing_field_comes_first() {
        let mut o = crate::engine::decide::tests::sample_order("99999999999");
        o.term_months = None;
        let e = rules().check(&o).unwrap_err();
        assert_eq!((e.field(), e.code()), ("term_months", "missing_field"));
    }
}
