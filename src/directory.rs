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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectoryFile {
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
        let dir = Directory { people };
        for (id, person) in &dir.people {
            let at = |m: String| Diagnostic::at(path, text, spans.get(id).cloned(), m);
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

    pub fn by_email(&self, email: &str) -> Option<&Person> {
        self.people.values().find(|p| p.email.as_str().eq_ignore_ascii_case(email))
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
