//! A connector's credentials go to its own `base_url` only: a redirect is not
//! followed (reqwest would carry API-key headers along), a `Link` next page on
//! another host stops paging, and an id of `..` cannot rewrite the outbound path.
//! The "other host" is a second server on loopback that records whatever reaches it.

use std::net::SocketAddr;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::helpers::*;

const API_KEY: &str = "erp-api-key-0123456789abcdef0123456789";

/// The example configuration (approval only) with demo-erp at `erp`, authenticating
/// with an API-key header (which reqwest would keep across a redirect).
fn config(dir: &std::path::Path, erp: SocketAddr) {
    write_config(dir, erp);
    only_approval(dir);
    replace_in_file(
        dir,
        "connectors/demo-erp.toml",
        &[(
            "kind = \"bearer\"\ntoken = \"file:secrets/demo-erp\"",
            "kind = \"api_key\"\nheader = \"X-Api-Key\"\nvalue = \"file:secrets/demo-erp\"",
        )],
    );
    std::fs::write(dir.join("secrets/demo-erp"), API_KEY).unwrap();
}

async fn dead_letter(app: &TestApp) -> Value {
    wait_until("the push is dead-lettered", || async {
        app.api("/outbox/dead").await.1["effects"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    app.api("/outbox/dead").await.1["effects"][0].clone()
}

#[tokio::test]
async fn a_redirect_to_another_host_is_not_followed_and_the_api_key_stays_home() {
    // Arrange: the ERP answers the push with 307 to another host.
    let other = Scripted::start(Vec::new()).await;
    let to = format!("http://{}/steal?from=erp", other.addr);
    let erp = Scripted::start(vec![(
        "/orders".into(),
        Box::new(move || (StatusCode::TEMPORARY_REDIRECT, [("location", to.clone())]).into_response()),
    )])
    .await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), erp.addr);
    let app = restart(dir, Receiver::start().await).await;

    // Act: a small order is approved automatically and pushed to the ERP.
    let (s, b) = app.post_webhook(&deal("D-REDIRECT", 1, "8000.00")).await;
    assert_eq!((s, b["state"].as_str()), (202, Some("approved")), "{b}");
    let dead = dead_letter(&app).await;

    // Assert: one call to the ERP with its key; nothing reached the other host; the
    // dead letter names where the redirect pointed (host only) and why.
    assert!(other.seen().is_empty(), "the other host got {:?}", other.seen());
    let calls = erp.seen();
    assert_eq!(calls.len(), 1, "a 3xx is permanent, not retried: {calls:?}");
    assert_eq!(calls[0].api_key.as_deref(), Some(API_KEY));
    assert_eq!(dead["attempts"], 1);
    let err = dead["last_error"].as_str().unwrap();
    assert!(err.contains("HTTP 307") && err.contains("not followed"), "{err}");
    assert!(err.contains(&format!("http://{}", other.addr)), "names the Location's host: {err}");
    assert!(!err.contains("steal"), "but not its path or query: {err}");
    app.stop().await;
}

#[tokio::test]
async fn link_paging_stops_at_a_next_page_on_another_host() {
    // Arrange: a CRM whose first page links to its own second page, and whose second
    // page links to another host.
    let other = Scripted::start(Vec::new()).await;
    let other_url = format!("http://{}/deals?page=3", other.addr);
    let page = |records: Vec<Value>, next: String| {
        move || {
            let link = format!("<{next}>; rel=\"next\"");
            (StatusCode::OK, [("link", link)], axum::Json(json!({"results": records.clone()}))).into_response()
        }
    };
    let rec = |i: usize| {
        let mut d = deal(&format!("LP-{i}"), 1, "5000.00");
        d["updated_at"] = format!("2026-11-26T10:0{i}:00Z").into();
        d
    };
    let crm = Scripted::start(vec![
        ("/deals?page=2".into(), Box::new(page(vec![rec(2), rec(3)], other_url))),
        // Relative links resolve against the page's own URL.
        ("/deals".into(), Box::new(page(vec![rec(0), rec(1)], "/deals?page=2".into()))),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "127.0.0.1:9".parse().unwrap());
    let d = dir.path();
    std::fs::write(d.join("secrets/crm-poll"), API_KEY).unwrap();
    std::fs::write(
        d.join("connectors/crm-poll.toml"),
        format!(
            "kind = \"rest\"\nbase_url = \"http://{}\"\n\n[auth]\nkind = \"api_key\"\nheader = \"X-Api-Key\"\nvalue = \"file:secrets/crm-poll\"\n\n\
             [poll]\npath = \"/deals\"\nevery_secs = 1\nmapping = \"crm-poll\"\nrecords = \"$.results\"\n\
             watermark_field = \"$.updated_at\"\npaging = {{ kind = \"link\" }}\n",
            crm.addr
        ),
    )
    .unwrap();
    copy_file_with(
        d,
        "mappings/demo-crm.toml",
        "mappings/crm-poll.toml",
        &[(r#"connector = "demo-crm""#, r#"connector = "crm-poll""#)],
    );

    // Act: let the poller run a few times.
    let app = restart(dir, Receiver::start().await).await;
    wait_until("two runs stopped at the foreign link", || async {
        app.metrics().await.contains("orderbridge_poll_failures_total{connector=\"crm-poll\",kind=\"other\"} 2")
    })
    .await;

    // Assert: the first page (own host) was taken; the second, whose link leaves the
    // host, was not committed; nothing ever reached the other host.
    assert!(other.seen().is_empty(), "the other host got {:?}", other.seen());
    let (_, list) = app.api("/orders?connector=crm-poll&external_id=LP-1").await;
    assert_eq!(list["orders"].as_array().unwrap().len(), 1, "page 1 is ingested: {list}");
    let (_, list) = app.api("/orders?connector=crm-poll&external_id=LP-2").await;
    assert!(list["orders"].as_array().unwrap().is_empty(), "page 2 is not: {list}");
    let seen = crm.seen();
    assert!(seen.iter().all(|s| s.api_key.as_deref() == Some(API_KEY)));
    assert!(seen.iter().any(|s| s.path == "/deals?page=2"), "{seen:?}");
    app.stop().await;
}

#[tokio::test]
async fn an_id_of_dot_dot_cannot_rewrite_the_outbound_path() {
    // Arrange: the ERP's create_order goes to /orders/{external_id}/confirm, and the
    // CRM sends a deal whose id is `..` (which would make the path /confirm).
    let erp = Scripted::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), erp.addr);
    edit_file(dir.path(), "connectors/demo-erp.toml", |text| {
        text.replacen("path = \"/orders\"", "path = \"/orders/{{ external_id }}/confirm\"", 1)
    });
    let app = restart(dir, Receiver::start().await).await;

    // Act
    let mut bad = deal("..", 1, "8000.00");
    bad["deal"]["customer"]["id"] = "C-DOTS".into();
    let (s, b) = app.post_webhook(&bad).await;
    assert_eq!((s, b["state"].as_str()), (202, Some("approved")), "{b}");
    let (s, b) = app.post_webhook(&deal("a/b?c#d", 1, "8000.00")).await;
    assert_eq!(s, 202, "{b}");

    // Assert: `..` is refused (a dead letter naming the rule), never sent; `/`, `?`
    // and `#` stay inside their segment.
    let dead = dead_letter(&app).await;
    let err = dead["last_error"].as_str().unwrap();
    assert!(err.contains("cannot be `.` or `..`"), "{err}");
    wait_until("the other order reaches the ERP", || async { !erp.seen().is_empty() }).await;
    let paths: Vec<String> = erp.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/orders/a%2Fb%3Fc%23d/confirm"]);
    app.stop().await;
}
