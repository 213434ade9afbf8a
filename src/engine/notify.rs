//! Notification rules (`config/notifications.toml`): who hears about what.
//!
//! A rule names a trigger (a state the order enters or an event recorded, by the names
//! the audit uses), a template and an audience (`role:NAME`, `person:ID`,
//! `sales_owner`, `customer`). Evaluation is pure: it turns one step of one order into
//! mail effects, resolving people through the directory (delegates stand in for the
//! absent) on the day of `now` in the configured time zone.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::approval::ApprovalProgress;
use super::directory::{Directory, Person};
use super::dunning::DunningStep;
pub(crate) use super::effects::{EffectSpec, MAIL_CONNECTOR, MailSpec, Recipient};
use super::lifecycle::{EVENT_NAMES, OrderEvent, OrderState, STATE_NAMES, triggers};
use crate::diagnostics::Diagnostic;
use crate::domain::{ConnectorId, Order};
use crate::links::LinkPurpose;
use crate::locale::Presentation;

/// How long a customer's dunning reminders are gathered into one mail.
pub(crate) const DUNNING_GATHER_SECS: u64 = 3600;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Audience {
    Role(String),
    Person(String),
    SalesOwner,
    Customer,
    /// Whoever may decide on the approval level waiting now.
    Approvers,
    /// The role a task was assigned to (`task_assigned`), or an exception escalated to
    /// (`exception_escalated`).
    Department,
}

#[derive(Clone, Debug)]
pub(crate) struct NotifyRule {
    pub(crate) on: String,
    pub(crate) template: String,
    pub(crate) to: Vec<Audience>,
    pub(crate) digest: bool,
    pub(crate) link: Option<LinkPurpose>,
}

/// The loaded rules with the directory they resolve people through.
#[derive(Clone, Debug, Default)]
pub(crate) struct Notifications {
    pub(crate) rules: Vec<NotifyRule>,
    pub(crate) directory: Arc<Directory>,
    pub(crate) presentation: Presentation,
}

impl Notifications {
    /// Mail effects for one applied event (`entered` is the state's name when it changed).
    pub(crate) fn for_step(
        &self,
        entered: Option<&str>,
        event: &OrderEvent,
        order: &Order,
        (state, approval, due): (&OrderState, Option<&ApprovalProgress>, Option<DateTime<Utc>>),
        now: DateTime<Utc>,
    ) -> Vec<EffectSpec> {
        let day = now.with_timezone(&self.presentation.time_zone).date_naive();
        // The approval level waiting now, if any: for `approvers`, links and `extra`.
        let waiting = match (state, approval) {
            (OrderState::AwaitingApproval { level, of }, Some(p)) => Some((*level, *of, p)),
            _ => None,
        };
        let extra = waiting.map_or(serde_json::Value::Null, |(level, of, p)| {
            let mut extra = serde_json::json!({
                "level": level,
                "of": of,
                "role": p.level(level).map(ToString::to_string).unwrap_or_default(),
                "round": p.round,
            });
            if let Some(due) = due {
                extra["due_at"] = serde_json::json!(due);
            }
            if let Some(e) = p.escalated.iter().rev().find(|e| e.level == level) {
                extra["escalated_to"] = serde_json::json!(e.role);
            }
            extra
        });
        let mut out = Vec::new();
        for rule in self.rules.iter().filter(|r| triggers(&r.on, entered, event)) {
            let mut seen = Vec::new();
            let recipients: Vec<Recipient> = rule
                .to
                .iter()
                .flat_map(|a| match (a, waiting) {
                    (Audience::Approvers, Some((level, _, p))) => p
                        .approvers(&self.directory, order, level, day)
                        .into_iter()
                        .map(|person| self.person(person))
                        .collect(),
                    (Audience::Approvers, None) => Vec::new(),
                    (Audience::Department, _) => match event {
                        OrderEvent::TaskAssigned { department: role, .. }
                        | OrderEvent::ExceptionEscalated { to_role: role } => {
                            self.resolve(&Audience::Role(role.clone()), order, day)
                        }
                        _ => Vec::new(),
                    },
                    (a, _) => self.resolve(a, order, day),
                })
                .collect();
            let link_context = match (rule.link, waiting) {
                (Some(LinkPurpose::Approval), Some((level, _, p))) => Some(p.link_context(level)),
                _ => None,
            };
            for to in recipients {
                if seen.contains(&to.email.to_ascii_lowercase()) {
                    continue;
                }
                seen.push(to.email.to_ascii_lowercase());
                let digest_every_secs = match (&to.person, rule.digest) {
                    (Some(p), true) => self.directory.person(p).and_then(|p| p.digest_every).map(|d| d.as_secs()),
                    _ => None,
                };
                // Screening details go to people in the directory only (no tipping-off).
                let event = if to.person.is_some() { event.clone() } else { event.without_screening_details() };
                out.push(EffectSpec {
                    connector: MAIL_CONNECTOR.parse::<ConnectorId>().expect("valid connector id"),
                    operation: rule.template.clone(),
                    cause: rule.on.clone(),
                    mail: Some(MailSpec {
                        template: rule.template.clone(),
                        to,
                        link: rule.link,
                        link_context: link_context.clone(),
                        extra: extra.clone(),
                        digest_every_secs,
                        event: Some(event.clone()),
                    }),
                    trigger: Some(event),
                });
            }
        }
        out
    }

