//! The people the daemon writes to: `config/directory.toml`.
//!
//! Each person has an id, a name, an e-mail address, a locale and roles; optionally a
//! delegate who stands in while they are absent, and a digest cadence (their routine
//! notifications arrive as one summary every so often instead of one mail each).
//! The approval workflow resolves roles to people through the same file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDate;
use serde::Deserialize;

use crate::diagnostics::Diagnostic;
use crate::domain::order::{Email, Locale};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub id: String,
    pub name: String,
    pub email: Email,
    pub locale: Option<Locale>,
    pub roles: Vec<String>,
    pub delegate: Option<String>,
    /// Inclusive date ranges, in the configured time zone.
    pub absent: Vec<(NaiveDate, NaiveDate)>,
    pub digest_every: Option<Duration>,
}

impl Person {
    pub fn is_absent_on(&self, day: NaiveDate) -> bool {
        self.absent.iter().any(|(from, to)| *from <= day && day <= *to)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Directory {
    people: BTreeMap<String, Person>,
    plus_aliases: PlusAliases,
}

/// Where `name+anything@domain` is the mailbox `name@domain` (plus addressing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PlusAliases {
    /// At every domain (the default: most mail systems deliver plus addresses so).
    #[default]
    Everywhere,
    /// Only at these domains (lower case); none: a `+` is part of the mailbox name.
    Domains(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectoryFile {
    /// Domains whose mail system delivers `name+tag@domain` to `name@domain`; `"*"`
    /// (the default) for every domain, `[]` for none.
    plus_alias_domains: Option<toml::Spanned<Vec<String>>>,
    #[serde(default)]
    person: Vec<toml::Spanned<PersonFile>>,
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
pub fn parse_duration(s: &str) -> Result<Duration, String> {
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

pub fn path(config_dir: &Path) -> PathBuf {
    config_dir.join("config").join("directory.toml")
}

impl Directory {
    /// Loads `config/directory.toml`; a missing file is an empty directory.
    ///
    /// # Errors
    /// Every problem, located: bad e-mail or locale, duplicate id, unknown delegate,
    /// delegation cycle, absence ending before it starts, bad digest cadence.
    pub fn load(config_dir: &Path) -> Result<Directory, Vec<Diagnostic>> {
        let path = path(config_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Directory::default()),
            Err(e) => return Err(vec![Diagnostic::file(&path, format!("cannot read: {e}"))]),
        };
        Directory::parse(&path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Directory, Vec<Diagnostic>> {
        let file: DirectoryFile = toml::from_str(text).map_err(|e| vec![Diagnostic::from_toml(path, text, &e)])?;
        let mut problems = Vec::new();
        let plus_aliases = match &file.plus_alias_domains {
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
                        problems.push(Diagnostic::at(
                            path,
                            text,
                            Some(list.span()),
                            format!("plus_alias_domains: `{d}` is not a mail domain (e.g. \"bank.example\") or \"*\""),
                        ));
                    }
                }
                PlusAliases::Domains(domains)
            }
        };
        let mut people = BTreeMap::new();
        let mut spans = BTreeMap::new();
        for p in file.person {
            let span = p.span();
            let p = p.into_inner();
            let mut bad = |m: String| problems.push(Diagnostic::at(path, text, Some(span.clone()), m));
            let email = match p.email.parse::<Email>() {
                Ok(e) => e,
                Err(e) => {
                    bad(format!("person `{}`: email {e}", p.id));
                    continue;
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
                continue;
            }
            spans.insert(p.id.clone(), span.clone());
            let person = Person {
                id: p.id.clone(),
                name: p.name,
                email,
                locale,
                roles: p.roles,
                delegate: p.delegate,
                absent: p.absent.iter().map(|a| (a.from, a.to)).collect(),
                digest_every,
            };
            if people.insert(p.id.clone(), person).is_some() {
                bad(format!("person id `{}` is used twice", p.id));
            }
        }
        let dir = Directory { people, plus_aliases };
        let mut mailboxes: BTreeMap<String, &str> = BTreeMap::new();
        for (id, person) in &dir.people {
            let at = |m: String| Diagnostic::at(path, text, spans.get(id).cloned(), m);
            // One mailbox, one person: otherwise who owns an order would be ambiguous.
            if let Some(other) = mailboxes.insert(dir.mailbox(person.email.as_str()), id) {
                problems.push(at(format!(
                    "person `{id}`: {} is the same mailbox as person `{other}`'s {} (addresses compare without case{})",
                    person.email,
                    dir.people[other].email,
                    if dir.plus_aliases == PlusAliases::Domains(Vec::new()) { "" } else { " and +alias" }
                )));
            }
            if let Some(d) = &person.delegate {
                if !dir.people.contains_key(d) {
                    problems.push(at(format!("person `{id}`: delegate `{d}` is not in the directory")));
                } else if dir.delegation_cycles(id) {
                    problems.push(at(format!("person `{id}`: delegation goes round in a circle")));
                }
            }
        }
        if problems.is_empty() { Ok(dir) } else { Err(problems) }
    }

    fn delegation_cycles(&self, start: &str) -> bool {
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

    pub fn person(&self, id: &str) -> Option<&Person> {
        self.people.get(id)
    }

    /// The mailbox an address delivers to, for comparing addresses: lower case, and
    /// without a `+tag` where `plus_alias_domains` says the domain strips it
    /// (`Li.Na+deals@Bank.Example` → `li.na@bank.example`).
    pub fn mailbox(&self, email: &str) -> String {
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
    pub fn same_mailbox(&self, a: &str, b: &str) -> bool {
        self.mailbox(a) == self.mailbox(b)
    }

    /// The person whose address is the same mailbox as `email`.
    pub fn by_email(&self, email: &str) -> Option<&Person> {
        let wanted = self.mailbox(email);
        self.people.values().find(|p| self.mailbox(p.email.as_str()) == wanted)
    }

    /// Everyone holding `role`, in id order.
    pub fn with_role<'a, 'r>(&'a self, role: &'r str) -> impl Iterator<Item = &'a Person> + use<'a, 'r> {
        self.people.values().filter(move |p| p.roles.iter().any(|r| r == role))
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.with_role(role).next().is_some()
    }

    /// Who acts for `person` on `day`: the person, or (while absent) their delegate,
    /// following the chain. Cycles are refused at load, so this ends.
    pub fn standing_in<'a>(&'a self, person: &'a Person, day: NaiveDate) -> &'a Person {
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

    pub fn len(&self) -> usize {
        self.people.len()
    }

    pub fn is_empty(&self) -> bool {
        self.people.is_empty()
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
