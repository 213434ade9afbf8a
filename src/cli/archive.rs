//! `orderbridge archive run | hold | release`: on the store itself when no daemon
//! holds it, otherwise through the daemon's admin API.

use std::path::Path;

use anyhow::bail;
use serde_json::{Value, json};

use super::{ArchiveCmd, Source};

pub(super) async fn archive(dir: &Path, cmd: ArchiveCmd) -> anyhow::Result<i32> {
    let src = Source::open(dir).await?;
    let by = format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()));
    let now = chrono::Utc::now();
    let (v, json_out) = match (&src, cmd) {
        (Source::Store(_, a), ArchiveCmd::Run { json }) => {
            // Several daemons on one database: the pass runs where the lease is.
            if !a.orders().store().try_lease("archive", std::time::Duration::from_secs(60)).await? {
                bail!("a daemon is running the archive sweep (it holds the `archive` lease); try again later");
            }
            (serde_json::to_value(a.run(&by, now).await?)?, json)
        }
        (Source::Store(_, a), ArchiveCmd::Hold { id, reason }) => {
            if reason.trim().is_empty() {
                bail!("--reason: a legal hold needs a reason");
            }
            let e = a.hold(id.parse()?, Some(reason.trim()), &by, now).await?;
            (json!({"order_id": id, "segment": e.segment, "legal_hold": e.hold}), false)
        }
        (Source::Store(_, a), ArchiveCmd::Release { id }) => {
            let e = a.hold(id.parse()?, None, &by, now).await?;
            (json!({"order_id": id, "segment": e.segment, "legal_hold": e.hold}), false)
        }
        (Source::Api { .. }, ArchiveCmd::Run { json }) => (src.api(reqwest::Method::POST, "/archive/run").await?, json),
        (Source::Api { .. }, ArchiveCmd::Hold { id, reason }) => {
            let path = format!("/orders/{id}/legal-hold");
            (src.api_with(reqwest::Method::POST, &path, Some(&json!({"reason": reason}))).await?, false)
        }
        (Source::Api { .. }, ArchiveCmd::Release { id }) => {
            (src.api(reqwest::Method::DELETE, &format!("/orders/{id}/legal-hold")).await?, false)
        }
    };
    print(&v, json_out)?;
    Ok(0)
}

fn print(v: &Value, json_out: bool) -> anyhow::Result<()> {
    if json_out {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else if v.get("archived").is_some() {
        println!(
            "archived {} orders in {} new segments; purged {}; removed {} orphaned segments; {} left for the next pass",
            v["archived"], v["segments_written"], v["purged"], v["orphans_removed"], v["skipped"]
        );
    } else if let Some(h) = v["legal_hold"].as_object() {
        println!(
            "order {} is under a legal hold: {}",
            v["order_id"].as_str().unwrap_or("?"),
            h["reason"].as_str().unwrap_or("")
        );
    } else {
        println!("order {}: legal hold released", v["order_id"].as_str().unwrap_or("?"));
    }
    Ok(())
}
