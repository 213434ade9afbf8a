//! Outbound templates: what we send to other systems.
//!
//! A `mappings/<id>.toml` with `direction = "outbound"` turns an effect (the order
//! snapshot, its references, the event) into a request body, either JSON text
//! (`format = "json"`, one `body` template) or a form (`format = "form"`, one template
//! per field, e.g. Stripe's `metadata[order_id]`). Connector files use the same
//! template language for paths, query parameters and headers ([`Snippets`]).
//!
//! Templates are minijinja: bounded by fuel and by output size, strict about
//! undefined values, with filters for exact money (`number`, `minor_units`), JSON
//! (`json`), time (`unix`, `unix_ms`, `rfc3339`, `date`) and lookup tables
//! (`lookup("table", key)`). A rendered JSON body is checked for syntax and then sent
//! byte for byte, so `1250000.00` leaves exactly as written: no float on the way.
//! Every error names the mapping, the part (`body`, `form.<field>`) and the offending
//! value.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use minijinja::value::Value;
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior};
use serde::Deserialize;
use toml::Spanned;

use super::{MappingError, MappingProblem};
use crate::domain::Money;

/// Template instructions one rendering may run (loops over an order's few lines
/// need far less).
const FUEL: u64 = 200_000;
/// Largest body or value a template may produce.
pub(crate) const MAX_OUTPUT: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Format {
    #[default]
    Json,
    Form,
}

/// `mappings/<id>.toml` with `direction = "outbound"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OutboundFile {
    #[allow(dead_code, reason = "required in the file; kept so deny_unknown_fields accepts it")]
    pub(crate) version: String,
    /// The connector whose requests this builds.
    pub(crate) connector: Spanned<String>,
    /// Always `outbound` here.
    #[allow(dead_code, reason = "the loader reads the direction first; kept so deny_unknown_fields accepts it")]
    pub(crate) direction: String,
    #[serde(default)]
    pub(crate) format: Format,
    /// `format = "json"`: a template producing the JSON body.
    pub(crate) body: Option<Spanned<String>>,
    /// `format = "form"`: field name → template of its value; empty values are left out.
    #[serde(default)]
    pub(crate) form: BTreeMap<String, Spanned<String>>,
    /// Tables for `lookup("name", key)`, e.g. product type → account code.
    #[serde(default)]
    pub(crate) lookups: BTreeMap<String, BTreeMap<String, String>>,
}

/// A request body, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Body {
    pub(crate) content_type: &'static str,
    pub(crate) bytes: Vec<u8>,
}

impl Body {
    pub(crate) fn text(&self) -> &str {
        std::str::from_utf8(&self.bytes).unwrap_or("<binary>")
    }
}

/// A validated outbound mapping.
#[derive(Debug)]
pub struct OutboundMapping {
    pub(crate) id: String,
    pub(crate) connector: String,
    pub(crate) format: Format,
    templates: Snippets,
    form_fields: Vec<String>,
    /// Where the `body` (or the first form field) starts in the file, for `check`.
    pub(crate) span: std::ops::Range<usize>,
}

impl OutboundFile {
    /// Compiles every template; a syntax error points at its part of the file.
    pub(crate) fn validate(self, id: &str) -> Result<OutboundMapping, Vec<MappingProblem>> {
        let mut problems = Vec::new();
        let mut templates = Snippets::new(format!("mapping {id}"), Arc::new(self.lookups));
        let mut form_fields = Vec::new();
        let span = self
            .body
            .as_ref()
            .map(Spanned::span)
            .or_else(|| self.form.values().next().map(Spanned::span))
            .unwrap_or_else(|| self.connector.span());
        match (self.format, &self.body, self.form.is_empty()) {
            (Format::Json, Some(body), true) => {
                if let Err(e) = templates.add("body", body.get_ref()) {
                    problems.push(MappingProblem { span: body.span(), message: e });
                }
            }
            (Format::Form, None, false) => {
                for (field, t) in &self.form {
                    let name = format!("form.{field}");
                    match templates.add(&name, t.get_ref()) {
                        Ok(()) => form_fields.push(field.clone()),
                        Err(e) => problems.push(MappingProblem { span: t.span(), message: e }),
                    }
                }
            }
            (Format::Json, _, _) => problems.push(MappingProblem {
                span: self.connector.span(),
                message: "format = \"json\" needs a `body` template and no [form] table".into(),
            }),
            (Format::Form, _, _) => problems.push(MappingProblem {
                span: self.connector.span(),
                message: "format = \"form\" needs a [form] table and no `body`".into(),
            }),
        }
        if problems.is_empty() {
            Ok(OutboundMapping {
                id: id.to_owned(),
                connector: self.connector.into_inner(),
                format: self.format,
                templates,
                form_fields,
                span,
            })
        } else {
            Err(problems)
        }
    }
}

