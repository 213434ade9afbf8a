//! The console's administration page (`administer` in the policy table): the
//! configuration check as `orderbridge check` prints it (`check::report`, run on the
//! daemon's configuration directory as it is on disk now) and the versions of the rules
//! and mappings, the one in force marked, as `orderbridge rules history` lists them
//! (`versions::kept::history`), with the live rules' version. Read only. Text from
//! `pages/console_admin.html`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::super::AppState;
use super::super::error::ApiError;
use super::frame::{staff, text};
use crate::engine::access::Action;

/// `GET /console/admin`
pub(crate) async fn admin(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let staff = match staff(&app, &headers, Action::Administer, "admin") {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (config_dir, data) = (app.settings.config_dir.clone(), app.settings.store_path.clone());
    let read = tokio::task::spawn_blocking(move || {
        let (lines, ok) = crate::check::report(&config_dir);
        crate::versions::kept::history(&data).map(|seen| (lines, ok, seen))
    })
    .await;
    let (lines, ok, versions) = match read {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "io", e.to_string()).into_response(),
        Err(e) => return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()).into_response(),
    };
    let rules = app.rules.current();
    let ctx = json!({"check": lines, "check_ok": ok, "versions": versions,
        "rules": {"label": rules.version, "version": rules.config_version}});
    let l = staff.locale;
    let title = text(&app, "console_admin", l, "title", json!({}));
    let body = text(&app, "console_admin", l, "admin", ctx);
    staff.page(&app, StatusCode::OK, "admin", &title, &body)
}
