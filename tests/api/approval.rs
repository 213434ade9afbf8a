//! The approval workflow end to end: order in → approval requests by mail → links
//! followed over HTTP → next level mailed → approved, with every refusal a clear page
//! (or API error) that changes nothing.

use chrono::Utc;
use serde_json::{Value, json};

use crate::helpers::*;

async fn post(app: &TestApp, payload: &Value) -> String {
    let (status, body) = app.post_webhook(payload).await;
    assert_eq!(status, 202, "{body}");
    body["order_id"].as_str().unwrap().to_owned()
}

/// The approval link in the newest mail to `addr` about `order_id`, once it arrived.
async fn approval_link(smtp: &SmtpServer, addr: &str, order_id: &str, nth: usize) -> String {
    let dir = smtp.maildir.clone();
    let matches = move |m: &Mail| {
        m.rcpt().iter().any(|r| r == addr)
            && m.part("text/plain").contains(order_id)
            && m.part("text/plain").contains("/pages/approval/")
    };
    wait_until(&format!("approval request {nth} to {addr}"), || {
        let dir = dir.clone();
        async move { messages_in(&dir).iter().filter(|m| matches(m)).count() > nth }
    })
    .await;
    smtp.messages().into_iter().filter(|m| matches(m)).nth(nth).unwrap().page_link()
}

/// The link with one character of its signature changed.
fn tamper(url: &str) -> String {
    let mut b = url.as_bytes().to_vec();
    let i = b.len() - 10;
    b[i] = if b[i] == b'x' { b'y' } else { b'x' };
    String::from_utf8(b).unwrap()
}

/// The order's events without the dispatcher's bookkeeping (mail sent etc.).
async fn events(app: &TestApp, id: &str) -> Vec<Value> {
    let all = app.order(id).await["events"].as_array().unwrap().clone();
    all.into_iter().filter(|e| !e["event"]["type"].as_str().unwrap().starts_with("effect_")).collect()
}

