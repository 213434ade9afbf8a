//! E-mail end to end: the real daemon, a real SMTP server (aiosmtpd) on loopback, the
//! messages read back from what the server received.

use chrono::Utc;
use orderbridge::engine::{Actor, OrderEvent};
use serde_json::Value;

use crate::helpers::*;

fn sample_with(id: &str, f: impl FnOnce(&mut Value)) -> Value {
    let mut v = deal(id, 1, "1250000.00");
    f(&mut v);
    v
}

async fn post(app: &TestApp, payload: &Value) -> String {
    let (status, body) = app.post_webhook(payload).await;
    assert_eq!(status, 202, "{body}");
    body["order_id"].as_str().unwrap().to_owned()
}

/// Notifications for tests about how mail is sent: one mail per order, to the customer.
const CUSTOMER_ONLY: &str = "[[notify]]\non = \"received\"\ntemplate = \"order_received\"\nto = [\"customer\"]\n";

fn customer_only(dir: &std::path::Path) {
    std::fs::write(dir.join("config/notifications.toml"), CUSTOMER_ONLY).unwrap();
}

/// Waits until `addr` received `n` mails; returns them.
async fn wait_to(smtp: &SmtpServer, addr: &str, n: usize) -> Vec<Mail> {
    let dir = smtp.maildir.clone();
    wait_until(&format!("{n} mails to {addr}"), || {
        let dir = dir.clone();
        async move { to(&messages_in(&dir), addr).len() >= n }
    })
    .await;
    to(&smtp.messages(), addr)
}

fn to(mails: &[Mail], addr: &str) -> Vec<Mail> {
    mails.iter().filter(|m| m.rcpt().iter().any(|r| r == addr)).cloned().collect()
}

