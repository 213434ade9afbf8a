//! Mail and pages as a person sees them: every mail (HTML part) and every page, in
//! zh-CN and en, opened in headless Chromium at a phone's 420 px and a desktop's
//! 1200 px, screenshots saved under `target/screens/`. Checked: no sideways scrolling
//! (`scrollWidth <= innerWidth`), every summary value visible in full, no English
//! engine text on a Chinese page, and no personal data in a base64-decoded link token.
//!
//! Chromium is driven through chromedriver's WebDriver HTTP interface with the test
//! HTTP client (no browser crate); scripts/test.sh installs Debian's `chromium` and
//! `chromium-driver` when they are missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use orderbridge::mail::templates::{LOCALES, TEMPLATE_NAMES, Templates, sample_context};
use serde_json::{Value, json};

use crate::cash::{deliver, system_event};
use crate::helpers::*;

pub(crate) const WIDTHS: [u32; 2] = [420, 1200];

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|d| names.iter().map(move |n| d.join(n))).find(|p| p.is_file())
}

pub(crate) fn screens_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("screens");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One headless Chromium behind chromedriver; killed on drop. Also drives the OIDC
/// sign-in (`oidc.rs`) and the console's pages (`console_screens.rs`).
pub(crate) struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

/// What a page looks like to the checks (see `CHECKS`).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Seen {
    #[serde(rename = "scrollWidth")]
    scroll_width: f64,
    #[serde(rename = "innerWidth")]
    inner_width: f64,
    height: f64,
    lang: String,
    values: Vec<String>,
    hidden: Vec<String>,
    engine: Vec<String>,
}

/// Runs in the page: widths, the summary values (and which are cut off or outside the
/// screen), and on a Chinese page every run of English words (three or more) in the text.
const CHECKS: &str = r#"
const out = { scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
  height: document.documentElement.scrollHeight, lang: document.documentElement.lang || '',
  values: [], hidden: [], engine: [] };
