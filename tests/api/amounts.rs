//! Amounts at their limits, over HTTP: `intake.max_amount` refuses what is too large,
//! and even without a limit the largest amounts never poison a customer or a report;
//! JSON numbers are read exactly as written; a panic in a handler is a 500 with the
//! request id while the daemon keeps serving.

use serde_json::{Value, json};

use crate::cash::deliver;
use crate::helpers::*;

/// The largest amount `rust_decimal` holds exactly (2^96 - 1).
const LARGEST: &str = "79228162514264337593543950335";

/// Posts a signed delivery whose body is `text` exactly; an error when the daemon
/// closes the connection instead of answering.
async fn post_text(app: &TestApp, text: &str) -> Result<(u16, Value), String> {
    let id = format!("msg_{}", uuid::Uuid::now_v7().simple());
    let headers = app.signed_headers(&id, app.state.clock.now().timestamp(), text.as_bytes());
    let mut req = app.client.post(app.url("/webhooks/demo-crm")).body(text.to_owned());
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = req.send().await.map_err(|e| format!("no answer: {e:?}"))?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

/// A deal for customer `customer` whose amount is the JSON `amount` text as written
/// (a string `"…"` or a bare number).
fn deal_text(ext: &str, customer: &str, amount: &str) -> String {
    let mut d = deal(ext, 1, "0");
    d["deal"]["customer"]["id"] = customer.into();
    d["deal"]["amount"] = "__AMOUNT__".into();
    serde_json::to_string(&d).unwrap().replace("\"__AMOUNT__\"", amount)
}

/// An answer a CRM can act on: 202, or a 4xx whose JSON body says what was wrong.
fn assert_proper(status: u16, body: &Value) {
    let accepted = status == 202 && body["order_id"].is_string();
    let refused = (400..500).contains(&status) && body["error"]["message"].is_string();
    assert!(accepted || refused, "not a proper answer: {status} {body}");
}

/// `intake.max_amount` lifted to the largest exact amount for CNY, so amounts at the
/// very top reach screening and the sums.
pub fn no_cny_limit(s: &mut Settings) {
    s.intake.max_amount.insert("CNY".parse().unwrap(), rust_decimal::Decimal::MAX);
}

async fn spawn_unlimited_app() -> TestApp {
    TestApp::builder().settings(no_cny_limit).start().await
}

#[tokio::test]
async fn amounts_above_intake_max_amount_are_refused_naming_the_field() {
    let app = spawn_app().await;
    // The example limit for CNY is 10 000 000 000.00: at it is taken, above it not.
    for ext in ["D-LIM-1", "D-LIM-2"] {
        let (status, body) = post_text(&app, &deal_text(ext, "C-LIMIT", &format!("\"{LARGEST}\""))).await.unwrap();
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "amount_above_limit", "{body}");
        assert_eq!(body["error"]["field"], "amount.amount", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("above intake.max_amount for CNY (10000000000)"), "{body}");
    }
    let (status, body) = post_text(&app, &deal_text("D-LIM-3", "C-LIMIT", "10000000000.01")).await.unwrap();
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("amount_above_limit")), "{body}");
    let (status, body) = post_text(&app, &deal_text("D-LIM-4", "C-LIMIT", "\"10000000000.00\"")).await.unwrap();
    assert_eq!(status, 202, "the limit itself is allowed: {body}");
    // The refused ones wrote nothing; the customer orders on as usual.
    let (status, body) = post_text(&app, &deal_text("D-LIM-5", "C-LIMIT", "\"8000.00\"")).await.unwrap();
    assert_eq!(status, 202, "{body}");
    let (_, all) = app.api("/orders").await;
    assert_eq!(all["orders"].as_array().unwrap().len(), 2);
    // A reported payment is an inbound amount too.
    let (status, body) = app
        .api_post_json(
            "/payments",
            &json!({"payment_id": "P-HUGE", "amount": {"amount": LARGEST, "currency": "CNY"}, "invoice_number": "INV-1"}),
        )
        .await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("amount.amount")), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn two_orders_of_the_largest_amount_do_not_poison_their_customer() {
    let app = spawn_unlimited_app().await;
    for ext in ["D-MAX-1", "D-MAX-2"] {
        let (status, body) = post_text(&app, &deal_text(ext, "C-POISON", &format!("\"{LARGEST}\""))).await.unwrap();
        assert_proper(status, &body);
    }
    // The customer's next, ordinary order gets an answer, not a closed connection.
    let (status, body) = post_text(&app, &deal_text("D-MAX-3", "C-POISON", "\"8000.00\"")).await.unwrap();
    assert_proper(status, &body);
    assert_eq!((status, body["state"].as_str()), (202, Some("flagged")), "{body}");
    // Flagged for a person, saying why: the history total cannot be computed.
    let order = app.order(body["order_id"].as_str().unwrap()).await;
    let fired = order["events"].as_array().unwrap().last().unwrap()["event"]["fired"].clone();
    assert_eq!(fired[0]["rule_id"], "HISTORY-OVERFLOW", "{fired}");
    assert!(fired[0]["message"].as_str().unwrap().contains("review them by hand"), "{fired}");
    // And the daemon still serves everyone else.
    let (status, body) = app.post_webhook(&deal("D-OTHER", 1, "8000.00")).await;
    assert_eq!(status, 202, "{body}");
    app.stop().await;
}

