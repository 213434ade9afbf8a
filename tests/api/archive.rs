//! The archive end to end: ended orders move out of the hot store and are still found
//! (API, `orders show`, `explain`) and verified (`audit verify`, which names an altered,
//! truncated or missing segment); a process killed in the middle of a pass leaves every
//! order in exactly one place and the next pass completes it; legal holds survive a
//! purge, and every purge is logged. The store cases are in `store.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use chrono::{Duration, Utc};
use orderbridge::domain::OrderId;
use orderbridge::engine::{Actor, OrderEvent};
use orderbridge::metrics::Metrics;
use serde_json::{Value, json};

use crate::helpers::*;

/// Runs the CLI without blocking the runtime that serves the in-process daemon.
async fn cli(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(bin());
    c.args(args).arg("--config-dir").arg(dir);
    for (k, v) in env {
        c.env(k, v);
    }
    tokio::task::spawn_blocking(move || c.output().unwrap()).await.unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// An order rejected at screening (a CCC credit rating); its id.
async fn rejected(app: &TestApp, ext: &str) -> String {
    let mut p = deal(ext, 1, "5000.00");
    p["deal"]["customer"]["credit_rating"] = "CCC".into();
    let (_, b) = app.post_webhook(&p).await;
    assert_eq!(b["state"], "rejected", "{b}");
    b["order_id"].as_str().unwrap().to_owned()
}

/// An order cancelled by an operator while it waits for approval; its id.
async fn cancelled(app: &TestApp, ext: &str) -> String {
    let (_, b) = app.post_webhook(&deal(ext, 1, "1250000.00")).await;
    let id = b["order_id"].as_str().unwrap().to_owned();
    let cancel = OrderEvent::Cancelled { reason: "客户撤单".into() };
    let ops = Actor::Person("operator:ops".into());
    app.state.orders.apply(id.parse().unwrap(), ops, cancel, &app.state.rules, app.state.clock.now()).await.unwrap();
    assert_eq!(app.order(&id).await["state"], "cancelled");
    id
}

/// The segment files under the archive directory of the store in `dir`.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let root = dir.join("data").join("archive");
    let mut out = Vec::new();
    for month in std::fs::read_dir(&root).into_iter().flatten() {
        for f in std::fs::read_dir(month.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort();
    out
}

/// Opens the store of the stopped daemon in `dir` and tells, for each order, whether
/// it is hot and whether it is archived.
async fn places(dir: &Path, ids: &[String]) -> Vec<(bool, bool)> {
    let settings = load_settings(dir);
    let store = orderbridge::store::open(&settings.store, Arc::new(Metrics::default())).await.unwrap();
    let mut out = Vec::new();
    for id in ids {
        let id: OrderId = id.parse().unwrap();
        out.push((store.order(id).await.unwrap().is_some(), store.archived(id).await.unwrap().is_some()));
    }
    store.close().await.unwrap();
    out
}

#[tokio::test]
async fn ended_orders_move_to_the_archive_are_still_found_and_a_damaged_segment_is_named() {
    let clock = ManualClock::new(Utc::now() - Duration::days(400));
    let app = TestApp::builder().clock(clock.clock()).start().await;
    let ended = [rejected(&app, "D-AR-R").await, cancelled(&app, "D-AR-C").await];
    app.drain_outbox().await;
    clock.advance(Duration::days(80));
    let recent = rejected(&app, "D-AR-LATE").await;
    clock.advance(Duration::days(15));
    let mut before = Vec::new();
    for id in &ended {
        before.push(app.order(id).await);
    }

    let (status, pass) = app.api_post("/archive/run").await;
    assert_eq!(status, 200, "{pass}");
    assert_eq!((pass["archived"].as_u64(), pass["skipped"].as_u64()), (Some(2), Some(0)), "{pass}");
    for (id, was) in ended.iter().zip(&before) {
        assert_eq!(app.state.store.order(id.parse().unwrap()).await.unwrap(), None, "{id} left the hot store");
        let now = app.order(id).await;
        assert_eq!(now["state"], "archived");
        assert_eq!(now["archived"]["ended"], was["state"]);
        assert!(now["archived"]["segment"].as_str().unwrap().ends_with(".jsonl"), "{now}");
        for field in ["events", "order", "chain_head", "source", "created_at"] {
            assert_eq!(now[field], was[field], "{id}: {field} as it was");
        }
    }
    let (_, by_source) = app.api("/orders?connector=demo-crm&external_id=D-AR-C").await;
    assert_eq!(by_source["orders"][0]["state"], "archived", "{by_source}");
    assert_eq!(app.order(&recent).await["state"], "rejected", "an order that ended 15 days ago stays hot");
    assert!(app.state.store.order(recent.parse().unwrap()).await.unwrap().is_some());
    let (_, audit) = app.api("/audit/verify").await;
    assert_eq!(audit["intact"], true, "{audit}");
    assert_eq!((audit["archive"]["orders"].as_u64(), audit["archive"]["segments"].as_u64()), (Some(2), Some(1)));
    assert!(app.metrics().await.contains("orderbridge_archive_orders_total 2"));
    // The source system sending the order again finds it archived: no second order.
    let mut again = deal("D-AR-R", 2, "5000.00");
    again["deal"]["customer"]["credit_rating"] = "CCC".into();
    let (status, body) = app.post_webhook(&again).await;
    assert_eq!(status, 409, "{body}");
    let segment = app.order(&ended[0]).await["archived"]["segment"].as_str().unwrap().to_owned();
    let dir = app.stop_and_release().await;

    // Offline, the command line finds it as well.
    let out = cli(dir.path(), &["orders", "show", &ended[0]], &[]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains("state     archived") && stdout(&out).contains(&segment), "{}", stdout(&out));
    let out = cli(dir.path(), &["explain", &ended[1]], &[]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains("now archived") && stdout(&out).contains("it ended cancelled"), "{}", stdout(&out));
    let out = cli(dir.path(), &["audit", "verify"], &[]).await;
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("archive: 2 orders"), "{}", stdout(&out));

    // One byte changed, the end cut off, the file gone: each is named.
    let path = dir.path().join("data").join("archive").join(&segment);
    let original = std::fs::read(&path).unwrap();
    let mut altered = original.clone();
    let at = original.len() / 2;
    altered[at] = if altered[at] == b'0' { b'1' } else { b'0' };
    let truncated = original[..original.len() - 40].to_vec();
    for (damage, expect) in [(Some(altered), "was altered"), (Some(truncated), "is truncated"), (None, "is missing")] {
        match damage {
            Some(bytes) => std::fs::write(&path, bytes).unwrap(),
            None => std::fs::remove_file(&path).unwrap(),
        }
        let out = cli(dir.path(), &["audit", "verify"], &[]).await;
        assert_eq!(out.status.code(), Some(1), "{expect}: {}", stdout(&out));
        let named = format!("archive segment {segment} {expect}");
        assert!(stdout(&out).contains(&named), "{named}: {}", stdout(&out));
    }
    std::fs::write(&path, &original).unwrap();
    assert!(cli(dir.path(), &["audit", "verify"], &[]).await.status.success());
}

#[tokio::test]
async fn a_pass_killed_after_writing_its_segment_leaves_every_order_in_one_place_and_the_next_completes_it() {
    let clock = ManualClock::new(Utc::now() - Duration::days(120));
    let app = TestApp::builder().clock(clock.clock()).start().await;
    let mut ids = Vec::new();
    for ext in ["D-K1", "D-K2", "D-K3"] {
        ids.push(rejected(&app, ext).await);
    }
    let dir = app.stop_and_release().await;

    // Killed between the segment's write and the store's commit: the orders are hot
    // and nowhere else; the segment is named by no order.
    let out = cli(dir.path(), &["archive", "run"], &[("ORDERBRIDGE_FAULT", "archive:after-segment")]).await;
    assert!(!out.status.success(), "the pass was to die: {}", stdout(&out));
    let orphan = segments(dir.path());
    assert_eq!(orphan.len(), 1, "the segment was written: {orphan:?}");
    assert_eq!(places(dir.path(), &ids).await, vec![(true, false); 3], "hot, not archived");
    let out = cli(dir.path(), &["audit", "verify"], &[]).await;
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("is named by no order"), "{}", stdout(&out));

    // The next pass removes the orphan and moves them.
    let out = cli(dir.path(), &["archive", "run", "--json"], &[]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pass: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!((pass["archived"].as_u64(), pass["orphans_removed"].as_u64()), (Some(3), Some(1)), "{pass}");
    let now = segments(dir.path());
    assert_eq!(now.len(), 1);
    assert_ne!(now, orphan);
    assert_eq!(places(dir.path(), &ids).await, vec![(false, true); 3], "archived, not hot");

    // Killed right after the commit: the orders are archived, once.
    let out = cli(dir.path(), &["archive", "run"], &[("ORDERBRIDGE_FAULT", "archive:after-commit")]).await;
    assert!(out.status.success(), "nothing was due, so nothing died: {}", stdout(&out));
    let out = cli(dir.path(), &["audit", "verify"], &[]).await;
    assert!(out.status.success() && !stdout(&out).contains("named by no order"), "{}", stdout(&out));

    // The daemon started again finds each order once, archived.
    let app = TestApp::builder().in_dir(dir).clock(clock.clock()).start().await;
    let (_, all) = app.api("/orders?state=rejected").await;
    assert_eq!(all["orders"].as_array().unwrap().len(), 0, "none of them is hot any more: {all}");
    for id in &ids {
        assert_eq!(app.order(id).await["state"], "archived");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_pass_killed_after_its_commit_leaves_the_orders_archived_once() {
    let clock = ManualClock::new(Utc::now() - Duration::days(120));
    let app = TestApp::builder().clock(clock.clock()).start().await;
    let ids = vec![rejected(&app, "D-KC1").await, rejected(&app, "D-KC2").await];
    let dir = app.stop_and_release().await;
    let out = cli(dir.path(), &["archive", "run"], &[("ORDERBRIDGE_FAULT", "archive:after-commit")]).await;
    assert!(!out.status.success(), "the pass was to die: {}", stdout(&out));
    assert_eq!(places(dir.path(), &ids).await, vec![(false, true); 2], "archived, not hot");
    let out = cli(dir.path(), &["audit", "verify"], &[]).await;
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("archive: 2 orders"), "{}", stdout(&out));
    let out = cli(dir.path(), &["archive", "run", "--json"], &[]).await;
    let pass: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!((pass["archived"].as_u64(), pass["orphans_removed"].as_u64()), (Some(0), Some(0)), "{pass}");
}

#[tokio::test]
async fn a_legal_hold_survives_the_purge_and_every_purge_is_logged() {
    let clock = ManualClock::new(Utc::now() - Duration::days(100));
    let app = TestApp::builder().clock(clock.clock()).start().await;
    let (a, b, c) = (rejected(&app, "D-P1").await, rejected(&app, "D-P2").await, rejected(&app, "D-P3").await);
    clock.advance(Duration::days(91));
    let hot = rejected(&app, "D-P4").await;
    let (status, pass) = app.api_post("/archive/run").await;
    assert_eq!((status, pass["archived"].as_u64()), (200, Some(3)), "{pass}");
    let first = app.order(&a).await["archived"]["segment"].as_str().unwrap().to_owned();

    let reason = json!({"reason": "诉讼保全 (2026) 京01民初17号"});
    let (status, body) = app.api_post_json(&format!("/orders/{hot}/legal-hold"), &reason).await;
    assert_eq!(status, 409, "a hot order is never purged: {body}");
    let (status, body) = app.api_post_json(&format!("/orders/{b}/legal-hold"), &reason).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["legal_hold"]["by"], "admin:bootstrap", "the principal calling");

    // Ten years after they ended: the two without a hold are purged, the held one is
    // kept (and the order that ended 91 days later is archived now, not purged).
    clock.advance(Duration::days(3653 - 30));
    let (_, pass) = app.api_post("/archive/run").await;
    assert_eq!((pass["purged"].as_u64(), pass["archived"].as_u64()), (Some(2), Some(1)), "{pass}");
    for gone in [&a, &c] {
        assert_eq!(app.api(&format!("/orders/{gone}")).await.0, 404, "{gone} is purged");
    }
    let kept = app.order(&b).await;
    assert_eq!(kept["state"], "archived");
    assert_eq!(kept["archived"]["legal_hold"]["reason"], reason["reason"]);
    let second = kept["archived"]["segment"].as_str().unwrap().to_owned();
    assert_ne!(second, first, "the segment was rewritten without the purged orders");
    let files: Vec<String> = segments(app.dir.path()).iter().map(|p| p.display().to_string()).collect();
    assert!(files.iter().any(|f| f.ends_with(&second)), "{files:?}");
    assert!(!files.iter().any(|f| f.ends_with(&first)), "the old segment is removed: {files:?}");

    let log = app.state.store.archive_log().await.unwrap();
    let actions: Vec<&str> = log.iter().map(|l| l.action.as_str()).collect();
    assert_eq!(actions, ["hold", "purge"]);
    let purge = &log[1];
    let mut purged: Vec<String> = purge.orders.iter().map(ToString::to_string).collect();
    purged.sort();
    let mut expected = vec![a.clone(), c.clone()];
    expected.sort();
    assert_eq!(purged, expected);
    assert_eq!((purge.segment.as_str(), purge.replaced_by.as_deref()), (first.as_str(), Some(second.as_str())));
    assert_eq!((purge.by.as_str(), purge.at), ("admin:bootstrap", clock.now()));
    let (_, audit) = app.api("/audit/verify").await;
    assert_eq!(audit["intact"], true, "{audit}");
    assert_eq!(audit["archive"]["log_entries"], 2);
    assert!(app.metrics().await.contains("orderbridge_archive_purged_total 2"));

    // Released, it goes at the next pass (its segment with it), and that is logged too.
    let url = app.admin_url(&format!("/api/orders/{b}/legal-hold"));
    let released = app.client.delete(url).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(released.status(), 200);
    let (_, pass) = app.api_post("/archive/run").await;
    assert_eq!(pass["purged"], 1, "{pass}");
    assert_eq!(app.api(&format!("/orders/{b}")).await.0, 404);
    assert!(!segments(app.dir.path()).iter().any(|f| f.ends_with(&second)), "its segment went with it");
    assert_eq!(app.order(&hot).await["state"], "archived", "not past retention yet");
    let log = app.state.store.archive_log().await.unwrap();
    assert_eq!(log.iter().map(|l| l.action.as_str()).collect::<Vec<_>>(), ["hold", "purge", "release", "purge"]);
    assert_eq!(log[3].replaced_by, None);
    let (_, audit) = app.api("/audit/verify").await;
    assert_eq!(audit["intact"], true, "{audit}");
    app.stop().await;
}

#[tokio::test]
async fn the_archive_works_the_same_on_postgres() {
    use secrecy::ExposeSecret as _;
    let pg = crate::postgres::fresh_database().await;
    let clock = ManualClock::new(Utc::now() - Duration::days(100));
    let app = TestApp::builder().clock(clock.clock()).settings(on_postgres(pg.url.expose_secret(), 3)).start().await;
    let (a, b) = (rejected(&app, "D-PG1").await, cancelled(&app, "D-PG2").await);
    app.drain_outbox().await;
    let before = app.order(&b).await;
    clock.advance(Duration::days(91));
    let (_, pass) = app.api_post("/archive/run").await;
    assert_eq!(pass["archived"], 2, "{pass}");
    assert_eq!(app.state.store.order(b.parse().unwrap()).await.unwrap(), None);
    let now = app.order(&b).await;
    assert_eq!((now["state"].as_str(), &now["events"]), (Some("archived"), &before["events"]));
    let (status, body) = app.api_post_json(&format!("/orders/{a}/legal-hold"), &json!({"reason": "审计"})).await;
    assert_eq!(status, 200, "{body}");
    clock.advance(Duration::days(3653));
    let (_, pass) = app.api_post("/archive/run").await;
    assert_eq!(pass["purged"], 1, "{pass}");
    assert_eq!(app.api(&format!("/orders/{b}")).await.0, 404);
    assert_eq!(app.order(&a).await["archived"]["legal_hold"]["reason"], "审计");
    let (_, audit) = app.api("/audit/verify").await;
    assert_eq!((audit["intact"].as_bool(), audit["archive"]["log_entries"].as_u64()), (Some(true), Some(2)), "{audit}");
    app.stop().await;
}

#[tokio::test]
async fn store_copy_to_postgres_carries_the_archived_orders_and_the_archive_log() {
    use secrecy::ExposeSecret as _;
    let clock = ManualClock::new(Utc::now() - Duration::days(100));
    let app = TestApp::builder().clock(clock.clock()).start().await;
    let (held, plain) = (rejected(&app, "D-CP1").await, rejected(&app, "D-CP2").await);
    app.drain_outbox().await;
    clock.advance(Duration::days(91));
    let (_, pass) = app.api_post("/archive/run").await;
    assert_eq!(pass["archived"], 2, "{pass}");
    let (status, body) = app.api_post_json(&format!("/orders/{held}/legal-hold"), &json!({"reason": "审计"})).await;
    assert_eq!(status, 200, "{body}");
    let kept = app.stop_and_release().await;
    let dir = kept.path().to_owned();

    let pg = crate::postgres::fresh_database().await;
    let url_file = dir.join("target-url");
    std::fs::write(&url_file, pg.url.expose_secret()).unwrap();
    let to_url = format!("file:{}", url_file.display());
    let out = cli(&dir, &["store", "copy", "--to-backend", "postgres", "--to-url", &to_url], &[]).await;
    let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("2 archived orders, 1 archive log entries"), "{text}");
    assert!(text.contains("audit intact on the copy"), "{text}");

    // On PostgreSQL, the orders are archived where they were, the hold kept.
    let on_pg = [("ORDERBRIDGE__STORE__BACKEND", "postgres"), ("ORDERBRIDGE__STORE__URL", to_url.as_str())];
    for (id, hold) in [(&held, true), (&plain, false)] {
        let out = cli(&dir, &["orders", "show", id, "--json"], &on_pg).await;
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(shown["state"], "archived", "{shown}");
        assert_eq!(shown["archived"]["legal_hold"].is_object(), hold, "{shown}");
    }
    let out = cli(&dir, &["audit", "verify"], &on_pg).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}
