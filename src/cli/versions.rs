//! `rules history` and `rules show`: the configuration versions kept under the data
//! directory (`crate::versions::kept`), read offline (the daemon need not be stopped).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::settings::Settings;
use crate::versions::{kept, short};

/// The data directory the configuration in `config_dir` names.
pub(super) fn data_dir(config_dir: &Path) -> anyhow::Result<PathBuf> {
    let settings = Settings::load_with(config_dir, false)
        .map_err(|ds| anyhow::anyhow!(ds.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))?;
    Ok(settings.store_path)
}

pub(super) fn rules_history(config_dir: &Path, json: bool) -> anyhow::Result<i32> {
    let data = data_dir(config_dir)?;
    let seen = kept::history(&data).with_context(|| format!("reading {}", data.display()))?;
    if json {
        let loads = kept::loads(&data)?;
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"versions": seen, "loads": loads}))?);
        return Ok(0);
    }
    if seen.is_empty() {
        println!("no configuration loaded yet under {}", data.display());
        return Ok(0);
    }
    println!("{:<14} {:<12} {:<20} {:<20} {:<20}", "kind", "version", "label", "first loaded", "last loaded");
    for s in &seen {
        println!(
            "{:<14} {:<12} {:<20} {:<20} {:<20}{}",
            s.kind,
            short(&s.hash),
            s.label.as_deref().unwrap_or("-"),
            s.first_loaded.format("%Y-%m-%dT%H:%M:%SZ"),
            s.last_loaded.format("%Y-%m-%dT%H:%M:%SZ"),
            if s.active { "  active" } else { "" }
        );
    }
    Ok(0)
}

/// Prints a kept version's file exactly: `file`, or the part's first file (for the
/// rules, `config/rules.toml`); the other files are named on stderr.
pub(super) fn rules_show(config_dir: &Path, version: &str, file: Option<&str>) -> anyhow::Result<i32> {
    let data = data_dir(config_dir)?;
    let mut found = kept::find(&data, version)?;
    match found.len() {
        0 => bail!("no kept version starts with `{version}` (see `orderbridge rules history`)"),
        1 => {}
        _ => bail!(
            "`{version}` is ambiguous: {}",
            found.iter().map(|p| format!("{} {}", p.kind, short(&p.hash))).collect::<Vec<_>>().join(", ")
        ),
    }
    let part = found.remove(0);
    let Some(path) = file.map(str::to_owned).or_else(|| part.files.first().map(|f| f.path.clone())) else {
        bail!("{} version {} has no files", part.kind, short(&part.hash));
    };
    let bytes = kept::file(&data, &part, &path)?;
    std::io::stdout().write_all(&bytes)?;
    let others: Vec<_> = part.files.iter().filter(|f| f.path != path).map(|f| f.path.as_str()).collect();
    if !others.is_empty() {
        eprintln!("({} version {}: also {}; show one with --file)", part.kind, short(&part.hash), others.join(", "));
    }
    Ok(0)
}
