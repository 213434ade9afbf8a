//! The people the daemon writes to: `config/directory.toml`.
//!
//! Each person has an id, a name, an e-mail address, a locale and roles; optionally a
//! delegate who stands in while they are absent, and a digest cadence (their routine
//! notifications arrive as one summary every so often instead of one mail each).
//! The approval workflow resolves roles to people through the same file.
//!
//! This module reads and checks the file; the people as data, and the lookups on
//! them, are `crate::engine::directory`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDate;
use serde::Deserialize;

use crate::diagnostics::Diagnostic;
use crate::domain::order::{Email, Locale};
pub(crate) use crate::engine::directory::{Directory, Person, PlusAliases};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectoryFile {
    /// Domains whose mail system delivers `name+tag@domain` to `name@domain`; `"*"`
    /// (the default) for every domain, `[]` for none.
    plus_alias_domains: Option<toml::Spanned<Vec<String>>>,
    #[serde(default)]
    person: Vec<toml::Spanned<PersonFile>>,
    /// The policy table: each role and the actions it grants (`crate::engine::access`).
    #[serde(default)]
    policy: BTreeMap<String, toml::Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PersonFile {
    id: String,
    name: String,
    email: String,
    locale: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    delegate: Option<String>,
    #[serde(default)]
    absent: Vec<AbsenceFile>,
    /// `30m`, `4h`, `1d`: routine mail is gathered into one digest this often.
    digest_every: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AbsenceFile {
    #[serde(deserialize_with = "day")]
    from: NaiveDate,
    #[serde(deserialize_with = "day")]
    to: NaiveDate,
}

/// A TOML date (`2026-12-01`) or a string holding one.
fn day<'de, D: serde::Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
    let v = toml::Value::deserialize(d)?;
    let s = match &v {
        toml::Value::Datetime(dt) => dt.to_string(),
        toml::Value::String(s) => s.clone(),
        other => return Err(serde::de::Error::custom(format!("expected a date like 2026-12-01, got {other}"))),
    };
    s.parse().map_err(|_| serde::de::Error::custom(format!("`{s}` is not a date like 2026-12-01")))
}

/// `90s`, `30m`, `4h`, `1d` → a duration (at least one minute for digests).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration (e.g. 30m, 4h, 1d)");
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(bad()),
    };
    if secs == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(secs))
}

pub(crate) fn path(config_dir: &Path) -> PathBuf {
    config_dir.join("config").join("directory.toml")
}

impl Directory {
    /// Loads `config/directory.toml`; a missing file is an empty directory.
    ///
    /// # Errors
    /// Every problem, located: bad e-mail or locale, duplicate id, unknown delegate,
    /// delegation cycle, absence ending before it starts, bad digest cadence.
    pub(crate) fn load(config_dir: &Path) -> Result<Directory, Vec<Diagnostic>> {
        let path = path(config_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Directory::default()),
            Err(e) => return Err(vec![Diagnostic::file(&path, format!("cannot read: {e}"))]),
        };
        Directory::parse(&path, &text)
    }

    /// Parses the text of a directory file (`path` locates its problems).
    pub(crate) fn parse(path: &Path, text: &str) -> Result<Directory, Vec<Diagnostic>> {
        let file: DirectoryFile = toml::from_str(text).map_err(|e| vec![Diagnostic::from_toml(path, text, &e)])?;
        let mut problems = Vec::new();
        let plus_aliases = plus_aliases(file.plus_alias_domains.as_ref(), &mut |span, m| {
            problems.push(Diagnostic::at(path, text, Some(span), m));
        });
        let mut people = BTreeMap::new();
        let mut spans = BTreeMap::new();
        for p in file.person {
            let span = p.span();
            let p = p.into_inner();
            let mut bad = |m: String| problems.push(Diagnostic::at(path, text, Some(span.clone()), m));
            let Some(person) = person(p, &mut bad) else { continue };
            spans.insert(person.id.clone(), span.clone());
            let id = person.id.clone();
            if people.insert(id.clone(), person).is_some() {
                bad(format!("person id `{id}` is used twice"));
            }
        }
        let policy = policy(&file.policy, &mut |span, m| problems.push(Diagnostic::at(path, text, Some(span), m)));
        let dir = Directory::new(people, plus_aliases).with_policy(policy);
        cross_check(&dir, &mut |id, m| problems.push(Diagnostic::at(path, text, spans.get(id).cloned(), m)));
        if problems.is_empty() { Ok(dir) } else { Err(problems) }
    }
}

