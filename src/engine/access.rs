//! Who may do what: the principal behind a request, the actions of the policy table,
//! and `authorize`, the one place that answers "may this principal take this
//! action?". Pure data and one function; the HTTP layer finds the principal (a
//! session, a token, the bootstrap admin token, a mailed link) and asks here.
//!
//! The policy table maps directory roles to actions (`[policy]` in
//! `config/directory.toml`). A person may take an action when one of their roles is
//! granted it (a personal token narrows that further to its scopes); an API client
//! only within its scopes; the bootstrap admin token may take every action but
//! acts as nobody in the directory, so it can never decide an approval (those checks
//! stay in `approval`: level waiting, role, delegate, four eyes, own order).

use serde::{Deserialize, Serialize};

use super::directory::Directory;
use super::lifecycle::Actor;
pub use super::policy::{Action, Policy};

/// Through which door a principal acts; recorded in the audit next to the actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// The admin API, with a token.
    Api,
    /// The signed-in console.
    Console,
    /// A page opened from a signed link in mail.
    MailLink,
    /// The command line on the store itself.
    Cli,
}

/// Who is acting, as established once per request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A person of the directory: signed in, or with a personal token (`scopes`
    /// narrows what their roles allow; `None`: all of it).
    Person { id: String, scopes: Option<Vec<Action>>, channel: Channel },
    /// An API client (an integration) with its token's scopes.
    Client { name: String, scopes: Vec<Action> },
    /// The bootstrap admin token (`server.admin_token`), named in the audit.
    Admin { name: String },
    /// Whoever holds a signed link from mail: acts as the link's subject, for the
    /// link's one purpose (the pages check that themselves).
    LinkHolder { subject: String },
}

impl Principal {
    /// The actor the audit records for this principal.
    pub fn actor(&self) -> Actor {
        match self {
            Principal::Person { id, .. } | Principal::LinkHolder { subject: id } => Actor::Person(id.clone()),
            Principal::Client { name, .. } => Actor::Person(format!("client:{name}")),
            Principal::Admin { name } => Actor::Person(format!("admin:{name}")),
        }
    }

    pub fn channel(&self) -> Channel {
        match self {
            Principal::Person { channel, .. } => *channel,
            Principal::Client { .. } | Principal::Admin { .. } => Channel::Api,
            Principal::LinkHolder { .. } => Channel::MailLink,
        }
    }

    /// The directory person acting, if any.
    pub fn person(&self) -> Option<&str> {
        match self {
            Principal::Person { id, .. } | Principal::LinkHolder { subject: id } => Some(id),
            Principal::Client { .. } | Principal::Admin { .. } => None,
        }
    }

    /// The actor and channel together, for the application layer.
    pub fn acting(&self) -> Acting {
        Acting { actor: self.actor(), channel: Some(self.channel()) }
    }
}

/// Who acts and through which door, as a step records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acting {
    pub actor: Actor,
    pub channel: Option<Channel>,
}

impl From<Actor> for Acting {
    fn from(actor: Actor) -> Self {
        Acting { actor, channel: None }
    }
}

/// Why a principal may not take an action. Shown to them as it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("{who} may not {}: none of their roles ({roles}) is granted `{}` in the policy table", .action.name(), .action.name())]
    NotGranted { who: String, roles: String, action: Action },
    #[error("this token may not {}: its scopes do not include `{}`", .action.name(), .action.name())]
    OutOfScope { action: Action },
    #[error("`{0}` is not in the directory")]
    Unknown(String),
    #[error("a signed link is good for its own page only")]
    LinkOnly,
}

