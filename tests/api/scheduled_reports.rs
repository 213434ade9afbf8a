//! Scheduled management reports (`[[reports]]`): the daemon mails a period's report
//! with its charts inline when the schedule comes, in Chinese and in English, once
//! per period across restarts; the next period brings the next one.

use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use crate::helpers::*;

/// Two reports at Monday 08:00 in Shanghai: one for the management role in Chinese,
/// one for a person in English.
pub(crate) fn add_reports(dir: &std::path::Path) {
    edit_file(dir, "config/notifications.toml", |text| {
        format!(
            "{text}\n{}",
            r#"
[[reports]]
name = "weekly-zh"
schedule = "0 8 * * MON"
audience = ["role:management"]
period = "previous_week"
locale = "zh-CN"

[[reports]]
name = "weekly-en"
schedule = "0 8 * * MON"
audience = ["person:james.wong"]
period = "previous_week"
locale = "en"
"#
        )
    });
}

async fn post(app: &TestApp, payload: &Value) -> String {
    let (status, body) = app.post_webhook(payload).await;
    assert_eq!(status, 202, "{body}");
    body["order_id"].as_str().unwrap().to_owned()
}

/// The report mails received so far (they carry `X-Orderbridge-Report`).
fn reports(smtp: &SmtpServer) -> Vec<Mail> {
    smtp.messages().into_iter().filter(|m| !m.header("X-Orderbridge-Report").is_empty()).collect()
}

async fn wait_reports(smtp: &SmtpServer, n: usize) -> Vec<Mail> {
    wait_until(&format!("{n} report mails arrive"), || async { reports(smtp).len() >= n }).await;
    reports(smtp)
}

fn set_clock(clock: &ManualClock, to: &str) {
    let to: DateTime<Utc> = to.parse().unwrap();
    clock.advance(to - clock.now());
}

/// The message's parts as the test SMTP server decoded them.
fn parts(m: &Mail) -> Vec<Value> {
    m.meta["parsed"]["parts"].as_array().unwrap().clone()
}

