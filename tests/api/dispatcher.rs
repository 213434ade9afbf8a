//! The outbox dispatcher against a real receiver over TCP: downstream down, then up;
//! permanent refusal; dead letters and replay.

use crate::helpers::*;

fn metric(text: &str, line_prefix: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// demo-erp on OAuth2 client credentials from the token endpoint at `token_addr`
/// (`extra`: more keys of its `[auth]`), with the client secret in a file.
fn on_oauth2(d: &std::path::Path, token_addr: std::net::SocketAddr, extra: &str) {
    std::fs::write(d.join("secrets/erp-oauth"), "s3cret").unwrap();
    let auth = format!(
        "kind = \"oauth2_client_credentials\"\ntoken_url = \"http://{token_addr}/oauth/token\"\nclient_id = \"erp-client\"\nclient_secret = \"file:secrets/erp-oauth\"{extra}"
    );
    replace_in_file(d, "connectors/demo-erp.toml", &[("kind = \"bearer\"\ntoken = \"file:secrets/demo-erp\"", &auth)]);
}

#[tokio::test]
async fn downstream_down_then_up_delivers_every_effect_exactly_once() {
    let erp = Receiver::start().await;
    erp.fail_next(7);
    let app = TestApp::builder().erp(erp.clone()).only_approval().start().await;
    let mut orders = Vec::new();
    for i in 0..4 {
        orders.push(approved_order(&app, &format!("D-DOWN-{i}")).await);
    }
    app.drain_outbox().await;

    let accepted = erp.accepted_per_key();
    assert_eq!(accepted.len(), 4, "every effect arrived: {accepted:?}");
    assert!(accepted.values().all(|&n| n == 1), "none arrived twice: {accepted:?}");
    for o in &orders {
        let key = format!("orderbridge:{o}.4.0");
        assert_eq!(accepted.get(&key), Some(&1), "key {key} in {accepted:?}");
    }
    let d = erp.deliveries();
    assert_eq!(d.iter().filter(|d| d.status == 503).count(), 7);
    assert!(d.iter().all(|d| d.authorization.as_deref() == Some(&format!("Bearer {ERP_TOKEN}"))));
    assert_eq!(d[0].body["amount"]["amount"], "8000.00", "the envelope, without the customer: {}", d[0].body);

    let m = app.metrics().await;
    let retries = metric(
        &m,
        "orderbridge_effect_attempts_total{connector=\"demo-erp\",operation=\"create_order\",outcome=\"retry\"}",
    );
    let ok = metric(
        &m,
        "orderbridge_effect_attempts_total{connector=\"demo-erp\",operation=\"create_order\",outcome=\"success\"}",
    );
    assert_eq!((retries, ok), (7, 4), "{m}");

    // The audit records the success, and the chains verify.
    let order = app.order(&orders[0]).await;
    let last = order["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["event"]["type"], "effect_succeeded");
    assert_eq!(last["event"]["effect"], "demo-erp.create_order");
    let (_, v) = app.api("/audit/verify").await;
    assert_eq!(v["intact"], true);
    app.stop().await;
}

#[tokio::test]
async fn an_effect_that_never_succeeds_is_dead_lettered_and_can_be_replayed() {
    let erp = Receiver::start().await;
    erp.set_down(true);
    let app =
        TestApp::builder().erp(erp.clone()).only_approval().settings(|s| s.dispatcher.max_attempts = 3).start().await;
    let order = approved_order(&app, "D-DEAD").await;
    app.drain_outbox().await;

    let (_, dead) = app.api("/outbox/dead").await;
    let dead = dead["effects"].as_array().unwrap().clone();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["attempts"], 3);
    let err = dead[0]["last_error"].as_str().unwrap();
    assert!(err.contains("HTTP 503") && err.contains("maintenance"), "{err}");
    assert_eq!(erp.deliveries().len(), 3);
    assert!(app.metrics().await.contains("orderbridge_dead_letters 1"));

    // Fixed downstream; the operator replays.
    erp.set_down(false);
    let effect_id = dead[0]["id"].as_str().unwrap();
    let (s, b) = app.api_post(&format!("/outbox/dead/{effect_id}/replay")).await;
    assert_eq!(s, 200, "{b}");
    app.drain_outbox().await;
    wait_until("the replayed effect is delivered", || async { erp.accepted_per_key().len() == 1 }).await;
    assert_eq!(erp.accepted_per_key().values().copied().collect::<Vec<_>>(), [1]);
    let (_, dead) = app.api("/outbox/dead").await;
    assert!(dead["effects"].as_array().unwrap().is_empty());

    let events: Vec<String> = app.order(&order).await["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["type"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        events.ends_with(&["effect_dead_lettered".into(), "effect_replayed".into(), "effect_succeeded".into()]),
        "{events:?}"
    );

    let (s, _) = app.api_post(&format!("/outbox/dead/{effect_id}/replay")).await;
    assert_eq!(s, 404, "a dead letter replays once");
    app.stop().await;
}

#[tokio::test]
async fn a_permanent_refusal_dead_letters_at_once_with_the_vendor_message() {
    let erp = Receiver::start().await;
    erp.set_refuse(true);
    let app = TestApp::builder().erp(erp.clone()).only_approval().start().await;
    approved_order(&app, "D-400").await;
    app.drain_outbox().await;
    let (_, dead) = app.api("/outbox/dead").await;
    let err = dead["effects"][0]["last_error"].as_str().unwrap().to_owned();
    assert!(err.contains("HTTP 400") && err.contains("product code unknown to ERP"), "{err}");
    assert_eq!(erp.deliveries().len(), 1, "a 400 is not retried");
    app.stop().await;
}

#[tokio::test]
async fn a_timed_out_push_is_retried_with_the_same_key() {
    let erp = Receiver::start().await;
    erp.slow_next(1);
    // The ERP answers the first call after 2 s; the connector gives up after 1 s.
    let app = TestApp::builder()
        .erp(erp.clone())
        .only_approval()
        .files(|d| replace_in_file(d, "connectors/demo-erp.toml", &[("timeout_secs = 10", "timeout_secs = 1")]))
        .start()
        .await;

    let order = approved_order(&app, "D-SLOW").await;
    wait_until("the slow first attempt and the retry both reached the ERP", || async { erp.deliveries().len() >= 2 })
        .await;
    app.drain_outbox().await;
    let key = format!("orderbridge:{order}.4.0");
    let d = erp.deliveries();
    // The receiver did the work twice, under one key: exactly what it needs to dedupe.
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(d.iter().all(|x| x.key == key && x.status == 200));
    let events = app.order(&order).await["events"].clone();
    let done = events.as_array().unwrap().iter().find(|e| e["event"]["type"] == "effect_succeeded").unwrap().clone();
    assert_eq!(done["event"]["attempts"], 2, "the first attempt timed out");
    app.stop().await;
}

#[tokio::test]
async fn a_429_waits_at_least_retry_after_and_uses_no_attempt() {
    let erp = Receiver::start().await;
    erp.throttle_next(1);
    let app = TestApp::builder().erp(erp.clone()).only_approval().start().await;
    approved_order(&app, "D-429").await;
    wait_until("the throttled attempt is recorded", || async {
        let (_, v) = app.api("/outbox").await;
        v["effects"][0]["last_error"].as_str().is_some()
    })
    .await;
    let (_, v) = app.api("/outbox").await;
    let e = &v["effects"][0];
    assert_eq!(e["attempts"], 0, "a rate limit is not a failed attempt: {e}");
    let created = chrono::DateTime::parse_from_rfc3339(e["created_at"].as_str().unwrap()).unwrap();
    let next = chrono::DateTime::parse_from_rfc3339(e["next_at"].as_str().unwrap()).unwrap();
    // Backoff in tests is 20-200 ms: only Retry-After: 2 can push the next attempt this far.
    assert!(next - created >= chrono::Duration::seconds(2), "next attempt {next} too soon after {created}");
    assert!(e["last_error"].as_str().unwrap().contains("HTTP 429"));
    app.drain_outbox().await;
    assert_eq!(erp.accepted_per_key().values().copied().collect::<Vec<_>>(), [1]);
    app.stop().await;
}

#[tokio::test]
async fn oauth2_tokens_are_cached_and_replaced_after_a_401() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    // A token endpoint that checks the client's credentials and counts its tokens.
    let issued = Arc::new(AtomicU32::new(0));
    let counter = issued.clone();
    let token_app = axum::Router::new().route(
        "/oauth/token",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let counter = counter.clone();
            async move {
                let basic = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                // base64("erp-client:s3cret")
                if basic != "Basic ZXJwLWNsaWVudDpzM2NyZXQ=" || !body.contains("grant_type=client_credentials") {
                    return (axum::http::StatusCode::UNAUTHORIZED, "{\"error\":\"invalid_client\"}".to_owned());
                }
                assert!(body.contains("scope=orders%20write"), "{body}");
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                (
                    axum::http::StatusCode::OK,
                    format!("{{\"access_token\":\"tok-{n}\",\"token_type\":\"Bearer\",\"expires_in\":3600}}"),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, token_app).await.unwrap() });

    let erp = Receiver::start().await;
    let app = TestApp::builder()
        .erp(erp.clone())
        .only_approval()
        .files(move |d| on_oauth2(d, token_addr, "\nscope = \"orders write\""))
        .start()
        .await;

    for i in 0..3 {
        approved_order(&app, &format!("D-OA-{i}")).await;
    }
    app.drain_outbox().await;
    assert_eq!(issued.load(Ordering::SeqCst), 1, "one token serves every call while it is valid");
    assert!(erp.deliveries().iter().all(|d| d.authorization.as_deref() == Some("Bearer tok-1")));

    // The ERP revokes the token: the 401 drops it and the retry brings a new one.
    erp.unauthorized_next(1);
    approved_order(&app, "D-OA-3").await;
    app.drain_outbox().await;
    let last = erp.deliveries();
    assert_eq!(last.len(), 5);
    assert_eq!(last[3].status, 401);
    assert_eq!((last[4].status, last[4].authorization.as_deref()), (200, Some("Bearer tok-2")));
    assert_eq!(issued.load(Ordering::SeqCst), 2);
    app.stop().await;
}

