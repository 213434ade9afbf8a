//! The declarative mapping engine: `mappings/<id>.toml` turns a connector's JSON
//! payload into the canonical order.
//!
//! Each target field takes a JSONPath selector (RFC 9535, `serde_json_path`) and a
//! fixed list of typed steps: trim/upper/lower, a lookup table, a conversion
//! (`decimal`, `integer`, `boolean`, `datetime`, `date`, `string`) and a default. There
//! is no scripting: evaluation is bounded by the size of the input. Every error names
//! the mapping, the target field, the source path and the offending value. Pure.

pub(crate) mod numbers;
pub(crate) mod outbound;
mod selector;

use std::collections::BTreeMap;
use std::ops::Range;

use chrono::{DateTime, NaiveDate, Utc};
use selector::Selector;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::domain::order::CANONICAL_FIELDS;
use crate::domain::{ExternalId, Order};
pub use numbers::NumberTexts;
pub(crate) use numbers::Numbers;

/// A mapping failed on one payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mapping {mapping}: field `{field}`{from}: {reason}", from = source_path.as_ref().map(|p| format!(" (from {p})")).unwrap_or_default())]
pub struct MappingError {
    pub(crate) mapping: String,
    /// The canonical field (or `external_id` / `version`).
    pub field: String,
    pub(crate) source_path: Option<String>,
    pub(crate) reason: String,
}

/// A payload the mapping deliberately skips (its `accept` filter did not match).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub reason: String,
}

/// The result of mapping one inbound record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    pub external_id: ExternalId,
    /// The source's record version; later versions replace earlier ones (invariant 4).
    pub version: u64,
    pub order: Order,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Conversion {
    String,
    Decimal,
    Integer,
    Boolean,
    Datetime,
    Date,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TextStep {
    Trim,
    Upper,
    Lower,
    /// Collapse runs of blanks into one space.
    Squash,
}

/// One field rule as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FieldFile {
    /// JSONPath into the payload, e.g. `$.deal.amount`.
    pub(crate) path: Option<String>,
    /// Text steps applied in order before lookup and conversion.
    #[serde(default)]
    pub(crate) transform: Vec<TextStep>,
    /// Replace the (text) value through this table; a value not in it is an error.
    pub(crate) lookup: Option<BTreeMap<String, String>>,
    #[serde(rename = "as", default = "default_conversion")]
    pub(crate) conversion: Conversion,
    /// Used when the path selects nothing or null.
    pub(crate) default: Option<toml::Value>,
    /// Fail when the value is missing even though the canonical order has it optional.
    #[serde(default)]
    pub(crate) required: bool,
    /// When the path selects several values, take the first instead of failing.
    #[serde(default)]
    pub(crate) first: bool,
}

fn default_conversion() -> Conversion {
    Conversion::String
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AcceptFile {
    pub(crate) path: String,
    pub(crate) one_of: Vec<String>,
}

/// `mappings/<id>.toml` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingFile {
    /// Recorded with every order this mapping produced.
    pub(crate) version: String,
    /// The connector whose payloads this maps.
    pub(crate) connector: toml::Spanned<String>,
    /// Only payloads whose `path` value is one of `one_of` are mapped; others are skipped.
    pub(crate) accept: Option<toml::Spanned<AcceptFile>>,
    pub(crate) external_id: toml::Spanned<FieldFile>,
    /// The source record's version (an integer); absent means every delivery is version 0.
    pub(crate) record_version: Option<toml::Spanned<FieldFile>>,
    pub(crate) fields: BTreeMap<toml::Spanned<String>, toml::Spanned<FieldFile>>,
}

/// A problem in a mapping file, with the byte span it points at.
#[derive(Debug, Clone)]
pub struct MappingProblem {
    pub(crate) span: Range<usize>,
    pub(crate) message: String,
}

#[derive(Debug, Clone)]
struct FieldRule {
    target: String,
    path: Option<Selector>,
    path_text: Option<String>,
    transform: Vec<TextStep>,
    lookup: Option<BTreeMap<String, String>>,
    conversion: Conversion,
    default: Option<Value>,
    required: bool,
    first: bool,
}

