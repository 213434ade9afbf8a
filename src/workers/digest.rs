//! The scheduler: every sweep, fires due approval reminders and escalations (each
//! one store step that removes its own due time, so it never fires twice), and turns
//! each person's due digest (gathered notifications whose oldest item has waited their
//! cadence) into one mail effect. All due times live in the store, so a restart
//! loses nothing and repeats nothing. Of several daemons sharing a database, the
//! one holding the `scheduler` lease sweeps (`Store::try_lease`, renewed each sweep);
//! should two ever sweep at once, each timer and digest is one step whose
//! preconditions let only one of them commit. Scheduled management reports go the
//! same way (`Orders::run_reports`): a stored due time, one step per period.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::orders::Orders;

pub(crate) struct DigestJob {
    pub(crate) orders: Arc<Orders>,
    pub(crate) rules: crate::review::LiveRules,
    pub(crate) clock: Clock,
    pub(crate) interval: Duration,
    /// Woken when a digest was queued, so it goes out at once.
    pub(crate) dispatcher: Arc<Notify>,
    /// `[[reports]]`, sent when due.
    pub(crate) reports: Arc<Vec<crate::reports::ReportSpec>>,
    /// The language of a report without its own, for people without theirs.
    pub(crate) default_locale: crate::locale::Locale,
    /// When the daemon started (a report's first due time is after it).
    pub(crate) started: chrono::DateTime<chrono::Utc>,
}

/// The lease of the sweeping daemon lasts this many sweep intervals: a daemon that
/// dies leaves the sweeps to another after at most that long.
const LEASE_SWEEPS: u32 = 3;

impl DigestJob {
    pub(crate) async fn run(self, stop: CancellationToken) {
        loop {
            if self.lease().await {
                self.sweep().await;
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// Whether this daemon holds (or now took) the `scheduler` lease.
    async fn lease(&self) -> bool {
        let ttl = (self.interval * LEASE_SWEEPS).max(Duration::from_secs(3));
        match self.orders.store().try_lease("scheduler", ttl).await {
            Ok(held) => held,
            Err(e) => {
                tracing::error!(error = %e, "scheduler cannot take its lease; will try again");
                false
            }
        }
    }

    /// Fires due timers and queues due digests.
    async fn sweep(&self) {
        match self.orders.run_timers(&self.rules, self.clock.now()).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(fired = n, "approval reminders and escalations fired");
                self.dispatcher.notify_one();
            }
            Err(e) => tracing::error!(error = %e, "scheduler cannot fire timers; will try again"),
        }
        match self.orders.run_digests(self.clock.now()).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(digests = n, "digests queued");
                self.dispatcher.notify_one();
            }
            Err(e) => tracing::error!(error = %e, "scheduler cannot build digests; will try again"),
        }
        if self.reports.is_empty() {
            return;
        }
        let ctx = crate::orders::ReportContext {
            directory: &self.rules.notify.directory,
            default_locale: self.default_locale,
            calendar: &self.rules.sla.calendar,
            since: self.started,
        };
        match self.orders.run_reports(&self.reports, &ctx, self.clock.now()).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(reports = n, "scheduled reports queued");
                self.dispatcher.notify_one();
            }
            Err(e) => tracing::error!(error = %e, "scheduler cannot build scheduled reports; will try again"),
        }
    }
}
