//! The peer-benchmark configuration (`bench/peers`) and its request pool, end to end:
//! requests from `orderbridge bench --wrk-pool`, rebuilt the way
//! `bench/peers/orderbridge.lua` does, are accepted as new orders, screened, approved
//! automatically and pushed once each to the ERP with the peers' 15 keys. CI has no
//! wrk; this keeps what `scripts/bench-peers.sh` relies on working.

use std::path::Path;
use std::sync::{Arc, Mutex};

/// The benchmark configuration is not the example one: a published secret is refused
/// there, so this test has a secret of its own (as `scripts/bench-peers.sh` makes one
/// per run).
const POOL_SECRET: &str = "whsec_JExnr7G4cke24oeCxdXXJAgl3qaZNQzxFfRSJuIKQE0=";

use axum::http::HeaderMap;
use axum::routing::post;
use serde_json::Value;

use crate::helpers::*;

/// A copy of the peers' order.json (../shared/bench-peers/order.json).
const ORDER: &str = "tests/fixtures/peers-order.json";

type Pushes = Arc<Mutex<Vec<(String, Value)>>>;

/// The peers' sink, reduced to what the test looks at: (Idempotency-Key, body).
async fn sink() -> (std::net::SocketAddr, Pushes) {
    let pushes: Pushes = Arc::default();
    let seen = pushes.clone();
    let app = axum::Router::new().route(
        "/erp/orders",
        post(move |headers: HeaderMap, body: String| {
            let seen = seen.clone();
            async move {
                let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                seen.lock().unwrap().push((key, serde_json::from_str(&body).expect("the push is JSON")));
                "{\"ok\":true}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, pushes)
}

/// bench/peers with the secret in a file and the ERP at `erp` (`bench_env`: any free port).
fn bench_config(dir: &Path, erp: std::net::SocketAddr) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for sub in ["config", "connectors", "mappings"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for e in std::fs::read_dir(repo.join("bench/peers").join(sub)).unwrap() {
            let p = e.unwrap().path();
            let text = std::fs::read_to_string(&p)
                .unwrap()
                .replace("${BENCH_CRM_SECRET}", "file:secrets/crm")
                .replace("http://127.0.0.1:18090", &format!("http://{erp}"));
            std::fs::write(dir.join(sub).join(p.file_name().unwrap()), text).unwrap();
        }
    }
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("secrets/crm"), POOL_SECRET).unwrap();
}

/// How bench/peers runs here: on ports the OS picks, logging at info (the daemon's
/// address is read from its "listening on" line); its own dispatcher settings.
fn bench_env() -> Vec<(String, String)> {
    [("ORDERBRIDGE__SERVER__PORT", "0"), ("ORDERBRIDGE__SERVER__ADMIN__PORT", "0"), ("ORDERBRIDGE__LOG__LEVEL", "info")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec()
}

/// One request of a pool: (webhook-id, timestamp, signature, body).
type Request = (String, String, String, String);

/// Reads a pool file as orderbridge.lua does.
fn read_pool(path: &Path) -> Vec<Request> {
    let raw = std::fs::read(path).unwrap();
    let mut rest = &raw[..];
    let mut header = std::collections::HashMap::new();
    loop {
        let end = rest.iter().position(|&b| b == b'\n').unwrap();
        let line = String::from_utf8(rest[..end].to_vec()).unwrap();
        rest = &rest[end + 1..];
        if let Some((k, v)) = line.split_once(' ') {
            header.insert(k.to_owned(), v.to_owned());
            if k == "body-bytes" {
                break;
            }
        }
    }
    let len: usize = header["body-bytes"].parse().unwrap();
    let template = std::str::from_utf8(&rest[..len]).unwrap();
    std::str::from_utf8(&rest[len + 1..])
        .unwrap()
        .lines()
        .map(|l| {
            let (suffix, sig) = l.split_once(' ').unwrap();
            (
                format!("{}{suffix}", header["webhook-id-prefix"]),
                header["timestamp"].clone(),
                sig.to_owned(),
                template.replace(&header["placeholder"], suffix),
            )
        })
        .collect()
}

#[tokio::test]
async fn pooled_requests_become_one_approved_order_and_one_push_each() {
    let (erp, pushes) = sink().await;
    let dir = tempfile::tempdir().unwrap();
    bench_config(dir.path(), erp);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));

    let pool = dir.path().join("pool");
    let out = std::process::Command::new(bin())
        .args(["bench", "--wrk-pool"])
        .arg(&pool)
        .arg("--body")
        .arg(repo.join(ORDER))
        .args(["--vary", "/record/Id", "--vary", "/record/OrderNumber", "--vary", "/record/Account/Id"])
        .args(["--orders", "3", "--prefix", "t1"])
        .env("DEMO_CRM_SECRET", POOL_SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(POOL_SECRET));
    let requests = read_pool(&pool);
    assert_eq!(requests.len(), 3);

    let daemon = start_daemon_with_env(dir.path(), &[], &bench_env());
    let client = client();
    let url = format!("http://{}/webhooks/crm", daemon.addr);
    let post = |(id, ts, sig, body): &Request| {
        client
            .post(&url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", ts)
            .header("webhook-signature", sig)
            .body(body.clone())
            .send()
    };
    for r in &requests {
        let resp = post(r).await.unwrap();
        assert_eq!(resp.status(), 202);
        let v: Value = resp.json().await.unwrap();
        assert_eq!((v["state"].as_str(), v["duplicate"].as_bool()), (Some("approved"), Some(false)), "{v}");
    }
    // A request sent twice is the same order: no work, no second push.
    let again: Value = post(&requests[0]).await.unwrap().json().await.unwrap();
    assert_eq!(again["duplicate"], true);
    // A body that does not match its signature is refused.
    let mut forged = requests[1].clone();
    forged.3 = forged.3.replace("1250000.00", "1.00");
    assert_eq!(post(&forged).await.unwrap().status(), 401);

    wait_until("three pushes reached the sink", || {
        let pushes = pushes.clone();
        async move { pushes.lock().unwrap().len() >= 3 }
    })
    .await;
    let mut pushes = pushes.lock().unwrap().clone();
    assert_eq!(pushes.len(), 3, "one push per order");
    pushes.sort_by(|a, b| a.1["external_id"].as_str().cmp(&b.1["external_id"].as_str()));
    for (n, (key, body)) in pushes.iter().enumerate() {
        assert!(key.starts_with("orderbridge:ord_"), "{key}");
        let keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 15, "{keys:?}");
        assert!(body["order_number"].as_str().unwrap().starts_with("ord_"));
        assert_eq!(body["external_id"], format!("0065g00000AbCdEAA1-t1-{n}"));
        assert_eq!(body["customer_id"], format!("0015g00000XyZaBAA1-t1-{n}"));
        let fixed = serde_json::json!({
            "source": "salesforce",
            "customer_name": "上海浦江设备租赁有限公司",
            "customer_tax_id": "91310000MA1FL8XQ3K",
            "credit_rating": "A",
            "product_type": "loan",
            "product_code": "EQL-36",
            "amount": "1250000.00",
            "currency": "CNY",
            "term_months": 36,
            "description": "Lease of 3 CNC machining centres",
            "owner_email": "li.wei@example.com",
            "close_date": "2026-11-25",
        });
        for (k, v) in fixed.as_object().unwrap() {
            assert_eq!(&body[k], v, "{k}");
        }
    }
}

/// `orderbridge bench` (what `scripts/bench.sh` runs) against a daemon over TCP: its
/// hand-written HTTP/1.1 posts signed orders on keep-alive connections, each taken
/// once as a new order, and it reports them all accepted.
#[tokio::test]
async fn the_load_generator_posts_distinct_signed_orders_over_keep_alive_connections() {
    let app = spawn_app().await;
    let (bin, url) = (bin(), format!("http://{}", app.addr));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args(["bench", "--url", &url, "--orders", "40", "--concurrency", "4", "--prefix", "LG"])
            .env("DEMO_CRM_SECRET", CRM_SECRET)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("accepted:   40 orders"), "{text}");
    assert!(text.contains("failed:     0"), "{text}");
    let (_, listed) = app.api("/orders?limit=100").await;
    let ids: std::collections::HashSet<&str> = listed["orders"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["source"]["external_id"].as_str().filter(|x| x.starts_with("LG-")))
        .collect();
    assert_eq!(ids.len(), 40, "forty distinct orders: {ids:?}");
}
