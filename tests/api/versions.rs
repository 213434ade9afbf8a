//! Configuration versions by content: each start keeps the rules, mappings,
//! notifications and templates it loaded (by hash), every decision records the
//! configuration's version, and `rules history` / `rules show` read them back.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::helpers::*;

async fn cli(dir: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(bin());
    c.args(args).arg("--config-dir").arg(dir);
    let out = tokio::task::spawn_blocking(move || c.output().unwrap()).await.unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The configuration's version on each of the order's events that carry one.
async fn decided_under(app: &TestApp, deal_id: &str) -> Vec<String> {
    let (s, b) = app.post_webhook(&deal(deal_id, 1, "5000.00")).await;
    assert_eq!(s, 202, "{b}");
    let order = app.order(b["order_id"].as_str().unwrap()).await;
    let events = order["events"].as_array().unwrap();
    assert!(events[0]["config_version"].is_string(), "the first decision records it: {}", events[0]);
    events.iter().filter_map(|e| e["config_version"].as_str().map(str::to_owned)).collect()
}

#[tokio::test]
async fn a_rules_edit_is_a_new_version_kept_and_recorded_by_the_decisions_under_it() {
    let app = TestApp::builder().start().await;
    let first = decided_under(&app, "D-V1").await;
    let dir = app.stop_and_release().await;
    let old_text = std::fs::read_to_string(dir.path().join("config/rules.toml")).unwrap();
    replace_in_file(dir.path(), "config/rules.toml", &[("须合规复核", "须合规部门复核")]);

    let app = TestApp::builder().in_dir(dir).start().await;
    let second = decided_under(&app, "D-V2").await;
    let dir = app.stop_and_release().await;
    assert!(first.iter().chain(&second).all(|v| v.len() == 64), "{first:?} {second:?}");
    assert!(first.iter().all(|v| *v == first[0]) && second.iter().all(|v| *v == second[0]));
    assert_ne!(first[0], second[0], "an edited rules.toml is another configuration");

    let out = cli(dir.path(), &["rules", "history", "--json"]).await;
    let h: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rules: Vec<&Value> = h["versions"].as_array().unwrap().iter().filter(|v| v["kind"] == "rules").collect();
    assert_eq!(rules.len(), 2, "{h:#}");
    assert_eq!((rules[0]["active"].as_bool(), rules[1]["active"].as_bool()), (Some(false), Some(true)));
    assert_eq!(rules[0]["label"], "2026-11-27.1");
    for kind in ["mappings", "notifications", "templates"] {
        let n = h["versions"].as_array().unwrap().iter().filter(|v| v["kind"] == kind).count();
        assert_eq!(n, 1, "{kind} did not change: {h:#}");
    }
    // Each decision's configuration names the rules version it ran.
    let rules_of = |config: &str| {
        let load = h["loads"].as_array().unwrap().iter().find(|l| l["id"] == config).expect("a load of it");
        load["parts"]["rules"].as_str().unwrap().to_owned()
    };
    assert_eq!(rules_of(&first[0]), rules[0]["hash"].as_str().unwrap());
    assert_eq!(rules_of(&second[0]), rules[1]["hash"].as_str().unwrap());

    let old = &rules[0]["hash"].as_str().unwrap()[..12];
    let out = cli(dir.path(), &["rules", "show", old]).await;
    assert_eq!(String::from_utf8(out.stdout).unwrap(), old_text, "the old text, exactly");
    let out = cli(dir.path(), &["rules", "show", old, "--file", "config/watchlist.csv"]).await;
    assert!(String::from_utf8(out.stdout).unwrap().contains("示例可疑公司"));
    let table = String::from_utf8(cli(dir.path(), &["rules", "history"]).await.stdout).unwrap();
    assert!(table.contains(old) && table.contains("active"), "{table}");

    let out = cli(dir.path(), &["explain", &first_order_id(dir.path()).await]).await;
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&format!("decided under configuration {}", &first[0][..12])), "{text}");
}

/// The order D-V1 became, read offline.
async fn first_order_id(dir: &Path) -> String {
    let out = cli(dir, &["orders", "list", "--json"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = v.as_array().or_else(|| v["orders"].as_array()).unwrap().clone();
    let o = list.iter().find(|o| o["source"]["external_id"] == "D-V1").unwrap_or_else(|| panic!("{v:#}"));
    o["id"].as_str().unwrap().to_owned()
}
