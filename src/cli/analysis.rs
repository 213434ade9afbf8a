//! Lifecycle step 8 on the command line: `report` and `export`.

use std::path::Path;

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::analytics::render::Format;
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
    let ((orders, events), since_at, until_at) = match &src {
        Source::Store(s, _) => {
            let (since_at, until_at) =
                crate::analytics::report::window(since.as_deref(), until, tz, chrono::Utc::now())
                    .map_err(anyhow::Error::msg)?;
            let rules = crate::config::load_rules(dir).map_err(|ds| anyhow::anyhow!("{}", ds[0]))?;
            (s.export_rows(since_at, until_at, &rules.sla.calendar).await?, since_at, until_at)
        }
        Source::Api { .. } => {
            // The daemon's clock ends the window when --until does not.
            let mut params: Vec<(&str, String)> = since.iter().map(|s| ("since", s.clone())).collect();
            params.extend(until.map(|u| ("until", u.to_owned())));
            let (text, headers) = src.api_text_with_headers("/export", &params).await?;
            let until_at = headers
                .get(crate::http::reports::UNTIL)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .context("the daemon's export names no window end")?;
            let (since_at, _) =
                crate::analytics::report::window(since.as_deref(), None, tz, until_at).map_err(anyhow::Error::msg)?;
            (rows_from_lines(&text)?, since_at, until_at)
        }
    };
    let done = crate::export::write_all(out, &orders, &events, format, since_at, until_at)?;
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

/// The rows of the daemon's export (JSON lines, `{"table": …, "row": …}`).
pub(super) fn rows_from_lines(
    text: &str,
) -> anyhow::Result<(Vec<crate::export::rows::OrderRow>, Vec<crate::export::rows::EventRow>)> {
    let (mut orders, mut events) = (Vec::new(), Vec::new());
    for line in text.lines().filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_str(line).context("reading the daemon's export")?;
        match v["table"].as_str() {
            Some("orders") => orders.push(serde_json::from_value(v["row"].clone())?),
            Some("events") => events.push(serde_json::from_value(v["row"].clone())?),
            other => bail!("the daemon's export has a row of table {other:?}"),
        }
    }
    Ok((orders, events))
}