#[tokio::test]
async fn refused_credentials_pause_the_connector_without_using_attempts_until_resumed() {
    let erp = Receiver::start().await;
    erp.unauthorized_next(1_000);
    let app = TestApp::builder().erp(erp.clone()).only_approval().start().await;
    let (status, body) = app.post_webhook(&deal("D-401", 1, "9000.00")).await;
    assert_eq!((status, body["state"].as_str()), (202, Some("approved")));

    // Two refusals in a row pause demo-erp; its effect then waits, attempts unchanged.
    wait_until("the connector is paused", || async {
        let (_, v) = app.api("/connectors").await;
        v["connectors"].as_array().unwrap().iter().any(|c| c["id"] == "demo-erp" && c["paused"] == true)
    })
    .await;
    let (_, v) = app.api("/connectors").await;
    let erp_conn = v["connectors"].as_array().unwrap().iter().find(|c| c["id"] == "demo-erp").unwrap().clone();
    assert!(erp_conn["paused_because"].as_str().unwrap().contains("401"), "{erp_conn}");
    let seen = erp.deliveries().len();
    assert_eq!(seen, 2, "no more calls once paused");
    let (_, outbox) = app.api("/outbox").await;
    let effect = &outbox["effects"][0];
    assert!(effect["attempts"].as_u64().unwrap() <= 1, "a paused connector uses no attempts: {effect}");
    let m = app.metrics().await;
    assert!(m.contains("orderbridge_connector_paused_total{connector=\"demo-erp\"} 1"), "{m}");
    let (_, dead) = app.api("/outbox/dead").await;
    assert!(dead["effects"].as_array().unwrap().is_empty(), "nothing is given up while paused");

    // Credentials fixed: resume, and the effect goes through once.
    erp.unauthorized_next(0);
    let (status, body) = app.api_post("/connectors/demo-erp/resume").await;
    assert_eq!((status, body["resumed"].as_bool()), (200, Some(true)));
    app.drain_outbox().await;
    assert_eq!(erp.accepted_per_key().values().copied().collect::<Vec<_>>(), vec![1]);
    let (status, _) = app.api_post("/connectors/nope/resume").await;
    assert_eq!(status, 404);
    app.stop().await;
}

