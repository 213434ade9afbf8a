//! Read and repair commands over orders, the audit, the outbox and quarantined rows.

use std::path::Path;

use serde_json::Value;

use crate::engine::Actor;
use crate::store::EffectId;

use super::*;

/// A page of orders from the store, each as the API shows it (personal data opened).
async fn listed(orders: &crate::orders::Orders, state: Option<&str>, limit: usize) -> anyhow::Result<Vec<Value>> {
    let mut rows = Vec::new();
    for rec in orders.store().list(state, None, limit).await? {
        let mut v = crate::view::order_json(&rec);
        orders.vault().reveal_order_doc(&mut v).await?;
        rows.push(v);
    }
    Ok(rows)
}

pub(super) async fn orders(dir: &Path, cmd: OrdersCmd) -> anyhow::Result<i32> {
    let src = Source::open(dir).await?;
    match cmd {
        OrdersCmd::List { state, limit, json } => {
            let rows: Vec<Value> = match &src {
                Source::Store(s, _) => listed(s, state.as_deref(), limit).await?,
                Source::Api { .. } => {
                    let q = state.map(|s| format!("&state={s}")).unwrap_or_default();
                    let v = src.api(reqwest::Method::GET, &format!("/orders?limit={limit}{q}")).await?;
                    v["orders"].as_array().cloned().unwrap_or_default()
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{:<37} {:<18} {:<28} {:>20}  CUSTOMER", "ORDER", "STATE", "SOURCE", "AMOUNT");
                for r in &rows {
                    println!(
                        "{:<37} {:<18} {:<28} {:>16} {}  {}",
                        r["id"].as_str().unwrap_or(""),
                        r["state"].as_str().unwrap_or(""),
                        format!(
                            "{}/{}",
                            r["source"]["connector"].as_str().unwrap_or(""),
                            r["source"]["external_id"].as_str().unwrap_or("")
                        ),
                        r["order"]["amount"]["amount"].as_str().unwrap_or(""),
                        r["order"]["amount"]["currency"].as_str().unwrap_or(""),
                        r["order"]["customer"]["name"].as_str().unwrap_or(""),
                    );
                }
                println!("{} order(s)", rows.len());
            }
            Ok(0)
        }
        OrdersCmd::Show { id, json } => {
            let v = fetch_order(&src, id.parse()?).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("order     {}", v["id"].as_str().unwrap_or(""));
                println!("state     {}", v["state"].as_str().unwrap_or(""));
                println!(
                    "source    {}/{} v{}",
                    v["source"]["connector"].as_str().unwrap_or(""),
                    v["source"]["external_id"].as_str().unwrap_or(""),
                    v["source"]["version"]
                );
                if let Some(a) = v.get("archived") {
                    print_archived(a);
                }
                println!("customer  {}", v["order"]["customer"]["name"].as_str().unwrap_or(""));
                println!(
                    "amount    {} {}",
                    v["order"]["amount"]["amount"].as_str().unwrap_or(""),
                    v["order"]["amount"]["currency"].as_str().unwrap_or("")
                );
                println!("events:");
                for e in v["events"].as_array().into_iter().flatten() {
                    println!(
                        "  {:>3}  {}  {:<22} -> {:<18} by {}",
                        e["seq"],
                        e["at"].as_str().unwrap_or(""),
                        e["event"]["type"].as_str().unwrap_or(""),
                        e["state"]["name"].as_str().unwrap_or(""),
                        actor_text(&e["actor"]),
                    );
                }
            }
            Ok(0)
        }
    }
}

/// Where an archived order is, for `orders show`.
fn print_archived(a: &Value) {
    println!(
        "archived  {} in {} (ended {} at {})",
        a["archived_at"].as_str().unwrap_or(""),
        a["segment"].as_str().unwrap_or(""),
        a["ended"].as_str().unwrap_or(""),
        a["ended_at"].as_str().unwrap_or("")
    );
    if let Some(h) = a["legal_hold"].as_object() {
        println!("hold      {} (by {})", h["reason"].as_str().unwrap_or(""), h["by"].as_str().unwrap_or(""));
    }
}

