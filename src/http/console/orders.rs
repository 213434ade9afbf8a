//! Order search (`GET /console/orders?q=&state=`) and the order page
//! (`GET /console/orders/{id}`), for people the policy table grants
//! `see_personal_data`. Search finds an order by its id, by a source system's id (every
//! connector's index) or by customer name or id (newest first, a bounded scan);
//! without a query it lists the newest orders, optionally in one state. Archived
//! orders are found by id and external id through `Archive::find`, the one home for
//! finding an order. The order page shows what the API shows (`view::found_json`) and
//! what `orderbridge explain` tells (`explain::explain`), from `pages/console_orders.html`.

// A refusal is a whole page: helpers return `Result<_, Response>` on purpose.
#![allow(clippy::result_large_err)]

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::super::AppState;
use super::frame::{Staff, staff, text};
use crate::domain::{ExternalRef, OrderId};
use crate::engine::access::Action;
use crate::engine::lifecycle::STATE_NAMES;
use crate::store::{OrderRecord, StoreError};
use crate::view::{found_json, order_json};

/// Most orders a search shows.
const SHOWN: usize = 50;
/// Most orders a search by name reads (the newest first); it says so when it stopped there.
const SCANNED: usize = 20_000;
/// How far back each round of a search reaches, newest first; then everything.
const WINDOWS_DAYS: [i64; 4] = [1, 7, 31, 366];

#[derive(Deserialize)]
pub(crate) struct SearchQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    state: String,
}

/// What a search found, newest first, and whether it read every order it could.
struct Found {
    orders: Vec<(OrderRecord, bool)>,
    complete: bool,
}

/// Orders in `state` (or any) whose customer `matches`, newest first: rounds that
/// reach further back each time, each reading only what the last did not, until
/// `SHOWN` are found, `SCANNED` were read, or the oldest order was.
async fn newest(
    app: &AppState,
    state: Option<&str>,
    matches: impl Fn(&OrderRecord) -> bool,
) -> Result<Found, StoreError> {
    let now = app.clock.now();
    let (mut out, mut read) = (Vec::new(), 0usize);
    let mut upper: Option<OrderId> = None;
    let starts = WINDOWS_DAYS.iter().map(|d| Some(OrderId::before(now - Duration::days(*d)))).chain([None]);
    for start in starts {
        let mut round = Vec::new();
        let mut after = start;
        'pages: loop {
            let page = app.store.list(state, after, 500).await?;
            for rec in &page {
                if upper.is_some_and(|u| rec.id >= u) {
                    break 'pages;
                }
                read += 1;
                if matches(rec) {
                    round.push(rec.clone());
                }
            }
            match page.last() {
                Some(last) if page.len() == 500 && read < SCANNED => after = Some(last.id),
                _ => break,
            }
        }
        out.extend(round.into_iter().rev().map(|r| (r, false)));
        upper = start;
        if out.len() >= SHOWN || read >= SCANNED {
            out.truncate(SHOWN);
            return Ok(Found { orders: out, complete: read < SCANNED });
        }
        if start.is_none() {
            break;
        }
    }
    Ok(Found { orders: out, complete: true })
}

/// An order by our id or by a source system's id, wherever it is (hot or archived).
async fn exact(app: &AppState, q: &str) -> Result<Vec<(OrderRecord, bool)>, Response> {
    let fail = |e: crate::orders::OrderError| super::super::error::ApiError::from(e).into_response();
    let mut ids = Vec::new();
    if let Ok(id) = q.parse::<OrderId>() {
        ids.push(id);
    }
    if let Ok(x) = q.parse::<crate::domain::ExternalId>() {
        for c in app.registry.connectors.values() {
            let source = ExternalRef { connector: c.id.clone(), id: x.clone() };
            if let Some(id) = app.store.find_external(&source).await.map_err(|e| fail(e.into()))? {
                ids.push(id);
            }
        }
    }
    let mut out = Vec::new();
    for id in ids {
        if let Some(f) = app.archive.find(id).await.map_err(fail)?
            && out.iter().all(|(r, _): &(OrderRecord, bool)| r.id != f.record.id)
        {
            out.push((f.record, f.archived.is_some()));
        }
    }
    Ok(out)
}

/// `GET /console/orders`: the search form and what it found.
pub(crate) async fn search(State(app): State<AppState>, headers: HeaderMap, Query(q): Query<SearchQuery>) -> Response {
    let staff = match staff(&app, &headers, Action::SeePersonalData, "orders") {
        Ok(s) => s,
        Err(r) => return r,
    };
    let query = q.q.trim().to_owned();
    let state = Some(q.state.as_str()).filter(|s| STATE_NAMES.contains(s));
    let exact = if query.is_empty() { Ok(Vec::new()) } else { exact(&app, &query).await };
    let mut found = match exact {
        Ok(f) => Found { orders: f, complete: true },
        Err(r) => return r,
    };
    if found.orders.is_empty() {
        let needle = query.to_lowercase();
        let matches = |r: &OrderRecord| {
            needle.is_empty()
                || r.order.customer.name.as_str().to_lowercase().contains(&needle)
                || r.order.customer.id.as_str().eq_ignore_ascii_case(&needle)
        };
        found = match newest(&app, state, matches).await {
            Ok(f) => f,
            Err(e) => return super::super::error::ApiError::from(e).into_response(),
        };
    }
    let mut results: Vec<Value> = Vec::with_capacity(found.orders.len());
    for (r, archived) in &found.orders {
        let mut v = order_json(r);
        if *archived {
            v["state"] = "archived".into();
        }
        if let Err(e) = app.orders.vault().reveal_value(&mut v).await {
            return super::super::error::ApiError::from(e).into_response();
        }
        results.push(v);
    }
    let ctx = json!({"q": query, "state": state, "states": STATE_NAMES, "results": results,
        "complete": found.complete, "scanned": SCANNED, "shown": SHOWN});
    let l = staff.locale;
    let title = text(&app, "console_orders", l, "title_search", json!({}));
    let body = text(&app, "console_orders", l, "search", ctx);
    staff.page(&app, StatusCode::OK, "orders", &title, &body)
}

