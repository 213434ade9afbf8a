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
    let url_file = dir.join("database-url");
    std::fs::write(&url_file, url).unwrap();
    let store = format!("backend = \"postgres\"\nurl = \"file:{}\"\nlease_secs = 3\n", url_file.display());
    write_config(dir, erp, &[("backend = \"fjall\"\n", &store)]);
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
    // dispatcher's concurrency per kill, each at most twice.
    let repeated: Vec<_> = accepted.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.iter().all(|(_, n)| **n == 2), "an effect pushed more than twice: {repeated:?}");
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
