//! The archive sweep: every `archive.sweep_interval_secs`, one archive pass (orphans,
//! moves, purges; `crate::archive`). Of several daemons sharing a database, the one
//! holding the `archive` lease sweeps; should two ever sweep at once, each move and
//! purge is one step whose preconditions let only one of them commit.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::archive::Archive;
use crate::clock::Clock;

pub(crate) struct ArchiveJob {
    pub(crate) archive: Arc<Archive>,
    pub(crate) clock: Clock,
}

impl ArchiveJob {
    pub(crate) async fn run(self, stop: CancellationToken) {
        let interval = self.archive.settings().sweep_interval;
        loop {
            // The first pass one interval after start: a daemon started to look at
            // its orders (or a restart after a crash) changes nothing at once.
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(interval) => {}
            }
            if self.lease(interval).await {
                match self.archive.run("archive sweep", self.clock.now()).await {
                    Ok(p) if p == crate::archive::Pass::default() => {}
                    Ok(p) => tracing::info!(
                        archived = p.archived,
                        purged = p.purged,
                        orphans = p.orphans_removed,
                        skipped = p.skipped,
                        "archive pass"
                    ),
                    Err(e) => tracing::error!(error = %e, "the archive pass failed; it runs again next sweep"),
                }
            }
        }
    }

    /// Whether this daemon holds (or now took) the `archive` lease: three sweeps long.
    async fn lease(&self, interval: std::time::Duration) -> bool {
        match self.archive.orders().store().try_lease("archive", interval * 3).await {
            Ok(held) => held,
            Err(e) => {
                tracing::error!(error = %e, "the archive sweep cannot take its lease; will try again");
                false
            }
        }
    }
}
