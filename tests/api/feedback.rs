//! The feedback channel end to end over TCP with the real SMTP server: a staff member
//! follows the feedback link of a real workflow mail and reports a problem; bad forms
//! (no text, an unknown order) are answered at their field and store nothing; the
//! process owner (`see_reports`) reads it on `/console/feedback`, filtered by order,
//! and counted on the KPI page; the thank-you mail arrives; a customer's mail link
//! and the console's own form work the same way. A report on an order is an audited
//! `feedback_received` entry of its trail (API, console, `audit verify`); the reports
//! of a period are counted in `GET /api/reports/kpis` and the scheduled report mail;
//! every page opened from a signed link links the feedback form for its person and order.

use serde_json::{Value, json};

use crate::cash::{deliver, system_event};
use crate::console::{Browser, csrf, sign_in};
use crate::console_pages::two_orders;
use crate::helpers::*;
use crate::scheduled_reports::add_reports;
use crate::screens::wait_link;

/// The `feedback_received` entries of an order's trail, as the API shows them.
async fn feedback_entries(app: &TestApp, order_id: &str) -> Vec<Value> {
    let order = app.order(order_id).await;
    let events = order["events"].as_array().unwrap_or_else(|| panic!("events: {order}"));
    events.iter().filter(|e| e["event"]["type"] == "feedback_received").cloned().collect()
}

/// `GET /api/audit/verify` says every chain is intact.
async fn assert_audit_intact(app: &TestApp) {
    let (s, v) = app.api("/audit/verify").await;
    assert_eq!((s, &v["intact"]), (200, &json!(true)), "{v}");
    assert!(v["broken"].is_null(), "{v}");
}

/// The feedback link in the text part of `mail`, if it has one.
fn feedback_link(mail: &Mail) -> Option<String> {
    let text = mail.part("text/plain");
    let at = text.find("/pages/feedback/")?;
    let start = text[..at].rfind("http://")?;
    Some(text[start..].split_whitespace().next().unwrap().to_owned())
}

/// Waits for a mail to `to` that has a feedback link, and answers it.
async fn mail_with_link(smtp: &SmtpServer, to: &str) -> (Mail, String) {
    let dir = smtp.maildir.clone();
    let has =
        |m: &Mail| m.rcpt() == [to] && m.meta["parsed"]["parts"].as_array().is_some() && feedback_link(m).is_some();
    wait_until(&format!("a mail with a feedback link to {to}"), || {
        let dir = dir.clone();
        async move { messages_in(&dir).iter().any(has) }
    })
    .await;
    let mail = smtp.messages().into_iter().find(has).unwrap();
    let link = feedback_link(&mail).unwrap();
    (mail, link)
}

async fn thanks(smtp: &SmtpServer, to: &str, needle: &str) -> Mail {
    let dir = smtp.maildir.clone();
    let is = |m: &Mail| m.rcpt() == [to] && m.subject().contains(needle);
    wait_until(&format!("the thank-you mail to {to}"), || {
        let dir = dir.clone();
        async move { messages_in(&dir).iter().any(is) }
    })
    .await;
    smtp.messages().into_iter().find(is).unwrap()
}

/// The number of feedback rows the process owner's listing shows.
fn rows(page: &str) -> usize {
    page.matches("<tr id=\"feedback-").count()
}

