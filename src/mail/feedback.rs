//! The feedback channel in mail: every workflow mail carries a link to the feedback
//! form (`links.feedback`, for the person or address it was sent to, on its order),
//! shown in the HTML layout's footer and appended to the text part; and the
//! acknowledgement of a report, queued already rendered (`plain`), is built here.

use lettre::Message;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use serde_json::Value;

use super::Mailer;
use crate::connectors::ConnectorError;
use crate::domain::OrderId;
use crate::engine::notify::MailSpec;
use crate::links::{LinkPurpose, LinkSigner};
use crate::locale::Locale;

impl Mailer {
    /// The feedback link for `spec`'s recipient on the effect's order (none without link keys).
    pub(super) fn feedback_link(&self, body: &Value, spec: &MailSpec) -> Option<String> {
        let signer: &LinkSigner = self.links.as_deref()?;
        let order_id: OrderId =
            body.get("order_id").and_then(Value::as_str).and_then(|s| s.parse().ok()).unwrap_or_else(OrderId::nil);
        let issued = body
            .get("created_at")
            .and_then(Value::as_str)
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|d| d.with_timezone(&chrono::Utc))?;
        let effect_id = body.get("effect_id").and_then(Value::as_str).unwrap_or_default();
        let subject = spec.to.person.as_deref().unwrap_or(&spec.to.email);
        let claims = signer.claims(LinkPurpose::Feedback, order_id, subject, &format!("{effect_id}/feedback"), issued);
        Some(signer.url(&claims))
    }

    /// The text part's last paragraph: the feedback line and `url`.
    pub(super) fn feedback_footer(&self, locale: Locale, url: &str) -> String {
        let words = self
            .templates
            .render_fragment("feedback", locale, serde_json::json!({"view": "mail_footer"}))
            .unwrap_or_default();
        format!("\n\n{} {url}\n", unescape(&words))
    }

    /// A mail queued already rendered: `plain` = {to, subject, text}.
    pub(super) fn compose_plain(&self, body: &Value) -> Result<(Message, String), ConnectorError> {
        let permanent = |message: String| ConnectorError::Permanent { message };
        let plain = &body["plain"];
        let to = plain["to"].as_str().unwrap_or_default();
        let address = to.parse::<lettre::Address>().map_err(|e| permanent(format!("recipient `{to}`: {e}")))?;
        let effect_id = body["effect_id"].as_str().unwrap_or_default().to_owned();
        let subject = plain["subject"].as_str().unwrap_or_default();
        let (b, message_id) = self.envelope(Mailbox::new(None, address), subject, effect_id);
        let msg = b
            .header(ContentType::TEXT_PLAIN)
            .body(plain["text"].as_str().unwrap_or_default().to_owned())
            .map_err(|e| permanent(format!("cannot build the message: {e}")))?;
        Ok((msg, message_id))
    }
}

/// Page text (escaped HTML) back to plain text.
pub(crate) fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&amp;", "&")
}
