//! Trying configuration before it goes live: `mapping test`, `rules diff`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;

use crate::domain::OrderId;

use super::*;

pub(super) fn mapping_test(dir: &Path, mapping: &str, input: &Path) -> anyhow::Result<i32> {
    let path = if mapping.ends_with(".toml") {
        PathBuf::from(mapping)
    } else {
        dir.join("mappings").join(format!("{mapping}.toml"))
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let bytes = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let payload: Value = serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", input.display()))?;
    if toml::from_str::<toml::Table>(&text)
        .is_ok_and(|t| t.get("direction").and_then(|d| d.as_str()) == Some("outbound"))
    {
        return outbound_test(&path, &text, &name, &payload);
    }
    let file: crate::mapping::MappingFile = match toml::from_str(&text) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{}", crate::diagnostics::Diagnostic::from_toml(&path, &text, &e));
            return Ok(crate::check::EX_CONFIG);
        }
    };
    let m = match file.validate(&name) {
        Ok(m) => m,
        Err(ps) => {
            for p in ps {
                eprintln!("{}", crate::diagnostics::Diagnostic::at(&path, &text, Some(p.span), p.message));
            }
            return Ok(crate::check::EX_CONFIG);
        }
    };
    match m.apply_exact(&payload, &std::sync::Arc::new(crate::mapping::NumberTexts::of(&bytes, &payload)).root()) {
        Ok(Ok(mapped)) => {
            let out = serde_json::json!({
                "external_id": mapped.external_id.as_str(),
                "version": mapped.version,
                "mapping_version": m.version,
                "order": mapped.order,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(0)
        }
        Ok(Err(skipped)) => {
            println!("skipped: {}", skipped.reason);
            Ok(0)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(1)
        }
    }
}

/// Renders an outbound mapping for an effect (the JSON the dispatcher would hand the
/// connector: `order_id`, `order`, `references`, `state`, …) and prints the body.
pub(super) fn outbound_test(path: &Path, text: &str, name: &str, effect: &Value) -> anyhow::Result<i32> {
    let file: crate::mapping::outbound::OutboundFile = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{}", crate::diagnostics::Diagnostic::from_toml(path, text, &e));
            return Ok(crate::check::EX_CONFIG);
        }
    };
    let m = match file.validate(name) {
        Ok(m) => m,
        Err(ps) => {
            for p in ps {
                eprintln!("{}", crate::diagnostics::Diagnostic::at(path, text, Some(p.span), p.message));
            }
            return Ok(crate::check::EX_CONFIG);
        }
    };
    let mut ctx = effect.clone();
    if let Value::Object(o) = &mut ctx {
        o.entry("connector").or_insert_with(|| Value::String(m.connector.clone()));
        o.entry("idempotency_key").or_insert_with(|| Value::String("orderbridge:example".into()));
        o.entry("references").or_insert_with(|| serde_json::json!({}));
    }
    match m.render(&ctx) {
        Ok(body) => {
            // Exactly the bytes the connector would send.
            println!("Content-Type: {}\n\n{}", body.content_type, body.text());
            Ok(0)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(1)
        }
    }
}

pub(super) async fn rules_diff(
    dir: &Path,
    last: Option<usize>,
    candidate: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<i32> {
    let path = candidate.unwrap_or_else(|| crate::config::rules_path(dir));
    let rules = match crate::config::load_rules_file(&path, dir) {
        Ok(r) => r,
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            return Ok(crate::check::EX_CONFIG);
        }
    };
    let src = Source::open(dir).await?;
    let report = impact(&src, &rules, last).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for l in report.lines() {
            println!("{l}");
        }
    }
    Ok(i32::from(!report.changes.is_empty() || !report.later.is_empty()))
}

/// Replays the stored orders (the last `last`, or all) through `rules`: the impact
/// report of `rules diff` and `rules propose`.
pub(super) async fn impact(
    src: &Source,
    rules: &crate::engine::Rules,
    last: Option<usize>,
) -> anyhow::Result<crate::rules_diff::Report> {
    if let Source::Store(orders, archive) = src {
        return crate::rules_diff::over_store(orders, archive, rules, last).await;
    }
    // Through the running daemon: every order id, in arrival order (pages of 1000).
    let mut ids: Vec<OrderId> = Vec::new();
    let mut after: Option<OrderId> = None;
    loop {
        let q = after.map(|a| format!("&after={a}")).unwrap_or_default();
        let v = src.api(reqwest::Method::GET, &format!("/orders?limit=1000{q}")).await?;
        let page: Vec<OrderId> = v["orders"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["id"].as_str().and_then(|i| i.parse().ok()))
            .collect();
        let Some(l) = page.last().copied() else { break };
        after = Some(l);
        ids.extend(page);
    }
    if let Some(n) = last {
        ids = ids.split_off(ids.len().saturating_sub(n));
    }
    let mut report = crate::rules_diff::Report::new(rules);
    for id in ids {
        let order = fetch_order(src, id).await?;
        let events: Vec<crate::store::EventRecord> = serde_json::from_value(order["events"].clone())?;
        report.add(rules, &order, &events);
    }
    Ok(report)
}