    /// The mails of a dunning step: its template to its audiences. A customer's
    /// reminders are gathered for an hour (a digest keyed by the customer), so all of
    /// their overdue invoices reach them in one mail.
    pub(crate) fn dunning(
        &self,
        step: &DunningStep,
        event: &OrderEvent,
        order: &Order,
        now: DateTime<Utc>,
    ) -> Vec<EffectSpec> {
        let day = now.with_timezone(&self.presentation.time_zone).date_naive();
        let audiences: Vec<Audience> = step
            .to
            .iter()
            .filter_map(|a| match a.as_str() {
                "customer" => Some(Audience::Customer),
                "sales_owner" => Some(Audience::SalesOwner),
                other => other.strip_prefix("role:").map(|r| Audience::Role(r.to_owned())),
            })
            .collect();
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for a in &audiences {
            for to in self.resolve(a, order, day) {
                if seen.contains(&to.email.to_ascii_lowercase()) {
                    continue;
                }
                seen.push(to.email.to_ascii_lowercase());
                let digest_every_secs = matches!(a, Audience::Customer).then_some(DUNNING_GATHER_SECS);
                out.push(EffectSpec {
                    connector: MAIL_CONNECTOR.parse::<ConnectorId>().expect("valid connector id"),
                    operation: step.template.clone(),
                    cause: "dunning_due".into(),
                    mail: Some(MailSpec {
                        template: step.template.clone(),
                        to,
                        link: None,
                        link_context: None,
                        extra: serde_json::json!({"stage": step.id, "days_overdue": step.days_overdue}),
                        digest_every_secs,
                        event: Some(event.clone()),
                    }),
                    trigger: Some(event.clone()),
                });
            }
        }
        out
    }

    fn staff(&self, p: &Person, day: chrono::NaiveDate) -> Recipient {
        self.person(self.directory.standing_in(p, day))
    }

    fn person(&self, p: &Person) -> Recipient {
        Recipient {
            email: p.email.to_string(),
            name: p.name.clone(),
            locale: p.locale.unwrap_or(self.presentation.default_locale),
            person: Some(p.id.clone()),
        }
    }