/// A token endpoint answering `expires_in` as given; counts the tokens it issued.
async fn token_endpoint(
    expires_in: &'static str,
) -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    let issued = Arc::new(AtomicU32::new(0));
    let counter = issued.clone();
    let token_app =
        axum::Router::new().route(
            "/oauth/token",
            axum::routing::post(move || {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    format!("{{\"access_token\":\"tok-{n}\",\"token_type\":\"Bearer\",\"expires_in\":{expires_in}}}")
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, token_app).await.unwrap() });
    (addr, issued)
}

#[tokio::test]
async fn oauth2_tokens_with_a_huge_or_negative_lifetime_neither_panic_nor_stall_effects() {
    for expires_in in ["18446744073709551615", "-3600", "1e30", "\"3600\""] {
        let (token_addr, issued) = token_endpoint(expires_in).await;
        let erp = Receiver::start().await;
        let app = TestApp::builder()
            .erp(erp.clone())
            .only_approval()
            .files(move |d| on_oauth2(d, token_addr, ""))
            .start()
            .await;

        for i in 0..2 {
            approved_order(&app, &format!("D-EXP-{i}")).await;
        }
        app.drain_outbox().await;
        let d = erp.deliveries();
        assert_eq!(d.len(), 2, "expires_in {expires_in}: {d:?}");
        assert!(
            d.iter()
                .all(|d| d.status == 200 && d.authorization.as_deref().is_some_and(|a| a.starts_with("Bearer tok-")))
        );
        assert!(issued.load(std::sync::atomic::Ordering::SeqCst) >= 1);
        app.stop().await;
    }
}