impl OutboundMapping {
    /// Renders the body for one effect.
    ///
    /// # Errors
    /// The part, line and reason when a value is missing or malformed, or the result
    /// is not JSON.
    pub(crate) fn render(&self, ctx: &serde_json::Value) -> Result<Body, MappingError> {
        let err = |field: &str, reason: String| MappingError {
            mapping: self.id.clone(),
            field: field.to_owned(),
            source_path: None,
            reason,
        };
        match self.format {
            Format::Json => {
                let text = self.templates.render("body", ctx).map_err(|e| err("body", e))?;
                if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&text) {
                    let line = text.lines().nth(e.line().saturating_sub(1)).unwrap_or_default();
                    return Err(err(
                        "body",
                        format!("the rendered body is not JSON: {e} (rendered line: {})", clip(line.trim())),
                    ));
                }
                Ok(Body { content_type: "application/json", bytes: text.into_bytes() })
            }
            Format::Form => {
                let mut form = form_urlencoded::Serializer::new(String::new());
                for field in &self.form_fields {
                    let name = format!("form.{field}");
                    let value = self.templates.render(&name, ctx).map_err(|e| err(&name, e))?;
                    if !value.is_empty() {
                        form.append_pair(field, &value);
                    }
                }
                Ok(Body { content_type: "application/x-www-form-urlencoded", bytes: form.finish().into_bytes() })
            }
        }
    }
}

/// A context with every name an outbound template may use, for `check`: a sample
/// order as an effect carries it, `references` for every `<connector>.<operation>`,
/// what follow-up calls see (`reference`, `response`) and what polls see.
pub(crate) fn sample_context(order: &serde_json::Value, references: &[String]) -> serde_json::Value {
    let refs: serde_json::Map<String, serde_json::Value> =
        references.iter().map(|r| (r.clone(), serde_json::Value::String(format!("sample-{r}")))).collect();
    serde_json::json!({
        "effect_id": "0193a5e2-c4b8-7d21-a4f0-c9e8b7d6a5f4/1/0",
        "order_id": "0193a5e2-c4b8-7d21-a4f0-c9e8b7d6a5f4",
        "external_id": "D-1",
        "source": {"connector": "crm", "external_id": "D-1"},
        "operation": "sample",
        "cause": "approved",
        "state": "approved",
        "order": order,
        "references": refs,
        "connector": "sample",
        "idempotency_key": "orderbridge:sample",
        "reference": "sample-reference",
        "response": {},
        "watermark": "2026-11-26T02:03:04.000Z",
        "cursor": "",
        "offset": 0,
        "page": 1,
        "limit": 100,
    })
}

/// Named templates with the outbound filters: bodies, paths, query values, headers.
pub(crate) struct Snippets {
    label: String,
    env: Environment<'static>,
}

impl std::fmt::Debug for Snippets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label)
    }
}