/// Whether `principal` may take `action` under `policy`, with roles from `directory`.
///
/// # Errors
/// `Denied`, saying which grant or scope is missing.
pub fn authorize(principal: &Principal, action: Action, policy: &Policy, directory: &Directory) -> Result<(), Denied> {
    match principal {
        Principal::Admin { .. } => Ok(()),
        Principal::Client { scopes, .. } => {
            if scopes.contains(&action) {
                Ok(())
            } else {
                Err(Denied::OutOfScope { action })
            }
        }
        Principal::LinkHolder { .. } => Err(Denied::LinkOnly),
        Principal::Person { id, scopes, .. } => {
            let person = directory.person(id).ok_or_else(|| Denied::Unknown(id.clone()))?;
            if !policy.actions_of(&person.roles).any(|a| a == action) {
                return Err(Denied::NotGranted { who: id.clone(), roles: person.roles.join(", "), action });
            }
            match scopes {
                Some(s) if !s.contains(&action) => Err(Denied::OutOfScope { action }),
                _ => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::directory::{Person, PlusAliases};
    use crate::engine::policy::ACTIONS;
    use std::collections::BTreeMap;

    fn directory() -> Directory {
        let person = |id: &str, roles: &[&str]| Person {
            id: id.into(),
            name: id.into(),
            email: format!("{id}@bank.example").parse().unwrap(),
            locale: None,
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            delegate: None,
            absent: Vec::new(),
            digest_every: None,
        };
        let people = [person("wang.fang", &["line_supervisor"]), person("sun.li", &["operations"])];
        Directory::new(people.into_iter().map(|p| (p.id.clone(), p)).collect(), PlusAliases::Everywhere)
    }

    fn policy() -> Policy {
        Policy::new(BTreeMap::from([
            ("line_supervisor".to_owned(), vec![Action::DecideApproval]),
            ("operations".to_owned(), vec![Action::RecordDelivery, Action::TakeAcceptance]),
        ]))
    }

    #[test]
    fn people_act_through_their_roles_and_tokens_within_their_scopes() {
        let (p, d) = (policy(), directory());
        let wang = Principal::Person { id: "wang.fang".into(), scopes: None, channel: Channel::Console };
        assert_eq!(authorize(&wang, Action::DecideApproval, &p, &d), Ok(()));
        let Err(e) = authorize(&wang, Action::RecordDelivery, &p, &d) else { panic!() };
        assert_eq!(
            e.to_string(),
            "wang.fang may not record_delivery: none of their roles (line_supervisor) is granted `record_delivery` in the policy table"
        );
        // A personal token narrows, never widens.
        let sun = Principal::Person {
            id: "sun.li".into(),
            scopes: Some(vec![Action::TakeAcceptance]),
            channel: Channel::Api,
        };
        assert_eq!(authorize(&sun, Action::TakeAcceptance, &p, &d), Ok(()));
        assert_eq!(
            authorize(&sun, Action::RecordDelivery, &p, &d),
            Err(Denied::OutOfScope { action: Action::RecordDelivery })
        );
        let wide =
            Principal::Person { id: "sun.li".into(), scopes: Some(vec![Action::Administer]), channel: Channel::Api };
        assert!(matches!(authorize(&wide, Action::Administer, &p, &d), Err(Denied::NotGranted { .. })));
        let ghost = Principal::Person { id: "ghost".into(), scopes: None, channel: Channel::Console };
        assert_eq!(authorize(&ghost, Action::DecideApproval, &p, &d), Err(Denied::Unknown("ghost".into())));
    }

    #[test]
    fn clients_have_scopes_the_admin_token_everything_and_links_nothing_here() {
        let (p, d) = (policy(), directory());
        let erp = Principal::Client { name: "erp".into(), scopes: vec![Action::RecordDelivery] };
        assert_eq!(authorize(&erp, Action::RecordDelivery, &p, &d), Ok(()));
        assert_eq!(authorize(&erp, Action::SeeReports, &p, &d), Err(Denied::OutOfScope { action: Action::SeeReports }));
        let admin = Principal::Admin { name: "bootstrap".into() };
        assert!(ACTIONS.iter().all(|a| authorize(&admin, *a, &p, &d).is_ok()));
        assert_eq!(admin.actor(), Actor::Person("admin:bootstrap".into()));
        let link = Principal::LinkHolder { subject: "wang.fang".into() };
        assert_eq!(authorize(&link, Action::DecideApproval, &p, &d), Err(Denied::LinkOnly));
        assert_eq!(link.channel(), Channel::MailLink);
    }

    #[test]
    fn action_names_round_trip() {
        for a in ACTIONS {
            assert_eq!(a.name().parse::<Action>(), Ok(a));
        }
        assert!("approve".parse::<Action>().unwrap_err().contains("unknown action `approve` (one of: decide_approval"));
    }
}
