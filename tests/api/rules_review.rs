//! A reviewed rule change end to end: proposed with its impact report, refused to its
//! own proposer and to a person without `approve_rules`, approved by a second rules
//! approver, activated without a restart (a new order is decided under it), rolled
//! back, every step in the change log; and a daemon refusing unapproved rules at start.

use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::*;

/// The example rules with STANDARD reaching 2,000,000 (was 1,000,000).
pub(crate) fn candidate(current: &str) -> String {
    let edited = current
        .replace(r#"version = "2026-11-27.1""#, r#"version = "2026-12-06.1""#)
        .replace(r#"amount = "(100000..1000000]""#, r#"amount = "(100000..2000000]""#)
        .replace(r#"amount = "(1000000..10000000]""#, r#"amount = "(2000000..10000000]""#);
    assert_ne!(edited, current, "the example rules changed: update this edit");
    edited
}

/// The approval row and the rules label an order was screened under, and the
/// configuration versions its steps recorded.
async fn screened(app: &TestApp, external: &str) -> (String, String, Vec<String>) {
    let (status, body) = app.post_webhook(&deal(external, 1, "1500000.00")).await;
    assert_eq!(status, 202, "{body}");
    let id = body["order_id"].as_str().unwrap_or_else(|| panic!("no order id: {body}")).to_owned();
    let order = app.order(&id).await;
    let events = order["events"].as_array().unwrap();
    let passed = events
        .iter()
        .find(|e| e["event"]["type"] == "screening_passed")
        .unwrap_or_else(|| panic!("not screened: {order}"));
    let versions = events.iter().filter_map(|e| e["config_version"].as_str().map(str::to_owned)).collect();
    (
        passed["event"]["row"].as_str().unwrap().to_owned(),
        passed["event"]["rules_version"].as_str().unwrap().to_owned(),
        versions,
    )
}

#[tokio::test]
async fn a_change_is_approved_by_a_second_person_activated_live_and_rolled_back_with_its_trail() {
    let app = spawn_app().await;
    let rules = std::fs::read_to_string(app.dir.path().join("config/rules.toml")).unwrap();
    let (row, label, _) = screened(&app, "RR-1").await;
    assert_eq!((row.as_str(), label.as_str()), ("LARGE", "2026-11-27.1"));
    let (_, before) = app.api("/rules/changes").await;
    let live_before = before["live"].clone();

    // Proposed by chen.jing (a rules approver): the impact report names the order above.
    let chen = app.person_token("chen.jing");
    let (status, proposed) = app
        .api_post_with(&chen, "/rules/candidates", &json!({"rules": candidate(&rules), "note": "STANDARD 至 200 万"}))
        .await;
    assert_eq!(status, 200, "{proposed}");
    let version = proposed["version"].as_str().unwrap().to_owned();
    assert_eq!(proposed["label"], "2026-12-06.1");
    assert_eq!(proposed["impact"]["route_changed"], 1, "{proposed}");
    assert_eq!(proposed["impact"]["changes"][0]["after"]["row"], "STANDARD");

    // A broken candidate is refused with its line.
    let (status, bad) = app
        .api_post_with(
            &chen,
            "/rules/candidates",
            &json!({"rules": rules.replace("chain = [\"line_supervisor\"]", "chain = [\"nobody_role\"]")}),
        )
        .await;
    assert_eq!((status, bad["error"]["code"].as_str()), (422, Some("invalid_rules")), "{bad}");
    assert!(bad["error"]["message"].as_str().unwrap().starts_with("candidate rules.toml:"), "{bad}");

    // Not activatable before approval; the proposer may not approve; nor may wang.fang.
    let james = app.person_token("james.wong");
    let (status, early) = app.api_post_with(&james, "/rules/activate", &json!({"version": version})).await;
    assert_eq!((status, early["error"]["code"].as_str()), (409, Some("not_approved")), "{early}");
    let approve = format!("/rules/candidates/{}/approve", &version[..12]);
    let (status, own) = app.api_post_with(&chen, &approve, &json!({})).await;
    assert_eq!((status, own["error"]["code"].as_str()), (403, Some("own_proposal")), "{own}");
    assert!(own["error"]["message"].as_str().unwrap().starts_with("chen.jing proposed rules"), "{own}");
    let (status, denied) = app.api_post_json_as("wang.fang", &approve, &json!({})).await;
    assert_eq!(status, 403, "{denied}");
    assert!(denied["error"]["message"].as_str().unwrap().contains("approve_rules"), "{denied}");
    let (status, by_admin) = app.api_post_json(&approve, &json!({})).await;
    assert_eq!(status, 403, "the admin token is nobody in the directory: {by_admin}");

    let (status, approved) = app.api_post_with(&james, &approve, &json!({"note": "同意"})).await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["approved"]["by"], "james.wong");

    // Activated: the next order is decided under it, without a restart.
    let (status, activated) = app.api_post_with(&james, "/rules/activate", &json!({"version": version})).await;
    assert_eq!(status, 200, "{activated}");
    assert_eq!(activated["live"]["rules_version"], version.as_str());
    let config_after = activated["live"]["config_version"].as_str().unwrap().to_owned();
    assert_ne!(json!(config_after), live_before["config_version"]);
    let (row, label, versions) = screened(&app, "RR-2").await;
    assert_eq!((row.as_str(), label.as_str()), ("STANDARD", "2026-12-06.1"));
    assert!(versions.contains(&config_after), "{versions:?} should hold {config_after}");

    // Rolled back: the version before is live again, for the next order.
    let (status, back) = app.api_post_with(&james, "/rules/rollback", &json!({})).await;
    assert_eq!(status, 200, "{back}");
    assert_eq!(back["live"]["rules_version"], live_before["rules_version"]);
    assert_eq!(back["live"]["config_version"], live_before["config_version"]);
    let (row, _, _) = screened(&app, "RR-3").await;
    assert_eq!(row, "LARGE");

    // The trail: who, when, which version, through which door; the chain verifies.
    let (status, trail) = app.api("/rules/changes").await;
    assert_eq!(status, 200, "{trail}");
    let got: Vec<(String, String, String)> = trail["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["by"] != "system")
        .map(|c| {
            (
                c["what"].as_str().unwrap().into(),
                c["by"].as_str().unwrap().into(),
                c["channel"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = [
        ("proposed", "chen.jing"),
        ("approved", "james.wong"),
        ("activated", "james.wong"),
        ("rolled_back", "james.wong"),
    ]
    .iter()
    .map(|(w, b)| ((*w).into(), (*b).into(), "api".into()))
    .collect();
    assert_eq!(got, want);
    let rolled = trail["changes"].as_array().unwrap().last().unwrap();
    assert_eq!(
        (rolled["from"].as_str(), rolled["version"].clone()),
        (Some(version.as_str()), live_before["rules_version"].clone())
    );

    // The CLI reads the same trail and verifies its chain.
    let out = Command::new(bin()).args(["rules", "changes", "--config-dir"]).arg(app.dir.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("the chain verifies"), "{text}");
    assert!(text.contains(&format!("approved    {} by james.wong (api): 同意", &version[..12])), "{text}");

    // An edited line (another approver written in) is found and named.
    let log = app.dir.path().join("data/config-versions/rules-changes.jsonl");
    let edited = std::fs::read_to_string(&log).unwrap().replacen("\"by\":\"james.wong\"", "\"by\":\"zhou.min\"", 1);
    std::fs::write(&log, edited).unwrap();
    let out = Command::new(bin()).args(["rules", "changes", "--config-dir"]).arg(app.dir.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("rules-changes.jsonl:3: the rules change log was altered"), "{err}");
    let (status, _) = app.api("/rules/changes").await;
    assert_eq!(status, 503);
}

fn orderbridge(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    orderbridge_with(dir, args, &[])
}

fn orderbridge_with(dir: &std::path::Path, args: &[&str], env: &[(String, String)]) -> (Option<i32>, String, String) {
    let out = Command::new(bin()).args(args).arg("--config-dir").arg(dir).envs(env.iter().cloned()).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn with_review_on_the_daemon_starts_only_on_approved_rules() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "127.0.0.1:9".parse().unwrap());
    set_in_file(dir.path(), &[("rules.require_review", true.into())]);
    let check = orderbridge(dir.path(), &["check"]);
    assert!(!check.1.contains("require_review"), "no warning once review is on: {}", check.1);

    // Not approved: the built binary refuses, naming the file and the way out.
    let mut run = Command::new(bin());
    run.args(["run", "--config-dir"]).arg(dir.path()).envs(TestDefaults::env());
    let out = run.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("refusing to start: config/rules.toml is rules version"), "{err}");
    assert!(err.contains("orderbridge rules propose config/rules.toml --by PERSON"), "{err}");

    // Proposed and approved from the command line (the proposer may not approve).
    let (code, out, err) = orderbridge(dir.path(), &["rules", "propose", "config/rules.toml", "--by", "chen.jing"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let version = out.lines().find_map(|l| l.strip_prefix("candidate ")).unwrap_or_else(|| panic!("{out}")).to_owned();
    let (code, _, err) = orderbridge(dir.path(), &["rules", "approve", &version[..12], "--by", "chen.jing"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("chen.jing proposed rules") && err.contains("may not approve it"), "{err}");
    let (code, _, err) = orderbridge(dir.path(), &["rules", "approve", &version[..12], "--by", "wang.fang"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("wang.fang may not approve_rules"), "{err}");
    let (code, out, err) = orderbridge(dir.path(), &["rules", "approve", &version[..12], "--by", "james.wong"]);
    assert_eq!(code, Some(0), "{out}{err}");

    // Now it starts (and says the file's version is live).
    let daemon = start_daemon(dir.path(), &[]);
    let trail = changes(&daemon).await;
    assert_eq!(trail["live"]["rules_version"], version.as_str(), "{trail}");
    assert_eq!(trail["changes"].as_array().unwrap().len(), 3, "proposed, approved, activated at start: {trail}");

    // A change made with the CLI while the daemon runs: it follows without a restart.
    let rules = std::fs::read_to_string(dir.path().join("config/rules.toml")).unwrap();
    std::fs::write(dir.path().join("candidate.toml"), candidate(&rules)).unwrap();
    let candidate_file = dir.path().join("candidate.toml");
    // (The daemon holds the store: the impact report comes through its admin API.)
    let admin = [("ORDERBRIDGE__SERVER__ADMIN__PORT".to_owned(), daemon.admin.port().to_string())];
    let (code, out, err) = orderbridge_with(
        dir.path(),
        &["rules", "propose", candidate_file.to_str().unwrap(), "--by", "james.wong"],
        &admin,
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("0 order(s) replayed through rules 2026-12-06.1"), "through the daemon's API: {out}");
    let v2 = out.lines().find_map(|l| l.strip_prefix("candidate ")).unwrap().to_owned();
    for args in
        [["rules", "approve", &v2[..12], "--by", "chen.jing"], ["rules", "activate", &v2[..12], "--by", "chen.jing"]]
    {
        let (code, out, err) = orderbridge(dir.path(), &args);
        assert_eq!(code, Some(0), "{args:?}: {out}{err}");
    }
    let mut live = Value::Null;
    for _ in 0..500 {
        live = changes(&daemon).await["live"].clone();
        if live["rules_version"] == v2.as_str() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(live["rules_version"], v2.as_str(), "the running daemon never switched: {live}");
    assert_eq!(live["label"], "2026-12-06.1");

    // A restart keeps the activated version (config/rules.toml is still the first one).
    drop(daemon);
    let daemon = start_daemon(dir.path(), &[]);
    assert_eq!(changes(&daemon).await["live"]["rules_version"], v2.as_str());
    let log = daemon.log.lock().unwrap().join("\n");
    assert!(log.contains("not the live version") && log.contains(&v2[..12]), "{log}");
}

async fn changes(daemon: &Daemon) -> Value {
    client()
        .get(format!("http://{}/api/rules/changes", daemon.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_activation_set_for_a_time_takes_effect_then_in_the_running_daemon() {
    let clock = ManualClock::new("2026-12-07T01:00:00Z".parse().unwrap());
    let app = TestApp::builder().clock(clock.clock()).start().await;
    let rules = std::fs::read_to_string(app.dir.path().join("config/rules.toml")).unwrap();
    let (status, proposed) = app
        .api_post_with(&app.person_token("chen.jing"), "/rules/candidates", &json!({"rules": candidate(&rules)}))
        .await;
    assert_eq!(status, 200, "{proposed}");
    let version = proposed["version"].as_str().unwrap().to_owned();
    let james = app.person_token("james.wong");
    let (status, _) = app.api_post_with(&james, &format!("/rules/candidates/{version}/approve"), &json!({})).await;
    assert_eq!(status, 200);

    // Set for 02:00 (Beijing 10:00): until then the rules stay; then the daemon switches.
    let (status, activated) = app
        .api_post_with(&james, "/rules/activate", &json!({"version": version, "at": "2026-12-07T10:00:00+08:00"}))
        .await;
    assert_eq!(status, 200, "{activated}");
    assert_eq!(activated["activated"]["effective_at"], "2026-12-07T02:00:00Z");
    assert_ne!(activated["live"]["rules_version"], version.as_str(), "not before its time");
    let (_, trail) = app.api("/rules/changes").await;
    assert_eq!(trail["scheduled"].as_array().unwrap().len(), 1, "{trail}");
    let (row, _, _) = screened(&app, "RT-1").await;
    assert_eq!(row, "LARGE");

    clock.advance(chrono::Duration::hours(1));
    wait_until("the scheduled rules are live", || async {
        app.api("/rules/changes").await.1["live"]["rules_version"] == version.as_str()
    })
    .await;
    let (row, label, _) = screened(&app, "RT-2").await;
    assert_eq!((row.as_str(), label.as_str()), ("STANDARD", "2026-12-06.1"));
}
