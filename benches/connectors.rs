//! Connector benchmark on loopback, without the HTTP intake:
//! - **poll**: records/s ingested from a paged source (cursor paging) through the real
//!   poller into the (fjall) store, each page committed together with its poll state;
//! - **push**: effects/s through a `rest` connector that renders an outbound JSON
//!   mapping (the Xero invoice example) and POSTs it to a sink that answers 200.
//!
//!   cargo bench --bench connectors -- [RECORDS] [PAGE] [EFFECTS] [CONCURRENCY]
//!   (defaults: 20000 100 20000 8)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use axum::extract::{Query, State};
use orderbridge::connectors::{Outbound, Registry};
use orderbridge::metrics::Metrics;
use orderbridge::workers::poller::Poller;
use serde_json::{Value, json};

fn main() {
    orderbridge::allocator::tune();
    // `cargo bench` passes `--bench`; under `cargo test` this runs as a small smoke test.
    let benching = std::env::args().any(|a| a == "--bench");
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let arg = |i: usize, bench: usize, smoke: usize| {
        if benching { args.get(i).copied().unwrap_or(bench) } else { smoke }
    };
    let (records, page, effects, concurrency) =
        (arg(0, 20_000, 300), arg(1, 100, 50), arg(2, 20_000, 200), arg(3, 8, 4));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        println!("connectors bench on {}", orderbridge::bench::machine());
        let dir = tempfile::tempdir().unwrap();
        let (source, sink, received) = serve(records, page).await;
        let registry = config(dir.path(), source, sink);
        poll(&registry, dir.path(), records, page).await;
        push(&registry, effects, concurrency, &received).await;
    });
}

struct Source {
    /// Pre-rendered pages, by cursor.
    pages: Vec<String>,
}

#[derive(serde::Deserialize)]
struct Cursor {
    after: Option<usize>,
}

async fn page(State(s): State<Arc<Source>>, Query(c): Query<Cursor>) -> ([(&'static str, &'static str); 1], String) {
    ([("content-type", "application/json")], s.pages[c.after.unwrap_or(0)].clone())
}

/// The paged source and the push sink, on loopback.
async fn serve(records: usize, page_size: usize) -> (std::net::SocketAddr, std::net::SocketAddr, Arc<AtomicU64>) {
    let fixture: Value = serde_json::from_str(include_str!("../tests/fixtures/demo-crm-deal.json")).unwrap();
    let mut pages = Vec::new();
    let n_pages = records.div_ceil(page_size);
    for p in 0..n_pages {
        let recs: Vec<Value> = (p * page_size..((p + 1) * page_size).min(records))
            .map(|n| {
                let mut d = fixture.clone();
                d["deal"]["id"] = format!("POLL-{n}").into();
                d["deal"]["customer"]["id"] = format!("POLL-C{n}").into();
                d["deal"]["amount"] = format!("{}.00", 1_000 + (n * 7_919) % 3_000_000).into();
                d["updated_at"] = format!("2026-11-26T10:00:00.{:06}Z", n).into();
                d
            })
            .collect();
        let next = (p + 1 < n_pages).then_some(p + 1);
        pages.push(json!({"results": recs, "next": next}).to_string());
    }
    let source = axum::Router::new().route("/deals", axum::routing::get(page)).with_state(Arc::new(Source { pages }));
    let received = Arc::new(AtomicU64::new(0));
    let r = received.clone();
    let sink = axum::Router::new().fallback(move || {
        let r = r.clone();
        async move {
            r.fetch_add(1, Ordering::Relaxed);
            ([("content-type", "application/json")], "{\"Invoices\":[{\"InvoiceID\":\"b1\"}]}")
        }
    });
    let mut addrs = Vec::new();
    for router in [source, sink] {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, router).await.unwrap() });
    }
    (addrs[0], addrs[1], received)
}

