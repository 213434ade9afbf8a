//! The staff console over TCP with real SMTP: a sign-in link mailed to the person's
//! directory address signs them in (HttpOnly, SameSite session cookie); "my approvals"
//! shows what waits for them with approve/reject forms carrying a CSRF token; a
//! decision there goes through the policy table and the approval checks and is
//! audited with channel `console`; sign-out and an idle session lead back to sign-in.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

/// A browser without JavaScript: follows nothing by itself, keeps the cookies it is given.
pub(crate) struct Browser {
    http: reqwest::Client,
    base: String,
    pub(crate) cookies: Vec<(String, String)>,
}

pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) location: String,
    set_cookies: Vec<String>,
    pub(crate) body: String,
}

impl Browser {
    pub(crate) fn new(app: &TestApp) -> Browser {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Browser { http, base: format!("http://{}", app.addr), cookies: Vec::new() }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Answer {
        let cookie = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let resp = req.header("cookie", cookie).send().await.unwrap();
        let status = resp.status().as_u16();
        let location = resp.headers().get("location").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let set_cookies: Vec<String> =
            resp.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        for c in &set_cookies {
            let (k, v) = c.split(';').next().unwrap().split_once('=').unwrap();
            self.cookies.retain(|(name, _)| name != k);
            if !v.is_empty() {
                self.cookies.push((k.to_owned(), v.to_owned()));
            }
        }
        Answer { status, location, set_cookies, body: resp.text().await.unwrap() }
    }

    pub(crate) async fn get(&mut self, path: &str) -> Answer {
        let url = if path.starts_with("http") { path.to_owned() } else { format!("{}{path}", self.base) };
        self.send(self.http.get(url)).await
    }

    pub(crate) async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let url = if path.starts_with("http") { path.to_owned() } else { format!("{}{path}", self.base) };
        self.send(self.http.post(url).form(form)).await
    }
}

/// The value of the first hidden `csrf` field of a page.
pub(crate) fn csrf(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").unwrap_or_else(|| panic!("no CSRF field in: {page}")) + 19;
    page[at..].split('"').next().unwrap().to_owned()
}

/// Signs `email` in through a mailed link; answers the browser, signed in.
pub(crate) async fn sign_in(app: &TestApp, smtp: &SmtpServer, email: &str) -> Browser {
    let mut b = Browser::new(app);
    let form = b.get("/signin").await;
    assert_eq!(form.status, 200, "{}", form.body);
    let is_link = |m: &Mail, to: &str| m.rcpt() == [to] && m.part("text/plain").contains("/signin/");
    let before = smtp.messages().iter().filter(|m| is_link(m, email)).count();
    let sent = b.post("/signin", &[("email", email), ("csrf", &csrf(&form.body))]).await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    let dir = smtp.maildir.clone();
    wait_until(&format!("a sign-in link to {email}"), || {
        let dir = dir.clone();
        async move { messages_in(&dir).iter().filter(|m| is_link(m, email)).count() > before }
    })
    .await;
    let mail = smtp.messages().into_iter().filter(|m| is_link(m, email)).nth(before).unwrap();
    let text = mail.part("text/plain");
    let start = text.find("http://").unwrap_or_else(|| panic!("no link in {text}"));
    let link: String = text[start..].chars().take_while(|c| c.is_ascii_graphic()).collect();
    let confirm = b.get(&link).await;
    assert_eq!(confirm.status, 200, "opening the link only asks: {}", confirm.body);
    let signed = b.post(&link, &[]).await;
    assert_eq!((signed.status, signed.location.as_str()), (303, "/console"), "{}", signed.body);
    let session = signed.set_cookies.iter().find(|c| c.starts_with("ob_session=")).unwrap();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax") && !session.contains("Secure"),
        "{session}"
    );
    // Used once: a second use signs nobody in.
    let mut other = Browser::new(app);
    let again = other.post(&link, &[]).await;
    assert_eq!((again.status, again.location.as_str()), (303, "/signin"));
    assert!(other.cookies.iter().all(|(k, _)| k != "ob_session"));
    b
}