/// A validated mapping, ready to apply.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub(crate) id: String,
    pub(crate) version: String,
    accept: Option<(Selector, String, Vec<String>)>,
    external_id: FieldRule,
    record_version: Option<FieldRule>,
    fields: Vec<FieldRule>,
}

impl MappingFile {
    /// Meaning checks: selectors parse, targets are canonical fields, defaults convert.
    pub fn validate(self, id: &str) -> Result<Mapping, Vec<MappingProblem>> {
        let mut problems = Vec::new();
        let external_id = field_rule("external_id", self.external_id, &mut problems);
        let record_version = self.record_version.and_then(|r| {
            let span = r.span();
            let r = field_rule("record_version", r, &mut problems)?;
            if !matches!(r.conversion, Conversion::Integer | Conversion::Datetime) {
                problems.push(MappingProblem {
                    span,
                    message: "record_version must use `as = \"integer\"` or `as = \"datetime\"` (a modification time, counted in milliseconds)".into(),
                });
            }
            Some(r)
        });
        let mut fields = Vec::new();
        for (target, f) in self.fields {
            if !CANONICAL_FIELDS.contains(&target.get_ref().as_str()) {
                problems.push(MappingProblem {
                    span: target.span(),
                    message: format!(
                        "`{}` is not a canonical order field (known: {})",
                        target.get_ref(),
                        CANONICAL_FIELDS.join(", ")
                    ),
                });
                continue;
            }
            if let Some(r) = field_rule(target.get_ref(), f, &mut problems) {
                fields.push(r);
            }
        }
        let accept = self.accept.and_then(|a| {
            let span = a.span();
            let a = a.into_inner();
            match Selector::parse(&a.path) {
                Ok(p) => Some((p, a.path, a.one_of)),
                Err(e) => {
                    problems
                        .push(MappingProblem { span, message: format!("accept: `{}` is not a JSONPath: {e}", a.path) });
                    None
                }
            }
        });
        match (problems.is_empty(), external_id) {
            (true, Some(external_id)) => {
                Ok(Mapping { id: id.to_owned(), version: self.version, accept, external_id, record_version, fields })
            }
            _ => Err(problems),
        }
    }
}

/// One field's rule: its selector parses, and it has a `path` or a `default` that
/// converts.
fn field_rule(target: &str, f: toml::Spanned<FieldFile>, problems: &mut Vec<MappingProblem>) -> Option<FieldRule> {
    let span = f.span();
    let f = f.into_inner();
    let mut bad = |m: String| problems.push(MappingProblem { span: span.clone(), message: m });
    let path = match &f.path {
        Some(p) => match Selector::parse(p) {
            Ok(jp) => Some(jp),
            Err(e) => {
                bad(format!("field `{target}`: `{p}` is not a JSONPath: {e}"));
                return None;
            }
        },
        None => None,
    };
    if path.is_none() && f.default.is_none() {
        bad(format!("field `{target}` needs a `path` or a `default`"));
        return None;
    }
    let default = match f.default.map(toml_to_json) {
        None => None,
        Some(v) => match convert(&v, f.conversion) {
            Ok(v) => Some(v),
            Err(e) => {
                bad(format!("field `{target}`: default {e}"));
                return None;
            }
        },
    };
    Some(FieldRule {
        target: target.to_owned(),
        path,
        path_text: f.path,
        transform: f.transform,
        lookup: f.lookup,
        conversion: f.conversion,
        default,
        required: f.required,
        first: f.first,
    })
}

/// Most values a mapping will read from one payload, and the longest text it keeps.
const MAX_TEXT: usize = 8192;

impl Mapping {
    fn err(&self, rule: &FieldRule, reason: impl Into<String>) -> MappingError {
        MappingError {
            mapping: self.id.clone(),
            field: rule.target.clone(),
            source_path: rule.path_text.clone(),
            reason: reason.into(),
        }
    }

    /// Maps one payload whose bytes are not at hand: numbers are read as parsed
    /// (integers exactly, fractions as their `f64` prints). Payloads received as bytes
    /// go through [`Mapping::apply_exact`].
    ///
    /// # Errors
    /// As [`Mapping::apply_exact`].
    pub fn apply(&self, payload: &Value) -> Result<Result<Mapped, Skipped>, MappingError> {
        self.apply_exact(payload, &Numbers::default())
    }

