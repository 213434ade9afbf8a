//! The outbound half of a `rest` connector: an operation's calls (an optional
//! look-up for what an unanswered attempt created, the first call, then further
//! steps), each with the effect's idempotency key. A call without a body mapping
//! sends the effect's envelope (no personal data), or the whole snapshot when the
//! operation opts in (`body = "snapshot"`).

use std::collections::BTreeMap;
use std::sync::Arc;

use reqwest::header::HeaderName;
use serde_json::Value;
use serde_json_path::JsonPath;
use tokio::sync::Semaphore;

use super::client::{Shared, select_text, with_body};
use crate::connectors::{BoxFuture, ConnectorError, Outbound, Push, Receipt};
use crate::mapping::outbound::OutboundMapping;

/// One HTTP call of an operation.
pub(super) struct Call {
    pub(super) method: reqwest::Method,
    /// Template name of the path in `Shared::paths`.
    pub(super) path: String,
    pub(super) body: Option<Arc<OutboundMapping>>,
}

pub(super) struct Lookup {
    pub(super) path: String,
    pub(super) query: Vec<(String, String)>,
    pub(super) found: JsonPath,
}

pub(super) struct Operation {
    pub(super) first: Call,
    pub(super) then: Vec<Call>,
    pub(super) idempotency_header: Option<HeaderName>,
    pub(super) reference: Option<JsonPath>,
    pub(super) headers: Vec<(HeaderName, String)>,
    pub(super) lookup: Option<Lookup>,
    /// `body = "snapshot"`: the first call without a mapping sends the whole effect
    /// (the order snapshot) instead of the envelope.
    pub(super) snapshot: bool,
}

/// The `body` that opts an operation into the whole order snapshot.
pub(crate) const SNAPSHOT_BODY: &str = "snapshot";

/// The outbound half of a `rest` connector.
pub struct RestPush {
    pub(super) shared: Arc<Shared>,
    pub(super) operations: BTreeMap<String, Operation>,
    pub(super) permits: Semaphore,
}

impl RestPush {
    async fn call(
        &self,
        call: &Call,
        op: &Operation,
        ctx: &Value,
        key: &str,
    ) -> Result<(Receipt, Value), ConnectorError> {
        let s = &self.shared;
        let mut req = s.request(call.method.clone(), s.url(&call.path, ctx)?).await?;
        if let Some(h) = &op.idempotency_header {
            req = req.header(h.clone(), key);
        }
        for (h, t) in &op.headers {
            req = req.header(h.clone(), s.value(t, ctx)?);
        }
        req = match &call.body {
            Some(m) => {
                with_body(req, &m.render(ctx).map_err(|e| ConnectorError::Permanent { message: e.to_string() })?)
            }
            None if call.method == reqwest::Method::GET => req,
            None if std::ptr::eq(call, &op.first) && op.snapshot => req.json(&ctx["effect"]),
            None if std::ptr::eq(call, &op.first) => req.json(&crate::engine::effects::envelope(&ctx["effect"])),
            None => req,
        };
        let (receipt, _) = s.send(req).await?;
        let json = serde_json::from_str(&receipt.summary).unwrap_or(Value::Null);
        Ok((receipt, json))
    }

    /// Asks whether an earlier attempt already created the record.
    async fn look_up(&self, lookup: &Lookup, ctx: &Value) -> Result<Option<Receipt>, ConnectorError> {
        let s = &self.shared;
        let mut url = s.url(&lookup.path, ctx)?;
        {
            let mut q = url.query_pairs_mut();
            for (k, t) in &lookup.query {
                let v = s.value(t, ctx)?;
                if !v.is_empty() {
                    q.append_pair(k, &v);
                }
            }
        }
        match s.send(s.request(reqwest::Method::GET, url).await?).await {
            Ok((r, _)) => {
                let json: Value = serde_json::from_str(&r.summary).unwrap_or(Value::Null);
                Ok(select_text(&lookup.found, &json).map(|id| Receipt {
                    status: r.status,
                    summary: format!("found {id}, created by an earlier attempt; not created again"),
                    reference: Some(id),
                }))
            }
            Err(ConnectorError::Permanent { message }) if message.starts_with("HTTP 404") => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Push for RestPush {
    fn perform<'a>(&'a self, effect: Outbound<'a>) -> BoxFuture<'a, Result<Receipt, ConnectorError>> {
        Box::pin(async move {
            let op = self.operations.get(effect.operation).ok_or_else(|| ConnectorError::Permanent {
                message: format!("connector {} has no operation `{}`", self.shared.id, effect.operation),
            })?;
            let _permit = self.permits.acquire().await.expect("semaphore is never closed");
            // The template context: the effect's fields at the top, plus the key.
            let mut ctx = effect.body.clone();
            if let Value::Object(m) = &mut ctx {
                m.insert("idempotency_key".into(), Value::String(effect.idempotency_key.to_owned()));
                m.insert("connector".into(), Value::String(self.shared.id.to_string()));
                m.insert("effect".into(), effect.body.clone());
            }
            if let Some(l) = &op.lookup
                && let Some(found) = self.look_up(l, &ctx).await?
            {
                return Ok(found);
            }
            let (mut receipt, response) = self.call(&op.first, op, &ctx, effect.idempotency_key).await?;
            if let Some(path) = &op.reference {
                receipt.reference = select_text(path, &response);
            }
            // The summary goes into the audit trail: the receiver's answer, cut and scrubbed.
            receipt.summary = crate::connectors::scrub::excerpt(&receipt.summary, &self.shared.secrets);
            if !op.then.is_empty() {
                if let Value::Object(m) = &mut ctx {
                    m.insert("reference".into(), receipt.reference.clone().map_or(Value::Null, Value::String));
                    m.insert("response".into(), response);
                }
                for (i, step) in op.then.iter().enumerate() {
                    let key = format!("{}/{}", effect.idempotency_key, i + 1);
                    self.call(step, op, &ctx, &key).await?;
                }
                receipt.summary = format!("{} (then {} more calls, all answered 2xx)", receipt.summary, op.then.len());
            }
            Ok(receipt)
        })
    }
}
