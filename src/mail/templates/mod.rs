//! Mail templates: `config/templates/<locale>/<name>.txt` and `<locale>/layout.html`.
//!
//! A `.txt` template has two blocks, `subject` (one line) and `body` (plain text,
//! paragraphs separated by a blank line). The HTML alternative is `layout.html`
//! rendered with the same context plus `subject` and `body`; it is auto-escaped, so
//! order data can never inject markup. Rendering is bounded (minijinja's fuel) and so
//! is the output.
//!
//! The scheduled report's mail has templates of its own (`report.rs`).
//!
//! Filters: `money`, `datetime`, `date` (locale and time zone aware), `label` (codes
//! in the reader's words), `paragraphs`, `lines`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State, UndefinedBehavior};

use crate::diagnostics::Diagnostic;
use crate::domain::Money;
use crate::locale::{self, Locale, Presentation};
/// The sample context templates are checked with (see `crate::sample`).
pub use crate::sample::mail_context as sample_context;

/// Every template the workflow may send; each must exist in every locale.
pub const TEMPLATE_NAMES: &[&str] = &[
    "order_received",
    "order_flagged",
    "approval_request",
    "approval_reminder",
    "approval_escalation",
    "info_requested",
    "order_approved",
    "order_rejected",
    "tasks_assigned",
    "delivery_acceptance",
    "exception_opened",
    "invoice_issued",
    "payment_reminder",
    "survey",
    "ticket_opened",
    "digest",
];

pub const LOCALES: [Locale; 2] = [Locale::ZhCn, Locale::En];

/// Instructions a template may spend per rendering (loops included).
const FUEL: u64 = 200_000;
/// Largest rendered part accepted.
const MAX_OUTPUT: usize = 512 * 1024;

/// One rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub(crate) subject: String,
    pub text: String,
    pub html: String,
}

pub struct Templates {
    env: Environment<'static>,
    names: BTreeSet<String>,
    documents: BTreeSet<String>,
    fragments: BTreeSet<String>,
}

/// The pages' own sentences (`pages/words.html`, one per key); each must say something
/// in every locale.
pub(crate) const WORD_KEYS: &[&str] = &[
    "title.survey",
    "title.acceptance",
    "title.approval",
    "title.status",
    "title.thanks",
    "title.refused",
    "done.survey",
    "done.accepted",
    "done.not_accepted",
    "done.approval_waiting",
    "done.approval",
    "error.form",
    "error.score",
    "error.acceptance_decision",
    "error.acceptance_reason",
    "error.approval_decision",
    "error.approval_reason",
    "refused.invalid",
    "refused.expired",
    "refused.disabled",
    "refused.no_order",
    "refused.busy",
    "refused.survey_answered",
    "refused.survey_closed",
    "refused.acceptance_state",
    "refused.approval_used",
    "refused.approval_restarted",
    "refused.approval_state",
    "refused.approval_stale",
    "who.system",
];

/// Page text every configuration needs (`<locale>/pages/<name>.html`); the console's
/// other pages are `staff::FRAGMENTS`.
pub(crate) const FRAGMENT_NAMES: &[&str] =
    &["history", "refusal", "status", "survey", "acceptance", "approval", "words", "console"];

pub(crate) fn dir(config_dir: &Path) -> PathBuf {
    config_dir.join("config").join("templates")
}

fn locale_of(state: &State) -> Locale {
    state.lookup("locale").and_then(|v| v.as_str().and_then(|s| s.parse().ok())).unwrap_or(Locale::ZhCn)
}

fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg)
}

fn parse_time(v: &Value) -> Result<DateTime<Utc>, Error> {
    let s = v.as_str().ok_or_else(|| invalid(format!("datetime: expected a timestamp, got {v}")))?;
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|_| invalid(format!("datetime: `{s}` is not an RFC 3339 timestamp")))
}

