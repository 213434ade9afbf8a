//! Every action is taken by a principal: a person (personal token, console session),
//! an API client (scoped token) or the bootstrap admin token. The audit names the
//! principal and its channel, never a name from a body; the policy table decides who
//! may do what; tokens are kept hashed.

use serde_json::json;

use crate::helpers::*;

async fn waiting(app: &TestApp, ext: &str, amount: &str) -> String {
    let (s, b) = app.post_webhook(&deal(ext, 1, amount)).await;
    assert_eq!((s, b["state"].as_str()), (202, Some("awaiting_approval")), "{b}");
    b["order_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_request_acts_as_its_principal_never_as_a_name_in_its_body() {
    let app = spawn_app().await;
    let id = waiting(&app, "D-PRIN-1", "500000.00").await;
    let approvals = format!("/orders/{id}/approvals");

    // The old call: the admin token naming an approver. Refused, nothing recorded.
    let (s, b) = app.api_post_json(&approvals, &json!({"approver": "wang.fang", "decision": "approve"})).await;
    assert_eq!(
        (s, b["error"]["code"].as_str(), b["error"]["field"].as_str()),
        (403, Some("not_the_principal"), Some("approver")),
        "{b}"
    );
    assert!(b["error"]["message"].as_str().unwrap().contains("authenticated as `admin:bootstrap`"), "{b}");
    // Without a name, the admin token is nobody in the directory: it never approves.
    let (s, b) = app.api_post_json(&approvals, &json!({"decision": "approve"})).await;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("not_a_person")), "{b}");
    // A person's token naming somebody else: refused too.
    let (s, b) =
        app.api_post_json_as("zhao.lei", &approvals, &json!({"approver": "wang.fang", "decision": "approve"})).await;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("not_the_principal")), "{b}");
    // A person without the role in the policy table: 403 before any approval check.
    let (s, b) = app.api_post_json_as("sun.li", &approvals, &json!({"decision": "approve"})).await;
    assert_eq!(s, 403, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("sun.li may not decide_approval"), "{b}");
    assert_eq!(app.order(&id).await["state"], "awaiting_approval");

    // wang.fang approves as herself (naming herself is fine); the audit says so.
    let (s, b) =
        app.api_post_json_as("wang.fang", &approvals, &json!({"approver": "wang.fang", "decision": "approve"})).await;
    assert_eq!(s, 200, "{b}");
    let order = app.order(&id).await;
    let approved =
        order["events"].as_array().unwrap().iter().find(|e| e["event"]["type"] == "approved").unwrap().clone();
    assert_eq!(
        (approved["actor"]["id"].as_str(), approved["channel"].as_str()),
        (Some("wang.fang"), Some("api")),
        "{approved}"
    );
    let (_, verify) = app.api("/audit/verify").await;
    assert_eq!(verify["intact"], true, "{verify}");
    app.stop().await;
}

#[tokio::test]
async fn one_token_approves_one_level_so_three_levels_take_three_people() {
    let app = spawn_app().await;
    // 5,000,000 CNY: line supervisor, branch manager, risk officer.
    let id = waiting(&app, "D-PRIN-3", "5000000.00").await;
    let approvals = format!("/orders/{id}/approvals");
    let zhao = app.person_token("zhao.lei");
    let (s, b) = app.api_post_with(&zhao, &approvals, &json!({"decision": "approve"})).await;
    assert_eq!(s, 200, "{b}");
    // zhao.lei also holds branch_manager: four eyes still stops the same token.
    let (s, b) = app.api_post_with(&zhao, &approvals, &json!({"decision": "approve"})).await;
    assert_eq!(s, 403, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("already approved"), "{b}");
    app.stop().await;
}

