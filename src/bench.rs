//! `orderbridge bench`: a load generator. Posts signed `demo-crm` webhooks at a given
//! concurrency to a running daemon and prints accepted orders/s, acknowledgement
//! latency percentiles and the daemon's resident memory (from `/proc/PID/status`).
//!
//! With `--wrk-pool FILE` it posts nothing and writes a pool of pre-signed requests
//! instead, for an external load generator (wrk with `bench/peers/orderbridge.lua`):
//! every request carries its own external id and a valid Standard Webhooks signature,
//! so the daemon does the full work for each one instead of answering "duplicate".

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use secrecy::SecretString;

use crate::connectors::signature::StandardWebhooks;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Base URL of the daemon.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub(crate) url: String,
    /// Connector to post to.
    #[arg(long, default_value = "demo-crm")]
    pub(crate) connector: String,
    /// The connector's webhook secret (`whsec_…`).
    #[arg(long, env = "DEMO_CRM_SECRET", hide_env_values = true)]
    pub(crate) secret: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    pub(crate) concurrency: usize,
    /// Orders to post.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) orders: u64,
    /// The daemon's process id, to report its memory.
    #[arg(long)]
    pub(crate) pid: Option<u32>,
    /// Prefix of the generated external ids (use a new one per run for new orders).
    #[arg(long, default_value = "BENCH")]
    pub(crate) prefix: String,
    /// Also serve a sink on this address that answers 200 to every push (point the
    /// ERP connector's base_url at it), and report how many effects it received.
    #[arg(long)]
    pub(crate) sink: Option<std::net::SocketAddr>,
    /// Post nothing: write `--orders` pre-signed requests to FILE for wrk
    /// (`bench/peers/orderbridge.lua` reads the format) and exit. Signed now, so use
    /// the pool within the connector's `tolerance_secs`.
    #[arg(long, value_name = "FILE")]
    pub(crate) wrk_pool: Option<PathBuf>,
    /// With `--wrk-pool`: the JSON body to sign (default: the demo-crm fixture).
    #[arg(long, value_name = "FILE", requires = "wrk_pool")]
    pub(crate) body: Option<PathBuf>,
    /// With `--wrk-pool`: JSON pointer (RFC 6901) to a text value of the body that gets
    /// a suffix `-<prefix>-<n>` unique per request; repeat for several values. One of
    /// them must be what the mapping takes as the external id. Default with the
    /// demo-crm fixture: `/deal/id` and `/deal/customer/id`.
    #[arg(long, value_name = "POINTER", requires = "wrk_pool")]
    pub(crate) vary: Vec<String>,
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

/// The fixture with markers where each request's values go, serialised once: a
/// request's body is three replacements, so the load generator spends its CPU on
/// sending, not on building JSON.
struct Payloads {
    text: String,
}

impl Payloads {
    fn new() -> Payloads {
        let mut v: serde_json::Value = serde_json::from_str(TEMPLATE).expect("fixture is JSON");
        v["deal"]["id"] = "@@ID@@".into();
        v["deal"]["version"] = 1.into();
        v["deal"]["customer"]["id"] = "@@CUSTOMER@@".into();
        v["deal"]["amount"] = "@@AMOUNT@@".into();
        Payloads { text: serde_json::to_string(&v).expect("serialises") }
    }

    fn body(&self, prefix: &str, n: u64) -> Vec<u8> {
        self.text
            .replace("@@ID@@", &format!("{prefix}-{n}"))
            // One customer per order: the duplicate rule would flag a repeat purchase.
            .replace("@@CUSTOMER@@", &format!("{prefix}-C{n}"))
            // Spread amounts so orders take different routes (auto-approved, one or two levels).
            .replace("@@AMOUNT@@", &format!("{}.00", 1_000 + (n * 7_919) % 3_000_000))
            .into_bytes()
    }
}

