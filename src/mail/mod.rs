//! E-mail: every mail is an outbox effect of the built-in `mail` connector, performed
//! here over SMTP (lettre, pooled, with timeouts).
//!
//! The message is rendered when it is sent, from the snapshot the effect stored (the
//! order as it was, the recipient, the event), so a retry sends the same text. Its
//! `Message-ID` is derived from the effect id, so a copy sent again after a crash
//! (the server accepted it but we never saw the reply) is recognisable as the same
//! message, never a silently different one. SMTP replies are classified: 4xx and
//! connection failures are retried, 5xx are permanent (the server's text goes to the
//! dead letter), authentication failures alert. A scheduled report's mail, with its
//! charts inline, is composed in `report.rs`.

mod feedback;
mod report;
pub mod templates;

use std::sync::Arc;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

pub(crate) use feedback::unescape;
pub(crate) use report::preview as report_preview;
pub(crate) use templates::Templates;

use crate::connectors::{BoxFuture, ConnectorError, Outbound, Push, Receipt};
use crate::domain::OrderId;
use crate::engine::notify::MailSpec;
use crate::links::LinkSigner;
use crate::settings::{SmtpSettings, SmtpTls};

/// Sends mail effects.
pub(crate) struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    /// The right-hand side of every `Message-ID`.
    domain: String,
    templates: Arc<Templates>,
    links: Option<Arc<LinkSigner>>,
    site: Value,
}

impl Mailer {
    /// `check --online`: connects, greets (and authenticates), and quits.
    ///
    /// # Errors
    /// What the server or the connection said, without the password.
    pub(crate) async fn test_connection(&self) -> Result<String, String> {
        match self.transport.test_connection().await {
            Ok(true) => Ok("the SMTP server accepted a connection".into()),
            Ok(false) => Err("the SMTP server did not answer NOOP".into()),
            Err(e) => Err(format!("SMTP: {e}")),
        }
    }

    /// # Errors
    /// A message for a bad `from`/`reply_to` or CA file (`check` reports these first).
    pub(crate) fn new(
        s: &SmtpSettings,
        templates: Arc<Templates>,
        links: Option<Arc<LinkSigner>>,
        site_name: &str,
        public_url: &str,
    ) -> Result<Mailer, String> {
        let from: Mailbox = s.from.parse().map_err(|e| format!("smtp.from: {e}"))?;
        let reply_to = match &s.reply_to {
            None => None,
            Some(r) => Some(r.parse::<Mailbox>().map_err(|e| format!("smtp.reply_to: {e}"))?),
        };
        let params = || -> Result<TlsParameters, String> {
            let mut b = TlsParameters::builder(s.host.clone());
            if let Some(pem) = &s.ca_pem {
                b = b.add_root_certificate(Certificate::from_pem(pem).map_err(|e| format!("smtp.ca_file: {e}"))?);
            }
            b.build_rustls().map_err(|e| format!("smtp TLS: {e}"))
        };
        let tls = match s.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::StartTls => Tls::Required(params()?),
            SmtpTls::Implicit => Tls::Wrapper(params()?),
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.host.clone())
            .port(s.port)
            .tls(tls)
            .timeout(Some(s.timeout))
            .pool_config(PoolConfig::new().max_size(s.pool_max));
        if let Some(h) = &s.hello_name {
            b = b.hello_name(ClientId::Domain(h.clone()));
        }
        if let Some((user, pass)) = &s.credentials {
            b = b.credentials(Credentials::new(user.clone(), pass.expose_secret().to_owned()));
        }
        let domain = from.email.domain().to_owned();
        Ok(Mailer {
            transport: b.build(),
            from,
            reply_to,
            domain,
            templates,
            links,
            site: json!({"name": site_name, "public_url": public_url}),
        })
    }

    /// The message an effect sends: rendered, addressed, with its stable Message-ID.
    ///
    /// # Errors
    /// `Permanent` when the effect cannot become a message (a template error, a bad
    /// address): retrying would not help; the dead letter says why.
    pub(crate) fn compose(&self, body: &Value) -> Result<(Message, String), ConnectorError> {
        if body.get("report").is_some() {
            return self.compose_report(body);
        }
        if body.get("plain").is_some() {
            return self.compose_plain(body);
        }
        let permanent = |message: String| ConnectorError::Permanent { message };
        let spec: MailSpec = serde_json::from_value(body.get("mail").cloned().unwrap_or(Value::Null))
            .map_err(|e| permanent(format!("mail effect without a valid `mail` section: {e}")))?;
        let effect_id = body.get("effect_id").and_then(Value::as_str).unwrap_or_default().to_owned();
        let mut ctx = json!({
            "site": self.site,
            "recipient": {"name": spec.to.name, "email": spec.to.email},
            "order_id": body.get("order_id").cloned().unwrap_or(Value::Null),
            "state": body.get("state").cloned().unwrap_or(Value::Null),
            "order": body.get("order").cloned().unwrap_or(Value::Null),
            "event": serde_json::to_value(&spec.event).unwrap_or(Value::Null),
            "extra": if spec.extra.is_null() { json!({}) } else { spec.extra.clone() },
            "links": {},
        });
        if let Some(items) = body.get("items") {
            ctx["items"] = items.clone();
            ctx["count"] = json!(items.as_array().map_or(0, Vec::len));
        }
        if let Some(purpose) = spec.link {
            let signer = self.links.as_ref().ok_or_else(|| {
                permanent("this mail carries a link but no link key is configured ([links] secret)".into())
            })?;
            let order_id: OrderId = body
                .get("order_id")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| permanent("a link needs the effect's order id".into()))?;
            let issued = body
                .get("created_at")
                .and_then(Value::as_str)
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .map(|d| d.with_timezone(&chrono::Utc))
                .ok_or_else(|| permanent("a link needs the effect's creation time".into()))?;
            let subject = spec.to.person.as_deref().unwrap_or(&spec.to.email);
            let mut claims =
                signer.claims(purpose, order_id, subject, &format!("{effect_id}/{}", purpose.as_str()), issued);
            claims.context = spec.link_context.clone().unwrap_or_default();
            ctx["links"][purpose.as_str()] = json!(signer.url(&claims));
        }
        let feedback = self.feedback_link(body, &spec);
        if let Some(url) = &feedback {
            ctx["links"]["feedback"] = json!(url);
        }
        let mut rendered =
            self.templates.render(&spec.template, spec.to.locale, ctx).map_err(|e| permanent(e.to_string()))?;
        if let Some(url) = &feedback {
            rendered.text.push_str(&self.feedback_footer(spec.to.locale, url));
        }
        // The display name is quoted or encoded by lettre (an unknown sales owner's
        // name is their address, which may not stand unquoted before `<…>`).
        let address = spec
            .to
            .email
            .parse::<lettre::Address>()
            .map_err(|e| permanent(format!("recipient `{}`: {e}", spec.to.email)))?;
        let name = spec.to.name.replace(['\r', '\n'], "");
        let to = Mailbox::new((!name.is_empty() && name != spec.to.email).then_some(name), address);
        let (b, message_id) = self.envelope(to, &rendered.subject, effect_id);
        let msg = b
            .multipart(MultiPart::alternative_plain_html(rendered.text, rendered.html))
            .map_err(|e| permanent(format!("cannot build the message: {e}")))?;
        Ok((msg, message_id))
    }
}

