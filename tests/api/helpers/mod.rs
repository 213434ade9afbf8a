//! The harness of the api tests, by concern: the in-process daemon and its builder
//! (`daemon`), the built binary (`binary`), the example configuration in a temp dir
//! (`config`), the test SMTP server and its mails (`mail`), the fake ERP and other
//! systems (`systems`), webhook signing (`signing`) and a settable clock (`clock`).
//! Everything is re-exported here, so a test module needs `use crate::helpers::*`.
//!
//! No wall-clock sleeps: waits are bounded polls that fail with a message.

#![allow(dead_code)]

mod binary;
mod clock;
mod config;
mod daemon;
mod mail;
mod signing;
mod systems;

use std::time::Duration;

use serde_json::Value;

pub use binary::*;
pub use clock::*;
pub use config::*;
pub use daemon::*;
pub use mail::*;
pub use signing::*;
pub use systems::*;

pub const CRM_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const ERP_TOKEN: &str = "test-erp-token";
pub const LINK_SECRET: &str = "test-link-key-0123456789abcdef0123456789";
/// The evidence signing key of the test configuration (an Ed25519 seed in hex).
pub const EVIDENCE_KEY: &str = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
pub const DESK_TOKEN: &str = "test-desk-token";
pub const FINANCE_TOKEN: &str = "test-finance-token";
pub const SAMPLE: &str = include_str!("../../fixtures/demo-crm-deal.json");
/// The secrets the vendor examples (`examples/connectors`) name.
pub const VENDOR_SECRETS: [&str; 8] = [
    "HUBSPOT_TOKEN",
    "XERO_CLIENT_ID",
    "XERO_CLIENT_SECRET",
    "XERO_TENANT_ID",
    "STRIPE_SECRET_KEY",
    "ERPNEXT_API_KEY",
    "ERPNEXT_API_SECRET",
    "ODOO_API_KEY",
];

pub fn client() -> reqwest::Client {
    orderbridge::connectors::install_crypto_provider();
    reqwest::Client::new()
}

pub fn sample() -> Value {
    serde_json::from_str(SAMPLE).unwrap()
}

/// A deal like the INTERFACE sample, with its own id, version and amount, for a
/// customer of its own (so the velocity and duplicate rules see no history).
pub fn deal(id: &str, version: u64, amount: &str) -> Value {
    let mut v = sample();
    v["deal"]["id"] = id.into();
    v["deal"]["customer"]["id"] = format!("C-{id}").into();
    v["deal"]["version"] = version.into();
    v["deal"]["amount"] = amount.into();
    v
}

/// An 8 000 CNY deal, approved automatically at intake (its `create_order` goes to
/// the ERP): its order id.
pub async fn approved_order(app: &TestApp, id: &str) -> String {
    let (s, b) = app.post_webhook(&deal(id, 1, "8000.00")).await;
    assert_eq!((s, b["state"].as_str()), (202, Some("approved")), "{b}");
    b["order_id"].as_str().unwrap().to_owned()
}

/// A 500 000 CNY deal (one approval level) approved by wang.fang, with `comment` if
/// any: its order id, now executing.
pub async fn executing_order(app: &TestApp, ext: &str, comment: Option<&str>) -> String {
    let (s, b) = app.post_webhook(&deal(ext, 1, "500000.00")).await;
    assert_eq!((s, b["state"].as_str()), (202, Some("awaiting_approval")), "{b}");
    let id = b["order_id"].as_str().unwrap().to_owned();
    let mut decision = serde_json::json!({"decision": "approve"});
    if let Some(c) = comment {
        decision["comment"] = c.into();
    }
    let (s, b) = app.api_post_json_as("wang.fang", &format!("/orders/{id}/approvals"), &decision).await;
    assert_eq!((s, b["state"].as_str()), (200, Some("executing")), "{b}");
    id
}

/// Polls `cond` until true; panics naming `what` after a generous bound.
pub async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..3000 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}
