//! `orderbridge rules diff --against-history` on a store of a few thousand orders: a
//! known edit of the rules reports exactly the orders whose decision changes.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;

use orderbridge::domain::{ExternalRef, Order};
use orderbridge::orders::Inbound;
use serde_json::{Value, json};

use crate::helpers::*;

const RATINGS: [Option<&str>; 7] = [Some("AAA"), Some("AA"), Some("A"), Some("BBB"), Some("BB"), Some("B"), None];

struct Generated {
    id: String,
    amount: rust_decimal::Decimal,
    rating: Option<&'static str>,
    kyc: bool,
}

fn order(i: usize) -> (Order, Option<&'static str>, bool) {
    let rating = RATINGS[i % RATINGS.len()];
    let kyc = !i.is_multiple_of(17);
    // Spread amounts over every band: 1,000 … 19,999,000.
    let amount = format!("{}.00", 1_000 + (i * 7_919_003) % 20_000_000 / 1_000 * 1_000);
    let o = serde_json::from_value(json!({
        "customer": {"id": format!("C-{i}"), "name": "王小明", "kind": "individual",
            "id_document": {"type": "cn_resident_id", "number": "11010519491231002X"},
            "credit_rating": rating, "kyc_verified": kyc},
        "product": {"type": "wealth_management", "code": "WM-STABLE-12M"},
        "amount": {"amount": amount, "currency": "CNY"},
        "term_months": 12,
        "sales_owner": "li.na@bank.example"
    }))
    .unwrap();
    (o, rating, kyc)
}

#[tokio::test]
async fn a_known_rule_edit_reports_exactly_the_changed_decisions() {
    const N: usize = 3000;
    let app = spawn_app().await;
    let store = app.state.orders.clone();
    let rules = app.state.rules.clone();
    let generated: Arc<std::sync::Mutex<Vec<Generated>>> = Arc::default();
    let mut tasks = Vec::new();
    for t in 0..16 {
        let (store, rules, generated) = (store.clone(), rules.clone(), generated.clone());
        tasks.push(tokio::spawn(async move {
            for i in (t..N).step_by(16) {
                let (o, rating, kyc) = order(i);
                let amount = o.amount.amount();
                let inbound = Inbound {
                    source: ExternalRef {
                        connector: "demo-crm".parse().unwrap(),
                        id: format!("H-{i}").parse().unwrap(),
                    },
                    version: 1,
                    mapping_version: "test".into(),
                    order: o,
                };
                let got = store.ingest(inbound, &rules, chrono::Utc::now()).await.unwrap();
                generated.lock().unwrap().push(Generated { id: got.order_id.to_string(), amount, rating, kyc });
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    drop((store, rules));
    let dir = app.stop_and_release().await;

    // The edit: STANDARD now reaches 2,000,000 (was 1,000,000); BB is now rejected (was BB allowed).
    copy_file_with(
        dir.path(),
        "config/rules.toml",
        "candidate-rules.toml",
        &[
            (r#"version = "2026-11-27.1""#, r#"version = "2026-11-28.1""#),
            (r#"amount = "(100000..1000000]""#, r#"amount = "(100000..2000000]""#),
            (r#"amount = "(1000000..10000000]""#, r#"amount = "(2000000..10000000]""#),
            (r#"when = { "customer.credit_rank" = "> 5" }"#, r#"when = { "customer.credit_rank" = "> 4" }"#),
        ],
    );
    let candidate = dir.path().join("candidate-rules.toml");

    // Exactly the orders the edit affects, worked out from what was generated.
    let g = std::mem::take(&mut *generated.lock().unwrap());
    let (lo, hi): (rust_decimal::Decimal, rust_decimal::Decimal) =
        ("1000000".parse().unwrap(), "2000000".parse().unwrap());
    let expect_screening: BTreeSet<String> =
        g.iter().filter(|o| o.rating == Some("BB")).map(|o| o.id.clone()).collect();
    let expect_route: BTreeSet<String> = g
        .iter()
        .filter(|o| o.kyc && matches!(o.rating, Some("AAA" | "AA" | "A" | "BBB")) && o.amount > lo && o.amount <= hi)
        .map(|o| o.id.clone())
        .collect();
    assert!(
        expect_screening.len() > 100 && expect_route.len() > 20,
        "{} {}",
        expect_screening.len(),
        expect_route.len()
    );

    let run = |args: &[&str]| {
        let out = Command::new(bin())
            .args(["rules", "diff", "--against-history", "--candidate"])
            .arg(&candidate)
            .args(args)
            .arg("--config-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The daemon is stopped: the CLI reads the store directly (blocking here is fine).
    let (code, out, err) = run(&["--json"]);
    assert_eq!(code, Some(1), "differences exit 1: {err}");
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    assert_eq!(report["replayed"], N);
    assert_eq!(report["candidate_version"], "2026-11-28.1");
    let changes = report["changes"].as_array().unwrap();
    let got = |f: &dyn Fn(&Value) -> bool| -> BTreeSet<String> {
        changes.iter().filter(|c| f(c)).map(|c| c["order_id"].as_str().unwrap().to_owned()).collect()
    };
    let screening = got(&|c| c["after"]["fired"].as_array().unwrap().iter().any(|f| f == "CREDIT-001"));
    let route = got(&|c| c["before"]["row"] == "LARGE" && c["after"]["row"] == "STANDARD");
    assert_eq!(screening, expect_screening);
    assert_eq!(route, expect_route);
    assert_eq!(changes.len(), expect_screening.len() + expect_route.len(), "nothing else changes");
    assert_eq!(report["route_changed"], expect_route.len());
    for c in changes.iter().filter(|c| c["after"]["row"] == "STANDARD") {
        assert_eq!(c["before"]["chain"], json!(["line_supervisor", "branch_manager"]));
        assert_eq!(c["after"]["chain"], json!(["line_supervisor"]));
    }

    // The text form ends with the summary; unchanged rules change nothing (exit 0).
    let candidate2 = candidate.clone();
    let dir2 = dir.path().to_owned();
    let (code, out) = tokio::task::spawn_blocking(move || {
        let o = Command::new(bin())
            .args(["rules", "diff", "--against-history", "--last", "300", "--candidate"])
            .arg(&candidate2)
            .arg("--config-dir")
            .arg(&dir2)
            .output()
            .unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned())
    })
    .await
    .unwrap();
    assert_eq!(code, Some(1));
    let summary = out.lines().last().unwrap();
    assert!(summary.starts_with("300 order(s) replayed through rules 2026-11-28.1:"), "{summary}");
    assert!(out.lines().next().unwrap().contains(" → "), "{out}");
    let dir3 = dir.path().to_owned();
    let (code, out) = tokio::task::spawn_blocking(move || {
        let o = Command::new(bin())
            .args(["rules", "diff", "--against-history"])
            .arg("--config-dir")
            .arg(&dir3)
            .output()
            .unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned())
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("{N} order(s) replayed through rules 2026-11-27.1: 0 would change")), "{out}");
}
