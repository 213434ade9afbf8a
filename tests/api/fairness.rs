//! Fair outbound scheduling end to end: a slow system holds only its own slots (mail
//! and other connectors go on), a 429 pauses its connector until Retry-After without
//! using attempts, and a connector never has more calls in flight than its
//! `[limits] concurrency`, and under full intake load the dispatcher holds back to
//! `dispatcher.busy_concurrency` until intake eases. The ERP is a small server here that can hold requests,
//! count them and answer 429.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::helpers::*;

/// One request the sink answered.
#[derive(Debug, Clone)]
struct Answered {
    key: String,
    status: u16,
    /// When it arrived, and when its answer left (on the test's monotonic clock).
    arrived: Instant,
    answered: Instant,
}

struct SinkState {
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    /// While true, requests wait before they are answered.
    hold: tokio::sync::watch::Sender<bool>,
    /// Answer this many requests with 429 and `Retry-After: retry_after`.
    throttle_next: AtomicU32,
    retry_after: AtomicU32,
    answered: Mutex<Vec<Answered>>,
}

/// An ERP stand-in that counts the requests in flight at once.
#[derive(Clone)]
struct Sink {
    addr: std::net::SocketAddr,
    state: Arc<SinkState>,
}

impl Sink {
    async fn start() -> Sink {
        let state = Arc::new(SinkState {
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
            hold: tokio::sync::watch::channel(false).0,
            throttle_next: AtomicU32::new(0),
            retry_after: AtomicU32::new(0),
            answered: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new().fallback(sink_answer).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Sink { addr, state }
    }
    fn hold(&self, hold: bool) {
        self.state.hold.send_replace(hold);
    }
    fn throttle_next(&self, n: u32, retry_after_secs: u32) {
        self.state.retry_after.store(retry_after_secs, Ordering::SeqCst);
        self.state.throttle_next.store(n, Ordering::SeqCst);
    }
    fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }
    fn most_in_flight(&self) -> usize {
        self.state.most_in_flight.load(Ordering::SeqCst)
    }
    fn answered(&self) -> Vec<Answered> {
        self.state.answered.lock().unwrap().clone()
    }
}

async fn sink_answer(State(s): State<Arc<SinkState>>, headers: HeaderMap) -> Response {
    let arrived = Instant::now();
    let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.most_in_flight.fetch_max(now, Ordering::SeqCst);
    let mut held = s.hold.subscribe();
    let _ = held.wait_for(|hold| !*hold).await;
    let throttled = s.throttle_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let response = if throttled {
        let wait = s.retry_after.load(Ordering::SeqCst).to_string();
        (StatusCode::TOO_MANY_REQUESTS, [("retry-after", wait)], axum::Json(json!({"error": "slow down"})))
            .into_response()
    } else {
        (StatusCode::OK, axum::Json(json!({"erp_order": "SO-1"}))).into_response()
    };
    s.in_flight.fetch_sub(1, Ordering::SeqCst);
    let status = response.status().as_u16();
    s.answered.lock().unwrap().push(Answered { key, status, arrived, answered: Instant::now() });
    response
}

/// The example configuration without execution, with mail to the customer only, the
/// ERP (`demo-erp`) at `sink` with `erp_limits` in its file and `settings` applied;
/// the other connectors at `erp`.
async fn app_with_sink(
    sink: &Sink,
    erp: Receiver,
    smtp: &SmtpServer,
    erp_limits: &str,
    settings: impl Fn(&mut Settings) + Send + Sync + 'static,
    extra_rules: &str,
) -> TestApp {
    let notify = "[[notify]]\non = \"received\"\ntemplate = \"order_received\"\nto = [\"customer\"]\n";
    let extra_rules = extra_rules.to_owned();
    let (erp_at, sink_at) = (erp.addr, sink.addr);
    let erp_limits = erp_limits.to_owned();
    TestApp::builder()
        .erp(erp)
        .mail(smtp)
        .only_approval()
        .settings(settings)
        .files(move |d| {
            std::fs::write(d.join("config/notifications.toml"), notify).unwrap();
            edit_file(d, "config/rules.toml", |text| format!("{text}\n{extra_rules}"));
            edit_file(d, "connectors/demo-erp.toml", |text| {
                let from = format!("base_url = \"http://{erp_at}\"");
                assert!(text.contains(&from) && text.contains("[limits]\n"), "{text}");
                let start = text.find("[limits]\n").unwrap();
                let end = start + text[start..].find("\n[auth]").unwrap();
                // A held call must outlive the test's waits (no timeout and retry in between).
                format!("{}[limits]\n{erp_limits}\n{}", &text[..start], &text[end..])
                    .replace(&from, &format!("base_url = \"http://{sink_at}\""))
                    .replace("timeout_secs = 10", "timeout_secs = 300")
            });
        })
        .start()
        .await
}

async fn outbox_of(app: &TestApp, connector: &str) -> Vec<Value> {
    let (_, v) = app.api("/outbox?limit=1000").await;
    v["effects"].as_array().unwrap().iter().filter(|e| e["connector"] == connector).cloned().collect()
}

fn gauge(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn a_hanging_system_holds_only_its_own_slots_and_mail_and_other_connectors_go_on() {
    let sink = Sink::start().await;
    sink.hold(true);
    let erp = Receiver::start().await;
    let smtp = SmtpServer::start(&[]);
    // Three shared slots; the hanging ERP may use two. Before fair scheduling, its
    // waiting effects took all three and nothing else was sent.
    let ticket_too = "[[effects]]\non = \"approved\"\nconnector = \"service-desk\"\noperation = \"create_ticket\"\n";
    let app =
        app_with_sink(&sink, erp.clone(), &smtp, "concurrency = 2", |s| s.dispatcher.concurrency = 3, ticket_too).await;

    let mut orders = Vec::new();
    for i in 0..6 {
        orders.push(approved_order(&app, &format!("D-HANG-{i}")).await);
    }

    // Mail and the service desk get everything while the ERP hangs on two calls.
    smtp.wait_for(6).await;
    wait_until("every ticket reached the service desk", || async {
        erp.deliveries().iter().filter(|d| d.path == "/tickets" && d.status == 200).count() == 6
    })
    .await;
    wait_until("the ERP holds its two calls", || async { sink.in_flight() == 2 }).await;
    let waiting = outbox_of(&app, "demo-erp").await;
    assert_eq!(waiting.len(), 6, "{waiting:?}");
    assert!(waiting.iter().all(|e| e["attempts"] == 0), "waiting for a slot uses no attempt: {waiting:?}");
    // Delivered; their outcomes are recorded right after.
    wait_until("mail and tickets leave the outbox", || async {
        outbox_of(&app, "mail").await.is_empty() && outbox_of(&app, "service-desk").await.is_empty()
    })
    .await;
    let m = app.metrics().await;
    assert_eq!(gauge(&m, "orderbridge_effects_in_flight{connector=\"demo-erp\"}"), Some(2.0), "{m}");

    // The ERP answers again: its backlog goes through, never more than two at once.
    sink.hold(false);
    app.drain_outbox().await;
    let answered = sink.answered();
    assert_eq!(answered.len(), 6, "{answered:?}");
    assert!(answered.iter().all(|a| a.status == 200));
    for o in &orders {
        assert!(answered.iter().any(|a| a.key.starts_with(&format!("orderbridge:{o}."))), "{o} pushed: {answered:?}");
    }
    assert_eq!(sink.most_in_flight(), 2);
    let (_, dead) = app.api("/outbox/dead").await;
    assert!(dead["effects"].as_array().unwrap().is_empty(), "{dead}");
    app.stop().await;
}

#[tokio::test]
async fn a_429_pauses_the_connector_until_retry_after_and_uses_no_attempt() {
    let sink = Sink::start().await;
    sink.throttle_next(2, 4);
    let erp = Receiver::start().await;
    let smtp = SmtpServer::start(&[]);
    // One call at a time, so each call after a 429 started after the daemon read it;
    // one attempt allowed, so a 429 counted as an attempt would dead-letter at once.
    let app = app_with_sink(&sink, erp.clone(), &smtp, "concurrency = 1", |s| s.dispatcher.max_attempts = 1, "").await;

    let first = approved_order(&app, "D-RL-0").await;
    wait_until("the 429 is recorded", || async {
        outbox_of(&app, "demo-erp").await.first().is_some_and(|e| e["last_error"].as_str().is_some())
    })
    .await;
    let effect = outbox_of(&app, "demo-erp").await[0].clone();
    assert_eq!(effect["attempts"], 0, "a rate limit uses no attempt: {effect}");
    assert!(effect["last_error"].as_str().unwrap().contains("HTTP 429"), "{effect}");
    let (_, connectors) = app.api("/connectors").await;
    let c = connectors["connectors"].as_array().unwrap().iter().find(|c| c["id"] == "demo-erp").unwrap().clone();
    assert!(c["rate_limited_until"].is_string() && c["paused"] == false, "{c}");
    let m = app.metrics().await;
    assert_eq!(gauge(&m, "orderbridge_connector_paused{connector=\"demo-erp\",reason=\"rate_limit\"}"), Some(1.0));

    // More effects for the paused connector wait for the pause to end.
    let mut orders = vec![first];
    for i in 1..3 {
        orders.push(approved_order(&app, &format!("D-RL-{i}")).await);
    }
    app.drain_outbox().await;

    let answered = sink.answered();
    let statuses: Vec<u16> = answered.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [429, 429, 200, 200, 200], "{answered:?}");
    // Nothing reached the ERP while it was paused: each call after a 429 came at
    // least Retry-After (4 s) after that answer left.
    for pair in answered.windows(2).filter(|w| w[0].status == 429) {
        let gap = pair[1].arrived.duration_since(pair[0].answered);
        assert!(gap >= Duration::from_millis(3900), "a call {gap:?} after a 429 with Retry-After: 4");
    }
    let (_, dead) = app.api("/outbox/dead").await;
    assert!(dead["effects"].as_array().unwrap().is_empty(), "a rate limit never dead-letters: {dead}");
    for o in &orders {
        let order = app.order(o).await;
        let done = order["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["event"]["type"] == "effect_succeeded" && e["event"]["effect"] == "demo-erp.create_order")
            .unwrap_or_else(|| panic!("{o} pushed: {order}"))
            .clone();
        assert_eq!(done["event"]["attempts"], 1, "the 429s did not count: {done}");
    }
    let m = app.metrics().await;
    assert!(m.contains("orderbridge_connector_rate_limited_total{connector=\"demo-erp\"} 2"), "{m}");
    assert!(
        m.contains("orderbridge_effect_attempts_total{connector=\"demo-erp\",operation=\"create_order\",outcome=\"rate_limited\"} 2"),
        "{m}"
    );
    wait_until("the pause is reported over", || async {
        gauge(&app.metrics().await, "orderbridge_connector_paused{connector=\"demo-erp\",reason=\"rate_limit\"}")
            == Some(0.0)
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_connector_never_has_more_calls_in_flight_than_its_concurrency() {
    let sink = Sink::start().await;
    sink.hold(true);
    let erp = Receiver::start().await;
    let smtp = SmtpServer::start(&[]);
    let app = app_with_sink(&sink, erp.clone(), &smtp, "concurrency = 3", |_| {}, "").await;
    for i in 0..10 {
        approved_order(&app, &format!("D-CC-{i}")).await;
    }
    wait_until("the ERP holds three calls", || async { sink.in_flight() == 3 }).await;
    // Every effect is due; the other seven wait for a slot (mail went meanwhile).
    smtp.wait_for(10).await;
    wait_until("the seven others wait in the outbox", || async {
        let waiting = outbox_of(&app, "demo-erp").await;
        waiting.len() == 10 && waiting.iter().all(|e| e["attempts"] == 0)
    })
    .await;
    assert_eq!(sink.in_flight(), 3);
    sink.hold(false);
    app.drain_outbox().await;
    assert_eq!(sink.answered().len(), 10);
    assert_eq!(sink.most_in_flight(), 3, "never more than [limits] concurrency = 3");
    // The queues and their alert sizes ([limits] in orderbridge.toml) are on /metrics.
    let m = app.metrics().await;
    for line in [
        "orderbridge_outbox_pending 0",
        "orderbridge_outbox_alert_threshold 100000",
        "orderbridge_dead_letters_alert_threshold 1000",
        "orderbridge_unmatched_payments 0",
        "orderbridge_unmatched_payments_alert_threshold 1000",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} in {m}");
    }
    app.stop().await;
}

#[tokio::test]
async fn under_full_intake_load_the_dispatcher_holds_back_and_goes_on_when_intake_eases() {
    let sink = Sink::start().await;
    sink.hold(true);
    let erp = Receiver::start().await;
    let smtp = SmtpServer::start(&[]);
    // One delivery being taken in is "full load" here; then one effect at a time.
    let app = app_with_sink(
        &sink,
        erp.clone(),
        &smtp,
        "concurrency = 3",
        |s| {
            s.dispatcher.concurrency = 3;
            s.dispatcher.busy_intake = Some(1);
            s.dispatcher.busy_concurrency = 1;
        },
        "",
    )
    .await;

    // A delivery whose body is still arriving keeps intake busy for as long as it does.
    let body = serde_json::to_vec(&deal("D-BUSY-SLOW", 1, "8000.00")).unwrap();
    let id = format!("msg_{}", uuid::Uuid::now_v7().simple());
    let mut head = format!(
        "POST /webhooks/demo-crm HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        app.addr,
        body.len()
    );
    for (k, v) in app.signed_headers(&id, app.state.clock.now().timestamp(), &body) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&body[..body.len() / 2]).await.unwrap();
    wait_until("the slow delivery is being taken in", || async { app.state.orders.intake_load() == 1 }).await;

    for i in 0..4 {
        approved_order(&app, &format!("D-BUSY-{i}")).await;
    }
    smtp.wait_for(4).await;
    wait_until("the ERP holds one call", || async { sink.in_flight() == 1 }).await;
    wait_until("the other three wait in the outbox", || async {
        let waiting = outbox_of(&app, "demo-erp").await;
        waiting.len() == 4 && waiting.iter().all(|e| e["attempts"] == 0)
    })
    .await;
    let m = app.metrics().await;
    assert_eq!(gauge(&m, "orderbridge_dispatcher_concurrency"), Some(1.0), "{m}");
    assert_eq!((sink.in_flight(), sink.most_in_flight()), (1, 1), "three free slots, one used under load");

    // The slow delivery completes: intake eases and the full three slots are back.
    slow.write_all(&body[body.len() / 2..]).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let n = slow.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    wait_until("the ERP holds three calls", || async { sink.in_flight() == 3 }).await;
    let m = app.metrics().await;
    assert_eq!(gauge(&m, "orderbridge_dispatcher_concurrency"), Some(3.0), "{m}");

    sink.hold(false);
    app.drain_outbox().await;
    assert_eq!(sink.answered().len(), 5, "every order pushed once: {:?}", sink.answered());
    assert_eq!(sink.most_in_flight(), 3);
    app.stop().await;
}
