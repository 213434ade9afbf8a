//! Slow and hostile clients, over raw TCP against the real daemon: connections that
//! trickle their headers are closed, and do not keep a signed webhook from its 202;
//! a request that finds no free slot gets 503 with `Retry-After` instead of hanging;
//! webhooks are refused on their headers before their body is read; `/api` and
//! `/metrics` live on the admin listener only. No durations are asserted: every wait
//! is a bounded poll or a bounded read.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::crash;
use crate::helpers::*;

/// Reads until the server closes the connection (EOF or reset), for at most 60 s.
/// Returns what it sent before closing, or `None` if it never closed.
async fn read_until_closed(s: &mut TcpStream) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read_all).await.ok()?;
    Some(String::from_utf8_lossy(&got).into_owned())
}

/// Reads one HTTP answer's status line and headers (bounded: 60 s).
async fn read_head(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read).await.expect("an answer within 60 s");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_clients_trickling_headers_neither_stop_webhooks_nor_keep_their_connections() {
    // Arrange: the built daemon on the example configuration (default timeouts), so
    // its sockets are its own process's, as in production.
    let erp = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), erp.addr);
    let daemon = start_daemon(dir.path(), &[]);
    let addr = daemon.addr;
    const SLOW: usize = 300;
    let started = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let mut slow = Vec::new();
    for i in 0..SLOW {
        let (started, closed) = (started.clone(), closed.clone());
        slow.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("the daemon accepts the connection");
            // A request line and a header that never ends, one byte a second.
            let head = format!("POST /webhooks/demo-crm HTTP/1.1\r\nHost: slow-{i}\r\nX-Slow: ");
            let mut bytes = head.into_bytes().into_iter().chain(std::iter::repeat(b'a'));
            s.write_all(&[bytes.next().unwrap()]).await.unwrap();
            started.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 1024];
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            // Bounded: the server must close it long before this many bytes.
            for _ in 0..300 {
                tokio::select! {
                    r = s.read(&mut buf) => match r {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {} // an answer (say, 408): wait for the close
                    },
                    _ = tick.tick() => {
                        if s.write_all(&[bytes.next().unwrap()]).await.is_err() {
                            break;
                        }
                    }
                }
            }
            closed.fetch_add(1, Ordering::SeqCst);
        }));
    }
    wait_until("every slow client has connected and sent its first byte", || async {
        started.load(Ordering::SeqCst) == SLOW
    })
    .await;

    // Act: while they trickle, the CRM delivers a signed order.
    let (status, body) =
        crash::signed_post(&client(), addr, "/webhooks/demo-crm", &deal("D-SLOWLORIS", 1, "9000.00")).await;

    // Assert: accepted, and every trickling connection is closed by the server (it
    // never sent its headers in full); the daemon still answers afterwards.
    assert_eq!(status, 202, "{body}");
    wait_until("the server has closed every trickling connection", || async { closed.load(Ordering::SeqCst) == SLOW })
        .await;
    for t in slow {
        t.await.unwrap();
    }
    let health = client().get(format!("http://{addr}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let order = daemon_api(&client(), daemon.admin, &format!("/orders/{}", body["order_id"].as_str().unwrap())).await;
    assert_eq!(order["source"]["external_id"], "D-SLOWLORIS");
    drop(daemon);
}

#[tokio::test]
async fn a_connection_that_sends_nothing_or_stays_idle_is_closed() {
    let app = TestApp::builder()
        .settings(|s| {
            s.header_read_timeout = Duration::from_secs(1);
            s.idle_timeout = Duration::from_secs(1);
            s.body_timeout = Duration::from_secs(30);
        })
        .start()
        .await;
    // A request being handled for longer than both limits (its body comes late) is
    // not cut: it is answered, on the same connection.
    let body = serde_json::to_vec(&deal("D-BUSY-PAST-IDLE", 1, "9000.00")).unwrap();
    let mut busy = TcpStream::connect(app.addr).await.unwrap();
    let head = signed_head(&app, "msg_busy", &body, body.len(), "Connection: close\r\n");
    busy.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    busy.write_all(&body).await.unwrap();
    let answer = read_until_closed(&mut busy).await.expect("answered, then closed as asked");
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");

    // Connected, never a byte: closed (the header-read limit counts from the connection).
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    assert_eq!(read_until_closed(&mut silent).await.as_deref(), Some(""), "closed without an answer");

    // A kept-alive connection after its answer: closed once idle.
    let mut kept = TcpStream::connect(app.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let answered = read_until_closed(&mut kept).await.expect("the idle connection is closed");
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    app.stop().await;
}

#[tokio::test]
async fn headers_that_trickle_in_on_a_kept_alive_connection_get_the_header_limit_not_the_idle_one() {
    let app = TestApp::builder()
        .settings(|s| {
            s.header_read_timeout = Duration::from_secs(1);
            s.idle_timeout = Duration::from_secs(3600);
        })
        .start()
        .await;
    // One request answered; then the start of another whose headers never end.
    let mut kept = TcpStream::connect(app.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(30), kept.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Idle for longer than the header limit (the watchdog has seen it idle), then
    // headers that never end.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n").await.unwrap();
    // Closed by the header limit (the idle one is an hour; the read gives up at 60 s).
    assert_eq!(read_until_closed(&mut kept).await.as_deref(), Some(""), "closed without a second answer");
    app.stop().await;
}

#[tokio::test]
async fn api_and_metrics_are_served_on_the_admin_listener_only() {
    let app = spawn_app().await;
    let c = &app.client;
    assert_ne!(app.addr.port(), app.admin.port());

    // The public listener: webhooks, pages and health; not the API or the metrics.
    for path in ["/api/orders", "/api/outbox", "/api", "/metrics"] {
        let r = c.get(app.url(path)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        assert_eq!(r.status(), 404, "public {path}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains("admin listener"), "public {path}: {v}");
    }
    let r = c.post(app.url("/api/payments")).bearer_auth(ADMIN_TOKEN).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 404, "public POST /api/payments");
    assert_eq!(c.get(app.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(app.url("/readyz")).send().await.unwrap().status(), 200);
    let (s, b) = app.post_webhook(&deal("D-LISTENERS", 1, "9000.00")).await;
    assert_eq!(s, 202, "{b}");

    // The admin listener: the API (with its token) and the metrics; no webhooks or pages.
    let r = c.get(app.admin_url("/api/orders")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(c.get(app.admin_url("/api/orders")).send().await.unwrap().status(), 401, "still needs the token");
    let metrics = c.get(app.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("orderbridge_webhooks_total"), "{metrics}");
    let r = c.post(app.admin_url("/webhooks/demo-crm")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 404, "no webhooks on the admin listener");
    assert_eq!(c.get(app.admin_url("/pages/status/x")).send().await.unwrap().status(), 404);
    assert_eq!(c.get(app.admin_url("/healthz")).send().await.unwrap().status(), 200);
    app.stop().await;
}

/// Headers of a delivery to demo-crm that are well formed and fresh, for any body.
fn fresh_headers(app: &TestApp, content_length: usize) -> String {
    signed_head(app, "msg_held", b"not the body", content_length, "")
}

/// The head of a delivery to demo-crm signed over `signed` (with `extra` header lines).
fn signed_head(app: &TestApp, id: &str, signed: &[u8], content_length: usize, extra: &str) -> String {
    let sig = app.signed_headers(id, app.state.clock.now().timestamp(), signed);
    let mut head = format!("POST /webhooks/demo-crm HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{extra}");
    for (k, v) in sig.iter().filter(|(k, _)| *k != "content-type") {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {content_length}\r\n\r\n"));
    head
}

#[tokio::test]
async fn a_request_that_finds_no_free_slot_gets_503_with_retry_after_instead_of_hanging() {
    // One slot; a short wait for it; bodies may take long (so the holder keeps it).
    let app = TestApp::builder()
        .settings(|s| {
            s.max_concurrent_requests = 1;
            s.queue_timeout = Duration::from_secs(1);
        })
        .start()
        .await;
    // Hold the only slot: a webhook whose headers are fine and whose body never comes.
    let mut holder = TcpStream::connect(app.addr).await.unwrap();
    holder.write_all(fresh_headers(&app, 100).as_bytes()).await.unwrap();
    holder.write_all(b"{\"event\":").await.unwrap();

    // Another request waits for the slot, then is told to come back; until the holder
    // has the slot, one may still get through (bounded number of tries).
    let mut refused = None;
    for _ in 0..50 {
        let r = app.client.get(app.url("/healthz")).send().await.expect("an answer, not a hang");
        if r.status() == 503 {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = refused.expect("a request without a free slot is refused");
    assert_eq!(r.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("5"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "busy", "{v}");
    assert!(app.metrics().await.contains("orderbridge_http_busy_total{listener=\"public\"}"));

    // The admin listener has slots of its own: operators can still look.
    let (s, _) = app.api("/outbox").await;
    assert_eq!(s, 200);
    drop(holder);
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_trickles_past_its_time_gets_408_and_frees_the_slot() {
    let app = TestApp::builder()
        .settings(|s| {
            s.max_concurrent_requests = 1;
            s.body_timeout = Duration::from_secs(1);
        })
        .start()
        .await;
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(fresh_headers(&app, 100).as_bytes()).await.unwrap();
    slow.write_all(b"{\"event\":").await.unwrap();
    let head = read_head(&mut slow).await;
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    // The slot is free again: a signed order goes through.
    let (s, b) = app.post_webhook(&deal("D-AFTER-408", 1, "9000.00")).await;
    assert_eq!(s, 202, "{b}");
    app.stop().await;
}

#[tokio::test]
async fn webhooks_are_refused_on_their_headers_before_the_body_is_read() {
    let app = spawn_app().await;
    let now = app.state.clock.now().timestamp();
    let stale = app.signed_headers("msg_old", now - 3600, b"{}");
    let stale: String = stale.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    for (what, path, headers, status) in [
        ("no signature headers", "/webhooks/demo-crm", String::new(), "401"),
        ("a timestamp outside the window", "/webhooks/demo-crm", stale.clone(), "401"),
        ("an unknown connector", "/webhooks/no-such-system", stale.clone(), "404"),
        ("no signature headers (events)", "/webhooks/demo-erp/events", String::new(), "401"),
    ] {
        // Announce a body and send none of it: the answer must come anyway.
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        let head = format!("POST {path} HTTP/1.1\r\nHost: t\r\n{headers}Content-Length: 500000\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        let answer = read_head(&mut s).await;
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{what}: {answer}");
    }
    // Too large by its declared length: 413, also before any of it is read.
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    let head = format!("POST /webhooks/demo-crm HTTP/1.1\r\nHost: t\r\n{stale}Content-Length: 99999999\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    assert!(read_head(&mut s).await.starts_with("HTTP/1.1 413"));
    app.stop().await;
}
