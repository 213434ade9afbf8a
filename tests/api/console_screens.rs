//! The console as a person sees it: every console page, in zh-CN and en, opened in
//! headless Chromium (the `screens` module's WebDriver browser) at a phone's 420 px
//! and a desktop's 1200 px (and the phone in dark mode), signed in as a person who
//! may use it (and one refusal), screenshots saved as `target/screens/console-*.png`.
//! Checked: no sideways scrolling, the page's language, and an axe-core scan (the
//! pinned npm package, injected into the page) with no violation of impact serious or
//! critical.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::console::sign_in;
use crate::console_pages::two_orders;
use crate::helpers::*;
use crate::screens::{Browser, WIDTHS, problems, screens_dir};

/// Runs axe on the page and answers its serious and critical violations.
const AXE_RUN: &str = r"
const done = arguments[arguments.length - 1];
axe.run(document)
  .then(r => done({passes: r.passes.length, violations: r.violations
    .filter(v => v.impact === 'serious' || v.impact === 'critical')
    .map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 5).map(n => n.target.join(' '))}))}))
  .catch(e => done({passes: 0, violations: [{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]}));
";

/// What the layout check reads.
const LAYOUT: &str = "return {scroll: document.documentElement.scrollWidth, inner: window.innerWidth, \
    lang: document.documentElement.lang, height: document.documentElement.scrollHeight, \
    frame: window.outerHeight - window.innerHeight};";

fn axe_source() -> String {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let p = target.join("node/node_modules/axe-core/axe.min.js");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e} (scripts/test.sh installs axe-core)", p.display()))
}

async fn script(browser: &Browser, js: &str) -> Value {
    browser.call(reqwest::Method::POST, "/execute/sync", Some(json!({"script": js, "args": []}))).await
}

/// Makes the browser `cookie`'s holder (no cookie: nobody signed in).
async fn as_holder(browser: &Browser, base: &str, cookie: Option<&str>) {
    browser.call(reqwest::Method::POST, "/url", Some(json!({"url": format!("{base}/healthz")}))).await;
    browser.call(reqwest::Method::DELETE, "/cookie", None).await;
    if let Some(c) = cookie {
        let cookie = json!({"cookie": {"name": "ob_session", "value": c, "path": "/", "httpOnly": true}});
        browser.call(reqwest::Method::POST, "/cookie", Some(cookie)).await;
    }
}

