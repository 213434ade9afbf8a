//! Intake, before and at the store: the order template (`[intake]` in
//! `config/orderbridge.toml`: the fields every inbound order must carry and the
//! largest amount it may name, per currency), checked on every order from a webhook
//! or a poll and on every reported payment before anything is stored; and what a
//! delivery of a source record means for the order it maps to (invariant 4): a new
//! order, a duplicate (same or older version: changes nothing), or an amendment (a
//! newer version: the fields that changed, and whether any is material to the
//! approval). Pure: the settings loader builds the template, the application layer
//! loads the order.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use super::approval::is_material;
use super::lifecycle::{OrderEvent, OrderState};
use crate::domain::{CurrencyCode, Money, Order};

/// What an inbound order must satisfy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntakeRules {
    /// Canonical fields an order must have beyond the always-required ones.
    pub(crate) required_fields: Vec<String>,
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
    pub(crate) fn check_amount(&self, amount: &Money) -> Result<(), IntakeError> {
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

/// The order a source record already maps to, as far as intake looks at it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Existing<'a> {
    pub(crate) state: &'a OrderState,
    /// The source record's version the stored data came from.
    pub(crate) version: u64,
    pub(crate) order: &'a Order,
}

/// What one delivery does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// No order maps to this record yet.
    New,
    /// The same or an older version: nothing changes, the answer repeats.
    Duplicate,
    /// A newer version: `Amended`, decided like any other event.
    Amendment(OrderEvent),
}

/// Why a newer version cannot be taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the order is {state} and can no longer be changed by the source system (version {version} after {stored})")]
pub(crate) struct AmendmentRefused {
    pub(crate) state: &'static str,
    pub(crate) version: u64,
    pub(crate) stored: u64,
}

/// Classifies a delivery of version `version` carrying `order`.
///
/// # Errors
/// `AmendmentRefused` when a newer version arrives for an order past the point where
/// the source system may change it.
pub(crate) fn classify(
    existing: Option<Existing<'_>>,
    version: u64,
    order: &Order,
) -> Result<Delivery, AmendmentRefused> {
    let Some(e) = existing else { return Ok(Delivery::New) };
    if version <= e.version {
        return Ok(Delivery::Duplicate);
    }
    if !e.state.accepts_amendments() {
        return Err(AmendmentRefused { state: e.state.name(), version, stored: e.version });
    }
    let changed = changed_fields(e.order, order);
    let material = changed.iter().any(|f| is_material(f));
    Ok(Delivery::Amendment(OrderEvent::Amended { version, changed, material }))
}

/// Canonical fields that differ between two versions of an order (dotted paths).
pub(crate) fn changed_fields(old: &Order, new: &Order) -> Vec<String> {
    let (a, b) = (serde_json::to_value(old).unwrap_or_default(), serde_json::to_value(new).unwrap_or_default());
    let mut out = Vec::new();
    diff("", &a, &b, &mut out);
    out
}

fn diff(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                diff(&p, x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), out);
            }
        }
        _ if a != b => out.push(prefix.to_owned()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(amount: &str, email: &str) -> Order {
        let mut v: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/demo-crm-deal.json")).unwrap();
        v["deal"]["amount"] = amount.into();
        v["deal"]["customer"]["email"] = email.into();
        let m = toml::from_str::<crate::mapping::MappingFile>(include_str!("../../mappings/demo-crm.toml"))
            .unwrap()
            .validate("demo-crm")
            .unwrap();
        m.apply(&v).unwrap().unwrap().order
    }

    #[test]
    fn a_first_delivery_is_new_and_a_repeat_is_a_duplicate() {
        let o = order("100.00", "a@example.com");
        assert_eq!(classify(None, 1, &o), Ok(Delivery::New));
        let state = OrderState::Received;
        let e = Existing { state: &state, version: 3, order: &o };
        assert_eq!(classify(Some(e), 3, &o), Ok(Delivery::Duplicate));
        assert_eq!(classify(Some(e), 2, &o), Ok(Delivery::Duplicate), "an older version changes nothing");
    }

    #[test]
    fn an_amendment_names_what_changed_and_whether_it_is_material() {
        let old = order("100.00", "a@example.com");
        let state = OrderState::Received;
        let e = Existing { state: &state, version: 1, order: &old };
        let contact = order("100.00", "b@example.com");
        let Ok(Delivery::Amendment(OrderEvent::Amended { changed, material, version })) =
            classify(Some(e), 2, &contact)
        else {
            panic!("an amendment");
        };
        assert_eq!((changed, material, version), (vec!["customer.email".to_owned()], false, 2));
        let bigger = order("200.00", "a@example.com");
        let Ok(Delivery::Amendment(OrderEvent::Amended { material, .. })) = classify(Some(e), 2, &bigger) else {
            panic!("an amendment");
        };
        assert!(material, "the amount is material");
    }

    #[test]
    fn a_closed_order_refuses_a_newer_version() {
        let o = order("100.00", "a@example.com");
        let state = OrderState::Closed;
        let e = Existing { state: &state, version: 1, order: &o };
        let err = classify(Some(e), 2, &o).unwrap_err();
        assert_eq!(err.state, "closed");
        assert!(err.to_string().contains("version 2 after 1"), "{err}");
    }

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