#[tokio::test]
async fn feedback_goes_from_a_mail_link_to_the_process_owner_the_kpis_and_a_thank_you_mail() {
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().mail(&smtp).start().await;
    let (_waiting, _small) = two_orders(&app).await;

    // The approver's mail on the waiting order carries a feedback link for them.
    let (mail, link) = mail_with_link(&smtp, "wang.fang@bank.example").await;
    assert!(mail.part("text/html").contains("/pages/feedback/"), "the HTML footer links it too");
    let mut b = Browser::new(&app);
    let form = b.get(&link).await;
    assert_eq!(form.status, 200, "{}", form.body);
    assert!(form.body.contains("<form method=\"post\"") && form.body.contains("name=\"text\""), "{}", form.body);
    let order_id = {
        let at = form.body.find("id=\"order\" name=\"order\" value=\"").expect("the order field") + 31;
        form.body[at..].split('"').next().unwrap().to_owned()
    };
    assert!(order_id.starts_with("ord_"), "the mail's order is filled in: {}", form.body);

    // Bad forms: said at their field, nothing stored.
    let empty = b.post(&link, &[("category", "problem"), ("order", &order_id), ("text", "  ")]).await;
    assert_eq!(empty.status, 422, "{}", empty.body);
    assert!(empty.body.contains("内容为必填项") && empty.body.contains("aria-invalid=\"true\""), "{}", empty.body);
    let mut unknown = order_id.clone();
    let last = unknown.pop().unwrap();
    unknown.push(if last == 'a' { 'b' } else { 'a' });
    let bad = b.post(&link, &[("category", "problem"), ("order", &unknown), ("text", "链接打不开")]).await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(bad.body.contains(&format!("“{unknown}”不是已知的订单")), "{}", bad.body);
    let nonsense = b.post(&link, &[("category", "problem"), ("order", "ord_nope"), ("text", "x")]).await;
    assert_eq!(nonsense.status, 422, "{}", nonsense.body);
    let no_kind = b.post(&link, &[("category", "praise"), ("text", "x")]).await;
    assert_eq!(no_kind.status, 422, "{}", no_kind.body);

    // A good one: recorded as no. 1, thanked by mail.
    let text = "审批邮件里的金额没有千位分隔符，容易看错";
    let sent = b.post(&link, &[("category", "problem"), ("order", &order_id), ("text", text)]).await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert!(sent.body.contains("第 1 号反馈已记录"), "{}", sent.body);
    let ack = thanks(&smtp, "wang.fang@bank.example", "第 1 号").await;
    assert!(ack.part("text/plain").contains("第 1 号反馈"), "{}", ack.raw);

    // Stored with the order: one audited entry (the bad forms appended none), the
    // person as its actor through the mail's link; the text stays in the report.
    let entries = feedback_entries(&app, &order_id).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let e = &entries[0];
    assert_eq!(
        e["event"],
        json!({"type": "feedback_received", "feedback": 1, "category": "problem", "channel": "mail"}),
        "{e}"
    );
    assert_eq!(
        (&e["actor"]["kind"], &e["actor"]["id"], &e["channel"]),
        (&json!("person"), &json!("wang.fang"), &json!("mail_link")),
        "{e}"
    );
    assert!(!app.order(&order_id).await.to_string().contains("千位分隔符"), "the text is not in the trail");
    assert_audit_intact(&app).await;

    // The process owner (li.na: see_reports) reads it, filtered by order.
    let mut li = sign_in(&app, &smtp, "li.na@bank.example").await;
    let list = li.get("/console/feedback").await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(rows(&list.body), 1, "the bad forms stored nothing: {}", list.body);
    assert!(list.body.contains(text) && list.body.contains("王芳（邮件）"), "{}", list.body);
    assert!(list.body.contains(&format!("href=\"/console/orders/{order_id}\"")), "{}", list.body);
    let other = li.get(&format!("/console/feedback?order={unknown}")).await;
    assert_eq!((other.status, rows(&other.body)), (200, 0), "{}", other.body);
    let this = li.get(&format!("/console/feedback?order={order_id}")).await;
    assert_eq!(rows(&this.body), 1, "{}", this.body);
    let garbage = li.get("/console/feedback?order=nope").await;
    assert_eq!(garbage.status, 422, "{}", garbage.body);

    // The console's own form, for whoever is signed in (CSRF-checked).
    let form = li.get("/console/feedback/new").await;
    assert_eq!(form.status, 200, "{}", form.body);
    let token = csrf(&form.body);
    let forged = li.post("/console/feedback/new", &[("category", "suggestion"), ("text", "x")]).await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    let sent = li
        .post("/console/feedback/new", &[("csrf", &token), ("category", "suggestion"), ("text", "报表希望能导出")])
        .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    thanks(&smtp, "li.na@bank.example", "第 2 号").await;

    // A customer's mail link: the report is on their order, the customer its author.
    let email = "zhang.wei@example.com";
    let (_, link) = mail_with_link(&smtp, email).await;
    let mut c = Browser::new(&app);
    let form = c.get(&link).await;
    assert_eq!(form.status, 200, "{}", form.body);
    assert!(form.body.contains("name=\"order\" value=\"ord_") && !form.body.contains("id=\"order\""), "{}", form.body);
    let text = "客户经理一直没有回电";
    let sent = c.post(&link, &[("category", "complaint"), ("order", &unknown), ("text", text)]).await;
    assert_eq!(sent.status, 200, "a customer's report is on their order, whatever the form says: {}", sent.body);
    thanks(&smtp, email, "第 3 号").await;
    let list = li.get("/console/feedback").await;
    assert_eq!(rows(&list.body), 3, "{}", list.body);
    assert!(list.body.contains(text) && list.body.contains(&format!("{email}（客户）")), "{}", list.body);
    let theirs = li.get(&format!("/console/feedback?order={unknown}")).await;
    assert_eq!(rows(&theirs.body), 0, "{}", theirs.body);
    // The customer's report is on their order's trail, through the customer channel.
    let their_order = {
        let at = form.body.find("name=\"order\" value=\"").unwrap() + 20;
        form.body[at..].split('"').next().unwrap().to_owned()
    };
    let entries = feedback_entries(&app, &their_order).await;
    let last = entries.last().unwrap_or_else(|| panic!("no feedback entry on {their_order}"));
    assert_eq!((&last["event"]["feedback"], &last["event"]["category"]), (&json!(3), &json!("complaint")), "{last}");
    assert_eq!((&last["event"]["channel"], &last["actor"]["id"]), (&json!("customer"), &json!(email)), "{last}");
    // The console's report named no order: no order's trail has no. 2.
    for id in [&order_id, &their_order] {
        assert!(feedback_entries(&app, id).await.iter().all(|e| e["event"]["feedback"] != 2), "{id}");
    }
    // The order's timeline in the console says it.
    let mut zhou = sign_in(&app, &smtp, "zhou.min@bank.example").await;
    let timeline = zhou.get(&format!("/console/orders/{order_id}")).await;
    assert_eq!(timeline.status, 200, "{}", timeline.body);
    assert!(timeline.body.contains("收到对流程的意见：第 1 号，问题"), "{}", timeline.body);
    assert_audit_intact(&app).await;

    // Counted on the KPI page for the period, per category.
    let kpis = li.get("/console/reports").await;
    assert!(kpis.body.contains("<section id=\"feedback\">"), "{}", kpis.body);
    let count = |label: &str| {
        let row = kpis.body.split("<tr").find(|r| r.contains(&format!(">{label}<"))).unwrap_or_default();
        row.split("class=\"num\">").nth(1).and_then(|c| c.split('<').next()).unwrap_or_default().to_owned()
    };
    assert_eq!(count("问题"), "1", "{}", kpis.body);
    assert_eq!(count("建议"), "1", "{}", kpis.body);

    // A link that was altered opens nothing.
    let mut broken = link.clone();
    broken.push('x');
    assert_eq!(Browser::new(&app).get(&broken).await.status, 403);
    app.stop().await;
}