/// The `plus_alias_domains` setting; `bad` hears of each entry that is not a domain.
fn plus_aliases(
    list: Option<&toml::Spanned<Vec<String>>>,
    bad: &mut dyn FnMut(std::ops::Range<usize>, String),
) -> PlusAliases {
    match list {
        None => PlusAliases::Everywhere,
        Some(list) if list.get_ref().iter().any(|d| d == "*") => PlusAliases::Everywhere,
        Some(list) => {
            let mut domains = Vec::new();
            for d in list.get_ref() {
                let ok = d.contains('.')
                    && !d.starts_with('.')
                    && !d.ends_with('.')
                    && !d.chars().any(|c| c == '@' || c.is_whitespace() || c.is_control());
                if ok {
                    domains.push(d.to_lowercase());
                } else {
                    bad(
                        list.span(),
                        format!("plus_alias_domains: `{d}` is not a mail domain (e.g. \"bank.example\") or \"*\""),
                    );
                }
            }
            PlusAliases::Domains(domains)
        }
    }
}

/// The `[policy]` table: role → actions; `bad` hears of each unknown action.
fn policy(
    table: &BTreeMap<String, toml::Spanned<Vec<String>>>,
    bad: &mut dyn FnMut(std::ops::Range<usize>, String),
) -> crate::engine::access::Policy {
    let mut grants = BTreeMap::new();
    for (role, actions) in table {
        let mut granted = Vec::new();
        for a in actions.get_ref() {
            match a.parse::<crate::engine::access::Action>() {
                Ok(a) => granted.push(a),
                Err(e) => bad(actions.span(), format!("policy: role `{role}`: {e}")),
            }
        }
        grants.insert(role.clone(), granted);
    }
    crate::engine::access::Policy::new(grants)
}

/// One `[[person]]`, checked on its own; `None` when it cannot be a person at all.
fn person(p: PersonFile, bad: &mut dyn FnMut(String)) -> Option<Person> {
    let email = match p.email.parse::<Email>() {
        Ok(e) => e,
        Err(e) => {
            bad(format!("person `{}`: email {e}", p.id));
            return None;
        }
    };
    let locale = match p.locale.as_deref().map(str::parse::<Locale>) {
        None => None,
        Some(Ok(l)) => Some(l),
        Some(Err(e)) => {
            bad(format!("person `{}`: locale {e}", p.id));
            None
        }
    };
    let digest_every = match p.digest_every.as_deref().map(parse_duration) {
        None => None,
        Some(Ok(d)) if d >= Duration::from_secs(60) => Some(d),
        Some(Ok(_)) => {
            bad(format!("person `{}`: digest_every must be at least 1m", p.id));
            None
        }
        Some(Err(e)) => {
            bad(format!("person `{}`: digest_every {e}", p.id));
            None
        }
    };
    for a in &p.absent {
        if a.to < a.from {
            bad(format!("person `{}`: absence ends ({}) before it starts ({})", p.id, a.to, a.from));
        }
    }
    if p.id.trim().is_empty() || p.name.trim().is_empty() {
        bad("every person needs a non-empty `id` and `name`".into());
        return None;
    }
    Some(Person {
        id: p.id,
        name: p.name,
        email,
        locale,
        roles: p.roles,
        delegate: p.delegate,
        absent: p.absent.iter().map(|a| (a.from, a.to)).collect(),
        digest_every,
    })
}