/// A push that panics on its first call and succeeds afterwards.
struct PanicsOnce(std::sync::atomic::AtomicBool);

impl orderbridge::connectors::Push for PanicsOnce {
    fn perform<'a>(
        &'a self,
        _effect: orderbridge::connectors::Outbound<'a>,
    ) -> orderbridge::connectors::BoxFuture<
        'a,
        Result<orderbridge::connectors::Receipt, orderbridge::connectors::ConnectorError>,
    > {
        Box::pin(async move {
            if !self.0.swap(true, std::sync::atomic::Ordering::SeqCst) {
                panic!("the connector broke (test)");
            }
            Ok(orderbridge::connectors::Receipt { status: 200, summary: "ok".into(), reference: None })
        })
    }
}

#[tokio::test]
async fn a_panicking_push_is_recorded_as_a_retryable_failure_and_retried() {
    use std::sync::Arc;
    // An approved order whose effect waits in the outbox (the ERP is down), then the
    // daemon stops: only the dispatcher below works on that store.
    let erp = Receiver::start().await;
    erp.set_down(true);
    let app = TestApp::builder().erp(erp.clone()).only_approval().start().await;
    approved_order(&app, "D-PANIC").await;
    wait_until("a first attempt failed", || async {
        let (_, v) = app.api("/outbox").await;
        v["effects"][0]["attempts"].as_u64().is_some_and(|a| a >= 1)
    })
    .await;
    let dir = app.stop_and_release().await;

    let mut loaded = load(dir.path()).unwrap_or_else(|e| panic!("config loads: {e}"));
    TestDefaults::apply(&mut loaded.settings);
    let settings = loaded.settings.dispatcher.clone();
    let built = orderbridge::startup::Application::build(loaded).await.unwrap();
    let state = built.state().clone();
    let mut registry = orderbridge::connectors::Registry::default();
    registry.add_builtin("demo-erp", Arc::new(PanicsOnce(Default::default())), vec!["create_order".into()]);
    let dispatcher = orderbridge::workers::dispatcher::Dispatcher::new(
        state.orders.clone(),
        state.rules.clone(),
        Arc::new(registry),
        state.metrics.clone(),
        settings,
        state.clock.clone(),
        Arc::new(tokio::sync::Notify::new()),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(dispatcher.run(stop.clone()));

    // The panicking attempt is recorded like any failure, and the retry goes through.
    wait_until("the panicked attempt is recorded and retried", || async {
        state.store.pending_effects(10).await.unwrap().is_empty()
    })
    .await;
    stop.cancel();
    running.await.unwrap();
    let text = state.metrics.render(&[]);
    assert!(text.contains("orderbridge_panics_total{task=\"dispatcher\"} 1"), "{text}");
    assert!(
        text.contains(
            "orderbridge_effect_attempts_total{connector=\"demo-erp\",operation=\"create_order\",outcome=\"retry\"} 1"
        ),
        "the panic counts as one retryable failure: {text}"
    );
}

/// The nice value in a thread's `/proc/…/stat` (field 19; fields count on after the
/// parenthesised name, which may hold spaces).
fn nice_in(stat: &str) -> Option<i64> {
    stat.rsplit_once(") ")?.1.split_whitespace().nth(16)?.parse().ok()
}

/// This process's threads named `name…`: their nice values (`/proc/<pid>/task`).
fn nice_of_threads(name: &str) -> Vec<i64> {
    let mut nice = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        if comm.trim_end().starts_with(name) {
            nice.push(nice_in(&stat).expect("a nice value"));
        }
    }
    nice
}

#[tokio::test]
async fn pushes_run_on_threads_of_their_own_ten_nice_steps_below_the_listeners() {
    let erp = Receiver::start().await;
    let app = TestApp::builder().erp(erp.clone()).start().await;
    // Executing: its contract is generated on a blocking thread the background
    // threads start (which must not be lowered twice).
    let order = executing_order(&app, "D-NICE-1", None).await;
    app.drain_outbox().await;
    assert!(erp.accepted_per_key().keys().any(|k| k.starts_with(&format!("orderbridge:{order}"))), "pushed as before");
    assert!(app.order(&order).await["references"]["documents.contract"].is_string(), "the contract was generated");

    // Linux's `comm` keeps 15 bytes of a thread's name.
    let background = nice_of_threads("orderbridge-bac");
    assert!(!background.is_empty(), "the dispatcher has threads of its own");
    let own = nice_in(&std::fs::read_to_string("/proc/thread-self/stat").unwrap()).unwrap();
    assert!(background.iter().all(|&n| n == (own + 10).min(19)), "test thread {own}, background {background:?}");
}
