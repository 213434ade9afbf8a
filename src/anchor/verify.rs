//! The anchors' part of `audit verify`: the chain of anchors is unbroken (none
//! removed or altered, each seal valid), the kept heads are the latest anchor's (its
//! Merkle root and counts), and every order it covered is still there, hot or
//! archived (or purged, with an archive log entry saying so), with a chain at least
//! as long whose event at the anchored number has the anchored hash.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::{Anchor, Head, latest, merkle_root, read_anchor, read_heads};
use crate::archive::Archive;
use crate::domain::OrderId;
use crate::orders::OrderError;
use crate::store::records::GENESIS;

/// At most this many orders are named (then a count of the rest).
const NAMED: usize = 50;

/// What `audit verify` found in the anchors.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AnchorAudit {
    /// The latest anchor's number (0: none written yet) and time.
    pub latest: u64,
    pub at: Option<DateTime<Utc>>,
    /// Orders the latest anchor covers.
    pub orders: u64,
    /// Each problem, naming the anchor or the order (empty: intact).
    pub problems: Vec<String>,
}

/// Checks the anchors (see the module documentation).
///
/// # Errors
/// Store errors other than a row that cannot be read (that is a problem named).
pub async fn check(archive: &Archive) -> Result<AnchorAudit, OrderError> {
    let store = archive.orders().store().as_ref();
    let mut a = AnchorAudit::default();
    let n = match latest(store).await {
        Ok(Some(n)) => n,
        Ok(None) => return Ok(a),
        Err(e) => {
            a.problems.push(e.to_string());
            return Ok(a);
        }
    };
    a.latest = n;
    let last = match chain(archive, n).await {
        Ok(last) => last,
        Err(p) => {
            a.problems.push(p);
            return Ok(a);
        }
    };
    a.at = Some(last.at);
    a.orders = last.orders;
    let heads = match read_heads(store).await {
        Ok(Some(h)) if h.anchor == n => h.heads,
        Ok(Some(h)) => {
            a.problems.push(format!(
                "the kept order heads are audit anchor {}'s, not the latest one's ({n}): an anchor was removed",
                h.anchor
            ));
            return Ok(a);
        }
        Ok(None) => {
            a.problems.push(format!("the order heads of audit anchor {n} are missing (removed)"));
            return Ok(a);
        }
        Err(e) => {
            a.problems.push(e.to_string());
            return Ok(a);
        }
    };
    let events: u64 = heads.iter().filter_map(|h| h.seq).map(u64::from).sum();
    if merkle_root(&heads) != last.root || heads.len() as u64 != last.orders || events != last.events {
        a.problems
            .push(format!("the order heads of audit anchor {n} do not match its Merkle root or counts (altered)"));
        return Ok(a);
    }
    let purged: BTreeSet<OrderId> =
        store.archive_log().await?.into_iter().filter(|e| e.action == "purge").flat_map(|e| e.orders).collect();
    let mut named = 0usize;
    for h in &heads {
        if let Some(p) = check_head(archive, n, h, &purged).await {
            named += 1;
            if named <= NAMED {
                a.problems.push(p);
            }
        }
    }
    if named > NAMED {
        a.problems.push(format!("… and {} more orders of audit anchor {n}", named - NAMED));
    }
    Ok(a)
}

/// Walks the anchors 1..=n; the latest, or the first problem.
async fn chain(archive: &Archive, n: u64) -> Result<Anchor, String> {
    let store = archive.orders().store().as_ref();
    let keys = archive.orders().audit_keys();
    let (mut prev, mut sealed, mut last) = (GENESIS.to_owned(), false, None);
    for k in 1..=n {
        let x = match read_anchor(store, k).await {
            Ok(Some(x)) => x,
            Ok(None) => return Err(format!("audit anchor {k} is missing (removed)")),
            Err(e) => return Err(e.to_string()),
        };
        if x.seq != k || x.compute_hash() != x.hash {
            return Err(format!("audit anchor {k} was altered (its content does not match its hash)"));
        }
        if x.prev_hash != prev {
            return Err(format!("audit anchor {k} does not follow anchor {} (one of them was replaced)", k - 1));
        }
        if let Err(p) = keys.check_anchor(x.seal.as_ref(), &x.hash, sealed) {
            return Err(format!("audit anchor {k}: {p}"));
        }
        sealed |= x.seal.is_some();
        prev.clone_from(&x.hash);
        last = Some(x);
    }
    if let Ok(Some(_)) = read_anchor(store, n + 1).await {
        return Err(format!("audit anchor {} exists past the latest one ({n}): the latest was rolled back", n + 1));
    }
    last.ok_or_else(|| "audit anchor 0 is not a number an anchor has".to_owned())
}

/// What is wrong with one anchored order now, if anything.
async fn check_head(archive: &Archive, n: u64, h: &Head, purged: &BTreeSet<OrderId>) -> Option<String> {
    let store = archive.orders().store();
    let id = h.order_id;
    let at = h.seq.map_or_else(|| "as archived".to_owned(), |s| format!("at event {s}"));
    // A row that cannot be read (quarantined) is named, not a failure of the check.
    let unreadable =
        |e: crate::store::StoreError| Some(format!("order {id} (covered by audit anchor {n}) cannot be read: {e}"));
    let (hot, archived) = match store.order(id).await {
        Ok(Some(rec)) => (Some(rec), None),
        Ok(None) => match store.archived(id).await {
            Ok(e) => (None, e),
            Err(e) => return unreadable(e),
        },
        Err(e) => return unreadable(e),
    };
    // The quick answers: unchanged since the anchor, or purged as logged.
    if let Some(rec) = hot {
        if Some(rec.last_seq) == h.seq && rec.last_hash == h.hash {
            return None;
        }
    } else if let Some(e) = archived {
        if e.last_hash == h.hash {
            return None;
        }
    } else if purged.contains(&id) {
        return None;
    } else {
        return Some(format!(
            "order {id} is gone: audit anchor {n} covers it {at}, but it is neither in the store nor in the archive, and no purge of it is logged"
        ));
    }
    let found = match archive.find(id).await {
        Ok(Some(f)) => f,
        Ok(None) => return Some(format!("order {id} is gone: audit anchor {n} covers it {at}")),
        Err(e) => return Some(format!("order {id} (covered by audit anchor {n}) cannot be read: {e}")),
    };
    let Some(seq) = h.seq else {
        let kept = found.events.iter().any(|e| e.hash == h.hash);
        return (!kept).then(|| format!("order {id}: its chain no longer holds the head audit anchor {n} recorded"));
    };
    if found.record.last_seq < seq {
        return Some(format!(
            "order {id}: its chain was truncated: audit anchor {n} covers it at event {seq}, it now ends at event {}",
            found.record.last_seq
        ));
    }
    let kept = (seq as usize)
        .checked_sub(1)
        .and_then(|i| found.events.get(i))
        .is_some_and(|e| e.seq == seq && e.hash == h.hash);
    (!kept).then(|| format!("order {id}: event {seq} no longer has the hash audit anchor {n} recorded (rewritten)"))
}
