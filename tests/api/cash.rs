//! From approval to cash over the real daemon, real SMTP and test receivers for the
//! ERP (tasks) and the finance system (invoices): tasks pushed and reported done by
//! signed events, delivery, the customer's acceptance from a mailed link, one invoice
//! even when its answer is lost, payments matched or queued, and the survey at the end.

use chrono::Utc;
use orderbridge::clock::Clock;
use serde_json::{Value, json};

use crate::helpers::*;

/// Posts an event signed like the ERP's / the finance system's webhooks.
pub(crate) async fn system_event(app: &TestApp, connector: &str, event: &Value) -> (u16, Value) {
    let body = serde_json::to_vec(event).unwrap();
    let id = format!("msg_{}", uuid::Uuid::now_v7().simple());
    let headers = app.signed_headers(&id, app.state.clock.now().timestamp(), &body);
    app.post_raw(&format!("{connector}/events"), body, headers).await
}

/// Reports the order's required tasks done as the ERP does, and records delivery.
pub(crate) async fn deliver(app: &TestApp, id: &str) {
    let order = app.order(id).await;
    for t in order["fulfilment"]["tasks"].as_array().unwrap().iter().filter(|t| t["required"] == true) {
        let (s, b) = system_event(
            app,
            "demo-erp",
            &json!({"type": "task.completed", "order_id": id, "task": t["id"], "note": "ERP 已完成"}),
        )
        .await;
        assert_eq!(s, 200, "{b}");
    }
    let (s, b) = app
        .api_post_json_as("sun.li", &format!("/orders/{id}/delivery"), &json!({"note": "合同已签署，产品已配置"}))
        .await;
    assert_eq!((s, b["state"].as_str()), (200, Some("delivered")), "{b}");
}

fn mails_to<'a>(mails: &'a [Mail], to: &str, subject_has: &str) -> Vec<&'a Mail> {
    mails.iter().filter(|m| m.rcpt().iter().any(|r| r == to) && m.subject().contains(subject_has)).collect()
}

