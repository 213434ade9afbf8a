//! Our webhook signature verifiers (`orderbridge::connectors::signature`) against
//! implementations that are not ours: the vendors' own signing libraries on Node
//! (tests/support/sign.mjs, libraries installed by scripts/test.sh into
//! target/node/node_modules) and, for the schemes no vendor ships a signer for (Xero,
//! Shopify, Frappe), the `openssl` CLI. Every delivery is signed with the current time,
//! so the replay windows are exercised as a sender would. Missing tools fail the tests
//! (they never skip).

use std::io::Write as _;
use std::process::{Command, Stdio};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use orderbridge::connectors::signature::{Delivery, SCHEMES, SignatureError, Verifier};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::*;

const NODE_MODULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/node/node_modules");
const SIGN_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/sign.mjs");
/// The base URL the sender calls (only `hubspot_v3` signs it).
const PUBLIC_URL: &str = "https://hooks.bank.example";
/// Path and query the daemon sees for the unit-level checks.
const PATH: &str = "/webhooks/acme-crm?portalId=62515";
const TOLERANCE_SECS: u64 = 300;
/// Schemes that carry a timestamp and so have a replay window.
const TIMESTAMPED: &[&str] = &["stripe", "hubspot_v3", "standard_webhooks"];

/// A secret in the vendor's format, and another one of the same format.
fn secrets(scheme: &str) -> (&'static str, &'static str) {
    match scheme {
        // Base64 after `whsec_`; the key is 24 and 32 bytes.
        "standard_webhooks" => {
            ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=")
        }
        "stripe" => ("whsec_6f1c0a3b9e2d47c8a5b4f3e2d1c0b9a8", "whsec_0000a3b9e2d47c8a5b4f3e2d1c0b9a8f"),
        "hubspot_v3" => ("3c6a1b2e-8f4d-4c1a-9e7b-5d2f0a9c8b71", "3c6a1b2e-8f4d-4c1a-9e7b-5d2f0a9c8b72"),
        "xero" => (
            "kN2vT8pXqL5mR1wZ7yB4cF0hJ3gD6sA9eU2iO8tY5rW1qE7zX4cV0bN3mL6kJ9hG2fD5sA8pO1iU4yT7rE0wQ==",
            "kN2vT8pXqL5mR1wZ7yB4cF0hJ3gD6sA9eU2iO8tY5rW1qE7zX4cV0bN3mL6kJ9hG2fD5sA8pO1iU4yT7rE0wR==",
        ),
        "shopify" => ("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", "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"),
        "github" => ("It's a Secret to Everybody", "It's a secret to everybody"),
        "frappe" => ("erpnext-webhook-密钥-2026", "erpnext-webhook-密钥-2027"),
        other => panic!("no test secrets for scheme `{other}`: add it to `secrets` in tests/api/signatures.rs"),
    }
}

/// Now, in Unix milliseconds (HubSpot's resolution).
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Runs `program` with `stdin`, returning stdout; panics naming scripts/test.sh when
/// the tool is missing or fails.
fn run(program: &str, args: &[&str], envs: &[(&str, &str)], stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run `{program}` ({e}): these tests need Node.js 20 and openssl; see scripts/test.sh")
        });
    child.stdin.take().expect("piped").write_all(stdin).expect("the signer reads its input");
    let out = child.wait_with_output().expect("the signer finishes");
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}): {}\n(run the tests with scripts/test.sh, which installs the signing libraries)",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The headers the vendor's own library (or, with no such library, openssl) puts on a
/// delivery of `body` to `PUBLIC_URL` + `path`, signed at `at_ms`.
fn vendor_sign(scheme: &str, secret: &str, body: &[u8], at_ms: i64, path: &str) -> HeaderMap {
    let pairs: Vec<(String, String)> = match scheme {
        "xero" => vec![("x-xero-signature".into(), openssl_hmac_b64(secret, body))],
        "shopify" => vec![("x-shopify-hmac-sha256".into(), openssl_hmac_b64(secret, body))],
        "frappe" => vec![("x-frappe-webhook-signature".into(), openssl_hmac_b64(secret, body))],
        _ => node_sign(scheme, secret, body, at_ms, path),
    };
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        let name = HeaderName::from_bytes(k.as_bytes()).unwrap_or_else(|e| panic!("{scheme}: header name {k:?}: {e}"));
        h.append(name, HeaderValue::from_str(&v).unwrap_or_else(|e| panic!("{scheme}: header {k}: {v:?}: {e}")));
    }
    h
}

