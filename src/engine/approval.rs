//! Who may approve what: the chain in progress, eligibility (role, delegation,
//! escalation), segregation of duties, and when a level is complete. Pure.
//!
//! A chain is approved level by level. A level names a role, any one of a group of
//! roles, or all of a group; a person approves at most once per chain (four eyes:
//! nobody approves two levels), and the order's sales owner never approves their own
//! order. While a role holder is absent, their delegate may act for them (recorded as
//! on behalf of the holder). A material change to the order voids the approvals given
//! and a new round starts; links from earlier rounds stop working.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::directory::{Directory, Person};
use super::level::Level;
use super::lifecycle::OrderState;
use super::sla::SlaRules;
use crate::domain::Order;

/// The chain an order is going through, and the approvals given so far in this round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalProgress {
    /// Counts chains started on this order; approval links carry it.
    pub(crate) round: u32,
    pub(crate) chain: Vec<Level>,
    #[serde(default)]
    pub(crate) row: String,
    #[serde(default)]
    pub(crate) given: Vec<Given>,
    /// Roles added to a level by escalation (they may approve it too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) escalated: Vec<Escalation>,
    /// When the level now waiting started waiting (SLAs count from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) level_since: Option<DateTime<Utc>>,
    /// Levels whose approvers were reminded in this round.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) reminded: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Escalation {
    pub(crate) level: u8,
    pub(crate) role: String,
    pub(crate) at: DateTime<Utc>,
}

/// A stored due time: a reminder or an escalation of one level of one round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TimerKind {
    Remind,
    Escalate,
    /// An open exception reaches its deadline.
    ExceptionDeadline,
    /// The invoice's due date has passed.
    InvoiceDue,
    /// A dunning step's day (`step` names it).
    Dunning,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub(crate) due: DateTime<Utc>,
    pub(crate) kind: TimerKind,
    pub(crate) level: u8,
    pub(crate) round: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) step: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Given {
    pub(crate) level: u8,
    pub(crate) role: String,
    /// The directory id of who approved (`system` for automatic approvals).
    pub(crate) person: String,
}

/// Why a person may not take a decision. Shown to them as it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("`{0}` is not in the directory")]
    UnknownPerson(String),
    #[error("segregation of duties: {0} is the sales owner of this order and cannot decide on it")]
    OwnOrder(String),
    #[error("{0} already approved this order (level {1}); a person approves once")]
    AlreadyApproved(String, u8),
    #[error("{person} is not an approver of level {level} (it needs: {})", .needs.join(" or "))]
    NotAnApprover { person: String, level: u8, needs: Vec<String> },
    #[error("level {asked} is not the level waiting for a decision (level {current} is)")]
    WrongLevel { asked: u8, current: u8 },
    #[error("the order is not waiting for an approval")]
    NotAwaiting,
    /// Releasing from review needs a route, and the matrix gives none.
    #[error("cannot release: {0}")]
    NoRoute(String),
    #[error("delivery waits for the required tasks still open: {}", .0.join(", "))]
    TasksOpen(Vec<String>),
    #[error("the order has no task `{0}`")]
    UnknownTask(String),
    #[error("task `{0}` is already done")]
    TaskAlreadyDone(String),
    #[error("the order has no open exception")]
    NoException,
    /// A payment that cannot be applied to this order (it goes to the unmatched queue).
    #[error("{0}")]
    PaymentNotApplicable(String),
}

/// A person's right to act at a level: the role they act in, and for whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Standing {
    pub(crate) role: String,
    /// The absent role holder a delegate stands in for.
    pub(crate) on_behalf_of: Option<String>,
}

impl ApprovalProgress {
    pub(crate) fn new(round: u32, chain: Vec<Level>, row: String) -> Self {
        ApprovalProgress {
            round,
            chain,
            row,
            given: Vec::new(),
            escalated: Vec::new(),
            level_since: None,
            reminded: Vec::new(),
        }
    }

    /// The role answerable for `level` now: the last role it was escalated to, else
    /// the level's first open role.
    pub(crate) fn answerable(&self, level: u8) -> Option<String> {
        self.escalated
            .iter()
            .rev()
            .find(|e| e.level == level)
            .map(|e| e.role.clone())
            .or_else(|| self.level(level).and_then(|l| l.missing(&self.approved_roles(level)).first().cloned()))
    }