async fn dead_letters(app: &TestApp) -> Vec<Value> {
    let (_, v) = app.api("/outbox/dead").await;
    v["effects"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_received_order_mails_the_customer_in_chinese_with_both_parts() {
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().clock(orderbridge::clock::Clock::system()).mail(&smtp).start().await;
    let id = post(&app, &deal("D-M1", 1, "1250000.00")).await;
    wait_to(&smtp, "zhang.wei@example.com", 1).await;
    app.drain_outbox().await;
    let mails = to(&smtp.messages(), "zhang.wei@example.com");
    assert_eq!(mails.len(), 1, "one confirmation to the customer");
    let m = &mails[0];
    assert!(m.subject().contains("¥1,250,000.00"), "subject: {}", m.subject());
    assert_eq!(m.meta["mail_from"], "orders@bank.example");
    assert!(m.header("From").contains("示例银行订单中心"), "From: {}", m.header("From"));
    assert!(m.header("To").contains("张伟"), "To: {}", m.header("To"));
    assert_eq!(m.header("Auto-Submitted"), "auto-generated");
    assert!(m.header("Reply-To").contains("service@bank.example"));
    assert_eq!(m.meta["parsed"]["content_type"], "multipart/alternative");
    let text = m.part("text/plain");
    let html = m.part("text/html");
    assert!(text.contains("张伟"), "Chinese intact in text: {text}");
    assert!(text.contains("WM-STABLE-12M") && text.contains(&id), "{text}");
    assert!(html.contains("<html lang=\"zh-CN\">") && html.contains("张伟"), "{html}");
    for p in m.meta["parsed"]["parts"].as_array().unwrap() {
        assert_eq!(p["charset"], "utf-8", "{p}");
    }

    // The Message-ID is the effect's, and the audit records the SMTP answer.
    let order = app.order(&id).await;
    let events = order["events"].as_array().unwrap();
    let sent = events
        .iter()
        .find(|e| e["event"]["type"] == "effect_succeeded" && e["event"]["effect"] == "mail.order_received")
        .unwrap_or_else(|| panic!("mail recorded in the audit: {order}"));
    let effect_id = sent["event"]["effect_id"].as_str().unwrap();
    assert_eq!(m.header("Message-ID"), format!("<{effect_id}@bank.example>"));
    assert!(sent["event"]["receipt"].as_str().unwrap().starts_with("SMTP 250"), "{sent}");
    app.stop().await;
}

#[tokio::test]
async fn smtp_down_then_up_every_mail_arrives_exactly_once() {
    let port = SmtpServer::free_port();
    let erp = Receiver::start().await;
    let app = TestApp::builder().erp(erp).mail_port(port).files(customer_only).start().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(post(&app, &deal(&format!("D-DOWN-{i}"), 1, "1250000.00")).await);
    }
    // Nobody listens: every mail fails and stays in the outbox with the reason.
    wait_until("mail attempts fail while SMTP is down", || async {
        let (_, v) = app.api("/outbox").await;
        let effects = v["effects"].as_array().cloned().unwrap_or_default();
        effects.len() == 3 && effects.iter().all(|e| e["attempts"].as_u64() >= Some(1))
    })
    .await;
    let (_, v) = app.api("/outbox").await;
    assert!(v["effects"][0]["last_error"].as_str().unwrap().contains("temporary failure"), "{v}");
    assert!(dead_letters(&app).await.is_empty());

    let maildir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start_on(port, maildir.path(), &[]);
    smtp.wait_for(3).await;
    app.drain_outbox().await;
    let mails = smtp.messages();
    assert_eq!(mails.len(), 3, "each mail exactly once");
    let mut message_ids: Vec<&str> = mails.iter().map(|m| m.header("Message-ID")).collect();
    message_ids.sort();
    message_ids.dedup();
    assert_eq!(message_ids.len(), 3);
    app.stop().await;
}

#[tokio::test]
async fn temporary_smtp_errors_are_retried_and_a_lost_reply_resends_the_same_message() {
    // 451 on the first two DATA commands; then the server stores a message but drops
    // the connection before its 250 (as if it crashed): we send again, and the copy
    // carries the same Message-ID, so it is recognisably the same mail.
    let maildir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start_on(0, maildir.path(), &["--fail-data", "2", "--drop-after-data", "1"]);
    let erp = Receiver::start().await;
    let app = TestApp::builder().erp(erp).mail(&smtp).files(customer_only).start().await;
    let id = post(&app, &deal("D-451", 1, "1250000.00")).await;
    smtp.wait_for(2).await;
    app.drain_outbox().await;
    let mails = smtp.messages();
    assert_eq!(mails.len(), 2, "stored once before the dropped reply, once after");
    assert_eq!(mails[0].header("Message-ID"), mails[1].header("Message-ID"));
    assert_eq!(mails[0].part("text/plain"), mails[1].part("text/plain"), "a retry sends the same text");
    let order = app.order(&id).await;
    let sent: Vec<&Value> =
        order["events"].as_array().unwrap().iter().filter(|e| e["event"]["type"] == "effect_succeeded").collect();
    assert_eq!(sent.len(), 1, "one success recorded: {order}");
    assert_eq!(sent[0]["event"]["attempts"], 4, "451, 451, dropped, accepted");
    app.stop().await;
}

#[tokio::test]
async fn a_rejected_address_goes_to_dead_letters_with_the_servers_reply() {
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().clock(orderbridge::clock::Clock::system()).mail(&smtp).start().await;
    let id =
        post(&app, &sample_with("D-550", |v| v["deal"]["customer"]["email"] = "reject-me@example.com".into())).await;
    wait_until("the mail is dead-lettered", || async { !dead_letters(&app).await.is_empty() }).await;
    let dead = dead_letters(&app).await;
    assert_eq!(dead.len(), 1);
    let err = dead[0]["last_error"].as_str().unwrap();
    assert!(err.contains("550") && err.contains("user unknown"), "the server's reply is kept: {err}");
    assert_eq!(dead[0]["attempts"], 1, "a permanent rejection is not retried");
    app.drain_outbox().await;
    assert!(to(&smtp.messages(), "reject-me@example.com").is_empty());
    let order = app.order(&id).await;
    assert!(
        order["events"].as_array().unwrap().iter().any(|e| e["event"]["type"] == "effect_dead_lettered"),
        "{order}"
    );
    app.stop().await;
}

/// Moves an order from awaiting approval to closed the way it really goes: two
/// approvals, its tasks reported done, delivery, acceptance, the invoice the finance
/// system issues, and the payment that settles it.
pub(crate) async fn close_order(app: &TestApp, id: &str) {
    let oid = id.parse().unwrap();
    let rules = &app.state.rules;
    let approve = OrderEvent::Approved { level: 0, role: String::new(), comment: "同意".into(), on_behalf_of: None };
    for who in ["wang.fang", "zhou.min"] {
        app.state
            .orders
            .apply(oid, Actor::Person(who.into()), approve.clone(), rules, app.state.clock.now())
            .await
            .unwrap();
    }
    let ops = Actor::Person("operator:ops".into());
    let order = app.order(id).await;
    assert_eq!(order["state"], "executing");
    for task in order["fulfilment"]["tasks"].as_array().unwrap() {
        if task["required"] == true {
            let ev = OrderEvent::TaskCompleted { task: task["id"].as_str().unwrap().into(), note: String::new() };
            app.state.orders.apply(oid, ops.clone(), ev, rules, app.state.clock.now()).await.unwrap();
        }
    }
    for ev in [
        OrderEvent::DeliveryRecorded { note: "done".into() },
        OrderEvent::AcceptanceConfirmed { note: "accepted".into() },
    ] {
        app.state.orders.apply(oid, ops.clone(), ev, rules, app.state.clock.now()).await.unwrap();
    }
    app.state.wake_dispatcher();
    wait_until("the finance system invoices it", || async { app.order(id).await["state"] == "invoiced" }).await;
    let invoice = app.order(id).await["fulfilment"]["invoice"].clone();
    let payment = orderbridge::engine::payments::PaymentReport {
        source: "bank".into(),
        payment_id: format!("PAY-{id}"),
        amount: serde_json::from_value(invoice["total"].clone()).unwrap(),
        invoice_number: invoice["number"].as_str().map(str::to_owned),
        order_id: None,
        reference: String::new(),
    };
    let outcome = app.state.orders.record_payment(&payment, rules, app.state.clock.now()).await.unwrap();
    assert!(outcome.matched && outcome.settled, "{outcome:?}");
    app.state.wake_dispatcher();
}

/// The survey link of the `nth` survey mail (0-based), once it arrived.
async fn survey_link(smtp: &SmtpServer, nth: usize) -> String {
    let is_survey = |m: &Mail| m.part("text/plain").contains("/pages/survey/");
    let dir = smtp.maildir.clone();
    wait_until("the survey mail arrives", || {
        let dir = dir.clone();
        async move { messages_in(&dir).iter().filter(|m| is_survey(m)).count() > nth }
    })
    .await;
    let mails = smtp.messages();
    let survey = mails.iter().filter(|m| is_survey(m)).nth(nth).unwrap();
    assert_eq!(survey.rcpt(), vec!["zhang.wei@example.com".to_owned()]);
    survey.page_link()
}

#[tokio::test]
async fn a_low_survey_score_opens_a_ticket_once_and_tells_after_sales() {
    let clock = ManualClock::new(Utc::now());
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().clock(clock.clock()).mail(&smtp).start().await;
    let id = post(&app, &deal("D-SURVEY", 1, "1250000.00")).await;
    smtp.wait_for(1).await;
    close_order(&app, &id).await;
    let link = survey_link(&smtp, 0).await;
    let http = client();

    // The page shows the order and a form.
    let page = http.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(html.contains("满意度调查") && html.contains("张伟") && html.contains("¥1,250,000.00"), "{html}");

    // Out of range and missing scores are refused and change nothing.
    for form in [vec![("score", "9")], vec![("score", "0")], vec![("comment", "no score")], vec![("score", "abc")]] {
        let r = http.post(&link).form(&form).send().await.unwrap();
        assert_eq!(r.status(), 422, "{form:?}");
        assert!(r.text().await.unwrap().contains("1 到 5"));
    }
    let order = app.order(&id).await;
    assert!(!order["events"].as_array().unwrap().iter().any(|e| e["event"]["type"] == "survey_answered"));

    // A tampered link is refused.
    let mut b = link.as_bytes().to_vec();
    let i = b.len() - 10;
    b[i] = if b[i] == b'x' { b'y' } else { b'x' };
    let tampered = String::from_utf8(b).unwrap();
    assert_eq!(http.get(&tampered).send().await.unwrap().status(), 403);
    assert_eq!(http.post(&tampered).form(&[("score", "1")]).send().await.unwrap().status(), 403);

    let r = http
        .post(&link)
        .form(&[("score", "1"), ("comment", "办理太慢，<b>很不满意</b>"), ("complaint", "yes")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("感谢您的反馈"));

    // Once only: the same link again, by GET or POST.
    let again = http.post(&link).form(&[("score", "5")]).send().await.unwrap();
    assert_eq!(again.status(), 409);
    assert!(again.text().await.unwrap().contains("只能提交一次"));
    assert_eq!(http.get(&link).send().await.unwrap().status(), 409);

    // The ticket is pushed once to the service desk, with the customer's words.
    wait_until("the ticket reaches the desk", || async { app.erp.deliveries().iter().any(|d| d.path == "/tickets") })
        .await;
    app.drain_outbox().await;
    let tickets: Vec<Delivery> = app.erp.deliveries().into_iter().filter(|d| d.path == "/tickets").collect();
    assert_eq!(tickets.len(), 1);
    assert!(tickets[0].key.starts_with("orderbridge:"));
    assert_eq!(tickets[0].authorization.as_deref(), Some(format!("Bearer {DESK_TOKEN}").as_str()));
    assert_eq!(tickets[0].body["event"]["type"], "after_sales_ticket_requested");
    assert_eq!(tickets[0].body["event"]["score"], 1);
    assert_eq!(tickets[0].body["event"]["comment"], "办理太慢，<b>很不满意</b>");

    // The desk's ticket id is stored on the order; the audit has the answer and why.
    let order = app.order(&id).await;
    assert_eq!(order["references"]["service-desk.create_ticket"], "SD-1000", "{order}");
    let events = order["events"].as_array().unwrap();
    let answered = events.iter().find(|e| e["event"]["type"] == "survey_answered").unwrap();
    assert_eq!(answered["event"]["score"], 1);
    assert_eq!(answered["event"]["complaint"], true);
    assert_eq!(answered["actor"]["id"], "zhang.wei@example.com");
    let requested = events.iter().find(|e| e["event"]["type"] == "after_sales_ticket_requested").unwrap();
    assert!(requested["event"]["reason"].as_str().unwrap().contains("complaint"));

    // After-sales hears about it (and so does the sales owner), in Chinese.
    let dir = smtp.maildir.clone();
    wait_until("after-sales is told", || {
        let dir = dir.clone();
        async move { !to(&messages_in(&dir), "after-sales@bank.example").is_empty() }
    })
    .await;
    let mails = smtp.messages();
    let after_sales = to(&mails, "after-sales@bank.example");
    assert_eq!(after_sales.len(), 1, "{:?}", mails.iter().map(Mail::rcpt).collect::<Vec<_>>());
    let text = after_sales[0].part("text/plain");
    assert!(text.contains("办理太慢") && text.contains("张伟"), "{text}");
    assert!(after_sales[0].part("text/html").contains("&lt;b&gt;很不满意"), "escaped in HTML");
    let owner: Vec<Mail> =
        to(&mails, "li.na@bank.example").into_iter().filter(|m| m.part("text/plain").contains("办理太慢")).collect();
    assert_eq!(owner.len(), 1, "the sales owner hears of the complaint too");

    // A link past its lifetime is refused as expired.
    let id2 = post(&app, &deal("D-SURVEY-2", 1, "1250000.00")).await;
    close_order(&app, &id2).await;
    let link2 = survey_link(&smtp, 1).await;
    clock.advance(chrono::Duration::days(31));
    let r = http.post(&link2).form(&[("score", "1")]).send().await.unwrap();
    assert_eq!(r.status(), 410);
    assert!(r.text().await.unwrap().contains("过期"));
    app.stop().await;
}

#[tokio::test]
async fn a_good_score_opens_no_ticket() {
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().clock(orderbridge::clock::Clock::system()).mail(&smtp).start().await;
    let id = post(&app, &deal("D-HAPPY", 1, "1250000.00")).await;
    smtp.wait_for(1).await;
    close_order(&app, &id).await;
    let link = survey_link(&smtp, 0).await;
    let r = client().post(&link).form(&[("score", "5"), ("comment", "很好")]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    app.drain_outbox().await;
    let order = app.order(&id).await;
    let events = order["events"].as_array().unwrap();
    assert!(events.iter().any(|e| e["event"]["type"] == "survey_answered"));
    assert!(!events.iter().any(|e| e["event"]["type"] == "after_sales_ticket_requested"), "{order}");
    assert!(app.erp.deliveries().iter().all(|d| d.path != "/tickets"));
    app.stop().await;
}

#[tokio::test]
async fn a_person_with_a_digest_gets_one_summary_instead_of_a_flood() {
    // chen.jing (risk officer, digest every 4h) and james.wong (risk officer, no
    // digest) both hear about flagged orders; li.na owns the deals.
    let clock = ManualClock::new(Utc::now());
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().clock(clock.clock()).mail(&smtp).start().await;
    let customers = ["王小明", "上海某某科技有限公司", "Jane Doe"];
    for (i, name) in customers.iter().enumerate() {
        post(
            &app,
            &sample_with(&format!("D-FLAG-{i}"), |v| {
                v["deal"]["customer"]["kyc_verified"] = false.into();
                v["deal"]["customer"]["name"] = (*name).into();
                v["deal"]["customer"]["id"] = format!("C-{i}").into();
            }),
        )
        .await;
    }
    // Immediate mail: 3 customer confirmations, 3 to james.wong, 3 to li.na.
    let mails = smtp.wait_for(9).await;
    app.drain_outbox().await;
    assert_eq!(to(&mails, "james.wong@bank.example").len(), 3);
    assert_eq!(to(&mails, "li.na@bank.example").len(), 3);
    assert!(to(&mails, "chen.jing@bank.example").is_empty(), "held for the digest");

    // The digest survives a restart: it is stored, not held in memory.
    let erp = app.erp.clone();
    let dir = app.stop().await;
    let app = restart_with(dir, erp, clock.clock()).await;
    clock.advance(chrono::Duration::hours(4) + chrono::Duration::minutes(1));
    let mails = smtp.wait_for(10).await;
    app.drain_outbox().await;
    let digest = to(&mails, "chen.jing@bank.example");
    assert_eq!(digest.len(), 1, "one summary");
    let text = digest[0].part("text/plain");
    for name in customers {
        assert!(text.contains(name), "{name} in the digest: {text}");
    }
    assert!(digest[0].header("Message-ID").starts_with("<ord_00000000000000000000000000000000."));

    // Nothing more once it was sent, however long we wait.
    clock.advance(chrono::Duration::hours(9));
    assert_eq!(app.state.orders.run_digests(clock.now()).await.unwrap(), 0);
    app.drain_outbox().await;
    assert_eq!(smtp.messages().len(), 10);
    app.stop().await;
}

/// A private CA and a server certificate for 127.0.0.1 signed by it (openssl CLI).
fn private_ca(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-days", "2", "-subj", "/CN=Orderbridge Test CA", "-keyout", "ca.key", "-out", "ca.pem"],
    ]
    .concat());
    run(&[&["req"][..], &ec, &["-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr"]].concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        "server.pem",
        "-extfile",
        "ext.cnf",
    ]);
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}

