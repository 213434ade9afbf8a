//! What a delivery of a source record means for the order it maps to (invariant 4):
//! a new order, a duplicate (same or older version: changes nothing), or an
//! amendment (a newer version: the fields that changed, and whether any of them is
//! material to the approval). Pure: the caller has loaded the order, if any.

use super::approval::is_material;
use super::lifecycle::{OrderEvent, OrderState};
use crate::domain::Order;

/// The order a source record already maps to, as far as intake looks at it.
#[derive(Clone, Copy, Debug)]
pub struct Existing<'a> {
    pub state: &'a OrderState,
    /// The source record's version the stored data came from.
    pub version: u64,
    pub order: &'a Order,
}

/// What one delivery does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
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
pub struct AmendmentRefused {
    pub state: &'static str,
    pub version: u64,
    pub stored: u64,
}

/// Classifies a delivery of version `version` carrying `order`.
///
/// # Errors
/// `AmendmentRefused` when a newer version arrives for an order past the point where
/// the source system may change it.
pub fn classify(existing: Option<Existing<'_>>, version: u64, order: &Order) -> Result<Delivery, AmendmentRefused> {
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
pub fn changed_fields(old: &Order, new: &Order) -> Vec<String> {
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
}
