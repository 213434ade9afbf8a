//! The polling half of a `rest` connector: one page of changed records per fetch,
//! paged by cursor, offset, page number, last id or `Link` header, with the
//! watermark written as the vendor wants it.

use std::sync::Arc;

use reqwest::header::HeaderName;
use serde_json::Value;
use serde_json_path::JsonPath;

use super::client::{Shared, next_page, select_text, with_body};
use crate::connectors::{BoxFuture, ConnectorError, Page, Poll, PollState, watermark_max};
use crate::domain::ConnectorId;
use crate::mapping::Mapping;
use crate::mapping::outbound::OutboundMapping;

pub(super) enum Paging {
    None,
    Cursor { next: JsonPath },
    Offset { limit: u32 },
    Page { start: u64, size: u32 },
    LastId { id: JsonPath, more: JsonPath },
    Link,
}

pub(super) struct PollPlan {
    pub(super) method: reqwest::Method,
    pub(super) path: String,
    pub(super) schedule: crate::schedule::Schedule,
    pub(super) mapping: Arc<Mapping>,
    pub(super) records: JsonPath,
    pub(super) watermark: JsonPath,
    pub(super) format: String,
    pub(super) start_from: Option<String>,
    pub(super) max_run_records: Option<u64>,
    pub(super) query: Vec<(String, String)>,
    pub(super) headers: Vec<(HeaderName, String)>,
    pub(super) body: Option<Arc<OutboundMapping>>,
    pub(super) paging: Paging,
}

/// The polling half of a `rest` connector.
pub struct RestPoll {
    pub(super) shared: Arc<Shared>,
    pub(super) plan: PollPlan,
}

