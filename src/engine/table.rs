//! Decision-table rows: cells written in zen-expression's unary form, evaluated by our
//! code against the inputs of one decision.
//!
//! A cell is keyed by an input name (`amount`, `customer.credit_rating`, …) and holds
//! a unary test of that input: `> 1000000`, `(50000..1000000]`, `'A','AA'`, `true`,
//! `null`. A row matches when every cell does (an empty row always matches). The
//! language is bounded: no user functions, no loops over anything but the inputs'
//! own small arrays, decimals for numbers, and every cell is compiled when the rules
//! load, so a typo is a located `check` error, never a runtime surprise.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use zen_expression::expression::Unary;
use zen_expression::variable::{Variable, VariableMap};
use zen_expression::{Expression, compile_unary_expression};

use crate::domain::order::CreditRating;
use crate::domain::{Money, Order};

/// Every input a cell may name, with what it holds (for `check` and the README).
pub(crate) const INPUTS: &[(&str, &str)] = &[
    ("amount", "the order amount, a decimal number"),
    ("currency", "ISO 4217 code, e.g. 'CNY'"),
    ("product.type", "e.g. 'wealth_management', 'loan'"),
    ("product.code", "the product code"),
    ("term_months", "term in months, or null"),
    ("customer.kind", "'individual' or 'corporate'"),
    ("customer.credit_rating", "'AAA' … 'D', or null"),
    ("customer.credit_rank", "1 (AAA) … 10 (D), or null: for ranges such as `> 5`"),
    ("customer.kyc_verified", "true or false"),
    ("customer.id_document_type", "e.g. 'cn_resident_id', or null"),
    ("customer.id_document_valid", "false when missing or a Chinese resident ID fails its checksum"),
    ("customer.on_watch_list", "true when the customer's id, ID number or name is on the watch list"),
    ("history.orders", "the customer's other orders in the history window"),
    (
        "history.amount",
        "their total amount in this order's currency (null when too large to compute: see HISTORY-OVERFLOW)",
    ),
    ("history.same_product", "how many of them are for the same product code"),
];

/// What the store knows about a customer's recent orders (velocity, duplicates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    pub(crate) orders: u32,
    /// Their total in this order's currency; `None` when it exceeds the largest amount
    /// a decimal holds. Screening then flags the order (`HISTORY-OVERFLOW`): a total
    /// nobody can compute must not let a velocity rule pass, nor stop the customer.
    pub(crate) amount: Option<Decimal>,
    pub(crate) same_product: u32,
}

impl Default for History {
    fn default() -> Self {
        History { orders: 0, amount: Some(Decimal::ZERO), same_product: 0 }
    }
}

/// One prior order, as the history index keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Prior {
    pub amount: Money,
    pub product_code: String,
}

impl History {
    /// Counts and sums `priors` for `order`. Never panics: counts saturate, and a
    /// total past the largest decimal becomes `amount: None`.
    pub fn of(order: &Order, priors: &[Prior]) -> History {
        let mut h = History::default();
        for p in priors {
            h.orders = h.orders.saturating_add(1);
            if p.amount.currency() == order.amount.currency() {
                h.amount = h.amount.and_then(|sum| sum.checked_add(p.amount.amount()));
            }
            if p.product_code == order.product.code.as_str() {
                h.same_product = h.same_product.saturating_add(1);
            }
        }
        h
    }
}

/// One input value. Numbers are decimals (never floats). In the audit a number is
/// written as a string (`"1250000.00"`) so no reader rounds it; read back, it is text
/// with the same JSON, so the audit's hashes still verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Input {
    Null,
    Bool(bool),
    #[serde(serialize_with = "decimal_text")]
    Number(Decimal),
    Text(String),
}