    /// Maps one payload, reading every number as `numbers` says it was written
    /// (`12345678901234567.89` stays exactly that, see `numbers`).
    ///
    /// # Errors
    /// `Ok(Err(Skipped))` when the `accept` filter rejects the payload; `Err` with the
    /// field and value when a value is missing, malformed or outside its domain.
    pub fn apply_exact(&self, payload: &Value, numbers: &Numbers) -> Result<Result<Mapped, Skipped>, MappingError> {
        if let Some((path, text, allowed)) = &self.accept {
            let got = path.select(payload).1.and_then(Value::as_str).map(str::to_owned);
            if !got.as_ref().is_some_and(|g| allowed.contains(g)) {
                return Ok(Err(Skipped {
                    reason: format!(
                        "{text} is {}, not one of {}",
                        got.as_deref().unwrap_or("absent"),
                        allowed.join(", ")
                    ),
                }));
            }
        }
        let ext = self
            .value_of(&self.external_id, payload, numbers)?
            .ok_or_else(|| self.err(&self.external_id, "is missing"))?;
        let ext_text = match &ext {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err(self.err(&self.external_id, format!("must be text, got {}", brief(other))));
            }
        };
        let external_id: ExternalId = ext_text.parse().map_err(|e| self.err(&self.external_id, format!("{e}")))?;
        let version = match &self.record_version {
            None => 0,
            Some(r) => match self.value_of(r, payload, numbers)? {
                None => 0,
                Some(v) => match v.as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()) {
                    // A modification time: later times are later versions.
                    Some(t) => u64::try_from(t.timestamp_millis())
                        .map_err(|_| self.err(r, format!("is before 1970: {}", brief(&v))))?,
                    None => v
                        .as_u64()
                        .ok_or_else(|| self.err(r, format!("must be a non-negative integer, got {}", brief(&v))))?,
                },
            },
        };

        let mut root = Value::Object(Map::new());
        for rule in &self.fields {
            match self.value_of(rule, payload, numbers)? {
                Some(v) => insert_path(&mut root, &rule.target, v),
                None if rule.required => return Err(self.err(rule, "is required but missing")),
                None => {}
            }
        }
        // Read plainly; read again tracking the path only to say where it failed.
        if let Ok(order) = Order::deserialize(&root) {
            return Ok(Ok(Mapped { external_id, version, order }));
        }
        let order: Order = serde_path_to_error::deserialize(&root).map_err(|e| {
            let mut field = canonical_path(&e.path().to_string());
            let reason = e.into_inner().to_string();
            // serde reports a missing field at its parent: name the field itself.
            let missing = reason.strip_prefix("missing field `").and_then(|r| r.split('`').next()).map(str::to_owned);
            if let Some(m) = &missing {
                field = if field.is_empty() { m.clone() } else { format!("{field}.{m}") };
            }
            let rule = self.fields.iter().find(|r| r.target == field || r.target.starts_with(&format!("{field}.")));
            let (reason, value) = match (&missing, rule) {
                (Some(_), Some(_)) => {
                    ("is required by the canonical order but the payload has no value for it".to_owned(), None)
                }
                (Some(_), None) => ("is required by the canonical order but no mapping rule sets it".to_owned(), None),
                (None, r) => (reason, r.and_then(|r| r.path.as_ref()).and_then(|p| p.select(payload).1.map(brief))),
            };
            MappingError {
                mapping: self.id.clone(),
                field: if field.is_empty() { "order".into() } else { field.clone() },
                source_path: rule.and_then(|r| r.path_text.clone()),
                reason: match value {
                    Some(v) => format!("{reason} (value {v})"),
                    None => reason,
                },
            }
        })?;
        Ok(Ok(Mapped { external_id, version, order }))
    }

    /// Selects, transforms and converts one field; `None` when absent with no default.
    fn value_of(&self, rule: &FieldRule, payload: &Value, numbers: &Numbers) -> Result<Option<Value>, MappingError> {
        let selected = match &rule.path {
            None => None,
            Some(p) => {
                let (n, first) = p.select(payload);
                if n > 1 && !rule.first {
                    return Err(self.err(
                        rule,
                        format!("selects {n} values, expected one (set `first = true` to take the first)"),
                    ));
                }
                first
            }
        };
        let Some(raw) = selected.filter(|v| !v.is_null()) else {
            return Ok(rule.default.clone());
        };
        // A number serde_json did not keep exactly, as the payload wrote it. Where it
        // stands is asked only then: a located query allocates a path per node.
        let mut written = match (raw, &rule.path) {
            (Value::Number(n), Some(p)) if !(n.is_u64() || n.is_i64()) && numbers.is_exact() => {
                p.query.query_located(payload).first().and_then(|l| numbers.text(l.location())).map(str::to_owned)
            }
            _ => None,
        };
        let mut v = raw.clone();
        if !rule.transform.is_empty() || rule.lookup.is_some() {
            let mut text = match &v {
                Value::String(s) => s.clone(),
                Value::Number(n) => written.take().unwrap_or_else(|| n.to_string()),
                Value::Bool(b) => b.to_string(),
                other => {
                    return Err(self.err(rule, format!("text steps need text, got {}", brief(other))));
                }
            };
            for step in &rule.transform {
                text = match step {
                    TextStep::Trim => text.trim().to_owned(),
                    TextStep::Upper => text.to_uppercase(),
                    TextStep::Lower => text.to_lowercase(),
                    TextStep::Squash => text.split_whitespace().collect::<Vec<_>>().join(" "),
                };
            }
            if let Some(table) = &rule.lookup {
                text = table.get(&text).cloned().ok_or_else(|| {
                    self.err(
                        rule,
                        format!(
                            "`{}` is not in the lookup table (known: {})",
                            clip(&text),
                            table.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    )
                })?;
            }
            v = Value::String(text);
        }
        let v = convert_written(&v, written.as_deref(), rule.conversion, numbers.is_exact())
            .map_err(|e| self.err(rule, e))?;
        check_money_part(&rule.target, &v).map_err(|e| self.err(rule, e))?;
        Ok(Some(v))
    }
}

