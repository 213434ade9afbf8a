//! The audit anchor: a periodic, sealed summary of every order's audit chain, so an
//! order deleted, or its chain truncated together with its row (both rewritten
//! consistently, which the per-order chain and seals cannot see), is found by
//! `audit verify`.
//!
//! An anchor holds a Merkle root over all orders' chain heads (order id ‖ last seq ‖
//! last hash; archived orders by the head their archive entry records), the counts,
//! the time and the previous anchor's hash: the anchors form a chain, and each is
//! sealed with the current `[audit]` key (HMAC, like the step seals; a plain hash
//! without keys). The heads of the latest anchor are kept beside it, so `audit verify`
//! can check that each anchored order is still there with its chain at least as long.
//!
//! Anchors are stored as job state rows (`Step::jobs`: `audit-anchor/<n>`, the latest
//! number, the latest heads), written in one commit: durable on every backend,
//! copied by `store copy`, with no table of their own. A new anchor is written only
//! when the latest one still holds, so the evidence of a deletion is never
//! overwritten by an anchor that no longer covers the order. With `[audit]
//! anchor_push`, the same commit queues an effect that pushes the anchor to that
//! connector operation (e.g. write-once storage), so a copy leaves the machine.
//!
//! The heads are paged by the day (UTC) each order was created (its id says when):
//! one row per day (`audit-anchor/heads/<date>`) and an index (`audit-anchor/pages`:
//! each page's day, count and Merkle root). An anchor rewrites only the pages whose
//! heads changed since the one before (the recent days, mostly) and the index, never
//! one row with every order; the root over all heads is as before, so anchors written
//! before paging (one `audit-anchor/heads` row) still verify.

pub(crate) mod verify;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::archive::Archive;
use crate::domain::{ConnectorId, OrderId};
use crate::orders::OrderError;
use crate::store::records::Seal;
use crate::store::{EffectId, EffectRecord, OutboxChange, Step, Store, StoreError};

/// The lease of the anchor job (`Store::try_lease`): one daemon of several writes.
pub(crate) const LEASE: &str = "audit-anchor";
const LATEST: &str = "audit-anchor/latest";
/// The heads of anchors written before paging: one row.
const HEADS: &str = "audit-anchor/heads";
/// The index of the latest anchor's pages of heads.
const PAGES: &str = "audit-anchor/pages";
const PAGE: usize = 1000;

fn page_key(day: &str) -> String {
    format!("{HEADS}/{day}")
}

fn anchor_key(n: u64) -> String {
    format!("audit-anchor/{n:012}")
}

/// One anchor of the chain of anchors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// 1, 2, … with no gaps.
    pub seq: u64,
    pub at: DateTime<Utc>,
    /// Orders covered (hot and archived), of them archived, and the hot ones' events.
    pub orders: u64,
    pub archived: u64,
    pub events: u64,
    /// The Merkle root (sha256, hex) over the heads, in order id order.
    pub root: String,
    pub prev_hash: String,
    /// sha256(prev_hash ‖ JSON of the rest), hex.
    pub hash: String,
    /// The HMAC of `hash` with an `[audit]` key (`None`: written without keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<Seal>,
}

impl Anchor {
    /// The hash this anchor must carry.
    pub(crate) fn compute_hash(&self) -> String {
        let body = Anchor { prev_hash: String::new(), hash: String::new(), seal: None, ..self.clone() };
        let mut h = Sha256::new();
        h.update(self.prev_hash.as_bytes());
        h.update(serde_json::to_vec(&body).expect("an anchor serialises"));
        hex::encode(h.finalize())
    }
}

/// One order's chain head as anchored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Head {
    pub(crate) order_id: OrderId,
    /// Its last event (`None`: archived, the head its archive entry records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) seq: Option<u32>,
    pub(crate) hash: String,
}

/// The heads the latest anchor covers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Heads {
    pub(crate) anchor: u64,
    pub(crate) heads: Vec<Head>,
}

/// One page of heads as stored: the orders created on one day.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Page {
    heads: Vec<Head>,
}

/// A page as the index names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct PageRef {
    /// The day (UTC, `YYYY-MM-DD`) its orders were created.
    day: String,
    orders: u64,
    /// The Merkle root over its heads.
    root: String,
}

/// The index of the latest anchor's heads, in day order (so in order id order).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pages {
    anchor: u64,
    pages: Vec<PageRef>,
}

/// The day an order was created (its id is time-ordered), as a page's name.
fn day_of(id: OrderId) -> String {
    DateTime::<Utc>::from_timestamp_millis(id.created_ms())
        .map_or_else(|| "unknown".to_owned(), |t| t.date_naive().to_string())
}