/// Latencies counted in buckets, so recording a million of them costs a fixed
/// 450 KiB instead of 16 MB (a process measuring its own memory, as the store bench
/// does, would otherwise count its record of latencies too). Buckets are exact
/// below 2 048 µs and a 1 024th of the value wide above; shared by every sender.
pub struct Latencies {
    buckets: Box<[AtomicU64]>,
    max: AtomicU64,
}

/// Sub-buckets per power of two: the relative width of a bucket is `1 / 2^SUB`.
const SUB: u32 = 10;

impl Default for Latencies {
    fn default() -> Self {
        let n = ((64 - SUB as usize) << SUB) + (1 << SUB);
        Latencies { buckets: (0..n).map(|_| AtomicU64::new(0)).collect(), max: AtomicU64::new(0) }
    }
}

impl Latencies {
    fn bucket(us: u64) -> usize {
        let shift = (64 - us.leading_zeros()).saturating_sub(SUB + 1);
        ((u64::from(shift) << SUB) + (us >> shift)) as usize
    }

    /// The least value of bucket `i`, µs.
    fn lower(i: usize) -> u64 {
        let shift = (i >> SUB).saturating_sub(1) as u32;
        ((i - ((shift as usize) << SUB)) as u64) << shift
    }

    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.buckets[Self::bucket(us)].fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(us, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The latency below which a fraction `q` of the recorded ones fall (the least
    /// value of its bucket: at most a 1 024th under the true one).
    pub fn quantile(&self, q: f64) -> Duration {
        let n = self.count();
        if n == 0 {
            return Duration::ZERO;
        }
        let rank = ((n as f64 * q) as u64).min(n - 1);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen > rank {
                return Duration::from_micros(Self::lower(i));
            }
        }
        self.max()
    }

    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max.load(Ordering::Relaxed))
    }
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

/// CPU time (user + system) a process has used so far, from `/proc/PID/stat`.
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = pid.map_or_else(|| "/proc/self/stat".to_owned(), |p| format!("/proc/{p}/stat"));
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // In USER_HZ, which Linux fixes at 100 on every architecture we build for.
    Some(Duration::from_millis(ticks * 10))
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

/// Stands for the per-request suffix in the body template of a wrk pool.
const POOL_PLACEHOLDER: &str = "@@N@@";
const POOL_MAGIC: &str = "orderbridge-wrk-pool 1";
const POOL_ID_PREFIX: &str = "msg_";

/// Turns `body` into a template where each value at `pointers` (text) ends in
/// `-<POOL_PLACEHOLDER>`. The rest of the bytes stay as written, so the requests are the
/// same size and shape as the original file.
///
/// # Errors
/// When the body is not JSON, a pointer selects no text, or a value cannot be found
/// exactly once in the text.
pub(crate) fn pool_template(body: &str, pointers: &[String]) -> anyhow::Result<String> {
    let doc: serde_json::Value = serde_json::from_str(body).context("the body is not JSON")?;
    anyhow::ensure!(!pointers.is_empty(), "name at least one value to vary (--vary /json/pointer)");
    anyhow::ensure!(!body.contains(POOL_PLACEHOLDER), "the body already contains {POOL_PLACEHOLDER}");
    let mut template = body.to_owned();
    let mut expected = doc.clone();
    for p in pointers {
        let value = doc
            .pointer(p)
            .and_then(serde_json::Value::as_str)
            .with_context(|| format!("--vary {p}: the body has no text value there"))?;
        let quoted = serde_json::to_string(value)?;
        let found = template.matches(&quoted).count();
        anyhow::ensure!(
            found == 1,
            "--vary {p}: its value {quoted} occurs {found} times in the body text; it must occur exactly once"
        );
        let suffixed = format!("{}-{POOL_PLACEHOLDER}\"", &quoted[..quoted.len() - 1]);
        template = template.replacen(&quoted, &suffixed, 1);
        *expected.pointer_mut(p).expect("selected above") = format!("{value}-{POOL_PLACEHOLDER}").into();
    }
    // Only the named values may have changed (a value could equal a key's text).
    let back: serde_json::Value = serde_json::from_str(&template).context("template is not JSON")?;
    anyhow::ensure!(back == expected, "varying the values changed other parts of the body");
    Ok(template)
}

