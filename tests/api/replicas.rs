//! Several daemons on one PostgreSQL database (the built binary, as in `crash.rs`):
//! under load through all of them, and with one SIGKILLed and restarted, every
//! acknowledged order is stored once and every ERP push reaches the receiver once per
//! idempotency key; daemons starting together on an empty database all come up.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::Value;

use crate::crash::try_signed_post;
use crate::helpers::*;
use crate::postgres::fresh_database;

/// A daemon configuration in `dir` on the database `url`, with short leases so that a
/// killed daemon's claims lapse within seconds.
fn write_replica_config(dir: &Path, erp: SocketAddr, url: &str) {
    write_replica_config_with(dir, erp, url, &[("store.lease_secs", toml::Value::Integer(3))]);
}

/// Like `write_replica_config`, with `store` (dotted keys) set in the file too.
fn write_replica_config_with(dir: &Path, erp: SocketAddr, url: &str, store: &[(&str, toml::Value)]) {
    let url_file = dir.join("database-url");
    std::fs::write(&url_file, url).unwrap();
    write_config(dir, erp);
    set_in_file(
        dir,
        &[("store.backend", "postgres".into()), ("store.url", format!("file:{}", url_file.display()).into())],
    );
    set_in_file(dir, store);
}

/// Posts orders to `addr` until `stop` (or the daemon is gone); records each
/// acknowledged one as external id → order id.
fn post_until(
    addr: SocketAddr,
    tag: String,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<HashMap<String, String>>>,
) -> tokio::task::JoinHandle<()> {
    let client = client();
    tokio::spawn(async move {
        for n in 0.. {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let ext = format!("R{tag}-{n}");
            // Most are auto-approved (an ERP push each); some wait for approval.
            let amount = if n % 4 == 3 { "2500000.00" } else { "9000.00" };
            match try_signed_post(&client, addr, "/webhooks/demo-crm", &deal(&ext, 1, amount)).await {
                Ok((202, v)) => {
                    if let Some(o) = v["order_id"].as_str() {
                        acked.lock().unwrap().insert(ext, o.to_owned());
                    }
                }
                // The database is unreachable: nothing was acknowledged; the sender retries.
                Ok((503, _)) => tokio::time::sleep(Duration::from_millis(50)).await,
                Ok((s, v)) => panic!("unexpected answer {s} from {addr}: {v}"),
                Err(_) => return, // the daemon was killed
            }
        }
    })
}

/// Checks every acknowledged order is stored once under its id and returns the ids
/// of the orders that push to the ERP (approved, now executing).
async fn check_orders(admin: SocketAddr, acked: &HashMap<String, String>) -> Vec<String> {
    let client = client();
    let mut stored: HashMap<String, Vec<Value>> = HashMap::new();
    for o in all_orders(&client, admin, "").await {
        stored.entry(o["source"]["external_id"].as_str().unwrap().to_owned()).or_default().push(o);
    }
    let twice: Vec<&String> = stored.iter().filter(|(_, os)| os.len() > 1).map(|(e, _)| e).collect();
    assert!(twice.is_empty(), "external ids stored as more than one order: {twice:?}");
    for (ext, id) in acked {
        let o = stored.get(ext).unwrap_or_else(|| panic!("acknowledged order {ext} ({id}) was lost"));
        assert_eq!(o[0]["id"].as_str(), Some(id.as_str()));
    }
    let audit = daemon_api(&client, admin, "/audit/verify").await;
    assert_eq!(audit["intact"], true, "hash chains verify: {audit}");
    all_orders(&client, admin, "&state=executing").await.iter().map(|o| o["id"].as_str().unwrap().to_owned()).collect()
}

/// The order an ERP push's idempotency key belongs to.
fn order_of(key: &str) -> String {
    key.trim_start_matches("orderbridge:").split('.').next().unwrap().to_owned()
}

async fn wait_delivered(erp: &Receiver, expected: &[String]) {
    wait_until("every ERP push is delivered", || {
        let done: std::collections::HashSet<String> = erp.accepted_per_key().keys().map(|k| order_of(k)).collect();
        let all = expected.iter().all(|id| done.contains(id));
        async move { all }
    })
    .await;
}

