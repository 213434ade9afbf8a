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
    let store = format!("backend = \"postgres\"\nurl = \"file:{}\"\n", url_file.display());
    let erp = Receiver::start().await;
    let app = spawn_outbox_app(erp.clone(), &[("backend = \"fjall\"\n", &store)]).await;
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
