//! Lifecycle step 8 on the command line: `report` (also a scheduled report's mail,
//! `--mail`) and `export`.

use std::path::Path;

use anyhow::{Context as _, bail};

use crate::analytics::render::Format;
use crate::export::Export;
use crate::settings::Settings;

use super::*;

pub(super) async fn report(dir: &Path, from: &str, to: Option<&str>, format: Format) -> anyhow::Result<i32> {
    let src = Source::open(dir).await?;
    let body = match &src {
        Source::Store(s, _) => {
            let settings = Settings::load_with(dir, false).map_err(|ds| anyhow::anyhow!("{}", ds[0]))?;
            let rules = crate::config::load_rules(dir).map_err(|ds| anyhow::anyhow!("{}", ds[0]))?;
            let tz = settings.presentation.time_zone;
            let (from, to) =
                crate::analytics::report::period(from, to, tz, chrono::Utc::now()).map_err(anyhow::Error::msg)?;
            crate::analytics::render::write(&s.kpi_report(from, to, &rules.sla.calendar).await?, format)
        }
        Source::Api { .. } => {
            let mut params = vec![("from", from.to_owned()), ("format", format!("{format:?}").to_lowercase())];
            params.extend(to.map(|t| ("to", t.to_owned())));
            src.api_text("/reports/kpis", &params).await?
        }
    };
    print!("{body}");
    Ok(0)
}

/// Prints the HTML mail the `[[reports]]` entry `name` would send at `at`.
pub(super) async fn report_mail(dir: &Path, name: &str, at: Option<&str>) -> anyhow::Result<i32> {
    let src = Source::open(dir).await?;
    let body = match &src {
        Source::Store(s, _) => {
            let first = |ds: Vec<crate::diagnostics::Diagnostic>| anyhow::anyhow!("{}", ds[0]);
            let settings = Settings::load_with(dir, false).map_err(first)?;
            let mut rules = crate::config::load_rules(dir).map_err(first)?;
            // As the daemon runs it: business hours in the site's zone.
            rules.sla.calendar.tz = settings.presentation.time_zone;
            let (reports, _) = crate::reports::load(dir).map_err(first)?;
            let templates = crate::mail::Templates::load(dir, settings.presentation).map_err(first)?;
            let Some(spec) = reports.iter().find(|r| r.name == name) else {
                bail!("no [[reports]] entry named `{name}` in config/notifications.toml");
            };
            let tz = settings.presentation.time_zone;
            let at = match at {
                None => chrono::Utc::now(),
                Some(a) => {
                    crate::analytics::report::period(a, None, tz, chrono::DateTime::<chrono::Utc>::MAX_UTC)
                        .map_err(|_| anyhow::anyhow!("at: `{a}` is not a date or an RFC 3339 time"))?
                        .0
                }
            };
            let default = settings.presentation.default_locale;
            crate::mail::report_preview(s, (spec, at, &rules.sla.calendar), &templates, &settings.site_name, default)
                .await
                .map_err(anyhow::Error::msg)?
        }
        Source::Api { .. } => {
            let params: Vec<(&str, String)> = at.map(|a| ("at", a.to_owned())).into_iter().collect();
            let path = format!(
                "/reports/scheduled/{}",
                percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
            );
            src.api_text(&path, &params).await?
        }
    };
    print!("{body}");
    Ok(0)
}

