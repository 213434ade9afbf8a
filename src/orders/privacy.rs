//! Erasing an order's personal data by deleting its data key (crypto-shredding,
//! `crate::vault`): on request (`orderbridge keys erase`), and for every ended order
//! past `[privacy] retain_years` (the daemon's sweep, `workers::privacy`). Archived
//! orders under a legal hold are left alone.

use chrono::{DateTime, Months, Utc};

use super::step::bookkeeping;
use super::{OrderError, Orders};
use crate::domain::OrderId;
use crate::engine::OrderEvent;
use crate::engine::access::Acting;
use crate::store::{Loaded, Step};
use crate::vault::{Erased, Vault};

/// The states an order ends in (as the archive reads them).
const ENDED: [&str; 3] = ["closed", "cancelled", "rejected"];
const PAGE: usize = 500;

impl Orders {
    /// Deletes the order's data key; an order in the hot store also gets
    /// `personal_data_erased` on its chain in the same commit. `None` when there is
    /// nothing to erase (already erased, or stored before encryption and archived).
    ///
    /// # Errors
    /// `NotFound` for an unknown order; from the store.
    pub async fn erase_personal_data(
        &self,
        id: OrderId,
        reason: &str,
        acting: impl Into<Acting>,
        now: DateTime<Utc>,
    ) -> Result<Option<Erased>, OrderError> {
        let acting = acting.into();
        let _one = self.vault.exclusive().await;
        let _g = self.lock_order(id).await;
        let row = self.vault.row(id).await?;
        if row.as_ref().is_some_and(|r| r.erased_at.is_some()) {
            return Ok(None);
        }
        let erased_row = Vault::erased_row(id, reason, now);
        let step = match self.store.order(id).await? {
            Some(rec) => {
                let loaded = Loaded::of(&rec);
                let ev = OrderEvent::PersonalDataErased { reason: reason.to_owned() };
                let mut step = bookkeeping(rec, loaded, acting.clone(), ev, now);
                step.jobs.push(erased_row);
                step
            }
            None => match self.store.archived(id).await? {
                None => return Err(OrderError::NotFound(format!("order {id}"))),
                Some(entry) if entry.hold.is_some() => {
                    return Err(OrderError::Conflict(format!("order {id} is under a legal hold; release it first")));
                }
                Some(_) if row.is_none() => return Ok(None),
                Some(_) => Step { jobs: vec![erased_row], ..Step::default() },
            },
        };
        self.commit(vec![step]).await?;
        self.vault.forget(id);
        let kind = if reason == "retention" { "retention" } else { "request" };
        if let Some(m) = &self.metrics {
            m.inc("orderbridge_personal_data_erased_total", &[("reason", kind)]);
        }
        tracing::info!(order_id = %id, reason = kind, actor = %acting.actor, "personal data erased");
        Ok(Some(Erased { order_id: id, at: now, reason: reason.to_owned() }))
    }

    /// Erases the personal data of every order that ended `retain_years` or more
    /// before `now` (hot, or archived without a legal hold). The orders erased.
    ///
    /// # Errors
    /// From the store; an order that fails is logged and left for the next pass.
    pub async fn erasure_pass(&self, retain_years: u32, now: DateTime<Utc>) -> Result<Vec<Erased>, OrderError> {
        let cutoff = now.checked_sub_months(Months::new(retain_years.saturating_mul(12))).unwrap_or(now);
        let mut due: Vec<OrderId> = Vec::new();
        for state in ENDED {
            let mut after = None;
            loop {
                let page = self.store.list(Some(state), after, PAGE).await?;
                after = page.last().map(|r| r.id);
                due.extend(page.iter().filter(|r| r.state_since.unwrap_or(r.updated_at) <= cutoff).map(|r| r.id));
                if page.len() < PAGE {
                    break;
                }
            }
        }
        let mut after = None;
        loop {
            let page = self.store.archive_entries(after, PAGE).await?;
            after = page.last().map(|(id, _)| *id);
            due.extend(page.iter().filter(|(_, e)| e.hold.is_none() && e.ended_at <= cutoff).map(|(id, _)| *id));
            if page.len() < PAGE {
                break;
            }
        }
        let mut out = Vec::new();
        for id in due {
            if self.vault.row(id).await?.is_none_or(|r| r.erased_at.is_some()) {
                continue;
            }
            match self.erase_personal_data(id, "retention", crate::engine::Actor::System, now).await {
                Ok(Some(e)) => out.push(e),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(order_id = %id, error = %e, "cannot erase personal data; tried again next pass")
                }
            }
        }
        Ok(out)
    }
}