#[tokio::test]
async fn approvers_sign_in_by_mail_and_decide_from_the_console_inbox() {
    let smtp = SmtpServer::start(&[]);
    let clock = ManualClock::new(chrono::Utc::now());
    let app = TestApp::builder().clock(clock.clock()).mail(&smtp).start().await;
    // 1,250,000 CNY: line_supervisor, then branch_manager.
    let (s, b) = app.post_webhook(&deal("D-CONSOLE", 1, "1250000.00")).await;
    assert_eq!((s, b["state"].as_str()), (202, Some("awaiting_approval")), "{b}");
    let id = b["order_id"].as_str().unwrap().to_owned();

    // Not signed in: the console sends to sign-in. The sign-in form without its CSRF
    // token is refused, and an unknown address gets the same answer as a known one.
    let mut anon = Browser::new(&app);
    let r = anon.get("/console").await;
    assert_eq!((r.status, r.location.as_str()), (303, "/signin"));
    let form = anon.get("/signin").await;
    let r = anon.post("/signin", &[("email", "wang.fang@bank.example")]).await;
    assert_eq!(r.status, 403);
    let unknown = anon.post("/signin", &[("email", "nobody@bank.example"), ("csrf", &csrf(&form.body))]).await;
    let known_form = anon.get("/signin").await;
    let known = anon.post("/signin", &[("email", "Zhou.Min@bank.example"), ("csrf", &csrf(&known_form.body))]).await;
    assert_eq!((unknown.status, unknown.body.clone()), (known.status, known.body), "no account enumeration");

    // wang.fang signs in (zh-CN): her inbox has the order with its buttons.
    let mut wang = sign_in(&app, &smtp, "wang.fang@bank.example").await;
    let inbox = wang.get("/console").await;
    assert_eq!(inbox.status, 200);
    assert!(
        inbox.body.contains("我的审批") && inbox.body.contains(&id) && inbox.body.contains("value=\"approve\""),
        "{}",
        inbox.body
    );
    let token = csrf(&inbox.body);
    // A form posted without its CSRF token (or with another) is refused; nothing recorded.
    let action = format!("/console/orders/{id}/approval");
    let r = wang.post(&action, &[("decision", "approve")]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = wang.post(&action, &[("decision", "approve"), ("csrf", "forged")]).await;
    assert_eq!(r.status, 403);
    assert_eq!(app.order(&id).await["state_detail"]["level"], 1);
    let r = wang.post(&action, &[("decision", "approve"), ("csrf", &token), ("comment", "同意")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let order = app.order(&id).await;
    assert_eq!(order["state_detail"]["level"], 2, "{order}");
    let given = order["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"]["type"] == "approval_given" || e["event"]["type"] == "approved")
        .unwrap()
        .clone();
    assert_eq!(
        (given["actor"]["id"].as_str(), given["channel"].as_str()),
        (Some("wang.fang"), Some("console")),
        "{given}"
    );
    // Level 2 is not hers: her inbox is empty now.
    assert!(!wang.get("/console").await.body.contains(&id));

    // sun.li (operations) has no approval role: no button, and a post is refused.
    let mut sun = sign_in(&app, &smtp, "operations@bank.example").await;
    let page = sun.get("/console").await;
    assert!(!page.body.contains("value=\"approve\"") && !page.body.contains(&id), "{}", page.body);
    let r = sun.post(&action, &[("decision", "approve"), ("csrf", &csrf(&page.body))]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("sun.li may not decide_approval"), "{}", r.body);

    // James Wong reads the console in English; nothing waits for him here.
    let mut james = sign_in(&app, &smtp, "james.wong@bank.example").await;
    let page = james.get("/console").await;
    assert!(page.body.contains("<html lang=\"en\"") && page.body.contains("My approvals"), "{}", page.body);
    assert!(page.body.contains("Nothing is waiting for your decision."), "{}", page.body);

    // zhou.min (branch manager) completes level 2 from her console.
    let mut zhou = sign_in(&app, &smtp, "zhou.min@bank.example").await;
    let page = zhou.get("/console").await;
    assert!(page.body.contains(&id), "{}", page.body);
    let r = zhou.post(&action, &[("decision", "approve"), ("csrf", &csrf(&page.body))]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let order = app.order(&id).await;
    assert_ne!(order["state"], "awaiting_approval", "{order}");
    let approved: Vec<&Value> =
        order["events"].as_array().unwrap().iter().filter(|e| e["event"]["type"] == "approved").collect();
    let last = approved.last().unwrap();
    assert_eq!((last["actor"]["id"].as_str(), last["channel"].as_str()), (Some("zhou.min"), Some("console")), "{last}");
    let (_, verify) = app.api("/audit/verify").await;
    assert_eq!(verify["intact"], true);

    // Sign-out: the session is gone.
    let page = zhou.get("/console").await;
    let r = zhou.post("/signout", &[("csrf", &csrf(&page.body))]).await;
    assert_eq!((r.status, r.location.as_str()), (303, "/signin"));
    let r = zhou.get("/console").await;
    assert_eq!((r.status, r.location.as_str()), (303, "/signin"));

    // An idle session (the manual clock past session_idle_minutes) leads back to sign-in.
    assert_eq!(wang.get("/console").await.status, 200);
    clock.advance(chrono::Duration::minutes(31));
    let r = wang.get("/console").await;
    assert_eq!((r.status, r.location.as_str()), (303, "/signin"));
    let _ = Duration::ZERO;
    app.stop().await;
}
