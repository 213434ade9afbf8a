//! Scheduled management reports: the `[[reports]]` tables of
//! `config/notifications.toml` (who hears about what, and when), parsed with each
//! problem at its `file:line`, and who each one is addressed to. The cross-checks
//! against the directory and the mail settings are `config::references`; the
//! scheduler's step is `orders::reports`; what the mail shows is `analytics::brief`.

use std::ops::Range;
use std::path::Path;

use serde::Deserialize;

use crate::analytics::period::{Period, Span};
use crate::diagnostics::Diagnostic;
use crate::domain::OrderId;
use crate::engine::directory::Directory;
use crate::engine::notify::Recipient;
use crate::locale::Locale;
use crate::schedule::Cron;
use crate::store::EffectId;

/// Who a report goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Audience {
    Role(String),
    Person(String),
}

/// One `[[reports]]` entry.
#[derive(Clone, Debug)]
pub(crate) struct ReportSpec {
    /// Unique; names the report in the log, its job state and its mail's key.
    pub(crate) name: String,
    /// When it is sent: five-field cron in the site's time zone.
    pub(crate) schedule: Cron,
    /// The cron text as written (a changed schedule recomputes the stored due time).
    pub(crate) schedule_text: String,
    pub(crate) audience: Vec<Audience>,
    /// The period before the one the due time falls in.
    pub(crate) period: Period,
    pub(crate) period_text: String,
    /// The mail's language (every recipient reads the same report).
    pub(crate) locale: Option<Locale>,
}

/// Where each report is in its file, for the cross-checks.
#[derive(Clone, Debug)]
pub(crate) struct Located {
    pub(crate) span: Range<usize>,
}

#[derive(Debug, Deserialize)]
struct File {
    #[serde(default)]
    reports: Vec<toml::Spanned<ReportFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportFile {
    name: toml::Spanned<String>,
    schedule: toml::Spanned<String>,
    audience: toml::Spanned<Vec<String>>,
    period: toml::Spanned<String>,
    #[serde(default)]
    locale: Option<toml::Spanned<String>>,
}

/// Loads the `[[reports]]` of `config/notifications.toml` (missing file: none).
pub(crate) fn load(config_dir: &Path) -> Result<(Vec<ReportSpec>, Vec<Located>), Vec<Diagnostic>> {
    let path = crate::notifications::path(config_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((Vec::new(), Vec::new())),
        Err(e) => Err(vec![Diagnostic::file(&path, format!("cannot read: {e}"))]),
    }
}

/// Parses the `[[reports]]` tables of the text of `config/notifications.toml`.
///
/// # Errors
/// Every problem, at the value it is about: a malformed entry or cron expression, an
/// unknown period, locale or audience, a name used twice.
pub(crate) fn parse(path: &Path, text: &str) -> Result<(Vec<ReportSpec>, Vec<Located>), Vec<Diagnostic>> {
    let file: File = toml::from_str(text).map_err(|e| vec![Diagnostic::from_toml(path, text, &e)])?;
    let mut problems = Vec::new();
    let mut out = Vec::new();
    let mut spans = Vec::new();
    for r in file.reports {
        let span = r.span();
        let r = r.into_inner();
        let mut bad =
            |at: Range<usize>, m: String| problems.push(Diagnostic::at(path, text, Some(at), format!("reports: {m}")));
        let name = r.name.get_ref().trim().to_owned();
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid {
            bad(r.name.span(), format!("name `{name}`: use 1 to 64 of a-z, 0-9, `-` and `_`"));
        } else if out.iter().any(|o: &ReportSpec| o.name == name) {
            bad(r.name.span(), format!("name `{name}` is used twice"));
        }
        let schedule = crate::schedule::from_config(None, Some(r.schedule.get_ref()), 60)
            .map_err(|e| bad(r.schedule.span(), format!("schedule: {e}")))
            .ok()
            .and_then(|s| match s {
                crate::schedule::Schedule::Cron(c) => Some(c),
                crate::schedule::Schedule::Every(_) => None,
            });
        let period =
            r.period.get_ref().parse::<Period>().map_err(|e| bad(r.period.span(), format!("period: {e}"))).ok();
        let locale = match &r.locale {
            None => None,
            Some(l) => match l.get_ref().parse::<Locale>() {
                Ok(l) => Some(l),
                Err(_) => {
                    bad(l.span(), format!("locale: `{}` is not one of zh-CN, en", l.get_ref()));
                    None
                }
            },
        };
        let mut audience = Vec::new();
        for a in r.audience.get_ref() {
            match a.split_once(':') {
                Some(("role", role)) if !role.is_empty() => audience.push(Audience::Role(role.to_owned())),
                Some(("person", id)) if !id.is_empty() => audience.push(Audience::Person(id.to_owned())),
                _ => bad(r.audience.span(), format!("audience: `{a}` is not role:NAME or person:ID")),
            }
        }
        if r.audience.get_ref().is_empty() {
            bad(r.audience.span(), "audience names nobody".into());
        }
        if let (Some(schedule), Some(period)) = (schedule, period) {
            out.push(ReportSpec {
                name,
                schedule,
                schedule_text: r.schedule.into_inner(),
                audience,
                period,
                period_text: r.period.into_inner(),
                locale,
            });
            spans.push(Located { span });
        }
    }
    if problems.is_empty() { Ok((out, spans)) } else { Err(problems) }
}

impl ReportSpec {
    /// Everyone the report goes to, each once, in the report's language (or, without
    /// one, `default`). Reports are for reading, not acting: an absent person still
    /// gets theirs, no delegate stands in.
    pub(crate) fn recipients(&self, directory: &Directory, default: Locale) -> Vec<Recipient> {
        let mut out: Vec<Recipient> = Vec::new();
        let people = self.audience.iter().flat_map(|a| -> Vec<_> {
            match a {
                Audience::Role(r) => directory.with_role(r).collect(),
                Audience::Person(id) => directory.person(id).into_iter().collect(),
            }
        });
        for p in people {
            if out.iter().any(|o| o.person.as_deref() == Some(p.id.as_str())) {
                continue;
            }
            out.push(Recipient {
                email: p.email.to_string(),
                name: p.name.clone(),
                locale: self.locale.or(p.locale).unwrap_or(default),
                person: Some(p.id.clone()),
            });
        }
        out
    }

