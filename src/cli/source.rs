//! Where read commands get their data: the store itself when no daemon holds it,
//! otherwise the running daemon's admin API.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::domain::OrderId;
use crate::metrics::Metrics;
use crate::orders::Orders;
use crate::settings::Settings;
use crate::store::StoreError;

/// Where read commands get their data.
pub(super) enum Source {
    /// The store, and the archive beside it.
    Store(Arc<Orders>, Arc<crate::archive::Archive>),
    Api {
        base: String,
        token: Option<String>,
        client: reqwest::Client,
    },
}

impl Source {
    pub(super) async fn open(config_dir: &Path) -> anyhow::Result<Source> {
        let settings = Settings::load_with(config_dir, false)
            .map_err(|ds| anyhow::anyhow!(ds.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))?;
        if !crate::store::exists(&settings.store) {
            bail!(
                "no store at {} (is --config-dir right? store.path is relative to it)",
                settings.store_path.display()
            );
        }
        let options = crate::store::Options {
            cache_bytes: 16 * 1024 * 1024,
            commit_delay: std::time::Duration::ZERO,
            ..settings.store.clone()
        };
        match crate::store::open(&options, Arc::new(Metrics::default())).await {
            Ok(s) => {
                let orders = Arc::new(
                    Orders::new(s)
                        .with_audit_keys(settings.audit_keys.clone())
                        .with_privacy_keys(settings.privacy_keys.clone()),
                );
                let archive = crate::archive::Archive::new(orders.clone(), settings.archive.clone());
                Ok(Source::Store(orders, Arc::new(archive)))
            }
            Err(StoreError::Locked(_)) => {
                // The admin listener serves /api (the public one does not).
                let mut addr = settings.admin_listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                let token = settings.admin_token.as_ref().map(|t| t.expose_secret().to_owned());
                if token.is_none() {
                    bail!(
                        "the daemon holds the store; set the admin token (server.admin_token) so this command can use its API"
                    );
                }
                crate::connectors::install_crypto_provider();
                let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60)).build()?;
                Ok(Source::Api { base: format!("http://{addr}/api"), token, client })
            }
            Err(e) => Err(e).context(format!("opening the store at {}", settings.store_path.display())),
        }
    }

    /// A GET of `path` with `params` whose answer is text (a report, JSON lines).
    pub(super) async fn api_text(&self, path: &str, params: &[(&str, String)]) -> anyhow::Result<String> {
        Ok(self.api_text_with_headers(path, params).await?.0)
    }

    /// `api_text`, with the answer's headers.
    pub(super) async fn api_text_with_headers(
        &self,
        path: &str,
        params: &[(&str, String)],
    ) -> anyhow::Result<(String, reqwest::header::HeaderMap)> {
        let resp = self.api_get(path, params).await?;
        let headers = resp.headers().clone();
        Ok((resp.text().await.context("reading the daemon's answer")?, headers))
    }

    /// A successful answer to `GET path?params`, its body still to be read (a piece at
    /// a time with `chunk()` when it is long).
    ///
    /// # Errors
    /// The daemon cannot be called, or answers with an error (its message).
    pub(super) async fn api_get(&self, path: &str, params: &[(&str, String)]) -> anyhow::Result<reqwest::Response> {
        let Source::Api { base, token, client } = self else { unreachable!("api_get() is only called on Source::Api") };
        let mut req = client.get(reqwest::Url::parse_with_params(&format!("{base}{path}"), params)?);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.context("calling the daemon's API")?;
        if !resp.status().is_success() {
            let text = resp.text().await.context("reading the daemon's answer")?;
            let body: Value = serde_json::from_str(&text).unwrap_or_default();
            bail!("{}", body["error"]["message"].as_str().unwrap_or(&text));
        }
        Ok(resp)
    }

    pub(super) async fn api(&self, method: reqwest::Method, path: &str) -> anyhow::Result<Value> {
        self.api_with(method, path, None).await
    }

    /// `api` with a JSON body.
    pub(super) async fn api_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let Source::Api { base, token, client } = self else { unreachable!("api() is only called on Source::Api") };
        let mut req = client.request(method, format!("{base}{path}"));
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.context("calling the daemon's API")?;
        let status = resp.status();
        let body: Value = resp.json().await.context("reading the daemon's answer")?;
        if !status.is_success() {
            bail!("{}", body["error"]["message"].as_str().unwrap_or("request failed"));
        }
        Ok(body)
    }
}

/// An order with its events, as `GET /api/orders/{id}` shows it.
pub(super) async fn fetch_order(src: &Source, oid: OrderId) -> anyhow::Result<Value> {
    Ok(match src {
        Source::Store(orders, archive) => {
            let found = archive.find(oid).await?.ok_or_else(|| anyhow::anyhow!("order {oid} not found"))?;
            let mut doc = crate::view::found_json(&found);
            orders.vault().reveal_order_doc(&mut doc).await?;
            doc
        }
        Source::Api { .. } => src.api(reqwest::Method::GET, &format!("/orders/{oid}")).await?,
    })
}

pub(super) fn actor_text(a: &Value) -> String {
    match (a["kind"].as_str(), a["id"].as_str()) {
        (Some(k), Some(id)) => format!("{k}:{id}"),
        (Some(k), None) => k.to_owned(),
        _ => String::new(),
    }
}