fn config(d: &std::path::Path, source: std::net::SocketAddr, sink: std::net::SocketAddr) -> Registry {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for sub in ["connectors", "mappings"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    std::fs::write(
        d.join("connectors/source.toml"),
        format!(
            "kind = \"rest\"\nbase_url = \"http://{source}\"\n[poll]\npath = \"/deals\"\nmapping = \"source\"\nrecords = \"$.results\"\n\
             watermark_field = \"$.updated_at\"\nwatermark_param = \"updated_since\"\npaging = {{ kind = \"cursor\", next = \"$.next\", param = \"after\" }}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("connectors/sink.toml"),
        format!(
            "kind = \"rest\"\nbase_url = \"http://{sink}\"\nmax_concurrency = 64\n[operations.create_invoice]\nmethod = \"PUT\"\npath = \"/Invoices\"\nbody = \"invoice\"\nreference = \"$.Invoices[0].InvoiceID\"\n"
        ),
    )
    .unwrap();
    let inbound =
        std::fs::read_to_string(repo.join("mappings/demo-crm.toml")).unwrap().replace("\"demo-crm\"", "\"source\"");
    std::fs::write(d.join("mappings/source.toml"), inbound).unwrap();
    let outbound = std::fs::read_to_string(repo.join("examples/mappings/xero-invoice.toml"))
        .unwrap()
        .replace("\"xero\"", "\"sink\"");
    std::fs::write(d.join("mappings/invoice.toml"), outbound).unwrap();
    Registry::load(d).unwrap_or_else(|p| panic!("{p:?}")).0
}

async fn poll(registry: &Registry, d: &std::path::Path, records: usize, page: usize) {
    let metrics = Arc::new(Metrics::default());
    let options = orderbridge::store::Options {
        backend: orderbridge::store::Backend::Fjall,
        path: d.join("data"),
        cache_bytes: 16 << 20,
        commit_delay: std::time::Duration::from_millis(1),
        postgres: None,
    };
    let store = orderbridge::store::open(&options, metrics.clone()).await.unwrap();
    let orders = std::sync::Arc::new(orderbridge::orders::Orders::new(store));
    let rules = orderbridge::review::LiveRules::from(
        orderbridge::check::load_rules(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap(),
    );
    let poller = Poller {
        poll: registry.get("source").unwrap().poll.clone().unwrap(),
        orders,
        rules,
        intake: Default::default(),
        metrics,
        clock: orderbridge::clock::Clock::system(),
        dispatcher: Arc::new(tokio::sync::Notify::new()),
        time_zone: chrono_tz::Tz::UTC,
    };
    let t = Instant::now();
    let report = poller.run_once().await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(report.ingested, records, "{report:?}");
    println!(
        "poll: {records} records in {} pages of {page} ingested in {secs:.2}s = {:.0} records/s (each page one commit with its poll state)",
        report.pages,
        records as f64 / secs
    );
}

async fn push(registry: &Registry, effects: usize, concurrency: usize, received: &AtomicU64) {
    let connector = registry.get("sink").unwrap().push.clone().unwrap();
    let base: Value = json!({
        "external_id": "D-1", "state": "accepted", "references": {},
        "order": {"customer": {"id": "C-1", "name": "上海星辰贸易有限公司", "kind": "corporate"},
                  "product": {"type": "loan", "code": "LN-3Y"}, "need": "流动资金贷款",
                  "amount": {"amount": "1250000.05", "currency": "CNY"}, "placed_at": "2026-11-26T02:03:04Z"}
    });
    let next = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (connector, next, base) = (connector.clone(), next.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= effects {
                    return;
                }
                let mut body = base.clone();
                body["order_id"] = format!("ord-{n}").into();
                let key = format!("orderbridge:bench-{n}");
                let r = connector
                    .perform(Outbound { operation: "create_invoice", idempotency_key: &key, body: &body })
                    .await;
                assert!(r.is_ok_and(|r| r.reference.as_deref() == Some("b1")));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(received.load(Ordering::Relaxed) as usize, effects);
    println!(
        "push: {effects} effects (outbound JSON mapping rendered, PUT over loopback, answer parsed) at concurrency {concurrency} in {secs:.2}s = {:.0} effects/s",
        effects as f64 / secs
    );
}
