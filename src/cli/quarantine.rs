//! `store quarantine resolve`: the row put back from a copy of a backup, or given
//! up, by a person for a reason (`crate::orders::quarantine` decides; the store
//! records). Through the daemon's admin API when it holds the store.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::Source;
use crate::orders::Resolve;

pub(super) async fn resolve(
    dir: &Path,
    row: &str,
    by: &str,
    reason: &str,
    from: Option<PathBuf>,
) -> anyhow::Result<i32> {
    let what = crate::orders::quarantined_row(row);
    let src = Source::open(dir).await?;
    let resolved: Value = match &src {
        Source::Store(orders, _) => {
            let how = match &from {
                Some(path) => Resolve::Restore {
                    from: crate::store::open_backup(path)
                        .await
                        .with_context(|| format!("opening the backup copy at {}", path.display()))?,
                },
                None => Resolve::Discard,
            };
            let result = orders.resolve_quarantined(&what, how.clone(), by, reason, chrono::Utc::now()).await;
            if let Resolve::Restore { from } = how {
                from.close().await.context("closing the backup copy")?;
            }
            serde_json::to_value(result?)?
        }
        Source::Api { .. } => {
            let from = from.map(|p| std::path::absolute(&p).unwrap_or(p));
            let body = json!({"row": what, "by": by, "reason": reason, "discard": from.is_none(), "from": from});
            src.api_with(reqwest::Method::POST, "/store/quarantine/resolve", Some(&body)).await?["resolved"].clone()
        }
    };
    let r = &resolved["resolved"];
    println!(
        "{} {} by {}: {}",
        resolved["what"].as_str().unwrap_or(&what),
        r["outcome"].as_str().unwrap_or("resolved"),
        r["by"].as_str().unwrap_or(by),
        r["reason"].as_str().unwrap_or(reason)
    );
    Ok(0)
}
