//! What an effect is and carries: the effect spec `decide` returns (a connector
//! operation or a mail to one recipient), the JSON body a receiver gets, the item a digest gathers
//! instead of a mail, and the one mail a due digest becomes. Pure functions of the
//! order as it stands after the step; the caller gives ids and the time.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::fulfilment::Fulfilment;
use super::lifecycle::{OrderEvent, OrderState};
use crate::domain::{ConnectorId, ExternalRef, Money, Order, OrderId};
use crate::links::LinkPurpose;
use crate::locale::Locale;

/// The built-in connector that sends e-mail; `operation` is the template name.
pub(crate) const MAIL_CONNECTOR: &str = "mail";

/// One addressee, resolved when the effect is created (the effect is self-contained).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Recipient {
    pub(crate) email: String,
    pub(crate) name: String,
    pub(crate) locale: Locale,
    /// The directory id, for staff; `None` for customers and unknown addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) person: Option<String>,
}

/// What a mail effect sends, fixed when the effect is created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MailSpec {
    pub(crate) template: String,
    pub(crate) to: Recipient,
    /// A signed link of this purpose is put in the mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) link: Option<LinkPurpose>,
    /// What the link is valid for beyond its purpose (approval links: `r<round>.l<level>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) link_context: Option<String>,
    /// The template-specific data (`extra` in templates), e.g. the approval level.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub(crate) extra: serde_json::Value,
    /// Set when the recipient takes this kind of mail as a digest: gather it instead
    /// of sending it, and send the gathered items this often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) digest_every_secs: Option<u64>,
    /// The event that caused the mail (templates show its details); none for digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) event: Option<OrderEvent>,
}

/// An outbound effect, as data. The store gives it an id and an idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EffectSpec {
    pub(crate) connector: ConnectorId,
    pub(crate) operation: String,
    /// The state entered or event recorded that caused it (for the audit and metrics).
    pub(crate) cause: String,
    /// For mail effects (`connector` = `mail`): what to send to whom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) mail: Option<MailSpec>,
    /// The event that caused it; receivers get it in the body (e.g. the survey comment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) trigger: Option<OrderEvent>,
}

/// The order an effect is created for, after the step that created it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Subject<'a> {
    pub(crate) id: OrderId,
    pub(crate) source: &'a ExternalRef,
    pub(crate) state: &'a OrderState,
    pub(crate) order: &'a Order,
    /// Ids other systems gave this order so far (`<connector>.<operation>` → id).
    pub(crate) references: &'a BTreeMap<String, String>,
    pub(crate) fulfilment: Option<&'a Fulfilment>,
}

/// The body of a connector push or an immediate mail, fixed when the effect is
/// created (retries send the same).
pub(crate) fn body(subject: &Subject<'_>, effect_id: &str, spec: &EffectSpec, now: DateTime<Utc>) -> serde_json::Value {
    let mut body = serde_json::json!({
        "effect_id": effect_id,
        "order_id": subject.id.to_string(),
        "source": {"connector": subject.source.connector.as_str(), "external_id": subject.source.id.as_str()},
        "external_id": subject.source.id.as_str(),
        "operation": spec.operation,
        "cause": spec.cause,
        "state": subject.state.name(),
        "order": subject.order,
        "references": subject.references,
    });
    if let Some(ev) = &spec.trigger {
        body["event"] = serde_json::to_value(ev).expect("event serialises");
    }
    body["created_at"] = serde_json::to_value(now).expect("time serialises");
    if let Some(mail) = &spec.mail {
        body["mail"] = serde_json::to_value(mail).expect("mail spec serialises");
    }
    body
}

/// What a connector receives for an effect when its operation has no body mapping:
/// the effect's ids, state and references, the order's product, amount and term, and
/// the event that caused it (without a screening's inputs and rule hits); never the
/// customer (name, ID document, phone, e-mail, address). Taken from the stored `body`, so effects queued before stay as lean.
/// An operation opts into the whole body with `body = "snapshot"`.
pub(crate) fn envelope(body: &serde_json::Value) -> serde_json::Value {
    const KEPT: &[&str] = &[
        "effect_id",
        "order_id",
        "source",
        "external_id",
        "operation",
        "cause",
        "state",
        "references",
        "event",
        "created_at",
    ];
    const ORDER_KEPT: &[&str] = &["product", "amount", "term_months", "placed_at"];
    // Not an effect's body (a generated document, an audit anchor): sent as it is.
    if body.get("order").is_none() {
        return body.clone();
    }
    let mut out = serde_json::Map::new();
    for k in KEPT {
        if let Some(v) = body.get(*k) {
            out.insert((*k).to_owned(), v.clone());
        }
    }
    for k in ORDER_KEPT {
        if let Some(v) = body.get("order").and_then(|o| o.get(*k)) {
            out.insert((*k).to_owned(), v.clone());
        }
    }
    // A screening's inputs and rule hits describe the customer (rating, watch list).
    if let Some(serde_json::Value::Object(ev)) = out.get_mut("event") {
        ev.remove("inputs");
        ev.remove("fired");
    }
    serde_json::Value::Object(out)
}

