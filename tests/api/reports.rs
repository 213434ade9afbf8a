//! The management report (lifecycle step 8) over HTTP and the command line, from the
//! audit trail of orders that really went through the daemon.

use std::process::Command;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use crate::helpers::*;

async fn post(app: &TestApp, payload: &Value) -> String {
    let (status, body) = app.post_webhook(payload).await;
    assert_eq!(status, 202, "{body}");
    body["order_id"].as_str().unwrap().to_owned()
}

async fn get_text(app: &TestApp, path: &str) -> (u16, String, String) {
    let resp = app.client.get(app.admin_url(&format!("/api{path}"))).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (resp.status().as_u16(), ct, resp.text().await.unwrap())
}

#[tokio::test]
async fn the_report_measures_approvals_and_paths_from_the_audit_trail() {
    // Monday 2026-11-30 10:00 in Shanghai: inside office hours.
    let start: DateTime<Utc> = "2026-11-30T02:00:00Z".parse().unwrap();
    let clock = ManualClock::new(start);
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().clock(clock.clock()).mail(&smtp).start().await;
    // 50,000 CNY is approved automatically; two of 500,000 CNY wait for a line
    // supervisor: one is declined after an hour, the other approved after two.
    post(&app, &deal("D-REP-1", 1, "50000.00")).await;
    let waits = post(&app, &deal("D-REP-2", 1, "500000.00")).await;
    let declined = post(&app, &deal("D-REP-3", 1, "500000.00")).await;
    clock.advance(Duration::hours(1));
    let decline = json!({"decision": "reject", "comment": "资料不全"});
    let (status, body) = app.api_post_json_as("zhao.lei", &format!("/orders/{declined}/approvals"), &decline).await;
    assert_eq!(status, 200, "{body}");
    clock.advance(Duration::hours(1));
    let (status, body) =
        app.api_post_json_as("wang.fang", &format!("/orders/{waits}/approvals"), &json!({"decision": "approve"})).await;
    assert_eq!(status, 200, "{body}");

    let (status, r) = app.api("/reports/kpis?from=2026-11-30&to=2026-11-30").await;
    assert_eq!(status, 200, "{r}");
    let k = &r["kpis"];
    assert_eq!(k["orders"], 3);
    assert_eq!(k["ended"], json!({"rejected": 1}));
    assert_eq!(k["auto_approval_share"], "0.5");
    // Level 1 decided three times: at once by the matrix, after one office hour by
    // zhao.lei (declined), after two by wang.fang.
    let level = &k["approval_levels"][0];
    let decided = (level["key"].as_str(), level["approved"].as_u64(), level["declined"].as_u64());
    assert_eq!(decided, (Some("1"), Some(2), Some(1)));
    assert_eq!(level["wait"]["business_hours"]["total_s"], 3 * 3600);
    assert_eq!(level["wait"]["business_hours"]["median_s"], 3600);
    let approvers: Vec<_> = k["approvers"].as_array().unwrap().iter().map(|a| a["key"].clone()).collect();
    assert_eq!(approvers, [json!("wang.fang"), json!("zhao.lei")]);
    assert_eq!(r["process"]["variant_count"], 2);
    assert_eq!(r["process"]["variants"][0]["orders"], 2);
    assert_eq!(r["process"]["approvers"][0]["name"], "wang.fang");
    let arcs = r["process"]["arcs"].as_array().unwrap();
    let to_rejected = arcs.iter().find(|a| a["to"] == "rejected").unwrap();
    assert_eq!(
        (to_rejected["from"].as_str(), to_rejected["median_s"].as_i64()),
        (Some("awaiting_approval.1"), Some(3600))
    );
    assert_eq!(r["current"]["orders"], 3);
    assert_eq!(r["previous"]["orders"], 0, "nothing was received the day before");
    // Orders received on another day are not in the period.
    let (_, other) = app.api("/reports/kpis?from=2026-11-29&to=2026-11-29").await;
    assert_eq!(other["kpis"]["orders"], 0, "{other}");
    // A period that has not begun yet (by the daemon's clock) is refused.
    let (status, body) = app.api("/reports/kpis?from=2026-12-01").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("ends"), "{body}");

    // The same figures as CSV rows, and readable text.
    let (status, ct, csv) = get_text(&app, "/reports/kpis?from=2026-11-30&to=2026-11-30&format=csv").await;
    assert_eq!((status, ct.as_str()), (200, "text/csv; charset=utf-8"));
    assert!(csv.starts_with("section,key,metric,value\r\n"), "{csv}");
    assert!(csv.contains("approval_level,1,total_business_hours,10800\r\n"), "{csv}");
    let (_, _, text) = get_text(&app, "/reports/kpis?from=2026-11-30&to=2026-11-30&format=text").await;
    assert!(text.contains("2h 00m"), "{text}");
    let (status, ct, html) = get_text(&app, "/reports/kpis?from=2026-11-30&to=2026-11-30&format=html").await;
    assert_eq!((status, ct.as_str()), (200, "text/html; charset=utf-8"));
    assert!(html.contains("<h2>approval_level</h2>") && html.contains("<td>wang.fang</td>"), "{html}");
    // The period as the site's people read it: whole days in Shanghai.
    assert!(html.contains("2026-11-30 00:00 to 2026-12-01 00:00 (Asia/Shanghai)"), "{html}");
    // Kept for a look in a browser, beside the screenshots of the pages.
    let screens = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screens");
    std::fs::create_dir_all(&screens).unwrap();
    std::fs::write(screens.join("report.html"), &html).unwrap();

    // A bad period is a clear 400 naming the parameter.
    let (status, body) = app.api("/reports/kpis?from=last-week").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("from: `last-week`"), "{body}");

    // The command line asks the running daemon (which holds the store) for the same
    // report, and reads the store itself once the daemon has stopped.
    let port = app.admin.port().to_string();
    let via_api = report_cli(app.dir.path(), &port).await;
    assert_eq!(via_api, r);
    let dir = app.stop_and_release().await;
    assert_eq!(report_cli(dir.path(), &port).await, r);
}

