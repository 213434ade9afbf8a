//! The review procedure over a real change log in a temporary data directory.

use chrono::{Duration, TimeZone, Utc};

use super::*;

fn person(id: &str) -> Actor {
    Actor { id: id.into(), person: Some(id.into()), channel: Channel::Cli }
}

#[test]
fn four_eyes_then_activation_scheduled_and_rolled_back() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let t0 = Utc.with_ymd_and_hms(2026, 12, 6, 8, 0, 0).unwrap();
    let (v1, v2) = ("a1".repeat(32), "b2".repeat(32));
    // The daemon started on v1 (review off): recorded as the first activation.
    log::append(d, t0, |_| {
        Ok::<_, ReviewError>(Draft {
            what: What::Activated,
            version: v1.clone(),
            by: "system".into(),
            channel: "start".into(),
            note: None,
            effective_at: Some(t0),
            from: None,
        })
    })
    .unwrap();
    propose(d, &v2, &person("chen.jing"), Some("BB 拒绝".into()), t0).unwrap();
    assert!(matches!(activate(d, "b2b2", None, &person("james.wong"), &v1, t0), Err(ReviewError::NotApproved(_))));
    let own = approve(d, "b2b2", &person("chen.jing"), None, t0).unwrap_err();
    assert_eq!(
        own.to_string(),
        "chen.jing proposed rules b2b2b2b2b2b2 and may not approve it: a second person with the rules_approver role approves a change"
    );
    let admin = Actor { id: "admin:bootstrap".into(), person: None, channel: Channel::Api };
    assert!(matches!(approve(d, "b2b2", &admin, None, t0), Err(ReviewError::Denied(_))));
    assert!(matches!(approve(d, "ffff", &person("james.wong"), None, t0), Err(ReviewError::NotProposed(_))));
    approve(d, "b2b2", &person("james.wong"), None, t0).unwrap();

    // Scheduled for an hour later: v1 stays live until then.
    let t1 = t0 + Duration::hours(1);
    activate(d, "b2b2", Some(t1), &person("james.wong"), &v1, t0).unwrap();
    let log = log::read(d).unwrap();
    assert_eq!(active_at(&log, t0).unwrap().version, v1);
    assert_eq!(active_at(&log, t1).unwrap().version, v2);
    assert_eq!(scheduled(&log, t0).len(), 1);

    // After it took effect, a rollback returns to v1.
    let t2 = t1 + Duration::minutes(5);
    let back = rollback(d, &person("james.wong"), t2).unwrap();
    assert_eq!((back.version.as_str(), back.from.as_deref()), (v1.as_str(), Some(v2.as_str())));
    assert_eq!(active_at(&log::read(d).unwrap(), t2).unwrap().version, v1);
}

#[test]
fn a_rollback_cancels_a_scheduled_activation_and_needs_an_earlier_version() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let t0 = Utc.with_ymd_and_hms(2026, 12, 6, 8, 0, 0).unwrap();
    let (v1, v2, v3) = ("a1".repeat(32), "b2".repeat(32), "c3".repeat(32));
    assert!(matches!(rollback(d, &person("james.wong"), t0), Err(ReviewError::NothingToRollBack)));
    for v in [&v2, &v3] {
        propose(d, v, &person("chen.jing"), None, t0).unwrap();
        approve(d, &v[..6], &person("james.wong"), None, t0).unwrap();
    }
    activate(d, &v2[..6], None, &person("james.wong"), &v1, t0).unwrap();
    activate(d, &v3[..6], Some(t0 + Duration::days(1)), &person("james.wong"), &v1, t0).unwrap();
    let back = rollback(d, &person("james.wong"), t0 + Duration::hours(1)).unwrap();
    assert_eq!(back.version, v1, "v2 came from v1");
    let log = log::read(d).unwrap();
    assert_eq!(active_at(&log, t0 + Duration::days(2)).unwrap().version, v1, "v3's activation was cancelled");
    assert!(scheduled(&log, t0 + Duration::hours(2)).is_empty());
}

