//! `orderbridge bench`: a load generator. Posts signed `demo-crm` webhooks at a given
//! concurrency to a running daemon and prints accepted orders/s, acknowledgement
//! latency percentiles and the daemon's resident memory (from `/proc/PID/status`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use secrecy::SecretString;

use crate::connectors::signature::StandardWebhooks;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Base URL of the daemon.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Connector to post to.
    #[arg(long, default_value = "demo-crm")]
    pub connector: String,
    /// The connector's webhook secret (`whsec_…`).
    #[arg(long, env = "DEMO_CRM_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Orders to post.
    #[arg(long, default_value_t = 20_000)]
    pub orders: u64,
    /// The daemon's process id, to report its memory.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Prefix of the generated external ids (use a new one per run for new orders).
    #[arg(long, default_value = "BENCH")]
    pub prefix: String,
    /// Also serve a sink on this address that answers 200 to every push (point the
    /// ERP connector's base_url at it), and report how many effects it received.
    #[arg(long)]
    pub sink: Option<std::net::SocketAddr>,
}

/// A receiver that accepts every push, counting them.
async fn start_sink(addr: std::net::SocketAddr, count: Arc<AtomicU64>) -> anyhow::Result<()> {
    let app = axum::Router::new().fallback(move || {
        let count = count.clone();
        async move {
            count.fetch_add(1, Ordering::Relaxed);
            "{}"
        }
    });
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding sink {addr}"))?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(())
}

const TEMPLATE: &str = include_str!("../tests/fixtures/demo-crm-deal.json");

fn payload(prefix: &str, n: u64) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_str(TEMPLATE).expect("fixture is JSON");
    v["deal"]["id"] = format!("{prefix}-{n}").into();
    v["deal"]["version"] = 1.into();
    // One customer per order: the duplicate rule would flag a repeat purchase.
    v["deal"]["customer"]["id"] = format!("{prefix}-C{n}").into();
    // Spread amounts so orders take different routes (auto-approved, one or two levels).
    v["deal"]["amount"] = format!("{}.00", 1_000 + (n * 7_919) % 3_000_000).into();
    serde_json::to_vec(&v).expect("serialises")
}

/// `VmHWM` (peak) and `VmRSS` (current) of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// Cores and CPU model, for benchmark reports.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cores} cores, {cpu}")
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    crate::connectors::install_crypto_provider();
    let pushed = Arc::new(AtomicU64::new(0));
    if let Some(addr) = args.sink {
        start_sink(addr, pushed.clone()).await?;
    }
    let signer =
        Arc::new(StandardWebhooks::new(&SecretString::from(args.secret.clone()), 300).map_err(|e| anyhow::anyhow!(e))?);
    let client =
        reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).timeout(Duration::from_secs(30)).build()?;
    let url = format!("{}/webhooks/{}", args.url.trim_end_matches('/'), args.connector);
    let next = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = args.pid.map(|pid| {
        let (peak, stop) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some((_, rss)) = rss_kib(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    });

    println!("bench: {} orders to {url} at concurrency {} ({})", args.orders, args.concurrency, machine());
    let started = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let progress = {
        let (done, stop, pushed) = (done.clone(), stop.clone(), pushed.clone());
        tokio::spawn(async move {
            let (mut last, mut at) = (0, Instant::now());
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if at.elapsed() >= Duration::from_secs(10) {
                    let now = done.load(Ordering::Relaxed);
                    println!(
                        "  {:>9} accepted, {:>6.0} orders/s over the last {:.0}s, {} effects pushed",
                        now,
                        (now - last) as f64 / at.elapsed().as_secs_f64(),
                        at.elapsed().as_secs_f64(),
                        pushed.load(Ordering::Relaxed)
                    );
                    (last, at) = (now, Instant::now());
                }
            }
        })
    };
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (client, url, next, failures, signer, prefix, done) = (
            client.clone(),
            url.clone(),
            next.clone(),
            failures.clone(),
            signer.clone(),
            args.prefix.clone(),
            done.clone(),
        );
        let total = args.orders;
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let body = payload(&prefix, n);
                let id = format!("msg_{prefix}_{n}");
                let ts = chrono::Utc::now().timestamp();
                let sig = signer.sign(&id, ts, &body);
                let t = Instant::now();
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", ts.to_string())
                    .header("webhook-signature", sig)
                    .body(body)
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed());
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        if failures.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("bench: HTTP {}: {}", r.status(), r.text().await.unwrap_or_default());
                        }
                    }
                    Err(e) => {
                        if failures.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("bench: {e}");
                        }
                    }
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for w in workers {
        lat.extend(w.await.context("worker")?);
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    if let Some(s) = sampler {
        let _ = s.await;
    }
    let _ = progress.await;
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or_default()
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "accepted:   {} orders in {:.2}s = {:.0} orders/s",
        lat.len(),
        elapsed.as_secs_f64(),
        lat.len() as f64 / elapsed.as_secs_f64()
    );
    println!("failed:     {}", failures.load(Ordering::Relaxed));
    println!(
        "ack latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(lat.last().copied().unwrap_or_default())
    );
    if args.sink.is_some() {
        println!("effects pushed to the sink during the run: {}", pushed.load(Ordering::Relaxed));
    }
    if let Some(pid) = args.pid
        && let Some((hwm, rss)) = rss_kib(pid)
    {
        println!(
            "daemon RSS: now {:.1} MiB, peak during run {:.1} MiB, process peak (VmHWM) {:.1} MiB",
            rss as f64 / 1024.0,
            peak.load(Ordering::Relaxed) as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
    }
    Ok(())
}
