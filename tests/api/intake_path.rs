//! The whole intake path at library level, with arbitrary input: signature
//! verification, JSON, exact numbers, the mapping, the order template
//! (`intake.max_amount`), the customer's history and the decision (screening,
//! routing, automatic approval and effects). Whatever arrives, no step panics: each
//! either goes on or refuses with an error.

use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue};
use orderbridge::connectors::signature::Delivery;
use orderbridge::engine::table::{History, Prior};
use orderbridge::engine::{Actor, OrderEvent};
use orderbridge::mapping::NumberTexts;
use proptest::prelude::*;
use secrecy::SecretString;
use serde_json::Value;

use crate::helpers::*;

/// The example configuration, loaded once; with the CNY limit lifted (in one copy) so
/// the largest amounts also reach the sums.
struct Configs {
    limited: Loaded,
    unlimited: Loaded,
    _dirs: [tempfile::TempDir; 2],
}

static CONFIG: LazyLock<Configs> = LazyLock::new(|| {
    let load = |edit: fn(&mut Settings)| {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), "127.0.0.1:9".parse().unwrap());
        let mut loaded = load(dir.path()).unwrap_or_else(|e| panic!("the example config loads: {e}"));
        edit(&mut loaded.settings);
        (dir, loaded)
    };
    let (d1, limited) = load(|_| {});
    let (d2, unlimited) = load(crate::amounts::no_cny_limit);
    Configs { limited, unlimited, _dirs: [d1, d2] }
});

const NOW: i64 = 1_795_000_000;

/// What happened to one delivery (for the record; the property is "no panic").
#[derive(Debug)]
enum Outcome {
    BadSignature,
    NotJson,
    Unmapped,
    Skipped,
    OutsideTemplate,
    Decided(&'static str),
    DecideError,
}

impl Outcome {
    fn describe(&self) -> String {
        match self {
            Outcome::Decided(state) => format!("Decided({state})"),
            other => format!("{other:?}"),
        }
    }
}

fn run_intake(loaded: &Loaded, body: &[u8], headers: &HeaderMap, priors: &[Prior]) -> Outcome {
    let conn = loaded.registry.get("demo-crm").expect("demo-crm exists");
    let hook = conn.webhook.as_ref().expect("demo-crm receives webhooks");
    let delivery = Delivery { method: "POST", path_and_query: "/webhooks/demo-crm", headers, body, now: NOW };
    if hook.verifier.verify(&delivery).is_err() {
        return Outcome::BadSignature;
    }
    let Ok(payload) = serde_json::from_slice::<Value>(body) else { return Outcome::NotJson };
    let numbers = std::sync::Arc::new(NumberTexts::scan(body)).root();
    let mapping = hook.mapping.as_ref().expect("demo-crm has a mapping");
    let mapped = match mapping.apply_exact(&payload, &numbers) {
        Err(e) => {
            let _ = (e.to_string(), e.field);
            return Outcome::Unmapped;
        }
        Ok(Err(_)) => return Outcome::Skipped,
        Ok(Ok(m)) => m,
    };
    if let Err(e) = loaded.settings.intake.check(&mapped.order) {
        let _ = (e.to_string(), e.field(), e.code());
        return Outcome::OutsideTemplate;
    }
    let history = History::of(&mapped.order, priors);
    let received = OrderEvent::Received {
        connector: "demo-crm".into(),
        external_id: mapped.external_id.to_string(),
        version: mapped.version,
    };
    let now = chrono::DateTime::from_timestamp(NOW, 0).unwrap();
    match orderbridge::engine::decide_new(
        &mapped.order,
        &history,
        Actor::Connector("demo-crm".into()),
        received,
        &loaded.rules,
        now,
    ) {
        // The audit is serialised (hash chain) exactly as the store would.
        Ok(d) => {
            let _ = serde_json::to_vec(&d.audit.iter().map(|a| &a.event).collect::<Vec<_>>()).unwrap();
            Outcome::Decided(d.next.name())
        }
        Err(_) => Outcome::DecideError,
    }
}

fn signed(body: &[u8]) -> HeaderMap {
    let signer =
        orderbridge::connectors::signature::StandardWebhooks::new(&SecretString::from(CRM_SECRET), 300).unwrap();
    let mut h = HeaderMap::new();
    h.insert("webhook-id", HeaderValue::from_static("msg_prop"));
    h.insert("webhook-timestamp", HeaderValue::from_str(&NOW.to_string()).unwrap());
    h.insert("webhook-signature", HeaderValue::from_str(&signer.sign("msg_prop", NOW, body)).unwrap());
    h
}

/// Amount texts as a CRM might send them: strings or bare numbers, ordinary, at the
/// limits, beyond them, malformed.
fn amount_text() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        "[0-9]{1,12}(\\.[0-9]{1,4})?",
        "[0-9]{1,40}(\\.[0-9]{0,35})?",
        "-?[0-9]{1,6}([eE][+-]?[0-9]{1,4})?",
        Just("79228162514264337593543950335".to_owned()),
        Just("79228162514264337593543950336".to_owned()),
        Just("10000000000.01".to_owned()),
        Just("-0".to_owned()),
    ];
    prop_oneof![number.clone(), number.prop_map(|n| format!("\"{n}\"")), "\"\\PC{0,12}\"", Just("null".to_owned()),]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("(deal|customer|amount|id|version|[a-z_]{1,6})", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The sample deal with one field replaced by `raw` (JSON text, inserted as is).
fn perturbed(field: &str, raw: &str) -> Vec<u8> {
    let mut d = sample();
    let target = match field {
        "amount" | "currency" | "version" | "term_months" | "id" => &mut d["deal"][field],
        "customer.id" => &mut d["deal"]["customer"]["id"],
        "credit_rating" | "kyc_verified" | "kind" => &mut d["deal"]["customer"][field],
        _ => &mut d[field],
    };
    *target = "__RAW__".into();
    serde_json::to_string(&d).unwrap().replace("\"__RAW__\"", raw).into_bytes()
}

fn priors() -> impl Strategy<Value = Vec<Prior>> {
    let amount =
        prop_oneof![Just("79228162514264337593543950335".to_owned()), "[0-9]{1,28}", "[0-9]{1,10}\\.[0-9]{2}",];
    let prior =
        (amount, prop_oneof![Just("CNY"), Just("USD")], prop_oneof![Just("WM-STABLE-12M"), Just("OTHER")]).prop_map(
            |(a, c, p)| Prior { amount: orderbridge::domain::Money::parse(&a, c).unwrap(), product_code: p.to_owned() },
        );
    proptest::collection::vec(prior, 0..6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn a_signed_deal_with_any_field_never_panics(
        field in "(amount|currency|version|term_months|id|customer\\.id|credit_rating|kyc_verified|kind|occurred_at|event)",
        raw in prop_oneof![amount_text(), arb_json().prop_map(|v| v.to_string())],
        priors in priors(),
        unlimited in any::<bool>(),
    ) {
        let loaded = if unlimited { &CONFIG.unlimited } else { &CONFIG.limited };
        let body = perturbed(&field, &raw);
        let _outcome = run_intake(loaded, &body, &signed(&body), &priors);
    }

    #[test]
    fn any_signed_json_never_panics(v in arb_json(), priors in priors()) {
        let body = serde_json::to_vec(&v).unwrap();
        let _ = run_intake(&CONFIG.unlimited, &body, &signed(&body), &priors);
    }

    #[test]
    fn any_bytes_and_headers_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..300),
        id in "\\PC{0,20}",
        ts in prop_oneof![any::<i64>().prop_map(|t| t.to_string()), "\\PC{0,12}"],
        sig in "\\PC{0,80}",
        sign_it in any::<bool>(),
    ) {
        let mut h = if sign_it { signed(&body) } else { HeaderMap::new() };
        for (k, v) in [("webhook-id", id), ("webhook-timestamp", ts), ("webhook-signature", sig)] {
            if let Ok(v) = HeaderValue::from_str(&v) && !sign_it {
                h.insert(k, v);
            }
        }
        let _ = run_intake(&CONFIG.limited, &body, &h, &[]);
    }
}

