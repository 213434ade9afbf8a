//! The warehouse's two tables, one row type each: `orders` (one row per order as it
//! stood at the export, with its milestones and stage durations) and `events` (the
//! audit trail, one row per entry). The same rows travel as JSON lines from the
//! daemon's API and are written as Parquet, CSV or JSON lines.
//!
//! Personal data stays out: no names, ID numbers, phones or e-mail addresses of
//! customers (the customer's number in the source system joins them in the CRM).
//! Amounts are exact decimals written as text with their currency beside them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::analytics::Entry;
use crate::analytics::journey::{Decided, Journey, Subject};
use crate::engine::OrderEvent;
use crate::engine::calendar::Calendar;
use crate::store::{EventRecord, OrderRecord};

/// A row of the `orders` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRow {
    pub(crate) order_id: String,
    pub(crate) source_connector: String,
    pub(crate) source_id: String,
    pub(crate) source_version: i64,
    pub(crate) customer_id: String,
    pub(crate) customer_kind: String,
    pub(crate) credit_rating: Option<String>,
    pub(crate) product_type: String,
    pub(crate) product_code: String,
    pub(crate) amount: String,
    pub(crate) currency: String,
    pub(crate) term_months: Option<i32>,
    pub(crate) sales_owner: Option<String>,
    pub(crate) state: String,
    pub(crate) received_at: DateTime<Utc>,
    pub(crate) executing_at: Option<DateTime<Utc>>,
    pub(crate) invoiced_at: Option<DateTime<Utc>>,
    pub(crate) paid_at: Option<DateTime<Utc>>,
    pub(crate) closed_at: Option<DateTime<Utc>>,
    /// `closed`, `cancelled` or `rejected`, once it ended.
    pub(crate) ended_state: Option<String>,
    pub(crate) ended_at: Option<DateTime<Utc>>,
    /// Received → closed, seconds.
    pub(crate) received_to_closed_s: Option<i64>,
    /// The approval levels' waits, in business hours, seconds.
    pub(crate) approval_business_s: Option<i64>,
    /// Who decided each approval level, in order (`system` for automatic approvals).
    pub(crate) approvers: String,
    pub(crate) invoice_number: Option<String>,
    pub(crate) invoice_total: Option<String>,
    pub(crate) exceptions: i32,
    pub(crate) survey_score: Option<i32>,
    pub(crate) rules_version: Option<String>,
    pub(crate) mapping_version: String,
    pub(crate) updated_at: DateTime<Utc>,
}

/// A row of the `events` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRow {
    pub(crate) order_id: String,
    pub(crate) seq: i32,
    pub(crate) at: DateTime<Utc>,
    /// The event's type, as the audit names it (`approved`, `task_completed`…).
    #[serde(rename = "type")]
    pub(crate) kind: String,
    /// `system`, `person:ID` or `connector:ID`.
    pub(crate) actor: String,
    /// The state after the event.
    pub(crate) state: String,
    /// The event's fields as JSON.
    pub(crate) detail: String,
    pub(crate) hash: String,
}

impl OrderRow {
    pub(crate) fn of(rec: &OrderRecord, events: &[EventRecord], calendar: &Calendar) -> OrderRow {
        let j = journey(events);
        let o = &rec.order;
        let invoice = rec.fulfilment.as_ref().and_then(|f| f.invoice.as_ref());
        let rules_version = events.iter().rev().find_map(|e| match &e.event {
            OrderEvent::ScreeningStarted { rules_version } => Some(rules_version.clone()),
            _ => None,
        });
        let approval_business_s = (!j.approvals.is_empty()).then(|| {
            j.approvals
                .iter()
                .filter_map(|w| Some(calendar.working_between(w.from, w.to.as_ref()?.0).num_seconds()))
                .sum()
        });
        OrderRow {
            order_id: rec.id.to_string(),
            source_connector: rec.source.connector.to_string(),
            source_id: rec.source.id.to_string(),
            source_version: i64::try_from(rec.source_version).unwrap_or(i64::MAX),
            customer_id: o.customer.id.to_string(),
            customer_kind: o.customer.kind.to_string(),
            credit_rating: o.customer.credit_rating.as_ref().map(ToString::to_string),
            product_type: o.product.kind.to_string(),
            product_code: o.product.code.to_string(),
            amount: o.amount.amount().to_string(),
            currency: o.amount.currency().to_string(),
            term_months: o.term_months.map(|t| i32::try_from(t.get()).unwrap_or(i32::MAX)),
            sales_owner: o.sales_owner.as_ref().map(ToString::to_string),
            state: rec.state.name().to_owned(),
            received_at: j.received.unwrap_or(rec.created_at),
            executing_at: j.executing,
            invoiced_at: j.invoiced,
            paid_at: j.paid,
            closed_at: j.closed,
            ended_state: j.ended.map(|(s, _)| s.to_owned()),
            ended_at: j.ended.map(|(_, at)| at),
            received_to_closed_s: j.received.zip(j.closed).map(|(r, c)| (c - r).num_seconds()),
            approval_business_s,
            approvers: approvers(&j),
            invoice_number: invoice.map(|i| i.number.clone()),
            invoice_total: invoice.map(|i| i.total.amount().to_string()),
            exceptions: i32::try_from(j.exceptions).unwrap_or(i32::MAX),
            survey_score: j.survey.map(|(s, _)| i32::from(s)),
            rules_version,
            mapping_version: rec.mapping_version.clone(),
            updated_at: rec.updated_at,
        }
    }
}

