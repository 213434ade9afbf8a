//! `orderbridge keys status | rotate | erase`: personal data's keys (`crate::vault`),
//! on the store itself when no daemon holds it, otherwise through the daemon's admin
//! API (`http::keys`).

use std::path::Path;

use anyhow::bail;
use clap::Subcommand;
use serde_json::{Value, json};

use super::Source;

#[derive(Subcommand, Debug)]
pub(crate) enum KeysCmd {
    /// How many orders' data keys each privacy key wraps, erased ones, and orders
    /// stored before encryption.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Rewrap every data key under `[privacy] active_key` (resumable: run it again).
    /// Afterwards a retired key can leave `[privacy] keys`.
    Rotate {
        #[arg(long)]
        json: bool,
    },
    /// Erase one order's personal data (a right-to-erasure request): its data key is
    /// deleted, and the order's chain records it.
    Erase {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

pub(super) async fn keys(dir: &Path, cmd: KeysCmd) -> anyhow::Result<i32> {
    let src = Source::open(dir).await?;
    match cmd {
        KeysCmd::Status { json } => {
            let s = match &src {
                Source::Store(orders, _) => serde_json::to_value(orders.vault().status().await?)?,
                Source::Api { .. } => src.api(reqwest::Method::GET, "/keys").await?,
            };
            print_status(&s, json)?;
            Ok(i32::from(s["missing"].as_array().is_some_and(|m| !m.is_empty())))
        }
        KeysCmd::Rotate { json } => {
            let r = match &src {
                Source::Store(orders, _) => serde_json::to_value(orders.vault().rotate().await?)?,
                Source::Api { .. } => src.api(reqwest::Method::POST, "/keys/rotate").await?,
            };
            print_rotated(&r, json)?;
            Ok(i32::from(r["locked"].as_array().is_some_and(|l| !l.is_empty())))
        }
        KeysCmd::Erase { id, reason } => {
            if reason.trim().is_empty() {
                bail!("--reason: an erasure needs a reason (e.g. the request's reference)");
            }
            let erased = match &src {
                Source::Store(orders, _) => {
                    let by = format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()));
                    let actor = crate::engine::Actor::Person(by);
                    let e = orders.erase_personal_data(id.parse()?, reason.trim(), actor, chrono::Utc::now()).await?;
                    serde_json::to_value(e)?
                }
                Source::Api { .. } => {
                    let path = format!("/orders/{id}/erase-personal-data");
                    src.api_with(reqwest::Method::POST, &path, Some(&json!({"reason": reason.trim()}))).await?["erased"]
                        .take()
                }
            };
            if erased.is_null() {
                println!("order {id}: nothing to erase (already erased, or stored before encryption)");
            } else {
                println!("order {id}: personal data erased ({})", erased["reason"].as_str().unwrap_or(""));
            }
            Ok(0)
        }
    }
}

fn print_status(s: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    println!("active key: {}", s["active"].as_str().unwrap_or("(none: personal data is stored in clear)"));
    let missing: Vec<&str> = s["missing"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    for (k, n) in s["by_key"].as_object().into_iter().flatten() {
        let note = if missing.contains(&k.as_str()) { " (not configured: these orders cannot be read)" } else { "" };
        println!("  {k}: {n} data keys{note}");
    }
    println!("erased: {}; stored before encryption: {}", s["erased"], s["without_key"]);
    Ok(())
}

fn print_rotated(r: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    println!(
        "rewrapped {} data keys under `{}`; {} already were; {} erased; {} orders stored before encryption",
        r["rewrapped"],
        r["active"].as_str().unwrap_or("?"),
        r["current"],
        r["erased"],
        r["without_key"]
    );
    for l in r["locked"].as_array().into_iter().flatten() {
        println!(
            "  order {}: wrapped under `{}`, which is not configured",
            l[0].as_str().unwrap_or("?"),
            l[1].as_str().unwrap_or("?")
        );
    }
    Ok(())
}