    /// The reminder and escalation due for the level waiting in `state`.
    pub(crate) fn timers(&self, state: &OrderState, sla: &SlaRules) -> Vec<Timer> {
        let (OrderState::AwaitingApproval { level, .. }, Some(since)) = (state, self.level_since) else {
            return Vec::new();
        };
        let (level, round) = (*level, self.round);
        let Some(role) = self.answerable(level) else { return Vec::new() };
        let mut out = Vec::new();
        let minutes = sla.minutes(&role);
        if !self.reminded.contains(&level) && self.escalated.iter().all(|e| e.level != level) {
            let due =
                sla.calendar.add(since, Duration::minutes(i64::from(minutes) * i64::from(sla.remind_percent) / 100));
            out.push(Timer { due, kind: TimerKind::Remind, level, round, step: String::new() });
        }
        let already: Vec<&str> = self.escalated.iter().filter(|e| e.level == level).map(|e| e.role.as_str()).collect();
        if let Some(to) = sla.escalate_to.get(&role)
            && !already.contains(&to.as_str())
        {
            let base = self.escalated.iter().rev().find(|e| e.level == level).map_or(since, |e| e.at);
            let due = sla.calendar.add(base, Duration::minutes(i64::from(minutes)));
            out.push(Timer { due, kind: TimerKind::Escalate, level, round, step: String::new() });
        }
        out
    }

    pub(crate) fn level(&self, level: u8) -> Option<&Level> {
        self.chain.get(usize::from(level).checked_sub(1)?)
    }

    /// Roles approved at `level` in this round.
    pub(crate) fn approved_roles(&self, level: u8) -> Vec<String> {
        self.given.iter().filter(|g| g.level == level).map(|g| g.role.clone()).collect()
    }

    /// Roles that may still approve `level` (what is missing, plus escalations).
    pub(crate) fn open_roles(&self, level: u8) -> Vec<String> {
        let Some(l) = self.level(level) else { return Vec::new() };
        let mut roles = l.missing(&self.approved_roles(level));
        if !roles.is_empty() {
            for e in self.escalated.iter().filter(|e| e.level == level) {
                if !roles.contains(&e.role) {
                    roles.push(e.role.clone());
                }
            }
        }
        roles
    }

    /// Whether `level` is complete once `role` approves it.
    pub(crate) fn completes(&self, level: u8, role: &str) -> bool {
        let Some(l) = self.level(level) else { return true };
        let mut approved = self.approved_roles(level);
        approved.push(role.to_owned());
        // An escalated role stands for the whole level.
        let escalated = self.escalated.iter().any(|e| e.level == level && e.role == role);
        escalated || l.missing(&approved).is_empty()
    }

    /// The context an approval link carries: valid for this round and level only.
    pub(crate) fn link_context(&self, level: u8) -> String {
        format!("r{}.l{level}", self.round)
    }

    /// May `person_id` decide on `level` of `order` today? Which role, for whom?
    ///
    /// # Errors
    /// The `Refusal` that says why not.
    pub(crate) fn standing(
        &self,
        directory: &Directory,
        order: &Order,
        person_id: &str,
        level: u8,
        today: NaiveDate,
    ) -> Result<Standing, Refusal> {
        let person = directory.person(person_id).ok_or_else(|| Refusal::UnknownPerson(person_id.to_owned()))?;
        if is_sales_owner(directory, person, order) {
            return Err(Refusal::OwnOrder(person.name.clone()));
        }
        if let Some(g) = self.given.iter().find(|g| g.person == person.id) {
            return Err(Refusal::AlreadyApproved(person.name.clone(), g.level));
        }
        let open = self.open_roles(level);
        if let Some(role) = open.iter().find(|r| person.roles.contains(r)) {
            return Ok(Standing { role: role.clone(), on_behalf_of: None });
        }
        // A delegate acting for an absent holder of an open role.
        for role in &open {
            for holder in directory.with_role(role) {
                if holder.id != person.id
                    && holder.is_absent_on(today)
                    && directory.standing_in(holder, today).id == person.id
                    && !is_sales_owner(directory, holder, order)
                {
                    return Ok(Standing { role: role.clone(), on_behalf_of: Some(holder.id.clone()) });
                }
            }
        }
        Err(Refusal::NotAnApprover { person: person.name.clone(), level, needs: open })
    }