/// Writes a pool of `count` requests: a header, the body template, then one line
/// `<suffix> <webhook-signature>` per request. Request `n` has the suffix
/// `<prefix>-<n>` in the body and `webhook-id` `msg_<suffix>`; all share `timestamp`.
///
/// # Errors
/// When the file cannot be written.
pub(crate) fn write_wrk_pool(
    path: &Path,
    template: &str,
    signer: &StandardWebhooks,
    prefix: &str,
    count: u64,
    timestamp: i64,
) -> anyhow::Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    write!(
        out,
        "{POOL_MAGIC}\ntimestamp {timestamp}\nwebhook-id-prefix {POOL_ID_PREFIX}\nplaceholder {POOL_PLACEHOLDER}\nbody-bytes {}\n{template}\n",
        template.len()
    )?;
    for n in 0..count {
        let suffix = format!("{prefix}-{n}");
        let body = template.replace(POOL_PLACEHOLDER, &suffix);
        let sig = signer.sign(&format!("{POOL_ID_PREFIX}{suffix}"), timestamp, body.as_bytes());
        writeln!(out, "{suffix} {sig}")?;
    }
    out.flush().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn wrk_pool(args: &BenchArgs, path: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.prefix.is_empty() && args.prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "--prefix must be letters, digits, - or _ (it goes into ids and a header)"
    );
    let (body, vary) = match &args.body {
        Some(file) => {
            (std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?, args.vary.clone())
        }
        None if args.vary.is_empty() => (TEMPLATE.to_owned(), vec!["/deal/id".into(), "/deal/customer/id".into()]),
        None => (TEMPLATE.to_owned(), args.vary.clone()),
    };
    let template = pool_template(&body, &vary)?;
    let signer =
        StandardWebhooks::new(&SecretString::from(args.secret.clone()), 300).map_err(|e| anyhow::anyhow!(e))?;
    let timestamp = chrono::Utc::now().timestamp();
    let started = Instant::now();
    write_wrk_pool(path, &template, &signer, &args.prefix, args.orders, timestamp)?;
    println!(
        "wrk pool: {} requests signed at {timestamp} in {:.1}s -> {} (ids {}-0 …)",
        args.orders,
        started.elapsed().as_secs_f64(),
        path.display(),
        args.prefix
    );
    Ok(())
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.wrk_pool {
        return wrk_pool(&args, path);
    }
    crate::connectors::install_crypto_provider();
    let pushed = Arc::new(AtomicU64::new(0));
    if let Some(addr) = args.sink {
        start_sink(addr, pushed.clone()).await?;
    }
    let signer =
        Arc::new(StandardWebhooks::new(&SecretString::from(args.secret.clone()), 300).map_err(|e| anyhow::anyhow!(e))?);
    let url = format!("{}/webhooks/{}", args.url.trim_end_matches('/'), args.connector);
    let parsed = reqwest::Url::parse(&url).with_context(|| format!("--url {}", args.url))?;
    anyhow::ensure!(parsed.scheme() == "http", "--url must be plain http (the bench writes HTTP/1.1 itself)");
    let host = parsed.host_str().context("--url has no host")?;
    let addr = format!("{host}:{}", parsed.port_or_known_default().unwrap_or(80));
    let head = format!("POST {} HTTP/1.1\r\nhost: {addr}\r\n", parsed.path());
    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = args.pid.map(|pid| spawn_sampler(pid, peak.clone(), stop.clone()));

    println!("bench: {} orders to {url} at concurrency {} ({})", args.orders, args.concurrency, machine());
    let cpu_before = (args.pid.and_then(|p| cpu_time(Some(p))), cpu_time(None));
    let started = Instant::now();
    let sender = Sender {
        addr,
        head: head.into(),
        signer,
        prefix: args.prefix.clone(),
        total: args.orders,
        payloads: Arc::new(Payloads::new()),
        next: Arc::new(AtomicU64::new(0)),
        failures: Arc::new(AtomicU64::new(0)),
        done: Arc::new(AtomicU64::new(0)),
        lat: Arc::new(Latencies::default()),
    };
    let progress = spawn_progress(sender.done.clone(), stop.clone(), pushed.clone());
    let workers: Vec<_> = (0..args.concurrency).map(|_| tokio::spawn(sender.clone().send_all())).collect();
    for w in workers {
        w.await.context("worker")?;
    }
    let elapsed = started.elapsed();
    let cpu_after = (args.pid.and_then(|p| cpu_time(Some(p))), cpu_time(None));
    stop.store(true, Ordering::Relaxed);
    if let Some(s) = sampler {
        let _ = s.await;
    }
    let _ = progress.await;
    let failures = sender.failures.load(Ordering::Relaxed);
    let report =
        Report { lat: sender.lat, elapsed, failures, cpu_before, cpu_after, peak: peak.load(Ordering::Relaxed) };
    report.print(&args, pushed.load(Ordering::Relaxed));
    Ok(())
}