/// Three daemons on one database, webhooks through all three at once. First with no
/// kill: every push exactly once. Then one daemon is SIGKILLed and restarted twice
/// under load: every acknowledged order is there once, every push arrives, and a push
/// arrives twice only if it was in flight on the killed daemon (its answer came back
/// after the kill, so the outcome was never recorded: the same idempotency key, which
/// the receiver dedupes), never because two live daemons both sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_on_one_database_push_each_effect_once() {
    let pg = fresh_database().await;
    let erp = Receiver::start().await;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    for d in &dirs {
        write_replica_config(d.path(), erp.addr, pg.url.expose_secret());
    }
    let mut daemons: Vec<Daemon> = dirs.iter().map(|d| start_daemon(d.path(), &[])).collect();
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();

    // Load through all three, no kill.
    let stop = Arc::new(AtomicBool::new(false));
    let posters: Vec<_> =
        (0..6).map(|w| post_until(daemons[w % 3].addr, format!("a{w}"), stop.clone(), acked.clone())).collect();
    wait_until("some orders are acknowledged", || {
        let n = acked.lock().unwrap().len();
        async move { n >= 150 }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for p in posters {
        p.await.unwrap();
    }
    let so_far = acked.lock().unwrap().clone();
    let expected = check_orders(daemons[1].admin, &so_far).await;
    wait_delivered(&erp, &expected).await;
    let accepted = erp.accepted_per_key();
    let twice: Vec<_> = accepted.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "three live daemons pushed an effect more than once: {twice:?}");
    assert_eq!(accepted.len(), expected.len(), "one push per approved order, no phantom effects");
    let deliveries_before_kills = erp.deliveries().len();

    // Under load, daemon 0 is SIGKILLed and restarted, twice.
    for kill in 0..2 {
        let stop = Arc::new(AtomicBool::new(false));
        let posters: Vec<_> = (0..6)
            .map(|w| post_until(daemons[w % 3].addr, format!("k{kill}-{w}"), stop.clone(), acked.clone()))
            .collect();
        tokio::time::sleep(Duration::from_millis(fastrand::u64(300..1200))).await;
        daemons[0].child.kill().expect("SIGKILL");
        daemons[0].child.wait().unwrap();
        daemons[0] = start_daemon(dirs[0].path(), &[]);
        tokio::time::sleep(Duration::from_millis(fastrand::u64(200..600))).await;
        stop.store(true, Ordering::SeqCst);
        for p in posters {
            p.await.unwrap();
        }
    }

    let acked = acked.lock().unwrap().clone();
    let expected = check_orders(daemons[2].admin, &acked).await;
    wait_delivered(&erp, &expected).await;
    let deliveries = erp.deliveries();
    assert!(deliveries.iter().all(|d| d.status == 200));
    let accepted = erp.accepted_per_key();
    assert_eq!(accepted.len(), expected.len(), "one key per approved order, no phantom effects");
    // A repeat is only ever an effect the killed daemon had in flight: at most its
    // dispatcher's concurrency per kill, each once more per kill. One in flight at the
    // first kill, taken again when its claim lapsed and in flight again at the second
    // is pushed three times (seen once in CI); never more than once per kill and once.
    let repeated: Vec<_> = accepted.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.iter().all(|(_, n)| **n <= 3), "an effect pushed more than once per kill and once: {repeated:?}");
    assert!(repeated.len() <= 2 * 16, "more repeats than effects in flight at the kills: {repeated:?}");
    eprintln!(
        "three daemons: {} orders acknowledged, {} pushes ({} after the first phase), {} repeated after a kill",
        acked.len(),
        deliveries.len(),
        deliveries.len() - deliveries_before_kills,
        repeated.len()
    );
}