/// The environment every template is rendered in: limits, escaping and filters.
fn environment(presentation: Presentation) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_auto_escape_callback(|name| if name.ends_with(".html") { AutoEscape::Html } else { AutoEscape::None });
    env.set_keep_trailing_newline(false);
    let tz = presentation.time_zone;
    env.add_filter("money", |state: &State, v: Value| -> Result<String, Error> {
        let amount = v.get_attr("amount")?;
        let currency = v.get_attr("currency")?;
        let m = Money::parse(&amount.to_string(), &currency.to_string())
            .map_err(|e| invalid(format!("money: {v} is not an amount with a currency ({e})")))?;
        Ok(locale::money(&m, locale_of(state)))
    });
    env.add_filter("datetime", move |state: &State, v: Value| -> Result<String, Error> {
        Ok(locale::datetime(parse_time(&v)?, tz, locale_of(state)))
    });
    env.add_filter("date", move |state: &State, v: Value| -> Result<String, Error> {
        let s = v.as_str().unwrap_or_default();
        let day = match s.parse::<NaiveDate>() {
            Ok(d) => d,
            Err(_) => parse_time(&v)?.with_timezone(&tz).date_naive(),
        };
        Ok(locale::date(day, locale_of(state)))
    });
    env.add_filter("short_date", move |state: &State, v: Value| -> Result<String, Error> {
        let s = v.as_str().unwrap_or_default();
        let day = match s.parse::<NaiveDate>() {
            Ok(d) => d,
            Err(_) => parse_time(&v)?.with_timezone(&tz).date_naive(),
        };
        Ok(locale::short_date(day, locale_of(state)))
    });
    env.add_filter("label", |state: &State, v: Value| -> String {
        let code = v.to_string();
        locale::label(&code, locale_of(state)).to_owned()
    });
    // Seconds (a report's durations) and shares (decimals 0–1, as strings); `–` for none.
    env.add_filter("duration", |state: &State, v: Value| -> String {
        i64::try_from(v).map_or_else(|_| "–".to_owned(), |s| locale::duration(s, locale_of(state)))
    });
    env.add_filter("percent", |v: Value| -> String {
        v.as_str().and_then(|s| s.parse::<rust_decimal::Decimal>().ok()).map_or_else(|| "–".to_owned(), locale::percent)
    });
    env.add_filter("paragraphs", |v: Value| -> Vec<String> {
        v.to_string().split("\n\n").map(|p| p.trim_matches('\n').to_owned()).filter(|p| !p.trim().is_empty()).collect()
    });
    env.add_filter("lines", |v: Value| -> Vec<String> { v.to_string().lines().map(str::to_owned).collect() });
    env.add_filter("amount_words", |state: &State, v: Value| -> Result<String, Error> {
        let m = Money::parse(&v.get_attr("amount")?.to_string(), &v.get_attr("currency")?.to_string())
            .map_err(|e| invalid(format!("amount_words: {v} is not an amount with a currency ({e})")))?;
        Ok(locale::amount_words(&m, locale_of(state)))
    });
    env.add_filter("in_locale", |state: &State, v: Value| -> String {
        locale::bilingual(&v.to_string(), locale_of(state)).to_owned()
    });
    env.add_filter("shortlink", |v: Value| -> String { short_link(&v.to_string()) });
    env.add_filter("blocks", |v: Value, links: Option<Value>| -> Value {
        let links: Vec<(String, String)> = links
            .and_then(|l| serde_json::to_value(&l).ok())
            .and_then(|l| serde_json::from_value::<std::collections::BTreeMap<String, String>>(l).ok())
            .map(|m| m.into_iter().collect())
            .unwrap_or_default();
        Value::from_serialize(blocks(&v.to_string(), &links))
    });
    env
}

