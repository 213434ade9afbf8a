//! Webhook intake: the happy path, redelivery, versions, and every refusal.

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn signed_sample_order_is_accepted_and_visible_with_its_events() {
    let app = spawn_app().await;
    let (status, body) = app.post_webhook(&sample()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["duplicate"], false);
    // 1,250,000 CNY passes screening and needs two approval levels.
    assert_eq!(body["state"], "awaiting_approval");
    let id = body["order_id"].as_str().unwrap().to_owned();

    let order = app.order(&id).await;
    assert_eq!(order["state"], "awaiting_approval");
    assert_eq!(order["state_detail"], serde_json::json!({"name": "awaiting_approval", "level": 1, "of": 2}));
    assert_eq!(order["source"]["external_id"], "D-10042");
    assert_eq!(order["order"]["customer"]["name"], "张伟");
    assert_eq!(order["order"]["need"], "客户希望配置稳健型理财产品，期限一年");
    assert_eq!(order["order"]["amount"], serde_json::json!({"amount": "1250000.00", "currency": "CNY"}));
    let events: Vec<&str> =
        order["events"].as_array().unwrap().iter().map(|e| e["event"]["type"].as_str().unwrap()).collect();
    assert_eq!(events, ["received", "screening_started", "screening_passed"]);
    assert_eq!(order["events"][2]["event"]["chain"], serde_json::json!(["line_supervisor", "branch_manager"]));
    assert_eq!(order["events"][0]["actor"], serde_json::json!({"kind": "connector", "id": "demo-crm"}));

    let (status, list) = app.api("/orders?state=awaiting_approval").await;
    assert_eq!(status, 200);
    assert_eq!(list["orders"].as_array().unwrap().len(), 1);
    let (_, list) = app.api("/orders?state=approved").await;
    assert_eq!(list["orders"].as_array().unwrap().len(), 0);

    // A CRM integrator finds the order by its own id.
    let (status, found) = app.api("/orders?connector=demo-crm&external_id=D-10042").await;
    assert_eq!(status, 200);
    assert_eq!(found["orders"][0]["id"], id.as_str());
    let (_, none) = app.api("/orders?connector=demo-crm&external_id=D-404").await;
    assert_eq!(none["orders"].as_array().unwrap().len(), 0);
    let (status, _) = app.api("/orders?external_id=D-10042").await;
    assert_eq!(status, 400);
    app.stop().await;
}

