//! Small leaks closed: link tokens never reach the log through the request span;
//! every answer is `nosniff`, pages and archived documents run, load and frame
//! nothing; an upstream error body is cut and scrubbed before it reaches the log or a
//! dead letter. The log is the real daemon's stderr.

use axum::http::StatusCode;
use axum::response::IntoResponse;
use orderbridge::clock::Clock;

use crate::crash::signed_post;
use crate::helpers::*;

fn log_of(d: &Daemon) -> Vec<String> {
    d.log.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_token_never_reaches_the_log() {
    // Arrange: an order waiting for approval and its approver's mailed link; then the
    // order's row is damaged on disk, so opening the link logs an error in its span.
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().clock(Clock::system()).mail(&smtp).start().await;
    let (s, b) = app.post_webhook(&deal("D-LOG-TOKEN", 1, "1250000.00")).await;
    assert_eq!((s, b["state"].as_str()), (202, Some("awaiting_approval")), "{b}");
    let id = b["order_id"].as_str().unwrap().to_owned();
    wait_until("the approval mail", || async {
        smtp.messages().iter().any(|m| m.part("text/plain").contains("/pages/approval/"))
    })
    .await;
    let link = smtp.messages().into_iter().find(|m| m.part("text/plain").contains("/pages/approval/")).unwrap();
    let link = link.page_link();
    let path = &link[link.find("/pages/").unwrap()..];
    let token = path.trim_start_matches("/pages/approval/").to_owned();
    assert!(token.len() > 24, "{token}");
    let dir = app.stop_and_release().await;
    {
        let settings = load_settings(dir.path());
        let engine = orderbridge::store::open_engine(&settings.store).unwrap();
        let oid: orderbridge::domain::OrderId = id.parse().unwrap();
        let mut key = vec![b'o'];
        key.extend_from_slice(oid.as_bytes());
        let mut batch = orderbridge::store::kv::Batch::default();
        batch.put(key, b"\x00\x00\x00\x05{not json".to_vec());
        engine.write(batch).unwrap();
        engine.sync().unwrap();
    }
    let daemon = start_daemon(dir.path(), &[]);

    // Act: the approver opens the link.
    let resp = client().get(format!("http://{}{path}", daemon.addr)).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    wait_until("the page logs its error", || async {
        log_of(&daemon).iter().any(|l| l.contains("page cannot read the store"))
    })
    .await;

    // Assert: the error line carries the route's shape, never the token.
    let log = log_of(&daemon);
    let line = log.iter().find(|l| l.contains("page cannot read the store")).unwrap();
    assert!(line.contains("/pages/approval/…"), "{line}");
    let leaked: Vec<&String> = log.iter().filter(|l| l.contains(&token)).collect();
    assert!(leaked.is_empty(), "the token is in the log: {leaked:?}");
    drop(daemon);
}

#[tokio::test]
async fn every_answer_is_nosniff_and_pages_and_documents_run_and_frame_nothing() {
    let app = spawn_app().await;
    let header =
        |r: &reqwest::Response, n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();

    // Every answer, whatever the route or status.
    for (method, path) in [
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/api/orders"),
        ("GET", "/no/such/route"),
        ("POST", "/webhooks/demo-crm"),
        ("GET", "/pages/approval/not-a-token"),
    ] {
        let r = app.client.request(method.parse().unwrap(), app.url(path)).send().await.unwrap();
        assert_eq!(header(&r, "x-content-type-options"), "nosniff", "{method} {path} ({})", r.status());
    }
    for (method, path) in [("GET", "/metrics"), ("GET", "/api/orders"), ("GET", "/no/such/route")] {
        let r = app.client.request(method.parse().unwrap(), app.admin_url(path)).send().await.unwrap();
        assert_eq!(header(&r, "x-content-type-options"), "nosniff", "admin: {method} {path} ({})", r.status());
    }

    // A page: nothing to load or run, no <base>, not framed.
    let r = app.client.get(app.url("/pages/approval/not-a-token")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let csp = header(&r, "content-security-policy");
    for part in ["default-src 'none'", "base-uri 'none'", "frame-ancestors 'none'", "form-action 'self'"] {
        assert!(csp.contains(part), "{part} missing: {csp}");
    }

    // An archived document (the contract made when execution starts).
    let (s, b) = app.post_webhook(&deal("D-DOC-HEADERS", 1, "8000.00")).await;
    assert_eq!(s, 202, "{b}");
    let id = b["order_id"].as_str().unwrap().to_owned();
    wait_until("the contract is archived", || async {
        app.order(&id).await["references"].get("documents.contract").is_some()
    })
    .await;
    let r = app
        .client
        .get(app.admin_url(&format!("/api/orders/{id}/documents/contract")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let csp = header(&r, "content-security-policy");
    for part in
        ["default-src 'none'", "style-src 'unsafe-inline'", "frame-ancestors 'none'", "base-uri 'none'", "sandbox"]
    {
        assert!(csp.contains(part), "{part} missing: {csp}");
    }
    assert!(!csp.contains("script-src"), "{csp}");
    assert_eq!(header(&r, "x-frame-options"), "DENY");
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    assert_eq!(header(&r, "content-disposition"), format!("attachment; filename=\"contract-{id}.html\""));
    assert_eq!(header(&r, "cache-control"), "no-store");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_error_body_is_cut_and_scrubbed_before_the_log_and_the_dead_letter() {
    // Arrange: the ERP refuses the push with a long body that echoes credentials: our
    // own token, another system's bearer token, a key in a URL and a password.
    let body = format!(
        r#"{{"error": "order refused by ERP validation", "echo": "Authorization: Bearer {ERP_TOKEN}", "upstream": "called billing with Bearer OTHER-SYSTEM-TOKEN-0123456789", "callback": "https://hooks.erp.example/cb?api_key=LEAKED-QUERY-KEY-0123&page=2", "password": "LEAKED-PASSWORD-0123", "detail": "{}"}}"#,
        "x".repeat(3000)
    );
    let erp = Scripted::start(vec![(
        "/orders".into(),
        Box::new(move || {
            (StatusCode::BAD_REQUEST, [("content-type", "application/json")], body.clone()).into_response()
        }),
    )])
    .await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), erp.addr);
    only_approval(dir.path());
    let daemon = start_daemon(dir.path(), &[]);
    let client = client();

    // Act: an order approved automatically is pushed and refused (a 400 is permanent).
    let (s, b) = signed_post(&client, daemon.addr, "/webhooks/demo-crm", &deal("D-ECHO", 1, "8000.00")).await;
    assert_eq!((s, b["state"].as_str()), (202, Some("approved")), "{b}");
    wait_until("the push is dead-lettered", || async {
        daemon_api(&client, daemon.admin, "/outbox/dead").await["effects"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;

    // Assert: the dead letter quotes the start of the answer, scrubbed and cut; the log
    // holds none of the credentials either.
    let dead = daemon_api(&client, daemon.admin, "/outbox/dead").await;
    let err = dead["effects"][0]["last_error"].as_str().unwrap().to_owned();
    assert!(err.contains("HTTP 400") && err.contains("order refused by ERP validation"), "{err}");
    assert!(err.chars().count() <= 600, "cut: {} characters", err.chars().count());
    assert!(err.contains("[redacted]"), "{err}");
    let secrets = [ERP_TOKEN, "OTHER-SYSTEM-TOKEN", "LEAKED-QUERY-KEY", "LEAKED-PASSWORD"];
    for s in secrets {
        assert!(!err.contains(s), "`{s}` in the dead letter: {err}");
    }
    wait_until("the dead letter is logged", || async { log_of(&daemon).iter().any(|l| l.contains("HTTP 400")) }).await;
    for line in log_of(&daemon) {
        for s in secrets {
            assert!(!line.contains(s), "`{s}` in the log: {line}");
        }
        assert!(!line.contains(&"x".repeat(400)), "an uncut body in the log: {line}");
    }
    drop(daemon);
}
