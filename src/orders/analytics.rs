//! Reports over the audit trail (lifecycle step 8): reads the orders received in a
//! period with their trails and hands them to `analytics`, which decides nothing
//! either: it measures.

use chrono::{DateTime, Utc};

use super::{OrderError, Orders};
use crate::analytics::{Entry, Journey, Report, Subject};
use crate::domain::OrderId;
use crate::engine::calendar::Calendar;
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