impl EventRow {
    pub(crate) fn of(e: &EventRecord) -> EventRow {
        let detail = detail(&e.event);
        EventRow {
            order_id: e.order_id.to_string(),
            seq: i32::try_from(e.seq).unwrap_or(i32::MAX),
            at: e.at,
            kind: e.event.name().to_owned(),
            actor: e.actor.to_string(),
            state: e.state.name().to_owned(),
            detail,
            hash: e.hash.clone(),
        }
    }
}

/// The event's fields as JSON, without its `type`: the serialised event with the tag
/// (which serde writes first) cut off.
fn detail(event: &OrderEvent) -> String {
    let json = serde_json::to_string(event).unwrap_or_default();
    let fields = json
        .strip_prefix(r#"{"type":""#)
        .and_then(|rest| rest.find('"').map(|end| &rest[end + 1..]))
        .and_then(|after| after.strip_prefix(',').or((after == "}").then_some("}")));
    match fields {
        Some(fields) => format!("{{{fields}"),
        None => {
            let mut v = serde_json::to_value(event).unwrap_or_default();
            v.as_object_mut().map(|m| m.remove("type"));
            v.to_string()
        }
    }
}

fn journey(events: &[EventRecord]) -> Journey {
    let entries = events.iter().map(|e| Entry::of(e.at, &e.actor, &e.event, &e.state));
    Journey::of(Subject::default(), entries)
}

fn approvers(j: &Journey) -> String {
    let by = j.approvals.iter().filter_map(|w| match &w.to {
        Some((_, Decided::By { actor, .. })) => Some(actor.as_str()),
        _ => None,
    });
    by.collect::<Vec<_>>().join(",")
}

/// One value of a row, typed as the file formats need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Cell<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Time(Option<DateTime<Utc>>),
}

/// A table's rows: its name and each row's cells, in column order.
pub(crate) trait Table: Serialize + Default {
    const NAME: &'static str;
    /// The partition (`YYYY-MM`) a row goes in.
    fn month(&self) -> String;
    fn cells(&self) -> Vec<(&'static str, Cell<'_>)>;
}

fn text(s: &str) -> Cell<'_> {
    Cell::Text(Some(s))
}

fn opt(s: &Option<String>) -> Cell<'_> {
    Cell::Text(s.as_deref())
}

impl Table for OrderRow {
    const NAME: &'static str = "orders";

    fn month(&self) -> String {
        self.received_at.format("%Y-%m").to_string()
    }

    fn cells(&self) -> Vec<(&'static str, Cell<'_>)> {
        vec![
            ("order_id", text(&self.order_id)),
            ("source_connector", text(&self.source_connector)),
            ("source_id", text(&self.source_id)),
            ("source_version", Cell::Int(Some(self.source_version))),
            ("customer_id", text(&self.customer_id)),
            ("customer_kind", text(&self.customer_kind)),
            ("credit_rating", opt(&self.credit_rating)),
            ("product_type", text(&self.product_type)),
            ("product_code", text(&self.product_code)),
            ("amount", text(&self.amount)),
            ("currency", text(&self.currency)),
            ("term_months", Cell::Int(self.term_months.map(i64::from))),
            ("sales_owner", opt(&self.sales_owner)),
            ("state", text(&self.state)),
            ("received_at", Cell::Time(Some(self.received_at))),
            ("executing_at", Cell::Time(self.executing_at)),
            ("invoiced_at", Cell::Time(self.invoiced_at)),
            ("paid_at", Cell::Time(self.paid_at)),
            ("closed_at", Cell::Time(self.closed_at)),
            ("ended_state", opt(&self.ended_state)),
            ("ended_at", Cell::Time(self.ended_at)),
            ("received_to_closed_s", Cell::Int(self.received_to_closed_s)),
            ("approval_business_s", Cell::Int(self.approval_business_s)),
            ("approvers", text(&self.approvers)),
            ("invoice_number", opt(&self.invoice_number)),
            ("invoice_total", opt(&self.invoice_total)),
            ("exceptions", Cell::Int(Some(i64::from(self.exceptions)))),
            ("survey_score", Cell::Int(self.survey_score.map(i64::from))),
            ("rules_version", opt(&self.rules_version)),
            ("mapping_version", text(&self.mapping_version)),
            ("updated_at", Cell::Time(Some(self.updated_at))),
        ]
    }
}

impl Table for EventRow {
    const NAME: &'static str = "events";

    fn month(&self) -> String {
        self.at.format("%Y-%m").to_string()
    }

    fn cells(&self) -> Vec<(&'static str, Cell<'_>)> {
        vec![
            ("order_id", text(&self.order_id)),
            ("seq", Cell::Int(Some(i64::from(self.seq)))),
            ("at", Cell::Time(Some(self.at))),
            ("type", text(&self.kind)),
            ("actor", text(&self.actor)),
            ("state", text(&self.state)),
            ("detail", text(&self.detail)),
            ("hash", text(&self.hash)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields of an event as the JSON value of the whole event less its type.
    fn expected(event: &OrderEvent) -> serde_json::Value {
        let mut v = serde_json::to_value(event).unwrap();
        v.as_object_mut().unwrap().remove("type");
        v
    }

    #[test]
    fn the_detail_is_the_event_without_its_type() {
        let events = [
            OrderEvent::ExecutionStarted,
            OrderEvent::ReviewReturned { comment: "补充材料：身份证复印件 \"正反面\"".into() },
            OrderEvent::Cancelled { reason: "客户撤单".into() },
        ];
        for event in &events {
            let d = detail(event);
            assert_eq!(serde_json::from_str::<serde_json::Value>(&d).unwrap(), expected(event), "{d}");
            assert!(!d.contains("\"type\""), "{d}");
        }
        assert_eq!(detail(&OrderEvent::Closed), "{}");
    }
}