/// base64(HMAC-SHA256(key = secret, message = body)), all by the openssl CLI.
fn openssl_hmac_b64(secret: &str, body: &[u8]) -> String {
    let mac = run("openssl", &["dgst", "-sha256", "-hmac", secret, "-binary"], &[], body);
    assert_eq!(mac.len(), 32, "openssl printed a raw SHA-256 HMAC");
    let b64 = run("openssl", &["base64", "-A"], &[], &mac);
    String::from_utf8(b64).expect("base64 is ASCII").trim().to_owned()
}

/// tests/support/sign.mjs: the vendor library's headers for this delivery.
fn node_sign(scheme: &str, secret: &str, body: &[u8], at_ms: i64, path: &str) -> Vec<(String, String)> {
    assert!(
        std::path::Path::new(NODE_MODULES).is_dir(),
        "{NODE_MODULES} is missing: run the tests with scripts/test.sh, which installs the vendors' signing libraries"
    );
    let input = json!({
        "scheme": scheme,
        "secret": secret,
        "body": std::str::from_utf8(body).expect("the node signer takes UTF-8 bodies"),
        // Seconds with a fraction: HubSpot signs milliseconds, the others whole seconds.
        "timestamp": at_ms as f64 / 1000.0,
        "method": "POST",
        "url": format!("{PUBLIC_URL}{path}"),
        "id": format!("msg_{}", uuid::Uuid::now_v7().simple()),
    });
    let out = run("node", &[SIGN_SCRIPT], &[("ORDERBRIDGE_NODE_MODULES", NODE_MODULES)], input.to_string().as_bytes());
    let headers: serde_json::Map<String, Value> =
        serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{scheme}: sign.mjs printed no JSON object ({e})"));
    headers
        .into_iter()
        .map(|(k, v)| {
            (k, v.as_str().unwrap_or_else(|| panic!("{scheme}: header value is not a string: {v}")).to_owned())
        })
        .collect()
}

fn verify(scheme: &str, secret: &str, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), SignatureError> {
    let v = Verifier::new(scheme, &SecretString::from(secret), TOLERANCE_SECS, Some(PUBLIC_URL))
        .unwrap_or_else(|e| panic!("{scheme}: verifier builds: {e}"));
    v.verify(&Delivery { method: "POST", path_and_query: PATH, headers, body, now })
}

/// The fixture deal, as the CRM sends it: pretty-printed JSON with Chinese text.
fn body() -> Vec<u8> {
    assert!(SAMPLE.contains("张伟"), "the sample deal carries Chinese text");
    SAMPLE.as_bytes().to_vec()
}

fn assert_outside_window(scheme: &str, what: &str, r: Result<(), SignatureError>) {
    assert!(
        matches!(r, Err(SignatureError::OutsideWindow(_, TOLERANCE_SECS))),
        "{scheme}: {what} must be outside the {TOLERANCE_SECS}s window, got {r:?}"
    );
}

#[test]
fn the_vendor_signing_libraries_are_installed() {
    for package in ["stripe", "@hubspot/api-client", "@octokit/webhooks-methods", "standardwebhooks"] {
        let manifest = std::path::Path::new(NODE_MODULES).join(package).join("package.json");
        assert!(
            manifest.is_file(),
            "{} is missing: run the tests with scripts/test.sh, which installs the vendors' signing libraries",
            manifest.display()
        );
    }
    let version = run("node", &["--version"], &[], b"");
    assert!(String::from_utf8_lossy(&version).starts_with('v'), "node --version printed {version:?}");
}

