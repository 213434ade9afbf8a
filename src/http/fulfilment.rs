//! After approval: tasks reported done, delivery, acceptance, exceptions and payments,
//! from operators (`/api/…`, acting as the request's principal) or from the systems doing the work (signed
//! `POST /webhooks/{connector}/events`). Every change goes through the engine; a
//! payment no order takes waits in the unmatched queue for an operator.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::api::{ApiJson, as_seen_by};
use super::error::ApiError;
use super::principal::Acting;
use crate::domain::{ExternalRef, Money, OrderId};
use crate::engine::OrderEvent;
use crate::engine::answers::{AcceptanceDecision, acceptance_event};
use crate::engine::payments::{PaymentOutcome, PaymentReport};
use crate::engine::receivables::{self, Receivables};
use crate::engine::reporting::Reporter;
use crate::orders::Named;
use crate::view::order_json;

fn parse_id(id: &str) -> Result<OrderId, ApiError> {
    id.parse().map_err(|e: crate::domain::IdError| ApiError::bad_request(e.to_string()).with_field("id"))
}

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", message).with_field(field)
}

/// Who acts: the request's principal; a body's `operator` may only name them.
fn operator(acting: &Acting, named: Option<&str>) -> Result<crate::engine::access::Acting, ApiError> {
    acting.named_in_body("operator", named)?;
    Ok(acting.0.acting())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OperatorBody {
    #[serde(default)]
    operator: Option<String>,
    #[serde(default)]
    note: String,
}

/// Applies `event` as `actor`; the order as `who` may see it (`api::as_seen_by`).
async fn step(
    app: &AppState,
    who: &Acting,
    id: OrderId,
    actor: crate::engine::access::Acting,
    event: OrderEvent,
) -> Result<Json<Value>, ApiError> {
    let rec = app.orders.apply(id, actor, event, &app.rules, app.clock.now()).await?;
    app.wake_dispatcher();
    Ok(Json(as_seen_by(app, &who.0, order_json(&rec)).await?))
}

/// What an archived document may do when opened: show itself with its inline styles.
pub(crate) const DOCUMENT_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; sandbox";

/// `GET /api/orders/{id}/documents/{kind}`: the archived document, checked against
/// the SHA-256 the audit trail recorded for it.
pub(crate) async fn document(
    State(app): State<AppState>,
    Path((id, kind)): Path<(String, String)>,
) -> Result<axum::response::Response, ApiError> {
    archived_document(&app, parse_id(&id)?, &kind).await
}

/// An order's archived document `kind`, checked against the SHA-256 its audit trail
/// recorded, as an attachment nothing in which may run: what the API and the console
/// answer.
///
/// # Errors
/// 404 for an unknown order or a document not generated; 500 when the file does not
/// match its hash (restore it from backup).
pub(crate) async fn archived_document(
    app: &AppState,
    id: OrderId,
    kind: &str,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse as _;
    let rec = app.store.order(id).await?.ok_or_else(|| ApiError::not_found(format!("order {id} not found")))?;
    let name = format!("{}.{kind}", crate::documents::DOCUMENTS_CONNECTOR);
    let sha = rec
        .references
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("order {id} has no `{kind}` document (yet)")))?;
    if !kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(ApiError::bad_request("not a document kind").with_field("kind"));
    }
    let path = crate::documents::Documents::path(&app.settings.store_path, &id.to_string(), kind, sha);
    let bytes = tokio::fs::read(&path).await.map_err(|e| ApiError::unexpected(format!("{}: {e}", path.display())))?;
    use sha2::Digest as _;
    let actual = hex::encode(sha2::Sha256::digest(&bytes));
    if &actual != sha {
        tracing::error!(order_id = %id, kind, "archived document does not match the hash in the audit trail");
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "document_altered",
            format!("the archived {kind} does not match the SHA-256 the audit trail recorded; restore it from backup"),
        ));
    }
    // Generated HTML served from the API's own origin: nothing in it may run, load,
    // frame or be framed, and a browser saves it rather than shows it.
    use axum::http::header;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_owned()),
            (header::HeaderName::from_static("x-content-sha256"), actual),
            (header::CONTENT_SECURITY_POLICY, DOCUMENT_CSP.to_owned()),
            (header::X_FRAME_OPTIONS, "DENY".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{kind}-{id}.html\"")),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        app.orders.vault().reveal_html(&String::from_utf8_lossy(&bytes)).await?,
    )
        .into_response())
}

/// `GET /api/customers/{id}/receivables`: the customer's invoices, what is paid and
/// what is owed, with the total owed per currency. A total too large to compute is
/// reported as such (`"amount": null` with an `error`); the invoices are still listed.
pub(crate) async fn receivables(
    State(app): State<AppState>,
    Path(customer): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(customer_receivables(&app, &customer).await?))
}

