//! The console's pages beyond "my approvals", over TCP with signed-in sessions: order
//! search and the order page, the process map, and the work lists (exceptions, dead
//! letters, connectors). Each page is shown to a person whose roles the policy table
//! grants its action, is refused (403) to one without it, and the navigation shows
//! only what the person may use; an action posted without the session's CSRF token is
//! refused; resolving an exception from the console is audited as the person, channel
//! `console`.

use serde_json::{Value, json};

use crate::console::{Browser, csrf, sign_in};
use crate::helpers::*;

/// An order waiting for approval and one in exception (opened through the admin API).
pub(crate) async fn two_orders(app: &TestApp) -> (String, String) {
    let (s, b) = app.post_webhook(&deal("D-PAGES-1", 1, "1250000.00")).await;
    assert_eq!((s, b["state"].as_str()), (202, Some("awaiting_approval")), "{b}");
    let waiting = b["order_id"].as_str().unwrap().to_owned();
    let small = executing_order(app, "D-PAGES-2", None).await;
    let note = json!({"action": "open", "note": "合同金额与约定不符"});
    let (s, b) = app.api_post_json(&format!("/orders/{small}/exception"), &note).await;
    assert_eq!((s, b["state"].as_str()), (200, Some("exception")), "{b}");
    (waiting, small)
}

fn nav_links(page: &str) -> Vec<&str> {
    let nav = page.split("<nav class=\"console\"").nth(1).and_then(|n| n.split("</nav>").next()).unwrap_or("");
    [
        "/console\"",
        "/console/orders\"",
        "/console/process\"",
        "/console/exceptions\"",
        "/console/dead-letters\"",
        "/console/connectors\"",
    ]
    .into_iter()
    .filter(|l| nav.contains(&format!("href=\"{l}")))
    .map(|l| l.trim_end_matches('"'))
    .collect()
}