/// On PostgreSQL (the reports are job rows, as on the embedded stores): a report from
/// a mail's link is stored, listed, counted and acknowledged.
#[tokio::test]
async fn on_postgres_feedback_is_stored_listed_and_acknowledged() {
    use secrecy::ExposeSecret as _;

    let pg = crate::postgres::fresh_database().await;
    let secret = tempfile::tempdir().unwrap();
    let url_file = secret.path().join("url");
    std::fs::write(&url_file, pg.url.expose_secret()).unwrap();
    let store: [(&str, toml::Value); 2] =
        [("store.backend", "postgres".into()), ("store.url", format!("file:{}", url_file.display()).into())];
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().mail(&smtp).files(move |d| set_in_file(d, &store)).start().await;
    two_orders(&app).await;
    let (_, link) = mail_with_link(&smtp, "wang.fang@bank.example").await;
    let mut b = Browser::new(&app);
    let order_id = {
        let form = b.get(&link).await;
        let at = form.body.find("id=\"order\" name=\"order\" value=\"").expect("the order field") + 31;
        form.body[at..].split('"').next().unwrap().to_owned()
    };
    let sent =
        b.post(&link, &[("category", "suggestion"), ("order", &order_id), ("text", "希望审批邮件附上合同摘要")]).await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    thanks(&smtp, "wang.fang@bank.example", "第 1 号").await;
    let mut li = sign_in(&app, &smtp, "li.na@bank.example").await;
    let list = li.get("/console/feedback").await;
    assert_eq!(rows(&list.body), 1, "{}", list.body);
    assert!(list.body.contains("希望审批邮件附上合同摘要"), "{}", list.body);
    // On the mail's order's trail, in the same commit, and the chain verifies.
    let entries = feedback_entries(&app, &order_id).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["event"]["category"], "suggestion", "{}", entries[0]);
    assert_audit_intact(&app).await;
    app.stop().await;
}