/// `heads` (in order id order) cut into pages by day, each with its index entry.
fn paged(heads: Vec<Head>) -> Vec<(PageRef, Page)> {
    let mut out: Vec<(PageRef, Page)> = Vec::new();
    for h in heads {
        let day = day_of(h.order_id);
        match out.last_mut() {
            Some((r, p)) if r.day == day => p.heads.push(h),
            _ => out.push((PageRef { day, orders: 0, root: String::new() }, Page { heads: vec![h] })),
        }
    }
    for (r, p) in &mut out {
        r.orders = p.heads.len() as u64;
        r.root = merkle_root(&p.heads);
    }
    out
}

fn leaf(h: &Head) -> [u8; 32] {
    let mut d = Sha256::new();
    d.update([0u8]);
    d.update(h.order_id.to_string().as_bytes());
    d.update(b"\n");
    d.update(h.seq.map_or_else(|| "archived".to_owned(), |s| s.to_string()).as_bytes());
    d.update(b"\n");
    d.update(h.hash.as_bytes());
    d.finalize().into()
}

fn node(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    let mut d = Sha256::new();
    d.update([1u8]);
    d.update(l);
    d.update(r);
    d.finalize().into()
}

/// The Merkle root over `heads` (leaves and inner nodes domain-separated; an odd
/// node is carried up unchanged), hex.
pub(crate) fn merkle_root(heads: &[Head]) -> String {
    let mut level: Vec<[u8; 32]> = heads.iter().map(leaf).collect();
    if level.is_empty() {
        return hex::encode(Sha256::digest(b""));
    }
    while level.len() > 1 {
        level = level.chunks(2).map(|p| p.get(1).map_or(p[0], |r| node(&p[0], r))).collect();
    }
    hex::encode(level[0])
}

/// The connector operation each new anchor is pushed to (`[audit] anchor_push`).
pub(crate) type Push = (ConnectorId, String);

/// The effect that pushes `anchor` (its JSON as the body), queued in the anchor's
/// commit. Its id has no order: the anchor's number and index 65535 (digests use
/// index 0; a report's mail has the days since year 1, over 700 000, as its number).
fn push_effect((connector, operation): &Push, anchor: &Anchor, now: DateTime<Utc>) -> EffectRecord {
    let id = EffectId { order_id: OrderId::nil(), seq: u32::try_from(anchor.seq).unwrap_or(u32::MAX), index: u16::MAX };
    EffectRecord {
        id,
        connector: connector.clone(),
        operation: operation.clone(),
        cause: "audit_anchor".into(),
        idempotency_key: format!("orderbridge:audit-anchor:{}:{}", anchor.seq, anchor.hash),
        body: value(anchor),
        attempts: 0,
        next_at: now,
        created_at: now,
        last_error: None,
    }
}

fn value<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("an anchor serialises")
}

fn corrupt(what: &str, e: &serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("{what} cannot be read: {e}"))
}

/// The latest anchor's number, if one was written.
pub(crate) async fn latest(store: &dyn Store) -> Result<Option<u64>, StoreError> {
    let v = store.job_state(LATEST).await?;
    v.map(|v| serde_json::from_value(v).map_err(|e| corrupt("the latest audit anchor number", &e))).transpose()
}

pub(crate) async fn read_anchor(store: &dyn Store, n: u64) -> Result<Option<Anchor>, StoreError> {
    let v = store.job_state(&anchor_key(n)).await?;
    v.map(|v| serde_json::from_value(v).map_err(|e| corrupt(&format!("audit anchor {n}"), &e))).transpose()
}

async fn read_index(store: &dyn Store) -> Result<Option<Pages>, StoreError> {
    let v = store.job_state(PAGES).await?;
    v.map(|v| serde_json::from_value(v).map_err(|e| corrupt("the index of the anchored order heads", &e))).transpose()
}

/// The latest anchor's heads, every page checked against the index.
///
/// # Errors
/// `Corrupt` naming a page that is missing or does not match its index entry.
pub(crate) async fn read_heads(store: &dyn Store) -> Result<Option<Heads>, StoreError> {
    let Some(index) = read_index(store).await? else {
        // Written before paging: one row.
        let v = store.job_state(HEADS).await?.filter(|v| !v.is_null());
        return v.map(|v| serde_json::from_value(v).map_err(|e| corrupt("the anchored order heads", &e))).transpose();
    };
    let mut heads = Vec::new();
    for r in &index.pages {
        let what = format!("the anchored order heads of {}", r.day);
        let Some(v) = store.job_state(&page_key(&r.day)).await? else {
            return Err(StoreError::Corrupt(format!("{what} are missing (removed)")));
        };
        let page: Page = serde_json::from_value(v).map_err(|e| corrupt(&what, &e))?;
        if page.heads.len() as u64 != r.orders || merkle_root(&page.heads) != r.root {
            return Err(StoreError::Corrupt(format!("{what} do not match their index entry (altered)")));
        }
        heads.extend(page.heads);
    }
    Ok(Some(Heads { anchor: index.anchor, heads }))
}