/// Two daemons starting at once on an empty database both come up: the schema is
/// applied once, under sqlx's migration lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_starting_together_on_an_empty_database_both_come_up() {
    let pg = fresh_database().await;
    let erp = Receiver::start().await;
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    for d in &dirs {
        write_replica_config(d.path(), erp.addr, pg.url.expose_secret());
    }
    let starting: Vec<_> = dirs
        .iter()
        .map(|d| {
            let p = d.path().to_owned();
            tokio::task::spawn_blocking(move || start_daemon(&p, &[]))
        })
        .collect();
    let mut daemons = Vec::new();
    for s in starting {
        daemons.push(s.await.unwrap());
    }
    let client = client();
    for d in &daemons {
        wait_until("the daemon is ready", || {
            let client = client.clone();
            let url = format!("http://{}/readyz", d.admin);
            async move { client.get(url).send().await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
    }
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(pg.url.expose_secret()).await.unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version").fetch_all(&mut db).await.unwrap();
    let expected: Vec<i64> = orderbridge::store::postgres::MIGRATOR.iter().map(|m| m.version).collect();
    assert_eq!(versions, expected, "each migration applied once");
    // Both take orders on the same database.
    for (i, d) in daemons.iter().enumerate() {
        let (s, b) = try_signed_post(&client, d.addr, "/webhooks/demo-crm", &deal(&format!("TWO-{i}"), 1, "9000.00"))
            .await
            .unwrap();
        assert_eq!(s, 202, "{b}");
    }
    assert_eq!(all_orders(&client, daemons[0].admin, "").await.len(), 2);
}

/// A PostgreSQL cluster of one test's own (the shared test cluster must not restart
/// under the other tests): initdb in a temporary directory, on a free loopback port.
/// As root it runs as `postgres`, as `scripts/test-postgres.sh` does.
struct Cluster {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Cluster {
    fn pg(&self, tool: &str) -> std::process::Command {
        let root = is_root();
        let mut c = if root {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(tool));
            c
        } else {
            std::process::Command::new(self.bin.join(tool))
        };
        c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        c
    }

    fn init() -> Cluster {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed (scripts/test-postgres.sh installs it)")
            .map(|e| e.unwrap().path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("a PostgreSQL server under /usr/lib/postgresql");
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let ok = std::process::Command::new("chown").arg("postgres:").arg(dir.path()).status().unwrap();
            assert!(ok.success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let c = Cluster { bin, dir, port };
        let data = c.dir.path().join("data");
        let ok = c
            .pg("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"])
            .status()
            .unwrap();
        assert!(ok.success(), "initdb");
        c.start();
        c
    }

    fn start(&self) {
        let dir = self.dir.path();
        let ok = self
            .pg("pg_ctl")
            .arg("-D")
            .arg(dir.join("data"))
            .arg("-l")
            .arg(dir.join("server.log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!("-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off", self.port, dir.display()))
            .arg("start")
            .status()
            .unwrap();
        assert!(ok.success(), "pg_ctl start");
    }

    /// Stops the server the way a crash would (no checkpoint): it recovers from its WAL.
    fn crash(&self) {
        let ok =
            self.pg("pg_ctl").arg("-D").arg(self.dir.path().join("data")).args(["-m", "immediate", "stop"]).status();
        assert!(ok.unwrap().success(), "pg_ctl stop");
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ =
            self.pg("pg_ctl").arg("-D").arg(self.dir.path().join("data")).args(["-m", "immediate", "stop"]).status();
    }
}

fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

async fn ready(client: &reqwest::Client, admin: SocketAddr) -> u16 {
    client.get(format!("http://{admin}/readyz")).send().await.map_or(0, |r| r.status().as_u16())
}

/// PostgreSQL crashes and comes back while two daemons take orders: meanwhile
/// webhooks get 503 and `/readyz` says not ready; the daemons keep running and
/// reconnect; no acknowledged order is lost and every push reaches the receiver once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarting_under_load_loses_nothing_and_repeats_nothing() {
    let cluster = tokio::task::spawn_blocking(Cluster::init).await.unwrap();
    let erp = Receiver::start().await;
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    for d in &dirs {
        // A lease longer than the outage: an outcome waiting to be recorded keeps its claim.
        write_replica_config_with(
            d.path(),
            erp.addr,
            &cluster.url(),
            &[("store.lease_secs", toml::Value::Integer(30)), ("store.acquire_timeout_secs", toml::Value::Integer(2))],
        );
    }
    let daemons: Vec<Daemon> = dirs.iter().map(|d| start_daemon(d.path(), &[])).collect();
    let client = client();
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let posters: Vec<_> =
        (0..4).map(|w| post_until(daemons[w % 2].addr, format!("pg{w}"), stop.clone(), acked.clone())).collect();
    let at_least = |n: usize| {
        let acked = acked.clone();
        move || {
            let done = acked.lock().unwrap().len() >= n;
            async move { done }
        }
    };
    wait_until("orders are acknowledged before the outage", at_least(60)).await;

    let cluster = Arc::new(cluster);
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.crash()).await.unwrap();
    let (s, b) =
        try_signed_post(&client, daemons[0].addr, "/webhooks/demo-crm", &deal("PG-DOWN", 1, "9000.00")).await.unwrap();
    assert_eq!(s, 503, "a webhook while the database is down: {b}");
    assert_eq!(ready(&client, daemons[1].admin).await, 503, "not ready while the database is down");
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.start()).await.unwrap();
    for d in &daemons {
        wait_until("the daemon is ready again", || {
            let client = client.clone();
            async move { ready(&client, d.admin).await == 200 }
        })
        .await;
    }
    let before = acked.lock().unwrap().len();
    wait_until("orders are acknowledged after the outage", at_least(before + 60)).await;
    stop.store(true, Ordering::SeqCst);
    for p in posters {
        p.await.unwrap();
    }

    let acked = acked.lock().unwrap().clone();
    let expected = check_orders(daemons[0].admin, &acked).await;
    wait_delivered(&erp, &expected).await;
    let accepted = erp.accepted_per_key();
    let twice: Vec<_> = accepted.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "pushed more than once across the outage: {twice:?}");
    assert_eq!(accepted.len(), expected.len(), "one push per approved order");
    for d in &daemons {
        let log = d.log.lock().unwrap();
        assert!(!log.iter().any(|l| l.contains("stopping")), "the daemon kept running");
    }
}

/// Two daemons on one database, one clock: when an approval reminder comes due, both
/// sweep (their schedulers, and here also `run_timers` called on both at once,
/// past the lease), yet the reminder fires once and each approver gets one mail
/// (a real SMTP server): the step that lost the race reloads the order and finds the
/// timer no longer due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_due_on_two_daemons_is_mailed_once() {
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-30T10:00:00+08:00").unwrap().with_timezone(&chrono::Utc);
    let clock = ManualClock::new(start);
    let pg = fresh_database().await;
    let smtp = SmtpServer::start(&[]);
    let erp = Receiver::start().await;
    let mut apps = Vec::new();
    for _ in 0..2 {
        let app = TestApp::builder()
            .erp(erp.clone())
            .clock(clock.clock())
            .mail(&smtp)
            .settings(on_postgres(pg.url.expose_secret(), 3))
            .start()
            .await;
        apps.push(app);
    }
    let (s, b) = apps[0].post_webhook(&deal("D-TWO-SLA", 1, "500000.00")).await;
    assert_eq!(s, 202, "{b}");
    let id: orderbridge::domain::OrderId = b["order_id"].as_str().unwrap().parse().unwrap();
    apps[1].drain_outbox().await;
    let reminders_to =
        |addr: &str| smtp.messages().into_iter().filter(|m| m.rcpt() == [addr] && m.subject().contains("提醒")).count();
    let fired = || async {
        let events = apps[0].state.store.events(id).await.unwrap();
        events.iter().filter(|e| e.event.name() == "approval_reminder_due").count()
    };

    // 14:01 (SLA 8 working hours; the reminder at half of it): due on both.
    clock.advance(chrono::Duration::minutes(4 * 60 + 1));
    let (a, b) = (&apps[0].state, &apps[1].state);
    let (ra, rb) = tokio::join!(a.orders.run_timers(&a.rules, clock.now()), b.orders.run_timers(&b.rules, clock.now()));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(ra + rb <= 1, "fired on both: {ra} + {rb}");
    wait_until("the reminder fires", || async { fired().await == 1 }).await;
    wait_until("reminders are mailed", || async {
        reminders_to("wang.fang@bank.example") == 1 && reminders_to("zhao.lei@bank.example") == 1
    })
    .await;
    for app in &apps {
        assert_eq!(app.state.orders.run_timers(&app.state.rules, clock.now()).await.unwrap(), 0, "never twice");
        app.drain_outbox().await;
    }
    assert_eq!(fired().await, 1);
    assert_eq!((reminders_to("wang.fang@bank.example"), reminders_to("zhao.lei@bank.example")), (1, 1));
}