/// A customer's invoices, paid and owed, and the total owed per currency: what
/// `GET /api/customers/{id}/receivables` answers and the console's receivables page
/// shows.
pub(crate) async fn customer_receivables(app: &AppState, customer: &str) -> Result<Value, ApiError> {
    let orders = app.orders.customer_orders(customer).await?;
    let mut owed = Receivables::default();
    let mut invoices = Vec::new();
    for o in &orders {
        let Some(f) = &o.fulfilment else { continue };
        let (Some(inv), Some(outstanding)) = (&f.invoice, receivables::owed(f)) else { continue };
        owed.add(&outstanding);
        invoices.push(json!({
            "order_id": o.id.to_string(),
            "state": o.state.name(),
            "invoice": inv,
            "paid": f.paid().ok().flatten(),
            "outstanding": outstanding,
            "overdue": matches!(o.state, crate::engine::OrderState::Overdue),
            "dunning": f.dunning,
        }));
    }
    let total: Vec<Value> = owed
        .totals()
        .map(|(c, sum)| match sum {
            Ok(m) => json!({"amount": m.amount().to_string(), "currency": c.as_str()}),
            Err(e) => json!({"amount": null, "currency": c.as_str(), "error": e.to_string()}),
        })
        .collect();
    Ok(json!({"customer": customer, "orders": orders.len(), "invoices": invoices, "outstanding": total}))
}

/// `POST /api/reconcile`: runs the reconciliation now and answers its report.
pub(crate) async fn reconcile(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let report =
        crate::workers::reconcile::run_once(&app.orders, &app.registry, &app.rules, &app.metrics, &app.clock).await?;
    app.wake_dispatcher();
    Ok(Json(serde_json::to_value(report).unwrap_or(Value::Null)))
}

/// `POST /api/orders/{id}/tasks/{task}/done`
pub(crate) async fn task_done(
    State(app): State<AppState>,
    acting: Acting,
    Path((id, task)): Path<(String, String)>,
    ApiJson(b): ApiJson<OperatorBody>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    step(
        &app,
        &acting,
        id,
        operator(&acting, b.operator.as_deref())?,
        OrderEvent::TaskCompleted { task, note: b.note.trim().to_owned() },
    )
    .await
}

