//! Following the rules change log: every sweep, the live rules catch up with what the
//! log makes live now (an activation or rollback made through the CLI or another
//! replica, or one scheduled with `--at` whose time came), and the shadow run catches
//! up with the one the log names. The swaps themselves are `review::LiveRules::sync`
//! and `review::Shadow::sync`; this only calls them on a timer and logs the outcome.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::review::{LiveRules, Shadow};

pub(crate) struct RulesWatch {
    pub(crate) live: LiveRules,
    /// The shadow run (`None`: this daemon runs none).
    pub(crate) shadow: Option<Shadow>,
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
            let shadow = self.shadow.clone();
            let synced = tokio::task::spawn_blocking(move || {
                live.sync(&data, now).map_err(|e| e.to_string())?;
                shadow.map_or(Ok(false), |s| s.sync()).map_err(|e| format!("the shadow run: {e}"))
            })
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
