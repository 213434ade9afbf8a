//! The command line against a real store: offline reads, reads through the running
//! daemon's API, dead-letter replay, tamper detection, and graceful shutdown.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::helpers::*;

/// Runs the CLI without blocking the runtime that serves the in-process daemon.
async fn cli(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut c = Command::new(bin());
    c.args(args).arg("--config-dir").arg(dir);
    for (k, v) in env {
        c.env(k, v);
    }
    tokio::task::spawn_blocking(move || c.output().unwrap()).await.unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn read_commands_work_offline_and_through_the_running_daemon() {
    let app = spawn_app().await;
    let (_, b) = app.post_webhook(&sample()).await;
    let id = b["order_id"].as_str().unwrap().to_owned();

    // While the daemon holds the store, the CLI asks its API.
    // It finds the API on the admin listener (the public one does not serve /api).
    let port = app.admin.port().to_string();
    let out =
        cli(app.dir.path(), &["orders", "show", &id, "--json"], &[("ORDERBRIDGE__SERVER__ADMIN__PORT", port.clone())])
            .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["order"]["customer"]["name"], "张伟");
    let out = cli(app.dir.path(), &["audit", "verify"], &[("ORDERBRIDGE__SERVER__ADMIN__PORT", port)]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    // Stopped: the CLI opens the store itself.
    let dir = app.stop_and_release().await;
    let out = cli(dir.path(), &["orders", "list", "--state", "awaiting_approval"], &[]).await;
    let text = stdout(&out);
    assert!(out.status.success());
    assert!(
        text.contains(&id) && text.contains("张伟") && text.contains("1250000.00") && text.contains("1 order(s)"),
        "{text}"
    );
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_from_the_cli() {
    let erp = Receiver::start().await;
    erp.set_refuse(true);
    let app = TestApp::builder().erp(erp.clone()).start().await;
    let (_, b) = app.post_webhook(&deal("D-CLI", 1, "100.00")).await;
    assert_eq!(b["state"], "executing");
    app.drain_outbox().await;
    let dir = app.stop_and_release().await;

    let out = cli(dir.path(), &["outbox", "dead", "--json"], &[]).await;
    let dead: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let effect = dead[0]["id"].as_str().unwrap().to_owned();
    let out = cli(dir.path(), &["outbox", "replay", &effect], &[]).await;
    assert!(stdout(&out).contains(&format!("replayed {effect}")), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(dir.path(), &["outbox", "list", "--json"], &[]).await;
    let pending: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(pending[0]["id"], effect.as_str());
    assert_eq!(pending[0]["attempts"], 0);

    // The daemon picks the replayed effect up and delivers it.
    erp.set_refuse(false);
    let app = restart(dir, erp.clone()).await;
    app.drain_outbox().await;
    assert_eq!(erp.accepted_per_key().len(), 1);
    // The audit says it was done on the command line.
    let order = app.order(b["order_id"].as_str().unwrap()).await;
    let replayed =
        order["events"].as_array().unwrap().iter().find(|e| e["event"]["type"] == "effect_replayed").unwrap();
    assert_eq!(replayed["channel"], "cli", "{replayed}");
    app.stop().await;
}

#[tokio::test]
async fn audit_verify_names_the_tampered_step() {
    let app = spawn_app().await;
    let (_, b) = app.post_webhook(&deal("D-T1", 1, "3000000.00")).await;
    let (_, b2) = app.post_webhook(&deal("D-T2", 1, "3000000.00")).await;
    let victim = b2["order_id"].as_str().unwrap().to_owned();
    assert_ne!(b["order_id"], b2["order_id"]);
    let dir = app.stop_and_release().await;
    let out = cli(dir.path(), &["audit", "verify"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("audit intact: 2 orders, 6 events verified"), "{}", stdout(&out));

    // Someone edits the second event of the second order on disk: who did it.
    {
        let settings = load_settings(dir.path());
        let engine = orderbridge::store::open_engine(&settings.store).unwrap();
        let oid: orderbridge::domain::OrderId = victim.parse().unwrap();
        let mut key = vec![b'e'];
        key.extend_from_slice(oid.as_bytes());
        key.extend_from_slice(&1u32.to_be_bytes());
        let row = engine.get(&key).unwrap().expect("the intake step's events");
        let mut events = orderbridge::store::records::StepEvents::decode(&row).unwrap();
        events[1].actor = orderbridge::engine::Actor::Person("mallory".into());
        let mut batch = orderbridge::store::kv::Batch::default();
        batch.put(key, orderbridge::store::records::StepEvents::encode(&events));
        engine.write(batch).unwrap();
        engine.sync().unwrap();
    }
    let out = cli(dir.path(), &["audit", "verify"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    // A step's events are stored with the step's head hash only: the break shows at
    // the step's last event (the intake step wrote events 1 to 3).
    assert!(text.contains(&format!("audit BROKEN at order {victim} event 3")), "{text}");
    assert!(text.contains("altered"), "{text}");
}

#[tokio::test]
async fn sigterm_stops_cleanly_without_leaking_secrets_into_logs() {
    let erp = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), erp.addr);
    let mut daemon = start_daemon(dir.path(), &["--log-format", "json"]);
    let status = client().get(format!("http://{}/readyz", daemon.addr)).send().await.unwrap().status();
    assert_eq!(status, 200);
    Command::new("kill").args(["-TERM", &daemon.child.id().to_string()]).status().unwrap();
    let exit = daemon.child.wait().unwrap();
    assert_eq!(exit.code(), Some(0));
    wait_until("the last log line is read", || async {
        daemon.log.lock().unwrap().iter().any(|l| l.contains("stopped cleanly"))
    })
    .await;
    let lines = daemon.log.lock().unwrap().clone();
    let last: Value = serde_json::from_str(lines.last().unwrap()).expect("JSON logs");
    assert_eq!(last["message"], "stopped cleanly", "{lines:?}");
    assert!(lines.iter().all(|l| !l.contains(ADMIN_TOKEN) && !l.contains(CRM_SECRET) && !l.contains(ERP_TOKEN)));
}

#[tokio::test]
async fn explain_tells_why_an_order_is_where_it_is() {
    let app = spawn_app().await;
    let mut p = deal("D-EX1", 1, "5000.00");
    p["deal"]["customer"]["kyc_verified"] = false.into();
    let (_, flagged) = app.post_webhook(&p).await;
    let (_, small) = app.post_webhook(&deal("D-EX2", 1, "5000.00")).await;
    let (_, large) = app.post_webhook(&deal("D-EX3", 1, "20000000.00")).await;
    app.drain_outbox().await;
    let dir = app.stop_and_release().await;
    let id = |b: &Value| b["order_id"].as_str().unwrap().to_owned();

    let out = stdout(&cli(dir.path(), &["explain", &id(&flagged)], &[]).await);
    assert!(out.contains("screening flagged (rules 2026-11-27.1):"), "{out}");
    assert!(out.contains("rule KYC-001 (flag): 客户未完成 KYC 认证"), "{out}");
    assert!(out.trim_end().ends_with("waiting for: manual review of the flagged screening result"), "{out}");

    let out = stdout(&cli(dir.path(), &["explain", &id(&small)], &[]).await);
    assert!(out.contains("approved level 1 (line_supervisor) by the daemon on behalf of line_supervisor"), "{out}");
    assert!(out.contains("demo-erp.create_order succeeded after 1 attempt(s)"), "{out}");

    let out = cli(dir.path(), &["explain", &id(&large), "--json"], &[]).await;
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["route"], serde_json::json!(["line_supervisor", "branch_manager", "risk_committee"]));
    assert_eq!(v["waiting_for"], "approval level 1 of 3 (line_supervisor)");
    assert_eq!(v["screening"][0]["rules_version"], "2026-11-27.1");
    assert_eq!(v["screening"][0]["matrix_row"], "VERY-LARGE");
    assert_eq!(v["screening"][0]["inputs"]["amount"], "20000000.00");
    assert_eq!(v["screening"][0]["inputs"]["customer.credit_rating"], "A");
    let out = stdout(&cli(dir.path(), &["explain", &id(&flagged)], &[]).await);
    assert!(out.contains("inputs: amount=5000.00,"), "the inputs the rules looked at: {out}");
}

#[tokio::test]
async fn mapping_test_prints_the_canonical_order_or_the_error() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "127.0.0.1:9".parse().unwrap());
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/demo-crm-deal.json");
    let out = cli(dir.path(), &["mapping", "test", "demo-crm", "--input", fixture.to_str().unwrap()], &[]).await;
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["external_id"], "D-10042");
    assert_eq!(v["order"]["customer"]["name"], "张伟");
    assert_eq!(v["order"]["amount"], serde_json::json!({"amount": "1250000.00", "currency": "CNY"}));

    let mut bad: Value = serde_json::from_str(&std::fs::read_to_string(&fixture).unwrap()).unwrap();
    bad["deal"]["amount"] = "一百万".into();
    let bad_path = dir.path().join("bad.json");
    std::fs::write(&bad_path, serde_json::to_vec(&bad).unwrap()).unwrap();
    let out = cli(dir.path(), &["mapping", "test", "demo-crm", "--input", bad_path.to_str().unwrap()], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mapping demo-crm: field `amount.amount` (from $.deal.amount): \"一百万\""), "{err}");

    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        "version = \"1\"\nconnector = \"demo-crm\"\nexternal_id = { path = \"$.[\" }\n\n[fields]\n",
    )
    .unwrap();
    let out =
        cli(dir.path(), &["mapping", "test", broken.to_str().unwrap(), "--input", fixture.to_str().unwrap()], &[])
            .await;
    assert_eq!(out.status.code(), Some(78), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("broken.toml:3:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn store_copy_makes_a_verified_copy_that_the_daemon_runs_on() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let (_, b) = app.post_webhook(&deal(&format!("D-COPY-{n}"), 1, "1250000.00")).await;
        ids.push(b["order_id"].as_str().unwrap().to_owned());
    }
    let dir = app.stop_and_release().await;
    let target = dir.path().join("copied");

    let out = cli(dir.path(), &["store", "copy", "--to-path", target.to_str().unwrap()], &[]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("audit intact on the copy: 5 orders"), "{text}");
    // A second copy onto it is refused: the target holds data.
    let again = cli(dir.path(), &["store", "copy", "--to-path", target.to_str().unwrap()], &[]).await;
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds data"), "{:?}", again);

    // The daemon runs on the copy and finds every order.
    let out = cli(
        dir.path(),
        &["orders", "list", "--json"],
        &[("ORDERBRIDGE__STORE__PATH", target.to_str().unwrap().to_owned())],
    )
    .await;
    let listed: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    let mut got: Vec<String> = listed.iter().map(|o| o["id"].as_str().unwrap().to_owned()).collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids);

    // Onto every engine: the copy verifies, and the daemon runs on it with that engine.
    for backend in orderbridge::store::Backend::EMBEDDED {
        let target = dir.path().join(format!("copied-{backend}"));
        let out =
            cli(dir.path(), &["store", "copy", "--to-backend", backend, "--to-path", target.to_str().unwrap()], &[])
                .await;
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(0), "{backend}: {text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            text.contains(&format!("({backend})")) && text.contains("audit intact on the copy: 5 orders"),
            "{text}"
        );
        let env = [
            ("ORDERBRIDGE__STORE__PATH", target.to_str().unwrap().to_owned()),
            ("ORDERBRIDGE__STORE__BACKEND", (*backend).to_owned()),
        ];
        let out = cli(dir.path(), &["orders", "list", "--json"], &env).await;
        let listed: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
        let mut got: Vec<String> = listed.iter().map(|o| o["id"].as_str().unwrap().to_owned()).collect();
        got.sort();
        assert_eq!(got, ids, "{backend}");
    }
}