/// `POST /api/orders/{id}/delivery`: delivery recorded (409 while required tasks are open).
pub(crate) async fn delivery(
    State(app): State<AppState>,
    acting: Acting,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<OperatorBody>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    step(
        &app,
        &acting,
        id,
        operator(&acting, b.operator.as_deref())?,
        OrderEvent::DeliveryRecorded { note: b.note.trim().to_owned() },
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AcceptanceBody {
    #[serde(default)]
    operator: Option<String>,
    decision: AcceptanceDecision,
    #[serde(default)]
    note: String,
}

/// `POST /api/orders/{id}/acceptance`: an operator records the customer's acceptance
/// (or refusal, which opens an exception).
pub(crate) async fn acceptance(
    State(app): State<AppState>,
    acting: Acting,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<AcceptanceBody>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let actor = operator(&acting, b.operator.as_deref())?;
    let event = acceptance_event(b.decision, &b.note, "the customer")?;
    step(&app, &acting, id, actor, event).await
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ExceptionAction {
    Open,
    Resolve,
    Cancel,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExceptionBody {
    #[serde(default)]
    operator: Option<String>,
    action: ExceptionAction,
    note: String,
}

/// `POST /api/orders/{id}/exception`: open one (with its reason), resolve it (the
/// order resumes), or cancel the order (before invoicing).
pub(crate) async fn exception(
    State(app): State<AppState>,
    acting: Acting,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ExceptionBody>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let actor = operator(&acting, b.operator.as_deref())?;
    let note = b.note.trim().to_owned();
    if note.is_empty() {
        return Err(invalid("note", "say why (the reason or the resolution)"));
    }
    let event = match b.action {
        ExceptionAction::Open => OrderEvent::ExceptionOpened { reason: note },
        ExceptionAction::Resolve => OrderEvent::ExceptionResolved { resolution: note, cancel: false },
        ExceptionAction::Cancel => OrderEvent::ExceptionResolved { resolution: note, cancel: true },
    };
    step(&app, &acting, id, actor, event).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PaymentBody {
    payment_id: String,
    amount: Money,
    #[serde(default)]
    invoice_number: Option<String>,
    #[serde(default)]
    order_id: Option<String>,
    #[serde(default)]
    reference: String,
}

impl PaymentBody {
    fn report(self, source: &str, intake: &crate::engine::IntakeRules) -> Result<PaymentReport, ApiError> {
        let payment_id = self.payment_id.trim().to_owned();
        if payment_id.is_empty() || payment_id.chars().count() > 200 {
            return Err(invalid("payment_id", "the payment's id (1–200 characters) is needed to take it once"));
        }
        // A payment is an inbound amount too: the same limits as orders.
        intake.check_amount(&self.amount).map_err(|e| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.code(), e.to_string()).with_field(e.field())
        })?;
        let order_id = self.order_id.as_deref().map(parse_id).transpose()?;
        Ok(PaymentReport {
            source: source.to_owned(),
            payment_id,
            amount: self.amount,
            invoice_number: self.invoice_number.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()),
            order_id,
            reference: self.reference.chars().take(500).collect(),
        })
    }
}

fn payment_answer(o: &PaymentOutcome) -> (StatusCode, Json<Value>) {
    // 200 when applied, 202 when queued for an operator: both are taken, never lost.
    let status = if o.matched { StatusCode::OK } else { StatusCode::ACCEPTED };
    (status, Json(serde_json::to_value(o).unwrap_or(Value::Null)))
}

/// `POST /api/payments`: a payment reported by an operator or a bank file.
pub(crate) async fn payment(
    State(app): State<AppState>,
    ApiJson(b): ApiJson<PaymentBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let report = b.report("api", &app.settings.intake)?;
    let outcome = app.orders.record_payment(&report, &app.rules, app.clock.now()).await?;
    app.wake_dispatcher();
    Ok(payment_answer(&outcome))
}

/// `GET /api/payments/unmatched`
pub(crate) async fn unmatched(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let list = app.orders.unmatched_payments().await?;
    Ok(Json(json!({"payments": list})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AssignBody {
    order_id: String,
    #[serde(default)]
    operator: Option<String>,
}

/// `POST /api/payments/unmatched/{source}/{payment_id}/assign`
pub(crate) async fn assign(
    State(app): State<AppState>,
    acting: Acting,
    Path((source, payment_id)): Path<(String, String)>,
    ApiJson(b): ApiJson<AssignBody>,
) -> Result<Json<Value>, ApiError> {
    let order = parse_id(&b.order_id)?;
    acting.named_in_body("operator", b.operator.as_deref())?;
    let outcome =
        app.orders.assign_payment(&source, &payment_id, order, acting.0.acting(), &app.rules, app.clock.now()).await?;
    app.wake_dispatcher();
    Ok(Json(serde_json::to_value(outcome).unwrap_or(Value::Null)))
}

/// A signed event from the system doing the work, in orderbridge's own format.
#[derive(Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub(crate) enum SystemEvent {
    #[serde(rename = "task.completed")]
    TaskCompleted {
        #[serde(flatten)]
        order: OrderRef,
        task: String,
        #[serde(default)]
        note: String,
    },
    #[serde(rename = "delivery.recorded")]
    DeliveryRecorded {
        #[serde(flatten)]
        order: OrderRef,
        #[serde(default)]
        note: String,
    },
    #[serde(rename = "payment.received")]
    PaymentReceived {
        #[serde(flatten)]
        payment: PaymentBody,
    },
}

/// An order by our id, or by the sender's external id (`external_id` with the
/// connector that created it).
#[derive(Deserialize)]
pub(crate) struct OrderRef {
    #[serde(default)]
    order_id: Option<String>,
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    source: Option<String>,
}

/// The order an event names (parsed only; the application layer looks it up).
fn named(connector: &str, r: &OrderRef) -> Result<Named, ApiError> {
    if let Some(id) = &r.order_id {
        return parse_id(id).map(Named::Id);
    }
    let ext =
        r.external_id.as_deref().ok_or_else(|| invalid("order_id", "name the order (order_id or external_id)"))?;
    let source = r.source.as_deref().unwrap_or(connector);
    Ok(Named::External(ExternalRef {
        connector: source.parse().map_err(|e: crate::domain::IdError| invalid("source", &e.to_string()))?,
        id: ext.parse().map_err(|e: crate::domain::IdError| invalid("external_id", &e.to_string()))?,
    }))
}

/// `POST /webhooks/{connector}/events`: a task done, a delivery, a payment, signed
/// like the connector's other webhooks.
pub(crate) async fn system_event(
    State(app): State<AppState>,
    Path(connector): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let conn = app.registry.get(&connector).cloned().ok_or_else(|| {
        ApiError::not_found(format!("no connector `{}`", connector.chars().take(64).collect::<String>()))
    })?;
    let hook = conn
        .webhook
        .as_ref()
        .ok_or_else(|| ApiError::not_found(format!("connector `{connector}` has no [webhook] section")))?;
    let bytes = super::webhooks::signed_body(&app, &hook.verifier, &uri, &headers, body).await?;
    let event: SystemEvent = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_event", e.to_string()))?;
    // Which types it may report, and for which orders, the application layer asks the
    // engine (`engine::reporting`); a refusal is a 403 naming the rule.
    let reporter = Reporter { connector: conn.id.as_str(), allowed: &hook.events };
    let (order, event) = match event {
        SystemEvent::TaskCompleted { order, task, note } => {
            (named(&connector, &order)?, OrderEvent::TaskCompleted { task, note })
        }
        SystemEvent::DeliveryRecorded { order, note } => {
            (named(&connector, &order)?, OrderEvent::DeliveryRecorded { note })
        }
        SystemEvent::PaymentReceived { payment } => {
            let report = payment.report(&connector, &app.settings.intake)?;
            let outcome = app.orders.report_payment(&report, reporter, &app.rules, app.clock.now()).await?;
            app.wake_dispatcher();
            return Ok(payment_answer(&outcome));
        }
    };
    let rec = app.orders.report(order, reporter, event, &app.rules, app.clock.now()).await?;
    app.wake_dispatcher();
    Ok((StatusCode::OK, Json(order_json(&rec))))
}
