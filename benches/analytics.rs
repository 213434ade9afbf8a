//! Lifecycle step 8 at scale: the management report and the warehouse export over a
//! store of many orders (the example rules; intake, screening, routing and every
//! effect recorded done, as in the store bench), received over 90 days.
//!
//!   cargo bench --bench analytics -- [ORDERS]
//!
//! Prints the time to fill the store, then the report's time (`Orders::kpi_report`
//! over the 90 days) and the export's (`Orders::export_pages` into Parquet files), with
//! the process's resident memory after each.
//!
//! With `ANALYTICS_BENCH_STORE=DIR` the store is kept in DIR and filled only once per
//! order count (a file `filled-ORDERS` marks it), so a change to the report or the
//! export can be timed again, and profiled, without filling the store again;
//! `ANALYTICS_BENCH_ONLY=report` (or `export`) runs one of the two.

mod common;

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use common::{inbound, rss_mib, sample_order};
use orderbridge::orders::{EffectOutcome, Orders};

const DAYS: i64 = 90;

fn main() {
    orderbridge::allocator::tune();
    // `cargo bench` passes `--bench`; under `cargo test` this runs as a small smoke test.
    let benching = std::env::args().any(|a| a == "--bench");
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let orders: usize =
        args.first().filter(|_| benching).and_then(|a| a.parse().ok()).unwrap_or(if benching { 100_000 } else { 300 });
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run(orders));
}

/// CPU seconds (user + system, every thread) the bench has used so far: beside the
/// wall time, what a phase costs when the machine is shared.
fn cpu_s() -> f64 {
    orderbridge::bench::cpu_time(None).map_or(0.0, |d| d.as_secs_f64())
}

async fn run(orders: usize) {
    println!("analytics bench: {orders} orders over {DAYS} days, {}", orderbridge::bench::machine());
    let temp = tempfile::tempdir().unwrap();
    let kept = std::env::var_os("ANALYTICS_BENCH_STORE").map(std::path::PathBuf::from);
    let dir = kept.as_deref().unwrap_or(temp.path());
    let marker = dir.join(format!("filled-{orders}"));
    let (_, app, rules) = common::fjall_orders(dir).await;
    let start: DateTime<Utc> = "2026-09-01T01:00:00Z".parse().unwrap();
    if marker.exists() {
        println!("  store kept in {} (filled before), RSS {} MiB", dir.display(), rss_mib());
    } else {
        let started = Instant::now();
        fill(&app, &rules, orders, start).await;
        println!(
            "  filled in {:.0}s (intake and every effect recorded done), RSS {} MiB",
            started.elapsed().as_secs_f64(),
            rss_mib()
        );
        if kept.is_some() {
            std::fs::write(&marker, b"").unwrap();
        }
    }

    let only = std::env::var("ANALYTICS_BENCH_ONLY").ok();
    if only.as_deref() != Some("export") {
        report(&app, &rules, orders, start).await;
    }
    if only.as_deref() != Some("report") {
        export(&app, &rules, orders).await;
    }
}

/// Times the report over the 90 days.
async fn report(app: &Orders, rules: &orderbridge::engine::Rules, orders: usize, start: DateTime<Utc>) {
    let (t, cpu) = (Instant::now(), cpu_s());
    let report = app.kpi_report(start, start + chrono::Duration::days(DAYS), &rules.sla.calendar).await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(report.kpis.orders as usize, orders);
    println!(
        "  report over {} orders: {secs:.2}s ({:.0} orders/s), CPU {:.2}s, {} variants, RSS {} MiB",
        report.kpis.orders,
        orders as f64 / secs,
        cpu_s() - cpu,
        report.process.variant_count,
        rss_mib()
    );
}

/// Times the export of every order as Parquet.
async fn export(app: &Orders, rules: &orderbridge::engine::Rules, orders: usize) {
    let out = tempfile::tempdir().unwrap();
    let (t, cpu) = (Instant::now(), cpu_s());
    let until = Utc::now() + chrono::Duration::days(1);
    let mut export =
        orderbridge::export::Export::begin(out.path(), orderbridge::export::write::Format::Parquet, None, until)
            .unwrap();
    let mut pages = app.export_pages(None, until, rules.sla.calendar.clone());
    while let Some(page) = pages.recv().await {
        let (rows, events) = page.unwrap();
        rows.into_iter().for_each(|r| export.order(r).unwrap());
        events.into_iter().for_each(|r| export.event(r).unwrap());
    }
    let done = export.finish().unwrap();
    let secs = t.elapsed().as_secs_f64();
    let bytes: u64 = done.files.iter().map(|f| std::fs::metadata(f).map_or(0, |m| m.len())).sum();
    println!(
        "  export of {} orders and {} events as Parquet: {secs:.2}s, CPU {:.2}s, {} files, {:.0} B/order, RSS {} MiB",
        done.orders,
        done.events,
        cpu_s() - cpu,
        done.files.len(),
        bytes as f64 / orders as f64,
        rss_mib()
    );
}

/// `orders` orders received evenly over the 90 days from `start`, each with its
/// effects performed.
async fn fill(app: &Arc<Orders>, rules: &Arc<orderbridge::engine::Rules>, orders: usize, start: DateTime<Utc>) {
    let order = sample_order();
    let step = chrono::Duration::days(DAYS) / i32::try_from(orders.max(1)).unwrap();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (app, rules, next, order) = (app.clone(), rules.clone(), next.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= orders {
                    return;
                }
                let at = start + step * i32::try_from(n).unwrap();
                app.ingest(inbound(&order, "A", n), &rules, at).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let far = start + chrono::Duration::days(DAYS + 1);
    loop {
        let due = app.store().due_effects(far, 512).await.unwrap();
        if due.is_empty() {
            return;
        }
        let mut done = Vec::new();
        for chunk in due.chunks(due.len().div_ceil(64)) {
            let (app, rules, chunk) = (app.clone(), rules.clone(), chunk.to_vec());
            done.push(tokio::spawn(async move {
                for e in chunk {
                    let outcome = EffectOutcome::Done { receipt: "HTTP 200".into(), reference: None };
                    app.finish_effect(&e, outcome, &rules, e.next_at).await.unwrap();
                }
            }));
        }
        for d in done {
            d.await.unwrap();
        }
    }
}
