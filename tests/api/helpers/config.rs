//! The repository's example configuration, copied into a test's temp dir and made
//! hermetic: secrets moved to files (no process-wide environment), every system at a
//! test server's address. Also how tests change it: `TestDefaults` (the settings every
//! test daemon runs with), `set_in_file` (typed values into `config/orderbridge.toml`,
//! for the built binary and `check`), `edit_file` (connector, rule and mapping files
//! whose content a test is about) and `only_approval`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::{ADMIN_TOKEN, CRM_SECRET, DESK_TOKEN, ERP_TOKEN, EVIDENCE_KEY, FINANCE_TOKEN, LINK_SECRET, Settings};

/// The example configuration in `dir` with the ERP (and service desk, finance system)
/// at `erp`. Notifications are off: only mail tests (`write_mail_config`) send mail.
pub fn write_config(dir: &Path, erp: SocketAddr) {
    write_example(dir, erp, false);
}

/// The example configuration with notifications on and SMTP at `smtp_port` (in the
/// file, so the built binary and `check --online` see it too).
pub fn write_mail_config(dir: &Path, erp: SocketAddr, smtp_port: u16) {
    write_example(dir, erp, true);
    set_in_file(dir, &[("smtp.port", i64::from(smtp_port).into())]);
}

/// Copies the example's TOML files, the templates and the watchlist into `dir`, with
/// secrets as `file:secrets/…` references (written here) and the systems at `erp`.
fn write_example(dir: &Path, erp: SocketAddr, mail: bool) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for sub in ["config", "connectors", "mappings", "secrets"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for sub in ["config", "connectors", "mappings"] {
        for e in std::fs::read_dir(repo.join(sub)).unwrap() {
            let p = e.unwrap().path();
            // The demo secrets stay behind: a test's secrets are files of its own.
            if p.extension().is_some_and(|x| x == "toml") && !p.ends_with("config/demo-secrets.toml") {
                let text = hermetic(&std::fs::read_to_string(&p).unwrap(), erp);
                std::fs::write(dir.join(sub).join(p.file_name().unwrap()), text).unwrap();
            }
        }
    }
    copy_tree(&repo.join("config/templates"), &dir.join("config/templates"));
    std::fs::copy(repo.join("config/watchlist.csv"), dir.join("config/watchlist.csv")).unwrap();
    if !mail {
        std::fs::write(dir.join("config/notifications.toml"), "# no notifications in this test\n").unwrap();
    } else {
        // Scheduled reports only where a test adds them (`scheduled_reports.rs`): the
        // example's, due on Mondays, would arrive among another test's mail.
        let path = dir.join("config/notifications.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let cut = text.find("# --- Scheduled management reports").or_else(|| text.find("[[reports]]"));
        std::fs::write(&path, &text[..cut.unwrap_or(text.len())]).unwrap();
    }
    for (file, secret) in [
        ("demo-crm", CRM_SECRET.to_owned()),
        ("demo-erp", ERP_TOKEN.to_owned()),
        ("desk", DESK_TOKEN.to_owned()),
        ("finance", FINANCE_TOKEN.to_owned()),
        ("links", LINK_SECRET.to_owned()),
        ("evidence", EVIDENCE_KEY.to_owned()),
        ("admin", format!("{ADMIN_TOKEN}\n")),
    ] {
        std::fs::write(dir.join("secrets").join(file), secret).unwrap();
    }
}

/// One example file made hermetic: each `${ENV}` secret reference becomes a file
/// reference, each example system address becomes `erp`.
pub fn hermetic(text: &str, erp: SocketAddr) -> String {
    const SECRETS: [(&str, &str); 9] = [
        ("${DEMO_CRM_SECRET:-demo}", "file:secrets/demo-crm"),
        ("${DEMO_ERP_TOKEN:-demo}", "file:secrets/demo-erp"),
        ("${SERVICE_DESK_TOKEN:-demo}", "file:secrets/desk"),
        ("${DEMO_FINANCE_TOKEN:-demo}", "file:secrets/finance"),
        ("${DEMO_ERP_SECRET:-demo}", "file:secrets/demo-crm"),
        ("${DEMO_FINANCE_SECRET:-demo}", "file:secrets/demo-crm"),
        ("${ORDERBRIDGE_ADMIN_TOKEN:-demo}", "file:secrets/admin"),
        ("${ORDERBRIDGE_LINK_SECRET:-demo}", "file:secrets/links"),
        ("${ORDERBRIDGE_EVIDENCE_KEY:-demo}", "file:secrets/evidence"),
    ];
    let erp = format!("http://{erp}");
    let systems = ["http://127.0.0.1:9090", "http://127.0.0.1:9091", "http://127.0.0.1:9092"];
    let text = SECRETS.iter().fold(text.to_owned(), |t, (env, file)| t.replace(env, file));
    systems.iter().fold(text, |t, example| t.replace(example, &erp))
}

pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            copy_tree(&p, &to.join(p.file_name().unwrap()));
        } else {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

/// Leaves out execution, settlement and dunning (rules.toml from `# --- Execution`
/// on): approved orders stay `approved` and push one effect, for tests about the
/// outbox itself.
pub fn only_approval(dir: &Path) {
    edit_file(dir, "config/rules.toml", |text| {
        let cut = text.find("# --- Execution").expect("rules.toml has an execution section");
        text[..cut].to_owned()
    });
}

/// Rewrites the file `rel` (under `dir`) with `edit`, for tests about a connector,
/// rule, mapping or template file's content. Panics if the edit changed nothing.
pub fn edit_file(dir: &Path, rel: &str, edit: impl FnOnce(&str) -> String) {
    let p = dir.join(rel);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"));
    let edited = edit(&text);
    assert_ne!(edited, text, "the edit of {rel} changed nothing");
    std::fs::write(&p, edited).unwrap();
}

/// Replaces each `from` with its `to` in the file `rel` (under `dir`); panics naming a
/// `from` the file does not hold.
pub fn replace_in_file(dir: &Path, rel: &str, pairs: &[(&str, &str)]) {
    edit_file(dir, rel, |text| {
        pairs.iter().fold(text.to_owned(), |t, (from, to)| {
            assert!(t.contains(from), "{rel} has no `{from}`");
            t.replace(from, to)
        })
    });
}

/// Writes the file `to` as a copy of `from` (both under `dir`) with each `from` text
/// replaced by its `to`; panics naming one the file does not hold.
pub fn copy_file_with(dir: &Path, from: &str, to: &str, pairs: &[(&str, &str)]) {
    std::fs::copy(dir.join(from), dir.join(to)).unwrap();
    replace_in_file(dir, to, pairs);
}

/// Sets `key` (dotted: `store.backend`) to its value in `config/orderbridge.toml`,
/// for daemons that read the file themselves (the built binary, `check`); an
/// in-process `TestApp` takes typed settings instead (`TestAppBuilder::settings`).
/// The file is parsed and written again (its comments do not survive).
pub fn set_in_file(dir: &Path, values: &[(&str, toml::Value)]) {
    let path = dir.join("config/orderbridge.toml");
    let mut doc: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (key, value) in values {
        let (sections, name) = key.rsplit_once('.').map_or(("", *key), |(s, n)| (s, n));
        let mut table = &mut doc;
        for section in sections.split('.').filter(|s| !s.is_empty()) {
            table = table
                .entry(section)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .unwrap_or_else(|| panic!("`{section}` in {key} is not a table"));
        }
        table.insert(name.to_owned(), value.clone());
    }
    std::fs::write(&path, toml::to_string(&doc).unwrap()).unwrap();
}

/// What every test daemon runs with, unlike the example: ports the OS picks, short
/// backoffs and sweeps (so retries and timers come within a test's waits).
pub struct TestDefaults;

impl TestDefaults {
    const BACKOFF_INITIAL_MS: u64 = 20;
    const BACKOFF_MAX_MS: u64 = 200;
    const DISPATCHER_SWEEP_MS: u64 = 50;
    const SCHEDULER_SWEEP_MS: u64 = 50;

    /// On loaded settings (an in-process daemon).
    pub fn apply(s: &mut Settings) {
        s.listen.set_port(0);
        s.admin_listen.set_port(0);
        s.dispatcher.backoff_initial = Duration::from_millis(Self::BACKOFF_INITIAL_MS);
        s.dispatcher.backoff_max = Duration::from_millis(Self::BACKOFF_MAX_MS);
        s.dispatcher.sweep_interval = Duration::from_millis(Self::DISPATCHER_SWEEP_MS);
        s.scheduler_sweep_interval = Duration::from_millis(Self::SCHEDULER_SWEEP_MS);
    }

    /// As environment overrides (the built binary; the book, "Environment overrides").
    pub fn env() -> Vec<(String, String)> {
        [
            ("SERVER__PORT", 0),
            ("SERVER__ADMIN__PORT", 0),
            ("DISPATCHER__BACKOFF_INITIAL_MS", Self::BACKOFF_INITIAL_MS),
            ("DISPATCHER__BACKOFF_MAX_MS", Self::BACKOFF_MAX_MS),
            ("DISPATCHER__SWEEP_INTERVAL_MS", Self::DISPATCHER_SWEEP_MS),
            ("SCHEDULER__SWEEP_INTERVAL_MS", Self::SCHEDULER_SWEEP_MS),
        ]
        .into_iter()
        .map(|(key, value)| (format!("ORDERBRIDGE__{key}"), value.to_string()))
        .collect()
    }
}
