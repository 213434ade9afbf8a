//! Lifecycle step 8's reads: the orders received in a period with their trails for
//! a report (`analytics` measures them), and the orders changed in a window as the
//! warehouse's rows (`export`).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{OrderError, Orders};
use crate::analytics::{Entry, Journey, Report, Subject};
use crate::domain::OrderId;
use crate::engine::calendar::Calendar;
use crate::export::rows::{EventRow, OrderRow};
use crate::store::{OrderRecord, Store, StoreError};

/// Orders read per page of the scan.
const PAGE: usize = 1000;
/// Slices of a report's period read side by side.
const SLICES: usize = 4;

impl Orders {
    /// The journeys of the orders received from `from` (inclusive) to `to` (exclusive),
    /// in arrival order. The period is read in slices side by side (ids are
    /// time-ordered, so each slice is a range of its own), one task each.
    ///
    /// # Errors
    /// A store that cannot be read.
    pub async fn journeys(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<Journey>, OrderError> {
        let step = (to - from) / i32::try_from(SLICES).unwrap_or(1);
        let mut tasks = Vec::with_capacity(SLICES);
        for i in 0..SLICES {
            let start = from + step * i32::try_from(i).unwrap_or(0);
            let end = if i + 1 == SLICES { to } else { start + step };
            tasks.push(tokio::spawn(slice(self.store.clone(), start, end)));
        }
        let mut out = Vec::new();
        for task in tasks {
            out.extend(task.await.map_err(|e| OrderError::Store(StoreError::Io(format!("report task: {e}"))))??);
        }
        Ok(out)
    }

    /// The report of the orders received from `from` to `to`, beside the period as
    /// long before it.
    ///
    /// # Errors
    /// A store that cannot be read.
    pub async fn kpi_report(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        calendar: &Calendar,
    ) -> Result<Report, OrderError> {
        let (before_from, before_to) = Report::previous_period(from, to);
        let (journeys, before) = tokio::join!(self.journeys(from, to), self.journeys(before_from, before_to));
        Ok(Report::of(from, to, &journeys?, &before?, calendar))
    }
}

/// The journeys of the orders received from `from` to `to`, in arrival order.
async fn slice(store: Arc<dyn Store>, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<Journey>, StoreError> {
    let mut out = Vec::new();
    let end = to.timestamp_millis();
    let mut after = Some(OrderId::before(from));
    loop {
        let page = store.trails(after, PAGE).await?;
        let full = page.len() == PAGE;
        for (rec, events) in page.iter().take_while(|(r, _)| r.id.created_ms() < end) {
            let entries = events.iter().map(|e| Entry { at: e.at, actor: &e.actor, event: &e.event, state: &e.state });
            out.push(Journey::of(subject(rec), entries));
        }
        match page.last() {
            Some((last, _)) if full && last.id.created_ms() < end => after = Some(last.id),
            _ => return Ok(out),
        }
    }
}

fn subject(rec: &OrderRecord) -> Subject {
    let order = &rec.order;
    Subject {
        product: order.product.code.to_string(),
        sales_owner: order.sales_owner.as_ref().map_or_else(|| "-".to_owned(), ToString::to_string),
        rating: order.customer.credit_rating.as_ref().map_or_else(|| "-".to_owned(), ToString::to_string),
    }
}

impl Orders {
    /// The warehouse rows of the orders changed in `since..until` (every order
    /// without `since`), and their audit entries made in it.
    ///
    /// # Errors
    /// A store that cannot be read.
    pub async fn export_rows(
        &self,
        since: Option<DateTime<Utc>>,
        until: DateTime<Utc>,
        calendar: &Calendar,
    ) -> Result<(Vec<OrderRow>, Vec<EventRow>), OrderError> {
        let in_window = |t: DateTime<Utc>| since.is_none_or(|s| t >= s) && t < until;
        let (mut orders, mut rows) = (Vec::new(), Vec::new());
        let mut after = None;
        loop {
            let page = self.store.trails(after, PAGE).await?;
            for (rec, events) in page.iter().filter(|(r, _)| in_window(r.updated_at)) {
                orders.push(OrderRow::of(rec, events, calendar));
                rows.extend(events.iter().filter(|e| in_window(e.at)).map(EventRow::of));
            }
            match page.last() {
                Some((last, _)) if page.len() == PAGE => after = Some(last.id),
                _ => return Ok((orders, rows)),
            }
        }
    }
}
