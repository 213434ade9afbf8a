//! One compliance suite for every connector kind (STYLE.md §7): the same cases run
//! against `rest`, `hubspot`, `xero`, `stripe`, `erpnext` and `odoo`, each built from
//! a minimal config generated here (with the example mappings) and pointed at one
//! programmable fault server over TCP. The server answers like each vendor until a
//! test scripts its next answer to a kind of request (the operation's write call, a
//! lookup, the token endpoint).
//!
//! Each case is one test that loops over the kinds, so a new kind in
//! `connectors::KINDS` fails every case until it is added to [`kinds`]. Dispatcher
//! behaviour (backoff, pausing, dead letters) is tests/api/dispatcher.rs's.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use orderbridge::connectors::{ConnectorError, KINDS, Outbound, Receipt, Registry};
use serde_json::{Value, json};

const ORDER_ID: &str = "0193a5e2-c4b8-7d21-a4f0-c9e8b7d6a5f4";
/// The effect's idempotency key, as the dispatcher derives it.
const KEY: &str = "orderbridge:0193a5e2-c4b8-7d21-a4f0-c9e8b7d6a5f4.4.0";

const REST_TOKEN: &str = "SECRET-tok-7f3a";
const HUBSPOT_TOKEN: &str = "SECRET-hubspot-pat-7f3a";
const XERO_CLIENT_ID: &str = "0A1B2C3D4E5F60718293A4B5C6D7E8F9";
const XERO_CLIENT_SECRET: &str = "SECRET-xero-client-secret-7f3a";
const XERO_TENANT: &str = "SECRET-xero-tenant-7f3a";
/// What the token endpoint issues; a secret like the others.
const XERO_ACCESS_TOKEN: &str = "SECRET-xero-access-token-7f3a";
const STRIPE_KEY: &str = "SECRET-sk_test-7f3a";
const ERPNEXT_KEY: &str = "SECRET-erp-key-7f3a";
const ERPNEXT_SECRET: &str = "SECRET-erp-secret-7f3a";
const ODOO_KEY: &str = "SECRET-odoo-key-7f3a";

/// Every secret value of every kind: none may appear in an error, a receipt, or their `Debug`.
const SECRETS: &[&str] = &[
    REST_TOKEN,
    HUBSPOT_TOKEN,
    XERO_CLIENT_SECRET,
    XERO_TENANT,
    XERO_ACCESS_TOKEN,
    STRIPE_KEY,
    ERPNEXT_KEY,
    ERPNEXT_SECRET,
    ODOO_KEY,
];

/// The Xero invoice and ERPNext Sales Order an earlier attempt created.
const XERO_INVOICE_ID: &str = "4f1c7a2e-9b3d-4e8a-b6c5-0d2f1e3a4b5c";
/// What the preset keeps: the number payments quote.
const XERO_INVOICE: &str = "INV-0042";
const SALES_ORDER: &str = "SAL-ORD-2026-00017";