/// Samples the daemon's resident memory every 200 ms, keeping the peak.
fn spawn_sampler(pid: u32, peak: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            if let Some((_, rss)) = rss_kib(pid) {
                peak.fetch_max(rss, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// Prints the rate every 10 s while the run lasts.
fn spawn_progress(done: Arc<AtomicU64>, stop: Arc<AtomicBool>, pushed: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
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
}

/// One of `concurrency` senders: posts signed orders until `total` are taken.
#[derive(Clone)]
struct Sender {
    /// The daemon's address, and the request line and `Host` header of every post.
    addr: String,
    head: Arc<str>,
    signer: Arc<StandardWebhooks>,
    prefix: String,
    total: u64,
    payloads: Arc<Payloads>,
    /// The next order number to send, shared by all senders.
    next: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    /// Orders accepted (202).
    done: Arc<AtomicU64>,
    /// Latency of each accepted order.
    lat: Arc<Latencies>,
}

impl Sender {
    /// Sends until every order is taken.
    async fn send_all(self) {
        let mut conn: Option<Conn> = None;
        let mut request = Vec::new();
        loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            if n >= self.total {
                break;
            }
            let body = self.payloads.body(&self.prefix, n);
            let id = format!("msg_{}_{n}", self.prefix);
            let ts = chrono::Utc::now().timestamp();
            let sig = self.signer.sign(&id, ts, &body);
            request.clear();
            let _ = write!(
                request,
                "{}content-type: application/json\r\nwebhook-id: {id}\r\nwebhook-timestamp: {ts}\r\n\
                 webhook-signature: {sig}\r\ncontent-length: {}\r\n\r\n",
                self.head,
                body.len()
            );
            request.extend_from_slice(&body);
            let t = Instant::now();
            let answer = match conn.as_mut() {
                Some(c) => c.exchange(&request).await,
                None => match Conn::open(&self.addr).await {
                    Ok(c) => conn.insert(c).exchange(&request).await,
                    Err(e) => Err(e),
                },
            };
            match answer {
                Ok((202, _)) => {
                    self.lat.record(t.elapsed());
                    self.done.fetch_add(1, Ordering::Relaxed);
                }
                Ok((status, text)) => {
                    if self.failures.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("bench: HTTP {status}: {}", String::from_utf8_lossy(&text));
                    }
                }
                Err(e) => {
                    conn = None;
                    if self.failures.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("bench: {e}");
                    }
                }
            }
        }
    }
}

