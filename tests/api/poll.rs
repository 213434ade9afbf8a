//! Polling a source over TCP: pages by cursor, records since the watermark, each page
//! committed with the poll state. A failure between pages resumes at the next page:
//! every record is ingested exactly once, and later runs ask only for what changed.

use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde_json::{Value, json};

use crate::helpers::*;

const PAGE: usize = 3;

#[derive(Default)]
struct Source {
    /// Records sorted by `updated_at`.
    records: Mutex<Vec<Value>>,
    /// Every request: (updated_since, after).
    requests: Mutex<Vec<(Option<String>, Option<String>)>>,
    /// Answer 503 once to the request with this cursor.
    fail_cursor: Mutex<Option<String>>,
    /// Answer each page only after this long (a slow source, for the crash test).
    delay_ms: std::sync::atomic::AtomicU64,
}

#[derive(serde::Deserialize)]
struct ListQuery {
    updated_since: Option<String>,
    after: Option<String>,
}

async fn list(
    State(s): State<Arc<Source>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> (StatusCode, axum::Json<Value>) {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer poll-token") {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "bad token"})));
    }
    s.requests.lock().unwrap().push((q.updated_since.clone(), q.after.clone()));
    let delay = s.delay_ms.load(std::sync::atomic::Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    {
        let mut fail = s.fail_cursor.lock().unwrap();
        if fail.is_some() && *fail == q.after {
            *fail = None;
            return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"error": "busy"})));
        }
    }
    let all: Vec<Value> = s
        .records
        .lock()
        .unwrap()
        .iter()
        .filter(|r| q.updated_since.as_deref().is_none_or(|since| r["updated_at"].as_str().unwrap() >= since))
        .cloned()
        .collect();
    let start: usize = q.after.as_deref().map_or(0, |a| a.parse().unwrap());
    let end = (start + PAGE).min(all.len());
    let next = (end < all.len()).then(|| end.to_string());
    (StatusCode::OK, axum::Json(json!({"results": all[start..end], "next": next})))
}

fn record(i: usize, version: u64, updated_at: &str, amount: &str) -> Value {
    let mut d = deal(&format!("P-{i}"), version, amount);
    d["updated_at"] = updated_at.into();
    d
}

#[tokio::test]
async fn paged_polling_takes_every_record_once_and_resumes_after_a_failure() {
    let source = Arc::new(Source::default());
    {
        let mut r = source.records.lock().unwrap();
        for i in 0..10 {
            // The last one waits for approval, so the source may still change it.
            let amount = if i == 9 { "1250000.00" } else { "5000.00" };
            r.push(record(i, 1, &format!("2026-11-26T10:{:02}:00Z", i), amount));
        }
    }
    *source.fail_cursor.lock().unwrap() = Some("6".into());
    let addr = serve(source.clone()).await;

    let erp = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_poll_config(dir.path(), erp.addr, addr);
    let app = restart(dir, erp).await;
    check_first_runs(&app, &source).await;
    app.stop().await;
}