pub(super) async fn audit_verify(dir: &Path) -> anyhow::Result<i32> {
    let src = Source::open(dir).await?;
    let v = match &src {
        Source::Store(s, archive) => {
            let r = s.verify_audit().await?;
            let a = archive.verify().await?;
            let anchors = crate::anchor::verify::check(archive).await?;
            let mut v = r.to_json();
            v["intact"] = serde_json::json!(r.intact() && a.problems.is_empty() && anchors.problems.is_empty());
            v["archive"] = serde_json::json!(a);
            v["anchors"] = serde_json::json!(anchors);
            v
        }
        Source::Api { .. } => src.api(reqwest::Method::GET, "/audit/verify").await?,
    };
    let a = &v["archive"];
    let problems: Vec<&str> = a["problems"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    for o in a["orphans"].as_array().into_iter().flatten() {
        println!(
            "note: archive segment {} is named by no order (left by a crash; the next archive pass removes it)",
            o.as_str().unwrap_or("?")
        );
    }
    if let Some(b) = v["broken"].as_object() {
        println!(
            "audit BROKEN at order {} event {}: {}",
            b["order_id"].as_str().unwrap_or("?"),
            b["seq"],
            b["problem"].as_str().unwrap_or("?")
        );
    }
    for p in &problems {
        println!("audit BROKEN in the archive: {p}");
    }
    print_set_aside(&v);
    let anchors = &v["anchors"];
    for p in anchors["problems"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        println!("audit BROKEN against the anchors: {p}");
    }
    if v["intact"].as_bool() == Some(true) {
        println!(
            "audit intact: {} orders, {} events verified; archive: {} orders, {} events in {} segments, {} log entries",
            v["orders"], v["events"], a["orders"], a["events"], a["segments"], a["log_entries"]
        );
        match anchors["latest"].as_u64() {
            Some(n) if n > 0 => println!(
                "anchors intact: {n} anchors; the latest ({}) covers {} orders, each still there with its chain",
                anchors["at"].as_str().unwrap_or("?"),
                anchors["orders"]
            ),
            _ => println!("note: no audit anchor written yet (`orderbridge audit anchor`)"),
        }
        Ok(0)
    } else {
        Ok(1)
    }
}

/// The rows `audit verify` could not read: each unresolved one (the audit is not
/// verifiable while there is one) and each discarded one, with who gave it up.
fn print_set_aside(v: &Value) {
    let text = |q: &Value, k: &str| q[k].as_str().unwrap_or("?").to_owned();
    let rows = |k: &str| v[k].as_array().cloned().unwrap_or_default();
    let unresolved = rows("quarantined");
    for q in &unresolved {
        println!(
            "audit NOT VERIFIABLE: {} is quarantined (since {}: {}); resolve it (`orderbridge store quarantine resolve`)",
            text(q, "what"),
            text(q, "at"),
            text(q, "error")
        );
    }
    if !unresolved.is_empty() {
        println!("audit not verifiable: {} quarantined row(s) unresolved", unresolved.len());
    }
    for q in rows("discarded") {
        let r = &q["resolved"];
        println!(
            "note: {} was discarded by {} at {} ({}): not verified",
            text(&q, "what"),
            text(r, "by"),
            text(r, "at"),
            text(r, "reason")
        );
    }
}

pub(super) async fn outbox(dir: &Path, cmd: OutboxCmd) -> anyhow::Result<i32> {
    let src = Source::open(dir).await?;
    let print = |rows: Vec<Value>, json: bool| -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
            return Ok(());
        }
        println!("{:<50} {:<28} {:>8}  {:<25} LAST ERROR", "EFFECT", "CONNECTOR.OPERATION", "ATTEMPTS", "NEXT AT");
        for r in &rows {
            println!(
                "{:<50} {:<28} {:>8}  {:<25} {}",
                r["id"].as_str().unwrap_or(""),
                format!("{}.{}", r["connector"].as_str().unwrap_or(""), r["operation"].as_str().unwrap_or("")),
                r["attempts"],
                r["next_at"].as_str().unwrap_or(""),
                r["last_error"].as_str().unwrap_or(""),
            );
        }
        println!("{} effect(s)", rows.len());
        Ok(())
    };
    match cmd {
        OutboxCmd::List { json } | OutboxCmd::Dead { json } => {
            let dead = matches!(cmd, OutboxCmd::Dead { .. });
            let rows: Vec<Value> = match &src {
                Source::Store(s, _) => {
                    let rows = if dead {
                        s.store().dead_letters(10_000).await?
                    } else {
                        s.store().pending_effects(10_000).await?
                    };
                    rows.iter().map(serde_json::to_value).collect::<Result<_, _>>()?
                }
                Source::Api { .. } => {
                    let v = src
                        .api(
                            reqwest::Method::GET,
                            if dead { "/outbox/dead?limit=10000" } else { "/outbox?limit=10000" },
                        )
                        .await?;
                    v["effects"].as_array().cloned().unwrap_or_default()
                }
            };
            print(rows, json)?;
            Ok(0)
        }
        OutboxCmd::Replay { id } => {
            let eid: EffectId = id.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            match &src {
                Source::Store(s, _) => {
                    let acting = crate::engine::access::Acting {
                        actor: Actor::Person(whoami()),
                        channel: Some(crate::engine::access::Channel::Cli),
                    };
                    s.replay(&eid, acting, chrono::Utc::now()).await?;
                }
                Source::Api { .. } => {
                    src.api(reqwest::Method::POST, &format!("/outbox/dead/{eid}/replay")).await?;
                }
            }
            println!("replayed {eid}: queued for delivery");
            Ok(0)
        }
    }
}

pub(super) async fn quarantine(dir: &Path, json: bool) -> anyhow::Result<i32> {
    let src = Source::open(dir).await?;
    let rows: Vec<Value> = match &src {
        Source::Store(s, _) => {
            s.store().quarantined().await?.iter().map(serde_json::to_value).collect::<Result<_, _>>()?
        }
        Source::Api { .. } => {
            src.api(reqwest::Method::GET, "/store/quarantine").await?["rows"].as_array().cloned().unwrap_or_default()
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let text = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_owned();
        for r in &rows {
            let res = &r["resolved"];
            let how = if res.is_object() {
                format!(
                    "  [{} by {} at {}: {}]",
                    text(res, "outcome"),
                    text(res, "by"),
                    text(res, "at"),
                    text(res, "reason")
                )
            } else {
                String::new()
            };
            println!("{}  {}: {}{how}", text(r, "at"), text(r, "what"), text(r, "error"));
        }
        let resolved = rows.iter().filter(|r| r["resolved"].is_object()).count();
        match resolved {
            0 => println!("{} quarantined row(s)", rows.len()),
            n => println!("{} quarantined row(s) ({n} resolved, kept for the record)", rows.len() - n),
        }
    }
    Ok(0)
}

pub(super) fn whoami() -> String {
    format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}