#[tokio::test]
async fn an_approved_order_is_executed_delivered_accepted_invoiced_paid_and_surveyed() {
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().clock(Clock::system()).mail(&smtp).start().await;
    let id = executing_order(&app, "D-CASH-1", Some("同意")).await;

    // Tasks: contract and product set-up (required) go to the ERP; the client briefing
    // (optional, no system) only to its department.
    wait_until("both tasks reach the ERP", || async { app.erp.tasks().len() == 2 }).await;
    let tasks: Vec<String> =
        app.erp.tasks().iter().map(|(_, b)| b["event"]["task"].as_str().unwrap().to_owned()).collect();
    assert_eq!(tasks.iter().filter(|t| *t == "contract").count(), 1);
    assert_eq!(tasks.iter().filter(|t| *t == "product_setup").count(), 1);
    assert!(
        app.erp
            .tasks()
            .iter()
            .all(|(k, b)| k.starts_with(&format!("orderbridge:{id}.")) && b["order_id"] == id.as_str())
    );
    wait_until("the departments are told", || async {
        let m = smtp.messages();
        !mails_to(&m, "operations@bank.example", "新任务").is_empty()
            && !mails_to(&m, "li.na@bank.example", "新任务").is_empty()
    })
    .await;

    // Delivery waits for the required tasks.
    let (s, b) = app.api_post_json_as("sun.li", &format!("/orders/{id}/delivery"), &json!({})).await;
    assert_eq!(s, 409, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("contract, product_setup"), "{b}");
    // A forged event is refused and changes nothing.
    let body = serde_json::to_vec(&json!({"type": "task.completed", "order_id": id, "task": "contract"})).unwrap();
    let mut headers = app.signed_headers("msg_forged", Utc::now().timestamp(), b"something else");
    headers.retain(|(k, _)| *k != "content-type");
    let (s, _) = app.post_raw("demo-erp/events", body, headers).await;
    assert_eq!(s, 401);
    deliver(&app, &id).await;
    let order = app.order(&id).await;
    assert!(
        order["fulfilment"]["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["required"] == false || t["done"]["by"] == "connector:demo-erp")
    );

    // The customer gets the acceptance link and accepts.
    wait_until("the acceptance mail", || async {
        !mails_to(&smtp.messages(), "zhang.wei@example.com", "交付确认").is_empty()
    })
    .await;
    let mails = smtp.messages();
    let link = mails_to(&mails, "zhang.wei@example.com", "交付确认")[0].page_link();
    assert!(link.contains("/pages/acceptance/"), "{link}");
    let page = app.client.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("交付验收") && html.contains("张伟") && html.contains("合同已签署，产品已配置"), "{html}");
    let answer = app.client.post(&link).form(&[("decision", "accept"), ("note", "")]).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let again = app.client.post(&link).form(&[("decision", "accept")]).send().await.unwrap();
    assert_eq!(again.status(), 409, "a link acts once");

    // Acceptance invoices the order once in the finance system.
    wait_until("the invoice is issued", || async { app.order(&id).await["state"] == "invoiced" }).await;
    let invoices = app.erp.invoices();
    assert_eq!(invoices.len(), 1);
    assert_eq!(invoices[0].2["amount"]["amount"], "500000.00");
    let order = app.order(&id).await;
    let inv = &order["fulfilment"]["invoice"];
    assert_eq!(inv["number"], invoices[0].0.as_str());
    assert_eq!(inv["total"], json!({"amount": "500000.00", "currency": "CNY"}));
    wait_until("the invoice mail", || async {
        !mails_to(&smtp.messages(), "zhang.wei@example.com", "发票").is_empty()
    })
    .await;

    // The status link from the first mail shows the stage, milestones and next step,
    // in Chinese, without internal comments or staff names; it can be opened again.
    let mails = smtp.messages();
    let received = mails
        .iter()
        .find(|m| {
            m.rcpt() == vec!["zhang.wei@example.com".to_owned()] && m.part("text/plain").contains("/pages/status/")
        })
        .expect("a status link in the first mail");
    let status_link = received.page_link();
    for _ in 0..2 {
        let page = app.client.get(&status_link).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        for want in [
            "订单进度",
            "已开票",
            inv["number"].as_str().unwrap(),
            "¥500,000.00",
            "办理记录",
            "您已确认验收",
            "请在付款截止日前支付发票款项",
        ] {
            assert!(html.contains(want), "{want} missing: {html}");
        }
        for never in ["同意", "ERP 已完成", "wang.fang", "王芳", "STANDARD"] {
            assert!(!html.contains(never), "internal `{never}` shown: {html}");
        }
    }

    // The contract (at execution) and the delivery confirmation (at acceptance) are
    // archived, their SHA-256 in the audit trail; a changed file is refused.
    wait_until("both documents", || async {
        let r = &app.order(&id).await["references"];
        r.get("documents.contract").is_some() && r.get("documents.delivery_confirmation").is_some()
    })
    .await;
    let order = app.order(&id).await;
    let sha = order["references"]["documents.contract"].as_str().unwrap().to_owned();
    let doc = app
        .client
        .get(app.admin_url(&format!("/api/orders/{id}/documents/contract")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(doc.status(), 200);
    assert_eq!(doc.headers()["x-content-sha256"], sha.as_str());
    let html = doc.text().await.unwrap();
    assert!(html.contains("业务合同") && html.contains("张伟") && html.contains("¥500,000.00"), "{html}");
    // … and was delivered to the ERP, the same bytes under their hash.
    let delivered = app.erp.documents();
    let contract = delivered.iter().find(|(_, b)| b["kind"] == "contract").expect("the contract reached the ERP");
    assert_eq!(contract.1["sha256"], sha.as_str());
    assert_eq!(contract.1["content"], html.as_str());
    assert!(contract.0.ends_with("/document"), "its own idempotency key: {}", contract.0);
    let recorded = order["events"].as_array().unwrap().iter().any(|e| {
        e["event"]["effect"] == "documents.contract"
            && e["event"]["receipt"].as_str().unwrap_or_default().contains(&sha)
    });
    assert!(recorded, "the hash is in the audit trail");
    let path = app.dir.path().join("data/documents").join(&id).join(format!("contract-{sha}.html"));
    std::fs::write(&path, html.replace("张伟", "李四")).unwrap();
    let (s, b) = app.api(&format!("/orders/{id}/documents/contract")).await;
    assert_eq!((s, b["error"]["code"].as_str()), (500, Some("document_altered")), "{b}");
    let (s, _) = app.api(&format!("/orders/{id}/documents/invoice_copy")).await;
    assert_eq!(s, 404);

    // The finance system reports the payment: paid, closed, surveyed.
    let pay = json!({"type": "payment.received", "payment_id": "BANK-7781", "amount": {"amount": "500000.00", "currency": "CNY"}, "invoice_number": inv["number"]});
    let (s, b) = system_event(&app, "demo-finance", &pay).await;
    assert_eq!(
        (s, b["matched"].as_bool(), b["settled"].as_bool(), b["state"].as_str()),
        (200, Some(true), Some(true), Some("closed")),
        "{b}"
    );
    let (s, b) = system_event(&app, "demo-finance", &pay).await;
    assert_eq!((s, b["duplicate"].as_bool()), (200, Some(true)), "a redelivered payment is taken once: {b}");
    wait_until("the survey mail", || async {
        smtp.messages().iter().any(|m| {
            m.rcpt() == vec!["zhang.wei@example.com".to_owned()] && m.part("text/plain").contains("/pages/survey/")
        })
    })
    .await;
    let order = app.order(&id).await;
    let kinds: Vec<&str> =
        order["events"].as_array().unwrap().iter().map(|e| e["event"]["type"].as_str().unwrap()).collect();
    for k in [
        "approved",
        "execution_started",
        "task_assigned",
        "task_completed",
        "delivery_recorded",
        "acceptance_confirmed",
        "invoice_issued",
        "payment_received",
        "closed",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    let (_, audit) = app.api("/audit/verify").await;
    assert_eq!(audit["intact"], true, "{audit}");
    app.stop().await;
}

#[tokio::test]
async fn a_refused_acceptance_opens_an_exception_that_is_resolved_then_accepted() {
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().clock(Clock::system()).mail(&smtp).start().await;
    let id = executing_order(&app, "D-CASH-2", Some("同意")).await;
    deliver(&app, &id).await;
    wait_until("the acceptance mail", || async {
        !mails_to(&smtp.messages(), "zhang.wei@example.com", "交付确认").is_empty()
    })
    .await;
    let link = mails_to(&smtp.messages(), "zhang.wei@example.com", "交付确认")[0].page_link();
    let missing = app.client.post(&link).form(&[("decision", "refuse"), ("note", "")]).send().await.unwrap();
    assert_eq!(missing.status(), 422, "a refusal needs its reason");
    let r =
        app.client.post(&link).form(&[("decision", "refuse"), ("note", "合同金额与约定不符")]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let order = app.order(&id).await;
    assert_eq!(order["state"], "exception");
    assert!(order["fulfilment"]["exception"]["reason"].as_str().unwrap().contains("合同金额与约定不符"));
    assert_eq!(order["fulfilment"]["exception"]["owner"], "operations");
    wait_until("operations and the sales owner hear of it", || async {
        let m = smtp.messages();
        ["operations@bank.example", "li.na@bank.example"].iter().all(|to| {
            m.iter().any(|x| x.rcpt().iter().any(|r| r == to) && x.part("text/plain").contains("合同金额与约定不符"))
        })
    })
    .await;
    // Resolved: back to delivered; an operator records the acceptance.
    let (s, b) = app
        .api_post_json_as(
            "sun.li",
            &format!("/orders/{id}/exception"),
            &json!({"action": "resolve", "note": "已更正合同金额"}),
        )
        .await;
    assert_eq!((s, b["state"].as_str()), (200, Some("delivered")), "{b}");
    let (s, b) = app
        .api_post_json_as("sun.li", &format!("/orders/{id}/exception"), &json!({"action": "resolve", "note": "again"}))
        .await;
    assert_eq!(s, 409, "nothing open: {b}");
    let (s, b) = app
        .api_post_json_as(
            "sun.li",
            &format!("/orders/{id}/acceptance"),
            &json!({"decision": "accept", "note": "客户电话确认"}),
        )
        .await;
    assert_eq!((s, b["state"].as_str()), (200, Some("accepted")), "{b}");
    wait_until("invoiced", || async { app.order(&id).await["state"] == "invoiced" }).await;
    app.stop().await;
}

#[tokio::test]
async fn a_lost_invoice_answer_never_makes_a_second_invoice() {
    let erp = Receiver::start().await;
    let app = TestApp::builder()
        .erp(erp.clone())
        .files(|d| replace_in_file(d, "connectors/demo-finance.toml", &[("timeout_secs = 10", "timeout_secs = 1")]))
        .start()
        .await;
    // The finance system creates the invoice, then answers too late: the push times out.
    erp.lose_invoice_answers(1);
    let (s, b) = app.post_webhook(&deal("D-CASH-3", 1, "8000.00")).await;
    assert_eq!((s, b["state"].as_str()), (202, Some("executing")));
    let id = b["order_id"].as_str().unwrap().to_owned();
    deliver(&app, &id).await;
    let (s, _) =
        app.api_post_json_as("sun.li", &format!("/orders/{id}/acceptance"), &json!({"decision": "accept"})).await;
    assert_eq!(s, 200);
    wait_until("invoiced", || async { app.order(&id).await["state"] == "invoiced" }).await;
    assert_eq!(erp.invoices().len(), 1, "the retry found the invoice instead of making another");
    let order = app.order(&id).await;
    assert_eq!(order["fulfilment"]["invoice"]["number"], erp.invoices()[0].0.as_str());
    let done = order["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"]["effect"] == "demo-finance.create_invoice")
        .unwrap()
        .clone();
    assert_eq!(done["event"]["attempts"], 2, "{done}");
    assert!(done["event"]["receipt"].as_str().unwrap().contains("not created again"), "{done}");
    app.stop().await;
}

#[tokio::test]
async fn payments_are_matched_partly_over_or_queued_for_an_operator() {
    let erp = Receiver::start().await;
    let app = TestApp::builder().erp(erp).start().await;
    let mut invoiced = Vec::new();
    for ext in ["D-PAY-1", "D-PAY-2"] {
        let (_, b) = app.post_webhook(&deal(ext, 1, "8000.00")).await;
        let id = b["order_id"].as_str().unwrap().to_owned();
        deliver(&app, &id).await;
        app.api_post_json_as("sun.li", &format!("/orders/{id}/acceptance"), &json!({"decision": "accept"})).await;
        wait_until("invoiced", || async { app.order(&id).await["state"] == "invoiced" }).await;
        let number = app.order(&id).await["fulfilment"]["invoice"]["number"].as_str().unwrap().to_owned();
        invoiced.push((id, number));
    }
    let pay = |id: &str, amount: &str, currency: &str, invoice: &str| json!({"payment_id": id, "amount": {"amount": amount, "currency": currency}, "invoice_number": invoice});
    let (a, inv_a) = &invoiced[0];
    // Partial, then the rest.
    let (s, b) = app.api_post_json("/payments", &pay("P-1", "3000.00", "CNY", inv_a)).await;
    assert_eq!(
        (s, b["settled"].as_bool(), b["outstanding"]["amount"].as_str()),
        (200, Some(false), Some("5000.00")),
        "{b}"
    );
    let (s, b) = app.api_post_json("/payments", &pay("P-2", "5000.00", "CNY", inv_a)).await;
    assert_eq!((s, b["settled"].as_bool(), b["state"].as_str()), (200, Some(true), Some("closed")), "{b}");
    assert_eq!(app.order(a).await["fulfilment"]["payments"].as_array().unwrap().len(), 2);

    // Unknown invoice, wrong currency: queued with the reason, nothing applied.
    let (s, b) = app.api_post_json("/payments", &pay("P-3", "8000.00", "CNY", "INV-NOPE")).await;
    assert_eq!((s, b["matched"].as_bool()), (202, Some(false)), "{b}");
    assert!(b["reason"].as_str().unwrap().contains("no order has invoice `INV-NOPE`"), "{b}");
    let (b_id, inv_b) = &invoiced[1];
    let (s, b) = app.api_post_json("/payments", &pay("P-4", "8000.00", "USD", inv_b)).await;
    assert_eq!((s, b["matched"].as_bool()), (202, Some(false)), "{b}");
    assert!(b["reason"].as_str().unwrap().contains("in USD but invoice"), "{b}");
    let (_, q) = app.api("/payments/unmatched").await;
    assert_eq!(q["payments"].as_array().unwrap().len(), 2, "{q}");
    assert_eq!(app.order(b_id).await["state"], "invoiced");

    // An operator applies the unknown one to the second order: over by nothing, settled.
    let (s, b) = app.api_post_json_as("he.jun", "/payments/unmatched/api/P-3/assign", &json!({"order_id": b_id})).await;
    assert_eq!((s, b["settled"].as_bool(), b["state"].as_str()), (200, Some(true), Some("closed")), "{b}");
    let (_, q) = app.api("/payments/unmatched").await;
    assert_eq!(q["payments"].as_array().unwrap().len(), 1, "{q}");
    // One accounts-receivable voucher per invoiced order, each with its own key.
    let vouchers = app.erp.vouchers();
    assert_eq!(vouchers.len(), 2);
    assert!(vouchers.iter().all(|(k, b)| k.starts_with("orderbridge:") && b["operation"] == "create_ar_voucher"));
    let events = app.order(b_id).await["events"].clone();
    let paid = events.as_array().unwrap().iter().find(|e| e["event"]["type"] == "payment_received").unwrap().clone();
    assert_eq!(paid["actor"]["id"], "he.jun", "{paid}");
    app.stop().await;
}

fn reminders(smtp: &SmtpServer, to: &str) -> Vec<Mail> {
    smtp.messages()
        .into_iter()
        .filter(|m| {
            m.rcpt().iter().any(|r| r == to) && (m.subject().contains("付款提醒") || m.subject().contains("付款通知"))
        })
        .collect()
}

/// Ninety days on a manual clock: reminders on their days, one mail per customer for
/// all their overdue invoices, none while a dispute is open, none after payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dunning_follows_its_schedule_per_customer_pauses_for_a_dispute_and_stops_with_payment() {
    // Monday 30 November 2026, 10:00 in Shanghai.
    let clock = ManualClock::new("2026-11-30T02:00:00Z".parse().unwrap());
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().clock(clock.clock()).mail(&smtp).start().await;
    let mut ids = Vec::new();
    for (ext, amount, product) in [("D-DUN-A", "8000.00", None), ("D-DUN-B", "6000.00", Some(("deposit", "DP-3M")))] {
        let mut d = deal(ext, 1, amount);
        d["deal"]["customer"]["id"] = "C-DUNNING".into();
        if let Some((kind, code)) = product {
            d["deal"]["product"] = json!({"type": kind, "code": code});
        }
        let (s, b) = app.post_webhook(&d).await;
        assert_eq!((s, b["state"].as_str()), (202, Some("executing")), "{b}");
        let id = b["order_id"].as_str().unwrap().to_owned();
        deliver(&app, &id).await;
        app.api_post_json_as("sun.li", &format!("/orders/{id}/acceptance"), &json!({"decision": "accept"})).await;
        wait_until("invoiced", || async { app.order(&id).await["state"] == "invoiced" }).await;
        ids.push(id);
    }
    let (a, b) = (ids[0].clone(), ids[1].clone());
    let number = |o: Value| o["fulfilment"]["invoice"]["number"].as_str().unwrap().to_owned();
    let (inv_a, inv_b) = (number(app.order(&a).await), number(app.order(&b).await));
    assert_eq!(app.order(&a).await["fulfilment"]["invoice"]["due"], "2026-12-30");
    let customer = "zhang.wei@example.com";
    let settle = || tokio::time::sleep(std::time::Duration::from_millis(400));

    // Due 30 December: nothing before the day is over in Shanghai.
    clock.advance(chrono::Duration::minutes(30 * 24 * 60 + 13 * 60 + 59)); // 2026-12-30T15:59Z
    settle().await;
    assert_eq!(app.order(&a).await["state"], "invoiced");
    clock.advance(chrono::Duration::minutes(2));
    wait_until("both are overdue", || async {
        app.order(&a).await["state"] == "overdue" && app.order(&b).await["state"] == "overdue"
    })
    .await;

    // Day 3: one friendly reminder listing both invoices (gathered for an hour).
    clock.advance(chrono::Duration::days(3));
    wait_until("both friendly steps are recorded", || async {
        app.order(&a).await["fulfilment"]["dunning"] == json!(["friendly"])
            && app.order(&b).await["fulfilment"]["dunning"] == json!(["friendly"])
    })
    .await;
    settle().await;
    assert!(reminders(&smtp, customer).is_empty(), "gathered, not yet sent");
    clock.advance(chrono::Duration::minutes(61));
    wait_until("the friendly reminder", || async { reminders(&smtp, customer).len() == 1 }).await;
    let first = &reminders(&smtp, customer)[0];
    let text = first.part("text/plain");
    assert!(first.subject().starts_with("付款提醒"), "{}", first.subject());
    assert!(text.contains(&inv_a) && text.contains(&inv_b), "{text}");
    assert!(text.contains("¥14,000.00"), "the total of both: {text}");
    // The customer's receivables, as finance staff see them.
    let (s, ar) = app.api("/customers/C-DUNNING/receivables").await;
    assert_eq!(s, 200, "{ar}");
    assert_eq!(ar["outstanding"], json!([{"amount": "14000.00", "currency": "CNY"}]), "{ar}");
    let listed = ar["invoices"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|i| i["overdue"] == true && i["dunning"] == json!(["friendly"])), "{ar}");

    // B is disputed: its reminders pause. Day 15: the firm one for A alone.
    let (s, _) = app
        .api_post_json_as(
            "sun.li",
            &format!("/orders/{b}/exception"),
            &json!({"action": "open", "note": "客户对存款利率有异议"}),
        )
        .await;
    assert_eq!(s, 200);
    clock.advance(chrono::Duration::days(12));
    wait_until("A's firm step", || async {
        app.order(&a).await["fulfilment"]["dunning"] == json!(["friendly", "firm"])
    })
    .await;
    clock.advance(chrono::Duration::minutes(61));
    wait_until("the firm reminder", || async { reminders(&smtp, customer).len() == 2 }).await;
    let second = &reminders(&smtp, customer)[1];
    assert!(second.subject().starts_with("再次付款提醒"), "{}", second.subject());
    assert!(second.part("text/plain").contains(&inv_a) && !second.part("text/plain").contains(&inv_b));

    // A is paid: its reminders stop. Past day 30, B still disputed: nothing.
    let (s, p) = app.api_post_json("/payments", &json!({"payment_id": "BANK-A", "amount": {"amount": "8000.00", "currency": "CNY"}, "invoice_number": inv_a})).await;
    assert_eq!((s, p["state"].as_str()), (200, Some("closed")), "{p}");
    clock.advance(chrono::Duration::days(17));
    settle().await;
    clock.advance(chrono::Duration::minutes(61));
    settle().await;
    assert_eq!(reminders(&smtp, customer).len(), 2, "nothing while disputed or after payment");
    assert_eq!(app.order(&b).await["fulfilment"]["dunning"], json!(["friendly"]));

    // The dispute is settled on day 33: B catches up with its latest step only.
    let (s, _) = app
        .api_post_json_as(
            "sun.li",
            &format!("/orders/{b}/exception"),
            &json!({"action": "resolve", "note": "利率已解释，客户认可"}),
        )
        .await;
    assert_eq!(s, 200);
    wait_until("B's escalation step", || async {
        app.order(&b).await["fulfilment"]["dunning"] == json!(["friendly", "firm", "escalation"])
    })
    .await;
    wait_until("the sales owner hears at once", || async { !reminders(&smtp, "li.na@bank.example").is_empty() }).await;
    clock.advance(chrono::Duration::minutes(61));
    wait_until("the final notice", || async { reminders(&smtp, customer).len() == 3 }).await;
    let third = &reminders(&smtp, customer)[2];
    assert!(third.subject().starts_with("最后付款通知"), "{}", third.subject());
    assert!(third.part("text/plain").contains(&inv_b));

    // Paid: nothing more, ever.
    let (s, _) = app.api_post_json("/payments", &json!({"payment_id": "BANK-B", "amount": {"amount": "6000.00", "currency": "CNY"}, "invoice_number": inv_b})).await;
    assert_eq!(s, 200);
    clock.advance(chrono::Duration::days(60));
    settle().await;
    clock.advance(chrono::Duration::minutes(61));
    settle().await;
    assert_eq!(reminders(&smtp, customer).len(), 3);
    assert_eq!(reminders(&smtp, "li.na@bank.example").len(), 1);
    assert_eq!(app.order(&b).await["state"], "closed");
    app.stop().await;
}

#[tokio::test]
async fn reconciliation_opens_an_exception_where_the_finance_system_disagrees() {
    let erp = Receiver::start().await;
    let app = TestApp::builder().erp(erp.clone()).start().await;
    let mut invoiced = Vec::new();
    for ext in ["D-REC-1", "D-REC-2"] {
        let (_, b) = app.post_webhook(&deal(ext, 1, "8000.00")).await;
        let id = b["order_id"].as_str().unwrap().to_owned();
        deliver(&app, &id).await;
        app.api_post_json_as("sun.li", &format!("/orders/{id}/acceptance"), &json!({"decision": "accept"})).await;
        wait_until("invoiced", || async { app.order(&id).await["state"] == "invoiced" }).await;
        let number = app.order(&id).await["fulfilment"]["invoice"]["number"].as_str().unwrap().to_owned();
        invoiced.push((id, number));
    }
    // The finance system voided the second invoice behind our back.
    erp.set_invoice_status(&invoiced[1].1, "voided");
    let (s, r) = app.api_post("/reconcile").await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["checked"], 2, "{r}");
    assert_eq!(r["mismatches"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["mismatches"][0]["order_id"], invoiced[1].0.as_str());
    assert_eq!(r["mismatches"][0]["external"], "voided");
    assert_eq!(r["mismatches"][0]["exception_opened"], true);
    assert_eq!(app.order(&invoiced[0].0).await["state"], "invoiced", "the agreeing one is untouched");
    let other = app.order(&invoiced[1].0).await;
    assert_eq!(other["state"], "exception");
    assert_eq!(
        other["fulfilment"]["exception"]["reason"],
        "reconciliation FINANCE-INVOICE: demo-finance reports `voided` while the order is invoiced"
    );
    assert!(app.metrics().await.contains("orderbridge_reconcile_mismatches_total{check=\"FINANCE-INVOICE\"} 1"));
    // A second run does not pile up: the order is in its exception now, not checked.
    let (_, r) = app.api_post("/reconcile").await;
    assert_eq!((r["checked"].as_u64(), r["mismatches"].as_array().map(Vec::len)), (Some(1), Some(0)), "{r}");
    app.stop().await;
}