/// A chart as the mail carried it: its file name, size and pixels (palette indices).
struct Image {
    name: String,
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

/// A PNG's size and its pixels (palette indices, as drawn).
fn decode_png(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut d = png::Decoder::new(std::io::Cursor::new(bytes));
    d.set_transformations(png::Transformations::IDENTITY);
    let mut r = d.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// Checks the message's structure: HTML and text alternatives, each chart an inline
/// PNG with a Content-ID that the HTML shows as `cid:` with alt text. Returns the
/// charts by file name, decoded.
fn charts_of(m: &Mail) -> Vec<Image> {
    assert_eq!(m.meta["parsed"]["content_type"], "multipart/alternative", "{}", m.meta);
    assert!(m.raw.contains("multipart/related"), "the HTML and its images are one related part");
    let html = m.part("text/html");
    let mut out = Vec::new();
    for p in parts(m).iter().filter(|p| p["content_type"] == "image/png") {
        let cid = p["content_id"].as_str().unwrap().trim_matches(['<', '>']);
        assert_eq!(p["disposition"], "inline", "{p}");
        let at =
            html.find(&format!("src=\"cid:{cid}\"")).unwrap_or_else(|| panic!("cid:{cid} not in the HTML: {html}"));
        // The image tag says what it shows.
        let tag_start = html[..at].rfind("<img").unwrap();
        let tag = &html[tag_start..tag_start + html[tag_start..].find('>').unwrap()];
        let alt = tag.split("alt=\"").nth(1).and_then(|a| a.split('"').next()).unwrap_or_default();
        assert!(alt.chars().count() > 10, "alt text for {cid}: {tag}");
        let bytes = base64::engine::general_purpose::STANDARD.decode(p["data_b64"].as_str().unwrap()).unwrap();
        let (width, height, pixels) = decode_png(&bytes);
        out.push(Image { name: p["filename"].as_str().unwrap().to_owned(), width, height, pixels });
    }
    // Every image the HTML names is in the message.
    assert_eq!(html.matches("src=\"cid:").count(), out.len(), "{html}");
    out
}

/// The mail's HTML with its images inline as data URLs, kept beside the screenshots of
/// the pages (`target/screens/`) for a look in a browser.
fn keep_for_a_look(m: &Mail, file: &str) {
    let mut html = m.part("text/html").to_owned();
    for p in parts(m).iter().filter(|p| p["content_type"] == "image/png") {
        let cid = p["content_id"].as_str().unwrap().trim_matches(['<', '>']);
        let data = format!("data:image/png;base64,{}", p["data_b64"].as_str().unwrap());
        html = html.replace(&format!("cid:{cid}"), &data);
    }
    let screens = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screens");
    std::fs::create_dir_all(&screens).unwrap();
    std::fs::write(screens.join(file), html).unwrap();
}

async fn preview_api(app: &TestApp, name: &str, at: &str) -> String {
    let url = app.admin_url(&format!("/api/reports/scheduled/{name}?at={at}"));
    let resp = app.client.get(url).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    resp.text().await.unwrap()
}

/// `orderbridge report --mail`: through the daemon on `admin_port` while it runs,
/// else from the store in `dir` itself.
async fn preview_cli(dir: &std::path::Path, admin_port: u16, name: &str, at: &str) -> String {
    let mut c = std::process::Command::new(bin());
    c.args(["report", "--mail", name, "--at", at, "--config-dir"]).arg(dir);
    c.env("ORDERBRIDGE__SERVER__ADMIN__PORT", admin_port.to_string());
    let out = tokio::task::spawn_blocking(move || c.output().unwrap()).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Which of the `n` columns of a columns chart (560 px wide, 6 px margins) have bars.
fn columns_with_bars(width: u32, pixels: &[u8], n: u32) -> Vec<u32> {
    let slot = (width - 12) / n;
    (0..n)
        .filter(|i| {
            let x = 6 + i * slot + slot / 2;
            pixels.chunks(width as usize).any(|row| row[x as usize] == 2)
        })
        .collect()
}

#[tokio::test]
async fn a_scheduled_report_arrives_once_per_period_with_its_charts_in_both_languages() {
    // Wednesday 25 November 2026, 10:00 in Shanghai.
    let clock = ManualClock::new("2026-11-25T02:00:00Z".parse().unwrap());
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().clock(clock.clock()).mail(&smtp).files(add_reports).start().await;
    // Two orders that week: one approved by the matrix at once, one by a line
    // supervisor after two office hours.
    post(&app, &deal("D-SR-1", 1, "50000.00")).await;
    let waits = post(&app, &deal("D-SR-2", 1, "500000.00")).await;
    clock.advance(Duration::hours(2));
    let (status, body) =
        app.api_post_json_as("wang.fang", &format!("/orders/{waits}/approvals"), &json!({"decision": "approve"})).await;
    assert_eq!(status, 200, "{body}");

    // Monday 30 November, 08:01 in Shanghai: last week's report goes out.
    set_clock(&clock, "2026-11-30T00:01:00Z");
    let mails = wait_reports(&smtp, 2).await;
    let zh = mails.iter().find(|m| m.header("X-Orderbridge-Report") == "weekly-zh").unwrap();
    let en = mails.iter().find(|m| m.header("X-Orderbridge-Report") == "weekly-en").unwrap();
    assert_eq!(zh.rcpt(), ["gao.ming@bank.example"]);
    assert_eq!(en.rcpt(), ["james.wong@bank.example"]);
    assert_eq!(zh.subject(), "管理报告（周报）：2026-11-23 至 2026-11-29");
    assert_eq!(en.subject(), "Management report (weekly): 2026-11-23 to 2026-11-29");

    // The figures as text, in the reader's language: two orders, none the week before;
    // level 1 was decided at once (the matrix) and after 2 office hours.
    let text = zh.part("text/plain");
    assert!(text.contains("收到订单：2 / 0"), "{text}");
    assert!(text.contains("- 审批第 1 级：合计 2 小时，中位 0 小时，共 2 次"), "{text}");
    assert!(text.contains("- 第 1 级：平均 1 小时，中位 0 小时（2 次决定）"), "{text}");
    let html = zh.part("text/html");
    assert!(html.contains("流程瓶颈") && html.contains("审批第 1 级") && html.contains("关键指标"), "{html}");
    let text = en.part("text/plain");
    assert!(text.contains("Orders received: 2 / 0"), "{text}");
    assert!(text.contains("- Approval level 1: 2 h in all, median 0 h, 2 times"), "{text}");
    assert!(text.contains("- Level 1: mean 1 h, median 0 h (2 decisions)"), "{text}");
    assert!(en.part("text/html").contains("Bottlenecks"));
    assert!(!en.part("text/html").contains("瓶颈"), "the English report is in English");

    keep_for_a_look(zh, "report-mail-zh.html");
    keep_for_a_look(en, "report-mail-en.html");
    for m in [zh, en] {
        let charts = charts_of(m);
        let names: Vec<&str> = charts.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["received.png", "bottlenecks.png", "levels.png"]);
        assert_eq!((charts[0].width, charts[0].height), (560, 180));
        // Seven days, Monday to Sunday: the orders came on Wednesday, the third.
        assert_eq!(columns_with_bars(charts[0].width, &charts[0].pixels, 7), [2]);
        // A row of 28 px per bottleneck and per approval level (one here); approval
        // level 1, where all the waiting was, is the first and the longest (orange).
        let (bw, bh) = (charts[1].width, charts[1].height);
        assert!(bw == 560 && bh >= 40 && (bh - 12) % 28 == 0, "{bw}x{bh}");
        let first_row = &charts[1].pixels[(6 + 14) * bw as usize..(7 + 14) * bw as usize];
        assert_eq!(first_row.iter().filter(|p| **p == 4).count(), 548, "the longest bar is the full width");
        assert_eq!((charts[2].width, charts[2].height), (560, 40));
    }

    // An admin sees the same mail (charts as data URLs) before or after it is sent,
    // from the API and from the command line (through the running daemon).
    let preview = preview_api(&app, "weekly-zh", "2026-11-30").await;
    assert!(preview.contains("管理报告（周报）") && preview.contains("收到订单"), "{preview}");
    let images: Vec<Value> = parts(zh).into_iter().filter(|p| p["content_type"] == "image/png").collect();
    assert_eq!(images.len(), 3);
    for p in &images {
        let data = format!("data:image/png;base64,{}", p["data_b64"].as_str().unwrap());
        assert!(preview.contains(&data), "the preview draws the same {} chart", p["filename"]);
    }
    assert_eq!(preview_cli(app.dir.path(), app.admin.port(), "weekly-zh", "2026-11-30").await, preview);
    let (status, body) = app.api("/reports/scheduled/monthly").await;
    assert_eq!(status, 404, "{body}");

    // Later that week, a daemon restart sends nothing again: the period was sent.
    let erp = app.erp.clone();
    let dir = app.stop().await;
    set_clock(&clock, "2026-12-02T02:00:00Z");
    let app = TestApp::builder().in_dir(dir).erp(erp).clock(clock.clock()).mail(&smtp).start().await;
    post(&app, &deal("D-SR-3", 1, "50000.00")).await;

    // The next Monday brings the next week's report, once each.
    set_clock(&clock, "2026-12-07T00:01:00Z");
    let mails = wait_reports(&smtp, 4).await;
    app.drain_outbox().await;
    let mut subjects: Vec<String> = reports(&smtp).iter().map(|m| m.subject().to_owned()).collect();
    subjects.sort();
    assert_eq!(
        subjects,
        [
            "Management report (weekly): 2026-11-23 to 2026-11-29",
            "Management report (weekly): 2026-11-30 to 2026-12-06",
            "管理报告（周报）：2026-11-23 至 2026-11-29",
            "管理报告（周报）：2026-11-30 至 2026-12-06",
        ]
    );
    let next = mails.iter().find(|m| m.subject() == "管理报告（周报）：2026-11-30 至 2026-12-06").unwrap();
    assert!(next.part("text/plain").contains("收到订单：1 / 2"), "{}", next.part("text/plain"));
    let charts = charts_of(next);
    // The order came on Wednesday 2 December, the third day of that week.
    assert_eq!(columns_with_bars(charts[0].width, &charts[0].pixels, 7), [2]);
    // Each mail's key is the report and its period.
    let all = reports(&smtp);
    let ids: std::collections::BTreeSet<&str> = all.iter().map(|m| m.header("Message-ID")).collect();
    assert_eq!(ids.len(), 4, "{ids:?}");
    // With the daemon stopped, the command line reads the store itself: the same mail.
    let admin_port = app.admin.port();
    let dir = app.stop_and_release().await;
    assert_eq!(preview_cli(dir.path(), admin_port, "weekly-zh", "2026-11-30").await, preview);
}

#[tokio::test]
async fn a_report_naming_nobody_or_a_bad_value_is_refused_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    write_mail_config(dir.path(), "127.0.0.1:9".parse().unwrap(), 2525);
    add_reports(dir.path());
    assert!(load(dir.path()).is_ok(), "the reports as written load");
    let notifications = dir.path().join("config/notifications.toml");
    let line_of = |needle: &str| {
        let text = std::fs::read_to_string(&notifications).unwrap();
        text.lines().position(|l| l.contains(needle)).unwrap() + 1
    };

    // The directory has nobody with the role, nor the person.
    replace_in_file(dir.path(), "config/notifications.toml", &[("role:management", "role:board")]);
    replace_in_file(dir.path(), "config/notifications.toml", &[("person:james.wong", "person:nobody")]);
    let e = load(dir.path()).map(|_| ()).unwrap_err();
    let file = notifications.display().to_string();
    let header = |name: &str| line_of(&format!("name = \"{name}\"")) - 1;
    assert!(
        e.contains(&format!(
            "{file}:{}:1: reports weekly-zh: nobody in config/directory.toml has role `board`",
            header("weekly-zh")
        )),
        "{e}"
    );
    assert!(
        e.contains(&format!(
            "{file}:{}:1: reports weekly-en: person `nobody` is not in config/directory.toml",
            header("weekly-en")
        )),
        "{e}"
    );

    // A value that is not one: at its own line.
    replace_in_file(
        dir.path(),
        "config/notifications.toml",
        &[("period = \"previous_week\"\nlocale = \"en\"", "period = \"last_week\"\nlocale = \"en\"")],
    );
    let e = load(dir.path()).map(|_| ()).unwrap_err();
    let at = line_of("period = \"last_week\"");
    assert!(e.contains(&format!("{file}:{at}:10: reports: period: `last_week` is not a period")), "{e}");
}

/// Two daemons on one PostgreSQL database and one clock: each report goes out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_on_one_database_send_each_report_once() {
    use secrecy::ExposeSecret as _;
    let clock = ManualClock::new("2026-11-25T02:00:00Z".parse().unwrap());
    let pg = crate::postgres::fresh_database().await;
    let smtp = SmtpServer::start(&[]);
    let erp = Receiver::start().await;
    let mut apps = Vec::new();
    for _ in 0..2 {
        let app = TestApp::builder()
            .erp(erp.clone())
            .clock(clock.clock())
            .mail(&smtp)
            .files(add_reports)
            .settings(on_postgres(pg.url.expose_secret(), 3))
            .start()
            .await;
        apps.push(app);
    }
    post(&apps[0], &deal("D-SR2-1", 1, "50000.00")).await;
    post(&apps[1], &deal("D-SR2-2", 1, "50000.00")).await;

    set_clock(&clock, "2026-11-30T00:01:00Z");
    wait_reports(&smtp, 2).await;
    for app in &apps {
        app.drain_outbox().await;
    }
    let sent: Vec<(String, String)> =
        reports(&smtp).iter().map(|m| (m.header("X-Orderbridge-Report").to_owned(), m.subject().to_owned())).collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.iter().any(|(n, s)| n == "weekly-zh" && s.contains("2026-11-23 至 2026-11-29")), "{sent:?}");
    assert!(sent.iter().any(|(n, s)| n == "weekly-en" && s.contains("2026-11-23 to 2026-11-29")), "{sent:?}");
    // Both daemons' orders are in it.
    let zh = reports(&smtp).into_iter().find(|m| m.header("X-Orderbridge-Report") == "weekly-zh").unwrap();
    assert!(zh.part("text/plain").contains("收到订单：2 / 0"), "{}", zh.part("text/plain"));
    for app in apps {
        app.stop().await;
    }
}
