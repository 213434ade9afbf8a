//! Putting an order's personal values into tokens in what a step writes
//! (`Vault::conceal`), and opening them again for those who need clear text
//! (`Vault::reveal_*`).

use std::collections::HashMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::token::{self, Key};
use super::{Dek, Vault};
use crate::domain::privacy::{ERASED, is_token};
use crate::domain::{Order, OrderId};
use crate::store::records::OrderRecord;
use crate::store::{DigestChange, OutboxChange, Step, StoreError};

/// Shortest clear value also replaced inside longer text: shorter ones would match
/// unrelated text (as `domain::privacy` masks).
const MIN_INSIDE_CHARS: usize = 4;

/// The clear personal values of `order` (values already tokens left out); an
/// e-mail address also lower-cased, as digests group by it.
fn personal_values(order: &Order) -> Vec<String> {
    let c = &order.customer;
    let mut out: Vec<String> = [
        c.id_document.as_ref().map(|d| d.number.as_str()),
        c.phone.as_ref().map(|p| p.as_str()),
        c.email.as_ref().map(|e| e.as_str()),
    ]
    .into_iter()
    .flatten()
    .filter(|v| !is_token(v) && !v.is_empty())
    .map(str::to_owned)
    .collect();
    if let Some(e) = &c.email
        && e.as_str() != e.as_str().to_lowercase()
        && !is_token(e.as_str())
    {
        out.push(e.as_str().to_lowercase());
    }
    out
}

/// Clear value → token, longest clear value first (a value holding another is
/// replaced whole).
type Pairs = Vec<(String, String)>;

fn pairs(dek: &Key, id: OrderId, values: Vec<String>) -> Pairs {
    let mut p: Pairs = values.into_iter().map(|v| (token::seal(dek, id, &v), v)).map(|(t, v)| (v, t)).collect();
    p.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
    p.dedup();
    p
}

/// Replaces each clear value in the strings of `v`; whether any was.
fn conceal_value(v: &mut Value, pairs: &Pairs) -> bool {
    match v {
        Value::String(s) => conceal_text(s, pairs),
        Value::Object(map) => map.values_mut().fold(false, |acc, c| conceal_value(c, pairs) | acc),
        Value::Array(items) => items.iter_mut().fold(false, |acc, c| conceal_value(c, pairs) | acc),
        _ => false,
    }
}

fn conceal_text(s: &mut String, pairs: &Pairs) -> bool {
    let mut changed = false;
    for (clear, tok) in pairs {
        if s == clear {
            tok.clone_into(s);
            return true;
        }
        if clear.chars().count() >= MIN_INSIDE_CHARS && s.contains(clear.as_str()) {
            *s = s.replace(clear.as_str(), tok);
            changed = true;
        }
    }
    changed
}

/// `conceal_value` on a typed row, through its JSON.
fn conceal_typed<T: Serialize + DeserializeOwned>(t: &mut T, pairs: &Pairs) -> Result<bool, StoreError> {
    let mut v = serde_json::to_value(&*t).map_err(|e| StoreError::Io(format!("encrypting a row: {e}")))?;
    if !conceal_value(&mut v, pairs) {
        return Ok(false);
    }
    *t = serde_json::from_value(v).map_err(|e| StoreError::Io(format!("encrypting a row: {e}")))?;
    Ok(true)
}

/// Puts the order's values into tokens in every row of `step` that belongs to it,
/// then hashes its events again from the first one changed (the chain covers what
/// is stored).
fn conceal_step(step: &mut Step, id: OrderId, pairs: &Pairs) -> Result<(), StoreError> {
    if let Some(w) = step.order.as_mut() {
        conceal_typed(&mut w.record, pairs)?;
    }
    let mut from = None;
    for (i, e) in step.events.iter_mut().enumerate() {
        // The whole entry: an actor may be the customer's address (a survey answered).
        if e.order_id == id && conceal_typed(e, pairs)? && from.is_none() {
            from = Some(i);
        }
    }
    if let Some(from) = from {
        let mut prev = step.events[from].prev_hash.clone();
        for e in step.events[from..].iter_mut().filter(|e| e.order_id == id) {
            e.prev_hash = prev;
            e.hash = e.compute_hash();
            prev = e.hash.clone();
        }
        if let Some(w) = step.order.as_mut()
            && step.events.last().is_some_and(|e| e.order_id == id && e.seq == w.record.last_seq)
        {
            w.record.last_hash = prev;
        }
    }
    for change in &mut step.outbox {
        if let OutboxChange::Add(e) = change
            && e.id.order_id == id
        {
            conceal_value(&mut e.body, pairs);
        }
    }
    for change in &mut step.digests {
        if let DigestChange::Hold(key, item) = change
            && item.order_id == id
        {
            conceal_text(&mut key.group, pairs);
            conceal_typed(item.as_mut(), pairs)?;
        }
    }
    Ok(())
}