/// One huge deposit taken through its three approval levels, delivery and acceptance
/// to an invoice of `amount` CNY for `customer`.
async fn invoiced(app: &TestApp, ext: &str, customer: &str, amount: &str) -> String {
    let mut d = deal(ext, 1, amount);
    d["deal"]["customer"]["id"] = customer.into();
    d["deal"]["product"] = json!({"type": "deposit", "code": "DEP-3M"});
    let (s, b) = app.post_webhook(&d).await;
    assert_eq!((s, b["state"].as_str()), (202, Some("awaiting_approval")), "{b}");
    let id = b["order_id"].as_str().unwrap().to_owned();
    for approver in ["wang.fang", "zhou.min", "james.wong"] {
        let (s, b) = app
            .api_post_json_as(
                approver,
                &format!("/orders/{id}/approvals"),
                &json!({"decision": "approve", "comment": "同意"}),
            )
            .await;
        assert_eq!(s, 200, "{approver}: {b}");
    }
    deliver(app, &id).await;
    let (s, b) =
        app.api_post_json_as("sun.li", &format!("/orders/{id}/acceptance"), &json!({"decision": "accept"})).await;
    assert_eq!(s, 200, "{b}");
    wait_until("invoiced", || async { app.order(&id).await["state"] == "invoiced" }).await;
    id
}

