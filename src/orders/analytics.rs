//! Lifecycle step 8's reads: the orders received in a period with their trails for
//! a report (`analytics` measures them), and the orders changed in a window as the
//! warehouse's rows (`export`). Both read the store a page of trails at a time, in
//! slices of the id space side by side (ids are time-ordered, so a slice is a range
//! of arrival times): a [`Walk`] is one slice.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::{OrderError, Orders};
use crate::analytics::{Entry, Journey, Report, Subject};
use crate::domain::OrderId;
use crate::engine::calendar::Calendar;
use crate::export::rows::{EventRow, OrderRow};
use crate::store::{Sketch, Store, StoreError, Trail};

/// Orders read per page of the scan.
const PAGE: usize = 1000;
/// Slices of a period read side by side.
const SLICES: usize = 4;
/// Pages of export rows read ahead of their writer.
const READ_AHEAD: usize = 4;

/// The warehouse rows of one page of orders.
pub type ExportPage = (Vec<OrderRow>, Vec<EventRow>);

/// The pages of trails of the orders received from `from` (inclusive) to `to`
/// (exclusive; on to the last order without it), in id order.
struct Walk {
    store: Arc<dyn Store>,
    after: Option<OrderId>,
    end_ms: Option<i64>,
    done: bool,
}

impl Walk {
    fn new(store: Arc<dyn Store>, from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Walk {
        Walk { store, after: from.map(OrderId::before), end_ms: to.map(|t| t.timestamp_millis()), done: false }
    }

    /// The next page, `None` after the last.
    async fn next(&mut self) -> Result<Option<Vec<Trail>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let page = self.store.trails(self.after, PAGE).await?;
        Ok(self.cut(page, |(r, _)| r.id))
    }

    /// The next page as a report reads it, `None` after the last.
    async fn next_sketches(&mut self) -> Result<Option<Vec<Sketch>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let page = self.store.sketches(self.after, PAGE).await?;
        Ok(self.cut(page, |s| s.id))
    }

    /// `page` without the orders past the walk's end, and the walk moved past it.
    fn cut<T>(&mut self, mut page: Vec<T>, id: impl Fn(&T) -> OrderId) -> Option<Vec<T>> {
        let full = page.len() == PAGE;
        if let Some(end) = self.end_ms
            && let Some(cut) = page.iter().position(|t| id(t).created_ms() >= end)
        {
            page.truncate(cut);
            self.done = true;
        }
        self.done |= !full;
        self.after = page.last().map(&id);
        (!page.is_empty()).then_some(page)
    }
}

/// `from..to` cut into `SLICES` ranges (the last open when `to` is).
fn slices(from: DateTime<Utc>, to: DateTime<Utc>, open: bool) -> Vec<(DateTime<Utc>, Option<DateTime<Utc>>)> {
    let step = (to - from) / i32::try_from(SLICES).unwrap_or(1);
    (0..SLICES)
        .map(|i| {
            let start = from + step * i32::try_from(i).unwrap_or(0);
            let last = i + 1 == SLICES;
            (start, if last { (!open).then_some(to) } else { Some(start + step) })
        })
        .collect()
}

impl Orders {
    /// The journeys of the orders received from `from` (inclusive) to `to` (exclusive),
    /// in arrival order, read in slices side by side.
    ///
    /// # Errors
    /// A store that cannot be read.
    pub async fn journeys(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<Journey>, OrderError> {
        let tasks: Vec<_> = slices(from, to, false)
            .into_iter()
            .map(|(start, end)| {
                let mut walk = Walk::new(self.store.clone(), Some(start), end);
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    while let Some(page) = walk.next_sketches().await? {
                        out.extend(page.into_iter().map(journey));
                    }
                    Ok::<_, StoreError>(out)
                })
            })
            .collect();
        let mut out = Vec::new();
        for task in tasks {
            out.extend(task.await.map_err(|e| OrderError::Store(StoreError::Io(format!("report task: {e}"))))??);
        }
        Ok(out)
    }

    /// The report of the orders received from `from` to `to`, beside the period as
    /// long before it, with the feedback reported in the period.
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
        let mut report = Report::of(from, to, &journeys?, &before?, calendar);
        report.feedback = self.feedback_counts(from, to).await?;
        Ok(report)
    }

    /// The warehouse rows of the orders changed in `since..until` (every order
    /// without `since`) and their audit entries made in it, a page at a time as
    /// slices of the store are read side by side: the pages come in no set order,
    /// and reading stops when the receiver is dropped.
    pub fn export_pages(
        &self,
        since: Option<DateTime<Utc>>,
        until: DateTime<Utc>,
        calendar: Calendar,
    ) -> mpsc::Receiver<Result<ExportPage, OrderError>> {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let store = self.store.clone();
        tokio::spawn(async move {
            let first = match store.trails(None, 1).await {
                Ok(page) => page.first().map(|(r, _)| r.id.created_ms()),
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            };
            let Some(from) = first.and_then(DateTime::<Utc>::from_timestamp_millis) else { return };
            let calendar = Arc::new(calendar);
            for (start, end) in slices(from.min(until), until.max(from), true) {
                let (tx, calendar) = (tx.clone(), calendar.clone());
                let mut walk = Walk::new(store.clone(), Some(start), end);
                tokio::spawn(async move {
                    loop {
                        let rows = match walk.next().await {
                            Ok(Some(page)) => Ok(export_rows(&page, since, until, &calendar)),
                            Ok(None) => return,
                            Err(e) => Err(e.into()),
                        };
                        let failed = rows.is_err();
                        if tx.send(rows).await.is_err() || failed {
                            return;
                        }
                    }
                });
            }
        });
        rx
    }
}

fn journey(s: Sketch) -> Journey {
    let subject = Subject {
        product: s.product,
        sales_owner: s.sales_owner.unwrap_or_else(|| "-".to_owned()),
        rating: s.rating.unwrap_or_else(|| "-".to_owned()),
    };
    let entries = s.entries.iter().map(|e| Entry {
        at: e.at,
        actor: &e.actor,
        mark: std::borrow::Cow::Borrowed(&e.mark),
        state: &e.state,
    });
    Journey::of(subject, entries)
}

/// The rows of the orders of `page` changed in the window, and their entries made in it.
fn export_rows(page: &[Trail], since: Option<DateTime<Utc>>, until: DateTime<Utc>, calendar: &Calendar) -> ExportPage {
    let in_window = |t: DateTime<Utc>| since.is_none_or(|s| t >= s) && t < until;
    let (mut orders, mut events) = (Vec::new(), Vec::new());
    for (rec, trail) in page.iter().filter(|(r, _)| in_window(r.updated_at)) {
        orders.push(OrderRow::of(rec, trail, calendar));
        events.extend(trail.iter().filter(|e| in_window(e.at)).map(EventRow::of));
    }
    (orders, events)
}