#[tokio::test]
async fn each_console_page_is_for_whoever_the_policy_table_lets_use_it() {
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().mail(&smtp).start().await;
    let (waiting, small) = two_orders(&app).await;

    // Not signed in: every page leads to sign-in.
    let mut anon = Browser::new(&app);
    for path in ["/console/orders", "/console/process", "/console/exceptions", "/console/connectors"] {
        let r = anon.get(path).await;
        assert_eq!((r.status, r.location.as_str()), (303, "/signin"), "{path}");
    }

    // zhou.min (branch manager: approvals, personal data, reports).
    let mut zhou = sign_in(&app, &smtp, "zhou.min@bank.example").await;
    let inbox = zhou.get("/console").await;
    assert_eq!(nav_links(&inbox.body), ["/console", "/console/orders", "/console/process"], "{}", inbox.body);
    // The newest orders, then by external id, by order id, by customer name, by state.
    let recent = zhou.get("/console/orders").await;
    assert_eq!(recent.status, 200, "{}", recent.body);
    assert!(recent.body.contains(&waiting) && recent.body.contains(&small), "{}", recent.body);
    let by_external = zhou.get("/console/orders?q=D-PAGES-1").await;
    assert!(by_external.body.contains(&waiting) && !by_external.body.contains(&small), "{}", by_external.body);
    let by_id = zhou.get(&format!("/console/orders?q={small}")).await;
    assert!(by_id.body.contains(&small) && !by_id.body.contains(&waiting), "{}", by_id.body);
    let by_name = zhou.get("/console/orders?q=%E5%BC%A0%E4%BC%9F").await; // 张伟
    assert!(by_name.body.contains(&small) && by_name.body.contains(&waiting), "{}", by_name.body);
    let none = zhou.get("/console/orders?q=nobody-at-all").await;
    assert!(none.body.contains("没有符合条件的订单") && !none.body.contains(&small), "{}", none.body);
    let in_exception = zhou.get("/console/orders?state=exception").await;
    assert!(in_exception.body.contains(&small) && !in_exception.body.contains(&waiting), "{}", in_exception.body);
    // The order page: fields, state, explain, the timeline with actor and channel,
    // documents (once the contract is made).
    wait_until("the contract is made", || async {
        app.order(&small).await["references"].get("documents.contract").is_some()
    })
    .await;
    let page = zhou.get(&format!("/console/orders/{small}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    for expected in
        ["张伟", "异常处理中", "合同金额与约定不符", "决策依据", "时间线", "王芳", "API", "审批通过", "筛查通过"]
    {
        assert!(page.body.contains(expected), "`{expected}` not on the order page: {}", page.body);
    }
    // Its contract, checked against the hash the page shows.
    let link = format!("/console/orders/{small}/documents/contract");
    assert!(page.body.contains(&format!("href=\"{link}\"")), "{}", page.body);
    let doc = zhou.get(&link).await;
    assert_eq!(doc.status, 200, "{}", doc.body);
    let sha = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(doc.body.as_bytes()))
    };
    assert!(page.body.contains(&sha), "the page shows the document's SHA-256 {sha}");
    let missing = zhou.get("/console/orders/ord_0000000000000000000000000000").await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    // The process map: counts per state, each linking to its orders.
    let map = zhou.get("/console/process").await;
    assert_eq!(map.status, 200, "{}", map.body);
    assert!(map.body.contains("href=\"/console/orders?state=exception\""), "{}", map.body);
    let exception_row = map.body.split("state=exception").nth(1).unwrap();
    assert!(exception_row.contains("1 个订单"), "{exception_row}");
    // Not hers: the work lists (403, named), and no button to act.
    let r = zhou.get("/console/exceptions").await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("zhou.min may not handle_exceptions") && !r.body.contains("/resolve"), "{}", r.body);
    let r = zhou
        .post(&format!("/console/exceptions/{small}/resolve"), &[("csrf", &csrf(&inbox.body)), ("note", "x")])
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(app.order(&small).await["state"], "exception");

    // li.na (sales: reports only): the process map, not the orders.
    let mut li = sign_in(&app, &smtp, "li.na@bank.example").await;
    let inbox = li.get("/console").await;
    assert_eq!(nav_links(&inbox.body), ["/console", "/console/process"], "{}", inbox.body);
    let r = li.get(&format!("/console/orders/{small}")).await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("li.na may not see_personal_data") && !r.body.contains("张伟"), "{}", r.body);
    let map = li.get("/console/process").await;
    assert_eq!(map.status, 200, "{}", map.body);
    assert!(
        map.body.contains("1 个订单") && !map.body.contains("href=\"/console/orders"),
        "no links to orders: {}",
        map.body
    );

    // sun.li (operations): the work lists, not the process map.
    let mut sun = sign_in(&app, &smtp, "operations@bank.example").await;
    let inbox = sun.get("/console").await;
    assert_eq!(
        nav_links(&inbox.body),
        ["/console", "/console/orders", "/console/exceptions", "/console/dead-letters", "/console/connectors"],
        "{}",
        inbox.body
    );
    assert_eq!(sun.get("/console/process").await.status, 403);
    let dead = sun.get("/console/dead-letters").await;
    assert_eq!(dead.status, 200, "{}", dead.body);
    let connectors = sun.get("/console/connectors").await;
    assert!(connectors.status == 200 && connectors.body.contains("demo-erp"), "{}", connectors.body);
    let list = sun.get("/console/exceptions").await;
    assert!(list.body.contains(&small) && list.body.contains("合同金额与约定不符"), "{}", list.body);
    let action = format!("/console/exceptions/{small}/resolve");
    assert!(list.body.contains(&format!("action=\"{action}\"")), "{}", list.body);
    // Without its CSRF token, or with another: refused, nothing recorded.
    let r = sun.post(&action, &[("note", "已与客户核实")]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("此表单已过期"), "{}", r.body);
    let r = sun.post(&action, &[("note", "已与客户核实"), ("csrf", "forged")]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(app.order(&small).await["state"], "exception");
    // Resolved from the console: the order resumes, and the audit names sun.li and the console.
    let r = sun.post(&action, &[("note", "已与客户核实"), ("csrf", &csrf(&list.body))]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("role=\"status\"") && !r.body.contains(&format!("action=\"{action}\"")), "{}", r.body);
    let order = app.order(&small).await;
    assert_eq!(order["state"], "executing", "{order}");
    let resolved: &Value =
        order["events"].as_array().unwrap().iter().rfind(|e| e["event"]["type"] == "exception_resolved").unwrap();
    assert_eq!(
        (resolved["actor"]["id"].as_str(), resolved["channel"].as_str(), resolved["event"]["resolution"].as_str()),
        (Some("sun.li"), Some("console"), Some("已与客户核实")),
        "{resolved}"
    );
    let (_, verify) = app.api("/audit/verify").await;
    assert_eq!(verify["intact"], true);

    // James Wong reads the console in English.
    let mut james = sign_in(&app, &smtp, "james.wong@bank.example").await;
    let page = james.get(&format!("/console/orders/{small}")).await;
    assert!(page.body.contains("<html lang=\"en\"") && page.body.contains("Timeline"), "{}", page.body);
    assert!(page.body.contains("exception resolved") && page.body.contains("console"), "{}", page.body);
    app.stop().await;
}