impl Snippets {
    /// `label` starts every error (`mapping xero-invoice`, `connector xero`).
    pub(crate) fn new(label: String, lookups: Arc<BTreeMap<String, BTreeMap<String, String>>>) -> Self {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        // Printing a missing value is an error; `{% if x %}` and `x or ...` may test it.
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_keep_trailing_newline(false);
        env.add_filter("json", |v: Value| -> Result<String, Error> {
            defined("json", &v)?;
            serde_json::to_string(&v).map_err(|e| invalid(format!("json: {e}")))
        });
        env.add_filter("number", |v: Value| -> Result<String, Error> {
            defined("number", &v)?;
            let text = plain(&v);
            crate::domain::money::parse_decimal(&text)
                .map(|d| d.to_string())
                .map_err(|_| invalid(format!("number: {} is not a decimal number", brief(&text))))
        });
        env.add_filter("minor_units", |v: Value| -> Result<i64, Error> {
            defined("minor_units", &v)?;
            let amount = v.get_attr("amount")?;
            let currency = v.get_attr("currency")?;
            Money::parse(&plain(&amount), &plain(&currency))
                .and_then(|m| m.to_minor_units())
                .map_err(|e| invalid(format!("minor_units: {e}")))
        });
        env.add_filter("unix", |v: Value| -> Result<i64, Error> { Ok(time_of(&v)?.timestamp()) });
        env.add_filter("unix_ms", |v: Value| -> Result<i64, Error> { Ok(time_of(&v)?.timestamp_millis()) });
        env.add_filter("rfc3339", |v: Value| -> Result<String, Error> {
            Ok(time_of(&v)?.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        });
        env.add_filter("date", |v: Value| -> Result<String, Error> {
            let text = plain(&v);
            match text.parse::<NaiveDate>() {
                Ok(d) => Ok(d.to_string()),
                Err(_) => Ok(time_of(&v)?.date_naive().to_string()),
            }
        });
        env.add_filter("add_days", |v: Value, days: i64| -> Result<String, Error> {
            let text = plain(&v);
            let day = match text.parse::<NaiveDate>() {
                Ok(d) => d,
                Err(_) => time_of(&v)?.date_naive(),
            };
            // `Duration::days` panics past ±1e14 days: the count may come from a payload.
            chrono::Duration::try_days(days)
                .and_then(|d| day.checked_add_signed(d))
                .map(|d| d.to_string())
                .ok_or_else(|| invalid(format!("add_days: {} + {days} days is out of range", brief(&text))))
        });
        env.add_filter("segment", |v: Value| -> String { encode_segment(&plain(&v)) });
        env.add_function("lookup", move |table: String, key: Value| -> Result<String, Error> {
            let t = lookups.get(&table).ok_or_else(|| invalid(format!("lookup: no table `{table}` in [lookups]")))?;
            let k = plain(&key);
            t.get(&k).cloned().ok_or_else(|| {
                invalid(format!(
                    "lookup: {} is not in table `{table}` (known: {})",
                    brief(&k),
                    t.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })
        });
        Snippets { label, env }
    }

    /// Every value a template writes is percent-encoded as one URL path segment.
    pub(crate) fn encoding_segments(mut self) -> Self {
        self.env.set_formatter(|out, _state, value| out.write_str(&encode_segment(&plain(value))).map_err(Error::from));
        self
    }

    /// Compiles one template.
    ///
    /// # Errors
    /// The syntax error, with its line.
    pub(crate) fn add(&mut self, name: &str, source: &str) -> Result<(), String> {
        self.env.add_template_owned(name.to_owned(), source.to_owned()).map_err(|e| describe(name, &e))
    }

    /// Renders one template.
    ///
    /// # Errors
    /// What failed, where, with the offending value; or output beyond [`MAX_OUTPUT`].
    pub(crate) fn render(&self, name: &str, ctx: &serde_json::Value) -> Result<String, String> {
        let t = self.env.get_template(name).map_err(|e| describe(name, &e))?;
        let out = t.render(Value::from_serialize(ctx)).map_err(|e| describe(name, &e))?;
        if out.len() > MAX_OUTPUT {
            return Err(format!("{name}: output is longer than {MAX_OUTPUT} bytes"));
        }
        Ok(out)
    }
}

/// Filters meet missing values too (`x.typo | number`): name the problem plainly.
/// Every byte but the unreserved characters (RFC 3986 `A-Z a-z 0-9 - _ . ~`).
const NOT_UNRESERVED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// One URL path segment: everything but unreserved characters is percent-encoded
/// (so `/`, `?`, `#` and `%` cannot end the segment), and a segment that is exactly
/// `.` or `..` has its dots encoded too.
pub(crate) fn encode_segment(s: &str) -> String {
    if s == "." || s == ".." {
        return "%2E".repeat(s.len());
    }
    percent_encoding::utf8_percent_encode(s, NOT_UNRESERVED).to_string()
}

fn defined(filter: &str, v: &Value) -> Result<(), Error> {
    if v.is_undefined() {
        Err(Error::new(
            ErrorKind::UndefinedError,
            format!("{filter}: the value is undefined (a misspelt or missing field)"),
        ))
    } else {
        Ok(())
    }
}

fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg)
}

/// A value as text without JSON quoting (`"CNY"` → `CNY`, `12` → `12`).
fn plain(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

fn brief(s: &str) -> String {
    format!("\"{}\"", clip(s))
}

fn clip(s: &str) -> String {
    let mut c: String = s.chars().take(80).collect();
    if s.chars().count() > 80 {
        c.push('…');
    }
    c
}

/// Parses the times templates meet: RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC), Xero's
/// `/Date(ms+0000)/`, or Unix seconds / milliseconds as numbers.
fn time_of(v: &Value) -> Result<DateTime<Utc>, Error> {
    defined("time", v)?;
    let text = plain(v);
    parse_time(&text).ok_or_else(|| invalid(format!("{} is not a time", brief(&text))))
}

/// See [`time_of`]; also used for poll watermarks.
pub(crate) fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f") {
        return Some(d.and_utc());
    }
    if let Some(inner) = t.strip_prefix("/Date(").and_then(|r| r.strip_suffix(")/")) {
        let ms = inner.split(['+', '-']).next().unwrap_or_default();
        return ms.parse::<i64>().ok().and_then(DateTime::from_timestamp_millis);
    }
    match t.parse::<i64>() {
        // Past the year 2286 in seconds means the number is milliseconds.
        Ok(n) if n > 9_999_999_999 => DateTime::from_timestamp_millis(n),
        Ok(n) => DateTime::from_timestamp(n, 0),
        Err(_) => None,
    }
}

