//! `orderbridge audit anchor`: writes an audit anchor now (`crate::anchor`), on the
//! store itself when no daemon holds it, otherwise through the daemon's admin API,
//! and prints it as one JSON line, for an operator to keep off the machine.

use std::path::Path;

use anyhow::bail;

use super::Source;
use crate::orders::OrderError;

pub(super) async fn audit_anchor(dir: &Path) -> anyhow::Result<i32> {
    let src = Source::open(dir).await?;
    let v = match &src {
        Source::Store(_, archive) => {
            // Several daemons on one database: the anchor is written where the lease is.
            let lease = std::time::Duration::from_secs(60);
            if !archive.orders().store().try_lease(crate::anchor::LEASE, lease).await? {
                bail!("a daemon is writing audit anchors (it holds the `audit-anchor` lease); try again later");
            }
            let settings = crate::settings::Settings::load_with(dir, false)
                .map_err(|ds| anyhow::anyhow!(ds.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))?;
            match crate::anchor::write(archive, settings.audit_anchor_push.as_ref(), chrono::Utc::now()).await {
                Ok(a) => serde_json::to_value(a)?,
                Err(OrderError::Conflict(m)) => {
                    println!("audit anchor NOT written: {m}");
                    return Ok(1);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Source::Api { .. } => src.api(reqwest::Method::POST, "/audit/anchor").await?,
    };
    println!("{}", serde_json::to_string(&v)?);
    Ok(0)
}
