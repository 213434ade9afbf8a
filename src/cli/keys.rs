//! `orderbridge keys status | rotate | erase`: personal data's keys (`crate::vault`),
//! on the store itself. A running daemon holds an embedded store: it rewraps data
//! keys itself at start once `[privacy] active_key` changed, and erases after
//! `retain_years`; PostgreSQL can be worked on beside running daemons.

use std::path::Path;

use anyhow::bail;
use clap::Subcommand;

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
    let Source::Store(orders, _) = Source::open(dir).await? else {
        bail!(
            "the daemon holds the store: stop it to run `keys` here (it rewraps data keys itself at start once \
             [privacy] active_key changed, and erases personal data after [privacy] retain_years)"
        );
    };
    let vault = orders.vault();
    match cmd {
        KeysCmd::Status { json } => {
            let s = vault.status().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!("active key: {}", s.active.as_deref().unwrap_or("(none: personal data is stored in clear)"));
                for (k, n) in &s.by_key {
                    let note =
                        if s.missing.contains(k) { " (not configured: these orders cannot be read)" } else { "" };
                    println!("  {k}: {n} data keys{note}");
                }
                println!("erased: {}; stored before encryption: {}", s.erased, s.without_key);
            }
            Ok(i32::from(!s.missing.is_empty()))
        }
        KeysCmd::Rotate { json } => {
            let r = vault.rotate().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "rewrapped {} data keys under `{}`; {} already were; {} erased; {} orders stored before encryption",
                    r.rewrapped, r.active, r.current, r.erased, r.without_key
                );
                for (id, k) in &r.locked {
                    println!("  order {id}: wrapped under `{k}`, which is not configured");
                }
            }
            Ok(i32::from(!r.locked.is_empty()))
        }
        KeysCmd::Erase { id, reason } => {
            if reason.trim().is_empty() {
                bail!("--reason: an erasure needs a reason (e.g. the request's reference)");
            }
            let by = format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()));
            let actor = crate::engine::Actor::Person(by);
            match orders.erase_personal_data(id.parse()?, reason.trim(), actor, chrono::Utc::now()).await? {
                Some(e) => println!("order {}: personal data erased ({})", e.order_id, e.reason),
                None => println!("order {id}: nothing to erase (already erased, or stored before encryption)"),
            }
            Ok(0)
        }
    }
}
