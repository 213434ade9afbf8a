//! Reading `config/notifications.toml` for the engine's notification rules
//! (`crate::engine::notify`, which parses and evaluates them without I/O).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diagnostics::Diagnostic;
use crate::engine::directory::Directory;
use crate::engine::notify::{self, Located, Notifications};
use crate::locale::Presentation;

pub(crate) fn path(config_dir: &Path) -> PathBuf {
    config_dir.join("config").join("notifications.toml")
}

/// Loads `config/notifications.toml` (missing: no notifications). Checks what the
/// file alone can say; `check` cross-checks templates, roles, people, SMTP and links.
pub(crate) fn load(
    config_dir: &Path,
    directory: Arc<Directory>,
    presentation: Presentation,
) -> Result<(Notifications, Vec<Located>), Vec<Diagnostic>> {
    let path = path(config_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((Notifications { rules: Vec::new(), directory, presentation }, Vec::new()));
        }
        Err(e) => return Err(vec![Diagnostic::file(&path, format!("cannot read: {e}"))]),
    };
    notify::parse(&path, &text, directory, presentation)
}
