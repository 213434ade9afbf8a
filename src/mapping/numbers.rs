//! JSON numbers exactly as written. Pure: no I/O.
//!
//! serde_json (built without `arbitrary_precision`) keeps a JSON number exactly only
//! when it is an integer within `i64`/`u64`; any other number becomes an `f64`, so
//! `12345678901234567.89` or `1234567890123.4567` silently turn into neighbouring
//! values. A mapping must read amounts exactly, so the payload's bytes are scanned
//! once for the text of every such number, keyed by where it sits; the mapping asks
//! for the text of the node its JSONPath selected (`Numbers::text`).
//!
//! Why not `arbitrary_precision`: that feature is crate-global. With it, serde_json
//! serialises every `Number` into any other serializer as a private one-field struct,
//! so every number handed to minijinja (outbound bodies, mail and document
//! templates) renders as a map, and internally tagged or untagged enums and
//! `#[serde(flatten)]` meeting a fractional number fail to deserialise. The tests
//! showed both; reading the text where amounts are read avoids all of it.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json_path::{NormalizedPath, PathElement};

/// Whether `v` holds a number serde_json keeps as an `f64` (so not exactly as written).
fn has_rounded_number(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Number(n) => !(n.is_u64() || n.is_i64()),
        Value::Array(a) => a.iter().any(has_rounded_number),
        Value::Object(o) => o.values().any(has_rounded_number),
        Value::Null | Value::Bool(_) | Value::String(_) => false,
    }
}

/// One step from a JSON document's root to a value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Step {
    Key(String),
    Index(usize),
}

/// The written text of every number in one JSON document that serde_json does not
/// keep exactly (a fraction, an exponent, or an integer past `i64`/`u64`).
#[derive(Debug, Default)]
pub struct NumberTexts {
    by_path: HashMap<Vec<Step>, Box<str>>,
}

/// Where a mapping reads number texts for one record: a document's texts and the
/// record's place in it (empty for a webhook body, `["results", 3]` for a record of a
/// polled page). `Numbers::default()` has no texts: numbers are read as parsed.
#[derive(Debug, Clone, Default)]
pub struct Numbers {
    texts: Option<Arc<NumberTexts>>,
    prefix: Vec<Step>,
}

impl NumberTexts {
    /// The texts of `json`, which serde_json parsed into `parsed`: scanned only when
    /// `parsed` holds a number serde_json did not keep exactly. Most payloads send
    /// amounts as strings; for them the scan found nothing at a byte-by-byte cost
    /// (1.5 % of intake's CPU in a profile under `scripts/bench.sh`).
    pub fn of(json: &[u8], parsed: &serde_json::Value) -> NumberTexts {
        if has_rounded_number(parsed) { NumberTexts::scan(json) } else { NumberTexts::default() }
    }