impl Vault {
    /// Encrypts, in each step that writes an order, that order's personal values
    /// wherever the step writes them; a new order's data key is written with it.
    /// Does nothing without an active key.
    ///
    /// # Errors
    /// `Io` when the order's data key is wrapped under a KEK no longer configured.
    pub(crate) async fn conceal(&self, steps: &mut [Step]) -> Result<(), StoreError> {
        if !self.encrypts() {
            return Ok(());
        }
        let mut fresh: HashMap<OrderId, Key> = HashMap::new();
        for step in steps.iter_mut() {
            let Some(w) = step.order.as_ref() else { continue };
            let id = w.record.id;
            let values = personal_values(&w.record.order);
            if values.is_empty() {
                continue;
            }
            let erasing = step.jobs.iter().any(|(k, _)| *k == super::row_key(id));
            let dek = if let Some(k) = fresh.get(&id) {
                k.clone()
            } else if erasing {
                // The step erases the order's data key: what it writes is sealed for nobody.
                Key::random()
            } else {
                // A new order (its first row) has no data key yet: no need to look.
                let stored = if w.loaded.is_none() { Dek::Absent } else { self.dek(id).await? };
                match stored {
                    Dek::Live(k) => k,
                    Dek::Absent => {
                        let (k, row) = self.new_dek(id).expect("an active key (checked above)");
                        step.jobs.push(row);
                        fresh.insert(id, k.clone());
                        k
                    }
                    // Values arriving after erasure are sealed under a key nobody keeps.
                    Dek::Erased => Key::random(),
                    Dek::Locked(kek) => {
                        return Err(StoreError::Io(format!(
                            "order {id}: its data key is wrapped under key `{kek}`, which is not configured \
                             ([privacy] keys); put it back, or run `orderbridge keys rotate` before removing a key"
                        )));
                    }
                }
            };
            conceal_step(step, id, &pairs(&dek, id, values))?;
        }
        Ok(())
    }

    /// The data keys of the orders whose tokens are in `v`.
    async fn deks_in(&self, v: &Value) -> Result<HashMap<OrderId, Dek>, StoreError> {
        let mut ids = Vec::new();
        collect_orders(v, &mut ids);
        let mut out = HashMap::new();
        for id in ids {
            if let std::collections::hash_map::Entry::Vacant(e) = out.entry(id) {
                e.insert(self.dek(id).await?);
            }
        }
        Ok(out)
    }

    /// Opens every token in `v` (any order's); an erased order's read `erased`, and
    /// tokens whose key is not at hand stay as they are.
    ///
    /// # Errors
    /// From reading the data keys.
    pub(crate) async fn reveal_value(&self, v: &mut Value) -> Result<(), StoreError> {
        let deks = self.deks_in(v).await?;
        if !deks.is_empty() {
            reveal_in(v, &deks);
        }
        Ok(())
    }

    /// `reveal_value` on an order document (`view::found_json`) except its events:
    /// they stay as stored, so their hashes can still be checked from the document
    /// (an evidence pack's offline check).
    pub(crate) async fn reveal_order_doc(&self, doc: &mut Value) -> Result<(), StoreError> {
        let events = doc.as_object_mut().and_then(|o| o.remove("events"));
        let opened = self.reveal_value(doc).await;
        if let (Some(ev), Some(o)) = (events, doc.as_object_mut()) {
            o.insert("events".into(), ev);
        }
        opened
    }

    /// `reveal_value` on an HTML document (an archived contract): opened values are
    /// escaped as the template escaped the tokens' place.
    pub(crate) async fn reveal_html(&self, html: &str) -> Result<String, StoreError> {
        let deks = self.deks_in(&Value::String(html.to_owned())).await?;
        Ok(reveal_str(html, &deks, html_escape))
    }