pub(super) async fn export(
    dir: &Path,
    since: Option<String>,
    until: Option<&str>,
    format: crate::export::write::Format,
    out: &Path,
) -> anyhow::Result<i32> {
    std::fs::create_dir_all(out).with_context(|| format!("making {}", out.display()))?;
    let settings = Settings::load_with(dir, false).map_err(|ds| anyhow::anyhow!("{}", ds[0]))?;
    let tz = settings.presentation.time_zone;
    let since = match since {
        Some(s) => Some(s),
        None => crate::export::last_until(out)?.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    };
    let src = Source::open(dir).await?;
    let done = match &src {
        Source::Store(s, _) => {
            let (since_at, until_at) =
                crate::analytics::report::window(since.as_deref(), until, tz, chrono::Utc::now())
                    .map_err(anyhow::Error::msg)?;
            let rules = crate::config::load_rules(dir).map_err(|ds| anyhow::anyhow!("{}", ds[0]))?;
            let mut export = Export::begin(out, format, since_at, until_at)?;
            let mut pages = s.export_pages(since_at, until_at, rules.sla.calendar.clone());
            while let Some(page) = pages.recv().await {
                let (orders, events) = page?;
                orders.into_iter().try_for_each(|r| export.order(r))?;
                events.into_iter().try_for_each(|r| export.event(r))?;
            }
            export.finish()?
        }
        Source::Api { .. } => from_daemon(&src, since.as_deref(), until, tz, format, out).await?,
    };
    let since_text = done.since.map_or_else(|| "the beginning".to_owned(), |s| s.to_rfc3339());
    println!(
        "exported {} orders and {} events changed from {since_text} to {} into {} files under {}",
        done.orders,
        done.events,
        done.until.to_rfc3339(),
        done.files.len(),
        out.display()
    );
    Ok(0)
}

/// The export of the daemon holding the store, read as it streams its JSON lines.
async fn from_daemon(
    src: &Source,
    since: Option<&str>,
    until: Option<&str>,
    tz: chrono_tz::Tz,
    format: crate::export::write::Format,
    out: &Path,
) -> anyhow::Result<crate::export::Exported> {
    // The daemon's clock ends the window when --until does not.
    let mut params: Vec<(&str, String)> = since.iter().map(|s| ("since", (*s).to_owned())).collect();
    params.extend(until.map(|u| ("until", u.to_owned())));
    let mut resp = src.api_get("/export", &params).await?;
    let until_at = resp
        .headers()
        .get(crate::http::reports::UNTIL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .context("the daemon's export names no window end")?;
    let (since_at, _) = crate::analytics::report::window(since, None, tz, until_at).map_err(anyhow::Error::msg)?;
    let mut export = Export::begin(out, format, since_at, until_at)?;
    let mut lines = Lines::default();
    while let Some(chunk) = resp.chunk().await.context("reading the daemon's export")? {
        lines.feed(&chunk, |line| export.json_line(line))?;
    }
    if !lines.pending.is_empty() {
        bail!("the daemon's export ended in the middle of a line: nothing was recorded, run it again");
    }
    export.finish()
}

/// Lines out of a body that comes in pieces cut anywhere.
#[derive(Default)]
struct Lines {
    /// The start of a line whose end has not come yet.
    pending: Vec<u8>,
}

impl Lines {
    /// Gives `each` every line `chunk` completes (without its newline; empty lines
    /// skipped), and keeps the rest.
    fn feed(&mut self, chunk: &[u8], mut each: impl FnMut(&[u8]) -> anyhow::Result<()>) -> anyhow::Result<()> {
        self.pending.extend_from_slice(chunk);
        let complete = self.pending.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        for line in self.pending[..complete].split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            each(line)?;
        }
        self.pending.drain(..complete);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Lines;

    #[test]
    fn lines_cut_anywhere_come_out_whole() {
        let body = "{\"a\":\"订单\"}\n\n{\"b\":2}\n{\"c\":3}\n";
        for cut in 0..body.len() {
            let (mut lines, mut got) = (Lines::default(), Vec::new());
            for piece in [&body.as_bytes()[..cut], &body.as_bytes()[cut..]] {
                lines
                    .feed(piece, |l| {
                        got.push(String::from_utf8(l.to_vec())?);
                        Ok(())
                    })
                    .unwrap();
            }
            assert_eq!(got, ["{\"a\":\"订单\"}", "{\"b\":2}", "{\"c\":3}"], "cut at {cut}");
            assert!(lines.pending.is_empty());
        }
        let mut lines = Lines::default();
        lines.feed(b"{\"a\":1}\n{\"b\"", |_| Ok(())).unwrap();
        assert_eq!(lines.pending, b"{\"b\"");
    }
}