    /// Scans `json`, which serde_json has already parsed successfully from the same
    /// bytes (so it is well-formed and at most serde_json's nesting limit deep). On
    /// anything unexpected it stops and keeps what it found; it never panics.
    ///
    /// Duplicate keys: like serde_json, the last occurrence wins, because a later
    /// number at the same place overwrites the earlier text, and the value serde_json
    /// kept is the last one written there.
    pub fn scan(json: &[u8]) -> NumberTexts {
        let mut texts = NumberTexts::default();
        // Open containers; `true` while an object expects a key next.
        let mut stack: Vec<Container> = Vec::new();
        let mut path: Vec<Step> = Vec::new();
        let mut i = 0;
        while let Some(&b) = json.get(i) {
            match b {
                b' ' | b'\t' | b'\n' | b'\r' | b':' => i += 1,
                b',' => {
                    match stack.last_mut() {
                        Some(Container::Array { next, stepped }) => {
                            if *stepped {
                                path.pop();
                                *stepped = false;
                            }
                            *next += 1;
                        }
                        Some(Container::Object { expect_key, stepped }) => {
                            if *stepped {
                                path.pop();
                                *stepped = false;
                            }
                            *expect_key = true;
                        }
                        None => return texts,
                    }
                    i += 1;
                }
                b']' | b'}' => {
                    match stack.pop() {
                        Some(Container::Array { stepped: true, .. } | Container::Object { stepped: true, .. }) => {
                            path.pop();
                        }
                        Some(_) => {}
                        None => return texts,
                    }
                    i += 1;
                }
                b'"' => {
                    let Some(end) = string_end(json, i) else { return texts };
                    if let Some(Container::Object { expect_key: expect_key @ true, stepped }) = stack.last_mut() {
                        let Ok(key) = serde_json::from_slice::<String>(&json[i..end]) else { return texts };
                        *expect_key = false;
                        *stepped = true;
                        path.push(Step::Key(key));
                    } else {
                        enter_value(&mut stack, &mut path);
                    }
                    i = end;
                }
                b'{' | b'[' => {
                    enter_value(&mut stack, &mut path);
                    stack.push(if b == b'{' {
                        Container::Object { expect_key: true, stepped: false }
                    } else {
                        Container::Array { next: 0, stepped: false }
                    });
                    i += 1;
                }
                b'-' | b'0'..=b'9' => {
                    let len = json[i..]
                        .iter()
                        .position(|c| !matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                        .unwrap_or(json.len() - i);
                    let Ok(text) = std::str::from_utf8(&json[i..i + len]) else { return texts };
                    enter_value(&mut stack, &mut path);
                    if !kept_exactly(text) {
                        texts.by_path.insert(path.clone(), text.into());
                    }
                    i += len;
                }
                // true, false, null: only letters follow.
                _ => {
                    enter_value(&mut stack, &mut path);
                    i += json[i..].iter().position(|c| !c.is_ascii_alphabetic()).unwrap_or(json.len() - i).max(1);
                }
            }
        }
        texts
    }

    /// The texts for the document root (a webhook body).
    pub fn root(self: Arc<Self>) -> Numbers {
        Numbers { texts: Some(self), prefix: Vec::new() }
    }

    /// The texts for the record at `at` (a record of a polled page).
    pub(crate) fn at(self: Arc<Self>, at: &NormalizedPath<'_>) -> Numbers {
        Numbers { texts: Some(self), prefix: steps(at) }
    }
}

impl Numbers {
    /// The written text of the number at `at` (relative to the record), when the
    /// document had one that serde_json does not keep exactly.
    pub(crate) fn text(&self, at: &NormalizedPath<'_>) -> Option<&str> {
        let texts = self.texts.as_ref()?;
        let mut key = self.prefix.clone();
        key.extend(steps(at));
        texts.by_path.get(&key).map(|t| &**t)
    }

    /// True when texts were scanned (numbers are read as written, not as parsed).
    pub(crate) fn is_exact(&self) -> bool {
        self.texts.is_some()
    }

