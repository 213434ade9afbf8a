//! The built-in `documents` connector: generates an order's documents (the contract
//! when execution starts, the delivery confirmation on acceptance) from
//! `config/templates/<locale>/documents/<kind>.html`, archives them under
//! `<store.path>/documents/<order>/<kind>-<sha256>.html`, and answers with the
//! SHA-256, which the audit trail records (`effect_succeeded`) and the order keeps as
//! `references."documents.<kind>"`. Generation is an outbox effect like any other: a
//! retry writes the same bytes to the same file.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::connectors::{BoxFuture, ConnectorError, Outbound, Push, Receipt};
use crate::domain::order::Locale;
use crate::mail::templates::Templates;

/// The reserved connector name (declared with the connectors, which refuse it as a
/// file name).
pub use crate::connectors::DOCUMENTS_CONNECTOR;

/// Where the dispatcher puts an effect's body as stored when it hands the documents
/// connector the body with personal data opened (`crate::vault`): the archived copy
/// keeps the tokens, the delivered one has the clear values.
pub(crate) const STORED: &str = "_stored";

pub struct Documents {
    dir: PathBuf,
    templates: Arc<Templates>,
    default_locale: Locale,
    site: Value,
    /// Where each archived document is delivered, with the operation's name.
    push: Option<(Arc<dyn Push>, String)>,
}

impl Documents {
    pub fn new(store_path: &Path, templates: Arc<Templates>, default_locale: Locale, site_name: &str) -> Documents {
        Documents {
            dir: store_path.join("documents"),
            templates,
            default_locale,
            site: json!({"name": site_name}),
            push: None,
        }
    }

    /// Delivers every archived document with `operation` of `to` (rules.toml
    /// `[documents] push`): the order id, kind, SHA-256 and the HTML itself.
    pub fn delivering_to(mut self, to: Arc<dyn Push>, operation: String) -> Self {
        self.push = Some((to, operation));
        self
    }

    /// The kinds this configuration has templates for (its operations).
    pub fn kinds(&self) -> Vec<String> {
        self.templates.documents().map(str::to_owned).collect()
    }

    /// Where a document with this hash is archived.
    pub fn path(store_path: &Path, order_id: &str, kind: &str, sha256: &str) -> PathBuf {
        store_path.join("documents").join(order_id).join(format!("{kind}-{sha256}.html"))
    }

    /// The document `kind` for the effect `body`, as HTML.
    fn render(&self, kind: &str, body: &Value) -> Result<String, ConnectorError> {
        let permanent = |message: String| ConnectorError::Permanent { message };
        let order_id = body.get("order_id").and_then(Value::as_str).ok_or_else(|| permanent("no order id".into()))?;
        let locale = body
            .pointer("/order/customer/locale")
            .and_then(|l| serde_json::from_value::<Locale>(l.clone()).ok())
            .unwrap_or(self.default_locale);
        let ctx = json!({
            "site": self.site,
            "order_id": order_id,
            "order": body.get("order").cloned().unwrap_or(Value::Null),
            "references": body.get("references").cloned().unwrap_or(Value::Null),
            "state": body.get("state").cloned().unwrap_or(Value::Null),
            "generated_at": body.get("created_at").cloned().unwrap_or(Value::Null),
        });
        self.templates.render_document(kind, locale, ctx).map_err(|e| permanent(e.to_string()))
    }

    /// Renders and archives the document; its receipt (with the SHA-256) and HTML.
    fn generate(&self, kind: &str, body: &Value) -> Result<(Receipt, String), ConnectorError> {
        let html = self.render(kind, body)?;
        let order_id = body.get("order_id").and_then(Value::as_str).unwrap_or_default();
        let sha = hex::encode(Sha256::digest(html.as_bytes()));
        let path = self.dir.join(order_id).join(format!("{kind}-{sha}.html"));
        write_durably(&path, html.as_bytes()).map_err(|e| ConnectorError::Retryable {
            message: format!("cannot archive {}: {e}", path.display()),
            retry_after: None,
        })?;
        Ok((
            Receipt {
                status: 200,
                summary: format!("{kind}.html, {} bytes, sha256 {sha}", html.len()),
                reference: Some(sha),
            },
            html,
        ))
    }
}

/// Writes a file so that it is complete or absent after a crash: a temporary file,
/// fsync, rename, fsync of the directory (and of the directories above any it had to
/// create, so a new order's directory is not lost while its document survives).
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("documents live in a directory");
    create_dir_durably(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing directory above it, each made durable in its parent.
fn create_dir_durably(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        create_dir_durably(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        // Another effect of the same order made it just now: its parent is synced
        // here too, as that one may not have got that far.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(e),
    }
    match parent {
        Some(parent) => std::fs::File::open(parent)?.sync_all(),
        None => Ok(()),
    }
}

impl Push for Documents {
    fn perform<'a>(&'a self, effect: Outbound<'a>) -> BoxFuture<'a, Result<Receipt, ConnectorError>> {
        Box::pin(async move {
            if !self.templates.documents().any(|k| k == effect.operation) {
                return Err(ConnectorError::Permanent {
                    message: format!(
                        "no document template `{}` (config/templates/<locale>/documents/{}.html)",
                        effect.operation, effect.operation
                    ),
                });
            }
            let kind = effect.operation.to_owned();
            // Archived as stored (personal data as tokens), delivered opened.
            let mut body = effect.body.clone();
            let stored = body.as_object_mut().and_then(|o| o.remove(STORED));
            let opened = stored.is_some().then(|| body.clone());
            let body = stored.unwrap_or(body);
            let this = Documents {
                dir: self.dir.clone(),
                templates: self.templates.clone(),
                default_locale: self.default_locale,
                site: self.site.clone(),
                push: None,
            };
            let (receipt, html) =
                tokio::task::spawn_blocking(move || this.generate(&kind, &body)).await.map_err(|e| {
                    ConnectorError::Retryable {
                        message: format!("document generation stopped: {e}"),
                        retry_after: None,
                    }
                })??;
            let Some((to, operation)) = &self.push else { return Ok(receipt) };
            let html = match &opened {
                Some(o) => self.render(effect.operation, o)?,
                None => html,
            };
            // The same bytes on every retry, under a key of their own.
            let key = format!("{}/document", effect.idempotency_key);
            let delivery = json!({
                "order_id": effect.body.get("order_id"),
                "external_id": effect.body.get("external_id"),
                "kind": effect.operation,
                "sha256": receipt.reference,
                "content_type": "text/html; charset=utf-8",
                "content": html,
            });
            let stored = to.perform(Outbound { operation, idempotency_key: &key, body: &delivery }).await?;
            Ok(Receipt { summary: format!("{}; delivered ({})", receipt.summary, stored.status), ..receipt })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_is_written_where_missing_directories_are_made_and_again_in_place() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("documents").join("ord_1").join("contract-ab.html");
        write_durably(&path, "合同 / contract".as_bytes()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "合同 / contract");
        write_durably(&path, b"again").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"again");
        let names: Vec<_> =
            std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["contract-ab.html"], "no temporary file left");
        // A file where a directory should be is an error, not a silent success.
        std::fs::write(root.path().join("documents").join("ord_2"), b"x").unwrap();
        let blocked = root.path().join("documents").join("ord_2").join("contract-cd.html");
        assert!(write_durably(&blocked, b"y").is_err());
    }
}