/// The shipped page text (`config/templates/<locale>/pages/*.html`), compiled in: what
/// the pages say when a configuration has no templates of its own. The same files,
/// not a second copy of their wording.
const BUILTIN_PAGES: &[(&str, &str)] = &[
    ("zh-CN/pages/history.html", include_str!("../../../config/templates/zh-CN/pages/history.html")),
    ("zh-CN/pages/refusal.html", include_str!("../../../config/templates/zh-CN/pages/refusal.html")),
    ("zh-CN/pages/status.html", include_str!("../../../config/templates/zh-CN/pages/status.html")),
    ("zh-CN/pages/survey.html", include_str!("../../../config/templates/zh-CN/pages/survey.html")),
    ("zh-CN/pages/acceptance.html", include_str!("../../../config/templates/zh-CN/pages/acceptance.html")),
    ("zh-CN/pages/approval.html", include_str!("../../../config/templates/zh-CN/pages/approval.html")),
    ("zh-CN/pages/words.html", include_str!("../../../config/templates/zh-CN/pages/words.html")),
    ("zh-CN/pages/console.html", include_str!("../../../config/templates/zh-CN/pages/console.html")),
    ("en/pages/console.html", include_str!("../../../config/templates/en/pages/console.html")),
    ("en/pages/history.html", include_str!("../../../config/templates/en/pages/history.html")),
    ("en/pages/refusal.html", include_str!("../../../config/templates/en/pages/refusal.html")),
    ("en/pages/status.html", include_str!("../../../config/templates/en/pages/status.html")),
    ("en/pages/survey.html", include_str!("../../../config/templates/en/pages/survey.html")),
    ("en/pages/acceptance.html", include_str!("../../../config/templates/en/pages/acceptance.html")),
    ("en/pages/approval.html", include_str!("../../../config/templates/en/pages/approval.html")),
    ("en/pages/words.html", include_str!("../../../config/templates/en/pages/words.html")),
];