    /// The texts of element `index` of the array these texts are for.
    pub(crate) fn element(&self, index: usize) -> Numbers {
        let mut prefix = self.prefix.clone();
        prefix.push(Step::Index(index));
        Numbers { texts: self.texts.clone(), prefix }
    }
}

enum Container {
    /// `next`: the index of the element being read; `stepped`: its step is on the path.
    Array {
        next: usize,
        stepped: bool,
    },
    Object {
        expect_key: bool,
        stepped: bool,
    },
}

/// A value starts: inside an array, its index joins the path.
fn enter_value(stack: &mut [Container], path: &mut Vec<Step>) {
    if let Some(Container::Array { next, stepped: stepped @ false }) = stack.last_mut() {
        path.push(Step::Index(*next));
        *stepped = true;
    }
}

/// The index just past the string starting at `start` (its opening quote).
fn string_end(json: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        match json.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// serde_json keeps integers within `u64` (and negative ones within `i64`) exactly.
fn kept_exactly(text: &str) -> bool {
    !text.contains(['.', 'e', 'E']) && (text.parse::<u64>().is_ok() || text.parse::<i64>().is_ok())
}

fn steps(at: &NormalizedPath<'_>) -> Vec<Step> {
    at.iter()
        .map(|e| match e {
            PathElement::Name(n) => Step::Key((*n).to_owned()),
            PathElement::Index(i) => Step::Index(*i),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;
    use serde_json_path::JsonPath;

    fn text_at(json: &str, path: &str) -> Option<String> {
        let value: Value = serde_json::from_str(json).unwrap();
        let numbers = Arc::new(NumberTexts::of(json.as_bytes(), &value)).root();
        let p = JsonPath::parse(path).unwrap();
        let found = p.query_located(&value);
        let node = found.iter().next()?;
        numbers.text(node.location()).map(str::to_owned)
    }

    #[test]
    fn numbers_are_found_where_serde_json_put_them() {
        let doc = r#" { "deal" : { "amount" : 12345678901234567.89, "n": 7, "list": [1.50, "x", {"a\"b": 1e3}, [true, null, -0.5]] },
            "big": 79228162514264337593543950335, "neg": -9223372036854775809, "ok": -5 } "#;
        assert_eq!(text_at(doc, "$.deal.amount").as_deref(), Some("12345678901234567.89"));
        assert_eq!(text_at(doc, "$.deal.list[0]").as_deref(), Some("1.50"));
        assert_eq!(text_at(doc, "$.deal.list[2][\"a\\\"b\"]").as_deref(), Some("1e3"));
        assert_eq!(text_at(doc, "$.deal.list[3][2]").as_deref(), Some("-0.5"));
        assert_eq!(text_at(doc, "$.big").as_deref(), Some("79228162514264337593543950335"));
        assert_eq!(text_at(doc, "$.neg").as_deref(), Some("-9223372036854775809"));
        // Integers serde_json keeps exactly need no text.
        assert_eq!(text_at(doc, "$.deal.n"), None);
        assert_eq!(text_at(doc, "$.ok"), None);
    }

    #[test]
    fn the_last_of_duplicate_keys_wins_as_in_serde_json() {
        let doc = r#"{"a": [0.5, 2.5], "a": {"x": 1}, "a": [1, 9.75], "b": 1.1, "b": 2.2}"#;
        assert_eq!(text_at(doc, "$.a[1]").as_deref(), Some("9.75"));
        assert_eq!(text_at(doc, "$.b").as_deref(), Some("2.2"));
    }

    #[test]
    fn a_record_of_a_page_reads_its_own_numbers() {
        let page = r#"{"results": [{"amount": 1.10}, {"amount": 2.20}]}"#;
        let value: Value = serde_json::from_str(page).unwrap();
        let texts = Arc::new(NumberTexts::scan(page.as_bytes()));
        let records = JsonPath::parse("$.results[*]").unwrap();
        let amount = JsonPath::parse("$.amount").unwrap();
        let mut seen = Vec::new();
        for r in records.query_located(&value).iter() {
            let numbers = texts.clone().at(r.location());
            let located = amount.query_located(r.node());
            let a = located.iter().next().unwrap();
            seen.push(numbers.text(a.location()).unwrap().to_owned());
        }
        assert_eq!(seen, ["1.10", "2.20"]);
    }

    proptest! {
        /// Every number in any document is found at the place serde_json put it.
        #[test]
        fn every_number_is_found_at_its_place(v in arb_json(), seps in " {0,2}") {
            let text = serde_json::to_string(&v).unwrap().replace(',', &format!("{seps},{seps}"));
            let parsed: Value = serde_json::from_str(&text).unwrap();
            let numbers = Arc::new(NumberTexts::of(text.as_bytes(), &parsed)).root();
            // Skipping the scan loses nothing: a document without a rounded number has no texts.
            if !has_rounded_number(&parsed) {
                prop_assert!(NumberTexts::scan(text.as_bytes()).by_path.is_empty());
            }
            let all = JsonPath::parse("$..*").unwrap();
            for node in all.query_located(&parsed).iter() {
                if let Value::Number(n) = node.node() {
                    match numbers.text(node.location()) {
                        // serde_json's default float parsing is not exact (it may be a
                        // few ulps off; amounts are read from the text, never from it):
                        // the text found must be this number's, not its neighbour's.
                        Some(t) => {
                            let (a, b) = (t.parse::<f64>().unwrap(), n.as_f64().unwrap());
                            let ulps = (a.to_bits() as i64).abs_diff(b.to_bits() as i64);
                            let close = ulps <= 8 || (a - b).abs() <= a.abs().max(b.abs()) * 1e-13;
                            prop_assert!(a.signum() == b.signum() && close, "{t} vs {n}");
                        }
                        None => prop_assert!(n.is_u64() || n.is_i64()),
                    }
                }
            }
        }

        #[test]
        fn scanning_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = NumberTexts::scan(&bytes);
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            "\\PC{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z\"\\\\]{0,4}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
