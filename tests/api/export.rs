//! The warehouse export read back by an independent reader (pyarrow): every order and
//! event the API shows, partitioned by month, and a second run adds only what changed.

use std::path::Path;
use std::process::Command;

use chrono::{Duration, Utc};
use serde_json::{Value, json};

use crate::helpers::*;

async fn post(app: &TestApp, payload: &Value) -> String {
    let (status, body) = app.post_webhook(payload).await;
    assert_eq!(status, 202, "{body}");
    body["order_id"].as_str().unwrap().to_owned()
}

async fn export(dir: &Path, admin_port: &str, out: &Path, format: &str) -> String {
    let mut c = Command::new(bin());
    c.args(["export", "--format", format, "--out"]).arg(out).arg("--config-dir").arg(dir);
    c.env("ORDERBRIDGE__SERVER__ADMIN__PORT", admin_port);
    let o = tokio::task::spawn_blocking(move || c.output().unwrap()).await.unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// Every file of `table` under `out`, read by pyarrow, as JSON rows with the month
/// partition and the file each came from.
fn read_back(out: &Path, table: &str, format: &str) -> Vec<Value> {
    let script = r#"
import glob, json, os, sys
import pyarrow.parquet as pq, pyarrow.csv as pc, pyarrow.json as pj
out, table, fmt = sys.argv[1:4]
rows = []
for f in sorted(glob.glob(os.path.join(out, table, "month=*", "*." + fmt))):
    t = {"parquet": pq.read_table, "csv": pc.read_csv, "jsonl": pj.read_json}[fmt](f)
    for r in t.to_pylist():
        r = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()}
        r["_month"] = os.path.basename(os.path.dirname(f))
        r["_file"] = os.path.basename(f)
        rows.append(r)
print(json.dumps(rows))
"#;
    let o = Command::new("python3").args(["-c", script]).arg(out).args([table, format]).output().unwrap();
    assert!(o.status.success(), "pyarrow: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[tokio::test]
async fn the_export_is_read_back_by_pyarrow_and_a_second_run_adds_only_what_changed() {
    let clock = ManualClock::new(Utc::now());
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().clock(clock.clock()).mail(&smtp).start().await;
    let small = post(&app, &deal("D-EXP-1", 1, "50000.00")).await;
    let waits = post(&app, &deal("D-EXP-2", 1, "500000.00")).await;
    let port = app.admin.port().to_string();
    let out = tempfile::tempdir().unwrap();
    // The window ends at the daemon's clock: let it settle and move on first.
    app.drain_outbox().await;
    clock.advance(Duration::seconds(1));
    let said = export(app.dir.path(), &port, out.path(), "parquet").await;
    assert!(said.starts_with("exported 2 orders and "), "{said}");

    let orders = read_back(out.path(), "orders", "parquet");
    assert_eq!(orders.len(), 2, "{orders:?}");
    for o in &orders {
        let api = app.order(o["order_id"].as_str().unwrap()).await;
        assert_eq!(o["state"], api["state"]);
        assert_eq!(o["amount"], api["order"]["amount"]["amount"]);
        assert_eq!(o["currency"], "CNY");
        assert_eq!(o["customer_id"], api["order"]["customer"]["id"]);
        assert_eq!(o["_month"], format!("month={}", clock.now().format("%Y-%m")));
        assert!(o.get("customer_name").is_none(), "no personal data in the warehouse");
    }
    let events = read_back(out.path(), "events", "parquet");
    let mut expected = 0;
    for id in [&small, &waits] {
        expected += app.order(id).await["events"].as_array().unwrap().len();
    }
    assert_eq!(events.len(), expected);
    let approved = orders.iter().find(|o| o["order_id"] == small.as_str()).unwrap();
    assert_eq!(approved["approvers"], "system");
    assert!(approved["received_at"].as_str().unwrap().starts_with(&clock.now().format("%Y-%m-%d").to_string()));

    // Later: one order approved, one new. The next run adds exactly those two orders'
    // rows and only the events made since the first run.
    clock.advance(Duration::hours(2));
    let (status, body) =
        app.api_post_json_as("wang.fang", &format!("/orders/{waits}/approvals"), &json!({"decision": "approve"})).await;
    assert_eq!(status, 200, "{body}");
    let third = post(&app, &deal("D-EXP-3", 1, "50000.00")).await;
    app.drain_outbox().await;
    clock.advance(Duration::seconds(1));
    let said = export(app.dir.path(), &port, out.path(), "parquet").await;
    assert!(said.starts_with("exported 2 orders and "), "{said}");
    let orders = read_back(out.path(), "orders", "parquet");
    assert_eq!(orders.len(), 4, "two rows for the first run, two for the second");
    let second_file = orders.iter().map(|o| o["_file"].as_str().unwrap().to_owned()).max().unwrap();
    let mut newer: Vec<_> =
        orders.iter().filter(|o| o["_file"] == second_file.as_str()).map(|o| o["order_id"].clone()).collect();
    newer.sort_by_key(|v| v.to_string());
    let mut want = vec![json!(waits), json!(third)];
    want.sort_by_key(|v| v.to_string());
    assert_eq!(newer, want);
    let events = read_back(out.path(), "events", "parquet");
    let mut keys: Vec<_> = events.iter().map(|e| (e["order_id"].to_string(), e["seq"].as_i64().unwrap())).collect();
    let all = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), all, "no event exported twice");
    let mut everything = 0;
    for id in [&small, &waits, &third] {
        everything += app.order(id).await["events"].as_array().unwrap().len();
    }
    assert_eq!(all, everything, "every event exported once");

    // CSV and JSON lines carry the same rows.
    for format in ["csv", "jsonl"] {
        let other = tempfile::tempdir().unwrap();
        export(app.dir.path(), &port, other.path(), format).await;
        let rows = read_back(other.path(), "orders", format);
        assert_eq!(rows.len(), 3, "{format}");
        assert!(rows.iter().any(|o| o["order_id"] == third.as_str() && o["amount"].to_string().contains("50000")));
        assert_eq!(read_back(other.path(), "events", format).len(), everything, "{format}");
    }
}
