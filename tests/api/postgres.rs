//! PostgreSQL for the tests: `scripts/test.sh` starts a throwaway cluster and exports
//! its URL as `ORDERBRIDGE_TEST_DATABASE_URL`; each test takes a database of its own
//! from it (`fresh_database`), so tests run in parallel. A test that needs PostgreSQL
//! fails without it: a missing server must not pass as green.

use std::time::Duration;

use orderbridge::store::postgres::PgOptions;
use sqlx::Connection;

pub const URL_VAR: &str = "ORDERBRIDGE_TEST_DATABASE_URL";

/// The test cluster's URL (its maintenance database).
///
/// # Panics
/// When `ORDERBRIDGE_TEST_DATABASE_URL` is not set.
pub fn cluster_url() -> String {
    std::env::var(URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{URL_VAR} is not set: this test needs PostgreSQL. Run it through scripts/test.sh, or \
             `source scripts/test-postgres.sh` first (it starts a throwaway cluster under target/pg)"
        )
    })
}

/// The URL of `url`'s server with another database.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let server = base.rsplit_once('/').map_or(base, |(s, _)| s);
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

/// Creates an empty database of its own on the test cluster and returns how to reach it.
pub async fn fresh_database() -> PgOptions {
    let url = cluster_url();
    let name = format!("orderbridge_test_{:016x}", fastrand::u64(..));
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();
    admin.close().await.unwrap();
    options(with_database(&url, &name))
}

pub fn options(url: String) -> PgOptions {
    PgOptions {
        url: url.into(),
        max_connections: 4,
        acquire_timeout: Duration::from_secs(10),
        statement_timeout: Duration::from_secs(30),
        lease: Duration::from_secs(60),
    }
}

/// The daemon on PostgreSQL end to end: webhooks are acknowledged once committed,
/// the dispatcher pushes each effect once, the CLI reads the same database while the
/// daemon runs, and `orderbridge migrate` finds the schema current.
#[tokio::test]
async fn the_daemon_runs_on_postgres() {
    use crate::helpers::*;
    use secrecy::ExposeSecret;

    let pg = fresh_database().await;
    let secret = tempfile::tempdir().unwrap();
    let url_file = secret.path().join("url");
    std::fs::write(&url_file, pg.url.expose_secret()).unwrap();
    // In the file: the CLI below runs on this directory too.
    let store: [(&str, toml::Value); 2] =
        [("store.backend", "postgres".into()), ("store.url", format!("file:{}", url_file.display()).into())];
    let erp = Receiver::start().await;
    let app = TestApp::builder().erp(erp.clone()).only_approval().files(move |d| set_in_file(d, &store)).start().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (s, b) = app.post_webhook(&deal(&format!("PG-{i}"), 1, "8000.00")).await;
        assert_eq!((s, b["state"].as_str()), (202, Some("approved")), "{b}");
        ids.push(b["order_id"].as_str().unwrap().to_owned());
    }
    // The same order again is the same order (invariant 4, through the external-id table).
    let (s, b) = app.post_webhook(&deal("PG-0", 1, "8000.00")).await;
    assert_eq!((s, b["order_id"].as_str(), b["duplicate"].as_bool()), (202, Some(ids[0].as_str()), Some(true)), "{b}");
    app.drain_outbox().await;
    let accepted = erp.accepted_per_key();
    assert_eq!(accepted.len(), 3, "{accepted:?}");
    assert!(accepted.values().all(|&n| n == 1), "{accepted:?}");

    let bin = bin();
    let dir = app.dir.path().to_owned();
    let run = move |args: &'static [&'static str]| {
        let (bin, dir) = (bin.clone(), dir.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(bin).args(args).arg("--config-dir").arg(dir).output().unwrap()
        })
    };
    let out = run(&["audit", "verify"]).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("3 orders"), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["migrate"]).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("up to date"), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains(pg.url.expose_secret()));
}