#[test]
fn review_on_refuses_an_unapproved_file_at_start() {
    let (cfg, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::create_dir_all(cfg.path().join("config")).unwrap();
    std::fs::write(cfg.path().join("config/rules.toml"), "version = \"2026-12\"\n").unwrap();
    let file = Versions::compute(cfg.path(), Some("2026-12"));
    let now = Utc::now();
    let e = at_start(data.path(), &file, true, now).unwrap_err().to_string();
    assert!(e.starts_with("refusing to start: config/rules.toml is rules version "), "{e}");
    assert!(e.contains("(\"2026-12\"), which nobody approved") && e.contains("orderbridge rules propose"), "{e}");
    // Review off: it runs, and its start is recorded once.
    assert_eq!(at_start(data.path(), &file, false, now).unwrap(), AtStart::File);
    assert_eq!(at_start(data.path(), &file, false, now).unwrap(), AtStart::File);
    let log = log::read(data.path()).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].what, log[0].by.as_str()), (What::Activated, "system"));
}

#[test]
fn a_shadow_is_started_only_when_approved_replaced_stopped_and_reported_per_order() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let t0 = Utc.with_ymd_and_hms(2026, 12, 6, 8, 0, 0).unwrap();
    let (live, v2, v3) = ("a1".repeat(32), "b2".repeat(32), "c3".repeat(32));
    for v in [&v2, &v3] {
        propose(d, v, &person("chen.jing"), None, t0).unwrap();
    }
    let james = person("james.wong");
    assert!(matches!(shadow::start(d, "b2b2", &james, &live, t0), Err(ReviewError::NotApproved(_))));
    approve(d, "b2b2", &james, None, t0).unwrap();
    approve(d, "c3c3", &james, None, t0).unwrap();
    assert!(matches!(shadow::stop(d, &james, t0), Err(ReviewError::NoShadow)));
    shadow::start(d, "b2b2", &james, &live, t0).unwrap();
    assert!(matches!(shadow::start(d, "b2b2", &james, &live, t0), Err(ReviewError::AlreadyShadowed(_))));
    let replaced = shadow::start(d, "c3c3", &james, &live, t0).unwrap();
    assert_eq!(replaced.from.as_deref(), Some(v2.as_str()));
    assert_eq!(shadow::current(&log::read(d).unwrap()).map(|c| c.version.clone()), Some(v3.clone()));

    // Two decisions of one order and one of another differed; a torn last line is skipped.
    let line = |order: &str, step: &str, kind: &str, version: &str| {
        let r = shadow::Record {
            at: t0,
            order_id: order.into(),
            step: step.into(),
            live_version: live.clone(),
            shadow_version: version.into(),
            differences: vec![crate::engine::compare::Difference {
                kind: kind.into(),
                live: "a".into(),
                shadow: "b".into(),
            }],
        };
        serde_json::to_string(&r).unwrap()
    };
    let text = [
        line("ord_1", "intake", "route", &v3),
        line("ord_1", "approved", "tasks", &v3),
        line("ord_2", "intake", "route", &v3),
        line("ord_3", "intake", "route", &v2),
    ]
    .join("\n");
    std::fs::write(shadow::path(d), format!("{text}\n{{\"at\": \"2026-")).unwrap();
    let report = shadow::report(d, None).unwrap();
    assert!(report.running);
    assert_eq!(report.orders.iter().map(|o| o.order_id.as_str()).collect::<Vec<_>>(), ["ord_1", "ord_2"]);
    assert_eq!(report.orders[0].kinds.iter().map(String::as_str).collect::<Vec<_>>(), ["route", "tasks"]);
    assert_eq!(report.kinds.get("route"), Some(&2));
    assert_eq!(
        report.lines().last().unwrap(),
        &format!("2 order(s) decided differently under rules {} (2 route, 1 tasks)", short(&v3))
    );
    let earlier = shadow::report(d, Some("b2b2")).unwrap();
    assert!(!earlier.running);
    assert_eq!(earlier.orders.len(), 1);

    shadow::stop(d, &james, t0).unwrap();
    assert!(shadow::current(&log::read(d).unwrap()).is_none());
    assert!(!shadow::report(d, None).unwrap().running, "the last one run, stopped");
}
