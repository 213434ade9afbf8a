//! Stand-ins for the systems the daemon talks to, each a small axum server on
//! loopback: `Receiver` plays the ERP, the service desk and the finance system (with
//! fault switches: down, slow, throttled, refusing…) and records every delivery and
//! idempotency key; `Scripted` answers by path prefix from a script.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// One delivery the receiver saw.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `/orders` (the ERP) or `/tickets` (the service desk).
    pub path: String,
    pub key: String,
    pub status: u16,
    pub epoch: u32,
    pub body: Value,
    pub authorization: Option<String>,
}

#[derive(Default)]
struct ReceiverState {
    deliveries: Mutex<Vec<Delivery>>,
    tasks: Mutex<Vec<(String, Value)>>,
    invoices: Mutex<Vec<(String, String, Value)>>,
    lose_invoice_answers: AtomicU32,
    invoice_status: Mutex<HashMap<String, String>>,
    vouchers: Mutex<Vec<(String, Value)>>,
    documents: Mutex<Vec<(String, Value)>>,
    /// Answer 503 to this many requests first.
    fail_next: AtomicU32,
    /// Answer 503 to everything while set.
    down: AtomicBool,
    /// Answer 400 to everything while set.
    refuse: AtomicBool,
    /// Answer this many requests only after 2 s (slower than a 1 s client timeout).
    slow_next: AtomicU32,
    /// Answer this many requests with 429 and `Retry-After: 2`.
    throttle_next: AtomicU32,
    /// Answer this many requests with 401.
    unauthorized_next: AtomicU32,
    epoch: AtomicU32,
}

/// A small ERP stand-in over TCP that records idempotency keys.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = Arc::new(ReceiverState::default());
        let app = axum::Router::new()
            .route("/orders", post(receive))
            .route("/tickets", post(receive))
            // The ERP's tasks and the finance system's invoices: always answered,
            // kept apart from the order pushes the fault switches act on.
            .route("/tasks", post(receive_task))
            .route("/invoices", post(create_invoice).get(find_invoice))
            .route("/vouchers", post(create_voucher))
            .route("/documents", post(store_document))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, state }
    }

    pub fn fail_next(&self, n: u32) {
        self.state.fail_next.store(n, Ordering::SeqCst);
    }
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }
    pub fn slow_next(&self, n: u32) {
        self.state.slow_next.store(n, Ordering::SeqCst);
    }
    pub fn unauthorized_next(&self, n: u32) {
        self.state.unauthorized_next.store(n, Ordering::SeqCst);
    }
    pub fn throttle_next(&self, n: u32) {
        self.state.throttle_next.store(n, Ordering::SeqCst);
    }
    pub fn set_refuse(&self, refuse: bool) {
        self.state.refuse.store(refuse, Ordering::SeqCst);
    }
    pub fn next_epoch(&self) {
        self.state.epoch.fetch_add(1, Ordering::SeqCst);
    }
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state.deliveries.lock().unwrap().clone()
    }
    /// Tasks pushed to `/tasks`: (idempotency key, body).
    pub fn tasks(&self) -> Vec<(String, Value)> {
        self.state.tasks.lock().unwrap().clone()
    }
    /// Invoices created at `/invoices`: (number, idempotency key, body).
    pub fn invoices(&self) -> Vec<(String, String, Value)> {
        self.state.invoices.lock().unwrap().clone()
    }
    /// Accounts-receivable vouchers pushed to `/vouchers`: (idempotency key, body).
    pub fn vouchers(&self) -> Vec<(String, Value)> {
        self.state.vouchers.lock().unwrap().clone()
    }
    /// Documents delivered to `/documents`: (idempotency key, body).
    pub fn documents(&self) -> Vec<(String, Value)> {
        self.state.documents.lock().unwrap().clone()
    }
    /// What the finance system says of an invoice (default `open`).
    pub fn set_invoice_status(&self, number: &str, status: &str) {
        self.state.invoice_status.lock().unwrap().insert(number.to_owned(), status.to_owned());
    }
    /// The next `n` invoices are created but answered only after the caller timed out.
    pub fn lose_invoice_answers(&self, n: u32) {
        self.state.lose_invoice_answers.store(n, Ordering::SeqCst);
    }
    /// Successful (200) deliveries per idempotency key.
    pub fn accepted_per_key(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for d in self.deliveries().into_iter().filter(|d| d.status == 200) {
            *m.entry(d.key).or_default() += 1;
        }
        m
    }
}

async fn receive_task(State(s): State<Arc<ReceiverState>>, headers: HeaderMap, Json(body): Json<Value>) -> Json<Value> {
    let mut tasks = s.tasks.lock().unwrap();
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let id = format!("T-{}", 100 + tasks.len());
    tasks.push((key, body));
    Json(serde_json::json!({"id": id}))
}

#[derive(serde::Deserialize)]
struct InvoiceQuery {
    order_id: Option<String>,
}

