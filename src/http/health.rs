//! `/healthz` (the process answers), `/readyz` (store open, workers running, not
//! shutting down) and `/metrics` (Prometheus text).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;

pub(crate) async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// A sync running longer than this makes the daemon not ready (a hung disk).
const SYNC_STALLED: std::time::Duration = std::time::Duration::from_secs(30);
/// How long `/readyz` waits for the store to answer.
const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Ready: 200 `ready`, or 200 `degraded` when rows were quarantined (the daemon
/// works; an operator must look at `orderbridge store quarantine`). Not ready (503)
/// while starting or stopping, once the store can no longer make writes durable, or
/// while one sync has been running for more than 30 s, or while the database does
/// not answer within `PING_TIMEOUT` (PostgreSQL: a load balancer then sends webhooks
/// to a replica that can take them; this one reconnects by itself).
pub(crate) async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    let store_ok = app.store.failure().is_none()
        && app.store.sync_running_for().is_none_or(|d| d < SYNC_STALLED)
        && matches!(tokio::time::timeout(PING_TIMEOUT, app.store.ping()).await, Ok(Ok(())));
    let counts = app.store.counts();
    if !app.is_ready() || !store_ok {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "store": store_ok, "workers": app.is_ready()})),
        );
    }
    if counts.quarantined > 0 {
        return (StatusCode::OK, Json(json!({"status": "degraded", "quarantined": counts.quarantined})));
    }
    (StatusCode::OK, Json(json!({"status": "ready"})))
}

/// How many orders are in a state now, and how long ago the oldest was received.
pub(crate) struct StateLoad {
    pub(crate) state: String,
    pub(crate) orders: u64,
    /// Milliseconds since the oldest order in the state was received; 0 when none is.
    pub(crate) oldest_age_ms: i64,
}

/// Orders per state and the age of the oldest of each: what `/metrics` reports for
/// the open states and the console's process map shows for every state.
///
/// # Errors
/// The store's.
pub(crate) async fn orders_in_states(
    app: &AppState,
    states: &[&str],
) -> Result<Vec<StateLoad>, crate::store::StoreError> {
    let now = app.clock.now().timestamp_millis();
    Ok(app
        .store
        .in_states(states)
        .await?
        .into_iter()
        .map(|s| StateLoad {
            oldest_age_ms: s.oldest.map_or(0, |id| (now - id.created_ms()).max(0)),
            state: s.state,
            orders: s.orders,
        })
        .collect())
}

/// Sets the gauges read from the store at each scrape: orders per open state, the
/// oldest of each, and the outbox's lag. A store that cannot answer leaves them as
/// they were (the scrape still answers; `/readyz` tells about the store).
async fn observe_store(app: &AppState) {
    let now = app.clock.now();
    if let Ok(states) = orders_in_states(app, crate::engine::lifecycle::OPEN_STATES).await {
        for s in states {
            let labels = [("state", s.state.as_str())];
            app.metrics.set("orderbridge_orders", &labels, s.orders as f64);
            app.metrics.set("orderbridge_oldest_order_age_seconds", &labels, s.oldest_age_ms as f64 / 1000.0);
        }
    }
    if let Ok(due) = app.store.due_effects(now, 1).await {
        let lag = due.first().map_or(0, |e| (now - e.next_at).num_milliseconds().max(0));
        app.metrics.set("orderbridge_outbox_lag_seconds", &[], lag as f64 / 1000.0);
    }
}

/// Sets the free and total bytes of the volumes the daemon writes: `data` (the
/// embedded store, documents) and `archive` (the segment files, inside `data` unless
/// `archive.path` moves them). A failed fsync stops the daemon on purpose
/// (`docs/src/runbooks/disk-full.md`): these are what warn before it. A directory not
/// made yet is left out.
fn observe_disk(app: &AppState) {
    for (volume, dir) in [("data", &app.settings.store_path), ("archive", &app.settings.archive.dir)] {
        if let Some(space) = volume_space(dir) {
            app.metrics.set("orderbridge_disk_free_bytes", &[("volume", volume)], space.free as f64);
            app.metrics.set("orderbridge_disk_size_bytes", &[("volume", volume)], space.size as f64);
        }
    }
}

/// A volume's size, and what an unprivileged process may still write to it.
#[derive(Debug, Clone, Copy)]
struct Space {
    free: u64,
    size: u64,
}

fn volume_space(dir: &std::path::Path) -> Option<Space> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and `st` is
    // memory for one `statvfs`, which the call fills when it returns 0.
    if unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: filled, as the call returned 0.
    let st = unsafe { st.assume_init() };
    let unit = st.f_frsize;
    Some(Space { free: st.f_bavail.saturating_mul(unit), size: st.f_blocks.saturating_mul(unit) })
}

pub(crate) async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    observe_store(&app).await;
    observe_disk(&app);
    let c = app.store.counts();
    let alerts = app.settings.dispatcher.queue_alerts;
    let body = app.metrics.render(&[
        ("orderbridge_outbox_pending", c.pending as f64),
        ("orderbridge_dead_letters", c.dead as f64),
        ("orderbridge_unmatched_payments", c.unmatched as f64),
        ("orderbridge_outbox_alert_threshold", alerts.outbox as f64),
        ("orderbridge_dead_letters_alert_threshold", alerts.dead_letters as f64),
        ("orderbridge_unmatched_payments_alert_threshold", alerts.unmatched_payments as f64),
        ("orderbridge_quarantined_rows", c.quarantined as f64),
    ]);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_s_space_is_what_df_counts() {
        let dir = tempfile::tempdir().unwrap();
        let space = volume_space(dir.path()).unwrap();
        assert!(space.size > 0 && space.free <= space.size, "{space:?}");
        // The size in the units df uses (what is free moves with other writers).
        let df = std::process::Command::new("df").args(["-B1", "--output=size"]).arg(dir.path()).output().unwrap();
        let df = String::from_utf8(df.stdout).unwrap();
        let size: u64 = df.lines().nth(1).unwrap().trim().parse().unwrap();
        assert_eq!(space.size, size, "df: {df}");
        assert!(volume_space(&dir.path().join("not made yet")).is_none());
    }
}
