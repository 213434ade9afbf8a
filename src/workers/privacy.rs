//! Personal data's background work (`crate::vault`): at start, data keys still under
//! a KEK other than `[privacy] active_key` are rewrapped (once per active key: the
//! key rotated to is remembered in the `privacy/rotated_to` job row); then every
//! `[privacy] sweep_interval_secs`, the erasure pass for orders past `retain_years`.
//! Of several daemons sharing a database, the one holding the `privacy` lease works.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::orders::Orders;

const ROTATED_TO: &str = "privacy/rotated_to";

pub(crate) struct PrivacyJob {
    pub(crate) orders: Arc<Orders>,
    pub(crate) clock: Clock,
}

impl PrivacyJob {
    pub(crate) async fn run(self, stop: CancellationToken) {
        let keys = self.orders.vault().keys().clone();
        let interval = keys.sweep_interval;
        let mut rotated = false;
        loop {
            if self.lease(interval).await {
                if !rotated {
                    rotated = self.rotate_once().await;
                }
                if let Some(years) = keys.retain_years {
                    match self.orders.erasure_pass(years, self.clock.now()).await {
                        Ok(erased) if erased.is_empty() => {}
                        Ok(erased) => tracing::info!(orders = erased.len(), "personal data erased after retention"),
                        Err(e) => tracing::error!(error = %e, "the erasure pass failed; it runs again next sweep"),
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Rewraps data keys under the active KEK unless that was done already; whether
    /// nothing is left to do.
    async fn rotate_once(&self) -> bool {
        let vault = self.orders.vault();
        let Some(active) = vault.keys().active.clone() else { return true };
        let store = self.orders.store();
        if store.job_state(ROTATED_TO).await.ok().flatten().as_ref().and_then(|v| v.as_str()) == Some(active.as_str()) {
            return true;
        }
        match vault.rotate().await {
            Ok(r) if r.locked.is_empty() => {
                tracing::info!(active = %r.active, rewrapped = r.rewrapped, "data keys are all under the active privacy key");
                let step = crate::store::Step { jobs: vec![(ROTATED_TO.into(), active.into())], ..Default::default() };
                if let Err(e) = store.commit(vec![step]).await {
                    tracing::warn!(error = %e, "cannot record the key rotation; it is checked again at the next start");
                }
                true
            }
            Ok(r) => {
                tracing::error!(
                    locked = r.locked.len(),
                    "some data keys are wrapped under privacy keys that are not configured; put them back in [privacy] keys"
                );
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "rewrapping data keys failed; tried again next sweep");
                false
            }
        }
    }

    async fn lease(&self, interval: std::time::Duration) -> bool {
        match self.orders.store().try_lease("privacy", interval * 3).await {
            Ok(held) => held,
            Err(e) => {
                tracing::error!(error = %e, "the privacy sweep cannot take its lease; will try again");
                false
            }
        }
    }
}