    fn resolve(&self, a: &Audience, order: &Order, day: chrono::NaiveDate) -> Vec<Recipient> {
        match a {
            Audience::Role(r) => self.directory.with_role(r).map(|p| self.staff(p, day)).collect(),
            Audience::Person(id) => self.directory.person(id).map(|p| self.staff(p, day)).into_iter().collect(),
            Audience::SalesOwner => match &order.sales_owner {
                None => Vec::new(),
                Some(e) => match self.directory.by_email(e.as_str()) {
                    Some(p) => vec![self.staff(p, day)],
                    None => vec![Recipient {
                        email: e.to_string(),
                        name: e.to_string(),
                        locale: self.presentation.default_locale,
                        person: None,
                    }],
                },
            },
            Audience::Approvers | Audience::Department => Vec::new(),
            Audience::Customer => match &order.customer.email {
                None => Vec::new(),
                Some(e) => vec![Recipient {
                    email: e.to_string(),
                    name: order.customer.name.to_string(),
                    locale: order.customer.locale.unwrap_or(self.presentation.default_locale),
                    person: None,
                }],
            },
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotificationsFile {
    #[serde(default)]
    notify: Vec<toml::Spanned<NotifyFile>>,
    /// Scheduled management reports: read by `crate::reports`.
    #[serde(default, rename = "reports")]
    _reports: Vec<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyFile {
    on: String,
    template: String,
    to: Vec<String>,
    #[serde(default)]
    digest: bool,
    link: Option<LinkPurpose>,
}

/// A rule's problems that need other files to see (templates, roles), with its location.
pub(crate) struct Located {
    pub(crate) span: std::ops::Range<usize>,
}

/// Parses the text of `config/notifications.toml` (`path` locates its problems).
/// Checks what the file alone can say; `check` cross-checks templates, roles, people,
/// SMTP and links.
pub(crate) fn parse(
    path: &Path,
    text: &str,
    directory: Arc<Directory>,
    presentation: Presentation,
) -> Result<(Notifications, Vec<Located>), Vec<Diagnostic>> {
    let file: NotificationsFile = toml::from_str(text).map_err(|e| vec![Diagnostic::from_toml(path, text, &e)])?;
    let mut problems = Vec::new();
    let mut rules = Vec::new();
    let mut spans = Vec::new();
    for r in file.notify {
        let span = r.span();
        let r = r.into_inner();
        let mut bad = |m: String| problems.push(Diagnostic::at(path, text, Some(span.clone()), m));
        if !STATE_NAMES.contains(&r.on.as_str()) && !EVENT_NAMES.contains(&r.on.as_str()) {
            bad(format!("notify: `{}` is neither a state nor an event name", r.on));
        }
        let mut to = Vec::new();
        for a in &r.to {
            match a.as_str() {
                "sales_owner" => to.push(Audience::SalesOwner),
                "approvers" => to.push(Audience::Approvers),
                "customer" => to.push(Audience::Customer),
                "department" => to.push(Audience::Department),
                other => match other.split_once(':') {
                    Some(("role", role)) if !role.is_empty() => to.push(Audience::Role(role.to_owned())),
                    Some(("person", id)) if !id.is_empty() => to.push(Audience::Person(id.to_owned())),
                    _ => bad(format!(
                        "notify: `{other}` is not an audience (role:NAME, person:ID, sales_owner, customer, approvers)"
                    )),
                },
            }
        }
        if to.is_empty() {
            bad("notify: `to` names nobody".into());
        }
        spans.push(Located { span });
        rules.push(NotifyRule { on: r.on, template: r.template, to, digest: r.digest, link: r.link });
    }
    if problems.is_empty() { Ok((Notifications { rules, directory, presentation }, spans)) } else { Err(problems) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::lifecycle::RuleHit;
    use crate::engine::screening::Severity;

    fn notifications() -> Notifications {
        let dir = "[[person]]\nid = \"li.na\"\nname = \"李娜\"\nemail = \"li.na@bank.example\"\nroles = [\"sales\"]\n";
        Notifications {
            rules: vec![NotifyRule {
                on: "flagged".into(),
                template: "order_flagged".into(),
                to: vec![Audience::SalesOwner, Audience::Customer],
                digest: false,
                link: None,
            }],
            directory: Arc::new(Directory::parse(Path::new("d.toml"), dir).unwrap()),
            presentation: Presentation::default(),
        }
    }

    fn owned_by(owner: &str) -> Order {
        serde_json::from_value(serde_json::json!({
            "customer": {"id": "C-1", "name": "张伟", "kind": "individual", "email": "zhang.wei@example.com"},
            "product": {"type": "loan", "code": "LN-1"},
            "amount": {"amount": "2000000.00", "currency": "CNY"},
            "sales_owner": owner
        }))
        .unwrap()
    }

    #[test]
    fn screening_details_reach_people_in_the_directory_only() {
        let flagged = OrderEvent::ScreeningFlagged {
            rules_version: "v1".into(),
            fired: vec![RuleHit {
                rule_id: "WATCH".into(),
                severity: Severity::Flag,
                message: "on the watch list".into(),
            }],
            inputs: Default::default(),
        };
        let n = notifications();
        let mails = |owner: &str| {
            n.for_step(Some("flagged"), &flagged, &owned_by(owner), (&OrderState::Flagged, None, None), Utc::now())
                .into_iter()
                .map(|e| e.mail.unwrap())
                .collect::<Vec<_>>()
        };
        let fired = |m: &MailSpec| match &m.event {
            Some(OrderEvent::ScreeningFlagged { fired, .. }) => fired.len(),
            other => panic!("{other:?}"),
        };
        // The owner found in the directory (by mailbox: case and +alias do not matter).
        let known = mails("Li.Na+deals@bank.example");
        assert_eq!(known[0].to.person.as_deref(), Some("li.na"));
        assert_eq!(known[0].to.email, "li.na@bank.example");
        assert_eq!(fired(&known[0]), 1);
        // An owner nobody knows, and the customer: the mail, without the rules that fired.
        let unknown = mails("someone@elsewhere.example");
        assert_eq!(unknown.len(), 2);
        assert!(unknown.iter().all(|m| m.to.person.is_none() && fired(m) == 0), "{unknown:?}");
    }
}
