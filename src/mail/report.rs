//! A scheduled management report as a message: the brief the effect stored, rendered
//! (`templates/report.rs`) and drawn (`analytics::brief::Brief::charts`) when it is
//! sent, so a retry sends the same bytes. The structure common clients show inline:
//!
//! ```text
//! multipart/alternative
//! ├── text/plain                      the figures as text
//! └── multipart/related
//!     ├── text/html                   <img src="cid:received.<effect>@<domain>" alt="…">
//!     └── image/png × charts          Content-ID, Content-Disposition: inline
//! ```
//!
//! `preview` is the same HTML for a browser (the charts as `data:` URLs), for
//! `orderbridge report --mail NAME` and `GET /api/reports/scheduled/{name}`.

use lettre::Message;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use serde_json::Value;

use super::{Mailer, Templates};
use crate::analytics::brief::Brief;
use crate::connectors::ConnectorError;
use crate::engine::calendar::Calendar;
use crate::engine::notify::Recipient;
use crate::locale::Locale;
use crate::orders::Orders;
use crate::reports::ReportSpec;

/// The HTML of the mail `spec` would send at `at` (the period before it), its charts
/// inline as `data:` URLs, in the report's language (else `default`).
///
/// # Errors
/// A store that cannot be read, or a template that does not render.
pub(crate) async fn preview(
    orders: &Orders,
    (spec, at, calendar): (&ReportSpec, chrono::DateTime<chrono::Utc>, &Calendar),
    templates: &Templates,
    site_name: &str,
    default: Locale,
) -> Result<String, String> {
    use base64::Engine as _;
    let span = spec.period.before(at, calendar.tz);
    let brief = orders.report_brief(spec, &span, calendar).await.map_err(|e| e.to_string())?;
    let charts = brief.charts();
    let ids: Vec<(String, u32, u32, String)> =
        charts.iter().map(|c| (c.id.to_owned(), c.width, c.height, format!("{}@preview", c.id))).collect();
    let site = serde_json::json!({"name": site_name});
    let ctx = super::templates::report_context(&site, &brief, &ids);
    let mut html = templates.render_report(spec.locale.unwrap_or(default), ctx).map_err(|e| e.to_string())?.html;
    for (chart, (_, _, _, cid)) in charts.iter().zip(&ids) {
        let data = base64::engine::general_purpose::STANDARD.encode(&chart.png);
        html = html.replace(&format!("cid:{cid}"), &format!("data:image/png;base64,{data}"));
    }
    Ok(html)
}

impl Mailer {
    /// The message of a report effect (its body has `report`, `to` and `locale`).
    ///
    /// # Errors
    /// `Permanent` when the stored effect cannot become a message.
    pub(super) fn compose_report(&self, body: &Value) -> Result<(Message, String), ConnectorError> {
        let permanent = |message: String| ConnectorError::Permanent { message };
        let brief: Brief = serde_json::from_value(body["report"].clone())
            .map_err(|e| permanent(format!("report effect without a valid `report`: {e}")))?;
        let to: Vec<Recipient> = serde_json::from_value(body["to"].clone())
            .map_err(|e| permanent(format!("report effect without valid recipients: {e}")))?;
        let locale: Locale = serde_json::from_value(body["locale"].clone()).unwrap_or(Locale::ZhCn);
        let effect_id = body["effect_id"].as_str().unwrap_or_default().to_owned();
        // Content ids are unique per message and stable across retries.
        let charts = brief.charts();
        let ids: Vec<(String, u32, u32, String)> = charts
            .iter()
            .map(|c| (c.id.to_owned(), c.width, c.height, format!("{}.{}@{}", c.id, effect_id, self.domain)))
            .collect();
        let ctx = super::templates::report_context(&self.site, &brief, &ids);
        let rendered = self.templates.render_report(locale, ctx).map_err(|e| permanent(e.to_string()))?;
        let message_id = format!("<{}@{}>", effect_id, self.domain);
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(rendered.subject)
            .message_id(Some(message_id.clone()))
            .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("Auto-Submitted"), "auto-generated".into()))
            .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("X-Orderbridge-Effect"), effect_id))
            .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("X-Orderbridge-Report"), brief.name.clone()));
        for r in &to {
            let address =
                r.email.parse::<lettre::Address>().map_err(|e| permanent(format!("recipient `{}`: {e}", r.email)))?;
            let name = r.name.replace(['\r', '\n'], "");
            b = b.to(Mailbox::new((!name.is_empty() && name != r.email).then_some(name), address));
        }
        if let Some(r) = &self.reply_to {
            b = b.reply_to(r.clone());
        }
        let png: ContentType = ContentType::parse("image/png").expect("a valid content type");
        let mut related = MultiPart::related().singlepart(SinglePart::html(rendered.html));
        for (chart, (_, _, _, cid)) in charts.into_iter().zip(ids) {
            let part = Attachment::new_inline_with_name(cid, format!("{}.png", chart.id)).body(chart.png, png.clone());
            related = related.singlepart(part);
        }
        let msg = b
            .multipart(MultiPart::alternative().singlepart(SinglePart::plain(rendered.text)).multipart(related))
            .map_err(|e| permanent(format!("cannot build the message: {e}")))?;
        Ok((msg, message_id))
    }
}