async fn report_cli(dir: &std::path::Path, admin_port: &str) -> Value {
    let mut c = Command::new(bin());
    c.args(["report", "--from", "2026-11-30", "--to", "2026-11-30", "--format", "json", "--config-dir"]);
    c.arg(dir).env("ORDERBRIDGE__SERVER__ADMIN__PORT", admin_port);
    let out = tokio::task::spawn_blocking(move || c.output().unwrap()).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of the series `name` (with its labels, as written) in a scrape.
fn series(scrape: &str, name: &str) -> Option<f64> {
    scrape.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_show_the_space_left_on_the_data_volume() {
    let app = TestApp::builder().start().await;
    let scrape = app.metrics().await;
    let free = series(&scrape, r#"orderbridge_disk_free_bytes{volume="data"}"#).expect("free space of data");
    let size = series(&scrape, r#"orderbridge_disk_size_bytes{volume="data"}"#).expect("size of data");
    // The data directory is in the test's directory, on the volume df sees there.
    let df = Command::new("df").args(["-B1", "--output=size"]).arg(app.dir.path()).output().unwrap();
    let df = String::from_utf8(df.stdout).unwrap();
    let df_size: f64 = df.lines().nth(1).unwrap().trim().parse().unwrap();
    assert_eq!(size, df_size, "{scrape}");
    assert!(free > 0.0 && free <= size, "free {free} of {size}");
}

#[tokio::test]
async fn metrics_show_orders_per_state_the_oldest_waiting_and_the_outbox_lag() {
    let start: DateTime<Utc> = "2026-11-30T02:00:00Z".parse().unwrap();
    let clock = ManualClock::new(start);
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().clock(clock.clock()).mail(&smtp).start().await;
    let first = post(&app, &deal("D-MON-1", 1, "500000.00")).await;
    clock.advance(Duration::minutes(30));
    post(&app, &deal("D-MON-2", 1, "500000.00")).await;
    app.drain_outbox().await;
    clock.advance(Duration::minutes(30));
    let scrape = app.metrics().await;
    assert_eq!(series(&scrape, r#"orderbridge_orders{state="awaiting_approval"}"#), Some(2.0), "{scrape}");
    assert_eq!(series(&scrape, r#"orderbridge_orders{state="manual_review"}"#), Some(0.0));
    // The oldest of the two waits since it was received, an hour ago.
    let age = r#"orderbridge_oldest_order_age_seconds{state="awaiting_approval"}"#;
    assert_eq!(series(&scrape, age), Some(3600.0), "{scrape}");
    assert_eq!(series(&scrape, r#"orderbridge_oldest_order_age_seconds{state="executing"}"#), Some(0.0));
    // Nothing is due in the outbox once it drained.
    assert_eq!(series(&scrape, "orderbridge_outbox_lag_seconds"), Some(0.0), "{scrape}");

    // The first is approved an hour after it began to wait: the stage histogram has it.
    let (status, body) =
        app.api_post_json_as("wang.fang", &format!("/orders/{first}/approvals"), &json!({"decision": "approve"})).await;
    assert_eq!(status, 200, "{body}");
    let scrape = app.metrics().await;
    let stage = |what: &str| {
        series(&scrape, &format!(r#"orderbridge_stage_duration_seconds_{what}{{stage="awaiting_approval.1"}}"#))
    };
    assert_eq!((stage("count"), stage("sum")), (Some(1.0), Some(3600.0)), "{scrape}");
    let bucket = r#"orderbridge_stage_duration_seconds_bucket{stage="awaiting_approval.1",le="3600"}"#;
    assert_eq!(series(&scrape, bucket), Some(1.0));
    // Both orders left `received` at once.
    assert_eq!(series(&scrape, r#"orderbridge_stage_duration_seconds_count{stage="received"}"#), Some(2.0));
}
