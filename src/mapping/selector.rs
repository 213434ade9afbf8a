//! A mapping rule's `path`, compiled: plain chains of names and indexes are followed
//! directly, every other JSONPath is queried.

use serde_json::Value;
use serde_json_path::JsonPath;

/// A rule's compiled `path`: the JSONPath, and for a plain chain of member names and
/// array indexes (`$.deal.customer.id`, `$.lines[0].sku`: nearly every rule) the same
/// steps taken directly, without the node list a query builds. Both select the same:
/// a name only in an object, an index only in an array, at most one value.
#[derive(Debug, Clone)]
pub(super) struct Selector {
    pub(super) query: JsonPath,
    plain: Option<Vec<Plain>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Plain {
    Name(String),
    Index(usize),
}

impl Selector {
    pub(super) fn parse(text: &str) -> Result<Selector, serde_json_path::ParseError> {
        Ok(Selector { query: JsonPath::parse(text)?, plain: plain_steps(text) })
    }

    /// How many values the path selects in `payload`, and the first.
    pub(super) fn select<'v>(&self, payload: &'v Value) -> (usize, Option<&'v Value>) {
        match &self.plain {
            Some(steps) => {
                let found = steps.iter().try_fold(payload, |v, step| match step {
                    Plain::Name(n) => v.as_object()?.get(n),
                    Plain::Index(i) => v.as_array()?.get(*i),
                });
                (usize::from(found.is_some()), found)
            }
            None => {
                let nodes = self.query.query(payload);
                (nodes.len(), nodes.first())
            }
        }
    }
}

/// The steps of `$.name`, `$.name[0].name`… (names of ASCII letters, digits and `_`,
/// not starting with a digit; indexes of decimal digits without a leading zero), or
/// `None` for any other JSONPath.
fn plain_steps(text: &str) -> Option<Vec<Plain>> {
    let mut rest = text.strip_prefix('$')?;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(r.len());
            let name = &r[..end];
            if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                return None;
            }
            steps.push(Plain::Name(name.to_owned()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let (digits, after) = r.split_once(']')?;
            let plain_number = !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && (digits == "0" || !digits.starts_with('0'));
            if !plain_number {
                return None;
            }
            steps.push(Plain::Index(digits.parse().ok()?));
            rest = after;
        } else {
            return None;
        }
    }
    Some(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_path_selects_what_its_jsonpath_selects() {
        let docs = [
            serde_json::json!({"deal": {"id": "D-1", "lines": [{"sku": "A"}, {"sku": null}], "n": 0, "0": "zero"}}),
            serde_json::json!({"deal": [{"id": 1}], "lines": {"0": "key, not index"}}),
            serde_json::json!({"deal": null}),
            serde_json::json!([{"deal": {"id": "in a list"}}]),
            serde_json::json!("text"),
        ];
        let plain = [
            "$",
            "$.deal",
            "$.deal.id",
            "$.deal.lines[0].sku",
            "$.deal.lines[1].sku",
            "$.deal.lines[2].sku",
            "$.deal.lines[10]",
            "$.deal[0].id",
            "$.deal.n",
            "$.lines[0]",
            "$[0].deal.id",
            "$.deal.missing.deeper",
            "$._x9",
        ];
        for path in plain {
            let sel = Selector::parse(path).unwrap();
            assert!(sel.plain.is_some(), "{path} is plain");
            for doc in &docs {
                let nodes = sel.query.query(doc);
                assert_eq!(sel.select(doc), (nodes.len(), nodes.first()), "{path} in {doc}");
            }
        }
        for path in ["$..id", "$.deal[*]", "$['deal']", "$.deal[-1]", "$.deal[0:1]", "$.a[?@.b]"] {
            let sel = Selector::parse(path).unwrap();
            assert!(sel.plain.is_none(), "{path} is a query");
        }
        // A query still answers through JSONPath: several values, counted.
        let sel = Selector::parse("$..sku").unwrap();
        assert_eq!(sel.select(&docs[0]).0, 2);
    }
}
