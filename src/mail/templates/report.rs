//! The scheduled management report's mail: `<locale>/reports/report.txt` (blocks
//! `subject` and `body`, the plain-text part) and `<locale>/reports/report.html` (the
//! whole HTML part, its charts referenced as `cid:` images). The context is the
//! report's brief (`analytics::brief`) as `brief`, and `charts`: for each chart the
//! mail carries, its `cid`, `width` and `height`. A configuration without these files
//! gets the shipped ones (compiled in), so an upgrade does not stop it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use minijinja::Environment;
use minijinja::value::Value;

use super::{LOCALES, RenderError, Rendered, Templates, template_error};
use crate::analytics::brief::Brief;
use crate::diagnostics::Diagnostic;
use crate::locale::Locale;

/// The report mail's files in each locale directory.
const FILES: [&str; 2] = ["reports/report.txt", "reports/report.html"];

/// The shipped report mail (`config/templates/<locale>/reports/`), compiled in.
const BUILTIN: &[(&str, &str)] = &[
    ("zh-CN/reports/report.txt", include_str!("../../../config/templates/zh-CN/reports/report.txt")),
    ("zh-CN/reports/report.html", include_str!("../../../config/templates/zh-CN/reports/report.html")),
    ("en/reports/report.txt", include_str!("../../../config/templates/en/reports/report.txt")),
    ("en/reports/report.html", include_str!("../../../config/templates/en/reports/report.html")),
];

