//! `orderbridge check`: prints the problems the configuration loader
//! (`crate::config`) found, one `path:line:col: message` each, and a summary; with
//! `--online`, asks each system whether it answers.

use std::path::Path;

// The loader's old home: tests and benches still name these paths.
pub use crate::config::{Loaded, load_all, load_rules};
use crate::mail::templates::LOCALES;

/// Exit code for configuration errors (sysexits EX_CONFIG).
pub(crate) const EX_CONFIG: i32 = 78;

/// Counts the files `check` looks at (for its summary line).
fn count_files(config_dir: &Path) -> usize {
    let n = |d: &str| {
        std::fs::read_dir(config_dir.join(d))
            .map(|r| r.filter_map(Result::ok).filter(|e| e.path().extension().is_some_and(|x| x == "toml")).count())
            .unwrap_or(0)
    };
    let templates = LOCALES
        .iter()
        .map(|l| {
            std::fs::read_dir(crate::mail::templates::dir(config_dir).join(l.as_str()))
                .map(|r| r.filter_map(Result::ok).filter(|e| e.path().is_file()).count())
                .unwrap_or(0)
        })
        .sum::<usize>();
    n("config") + n("connectors") + n("mappings") + templates
}

/// `orderbridge check`: prints every problem and a summary; returns the exit code.
pub(crate) fn run_check(config_dir: &Path) -> i32 {
    let (lines, ok) = report(config_dir);
    for l in &lines {
        println!("{l}");
    }
    if ok { 0 } else { EX_CONFIG }
}

/// What `check` prints: each problem (or, when there is none, each note), then the
/// summary line; and whether the configuration loads. `orderbridge check` and the
/// console's administration page show it.
pub(crate) fn report(config_dir: &Path) -> (Vec<String>, bool) {
    let files = count_files(config_dir);
    match load_all(config_dir) {
        Ok(loaded) => {
            let mut lines: Vec<String> = loaded.notes.iter().map(ToString::to_string).collect();
            lines.push(format!("{files} files checked, 0 problems"));
            (lines, true)
        }
        Err(problems) => {
            let mut lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
            let n = problems.len();
            lines.push(format!("{files} files checked, {n} problem{}", if n == 1 { "" } else { "s" }));
            (lines, false)
        }
    }
}

/// Exit code of `check --online` when a system cannot be reached or refuses us.
pub(crate) const EX_UNAVAILABLE: i32 = 69;

/// `orderbridge check --online`: calls each connector's health check (and the SMTP
/// server, and the console's OpenID Connect provider), at most 20 seconds each; prints
/// one line per system.
pub(crate) async fn run_online(config_dir: &Path) -> i32 {
    let Ok(loaded) = load_all(config_dir) else { return EX_CONFIG };
    let limit = std::time::Duration::from_secs(20);
    let mut failed = 0;
    let mut report = |name: &str, r: Result<String, String>| match r {
        Ok(m) => println!("{name}: ok ({m})"),
        Err(e) => {
            failed += 1;
            println!("{name}: FAILED: {e}");
        }
    };
    for c in loaded.registry.connectors.values() {
        match &c.health {
            None => println!("{}: no health check ({} kind without [health])", c.id, c.kind),
            Some(h) => {
                let r = match tokio::time::timeout(limit, h.check()).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("no answer within {} s", limit.as_secs())),
                };
                report(c.id.as_str(), r);
            }
        }
    }
    if let (Some(smtp), Some(templates)) = (&loaded.settings.smtp, &loaded.templates) {
        let public = loaded.settings.public_url.clone().unwrap_or_default();
        let r = match crate::mail::Mailer::new(smtp, templates.clone(), None, &loaded.settings.site_name, &public) {
            Ok(m) => match tokio::time::timeout(limit, m.test_connection()).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {} s", limit.as_secs())),
            },
            Err(e) => Err(e),
        };
        report(crate::engine::notify::MAIL_CONNECTOR, r);
    }
    if let Some(o) = &loaded.settings.oidc {
        let r = match crate::auth::oidc::Oidc::new(o.clone(), "") {
            Ok(c) => tokio::time::timeout(limit, c.check())
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {} s", limit.as_secs()))),
            Err(e) => Err(e),
        };
        report("console.oidc", r);
    }
    if failed == 0 {
        println!("every system answered");
        0
    } else {
        println!("{failed} system{} did not answer as expected", if failed == 1 { "" } else { "s" });
        EX_UNAVAILABLE
    }
}
