//! Lifecycle step 8's reads: the orders received in a period with their trails for
//! a report (`analytics` measures them), and the orders changed in a window as the
//! warehouse's rows (`export`).

use chrono::{DateTime, Utc};

use super::{OrderError, Orders};
use crate::analytics::{Entry, Journey, Report, Subject};
use crate::domain::OrderId;
use crate::engine::calendar::Calendar;
use crate::export::rows::{EventRow, OrderRow};
use crate::store::OrderRecord;

/// Orders read per page of the scan.
const PAGE: usize = 1000;

impl Orders {
    /// The journeys of the orders received from `from` (inclusive) to `to` (exclusive),
    /// in arrival order.
    ///
    /// # Errors
    /// A store that cannot be read.
    pub async fn journeys(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<Journey>, OrderError> {
        let mut out = Vec::new();
        let end = to.timestamp_millis();
        let mut after = Some(OrderId::before(from));
        loop {
            let page = self.store.list(None, after, PAGE).await?;
            let full = page.len() == PAGE;
            for rec in page.iter().take_while(|r| r.id.created_ms() < end) {
                let events = self.store.events(rec.id).await?;
                let entries =
                    events.iter().map(|e| Entry { at: e.at, actor: &e.actor, event: &e.event, state: &e.state });
                out.push(Journey::of(subject(rec), entries));
            }
            match page.last() {
                Some(last) if full && last.id.created_ms() < end => after = Some(last.id),
                _ => return Ok(out),
            }
        }
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
        let journeys = self.journeys(from, to).await?;
        let before = self.journeys(before_from, before_to).await?;
        Ok(Report::of(from, to, &journeys, &before, calendar))
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
            let page = self.store.list(None, after, PAGE).await?;
            for rec in page.iter().filter(|r| in_window(r.updated_at)) {
                let events = self.store.events(rec.id).await?;
                orders.push(OrderRow::of(rec, &events, calendar));
                rows.extend(events.iter().filter(|e| in_window(e.at)).map(EventRow::of));
            }
            match page.last() {
                Some(last) if page.len() == PAGE => after = Some(last.id),
                _ => return Ok((orders, rows)),
            }
        }
    }
}