#[tokio::test]
async fn starttls_and_implicit_tls_with_a_private_ca_and_authentication() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(certs.path());
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    for (mode, args) in
        [("starttls", vec!["--starttls", cert, key, "--require-starttls"]), ("tls", vec!["--implicit-tls", cert, key])]
    {
        let maildir = tempfile::tempdir().unwrap();
        let mut server_args = args.clone();
        server_args.extend(["--auth", "orderbridge:s3cret-pässword"]);
        let smtp = SmtpServer::start_on(0, maildir.path(), &server_args);
        let erp = Receiver::start().await;
        let tls = if mode == "starttls" { SmtpTls::StartTls } else { SmtpTls::Implicit };
        let ca_pem = std::fs::read(&ca).unwrap();
        let app = TestApp::builder()
            .erp(erp)
            .mail(&smtp)
            .settings(move |s| {
                let smtp = s.smtp.as_mut().unwrap();
                smtp.tls = tls;
                smtp.credentials = Some(("orderbridge".into(), "s3cret-pässword".into()));
                smtp.ca_pem = Some(ca_pem.clone());
            })
            .start()
            .await;
        post(&app, &deal(&format!("D-TLS-{mode}"), 1, "1250000.00")).await;
        let mails = smtp.wait_for(1).await;
        assert_eq!(mails[0].meta["tls"], true, "{mode}: encrypted");
        assert_eq!(mails[0].meta["auth_user"], "orderbridge", "{mode}: authenticated");
        assert!(mails[0].part("text/plain").contains("张伟"));
        app.drain_outbox().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn a_wrong_smtp_password_is_reported_without_revealing_it() {
    let maildir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start_on(0, maildir.path(), &["--auth", "orderbridge:right-password"]);
    let erp = Receiver::start().await;
    let app = TestApp::builder()
        .erp(erp)
        .mail(&smtp)
        .settings(|s| s.smtp.as_mut().unwrap().credentials = Some(("orderbridge".into(), "wrong-password-x7".into())))
        .start()
        .await;
    post(&app, &deal("D-AUTH", 1, "1250000.00")).await;
    // Refused twice in a row: the mail connector is paused; mail waits, nothing is lost.
    wait_until("the mail connector is paused", || async {
        let (_, v) = app.api("/connectors").await;
        v["connectors"].as_array().unwrap().iter().any(|c| c["id"] == "mail" && c["paused"] == true)
    })
    .await;
    let (_, v) = app.api("/connectors").await;
    let mail = v["connectors"].as_array().unwrap().iter().find(|c| c["id"] == "mail").unwrap().clone();
    let why = mail["paused_because"].as_str().unwrap();
    assert!(why.contains("535"), "{why}");
    assert!(!why.contains("wrong-password-x7"));
    let (_, outbox) = app.api("/outbox").await;
    let waiting = outbox["effects"].as_array().unwrap();
    assert!(!waiting.is_empty() && waiting.iter().all(|e| e["connector"] == "mail"));
    let errors: String = waiting.iter().map(|e| e["last_error"].to_string()).collect();
    assert!(!errors.contains("wrong-password-x7"), "{errors}");
    assert!(dead_letters(&app).await.is_empty(), "mail is not given up while paused");
    assert!(smtp.messages().is_empty());
    app.stop().await;
}