/// Every order's chain head now: hot orders first, then archived ones (an order
/// archived meanwhile is then seen in one place or both, never in neither).
async fn heads_now(archive: &Archive) -> Result<Vec<Head>, OrderError> {
    let store = archive.orders().store();
    let mut by_id = BTreeMap::new();
    let mut after = None;
    loop {
        let page = store.list(None, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for r in page {
            by_id.insert(r.id, Head { order_id: r.id, seq: Some(r.last_seq), hash: r.last_hash });
        }
    }
    archive
        .each_entry(|id, e| {
            by_id.entry(id).or_insert(Head { order_id: id, seq: None, hash: e.last_hash });
        })
        .await?;
    Ok(by_id.into_values().collect())
}

/// The rows anchor `n` writes for `heads`: each page that changed since the latest
/// index (same day, count and root: not written again) and the new index. The first
/// paged anchor empties the single row of the anchors before.
async fn heads_rows(
    store: &dyn Store,
    n: u64,
    heads: Vec<Head>,
) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
    let before = read_index(store).await?;
    let mut rows = Vec::new();
    if before.is_none() && store.job_state(HEADS).await?.is_some() {
        rows.push((HEADS.to_owned(), serde_json::Value::Null));
    }
    rows.extend(page_rows(before.as_ref(), n, heads));
    Ok(rows)
}

/// The pages of `heads` not in the index `before` as they are, then the new index.
fn page_rows(before: Option<&Pages>, n: u64, heads: Vec<Head>) -> Vec<(String, serde_json::Value)> {
    let kept: std::collections::BTreeSet<&PageRef> = before.map(|i| i.pages.iter().collect()).unwrap_or_default();
    let mut rows = Vec::new();
    let mut index = Pages { anchor: n, pages: Vec::new() };
    for (r, page) in paged(heads) {
        if !kept.contains(&r) {
            rows.push((page_key(&r.day), value(&page)));
        }
        index.pages.push(r);
    }
    rows.push((PAGES.to_owned(), value(&index)));
    rows
}

/// Writes the next anchor, after checking that the latest one still holds.
///
/// # Errors
/// `Conflict` when the anchors or the orders they cover were tampered with (nothing
/// is written: the latest anchor stays the evidence); store errors.
pub async fn write(archive: &Archive, push: Option<&Push>, now: DateTime<Utc>) -> Result<Anchor, OrderError> {
    // One writer at a time in this process (the periodic job and `POST
    // /api/audit/anchor`); between daemons, the `audit-anchor` lease. Should two
    // daemons still both write anchor n, the latest, its heads and its number are one
    // commit, so the last one stands whole.
    static WRITING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = WRITING.lock().await;
    let orders = archive.orders();
    let store = orders.store().as_ref();
    let found = verify::check(archive).await?;
    if !found.problems.is_empty() {
        return Err(OrderError::Conflict(format!(
            "the latest audit anchor does not hold, so no new one is written: {}",
            found.problems.join("; ")
        )));
    }
    let (n, prev_hash) = match latest(store).await? {
        Some(n) => {
            let prev = read_anchor(store, n)
                .await?
                .ok_or_else(|| OrderError::Conflict(format!("audit anchor {n} is missing")))?;
            (n + 1, prev.hash)
        }
        None => (1, crate::store::records::GENESIS.to_owned()),
    };
    let heads = heads_now(archive).await?;
    let archived = heads.iter().filter(|h| h.seq.is_none()).count() as u64;
    let events = heads.iter().filter_map(|h| h.seq).map(u64::from).sum();
    let mut anchor = Anchor {
        seq: n,
        at: now,
        orders: heads.len() as u64,
        archived,
        events,
        root: merkle_root(&heads),
        prev_hash,
        hash: String::new(),
        seal: None,
    };
    anchor.hash = anchor.compute_hash();
    anchor.seal = orders.audit_keys().seal_anchor(&anchor.hash);
    let mut jobs = heads_rows(store, n, heads).await?;
    jobs.push((anchor_key(n), value(&anchor)));
    jobs.push((LATEST.to_owned(), serde_json::Value::from(n)));
    let step = Step {
        outbox: push.map(|p| OutboxChange::Add(push_effect(p, &anchor, now))).into_iter().collect(),
        jobs,
        ..Step::default()
    };
    orders.commit(vec![step]).await?;
    Ok(anchor)
}

#[cfg(test)]
mod tests {
    use super::{Head, Pages, merkle_root, page_rows, paged};
    use crate::domain::OrderId;

