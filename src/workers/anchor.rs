//! The anchor job: every `[audit] anchor_every_minutes`, one audit anchor
//! (`crate::anchor`). Of several daemons sharing a database, the one holding the
//! `audit-anchor` lease writes it. When the latest anchor no longer holds (an order it
//! covers was deleted or truncated), no new one is written and the error is logged at
//! every interval until an operator looks (`orderbridge audit verify`).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::archive::Archive;
use crate::clock::Clock;

pub(crate) struct AnchorJob {
    pub(crate) archive: Arc<Archive>,
    pub(crate) clock: Clock,
    pub(crate) every: std::time::Duration,
    pub(crate) push: Option<crate::anchor::Push>,
}

impl AnchorJob {
    pub(crate) async fn run(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(self.every) => {}
            }
            match self.archive.orders().store().try_lease(crate::anchor::LEASE, self.every * 2).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "the audit anchor job cannot take its lease; will try again");
                    continue;
                }
            }
            match crate::anchor::write(&self.archive, self.push.as_ref(), self.clock.now()).await {
                Ok(a) => tracing::info!(anchor = a.seq, orders = a.orders, events = a.events, "audit anchor written"),
                Err(e) => tracing::error!(error = %e, "no audit anchor written"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use super::AnchorJob;
    use crate::archive::Archive;
    use crate::orders::Orders;
    use crate::store::Options;

    /// The job writes an anchor at each interval, each chained to the one before.
    #[tokio::test]
    async fn the_job_writes_an_anchor_every_interval() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options::test_fjall(dir.path());
        let store = crate::store::open(&options, Arc::default()).await.unwrap();
        let settings = crate::settings::ArchiveSettings {
            enabled: false,
            after_days: 90,
            retain_years: 10,
            sweep_interval: Duration::from_secs(3600),
            segment_orders: 1000,
            dir: dir.path().join("archive"),
        };
        let archive = Arc::new(Archive::new(Arc::new(Orders::new(store.clone())), settings));
        let job = AnchorJob {
            archive: archive.clone(),
            clock: crate::clock::Clock::system(),
            every: Duration::from_millis(20),
            push: None,
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(job.run(stop.clone()));
        let mut latest = None;
        for _ in 0..500 {
            latest = crate::anchor::latest(store.as_ref()).await.unwrap();
            if latest >= Some(2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        task.await.unwrap();
        assert!(latest >= Some(2), "{latest:?}");
        let checked = crate::anchor::verify::check(&archive).await.unwrap();
        assert!(checked.problems.is_empty(), "{checked:?}");
        assert!(checked.latest >= 2, "{checked:?}");
    }
}
