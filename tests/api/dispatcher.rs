//! The outbox dispatcher against a real receiver over TCP: downstream down, then up;
//! permanent refusal; dead letters and replay.

use crate::helpers::*;

/// Small orders are approved automatically, which pushes `create_order` to the ERP.
async fn approved_order(app: &TestApp, id: &str) -> String {
    let (s, b) = app.post_webhook(&deal(id, 1, "8000.00")).await;
    assert_eq!((s, b["state"].as_str()), (202, Some("approved")), "{b}");
    b["order_id"].as_str().unwrap().to_owned()
}

fn metric(text: &str, line_prefix: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn downstream_down_then_up_delivers_every_effect_exactly_once() {
    let erp = Receiver::start().await;
    erp.fail_next(7);
    let app = spawn_app_with(erp.clone(), &[]).await;
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
    assert_eq!(d[0].body["order"]["customer"]["name"], "张伟");

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
    let app = spawn_app_with(erp.clone(), &[("max_attempts = 10", "max_attempts = 3")]).await;
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
    let app = spawn_app_with(erp.clone(), &[]).await;
    approved_order(&app, "D-400").await;
    app.drain_outbox().await;
    let (_, dead) = app.api("/outbox/dead").await;
    let err = dead["effects"][0]["last_error"].as_str().unwrap().to_owned();
    assert!(err.contains("HTTP 400") && err.contains("product code unknown to ERP"), "{err}");
    assert_eq!(erp.deliveries().len(), 1, "a 400 is not retried");
    app.stop().await;
}