/// Opens `url` at each width: layout and axe findings, and a full-page screenshot.
async fn look(browser: &Browser, axe_js: &str, url: &str, name: &str, lang: &str, widths: &[u32]) -> Vec<String> {
    let mut found = Vec::new();
    for &width in widths {
        let at = format!("console-{lang}-{name} at {width} px");
        browser.resize(width, 900).await;
        browser.call(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await;
        let seen = script(browser, LAYOUT).await;
        if seen["scroll"].as_f64() > seen["inner"].as_f64() {
            found.push(format!("{at}: scrolls sideways ({} > {})", seen["scroll"], seen["inner"]));
        }
        if seen["lang"] != lang {
            found.push(format!("{at}: lang is {}, not {lang}", seen["lang"]));
        }
        script(browser, &format!("{axe_js}\nreturn true;")).await;
        let axe =
            browser.call(reqwest::Method::POST, "/execute/async", Some(json!({"script": AXE_RUN, "args": []}))).await;
        // A scan that checked nothing proves nothing.
        if axe["passes"].as_u64().unwrap_or(0) == 0 {
            found.push(format!("{at}: axe checked nothing: {axe}"));
        }
        for v in axe["violations"].as_array().into_iter().flatten() {
            found.push(format!("{at}: axe {} ({}): {} at {}", v["id"], v["impact"], v["help"], v["nodes"]));
        }
        let height = seen["height"].as_f64().unwrap_or(900.0) + seen["frame"].as_f64().unwrap_or(0.0).max(0.0);
        browser.resize(width, (height as u32).clamp(400, 8000)).await;
        let png = browser.call(reqwest::Method::GET, "/screenshot", None).await;
        use base64::Engine as _;
        let png = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        std::fs::write(screens_dir().join(format!("console-{lang}-{name}-{width}.png")), png).unwrap();
    }
    found
}

/// The session cookie of a browser signed in as `email`.
async fn session(app: &TestApp, smtp: &SmtpServer, email: &str) -> String {
    let b = sign_in(app, smtp, email).await;
    b.cookies.iter().find(|(k, _)| k == "ob_session").map(|(_, v)| v.clone()).unwrap()
}

async fn console_in(lang: &str) -> Vec<String> {
    let smtp = SmtpServer::start(&[]);
    // The ERP is down: its effects end as dead letters, so that list has rows.
    let erp = Receiver::start().await;
    erp.set_down(true);
    let mut app = TestApp::builder()
        .erp(erp)
        .mail(&smtp)
        .settings(|s| s.dispatcher.max_attempts = 2)
        .files(crate::console_pages::chen_administers);
    let reports_in = lang.to_owned();
    app = app.files(move |d| example_report(d, &reports_in));
    if lang == "en" {
        app = app
            .files(|d| replace_in_file(d, "config/directory.toml", &[("locale = \"zh-CN\"", "locale = \"en\"")]))
            .settings(|s| s.presentation.default_locale = orderbridge::locale::Locale::En);
    }
    let app = app.start().await;
    let (waiting, small) = two_orders(&app).await;
    // An order invoiced and part paid, so the receivables page shows an invoice.
    let invoiced = invoiced_part_paid(&app).await;
    let customer = app.order(&invoiced).await["order"]["customer"]["id"].as_str().unwrap().to_owned();
    // A flagged order and an unmatched payment, so those lists have rows.
    let mut flagged = deal("D-SCREENS-FLAG", 1, "500000.00");
    flagged["deal"]["customer"]["kyc_verified"] = false.into();
    assert_eq!(app.post_webhook(&flagged).await.1["state"], "flagged");
    let pay = json!({"payment_id": "P-SCREENS", "amount": {"amount": "8000.00", "currency": "CNY"},
        "invoice_number": "INV-NOPE", "reference": "张伟 货款"});
    assert_eq!(app.api_post_json("/payments", &pay).await.0, 202);
    app.drain_outbox().await;
    // A rules candidate proposed by James Wong, for chen.jing to approve on the rules page.
    let rules = std::fs::read_to_string(app.dir.path().join("config/rules.toml")).unwrap();
    let body = json!({"rules": crate::rules_review::candidate(&rules), "note": "STANDARD 至 200 万"});
    let (status, proposed) = app.api_post_with(&app.person_token("james.wong"), "/rules/candidates", &body).await;
    assert_eq!(status, 200, "{proposed}");
    // zhou.min: approvals and reports; sun.li: orders and the work lists; li.na: reports only; chen.jing: rules review.
    let zhou = session(&app, &smtp, "zhou.min@bank.example").await;
    let sun = session(&app, &smtp, "operations@bank.example").await;
    let li = session(&app, &smtp, "li.na@bank.example").await;
    let chen = session(&app, &smtp, "chen.jing@bank.example").await;
    let he = session(&app, &smtp, "credit-ops@bank.example").await;
    let base = app.url("");
    let base = base.trim_end_matches('/');
    let pages: Vec<(Option<&str>, String, &str)> = vec![
        (None, "/signin".into(), "signin"),
        (Some(&zhou), "/console".into(), "inbox"),
        (Some(&zhou), "/console/process".into(), "process"),
        (Some(&zhou), "/console/reports".into(), "reports"),
        (Some(&zhou), "/console/reports?from=2026-13-01".into(), "reports-error"),
        (Some(&zhou), format!("/console/orders/{waiting}"), "order-waiting"),
        (Some(&sun), "/console/orders".into(), "orders"),
        (Some(&sun), "/console/orders?q=nobody-at-all".into(), "orders-none"),
        (Some(&sun), format!("/console/orders/{small}"), "order"),
        (Some(&sun), "/console/exceptions".into(), "exceptions"),
        (Some(&sun), "/console/dead-letters".into(), "dead-letters"),
        (Some(&sun), "/console/connectors".into(), "connectors"),
        (Some(&chen), "/console/review".into(), "review"),
        (Some(&he), "/console/payments".into(), "payments"),
        (Some(&chen), "/console/admin".into(), "admin"),
        (Some(&chen), "/console/rules".into(), "rules"),
        (Some(&he), format!("/console/receivables?customer={customer}"), "receivables"),
        (Some(&li), "/console/orders".into(), "refused"),
        (Some(&sun), "/console/feedback/new".into(), "feedback-form"),
        (Some(&li), "/console/feedback".into(), "feedback"),
    ];
    let axe = axe_source();
    let browser = Browser::start().await;
    browser.call(reqwest::Method::POST, "/timeouts", Some(json!({"script": 120_000}))).await;
    let mut found = Vec::new();
    for (cookie, path, name) in &pages {
        as_holder(&browser, base, *cookie).await;
        found.extend(look(&browser, &axe, &format!("{base}{path}"), name, lang, &WIDTHS).await);
    }
    // A phone set to dark mode: the same pages, the same checks (contrast above all).
    let dark = json!({"cmd": "Emulation.setEmulatedMedia",
        "params": {"features": [{"name": "prefers-color-scheme", "value": "dark"}]}});
    browser.call(reqwest::Method::POST, "/goog/cdp/execute", Some(dark)).await;
    for (cookie, path, name) in &pages {
        as_holder(&browser, base, *cookie).await;
        found.extend(look(&browser, &axe, &format!("{base}{path}"), &format!("{name}-dark"), lang, &WIDTHS[..1]).await);
    }
    found.extend(report_mail(&app, &browser, lang).await);
    browser.quit().await;
    app.stop().await;
    found
}

/// The example's scheduled management report (the tests' configuration leaves reports
/// out), its mail in `lang`.
fn example_report(dir: &Path, lang: &str) {
    let example = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/notifications.toml"));
    let example = example.unwrap();
    let from = example.find("# --- Scheduled management reports").expect("the example schedules a report");
    let block = example[from..].replace("locale = \"zh-CN\"", &format!("locale = \"{lang}\""));
    edit_file(dir, "config/notifications.toml", |text| format!("{text}\n{block}"));
}

/// A 300 000 CNY order approved, its tasks done, delivered, accepted, invoiced by the
/// finance system, and paid 100 000 CNY of it.
async fn invoiced_part_paid(app: &TestApp) -> String {
    let (s, b) = app.post_webhook(&deal("D-SCREENS-CASH", 1, "300000.00")).await;
    assert_eq!((s, b["state"].as_str()), (202, Some("awaiting_approval")), "{b}");
    let id = b["order_id"].as_str().unwrap().to_owned();
    let (s, b) =
        app.api_post_json_as("wang.fang", &format!("/orders/{id}/approvals"), &json!({"decision": "approve"})).await;
    assert_eq!((s, b["state"].as_str()), (200, Some("executing")), "{b}");
    crate::cash::deliver(app, &id).await;
    let accept = json!({"decision": "accept", "note": "客户电话确认"});
    let (s, b) = app.api_post_json_as("sun.li", &format!("/orders/{id}/acceptance"), &accept).await;
    assert_eq!((s, b["state"].as_str()), (200, Some("accepted")), "{b}");
    wait_until("the invoice is issued", || async { app.order(&id).await["state"] == "invoiced" }).await;
    let invoice = app.order(&id).await["fulfilment"]["invoice"]["number"].clone();
    let pay = json!({"payment_id": "P-SCREENS-PART", "amount": {"amount": "100000.00", "currency": "CNY"},
        "invoice_number": invoice});
    let (s, b) = app.api_post_json("/payments", &pay).await;
    assert_eq!((s, b["matched"].as_bool()), (200, Some(true)), "{b}");
    id
}

/// The scheduled management report's mail (`weekly-management`) for the week of these
/// orders, as `GET /api/reports/scheduled/{name}` shows it: checked and photographed as
/// the `screens` module does every mail.
async fn report_mail(app: &TestApp, browser: &Browser, lang: &str) -> Vec<String> {
    let at = (app.state.clock.now() + chrono::Duration::days(7)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let url = app.admin_url(&format!("/api/reports/scheduled/weekly-management?at={at}"));
    let r = app.client.get(url).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("data:image/png;base64,"), "the mail carries its charts");
    let label = format!("mail-{lang}-weekly-report");
    let file = screens_dir().join(format!("{label}.html"));
    std::fs::write(&file, &html).unwrap();
    let mut found = Vec::new();
    for width in WIDTHS {
        let seen = browser.look(&format!("file://{}", file.display()), width, &label).await;
        found.extend(problems(&label, width, &seen, lang));
    }
    found
}

#[tokio::test]
async fn every_console_page_reads_well_and_passes_axe_on_a_phone_and_a_desktop() {
    let mut found = console_in("zh-CN").await;
    found.extend(console_in("en").await);
    assert!(found.is_empty(), "{found:#?}\n(screenshots in {})", screens_dir().display());
}