/// `Money` is parsed as a whole, so serde would blame `amount` for either part: check
/// the parts here, so the error names `amount.amount` or `amount.currency` exactly.
fn check_money_part(target: &str, v: &Value) -> Result<(), String> {
    use crate::domain::{CurrencyCode, Money};
    let text = v.as_str().unwrap_or_default();
    match target {
        "amount.currency" => text.parse::<CurrencyCode>().map(drop).map_err(|e| e.to_string()),
        "amount.amount" => crate::domain::money::parse_decimal(text)
            .and_then(|d| Money::new(d, "XXX".parse().expect("XXX is a valid code")))
            .map(drop)
            .map_err(|e| e.to_string()),
        _ => Ok(()),
    }
}

/// Turns serde_path_to_error's `customer.id_document.type` (or `?`) into our path.
fn canonical_path(p: &str) -> String {
    p.trim_start_matches('.').replace('?', "").trim_end_matches('.').to_owned()
}

fn clip(s: &str) -> String {
    let mut c: String = s.chars().take(64).collect();
    if s.chars().count() > 64 {
        c.push('…');
    }
    c
}

fn brief(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{}\"", clip(s)),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
        other => clip(&other.to_string()),
    }
}

/// A decimal amount from its text, exactly: never rounded. `shown` is how the value
/// appears in the error.
fn decimal(text: &str, shown: &str) -> Result<Value, String> {
    use crate::domain::money::{MoneyError, parse_decimal};
    let t = text.trim();
    match parse_decimal(t) {
        Ok(d) => Ok(Value::String(d.to_string())),
        Err(e @ MoneyError::TooManyDigits(_)) => Err(e.to_string()),
        Err(_) if t.contains(['e', 'E']) && !t.contains(char::is_whitespace) => {
            Err(format!("{shown} has an exponent; write the amount in plain digits (e.g. 1250000.00)"))
        }
        Err(_) => Err(format!("{shown} is not a decimal amount")),
    }
}

