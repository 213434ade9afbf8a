//! The engine comparison, without HTTP: concurrent intake steps (`Orders::ingest`:
//! mapping done, screening and routing decided, the step committed and made
//! durable) against every store backend, each in a process of its own so memory is
//! measured per engine. Then the outbox is drained as the dispatcher would (every
//! effect recorded done), and the store is closed and opened again.
//!
//!   cargo bench --bench store -- [ORDERS] [CONCURRENCY] [BACKEND…]
//!
//! Prints, per backend: orders/s, acknowledgement p50/p99, CPU per order (user +
//! system of the whole process), resident memory after the run (now and peak),
//! bytes on disk per order once the outbox is drained, the time to reopen after a
//! clean close, and the time to reopen after a crash: the process writes a few more
//! orders and exits without closing the store (no destructor runs, as after
//! SIGKILL), and a fresh process opens it.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{inbound, sample_order};
use orderbridge::bench::Latencies;
use orderbridge::engine::Rules;
use orderbridge::metrics::Metrics;
use orderbridge::orders::{EffectOutcome, Orders};
use orderbridge::store::{self, Backend};

fn main() {
    orderbridge::allocator::tune();
    // `cargo bench` passes `--bench`; under `cargo test` this runs as a small smoke test.
    let benching = std::env::args().any(|a| a == "--bench");
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let args = if benching { args } else { Vec::new() };
    let orders: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(if benching { 100_000 } else { 200 });
    let concurrency: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let backends: Vec<String> = match args.get(2..) {
        Some(b) if !b.is_empty() => b.to_vec(),
        _ => Backend::EMBEDDED.iter().map(|s| (*s).to_owned()).collect(),
    };
    let dir = std::env::var_os("STORE_BENCH_DIR").map(std::path::PathBuf::from);
    if let (Ok(one), Some(dir)) = (std::env::var("STORE_BENCH_ONE"), &dir) {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        rt.block_on(run(one.parse().unwrap(), dir, orders, concurrency));
        return;
    }
    if let (Ok(one), Some(dir)) = (std::env::var("STORE_BENCH_REOPEN"), &dir) {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        rt.block_on(reopen_after_crash(one.parse().unwrap(), dir));
        return;
    }
    println!("store bench: {orders} orders, concurrency {concurrency}, {}", orderbridge::bench::machine());
    for b in backends {
        // A process per engine: its memory figures are its own. It ends as after a
        // crash; a second process times the open that follows.
        let dir = tempfile::tempdir().unwrap();
        for var in ["STORE_BENCH_ONE", "STORE_BENCH_REOPEN"] {
            let status = std::process::Command::new(std::env::current_exe().unwrap())
                .args(std::env::args().skip(1))
                .env(var, &b)
                .env("STORE_BENCH_DIR", dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "{b}: the bench failed");
        }
    }
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (fields 14 and 15 of /proc/self/stat).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After ")" come field 3 (state) onwards, so field 14 is token 11.
    let f: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(p) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_bytes(&e.path()),
                Ok(m) => total += std::os::unix::fs::MetadataExt::blocks(&m) * 512,
                Err(_) => {}
            }
        }
    }
    total
}

fn options(backend: Backend, dir: &Path) -> store::Options {
    let delay_us: u64 = std::env::var("GROUP_COMMIT_DELAY_US").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    store::Options {
        backend,
        path: dir.join("data"),
        cache_bytes: 16 << 20,
        commit_delay: Duration::from_micros(delay_us),
        postgres: None,
    }
}

/// Opens the store a crashed process left and says how long that took.
async fn reopen_after_crash(backend: Backend, dir: &Path) {
    let started = Instant::now();
    let store = store::open(&options(backend, dir), Arc::new(Metrics::default())).await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    let orders = store.list(None, None, 10).await.unwrap().len();
    assert!(orders > 0, "{}: the orders are there", backend.name());
    println!("       reopen after a crash: {secs:.2}s");
}

