//! The HubSpot and ERPNext presets and the `odoo` kind against receivers that speak
//! as each vendor's public documentation says. None of the three publishes an
//! OpenAPI spec Prism could serve, so each receiver here is a small axum server over
//! TCP. It refuses a request whose shape differs from the documented one (the way
//! the vendor answers a bad request) and answers in the vendor's format.
//!
//! The connectors are the repository's examples (`examples/connectors/`,
//! `examples/mappings/`), copied into a temporary config dir that points at the
//! receiver, with their `${…}` secrets moved to `file:secrets/…`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, patch, post};
use chrono::{DateTime, SecondsFormat, Utc};
use orderbridge::connectors::{ConnectorError, Outbound, Poll, PollState, Receipt, Registry};
use serde_json::{Value, json};

const ORDER_ID: &str = "0193a5e2-c4b8-7d21-a4f0-c9e8b7d6a5f4";
const OTHER_ORDER_ID: &str = "0193a5e2-c4b8-7d21-a4f0-c9e8b7d6a5f5";

const HUBSPOT_TOKEN: &str = "pat-na1-SECRET-tok-7f3a";
const ERPNEXT_KEY: &str = "SECRET-key-4b1d";
const ERPNEXT_SECRET: &str = "SECRET-apisecret-9c2e";
const ODOO_KEY: &str = "SECRET-odoo-key-5e8a";
const ODOO_DB: &str = "bank";
const ODOO_LOGIN: &str = "orderbridge@bank.example";
const ODOO_UID: i64 = 2;

/// Customers as a Chinese bank's CRM holds them: companies and people.
const CUSTOMERS: &[(&str, &str)] = &[
    ("上海星辰贸易有限公司", "corporate"),
    ("北京华信科技股份有限公司", "corporate"),
    ("深圳前海联合金融服务有限公司", "corporate"),
    ("张伟", "individual"),
    ("杭州西湖龙井茶业有限公司", "corporate"),
    ("李娜", "individual"),
    ("成都天府新能源集团有限公司", "corporate"),
    ("王芳", "individual"),
];

// ---------------------------------------------------------------------------------
// Shared: the effect, the config dir, polling runs.