#[tokio::test]
async fn archived_orders_are_found_and_shown_in_the_console() {
    let smtp = SmtpServer::start(&[]);
    let clock = ManualClock::new(chrono::Utc::now() - chrono::Duration::days(400));
    let app = TestApp::builder().clock(clock.clock()).mail(&smtp).start().await;
    // Rejected at screening (a CCC rating), then archived once it ended long enough ago.
    let mut p = deal("D-PAGES-AR", 1, "5000.00");
    p["deal"]["customer"]["credit_rating"] = "CCC".into();
    let (_, b) = app.post_webhook(&p).await;
    assert_eq!(b["state"], "rejected", "{b}");
    let id = b["order_id"].as_str().unwrap().to_owned();
    app.drain_outbox().await;
    clock.advance(chrono::Duration::days(95));
    let (status, pass) = app.api_post("/archive/run").await;
    assert_eq!((status, pass["archived"].as_u64()), (200, Some(1)), "{pass}");
    assert_eq!(app.state.store.order(id.parse().unwrap()).await.unwrap(), None, "left the hot store");

    let mut zhou = sign_in(&app, &smtp, "zhou.min@bank.example").await;
    for q in ["D-PAGES-AR", id.as_str()] {
        let found = zhou.get(&format!("/console/orders?q={q}")).await;
        assert!(found.body.contains(&id) && found.body.contains("已归档"), "{q}: {}", found.body);
    }
    let page = zhou.get(&format!("/console/orders/{id}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    for expected in ["已归档", ".jsonl", "筛查拒绝", "CCC"] {
        assert!(page.body.contains(expected), "`{expected}` not on the archived order's page: {}", page.body);
    }
    app.stop().await;
}

#[tokio::test]
async fn dead_letters_are_replayed_and_a_paused_connector_is_resumed_from_the_console() {
    let smtp = SmtpServer::start(&[]);
    let erp = Receiver::start().await;
    erp.set_down(true);
    let app = TestApp::builder().erp(erp.clone()).mail(&smtp).settings(|s| s.dispatcher.max_attempts = 2).start().await;
    let (s, b) = app.post_webhook(&deal("D-PAGES-DEAD", 1, "500000.00")).await;
    assert_eq!(s, 202, "{b}");
    let id = b["order_id"].as_str().unwrap().to_owned();
    let (s, b) =
        app.api_post_json_as("wang.fang", &format!("/orders/{id}/approvals"), &json!({"decision": "approve"})).await;
    assert_eq!((s, b["state"].as_str()), (200, Some("executing")), "{b}");
    // The ERP is down: its effects end as dead letters.
    app.drain_outbox().await;
    let (_, dead) = app.api("/outbox/dead").await;
    let effect = dead["effects"][0]["id"].as_str().unwrap_or_else(|| panic!("no dead letter: {dead}")).to_owned();

    let mut sun = sign_in(&app, &smtp, "operations@bank.example").await;
    let page = sun.get("/console/dead-letters").await;
    let action = format!("/console/dead-letters/{effect}/replay");
    assert!(page.status == 200 && page.body.contains(&format!("action=\"{action}\"")), "{}", page.body);
    let r = sun.post(&action, &[]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let still_dead = |v: &Value| v["effects"].as_array().unwrap().iter().any(|e| e["id"] == effect.as_str());
    assert!(still_dead(&app.api("/outbox/dead").await.1));
    // The ERP is back but refuses our credentials: the replayed effect pauses it.
    erp.unauthorized_next(1_000);
    erp.set_down(false);
    let r = sun.post(&action, &[("csrf", &csrf(&page.body))]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains(&format!("action=\"{action}\"")), "{}", r.body);
    assert!(!still_dead(&app.api("/outbox/dead").await.1));
    let order = app.order(&id).await;
    let replayed = order["events"].as_array().unwrap().iter().rfind(|e| e["event"]["type"] == "effect_replayed");
    let replayed = replayed.unwrap_or_else(|| panic!("no replay in {order}"));
    assert_eq!((replayed["actor"]["id"].as_str(), replayed["channel"].as_str()), (Some("sun.li"), Some("console")));
    wait_until("demo-erp is paused", || async {
        let (_, v) = app.api("/connectors").await;
        v["connectors"].as_array().unwrap().iter().any(|c| c["id"] == "demo-erp" && c["paused"] == true)
    })
    .await;

    // Connectors: the paused one has a resume button; li.na (sales) may not resume.
    let page = sun.get("/console/connectors").await;
    let resume = "/console/connectors/demo-erp/resume";
    assert!(page.body.contains(&format!("action=\"{resume}\"")), "{}", page.body);
    let mut li = sign_in(&app, &smtp, "li.na@bank.example").await;
    let li_page = li.get("/console").await;
    let r = li.post(resume, &[("csrf", &csrf(&li_page.body))]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = sun.post(resume, &[]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let paused = || async {
        let (_, v) = app.api("/connectors").await;
        v["connectors"].as_array().unwrap().iter().any(|c| c["id"] == "demo-erp" && c["paused"] == true)
    };
    assert!(paused().await);
    erp.unauthorized_next(0);
    let r = sun.post(resume, &[("csrf", &csrf(&page.body))]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains(&format!("action=\"{resume}\"")), "{}", r.body);
    assert!(!paused().await);
    wait_until("the replayed effect reaches the ERP", || async { !erp.accepted_per_key().is_empty() }).await;
    app.stop().await;
}

#[tokio::test]
async fn a_search_by_name_lists_the_newest_first_however_far_back() {
    let smtp = SmtpServer::start(&[]);
    let clock = ManualClock::new(chrono::Utc::now() - chrono::Duration::days(40));
    let app = TestApp::builder().clock(clock.clock()).mail(&smtp).start().await;
    // Three orders for 张伟: 40 days, 5 days and a moment ago (each round of the search
    // reaches further back: a day, a week, a month, a year, everything).
    let mut ids = Vec::new();
    for (ext, later) in [("D-PAGES-OLD", 35), ("D-PAGES-MID", 5), ("D-PAGES-NEW", 0)] {
        let (s, b) = app.post_webhook(&deal(ext, 1, "5000.00")).await;
        assert_eq!(s, 202, "{b}");
        ids.push(b["order_id"].as_str().unwrap().to_owned());
        clock.advance(chrono::Duration::days(later));
    }
    let mut zhou = sign_in(&app, &smtp, "zhou.min@bank.example").await;
    let found = zhou.get("/console/orders?q=%E5%BC%A0%E4%BC%9F").await;
    let at: Vec<usize> = ids.iter().map(|id| found.body.find(id.as_str()).unwrap_or_else(|| panic!("{id}"))).collect();
    assert!(at[2] < at[1] && at[1] < at[0], "newest first: {at:?} in {}", found.body);
    // The same without a query: the newest orders.
    let recent = zhou.get("/console/orders").await;
    let at: Vec<usize> = ids.iter().map(|id| recent.body.find(id.as_str()).unwrap()).collect();
    assert!(at[2] < at[1] && at[1] < at[0], "{at:?}");
    app.stop().await;
}

/// The audit entry of the order's last `kind` event.
fn last_event(order: &Value, kind: &str) -> Value {
    let events = order["events"].as_array().unwrap();
    events.iter().rfind(|e| e["event"]["type"] == kind).unwrap_or_else(|| panic!("no {kind} in {order}")).clone()
}

#[tokio::test]
async fn flagged_orders_are_reviewed_from_the_console_by_whoever_may_review_them() {
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().mail(&smtp).start().await;
    let mut ids = Vec::new();
    for ext in ["D-PAGES-FLAG-1", "D-PAGES-FLAG-2"] {
        let mut p = deal(ext, 1, "500000.00");
        p["deal"]["customer"]["kyc_verified"] = false.into();
        let (_, b) = app.post_webhook(&p).await;
        assert_eq!(b["state"], "flagged", "{b}");
        ids.push(b["order_id"].as_str().unwrap().to_owned());
    }
    let (first, second) = (&ids[0], &ids[1]);

    // sun.li (operations) may not review: 403 naming it, no link, no form.
    let mut sun = sign_in(&app, &smtp, "operations@bank.example").await;
    let inbox = sun.get("/console").await;
    assert!(!inbox.body.contains("href=\"/console/review\""), "{}", inbox.body);
    let r = sun.get("/console/review").await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("sun.li may not review_flagged") && !r.body.contains(first.as_str()), "{}", r.body);
    let r = sun
        .post(
            &format!("/console/review/{first}"),
            &[("csrf", &csrf(&inbox.body)), ("decision", "start"), ("comment", "x")],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(app.order(first).await["state"], "flagged");

    // chen.jing (risk officer): the list with the rules that fired, one form per order.
    let mut chen = sign_in(&app, &smtp, "chen.jing@bank.example").await;
    let list = chen.get("/console/review").await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(list.body.contains("href=\"/console/review\"") && list.body.contains("KYC-001"), "{}", list.body);
    // The rule's severity and message in her language, not as codes.
    assert!(list.body.contains("（需复核）：客户未完成 KYC 认证<"), "{}", list.body);
    assert!(!list.body.contains("(flag)") && !list.body.contains("（flag）"), "{}", list.body);
    let action = format!("/console/review/{first}");
    assert!(
        list.body.contains(&format!("action=\"{action}\"")) && list.body.contains(second.as_str()),
        "{}",
        list.body
    );
    // Without its CSRF token: refused, nothing recorded.
    let r = chen.post(&action, &[("decision", "start"), ("comment", "核实 KYC 材料")]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(app.order(first).await["state"], "flagged");
    // Without a comment: refused.
    let token = csrf(&list.body);
    let r = chen.post(&action, &[("csrf", &token), ("decision", "start"), ("comment", " ")]).await;
    assert_eq!(r.status, 422, "{}", r.body);
    // Start, then release: the order goes to its approval route; audited as chen.jing, console.
    let r = chen.post(&action, &[("csrf", &token), ("decision", "start"), ("comment", "核实 KYC 材料")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("role=\"status\"") && r.body.contains("人工复核中"), "{}", r.body);
    assert_eq!(app.order(first).await["state"], "manual_review");
    let r = chen.post(&action, &[("csrf", &token), ("decision", "release"), ("comment", "线下已完成 KYC")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains(&format!("action=\"{action}\"")), "{}", r.body);
    let order = app.order(first).await;
    assert_eq!(order["state"], "awaiting_approval", "{order}");
    for kind in ["review_started", "review_released"] {
        let e = last_event(&order, kind);
        assert_eq!((e["actor"]["id"].as_str(), e["channel"].as_str()), (Some("chen.jing"), Some("console")), "{e}");
    }
    // The other is rejected straight from the list.
    let r = chen
        .post(
            &format!("/console/review/{second}"),
            &[("csrf", &token), ("decision", "reject"), ("comment", "材料不全")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(app.order(second).await["state"], "rejected");
    let (_, verify) = app.api("/audit/verify").await;
    assert_eq!(verify["intact"], true);
    app.stop().await;
}

#[tokio::test]
async fn an_unmatched_payment_is_assigned_from_the_console_by_whoever_may_assign_it() {
    let smtp = SmtpServer::start(&[]);
    let erp = Receiver::start().await;
    let app = TestApp::builder().erp(erp).mail(&smtp).start().await;
    let (_, b) = app.post_webhook(&deal("D-PAGES-PAY", 1, "8000.00")).await;
    let id = b["order_id"].as_str().unwrap().to_owned();
    crate::cash::deliver(&app, &id).await;
    app.api_post_json_as("sun.li", &format!("/orders/{id}/acceptance"), &json!({"decision": "accept"})).await;
    wait_until("invoiced", || async { app.order(&id).await["state"] == "invoiced" }).await;
    let pay = json!({"payment_id": "P-CON-1", "amount": {"amount": "8000.00", "currency": "CNY"},
        "invoice_number": "INV-NOPE", "reference": "张伟 货款"});
    let (s, b) = app.api_post_json("/payments", &pay).await;
    assert_eq!((s, b["matched"].as_bool()), (202, Some(false)), "{b}");

    // sun.li (operations) may not assign payments: 403, no link.
    let mut sun = sign_in(&app, &smtp, "operations@bank.example").await;
    let inbox = sun.get("/console").await;
    assert!(!inbox.body.contains("href=\"/console/payments\""), "{}", inbox.body);
    let r = sun.get("/console/payments").await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("sun.li may not assign_payments") && !r.body.contains("P-CON-1"), "{}", r.body);
    let action = "/console/payments/api/P-CON-1/assign";
    let r = sun.post(action, &[("csrf", &csrf(&inbox.body)), ("order_id", &id)]).await;
    assert_eq!(r.status, 403, "{}", r.body);

    // he.jun (credit operations): the queue with the reason; assigns it.
    let mut he = sign_in(&app, &smtp, "credit-ops@bank.example").await;
    let list = he.get("/console/payments").await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(list.body.contains("href=\"/console/payments\"") && list.body.contains("INV-NOPE"), "{}", list.body);
    assert!(list.body.contains("张伟 货款") && list.body.contains(&format!("action=\"{action}\"")), "{}", list.body);
    // Its customer's receivables, as the API's receivables route answers: owed in full.
    let customer = app.order(&id).await["order"]["customer"]["id"].as_str().unwrap().to_owned();
    let invoice = app.order(&id).await["fulfilment"]["invoice"]["number"].as_str().unwrap().to_owned();
    let owed = he.get(&format!("/console/receivables?customer={customer}")).await;
    assert_eq!(owed.status, 200, "{}", owed.body);
    assert!(owed.body.contains("href=\"/console/receivables\"") && owed.body.contains(&invoice), "{}", owed.body);
    assert!(owed.body.contains("欠款：<strong>¥8,000.00</strong>"), "{}", owed.body);
    let mut li = sign_in(&app, &smtp, "li.na@bank.example").await;
    let li_inbox = li.get("/console").await;
    assert!(!li_inbox.body.contains("href=\"/console/receivables\""), "{}", li_inbox.body);
    let r = li.get(&format!("/console/receivables?customer={customer}")).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("li.na may not see_personal_data") && !r.body.contains(&invoice), "{}", r.body);

    let r = he.post(action, &[("order_id", &id)]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(app.order(&id).await["state"], "invoiced");
    let r = he.post(action, &[("csrf", &csrf(&list.body)), ("order_id", "ord_nope")]).await;
    assert!(r.status >= 400 && r.status < 500, "{}: {}", r.status, r.body);
    let r = he.post(action, &[("csrf", &csrf(&list.body)), ("order_id", &id)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("role=\"status\"") && !r.body.contains(&format!("action=\"{action}\"")), "{}", r.body);
    let order = app.order(&id).await;
    assert_eq!(order["state"], "closed", "{order}");
    let paid = last_event(&order, "payment_received");
    assert_eq!((paid["actor"]["id"].as_str(), paid["channel"].as_str()), (Some("he.jun"), Some("console")), "{paid}");
    let (_, q) = app.api("/payments/unmatched").await;
    assert_eq!(q["payments"], json!([]), "{q}");
    let paid = he.get(&format!("/console/receivables?customer={customer}")).await;
    assert!(paid.body.contains(&invoice) && paid.body.contains("已付 ¥8,000.00"), "{}", paid.body);
    assert!(paid.body.contains("欠款：<strong>¥0.00</strong>"), "{}", paid.body);
    app.stop().await;
}

/// Grants chen.jing (rules approver) `administer` in the written policy table.
pub(crate) fn chen_administers(dir: &std::path::Path) {
    let roles = "rules_approver = [\"propose_rules\", \"approve_rules\"]";
    let more = "rules_approver = [\"propose_rules\", \"approve_rules\", \"administer\"]";
    replace_in_file(dir, "config/directory.toml", &[(roles, more)]);
}

#[tokio::test]
async fn the_administration_page_shows_the_configuration_check_and_the_versions_in_force() {
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().mail(&smtp).files(chen_administers).start().await;

    // sun.li (operations) may not administer: 403 naming it, no link.
    let mut sun = sign_in(&app, &smtp, "operations@bank.example").await;
    let inbox = sun.get("/console").await;
    assert!(!inbox.body.contains("href=\"/console/admin\""), "{}", inbox.body);
    let r = sun.get("/console/admin").await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("sun.li may not administer") && !r.body.contains("files checked"), "{}", r.body);

    // chen.jing: what `orderbridge check` prints, and the versions `rules history` lists.
    let mut chen = sign_in(&app, &smtp, "chen.jing@bank.example").await;
    let page = chen.get("/console/admin").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("href=\"/console/admin\""), "{}", page.body);
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(bin()).args(args).arg("--config-dir").arg(app.dir.path()).output();
        String::from_utf8_lossy(&out.unwrap().stdout).into_owned()
    };
    let out = cli(&["check"]);
    let summary = out.lines().rfind(|l| l.contains("files checked")).unwrap_or_else(|| panic!("{out}"));
    assert!(page.body.contains(summary) && page.body.contains("没有问题"), "`{summary}` not in {}", page.body);
    let history = cli(&["rules", "history", "--json"]);
    let history: Value = serde_json::from_str(&history).unwrap_or_else(|e| panic!("{e}: {history}"));
    let active: Vec<&Value> = history["versions"].as_array().unwrap().iter().filter(|v| v["active"] == true).collect();
    assert!(!active.is_empty(), "{history}");
    for v in active {
        let hash = &v["hash"].as_str().unwrap()[..12];
        assert!(page.body.contains(hash), "{} {hash} not on the page: {}", v["kind"], page.body);
    }

    // A broken file on disk shows as the problem `check` names, file and line.
    let rules = app.dir.path().join("config/rules.toml");
    let text = std::fs::read_to_string(&rules).unwrap();
    std::fs::write(&rules, format!("{text}\n[[nonsense\n")).unwrap();
    let page = chen.get("/console/admin").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let named = page.body.contains("rules.toml:") && page.body.contains("unclosed array table");
    assert!(named && page.body.contains("role=\"alert\""), "{}", page.body);
    app.stop().await;
}