/// The finance system: one invoice per order id; `lose_invoice_answers` drops the
/// answer after creating (a timeout seen by the caller).
async fn create_invoice(
    State(s): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let number = {
        let mut invoices = s.invoices.lock().unwrap();
        let number = format!("INV-{}", 2026_0001 + invoices.len());
        invoices.push((number.clone(), key, body));
        number
    };
    let take = |n: &AtomicU32| n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    if take(&s.lose_invoice_answers) {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    (StatusCode::CREATED, Json(serde_json::json!({"invoice_number": number, "status": "open"})))
}

async fn create_voucher(
    State(s): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let mut v = s.vouchers.lock().unwrap();
    let id = format!("AR-{}", 500 + v.len());
    v.push((key, body));
    Json(serde_json::json!({"voucher_id": id}))
}

async fn store_document(
    State(s): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    s.documents.lock().unwrap().push((key, body));
    Json(serde_json::json!({"stored": true}))
}

async fn find_invoice(State(s): State<Arc<ReceiverState>>, Query(q): Query<InvoiceQuery>) -> Json<Value> {
    let invoices = s.invoices.lock().unwrap();
    let found: Vec<Value> = invoices
        .iter()
        .filter(|(_, _, b)| b["order_id"].as_str().is_some() && b["order_id"].as_str() == q.order_id.as_deref())
        .map(|(n, _, _)| {
            let status = s.invoice_status.lock().unwrap().get(n).cloned().unwrap_or_else(|| "open".into());
            serde_json::json!({"invoice_number": n, "status": status})
        })
        .collect();
    Json(serde_json::json!({"invoices": found}))
}

async fn receive(
    State(s): State<Arc<ReceiverState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, HeaderMap, Json<Value>) {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let take = |n: &AtomicU32| n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    let slow = take(&s.slow_next);
    let status = if take(&s.unauthorized_next) {
        StatusCode::UNAUTHORIZED
    } else if take(&s.throttle_next) {
        StatusCode::TOO_MANY_REQUESTS
    } else if s.down.load(Ordering::SeqCst) {
        StatusCode::SERVICE_UNAVAILABLE
    } else if s.refuse.load(Ordering::SeqCst) {
        StatusCode::BAD_REQUEST
    } else if take(&s.fail_next) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let ticket = format!("SD-{}", 1000 + s.deliveries.lock().unwrap().iter().filter(|d| d.path == "/tickets").count());
    s.deliveries.lock().unwrap().push(Delivery {
        path: uri.path().to_owned(),
        key,
        status: status.as_u16(),
        epoch: s.epoch.load(Ordering::SeqCst),
        body,
        authorization: headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned),
    });
    if slow {
        // The work is done (recorded above) but the answer comes after the caller gave up.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let answer = match status {
        StatusCode::OK if uri.path() == "/tickets" => serde_json::json!({"id": ticket, "status": "open"}),
        StatusCode::OK => serde_json::json!({"erp_order": "SO-1"}),
        StatusCode::BAD_REQUEST => serde_json::json!({"error": "product code unknown to ERP"}),
        StatusCode::TOO_MANY_REQUESTS => serde_json::json!({"error": "slow down"}),
        _ => serde_json::json!({"error": "maintenance"}),
    };
    // Only the rate limit says when to come back (a Retry-After pauses the connector).
    let mut reply = HeaderMap::new();
    if status == StatusCode::TOO_MANY_REQUESTS {
        reply.insert("retry-after", axum::http::HeaderValue::from_static("2"));
    }
    (status, reply, Json(answer))
}

/// One request a `Scripted` server saw: path and query, and the API key it carried.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub api_key: Option<String>,
}

/// What a `Scripted` server answers, by path and query prefix (the first that matches).
pub type Script = Vec<(String, Box<dyn Fn() -> Response + Send + Sync>)>;
type Recorded = (Arc<Mutex<Vec<Seen>>>, Arc<Script>);

/// A server on loopback that answers by path prefix (a `Script`), else 200
/// `{"id": "X-1"}`, and records every request.
#[derive(Clone)]
pub struct Scripted {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    pub async fn start(script: Script) -> Scripted {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let state = (seen.clone(), Arc::new(script));
        let app = axum::Router::new().fallback(scripted_answer).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Scripted { addr, seen }
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn scripted_answer(State((seen, script)): State<Recorded>, req: Request) -> Response {
    let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let path = req.uri().path_and_query().map_or_else(|| req.uri().path().to_owned(), |p| p.to_string());
    seen.lock().unwrap().push(Seen { path: path.clone(), api_key: h("x-api-key") });
    match script.iter().find(|(prefix, _)| path.starts_with(prefix.as_str())) {
        Some((_, answer)) => answer(),
        None => (StatusCode::OK, axum::Json(json!({"id": "X-1"}))).into_response(),
    }
}
