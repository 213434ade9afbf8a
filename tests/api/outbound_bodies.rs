//! What leaves for other systems: a connector operation without a body mapping
//! receives a minimal envelope (ids, state, amount), never the customer's personal
//! data; the whole order goes only to an operation that opts in with
//! `body = "snapshot"`, which `check` points out.

use std::process::Command;

use crate::helpers::*;

const CLEAR: [&str; 4] = ["11010519491231002X", "+86 138 0013 8000", "zhang.wei@example.com", "张伟"];

/// Pushes a small order (approved automatically: `create_order` goes to the ERP) and
/// returns the body the ERP received for it.
async fn pushed(app: &TestApp, external: &str) -> (String, serde_json::Value) {
    let (s, b) = app.post_webhook(&deal(external, 1, "8000.00")).await;
    assert_eq!((s, b["state"].as_str()), (202, Some("approved")), "{b}");
    let id = b["order_id"].as_str().unwrap().to_owned();
    app.drain_outbox().await;
    let d = app.erp.deliveries();
    let body = d.iter().find(|d| d.path == "/orders" && d.body["order_id"] == id.as_str()).map(|d| d.body.clone());
    (id.clone(), body.unwrap_or_else(|| panic!("no create_order for {id}: {}", d.len())))
}

#[tokio::test]
async fn without_a_mapping_a_push_carries_no_personal_data() {
    let app = TestApp::builder().only_approval().start().await;
    let (id, body) = pushed(&app, "OB-1").await;
    let text = body.to_string();
    for clear in CLEAR {
        assert!(!text.contains(clear), "`{clear}` left for the ERP: {text}");
    }
    assert!(body.get("order").is_none(), "{body}");
    assert_eq!(body["order_id"], id.as_str());
    assert_eq!(body["external_id"], "OB-1");
    assert_eq!(body["state"], "approved");
    assert_eq!(body["amount"], serde_json::json!({"amount": "8000.00", "currency": "CNY"}));
    assert!(body["effect_id"].as_str().is_some_and(|e| e.starts_with(&id)), "{body}");

    // The example configuration needs no snapshot: check has nothing to note.
    let out = Command::new(bin()).args(["check", "--config-dir"]).arg(app.dir.path()).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !said.contains("snapshot"), "{said}");
}

#[tokio::test]
async fn an_operation_that_opts_in_gets_the_snapshot_and_check_notes_it() {
    let app = TestApp::builder()
        .only_approval()
        .files(|d| {
            replace_in_file(
                d,
                "connectors/demo-erp.toml",
                &[("path = \"/orders\"\n", "path = \"/orders\"\nbody = \"snapshot\"\n")],
            );
        })
        .start()
        .await;
    let (_, body) = pushed(&app, "OB-2").await;
    assert_eq!(body["order"]["customer"]["id_document"]["number"], "11010519491231002X", "{body}");
    assert_eq!(body["order"]["customer"]["name"], "张伟");

    let out = Command::new(bin()).args(["check", "--config-dir"]).arg(app.dir.path()).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "a note, not a problem: {said}");
    let note = said.lines().find(|l| l.contains("sends the whole order snapshot")).unwrap_or_else(|| panic!("{said}"));
    assert!(note.contains("connectors/demo-erp.toml:") && note.contains("operation create_order"), "{note}");
}
