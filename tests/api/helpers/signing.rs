//! Webhook signing as demo-crm does it (Standard Webhooks with `CRM_SECRET`), for
//! tests that post deliveries themselves.

use orderbridge::connectors::signature::StandardWebhooks;
use secrecy::SecretString;

use super::CRM_SECRET;

/// The signer of demo-crm's deliveries (a 300 s tolerance, like the example).
pub fn crm_signer() -> StandardWebhooks {
    StandardWebhooks::new(&SecretString::from(CRM_SECRET), 300).unwrap()
}

/// The headers of a delivery `id` signed at `ts` (Unix seconds) over `body`.
pub fn signed_headers(signer: &StandardWebhooks, id: &str, ts: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json".into()),
        ("webhook-id", id.into()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", signer.sign(id, ts, body)),
    ]
}
