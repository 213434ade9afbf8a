//! A shadow run end to end: an approved candidate that lowers the automatic approval
//! limit runs beside the live rules; orders pushed over HTTP are decided by the live
//! rules only (the mails sent are the live ones), and the shadow report lists exactly
//! the orders the edit changes; start and stop are in the change log; the metrics
//! count what was compared, under names promtool accepts.

use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::*;

/// The example rules with the automatic approval limit lowered from 100,000 to 50,000
/// (orders above it go to a line supervisor).
fn lowered(current: &str) -> String {
    let edited = current
        .replace(r#"amount = "<= 100000""#, r#"amount = "<= 50000""#)
        .replace(r#"amount = "(100000..1000000]""#, r#"amount = "(50000..1000000]""#);
    assert_ne!(edited, current, "the example rules changed: update this edit");
    edited
}

async fn push(app: &TestApp, external: &str, amount: &str) -> String {
    let (status, body) = app.post_webhook(&deal(external, 1, amount)).await;
    assert_eq!(status, 202, "{body}");
    body["order_id"].as_str().unwrap_or_else(|| panic!("no order id: {body}")).to_owned()
}

/// The counter `name` for the shadow version `short`, from `/metrics`.
fn counter(metrics: &str, name: &str, short: &str) -> Option<u64> {
    let series = format!("{name}{{rules_version=\"{short}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&series)).map(|v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn a_shadow_run_records_exactly_the_orders_an_edit_changes_and_sends_nothing() {
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().mail(&smtp).start().await;
    let rules = std::fs::read_to_string(app.dir.path().join("config/rules.toml")).unwrap();
    let (chen, james) = (app.person_token("chen.jing"), app.person_token("james.wong"));
    let (status, proposed) = app.api_post_with(&chen, "/rules/candidates", &json!({"rules": lowered(&rules)})).await;
    assert_eq!(status, 200, "{proposed}");
    let version = proposed["version"].as_str().unwrap().to_owned();
    let short = &version[..12];

    // Only an approved candidate runs in shadow, started by someone granted approve_rules.
    let (status, early) = app.api_post_with(&james, "/rules/shadow", &json!({"version": short})).await;
    assert_eq!((status, early["error"]["code"].as_str()), (409, Some("not_approved")), "{early}");
    let (status, _) = app.api_post_with(&james, &format!("/rules/candidates/{short}/approve"), &json!({})).await;
    assert_eq!(status, 200);
    let (status, denied) = app.api_post_json_as("wang.fang", "/rules/shadow", &json!({"version": short})).await;
    assert_eq!(status, 403, "{denied}");
    let (status, started) = app.api_post_with(&james, "/rules/shadow", &json!({"version": short})).await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["shadow_version"], version.as_str(), "{started}");
    assert_eq!(started["shadow_started"]["by"], "james.wong");
    assert_ne!(started["live"]["rules_version"], version.as_str(), "the live rules stay");

    // Orders on both sides of the old and the new limit.
    let mut ids = Vec::new();
    for (external, amount) in [
        ("SH-1", "30000.00"),
        ("SH-2", "80000.00"),
        ("SH-3", "500000.00"),
        ("SH-4", "95000.00"),
        ("SH-5", "1500000.00"),
    ] {
        ids.push(push(&app, external, amount).await);
    }
    let changed = [ids[1].clone(), ids[3].clone()];

    // The live rules decided: the two orders the edit changes were approved automatically.
    for id in &changed {
        let order = app.order(id).await;
        assert_eq!(order["approval"]["row"], "AUTO-SMALL", "{order}");
        assert_ne!(order["state"], "awaiting_approval", "{order}");
    }

    // The report lists exactly those two, with how they would differ.
    let (status, report) = app.api("/rules/shadow-report").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["shadow_version"], version.as_str());
    assert_eq!(report["running"], true);
    let listed: Vec<&str> =
        report["orders"].as_array().unwrap().iter().map(|o| o["order_id"].as_str().unwrap()).collect();
    let mut want: Vec<&str> = changed.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(listed, want, "{report}");
    for o in report["orders"].as_array().unwrap() {
        let kinds: Vec<&str> = o["kinds"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
        assert!(kinds.contains(&"route") && kinds.contains(&"state"), "{o}");
        let route = o["decisions"][0]["differences"].as_array().unwrap().iter().find(|d| d["kind"] == "route").unwrap();
        assert!(route["live"].as_str().unwrap().contains("AUTO-SMALL"), "{route}");
        assert!(route["shadow"].as_str().unwrap().contains("STANDARD (line_supervisor)"), "{route}");
        assert_eq!(o["decisions"][0]["step"], "intake");
        assert_eq!(o["decisions"][0]["live_version"], started["live"]["rules_version"]);
        let effects = o["decisions"][0]["differences"].as_array().unwrap().iter().find(|d| d["kind"] == "effects");
        let effects = effects.unwrap_or_else(|| panic!("the shadow would have asked a supervisor: {o}"));
        assert!(effects["shadow"].as_str().unwrap().contains("wang.fang"), "{effects}");
    }

    // The metrics count the orders compared and those that differ, per shadow version.
    let metrics = app.metrics().await;
    assert_eq!(counter(&metrics, "orderbridge_shadow_orders_compared_total", short), Some(5), "{metrics}");
    assert_eq!(counter(&metrics, "orderbridge_shadow_orders_differing_total", short), Some(2), "{metrics}");
    promtool_accepts(&metrics);

    // The CLI reads the same report.
    let out = Command::new(bin())
        .args(["rules", "shadow-report", "--version", short, "--config-dir"])
        .arg(app.dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("2 order(s) decided differently under rules {short}")), "{text}");
    assert!(changed.iter().all(|id| text.contains(&format!("{id} intake route: "))), "{text}");

    // Stopped: a new order is no longer compared; start and stop are in the change log.
    let (status, stopped) = app.api_post_with(&james, "/rules/shadow", &json!({"stop": true})).await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["shadow_version"], Value::Null);
    let control = [push(&app, "SH-6", "80000.00").await, push(&app, "SH-7", "95000.00").await];
    let (_, report) = app.api("/rules/shadow-report").await;
    assert_eq!(report["running"], false);
    assert_eq!(report["orders"].as_array().unwrap().len(), 2, "{report}");
    let metrics = app.metrics().await;
    assert_eq!(counter(&metrics, "orderbridge_shadow_orders_compared_total", short), Some(5));

    // Nothing of the shadow was sent: each order the edit changes got exactly the
    // mails and pushes of its twin (SH-6, SH-7: same amount) decided with no shadow.
    app.drain_outbox().await;
    let sent = |id: &str| -> Vec<(Vec<String>, String)> {
        let mut v: Vec<(Vec<String>, String)> = smtp
            .messages()
            .iter()
            .filter(|m| m.part("text/plain").contains(id) || m.subject().contains(id))
            .map(|m| (m.rcpt(), m.subject().replace(id, "ID")))
            .collect();
        v.sort();
        v
    };
    let pushed = |id: &str| app.erp.deliveries().iter().filter(|d| d.body["order_id"] == id).count();
    for (id, twin) in changed.iter().zip(&control) {
        wait_until("the twin decided without a shadow has its mails", || async { !sent(twin).is_empty() }).await;
        assert!(pushed(twin) > 0, "the twin pushed nothing: no comparison");
        assert_eq!(sent(id), sent(twin), "mails of {id} differ from its twin's, decided with no shadow");
        assert_eq!(pushed(id), pushed(twin), "pushes of {id}");
    }

    let (_, trail) = app.api("/rules/changes").await;
    let shadow_lines: Vec<(&str, &str, &str)> = trail["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["what"].as_str().unwrap().starts_with("shadow_"))
        .map(|c| (c["what"].as_str().unwrap(), c["by"].as_str().unwrap(), c["version"].as_str().unwrap()))
        .collect();
    assert_eq!(
        shadow_lines,
        [("shadow_started", "james.wong", version.as_str()), ("shadow_stopped", "james.wong", version.as_str())]
    );
    let (status, again) = app.api_post_with(&james, "/rules/shadow", &json!({"stop": true})).await;
    assert_eq!((status, again["error"]["code"].as_str()), (409, Some("no_shadow")), "{again}");
}

/// `promtool check metrics` finds nothing to say about the shadow metrics.
fn promtool_accepts(metrics: &str) {
    use std::io::Write as _;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed by scripts/test.sh (Debian package prometheus)");
    child.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(metrics.contains("# TYPE orderbridge_shadow_orders_compared_total counter"), "{metrics}");
    let about_shadow: Vec<&str> = said.lines().filter(|l| l.contains("shadow")).collect();
    assert!(about_shadow.is_empty(), "promtool on the shadow metrics: {about_shadow:?}");
}

/// Started from the command line while the daemon runs: the daemon follows the
/// change log within a sweep, and the next order is compared.
#[tokio::test]
async fn a_shadow_started_with_the_cli_is_followed_by_the_running_daemon() {
    let app = spawn_app().await;
    let rules = std::fs::read_to_string(app.dir.path().join("config/rules.toml")).unwrap();
    let (status, proposed) = app
        .api_post_with(&app.person_token("chen.jing"), "/rules/candidates", &json!({"rules": lowered(&rules)}))
        .await;
    assert_eq!(status, 200, "{proposed}");
    let version = proposed["version"].as_str().unwrap().to_owned();
    let cli = |args: &[&str]| {
        let out = Command::new(bin()).args(args).arg("--config-dir").arg(app.dir.path()).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = cli(&["rules", "shadow", &version[..12], "--by", "james.wong"]);
    assert_eq!(code, Some(1), "not approved yet");
    assert!(err.contains("is not approved"), "{err}");
    let (code, out, err) = cli(&["rules", "approve", &version[..12], "--by", "james.wong"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = cli(&["rules", "shadow", &version[..12], "--by", "james.wong"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&format!("shadow_started {} by james.wong (cli)", &version[..12])), "{out}");

    wait_until("the daemon runs the shadow", || async {
        app.api("/rules/shadow-report").await.1["daemon_shadow_version"] == version.as_str()
    })
    .await;
    let changed = push(&app, "SC-1", "70000.00").await;
    push(&app, "SC-2", "20000.00").await;
    let (_, report) = app.api("/rules/shadow-report").await;
    let listed: Vec<&str> =
        report["orders"].as_array().unwrap().iter().map(|o| o["order_id"].as_str().unwrap()).collect();
    assert_eq!(listed, [changed.as_str()], "{report}");

    let (code, out, err) = cli(&["rules", "shadow", "--stop", "--by", "james.wong"]);
    assert_eq!(code, Some(0), "{out}{err}");
    wait_until("the daemon stops the shadow", || async {
        app.api("/rules/shadow-report").await.1["daemon_shadow_version"].is_null()
    })
    .await;
    let (code, out, _) = cli(&["rules", "shadow-report", "--json"]);
    assert_eq!(code, Some(0));
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((report["running"].as_bool(), report["orders"].as_array().map(Vec::len)), (Some(false), Some(1)));
}

/// A later step is compared too: an edit to the execution tasks changes nothing at
/// intake of an order that waits for approval, and shows at its approval.
#[tokio::test]
async fn a_later_step_decided_differently_is_recorded_with_its_step() {
    let app = spawn_app().await;
    let rules = std::fs::read_to_string(app.dir.path().join("config/rules.toml")).unwrap();
    let fewer_tasks = rules
        .replace("products = [\"wealth_management\", \"fund\", \"deposit\", \"brokerage\"]", "products = [\"fund\"]");
    assert_ne!(fewer_tasks, rules, "the example rules changed: update this edit");
    let (status, proposed) =
        app.api_post_with(&app.person_token("chen.jing"), "/rules/candidates", &json!({"rules": fewer_tasks})).await;
    assert_eq!(status, 200, "{proposed}");
    let version = proposed["version"].as_str().unwrap().to_owned();
    let james = app.person_token("james.wong");
    let (status, _) = app.api_post_with(&james, &format!("/rules/candidates/{version}/approve"), &json!({})).await;
    assert_eq!(status, 200);
    let (status, _) = app.api_post_with(&james, "/rules/shadow", &json!({"version": version})).await;
    assert_eq!(status, 200);

    let id = push(&app, "SL-1", "500000.00").await;
    let (_, report) = app.api("/rules/shadow-report").await;
    assert_eq!(report["orders"], json!([]), "the same at intake: {report}");

    let (status, body) =
        app.api_post_json_as("wang.fang", &format!("/orders/{id}/approvals"), &json!({"decision": "approve"})).await;
    assert_eq!(status, 200, "{body}");
    let order = app.order(&id).await;
    let tasks = order["events"].as_array().unwrap().iter().filter(|e| e["event"]["type"] == "task_assigned").count();
    assert_eq!(tasks, 3, "the live rules assigned their tasks: {order}");

    let (_, report) = app.api("/rules/shadow-report").await;
    let orders = report["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 1, "{report}");
    let decision = &orders[0]["decisions"][0];
    assert_eq!(orders[0]["order_id"], id.as_str());
    assert_ne!(decision["step"], "intake", "{decision}");
    let tasks = decision["differences"].as_array().unwrap().iter().find(|d| d["kind"] == "tasks").unwrap();
    assert_eq!(
        (tasks["live"].as_str(), tasks["shadow"].as_str()),
        (Some("client_briefing, contract, product_setup"), Some("client_briefing, contract"))
    );
    let metrics = app.metrics().await;
    assert_eq!(counter(&metrics, "orderbridge_shadow_orders_compared_total", &version[..12]), Some(1));
    assert_eq!(counter(&metrics, "orderbridge_shadow_orders_differing_total", &version[..12]), None);
    assert_eq!(counter(&metrics, "orderbridge_shadow_later_decisions_differing_total", &version[..12]), Some(1));
}
