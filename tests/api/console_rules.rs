//! The console's rules review page over TCP with signed-in sessions: a candidate
//! proposed from the console by one rules approver and approved by a second, the
//! proposer's own approval refused (four eyes), a candidate with problems shown at its
//! line with the text kept, a form without its CSRF token refused, a shadow run
//! started and stopped with its report on the page, activation from the page live at
//! once, each step in the change log with the person and channel `console`; a person
//! without the grants gets 403 and no link.

use serde_json::Value;

use crate::console::{csrf, sign_in};
use crate::helpers::*;
use crate::rules_review::candidate;

/// The change log's lines of `what`.
async fn changes(app: &TestApp, what: &str) -> Vec<Value> {
    let (status, body) = app.api("/rules/changes").await;
    assert_eq!(status, 200, "{body}");
    body["changes"].as_array().unwrap().iter().filter(|c| c["what"] == what).cloned().collect()
}

#[tokio::test]
async fn a_rules_change_is_proposed_and_approved_by_two_people_in_the_console() {
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().mail(&smtp).start().await;
    let rules = std::fs::read_to_string(app.dir.path().join("config/rules.toml")).unwrap();

    // chen.jing (a rules approver) proposes a candidate from the page.
    let mut chen = sign_in(&app, &smtp, "chen.jing@bank.example").await;
    let page = chen.get("/console/rules").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("href=\"/console/rules\" aria-current=\"page\""), "{}", page.body);
    assert!(page.body.contains("尚无候选版本"), "{}", page.body);
    let token = csrf(&page.body);
    let sent = chen
        .post(
            "/console/rules/candidates",
            &[("csrf", &token), ("rules", &candidate(&rules)), ("note", "STANDARD 至 200 万")],
        )
        .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert!(
        sent.body.contains("已提出为规则版本") && sent.body.contains("order(s) replayed through rules"),
        "{}",
        sent.body
    );
    let proposed = changes(&app, "proposed").await;
    assert_eq!(proposed.len(), 1, "{proposed:?}");
    assert_eq!((proposed[0]["by"].as_str(), proposed[0]["channel"].as_str()), (Some("chen.jing"), Some("console")));
    assert_eq!(proposed[0]["note"], "STANDARD 至 200 万");
    let version = proposed[0]["version"].as_str().unwrap().to_owned();
    assert!(sent.body.contains(&format!("<code>{}</code>", &version[..12])), "{}", sent.body);

    // A candidate with a problem: named at its line, the text kept, nothing proposed.
    let broken = rules.replace("chain = [\"line_supervisor\"]", "chain = [\"nobody_role\"]");
    let bad = chen.post("/console/rules/candidates", &[("csrf", &token), ("rules", &broken), ("note", "")]).await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(bad.body.contains("<code>candidate rules.toml:"), "{}", bad.body);
    assert!(bad.body.contains("chain = [&quot;nobody_role&quot;]"), "the text is kept: {}", bad.body);
    assert_eq!(changes(&app, "proposed").await.len(), 1);

    // The proposer may not approve it: no button, and the form refused (four eyes).
    assert!(sent.body.contains("此版本由您提出"), "{}", sent.body);
    assert!(!sent.body.contains(&format!("/console/rules/{version}/approve")), "{}", sent.body);
    let own = chen.post(&format!("/console/rules/{version}/approve"), &[("csrf", &token)]).await;
    assert_eq!(own.status, 403, "{}", own.body);
    assert!(own.body.contains("chen.jing proposed rules"), "{}", own.body);
    assert!(changes(&app, "approved").await.is_empty());

    // James Wong approves it, in English, with a note.
    let mut james = sign_in(&app, &smtp, "james.wong@bank.example").await;
    let page = james.get("/console/rules").await;
    assert!(page.body.contains("<html lang=\"en\""), "{}", page.body);
    assert!(page.body.contains(&format!("action=\"/console/rules/{version}/approve\"")), "{}", page.body);
    let token = csrf(&page.body);
    let approved =
        james.post(&format!("/console/rules/{version}/approve"), &[("csrf", &token), ("note", "checked")]).await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert!(approved.body.contains("Done: Approved"), "{}", approved.body);
    let log = changes(&app, "approved").await;
    assert_eq!((log[0]["by"].as_str(), log[0]["channel"].as_str()), (Some("james.wong"), Some("console")));
    assert_eq!(log[0]["note"], "checked");

    // Run in shadow from the page: an order the edit changes is in the shadow report.
    let shadow = format!("/console/rules/{version}/shadow");
    let started = james.post(&shadow, &[("csrf", &token), ("shadow", "start")]).await;
    assert_eq!(started.status, 200, "{}", started.body);
    assert!(started.body.contains("Stop the shadow run"), "{}", started.body);
    let (status, body) = app.post_webhook(&deal("CR-SHADOW", 1, "1500000.00")).await;
    assert_eq!(status, 202, "{body}");
    let order = body["order_id"].as_str().unwrap().to_owned();
    let page = james.get("/console/rules").await;
    let report = &page.body[page.body.find("id=\"shadow-report\"").unwrap()..];
    assert!(report.contains(&format!("<code>{order}</code>")) && report.contains("STANDARD"), "{report}");
    let stopped = james.post(&shadow, &[("csrf", &token), ("shadow", "stop")]).await;
    assert_eq!(stopped.status, 200, "{}", stopped.body);
    assert!(stopped.body.contains(&format!("Run {} in shadow", &version[..12])), "{}", stopped.body);
    for what in ["shadow_started", "shadow_stopped"] {
        let c = changes(&app, what).await;
        assert_eq!((c.len(), c[0]["by"].as_str(), c[0]["channel"].as_str()), (1, Some("james.wong"), Some("console")));
    }

    // Activation without the CSRF token is refused; with it, live at once.
    let forged = james.post(&format!("/console/rules/{version}/activate"), &[]).await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert!(forged.body.contains("did not come from this console page"), "{}", forged.body);
    assert!(changes(&app, "activated").await.iter().all(|c| c["channel"] != "console"));
    let live = james.post(&format!("/console/rules/{version}/activate"), &[("csrf", &token)]).await;
    assert_eq!(live.status, 200, "{}", live.body);
    let (_, now) = app.api("/rules/changes").await;
    assert_eq!(now["live"]["rules_version"], version.as_str(), "{now}");
    assert!(live.body.contains("Rules version <code>") && live.body.contains("“2026-12-06.1”"), "{}", live.body);
    let activated = changes(&app, "activated").await;
    let by_console: Vec<_> = activated.iter().filter(|c| c["channel"] == "console").collect();
    assert_eq!(by_console.len(), 1, "{activated:?}");
    assert_eq!(by_console[0]["by"], "james.wong");

    // sun.li (operations) has neither grant: no link, 403, and no form goes through.
    let mut sun = sign_in(&app, &smtp, "operations@bank.example").await;
    let inbox = sun.get("/console").await;
    assert!(!inbox.body.contains("href=\"/console/rules\""), "{}", inbox.body);
    let refused = sun.get("/console/rules").await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body.contains("sun.li may not propose_rules") && !refused.body.contains("候选"),
        "{}",
        refused.body
    );
    let token = csrf(&inbox.body);
    let tried = sun.post("/console/rules/candidates", &[("csrf", &token), ("rules", &rules)]).await;
    assert_eq!(tried.status, 403, "{}", tried.body);
    assert_eq!(changes(&app, "proposed").await.len(), 1);
    app.stop().await;
}