fn describe(name: &str, e: &Error) -> String {
    let mut msg = match e.line() {
        Some(l) => format!("{name} line {l}: {}", e.kind()),
        None => format!("{name}: {}", e.kind()),
    };
    if let Some(d) = e.detail() {
        msg.push_str(&format!(": {d}"));
    }
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_value_stays_one_path_segment() {
        assert_eq!(encode_segment(".."), "%2E%2E");
        assert_eq!(encode_segment("."), "%2E");
        assert_eq!(encode_segment("a/../b?c#d%"), "a%2F..%2Fb%3Fc%23d%25");
        assert_eq!(encode_segment("v1.2"), "v1.2", "dots inside a segment are plain");
        assert_eq!(encode_segment("订单"), "%E8%AE%A2%E5%8D%95");
        assert_eq!(encode_segment("a b~_-"), "a%20b~_-");
    }

    fn mapping(text: &str) -> OutboundMapping {
        toml::from_str::<OutboundFile>(text).unwrap().validate("t").unwrap()
    }

    fn ctx() -> serde_json::Value {
        json!({
            "order_id": "ord-1",
            "order": {
                "customer": {"name": "上海\"星辰\"贸易有限公司", "email": "cfo@xingchen.example"},
                "amount": {"amount": "1250000.05", "currency": "CNY"},
                "product": {"type": "loan"},
                "placed_at": "2026-11-26T02:03:04Z"
            },
            "references": {"xero.create_contact": "c-1"}
        })
    }

    #[test]
    fn json_bodies_keep_exact_decimals_and_escape_text() {
        let m = mapping(
            r#"
version = "1"
connector = "xero"
direction = "outbound"
body = '''
{"Name": {{ order.customer.name | json }}, "UnitAmount": {{ order.amount.amount | number }},
 "Contact": {{ references["xero.create_contact"] | json }}, "Account": {{ lookup("account", order.product.type) | json }},
 "Date": {{ order.placed_at | date | json }}, "Due": {{ order.placed_at | add_days(30) | json }}}
'''
[lookups.account]
loan = "200"
"#,
        );
        let b = m.render(&ctx()).unwrap();
        assert_eq!(b.content_type, "application/json");
        assert!(b.text().contains(r#""UnitAmount": 1250000.05,"#), "{}", b.text());
        let v: serde_json::Value = serde_json::from_slice(&b.bytes).unwrap();
        assert_eq!(v["Name"], "上海\"星辰\"贸易有限公司");
        assert_eq!(v["Account"], "200");
        assert_eq!(v["Date"], "2026-11-26");
        assert_eq!(v["Due"], "2026-12-26");
    }

    #[test]
    fn forms_use_minor_units_and_leave_out_empty_values() {
        let m = mapping(
            r#"
version = "1"
connector = "stripe"
direction = "outbound"
format = "form"
[form]
amount = "{{ order.amount | minor_units }}"
currency = "{{ order.amount.currency | lower }}"
"metadata[order_id]" = "{{ order_id }}"
description = "{{ order.need | default('') }}"
"#,
        );
        let b = m.render(&ctx()).unwrap();
        assert_eq!(b.text(), "amount=125000005&currency=cny&metadata%5Border_id%5D=ord-1");
    }

    #[test]
    fn errors_name_the_part_the_line_and_the_value() {
        let m = mapping(
            r#"
version = "1"
connector = "x"
direction = "outbound"
body = '''
{
 "a": {{ order.customer.name | number }}
}
'''
"#,
        );
        let e = m.render(&ctx()).unwrap_err();
        assert_eq!(e.field, "body");
        assert!(e.reason.contains("line 2") && e.reason.contains("星辰"), "{e}");

        let m = mapping(
            "version = \"1\"\nconnector = \"x\"\ndirection = \"outbound\"\nbody = '{\"a\": {{ order.nothing }}}'\n",
        );
        assert!(m.render(&ctx()).unwrap_err().reason.contains("undefined"));

        let m = mapping(
            "version = \"1\"\nconnector = \"x\"\ndirection = \"outbound\"\nbody = '{\"a\": {{ order.customer.name }}}'\n",
        );
        let e = m.render(&ctx()).unwrap_err();
        assert!(e.reason.contains("not JSON") && e.reason.contains("上海"), "{e}");

        let m = mapping(
            "version = \"1\"\nconnector = \"x\"\ndirection = \"outbound\"\nbody = '{\"a\": {{ lookup(\"t\", \"deposit\") | json }}}'\n[lookups.t]\nloan = \"1\"\n",
        );
        let e = m.render(&ctx()).unwrap_err();
        assert!(e.reason.contains("\"deposit\" is not in table `t` (known: loan)"), "{e}");
    }

    #[test]
    fn a_day_count_out_of_range_is_an_error_not_a_panic() {
        let body = r#"version = "1"
connector = "x"
direction = "outbound"
body = '{"d": {{ order.placed_at | add_days(N) | json }}}'
"#;
        for n in [i64::MAX, i64::MIN, 400_000_000, -400_000_000] {
            let m = mapping(&body.replace('N', &n.to_string()));
            let e = m.render(&ctx()).unwrap_err();
            assert!(e.reason.contains("is out of range"), "{n}: {e}");
        }
    }

    #[test]
    fn runaway_templates_stop() {
        let m = mapping(
            "version = \"1\"\nconnector = \"x\"\ndirection = \"outbound\"\nbody = '{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}'\n",
        );
        assert!(m.render(&ctx()).is_err());
    }

    #[test]
    fn syntax_errors_are_found_when_loading() {
        let f: OutboundFile =
            toml::from_str("version = \"1\"\nconnector = \"x\"\ndirection = \"outbound\"\nbody = '{{ order.'\n")
                .unwrap();
        let p = f.validate("t").unwrap_err();
        assert!(p[0].message.contains("body line 1"), "{}", p[0].message);
    }

    #[test]
    fn times_parse_in_every_shape_vendors_use() {
        let want = "2026-11-26T02:03:04Z".parse::<DateTime<Utc>>().unwrap();
        for t in [
            "2026-11-26T02:03:04Z",
            "2026-11-26T10:03:04+08:00",
            "2026-11-26 02:03:04",
            "1795658584",
            "1795658584000",
            "/Date(1795658584000+0000)/",
        ] {
            assert_eq!(parse_time(t), Some(want), "{t}");
        }
        assert_eq!(parse_time("yesterday"), None);
    }
}