#[tokio::test]
async fn receivables_whose_total_exceeds_the_largest_amount_are_still_reported() {
    let app = spawn_unlimited_app().await;
    let amount = "40000000000000000000000000000";
    let a = invoiced(&app, "D-RICH-1", "C-RICH", amount).await;
    let b = invoiced(&app, "D-RICH-2", "C-RICH", amount).await;

    let resp = app
        .client
        .get(app.admin_url("/api/customers/C-RICH/receivables"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("the daemon answers instead of closing the connection");
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    // Each invoice is listed with what it owes ...
    let ids: Vec<&str> = body["invoices"].as_array().unwrap().iter().map(|i| i["order_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{body}");
    assert!(ids.contains(&a.as_str()) && ids.contains(&b.as_str()), "{body}");
    assert!(body["invoices"].as_array().unwrap().iter().all(|i| i["outstanding"]["amount"] == amount), "{body}");
    // ... and the total that cannot be represented says so instead of being wrong.
    let total = &body["outstanding"][0];
    assert_eq!(total["currency"], "CNY", "{body}");
    assert_eq!(total["amount"], Value::Null, "{body}");
    assert!(total["error"].as_str().unwrap().contains("exceeds"), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn amounts_sent_as_json_numbers_are_read_exactly_or_refused() {
    let app = spawn_unlimited_app().await;
    // Exact, whatever an f64 would have made of them.
    for (ext, number) in [
        ("D-NUM-1", "1250000.05"),
        ("D-NUM-2", "12345678901234567.89"),
        ("D-NUM-3", "1234567890123.4567"),
        ("D-NUM-4", "9007199254740993"),
        ("D-NUM-5", "100.50"),
    ] {
        let (status, body) = post_text(&app, &deal_text(ext, &format!("C-{ext}"), number)).await.unwrap();
        assert_eq!(status, 202, "{number}: {body}");
        let order = app.order(body["order_id"].as_str().unwrap()).await;
        assert_eq!(order["order"]["amount"]["amount"], number, "{number} stored as written");
    }
    // More digits than an amount can hold exactly: refused with the reason, never
    // rounded; so are exponents and more decimals than any currency has.
    for (number, reason) in [
        ("1.000000000000000000000000000001", "more digits than an amount can hold exactly"),
        ("7922816251426433759354395033.6", "more digits than an amount can hold exactly"),
        ("792281625142643375935439503350", "more digits than an amount can hold exactly"),
        ("1e3", "has an exponent"),
        ("0.12345", "more than 4 decimal places"),
    ] {
        let (status, body) = post_text(&app, &deal_text("D-NUM-BAD", "C-NUM-BAD", number)).await.unwrap();
        assert_eq!(status, 422, "{number}: {body}");
        assert_eq!(body["error"]["field"], "amount.amount", "{number}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(reason), "{number}: {body}");
    }
    let (_, all) = app.api("/orders").await;
    assert_eq!(all["orders"].as_array().unwrap().len(), 5, "the refused ones wrote nothing");
    app.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_answers_500_with_its_request_id_and_the_daemon_keeps_serving() {
    let app = spawn_app().await;
    // The same daemon state, served with a clock that panics when read: every webhook
    // handler reads it, so its request panics.
    let mut broken = app.state.clone();
    broken.clock = orderbridge::clock::Clock::from_fn(|| panic!("the clock is broken (test)"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, orderbridge::http::router(broken)).await.unwrap() });

    let body = serde_json::to_vec(&sample()).unwrap();
    let mut req = app
        .client
        .post(format!("http://{addr}/webhooks/demo-crm"))
        .header("x-request-id", "req-panic-1")
        .body(body.clone());
    for (k, v) in app.signed_headers("msg_panic", chrono::Utc::now().timestamp(), &body) {
        req = req.header(k, v);
    }
    let resp = req.send().await.expect("an answer, not a closed connection");
    assert_eq!(resp.status().as_u16(), 500);
    assert_eq!(resp.headers()["x-request-id"], "req-panic-1");
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "internal", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("req-panic-1"), "{answer}");
    assert!(!message.contains("clock"), "no internals in the answer: {answer}");

    // The same server keeps answering, and the panic is counted.
    let health = app.client.get(format!("http://{addr}/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let m = app.metrics().await;
    assert!(m.contains("orderbridge_panics_total{task=\"http\"} 1"), "{m}");
    app.stop().await;
}

#[tokio::test]
async fn a_5xx_body_names_the_request_id_of_the_x_request_id_header() {
    let app = spawn_app().await;
    // A handler that panics answers 500; the request brings no id, so the daemon makes one.
    let mut broken = app.state.clone();
    broken.clock = orderbridge::clock::Clock::from_fn(|| panic!("the clock is broken (test)"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, orderbridge::http::router(broken)).await.unwrap() });

    let body = serde_json::to_vec(&sample()).unwrap();
    let mut req = app.client.post(format!("http://{addr}/webhooks/demo-crm")).body(body.clone());
    for (k, v) in app.signed_headers("msg_panic_id", chrono::Utc::now().timestamp(), &body) {
        req = req.header(k, v);
    }
    let resp = req.send().await.expect("an answer");
    assert_eq!(resp.status().as_u16(), 500);
    let header = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let answer: Value = resp.json().await.unwrap();
    let message = answer["error"]["message"].as_str().unwrap();
    let in_body = message
        .rsplit_once("(request id ")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no request id in {answer}"));
    assert!(!header.is_empty());
    assert_eq!(in_body, header, "one request id in the body and the header");
    app.stop().await;
}
