//! The console's KPI page over TCP with signed-in sessions: its figures are those of
//! real orders pushed through the daemon (webhooks, an approval, an exception, a
//! rejection at screening), the period form chooses another period or names the field
//! to correct, the process map links each state to its row, and a person whose roles
//! the policy table does not grant `see_reports` gets 403 and no link.

use crate::console::sign_in;
use crate::console_pages::two_orders;
use crate::helpers::*;

/// The texts of the cells (`<td>`) of the first table row holding `needle`.
fn cells(page: &str, needle: &str) -> Vec<String> {
    let row =
        page.split("<tr").find(|r| r.contains(needle)).unwrap_or_else(|| panic!("no row with `{needle}`: {page}"));
    let row = row.split("</tr>").next().unwrap();
    row.split("<td")
        .skip(1)
        .map(|c| {
            let c = &c[c.find('>').unwrap() + 1..];
            c.split("</td>").next().unwrap().trim().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn the_kpi_page_shows_the_figures_of_real_orders_to_whoever_may_see_reports() {
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().mail(&smtp).start().await;
    // Three orders: one waiting for approval, one approved at level 1 and then in
    // exception, one rejected at screening (a CCC rating).
    let (_waiting, small) = two_orders(&app).await;
    let mut p = deal("D-KPI-REJECT", 1, "5000.00");
    p["deal"]["customer"]["credit_rating"] = "CCC".into();
    let (_, b) = app.post_webhook(&p).await;
    assert_eq!(b["state"], "rejected", "{b}");

    // li.na (sales: reports only): the page, in the navigation.
    let mut li = sign_in(&app, &smtp, "li.na@bank.example").await;
    let page = li.get("/console/reports").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("href=\"/console/reports\" aria-current=\"page\""), "{}", page.body);
    // The default period (the last 30 days) holds all three; the one before, none.
    assert_eq!(cells(&page.body, ">收到订单<"), ["3", "0"]);
    assert_eq!(cells(&page.body, ">每百单异常数<"), ["33.33", "–"]);
    assert_eq!(cells(&page.body, ">第 1 级<")[..2], ["1", "0"], "approved once at level 1, never declined");
    let rejected = cells(&page.body, "id=\"state-rejected\"");
    assert_eq!(rejected.last().map(String::as_str), Some("1"), "one order ended rejected: {rejected:?}");
    let exception = cells(&page.body, "id=\"state-exception\"");
    assert_eq!(exception.first().map(String::as_str), Some("0"), "still in exception: no finished stay");
    // Accessible tables: a caption each, headers with their scope.
    assert_eq!(page.body.matches("<table").count(), page.body.matches("<caption>").count(), "{}", page.body);
    assert!(page.body.contains("<th scope=\"row\">") && page.body.contains("<th scope=\"col\""), "{}", page.body);
    // The process map links each state to its row.
    let map = li.get("/console/process").await;
    assert!(map.body.contains("href=\"/console/reports#state-exception\""), "{}", map.body);

    // Another period, chosen with the GET form: nothing received then.
    let form = &page.body[page.body.find("<form method=\"get\" action=\"/console/reports\"").unwrap()..];
    assert!(form.contains("name=\"from\"") && form.contains("name=\"to\""), "{form}");
    let old = li.get("/console/reports?from=2020-01-01&to=2020-01-31").await;
    assert_eq!(old.status, 200, "{}", old.body);
    assert_eq!(cells(&old.body, ">收到订单<"), ["0", "0"]);
    assert!(old.body.contains("本期没有收到订单") && old.body.contains("value=\"2020-01-31\""), "{}", old.body);
    // A date that is none, or a period backwards: the field named, no report.
    let bad = li.get("/console/reports?from=2026-13-01&to=2026-11-30").await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(bad.body.contains("“2026-13-01”不是日期") && !bad.body.contains("收到订单"), "{}", bad.body);
    assert!(
        bad.body
            .contains("id=\"from\" name=\"from\" type=\"date\" value=\"2026-13-01\" required aria-invalid=\"true\"")
    );
    let backwards = li.get("/console/reports?from=2026-11-30&to=2026-11-01").await;
    assert_eq!(backwards.status, 422, "{}", backwards.body);
    assert!(backwards.body.contains("结束早于开始"), "{}", backwards.body);

    // sun.li (operations) may not see reports: 403 naming it, no link, no figures.
    let mut sun = sign_in(&app, &smtp, "operations@bank.example").await;
    let inbox = sun.get("/console").await;
    assert!(!inbox.body.contains("href=\"/console/reports"), "{}", inbox.body);
    let r = sun.get("/console/reports").await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("sun.li may not see_reports") && !r.body.contains("收到订单"), "{}", r.body);

    // James Wong reads it in English, the same figures.
    let mut james = sign_in(&app, &smtp, "james.wong@bank.example").await;
    let page = james.get("/console/reports").await;
    assert!(page.body.contains("<html lang=\"en\""), "{}", page.body);
    assert_eq!(cells(&page.body, ">Orders received<"), ["3", "0"]);
    assert_eq!(app.order(&small).await["state"], "exception");
    app.stop().await;
}
