//! The feedback channel end to end over TCP with the real SMTP server: a staff member
//! follows the feedback link of a real workflow mail and reports a problem; bad forms
//! (no text, an unknown order) are answered at their field and store nothing; the
//! process owner (`see_reports`) reads it on `/console/feedback`, filtered by order,
//! and counted on the KPI page; the thank-you mail arrives; a customer's mail link
//! and the console's own form work the same way.

use crate::console::{Browser, csrf, sign_in};
use crate::console_pages::two_orders;
use crate::helpers::*;

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
    let sent = b.post(&link, &[("category", "suggestion"), ("text", "希望审批邮件附上合同摘要")]).await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    thanks(&smtp, "wang.fang@bank.example", "第 1 号").await;
    let mut li = sign_in(&app, &smtp, "li.na@bank.example").await;
    let list = li.get("/console/feedback").await;
    assert_eq!(rows(&list.body), 1, "{}", list.body);
    assert!(list.body.contains("希望审批邮件附上合同摘要"), "{}", list.body);
    app.stop().await;
}