/// Read by the JSON value's own type, not by trying each variant in turn (serde's
/// `untagged`), which buffers every value and builds an error for each miss: the
/// report and the export read these for every decision of every order.
impl<'de> Deserialize<'de> for Input {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Input;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("null, a boolean or text")
            }
            fn visit_unit<E>(self) -> Result<Input, E> {
                Ok(Input::Null)
            }
            fn visit_none<E>(self) -> Result<Input, E> {
                Ok(Input::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Input, E> {
                Ok(Input::Bool(b))
            }
            fn visit_str<E>(self, s: &str) -> Result<Input, E> {
                Ok(Input::Text(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Input, E> {
                Ok(Input::Text(s))
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn decimal_text<S: serde::Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(d)
}

impl Input {
    fn variable(&self) -> Variable {
        match self {
            Input::Null => Variable::Null,
            Input::Bool(b) => Variable::Bool(*b),
            Input::Number(d) => Variable::Number(*d),
            Input::Text(t) => Variable::String(t.as_str().into()),
        }
    }
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Null => f.write_str("null"),
            Input::Bool(b) => write!(f, "{b}"),
            Input::Number(d) => write!(f, "{d}"),
            Input::Text(t) => f.write_str(t),
        }
    }
}

/// The inputs of one decision, by name: what the audit records as "the inputs it
/// looked at".
pub(crate) type Inputs = BTreeMap<String, Input>;

/// The inputs for `order`, with the facts only the store and reference data know.
pub(crate) fn inputs(order: &Order, on_watch_list: bool, history: &History) -> Inputs {
    let c = &order.customer;
    let rank = |r: CreditRating| CreditRating::ALL.iter().position(|x| *x == r).map(|i| i as u32 + 1);
    let text = |s: &str| Input::Text(s.to_owned());
    let num = |n: u32| Input::Number(Decimal::from(n));
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: Input| {
        m.insert(k.to_owned(), v);
    };
    put("amount", Input::Number(order.amount.amount()));
    put("currency", text(order.amount.currency().as_str()));
    put("product.type", text(order.product.kind.as_str()));
    put("product.code", text(order.product.code.as_str()));
    put("term_months", order.term_months.map_or(Input::Null, |t| num(t.get())));
    put("customer.kind", text(c.kind.as_str()));
    put("customer.credit_rating", c.credit_rating.map_or(Input::Null, |r| text(r.as_str())));
    put("customer.credit_rank", c.credit_rating.and_then(rank).map_or(Input::Null, num));
    put("customer.kyc_verified", Input::Bool(c.kyc_verified));
    put("customer.id_document_type", c.id_document.as_ref().map_or(Input::Null, |d| text(d.kind.as_str())));
    put("customer.id_document_valid", Input::Bool(c.id_document.as_ref().is_some_and(|d| d.checksum_ok())));
    put("customer.on_watch_list", Input::Bool(on_watch_list));
    put("history.orders", num(history.orders));
    put("history.amount", history.amount.map_or(Input::Null, Input::Number));
    put("history.same_product", num(history.same_product));
    m
}

/// One compiled cell.
#[derive(Clone)]
pub(crate) struct Cell {
    pub(crate) input: String,
    pub(crate) source: String,
    expr: Expression<Unary>,
}

impl std::fmt::Debug for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.input, self.source)
    }
}

impl Cell {
    /// # Errors
    /// An unknown input, or a cell that does not compile (with the parser's reason).
    pub(crate) fn compile(input: &str, source: &str) -> Result<Cell, String> {
        if !INPUTS.iter().any(|(n, _)| *n == input) {
            let known: Vec<&str> = INPUTS.iter().map(|(n, _)| *n).collect();
            return Err(format!("unknown input `{input}` (known: {})", known.join(", ")));
        }
        let source = source.trim();
        if source.is_empty() || source == "-" {
            return Err(format!("cell `{input}` is empty; leave the input out of the row to match anything"));
        }
        let expr = compile_unary_expression(source).map_err(|e| format!("cell `{input} = {source}`: {e}"))?;
        Ok(Cell { input: input.to_owned(), source: source.to_owned(), expr })
    }

    /// # Errors
    /// An evaluation error (e.g. comparing a number with text), naming the cell.
    pub(crate) fn matches(&self, inputs: &Inputs) -> Result<bool, String> {
        let value = inputs.get(&self.input).cloned().unwrap_or(Input::Null);
        let mut env = VariableMap::default();
        env.insert(Variable::dollar_key(), value.variable());
        thread_local! {
            // One VM per thread, reused: evaluation allocates its stacks once.
            static VM: std::cell::RefCell<zen_expression::vm::VM> = std::cell::RefCell::new(zen_expression::vm::VM::new());
        }
        let result = VM.with(|vm| self.expr.evaluate_with(Variable::from_object(env), &mut vm.borrow_mut()));
        match result {
            Ok(b) => Ok(b),
            // A comparison with a missing value does not match (write `null` to match it).
            Err(_) if value == Input::Null => Ok(false),
            Err(e) => Err(format!("cell `{} = {}` on {value}: {e}", self.input, self.source)),
        }
    }
}

