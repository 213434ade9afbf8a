//! The live rules: one value every part of the daemon reads the rules from (the
//! HTTP state, the dispatcher, the scheduler, pollers, reconciliation), swapped as a
//! whole when a version is activated or rolled back. Each step takes the rules once
//! (`&*live`, or through `Deref` where a `&Rules` is passed) and decides on that one
//! version from start to end; the next step sees the new one.
//!
//! A version once live stays in memory until the process ends: a step that started
//! under it may still be reading it. Activations are reviewed changes made by people,
//! so they are few; this is what lets a reader hold a plain `&Rules` with no guard.

use std::ops::Deref;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};

use super::{ReviewError, active_at, build, log};
use crate::engine::Rules;
use crate::versions::{Versions, kept, short};

/// The rules the daemon decides with now; cheap to clone (all clones see a swap).
#[derive(Clone)]
pub struct LiveRules(Arc<Inner>);

struct Inner {
    running: RwLock<Running>,
    /// One `sync` at a time (the watch and an API activation), so a switch is built,
    /// recorded and swapped once.
    syncing: Mutex<()>,
}

#[derive(Clone)]
struct Running {
    rules: &'static Rules,
    /// The configuration's versions with these rules (what `loads.jsonl` records).
    versions: Arc<Versions>,
}

impl LiveRules {
    pub fn new(rules: Rules, versions: Versions) -> LiveRules {
        let running = Running { rules: Box::leak(Box::new(rules)), versions: Arc::new(versions) };
        LiveRules(Arc::new(Inner { running: RwLock::new(running), syncing: Mutex::new(()) }))
    }

    fn running(&self) -> Running {
        self.0.running.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The rules live now, for one step (a read lock held only to copy the reference).
    pub fn current(&self) -> &Rules {
        self.0.running.read().unwrap_or_else(std::sync::PoisonError::into_inner).rules
    }

    /// The live rules' version by content (the `rules` part's hash).
    pub(crate) fn version(&self) -> String {
        self.running().versions.part("rules").map(|p| p.hash.clone()).unwrap_or_default()
    }

    /// The configuration's versions with the live rules.
    pub(crate) fn versions(&self) -> Arc<Versions> {
        self.running().versions
    }

    fn swap(&self, rules: Rules, versions: Versions) {
        let next = Running { rules: Box::leak(Box::new(rules)), versions: Arc::new(versions) };
        *self.0.running.write().unwrap_or_else(std::sync::PoisonError::into_inner) = next;
    }

    /// Follows the change log: when it makes another version live at `now` than the
    /// one running, that version is built, swapped in and its load recorded. Returns
    /// the version switched to.
    ///
    /// # Errors
    /// The log does not verify, or the version no longer loads (the rules stay).
    pub(crate) fn sync(&self, data: &Path, now: DateTime<Utc>) -> Result<Option<String>, ReviewError> {
        let _one = self.0.syncing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let log = log::read(data)?;
        let Some(active) = active_at(&log, now) else { return Ok(None) };
        if active.version == self.version() {
            return Ok(None);
        }
        let (rules, versions) = build(data, &active.version, self.current(), &self.versions())?;
        kept::record(data, &versions, now).map_err(log::LogError::from)?;
        tracing::info!(
            rules_version = short(&active.version),
            config_version = short(&versions.id),
            by = %active.by,
            "rules {} now live ({})",
            short(&active.version),
            active.what.name()
        );
        self.swap(rules, versions);
        Ok(Some(active.version.clone()))
    }
}

impl Deref for LiveRules {
    type Target = Rules;
    fn deref(&self) -> &Rules {
        self.current()
    }
}

/// For a value built outside the loader (benchmarks, tests): no versions known.
impl From<Rules> for LiveRules {
    fn from(rules: Rules) -> LiveRules {
        LiveRules::new(rules, Versions::default())
    }
}
