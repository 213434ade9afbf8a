//! What the benches share: the sample order and the stream of distinct orders made
//! from it, a fjall store opened as the step-8 benches open it, the process's memory.
//! (Each bench uses some of it.)
#![allow(dead_code)]

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

/// A fjall store under `dir/data` (16 MiB cache, 1 ms commit delay), its
/// application layer, and the example rules.
pub async fn fjall_orders(
    dir: &std::path::Path,
) -> (
    orderbridge::store::Options,
    std::sync::Arc<orderbridge::orders::Orders>,
    std::sync::Arc<orderbridge::engine::Rules>,
) {
    let options = orderbridge::store::Options {
        backend: orderbridge::store::Backend::Fjall,
        path: dir.join("data"),
        cache_bytes: 16 << 20,
        commit_delay: std::time::Duration::from_micros(1000),
        postgres: None,
    };
    let metrics = std::sync::Arc::new(orderbridge::metrics::Metrics::default());
    let app = std::sync::Arc::new(orderbridge::orders::Orders::new(
        orderbridge::store::open(&options, metrics).await.unwrap(),
    ));
    let rules =
        std::sync::Arc::new(orderbridge::check::load_rules(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap());
    (options, app, rules)
}

/// This process's resident memory, MiB.
pub fn rss_mib() -> u64 {
    orderbridge::bench::rss_kib(std::process::id()).map_or(0, |(_, rss)| rss / 1024)
}
