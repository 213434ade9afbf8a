//! Who may report what at `POST /webhooks/{connector}/events`. Two rules, decided
//! here and nowhere else:
//!
//! 1. **Event types.** A connector reports only the types its `[webhook] events`
//!    lists (none by default).
//! 2. **Orders.** It reports only for orders it is involved in: the order came from it
//!    (its source), or it was pushed to for the order: an effect it performed (in the
//!    audit trail), an id it gave the order (`references`), or a task of the order
//!    that is pushed to it (assigned, even while the push is still on its way).
//!
//! Pure: the application layer gathers the order's record and audit trail and asks.

use std::collections::{BTreeMap, BTreeSet};

use super::fulfilment::Fulfilment;
use super::lifecycle::OrderEvent;
use super::rules::Rules;
use crate::domain::OrderId;

/// An event type a connector may report, by its name on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reported {
    TaskCompleted,
    DeliveryRecorded,
    PaymentReceived,
}

impl Reported {
    pub(crate) const ALL: [Reported; 3] =
        [Reported::TaskCompleted, Reported::DeliveryRecorded, Reported::PaymentReceived];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Reported::TaskCompleted => "task.completed",
            Reported::DeliveryRecorded => "delivery.recorded",
            Reported::PaymentReceived => "payment.received",
        }
    }

    /// The type a reported event is, if connectors may report it at all.
    pub(crate) fn of(event: &OrderEvent) -> Option<Reported> {
        match event {
            OrderEvent::TaskCompleted { .. } => Some(Reported::TaskCompleted),
            OrderEvent::DeliveryRecorded { .. } => Some(Reported::DeliveryRecorded),
            OrderEvent::PaymentReceived { .. } => Some(Reported::PaymentReceived),
            _ => None,
        }
    }
}

impl std::str::FromStr for Reported {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Reported::ALL.into_iter().find(|r| r.name() == s).ok_or_else(|| {
            let known: Vec<&str> = Reported::ALL.iter().map(|r| r.name()).collect();
            format!("`{s}` is not an event type a connector can report (one of: {})", known.join(", "))
        })
    }
}

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A connector sending events, with the types its `[webhook] events` allows.
#[derive(Clone, Copy, Debug)]
pub struct Reporter<'a> {
    pub(crate) connector: &'a str,
    pub(crate) allowed: &'a [Reported],
}

/// Why a reported event was refused (answered `403`, nothing recorded).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReportRefusal {
    #[error(
        "connector `{connector}` may not report `{event}` events: its [webhook] events allow {allowed} (rule: a connector reports only the event types its [webhook] events lists)"
    )]
    EventNotAllowed { connector: String, event: Reported, allowed: String },
    #[error(
        "connector `{connector}` may not report events for order {order}: it neither created it (its source is `{source_connector}`) nor was pushed to for it (rule: a connector reports only for orders it created or was pushed to)"
    )]
    NotInvolved { connector: String, order: OrderId, source_connector: String },
}

impl ReportRefusal {
    /// The rule, as the API's error code names it.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            ReportRefusal::EventNotAllowed { .. } => "event_not_allowed",
            ReportRefusal::NotInvolved { .. } => "order_not_involved",
        }
    }
}

/// The connectors an order involves: its source, and every connector it was pushed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Involvement {
    pub(crate) order: OrderId,
    pub(crate) source: String,
    pub(crate) pushed_to: BTreeSet<String>,
}

impl Involvement {
    /// From what the order holds: its source connector, the ids other systems gave it
    /// (`<connector>.<operation>` → id), its tasks (pushed where the rules send them),
    /// and its audit trail (every effect performed or given up, `<connector>.<operation>`).
    pub(crate) fn of<'e>(
        order: OrderId,
        source: &str,
        references: &BTreeMap<String, String>,
        fulfilment: Option<&Fulfilment>,
        events: impl IntoIterator<Item = &'e OrderEvent>,
        rules: &Rules,
    ) -> Involvement {
        let connector_of = |effect: &str| effect.split_once('.').map(|(c, _)| c.to_owned());
        let mut pushed_to: BTreeSet<String> = references.keys().filter_map(|k| connector_of(k)).collect();
        for task in fulfilment.map(|f| f.tasks.as_slice()).unwrap_or_default() {
            if let Some((c, _)) = rules.tasks.iter().find(|t| t.id == task.id).and_then(|t| t.push.as_ref()) {
                pushed_to.insert(c.to_string());
            }
        }
        for e in events {
            if let OrderEvent::EffectSucceeded { effect, .. } | OrderEvent::EffectDeadLettered { effect, .. } = e {
                pushed_to.extend(connector_of(effect));
            }
        }
        Involvement { order, source: source.to_owned(), pushed_to }
    }

    pub(crate) fn includes(&self, connector: &str) -> bool {
        self.source == connector || self.pushed_to.contains(connector)
    }
}