fn set_clock(clock: &ManualClock, to: &str) {
    let to: chrono::DateTime<chrono::Utc> = to.parse().unwrap();
    clock.advance(to - clock.now());
}

/// Two reports in the week of 23 November (a problem and a complaint) and one the
/// Monday after (a suggestion): the week's figures count the two, in the API and in
/// both languages of the report mail, text and HTML.
#[tokio::test]
async fn the_reports_of_a_period_are_counted_in_the_kpis_and_the_report_mail() {
    // Wednesday 25 November 2026, 10:00 in Shanghai.
    let clock = ManualClock::new("2026-11-25T02:00:00Z".parse().unwrap());
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().clock(clock.clock()).mail(&smtp).files(add_reports).start().await;
    let (s, b) = app.post_webhook(&deal("D-FB-K1", 1, "500000.00")).await;
    assert_eq!((s, b["state"].as_str()), (202, Some("awaiting_approval")), "{b}");
    let (_, link) = mail_with_link(&smtp, "wang.fang@bank.example").await;
    let mut b = Browser::new(&app);
    let send = |category: &'static str, text: &'static str| (category, text);
    for (category, text) in [send("problem", "审批链接打开很慢"), send("complaint", "同一封邮件收到两次")]
    {
        let sent = b.post(&link, &[("category", category), ("text", text)]).await;
        assert_eq!(sent.status, 200, "{}", sent.body);
    }
    // Monday 30 November, 00:30 in Shanghai: after the week, before its report.
    set_clock(&clock, "2026-11-29T16:30:00Z");
    let sent = b.post(&link, &[("category", "suggestion"), ("text", "希望能在手机上审批")]).await;
    assert_eq!(sent.status, 200, "{}", sent.body);

    // The API: the week counts two, the Monday one; the other fields are still there.
    let (s, week) = app.api("/reports/kpis?from=2026-11-23&to=2026-11-29").await;
    assert_eq!(s, 200, "{week}");
    assert_eq!(week["feedback"], json!({"problem": 1, "suggestion": 0, "complaint": 1, "total": 2}), "{week}");
    assert!(week["kpis"].is_object() && week["process"].is_object() && week["current"]["orders"] == 1, "{week}");
    let (_, monday) = app.api("/reports/kpis?from=2026-11-30&to=2026-11-30").await;
    assert_eq!(monday["feedback"], json!({"problem": 0, "suggestion": 1, "complaint": 0, "total": 1}), "{monday}");

    // Monday 08:01: the week's report mails say the same, in text and HTML.
    set_clock(&clock, "2026-11-30T00:01:00Z");
    let is_report = |m: &Mail| !m.header("X-Orderbridge-Report").is_empty();
    let dir = smtp.maildir.clone();
    wait_until("both report mails", || {
        let dir = dir.clone();
        async move { messages_in(&dir).iter().filter(|m| is_report(m)).count() >= 2 }
    })
    .await;
    let mails: Vec<Mail> = smtp.messages().into_iter().filter(is_report).collect();
    let zh = mails.iter().find(|m| m.header("X-Orderbridge-Report") == "weekly-zh").unwrap();
    let en = mails.iter().find(|m| m.header("X-Orderbridge-Report") == "weekly-en").unwrap();
    // Lines as written (the message carries CRLF).
    let text = zh.part("text/plain").replace("\r\n", "\n");
    assert!(text.contains("本期收到的流程意见：\n- 问题：1\n- 建议：0\n- 投诉：1\n- 合计：2"), "{text}");
    let text = en.part("text/plain").replace("\r\n", "\n");
    assert!(
        text.contains("Feedback on the process received in the period:\n- Problems: 1\n- Suggestions: 0\n- Complaints: 1\n- In all: 2"),
        "{text}"
    );
    let cell = |html: &str, label: &str| {
        let table = html.split("id=\"feedback\"").nth(1).unwrap_or_else(|| panic!("no feedback table: {html}"));
        // Styles are inlined into the cells: the figure is the text of the cell after the label's.
        let after = table.split(&format!(">{label}</td>")).nth(1).unwrap_or_default();
        after.split("</td>").next().and_then(|c| c.rsplit('>').next()).unwrap_or_default().to_owned()
    };
    let (zh_html, en_html) = (zh.part("text/html"), en.part("text/html"));
    assert_eq!(
        [cell(zh_html, "问题"), cell(zh_html, "建议"), cell(zh_html, "投诉"), cell(zh_html, "合计")],
        ["1", "0", "1", "2"],
        "{zh_html}"
    );
    assert_eq!(
        [cell(en_html, "Problems"), cell(en_html, "Suggestions"), cell(en_html, "Complaints"), cell(en_html, "In all")],
        ["1", "0", "1", "2"],
        "{en_html}"
    );
    app.stop().await;
}