for (const el of document.querySelectorAll('table.facts td')) {
  const text = el.textContent.trim();
  out.values.push(text);
  const r = el.getBoundingClientRect();
  if (r.width <= 0 || r.height <= 0 || r.left < -0.5 || r.right > window.innerWidth + 0.5
      || el.scrollWidth > el.clientWidth + 1) out.hidden.push(text);
}
if (out.lang === 'zh-CN') {
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n; (n = walker.nextNode());) {
    for (const run of n.textContent.split(/[^\x00-\x7f]+/)) {
      const words = run.split(/\s+/).map(w => w.replace(/^[(\[:,;'"]+|[)\]:,;.'"]+$/g, ''))
        .filter(w => /^[A-Za-z]{2,}$/.test(w));
      if (words.length >= 3) out.engine.push(run.trim());
    }
  }
}
return out;
"#;

impl Browser {
    pub(crate) async fn start() -> Browser {
        let chromium = on_path(&["chromium", "chromium-browser", "google-chrome"])
            .expect("Chromium is required (scripts/test.sh installs it: apt-get install chromium chromium-driver)");
        let chromedriver =
            on_path(&["chromedriver"]).expect("chromedriver is required (Debian package chromium-driver)");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let http = client();
        let mut up = false;
        for _ in 0..100 {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && r.status().is_success()
            {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(up, "chromedriver did not start");
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-dev-shm-usage",
                     "--force-device-scale-factor=1", "--lang=zh-CN"],
        }}}});
        let r: Value = http.post(format!("{base}/session")).json(&caps).send().await.unwrap().json().await.unwrap();
        let session = r["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {r}")).to_owned();
        Browser { driver, base, session, http }
    }

    pub(crate) async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r: Value = req.send().await.unwrap().json().await.unwrap();
        assert!(r["value"].get("error").is_none(), "webdriver {path}: {r}");
        r["value"].clone()
    }

    pub(crate) async fn resize(&self, width: u32, height: u32) {
        self.call(reqwest::Method::POST, "/window/rect", Some(json!({"width": width, "height": height}))).await;
    }

    /// Opens `url` at `width`, checks it, and saves a full-page screenshot as `name`.
    pub(crate) async fn look(&self, url: &str, width: u32, name: &str) -> Seen {
        self.resize(width, 900).await;
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await;
        self.look_here(width, name).await
    }

    /// Opens the form at `url`, fills it in with `script` and sends it; returns once
    /// the page that answers is shown (`until` holds on it).
    async fn submit(&self, url: &str, script: &str, until: &str) {
        let until = format!("return document.readyState === 'complete' && ({until});");
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await;
        self.call(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": []}))).await;
        for _ in 0..100 {
            let done =
                self.call(reqwest::Method::POST, "/execute/sync", Some(json!({"script": until, "args": []}))).await;
            if done == json!(true) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the form at {url} was not answered");
    }

    /// Checks the page shown now at `width` and saves its screenshot as `name`.
    pub(crate) async fn look_here(&self, width: u32, name: &str) -> Seen {
        self.resize(width, 900).await;
        let seen: Seen = serde_json::from_value(
            self.call(reqwest::Method::POST, "/execute/sync", Some(json!({"script": CHECKS, "args": []}))).await,
        )
        .unwrap();
        // The whole page: the window grown to the page plus the browser's own frame
        // (twice: a taller window may lay the page out anew).
        for _ in 0..2 {
            let size = self
                .call(
                    reqwest::Method::POST,
                    "/execute/sync",
                    Some(json!({"script": "return [document.documentElement.scrollHeight, \
                        window.outerHeight - window.innerHeight];", "args": []})),
                )
                .await;
            let page = size[0].as_f64().unwrap_or(seen.height);
            let frame = size[1].as_f64().unwrap_or(0.0).max(0.0);
            self.resize(width, ((page + frame) as u32).clamp(400, 8000)).await;
        }
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        std::fs::write(screens_dir().join(format!("{name}-{width}.png")), png).unwrap();
        seen
    }

    pub(crate) async fn quit(mut self) {
        let _ = self.http.delete(format!("{}/session/{}", self.base, self.session)).send().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

/// The findings for one page at one width; empty when it reads well.
pub(crate) fn problems(name: &str, width: u32, seen: &Seen, expect_lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    let at = format!("{name} at {width} px");
    if seen.inner_width != f64::from(width) {
        out.push(format!("{at}: the window is {} px wide", seen.inner_width));
    }
    if seen.scroll_width > seen.inner_width {
        out.push(format!("{at}: scrolls sideways ({} > {})", seen.scroll_width, seen.inner_width));
    }
    if !seen.hidden.is_empty() {
        out.push(format!("{at}: summary values cut off or off-screen: {:?}", seen.hidden));
    }
    if seen.lang != expect_lang {
        out.push(format!("{at}: lang is `{}`, not {expect_lang}", seen.lang));
    }
    if !seen.engine.is_empty() {
        out.push(format!("{at}: English text on a Chinese page: {:?}", seen.engine));
    }
    out
}

#[tokio::test]
async fn every_mail_reads_well_on_a_phone_and_a_desktop() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let templates = Templates::load(repo, orderbridge::locale::Presentation::default()).unwrap();
    let browser = Browser::start().await;
    let dir = screens_dir();
    let mut found = Vec::new();
    for loc in LOCALES {
        for name in TEMPLATE_NAMES {
            let mut ctx = sample_context(loc);
            // The link each mail carries in the example notifications.toml (one per
            // mail, or none), as the mailer gives it; digest items only in the digest.
            let link = match *name {
                "order_received" => Some("status"),
                "survey" => Some("survey"),
                "approval_request" | "approval_reminder" | "approval_escalation" => Some("approval"),
                "delivery_acceptance" => Some("acceptance"),
                _ => None,
            };
            ctx["links"] = match link {
                Some(purpose) => json!({ purpose: format!("https://orders.bank.example/pages/{purpose}/v2.TOKEN") }),
                None => json!({}),
            };
            // Every mail ends with its feedback link (src/mail/feedback.rs adds it).
            ctx["links"]["feedback"] = json!("https://orders.bank.example/pages/feedback/v2.TOKEN");
            if *name != "digest" {
                ctx.as_object_mut().unwrap().remove("items");
            }
            if *name == "exception_opened" {
                // As the acceptance page records a refusal (http::fulfilment).
                ctx["event"]["reason"] = json!("acceptance refused by the customer: 合同金额与约定不符");
            }
            let r = templates.render(name, loc, ctx).unwrap();
            let file = dir.join(format!("mail-{}-{name}.html", loc.as_str()));
            std::fs::write(&file, &r.html).unwrap();
            for width in WIDTHS {
                let label = format!("mail-{}-{name}", loc.as_str());
                let seen = browser.look(&format!("file://{}", file.display()), width, &label).await;
                found.extend(problems(&label, width, &seen, loc.as_str()));
                if name != &"digest" && seen.values.is_empty() {
                    found.push(format!("{label}: no order summary"));
                }
            }
            // One summary: no value of it is repeated as a text line.
            assert!(!r.html.contains("<br>金额：") && !r.html.contains("<br>Amount:"), "{name} {loc}: facts twice");
            // The link is a button with a short fallback, never the bare token as text.
            if let Some(url) = r.text.lines().find(|l| l.trim_start().starts_with("https://")) {
                let token = url.trim().rsplit('/').next().unwrap();
                assert!(r.html.contains(&format!("href=\"{}\"", url.trim())), "{name} {loc}: no button");
                assert!(!r.html.contains(&format!(">{}<", url.trim())), "{name} {loc}: the bare URL is shown");
                assert!(!token.is_empty());
            }
            // The footer's feedback link, as every mail carries it.
            assert!(r.html.contains("href=\"https://orders.bank.example/pages/feedback/v2.TOKEN\""), "{name} {loc}");
            // CSS is inlined: the layout's classes carry their styles.
            assert!(r.html.contains("style=\"") && r.html.contains("prefers-color-scheme"), "{name} {loc}");
        }
    }
    browser.quit().await;
    assert!(found.is_empty(), "{found:#?}\n(screenshots in {})", dir.display());
}

/// Everything base64 can be made to show of a token.
fn decoded(token: &str) -> String {
    let mut out = String::new();
    for part in token.split('.') {
        if let Ok(b) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part) {
            out.push_str(&String::from_utf8_lossy(&b));
        }
    }
    out
}

fn assert_opaque(link: &str, id: &str) {
    let token = link.rsplit('/').next().unwrap();
    assert!(token.starts_with("v2."), "{link}");
    let shown = decoded(token);
    let bare = id.trim_start_matches("ord_");
    for secret in ["zhang.wei", "example.com", "wang.fang", "\"exp\"", bare] {
        assert!(!shown.contains(secret) && !token.contains(secret), "`{secret}` readable in the token of {link}");
    }
}

/// The link in the newest mail to `to` about order `id` that carries `/pages/<purpose>/`.
fn link_to(smtp: &SmtpServer, to: &str, purpose: &str, id: &str) -> Option<String> {
    let needle = format!("/pages/{purpose}/");
    smtp.messages().into_iter().rev().filter(|m| m.rcpt().iter().any(|r| r == to)).find_map(|m| {
        let text = m.part("text/plain");
        let start = text.find(&needle).filter(|_| text.contains(id))?;
        let from = text[..start].rfind("http")?;
        Some(text[from..].split_whitespace().next()?.to_owned())
    })
}

pub(crate) async fn wait_link(smtp: &SmtpServer, to: &str, purpose: &str, id: &str) -> String {
    wait_until(&format!("a {purpose} link to {to}"), || async { link_to(smtp, to, purpose, id).is_some() }).await;
    link_to(smtp, to, purpose, id).unwrap()
}

/// Runs a large order to its approval page and a smaller one through delivery,
/// acceptance, payment and the survey, looking at every page on the way.
/// The page after a form was sent and taken: no form on it.
const DONE: &str = "!document.querySelector('form')";
/// Scripts that fill in and send a page's form.
const APPROVE: &str =
    "document.querySelector('input[value=approve]').checked = true; document.querySelector('form').submit();";
const ACCEPT: &str =
    "document.querySelector('input[value=accept]').checked = true; document.querySelector('form').submit();";
const SURVEY: &str =
    "document.querySelector('input[name=score][value=\"5\"]').checked = true; document.querySelector('form').submit();";

const FEEDBACK: &str = "document.querySelector('input[value=suggestion]').checked = true; \
     document.querySelector('textarea[name=text]').value = '审批邮件里请写明截止时间'; \
     document.querySelector('form').submit();";

/// The Chinese run's logo (`site.logo`).
const LOGO: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"64\" height=\"64\" viewBox=\"0 0 64 64\">\
     <circle cx=\"32\" cy=\"32\" r=\"30\" fill=\"#ffffff\"/><text x=\"32\" y=\"42\" font-size=\"28\" \
     text-anchor=\"middle\" fill=\"#8a1c2b\">银</text></svg>";

async fn pages_in(lang: &str) -> Vec<String> {
    let smtp = SmtpServer::start(&[]);
    let erp = Receiver::start().await;
    let mut app = TestApp::builder().erp(erp).mail(&smtp);
    // The Chinese run has a logo and a colour of its own (site.logo, site.color).
    let branded = lang == "zh-CN";
    if branded {
        app = app.settings(|s| {
            s.site_color = "#8a1c2b".into();
            s.site_logo = Some(Logo { content_type: "image/svg+xml", bytes: LOGO.as_bytes().into() });
        });
    }
    if lang == "en" {
        // The people in the directory read English; links that cannot be read (no
        // order, no person) are refused in the site's language.
        app = app
            .files(|d| replace_in_file(d, "config/directory.toml", &[("locale = \"zh-CN\"", "locale = \"en\"")]))
            .settings(|s| s.presentation.default_locale = orderbridge::locale::Locale::En);
    }
    let app = app.start().await;
    // One stylesheet and the logo, served by the daemon itself.
    let css = app.client.get(app.url("/pages/assets/style.css")).send().await.unwrap();
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    let css = css.text().await.unwrap();
    assert!(css.contains(if branded { "--accent: #8a1c2b" } else { "--accent: #1f3a5f" }), "{css}");
    let logo = app.client.get(app.url("/pages/assets/logo")).send().await.unwrap();
    assert_eq!(logo.status(), if branded { 200 } else { 404 });
    let browser = Browser::start().await;
    let mut found = Vec::new();
    let mut look = async |url: Option<&str>, name: &str, page_lang: &str| {
        for width in WIDTHS {
            let label = format!("page-{lang}-{name}");
            let seen = match url {
                Some(url) => browser.look(url, width, &label).await,
                None => browser.look_here(width, &label).await,
            };
            found.extend(problems(&label, width, &seen, page_lang));
            // A form's or the status page's summary; a sentence page has none, nor has the
            // feedback form (it names the order only), but each says something.
            if url.is_some() && !name.starts_with("refused") && !name.starts_with("feedback") && seen.values.is_empty()
            {
                found.push(format!("{label}: no summary values"));
            }
            if seen.height < 100.0 {
                found.push(format!("{label}: an empty page"));
            }
        }
    };
    let with_locale = |mut d: Value| {
        d["deal"]["customer"]["locale"] = json!(lang);
        d
    };

    // A large order: two approval levels; the approval page and the first status page.
    let (s, b) = app.post_webhook(&with_locale(deal("D-SCR-1", 1, "1250000.00"))).await;
    assert_eq!((s, b["state"].as_str()), (202, Some("awaiting_approval")), "{b}");
    let large = b["order_id"].as_str().unwrap().to_owned();
    let approval = wait_link(&smtp, "wang.fang@bank.example", "approval", &large).await;
    assert_opaque(&approval, &large);
    let page = app.client.get(&approval).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("style-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("/pages/assets/style.css") && !html.contains("<style"), "{html}");
    assert_eq!(html.contains("<img src=\"/pages/assets/logo\""), branded, "{html}");
    look(Some(&approval), "approval", lang).await;
    let status = wait_link(&smtp, "zhang.wei@example.com", "status", &large).await;
    assert_opaque(&status, &large);
    look(Some(&status), "status-received", lang).await;
    // A link of the first format (readable, HMAC-signed) still opens its page until it expires.
    let signer = app.state.links.as_ref().unwrap();
    let token = status.rsplit('/').next().unwrap();
    let now = app.state.clock.now();
    let claims = signer.verify(token, orderbridge::links::LinkPurpose::Status, now).unwrap();
    let old = signer.legacy_token(&claims);
    assert!(decoded(&old).contains("zhang.wei@example.com"), "the first format shows the address");
    let r = app.client.get(app.url(&format!("/pages/status/{old}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut forged = old.into_bytes();
    let i = forged.len() - 10;
    forged[i] = if forged[i] == b'x' { b'y' } else { b'x' };
    let forged = String::from_utf8(forged).unwrap();
    let r = app.client.get(app.url(&format!("/pages/status/{forged}"))).send().await.unwrap();
    assert_eq!(r.status(), 403, "a changed token is refused");
    let forged = app.url(&format!("/pages/status/{forged}"));
    look(Some(&forged), "refused-invalid", lang).await;
    let mut expired = claims.clone();
    expired.expires_at = now.timestamp() - 3600;
    let expired = app.url(&format!("/pages/status/{}", signer.legacy_token(&expired)));
    assert_eq!(app.client.get(&expired).send().await.unwrap().status(), 410);
    look(Some(&expired), "refused-expired", lang).await;
    // The feedback link at the foot of the approver's mail: the form, then its thanks.
    let feedback = wait_link(&smtp, "wang.fang@bank.example", "feedback", &large).await;
    look(Some(&feedback), "feedback", lang).await;
    browser.submit(&feedback, FEEDBACK, DONE).await;
    look(None, "feedback-done", lang).await;
    // The first approver decides: the confirmation, then the used link's refusal.
    browser.submit(&approval, APPROVE, DONE).await;
    look(None, "approval-done", lang).await;
    assert_eq!(app.client.get(&approval).send().await.unwrap().status(), 409);
    look(Some(&approval), "refused-approval-used", lang).await;

    // A smaller order, approved, delivered: acceptance; then paid: the survey.
    let (s, b) = app.post_webhook(&with_locale(deal("D-SCR-2", 1, "500000.00"))).await;
    assert_eq!(s, 202, "{b}");
    let id = b["order_id"].as_str().unwrap().to_owned();
    let (s, b) = app
        .api_post_json_as(
            "wang.fang",
            &format!("/orders/{id}/approvals"),
            &json!({"decision": "approve", "comment": "同意"}),
        )
        .await;
    assert_eq!((s, b["state"].as_str()), (200, Some("executing")), "{b}");
    wait_until("both tasks reach the ERP", || async { app.erp.tasks().len() == 2 }).await;
    deliver(&app, &id).await;
    let acceptance = wait_link(&smtp, "zhang.wei@example.com", "acceptance", &id).await;
    assert_opaque(&acceptance, &id);
    look(Some(&acceptance), "acceptance", lang).await;
    let status = wait_link(&smtp, "zhang.wei@example.com", "status", &id).await;
    assert_opaque(&status, &id);
    look(Some(&status), "status-delivered", lang).await;
    // Sent without a decision: the form again, with what to correct.
    let answer = app.client.post(&acceptance).form(&[("note", "")]).send().await.unwrap();
    assert_eq!(answer.status(), 422);
    browser.submit(&acceptance, "document.querySelector('form').submit();", "!!document.querySelector('.alert')").await;
    look(None, "acceptance-error", lang).await;
    browser.submit(&acceptance, ACCEPT, DONE).await;
    look(None, "acceptance-done", lang).await;
    look(Some(&acceptance), "refused-acceptance-used", lang).await;
    wait_until("the invoice is issued", || async { app.order(&id).await["state"] == "invoiced" }).await;
    let order = app.order(&id).await;
    let inv = order["fulfilment"]["invoice"]["number"].clone();
    let pay = json!({"type": "payment.received", "payment_id": "BANK-SCR-1",
        "amount": {"amount": "500000.00", "currency": "CNY"}, "invoice_number": inv});
    let (s, b) = system_event(&app, "demo-finance", &pay).await;
    assert_eq!((s, b["state"].as_str()), (200, Some("closed")), "{b}");
    let survey = wait_link(&smtp, "zhang.wei@example.com", "survey", &id).await;
    assert_opaque(&survey, &id);
    look(Some(&survey), "survey", lang).await;
    browser.submit(&survey, SURVEY, DONE).await;
    look(None, "survey-done", lang).await;
    look(Some(&survey), "refused-survey-answered", lang).await;
    // The status page of the closed order: every step done, with its day.
    let closed = status;
    let html = app.client.get(&closed).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("class=\"stepper\"") && !html.contains("class=\"todo\""), "{html}");
    look(Some(&closed), "status-closed", lang).await;
    browser.quit().await;
    app.stop().await;
    found
}

#[tokio::test]
async fn every_page_reads_well_on_a_phone_and_a_desktop_in_chinese_and_english() {
    let mut found = pages_in("zh-CN").await;
    found.extend(pages_in("en").await);
    assert!(found.is_empty(), "{found:#?}\n(screenshots in {})", screens_dir().display());
}