/// `convert` for a value that may be a JSON number serde_json did not keep exactly,
/// with its written text (`written`). `exact`: texts were scanned, so a fractional
/// number without one cannot be read as written and is refused, not rounded.
fn convert_written(v: &Value, written: Option<&str>, c: Conversion, exact: bool) -> Result<Value, String> {
    match (v, written) {
        (Value::Number(_), Some(w)) => match c {
            Conversion::Decimal => decimal(w, &clip(w)),
            Conversion::String if w.len() > MAX_TEXT => Err(format!("text longer than {MAX_TEXT} bytes")),
            Conversion::String => Ok(Value::String(w.to_owned())),
            Conversion::Integer => Err(format!("{} is not an integer", clip(w))),
            Conversion::Boolean => Err(format!("{} is not a boolean", clip(w))),
            Conversion::Datetime | Conversion::Date => convert(&Value::String(w.to_owned()), c),
        },
        (Value::Number(n), None) if exact && c == Conversion::Decimal && !(n.is_u64() || n.is_i64()) => Err(format!(
            "the number {} cannot be read exactly as written; send the amount as a string",
            clip(&n.to_string())
        )),
        _ => convert(v, c),
    }
}

/// Typed conversion of one selected value.
fn convert(v: &Value, c: Conversion) -> Result<Value, String> {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    match c {
        Conversion::String => match v {
            Value::String(s) if s.len() > MAX_TEXT => Err(format!("text longer than {MAX_TEXT} bytes")),
            Value::String(_) => Ok(v.clone()),
            Value::Number(n) => Ok(Value::String(n.to_string())),
            Value::Bool(b) => Ok(Value::String(b.to_string())),
            other => Err(format!("expected text, got {}", brief(other))),
        },
        Conversion::Decimal => {
            let t = text(v).ok_or_else(|| format!("expected a decimal, got {}", brief(v)))?;
            decimal(&t, &brief(v))
        }
        Conversion::Integer => match v {
            Value::Number(n) if n.is_u64() || n.is_i64() => Ok(v.clone()),
            Value::String(s) => {
                s.trim().parse::<i64>().map(Value::from).map_err(|_| format!("{} is not an integer", brief(v)))
            }
            other => Err(format!("{} is not an integer", brief(other))),
        },
        Conversion::Boolean => match v {
            Value::Bool(_) => Ok(v.clone()),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "y" | "1" | "是" => Ok(Value::Bool(true)),
                "false" | "no" | "n" | "0" | "否" => Ok(Value::Bool(false)),
                _ => Err(format!("{} is not a boolean", brief(v))),
            },
            Value::Number(n) if n.as_u64() == Some(0) || n.as_u64() == Some(1) => {
                Ok(Value::Bool(n.as_u64() == Some(1)))
            }
            other => Err(format!("{} is not a boolean", brief(other))),
        },
        Conversion::Datetime => {
            let t = text(v).ok_or_else(|| format!("expected an RFC 3339 time, got {}", brief(v)))?;
            let t = t.trim();
            DateTime::parse_from_rfc3339(t)
                .map(|d| d.with_timezone(&Utc))
                // Odoo's and Frappe's `YYYY-MM-DD HH:MM:SS[.ffffff]`, which they keep in UTC.
                .or_else(|_| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f").map(|d| d.and_utc()))
                .map(|d| Value::String(d.to_rfc3339()))
                .map_err(|_| {
                    format!("{} is not an RFC 3339 time with offset (or YYYY-MM-DD HH:MM:SS in UTC)", brief(v))
                })
        }
        Conversion::Date => {
            let t = text(v).ok_or_else(|| format!("expected a date, got {}", brief(v)))?;
            NaiveDate::parse_from_str(t.trim(), "%Y-%m-%d")
                .map(|d| Value::String(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().to_rfc3339()))
                .map_err(|_| format!("{} is not a YYYY-MM-DD date", brief(v)))
        }
    }
}

/// Sets `a.b.c` in a JSON object tree, creating objects on the way.
fn insert_path(root: &mut Value, dotted: &str, v: Value) {
    let mut cur = root;
    let mut parts = dotted.split('.').peekable();
    while let Some(p) = parts.next() {
        let Value::Object(map) = cur else { return };
        if parts.peek().is_none() {
            map.insert(p.to_owned(), v);
            return;
        }
        cur = map.entry(p.to_owned()).or_insert_with(|| Value::Object(Map::new()));
    }
}