    /// The order row with its customer's personal values in clear, for the engine
    /// (screening, notifications); values of an erased order stay tokens.
    pub(crate) async fn reveal_record(&self, rec: &mut OrderRecord) -> Result<(), StoreError> {
        let c = &rec.order.customer;
        let tokens = [
            c.id_document.as_ref().map(|d| d.number.as_str()),
            c.phone.as_ref().map(|p| p.as_str()),
            c.email.as_ref().map(|e| e.as_str()),
        ];
        if !tokens.iter().flatten().any(|t| is_token(t)) {
            return Ok(());
        }
        let Dek::Live(dek) = self.dek(rec.id).await? else { return Ok(()) };
        let id = rec.id;
        let open =
            |s: &str| token::parse(s).ok().and_then(|(o, raw)| token::open(&dek, o, &raw).ok().filter(|_| o == id));
        let c = &mut rec.order.customer;
        if let Some(d) = c.id_document.as_mut()
            && let Some(clear) = open(d.number.as_str()).and_then(|s| s.parse().ok())
        {
            d.number = clear;
        }
        if let Some(clear) = c.phone.as_ref().and_then(|p| open(p.as_str())).and_then(|s| s.parse().ok()) {
            c.phone = Some(clear);
        }
        if let Some(clear) = c.email.as_ref().and_then(|e| open(e.as_str())).and_then(|s| s.parse().ok()) {
            c.email = Some(clear);
        }
        Ok(())
    }
}

fn collect_orders(v: &Value, out: &mut Vec<OrderId>) {
    match v {
        Value::String(s) if s.contains(token::TOKEN_PREFIX) => {
            out.extend(token::find_all(s).into_iter().filter_map(|r| token::parse(&s[r]).ok().map(|(id, _)| id)));
        }
        Value::Object(map) => map.values().for_each(|c| collect_orders(c, out)),
        Value::Array(items) => items.iter().for_each(|c| collect_orders(c, out)),
        _ => {}
    }
}

fn reveal_in(v: &mut Value, deks: &HashMap<OrderId, Dek>) {
    match v {
        Value::String(s) if s.contains(token::TOKEN_PREFIX) => *s = reveal_str(s, deks, str::to_owned),
        Value::Object(map) => map.values_mut().for_each(|c| reveal_in(c, deks)),
        Value::Array(items) => items.iter_mut().for_each(|c| reveal_in(c, deks)),
        _ => {}
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// `s` with each token opened (and passed through `escape`).
fn reveal_str(s: &str, deks: &HashMap<OrderId, Dek>, escape: fn(&str) -> String) -> String {
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for r in token::find_all(s) {
        out.push_str(&s[last..r.start]);
        let t = &s[r.clone()];
        let opened = token::parse(t).ok().and_then(|(id, raw)| match deks.get(&id) {
            Some(Dek::Live(k)) => token::open(k, id, &raw).ok(),
            Some(Dek::Erased) => Some(ERASED.to_owned()),
            _ => None,
        });
        out.push_str(&opened.map_or_else(|| t.to_owned(), |o| escape(&o)));
        last = r.end;
    }
    out.push_str(&s[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_replaced_whole_and_inside_text_and_open_again() {
        let id: OrderId = "ord_0190a0b0c0d07e008000000000000001".parse().unwrap();
        let dek = Key::random();
        let p = pairs(
            &dek,
            id,
            vec![
                "11010519491231002X".into(),
                "+86 138 0013 8000".into(),
                "Zhang@Example.com".into(),
                "zhang@example.com".into(),
            ],
        );
        let mut v = serde_json::json!({
            "to": {"email": "Zhang@Example.com"},
            "text": "证件 11010519491231002X，电话 +86 138 0013 8000",
            "group": "customer:zhang@example.com:reminder",
            "n": 3,
        });
        assert!(conceal_value(&mut v, &p));
        let text = v.to_string();
        for clear in ["11010519491231002X", "138 0013", "xample.com"] {
            assert!(!text.contains(clear), "{clear} in {text}");
        }
        let deks = HashMap::from([(id, Dek::Live(dek))]);
        reveal_in(&mut v, &deks);
        assert_eq!(v["to"]["email"], "Zhang@Example.com");
        assert_eq!(v["text"], "证件 11010519491231002X，电话 +86 138 0013 8000");
        assert_eq!(v["group"], "customer:zhang@example.com:reminder");
        assert_eq!(v["n"], 3);
    }

    #[test]
    fn an_erased_orders_tokens_read_erased() {
        let id: OrderId = "ord_0190a0b0c0d07e008000000000000001".parse().unwrap();
        let dek = Key::random();
        let t = token::seal(&dek, id, "13800138000");
        let mut v = serde_json::json!({"phone": t, "note": format!("call {t}")});
        reveal_in(&mut v, &HashMap::from([(id, Dek::Erased)]));
        assert_eq!(v, serde_json::json!({"phone": "erased", "note": "call erased"}));
    }
}
