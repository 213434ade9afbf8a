//! Mail templates: `config/templates/<locale>/<name>.txt` and `<locale>/layout.html`.
//!
//! A `.txt` template has two blocks, `subject` (one line) and `body` (plain text,
//! paragraphs separated by a blank line). The HTML alternative is `layout.html`
//! rendered with the same context plus `subject` and `body`; it is auto-escaped, so
//! order data can never inject markup. Rendering is bounded (minijinja's fuel) and so
//! is the output.
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
    pub subject: String,
    pub text: String,
    pub html: String,
}

pub struct Templates {
    env: Environment<'static>,
    names: BTreeSet<String>,
    documents: BTreeSet<String>,
}

pub fn dir(config_dir: &Path) -> PathBuf {
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

impl Templates {
    /// Loads and compiles every template; a syntax error is reported at its file and line.
    ///
    /// # Errors
    /// Every template problem: unreadable file, syntax error, missing template or
    /// locale, and errors found by rendering each template with a sample order.
    pub fn load(config_dir: &Path, presentation: Presentation) -> Result<Templates, Vec<Diagnostic>> {
        let root = dir(config_dir);
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
        env.add_filter("label", |state: &State, v: Value| -> String {
            let code = v.to_string();
            locale::label(&code, locale_of(state)).to_owned()
        });
        env.add_filter("paragraphs", |v: Value| -> Vec<String> {
            v.to_string()
                .split("\n\n")
                .map(|p| p.trim_matches('\n').to_owned())
                .filter(|p| !p.trim().is_empty())
                .collect()
        });
        env.add_filter("lines", |v: Value| -> Vec<String> { v.to_string().lines().map(str::to_owned).collect() });

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
        // Documents (contract, delivery confirmation): `<locale>/documents/<kind>.html`.
        for loc in LOCALES {
            let d = root.join(loc.as_str()).join("documents");
            let Ok(entries) = std::fs::read_dir(&d) else { continue };
            let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for p in paths.into_iter().filter(|p| p.extension().is_some_and(|x| x == "html")) {
                let Some(file) = p.file_name().and_then(|f| f.to_str()).map(str::to_owned) else { continue };
                match std::fs::read_to_string(&p) {
                    Err(e) => problems.push(Diagnostic::file(&p, format!("cannot read: {e}"))),
                    Ok(src) => {
                        let name = format!("{}/documents/{file}", loc.as_str());
                        if let Err(e) = env.add_template_owned(name.clone(), src) {
                            problems.push(template_error(&root, &e));
                            broken.insert(name);
                            continue;
                        }
                        documents.insert(file.trim_end_matches(".html").to_owned());
                    }
                }
            }
        }
        let t = Templates { env, names, documents };
        problems.extend(t.self_check(&root, &broken));
        if problems.is_empty() { Ok(t) } else { Err(problems) }
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
        out.dedup();
        out
    }

    /// Documents this configuration can generate (`documents/<kind>.html`).
    pub fn documents(&self) -> impl Iterator<Item = &str> {
        self.documents.iter().map(String::as_str)
    }

    /// Renders document `kind` (HTML, auto-escaped) in `locale`.
    ///
    /// # Errors
    /// A `RenderError` naming the file and line; output beyond the size limit.
    pub fn render_document(
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
    pub fn has(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// Renders template `name` in `locale` with `ctx` (a JSON object).
    ///
    /// # Errors
    /// A `RenderError` naming the template file and line.
    pub fn render(&self, name: &str, locale: Locale, mut ctx: serde_json::Value) -> Result<Rendered, RenderError> {
        let file = format!("{}/{name}.txt", locale.as_str());
        let fail = |e: Error| RenderError::from_minijinja(&file, &e);
        if let Some(o) = ctx.as_object_mut() {
            o.insert("locale".into(), locale.as_str().into());
        }
        let tmpl = self.env.get_template(&file).map_err(fail)?;
        let mut captured = tmpl.render_captured(Value::from_serialize(&ctx)).map_err(fail)?;
        let subject = captured.with_state_mut(|s| s.render_block("subject")).map_err(fail)?;
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        let text = tidy(&captured.with_state_mut(|s| s.render_block("body")).map_err(fail)?);
        if let Some(o) = ctx.as_object_mut() {
            o.insert("subject".into(), subject.clone().into());
            o.insert("body".into(), text.clone().into());
        }
        let layout_file = format!("{}/layout.html", locale.as_str());
        let layout = self.env.get_template(&layout_file).map_err(|e| RenderError::from_minijinja(&layout_file, &e))?;
        let html =
            layout.render(Value::from_serialize(&ctx)).map_err(|e| RenderError::from_minijinja(&layout_file, &e))?;
        if subject.is_empty() {
            return Err(RenderError { file, line: None, message: "the subject block rendered empty".into() });
        }
        if text.len() > MAX_OUTPUT || html.len() > MAX_OUTPUT {
            return Err(RenderError { file, line: None, message: format!("output larger than {MAX_OUTPUT} bytes") });
        }
        Ok(Rendered { subject, text, html })
    }
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
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
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

/// A complete context, as the mailer builds it, for checks and snapshots.
pub fn sample_context(locale: Locale) -> serde_json::Value {
    serde_json::json!({
        "site": {"name": "示例银行订单中心", "public_url": "https://orders.bank.example"},
        "recipient": {"name": if locale == Locale::ZhCn { "李娜" } else { "Li Na" }, "email": "li.na@bank.example"},
        "order_id": "ord_0193a5e2c4b87d21a4f0c9e8b7d6a5f4",
        "state": "flagged",
        "order": {
            "customer": {"id": "C-778", "name": "张伟 <b>&", "kind": "individual", "credit_rating": "A",
                "kyc_verified": true, "email": "zhang.wei@example.com",
                "id_document": {"type": "cn_resident_id", "number": "11010519491231002X"}},
            "product": {"type": "wealth_management", "code": "WM-STABLE-12M"},
            "need": "客户希望配置稳健型理财产品，期限一年",
            "amount": {"amount": "1250000.00", "currency": "CNY"},
            "term_months": 12,
            "sales_owner": "li.na@bank.example",
            "placed_at": "2026-11-26T09:30:00Z"
        },
        "event": {"type": "screening_flagged", "rules_version": "2026-11-26.1",
            "fired": [{"rule_id": "KYC-001", "severity": "flag", "message": "客户未完成 KYC 认证 / customer KYC not verified"}],
            "score": 2, "comment": "办理太慢 <script>", "reason": "score 2 (at or below 2)",
            "level": 1, "role": "line_supervisor", "number": "INV-2026-0042", "question": "请提供客户近三年的财务报表。",
            "amount": {"amount": "1250000.00", "currency": "CNY"}},
        "links": {"survey": "https://orders.bank.example/pages/survey/TOKEN"},
        "extra": {
            "level": 2, "of": 3, "role": "branch_manager", "due_at": "2026-11-27T09:30:00Z", "escalated_from": "王芳",
            "tasks": [{"name": "产品配置", "department": "运营部"}, {"name": "合同生成", "department": "法务部"}],
            "delivered_at": "2026-12-01T02:00:00Z",
            "invoice": {"number": "INV-2026-0042", "amount": {"amount": "1250000.00", "currency": "CNY"},
                "tax": {"amount": "75000.00", "currency": "CNY"}, "due_date": "2026-12-31"},
            "stage": "friendly", "days_overdue": 7,
            "invoices": [{"number": "INV-2026-0042", "amount": {"amount": "1250000.00", "currency": "CNY"}, "due_date": "2026-12-31"}],
            "total": {"amount": "1250000.00", "currency": "CNY"},
            "ticket_id": "SD-1024"
        },
        "items": [
            {"order_id": "ord_0193a5e2c4b87d21a4f0c9e8b7d6a5f4", "template": "order_flagged", "state": "flagged",
             "customer": "张伟", "amount": {"amount": "1250000.00", "currency": "CNY"}, "at": "2026-11-26T09:30:00Z"},
            {"order_id": "ord_0193a5e2c4b87d21a4f0c9e8b7d6a5f5", "template": "approval_request", "state": "awaiting_approval",
             "customer": "上海某某科技有限公司", "amount": {"amount": "8800000.00", "currency": "CNY"}, "at": "2026-11-26T10:00:00Z"}
        ],
        "count": 2
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
    }

    fn load() -> Templates {
        Templates::load(repo(), Presentation::default()).unwrap_or_else(|e| panic!("{e:#?}"))
    }

    /// Every template in both languages against `tests/snapshots/templates/`. After an
    /// intended change, run with `UPDATE_SNAPSHOTS=1` and review the diff.
    #[test]
    fn rendered_templates_match_their_snapshots() {
        let t = load();
        let dir = repo().join("tests/snapshots/templates");
        let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
        let mut failures = Vec::new();
        for name in TEMPLATE_NAMES {
            for loc in LOCALES {
                let r = t.render(name, loc, sample_context(loc)).unwrap();
                let got = format!("Subject: {}\n\n--- text ---\n{}\n--- html ---\n{}", r.subject, r.text, r.html);
                let path = dir.join(loc.as_str()).join(format!("{name}.snap"));
                if update {
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(&path, &got).unwrap();
                    continue;
                }
                match std::fs::read_to_string(&path) {
                    Ok(want) if want == got => {}
                    Ok(_) => failures.push(format!("{} differs", path.display())),
                    Err(_) => failures.push(format!("{} is missing", path.display())),
                }
            }
        }
        assert!(failures.is_empty(), "{failures:#?}\n(run with UPDATE_SNAPSHOTS=1 after an intended change)");
    }

    #[test]
    fn order_data_is_escaped_in_html_and_kept_in_text() {
        let t = load();
        for loc in LOCALES {
            let r = t.render("order_flagged", loc, sample_context(loc)).unwrap();
            assert!(r.text.contains("张伟 <b>&"), "{}", r.text);
            assert!(r.html.contains("张伟 &lt;b&gt;&amp;"), "{}", r.html);
            assert!(!r.html.contains("<b>&"), "raw markup leaked into HTML");
            assert!(!r.subject.contains('\n'));
            let s = t.render("survey", loc, sample_context(loc)).unwrap();
            assert!(s.text.contains("https://orders.bank.example/pages/survey/TOKEN"), "{}", s.text);
        }
        let zh = t.render("order_flagged", Locale::ZhCn, sample_context(Locale::ZhCn)).unwrap();
        assert!(zh.text.contains("¥1,250,000.00"), "{}", zh.text);
        assert!(zh.text.contains("KYC-001"), "staff mail lists the rules that fired: {}", zh.text);
        let en = t.render("order_flagged", Locale::En, sample_context(Locale::En)).unwrap();
        assert!(en.text.contains("CNY 1,250,000.00"), "{}", en.text);
    }

    #[test]
    fn customer_mail_never_shows_internal_rules() {
        let t = load();
        for loc in LOCALES {
            for name in ["order_received", "delivery_acceptance", "invoice_issued", "payment_reminder", "survey"] {
                let r = t.render(name, loc, sample_context(loc)).unwrap();
                assert!(!r.text.contains("KYC-001"), "{name} ({loc}) shows a rule id");
            }
        }
    }

    #[test]
    fn broken_templates_are_reported_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("config/templates");
        for loc in LOCALES {
            let d = root.join(loc.as_str());
            std::fs::create_dir_all(&d).unwrap();
            for f in std::fs::read_dir(repo().join("config/templates").join(loc.as_str())).unwrap() {
                let f = f.unwrap().path();
                if f.is_file() {
                    std::fs::copy(&f, d.join(f.file_name().unwrap())).unwrap();
                }
            }
        }
        let broken = root.join("en/survey.txt");
        std::fs::write(
            &broken,
            "{% block subject %}Hi{% endblock %}\n{% block body %}\nline two\n{% if x %}\n{% endblock %}\n",
        )
        .unwrap();
        std::fs::write(
            root.join("zh-CN/order_received.txt"),
            "{% block subject %}{{ order.amount|nope }}{% endblock %}{% block body %}x{% endblock %}",
        )
        .unwrap();
        std::fs::remove_file(root.join("zh-CN/digest.txt")).unwrap();
        let errs = Templates::load(dir.path(), Presentation::default()).err().expect("broken templates refused");
        let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
        let has = |needle: &str| shown.iter().any(|s| s.contains(needle));
        assert!(has("config/templates/en/survey.txt:5"), "{shown:#?}");
        assert!(shown.iter().any(|s| s.contains("zh-CN/digest.txt") && s.contains("missing")), "{shown:#?}");
        assert!(has("zh-CN/order_received.txt:1") && has("unknown filter"), "{shown:#?}");
    }
}