impl Mailer {
    /// What every mail of an effect carries: sender, recipient, subject, a message id
    /// made of the effect id (a resent mail keeps it), `Auto-Submitted`, the effect
    /// header and the reply-to address. The one home for a mail's envelope.
    pub(super) fn envelope(
        &self,
        to: Mailbox,
        subject: &str,
        effect_id: String,
    ) -> (lettre::message::MessageBuilder, String) {
        let message_id = format!("<{}@{}>", effect_id, self.domain);
        let mut b = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(message_id.clone()))
            .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("Auto-Submitted"), "auto-generated".into()))
            .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("X-Orderbridge-Effect"), effect_id));
        if let Some(r) = &self.reply_to {
            b = b.reply_to(r.clone());
        }
        (b, message_id)
    }

    /// Sends one plain-text mail now, outside the outbox: for a console sign-in link,
    /// which is only worth anything within minutes (a failure: the person asks again).
    ///
    /// # Errors
    /// A bad address, or the SMTP server refused or could not be reached.
    pub(crate) async fn send_now(&self, to: &str, subject: &str, text: String) -> Result<(), String> {
        let address = to.parse::<lettre::Address>().map_err(|e| format!("recipient: {e}"))?;
        let mut b = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, address))
            .subject(subject)
            .message_id(Some(format!("<{}@{}>", crate::domain::ids::uuid_v7_now().simple(), self.domain)))
            .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("Auto-Submitted"), "auto-generated".into()));
        if let Some(r) = &self.reply_to {
            b = b.reply_to(r.clone());
        }
        let msg = b
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(text)
            .map_err(|e| format!("cannot build the message: {e}"))?;
        self.transport.send(msg).await.map(|_| ()).map_err(|e| classify(&e).to_string())
    }
}

/// SMTP errors → what the dispatcher does next.
fn classify(e: &lettre::transport::smtp::Error) -> ConnectorError {
    let message = e.to_string();
    let code = e.status().map(|c| c.to_string());
    match code.as_deref() {
        Some("530" | "534" | "535" | "538") => ConnectorError::Auth { message },
        _ if e.is_permanent() => ConnectorError::Permanent { message },
        _ => ConnectorError::Retryable { message, retry_after: None },
    }
}

impl Push for Mailer {
    fn perform<'a>(&'a self, effect: Outbound<'a>) -> BoxFuture<'a, Result<Receipt, ConnectorError>> {
        Box::pin(async move {
            let (msg, message_id) = self.compose(effect.body)?;
            let reply = self.transport.send(msg).await.map_err(|e| classify(&e))?;
            let code = reply.code().to_string().parse::<u16>().unwrap_or(250);
            let text = reply.message().collect::<Vec<_>>().join(" ");
            Ok(Receipt { status: code, summary: format!("{message_id} accepted: {text}"), reference: None })
        })
    }
}