impl Templates {
    /// Loads and compiles every template; a syntax error is reported at its file and line.
    ///
    /// # Errors
    /// Every template problem: unreadable file, syntax error, missing template or
    /// locale, and errors found by rendering each template with a sample order.
    pub fn load(config_dir: &Path, presentation: Presentation) -> Result<Templates, Vec<Diagnostic>> {
        let root = dir(config_dir);
        let mut env = environment(presentation);
        let mut problems = Vec::new();
        let mut names = BTreeSet::new();
        let mut files = Vec::new();
        let mut broken = BTreeSet::new();
        let mut documents = BTreeSet::new();
        for loc in LOCALES {
            let d = root.join(loc.as_str());
            let entries = match std::fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) => {
                    problems.push(Diagnostic::file(&d, format!("cannot read template directory: {e}")));
                    continue;
                }
            };
            let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for p in paths {
                let Some(file) = p.file_name().and_then(|f| f.to_str()).map(str::to_owned) else { continue };
                let is_txt = file.ends_with(".txt");
                if !(is_txt || file == "layout.html") {
                    continue;
                }
                match std::fs::read_to_string(&p) {
                    Err(e) => problems.push(Diagnostic::file(&p, format!("cannot read: {e}"))),
                    Ok(src) => {
                        let name = format!("{}/{file}", loc.as_str());
                        if let Err(e) = env.add_template_owned(name.clone(), src) {
                            problems.push(template_error(&root, &e));
                            broken.insert(name);
                            continue;
                        }
                        if is_txt {
                            names.insert(file.trim_end_matches(".txt").to_owned());
                        }
                        files.push(name);
                    }
                }
            }
        }
        // Documents (contract, delivery confirmation): `<locale>/documents/<kind>.html`;
        // page text (what the pages say of an order's events): `<locale>/pages/<name>.html`.
        let mut fragments = BTreeSet::new();
        for (loc, sub) in LOCALES.iter().flat_map(|l| [(*l, "documents"), (*l, "pages")]) {
            let d = root.join(loc.as_str()).join(sub);
            let Ok(entries) = std::fs::read_dir(&d) else { continue };
            let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for p in paths.into_iter().filter(|p| p.extension().is_some_and(|x| x == "html")) {
                let Some(file) = p.file_name().and_then(|f| f.to_str()).map(str::to_owned) else { continue };
                match std::fs::read_to_string(&p) {
                    Err(e) => problems.push(Diagnostic::file(&p, format!("cannot read: {e}"))),
                    Ok(src) => {
                        let name = format!("{}/{sub}/{file}", loc.as_str());
                        if let Err(e) = env.add_template_owned(name.clone(), src) {
                            problems.push(template_error(&root, &e));
                            broken.insert(name);
                            continue;
                        }
                        let set = if sub == "pages" { &mut fragments } else { &mut documents };
                        set.insert(file.trim_end_matches(".html").to_owned());
                    }
                }
            }
        }
        // Page text a configuration lacks (it was written before that file was
        // shipped, e.g. `pages/words.html`): the shipped text, so an upgrade does
        // not stop the daemon (the log names it).
        for (name, src) in BUILTIN_PAGES.iter().chain(staff::BUILTIN_PAGES) {
            if env.get_template(name).is_err() && !broken.contains(*name) {
                env.add_template(name, src).expect("the shipped page text compiles");
                let file = name.rsplit('/').next().unwrap_or(name);
                fragments.insert(file.trim_end_matches(".html").to_owned());
                tracing::info!(template = name, "page text not in the configuration: the shipped one is used");
            }
        }
        report::add(&mut env, &root, &mut problems, &mut broken);
        let t = Templates { env, names, documents, fragments };
        problems.extend(t.self_check(&root, &broken));
        problems.extend(t.check_reports(&root, &broken));
        if problems.is_empty() { Ok(t) } else { Err(problems) }
    }

    /// The shipped page text only (compiled in), for a configuration without templates.
    ///
    /// # Panics
    /// Never in a build whose shipped templates compile (a test renders them all).
    #[must_use]
    pub(crate) fn builtin_pages(presentation: Presentation) -> Templates {
        let mut env = environment(presentation);
        let mut fragments = BTreeSet::new();
        for (name, src) in BUILTIN_PAGES.iter().chain(staff::BUILTIN_PAGES) {
            env.add_template(name, src).expect("the shipped page text compiles");
            let file = name.rsplit('/').next().unwrap_or(name);
            fragments.insert(file.trim_end_matches(".html").to_owned());
        }
        Templates { env, names: BTreeSet::new(), documents: BTreeSet::new(), fragments }
    }

    /// Every known template in every locale, rendered with a sample order.
    fn self_check(&self, root: &Path, broken: &BTreeSet<String>) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for loc in LOCALES {
            let layout = format!("{}/layout.html", loc.as_str());
            if !broken.contains(&layout) && self.env.get_template(&layout).is_err() {
                out.push(Diagnostic::file(&root.join(loc.as_str()).join("layout.html"), "missing"));
            }
        }
        for name in TEMPLATE_NAMES.iter().copied().chain(self.names.iter().map(String::as_str)) {
            for loc in LOCALES {
                let file = root.join(loc.as_str()).join(format!("{name}.txt"));
                if broken.contains(&format!("{}/{name}.txt", loc.as_str())) {
                    continue;
                }
                if self.env.get_template(&format!("{}/{name}.txt", loc.as_str())).is_err() {
                    out.push(Diagnostic::file(
                        &file,
                        format!("missing: every template needs a {} version", loc.as_str()),
                    ));
                    continue;
                }
                if let Err(e) = self.render(name, loc, sample_context(loc)) {
                    out.push(e.diagnostic(root));
                }
            }
        }
        for kind in &self.documents {
            for loc in LOCALES {
                let name = format!("{}/documents/{kind}.html", loc.as_str());
                if broken.contains(&name) {
                    continue;
                }
                if self.env.get_template(&name).is_err() {
                    out.push(Diagnostic::file(
                        &root.join(loc.as_str()).join("documents").join(format!("{kind}.html")),
                        format!("missing: every document needs a {} version", loc.as_str()),
                    ));
                    continue;
                }
                if let Err(e) = self.render_document(kind, loc, sample_context(loc)) {
                    out.push(e.diagnostic(root));
                }
            }
        }
        let staff = staff::FRAGMENTS.iter().map(|(n, _)| *n);
        for name in FRAGMENT_NAMES.iter().copied().chain(staff).chain(self.fragments.iter().map(String::as_str)) {
            for loc in LOCALES {
                let file = format!("{}/pages/{name}.html", loc.as_str());
                if broken.contains(&file) {
                    continue;
                }
                if self.env.get_template(&file).is_err() {
                    out.push(Diagnostic::file(
                        &root.join(loc.as_str()).join("pages").join(format!("{name}.html")),
                        format!("missing: every page text needs a {} version", loc.as_str()),
                    ));
                    continue;
                }
                for ctx in sample_page_contexts().into_iter().filter(|c| fits(name, c)) {
                    match self.render_fragment(name, loc, ctx.clone()) {
                        Err(e) => {
                            out.push(e.diagnostic(root));
                            break;
                        }
                        Ok(text) if name == "words" && text.is_empty() => out.push(Diagnostic::file(
                            &root.join(loc.as_str()).join("pages").join("words.html"),
                            format!("says nothing for `{}`: every key needs a sentence", ctx["key"]),
                        )),
                        Ok(_) => {}
                    }
                }
            }
        }
        out.dedup();
        out
    }

    /// Renders page text `name` (`<locale>/pages/<name>.html`, auto-escaped) in
    /// `locale`, trimmed; empty when the template says nothing for this context.
    ///
    /// # Errors
    /// A `RenderError` naming the file and line.
    pub(crate) fn render_fragment(
        &self,
        name: &str,
        locale: Locale,
        mut ctx: serde_json::Value,
    ) -> Result<String, RenderError> {
        let file = format!("{}/pages/{name}.html", locale.as_str());
        if let Some(o) = ctx.as_object_mut() {
            o.insert("locale".into(), locale.as_str().into());
        }
        let tmpl = self.env.get_template(&file).map_err(|e| RenderError::from_minijinja(&file, &e))?;
        let html = tmpl.render(Value::from_serialize(&ctx)).map_err(|e| RenderError::from_minijinja(&file, &e))?;
        Ok(html.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    /// Documents this configuration can generate (`documents/<kind>.html`).
    pub(crate) fn documents(&self) -> impl Iterator<Item = &str> {
        self.documents.iter().map(String::as_str)
    }

    /// Renders document `kind` (HTML, auto-escaped) in `locale`.
    ///
    /// # Errors
    /// A `RenderError` naming the file and line; output beyond the size limit.
    pub(crate) fn render_document(
        &self,
        kind: &str,
        locale: Locale,
        mut ctx: serde_json::Value,
    ) -> Result<String, RenderError> {
        let file = format!("{}/documents/{kind}.html", locale.as_str());
        if let Some(o) = ctx.as_object_mut() {
            o.insert("locale".into(), locale.as_str().into());
        }
        let tmpl = self.env.get_template(&file).map_err(|e| RenderError::from_minijinja(&file, &e))?;
        let html = tmpl.render(Value::from_serialize(&ctx)).map_err(|e| RenderError::from_minijinja(&file, &e))?;
        if html.len() > MAX_OUTPUT {
            return Err(RenderError { file, line: None, message: format!("output larger than {MAX_OUTPUT} bytes") });
        }
        Ok(html)
    }

    /// True when `name` exists (in every locale, as `load` checked).
    pub(crate) fn has(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// Renders template `name` in `locale` with `ctx` (a JSON object).
    ///
    /// # Errors
    /// A `RenderError` naming the template file and line.
    pub fn render(&self, name: &str, locale: Locale, mut ctx: serde_json::Value) -> Result<Rendered, RenderError> {
        let file = format!("{}/{name}.txt", locale.as_str());
        let (subject, text) = self.subject_and_text(&file, locale, &mut ctx)?;
        if let Some(o) = ctx.as_object_mut() {
            o.insert("body".into(), text.clone().into());
        }
        let layout_file = format!("{}/layout.html", locale.as_str());
        let layout = self.env.get_template(&layout_file).map_err(|e| RenderError::from_minijinja(&layout_file, &e))?;
        let html =
            layout.render(Value::from_serialize(&ctx)).map_err(|e| RenderError::from_minijinja(&layout_file, &e))?;
        finished(file, &layout_file, subject, text, &html)
    }

    /// The `subject` (on one line) and `body` blocks of the text template `file`,
    /// rendered with `ctx`, which then holds the locale and the subject for the HTML.
    pub(super) fn subject_and_text(
        &self,
        file: &str,
        locale: Locale,
        ctx: &mut serde_json::Value,
    ) -> Result<(String, String), RenderError> {
        let fail = |e: Error| RenderError::from_minijinja(file, &e);
        if let Some(o) = ctx.as_object_mut() {
            o.insert("locale".into(), locale.as_str().into());
        }
        let tmpl = self.env.get_template(file).map_err(fail)?;
        let mut captured = tmpl.render_captured(Value::from_serialize(&*ctx)).map_err(fail)?;
        let subject = captured.with_state_mut(|s| s.render_block("subject")).map_err(fail)?;
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        let text = tidy(&captured.with_state_mut(|s| s.render_block("body")).map_err(fail)?);
        if let Some(o) = ctx.as_object_mut() {
            o.insert("subject".into(), subject.clone().into());
        }
        Ok((subject, text))
    }
}

/// A paragraph of a mail body as the HTML part shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
struct Block {
    /// `label: value` lines: shown as the mail's one summary table.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    facts: Vec<(String, String)>,
    /// Text lines, without the bare URLs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    lines: Vec<String>,
    /// A link the paragraph carried, as `(purpose, url)`: shown as a button.
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<(String, String)>,
}

/// `label: value` (or `标签：值`) with a short label and a value.
fn fact(line: &str) -> Option<(String, String)> {
    let (label, value) = line.split_once('：').or_else(|| line.split_once(": "))?;
    let (label, value) = (label.trim(), value.trim());
    let short = (1..=20).contains(&label.chars().count());
    let plain = !label.contains(['，', '。', ',', '.', '(', '（']) && !label.starts_with("http");
    (short && plain && !value.is_empty()).then(|| (label.to_owned(), value.to_owned()))
}

/// The body's paragraphs for the HTML part: a paragraph of two or more `label: value`
/// lines becomes facts, a bare URL becomes the link of its paragraph (a button there,
/// with a short fallback line), everything else stays text. The text part is the body
/// itself, unchanged.
fn blocks(body: &str, links: &[(String, String)]) -> Vec<Block> {
    let mut out = Vec::new();
    for p in body.split("\n\n").map(|p| p.trim_matches('\n')).filter(|p| !p.trim().is_empty()) {
        let lines: Vec<&str> = p.lines().collect();
        let facts: Vec<(String, String)> = lines.iter().filter_map(|l| fact(l)).collect();
        if lines.len() >= 2 && facts.len() == lines.len() {
            out.push(Block { facts, lines: Vec::new(), link: None });
            continue;
        }
        let mut block = Block { facts: Vec::new(), lines: Vec::new(), link: None };
        for line in lines {
            let bare = line.trim();
            let url = (bare.starts_with("https://") || bare.starts_with("http://")) && !bare.contains(' ');
            if url && block.link.is_none() {
                let purpose = links.iter().find(|(_, u)| u == bare).map_or("", |(p, _)| p.as_str());
                block.link = Some((purpose.to_owned(), bare.to_owned()));
            } else {
                block.lines.push(line.to_owned());
            }
        }
        out.push(block);
    }
    // The feedback link is the footer's, not a button of the message.
    for (purpose, url) in links.iter().filter(|(p, _)| p != "feedback") {
        if !out.iter().any(|b| b.link.as_ref().is_some_and(|(_, u)| u == url)) {
            out.push(Block { facts: Vec::new(), lines: Vec::new(), link: Some((purpose.clone(), url.clone())) });
        }
    }
    out
}

/// A link's short form for the fallback line: host and page, the token elided
/// (`orders.bank.example/pages/approval/…`).
fn short_link(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    match rest.rsplit_once('/') {
        Some((head, tail)) if tail.chars().count() > 16 => format!("{head}/…"),
        _ => rest.to_owned(),
    }
}

/// A rendered mail as sent: the HTML with its stylesheet inlined, a subject, and no
/// part over `MAX_OUTPUT` bytes.
pub(super) fn finished(
    file: String,
    html_file: &str,
    subject: String,
    text: String,
    html: &str,
) -> Result<Rendered, RenderError> {
    let html = inline_css(html).map_err(|e| RenderError {
        file: html_file.to_owned(),
        line: None,
        message: format!("inlining CSS: {e}"),
    })?;
    if subject.is_empty() {
        return Err(RenderError { file, line: None, message: "the subject block rendered empty".into() });
    }
    if text.len() > MAX_OUTPUT || html.len() > MAX_OUTPUT {
        return Err(RenderError { file, line: None, message: format!("output larger than {MAX_OUTPUT} bytes") });
    }
    Ok(Rendered { subject, text, html })
}

/// The layout's `<style>` moved into `style` attributes, as mail clients need; the
/// at-rules (dark mode, narrow screens) stay in a `<style>` for those that read it.
/// Remote stylesheets are never fetched.
fn inline_css(html: &str) -> Result<String, css_inline::InlineError> {
    css_inline::CSSInliner::options()
        .keep_at_rules(true)
        .load_remote_stylesheets(false)
        .minify_css(true)
        .build()
        .inline(html)
}

/// Trims the body and keeps at most one blank line between paragraphs.
fn tidy(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut blank = 0;
    for line in s.trim().lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct RenderError {
    /// Relative to `config/templates/`, e.g. `zh-CN/survey.txt`.
    pub(crate) file: String,
    pub(crate) line: Option<usize>,
    pub(crate) message: String,
}

impl RenderError {
    fn from_minijinja(file: &str, e: &Error) -> Self {
        let mut message = e.detail().map_or_else(|| e.kind().to_string(), |d| format!("{}: {d}", e.kind()));
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            message.push_str(&format!(": {s}"));
            src = s.source();
        }
        RenderError { file: e.name().unwrap_or(file).to_owned(), line: e.line(), message }
    }

    fn diagnostic(&self, root: &Path) -> Diagnostic {
        let path = root.join(&self.file);
        Diagnostic {
            path,
            line: self.line.unwrap_or(0),
            col: if self.line.is_some() { 1 } else { 0 },
            message: self.message.clone(),
        }
    }
}

fn template_error(root: &Path, e: &Error) -> Diagnostic {
    RenderError::from_minijinja("?", e).diagnostic(root)
}

/// The views of `pages/console.html`.
pub(crate) const CONSOLE_VIEWS: &[&str] = &[
    "title_signin",
    "title_console",
    "title_refused",
    "signin",
    "sent",
    "confirm",
    "oidc_refused",
    "mail_subject",
    "mail_text",
    "inbox",
    "refused",
];

/// Whether a sample context is one page text `name` is rendered with.
fn fits(name: &str, ctx: &serde_json::Value) -> bool {
    if let Some(fits) = staff::fits(name, ctx) {
        return fits;
    }
    match name {
        "history" => ctx.get("event").is_some(),
        "refusal" => ctx.get("refusal").is_some(),
        "status" => ctx.get("steps").is_some(),
        "survey" | "acceptance" | "approval" => ctx.get("max_comment").is_some(),
        "words" => ctx.get("key").is_some(),
        "console" => ctx.get("view").is_some() && ctx.get("fragment").is_none(),
        _ => true,
    }
}

/// Contexts the page text is checked with: one of each event the pages describe, and
/// one of each refusal.
pub(crate) fn sample_page_contexts() -> Vec<serde_json::Value> {
    let amount = serde_json::json!({"amount": "1250000.00", "currency": "CNY"});
    let events = [
        serde_json::json!({"type": "screening_passed", "rules_version": "1", "reason": "matrix row LARGE",
            "row": "LARGE", "chain": ["line_supervisor", {"any": ["branch_manager", "risk_officer"]}, {"all": ["compliance", "cfo"]}]}),
        serde_json::json!({"type": "screening_passed", "rules_version": "1", "reason": "", "row": "SMALL",
            "chain": ["line_supervisor"], "auto_on_behalf_of": "line_supervisor"}),
        serde_json::json!({"type": "screening_flagged", "rules_version": "1",
            "fired": [{"rule_id": "KYC-001", "severity": "flag", "message": "客户未完成 KYC 认证 / customer KYC not verified"}]}),
        serde_json::json!({"type": "review_released", "comment": "已核实", "chain": ["line_supervisor"]}),
        serde_json::json!({"type": "approved", "level": 1, "role": "line_supervisor", "comment": "同意"}),
        serde_json::json!({"type": "approval_given", "level": 2, "role": "branch_manager", "comment": ""}),
        serde_json::json!({"type": "info_requested", "level": 1, "role": "", "question": "请补充材料"}),
        serde_json::json!({"type": "approvals_voided", "round": 2, "reason": "material change"}),
        serde_json::json!({"type": "amended", "changed": ["amount", "term_months"], "material": true}),
        serde_json::json!({"type": "closed"}),
    ];
    let refusals = [
        serde_json::json!({"kind": "own_order", "person": "李娜"}),
        serde_json::json!({"kind": "already_approved", "person": "王芳", "level": 1}),
        serde_json::json!({"kind": "not_an_approver", "person": "王芳", "level": 2, "needs": ["branch_manager", "risk_officer"]}),
        serde_json::json!({"kind": "unknown_person"}),
        serde_json::json!({"kind": "other"}),
    ];
    events
        .into_iter()
        .map(|event| serde_json::json!({"event": event, "who": "李娜", "amount": amount, "at": "2026-11-26T09:30:00Z"}))
        .chain(refusals.into_iter().map(|refusal| serde_json::json!({"refusal": refusal})))
        .chain(WORD_KEYS.iter().map(|key| serde_json::json!({"key": key, "state": "delivered", "at": "2026-11-26T09:30:00Z"})))
        .chain([serde_json::json!({
            "token": "v2.TOKEN", "error": "请选择 1 到 5 分的评分。", "max_comment": 2000,
            "note": "合同已签署", "tasks": ["合同生成 / Contract"], "level": 1, "of": 2,
            "history": [{"at": "2026-11-26T09:30:00Z", "text": "筛查通过：金额 125 万元，需经直线主管和支行行长两级审批。"}],
            "order": {"customer": "张伟", "customer_id": "C-778", "product": "wealth_management", "code": "WM-STABLE-12M",
                "amount": amount, "term_months": 12, "credit_rating": "A", "need": "稳健型理财", "sales_owner": "li.na"},
        })])
        .chain(CONSOLE_VIEWS.iter().map(|view| serde_json::json!({
            "view": view, "csrf": "CSRF", "token": "TOKEN", "site": "示例银行", "minutes": 15,
            "url": "https://orders.bank.example/signin/TOKEN", "person": "王芳", "notice": "已记录", "message": "不允许",
            "error": "请输入电子邮箱", "items": [{"id": "ord_01", "customer": "张伟", "product": "wealth_management",
                "code": "WM-STABLE-12M", "amount": amount, "level": 1, "of": 2, "role": "line_supervisor"}],
        })))
        .chain(staff::samples())
        .chain([serde_json::json!({
            "state": "invoiced",
            "steps": (0..8).map(|i| serde_json::json!({"done": i <= 5, "current": i == 5,
                "day": if i <= 5 { Some("2026-11-26") } else { None }})).collect::<Vec<_>>(),
            "order": {"customer": "张伟", "product": "wealth_management", "code": "WM-STABLE-12M", "amount": amount},
            "invoice": {"number": "INV-2026-0042", "outstanding": amount, "due": "2026-12-31"},
            "history": [{"at": "2026-11-26T09:30:00Z", "event": "received"}, {"at": "2026-11-26T09:31:00Z", "event": "effect_done"}],
        })])
        .collect()
}

mod report;
pub(crate) use report::context as report_context;
mod staff;

#[cfg(test)]
mod tests;