/// Adds the report mail's templates of the configuration at `root` to `env`, or the
/// shipped ones where a file is missing. Syntax errors are problems at their line.
pub(super) fn add(
    env: &mut Environment<'static>,
    root: &Path,
    problems: &mut Vec<Diagnostic>,
    broken: &mut BTreeSet<String>,
) {
    for loc in LOCALES {
        for file in FILES {
            let name = format!("{}/{file}", loc.as_str());
            let path: PathBuf = root.join(&name);
            match std::fs::read_to_string(&path) {
                Ok(src) => {
                    if let Err(e) = env.add_template_owned(name.clone(), src) {
                        problems.push(template_error(root, &e));
                        broken.insert(name);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let Some((shipped, src)) = BUILTIN.iter().find(|(n, _)| *n == name) else { continue };
                    env.add_template(shipped, src).expect("the shipped report mail compiles");
                    tracing::debug!(template = name, "report mail not in the configuration: the shipped one is used");
                }
                Err(e) => problems.push(Diagnostic::file(&path, format!("cannot read: {e}"))),
            }
        }
    }
}

/// The context a report mail is rendered with.
pub(crate) fn context(
    site: &serde_json::Value,
    brief: &Brief,
    charts: &[(String, u32, u32, String)],
) -> serde_json::Value {
    let mut c = serde_json::Map::new();
    for (id, width, height, cid) in charts {
        c.insert(id.clone(), serde_json::json!({"cid": cid, "width": width, "height": height}));
    }
    // One mail goes to every recipient, so its feedback link is the console's form
    // (management signs in), not a link signed for one person.
    let feedback = site["public_url"].as_str().map(|u| format!("{}/console/feedback/new", u.trim_end_matches('/')));
    serde_json::json!({"site": site, "brief": brief, "charts": c, "links": {"feedback": feedback}})
}

impl Templates {
    /// Renders the report mail in `locale` with `ctx` (see `context`).
    ///
    /// # Errors
    /// A `RenderError` naming the template file and line; an empty subject; output
    /// beyond the size limit.
    pub(crate) fn render_report(&self, locale: Locale, mut ctx: serde_json::Value) -> Result<Rendered, RenderError> {
        let file = format!("{}/reports/report.txt", locale.as_str());
        let (subject, text) = self.subject_and_text(&file, locale, &mut ctx)?;
        let html_file = format!("{}/reports/report.html", locale.as_str());
        let html = self
            .env
            .get_template(&html_file)
            .and_then(|t| t.render(Value::from_serialize(&ctx)))
            .map_err(|e| RenderError::from_minijinja(&html_file, &e))?;
        super::finished(file, &html_file, subject, text, &html)
    }

    /// The report mail rendered in every locale with a sample brief.
    pub(super) fn check_reports(&self, root: &Path, broken: &BTreeSet<String>) -> Vec<Diagnostic> {
        let brief = Brief::sample();
        let charts: Vec<(String, u32, u32, String)> =
            brief.charts().iter().map(|c| (c.id.to_owned(), c.width, c.height, format!("{}@report", c.id))).collect();
        let site = serde_json::json!({"name": "示例银行", "public_url": "https://orders.bank.example"});
        let mut out = Vec::new();
        for loc in LOCALES {
            if FILES.iter().any(|f| broken.contains(&format!("{}/{f}", loc.as_str()))) {
                continue;
            }
            if let Err(e) = self.render_report(loc, context(&site, &brief, &charts)) {
                out.push(e.diagnostic(root));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locale::Presentation;

    #[test]
    fn the_shipped_report_mail_shows_the_figures_and_every_chart_in_both_languages() {
        let config = Path::new(env!("CARGO_MANIFEST_DIR"));
        let t = Templates::load(config, Presentation::default()).unwrap();
        let brief = Brief::sample();
        let charts: Vec<_> =
            brief.charts().iter().map(|c| (c.id.to_owned(), c.width, c.height, format!("{}@x", c.id))).collect();
        let site = serde_json::json!({"name": "示例银行"});
        for (loc, words) in [(Locale::ZhCn, ["管理报告", "瓶颈"]), (Locale::En, ["Management report", "Bottlenecks"])]
        {
            let r = t.render_report(loc, context(&site, &brief, &charts)).unwrap();
            assert!(r.subject.contains(words[0]), "{}", r.subject);
            assert!(r.html.contains(words[1]) && r.text.contains(words[1]), "{loc:?}: {}", r.text);
            for (id, ..) in &charts {
                assert!(r.html.contains(&format!("src=\"cid:{id}@x\"")), "{loc:?} {id}: {}", r.html);
            }
            assert!(!r.html.contains("alt=\"\""), "every chart says what it shows");
            // The figures are in the text part as well.
            assert!(r.text.contains("awaiting_approval.2") || r.text.contains("2"), "{}", r.text);
        }
        // With a public address, both parts link the console's feedback form.
        let site = serde_json::json!({"name": "示例银行", "public_url": "https://orders.bank.example/"});
        for loc in LOCALES {
            let r = t.render_report(loc, context(&site, &brief, &charts)).unwrap();
            let url = "https://orders.bank.example/console/feedback/new";
            assert!(r.text.contains(url) && r.html.contains(&format!("href=\"{url}\"")), "{loc:?}: {}", r.text);
        }
        // Without a chart (nothing to draw), no image is referenced.
        let r = t.render_report(Locale::En, context(&site, &brief, &[])).unwrap();
        assert!(!r.html.contains("cid:"), "{}", r.html);
    }

    /// The sample brief's mail, pinned as the other mails are
    /// (`tests/snapshots/templates/<locale>/report.snap`; `UPDATE_SNAPSHOTS=1` rewrites).
    #[test]
    fn the_report_mail_matches_its_snapshot() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let t = Templates::load(repo, Presentation::default()).unwrap();
        let brief = Brief::sample();
        let charts: Vec<_> =
            brief.charts().iter().map(|c| (c.id.to_owned(), c.width, c.height, format!("{}@x", c.id))).collect();
        let site = serde_json::json!({"name": "示例银行", "public_url": "https://orders.bank.example"});
        for loc in LOCALES {
            let r = t.render_report(loc, context(&site, &brief, &charts)).unwrap();
            let got = format!("Subject: {}\n\n--- text ---\n{}\n--- html ---\n{}", r.subject, r.text, r.html);
            let path = repo.join("tests/snapshots/templates").join(loc.as_str()).join("report.snap");
            if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
                std::fs::write(&path, &got).unwrap();
                continue;
            }
            let want = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(want == got, "{} differs (run with UPDATE_SNAPSHOTS=1 after an intended change)", path.display());
        }
    }
}