/// The property above exercises these on purpose; check they are reached.
#[test]
fn the_path_reaches_every_outcome() {
    let ok = serde_json::to_vec(&sample()).unwrap();
    let max = Prior {
        amount: orderbridge::domain::Money::parse("79228162514264337593543950335", "CNY").unwrap(),
        product_code: "OTHER".into(),
    };
    /// Configuration, body, signed, the customer's history, the expected outcome.
    type Case<'a> = (&'a Loaded, Vec<u8>, bool, Vec<Prior>, &'a str);
    let cases: Vec<Case> = vec![
        (&CONFIG.limited, ok.clone(), false, vec![], "BadSignature"),
        (&CONFIG.limited, b"{".to_vec(), true, vec![], "NotJson"),
        (&CONFIG.limited, perturbed("amount", "1e3"), true, vec![], "Unmapped"),
        (&CONFIG.limited, perturbed("event", "\"deal.deleted\""), true, vec![], "Skipped"),
        (&CONFIG.limited, perturbed("amount", "79228162514264337593543950335"), true, vec![], "OutsideTemplate"),
        (&CONFIG.limited, ok.clone(), true, vec![], "Decided(awaiting_approval)"),
        (&CONFIG.unlimited, ok, true, vec![max.clone(), max], "Decided(flagged)"),
    ];
    for (loaded, body, sign, priors, want) in cases {
        let headers = if sign { signed(&body) } else { HeaderMap::new() };
        let got = run_intake(loaded, &body, &headers, &priors).describe();
        assert_eq!(got, want, "{}", String::from_utf8_lossy(&body));
    }
}