fn toml_to_json(v: toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => Value::String(f.to_string()),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect()),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn odoo_and_frappe_times_are_utc_datetimes() {
        let c = |t: &str| convert(&Value::String(t.into()), Conversion::Datetime);
        assert_eq!(c("2026-11-26 10:07:00").unwrap(), Value::String("2026-11-26T10:07:00+00:00".into()));
        assert_eq!(c("2026-11-26 10:07:00.250000").unwrap(), Value::String("2026-11-26T10:07:00.250+00:00".into()));
        assert_eq!(c("2026-11-26T18:07:00+08:00").unwrap(), Value::String("2026-11-26T10:07:00+00:00".into()));
        assert!(c("26/11/2026 10:07").unwrap_err().contains("YYYY-MM-DD HH:MM:SS"));
    }

    use super::*;
    use proptest::prelude::*;

    pub(crate) const DEMO: &str = include_str!("../../mappings/demo-crm.toml");
    const SAMPLE: &str = include_str!("../../tests/fixtures/demo-crm-deal.json");

    fn demo() -> Mapping {
        toml::from_str::<MappingFile>(DEMO).unwrap().validate("demo-crm").unwrap()
    }

    #[test]
    fn maps_the_interface_sample() {
        let payload: Value = serde_json::from_str(SAMPLE).unwrap();
        let m = demo().apply(&payload).unwrap().unwrap();
        assert_eq!(m.external_id.as_str(), "D-10042");
        assert_eq!(m.version, 3);
        assert_eq!(m.order.customer.name.as_str(), "张伟");
        assert_eq!(m.order.amount.to_string(), "1250000.00 CNY");
        assert_eq!(m.order.term_months.unwrap().get(), 12);
        assert_eq!(m.order.need.as_ref().unwrap().as_str(), "客户希望配置稳健型理财产品，期限一年");
        assert!(m.order.customer.kyc_verified);
    }

    #[test]
    fn errors_name_field_path_and_value() {
        let mut payload: Value = serde_json::from_str(SAMPLE).unwrap();
        payload["deal"]["amount"] = Value::String("12,5".into());
        let e = demo().apply(&payload).unwrap_err();
        assert_eq!(e.field, "amount.amount");
        assert_eq!(e.source_path.as_deref(), Some("$.deal.amount"));
        assert!(e.to_string().contains("\"12,5\""), "{e}");

        let mut payload: Value = serde_json::from_str(SAMPLE).unwrap();
        payload["deal"]["customer"]["kind"] = Value::String("alien".into());
        let e = demo().apply(&payload).unwrap_err();
        assert_eq!(e.field, "customer.kind");
        assert!(e.reason.contains("alien"), "{e}");

        let mut payload: Value = serde_json::from_str(SAMPLE).unwrap();
        payload["deal"]["customer"].as_object_mut().unwrap().remove("name");
        let e = demo().apply(&payload).unwrap_err();
        assert_eq!(e.field, "customer.name", "{e}");
    }

    #[test]
    fn filter_skips_other_events() {
        let mut payload: Value = serde_json::from_str(SAMPLE).unwrap();
        payload["event"] = Value::String("deal.deleted".into());
        assert!(demo().apply(&payload).unwrap().is_err());
    }

    #[test]
    fn bad_files_are_reported_with_spans() {
        let text = DEMO.replace("\"customer.name\"", "\"customer.nmae\"").replace("$.deal.id", "$.deal[");
        let problems = toml::from_str::<MappingFile>(&text).unwrap().validate("x").unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().any(|p| p.message.contains("customer.nmae")));
        assert!(problems.iter().all(|p| !p.span.is_empty()));
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            "\\PC{0,20}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("deal".to_owned()),
                        Just("customer".to_owned()),
                        Just("amount".to_owned()),
                        Just("id".to_owned()),
                        "[a-z_]{1,8}"
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn apply_never_panics_on_arbitrary_json(v in arb_json()) {
            let _ = demo().apply(&v);
        }

        #[test]
        fn apply_never_panics_on_perturbed_samples(field in "(id|amount|currency|version|term_months|kind|credit_rating|number|name)", val in arb_json()) {
            let mut payload: Value = serde_json::from_str(SAMPLE).unwrap();
            payload["deal"][&field] = val.clone();
            payload["deal"]["customer"][&field] = val;
            let _ = demo().apply(&payload);
        }
    }
}
