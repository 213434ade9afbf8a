//! `[archive]`: when ended orders leave the hot store for the archive's segment files,
//! where those files live, how long they are kept, and how often the sweep runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::Problems;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawArchive {
    /// Whether the daemon's sweep moves and purges orders (`orderbridge archive run`
    /// works either way).
    pub(crate) enabled: bool,
    /// Orders that ended (closed, cancelled, rejected) more than this many days ago
    /// move to the archive (at least 1).
    pub(crate) after_days: u32,
    /// Archived orders that ended more than this many years ago are purged, unless
    /// under a legal hold (at least 1).
    pub(crate) retain_years: u32,
    /// How often the sweep runs, in seconds.
    pub(crate) sweep_interval_secs: u64,
    /// Most orders in one segment file.
    pub(crate) segment_orders: usize,
    /// Where the segment files live, relative to the configuration directory unless
    /// absolute (default: `archive/` in the store's data directory).
    pub(crate) path: Option<PathBuf>,
}

impl Default for RawArchive {
    fn default() -> Self {
        RawArchive {
            enabled: true,
            after_days: 90,
            retain_years: 10,
            sweep_interval_secs: 3600,
            segment_orders: 5000,
            path: None,
        }
    }
}

/// The archive's settings, checked.
#[derive(Debug, Clone)]
pub struct ArchiveSettings {
    pub enabled: bool,
    pub after_days: u32,
    pub retain_years: u32,
    pub sweep_interval: Duration,
    pub segment_orders: usize,
    /// The directory of the segment files.
    pub dir: PathBuf,
}

pub(super) fn parse(a: &RawArchive, config_dir: &Path, store_path: &Path, p: &mut Problems<'_>) -> ArchiveSettings {
    if a.after_days == 0 {
        p.bad(
            &["archive", "after_days"],
            "must be at least 1 (set archive.enabled = false to keep every order hot)".into(),
        );
    }
    if a.retain_years == 0 {
        p.bad(&["archive", "retain_years"], "must be at least 1".into());
    }
    if a.sweep_interval_secs == 0 {
        p.bad(&["archive", "sweep_interval_secs"], "must be at least 1".into());
    }
    if a.segment_orders == 0 {
        p.bad(&["archive", "segment_orders"], "must be at least 1".into());
    }
    let dir = match &a.path {
        Some(d) if d.is_absolute() => d.clone(),
        Some(d) => config_dir.join(d),
        None => store_path.join("archive"),
    };
    ArchiveSettings {
        enabled: a.enabled,
        after_days: a.after_days.max(1),
        retain_years: a.retain_years.max(1),
        sweep_interval: Duration::from_secs(a.sweep_interval_secs.max(1)),
        segment_orders: a.segment_orders.max(1),
        dir,
    }
}