/// A notification held for a recipient's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestItem {
    pub(crate) to: Recipient,
    pub(crate) every_secs: u64,
    pub(crate) order_id: OrderId,
    pub(crate) template: String,
    pub(crate) customer: String,
    pub(crate) amount: Money,
    pub(crate) at: DateTime<Utc>,
    /// What the mail would have carried (e.g. a dunning stage and the invoice).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub(crate) extra: serde_json::Value,
}

impl DigestItem {
    /// Staff digests gather by person; a customer's by address and template (all
    /// their payment reminders in one mail).
    pub(crate) fn group(&self) -> String {
        match &self.to.person {
            Some(person) => person.clone(),
            None => format!("customer:{}:{}", self.to.email.to_ascii_lowercase(), self.template),
        }
    }

    pub(crate) fn is_for_customer(group: &str) -> bool {
        group.starts_with("customer:")
    }

    /// When the digest holding this item is due.
    pub(crate) fn due(&self) -> DateTime<Utc> {
        i64::try_from(self.every_secs)
            .ok()
            .and_then(chrono::Duration::try_seconds)
            .and_then(|d| self.at.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// The digest item a mail becomes when its recipient takes digests, or `None` when
/// it goes out on its own.
pub(crate) fn digest_item(subject: &Subject<'_>, mail: &MailSpec, now: DateTime<Utc>) -> Option<DigestItem> {
    let every = mail.digest_every_secs?;
    let mut extra = mail.extra.clone();
    if let (serde_json::Value::Object(x), Some(f)) = (&mut extra, subject.fulfilment)
        && let Some(inv) = &f.invoice
    {
        let owed = super::receivables::owed(f);
        x.insert("invoice".into(), serde_json::json!({"number": inv.number, "amount": owed, "due_date": inv.due}));
    }
    Some(DigestItem {
        to: mail.to.clone(),
        every_secs: every,
        order_id: subject.id,
        template: mail.template.clone(),
        customer: subject.order.customer.name.to_string(),
        amount: subject.order.amount.clone(),
        at: now,
        extra,
    })
}

/// A due digest as one mail: its operation (template) and body.
pub(crate) struct DigestMail {
    pub(crate) operation: String,
    pub(crate) body: serde_json::Value,
}

/// One `digest` mail to a staff member listing their gathered order updates, each
/// with the state its order is in now (`None`: the order is gone).
pub(crate) fn staff_digest(
    effect_id: &str,
    to: Recipient,
    items: &[(DigestItem, Option<&'static str>)],
    now: DateTime<Utc>,
) -> DigestMail {
    let listed: Vec<serde_json::Value> = items
        .iter()
        .map(|(i, state)| {
            serde_json::json!({
                "order_id": i.order_id.to_string(),
                "template": i.template,
                "state": state.unwrap_or("unknown"),
                "customer": i.customer,
                "amount": i.amount,
                "at": i.at,
            })
        })
        .collect();
    let mail = plain_mail("digest", to, serde_json::Value::Null);
    DigestMail {
        operation: "digest".into(),
        body: serde_json::json!({
            "effect_id": effect_id,
            "items": listed,
            "mail": mail,
            "created_at": now,
        }),
    }
}

/// One mail to a customer for all their gathered items of one template (payment
/// reminders): every invoice with what is owed, the highest stage, the total when
/// all are in one currency. A single item also carries its order (`only`).
///
/// # Panics
/// When `items` is empty (a digest is made of at least one item).
pub(crate) fn customer_digest(
    effect_id: &str,
    to: Recipient,
    items: &[DigestItem],
    only: Option<(&Order, &OrderState)>,
    now: DateTime<Utc>,
) -> DigestMail {
    let last = items.last().expect("a digest has items");
    let template = last.template.clone();
    let invoices: Vec<serde_json::Value> = items.iter().filter_map(|i| i.extra.get("invoice").cloned()).collect();
    let amounts: Vec<Money> =
        invoices.iter().filter_map(|i| serde_json::from_value(i["amount"].clone()).ok()).collect();
    let total = amounts
        .split_first()
        .and_then(|(first, rest)| rest.iter().try_fold(first.clone(), |s, m| s.checked_add(m).ok()));
    let days = items.iter().filter_map(|i| i.extra.get("days_overdue").and_then(serde_json::Value::as_u64)).max();
    let mut extra = last.extra.clone();
    if let serde_json::Value::Object(x) = &mut extra {
        x.remove("invoice");
        x.insert("invoices".into(), serde_json::json!(invoices));
        x.insert("days_overdue".into(), serde_json::json!(days));
        if let Some(t) = &total {
            x.insert("total".into(), serde_json::json!(t));
        }
    }
    let mut body = serde_json::json!({
        "effect_id": effect_id,
        "orders": items.iter().map(|i| i.order_id.to_string()).collect::<Vec<_>>(),
        "created_at": now,
    });
    if let ([single], Some((order, state))) = (items, only) {
        body["order_id"] = serde_json::json!(single.order_id.to_string());
        body["order"] = serde_json::json!(order);
        body["state"] = serde_json::json!(state.name());
    }
    body["mail"] = serde_json::json!(plain_mail(&template, to, extra));
    DigestMail { operation: template, body }
}

fn plain_mail(template: &str, to: Recipient, extra: serde_json::Value) -> MailSpec {
    MailSpec {
        template: template.to_owned(),
        to,
        link: None,
        link_context: None,
        extra,
        digest_every_secs: None,
        event: None,
    }
}