/// An outbox effect as the dispatcher hands it to a connector.
fn effect(order_id: &str, external_id: &str, state: &str) -> Value {
    json!({
        "order_id": order_id,
        "external_id": external_id,
        "state": state,
        "references": {},
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

fn example(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `${NAME}` → `file:secrets/NAME`: secrets in files, so parallel tests share no
/// process environment.
fn secrets_in_files(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let end = start + rest[start..].find('}').expect("a closed ${…}");
        out.push_str(&rest[..start]);
        out.push_str("file:secrets/");
        out.push_str(&rest[start + 2..end]);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// A config dir with `files` (paths under it) and `secrets/<name>` files.
fn config_dir(files: &[(String, String)], secrets: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["connectors", "mappings", "secrets"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    for (path, text) in files {
        std::fs::write(dir.path().join(path), text).unwrap();
    }
    for (name, value) in secrets {
        std::fs::write(dir.path().join("secrets").join(name), format!("{value}\n")).unwrap();
    }
    dir
}

/// The example mappings, unchanged.
fn example_mappings(names: &[&str]) -> Vec<(String, String)> {
    names.iter().map(|n| (format!("mappings/{n}.toml"), example(&format!("mappings/{n}.toml")))).collect()
}

fn load(dir: &Path) -> Registry {
    match Registry::load(dir) {
        Ok((r, _)) => r,
        Err(problems) => panic!("the config does not load: {problems:#?}"),
    }
}

async fn perform(
    registry: &Registry,
    connector: &str,
    operation: &str,
    body: &Value,
) -> Result<Receipt, ConnectorError> {
    let push = registry.get(connector).and_then(|c| c.push.clone()).expect("the connector pushes");
    push.perform(Outbound { operation, idempotency_key: &format!("orderbridge:{operation}:1"), body }).await
}

fn poller(registry: &Registry, connector: &str) -> Arc<dyn Poll> {
    registry.get(connector).and_then(|c| c.poll.clone()).expect("the connector polls")
}

/// One polling run from `state` to its last page: every record in order, and the
/// state committed with each page (the last one is where the next run starts).
async fn run_poll(poll: &Arc<dyn Poll>, mut state: PollState) -> (Vec<Value>, Vec<PollState>) {
    let mut records = Vec::new();
    let mut states = Vec::new();
    for _ in 0..50 {
        let page = poll.fetch(&state).await.unwrap_or_else(|e| panic!("fetch at {state:?}: {e}"));
        records.extend(page.records);
        states.push(page.next.clone());
        state = page.next;
        if !page.more {
            return (records, states);
        }
    }
    panic!("the run did not end within 50 pages");
}

async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn iso_ms(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

/// A JSON number as the vendor writes it on the wire (ERPNext and Odoo send floats).
fn wire_number(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// An amount with two decimals whose last digit is never zero, so it reads back
/// the same through a JSON float.
fn amount(i: usize) -> String {
    format!("{}.{}", 100_000 + i * 2_500, 11 + (i % 8) * 11)
}

fn mapped(registry: &Registry, mapping: &str, record: &Value) -> orderbridge::mapping::Mapped {
    match registry.mappings[mapping].apply(record) {
        Ok(Ok(m)) => m,
        Ok(Err(skipped)) => panic!("{mapping} skipped {record}: {}", skipped.reason),
        Err(e) => panic!("{mapping} failed on {record}: {e}"),
    }
}

// ---------------------------------------------------------------------------------
// HubSpot CRM v3: POST /crm/v3/objects/deals/search, PATCH /crm/v3/objects/deals/{id}.

#[derive(Default)]
struct HubSpot {
    deals: Mutex<Vec<Value>>,
    /// Every search body, in order.
    searches: Mutex<Vec<Value>>,
    /// Every PATCH: the deal id, the request headers, the body.
    patches: Mutex<Vec<(String, HeaderMap, Value)>>,
}

/// HubSpot's error envelope.
fn hubspot_error(status: StatusCode, message: &str, category: &str) -> (StatusCode, Json<Value>) {
    (
        status,
        Json(json!({"status": "error", "message": message,
            "correlationId": "3f1d5c8e-2b7a-4e0f-9a61-8d2c4b7e9f10", "category": category})),
    )
}

fn hubspot_authorized(headers: &HeaderMap) -> bool {
    header(headers, "authorization") == Some(format!("Bearer {HUBSPOT_TOKEN}"))
}

/// What a search request asks for, read as HubSpot reads it.
struct Search {
    since_ms: i64,
    limit: usize,
    after: usize,
    properties: Vec<String>,
}

fn parse_search(body: &Value) -> Result<Search, String> {
    let filters = body
        .pointer("/filterGroups/0/filters")
        .and_then(Value::as_array)
        .filter(|f| f.len() == 1 && body["filterGroups"].as_array().is_some_and(|g| g.len() == 1))
        .ok_or("expected one filterGroup with one filter")?;
    let f = &filters[0];
    if f["propertyName"] != "hs_lastmodifieddate" || f["operator"] != "GTE" {
        return Err(format!("unexpected filter {f}"));
    }
    let since_ms = f["value"]
        .as_str()
        .and_then(|v| v.parse::<i64>().ok())
        .ok_or_else(|| format!("filter value must be a string of milliseconds, got {}", f["value"]))?;
    if body["sorts"] != json!([{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}]) {
        return Err(format!("expected an ascending sort by hs_lastmodifieddate, got {}", body["sorts"]));
    }
    let limit = body["limit"].as_u64().filter(|l| (1..=200).contains(l)).ok_or("limit must be 1 to 200")? as usize;
    let after = match &body["after"] {
        Value::Null => 0,
        Value::String(s) => s.parse().map_err(|_| format!("after `{s}` is not a paging token"))?,
        other => return Err(format!("after must be a string, got {other}")),
    };
    let properties = body["properties"]
        .as_array()
        .ok_or("properties must be a list")?
        .iter()
        .map(|p| p.as_str().map(str::to_owned).ok_or("properties must be names"))
        .collect::<Result<_, _>>()?;
    Ok(Search { since_ms, limit, after, properties })
}

async fn hubspot_search(State(h): State<Arc<HubSpot>>, headers: HeaderMap, body: Bytes) -> (StatusCode, Json<Value>) {
    if !hubspot_authorized(&headers) {
        return hubspot_error(
            StatusCode::UNAUTHORIZED,
            "Authentication credentials not found.",
            "INVALID_AUTHENTICATION",
        );
    }
    if header(&headers, "content-type").as_deref() != Some("application/json") {
        return hubspot_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected application/json", "VALIDATION_ERROR");
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return hubspot_error(StatusCode::BAD_REQUEST, "Invalid input JSON", "VALIDATION_ERROR");
    };
    h.searches.lock().unwrap().push(body.clone());
    let q = match parse_search(&body) {
        Ok(q) => q,
        Err(m) => return hubspot_error(StatusCode::BAD_REQUEST, &m, "VALIDATION_ERROR"),
    };
    let modified = |d: &Value| at(d["properties"]["hs_lastmodifieddate"].as_str().unwrap()).timestamp_millis();
    let mut matching: Vec<Value> =
        h.deals.lock().unwrap().iter().filter(|d| modified(d) >= q.since_ms).cloned().collect();
    matching.sort_by_key(|d| (modified(d), d["id"].as_str().unwrap().to_owned()));
    let end = (q.after + q.limit).min(matching.len());
    // Only the properties asked for (HubSpot adds three of its own).
    let results: Vec<Value> = matching[q.after.min(end)..end]
        .iter()
        .map(|d| {
            let mut d = d.clone();
            let props = d["properties"].as_object_mut().unwrap();
            props.retain(|k, _| {
                q.properties.contains(k) || ["hs_object_id", "createdate", "hs_lastmodifieddate"].contains(&k.as_str())
            });
            d
        })
        .collect();
    let mut answer = json!({"total": matching.len(), "results": results});
    if end < matching.len() {
        answer["paging"] = json!({"next": {"after": end.to_string(), "link": "?after=".to_owned() + &end.to_string()}});
    }
    (StatusCode::OK, Json(answer))
}

const DEAL_STAGES: &[&str] = &[
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
    "closedwon",
    "closedlost",
];

async fn hubspot_patch(
    State(h): State<Arc<HubSpot>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    if !hubspot_authorized(&headers) {
        return hubspot_error(
            StatusCode::UNAUTHORIZED,
            "Authentication credentials not found.",
            "INVALID_AUTHENTICATION",
        );
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return hubspot_error(StatusCode::BAD_REQUEST, "Invalid input JSON", "VALIDATION_ERROR");
    };
    h.patches.lock().unwrap().push((id.clone(), headers.clone(), body.clone()));
    let Some(props) = body["properties"].as_object() else {
        return hubspot_error(StatusCode::BAD_REQUEST, "properties must be an object", "VALIDATION_ERROR");
    };
    if let Some(stage) = props.get("dealstage").and_then(Value::as_str)
        && !DEAL_STAGES.contains(&stage)
    {
        let m = format!(
            "Property values were not valid: [{{\"isValid\":false,\"message\":\"{stage} was not one of the allowed options\",\"error\":\"INVALID_OPTION\",\"name\":\"dealstage\"}}]"
        );
        return hubspot_error(StatusCode::BAD_REQUEST, &m, "VALIDATION_ERROR");
    }
    let mut deals = h.deals.lock().unwrap();
    let Some(deal) = deals.iter_mut().find(|d| d["id"] == id.as_str()) else {
        return hubspot_error(
            StatusCode::NOT_FOUND,
            &format!("Object not found.  objectId are usually numeric. ({id})"),
            "OBJECT_NOT_FOUND",
        );
    };
    for (k, v) in props {
        deal["properties"][k] = v.clone();
    }
    let now = iso_ms(Utc::now());
    deal["properties"]["hs_lastmodifieddate"] = now.clone().into();
    deal["updatedAt"] = now.into();
    (StatusCode::OK, Json(deal.clone()))
}

/// A won deal as the search API returns it (all property values are strings).
fn hubspot_deal(i: usize, modified: DateTime<Utc>) -> Value {
    let (name, kind) = CUSTOMERS[i % CUSTOMERS.len()];
    let id = (9_840_000_000u64 + i as u64).to_string();
    let (doc_type, doc_number) = if kind == "corporate" {
        ("unified_social_credit_code", format!("91310000MA1FL{:05}", i))
    } else {
        ("cn_resident_id", format!("1101051990{:07}X", i))
    };
    json!({
        "id": id,
        "properties": {
            "hs_object_id": id,
            "dealname": format!("{name} 流动资金贷款 第{i}笔"),
            "dealstage": "closedwon",
            "pipeline": "default",
            "amount": amount(i),
            "deal_currency_code": "CNY",
            "closedate": "2026-11-20T08:00:00Z",
            "createdate": "2026-11-01T01:00:00.000Z",
            "hs_lastmodifieddate": iso_ms(modified),
            "customer_id": format!("C-{}", 1000 + i),
            "customer_name": format!(" {name} "),
            "customer_kind": kind,
            "customer_email": format!("finance{i}@customers.example"),
            "customer_locale": "zh-CN",
            "id_document_type": doc_type,
            "id_document_number": doc_number,
            "credit_rating": "aa",
            "kyc_verified": "true",
            "product_type": "Loan",
            "product_code": "ln-3y",
            "term_months": "36",
            "owner_email": "li.na@bank.example"
        },
        "createdAt": "2026-11-01T01:00:00.000Z",
        "updatedAt": iso_ms(modified),
        "archived": false
    })
}

/// The n-th deal's modification time: 37 s apart, with milliseconds.
fn deal_modified(i: usize) -> DateTime<Utc> {
    at("2026-11-26T01:00:00Z") + chrono::Duration::milliseconds(i as i64 * 37_000 + (i as i64 * 7) % 1000)
}

async fn hubspot(deals: usize) -> (Arc<HubSpot>, tempfile::TempDir, Registry) {
    let h = Arc::new(HubSpot::default());
    *h.deals.lock().unwrap() = (0..deals).map(|i| hubspot_deal(i, deal_modified(i))).collect();
    let router = axum::Router::new()
        .route("/crm/v3/objects/deals/search", post(hubspot_search))
        .route("/crm/v3/objects/deals/{id}", patch(hubspot_patch))
        .with_state(h.clone());
    let addr = serve(router).await;
    let connector = secrets_in_files(&example("connectors/hubspot.toml")).replacen(
        "kind = \"hubspot\"",
        &format!("kind = \"hubspot\"\nbase_url = \"http://{addr}\""),
        1,
    );
    let mut files = example_mappings(&["hubspot-deal", "hubspot-deal-search", "hubspot-deal-stage"]);
    files.push(("connectors/hubspot.toml".into(), connector));
    let dir = config_dir(&files, &[("HUBSPOT_TOKEN", HUBSPOT_TOKEN)]);
    let registry = load(dir.path());
    (h, dir, registry)
}

/// The properties `mappings/hubspot-deal.toml` reads.
const DEAL_PROPERTIES: &[&str] = &[
    "dealname",
    "dealstage",
    "amount",
    "deal_currency_code",
    "closedate",
    "hs_lastmodifieddate",
    "customer_id",
    "customer_name",
    "customer_kind",
    "customer_email",
    "customer_locale",
    "id_document_type",
    "id_document_number",
    "credit_rating",
    "kyc_verified",
    "product_type",
    "product_code",
    "term_months",
    "owner_email",
];

#[tokio::test]
async fn hubspot_search_pages_by_cursor_and_resumes_from_the_millisecond_watermark() {
    const N: usize = 230;
    let (h, _dir, registry) = hubspot(N).await;
    let poll = poller(&registry, "hubspot");
    let start = poll.initial();
    assert_eq!(start.watermark.as_deref(), Some("2026-01-01T00:00:00Z"), "start_from of the example");

    let (records, states) = run_poll(&poll, start.clone()).await;

    // Three pages (100, 100, 30) by HubSpot's `after` cursor; the filter stays the
    // run's starting watermark on every page.
    let searches = h.searches.lock().unwrap().clone();
    assert_eq!(searches.len(), 3, "{searches:#?}");
    for (i, s) in searches.iter().enumerate() {
        assert_eq!(
            s["filterGroups"][0]["filters"][0],
            json!({"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": "1767225600000"}),
            "page {i}"
        );
        assert_eq!(s["sorts"], json!([{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}]));
        assert!(s["limit"].as_u64().is_some_and(|l| l <= 200), "{}", s["limit"]);
        let asked: Vec<&str> = s["properties"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        for p in DEAL_PROPERTIES {
            assert!(asked.contains(p), "the search asks for `{p}`: {asked:?}");
        }
    }
    assert!(searches[0].get("after").is_none(), "no cursor on the first page: {}", searches[0]);
    assert_eq!(searches[1]["after"], "100");
    assert_eq!(searches[2]["after"], "200");
    // Between pages the state keeps the starting watermark and carries the cursor.
    assert_eq!(states[0].watermark, start.watermark);
    assert_eq!(states[0].cursor.as_deref(), Some("100"));
    assert_eq!(states[1].cursor.as_deref(), Some("200"));

    // Every deal once, and each maps to an order.
    let mut ids: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), N);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), N, "no deal twice");
    for (i, r) in records.iter().enumerate() {
        let m = mapped(&registry, "hubspot-deal", r);
        assert_eq!(m.external_id.as_str(), r["id"].as_str().unwrap());
        assert_eq!(m.order.customer.name.as_str(), CUSTOMERS[i % CUSTOMERS.len()].0);
        assert_eq!(m.order.amount.to_string(), format!("{} CNY", amount(i)));
        assert_eq!(m.version, u64::try_from(deal_modified(i).timestamp_millis()).unwrap(), "version = ms");
    }

    // The completed run's watermark is the largest hs_lastmodifieddate, as HubSpot wrote it.
    let end = states.last().unwrap().clone();
    let newest = iso_ms(deal_modified(N - 1));
    assert_eq!(end.watermark.as_deref(), Some(newest.as_str()));
    assert_eq!((end.cursor.as_deref(), end.run_max.as_deref()), (None, None), "the run is closed");

    // The next run asks for changes since then, in milliseconds, and gets the deal at
    // the boundary (GTE) plus the two changed since.
    h.deals.lock().unwrap().push(hubspot_deal(N, deal_modified(N)));
    h.deals.lock().unwrap().push(hubspot_deal(N + 1, deal_modified(N + 1)));
    let (again, states) = run_poll(&poll, end).await;
    let searches = h.searches.lock().unwrap().clone();
    assert_eq!(searches.len(), 4);
    let ms = deal_modified(N - 1).timestamp_millis().to_string();
    assert_eq!(searches[3]["filterGroups"][0]["filters"][0]["value"], ms.as_str());
    assert!(searches[3].get("after").is_none());
    let ids: Vec<&str> = again.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["9840000229", "9840000230", "9840000231"]);
    let newest = iso_ms(deal_modified(N + 1));
    assert_eq!(states.last().unwrap().watermark.as_deref(), Some(newest.as_str()));
}

#[tokio::test]
async fn hubspot_update_deal_patches_the_stage_without_an_idempotency_key() {
    let (h, _dir, registry) = hubspot(3).await;

    let r = perform(&registry, "hubspot", "update_deal", &effect(ORDER_ID, "9840000001", "approved")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.reference.as_deref(), Some("9840000001"), "the deal's id");
    let r = perform(&registry, "hubspot", "update_deal", &effect(OTHER_ORDER_ID, "9840000002", "rejected")).await;
    assert!(r.is_ok(), "{r:?}");

    {
        let patches = h.patches.lock().unwrap();
        assert_eq!(patches.len(), 2);
        let (id, headers, body) = &patches[0];
        assert_eq!(id, "9840000001");
        assert_eq!(body, &json!({"properties": {"dealstage": "contractsent", "orderbridge_order_id": ORDER_ID}}));
        assert_eq!(header(headers, "content-type").as_deref(), Some("application/json"));
        assert_eq!(header(headers, "idempotency-key"), None, "a PATCH is idempotent; HubSpot takes no key");
        assert_eq!(patches[1].2["properties"]["dealstage"], "closedlost");
    }
    let deals = h.deals.lock().unwrap().clone();
    assert_eq!(deals[1]["properties"]["dealstage"], "contractsent");
    assert_eq!(deals[2]["properties"]["dealstage"], "closedlost");

    // A deal HubSpot does not have: permanent, with HubSpot's message.
    let e = perform(&registry, "hubspot", "update_deal", &effect(ORDER_ID, "404404", "approved")).await.unwrap_err();
    assert!(matches!(&e, ConnectorError::Permanent { message } if message.contains("Object not found")), "{e:?}");
    // A state the stage table does not list fails before anything is sent.
    let e =
        perform(&registry, "hubspot", "update_deal", &effect(ORDER_ID, "9840000001", "screening")).await.unwrap_err();
    assert!(matches!(&e, ConnectorError::Permanent { message } if message.contains("screening")), "{e:?}");
    assert_eq!(h.patches.lock().unwrap().len(), 3, "nothing sent for the unmapped state");
}

// ---------------------------------------------------------------------------------
// ERPNext / Frappe: GET and POST /api/resource/{doctype}, `token key:secret`.

#[derive(Default)]
struct Frappe {
    sales_orders: Mutex<Vec<Value>>,
    requests: Mutex<Vec<FrappeRequest>>,
}

#[derive(Debug, Clone)]
struct FrappeRequest {
    method: &'static str,
    doctype: String,
    query: BTreeMap<String, String>,
    body: Option<String>,
    authorization: Option<String>,
    idempotency_key: Option<String>,
}

/// Frappe's error envelope (`exc_type`, `exception`, `_server_messages`).
fn frappe_error(status: StatusCode, exc_type: &str, message: &str) -> (StatusCode, Json<Value>) {
    let server_messages = json!([json!({"message": message, "title": "Message", "indicator": "red"}).to_string()]);
    (
        status,
        Json(json!({"exc_type": exc_type, "exception": format!("frappe.exceptions.{exc_type}: {message}"),
            "_server_messages": server_messages.to_string()})),
    )
}

impl Frappe {
    fn record(
        &self,
        method: &'static str,
        doctype: &str,
        headers: &HeaderMap,
        query: Option<String>,
        body: Option<String>,
    ) {
        let query = form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
        self.requests.lock().unwrap().push(FrappeRequest {
            method,
            doctype: doctype.to_owned(),
            query,
            body,
            authorization: header(headers, "authorization"),
            idempotency_key: header(headers, "idempotency-key"),
        });
    }

    fn check(&self, doctype: &str, headers: &HeaderMap) -> Result<(), (StatusCode, Json<Value>)> {
        if header(headers, "authorization") != Some(format!("token {ERPNEXT_KEY}:{ERPNEXT_SECRET}")) {
            return Err(frappe_error(StatusCode::UNAUTHORIZED, "AuthenticationError", "Invalid API key or secret"));
        }
        if doctype != "Sales Order" {
            return Err(frappe_error(
                StatusCode::NOT_FOUND,
                "DoesNotExistError",
                &format!("DocType {doctype} not found"),
            ));
        }
        Ok(())
    }
}

/// `filters` as Frappe reads it: `[[field, op, value], …]` with `=` and `>=`.
fn frappe_matches(filters: &Value, doc: &Value) -> bool {
    filters.as_array().into_iter().flatten().all(|f| {
        let (field, op, value) = (f[0].as_str().unwrap_or_default(), f[1].as_str().unwrap_or_default(), &f[2]);
        let have = doc.get(field).and_then(Value::as_str).unwrap_or_default();
        let want = value.as_str().unwrap_or_default();
        match op {
            "=" => have == want,
            ">=" => have >= want,
            _ => false,
        }
    })
}

/// `order_by` as Frappe reads it: `field asc, field desc, …`.
fn frappe_sort(docs: &mut [Value], order_by: &str) -> Result<(), String> {
    let keys: Vec<(String, bool)> = order_by
        .split(',')
        .map(|part| match part.split_whitespace().collect::<Vec<_>>().as_slice() {
            [f, d] if d.eq_ignore_ascii_case("asc") => Ok(((*f).to_owned(), true)),
            [f, d] if d.eq_ignore_ascii_case("desc") => Ok(((*f).to_owned(), false)),
            _ => Err(format!("cannot read order_by `{order_by}`")),
        })
        .collect::<Result<_, _>>()?;
    docs.sort_by(|a, b| {
        keys.iter()
            .map(|(f, asc)| {
                let o = a[f].as_str().unwrap_or_default().cmp(b[f].as_str().unwrap_or_default());
                if *asc { o } else { o.reverse() }
            })
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    Ok(())
}

async fn frappe_list(
    State(f): State<Arc<Frappe>>,
    UrlPath(doctype): UrlPath<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> (StatusCode, Json<Value>) {
    f.record("GET", &doctype, &headers, query.clone(), None);
    if let Err(e) = f.check(&doctype, &headers) {
        return e;
    }
    let q: BTreeMap<String, String> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    let json_param = |name: &str, default: Value| match q.get(name) {
        None => Ok(default),
        Some(t) => serde_json::from_str::<Value>(t).map_err(|_| format!("{name} is not JSON: {t}")),
    };
    let (fields, filters) = match (json_param("fields", json!(["name"])), json_param("filters", json!([]))) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(m), _) | (_, Err(m)) => return frappe_error(StatusCode::EXPECTATION_FAILED, "ValidationError", &m),
    };
    let number = |name: &str, default: usize| q.get(name).map_or(Ok(default), |v| v.parse::<usize>());
    // Frappe's defaults: from the start, 20 per page, newest change first.
    let (Ok(start), Ok(length)) = (number("limit_start", 0), number("limit_page_length", 20)) else {
        return frappe_error(
            StatusCode::EXPECTATION_FAILED,
            "ValidationError",
            "limit_start and limit_page_length are numbers",
        );
    };
    let mut docs: Vec<Value> =
        f.sales_orders.lock().unwrap().iter().filter(|d| frappe_matches(&filters, d)).cloned().collect();
    if let Err(m) = frappe_sort(&mut docs, q.get("order_by").map_or("modified desc", String::as_str)) {
        return frappe_error(StatusCode::EXPECTATION_FAILED, "ValidationError", &m);
    }
    let all_fields = fields == json!(["*"]);
    let data: Vec<Value> = docs
        .into_iter()
        .skip(start)
        .take(length)
        .map(|d| {
            if all_fields {
                return d;
            }
            let names = fields.as_array().into_iter().flatten().filter_map(Value::as_str);
            Value::Object(names.map(|n| (n.to_owned(), d[n].clone())).collect())
        })
        .collect();
    (StatusCode::OK, Json(json!({"data": data})))
}

/// Frappe's mandatory fields of a Sales Order; a missing one is a `MandatoryError` (417).
fn frappe_validate(doc: &Value) -> Result<(), String> {
    for field in ["customer", "transaction_date", "delivery_date"] {
        if doc[field].as_str().is_none_or(str::is_empty) {
            return Err(format!("[Sales Order, new-sales-order-1]: {field}"));
        }
    }
    let date = |f: &str| chrono::NaiveDate::parse_from_str(doc[f].as_str().unwrap(), "%Y-%m-%d");
    match (date("transaction_date"), date("delivery_date")) {
        (Ok(t), Ok(d)) if d >= t => {}
        _ => return Err("Delivery Date cannot be before Sales Order Date".into()),
    }
    let items = doc["items"].as_array().filter(|i| !i.is_empty()).ok_or("[Sales Order]: items")?;
    for (i, item) in items.iter().enumerate() {
        if item["item_code"].as_str().is_none() || !item["qty"].is_number() || !item["rate"].is_number() {
            return Err(format!("Row #{}: item_code, qty and rate are mandatory", i + 1));
        }
    }
    Ok(())
}

async fn frappe_insert(
    State(f): State<Arc<Frappe>>,
    UrlPath(doctype): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    let text = String::from_utf8_lossy(&body).into_owned();
    f.record("POST", &doctype, &headers, None, Some(text.clone()));
    if let Err(e) = f.check(&doctype, &headers) {
        return e;
    }
    let Ok(Value::Object(mut doc)) = serde_json::from_str::<Value>(&text) else {
        return frappe_error(StatusCode::EXPECTATION_FAILED, "ValidationError", "the body is not a JSON document");
    };
    if let Err(m) = frappe_validate(&Value::Object(doc.clone())) {
        return frappe_error(StatusCode::EXPECTATION_FAILED, "MandatoryError", &m);
    }
    let mut orders = f.sales_orders.lock().unwrap();
    let name = format!("SAL-ORD-2026-{:05}", orders.len() + 1);
    for (k, v) in [
        ("name", json!(name)),
        ("doctype", json!("Sales Order")),
        ("docstatus", json!(0)),
        ("status", json!("Draft")),
        ("owner", json!("orderbridge@bank.example")),
        ("creation", json!("2026-11-26 10:03:04.123456")),
        ("modified", json!("2026-11-26 10:03:04.123456")),
    ] {
        doc.insert(k.into(), v);
    }
    orders.push(Value::Object(doc.clone()));
    (StatusCode::OK, Json(json!({"data": doc})))
}

/// A submitted Sales Order as the list API returns it with `fields=["*"]`.
fn sales_order(i: usize, modified: &str) -> Value {
    let (name, _) = CUSTOMERS[i % CUSTOMERS.len()];
    json!({
        "name": format!("SAL-ORD-2026-{:05}", 500 + i),
        "doctype": "Sales Order",
        "docstatus": 1,
        "status": "To Deliver and Bill",
        "customer": format!("CUST-{:05}", 100 + i),
        "customer_name": name,
        "po_no": format!("PO-{i}"),
        "transaction_date": "2026-11-26",
        "delivery_date": "2026-12-03",
        "currency": "CNY",
        "grand_total": wire_number(&amount(i)),
        "custom_product_type": "loan",
        "custom_product_code": "ln-3y",
        "owner": "sales@bank.example",
        "creation": "2026-11-26 09:00:00.000000",
        "modified": modified,
    })
}

/// ERPNext writes `modified` in the site's time zone, microseconds included.
fn so_modified(i: usize) -> String {
    let t = at("2026-11-26T10:00:00Z")
        + chrono::Duration::microseconds(i as i64 * 13_000_000 + (i as i64 * 37) % 1_000_000);
    t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

/// Sales Order docs → orders; custom fields carry the product.
const ERPNEXT_INBOUND: &str = r#"
version = "test.1"
connector = "erpnext"
external_id = { path = "$.name" }

[fields]
"customer.id" = { path = "$.customer" }
"customer.name" = { path = "$.customer_name" }
"customer.kind" = { path = "$.custom_customer_kind", default = "corporate" }
"product.type" = { path = "$.custom_product_type" }
"product.code" = { path = "$.custom_product_code", transform = ["upper"] }
"amount.amount" = { path = "$.grand_total", as = "decimal" }
"amount.currency" = { path = "$.currency" }
"placed_at" = { path = "$.transaction_date", as = "date" }
"#;

async fn erpnext() -> (Arc<Frappe>, tempfile::TempDir, Registry) {
    let f = Arc::new(Frappe::default());
    let router = axum::Router::new()
        .route("/api/resource/{doctype}", get(frappe_list).post(frappe_insert))
        .with_state(f.clone());
    let addr = serve(router).await;
    let connector = secrets_in_files(&example("connectors/erpnext.toml"))
        .replace("https://erp.bank.example", &format!("http://{addr}"))
        + "\n[poll]\nmapping = \"erpnext-sales-order-in\"\n";
    let mut files = example_mappings(&["erpnext-sales-order"]);
    files.push(("mappings/erpnext-sales-order-in.toml".into(), ERPNEXT_INBOUND.into()));
    files.push(("connectors/erpnext.toml".into(), connector));
    let dir = config_dir(&files, &[("ERPNEXT_API_KEY", ERPNEXT_KEY), ("ERPNEXT_API_SECRET", ERPNEXT_SECRET)]);
    let registry = load(dir.path());
    (f, dir, registry)
}

#[tokio::test]
async fn erpnext_create_sales_order_looks_up_po_no_then_posts_once() {
    let (f, _dir, registry) = erpnext().await;
    let e = effect(ORDER_ID, "9840000001", "approved");

    let r = perform(&registry, "erpnext", "create_sales_order", &e).await.unwrap();
    assert_eq!(r.reference.as_deref(), Some("SAL-ORD-2026-00001"), "{r:?}");

    let requests = f.requests.lock().unwrap().clone();
    assert_eq!(requests.iter().map(|r| r.method).collect::<Vec<_>>(), ["GET", "POST"], "{requests:#?}");
    for r in &requests {
        assert_eq!(r.doctype, "Sales Order");
        assert_eq!(r.authorization.as_deref(), Some(format!("token {ERPNEXT_KEY}:{ERPNEXT_SECRET}").as_str()));
        assert_eq!(r.idempotency_key, None, "Frappe has no idempotency key");
    }
    let lookup = &requests[0].query;
    let filters: Value = serde_json::from_str(&lookup["filters"]).unwrap();
    assert_eq!(filters, json!([["po_no", "=", ORDER_ID]]));
    assert_eq!(serde_json::from_str::<Value>(&lookup["fields"]).unwrap(), json!(["name"]));

    let text = requests[1].body.clone().unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["customer"], "上海星辰贸易有限公司");
    assert_eq!(doc["po_no"], ORDER_ID);
    assert_eq!(doc["transaction_date"], "2026-11-26");
    assert_eq!(doc["delivery_date"], "2026-12-03");
    assert_eq!(doc["currency"], "CNY");
    assert_eq!(doc["items"][0]["item_code"], "LN-3Y");
    assert_eq!(doc["items"][0]["qty"], 1);
    assert!(text.contains("\"rate\": 1250000.05"), "the rate leaves exactly as written: {text}");

    // The same effect again (a retry after a lost answer): found by po_no, not posted.
    let again = perform(&registry, "erpnext", "create_sales_order", &e).await.unwrap();
    assert_eq!(again.reference.as_deref(), Some("SAL-ORD-2026-00001"));
    assert!(again.summary.contains("not created again"), "{}", again.summary);
    assert_eq!(f.sales_orders.lock().unwrap().len(), 1, "exactly one Sales Order");
    let methods: Vec<&str> = f.requests.lock().unwrap().iter().map(|r| r.method).collect();
    assert_eq!(methods, ["GET", "POST", "GET"]);

    // Another order is another Sales Order.
    let r = perform(&registry, "erpnext", "create_sales_order", &effect(OTHER_ORDER_ID, "D-2", "approved")).await;
    assert_eq!(r.unwrap().reference.as_deref(), Some("SAL-ORD-2026-00002"));

    // Frappe's MandatoryError (417) is permanent and names the field.
    let mut bad = effect("0193a5e2-c4b8-7d21-a4f0-c9e8b7d6a5f6", "D-3", "approved");
    bad["order"]["customer"]["name"] = "".into();
    let err = perform(&registry, "erpnext", "create_sales_order", &bad).await.unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Permanent { message } if message.contains("HTTP 417") && message.contains("customer")),
        "{err:?}"
    );
}

#[tokio::test]
async fn erpnext_poll_lists_sales_orders_by_offset_and_filters_by_modified() {
    const N: usize = 200;
    let (f, _dir, registry) = erpnext().await;
    *f.sales_orders.lock().unwrap() = (0..N).rev().map(|i| sales_order(i, &so_modified(i))).collect();
    let poll = poller(&registry, "erpnext");

    let (records, states) = run_poll(&poll, poll.initial()).await;

    // Offset paging to the end: 100, 100, then an empty page.
    let requests = f.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 3, "{requests:#?}");
    for (i, r) in requests.iter().enumerate() {
        assert_eq!((r.method, r.doctype.as_str()), ("GET", "Sales Order"));
        assert_eq!(r.query.get("fields").map(String::as_str), Some(r#"["*"]"#));
        assert_eq!(r.query.get("order_by").map(String::as_str), Some("modified asc, name asc"));
        assert_eq!(r.query.get("limit_start"), Some(&(i * 100).to_string()));
        assert_eq!(r.query.get("limit_page_length").map(String::as_str), Some("100"));
        assert!(!r.query.contains_key("filters"), "no watermark yet, so no filter: {:?}", r.query);
    }
    assert_eq!(states.iter().map(|s| s.offset).collect::<Vec<_>>(), [100, 200, 0]);

    let mut names: Vec<&str> = records.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), N);
    names.sort();
    names.dedup();
    assert_eq!(names.len(), N, "every Sales Order once");
    for r in &records {
        let m = mapped(&registry, "erpnext-sales-order-in", r);
        let i: usize = r["po_no"].as_str().unwrap()[3..].parse().unwrap();
        assert_eq!(m.order.customer.name.as_str(), CUSTOMERS[i % CUSTOMERS.len()].0);
        assert_eq!(m.order.amount.to_string(), format!("{} CNY", amount(i)));
        assert_eq!(m.order.product.code.as_str(), "LN-3Y");
    }

    // The watermark is the newest `modified`, as ERPNext wrote it; the next run
    // filters by it, to the second (so the newest is read again, never skipped).
    let end = states.last().unwrap().clone();
    assert_eq!(end.watermark.as_deref(), Some(so_modified(N - 1).as_str()));
    f.sales_orders.lock().unwrap().push(sales_order(N, &so_modified(N)));
    let (again, _) = run_poll(&poll, end).await;
    let r = f.requests.lock().unwrap().last().unwrap().clone();
    let filters: Value = serde_json::from_str(&r.query["filters"]).unwrap();
    assert_eq!(filters, json!([["modified", ">=", &so_modified(N - 1)[..19]]]));
    assert_eq!(r.query.get("limit_start").map(String::as_str), Some("0"));
    let names: Vec<&str> = again.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["SAL-ORD-2026-00699", "SAL-ORD-2026-00700"]);
}

// ---------------------------------------------------------------------------------
// Odoo external API: POST /jsonrpc, `common.login`, `object.execute_kw`.

#[derive(Default)]
struct Odoo {
    db: Mutex<OdooDb>,
}

#[derive(Default)]
struct OdooDb {
    /// Records by model; each has an integer `id`.
    models: BTreeMap<String, Vec<Value>>,
    next_id: i64,
    /// Every call: service, method, args.
    calls: Vec<(String, String, Value)>,
    /// The error to answer instead, once, for an execute_kw of (model, method) or a
    /// call of (service, method).
    fail: Option<(String, String, Value)>,
}

/// Odoo's JSON-RPC error member for an exception `name` with `message`.
fn odoo_error(name: &str, message: &str) -> Value {
    json!({"code": 200, "message": "Odoo Server Error", "data": {
        "name": name, "message": message, "arguments": [message], "context": {},
        "debug": format!("Traceback (most recent call last):\n  File \"/usr/lib/python3/dist-packages/odoo/http.py\", line 1772, in _serve_db\n{name}: {message}\n"),
    }})
}

fn odoo_bad(message: &str) -> Value {
    odoo_error("builtins.ValueError", message)
}

/// Whether `record` satisfies an Odoo domain of `[field, op, value]` terms (implicit AND).
fn odoo_matches(domain: &Value, record: &Value) -> Result<bool, Value> {
    for term in domain.as_array().ok_or_else(|| odoo_bad("the domain must be a list"))? {
        let [field, op, want] = term.as_array().map(Vec::as_slice).unwrap_or_default() else {
            return Err(odoo_bad(&format!("Invalid leaf {term}")));
        };
        let have = &record[field.as_str().unwrap_or_default()];
        let cmp = |a: &Value, b: &Value| match (a, b) {
            (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
            (Value::Number(a), Value::Number(b)) => a.as_i64().zip(b.as_i64()).map(|(a, b)| a.cmp(&b)),
            _ => None,
        };
        let ok = match op.as_str().unwrap_or_default() {
            "=" => have == want,
            "!=" => have != want,
            ">=" => cmp(have, want).is_some_and(|o| o.is_ge()),
            "in" => want.as_array().is_some_and(|w| w.contains(have)),
            other => return Err(odoo_bad(&format!("Invalid operator {other}"))),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

impl OdooDb {
    fn table(&mut self, model: &str) -> &mut Vec<Value> {
        self.models.entry(model.to_owned()).or_default()
    }

    fn exists(&self, model: &str, id: &Value) -> bool {
        self.models.get(model).is_some_and(|t| t.iter().any(|r| &r["id"] == id))
    }

    fn insert(&mut self, model: &str, mut vals: Value) -> i64 {
        self.next_id += 1;
        let id = self.next_id;
        vals["id"] = id.into();
        self.table(model).push(vals);
        id
    }

    /// A record as `search_read` shows it: many2one fields as `[id, display name]`,
    /// and an unknown field is an error, as in Odoo.
    fn read(&self, model: &str, record: &Value, fields: &[String]) -> Result<Value, Value> {
        let mut out = serde_json::Map::new();
        out.insert("id".into(), record["id"].clone());
        for f in fields {
            let v = record.get(f).ok_or_else(|| odoo_bad(&format!("Invalid field '{f}' on model '{model}'")))?;
            let shown = match (f.as_str(), v) {
                ("partner_id", id) => {
                    let p = self.models["res.partner"].iter().find(|p| &p["id"] == id).unwrap();
                    json!([id, p["name"]])
                }
                ("currency_id", id) => json!([id, "CNY"]),
                _ => v.clone(),
            };
            out.insert(f.clone(), shown);
        }
        Ok(Value::Object(out))
    }

    fn execute_kw(&mut self, args: &Value) -> Result<Value, Value> {
        let a = args.as_array().ok_or_else(|| odoo_bad("execute_kw takes a list"))?;
        if !(6..=7).contains(&a.len()) {
            return Err(odoo_bad("execute_kw(db, uid, password, model, method, args[, kwargs])"));
        }
        if a[0] != ODOO_DB || a[1] != ODOO_UID || a[2] != ODOO_KEY {
            return Err(odoo_error("odoo.exceptions.AccessDenied", "Access Denied"));
        }
        let model = a[3].as_str().unwrap_or_default().to_owned();
        let method = a[4].as_str().unwrap_or_default().to_owned();
        let pos = a[5].as_array().ok_or_else(|| odoo_bad("args must be a list"))?.clone();
        let kw = a.get(6).cloned().unwrap_or(json!({}));
        if self.fail.as_ref().is_some_and(|(m, f, _)| *m == model && *f == method) {
            return Err(self.fail.take().unwrap().2);
        }
        let domain = pos.first().cloned().unwrap_or(json!([]));
        let offset = kw["offset"].as_u64().unwrap_or(0) as usize;
        let limit = kw["limit"].as_u64().map_or(usize::MAX, |l| l as usize);
        match method.as_str() {
            "search" | "search_read" => {
                let mut found = Vec::new();
                for r in self.models.get(&model).into_iter().flatten() {
                    if odoo_matches(&domain, r)? {
                        found.push(r.clone());
                    }
                }
                if let Some(order) = kw["order"].as_str() {
                    let keys: Vec<(String, bool)> = order
                        .split(',')
                        .map(|p| {
                            let mut w = p.split_whitespace();
                            (w.next().unwrap_or_default().to_owned(), w.next().is_none_or(|d| d == "asc"))
                        })
                        .collect();
                    found.sort_by(|x, y| {
                        keys.iter()
                            .map(|(f, asc)| {
                                let o = match (&x[f], &y[f]) {
                                    (Value::Number(a), Value::Number(b)) => a.as_i64().cmp(&b.as_i64()),
                                    (a, b) => a.as_str().cmp(&b.as_str()),
                                };
                                if *asc { o } else { o.reverse() }
                            })
                            .find(|o| o.is_ne())
                            .unwrap_or(std::cmp::Ordering::Equal)
                    });
                }
                let page = found.into_iter().skip(offset).take(limit);
                if method == "search" {
                    return Ok(page.map(|r| r["id"].clone()).collect());
                }
                let fields: Vec<String> =
                    serde_json::from_value(kw["fields"].clone()).map_err(|_| odoo_bad("fields must be names"))?;
                page.map(|r| self.read(&model, &r, &fields)).collect::<Result<Vec<_>, _>>().map(Value::from)
            }
            "create" => {
                let vals = pos.first().filter(|v| v.is_object()).cloned().ok_or_else(|| odoo_bad("create(vals)"))?;
                self.validate(&model, &vals)?;
                let mut vals = vals;
                if model == "sale.order" {
                    vals["name"] = format!("S{:05}", self.table(&model).len() + 1).into();
                    vals["state"] = "draft".into();
                    vals["write_date"] = "2026-11-26 02:03:05".into();
                    vals["amount_total"] = vals["order_line"][0][2]["price_unit"].clone();
                }
                Ok(self.insert(&model, vals).into())
            }
            "write" => {
                let ids = pos.first().and_then(Value::as_array).cloned().unwrap_or_default();
                let vals =
                    pos.get(1).and_then(Value::as_object).cloned().ok_or_else(|| odoo_bad("write(ids, vals)"))?;
                for r in self.table(&model).iter_mut().filter(|r| ids.contains(&r["id"])) {
                    r.as_object_mut().unwrap().extend(vals.clone());
                }
                Ok(true.into())
            }
            other => Err(odoo_error(
                "builtins.AttributeError",
                &format!("The method '{other}' does not exist on the model '{model}'"),
            )),
        }
    }

    /// The constraints that matter here: required fields and existing links.
    fn validate(&self, model: &str, vals: &Value) -> Result<(), Value> {
        let invalid = |m: String| odoo_error("odoo.exceptions.ValidationError", &m);
        match model {
            "res.partner" | "product.product" if vals["name"].as_str().is_none_or(str::is_empty) => {
                Err(invalid(format!("{model}: the name is required")))
            }
            "sale.order" => {
                if !vals["partner_id"].is_i64() || !self.exists("res.partner", &vals["partner_id"]) {
                    return Err(invalid(format!("Customer {} does not exist", vals["partner_id"])));
                }
                for line in vals["order_line"].as_array().into_iter().flatten() {
                    let product = &line[2]["product_id"];
                    if line[0] != 0 || !product.is_i64() || !self.exists("product.product", product) {
                        return Err(invalid(format!("Invalid order line {line}")));
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

async fn odoo_rpc(State(o): State<Arc<Odoo>>, Json(envelope): Json<Value>) -> Json<Value> {
    let id = envelope["id"].clone();
    let p = &envelope["params"];
    let result = if envelope["jsonrpc"] != "2.0" || envelope["method"] != "call" || !id.is_number() {
        Err(odoo_bad("not a JSON-RPC 2.0 call"))
    } else {
        let mut db = o.db.lock().unwrap();
        let (service, method) = (p["service"].as_str().unwrap_or_default(), p["method"].as_str().unwrap_or_default());
        db.calls.push((service.to_owned(), method.to_owned(), p["args"].clone()));
        let fails = db.fail.as_ref().is_some_and(|(s, m, _)| s == service && m == method);
        match (service, method) {
            _ if fails => Err(db.fail.take().unwrap().2),
            // A wrong login or key is not an error: login answers `false`.
            ("common", "login") if p["args"] == json!([ODOO_DB, ODOO_LOGIN, ODOO_KEY]) => Ok(json!(ODOO_UID)),
            ("common", "login") => Ok(json!(false)),
            ("object", "execute_kw") => db.execute_kw(&p["args"]),
            _ => Err(odoo_error("werkzeug.exceptions.NotFound", "404: Not Found")),
        }
    };
    Json(match result {
        Ok(r) => json!({"jsonrpc": "2.0", "id": id, "result": r}),
        Err(e) => json!({"jsonrpc": "2.0", "id": id, "error": e}),
    })
}

/// Sale orders → orders (ids, `[id, name]` links and `x_` custom fields, as
/// `search_read` returns them).
const ODOO_INBOUND: &str = r#"
version = "test.1"
connector = "odoo"
external_id = { path = "$.id" }

[fields]
"customer.id" = { path = "$.partner_id[0]" }
"customer.name" = { path = "$.partner_id[1]" }
"customer.kind" = { path = "$.x_customer_kind", default = "corporate" }
"product.type" = { path = "$.x_product_type" }
"product.code" = { path = "$.x_product_code" }
"amount.amount" = { path = "$.amount_total", as = "decimal" }
"amount.currency" = { path = "$.currency_id[1]" }
"#;

const ODOO_POLL: &str = r#"
[poll]
model = "sale.order"
fields = ["name", "partner_id", "client_order_ref", "amount_total", "currency_id", "state", "write_date", "x_product_type", "x_product_code"]
domain = '[["state", "in", ["sale", "done"]]]'
limit = 3
mapping = "odoo-sale-order-in"
"#;

async fn odoo(key: &str) -> (Arc<Odoo>, tempfile::TempDir, Registry) {
    odoo_with(key, ODOO_POLL).await
}

async fn odoo_with(key: &str, poll: &str) -> (Arc<Odoo>, tempfile::TempDir, Registry) {
    let o = Arc::new(Odoo::default());
    let addr = serve(axum::Router::new().route("/jsonrpc", post(odoo_rpc)).with_state(o.clone())).await;
    let connector = secrets_in_files(&example("connectors/odoo.toml"))
        .replace("https://odoo.bank.example", &format!("http://{addr}"))
        + poll;
    let mut files = example_mappings(&["odoo-sale-order"]);
    files.push(("mappings/odoo-sale-order-in.toml".into(), ODOO_INBOUND.into()));
    files.push(("connectors/odoo.toml".into(), connector));
    let dir = config_dir(&files, &[("ODOO_API_KEY", key)]);
    let registry = load(dir.path());
    (o, dir, registry)
}

/// The execute_kw calls since `from`: (model, method, positional args, kwargs).
fn odoo_calls(o: &Odoo, from: usize) -> Vec<(String, String, Value, Value)> {
    o.db.lock().unwrap().calls[from..]
        .iter()
        .filter(|(s, m, _)| s == "object" && m == "execute_kw")
        .map(|(_, _, a)| {
            (a[3].as_str().unwrap().to_owned(), a[4].as_str().unwrap().to_owned(), a[5].clone(), a[6].clone())
        })
        .collect()
}

fn odoo_logins(o: &Odoo) -> usize {
    o.db.lock().unwrap().calls.iter().filter(|(s, m, _)| s == "common" && m == "login").count()
}

#[tokio::test]
async fn odoo_create_order_links_partner_and_product_and_creates_one_sale_order() {
    let (o, _dir, registry) = odoo(ODOO_KEY).await;
    let e = effect(ORDER_ID, "D-1", "approved");

    let r = perform(&registry, "odoo", "create_order", &e).await.unwrap();

    let db = o.db.lock().unwrap().models.clone();
    let (partners, products, orders) = (&db["res.partner"], &db["product.product"], &db["sale.order"]);
    assert_eq!(partners.len(), 1);
    assert_eq!(
        (&partners[0]["name"], &partners[0]["ref"], &partners[0]["email"]),
        (&json!("上海星辰贸易有限公司"), &json!("C-1"), &json!("cfo@xingchen.example"))
    );
    assert_eq!((&products[0]["default_code"], products.len()), (&json!("LN-3Y"), 1));
    assert_eq!(orders.len(), 1);
    let so = &orders[0];
    assert_eq!(r.reference, Some(so["id"].to_string()), "the receipt names the new sale.order");
    assert_eq!(so["partner_id"], partners[0]["id"]);
    assert_eq!(so["client_order_ref"], ORDER_ID);
    assert_eq!(so["date_order"], "2026-11-26");
    assert_eq!(so["order_line"][0][0], 0, "a (0, 0, values) create command");
    assert_eq!(so["order_line"][0][2]["product_id"], products[0]["id"]);
    assert_eq!(so["order_line"][0][2]["price_unit"].to_string(), "1250000.05");

    // The JSON-RPC shapes: login with [db, login, key], then execute_kw with
    // [db, uid, key, model, method, args, kwargs].
    let calls = o.db.lock().unwrap().calls.clone();
    assert_eq!((calls[0].0.as_str(), calls[0].1.as_str()), ("common", "login"));
    assert_eq!(calls[0].2, json!([ODOO_DB, ODOO_LOGIN, ODOO_KEY]));
    assert!(calls[1..].iter().all(|(s, m, a)| s == "object"
        && m == "execute_kw"
        && a[0] == ODOO_DB
        && a[1] == ODOO_UID
        && a[2] == ODOO_KEY
        && a.as_array().unwrap().len() == 7));
    let kw = odoo_calls(&o, 0);
    let steps: Vec<(&str, &str)> = kw.iter().map(|(m, f, _, _)| (m.as_str(), f.as_str())).collect();
    // Links first (each searched, then created), then the order: searched by
    // client_order_ref, then created.
    assert_eq!(steps.len(), 6, "{steps:?}");
    for model in ["res.partner", "product.product"] {
        let i = steps.iter().position(|s| *s == (model, "search")).unwrap();
        assert_eq!(steps[i + 1], (model, "create"), "{steps:?}");
    }
    assert_eq!(&steps[4..], [("sale.order", "search"), ("sale.order", "create")]);
    let search_of = |model: &str| kw.iter().find(|(m, f, _, _)| m == model && f == "search").unwrap().clone();
    assert_eq!(search_of("res.partner").2, json!([[["ref", "=", "C-1"]]]));
    assert_eq!(search_of("product.product").2, json!([[["default_code", "=", "LN-3Y"]]]));
    assert_eq!(search_of("sale.order").2, json!([[["client_order_ref", "=", ORDER_ID]]]));
    assert_eq!(search_of("sale.order").3, json!({"limit": 1}));

    // The same effect again: everything is found, nothing created, no second login.
    let from = o.db.lock().unwrap().calls.len();
    let again = perform(&registry, "odoo", "create_order", &e).await.unwrap();
    assert_eq!(again.reference, r.reference);
    let steps: Vec<String> = odoo_calls(&o, from).iter().map(|(m, f, _, _)| format!("{m}.{f}")).collect();
    assert!(steps.iter().all(|s| s.ends_with(".search")), "{steps:?}");
    assert_eq!(o.db.lock().unwrap().models["sale.order"].len(), 1, "ONE sale.order");
    assert_eq!(odoo_logins(&o), 1, "the uid is cached");

    // Another order of the same customer and product links the existing records.
    let other = perform(&registry, "odoo", "create_order", &effect(OTHER_ORDER_ID, "D-2", "approved")).await.unwrap();
    let db = o.db.lock().unwrap().models.clone();
    assert_eq!((db["res.partner"].len(), db["product.product"].len(), db["sale.order"].len()), (1, 1, 2));
    assert_eq!(other.reference, Some(db["sale.order"][1]["id"].to_string()));
    assert_eq!(db["sale.order"][1]["partner_id"], db["res.partner"][0]["id"]);
}

#[tokio::test]
async fn odoo_errors_are_classified_by_exception_and_carry_odoo_s_message() {
    let (o, _dir, registry) = odoo(ODOO_KEY).await;
    let e = effect(ORDER_ID, "D-1", "approved");
    let fail = |model: &str, method: &str, error: Value| {
        o.db.lock().unwrap().fail = Some((model.into(), method.into(), error));
    };

    // A ValidationError on create: permanent, with Odoo's own message.
    let msg = "订单日期不能早于报价日期 (The order date cannot be before the quotation date)";
    fail("sale.order", "create", odoo_error("odoo.exceptions.ValidationError", msg));
    let err = perform(&registry, "odoo", "create_order", &e).await.unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Permanent { message } if message.contains(msg) && message.contains("ValidationError")),
        "{err:?}"
    );
    assert!(!o.db.lock().unwrap().models.contains_key("sale.order"), "nothing created");

    // A serialization failure (two transactions on one row) is temporary.
    fail(
        "sale.order",
        "create",
        odoo_error("psycopg2.errors.SerializationFailure", "could not serialize access due to concurrent update"),
    );
    let err = perform(&registry, "odoo", "create_order", &e).await.unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Retryable { message, .. } if message.contains("concurrent update")),
        "{err:?}"
    );

    // AccessDenied (the key was revoked): Auth, and the cached uid is dropped.
    assert_eq!(odoo_logins(&o), 1);
    fail("sale.order", "search", odoo_error("odoo.exceptions.AccessDenied", "Access Denied"));
    let err = perform(&registry, "odoo", "create_order", &e).await.unwrap_err();
    assert!(matches!(&err, ConnectorError::Auth { message } if message.contains("Access Denied")), "{err:?}");
    let r = perform(&registry, "odoo", "create_order", &e).await.unwrap();
    assert!(r.reference.is_some());
    assert_eq!(odoo_logins(&o), 2, "logged in again after AccessDenied");
    assert_eq!(o.db.lock().unwrap().models["sale.order"].len(), 1);

    // A wrong key: login answers `false`, which is Auth, and the key is never shown.
    let wrong_key = "SECRET-wrong-odoo-key-0d1e";
    let (o, _dir, registry) = odoo(wrong_key).await;
    let err = perform(&registry, "odoo", "create_order", &e).await.unwrap_err();
    assert!(matches!(&err, ConnectorError::Auth { message } if message.contains(ODOO_LOGIN)), "{err:?}");
    assert!(!format!("{err} {err:?}").contains(wrong_key));
    assert!(odoo_calls(&o, 0).is_empty(), "nothing runs without a uid");
}

#[tokio::test]
async fn odoo_access_denied_from_login_itself_is_an_auth_failure_not_a_hang() {
    // Stock Odoo answers a refused login with `false`; an authentication add-on
    // (LDAP, 2FA) may raise AccessDenied from `common.login` instead.
    let (o, _dir, registry) = odoo(ODOO_KEY).await;
    o.db.lock().unwrap().fail =
        Some(("common".into(), "login".into(), odoo_error("odoo.exceptions.AccessDenied", "Access Denied")));
    let e = effect(ORDER_ID, "D-1", "approved");
    let r = tokio::time::timeout(std::time::Duration::from_secs(10), perform(&registry, "odoo", "create_order", &e))
        .await
        .expect("the connector answers instead of waiting forever");
    assert!(matches!(&r, Err(ConnectorError::Auth { message }) if message.contains("Access Denied")), "{r:?}");
    // The connector is usable again once the login works.
    let r = tokio::time::timeout(std::time::Duration::from_secs(10), perform(&registry, "odoo", "create_order", &e))
        .await
        .expect("the uid lock was released");
    assert!(r.is_ok_and(|r| r.reference.is_some()));
}

/// A confirmed sale order as Odoo stores it (`write_date` in `YYYY-MM-DD HH:MM:SS`, UTC).
fn odoo_sale_order(i: usize, partner: i64, state: &str) -> Value {
    json!({
        "name": format!("S{:05}", 100 + i),
        "partner_id": partner,
        "client_order_ref": format!("PO-{i}"),
        "amount_total": wire_number(&amount(i)),
        "currency_id": 7,
        "state": state,
        "write_date": format!("2026-11-26 10:{:02}:00", i),
        "x_product_type": "loan",
        "x_product_code": "LN-3Y",
    })
}

#[tokio::test]
async fn odoo_poll_pages_search_read_by_offset_and_keeps_the_write_date_watermark() {
    let (o, _dir, registry) = odoo(ODOO_KEY).await;
    {
        let mut db = o.db.lock().unwrap();
        let partners: Vec<i64> =
            CUSTOMERS.iter().map(|(name, _)| db.insert("res.partner", json!({"name": name}))).collect();
        // Inserted newest first, so ids and write_date disagree: order comes from write_date.
        for i in (0..8).rev() {
            db.insert("sale.order", odoo_sale_order(i, partners[i % partners.len()], "sale"));
        }
        db.insert("sale.order", odoo_sale_order(8, partners[0], "draft"));
    }
    let poll = poller(&registry, "odoo");

    let (records, states) = run_poll(&poll, poll.initial()).await;

    let reads = odoo_calls(&o, 0);
    assert_eq!(reads.len(), 3, "pages of 3, 3 and 2: {reads:#?}");
    let state_term = json!(["state", "in", ["sale", "done"]]);
    for (i, (model, method, args, kw)) in reads.iter().enumerate() {
        assert_eq!((model.as_str(), method.as_str()), ("sale.order", "search_read"));
        assert_eq!(args, &json!([[state_term]]), "no watermark yet: only the configured domain");
        assert_eq!(kw["offset"], i * 3);
        assert_eq!(kw["limit"], 3);
        assert_eq!(kw["order"], "write_date asc, id asc");
        assert!(kw["fields"].as_array().unwrap().contains(&json!("write_date")));
    }
    assert_eq!(states.iter().map(|s| s.offset).collect::<Vec<_>>(), [3, 6, 0]);

    let refs: Vec<&str> = records.iter().map(|r| r["client_order_ref"].as_str().unwrap()).collect();
    assert_eq!(refs, (0..8).map(|i| format!("PO-{i}")).collect::<Vec<_>>(), "each once, oldest first, no draft");
    for (i, r) in records.iter().enumerate() {
        let m = mapped(&registry, "odoo-sale-order-in", r);
        assert_eq!(m.external_id.as_str(), r["id"].to_string());
        assert_eq!(m.order.customer.name.as_str(), CUSTOMERS[i % CUSTOMERS.len()].0);
        assert_eq!(m.order.amount.to_string(), format!("{} CNY", amount(i)));
    }

    let end = states.last().unwrap().clone();
    assert_eq!(end.watermark.as_deref(), Some("2026-11-26 10:07:00"), "Odoo's own form");
    let from = o.db.lock().unwrap().calls.len();
    let (again, _) = run_poll(&poll, end).await;
    let (_, _, args, kw) = odoo_calls(&o, from).remove(0);
    assert_eq!(args, json!([[state_term, ["write_date", ">=", "2026-11-26 10:07:00"]]]));
    assert_eq!(kw["offset"], 0);
    assert_eq!(again.len(), 1, "only the record at the watermark: {again:?}");
}

#[tokio::test]
async fn odoo_poll_reads_the_watermark_field_even_when_the_fields_leave_it_out() {
    // The fields are the mapping's input; `write_date` is the connector's concern.
    let poll_section = ODOO_POLL.replace(r#""state", "write_date", "#, r#""state", "#);
    assert_ne!(poll_section, ODOO_POLL);
    let (o, _dir, registry) = odoo_with(ODOO_KEY, &poll_section).await;
    {
        let mut db = o.db.lock().unwrap();
        let partner = db.insert("res.partner", json!({"name": CUSTOMERS[0].0}));
        for i in 0..4 {
            db.insert("sale.order", odoo_sale_order(i, partner, "sale"));
        }
    }
    let poll = poller(&registry, "odoo");
    let (records, states) = run_poll(&poll, poll.initial()).await;
    assert_eq!(records.len(), 4);
    assert_eq!(states.last().unwrap().watermark.as_deref(), Some("2026-11-26 10:03:00"), "the watermark moves");
}
