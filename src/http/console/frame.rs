//! What every signed-in console page shares: the person signed in (else back to
//! sign-in), the policy table's answer for the page or action (a 403 page naming the
//! missing grant otherwise), and the navigation bar, which lists only the pages the
//! person may use (`pages/console_nav.html`). Pages and actions ask `authorize` here
//! and nowhere else in the console.

// A refusal is a whole page: helpers return `Result<_, Response>` on purpose.
#![allow(clippy::result_large_err)]

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::super::AppState;
use super::super::pages::{staff_page, texts};
use super::{back_to_signin, locale_of, principal, signed_in};
use crate::auth::sessions::Session;
use crate::domain::order::Locale;
use crate::engine::access::{Action, Principal, authorize};

/// The console's pages in the navigation's order: key, path, and the action the
/// policy table must grant (`None`: every signed-in person).
pub(super) const PAGES: &[(&str, &str, &[Action])] = &[
    ("inbox", "/console", &[]),
    ("orders", "/console/orders", &[Action::SeePersonalData]),
    ("process", "/console/process", &[Action::SeeReports]),
    ("reports", "/console/reports", &[Action::SeeReports]),
    ("review", "/console/review", &[Action::ReviewFlagged]),
    ("exceptions", "/console/exceptions", &[Action::HandleExceptions]),
    ("payments", "/console/payments", &[Action::AssignPayments]),
    ("receivables", "/console/receivables", &[Action::SeePersonalData]),
    ("dead_letters", "/console/dead-letters", &[Action::ReplayDeadLetters]),
    ("connectors", "/console/connectors", &[Action::ResumeConnectors]),
    ("admin", "/console/admin", &[Action::Administer]),
    ("rules", "/console/rules", &[Action::ProposeRules, Action::ApproveRules]),
    ("feedback", "/console/feedback", &[Action::SeeReports]),
    ("feedback_new", "/console/feedback/new", &[]),
];

/// Page text `fragment` (`pages/<fragment>.html`) for `view`, as HTML.
pub(super) fn text(app: &AppState, fragment: &str, l: Locale, view: &str, mut ctx: serde_json::Value) -> String {
    ctx["view"] = view.into();
    texts(app).render_fragment(fragment, l, ctx).unwrap_or_else(|e| {
        tracing::error!(error = %e, fragment, view, "console text not rendered");
        String::new()
    })
}

/// A signed-in person on a console page.
pub(super) struct Staff {
    pub(super) session: Session,
    pub(super) locale: Locale,
    pub(super) who: Principal,
}

impl Staff {
    pub(super) fn of(app: &AppState, session: Session) -> Staff {
        let locale = locale_of(app, Some(&session.person));
        let who = principal(&session);
        Staff { session, locale, who }
    }

    /// Whether the policy table lets this person take `action`.
    pub(super) fn may(&self, app: &AppState, action: Action) -> bool {
        let directory = &app.rules.notify.directory;
        authorize(&self.who, action, directory.policy(), directory).is_ok()
    }

    /// The navigation bar: the pages this person may use, `current` marked.
    fn nav(&self, app: &AppState, current: &str) -> String {
        let pages: Vec<_> = PAGES
            .iter()
            .filter(|(_, _, actions)| actions.is_empty() || actions.iter().any(|a| self.may(app, *a)))
            .map(|(key, href, _)| json!({"key": key, "href": href}))
            .collect();
        let person = app
            .rules
            .notify
            .directory
            .person(&self.session.person)
            .map_or(self.session.person.clone(), |p| p.name.clone());
        let ctx = json!({"pages": pages, "current": current, "person": person, "csrf": self.session.csrf});
        text(app, "console_nav", self.locale, "nav", ctx)
    }

    /// A console page: `title` and `body` are HTML (page text), under the navigation.
    pub(super) fn page(&self, app: &AppState, status: StatusCode, current: &str, title: &str, body: &str) -> Response {
        staff_page(status, self.locale, &app.settings, title, &self.nav(app, current), body)
    }

    /// A refusal (403, 404, 422 …) naming why, under the navigation.
    pub(super) fn refused(&self, app: &AppState, status: StatusCode, current: &str, message: &str) -> Response {
        let l = self.locale;
        let title = text(app, "console_nav", l, "title_refused", json!({}));
        let body = text(app, "console_nav", l, "refused", json!({"message": message, "status": status.as_u16()}));
        self.page(app, status, current, &title, &body)
    }

    /// Refused unless the form's CSRF token is the session's.
    pub(super) fn check_csrf(&self, app: &AppState, current: &str, given: &str) -> Result<(), Response> {
        if self.session.csrf_matches(given) {
            Ok(())
        } else {
            Err(self.refused(app, StatusCode::FORBIDDEN, current, "CSRF"))
        }
    }
}

/// The signed-in person of a request, if the policy table grants them `action`: back
/// to sign-in when nobody is signed in, a 403 page saying what is missing otherwise.
pub(super) fn staff(app: &AppState, headers: &HeaderMap, action: Action, current: &str) -> Result<Staff, Response> {
    staff_any(app, headers, &[action], current)
}

/// As `staff`, for a page any one of `actions` opens (the refusal names the first).
pub(super) fn staff_any(
    app: &AppState,
    headers: &HeaderMap,
    actions: &[Action],
    current: &str,
) -> Result<Staff, Response> {
    let Some((_, session)) = signed_in(app, headers) else { return Err(back_to_signin(app)) };
    let staff = Staff::of(app, session);
    let directory = &app.rules.notify.directory;
    let mut refusal = None;
    for action in actions {
        match authorize(&staff.who, *action, directory.policy(), directory) {
            Ok(()) => return Ok(staff),
            Err(d) => refusal = refusal.or(Some(d.to_string())),
        }
    }
    Err(staff.refused(app, StatusCode::FORBIDDEN, current, &refusal.unwrap_or_default()))
}