/// The feedback link a page ends with (a path on the daemon).
fn page_link(page: &str) -> String {
    let at = page.find("<p class=\"feedback\"><a href=\"").unwrap_or_else(|| panic!("no feedback link: {page}")) + 29;
    page[at..].split('"').next().unwrap().replace("&amp;", "&")
}

/// Opens `page`, follows its feedback link and reports `text` on it; returns the
/// form as it was shown.
async fn report_from(app: &TestApp, page: &str, text: &str, words: &str) -> String {
    let mut b = Browser::new(app);
    let shown = b.get(page).await;
    assert_eq!(shown.status, 200, "{page}: {}", shown.body);
    assert!(shown.body.contains(words), "the link says what it is: {}", shown.body);
    let link = page_link(&shown.body);
    assert!(link.starts_with("/pages/feedback/"), "{link}");
    let form = b.get(&link).await;
    assert_eq!(form.status, 200, "{}", form.body);
    // Sent with the order as the form has it filled in.
    let at = form.body.find("name=\"order\" value=\"").expect("the order field") + 20;
    let order = form.body[at..].split('"').next().unwrap().to_owned();
    let sent = b.post(&link, &[("category", "suggestion"), ("order", &order), ("text", text)]).await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    form.body
}

/// The approval page (an approver), and the customer's status, acceptance and
/// survey pages each end with a feedback link for their person and order; each
/// report sent through one is listed for the process owner and on the order.
#[tokio::test]
async fn every_page_from_a_signed_link_links_the_feedback_form_for_its_person_and_order() {
    let smtp = SmtpServer::start(&[]);
    let erp = Receiver::start().await;
    let app = TestApp::builder().erp(erp).mail(&smtp).start().await;
    let customer = "zhang.wei@example.com";

    // A large order: the approver's page and the customer's status page.
    let (s, b) = app.post_webhook(&deal("D-FB-P1", 1, "1250000.00")).await;
    assert_eq!((s, b["state"].as_str()), (202, Some("awaiting_approval")), "{b}");
    let large = b["order_id"].as_str().unwrap().to_owned();
    let approval = wait_link(&smtp, "wang.fang@bank.example", "approval", &large).await;
    let form = report_from(&app, &approval, "审批页面上看不到合同附件", "对流程的意见").await;
    assert!(form.contains(&format!("id=\"order\" name=\"order\" value=\"{large}\"")), "the page's order: {form}");
    let status = wait_link(&smtp, customer, "status", &large).await;
    let form = report_from(&app, &status, "状态页没有预计完成时间", "对流程的意见").await;
    assert!(form.contains(&format!("name=\"order\" value=\"{large}\"")), "{form}");

    // A smaller one through delivery (acceptance) and payment (survey).
    let small = executing_order(&app, "D-FB-P2", None).await;
    wait_until("both tasks reach the ERP", || async { app.erp.tasks().len() == 2 }).await;
    deliver(&app, &small).await;
    let acceptance = wait_link(&smtp, customer, "acceptance", &small).await;
    report_from(&app, &acceptance, "验收说明看不懂", "对流程的意见").await;
    let accepted = Browser::new(&app).post(&acceptance, &[("decision", "accept"), ("note", "")]).await;
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    // The page after the answer links the form too, for the same address and order.
    let after = page_link(&accepted.body);
    let form = Browser::new(&app).get(&after).await;
    assert_eq!(form.status, 200, "{}", form.body);
    assert!(form.body.contains(&format!("name=\"order\" value=\"{small}\"")), "{}", form.body);
    wait_until("the invoice is issued", || async { app.order(&small).await["state"] == "invoiced" }).await;
    let inv = app.order(&small).await["fulfilment"]["invoice"]["number"].clone();
    let pay = json!({"type": "payment.received", "payment_id": "BANK-FB-1",
        "amount": {"amount": "500000.00", "currency": "CNY"}, "invoice_number": inv});
    let (s, b) = system_event(&app, "demo-finance", &pay).await;
    assert_eq!((s, b["state"].as_str()), (200, Some("closed")), "{b}");
    let survey = wait_link(&smtp, customer, "survey", &small).await;
    report_from(&app, &survey, "问卷太长", "对流程的意见").await;

    // The process owner reads all four, each on its page's order and person.
    let mut li = sign_in(&app, &smtp, "li.na@bank.example").await;
    let list = li.get("/console/feedback").await;
    assert_eq!(rows(&list.body), 4, "{}", list.body);
    for text in ["审批页面上看不到合同附件", "状态页没有预计完成时间", "验收说明看不懂", "问卷太长"]
    {
        assert!(list.body.contains(text), "{text}: {}", list.body);
    }
    assert!(list.body.contains("王芳（邮件）") && list.body.contains(&format!("{customer}（客户）")), "{}", list.body);
    let on = |id: &str| {
        let id = id.to_owned();
        let app = &app;
        async move { feedback_entries(app, &id).await.iter().map(|e| e["event"]["channel"].clone()).collect::<Vec<_>>() }
    };
    assert_eq!(on(&large).await, [json!("mail"), json!("customer")]);
    assert_eq!(on(&small).await, [json!("customer"), json!("customer")]);
    // The console's frame links its own form.
    let frame = li.get("/console").await;
    assert!(frame.body.contains("href=\"/console/feedback/new\""), "{}", frame.body);
    assert_audit_intact(&app).await;
    app.stop().await;
}
