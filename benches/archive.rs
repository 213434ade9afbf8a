//! The archive at scale: a store of orders that went through intake, screening,
//! routing and their effects and were then cancelled; one archive pass moves them all
//! to segment files. Prints the hot store's size on disk (as left by the pass, and
//! compacted: a `store copy`), the archive's, and the process's resident memory
//! before and after.
//!
//!   cargo bench --bench archive -- [ORDERS]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{inbound, rss_mib, sample_order};
use orderbridge::archive::Archive;
use orderbridge::engine::{Actor, OrderEvent, Rules};
use orderbridge::metrics::Metrics;
use orderbridge::orders::{EffectOutcome, Orders};
use orderbridge::settings::ArchiveSettings;
use orderbridge::store;

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test` this runs as a small smoke test.
    let benching = std::env::args().any(|a| a == "--bench");
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let orders: usize =
        args.first().filter(|_| benching).and_then(|a| a.parse().ok()).unwrap_or(if benching { 20_000 } else { 200 });
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run(orders));
}

/// Bytes the files under `dir` take on disk (allocated blocks, as `du`: the engine's
/// journal is preallocated sparse).
fn du(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let m = e.metadata().unwrap();
        total += if m.is_dir() { du(&e.path()) } else { m.blocks() * 512 };
    }
    total
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

async fn run(orders: usize) {
    println!("archive bench: {orders} orders, {}", orderbridge::bench::machine());
    let dir = tempfile::tempdir().unwrap();
    let (options, app, rules) = common::fjall_orders(dir.path()).await;
    let start: DateTime<Utc> = "2026-01-05T01:00:00Z".parse().unwrap();
    let t = Instant::now();
    fill(&app, &rules, orders, start).await;
    println!("  filled in {:.0}s, RSS {} MiB", t.elapsed().as_secs_f64(), rss_mib());
    close(app).await;
    let before = measure(&options, &dir.path().join("before")).await;
    println!("  hot store before: {before}");

    let app = Arc::new(Orders::new(store::open(&options, Arc::new(Metrics::default())).await.unwrap()));
    let archive_dir = options.path.join("archive");
    let settings = ArchiveSettings {
        enabled: true,
        after_days: 90,
        retain_years: 10,
        sweep_interval: Duration::from_secs(3600),
        segment_orders: 5000,
        dir: archive_dir.clone(),
    };
    let archive = Archive::new(app.clone(), settings);
    let rss_open = rss_mib();
    let t = Instant::now();
    // Past `after_days` for the last order (they came one a minute).
    let due = start + chrono::Duration::minutes(i64::try_from(orders).unwrap()) + chrono::Duration::days(91);
    let pass = archive.run("bench", due).await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(pass.archived as usize, orders);
    let archived = du(&archive_dir);
    println!(
        "  archive pass: {secs:.1}s ({:.0} orders/s, {} segments), archive {:.1} MiB ({:.0} B/order); RSS {rss_open} MiB before the pass, {} MiB after",
        orders as f64 / secs,
        pass.segments_written,
        mib(archived),
        archived as f64 / orders as f64,
        rss_mib()
    );
    let t = Instant::now();
    let audit = archive.verify().await.unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    println!("  audit verify of the archive: {:.1}s, {} events", t.elapsed().as_secs_f64(), audit.events);
    drop(archive);
    close(app).await;
    let after = measure(&options, &dir.path().join("after")).await;
    println!("  hot store after: {after}");
}

async fn close(app: Arc<Orders>) {
    let store = app.store().clone();
    drop(app);
    store.close().await.unwrap();
}

/// What the hot store holds: its rows (a `store copy`, which also compacts) and the
/// copy's size on disk.
async fn measure(options: &store::Options, to: &Path) -> String {
    let copy = store::Options { path: to.to_owned(), ..options.clone() };
    let copied = store::copy(options, &copy, Arc::new(Metrics::default())).await.unwrap();
    let disk = du(to);
    format!("{} rows, {:.1} MiB of rows; {:.1} MiB on disk compacted", copied.keys, mib(copied.bytes), mib(disk))
}

/// `orders` orders received one a minute from `start`, through intake with every
/// effect performed, then cancelled by an operator (and those effects performed).
async fn fill(app: &Arc<Orders>, rules: &Arc<Rules>, orders: usize, start: DateTime<Utc>) {
    let order = sample_order();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (app, rules, next, order) = (app.clone(), rules.clone(), next.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= orders {
                    return;
                }
                let at = start + chrono::Duration::minutes(i64::try_from(n).unwrap());
                let id = app.ingest(inbound(&order, "A", n), &rules, at).await.unwrap().order_id;
                let cancel = OrderEvent::Cancelled { reason: "客户撤单".into() };
                // Every order of the sample's routes can be cancelled before invoicing.
                app.apply(id, Actor::Person("operator:ops".into()), cancel, &rules, at).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let far = start + chrono::Duration::minutes(i64::try_from(orders).unwrap()) + chrono::Duration::days(1);
    loop {
        let due = app.store().due_effects(far, 512).await.unwrap();
        if due.is_empty() {
            return;
        }
        for e in due {
            let outcome = EffectOutcome::Done { receipt: "HTTP 200".into(), reference: None };
            app.finish_effect(&e, outcome, rules, e.next_at).await.unwrap();
        }
    }
}