    /// The single-use key of this report's mail for `span`: spent by the step that
    /// queues it, so each period is sent once, across restarts and daemons.
    pub(crate) fn once_key(&self, span: &Span) -> String {
        format!("report:{}:{}", self.name, span.first_day)
    }

    /// The mail effect's id for `span`: the same every time it is computed (no order;
    /// `seq` is the period's first day, `index` from the name, never 0, the digests').
    pub(crate) fn effect_id(&self, span: &Span) -> EffectId {
        let days = span.first_day.signed_duration_since(chrono::NaiveDate::default()).num_days();
        EffectId { order_id: OrderId::nil(), seq: u32::try_from(days).unwrap_or(0), index: name_index(&self.name) }
    }
}

/// A stable number from 1 to 65535 for a report's name (FNV-1a, folded).
fn name_index(name: &str) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    u16::try_from(h % 65535).unwrap_or(0) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[notify]]
on = "received"
template = "order_received"
to = ["customer"]

[[reports]]
name = "weekly"
schedule = "0 8 * * MON"
audience = ["role:management", "person:li.na"]
period = "previous_week"
locale = "en"
"#;

    #[test]
    fn a_report_entry_parses_beside_the_notification_rules() {
        let (reports, spans) = parse(Path::new("n.toml"), GOOD).unwrap();
        assert_eq!(reports.len(), 1);
        let r = &reports[0];
        assert_eq!((r.name.as_str(), r.period, r.locale), ("weekly", Period::Week, Some(Locale::En)));
        assert_eq!(r.audience, [Audience::Role("management".into()), Audience::Person("li.na".into())]);
        // Cross-check problems point at the entry's header.
        assert_eq!(&GOOD[spans[0].span.clone()], "[[reports]]");
        assert_ne!(r.effect_id(&Period::Week.before(chrono::Utc::now(), chrono_tz::UTC)).index, 0);
    }

    #[test]
    fn each_bad_value_is_reported_at_its_line() {
        let text = r#"
[[reports]]
name = "Weekly!"
schedule = "0 8 * *"
audience = ["management"]
period = "last_week"
locale = "fr"

[[reports]]
name = "daily"
schedule = "0 7 * * *"
audience = ["role:management"]
period = "previous_day"

[[reports]]
name = "daily"
schedule = "0 7 * * *"
audience = []
period = "previous_day"
"#;
        let problems = parse(Path::new("n.toml"), text).unwrap_err();
        let got: Vec<(usize, String)> = problems.iter().map(|d| (d.line, d.message.clone())).collect();
        let want = [
            (3, "name `Weekly!`"),
            (4, "schedule: `0 8 * *` is not a cron expression"),
            (6, "period: `last_week` is not a period"),
            (7, "locale: `fr`"),
            (5, "audience: `management` is not role:NAME"),
            (16, "name `daily` is used twice"),
            (18, "audience names nobody"),
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for ((line, message), (want_line, want_text)) in got.iter().zip(want) {
            assert_eq!(*line, want_line, "{message}");
            assert!(message.starts_with(&format!("reports: {want_text}")), "{message}");
        }
        let unknown = "[[reports]]\nname = \"x\"\nschedule = \"0 8 * * *\"\naudience = [\"role:a\"]\nperiod = \"previous_day\"\nto = 1\n";
        let e = parse(Path::new("n.toml"), unknown).unwrap_err();
        assert_eq!(e[0].line, 6, "{e:?}");
    }
}
