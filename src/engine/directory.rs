//! The people the daemon writes to, as data: each person's address, locale, roles,
//! delegate, absences and digest cadence, and the lookups the engine needs (who holds
//! a role, who stands in for whom, which mailbox an address is). Loading
//! `config/directory.toml` lives in `crate::directory`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::NaiveDate;

use crate::domain::order::{Email, Locale};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Person {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) email: Email,
    pub(crate) locale: Option<Locale>,
    pub(crate) roles: Vec<String>,
    pub(crate) delegate: Option<String>,
    /// Inclusive date ranges, in the configured time zone.
    pub(crate) absent: Vec<(NaiveDate, NaiveDate)>,
    pub(crate) digest_every: Option<Duration>,
}

impl Person {
    pub(crate) fn is_absent_on(&self, day: NaiveDate) -> bool {
        self.absent.iter().any(|(from, to)| *from <= day && day <= *to)
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Directory {
    people: BTreeMap<String, Person>,
    plus_aliases: PlusAliases,
    /// Which roles may take which actions (`[policy]`).
    policy: super::policy::Policy,
}

/// Where `name+anything@domain` is the mailbox `name@domain` (plus addressing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum PlusAliases {
    /// At every domain (the default: most mail systems deliver plus addresses so).
    #[default]
    Everywhere,
    /// Only at these domains (lower case); none: a `+` is part of the mailbox name.
    Domains(Vec<String>),
}

impl Directory {
    /// A directory of these people (by id) and plus-alias rule; the loader checks them.
    pub(crate) fn new(people: BTreeMap<String, Person>, plus_aliases: PlusAliases) -> Self {
        Directory { people, plus_aliases, policy: super::policy::Policy::default() }
    }

    /// The same directory with its policy table.
    pub(crate) fn with_policy(self, policy: super::policy::Policy) -> Self {
        Directory { policy, ..self }
    }

    pub(crate) fn policy(&self) -> &super::policy::Policy {
        &self.policy
    }

    /// Everyone, in id order.
    pub(crate) fn people(&self) -> impl Iterator<Item = &Person> {
        self.people.values()
    }

    pub(crate) fn plus_aliases(&self) -> &PlusAliases {
        &self.plus_aliases
    }

    /// Whether following delegates from `start` comes back to `start`.
    pub(crate) fn delegation_cycles(&self, start: &str) -> bool {
        let mut cur = start;
        for _ in 0..=self.people.len() {
            match self.people.get(cur).and_then(|p| p.delegate.as_deref()) {
                Some(next) if next == start => return true,
                Some(next) => cur = next,
                None => return false,
            }
        }
        true
    }

    pub(crate) fn person(&self, id: &str) -> Option<&Person> {
        self.people.get(id)
    }

    /// The mailbox an address delivers to, for comparing addresses: lower case, and
    /// without a `+tag` where `plus_alias_domains` says the domain strips it
    /// (`Li.Na+deals@Bank.Example` → `li.na@bank.example`).
    pub(crate) fn mailbox(&self, email: &str) -> String {
        let t = email.trim().to_lowercase();
        let Some((local, domain)) = t.rsplit_once('@') else { return t };
        let strips = match &self.plus_aliases {
            PlusAliases::Everywhere => true,
            PlusAliases::Domains(ds) => ds.iter().any(|d| d == domain),
        };
        match local.split_once('+') {
            Some((name, _tag)) if strips && !name.is_empty() => format!("{name}@{domain}"),
            _ => t,
        }
    }

    /// Whether two addresses are one mailbox (see `mailbox`).
    pub(crate) fn same_mailbox(&self, a: &str, b: &str) -> bool {
        self.mailbox(a) == self.mailbox(b)
    }

    /// The person whose address is the same mailbox as `email`.
    pub(crate) fn by_email(&self, email: &str) -> Option<&Person> {
        let wanted = self.mailbox(email);
        self.people.values().find(|p| self.mailbox(p.email.as_str()) == wanted)
    }

    /// Everyone holding `role`, in id order.
    pub(crate) fn with_role<'a, 'r>(&'a self, role: &'r str) -> impl Iterator<Item = &'a Person> + use<'a, 'r> {
        self.people.values().filter(move |p| p.roles.iter().any(|r| r == role))
    }

    pub(crate) fn has_role(&self, role: &str) -> bool {
        self.with_role(role).next().is_some()
    }

    /// Who acts for `person` on `day`: the person, or (while absent) their delegate,
    /// following the chain. Cycles are refused at load, so this ends.
    pub(crate) fn standing_in<'a>(&'a self, person: &'a Person, day: NaiveDate) -> &'a Person {
        let mut cur = person;
        for _ in 0..self.people.len() {
            if !cur.is_absent_on(day) {
                break;
            }
            match cur.delegate.as_deref().and_then(|d| self.people.get(d)) {
                Some(next) => cur = next,
                None => break,
            }
        }
        cur
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.people.is_empty()
    }
}
