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
    }
}