/// What needs the whole directory: one mailbox per person, delegates that exist and
/// do not go round in a circle. `bad` gets the person's id.
fn cross_check(dir: &Directory, bad: &mut dyn FnMut(&str, String)) {
    let mut mailboxes: BTreeMap<String, &Person> = BTreeMap::new();
    for person in dir.people() {
        let id = person.id.as_str();
        // One mailbox, one person: otherwise who owns an order would be ambiguous.
        if let Some(other) = mailboxes.insert(dir.mailbox(person.email.as_str()), person) {
            bad(
                id,
                format!(
                    "person `{id}`: {} is the same mailbox as person `{}`'s {} (addresses compare without case{})",
                    person.email,
                    other.id,
                    other.email,
                    if *dir.plus_aliases() == PlusAliases::Domains(Vec::new()) { "" } else { " and +alias" }
                ),
            );
        }
        if let Some(d) = &person.delegate {
            if dir.person(d).is_none() {
                bad(id, format!("person `{id}`: delegate `{d}` is not in the directory"));
            } else if dir.delegation_cycles(id) {
                bad(id, format!("person `{id}`: delegation goes round in a circle"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
[[person]]
id = "li.na"
name = "李娜"
email = "li.na@bank.example"
locale = "zh-CN"
roles = ["sales"]
delegate = "wang.fang"
absent = [{ from = 2026-12-01, to = 2026-12-05 }]

[[person]]
id = "wang.fang"
name = "王芳"
email = "wang.fang@bank.example"
roles = ["sales", "line_supervisor"]
digest_every = "4h"
"#;

    #[test]
    fn delegates_stand_in_while_absent() {
        let d = Directory::parse(Path::new("directory.toml"), TEXT).unwrap();
        let li = d.person("li.na").unwrap();
        let day = |s: &str| s.parse::<NaiveDate>().unwrap();
        assert_eq!(d.standing_in(li, day("2026-11-30")).id, "li.na");
        assert_eq!(d.standing_in(li, day("2026-12-01")).id, "wang.fang");
        assert_eq!(d.standing_in(li, day("2026-12-05")).id, "wang.fang");
        assert_eq!(d.with_role("sales").count(), 2);
        assert_eq!(d.by_email("LI.NA@bank.example").unwrap().name, "李娜");
        assert_eq!(d.person("wang.fang").unwrap().digest_every, Some(Duration::from_secs(4 * 3600)));
    }

    #[test]
    fn one_mailbox_is_one_person_and_plus_alias_domains_are_checked() {
        let d = Directory::parse(Path::new("directory.toml"), TEXT).unwrap();
        assert_eq!(d.by_email("Li.Na+deals@Bank.Example").unwrap().id, "li.na");
        let twice = format!("{TEXT}\n[[person]]\nid = \"l2\"\nname = \"L\"\nemail = \"li.na+2@bank.example\"\n");
        let errs = Directory::parse(Path::new("d.toml"), &twice).unwrap_err();
        let m = &errs[0].message;
        assert!(m.contains("is the same mailbox as person") && m.contains("li.na") && m.contains("l2"), "{m}");
        let errs = Directory::parse(Path::new("d.toml"), "plus_alias_domains = [\"bank example\"]\n").unwrap_err();
        assert_eq!(
            errs[0].to_string(),
            "d.toml:1:22: plus_alias_domains: `bank example` is not a mail domain (e.g. \"bank.example\") or \"*\""
        );
    }

    #[test]
    fn problems_are_located() {
        let text = "[[person]]\nid = \"a\"\nname = \"A\"\nemail = \"a@x.example\"\ndelegate = \"b\"\n\n[[person]]\nid = \"b\"\nname = \"B\"\nemail = \"nope\"\n";
        let errs = Directory::parse(Path::new("d.toml"), text).unwrap_err();
        let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(shown.iter().any(|s| s.starts_with("d.toml:7:") && s.contains("person `b`: email")), "{shown:?}");
        assert!(shown.iter().any(|s| s.starts_with("d.toml:1:") && s.contains("delegate `b`")), "{shown:?}");
        let cyc = "[[person]]\nid = \"a\"\nname = \"A\"\nemail = \"a@x.example\"\ndelegate = \"b\"\n[[person]]\nid = \"b\"\nname = \"B\"\nemail = \"b@x.example\"\ndelegate = \"a\"\n";
        let errs = Directory::parse(Path::new("d.toml"), cyc).unwrap_err();
        assert!(errs.iter().any(|e| e.message.contains("circle")));
        assert!(parse_duration("4x").is_err());
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
    }
}
