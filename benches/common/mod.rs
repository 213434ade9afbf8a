//! What the benches share: the sample order and the stream of distinct orders made
//! from it.

use orderbridge::domain::{ExternalRef, Order};
use orderbridge::orders::Inbound;

/// The demo CRM's sample deal, mapped.
pub fn sample_order() -> Order {
    let sample: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/fixtures/demo-crm-deal.json")).unwrap();
    let mapping_text = include_str!("../../mappings/demo-crm.toml");
    let mapping =
        toml::from_str::<orderbridge::mapping::MappingFile>(mapping_text).unwrap().validate("demo-crm").unwrap();
    mapping.apply(&sample).unwrap().unwrap().order
}

/// The `n`th order of a run: its own customer and external id (prefixed by `tag`),
/// and an amount spread as in the HTTP benchmark, so that every approval route is taken.
pub fn inbound(order: &Order, tag: &str, n: usize) -> Inbound {
    let mut order = order.clone();
    order.customer.id = format!("C-{tag}{n}").parse().unwrap();
    let amount = format!("{}.00", 1_000 + (n as u64 * 7_919) % 3_000_000);
    order.amount = orderbridge::domain::Money::parse(&amount, "CNY").unwrap();
    Inbound {
        source: ExternalRef { connector: "demo-crm".parse().unwrap(), id: format!("{tag}-{n}").parse().unwrap() },
        version: 1,
        mapping_version: "1".into(),
        order,
    }
}