/// One keep-alive HTTP/1.1 connection, written and read by hand: the load generator
/// shares the machine with the daemon, so it should spend its CPU on requests, not on
/// a client library's pools and URL parsing (wrk does the same). It reads answers
/// with a `content-length`, as the daemon gives them.
struct Conn {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: &str) -> std::io::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, buf: Vec::with_capacity(4096) })
    }

    /// Writes one request and reads its answer: the status and the body.
    async fn exchange(&mut self, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
        tokio::time::timeout(Duration::from_secs(30), async {
            self.stream.write_all(request).await?;
            self.buf.clear();
            loop {
                if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = std::str::from_utf8(&self.buf[..end]).map_err(|_| bad("a header that is not UTF-8"))?;
                    let status: u16 =
                        head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("no status line"))?;
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
                        })
                        .ok_or_else(|| bad("an answer without content-length"))?;
                    let total = end + 4 + length;
                    while self.buf.len() < total {
                        if self.stream.read_buf(&mut self.buf).await? == 0 {
                            return Err(bad("the connection closed mid-answer"));
                        }
                    }
                    return Ok((status, self.buf[end + 4..total].to_vec()));
                }
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    return Err(bad("the connection closed"));
                }
            }
        })
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 30 s"))?
    }
}

/// What one run measured.
struct Report {
    /// Latency of each accepted order.
    lat: Arc<Latencies>,
    elapsed: Duration,
    failures: u64,
    /// CPU time of (the daemon, this process) before and after.
    cpu_before: (Option<Duration>, Option<Duration>),
    cpu_after: (Option<Duration>, Option<Duration>),
    /// Peak resident memory of the daemon during the run, KiB.
    peak: u64,
}