    /// Everyone who may decide on `level` today: holders of the open roles (their
    /// delegates while they are absent), without the sales owner and without anyone
    /// who already approved.
    pub(crate) fn approvers<'a>(
        &self,
        directory: &'a Directory,
        order: &Order,
        level: u8,
        today: NaiveDate,
    ) -> Vec<&'a Person> {
        let mut out: Vec<&Person> = Vec::new();
        for role in self.open_roles(level) {
            for holder in directory.with_role(&role) {
                let p = directory.standing_in(holder, today);
                let done = self.given.iter().any(|g| g.person == p.id);
                if !done && !is_sales_owner(directory, p, order) && !out.iter().any(|o| o.id == p.id) {
                    out.push(p);
                }
            }
        }
        out
    }
}

/// Segregation of duties compares mailboxes, not text: `Li.Na+x@bank.example` is
/// li.na's own order (see `Directory::mailbox`).
fn is_sales_owner(directory: &Directory, p: &Person, order: &Order) -> bool {
    order.sales_owner.as_ref().is_some_and(|e| directory.same_mailbox(e.as_str(), p.email.as_str()))
}

/// Fields whose change voids the approvals given (and starts a new round).
pub(crate) fn is_material(field: &str) -> bool {
    const CONTACT: &[&str] = &["customer.email", "customer.phone", "customer.locale"];
    if CONTACT.iter().any(|c| field == *c || field.starts_with(&format!("{c}."))) {
        return false;
    }
    ["amount", "product", "customer", "term_months", "sales_owner"]
        .iter()
        .any(|m| field == *m || field.starts_with(&format!("{m}.")))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const DIR: &str = r#"
[[person]]
id = "li.na"
name = "李娜"
email = "li.na@bank.example"
roles = ["sales", "line_supervisor"]

[[person]]
id = "wang.fang"
name = "王芳"
email = "wang.fang@bank.example"
roles = ["line_supervisor"]
delegate = "zhao.lei"
absent = [{ from = 2026-12-01, to = 2026-12-05 }]

[[person]]
id = "zhao.lei"
name = "赵磊"
email = "zhao.lei@bank.example"
roles = ["branch_manager"]

[[person]]
id = "chen.jing"
name = "陈静"
email = "chen.jing@bank.example"
roles = ["risk_officer"]

[[person]]
id = "sun.li"
name = "孙丽"
email = "sun.li@bank.example"
roles = ["compliance_officer"]
"#;

    fn dir() -> Directory {
        Directory::parse(Path::new("d.toml"), DIR).unwrap()
    }

    fn order() -> Order {
        serde_json::from_value(serde_json::json!({
            "customer": {"id": "C-1", "name": "张伟", "kind": "individual", "kyc_verified": true},
            "product": {"type": "loan", "code": "LN-1"},
            "amount": {"amount": "2000000.00", "currency": "CNY"},
            "sales_owner": "li.na@bank.example"
        }))
        .unwrap()
    }

    fn progress() -> ApprovalProgress {
        ApprovalProgress::new(
            1,
            vec![
                Level::Role("line_supervisor".into()),
                Level::All { all: vec!["risk_officer".into(), "compliance_officer".into()] },
            ],
            "R".into(),
        )
    }

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn the_sales_owner_never_approves_their_own_order() {
        let e = progress().standing(&dir(), &order(), "li.na", 1, day("2026-11-30")).unwrap_err();
        assert!(matches!(e, Refusal::OwnOrder(_)), "{e}");
        assert!(e.to_string().contains("segregation of duties"));
        let d = dir();
        let approvers: Vec<&str> =
            progress().approvers(&d, &order(), 1, day("2026-11-30")).iter().map(|p| p.id.as_str()).collect();
        assert_eq!(approvers, ["wang.fang"], "li.na holds the role but owns the order");
    }

    #[test]
    fn the_sales_owner_is_recognised_by_mailbox_not_by_text() {
        let owned_by = |owner: &str| {
            let mut o = order();
            o.sales_owner = Some(owner.parse().unwrap());
            o
        };
        let today = day("2026-11-30");
        for alias in ["LI.NA@BANK.EXAMPLE", "li.na+deals@bank.example", "Li.Na+x+y@Bank.Example"] {
            let e = progress().standing(&dir(), &owned_by(alias), "li.na", 1, today).unwrap_err();
            assert!(matches!(e, Refusal::OwnOrder(_)), "{alias}: {e}");
            let d = dir();
            let approvers: Vec<&str> =
                progress().approvers(&d, &owned_by(alias), 1, today).iter().map(|p| p.id.as_str()).collect();
            assert_eq!(approvers, ["wang.fang"], "{alias}");
        }
        // Where the mail system keeps `+` as part of the name, it is another mailbox.
        let strict = Directory::parse(Path::new("d.toml"), &format!("plus_alias_domains = []\n{DIR}")).unwrap();
        assert!(progress().standing(&strict, &owned_by("li.na+deals@bank.example"), "li.na", 1, today).is_ok());
        assert!(progress().standing(&strict, &owned_by("LI.NA@bank.example"), "li.na", 1, today).is_err());
        let listed =
            Directory::parse(Path::new("d.toml"), &format!("plus_alias_domains = [\"bank.example\"]\n{DIR}")).unwrap();
        assert!(progress().standing(&listed, &owned_by("li.na+deals@bank.example"), "li.na", 1, today).is_err());
        assert_eq!(listed.mailbox("li.na+x@other.example"), "li.na+x@other.example");
    }

    #[test]
    fn a_delegate_acts_for_an_absent_holder_only_while_absent() {
        let p = progress();
        let e = p.standing(&dir(), &order(), "zhao.lei", 1, day("2026-11-30")).unwrap_err();
        assert!(matches!(e, Refusal::NotAnApprover { .. }), "{e}");
        let s = p.standing(&dir(), &order(), "zhao.lei", 1, day("2026-12-02")).unwrap();
        assert_eq!(s, Standing { role: "line_supervisor".into(), on_behalf_of: Some("wang.fang".into()) });
        let d = dir();
        let ids: Vec<&str> = p.approvers(&d, &order(), 1, day("2026-12-02")).iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["zhao.lei"]);
    }

    #[test]
    fn an_all_of_level_needs_each_role_and_nobody_approves_twice() {
        let mut p = progress();
        p.given.push(Given { level: 1, role: "line_supervisor".into(), person: "wang.fang".into() });
        assert!(!p.completes(2, "risk_officer"));
        let s = p.standing(&dir(), &order(), "chen.jing", 2, day("2026-11-30")).unwrap();
        assert_eq!(s.role, "risk_officer");
        p.given.push(Given { level: 2, role: "risk_officer".into(), person: "chen.jing".into() });
        assert_eq!(p.open_roles(2), ["compliance_officer"]);
        let e = p.standing(&dir(), &order(), "chen.jing", 2, day("2026-11-30")).unwrap_err();
        assert!(matches!(e, Refusal::AlreadyApproved(_, 2)), "{e}");
        let e = p.standing(&dir(), &order(), "wang.fang", 2, day("2026-11-30")).unwrap_err();
        assert!(matches!(e, Refusal::AlreadyApproved(_, 1)), "four eyes: {e}");
        assert!(p.completes(2, "compliance_officer"));
        assert!(matches!(p.standing(&dir(), &order(), "nobody", 2, day("2026-11-30")), Err(Refusal::UnknownPerson(_))));
    }

    #[test]
    fn an_any_of_level_is_complete_with_one_and_escalation_adds_a_role() {
        let mut p = ApprovalProgress::new(
            1,
            vec![Level::Any { any: vec!["risk_officer".into(), "compliance_officer".into()] }],
            "R".into(),
        );
        assert!(p.completes(1, "compliance_officer"));
        assert!(p.standing(&dir(), &order(), "zhao.lei", 1, day("2026-11-30")).is_err());
        p.escalated.push(Escalation { level: 1, role: "branch_manager".into(), at: chrono::Utc::now() });
        assert_eq!(p.standing(&dir(), &order(), "zhao.lei", 1, day("2026-11-30")).unwrap().role, "branch_manager");
        assert!(p.completes(1, "branch_manager"));
    }

    #[test]
    fn material_fields() {
        for f in [
            "amount.amount",
            "product.code",
            "customer.name",
            "customer.id_document.number",
            "term_months",
            "sales_owner",
        ] {
            assert!(is_material(f), "{f}");
        }
        for f in ["customer.email", "customer.phone", "need", "placed_at"] {
            assert!(!is_material(f), "{f}");
        }
    }
}
