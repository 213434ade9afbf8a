//! Resolving a quarantined row: the decision is here, the store only records it
//! (`Store::resolve_quarantined`). A row is restored only when it reads again and
//! its audit chain verifies against the events the store holds, or discarded on an
//! operator's word; either way it stays in the quarantine with who resolved it and
//! why, and a line at warn level says so (the change log of the quarantine).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{OrderError, Orders};
use crate::store::{Quarantined, Resolution, ResolutionOutcome, Store, StoreError};

/// How an operator resolves a quarantined row.
#[derive(Clone)]
pub enum Resolve {
    /// Put the order row back as `from` holds it (a copy of a backup): only when it
    /// reads there and its chain verifies against this store's events.
    Restore { from: Arc<dyn Store> },
    /// Give the row up: it stays unreadable, kept in the quarantine as discarded.
    Discard,
}

/// A quarantined row as an operator names it: as listed (`order ord_…`), or an
/// order id alone (`ord_…`) for that order's row.
pub fn quarantined_row(row: &str) -> String {
    if row.starts_with("ord_") { format!("order {row}") } else { row.to_owned() }
}

impl Orders {
    /// Resolves the unresolved quarantined row `what` (as `store quarantine` lists
    /// it) by `by` for `reason`.
    ///
    /// # Errors
    /// `NotFound` when no unresolved row is `what`; `Refused` without a person or a
    /// reason; `Conflict` when the row cannot be restored (not an order row, not in
    /// the backup, unreadable there too, or its chain does not verify).
    pub async fn resolve_quarantined(
        &self,
        what: &str,
        how: Resolve,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Quarantined, OrderError> {
        let (by, reason) = (by.trim(), reason.trim());
        if by.is_empty() || reason.is_empty() {
            return Err(OrderError::Refused("a resolution names who resolves it (--by) and why (--reason)".into()));
        }
        let row = self.store.quarantined().await?.into_iter().find(|q| q.what == what && q.resolved.is_none());
        let row = row.ok_or_else(|| OrderError::NotFound(format!("an unresolved quarantined row `{what}`")))?;
        let restore = match how {
            Resolve::Discard => None,
            Resolve::Restore { from } => Some(self.readable_again(&row, from.as_ref()).await?),
        };
        let outcome = if restore.is_some() { ResolutionOutcome::Restored } else { ResolutionOutcome::Discarded };
        let resolution = Resolution { outcome, by: by.to_owned(), reason: reason.to_owned(), at: now };
        let _g = match row.order_id() {
            Some(id) => Some(self.lock_order(id).await),
            None => None,
        };
        let resolved = self.store.resolve_quarantined(what, resolution, restore).await?;
        tracing::warn!(
            row = what,
            outcome = outcome.name(),
            by,
            reason,
            "a quarantined row was resolved; it stays in the quarantine, no longer counted"
        );
        Ok(resolved)
    }

    /// The order row `row` was, as `from` holds it, if it reads there and its chain
    /// (and seals) verify against the events this store holds.
    async fn readable_again(
        &self,
        row: &Quarantined,
        from: &dyn Store,
    ) -> Result<crate::store::OrderRecord, OrderError> {
        let refuse = |why: String| OrderError::Conflict(format!("`{}` cannot be restored: {why}", row.what));
        let id = row.order_id().ok_or_else(|| {
            refuse("only an order row can be restored; discard it (--discard) once it is handled".into())
        })?;
        let rec = match from.order(id).await {
            Ok(Some(rec)) => rec,
            Ok(None) => return Err(refuse("the backup does not hold this order".into())),
            Err(StoreError::Quarantined(_)) => {
                return Err(refuse("its row cannot be read in the backup either".into()));
            }
            Err(e) => return Err(e.into()),
        };
        let events = self.store.events(id).await?;
        self.check_trail(&rec, &events).map_err(|(seq, why)| {
            refuse(format!("its audit chain does not verify against the stored events (event {seq}: {why})"))
        })?;
        Ok(rec)
    }
}
