//! The poller: for each connector with `[poll]`, every `every_secs` it pages through
//! the records changed since the watermark and ingests each page together with the
//! new poll state in one transaction. A crash between pages resumes at the next
//! page; a crash inside a page's commit re-fetches that page (its records are then
//! duplicates by version). The watermark advances only when a run has read its last
//! page, so nothing changed during a run is skipped.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::connectors::ConnectorError;
use crate::connectors::{Poll, PollState};
use crate::domain::ExternalRef;
use crate::metrics::Metrics;
use crate::orders::{Inbound, OrderError, Orders};

/// Most pages one run reads (a guard against a source that never stops paging).
const MAX_PAGES: usize = 10_000;

pub struct Poller {
    pub poll: Arc<dyn Poll>,
    pub orders: Arc<Orders>,
    pub rules: crate::review::LiveRules,
    /// The order template and amount limits (`[intake]`), as for webhooks.
    pub intake: crate::engine::IntakeRules,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    pub dispatcher: Arc<Notify>,
    /// The zone of cron schedules (`site.time_zone`).
    pub time_zone: chrono_tz::Tz,
}

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub pages: usize,
    pub(crate) records: usize,
    pub ingested: usize,
    pub(crate) rejected: usize,
}

impl Poller {
    pub(crate) async fn run(self, stop: CancellationToken) {
        // A cron schedule runs at its times only, not also at start-up.
        if matches!(self.poll.schedule(), crate::schedule::Schedule::Cron(_)) && !self.wait_for_next_run(&stop).await {
            return;
        }
        loop {
            if !self.lease().await {
                if !self.wait_for_next_run(&stop).await {
                    break;
                }
                continue;
            }
            match self.run_once().await {
                Ok(r) if r.records > 0 => {
                    tracing::info!(connector = %self.poll.id(), pages = r.pages, records = r.records, ingested = r.ingested, rejected = r.rejected, "poll run done");
                }
                Ok(_) => {}
                Err(PollError::Source(ConnectorError::Auth { message })) => {
                    tracing::error!(connector = %self.poll.id(), error = %message, "polling refused: check the connector's credentials; polling waits for the next run");
                    self.metrics.inc(
                        "orderbridge_poll_failures_total",
                        &[("connector", self.poll.id().as_str()), ("kind", "auth")],
                    );
                }
                Err(e) => {
                    tracing::warn!(connector = %self.poll.id(), error = %e, "poll run stopped; it resumes at the same page next run");
                    self.metrics.inc(
                        "orderbridge_poll_failures_total",
                        &[("connector", self.poll.id().as_str()), ("kind", "other")],
                    );
                }
            }
            if !self.wait_for_next_run(&stop).await {
                break;
            }
        }
    }

    /// Whether this daemon runs this poll now: of several sharing a database, the
    /// holder of the lease `poll:<connector>`. A run every N seconds keeps it for
    /// three intervals (renewed each run); a cron run for `CRON_LEASE`, less than a
    /// minute, so the next occurrence is free again and the daemons, waking within
    /// seconds of each other, run each occurrence once.
    async fn lease(&self) -> bool {
        use crate::schedule::Schedule;
        let ttl = match self.poll.schedule() {
            Schedule::Every(d) => (*d * 3).max(std::time::Duration::from_secs(3)),
            Schedule::Cron(_) => crate::schedule::CRON_LEASE,
        };
        match self.orders.store().try_lease(&format!("poll:{}", self.poll.id()), ttl).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(connector = %self.poll.id(), error = %e, "cannot take the poll lease; the poll waits for its next run");
                false
            }
        }
    }

    /// Waits until the schedule's next run; `false` when stopped first. A cron wait is
    /// measured on the daemon's clock, re-read every second.
    async fn wait_for_next_run(&self, stop: &CancellationToken) -> bool {
        use crate::schedule::Schedule;
        match self.poll.schedule() {
            Schedule::Every(d) => tokio::select! {
                () = stop.cancelled() => false,
                () = tokio::time::sleep(*d) => true,
            },
            s @ Schedule::Cron(_) => {
                let next = s.next_after(self.clock.now(), self.time_zone);
                while self.clock.now() < next {
                    let left = (next - self.clock.now()).to_std().unwrap_or_default();
                    tokio::select! {
                        () = stop.cancelled() => return false,
                        () = tokio::time::sleep(left.min(std::time::Duration::from_secs(1))) => {}
                    }
                }
                true
            }
        }
    }

    /// One run: pages until the source has no more, each committed with its state.
    ///
    /// # Errors
    /// The source or the store failed; what was committed stays, the rest follows next run.
    pub async fn run_once(&self) -> Result<RunReport, PollError> {
        let key = self.poll.id().as_str();
        let mut state: PollState = match self.orders.poll_state(key).await? {
            Some(v) => serde_json::from_value(v).unwrap_or_else(|_| self.poll.initial()),
            None => self.poll.initial(),
        };
        let mut report = RunReport::default();
        for _ in 0..MAX_PAGES {
            let page = self.poll.fetch(&state).await.map_err(PollError::Source)?;
            report.pages += 1;
            report.records += page.records.len();
            let mut inbound = Vec::with_capacity(page.records.len());
            for (i, record) in page.records.iter().enumerate() {
                let numbers = page.numbers.get(i).cloned().unwrap_or_default();
                match self.poll.mapping().apply_exact(record, &numbers) {
                    Ok(Ok(m)) => {
                        if let Err(e) = self.intake.check(&m.order) {
                            report.rejected += 1;
                            tracing::error!(connector = key, external_id = %m.external_id, field = e.field(), error = %e, "polled record does not fit the order template; not taken");
                            continue;
                        }
                        inbound.push(Inbound {
                            source: ExternalRef { connector: self.poll.id().clone(), id: m.external_id },
                            version: m.version,
                            mapping_version: self.poll.mapping().version.clone(),
                            order: m.order,
                        });
                    }
                    Ok(Err(_skipped)) => {}
                    Err(e) => {
                        report.rejected += 1;
                        tracing::error!(connector = key, error = %e, "polled record does not map; not taken");
                    }
                }
            }
            let state_json = serde_json::to_value(&page.next).expect("poll state serialises");
            let results = self.orders.ingest_page(inbound, key, state_json, &self.rules, self.clock.now()).await?;
            let mut effects = 0;
            for r in results {
                match r {
                    Ok(i) if !i.duplicate => {
                        report.ingested += 1;
                        effects += i.effects;
                        self.metrics
                            .inc("orderbridge_orders_ingested_total", &[("connector", key), ("outcome", "accepted")]);
                    }
                    Ok(_) => self
                        .metrics
                        .inc("orderbridge_orders_ingested_total", &[("connector", key), ("outcome", "duplicate")]),
                    Err(e) => {
                        report.rejected += 1;
                        tracing::warn!(connector = key, error = %e, "polled record refused");
                    }
                }
            }
            if effects > 0 {
                self.dispatcher.notify_one();
            }
            state = page.next;
            if !page.more {
                return Ok(report);
            }
        }
        Err(PollError::TooManyPages)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("{0}")]
    Source(ConnectorError),
    #[error("{0}")]
    Store(#[from] OrderError),
    #[error("the source kept paging past {MAX_PAGES} pages; stopped this run")]
    TooManyPages,
}