/// `store copy` from fjall into PostgreSQL and back: orders in several states with
/// their events, a pending effect and a dead letter, a payment and an unmatched one;
/// the copy verifies, the CLI on PostgreSQL lists the same, the indexes were derived
/// (invoice number, customer, external id), and the copy back to a new embedded store
/// is the same again.
#[tokio::test]
async fn store_copy_moves_an_embedded_store_into_postgres_and_back() {
    use crate::helpers::*;
    use secrecy::ExposeSecret;
    use serde_json::{Value, json};

    let erp = Receiver::start().await;
    let app = TestApp::builder().erp(erp.clone()).start().await;
    // Invoiced, partly paid; a payment for an unknown invoice waits for an operator.
    let (_, b) = app.post_webhook(&deal("D-PGC-INV", 1, "8000.00")).await;
    let invoiced = b["order_id"].as_str().unwrap().to_owned();
    crate::cash::deliver(&app, &invoiced).await;
    app.api_post_json_as("sun.li", &format!("/orders/{invoiced}/acceptance"), &json!({"decision": "accept"})).await;
    wait_until("invoiced", || async { app.order(&invoiced).await["state"] == "invoiced" }).await;
    let number = app.order(&invoiced).await["fulfilment"]["invoice"]["number"].as_str().unwrap().to_owned();
    let pay = |id: &str, invoice: &str| json!({"payment_id": id, "amount": {"amount": "3000.00", "currency": "CNY"}, "invoice_number": invoice});
    let (s, b) = app.api_post_json("/payments", &pay("P-1", &number)).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = app.api_post_json("/payments", &pay("P-2", "INV-NOPE")).await;
    assert_eq!((s, b["matched"].as_bool()), (202, Some(false)), "{b}");
    // Waiting for approval.
    let (_, b) = app.post_webhook(&deal("D-PGC-BIG", 1, "1250000.00")).await;
    assert_eq!(b["state"], "awaiting_approval", "{b}");
    // A dead letter (the ERP refuses), then a pending effect (the ERP is down).
    erp.set_refuse(true);
    let (_, b) = app.post_webhook(&deal("D-PGC-DEAD", 1, "100.00")).await;
    assert_eq!(b["state"], "executing", "{b}");
    app.drain_outbox().await;
    erp.set_refuse(false);
    erp.set_down(true);
    app.post_webhook(&deal("D-PGC-PENDING", 1, "200.00")).await;
    // Its other effects are done; the ERP's waits (the dispatcher runs beside intake).
    wait_until("only the ERP's effect waits", || async {
        app.api("/outbox").await.1["effects"].as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    let dir = app.stop_and_release().await;

    let cli = |args: Vec<String>, env: Vec<(&'static str, String)>| {
        let (bin, dir) = (bin(), dir.path().to_owned());
        async move {
            tokio::task::spawn_blocking(move || {
                let out = std::process::Command::new(bin)
                    .args(&args)
                    .arg("--config-dir")
                    .arg(dir)
                    .envs(env)
                    .output()
                    .unwrap();
                let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
                (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), text)
            })
            .await
            .unwrap()
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    // What the CLI lists of a store: orders (id, state), pending and dead effect ids.
    let listing = |env: Vec<(&'static str, String)>| {
        let cli = &cli;
        async move {
            let mut got = Vec::new();
            for what in
                [&["orders", "list", "--json"][..], &["outbox", "list", "--json"], &["outbox", "dead", "--json"]]
            {
                let (code, out, text) = cli(args(what), env.clone()).await;
                assert_eq!(code, Some(0), "{what:?}: {text}");
                let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
                let mut rows: Vec<String> = rows.iter().map(|r| format!("{} {}", r["id"], r["state"])).collect();
                rows.sort();
                got.push(rows);
            }
            got
        }
    };
    let source = listing(vec![]).await;
    assert_eq!(source[0].len(), 4, "{source:?}");
    assert_eq!((source[1].len(), source[2].len()), (1, 1), "{source:?}");

    // Into PostgreSQL.
    let pg = fresh_database().await;
    let url_file = dir.path().join("target-url");
    std::fs::write(&url_file, pg.url.expose_secret()).unwrap();
    let to_url = format!("file:{}", url_file.display());
    let copy = args(&["store", "copy", "--to-backend", "postgres", "--to-url", &to_url]);
    let (code, out, text) = cli(copy.clone(), vec![]).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(out.contains("1 dead letters") && out.contains("2 payments (1 unmatched)"), "{out}");
    assert!(out.contains("audit intact on the copy: 4 orders"), "{out}");
    assert!(!text.contains(pg.url.expose_secret()), "{text}");
    let (code, _, text) = cli(copy, vec![]).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("already holds data"), "{text}");

    let on_pg =
        vec![("ORDERBRIDGE__STORE__BACKEND", "postgres".to_owned()), ("ORDERBRIDGE__STORE__URL", to_url.clone())];
    assert_eq!(listing(on_pg.clone()).await, source);
    let (code, out, text) = cli(args(&["audit", "verify"]), on_pg.clone()).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(out.contains("4 orders"), "{out}");
    {
        use orderbridge::store::Store;
        let store = orderbridge::store::postgres::PgStore::open(&pg).await.unwrap();
        let id: orderbridge::domain::OrderId = invoiced.parse().unwrap();
        assert_eq!(store.invoice_order(&number).await.unwrap(), Some(id));
        assert!(store.payment("api", "P-1").await.unwrap().is_some());
        let waiting = store.unmatched_payments().await.unwrap();
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].payment.payment_id, "P-2");
        let rec = store.order(id).await.unwrap().unwrap();
        assert_eq!(store.find_external(&rec.source).await.unwrap(), Some(id));
        assert!(
            store.customer_orders(rec.order.customer.id.as_str(), None).await.unwrap().iter().any(|(o, _)| *o == id)
        );
        assert_eq!(store.counts().pending, 1);
        assert_eq!(store.counts().dead, 1);
    }

    // And back, from PostgreSQL into a new embedded store: not while a daemon holds a
    // job lease on the database.
    let back = dir.path().join("back");
    let copy_back = args(&["store", "copy", "--to-backend", "redb", "--to-path", back.to_str().unwrap()]);
    let admin = orderbridge::store::postgres::connect(&pg).await.unwrap();
    let lease = "INSERT INTO job_leases (name, holder, until) VALUES ('scheduler', 'h1', now() + interval '1 hour')";
    sqlx::query(lease).execute(&admin).await.unwrap();
    let (code, _, text) = cli(copy_back.clone(), on_pg.clone()).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("holds the lease on `scheduler`"), "{text}");
    assert!(!back.exists() || std::fs::read_dir(&back).unwrap().next().is_none(), "nothing written");
    sqlx::query("DELETE FROM job_leases").execute(&admin).await.unwrap();
    let (code, out, text) = cli(copy_back, on_pg).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(out.contains("audit intact on the copy: 4 orders") && out.contains("(1 unmatched)"), "{out}");
    let on_back = vec![
        ("ORDERBRIDGE__STORE__BACKEND", "redb".to_owned()),
        ("ORDERBRIDGE__STORE__PATH", back.to_str().unwrap().to_owned()),
    ];
    assert_eq!(listing(on_back).await, source);
}