/// Rule 1: may `reporter` report events of type `event` at all?
///
/// # Errors
/// `EventNotAllowed`, naming what its `[webhook] events` allows.
pub(crate) fn may_report_type(reporter: Reporter<'_>, event: Reported) -> Result<(), ReportRefusal> {
    if reporter.allowed.contains(&event) {
        return Ok(());
    }
    let allowed = if reporter.allowed.is_empty() {
        "none".to_owned()
    } else {
        reporter.allowed.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ")
    };
    Err(ReportRefusal::EventNotAllowed { connector: reporter.connector.to_owned(), event, allowed })
}

/// Rules 1 and 2: may `reporter` report `event` for the order `involvement` describes?
///
/// # Errors
/// The first rule it breaks.
pub(crate) fn may_report(
    reporter: Reporter<'_>,
    event: Reported,
    involvement: &Involvement,
) -> Result<(), ReportRefusal> {
    may_report_type(reporter, event)?;
    if involvement.includes(reporter.connector) {
        return Ok(());
    }
    Err(ReportRefusal::NotInvolved {
        connector: reporter.connector.to_owned(),
        order: involvement.order,
        source_connector: involvement.source.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fulfilment::Task;

    fn rules() -> Rules {
        crate::config::load_rules(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn task(id: &str) -> Task {
        Task { id: id.into(), name: id.into(), department: "operations".into(), required: true, done: None }
    }

    const ERP: Reporter<'static> =
        Reporter { connector: "demo-erp", allowed: &[Reported::TaskCompleted, Reported::DeliveryRecorded] };

    #[test]
    fn event_types_are_names_on_the_wire() {
        for r in Reported::ALL {
            assert_eq!(r.name().parse::<Reported>(), Ok(r));
        }
        let e = "order.closed".parse::<Reported>().unwrap_err();
        assert!(e.contains("task.completed, delivery.recorded, payment.received"), "{e}");
    }

    #[test]
    fn a_connector_reports_only_the_types_it_is_allowed() {
        assert!(may_report_type(ERP, Reported::TaskCompleted).is_ok());
        let e = may_report_type(ERP, Reported::PaymentReceived).unwrap_err();
        assert_eq!(e.code(), "event_not_allowed");
        assert!(e.to_string().contains("allow `task.completed`, `delivery.recorded`"), "{e}");
        let crm = Reporter { connector: "demo-crm", allowed: &[] };
        let e = may_report_type(crm, Reported::PaymentReceived).unwrap_err();
        assert!(e.to_string().contains("its [webhook] events allow none"), "{e}");
    }

    #[test]
    fn a_connector_reports_only_for_orders_it_created_or_was_pushed_to() {
        let rules = rules();
        let id = OrderId::new_v7();
        let none = BTreeMap::new();
        // Just received from the CRM: only the CRM is involved.
        let fresh = Involvement::of(id, "demo-crm", &none, None, [], &rules);
        assert!(fresh.includes("demo-crm") && !fresh.includes("demo-erp"));
        let e = may_report(ERP, Reported::TaskCompleted, &fresh).unwrap_err();
        assert_eq!(e.code(), "order_not_involved");
        assert!(e.to_string().contains("its source is `demo-crm`"), "{e}");

        // Executing: its tasks go to the ERP, even before the push answered.
        let f = Fulfilment { tasks: vec![task("contract"), task("client_briefing")], ..Fulfilment::default() };
        let executing = Involvement::of(id, "demo-crm", &none, Some(&f), [], &rules);
        assert_eq!(executing.pushed_to, BTreeSet::from(["demo-erp".to_owned()]));
        assert!(may_report(ERP, Reported::DeliveryRecorded, &executing).is_ok());

        // An effect performed, or an id given: that connector too.
        let done = OrderEvent::EffectSucceeded {
            effect_id: "x".into(),
            effect: "service-desk.create_ticket".into(),
            attempts: 1,
            receipt: String::new(),
            reference: None,
        };
        let refs = BTreeMap::from([("demo-finance.create_invoice".to_owned(), "INV-1".to_owned())]);
        let invoiced = Involvement::of(id, "demo-crm", &refs, None, [&done], &rules);
        assert!(invoiced.includes("demo-finance") && invoiced.includes("service-desk"));
        let finance = Reporter { connector: "demo-finance", allowed: &[Reported::PaymentReceived] };
        assert!(may_report(finance, Reported::PaymentReceived, &invoiced).is_ok());
        // … but never a type it is not allowed, involved or not.
        assert_eq!(may_report(finance, Reported::TaskCompleted, &invoiced).unwrap_err().code(), "event_not_allowed");
    }
}