#[tokio::test]
async fn redelivery_and_versions_never_fork_an_order() {
    let app = spawn_app().await;
    let (_, first) = app.post_webhook(&deal("D-1", 2, "2000000.00")).await;
    let id = first["order_id"].as_str().unwrap();

    // The same delivery again (a sender retry): same order, nothing new.
    let (status, again) = app.post_webhook(&deal("D-1", 2, "2000000.00")).await;
    assert_eq!((status, again["order_id"].as_str(), again["duplicate"].as_bool()), (202, Some(id), Some(true)));

    // An older version arriving late is ignored.
    let (status, old) = app.post_webhook(&deal("D-1", 1, "5.00")).await;
    assert_eq!((status, old["duplicate"].as_bool()), (202, Some(true)));
    assert_eq!(app.order(id).await["order"]["amount"]["amount"], "2000000.00");

    // A newer version amends the order and screens it again.
    let (status, newer) = app.post_webhook(&deal("D-1", 3, "50000.00")).await;
    assert_eq!((status, newer["order_id"].as_str(), newer["duplicate"].as_bool()), (202, Some(id), Some(false)));
    let order = app.order(id).await;
    assert_eq!(order["order"]["amount"]["amount"], "50000.00");
    assert_eq!(order["source"]["version"], 3);
    let amended = order["events"].as_array().unwrap().iter().find(|e| e["event"]["type"] == "amended").unwrap();
    assert_eq!(amended["event"]["changed"], serde_json::json!(["amount.amount"]));
    // 50,000 CNY is under the automatic limit: approved on the supervisor's behalf.
    assert_eq!(order["state"], "executing");

    // After approval the source can no longer change it: refused, nothing written.
    let (status, body) = app.post_webhook(&deal("D-1", 4, "60000.00")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    assert_eq!(app.order(id).await["source"]["version"], 3);

    let (_, all) = app.api("/orders").await;
    assert_eq!(all["orders"].as_array().unwrap().len(), 1, "one order per external id");
    app.stop().await;
}

#[tokio::test]
async fn screening_flags_and_rejects_with_the_rule_that_fired() {
    let app = spawn_app().await;
    let mut p = deal("D-KYC", 1, "5000.00");
    p["deal"]["customer"]["kyc_verified"] = false.into();
    p["deal"]["customer"]["id_document"]["number"] = "110105194912310021".into();
    let (_, body) = app.post_webhook(&p).await;
    assert_eq!(body["state"], "flagged");
    let order = app.order(body["order_id"].as_str().unwrap()).await;
    let fired = &order["events"].as_array().unwrap().last().unwrap()["event"]["fired"];
    let ids: Vec<&str> = fired.as_array().unwrap().iter().map(|h| h["rule_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["KYC-001", "ID-001"]);

    let mut p = deal("D-CREDIT", 1, "5000.00");
    p["deal"]["customer"]["credit_rating"] = "CCC".into();
    let (_, body) = app.post_webhook(&p).await;
    assert_eq!(body["state"], "rejected");
    app.stop().await;
}

async fn count_orders(app: &TestApp) -> usize {
    let (_, all) = app.api("/orders").await;
    all["orders"].as_array().unwrap().len()
}

#[tokio::test]
async fn every_bad_input_gets_its_status_and_reason_and_writes_nothing() {
    let app = spawn_app().await;
    let good = serde_json::to_vec(&sample()).unwrap();
    let now = chrono::Utc::now().timestamp();

    // Bad signature: wrong secret, tampered body, stale timestamp, missing header.
    let mut h = app.signed_headers("msg_1", now, &good);
    h[3].1 = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
    let (s, b) = app.post_raw("demo-crm", good.clone(), h).await;
    assert_eq!((s, b["error"]["code"].as_str()), (401, Some("bad_signature")), "{b}");
    assert_eq!(b["error"]["message"], "no signature matches");

    let h = app.signed_headers("msg_2", now, &good);
    let mut tampered = good.clone();
    let pos = tampered.iter().position(|&c| c == b'5').unwrap();
    tampered[pos] = b'9';
    let (s, _) = app.post_raw("demo-crm", tampered, h).await;
    assert_eq!(s, 401);

    let h = app.signed_headers("msg_3", now - 3600, &good);
    let (s, b) = app.post_raw("demo-crm", good.clone(), h).await;
    assert_eq!(s, 401);
    assert!(b["error"]["message"].as_str().unwrap().contains("replay window"), "{b}");

    let mut h = app.signed_headers("msg_4", now, &good);
    h.retain(|(k, _)| *k != "webhook-signature");
    let (s, b) = app.post_raw("demo-crm", good.clone(), h).await;
    assert_eq!((s, b["error"]["message"].as_str()), (401, Some("missing `webhook-signature` header")));

    // Unknown connector.
    let h = app.signed_headers("msg_5", now, &good);
    let (s, b) = app.post_raw("no-such-crm", good.clone(), h).await;
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("unknown_connector")));

    // Malformed JSON (correctly signed).
    let broken = b"{\"deal\": ".to_vec();
    let h = app.signed_headers("msg_6", now, &broken);
    let (s, b) = app.post_raw("demo-crm", broken, h).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("malformed_json")), "{b}");

    // Mapping errors name the field and the value.
    let mut p = sample();
    p["deal"]["amount"] = "1,250,000".into();
    let (s, b) = app.post_webhook(&p).await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["error"]["field"], "amount.amount");
    assert!(b["error"]["message"].as_str().unwrap().contains("\"1,250,000\""), "{b}");

    let mut p = sample();
    p["deal"]["currency"] = "RMB¥".into();
    let (s, b) = app.post_webhook(&p).await;
    assert_eq!((s, b["error"]["field"].as_str()), (422, Some("amount.currency")), "{b}");

    // The order template: sales_owner is required by config/orderbridge.toml.
    let mut p = sample();
    p["deal"].as_object_mut().unwrap().remove("owner_email");
    let (s, b) = app.post_webhook(&p).await;
    assert_eq!(
        (s, b["error"]["code"].as_str(), b["error"]["field"].as_str()),
        (422, Some("missing_field"), Some("sales_owner")),
        "{b}"
    );

    // Too large: declared and streamed.
    let big = vec![b' '; 2 * 1024 * 1024];
    let h = app.signed_headers("msg_7", now, &big);
    let (s, b) = app.post_raw("demo-crm", big, h).await;
    assert_eq!((s, b["error"]["code"].as_str()), (413, Some("payload_too_large")), "{b}");

    // Events the mapping does not take are acknowledged and skipped.
    let mut p = sample();
    p["event"] = "deal.deleted".into();
    let (s, b) = app.post_webhook(&p).await;
    assert_eq!((s, b["order_id"].clone()), (202, Value::Null), "{b}");

    assert_eq!(count_orders(&app).await, 0, "no refused or skipped delivery left an order behind");
    let (s, _) = app.post_webhook(&sample()).await;
    assert_eq!(s, 202);
    assert_eq!(count_orders(&app).await, 1);
    let metrics = app.metrics().await;
    assert!(metrics.contains("orderbridge_webhooks_total{connector=\"demo-crm\",status=\"401\"} 4"), "{metrics}");
    assert!(metrics.contains("orderbridge_webhooks_total{connector=\"demo-crm\",status=\"422\"} 3"), "{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn admin_api_needs_the_token_and_health_endpoints_answer() {
    let app = spawn_app().await;
    let r = app.client.get(app.admin_url("/api/orders")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = app.client.get(app.admin_url("/api/orders")).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let (s, b) = app.api("/orders/ord_nothex").await;
    assert_eq!((s, b["error"]["field"].as_str()), (400, Some("id")));
    let (s, _) = app.api(&format!("/orders/ord_{}", "0".repeat(32))).await;
    assert_eq!(s, 404);
    let (s, b) = app.api("/orders?state=lost").await;
    assert_eq!(s, 400, "{b}");

    assert_eq!(app.client.get(app.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(app.client.get(app.url("/readyz")).send().await.unwrap().status(), 200);
    let m = app.metrics().await;
    assert!(m.contains("# TYPE orderbridge_webhooks_total counter"));
    assert!(m.contains("orderbridge_outbox_pending 0"));
    app.stop().await;
}

#[tokio::test]
async fn orders_survive_a_restart_and_the_audit_verifies() {
    let app = spawn_app().await;
    let (_, b) = app.post_webhook(&deal("D-R", 1, "3000000.00")).await;
    let id = b["order_id"].as_str().unwrap().to_owned();
    let erp = app.erp.clone();
    let dir = app.stop().await;

    let app = crate::helpers::restart(dir, erp).await;
    assert_eq!(app.order(&id).await["state"], "awaiting_approval");
    let (s, v) = app.api("/audit/verify").await;
    assert_eq!((s, v["intact"].as_bool(), v["orders"].as_u64()), (200, Some(true), Some(1)), "{v}");
    app.stop().await;
}

#[tokio::test]
async fn a_connector_can_use_another_signature_scheme() {
    use hmac::Mac;
    let erp = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), erp.addr);
    std::fs::write(dir.path().join("secrets/gh-crm"), "It's a Secret to Everybody").unwrap();
    std::fs::write(
        dir.path().join("connectors/gh-crm.toml"),
        "kind = \"rest\"\n[webhook]\nsignature = \"github\"\nsecret = \"file:secrets/gh-crm\"\nmapping = \"demo-crm\"\n",
    )
    .unwrap();
    let app = restart(dir, erp).await;
    let body = serde_json::to_vec(&deal("GH-1", 1, "3000000.00")).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"It's a Secret to Everybody").unwrap();
    mac.update(&body);
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let (s, b) = app.post_raw("gh-crm", body.clone(), vec![("x-hub-signature-256", sig.clone())]).await;
    assert_eq!((s, b["state"].as_str()), (202, Some("awaiting_approval")), "{b}");
    let (s, b) = app.post_raw("gh-crm", b"{}".to_vec(), vec![("x-hub-signature-256", sig)]).await;
    assert_eq!((s, b["error"]["code"].as_str()), (401, Some("bad_signature")));
    let (_, found) = app.api("/orders?connector=gh-crm&external_id=GH-1").await;
    assert_eq!(found["orders"][0]["source"]["connector"], "gh-crm");
    app.stop().await;
}