/// GET and POST of a page; the answer's status and text.
async fn get(url: &str) -> (u16, String) {
    let r = client().get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn submit(url: &str, form: &[(&str, &str)]) -> (u16, String) {
    let r = client().post(url).form(form).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn an_order_is_approved_level_by_level_from_links_in_mail() {
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().clock(orderbridge::clock::Clock::system()).mail(&smtp).start().await;
    // 1,250,000 CNY: row LARGE, line_supervisor → branch_manager.
    let id = post(&app, &deal("D-APPR", 1, "1250000.00")).await;
    let order = app.order(&id).await;
    assert_eq!(order["state_detail"], json!({"name": "awaiting_approval", "level": 1, "of": 2}));
    assert_eq!(order["approval"]["row"], "LARGE");

    // Both line supervisors are asked (never li.na, the sales owner).
    let wang = approval_link(&smtp, "wang.fang@bank.example", &id, 0).await;
    let zhao_level1 = approval_link(&smtp, "zhao.lei@bank.example", &id, 0).await;
    let mails = smtp.messages();
    let request = mails.iter().find(|m| m.rcpt() == ["wang.fang@bank.example"]).unwrap();
    assert!(request.subject().contains("第1级") || request.subject().contains("1"), "{}", request.subject());
    let link = request.page_link();
    assert!(request.part("text/html").contains(&format!("href=\"{link}\"")), "the link behind the HTML part's button");
    assert!(
        !mails.iter().any(|m| m.rcpt() == ["li.na@bank.example"] && m.part("text/plain").contains("/pages/approval/"))
    );

    // The page shows the order, its screening and the form, in the approver's language.
    let (status, html) = get(&wang).await;
    assert_eq!(status, 200, "{html}");
    // Screening and route in words, from the locale's page text: no engine string.
    for s in [
        "审批请求",
        "张伟",
        "¥1,250,000.00",
        "WM-STABLE-12M",
        "筛查通过：金额 125 万元，需经直线主管和支行行长两级审批",
        "第 1 级，共 2 级",
    ] {
        assert!(html.contains(s), "{s} on the page: {html}");
    }
    assert!(!html.contains("matrix row") && !html.contains("line_supervisor"), "engine text on the page: {html}");

    // Tampered, and a decision without what it needs: refused, nothing recorded.
    let before = events(&app, &id).await.len();
    let tampered = tamper(&wang);
    assert_eq!(get(&tampered).await.0, 403);
    assert_eq!(submit(&wang, &[("decision", "reject")]).await.0, 422, "a rejection needs a reason");
    assert_eq!(submit(&wang, &[("comment", "?")]).await.0, 422, "no decision chosen");
    assert_eq!(events(&app, &id).await.len(), before);

    // Approve level 1.
    let (status, html) = submit(&wang, &[("decision", "approve"), ("comment", "风险可控，同意")]).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("待审批"), "{html}");
    let order = app.order(&id).await;
    assert_eq!(order["state_detail"], json!({"name": "awaiting_approval", "level": 2, "of": 2}));

    // The same link again, and the other supervisor's level-1 link: refused.
    let (status, html) = get(&wang).await;
    assert_eq!(status, 409);
    assert!(html.contains("已处理过"), "{html}");
    assert_eq!(submit(&wang, &[("decision", "approve")]).await.0, 409);
    let (status, html) = get(&zhao_level1).await;
    assert_eq!(status, 409);
    assert!(html.contains("已失效"), "{html}");
    assert_eq!(submit(&zhao_level1, &[("decision", "approve")]).await.0, 409);

    // Level 2 goes to the branch managers; someone outside the chain is refused by the API.
    let zhou = approval_link(&smtp, "zhou.min@bank.example", &id, 0).await;
    let before = events(&app, &id).await.len();
    let (status, body) =
        app.api_post_json_as("james.wong", &format!("/orders/{id}/approvals"), &json!({"decision": "approve"})).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("not an approver of level 2"), "{body}");
    // Four eyes: wang.fang approved level 1 and may not approve level 2 too.
    let (status, body) =
        app.api_post_json_as("wang.fang", &format!("/orders/{id}/approvals"), &json!({"decision": "approve"})).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("approves once"), "{body}");
    assert_eq!(events(&app, &id).await.len(), before, "refusals record nothing");

    let (status, _) = submit(&zhou, &[("decision", "approve"), ("comment", "同意")]).await;
    assert_eq!(status, 200);
    let order = app.order(&id).await;
    assert_eq!(order["state"], "executing");
    let (status, body) =
        app.api_post_json_as("zhao.lei", &format!("/orders/{id}/approvals"), &json!({"decision": "approve"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")), "{body}");

    // The audit: who approved which level in which role.
    let approved: Vec<&Value> =
        order["events"].as_array().unwrap().iter().filter(|e| e["event"]["type"] == "approved").collect();
    assert_eq!(approved.len(), 2);
    assert_eq!(
        (approved[0]["actor"]["id"].as_str(), approved[0]["event"]["role"].as_str()),
        (Some("wang.fang"), Some("line_supervisor"))
    );
    assert_eq!(approved[0]["event"]["comment"], "风险可控，同意");
    assert_eq!(
        (approved[1]["actor"]["id"].as_str(), approved[1]["event"]["role"].as_str()),
        (Some("zhou.min"), Some("branch_manager"))
    );

    // The sales owner hears of it, and the ERP gets the order once.
    wait_until("the sales owner is told", || async {
        smtp.messages().iter().any(|m| m.rcpt() == ["li.na@bank.example"] && m.subject().contains("审批通过"))
    })
    .await;
    app.drain_outbox().await;
    assert_eq!(app.erp.deliveries().iter().filter(|d| d.path == "/orders").count(), 1);

    // `explain` tells the story.
    let x = orderbridge::explain::explain(&app.order(&id).await).unwrap();
    let text = x.lines.join("\n");
    assert!(
        text.contains("approved level 1 (line_supervisor) by person:wang.fang") || text.contains("wang.fang"),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn self_approval_expiry_and_rejection() {
    let clock = ManualClock::new(Utc::now());
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().clock(clock.clock()).mail(&smtp).start().await;
    // zhao.lei owns this deal: he holds line_supervisor but must not approve it.
    let mut d = deal("D-SELF", 1, "500000.00");
    d["deal"]["owner_email"] = "zhao.lei@bank.example".into();
    let id = post(&app, &d).await;
    let wang = approval_link(&smtp, "wang.fang@bank.example", &id, 0).await;
    assert!(
        !smtp.messages().iter().any(|m| m.rcpt() == ["zhao.lei@bank.example"] && m.part("text/plain").contains(&id)),
        "the owner gets no approval request"
    );
    let (status, body) =
        app.api_post_json_as("zhao.lei", &format!("/orders/{id}/approvals"), &json!({"decision": "approve"})).await;
    assert_eq!(status, 403);
    assert!(body["error"]["message"].as_str().unwrap().contains("segregation of duties"), "{body}");

    // A question keeps the link usable and mails the sales owner.
    let (status, _) = submit(&wang, &[("decision", "request_info"), ("comment", "请补充客户资产证明")]).await;
    assert_eq!(status, 200);
    wait_until("the owner gets the question", || async {
        smtp.messages()
            .iter()
            .any(|m| m.rcpt() == ["zhao.lei@bank.example"] && m.part("text/plain").contains("请补充客户资产证明"))
    })
    .await;
    assert_eq!(get(&wang).await.0, 200, "the link still works after a question");

    // After its lifetime (72 h) the link is refused as expired.
    clock.advance(chrono::Duration::hours(73));
    let (status, html) = submit(&wang, &[("decision", "approve")]).await;
    assert_eq!(status, 410, "{html}");
    clock.advance(chrono::Duration::hours(-73));

    // Reject with a reason.
    let (status, _) = submit(&wang, &[("decision", "reject"), ("comment", "资料不全")]).await;
    assert_eq!(status, 200);
    let order = app.order(&id).await;
    assert_eq!(order["state"], "rejected");
    let declined =
        order["events"].as_array().unwrap().iter().find(|e| e["event"]["type"] == "approval_declined").unwrap().clone();
    assert_eq!(declined["event"]["comment"], "资料不全");
    assert_eq!(declined["actor"]["id"], "wang.fang");
    app.stop().await;
}

#[tokio::test]
async fn a_material_change_voids_approvals_and_old_links_stop_working() {
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().clock(orderbridge::clock::Clock::system()).mail(&smtp).start().await;
    let id = post(&app, &deal("D-AMEND", 1, "1250000.00")).await;
    let wang = approval_link(&smtp, "wang.fang@bank.example", &id, 0).await;
    assert_eq!(submit(&wang, &[("decision", "approve")]).await.0, 200);
    let zhou_round1 = approval_link(&smtp, "zhou.min@bank.example", &id, 0).await;

    // A contact detail changes: not material, the approval stands.
    let mut v2 = deal("D-AMEND", 2, "1250000.00");
    v2["deal"]["customer"]["phone"] = "+86 139 0000 0000".into();
    let (status, b) = app.post_webhook(&v2).await;
    assert_eq!((status, b["state"].as_str()), (202, Some("awaiting_approval")), "{b}");
    assert_eq!(app.order(&id).await["state_detail"]["level"], 2);

    // The amount changes: approvals are voided, the chain starts again, old links die.
    let v3 = deal("D-AMEND", 3, "1350000.00");
    let (status, b) = app.post_webhook(&v3).await;
    assert_eq!(status, 202, "{b}");
    let order = app.order(&id).await;
    assert_eq!(order["state_detail"], json!({"name": "awaiting_approval", "level": 1, "of": 2}));
    assert_eq!(order["approval"]["round"], 2);
    let voided =
        order["events"].as_array().unwrap().iter().find(|e| e["event"]["type"] == "approvals_voided").unwrap().clone();
    assert_eq!(voided["event"]["approvals"], 1);
    assert!(voided["event"]["reason"].as_str().unwrap().contains("amount.amount"), "{voided}");
    let (status, html) = get(&zhou_round1).await;
    assert_eq!(status, 409);
    assert!(html.contains("已失效"), "{html}");
    // wang.fang's round-1 link was used; a fresh request reaches her for round 2.
    let wang2 = approval_link(&smtp, "wang.fang@bank.example", &id, 1).await;
    assert_ne!(wang, wang2);
    assert_eq!(submit(&wang2, &[("decision", "approve")]).await.0, 200);
    assert_eq!(app.order(&id).await["state_detail"]["level"], 2);
    app.stop().await;
}

#[tokio::test]
async fn manual_review_releases_to_the_matrix_route_or_rejects() {
    let app = spawn_app().await;
    let mut p = deal("D-REVIEW", 1, "500000.00");
    p["deal"]["customer"]["kyc_verified"] = false.into();
    let (_, b) = app.post_webhook(&p).await;
    assert_eq!(b["state"], "flagged");
    let id = b["order_id"].as_str().unwrap();
    // A risk officer reviews (the policy table grants them review_flagged).
    let review = |decision: &str, comment: &str| json!({"decision": decision, "comment": comment});
    let chen = app.person_token("chen.jing");
    let (s, body) = app.api_post_with(&chen, &format!("/orders/{id}/review"), &review("release", "")).await;
    assert_eq!((s, body["error"]["field"].as_str()), (422, Some("comment")));
    let (s, body) =
        app.api_post_json(&format!("/orders/{id}/review"), &json!({"decision": "maybe", "comment": "c"})).await;
    assert_eq!(s, 422, "{body}");
    let (s, body) = app.api_post_with(&chen, &format!("/orders/{id}/review"), &review("start", "核实 KYC 材料")).await;
    assert_eq!((s, body["state"].as_str()), (200, Some("manual_review")), "{body}");
    let (s, body) =
        app.api_post_with(&chen, &format!("/orders/{id}/review"), &review("release", "线下已完成 KYC")).await;
    assert_eq!((s, body["state"].as_str()), (200, Some("awaiting_approval")), "{body}");
    assert_eq!(body["approval"]["chain"], json!(["line_supervisor"]));
    let (s, body) = app.api_post_with(&chen, &format!("/orders/{id}/review"), &review("reject", "again")).await;
    assert_eq!(s, 409, "{body}");
    let order = app.order(id).await;
    let released =
        order["events"].as_array().unwrap().iter().find(|e| e["event"]["type"] == "review_released").unwrap().clone();
    assert_eq!((released["actor"]["id"].as_str(), released["channel"].as_str()), (Some("chen.jing"), Some("api")));
    app.stop().await;
}

#[tokio::test]
async fn reminders_and_escalation_follow_business_hours_survive_a_restart_and_fire_once() {
    // Monday 2026-11-30 10:00 in Shanghai. STANDARD route: one line_supervisor level,
    // SLA 8 working hours: reminder at 14:00, escalation to branch_manager Tuesday 09:30.
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-30T10:00:00+08:00").unwrap().with_timezone(&Utc);
    let clock = ManualClock::new(start);
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().clock(clock.clock()).mail(&smtp).start().await;
    let id = post(&app, &deal("D-SLA", 1, "500000.00")).await;
    approval_link(&smtp, "wang.fang@bank.example", &id, 0).await;
    let count = |events: &[Value], kind: &str| events.iter().filter(|e| e["event"]["type"] == kind).count();
    let reminders_to =
        |addr: &str| smtp.messages().into_iter().filter(|m| m.rcpt() == [addr] && m.subject().contains("提醒")).count();

    // Just before the reminder point: nothing fires.
    clock.advance(chrono::Duration::minutes(3 * 60 + 59));
    assert_eq!(app.state.orders.run_timers(&app.state.rules, clock.now()).await.unwrap(), 0);
    assert_eq!(count(&events(&app, &id).await, "approval_reminder_due"), 0);

    // 14:01: both line supervisors are reminded, once.
    clock.advance(chrono::Duration::minutes(2));
    wait_until("the reminder fires", || async { count(&events(&app, &id).await, "approval_reminder_due") == 1 }).await;
    wait_until("reminders are mailed", || async {
        reminders_to("wang.fang@bank.example") == 1 && reminders_to("zhao.lei@bank.example") == 1
    })
    .await;
    assert_eq!(app.state.orders.run_timers(&app.state.rules, clock.now()).await.unwrap(), 0, "never twice");

    // Due times are stored: restart, then pass the SLA (Tuesday 09:31).
    let erp = app.erp.clone();
    let dir = app.stop().await;
    let app = restart_with(dir, erp, clock.clock()).await;
    assert_eq!(app.state.orders.run_timers(&app.state.rules, clock.now()).await.unwrap(), 0);
    clock.advance(chrono::Duration::hours(19) + chrono::Duration::minutes(30));
    wait_until("the escalation fires", || async { count(&events(&app, &id).await, "approval_escalated") == 1 }).await;
    let evs = events(&app, &id).await;
    let esc = evs.iter().find(|e| e["event"]["type"] == "approval_escalated").unwrap();
    assert_eq!(
        (esc["event"]["from_role"].as_str(), esc["event"]["to_role"].as_str()),
        (Some("line_supervisor"), Some("branch_manager"))
    );
    assert_eq!(count(&evs, "approval_reminder_due"), 1, "the reminder did not fire again after the restart");

    // The branch managers are told, and one of them may now decide the level.
    let zhou = approval_link(&smtp, "zhou.min@bank.example", &id, 0).await;
    let mail = smtp.messages().into_iter().find(|m| m.rcpt() == ["zhou.min@bank.example"]).unwrap();
    assert!(mail.subject().contains("升级") || mail.part("text/plain").contains("升级"), "{}", mail.subject());
    assert_eq!(submit(&zhou, &[("decision", "approve"), ("comment", "逾期升级后审批")]).await.0, 200);
    let order = app.order(&id).await;
    assert_eq!(order["state"], "executing");
    let approved =
        order["events"].as_array().unwrap().iter().find(|e| e["event"]["type"] == "approved").unwrap().clone();
    assert_eq!(approved["event"]["role"], "branch_manager");

    // Nothing more is due for a decided order.
    clock.advance(chrono::Duration::days(30));
    assert_eq!(app.state.orders.run_timers(&app.state.rules, clock.now()).await.unwrap(), 0);
    app.stop().await;
}
