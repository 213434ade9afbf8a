//! What pushes, polls and the health call of one `rest` connector share: the HTTP
//! client, base URL, credentials and templates ([`Shared`]), and the URL rules that
//! keep credentials on the connector's own origin.

use std::sync::Arc;

use reqwest::Url;
use reqwest::header::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use serde_json_path::JsonPath;

use crate::connectors::oauth2::ClientCredentials;
use crate::connectors::response::{classify, describe, origin_text};
use crate::connectors::{BoxFuture, ConnectorError, Health, Receipt};
use crate::domain::ConnectorId;
use crate::mapping::outbound::{Body, Snippets};

pub(super) enum Auth {
    None,
    Bearer(SecretString),
    ApiKey(HeaderName, SecretString),
    Basic(String, SecretString),
    OAuth2(ClientCredentials),
}

/// What pushes and polls of one connector share.
pub(super) struct Shared {
    pub(super) id: ConnectorId,
    pub(super) client: reqwest::Client,
    pub(super) base: Url,
    pub(super) auth: Auth,
    /// Connector-wide headers (secret values are marked sensitive).
    pub(super) headers: Vec<(HeaderName, HeaderValue)>,
    /// Path templates (values percent-encoded).
    pub(super) paths: Snippets,
    /// Query, header and body templates.
    pub(super) values: Snippets,
    pub(super) secrets: Vec<SecretString>,
}

impl Shared {
    pub(super) fn url(&self, path_template: &str, ctx: &Value) -> Result<Url, ConnectorError> {
        let path = self.paths.render(path_template, ctx).map_err(|message| ConnectorError::Permanent { message })?;
        // The URL standard resolves `.` and `..` segments, even percent-encoded ones
        // (`%2E%2E`): a value such as an external id must never rewrite the path.
        if let Some(seg) = dot_segment(&path) {
            return Err(ConnectorError::Permanent {
                message: format!(
                    "the path {path} has a `{seg}` segment, which would change where the call goes; refused (a value filled into a path cannot be `.` or `..`)"
                ),
            });
        }
        Url::parse(&join(&self.base, &path)).map_err(|e| ConnectorError::Permanent { message: format!("{path}: {e}") })
    }

    /// A request with the connector's headers and credentials.
    pub(super) async fn request(
        &self,
        method: reqwest::Method,
        url: Url,
    ) -> Result<reqwest::RequestBuilder, ConnectorError> {
        let mut req = self.client.request(method, url);
        for (h, v) in &self.headers {
            req = req.header(h.clone(), v.clone());
        }
        authorize(&self.auth, req).await
    }

    pub(super) fn value(&self, template: &str, ctx: &Value) -> Result<String, ConnectorError> {
        self.values.render(template, ctx).map_err(|message| ConnectorError::Permanent { message })
    }

    /// Sends and classifies; a 401 drops a cached OAuth2 token.
    pub(super) async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(Receipt, reqwest::header::HeaderMap), ConnectorError> {
        let resp = req
            .send()
            .await
            .map_err(|e| ConnectorError::Retryable { message: describe(&e.without_url()), retry_after: None })?;
        if let (Auth::OAuth2(cc), 401) = (&self.auth, resp.status().as_u16()) {
            // The token was revoked or expired early: fetch a fresh one next time.
            cc.invalidate().await;
        }
        let headers = resp.headers().clone();
        classify(resp, &self.secrets).await.map(|r| (r, headers))
    }
}

pub(super) fn with_body(req: reqwest::RequestBuilder, body: &Body) -> reqwest::RequestBuilder {
    req.header(reqwest::header::CONTENT_TYPE, body.content_type).body(body.bytes.clone())
}