/// How a stored watermark is written into a request.
fn render_watermark(w: &str, format: &str) -> String {
    let t = || crate::mapping::outbound::parse_time(w);
    match format {
        "rfc3339" => t().map_or_else(|| w.to_owned(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        "unix_s" => t().map_or_else(|| w.to_owned(), |t| t.timestamp().to_string()),
        "unix_ms" => t().map_or_else(|| w.to_owned(), |t| t.timestamp_millis().to_string()),
        "odoo" => t().map_or_else(|| w.to_owned(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string()),
        "http_date" => t().map_or_else(|| w.to_owned(), |t| t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()),
        _ => w.to_owned(),
    }
}

impl RestPoll {
    fn context(&self, state: &PollState) -> Value {
        let p = &self.plan;
        let (limit, page) = match p.paging {
            Paging::Offset { limit } => (u64::from(limit), 0),
            Paging::Page { start, size } => (u64::from(size), start + state.offset),
            _ => (0, 0),
        };
        serde_json::json!({
            "watermark": state.watermark.as_deref().map(|w| render_watermark(w, &p.format)).unwrap_or_default(),
            "cursor": state.cursor.clone().unwrap_or_default(),
            "offset": state.offset,
            "page": page,
            "limit": limit,
        })
    }

    /// The page's records, each with where its numbers sit in the page's `text` (so
    /// its amounts are read as the page wrote them, see mapping::numbers).
    fn records(&self, page: &Value, text: &str) -> (Vec<Value>, Vec<crate::mapping::Numbers>) {
        let texts = std::sync::Arc::new(crate::mapping::NumberTexts::of(text.as_bytes(), page));
        let located: Vec<_> = self.plan.records.query_located(page).into_iter().collect();
        match located.as_slice() {
            [one] => match one.node() {
                Value::Array(a) => {
                    let base = texts.clone().at(one.location());
                    a.iter().enumerate().map(|(i, r)| (r.clone(), base.element(i))).unzip()
                }
                r => (vec![r.clone()], vec![texts.clone().at(one.location())]),
            },
            many => many.iter().map(|l| (l.node().clone(), texts.clone().at(l.location()))).unzip(),
        }
    }

    /// The URL of the page `state` points at: the listing path and query, or the
    /// `Link` header's next page.
    fn url(&self, state: &PollState, ctx: &Value) -> Result<reqwest::Url, ConnectorError> {
        let s = &self.shared;
        match (&self.plan.paging, &state.next_url) {
            // Checked again here: a state stored by an earlier version may hold any URL.
            (Paging::Link, Some(url)) => next_page(&s.base, &s.base, url),
            _ => {
                let mut url = s.url(&self.plan.path, ctx)?;
                let mut pairs = Vec::new();
                for (k, t) in &self.plan.query {
                    let v = s.value(t, ctx)?;
                    if !v.is_empty() {
                        pairs.push((k, v));
                    }
                }
                if !pairs.is_empty() {
                    url.query_pairs_mut().extend_pairs(pairs);
                }
                Ok(url)
            }
        }
    }

    async fn fetch_page(&self, state: &PollState) -> Result<Page, ConnectorError> {
        let s = &self.shared;
        let p = &self.plan;
        let ctx = self.context(state);
        let url = self.url(state, &ctx)?;
        let page_url = url.clone();
        let mut req = s.request(p.method.clone(), url).await?;
        for (h, t) in &p.headers {
            let v = s.value(t, &ctx)?;
            if !v.is_empty() {
                req = req.header(h.clone(), v);
            }
        }
        if let Some(b) = &p.body {
            req = with_body(req, &b.render(&ctx).map_err(|e| ConnectorError::Permanent { message: e.to_string() })?);
        }
        let (receipt, headers) = s.send(req).await?;
        let link_next = link_next(&headers);
        let page: Value = serde_json::from_str(&receipt.summary)
            .map_err(|e| ConnectorError::Permanent { message: format!("the page is not JSON: {e}") })?;
        // Each record keeps where it sits in the page, so its amounts are read as the
        // page wrote them (see mapping::numbers).
        let (records, numbers) = self.records(&page, &receipt.summary);
        let page_max = records
            .iter()
            .filter_map(|r| p.watermark.query(r).first().and_then(crate::connectors::normalize_watermark))
            .fold(None, |m, w| watermark_max(m, Some(w)));
        let next = match &p.paging {
            Paging::None => None,
            Paging::Cursor { next } => {
                select_text(next, &page).map(|c| PollState { cursor: Some(c), ..Default::default() })
            }
            Paging::Offset { limit } | Paging::Page { size: limit, .. } if records.len() >= *limit as usize => {
                let step = if matches!(p.paging, Paging::Page { .. }) { 1 } else { u64::from(*limit) };
                Some(PollState { offset: state.offset + step, ..Default::default() })
            }
            Paging::Offset { .. } | Paging::Page { .. } => None,
            Paging::LastId { id, more } => {
                let more = matches!(more.query(&page).first(), Some(Value::Bool(true)));
                records
                    .last()
                    .and_then(|r| select_text(id, r))
                    .filter(|_| more)
                    .map(|c| PollState { cursor: Some(c), ..Default::default() })
            }
            Paging::Link => match link_next {
                Some(u) => Some(PollState {
                    next_url: Some(next_page(&s.base, &page_url, &u)?.to_string()),
                    ..Default::default()
                }),
                None => None,
            },
        };
        let (next, more) = state.advance(page_max, records.len(), next, p.max_run_records);
        Ok(Page { records, numbers, next, more })
    }
}

/// The URL a `Link: <…>; rel="next"` header names, as written.
fn link_next(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find(|part| part.contains("rel=\"next\"") || part.contains("rel=next"))
        .and_then(|part| part.split(';').next())
        .map(|u| u.trim().trim_start_matches('<').trim_end_matches('>').to_owned())
}

impl Poll for RestPoll {
    fn id(&self) -> &ConnectorId {
        &self.shared.id
    }
    fn schedule(&self) -> &crate::schedule::Schedule {
        &self.plan.schedule
    }
    fn mapping(&self) -> &Arc<Mapping> {
        &self.plan.mapping
    }
    fn initial(&self) -> PollState {
        PollState { watermark: self.plan.start_from.clone(), ..Default::default() }
    }
    fn fetch<'a>(&'a self, state: &'a PollState) -> BoxFuture<'a, Result<Page, ConnectorError>> {
        Box::pin(self.fetch_page(state))
    }
}

#[cfg(test)]
mod poll_tests {
    use super::*;

    #[test]
    fn watermarks_compare_as_numbers_times_or_text() {
        let m = |a: Option<&str>, b: Option<&str>| watermark_max(a.map(String::from), b.map(String::from));
        assert_eq!(m(Some("9"), Some("10")).as_deref(), Some("10"), "numbers, not text");
        assert_eq!(m(Some("1700000000000"), Some("999")).as_deref(), Some("1700000000000"));
        assert_eq!(
            m(Some("2026-11-26T10:09:00Z"), Some("2026-11-26T09:59:00Z")).as_deref(),
            Some("2026-11-26T10:09:00Z")
        );
        assert_eq!(
            m(Some("2026-11-26T10:09:00.500Z"), Some("2026-11-26T10:09:01Z")).as_deref(),
            Some("2026-11-26T10:09:01Z"),
            "times, not text"
        );
        assert_eq!(m(None, Some("5")).as_deref(), Some("5"));
        assert_eq!(m(Some("5"), None).as_deref(), Some("5"));
        assert_eq!(m(None, None), None);
    }

    #[test]
    fn a_capped_run_ends_early_and_the_next_continues_from_its_newest_mark() {
        let start = PollState { watermark: Some("100".into()), ..Default::default() };
        let more = || Some(PollState { cursor: Some("c".into()), ..Default::default() });
        let (s1, go) = start.advance(Some("150".into()), 100, more(), Some(250));
        assert!(go && s1.run_records == 100 && s1.watermark.as_deref() == Some("100"));
        let (s2, go) = s1.advance(Some("180".into()), 100, more(), Some(250));
        assert!(go && s2.run_records == 200);
        // The third page reaches the cap: the run ends although the source has more.
        let (s3, go) = s2.advance(Some("199".into()), 100, more(), Some(250));
        assert!(!go);
        assert_eq!(s3, PollState { watermark: Some("199".into()), ..Default::default() });
        // Without a cap the run goes on.
        assert!(s2.advance(Some("199".into()), 100, more(), None).1);
    }

    #[test]
    fn watermarks_are_stored_alike_and_written_as_each_vendor_wants() {
        let n = |v: Value| crate::connectors::normalize_watermark(&v).unwrap();
        assert_eq!(n(serde_json::json!(42)), "42");
        assert_eq!(n(serde_json::json!("2026-11-26 02:03:04")), "2026-11-26 02:03:04");
        // Every shape a vendor writes, rewritten the way its API reads it.
        for w in ["2026-11-26T02:03:04Z", "/Date(1795658584000+0000)/", "2026-11-26 02:03:04", "1795658584000"] {
            assert_eq!(render_watermark(w, "rfc3339"), "2026-11-26T02:03:04.000Z", "{w}");
            assert_eq!(render_watermark(w, "unix_ms"), "1795658584000", "{w}");
            assert_eq!(render_watermark(w, "unix_s"), "1795658584", "{w}");
            assert_eq!(render_watermark(w, "odoo"), "2026-11-26 02:03:04", "{w}");
            assert_eq!(render_watermark(w, "http_date"), "Thu, 26 Nov 2026 02:03:04 GMT", "{w}");
            assert_eq!(render_watermark(w, "text"), w);
        }
        // Marks of one source compare as times even when written differently.
        assert_eq!(
            watermark_max(Some("/Date(1795658584000+0000)/".into()), Some("/Date(1795658583000+0000)/".into()))
                .as_deref(),
            Some("/Date(1795658584000+0000)/")
        );
    }
}
