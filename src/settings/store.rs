//! `[store]`: which engine holds the orders and where (an embedded data directory or
//! a PostgreSQL URL, always a secret reference), and its tuning.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{Problems, SecretRef};
use crate::store::Backend;

/// The options of a PostgreSQL store at `url` with `[store]`'s defaults and claims
/// and leases of `lease`.
pub fn postgres_defaults(url: secrecy::SecretString, lease: Duration) -> crate::store::postgres::PgOptions {
    let s = RawStore::default();
    crate::store::postgres::PgOptions {
        url,
        max_connections: s.pool_size,
        acquire_timeout: Duration::from_secs(s.acquire_timeout_secs),
        statement_timeout: Duration::from_secs(s.statement_timeout_secs),
        lease,
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawStore {
    /// `fjall`, `redb` or `sled`: embedded engines, one process per data directory; or
    /// `postgres`: a PostgreSQL database (`url`), which several daemons may share. Unset:
    /// the engine of the store already at `path`, or `fjall` for a new one.
    pub(crate) backend: Option<String>,
    /// PostgreSQL only (required there): the database URL as a secret reference,
    /// `${ORDERBRIDGE_DATABASE_URL}` or `file:PATH`, holding `postgres://user:password@host:port/db`.
    pub(crate) url: Option<String>,
    /// PostgreSQL only: connections in the pool (1 to 1000).
    pub(crate) pool_size: u32,
    /// PostgreSQL only: how long a request waits for a pooled connection, or a new one
    /// to be made, before it fails (a webhook then answers 503), in seconds.
    pub(crate) acquire_timeout_secs: u64,
    /// PostgreSQL only: the server cancels a statement running longer, in seconds.
    pub(crate) statement_timeout_secs: u64,
    /// PostgreSQL only: how long an effect claim or a job lease lasts unless renewed,
    /// in seconds (at least 3). A replica renews its claims every third of it while
    /// a push runs; one that dies leaves its effects and jobs this long to the others.
    pub(crate) lease_secs: u64,
    /// Data directory of the embedded store, relative to the config dir unless absolute.
    pub(crate) path: PathBuf,
    /// The engine's cache, in MiB (fjall: block cache; sled: page cache, resident memory a few times this, sled #1309; redb: read cache and write buffer).
    pub(crate) cache_capacity_mb: u64,
    /// Group commit: how long the first waiting write waits for others before the
    /// flush + fsync that makes them all durable, in microseconds (0: flush at once).
    pub(crate) group_commit_delay_us: u64,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            backend: None,
            url: None,
            pool_size: 16,
            acquire_timeout_secs: 5,
            statement_timeout_secs: 30,
            lease_secs: 60,
            path: "data".into(),
            cache_capacity_mb: 16,
            group_commit_delay_us: 1000,
        }
    }
}

/// Resolves `store.path` against the configuration directory.
pub(super) fn path(s: &RawStore, config_dir: &Path) -> PathBuf {
    if s.path.is_absolute() { s.path.clone() } else { config_dir.join(&s.path) }
}

/// The store's options; `None` when the backend is not one we know (a problem then
/// says so).
pub(super) fn options(
    s: &RawStore,
    config_dir: &Path,
    strict: bool,
    p: &mut Problems<'_>,
) -> Option<crate::store::Options> {
    let store_path = path(s, config_dir);
    let backend = match s.backend.as_deref().map(str::parse::<Backend>) {
        Some(Ok(b)) => Some(b),
        Some(Err(e)) => {
            p.bad(&["store", "backend"], e);
            None
        }
        // The store that is there (a store written before the default changed
        // keeps its engine), or the default for a new one.
        None => Some(Backend::detect(&store_path).unwrap_or(Backend::DEFAULT)),
    };
    let postgres = postgres(s, backend, config_dir, strict, p);
    if !(1..=1000).contains(&s.pool_size) {
        p.bad(&["store", "pool_size"], "must be between 1 and 1000".into());
    }
    if s.acquire_timeout_secs == 0 {
        p.bad(&["store", "acquire_timeout_secs"], "must be at least 1".into());
    }
    if s.statement_timeout_secs == 0 {
        p.bad(&["store", "statement_timeout_secs"], "must be at least 1".into());
    }
    if s.group_commit_delay_us > 100_000 {
        p.bad(&["store", "group_commit_delay_us"], "must be at most 100000 (0.1 s)".into());
    }
    if s.cache_capacity_mb == 0 {
        p.bad(&["store", "cache_capacity_mb"], "must be at least 1".into());
    }
    Some(crate::store::Options {
        backend: backend?,
        path: store_path,
        cache_bytes: s.cache_capacity_mb * 1024 * 1024,
        commit_delay: Duration::from_micros(s.group_commit_delay_us),
        postgres,
    })
}

/// PostgreSQL's options: the URL is required there and refused elsewhere.
fn postgres(
    s: &RawStore,
    backend: Option<Backend>,
    config_dir: &Path,
    strict: bool,
    p: &mut Problems<'_>,
) -> Option<crate::store::postgres::PgOptions> {
    match (backend, s.url.as_deref()) {
        (Some(Backend::Postgres), None) => {
            p.bad(
                &["store", "url"],
                "required with backend = \"postgres\": a secret reference such as \"${ORDERBRIDGE_DATABASE_URL}\""
                    .into(),
            );
            None
        }
        (Some(Backend::Postgres), Some(url)) => match SecretRef::parse(url).and_then(|r| r.resolve(config_dir)) {
            Ok(secret) => {
                let o = crate::store::postgres::PgOptions {
                    url: secret,
                    max_connections: s.pool_size,
                    acquire_timeout: Duration::from_secs(s.acquire_timeout_secs),
                    statement_timeout: Duration::from_secs(s.statement_timeout_secs),
                    lease: Duration::from_secs(s.lease_secs.max(3)),
                };
                if s.lease_secs < 3 {
                    p.bad(&["store", "lease_secs"], "must be at least 3 (claims are renewed every third of it)".into());
                }
                if let Err(e) = o.connect_options() {
                    // The message names the reference, never the URL (it may hold a password).
                    p.bad(&["store", "url"], format!("{url}: {e}"));
                }
                Some(o)
            }
            Err(_) if !strict => None,
            Err(e) => {
                p.bad(&["store", "url"], e);
                None
            }
        },
        (_, Some(_)) => {
            p.bad(&["store", "url"], "only for backend = \"postgres\" (the embedded engines use store.path)".into());
            None
        }
        (_, None) => None,
    }
}