/// `GET /console/orders/{id}`: one order, hot or archived.
pub(crate) async fn order(State(app): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let staff = match staff(&app, &headers, Action::SeePersonalData, "orders") {
        Ok(s) => s,
        Err(r) => return r,
    };
    let not_found = |s: &Staff| s.refused(&app, StatusCode::NOT_FOUND, "orders", &format!("order {id} not found"));
    let Ok(order_id) = id.parse::<OrderId>() else { return not_found(&staff) };
    let found = match app.archive.find(order_id).await {
        Ok(Some(f)) => f,
        Ok(None) => return not_found(&staff),
        Err(e) => return super::super::error::ApiError::from(e).into_response(),
    };
    let ctx = match order_context(&app, &found).await {
        Ok(c) => c,
        Err(e) => return super::super::error::ApiError::from(e).into_response(),
    };
    let l = staff.locale;
    let title = text(&app, "console_orders", l, "title_order", json!({"order": ctx["order"]}));
    let body = text(&app, "console_orders", l, "order", ctx);
    staff.page(&app, StatusCode::OK, "orders", &title, &body)
}

/// What the order page shows: the order as the API has it, the explanation, the
/// people its trail names, its documents, the mail sent, and its effects.
async fn order_context(app: &AppState, found: &crate::archive::Found) -> Result<Value, StoreError> {
    let mut order = found_json(found);
    app.orders.vault().reveal_order_doc(&mut order).await?;
    let explained = crate::explain::explain(&order).map(|e| e.json).unwrap_or_else(|e| json!({"error": e}));
    let directory = &app.rules.notify.directory;
    let people: serde_json::Map<String, Value> = found
        .events
        .iter()
        .filter_map(|e| match &e.actor {
            crate::engine::Actor::Person(p) => directory.person(p).map(|d| (p.clone(), d.name.clone().into())),
            _ => None,
        })
        .collect();
    let documents: Vec<Value> = found
        .record
        .references
        .iter()
        .filter_map(|(k, sha)| {
            let kind = k.strip_prefix(crate::documents::DOCUMENTS_CONNECTOR)?.strip_prefix('.')?;
            Some(json!({"kind": kind, "sha256": sha}))
        })
        .collect();
    let mails: Vec<Value> = found
        .events
        .iter()
        .filter_map(|e| match &e.event {
            crate::engine::OrderEvent::EffectSucceeded { effect, receipt, .. } => {
                let template = effect.strip_prefix(crate::engine::notify::MAIL_CONNECTOR)?.strip_prefix('.')?;
                Some(json!({"at": e.at, "template": template, "receipt": receipt}))
            }
            _ => None,
        })
        .collect();
    // Mail has its own list; the rest of what was sent.
    let mail = format!("{}.", crate::engine::notify::MAIL_CONNECTOR);
    let effects: Vec<&Value> = explained["effects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| !e["effect"].as_str().is_some_and(|n| n.starts_with(&mail)))
        .collect();
    Ok(json!({"order": order, "explain": explained, "people": people, "documents": documents, "mails": mails,
        "effects": effects, "waiting": waiting_effects(app, found.record.id).await?}))
}

/// The order's effects still in the outbox or among the dead letters (the first
/// thousand of each: a console page, not a report).
async fn waiting_effects(app: &AppState, id: OrderId) -> Result<Vec<Value>, StoreError> {
    let pending = app.store.pending_effects(1000).await?;
    let dead = app.store.dead_letters(1000).await?;
    let row = |e: &crate::store::EffectRecord, status: &str| {
        let next_at: DateTime<Utc> = e.next_at;
        json!({"id": e.id.to_string(), "effect": e.name(), "status": status, "attempts": e.attempts,
            "next_at": next_at, "last_error": e.last_error})
    };
    Ok(pending
        .iter()
        .filter(|e| e.id.order_id == id)
        .map(|e| row(e, "pending"))
        .chain(dead.iter().filter(|e| e.id.order_id == id).map(|e| row(e, "dead")))
        .collect())
}

/// `GET /console/orders/{id}/documents/{kind}`: the order's document, checked against
/// its hash, as the API serves it (`fulfilment::archived_document`).
pub(crate) async fn document(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((id, kind)): Path<(String, String)>,
) -> Response {
    let staff = match staff(&app, &headers, Action::SeePersonalData, "orders") {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Ok(order) = id.parse::<OrderId>() else {
        return staff.refused(&app, StatusCode::NOT_FOUND, "orders", &format!("order {id} not found"));
    };
    match super::super::fulfilment::archived_document(&app, order, &kind).await {
        Ok(r) => r,
        Err(e) => staff.refused(&app, e.status, "orders", &e.message),
    }
}
