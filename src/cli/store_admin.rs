//! The store's schema and copies: `migrate`, `store copy`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use secrecy::ExposeSecret;

use crate::metrics::Metrics;
use crate::orders::Orders;
use crate::settings::Settings;
use crate::store::StoreError;

pub(super) async fn migrate(dir: &Path) -> anyhow::Result<i32> {
    let settings = Settings::load_with(dir, true)
        .map_err(|ds| anyhow::anyhow!(ds.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))?;
    match &settings.store.postgres {
        Some(pg) => {
            let (now, all) = crate::store::postgres::migrate(pg).await.context("migrating PostgreSQL")?;
            let list = |v: &[i64]| v.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            if now.is_empty() {
                println!("the PostgreSQL schema is up to date (migrations {})", list(&all));
            } else {
                println!("applied migrations {} (the database now has {})", list(&now), list(&all));
            }
        }
        None => {
            // Opening an embedded store upgrades its layout in place.
            let options = crate::store::Options { commit_delay: std::time::Duration::ZERO, ..settings.store.clone() };
            match crate::store::open(&options, Arc::new(Metrics::default())).await {
                Err(StoreError::Locked(_)) => {
                    bail!("the store is in use (is the daemon running?); it upgrades its layout when it opens")
                }
                other => other.context("opening the store")?,
            };
            println!("the {} store at {} has the current layout", options.backend.name(), options.path.display());
        }
    }
    Ok(0)
}

pub(super) async fn store_copy(
    dir: &Path,
    to_backend: Option<String>,
    to_path: Option<PathBuf>,
    to_url: Option<String>,
) -> anyhow::Result<i32> {
    use crate::store::{Backend, postgres::PgOptions};
    let settings = Settings::load_with(dir, false)
        .map_err(|ds| anyhow::anyhow!(ds.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))?;
    let from = settings.store.clone();
    if !crate::store::exists(&from) {
        bail!("no store at {} (is --config-dir right? store.path is relative to it)", from.path.display());
    }
    let backend = match to_backend {
        Some(b) => b.parse().map_err(|e: String| anyhow::anyhow!(e))?,
        None => from.backend,
    };
    let to = if backend == Backend::Postgres {
        let Some(url) = to_url else {
            bail!("--to-backend postgres needs --to-url '${{ENV_NAME}}' (or file:PATH) naming the target database")
        };
        let url = crate::settings::SecretRef::parse(&url)
            .and_then(|r| r.resolve(dir))
            .map_err(|e| anyhow::anyhow!("--to-url: {e}"))?;
        if from.postgres.as_ref().is_some_and(|p| p.url.expose_secret() == url.expose_secret()) {
            bail!("the target must be another database than the store itself");
        }
        let base = from.postgres.clone().unwrap_or(PgOptions {
            url: url.clone(),
            max_connections: 4,
            acquire_timeout: std::time::Duration::from_secs(5),
            statement_timeout: std::time::Duration::from_secs(30),
            lease: std::time::Duration::from_secs(60),
        });
        crate::store::Options { backend, postgres: Some(PgOptions { url, ..base }), ..from.clone() }
    } else {
        let Some(path) = to_path else { bail!("--to-backend {} needs --to-path DIR", backend.name()) };
        if path == from.path {
            bail!("the target must be another directory than the store itself");
        }
        crate::store::Options { backend, path, postgres: None, ..from.clone() }
    };
    let metrics = Arc::new(Metrics::default());
    let name = |o: &crate::store::Options| {
        if o.backend.is_embedded() { o.path.display().to_string() } else { "the database".to_owned() }
    };
    let (from_name, to_name) = (name(&from), name(&to));
    let copied = copy(&from, &to, &settings.archive.dir, &metrics).await?;
    println!("copied {copied} from {from_name} ({}) to {to_name} ({})", from.backend.name(), to.backend.name());
    // The copy's own handle on the target is closed; sled lets its file lock go a
    // moment later, so a lock still held by this process is waited for, briefly.
    let mut attempts = 0;
    let target = loop {
        match crate::store::open(&to, metrics.clone()).await {
            Err(StoreError::Locked(_)) if attempts < 100 => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => break other?,
        }
    };
    let orders = Orders::new(target);
    let r = orders.verify_audit().await?;
    for q in &r.quarantined {
        println!("audit NOT VERIFIABLE on the copy: {} is quarantined ({})", q.what, q.error);
    }
    match r.broken {
        None if !r.quarantined.is_empty() => Ok(1),
        None => {
            println!("audit intact on the copy: {} orders, {} events verified", r.orders, r.events);
            Ok(0)
        }
        Some((o, seq, why)) => {
            println!("audit BROKEN on the copy at order {o} event {seq}: {why}");
            Ok(1)
        }
    }
}

/// Copies the store `from` into `to`: raw rows between embedded engines, records to
/// or from PostgreSQL (archived orders' external ids read from their segments under
/// `archive`). What it copied, as text.
async fn copy(
    from: &crate::store::Options,
    to: &crate::store::Options,
    archive: &Path,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<String> {
    Ok(if from.backend.is_embedded() && to.backend.is_embedded() {
        match crate::store::copy(from, to, metrics.clone()).await {
            Err(StoreError::Locked(_)) => bail!("a store is in use (is the daemon running?); stop it before copying"),
            other => other.context("copying the store")?,
        }
        .to_string()
    } else {
        let source = |id, e: &crate::store::ArchiveEntry| crate::archive::archived_source(archive, id, e);
        match crate::store::dump::copy(from, to, metrics.clone(), &source).await {
            Err(e @ StoreError::Locked(_)) => bail!("{e}; stop it before copying"),
            other => other.context("copying the store")?,
        }
        .to_string()
    })
}