pub(super) fn select_text(path: &JsonPath, v: &Value) -> Option<String> {
    match path.query(v).first()? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Adds the connector's credentials to a request.
async fn authorize(auth: &Auth, req: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder, ConnectorError> {
    Ok(match auth {
        Auth::None => req,
        Auth::Bearer(t) => req.bearer_auth(t.expose_secret()),
        Auth::ApiKey(h, v) => {
            let mut hv = HeaderValue::from_str(v.expose_secret()).map_err(|_| ConnectorError::Auth {
                message: "API key contains characters not allowed in a header".into(),
            })?;
            hv.set_sensitive(true);
            req.header(h.clone(), hv)
        }
        Auth::Basic(u, p) => req.basic_auth(u, Some(p.expose_secret())),
        Auth::OAuth2(cc) => req.bearer_auth(cc.token().await?.expose_secret()),
    })
}

fn join(base: &Url, path: &str) -> String {
    format!("{}{}", base.as_str().trim_end_matches('/'), path)
}

/// The URL of the next page a `Link` header names, resolved against the page's own
/// URL; only on the connector's own scheme, host and port (`base`), the only place its
/// credentials go.
pub(super) fn next_page(base: &Url, page: &Url, link: &str) -> Result<Url, ConnectorError> {
    let next = page.join(link).map_err(|e| ConnectorError::Permanent { message: format!("next link: {e}") })?;
    if next.origin() != base.origin() {
        return Err(ConnectorError::Permanent {
            message: format!(
                "the next page link points to {}, not to this connector's {}; paging stopped (credentials go only to base_url's scheme, host and port)",
                origin_text(&next),
                origin_text(base)
            ),
        });
    }
    Ok(next)
}

/// The first segment of `path` (before any query) that the URL standard treats as
/// `.` or `..`, percent-encoded or not.
fn dot_segment(path: &str) -> Option<&str> {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    path.split('/').find(|seg| {
        let s = seg.to_ascii_lowercase().replace("%2e", ".");
        s == "." || s == ".."
    })
}

/// `check --online`: one GET to the connector's health path.
pub(super) struct RestHealth {
    pub(super) shared: Arc<Shared>,
    pub(super) path: String,
}

impl Health for RestHealth {
    fn check(&self) -> BoxFuture<'_, Result<String, ConnectorError>> {
        Box::pin(async move {
            let s = &self.shared;
            let url = Url::parse(&join(&s.base, &self.path))
                .map_err(|e| ConnectorError::Permanent { message: format!("health path: {e}") })?;
            let (r, _) = s.send(s.request(reqwest::Method::GET, url).await?).await?;
            Ok(format!("GET {} answered {}", self.path, r.status))
        })
    }
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn dot_segments_are_found_even_when_encoded() {
        assert_eq!(dot_segment("/orders/%2E%2E/confirm"), Some("%2E%2E"));
        assert_eq!(dot_segment("/orders/%2e./x"), Some("%2e."));
        assert_eq!(dot_segment("/orders/./x"), Some("."));
        assert_eq!(dot_segment("/orders/SO-1/confirm?next=.."), None, "the query is not the path");
        assert_eq!(dot_segment("/orders/v1.2/...x"), None);
        // What the URL standard would do with one: drop a segment.
        let u = Url::parse("http://erp.example/api/orders/%2E%2E/confirm").unwrap();
        assert_eq!(u.path(), "/api/confirm");
    }

    #[test]
    fn next_page_links_stay_on_the_connectors_own_origin() {
        let base = Url::parse("https://crm.bank.example/api").unwrap();
        let page = Url::parse("https://crm.bank.example/api/deals?page=1").unwrap();
        let same = next_page(&base, &page, "https://crm.bank.example/api/deals?page=2").unwrap();
        assert_eq!(same.as_str(), "https://crm.bank.example/api/deals?page=2");
        assert_eq!(
            next_page(&base, &page, "/api/deals?page=3").unwrap().as_str(),
            "https://crm.bank.example/api/deals?page=3"
        );
        assert!(next_page(&base, &page, "https://crm.bank.example:443/x").is_ok(), "the default port is the same port");
        for elsewhere in [
            "https://evil.example/api/deals?page=2",
            "http://crm.bank.example/api/deals?page=2",
            "https://crm.bank.example:8443/api/deals",
            "//evil.example/steal",
        ] {
            let e = next_page(&base, &page, elsewhere).unwrap_err();
            let ConnectorError::Permanent { message } = &e else { panic!("{e:?}") };
            assert!(
                message.contains("paging stopped") && message.contains("https://crm.bank.example:443"),
                "{message}"
            );
            assert!(!message.contains("steal") && !message.contains("page=2"), "no path or query: {message}");
        }
    }
}
