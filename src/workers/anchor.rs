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