/// Ingests `orders` orders from `concurrency` tasks; the latency of each.
async fn ingest_all(app: &Arc<Orders>, rules: &Arc<Rules>, orders: usize, concurrency: usize) -> Arc<Latencies> {
    let order = sample_order();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let lat = Arc::new(Latencies::default());
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (app, rules, next, order, lat) = (app.clone(), rules.clone(), next.clone(), order.clone(), lat.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= orders {
                    return;
                }
                let inbound = inbound(&order, "S", n);
                let t = Instant::now();
                app.ingest(inbound, &rules, chrono::Utc::now()).await.unwrap();
                lat.record(t.elapsed());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    lat
}

/// Drains the outbox as the dispatcher would: every effect performed and recorded.
/// Returns how many there were.
async fn drain(app: &Arc<Orders>, rules: &Arc<Rules>, concurrency: usize) -> usize {
    let far = chrono::Utc::now() + chrono::Duration::days(1);
    let mut effects = 0;
    loop {
        let due = app.store().due_effects(far, 512).await.unwrap();
        if due.is_empty() {
            return effects;
        }
        effects += due.len();
        let mut done = Vec::new();
        for chunk in due.chunks(due.len().div_ceil(concurrency.max(1))) {
            let (app, rules, chunk) = (app.clone(), rules.clone(), chunk.to_vec());
            done.push(tokio::spawn(async move {
                for e in chunk {
                    let outcome = EffectOutcome::Done { receipt: "HTTP 200".into(), reference: None };
                    app.finish_effect(&e, outcome, &rules, chrono::Utc::now()).await.unwrap();
                }
            }));
        }
        for d in done {
            d.await.unwrap();
        }
    }
}

/// What the rows themselves take, by key space (the layout's one-byte tags): rows
/// and bytes (key + value), once the engine is free to open.
async fn rows_by_tag(options: &store::Options) -> std::collections::BTreeMap<char, (u64, u64)> {
    loop {
        match store::open_engine(options) {
            Ok(engine) => {
                let mut by_tag = std::collections::BTreeMap::<char, (u64, u64)>::new();
                for row in engine.range(&[0], &[0xff]) {
                    let (k, v) = row.unwrap();
                    let e = by_tag.entry(char::from(k[0])).or_default();
                    e.0 += 1;
                    e.1 += (k.len() + v.len()) as u64;
                }
                return by_tag;
            }
            Err(store::StoreError::Locked(_)) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Opens the store again once the last holder let go.
async fn reopen(options: &store::Options, metrics: &Arc<Metrics>) -> Arc<dyn store::Store> {
    loop {
        match store::open(options, metrics.clone()).await {
            Ok(s) => return s,
            Err(store::StoreError::Locked(_)) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => panic!("{e}"),
        }
    }
}

async fn run(backend: Backend, dir: &Path, orders: usize, concurrency: usize) {
    let options = options(backend, dir);
    let metrics = Arc::new(Metrics::default());
    let app = Arc::new(Orders::new(store::open(&options, metrics.clone()).await.unwrap()));
    let rules = Arc::new(orderbridge::check::load_rules(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap());
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let lat = ingest_all(&app, &rules, orders, concurrency).await;
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let p = |q: f64| lat.quantile(q).as_secs_f64() * 1000.0;
    let (hwm, rss) = orderbridge::bench::rss_kib(std::process::id()).unwrap_or((0, 0));

    let drain_started = Instant::now();
    let effects = drain(&app, &rules, concurrency).await;
    let drained = drain_started.elapsed().as_secs_f64();
    drop(app);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let disk = dir_bytes(&options.path);
    // What the rows take, beside what the engine puts on disk for them.
    let logical = rows_by_tag(&options).await;
    let reopen_started = Instant::now();
    let reopened = reopen(&options, &metrics).await;
    let reopen = reopen_started.elapsed().as_secs_f64();
    assert_eq!(reopened.counts().pending, 0);
    println!(
        "{:<6} {orders} orders: {:.0} orders/s, p50 {:.2} ms, p99 {:.2} ms, CPU {:.0} µs/order, RSS {} MiB (peak {} MiB), \
         {:.0} B/order on disk after draining {} effects in {:.1}s, reopen {:.2}s",
        backend.name(),
        orders as f64 / secs,
        p(0.5),
        p(0.99),
        cpu / orders as f64 * 1e6,
        rss / 1024,
        hwm / 1024,
        disk as f64 / orders as f64,
        effects,
        drained,
        reopen,
    );
    let rows: Vec<String> = logical
        .iter()
        .map(|(tag, (n, bytes))| format!("{tag} {n} rows {:.0} B/order", *bytes as f64 / orders as f64))
        .collect();
    println!("       rows by key space (key + value): {}", rows.join(", "));
    // A few more orders, then an exit that closes nothing: what a crash leaves.
    let after = Orders::new(reopened);
    let order = sample_order();
    for n in orders..orders + 100 {
        after.ingest(inbound(&order, "S", n), &rules, chrono::Utc::now()).await.unwrap();
    }
    std::process::exit(0);
}