#[test]
fn what_the_vendor_signs_now_verifies_for_every_scheme() {
    let body = body();
    for &scheme in SCHEMES {
        let (secret, _) = secrets(scheme);
        let h = vendor_sign(scheme, secret, &body, now_ms(), PATH);
        let now = chrono::Utc::now().timestamp();
        assert_eq!(verify(scheme, secret, &h, &body, now), Ok(()), "{scheme}: headers {h:?}");
    }
}

#[test]
fn one_changed_byte_is_a_mismatch_for_every_scheme() {
    let body = body();
    let mut tampered = body.clone();
    // The last byte of 张 (E5 BC A0): the body stays UTF-8, the name changes.
    let at = SAMPLE.find("张伟").expect("sample has a Chinese name") + 2;
    tampered[at] ^= 0x01;
    assert!(std::str::from_utf8(&tampered).is_ok());
    for &scheme in SCHEMES {
        let (secret, _) = secrets(scheme);
        let h = vendor_sign(scheme, secret, &body, now_ms(), PATH);
        let now = chrono::Utc::now().timestamp();
        assert_eq!(verify(scheme, secret, &h, &tampered, now), Err(SignatureError::Mismatch), "{scheme}");
    }
}

#[test]
fn another_secret_is_a_mismatch_for_every_scheme() {
    let body = body();
    for &scheme in SCHEMES {
        let (secret, other) = secrets(scheme);
        let h = vendor_sign(scheme, secret, &body, now_ms(), PATH);
        let now = chrono::Utc::now().timestamp();
        assert_eq!(verify(scheme, other, &h, &body, now), Err(SignatureError::Mismatch), "{scheme}");
    }
}

#[test]
fn replay_windows_match_the_vendors() {
    let body = body();
    for &scheme in SCHEMES {
        let (secret, _) = secrets(scheme);
        let signed_now = vendor_sign(scheme, secret, &body, now_ms(), PATH);
        let later = chrono::Utc::now().timestamp() + 600;
        if !TIMESTAMPED.contains(&scheme) {
            // No timestamp in the scheme: a replay is caught by de-duplication instead.
            assert_eq!(verify(scheme, secret, &signed_now, &body, later), Ok(()), "{scheme}");
            continue;
        }
        // Verified 10 minutes after signing.
        assert_outside_window(
            scheme,
            "a delivery verified 10 minutes later",
            verify(scheme, secret, &signed_now, &body, later),
        );
        // Signed 301 s ago (the vendors' tolerance is 300 s).
        let stale = vendor_sign(scheme, secret, &body, now_ms() - 301_000, PATH);
        let now = chrono::Utc::now().timestamp();
        assert_outside_window(scheme, "a delivery signed 301 s ago", verify(scheme, secret, &stale, &body, now));
        // Four minutes old is still inside the window.
        let recent = vendor_sign(scheme, secret, &body, now_ms() - 240_000, PATH);
        let now = chrono::Utc::now().timestamp();
        assert_eq!(verify(scheme, secret, &recent, &body, now), Ok(()), "{scheme}: signed 4 minutes ago");
    }
}

#[test]
fn standard_webhooks_refuses_a_timestamp_too_far_ahead() {
    // The reference libraries refuse `ts > now + 300` ("Message timestamp too new").
    // A minute past that, so the time node takes to start cannot bring it back inside.
    let body = body();
    let (secret, _) = secrets("standard_webhooks");
    let ahead = vendor_sign("standard_webhooks", secret, &body, now_ms() + 360_000, PATH);
    let now = chrono::Utc::now().timestamp();
    assert_outside_window(
        "standard_webhooks",
        "a delivery dated 6 minutes ahead",
        verify("standard_webhooks", secret, &ahead, &body, now),
    );
}

