//! Following the rules change log: every sweep, the live rules catch up with what the
//! log makes live now (an activation or rollback made through the CLI or another
//! replica, or one scheduled with `--at` whose time came). The swap itself is
//! `review::LiveRules::sync`; this only calls it on a timer and logs the outcome.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::review::LiveRules;

pub(crate) struct RulesWatch {
    pub(crate) live: LiveRules,
    /// The data directory (`store.path`): the change log and the kept versions.
    pub(crate) data: PathBuf,
    pub(crate) clock: Clock,
    pub(crate) interval: Duration,
}

impl RulesWatch {
    pub(crate) async fn run(self, stop: CancellationToken) {
        // Said once per distinct failure, not every sweep.
        let mut failing: Option<String> = None;
        loop {
            // File reads (and, on a switch, a synced write): off the async threads.
            let (live, data, now) = (self.live.clone(), self.data.clone(), self.clock.now());
            let synced = tokio::task::spawn_blocking(move || live.sync(&data, now).map_err(|e| e.to_string()))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            match synced {
                Err(e) if failing.as_deref() != Some(e.as_str()) => {
                    tracing::error!(error = %e, "the live rules cannot follow the rules change log; they stay as they are");
                    failing = Some(e);
                }
                Err(_) => {}
                Ok(_) => failing = None,
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(self.interval) => {}
            }
        }
    }
}