#[tokio::test]
async fn repeat_orders_of_one_customer_are_caught_by_history_rules() {
    let app = spawn_app().await;
    let same = |id: &str, code: &str| {
        let mut v = deal(id, 1, "5000.00");
        v["deal"]["customer"]["id"] = "C-REPEAT".into();
        v["deal"]["product"]["code"] = code.into();
        v
    };
    let (_, first) = app.post_webhook(&same("D-R1", "WM-A")).await;
    assert_eq!(first["state"], "executing");
    // Same product again within 30 days: a possible duplicate, for a person to look at.
    let (_, second) = app.post_webhook(&same("D-R2", "WM-A")).await;
    assert_eq!(second["state"], "flagged");
    let order = app.order(second["order_id"].as_str().unwrap()).await;
    let screening =
        order["events"].as_array().unwrap().iter().find(|e| e["event"]["type"] == "screening_flagged").unwrap();
    assert_eq!(screening["event"]["fired"][0]["rule_id"], "DUP-001");
    assert_eq!(screening["event"]["inputs"]["history.same_product"], "1");
    assert_eq!(screening["event"]["inputs"]["history.orders"], "1");
    // Five other products: the sixth order trips the velocity rule.
    for i in 3..=5 {
        let (_, b) = app.post_webhook(&same(&format!("D-R{i}"), &format!("WM-{i}"))).await;
        assert_eq!(b["state"], "executing", "order {i}");
    }
    let (_, sixth) = app.post_webhook(&same("D-R6", "WM-6")).await;
    let order = app.order(sixth["order_id"].as_str().unwrap()).await;
    let fired = &order["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"]["type"] == "screening_flagged")
        .unwrap()["event"]["fired"];
    assert_eq!(fired[0]["rule_id"], "VELOCITY-001", "{fired}");
    // Another customer is not affected.
    let (_, other) = app.post_webhook(&deal("D-R7", 1, "5000.00")).await;
    assert_eq!(other["state"], "executing");
    app.stop().await;
}