/// A row: all cells must match.
#[derive(Clone, Debug, Default)]
pub(crate) struct Row {
    pub(crate) cells: Vec<Cell>,
}

impl Row {
    /// # Errors
    /// Every cell that does not compile.
    pub(crate) fn compile(when: &BTreeMap<String, String>) -> Result<Row, Vec<String>> {
        let (cells, errors): (Vec<_>, Vec<_>) = when.iter().map(|(k, v)| Cell::compile(k, v)).partition(Result::is_ok);
        if errors.is_empty() {
            Ok(Row { cells: cells.into_iter().map(Result::unwrap).collect() })
        } else {
            Err(errors.into_iter().map(|e| e.unwrap_err()).collect())
        }
    }

    /// # Errors
    /// A cell that cannot be evaluated on these inputs.
    pub(crate) fn matches(&self, inputs: &Inputs) -> Result<bool, String> {
        for c in &self.cells {
            if !c.matches(inputs)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ins(pairs: &[(&str, Input)]) -> Inputs {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }
    fn t(s: &str) -> Input {
        Input::Text(s.into())
    }

    #[test]
    fn cells_cover_ranges_lists_and_nulls() {
        let amount = |a: &str| ins(&[("amount", Input::Number(a.parse::<Decimal>().unwrap()))]);
        let band = Cell::compile("amount", "(100000..1000000]").unwrap();
        assert!(!band.matches(&amount("100000")).unwrap(), "open at the bottom");
        assert!(band.matches(&amount("100000.01")).unwrap());
        assert!(band.matches(&amount("1000000")).unwrap(), "closed at the top");
        assert!(!band.matches(&amount("1000000.01")).unwrap());
        let big = Cell::compile("amount", "> 10000000").unwrap();
        assert!(big.matches(&amount("10000000.01")).unwrap());
        assert!(!big.matches(&amount("10000000")).unwrap());

        let rating = Cell::compile("customer.credit_rating", "'B','CCC','CC','C','D'").unwrap();
        assert!(rating.matches(&ins(&[("customer.credit_rating", t("CCC"))])).unwrap());
        assert!(!rating.matches(&ins(&[("customer.credit_rating", t("A"))])).unwrap());
        assert!(!rating.matches(&ins(&[("customer.credit_rating", Input::Null)])).unwrap());
        let rank = Cell::compile("customer.credit_rank", "> 5").unwrap();
        assert!(!rank.matches(&ins(&[("customer.credit_rank", Input::Null)])).unwrap(), "null never compares");
        let missing = Cell::compile("customer.credit_rating", "null").unwrap();
        assert!(missing.matches(&ins(&[("customer.credit_rating", Input::Null)])).unwrap());
        assert!(!missing.matches(&ins(&[("customer.credit_rating", t("A"))])).unwrap());
        let no = Cell::compile("customer.kyc_verified", "false").unwrap();
        assert!(no.matches(&ins(&[("customer.kyc_verified", Input::Bool(false))])).unwrap());
        assert!(!no.matches(&ins(&[("customer.kyc_verified", Input::Bool(true))])).unwrap());
    }

    #[test]
    fn bad_cells_are_refused_with_the_reason() {
        assert!(Cell::compile("amont", "> 1").unwrap_err().contains("unknown input `amont`"));
        assert!(Cell::compile("amount", "> > 1").is_err());
        assert!(Cell::compile("amount", "-").unwrap_err().contains("empty"));
    }

    #[test]
    fn decimals_stay_exact() {
        let c = Cell::compile("amount", "<= 0.3").unwrap();
        let v = "0.3".parse::<Decimal>().unwrap();
        assert!(c.matches(&ins(&[("amount", Input::Number(v))])).unwrap());
        assert!(!Cell::compile("amount", "< 0.3").unwrap().matches(&ins(&[("amount", Input::Number(v))])).unwrap());
        let json = serde_json::to_string(&Input::Number(v)).unwrap();
        assert_eq!(json, "\"0.3\"");
        let back = serde_json::from_str::<Input>(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json, "same JSON read back");
    }
}
