//! Who may report what at `POST /webhooks/{connector}/events`: a connector reports
//! only the event types its `[webhook] events` lists, and only for orders it created
//! or was pushed to. A leaked CRM secret cannot mark an invoice paid; an ERP cannot
//! complete another ERP's tasks. Refusals are `403` naming the rule, and change nothing.

use std::path::Path;

use serde_json::{Value, json};

use crate::cash::{deliver, system_event};
use crate::helpers::*;

/// The example configuration plus `other-erp`, a second ERP allowed to report tasks
/// done (signed with the same test secret), which no order is ever pushed to.
fn with_other_erp(dir: &Path) {
    std::fs::write(
        dir.join("connectors/other-erp.toml"),
        "kind = \"rest\"\n\n[webhook]\nsignature = \"standard_webhooks\"\nsecret = \"file:secrets/demo-crm\"\n\
         events = [\"task.completed\", \"delivery.recorded\"]\n",
    )
    .unwrap();
}

/// A small order, executed, delivered, accepted and invoiced by demo-finance.
async fn invoiced(app: &TestApp, ext: &str) -> (String, Value) {
    let (s, b) = app.post_webhook(&deal(ext, 1, "8000.00")).await;
    assert_eq!((s, b["state"].as_str()), (202, Some("executing")), "{b}");
    let id = b["order_id"].as_str().unwrap().to_owned();
    deliver(app, &id).await;
    let (s, b) = app.api_post_json(&format!("/orders/{id}/acceptance"), &json!({"decision": "accept"})).await;
    assert_eq!(s, 200, "{b}");
    wait_until("the order is invoiced", || async { app.order(&id).await["state"] == "invoiced" }).await;
    let invoice = app.order(&id).await["fulfilment"]["invoice"].clone();
    (id, invoice)
}

fn payment(id: &str, invoice: &Value) -> Value {
    json!({"type": "payment.received", "payment_id": format!("BANK-{id}"), "amount": invoice["total"], "invoice_number": invoice["number"]})
}

#[tokio::test]
async fn a_connector_reports_only_its_event_types_for_orders_it_created_or_was_pushed_to() {
    let erp = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), erp.addr);
    with_other_erp(dir.path());
    let app = restart(dir, erp).await;
    let (id, invoice) = invoiced(&app, "D-PERM-1").await;
    let pay = payment(&id, &invoice);

    // The CRM's secret (leaked) cannot report a payment: its [webhook] allows none.
    let (s, b) = system_event(&app, "demo-crm", &pay).await;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("event_not_allowed")), "{b}");
    let m = b["error"]["message"].as_str().unwrap();
    assert!(m.contains("`demo-crm` may not report `payment.received`") && m.contains("allow none"), "{m}");
    // Nor can the ERP, which may report tasks and deliveries only.
    let (s, b) = system_event(&app, "demo-erp", &pay).await;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("event_not_allowed")), "{b}");
    // Nothing was recorded, not even as an unmatched payment.
    assert_eq!(app.order(&id).await["state"], "invoiced");
    let (_, unmatched) = app.api("/payments/unmatched").await;
    assert_eq!(unmatched["payments"], json!([]), "{unmatched}");

    // Another ERP may report tasks, but not for an order it was never pushed to.
    let (s, b) = app.post_webhook(&deal("D-PERM-2", 1, "8000.00")).await;
    assert_eq!((s, b["state"].as_str()), (202, Some("executing")), "{b}");
    let other = b["order_id"].as_str().unwrap().to_owned();
    let done = json!({"type": "task.completed", "order_id": other, "task": "contract"});
    let (s, b) = system_event(&app, "other-erp", &done).await;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("order_not_involved")), "{b}");
    let m = b["error"]["message"].as_str().unwrap();
    assert!(m.contains("its source is `demo-crm`") && m.contains("created or was pushed to"), "{m}");
    // … named by its source's id, the same.
    let by_ext = json!({"type": "delivery.recorded", "source": "demo-crm", "external_id": "D-PERM-2"});
    let (s, b) = system_event(&app, "other-erp", &by_ext).await;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("order_not_involved")), "{b}");
    let order = app.order(&other).await;
    assert!(order["fulfilment"]["tasks"].as_array().unwrap().iter().all(|t| t["done"].is_null()), "{order}");

    // The ERP the tasks were pushed to may; the finance system that invoiced may
    // report the payment.
    let (s, b) = system_event(&app, "demo-erp", &done).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = system_event(&app, "demo-finance", &pay).await;
    assert_eq!((s, b["matched"].as_bool(), b["state"].as_str()), (200, Some(true), Some("closed")), "{b}");
    app.stop().await;
}

#[tokio::test]
async fn check_names_an_unknown_event_type_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "127.0.0.1:9".parse().unwrap());
    let p = dir.path().join("connectors/demo-finance.toml");
    let text = std::fs::read_to_string(&p).unwrap();
    let line = text[..text.find("events = ").unwrap()].matches('\n').count() + 1;
    replace_in_file(
        dir.path(),
        "connectors/demo-finance.toml",
        &[("events = [\"payment.received\"]", "events = [\"payment.received\", \"order.closed\"]")],
    );
    let out = std::process::Command::new(bin()).args(["check", "--config-dir"]).arg(dir.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(78), "{text}");
    let want = format!(
        "{}:{line}:31: [webhook] events: `order.closed` is not an event type a connector can report (one of: task.completed, delivery.recorded, payment.received)",
        p.display()
    );
    assert!(text.lines().any(|l| l == want), "missing `{want}` in:\n{text}");
}