// ---------------------------------------------------------------------------------
// The fault server.

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    /// Query parameters, decoded.
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// Odoo JSON-RPC: `(service, method)` for `common`, `(model, method)` for `execute_kw`.
    fn rpc(&self) -> Option<(String, String)> {
        if self.path != "/jsonrpc" {
            return None;
        }
        let p = &self.json()["params"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        Some(match text(&p["method"]).as_str() {
            "execute_kw" => (text(&p["args"][3]), text(&p["args"][4])),
            m => (text(&p["service"]), m.to_owned()),
        })
    }

    fn is_token(&self) -> bool {
        self.path == "/connect/token"
    }

    /// The call that changes something: a create or an update.
    fn is_write(&self) -> bool {
        match self.rpc() {
            Some((_, m)) => m == "create" || m == "write",
            None => !self.is_token() && self.method != "GET",
        }
    }

    /// Whether the request carries `text` in its query or body.
    fn mentions(&self, text: &str) -> bool {
        self.query.iter().any(|(_, v)| v.contains(text)) || self.body.contains(text)
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Value,
    delay: Duration,
}

impl Answer {
    fn json(status: u16, body: Value) -> Answer {
        Answer { status, headers: Vec::new(), body, delay: Duration::ZERO }
    }

    fn with_header(mut self, name: &'static str, value: &str) -> Answer {
        self.headers.push((name, value.to_owned()));
        self
    }

    /// Answers only after `delay` (longer than the connector's timeout: a timeout).
    fn after(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }

    /// Odoo's answer: a JSON-RPC envelope with `result` or `error` (HTTP 200 either way).
    fn rpc(member: &str, value: Value) -> Answer {
        let mut body = json!({"jsonrpc": "2.0", "id": null});
        body[member] = value;
        Answer::json(200, body)
    }
}

struct Scripted {
    when: fn(&Seen) -> bool,
    answer: Answer,
}

#[derive(Default)]
struct Script {
    seen: Mutex<Vec<Seen>>,
    next: Mutex<Vec<Scripted>>,
}

struct FaultServer {
    addr: SocketAddr,
    script: Arc<Script>,
}

impl FaultServer {
    async fn start() -> FaultServer {
        let script = Arc::new(Script::default());
        let router = axum::Router::new().fallback(serve).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        FaultServer { addr, script }
    }

    /// The next request for which `when` holds gets `answer` (once).
    fn next(&self, when: fn(&Seen) -> bool, answer: Answer) {
        self.script.next.lock().unwrap().push(Scripted { when, answer });
    }

    fn seen(&self) -> Vec<Seen> {
        self.script.seen.lock().unwrap().clone()
    }

    /// Forgets what was seen; every scripted answer must have been given by now.
    fn reset(&self, kind: &str) {
        let left = self.script.next.lock().unwrap().drain(..).map(|s| s.answer).collect::<Vec<_>>();
        assert!(left.is_empty(), "{kind}: scripted answers never asked for: {left:?}");
        self.script.seen.lock().unwrap().clear();
    }
}

async fn serve(State(s): State<Arc<Script>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let seen = Seen {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()).into_owned().collect(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    s.seen.lock().unwrap().push(seen.clone());
    let scripted = {
        let mut next = s.next.lock().unwrap();
        next.iter().position(|x| (x.when)(&seen)).map(|i| next.remove(i).answer)
    };
    let mut a = scripted.unwrap_or_else(|| vendor(&seen));
    if a.body.get("jsonrpc").is_some() {
        a.body["id"] = seen.json()["id"].clone();
    }
    tokio::time::sleep(a.delay).await;
    let mut resp = (StatusCode::from_u16(a.status).unwrap(), axum::Json(a.body)).into_response();
    for (name, value) in a.headers {
        resp.headers_mut().insert(HeaderName::from_static(name), HeaderValue::from_str(&value).unwrap());
    }
    resp
}

/// The credentials each vendor's API expects.
fn authorized(s: &Seen) -> bool {
    let auth = s.header("authorization").unwrap_or_default();
    let bearer = |t: &str| auth == format!("Bearer {t}");
    if s.path.starts_with("/api.xro/") {
        bearer(XERO_ACCESS_TOKEN) && s.header("xero-tenant-id") == Some(XERO_TENANT)
    } else if s.path.starts_with("/api/resource/") {
        auth == format!("token {ERPNEXT_KEY}:{ERPNEXT_SECRET}")
    } else if s.path.starts_with("/v1/") {
        bearer(STRIPE_KEY)
    } else if s.path.starts_with("/crm/") {
        bearer(HUBSPOT_TOKEN)
    } else {
        bearer(REST_TOKEN)
    }
}

/// What each vendor answers when nothing is scripted: success, or 401 for wrong
/// credentials. Lookups find nothing; Odoo finds the partner and the product.
fn vendor(s: &Seen) -> Answer {
    let ok = |v: Value| Answer::json(200, v);
    if s.is_token() {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{XERO_CLIENT_ID}:{XERO_CLIENT_SECRET}"));
        if s.header("authorization") != Some(&format!("Basic {basic}"))
            || !s.body.contains("grant_type=client_credentials")
        {
            return Answer::json(401, json!({"error": "invalid_client"}));
        }
        return ok(json!({"access_token": XERO_ACCESS_TOKEN, "expires_in": 1800, "token_type": "Bearer"}));
    }
    if let Some((target, method)) = s.rpc() {
        let args = &s.json()["params"]["args"];
        let result = match (target.as_str(), method.as_str()) {
            ("common", "login") => {
                if args[2] == ODOO_KEY {
                    json!(2)
                } else {
                    json!(false)
                }
            }
            _ if args[2] != ODOO_KEY => {
                return Answer::rpc(
                    "error",
                    json!({"code": 200, "message": "Odoo Server Error",
                        "data": {"name": "odoo.exceptions.AccessDenied", "message": "Access Denied"}}),
                );
            }
            ("res.partner", "search") => json!([5]),
            ("product.product", "search") => json!([6]),
            (_, "search" | "search_read") => json!([]),
            (_, "create") => json!(42),
            _ => json!(true),
        };
        return Answer::rpc("result", result);
    }
    if !authorized(s) {
        return Answer::json(401, json!({"message": "unauthorized"}));
    }
    let path = s.path.as_str();
    match s.method.as_str() {
        "GET" if path.ends_with("/Invoices") => ok(json!({"Invoices": []})),
        "GET" if path.starts_with("/api/resource/") => ok(json!({"data": []})),
        "PUT" if path.ends_with("/Invoices") => ok(
            json!({"Invoices": [{"InvoiceID": XERO_INVOICE_ID, "InvoiceNumber": XERO_INVOICE, "Status": "AUTHORISED", "Reference": ORDER_ID}]}),
        ),
        "POST" if path == "/orders" => ok(json!({"id": "ord_1"})),
        "POST" if path == "/v1/invoices" => ok(json!({"id": "in_1", "object": "invoice", "status": "draft"})),
        "POST" if path == "/v1/invoiceitems" => ok(json!({"id": "ii_1", "object": "invoiceitem"})),
        "POST" if path.starts_with("/api/resource/") => ok(json!({"data": {"name": SALES_ORDER, "docstatus": 0}})),
        "PATCH" if path.starts_with("/crm/v3/objects/deals/") => ok(json!({
            "id": path.rsplit('/').next(), "properties": {"dealstage": "contractsent"}, "archived": false
        })),
        _ => ok(json!({})),
    }
}

// ---------------------------------------------------------------------------------
// The kinds.

/// A kind as the suite drives it.
struct Kind {
    kind: &'static str,
    /// The operation each case performs.
    operation: &'static str,
    /// A minimal connector file (timeout 1 s) for a server at the address.
    connector: fn(SocketAddr) -> String,
    /// The example mappings it uses.
    mappings: &'static [&'static str],
    /// `secrets/<name>` files.
    secrets: &'static [(&'static str, &'static str)],
    /// How the vendor refuses a request, and the words of its refusal.
    refusal: fn() -> (Answer, &'static str),
    /// How the vendor answers with wrong or revoked credentials.
    unauthorized: fn() -> Answer,
    /// Writes per perform that carry `Idempotency-Key` (the key, `<key>/1`, …).
    keyed_writes: usize,
    /// A lookup that precedes the create, when the vendor has no idempotency key.
    lookup: Option<Lookup>,
    /// Access tokens come from a token endpoint (OAuth 2.0).
    oauth2: bool,
}

struct Lookup {
    is: fn(&Seen) -> bool,
    /// The vendor's answer when an earlier attempt did create the record.
    found: fn() -> Answer,
    /// The id in that answer.
    reference: &'static str,
}

fn kinds() -> Vec<Kind> {
    let all = vec![
        Kind {
            kind: "rest",
            operation: "create_order",
            connector: |addr| {
                format!(
                    r#"kind = "rest"
base_url = "http://{addr}"
timeout_secs = 1

[auth]
kind = "bearer"
token = "file:secrets/token"

[operations.create_order]
path = "/orders"
reference = "$.id"
then = [
  {{ path = "/orders/{{{{ reference }}}}/lines" }},
  {{ path = "/orders/{{{{ reference }}}}/confirm" }},
]
"#
                )
            },
            mappings: &[],
            secrets: &[("token", REST_TOKEN)],
            refusal: || {
                let detail = "amount.amount exceeds the single-order limit of 1000000.00 CNY";
                let body = json!({"type": "https://erp.bank.example/problems/validation",
                    "title": "Unprocessable Entity", "status": 422, "detail": detail});
                (Answer::json(422, body), "exceeds the single-order limit")
            },
            unauthorized: || {
                Answer::json(401, json!({"error": "invalid_token"}))
                    .with_header("www-authenticate", "Bearer error=\"invalid_token\"")
            },
            keyed_writes: 3,
            lookup: None,
            oauth2: false,
        },
        Kind {
            kind: "hubspot",
            operation: "update_deal",
            connector: |addr| {
                format!(
                    r#"kind = "hubspot"
base_url = "http://{addr}"
timeout_secs = 1

[auth]
token = "file:secrets/token"

[operations.update_deal]
body = "hubspot-deal-stage"
"#
                )
            },
            mappings: &["hubspot-deal-stage"],
            secrets: &[("token", HUBSPOT_TOKEN)],
            refusal: || {
                let message = "Property values were not valid: [{\"isValid\":false,\"message\":\"contractsent was not one of the allowed options\",\"error\":\"INVALID_OPTION\",\"name\":\"dealstage\"}]";
                let body = json!({"status": "error", "message": message,
                    "correlationId": "0b8e5f3c-6a1d-4c2e-9f7b-3d5a8c1e2f40", "category": "VALIDATION_ERROR"});
                (Answer::json(400, body), "contractsent was not one of the allowed options")
            },
            unauthorized: || {
                Answer::json(
                    401,
                    json!({"status": "error", "message": "Authentication credentials not found.",
                        "correlationId": "0b8e5f3c-6a1d-4c2e-9f7b-3d5a8c1e2f41", "category": "INVALID_AUTHENTICATION"}),
                )
            },
            keyed_writes: 0,
            lookup: None,
            oauth2: false,
        },
        Kind {
            kind: "xero",
            operation: "create_invoice",
            connector: |addr| {
                format!(
                    r#"kind = "xero"
base_url = "http://{addr}/api.xro/2.0"
timeout_secs = 1

[auth]
token_url = "http://{addr}/connect/token"
client_id = "file:secrets/client-id"
client_secret = "file:secrets/client-secret"

[headers]
"xero-tenant-id" = "file:secrets/tenant"

[operations.create_invoice]
body = "xero-invoice"
"#
                )
            },
            mappings: &["xero-invoice"],
            // A reference, as in examples/connectors/xero.toml (`${XERO_CLIENT_ID}`).
            secrets: &[("client-id", XERO_CLIENT_ID), ("client-secret", XERO_CLIENT_SECRET), ("tenant", XERO_TENANT)],
            refusal: || {
                let body = json!({"ErrorNumber": 10, "Type": "ValidationException",
                    "Message": "A validation exception occurred",
                    "Elements": [{"ValidationErrors": [{"Message": "Account code '200' is not a valid code for this document."}]}]});
                (Answer::json(400, body), "Account code '200' is not a valid code for this document.")
            },
            unauthorized: || {
                Answer::json(
                    401,
                    json!({"Type": null, "Title": "Unauthorized", "Status": 401, "Detail": "AuthenticationUnsuccessful"}),
                )
                .with_header("www-authenticate", "OAuth realm=\"api.xero.com\"")
            },
            keyed_writes: 1,
            lookup: Some(Lookup {
                is: |s| s.method == "GET" && s.path.ends_with("/Invoices"),
                found: || {
                    Answer::json(
                        200,
                        json!({"Invoices": [{"InvoiceID": XERO_INVOICE_ID, "InvoiceNumber": XERO_INVOICE, "Reference": ORDER_ID, "Status": "AUTHORISED"}]}),
                    )
                },
                reference: XERO_INVOICE,
            }),
            oauth2: true,
        },
        Kind {
            kind: "stripe",
            operation: "create_invoice",
            connector: |addr| {
                format!(
                    r#"kind = "stripe"
base_url = "http://{addr}"
timeout_secs = 1

[auth]
token = "file:secrets/secret-key"

# Named so the invoice mappings' `references["stripe.create_customer"]` is known.
[operations.create_customer]
body = "stripe-customer"

[operations.create_invoice]
body = "stripe-invoice"
then = [
  {{ path = "/v1/invoiceitems", body = "stripe-invoice-item" }},
  {{ path = "/v1/invoices/{{{{ reference }}}}/finalize" }},
]
"#
                )
            },
            mappings: &["stripe-customer", "stripe-invoice", "stripe-invoice-item"],
            secrets: &[("secret-key", STRIPE_KEY)],
            refusal: || {
                let body = json!({"error": {"code": "parameter_missing",
                    "doc_url": "https://stripe.com/docs/error-codes/parameter-missing",
                    "message": "Missing required param: customer.", "param": "customer",
                    "request_log_url": "https://dashboard.stripe.com/test/logs/req_Q9lK2mNvX1b3aZ",
                    "type": "invalid_request_error"}});
                (Answer::json(400, body), "Missing required param: customer.")
            },
            unauthorized: || {
                Answer::json(
                    401,
                    json!({"error": {"message": "Invalid API Key provided: sk_test_****************7f3a",
                        "type": "invalid_request_error"}}),
                )
            },
            keyed_writes: 3,
            lookup: None,
            oauth2: false,
        },
        Kind {
            kind: "erpnext",
            operation: "create_sales_order",
            connector: |addr| {
                format!(
                    r#"kind = "erpnext"
base_url = "http://{addr}"
timeout_secs = 1

[auth]
api_key = "file:secrets/api-key"
api_secret = "file:secrets/api-secret"

[operations.create_sales_order]
body = "erpnext-sales-order"
"#
                )
            },
            mappings: &["erpnext-sales-order"],
            secrets: &[("api-key", ERPNEXT_KEY), ("api-secret", ERPNEXT_SECRET)],
            refusal: || {
                // Frappe answers a ValidationError with 417 Expectation Failed.
                let message = "客户 上海星辰贸易有限公司 不存在 (Customer does not exist)";
                let body = json!({"exc_type": "ValidationError",
                    "exception": format!("frappe.exceptions.ValidationError: {message}"),
                    "_server_messages": json!([json!({"message": message}).to_string()]).to_string()});
                (Answer::json(417, body), "客户 上海星辰贸易有限公司 不存在")
            },
            unauthorized: || {
                Answer::json(
                    401,
                    json!({"exc_type": "AuthenticationError", "exception": "frappe.exceptions.AuthenticationError"}),
                )
            },
            keyed_writes: 0,
            lookup: Some(Lookup {
                is: |s| s.method == "GET" && s.path.starts_with("/api/resource/"),
                found: || Answer::json(200, json!({"data": [{"name": SALES_ORDER}]})),
                reference: SALES_ORDER,
            }),
            oauth2: false,
        },
        Kind {
            kind: "odoo",
            operation: "create_order",
            connector: |addr| {
                format!(
                    r#"kind = "odoo"
url = "http://{addr}"
database = "bank"
login = "orderbridge@bank.example"
api_key = "file:secrets/api-key"
timeout_secs = 1

[operations.create_order]
model = "sale.order"
body = "odoo-sale-order"
idempotency_field = "client_order_ref"
"#
                )
            },
            mappings: &["odoo-sale-order"],
            secrets: &[("api-key", ODOO_KEY)],
            refusal: || {
                // Odoo refuses with HTTP 200 and a JSON-RPC error member.
                let message = "The product LN-3Y cannot be sold: it is archived.";
                let error = json!({"code": 200, "message": "Odoo Server Error", "data": {
                    "name": "odoo.exceptions.ValidationError", "message": message, "arguments": [message],
                    "debug": format!("Traceback (most recent call last):\nodoo.exceptions.ValidationError: {message}")}});
                (Answer::rpc("error", error), message)
            },
            // Odoo itself never answers 401; the reverse proxy in front of it may.
            unauthorized: || Answer::json(401, json!({"message": "401 Authorization Required (nginx)"})),
            keyed_writes: 0,
            lookup: Some(Lookup {
                is: |s| s.rpc().is_some_and(|(model, m)| model == "sale.order" && m == "search"),
                found: || Answer::rpc("result", json!([77])),
                reference: "77",
            }),
            oauth2: false,
        },
    ];
    let mut covered: Vec<&str> = all.iter().map(|k| k.kind).collect();
    covered.sort_unstable();
    let mut known = KINDS.to_vec();
    known.sort_unstable();
    assert_eq!(covered, known, "the compliance suite covers every connector kind");
    all
}

/// One connector of a kind, built from its generated config.
struct Subject {
    kind: &'static str,
    operation: &'static str,
    registry: Registry,
    _dir: tempfile::TempDir,
}

impl Subject {
    fn new(k: &Kind, addr: SocketAddr) -> Subject {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["connectors", "mappings", "secrets"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        std::fs::write(dir.path().join(format!("connectors/{}.toml", k.kind)), (k.connector)(addr)).unwrap();
        let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mappings");
        for m in k.mappings {
            std::fs::copy(examples.join(format!("{m}.toml")), dir.path().join(format!("mappings/{m}.toml"))).unwrap();
        }
        for (name, value) in k.secrets {
            std::fs::write(dir.path().join("secrets").join(name), format!("{value}\n")).unwrap();
        }
        let registry = match Registry::load(dir.path()) {
            Ok((r, _)) => r,
            Err(problems) => panic!("{}: the generated config does not load: {problems:#?}", k.kind),
        };
        Subject { kind: k.kind, operation: k.operation, registry, _dir: dir }
    }

    /// Performs the kind's operation on the effect, as the dispatcher would.
    async fn perform(&self) -> Result<Receipt, ConnectorError> {
        let push = self.registry.get(self.kind).and_then(|c| c.push.clone()).expect("the connector pushes");
        let body = effect();
        push.perform(Outbound { operation: self.operation, idempotency_key: KEY, body: &body }).await
    }

    async fn fail(&self) -> ConnectorError {
        match self.perform().await {
            Ok(r) => panic!("{}: expected an error, got {r:?}", self.kind),
            Err(e) => e,
        }
    }
}

/// An outbox effect as the dispatcher hands it to a connector (an approved order that
/// already has its Stripe customer).
fn effect() -> Value {
    json!({
        "order_id": ORDER_ID,
        "external_id": "9840000001",
        "state": "approved",
        "references": {"stripe.create_customer": "cus_1"},
        "order": {
            "customer": {"id": "C-1", "name": "上海星辰贸易有限公司", "kind": "corporate",
                "email": "cfo@xingchen.example", "locale": "zh-CN"},
            "product": {"type": "loan", "code": "LN-3Y"},
            "need": "流动资金贷款",
            "amount": {"amount": "1250000.05", "currency": "CNY"},
            "placed_at": "2026-11-26T02:03:04Z"
        }
    })
}

fn writes(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter().filter(|s| s.is_write()).collect()
}

// ---------------------------------------------------------------------------------
// The cases.

#[tokio::test]
async fn every_kind_succeeds_against_its_vendor() {
    let server = FaultServer::start().await;
    for k in kinds() {
        let c = Subject::new(&k, server.addr);
        let r = c.perform().await.unwrap_or_else(|e| panic!("{}: {e:?}", k.kind));
        assert!((200..300).contains(&r.status), "{}: {r:?}", k.kind);
        assert!(r.reference.is_some(), "{}: the receipt names what was created: {r:?}", k.kind);
        assert!(!writes(&server.seen()).is_empty(), "{}: something was written", k.kind);
        server.reset(k.kind);
    }
}

#[tokio::test]
async fn a_5xx_is_retryable() {
    let server = FaultServer::start().await;
    for k in kinds() {
        let c = Subject::new(&k, server.addr);
        server.next(Seen::is_write, Answer::json(503, json!({"message": "upstream maintenance"})));
        let e = c.fail().await;
        assert!(matches!(&e, ConnectorError::Retryable { .. }), "{}: {e:?}", k.kind);

        // A lookup that fails is not "not found": nothing is created after it.
        if let Some(l) = &k.lookup {
            server.reset(k.kind);
            server.next(l.is, Answer::json(502, json!({"message": "bad gateway"})));
            let e = c.fail().await;
            assert!(matches!(&e, ConnectorError::Retryable { .. }), "{}: {e:?}", k.kind);
            assert!(writes(&server.seen()).is_empty(), "{}: created after a failed lookup", k.kind);
        }
        server.reset(k.kind);
    }
}

#[tokio::test]
async fn a_timeout_is_retryable() {
    let server = FaultServer::start().await;
    for k in kinds() {
        let c = Subject::new(&k, server.addr);
        // Longer than the connector's timeout_secs = 1.
        server.next(Seen::is_write, Answer::json(200, json!({})).after(Duration::from_secs(3)));
        let e = c.fail().await;
        assert!(
            matches!(&e, ConnectorError::Retryable { message, .. } if message.contains("timed out")),
            "{}: {e:?}",
            k.kind
        );
        server.reset(k.kind);
    }
}

#[tokio::test]
async fn a_429_is_a_rate_limit_with_its_retry_after_delay() {
    // Odoo too: it sends no 429 itself, but the reverse proxy in front of it may
    // (nginx `limit_req_status 429`), and the kind reads HTTP statuses like the rest.
    let server = FaultServer::start().await;
    for k in kinds() {
        let c = Subject::new(&k, server.addr);
        let throttled = Answer::json(429, json!({"message": "You have reached your secondly limit."}))
            .with_header("retry-after", "7");
        server.next(Seen::is_write, throttled);
        let e = c.fail().await;
        assert!(
            matches!(&e, ConnectorError::RateLimited { retry_after: Some(d), .. } if *d == Duration::from_secs(7)),
            "{}: {e:?}",
            k.kind
        );
        server.reset(k.kind);
    }
}

#[tokio::test]
async fn a_refusal_is_permanent_and_carries_the_vendor_s_message() {
    let server = FaultServer::start().await;
    for k in kinds() {
        let c = Subject::new(&k, server.addr);
        let (answer, words) = (k.refusal)();
        server.next(Seen::is_write, answer);
        let e = c.fail().await;
        assert!(
            matches!(&e, ConnectorError::Permanent { message } if message.contains(words)),
            "{}: expected Permanent with {words:?}, got {e:?}",
            k.kind
        );
        server.reset(k.kind);
    }
}

#[tokio::test]
async fn a_401_is_an_auth_failure() {
    let server = FaultServer::start().await;
    for k in kinds() {
        let c = Subject::new(&k, server.addr);
        server.next(Seen::is_write, (k.unauthorized)());
        let e = c.fail().await;
        assert!(matches!(&e, ConnectorError::Auth { .. }), "{}: {e:?}", k.kind);
        if k.oauth2 {
            // The refused token is dropped: the next call fetches a new one.
            server.reset(k.kind);
            c.perform().await.unwrap_or_else(|e| panic!("{}: {e:?}", k.kind));
            let tokens = server.seen().iter().filter(|s| s.is_token()).count();
            assert_eq!(tokens, 1, "{}: a new token after the 401", k.kind);
        }
        server.reset(k.kind);
    }
}

#[tokio::test]
async fn the_idempotency_mechanism_of_every_kind_holds() {
    let server = FaultServer::start().await;
    for k in kinds() {
        let c = Subject::new(&k, server.addr);
        let keys = |seen: &[Seen]| -> Vec<Option<String>> {
            writes(seen).iter().map(|s| s.header("idempotency-key").map(str::to_owned)).collect()
        };

        // A first attempt, and a retry of the same effect.
        c.perform().await.unwrap_or_else(|e| panic!("{}: {e:?}", k.kind));
        let first = server.seen();
        server.reset(k.kind);
        c.perform().await.unwrap_or_else(|e| panic!("{}: {e:?}", k.kind));
        let retry = server.seen();
        server.reset(k.kind);

        // The key: on every write, `<key>/n` for the n-th follow-up call, the same
        // on a retry. Kinds without one send none (a PATCH is idempotent by nature;
        // Frappe and Odoo have no such header).
        let expected: Vec<Option<String>> = if k.keyed_writes == 0 {
            vec![None; writes(&first).len()]
        } else {
            (0..k.keyed_writes).map(|n| Some(if n == 0 { KEY.to_owned() } else { format!("{KEY}/{n}") })).collect()
        };
        assert_eq!(keys(&first), expected, "{}", k.kind);
        assert_eq!(keys(&retry), expected, "{}: the same keys on a retry", k.kind);
        assert!(!writes(&first).is_empty(), "{}", k.kind);
        if k.kind == "hubspot" {
            assert!(writes(&first).iter().all(|s| s.method == "PATCH"), "{}", k.kind);
        }

        // The lookup: it precedes the create and asks for our order id; when it finds
        // the record, that is the result and nothing is created.
        let Some(l) = &k.lookup else { continue };
        let lookup = first.iter().position(|s| (l.is)(s)).unwrap_or_else(|| panic!("{}: no lookup", k.kind));
        let create = first.iter().position(Seen::is_write).unwrap();
        assert!(lookup < create, "{}: the lookup comes first", k.kind);
        assert!(first[lookup].mentions(ORDER_ID), "{}: the lookup names the order: {:?}", k.kind, first[lookup]);
        assert!(writes(&first).iter().all(|s| s.mentions(ORDER_ID)), "{}: the create carries the order id", k.kind);

        server.next(l.is, (l.found)());
        let r = c.perform().await.unwrap_or_else(|e| panic!("{}: {e:?}", k.kind));
        assert_eq!(r.reference.as_deref(), Some(l.reference), "{}: {r:?}", k.kind);
        assert!(writes(&server.seen()).is_empty(), "{}: created although the lookup found it", k.kind);
        server.reset(k.kind);
    }
}

#[tokio::test]
async fn no_secret_reaches_an_error_a_receipt_or_their_debug_output() {
    let server = FaultServer::start().await;
    // A port nobody listens on: connections are refused.
    let dead = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    for k in kinds() {
        let c = Subject::new(&k, server.addr);
        let mut outputs = Vec::new();
        let mut record = |r: Result<Receipt, ConnectorError>| {
            outputs.push(match r {
                Ok(r) => format!("{r:?}"),
                Err(e) => format!("{e} | {e:?}"),
            });
        };
        record(c.perform().await);
        for answer in [
            Answer::json(500, json!({"message": "internal error"})),
            Answer::json(200, json!({})).after(Duration::from_secs(3)),
            Answer::json(429, json!({"message": "slow down"})).with_header("retry-after", "7"),
            (k.refusal)().0,
            (k.unauthorized)(),
        ] {
            server.next(Seen::is_write, answer);
            record(c.perform().await);
        }
        if k.oauth2 {
            server.next(Seen::is_token, Answer::json(401, json!({"error": "invalid_client"})));
            record(Subject::new(&k, server.addr).perform().await);
            server.next(Seen::is_token, Answer::json(503, json!({"error": "temporarily_unavailable"})));
            record(Subject::new(&k, server.addr).perform().await);
        }
        record(Subject::new(&k, dead).perform().await);
        server.reset(k.kind);

        assert_eq!(outputs.iter().filter(|o| o.contains("Receipt")).count(), 1, "{}: {outputs:#?}", k.kind);
        for o in &outputs {
            for secret in SECRETS {
                assert!(!o.contains(secret), "{}: `{secret}` in {o}", k.kind);
            }
        }
    }
}

/// A receiver that echoes the whole request (headers and body) in its error: the
/// connector's error must still show no credential, raw or base64 (Basic).
#[tokio::test]
async fn credentials_echoed_by_a_receiver_are_redacted_from_errors() {
    async fn echo(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        let mut text = format!("{method} {uri}\n");
        for (k, v) in &headers {
            text.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
        }
        text.push_str(&String::from_utf8_lossy(&body));
        (StatusCode::BAD_REQUEST, text).into_response()
    }
    let router = axum::Router::new().fallback(echo);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    for k in kinds() {
        let c = Subject::new(&k, addr);
        let err = match c.perform().await {
            Err(e) => format!("{e} | {e:?}"),
            Ok(r) => panic!("{}: an echoed 400 must fail: {r:?}", k.kind),
        };
        assert!(err.contains("[redacted]"), "{}: the echo carried a credential: {err}", k.kind);
        for (_, secret) in k.secrets {
            let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
            assert!(!err.contains(secret) && !err.contains(&b64), "{}: `{secret}` leaked: {err}", k.kind);
        }
    }
}