    /// `per_day` orders on each of `days` days from 2026-01-01, each at event 5.
    fn heads(days: i64, per_day: i64) -> Vec<Head> {
        let start: chrono::DateTime<chrono::Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut ids: Vec<OrderId> =
            (0..days * per_day).map(|i| OrderId::at(start + chrono::Duration::seconds(i * 86_400 / per_day))).collect();
        ids.sort();
        ids.into_iter().map(|id| Head { order_id: id, seq: Some(5), hash: "ab".repeat(32) }).collect()
    }

    #[test]
    fn an_anchor_rewrites_only_the_days_that_changed() {
        let mut now = heads(3, 4);
        let first = page_rows(None, 1, now.clone());
        assert_eq!(first.len(), 4, "three pages and the index");
        let index: Pages = serde_json::from_value(first.last().unwrap().1.clone()).unwrap();
        // An order of the last day took a step.
        now.last_mut().unwrap().seq = Some(6);
        let keys: Vec<String> = page_rows(Some(&index), 2, now).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["audit-anchor/heads/2026-01-03", "audit-anchor/pages"]);
    }

    /// The sizes an anchor over a million orders writes (run with `--ignored
    /// --nocapture`): a year of orders, the last day changed.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn sizes_of_an_anchor_over_a_million_orders() {
        let mut now = heads(365, 2740);
        let size = |rows: &[(String, serde_json::Value)]| rows.iter().map(|(_, v)| v.to_string().len()).sum::<usize>();
        let first = page_rows(None, 1, now.clone());
        let index: Pages = serde_json::from_value(first.last().unwrap().1.clone()).unwrap();
        now.last_mut().unwrap().seq = Some(6);
        let next = page_rows(Some(&index), 2, now.clone());
        let one_row = serde_json::json!({"anchor": 1, "heads": now}).to_string().len();
        println!(
            "{} orders: one row {one_row} B; paged first anchor {} rows {} B (largest {} B); next anchor {} rows {} B (index {} B)",
            now.len(),
            first.len(),
            size(&first),
            first.iter().map(|(_, v)| v.to_string().len()).max().unwrap(),
            next.len(),
            size(&next),
            next.last().unwrap().1.to_string().len()
        );
    }

    #[test]
    fn heads_are_paged_by_the_day_their_orders_were_created() {
        let at = |t: &str| OrderId::at(t.parse().unwrap());
        let mut ids = [
            at("2026-12-05T23:59:59Z"),
            at("2026-12-05T08:00:00Z"),
            at("2026-12-06T00:00:00Z"),
            at("2026-12-07T12:00:00Z"),
        ];
        ids.sort();
        let heads: Vec<Head> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Head { order_id: *id, seq: Some(3), hash: format!("{i:064x}") })
            .collect();
        let pages = paged(heads.clone());
        let days: Vec<(&str, u64)> = pages.iter().map(|(r, _)| (r.day.as_str(), r.orders)).collect();
        assert_eq!(days, [("2026-12-05", 2), ("2026-12-06", 1), ("2026-12-07", 1)]);
        assert!(pages.iter().all(|(r, p)| r.root == merkle_root(&p.heads)));
        let joined: Vec<Head> = pages.into_iter().flat_map(|(_, p)| p.heads).collect();
        assert_eq!(joined, heads, "the pages in day order are the heads in order id order");
    }

    fn head(n: u8, seq: Option<u32>) -> Head {
        let id = format!("ord_0190000000007000800000000000000{n:x}").parse().unwrap();
        Head { order_id: id, seq, hash: format!("{n:064x}") }
    }

    #[test]
    fn the_root_changes_with_any_head_and_with_their_number() {
        let heads: Vec<Head> = (1..=5).map(|n| head(n, Some(u32::from(n)))).collect();
        let root = merkle_root(&heads);
        assert_eq!(root, merkle_root(&heads.clone()), "deterministic");
        for i in 0..heads.len() {
            let mut fewer = heads.clone();
            fewer.remove(i);
            assert_ne!(merkle_root(&fewer), root, "head {i} removed");
            let mut shorter = heads.clone();
            shorter[i].seq = shorter[i].seq.map(|s| s - 1);
            assert_ne!(merkle_root(&shorter), root, "head {i} truncated");
            let mut moved = heads.clone();
            moved[i].seq = None;
            assert_ne!(merkle_root(&moved), root, "head {i} as archived");
        }
        // An odd last node carried up is not the same as a duplicated one.
        let mut doubled = heads.clone();
        doubled.push(heads[4].clone());
        assert_ne!(merkle_root(&doubled), root);
        assert_ne!(merkle_root(&[]), merkle_root(&heads[..1]));
    }
}