/// Posts exactly these bytes and headers to `/webhooks/{connector}`.
async fn post_signed(app: &TestApp, connector: &str, body: &[u8], headers: &HeaderMap) -> (u16, Value) {
    let resp = app
        .client
        .post(app.url(&format!("/webhooks/{connector}")))
        .headers(headers.clone())
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .expect("daemon answers");
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_replayed_vendor_signed_delivery_makes_one_order_for_every_scheme() {
    // Arrange: one connector per scheme, each with the demo-crm mapping.
    let erp = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), erp.addr);
    let connector = |scheme: &str| format!("sig-{}", scheme.replace('_', "-"));
    for &scheme in SCHEMES {
        let id = connector(scheme);
        std::fs::write(dir.path().join(format!("secrets/{id}")), secrets(scheme).0).unwrap();
        let public_url =
            if scheme == "hubspot_v3" { format!("public_url = \"{PUBLIC_URL}\"\n") } else { String::new() };
        std::fs::write(
            dir.path().join(format!("connectors/{id}.toml")),
            format!(
                "kind = \"rest\"\n[webhook]\nsignature = \"{scheme}\"\nsecret = \"file:secrets/{id}\"\n\
                 mapping = \"demo-crm\"\n{public_url}"
            ),
        )
        .unwrap();
    }
    let app = restart(dir, erp).await;

    for &scheme in SCHEMES {
        let id = connector(scheme);
        let external_id = format!("RP-{id}");
        let body = serde_json::to_vec(&deal(&external_id, 1, "3000000.00")).unwrap();
        let headers = vendor_sign(scheme, secrets(scheme).0, &body, now_ms(), &format!("/webhooks/{id}"));

        // Act: the very same signed delivery, twice (a sender retry or a replay).
        let (status, first) = post_signed(&app, &id, &body, &headers).await;
        let (again, second) = post_signed(&app, &id, &body, &headers).await;

        // Assert: accepted once, then reported as a duplicate of the same order.
        if scheme == "xero" {
            // Xero takes only 200 with an empty body.
            assert_eq!((status, &first, again, &second), (200, &Value::Null, 200, &Value::Null), "{scheme}");
        } else {
            assert_eq!((status, first["duplicate"].as_bool()), (202, Some(false)), "{scheme}: {first}");
            assert_eq!(
                (again, second["duplicate"].as_bool(), second["order_id"].as_str()),
                (202, Some(true), first["order_id"].as_str()),
                "{scheme}: {second}"
            );
        }
        let (_, found) = app.api(&format!("/orders?connector={id}&external_id={external_id}")).await;
        assert_eq!(found["orders"].as_array().map(Vec::len), Some(1), "{scheme}: {found}");
    }
    let (_, all) = app.api("/orders").await;
    assert_eq!(all["orders"].as_array().map(Vec::len), Some(SCHEMES.len()), "one order per scheme: {all}");
    app.stop().await;
}

/// Xero's Intent-to-Receive check: a correctly signed delivery (with no events) gets
/// `200` and an empty body, an incorrectly signed one `401`.
#[tokio::test]
async fn xero_intent_to_receive_gets_the_answers_xero_requires() {
    let erp = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), erp.addr);
    let key = secrets("xero").0;
    std::fs::write(dir.path().join("secrets/xero"), key).unwrap();
    std::fs::write(
        dir.path().join("connectors/xero.toml"),
        "kind = \"xero\"\n[webhook]\nsecret = \"file:secrets/xero\"\nmapping = \"xero-events\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("mappings/xero-events.toml"),
        "version = \"1\"\nconnector = \"xero\"\naccept = { path = \"$.events[0].eventCategory\", one_of = [\"INVOICE\"] }\n\
         external_id = { path = \"$.events[0].resourceId\" }\n[fields]\n",
    )
    .unwrap();
    let app = restart(dir, erp).await;
    let body = br#"{"events":[],"firstEventSequence":0,"lastEventSequence":0,"entropy":"S0M3R4ND0M3NTR0PY"}"#;
    let good = vendor_sign("xero", key, body, now_ms(), "/webhooks/xero");
    let resp = app
        .client
        .post(app.url("/webhooks/xero"))
        .headers(good)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.bytes().await.unwrap().is_empty(), "an empty body");
    let bad = vendor_sign("xero", "another-key", body, now_ms(), "/webhooks/xero");
    let (status, _) = post_signed(&app, "xero", body, &bad).await;
    assert_eq!(status, 401);
    app.stop().await;
}