impl Report {
    fn print(&self, args: &BenchArgs, pushed: u64) {
        let (lat, accepted) = (&self.lat, self.lat.count());
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "accepted:   {} orders in {:.2}s = {:.0} orders/s",
            accepted,
            self.elapsed.as_secs_f64(),
            accepted as f64 / self.elapsed.as_secs_f64()
        );
        println!("failed:     {}", self.failures);
        println!(
            "ack latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms(lat.quantile(0.50)),
            ms(lat.quantile(0.99)),
            ms(lat.max())
        );
        if args.sink.is_some() {
            println!("effects pushed to the sink during the run: {pushed}");
        }
        let per_order = |before: Option<Duration>, after: Option<Duration>| {
            before.zip(after).map(|(b, a)| (a.saturating_sub(b)).as_secs_f64() * 1e6 / accepted.max(1) as f64)
        };
        if let Some(daemon) = per_order(self.cpu_before.0, self.cpu_after.0) {
            print!("CPU per accepted order: daemon {daemon:.0} µs");
            if let Some(own) = per_order(self.cpu_before.1, self.cpu_after.1) {
                print!(", load generator (with the sink) {own:.0} µs");
            }
            println!();
        }
        if let Some(pid) = args.pid
            && let Some((hwm, rss)) = rss_kib(pid)
        {
            println!(
                "daemon RSS: now {:.1} MiB, peak during run {:.1} MiB, process peak (VmHWM) {:.1} MiB",
                rss as f64 / 1024.0,
                self.peak as f64 / 1024.0,
                hwm as f64 / 1024.0
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn latencies_give_the_quantiles_of_a_sorted_list_within_a_thousandth() {
        let lat = Latencies::default();
        assert_eq!(lat.quantile(0.99), Duration::ZERO, "nothing recorded");
        // 1 µs to 100 s, in an order that is not sorted.
        let all: Vec<u64> = (0..100_000u64).map(|i| 1 + (i * 7_919 % 100_000) * 1_000).collect();
        all.iter().for_each(|&us| lat.record(Duration::from_micros(us)));
        let mut sorted = all.clone();
        sorted.sort_unstable();
        assert_eq!(lat.count(), 100_000);
        for q in [0.0, 0.5, 0.9, 0.99, 0.999] {
            let exact = sorted[(sorted.len() as f64 * q) as usize];
            let got = lat.quantile(q).as_micros() as u64;
            assert!(got <= exact && exact - got <= exact / 1_024, "q {q}: {got} µs against {exact} µs");
        }
        assert_eq!(lat.max(), Duration::from_micros(*sorted.last().unwrap()));
        // Exact below 2 048 µs, and the extremes have a bucket.
        let small = Latencies::default();
        [3, 2_047, 2_047, 9].iter().for_each(|&us| small.record(Duration::from_micros(us)));
        assert_eq!(small.quantile(0.5), Duration::from_micros(2_047));
        assert_eq!(small.quantile(0.0), Duration::from_micros(3));
        small.record(Duration::MAX);
        assert_eq!(small.count(), 5);
    }

    #[test]
    fn template_varies_only_the_named_values_and_keeps_the_bytes() {
        let body = "{\n  \"record\": { \"Id\": \"006A\", \"Account\": {\"Id\": \"001B\"}, \"Note\": \"Id\" }\n}\n";
        let t = pool_template(body, &["/record/Id".into(), "/record/Account/Id".into()]).unwrap();
        assert_eq!(
            t,
            "{\n  \"record\": { \"Id\": \"006A-@@N@@\", \"Account\": {\"Id\": \"001B-@@N@@\"}, \"Note\": \"Id\" }\n}\n"
        );
    }

    #[test]
    fn template_refuses_what_it_cannot_vary_safely() {
        let twice = r#"{"a": "x", "b": "x"}"#;
        let e = pool_template(twice, &["/a".into()]).unwrap_err().to_string();
        assert!(e.contains("occurs 2 times"), "{e}");
        let e = pool_template(r#"{"a": 1}"#, &["/a".into()]).unwrap_err().to_string();
        assert!(e.contains("no text value"), "{e}");
        let e = pool_template(r#"{"a": "x"}"#, &[]).unwrap_err().to_string();
        assert!(e.contains("at least one"), "{e}");
        // A value equal to a key's text: replacing it would change the key.
        let e = pool_template(r#"{"x": "y", "k": "x"}"#, &["/k".into()]).unwrap_err().to_string();
        assert!(e.contains("occurs 2 times"), "{e}");
    }

    /// Reads the pool as bench/peers/orderbridge.lua does and checks that every request
    /// passes the daemon's verifier and carries its own external id.
    #[test]
    fn pool_requests_verify_and_are_distinct() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool");
        let signer = StandardWebhooks::new(&SecretString::from(SECRET.to_owned()), 300).unwrap();
        let template = pool_template(TEMPLATE, &["/deal/id".into()]).unwrap();
        let ts = chrono::Utc::now().timestamp();
        write_wrk_pool(&path, &template, &signer, "r1w0", 50, ts).unwrap();

        let raw = std::fs::read(&path).unwrap();
        let mut rest = &raw[..];
        let mut header = Vec::new();
        while header.len() < 5 {
            let end = rest.iter().position(|&b| b == b'\n').unwrap();
            header.push(String::from_utf8(rest[..end].to_vec()).unwrap());
            rest = &rest[end + 1..];
        }
        assert_eq!(header[0], POOL_MAGIC);
        assert_eq!(header[1], format!("timestamp {ts}"));
        assert_eq!(header[2], "webhook-id-prefix msg_");
        assert_eq!(header[3], "placeholder @@N@@");
        let len: usize = header[4].strip_prefix("body-bytes ").unwrap().parse().unwrap();
        let tmpl = std::str::from_utf8(&rest[..len]).unwrap().to_owned();
        assert_eq!(rest[len], b'\n');
        let entries = std::str::from_utf8(&rest[len + 1..]).unwrap();
        let mut ids = std::collections::HashSet::new();
        for entry in entries.lines() {
            let (suffix, sig) = entry.split_once(' ').unwrap();
            let body = tmpl.replace("@@N@@", suffix);
            let mut h = HeaderMap::new();
            h.insert("webhook-id", HeaderValue::from_str(&format!("msg_{suffix}")).unwrap());
            h.insert("webhook-timestamp", HeaderValue::from_str(&ts.to_string()).unwrap());
            h.insert("webhook-signature", HeaderValue::from_str(sig).unwrap());
            signer.verify(&h, body.as_bytes(), ts + 299).unwrap();
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert!(ids.insert(v["deal"]["id"].as_str().unwrap().to_owned()));
        }
        assert_eq!(ids.len(), 50);
        assert!(ids.contains("D-10042-r1w0-49"));
    }
}