fn write_poll_config(d: &std::path::Path, erp: std::net::SocketAddr, addr: std::net::SocketAddr) {
    write_config(d, erp);
    std::fs::write(d.join("secrets/crm-poll"), "poll-token").unwrap();
    std::fs::write(
        d.join("connectors/crm-poll.toml"),
        format!(
            r#"kind = "rest"
base_url = "http://{addr}"

[auth]
kind = "bearer"
token = "file:secrets/crm-poll"

[poll]
path = "/deals"
every_secs = 1
mapping = "crm-poll"
records = "$.results"
watermark_field = "$.updated_at"
watermark_param = "updated_since"
paging = {{ kind = "cursor", next = "$.next", param = "after" }}
"#
        ),
    )
    .unwrap();
    copy_file_with(
        d,
        "mappings/demo-crm.toml",
        "mappings/crm-poll.toml",
        &[(r#"connector = "demo-crm""#, r#"connector = "crm-poll""#)],
    );
}

async fn serve(source: Arc<Source>) -> std::net::SocketAddr {
    let router = axum::Router::new().route("/deals", get(list)).with_state(source);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

async fn check_first_runs(app: &TestApp, source: &Arc<Source>) {
    let orders = |app: &TestApp| {
        let app = app.admin_url("/api/orders?limit=1000");
        async move {
            let v: Value = client().get(app).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
            v["orders"].as_array().unwrap().clone()
        }
    };
    wait_until("all ten records are ingested", || async { orders(app).await.len() == 10 }).await;
    let got = orders(app).await;
    let mut ids: Vec<&str> = got.iter().map(|o| o["source"]["external_id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10, "each record once");
    assert!(got.iter().all(|o| o["source"]["connector"] == "crm-poll"));

    // The failed page (cursor 6) was retried from its cursor, not from the start.
    let requests = source.requests.lock().unwrap().clone();
    let firsts = requests.iter().filter(|(since, after)| since.is_none() && after.is_none()).count();
    assert_eq!(firsts, 1, "the first page is read once: {requests:?}");
    let sixes = requests.iter().filter(|(_, a)| a.as_deref() == Some("6")).count();
    assert_eq!(sixes, 2, "the failed page is asked again: {requests:?}");
    let m = app.metrics().await;
    assert!(m.contains("orderbridge_poll_failures_total{connector=\"crm-poll\",kind=\"other\"} 1"), "{m}");

    // Later runs ask only for changes since the watermark (the last record's time).
    wait_until("a run with the watermark", || async {
        source.requests.lock().unwrap().iter().any(|(since, _)| since.as_deref() == Some("2026-11-26T10:09:00Z"))
    })
    .await;
    // A changed record arrives as an amendment of the same order.
    source.records.lock().unwrap().push(record(9, 2, "2026-11-26T11:00:00Z", "1300000.00"));
    wait_until("the change is taken", || async {
        orders(app)
            .await
            .iter()
            .any(|o| o["source"]["external_id"] == "P-9" && o["order"]["amount"]["amount"] == "1300000.00")
    })
    .await;
    assert_eq!(orders(app).await.len(), 10, "an amendment, not a new order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_multi_page_poll_loses_and_repeats_nothing() {
    const N: usize = 60;
    let source = Arc::new(Source::default());
    {
        let mut r = source.records.lock().unwrap();
        for i in 0..N {
            r.push(record(i, 1, &format!("2026-11-26T10:00:{i:02}Z"), "5000.00"));
        }
    }
    source.delay_ms.store(100, std::sync::atomic::Ordering::SeqCst);
    let addr = serve(source.clone()).await;
    let erp = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_poll_config(dir.path(), erp.addr, addr);
    let served = {
        let s = source.clone();
        move || s.requests.lock().unwrap().len()
    };

    // Kill the daemon in the middle of the run (20 pages of 3, 100 ms each).
    let mut daemon = start_daemon(dir.path(), &[]);
    wait_until("a few pages are read", || async { served() >= 4 }).await;
    tokio::time::sleep(std::time::Duration::from_millis(fastrand::u64(0..300))).await;
    daemon.child.kill().expect("SIGKILL");
    daemon.child.wait().unwrap();
    let before = served();
    assert!(before < 20, "killed in the middle of the run ({before} requests)");

    let daemon = start_daemon(dir.path(), &[]);
    let at = daemon.admin;
    wait_until("every record is ingested after the restart", || async {
        all_orders(&client(), at, "").await.len() >= N
    })
    .await;
    let got = all_orders(&client(), at, "").await;
    assert_eq!(got.len(), N, "no record twice");
    let mut ids: Vec<String> = got.iter().map(|o| o["source"]["external_id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), N);
    for o in &got {
        let v = daemon_api(&client(), at, &format!("/orders/{}", o["id"].as_str().unwrap())).await;
        let received = v["events"].as_array().unwrap().iter().filter(|e| e["event"]["type"] == "received").count();
        assert_eq!(received, 1, "{}", o["source"]["external_id"]);
    }
    // The restart resumed at the stored cursor: the first page was read again only if
    // the kill came before its commit.
    let requests = source.requests.lock().unwrap().clone();
    let first_pages = requests.iter().filter(|(since, after)| since.is_none() && after.is_none()).count();
    assert!(first_pages <= 2, "{requests:?}");
    let resumed = requests.get(before).is_some_and(|(_, after)| after.is_some());
    assert!(resumed || first_pages == 2, "resumed at a cursor: {:?}", &requests[before..]);
    drop(daemon);
}

/// A cron schedule runs at its times in the site's zone (Asia/Shanghai), not at start-up
/// and not in between; measured on the daemon's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_schedule_polls_at_its_times_only() {
    let source = Arc::new(Source::default());
    source.records.lock().unwrap().push(record(1, 1, "2026-11-30T00:30:00Z", "5000.00"));
    let addr = serve(source.clone()).await;
    let erp = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_poll_config(dir.path(), erp.addr, addr);
    replace_in_file(dir.path(), "connectors/crm-poll.toml", &[("every_secs = 1", "cron = \"0 9 * * MON-FRI\"")]);
    // Monday 30 November 2026, 08:59:58 in Shanghai.
    let clock = ManualClock::new("2026-11-30T00:59:58Z".parse().unwrap());
    let app = restart_with(dir, erp, clock.clock()).await;
    let requests = || source.requests.lock().unwrap().len();
    // Nothing before 09:00: give the poller time to (wrongly) run.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(requests(), 0, "no run at start-up or before 09:00");
    clock.advance(chrono::Duration::seconds(3));
    wait_until("the 09:00 run", || async { requests() == 1 }).await;
    // The next run is Tuesday 09:00: an hour later there has been none.
    clock.advance(chrono::Duration::hours(1));
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(requests(), 1, "one run on Monday");
    clock.advance(chrono::Duration::hours(23));
    wait_until("Tuesday's run", || async { requests() == 2 }).await;
    app.stop().await;
}