#[tokio::test]
async fn api_clients_act_within_their_scopes_until_expired_or_revoked_and_only_hashes_are_kept() {
    let clock = ManualClock::new(chrono::Utc::now());
    let app = TestApp::builder().clock(clock.clock()).start().await;
    let in_a_day = clock.now() + chrono::Duration::days(1);
    let reports = app.token("client:bi-warehouse", &["see_reports"], Some(in_a_day));
    let get = |token: String, path: &'static str| {
        let (client, url) = (app.client.clone(), format!("http://{}/api{path}", app.admin));
        async move {
            let r = client.get(url).bearer_auth(token).send().await.unwrap();
            (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    let (s, b) = get(reports.clone(), "/reports/kpis?from=2026-11-30&to=2026-11-30").await;
    assert_eq!(s, 200, "{b}");
    // Out of scope: 403 naming the scope.
    let (s, b) = get(reports.clone(), "/orders").await;
    assert_eq!(s, 403, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("its scopes do not include `see_personal_data`"), "{b}");
    let (s, _) = get(reports.clone(), "/audit/verify").await;
    assert_eq!(s, 403);
    // A client never approves, whatever its scopes.
    let id = waiting(&app, "D-PRIN-2", "500000.00").await;
    let approver = app.token("client:robot", &["decide_approval"], None);
    let (s, b) =
        app.api_post_with(&approver, &format!("/orders/{id}/approvals"), &json!({"decision": "approve"})).await;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("not_a_person")), "{b}");

    // Expired: 401.
    clock.advance(chrono::Duration::days(2));
    let (s, b) = get(reports.clone(), "/reports/kpis?from=2026-11-30&to=2026-11-30").await;
    assert_eq!(s, 401, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("expired"), "{b}");
    // Revoked: 401.
    let ops = app.token("client:ops-dashboard", &["replay_dead_letters"], None);
    assert_eq!(get(ops.clone(), "/outbox").await.0, 200);
    let id_of = |t: &str| t.trim_start_matches("obt_").split('_').next().unwrap().to_owned();
    orderbridge::auth::revoke(app.state.store_path(), &id_of(&ops), clock.now()).unwrap();
    let (s, b) = get(ops.clone(), "/outbox").await;
    assert_eq!(s, 401, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("revoked"), "{b}");
    // A made-up token in our format: 401.
    assert_eq!(get(format!("{ops}0"), "/outbox").await.0, 401);

    // The secrets are nowhere in the data directory; their hashes are.
    let secrets: Vec<String> =
        [&reports, &approver, &ops].iter().map(|t| t.rsplit('_').next().unwrap().to_owned()).collect();
    let data = app.state.store_path().to_owned();
    let dir = app.stop().await;
    let mut scanned = 0;
    for entry in walk(&data) {
        let bytes = std::fs::read(&entry).unwrap();
        scanned += 1;
        for s in &secrets {
            assert!(!bytes.windows(s.len()).any(|w| w == s.as_bytes()), "a token's secret in {}", entry.display());
        }
    }
    assert!(scanned > 0);
    let file = std::fs::read_to_string(data.join("auth/tokens.json")).unwrap();
    use sha2::Digest as _;
    assert!(file.contains(&hex::encode(sha2::Sha256::digest(secrets[0].as_bytes()))), "{file}");
    drop(dir);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

#[tokio::test]
async fn the_bootstrap_admin_token_can_be_switched_off() {
    let app = TestApp::builder().settings(|s| s.admin_token = None).start().await;
    let (s, b) = app.api("/connectors").await;
    assert_eq!(s, 401, "{b}");
    let token = app.token("client:ops", &["resume_connectors"], None);
    let r = app.client.get(format!("http://{}/api/connectors", app.admin)).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    app.stop().await;
}

#[test]
fn the_tokens_commands_make_list_rotate_and_revoke_printing_a_secret_once() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "127.0.0.1:9".parse().unwrap());
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin()).args(args).arg("--config-dir").arg(dir.path()).output().unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let (code, out, err) = run(&[
        "tokens",
        "create",
        "--client",
        "erp",
        "--scopes",
        "record_delivery,take_acceptance",
        "--expires",
        "90d",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("client:erp  record_delivery,take_acceptance  expires "), "{out}");
    let (id, secret) = (lines[0].split_whitespace().next().unwrap().to_owned(), lines[1].to_owned());
    assert!(secret.starts_with(&format!("obt_{id}_")), "{out}");
    let (_, listed, _) = run(&["tokens", "list"]);
    assert!(listed.contains(&id) && !listed.contains(&secret), "{listed}");
    let (code, out, _) = run(&["tokens", "rotate", &id]);
    assert_eq!(code, Some(0));
    assert!(out.lines().nth(1).is_some_and(|t| t.starts_with(&format!("obt_{id}_")) && t != secret), "{out}");
    let (code, out, _) = run(&["tokens", "revoke", &id]);
    assert_eq!(code, Some(0));
    assert!(out.contains("revoked "), "{out}");
    // Bad input is refused with a clear message.
    let (code, _, err) = run(&["tokens", "create", "--client", "x", "--scopes", "approve"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("unknown action `approve`"), "{err}");
    let (code, _, err) = run(&["tokens", "create", "--person", "nobody"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("no person `nobody`"), "{err}");
}
