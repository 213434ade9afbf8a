//! Store benchmark without HTTP: concurrent `ingest` calls against the sled store,
//! each acknowledged only after its group commit. Prints orders/s and latency.
//!
//!   cargo bench --bench store -- [ORDERS] [CONCURRENCY]

use std::sync::Arc;
use std::time::{Duration, Instant};

use orderbridge::domain::{ExternalRef, Order};
use orderbridge::metrics::Metrics;
use orderbridge::orders::{Inbound, Orders};

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test` this runs as a small smoke test.
    let benching = std::env::args().any(|a| a == "--bench");
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let args = if benching { args } else { Vec::new() };
    let orders: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(if benching { 20_000 } else { 200 });
    let concurrency: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run(orders, concurrency));
}

async fn run(orders: usize, concurrency: usize) {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let delay_us: u64 = std::env::var("GROUP_COMMIT_DELAY_US").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let store =
        orderbridge::store::sled_engine::open(dir.path(), 32 << 20, Duration::from_micros(delay_us), metrics.clone())
            .unwrap();
    let store = Arc::new(Orders::new(store));
    let rules = Arc::new(orderbridge::check::load_rules(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap());
    let sample: serde_json::Value = serde_json::from_str(include_str!("../tests/fixtures/demo-crm-deal.json")).unwrap();
    let mapping_text = include_str!("../mappings/demo-crm.toml");
    let mapping =
        toml::from_str::<orderbridge::mapping::MappingFile>(mapping_text).unwrap().validate("demo-crm").unwrap();
    let order: Order = mapping.apply(&sample).unwrap().unwrap().order;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (store, rules, next, order) = (store.clone(), rules.clone(), next.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= orders {
                    return lat;
                }
                // One customer per order, as in the HTTP benchmark.
                let mut order = order.clone();
                order.customer.id = format!("C-S{n}").parse().unwrap();
                let inbound = Inbound {
                    source: ExternalRef {
                        connector: "demo-crm".parse().unwrap(),
                        id: format!("S-{n}").parse().unwrap(),
                    },
                    version: 1,
                    mapping_version: "1".into(),
                    order,
                };
                let t = Instant::now();
                store.ingest(inbound, &rules, chrono::Utc::now()).await.unwrap();
                lat.push(t.elapsed());
            }
        }));
    }
    let mut lat: Vec<Duration> = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0;
    println!(
        "store ingest: {orders} orders, concurrency {concurrency}, group commit delay {delay_us} µs: {:.0} orders/s, p50 {:.2} ms, p99 {:.2} ms",
        orders as f64 / secs,
        p(0.5),
        p(0.99)
    );
    let m = metrics.render(&[]);
    for l in m.lines().filter(|l| l.starts_with("orderbridge_commit_") && (l.contains("_sum") || l.contains("_count")))
    {
        println!("  {l}");
    }
}
