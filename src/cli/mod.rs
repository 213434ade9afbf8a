//! The command line (INTERFACE.md): `run`, `check`, `orders`, `audit`, `outbox`, `bench`,
//! `archive` (`archive.rs`), `tokens`.
//!
//! Read commands open the store directly when no daemon holds it, and otherwise go
//! through the running daemon's admin API, so they work either way.

mod analysis;
mod anchor;
mod archive;
mod config_tools;
mod evidence;
mod keys;
mod quarantine;
mod reads;
mod review;
mod source;
mod store_admin;
mod tokens;
mod versions;

use analysis::{export, report, report_mail};
use config_tools::{mapping_test, rules_diff};
use reads::{audit_verify, orders, outbox, quarantine};
use source::{Source, actor_text, fetch_order};
use store_admin::{migrate, store_copy};
use versions::{rules_history, rules_show};

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

#[derive(Parser, Debug)]
#[command(
    name = "orderbridge",
    version,
    about = "Sales-order automation daemon: CRM → screening → approval → ERP → finance"
)]
pub struct Cli {
    /// Directory holding config/, connectors/ and mappings/.
    #[arg(long, global = true, default_value = ".", env = "ORDERBRIDGE_CONFIG_DIR")]
    pub(crate) config_dir: PathBuf,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Run the daemon.
    Run {
        /// Log format, overriding `log.format` (text or json).
        #[arg(long)]
        log_format: Option<String>,
        /// Development only: run config/rules.toml even if nobody approved it (as
        /// `rules.require_review = false`).
        #[arg(long)]
        allow_unreviewed_rules: bool,
    },
    /// Validate every configuration file; exit 78 on any problem.
    Check {
        /// Also call every connector's health check (and the SMTP server); exit 69 when
        /// one is unreachable or refuses our credentials.
        #[arg(long)]
        online: bool,
    },
    /// Read orders.
    #[command(subcommand)]
    Orders(OrdersCmd),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// The outbox of effects.
    #[command(subcommand)]
    Outbox(OutboxCmd),
    /// The store itself: rows set aside because they could not be read.
    #[command(subcommand)]
    Store(StoreCmd),
    /// Why an order is where it is: rules fired, approval route, decisions, versions.
    Explain {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// The management report of the orders received in a period: KPIs, bottlenecks,
    /// the process map (the same as `GET /api/reports/kpis`).
    Report {
        /// First day (in the site's time zone) or an RFC 3339 time.
        #[arg(long, required_unless_present = "mail")]
        from: Option<String>,
        /// Last day, included, or an RFC 3339 time, excluded (default: now).
        #[arg(long)]
        to: Option<String>,
        /// text, json, csv or html.
        #[arg(long, default_value = "text")]
        format: crate::analytics::render::Format,
        /// Instead: the HTML mail the `[[reports]]` entry of this name would send
        /// (charts inline), for the period before --at.
        #[arg(long, conflicts_with_all = ["from", "to"])]
        mail: Option<String>,
        /// With --mail: when it would be sent (a day or an RFC 3339 time; default now).
        #[arg(long, requires = "mail")]
        at: Option<String>,
    },
    /// Write the orders and events changed in a window to files for the data
    /// warehouse, partitioned by month; by default from where the last export into
    /// the directory ended.
    Export {
        /// First day (in the site's time zone) or an RFC 3339 time (default: where the
        /// last export into --out ended; everything the first time).
        #[arg(long)]
        since: Option<String>,
        /// Last day, included, or an RFC 3339 time, excluded (default: now).
        #[arg(long)]
        until: Option<String>,
        /// parquet, csv or jsonl.
        #[arg(long, default_value = "parquet")]
        format: crate::export::write::Format,
        /// The directory the files go in (made if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Try a mapping before deploying it.
    #[command(subcommand)]
    Mapping(MappingCmd),
    /// Rule changes: what a candidate rules.toml would decide differently, and the
    /// reviewed change (propose, approve, activate, rollback, changes).
    #[command(subcommand)]
    Rules(RulesCmd),
    /// An order's evidence pack for auditors (`evidence ORDER_ID --out FILE.zip`), its
    /// offline check (`evidence verify FILE.zip`) and the key that checks it.
    Evidence(evidence::EvidenceArgs),
    /// Load generator: posts signed webhooks to a running daemon and reports throughput.
    Bench(crate::bench::BenchArgs),
    /// The archive of ended orders: run a pass now, legal holds.
    #[command(subcommand)]
    Archive(ArchiveCmd),
    /// API tokens for clients and personal tokens for people.
    #[command(subcommand)]
    Tokens(tokens::TokensCmd),
    /// Personal data's keys: status, rotation, erasure of one order's personal data.
    #[command(subcommand)]
    Keys(keys::KeysCmd),
    /// Bring the store's schema up to this version: PostgreSQL's embedded migrations
    /// (the daemon also applies them at start), or an embedded store's layout.
    Migrate,
}

#[derive(Subcommand, Debug)]
pub(crate) enum OrdersCmd {
    /// List orders, optionally in one state.
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Show one order with its events.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum StoreCmd {
    /// List quarantined rows: what each was, why it could not be read, when, how it
    /// was resolved, and its raw bytes (hex, with --json). They are kept for analysis,
    /// also once resolved (`store quarantine resolve`).
    Quarantine {
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Option<QuarantineCmd>,
    },
    /// Copy the store (stopped daemon) into a new, empty one: another backend (also
    /// PostgreSQL, either way), or the same one elsewhere (a compacted copy). Verifies
    /// every hash chain on the copy. Point `store.backend` and `store.path` (or
    /// `store.url`) at the copy to use it.
    Copy {
        /// The target's backend (default: the configured one).
        #[arg(long)]
        to_backend: Option<String>,
        /// The target's directory, for an embedded backend (must not hold a store).
        #[arg(long)]
        to_path: Option<PathBuf>,
        /// The target database, for `--to-backend postgres`: a secret reference,
        /// `${ENV_NAME}` or `file:PATH` (its tables must be empty).
        #[arg(long)]
        to_url: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum QuarantineCmd {
    /// Resolve the quarantined row ROW (as listed: `order ord_…`, or just `ord_…`):
    /// with --from, put the order row back from a copy of a backup (only if it reads
    /// there and its audit chain verifies against the stored events); with --discard,
    /// give the row up. Either way it stays listed, resolved, with --by and --reason;
    /// it no longer counts (metric, /readyz, `audit verify`).
    Resolve {
        row: String,
        /// Who resolves it (a person).
        #[arg(long)]
        by: String,
        /// Why (a ticket, what was done).
        #[arg(long)]
        reason: String,
        /// A copy of a backup of the data directory holding the row readable.
        #[arg(long, conflicts_with = "discard", required_unless_present = "discard")]
        from: Option<PathBuf>,
        /// Give the row up: it stays unreadable, reported as discarded by --by.
        #[arg(long)]
        discard: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum MappingCmd {
    /// Apply MAPPING (a name in mappings/, or a path to a .toml file) to the JSON in
    /// FILE and print the canonical order, or the error naming file, field and value.
    /// Exit 0 when it maps, 1 when the payload is refused, 78 when the mapping is broken.
    Test {
        mapping: String,
        #[arg(long)]
        input: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum RulesCmd {
    /// Replay stored orders through a candidate rules file and list every order whose
    /// screening result or approval route would change. Exit 0: none; 1: some.
    Diff {
        /// Replay the stored history (the only mode).
        #[arg(long, required = true)]
        against_history: bool,
        /// Only the N most recent orders.
        #[arg(long)]
        last: Option<usize>,
        /// The candidate rules file (default: config/rules.toml, i.e. the edited file).
        #[arg(long)]
        candidate: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Every version of the rules, mappings, notifications and templates the daemon
    /// has loaded (by content hash), with when each was first and last loaded.
    History {
        /// Also every load, with the configuration's version decisions record.
        #[arg(long)]
        json: bool,
    },
    /// Propose a candidate rules file: checked like `check` does, kept by its content
    /// version, its impact on the stored orders printed (as `rules diff`), then its id.
    Propose {
        /// The candidate (its watch list is read from config/).
        file: PathBuf,
        /// Why: shown in the change log.
        #[arg(long)]
        note: Option<String>,
        /// Who proposes (a directory person granted `propose_rules`).
        #[arg(long)]
        by: String,
        /// Replay only the N most recent orders.
        #[arg(long)]
        last: Option<usize>,
    },
    /// Approve a proposed version: a person granted `approve_rules` who did not propose it.
    Approve {
        version: String,
        #[arg(long)]
        by: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Make an approved version the live rules, now or at --at; a running daemon
    /// switches without a restart.
    Activate {
        version: String,
        /// When (RFC 3339); default now.
        #[arg(long)]
        at: Option<String>,
        #[arg(long)]
        by: String,
    },
    /// Return to the rules version live before the current one.
    Rollback {
        #[arg(long)]
        by: String,
    },
    /// Run an approved version in shadow beside the live rules (every new order is
    /// also decided under it, without effects; differences are recorded), or stop.
    Shadow {
        /// The approved version (its hash, or a unique prefix).
        #[arg(required_unless_present = "stop")]
        version: Option<String>,
        /// Stop the shadow run.
        #[arg(long, conflicts_with = "version")]
        stop: bool,
        #[arg(long)]
        by: String,
    },
    /// The orders a shadow version decided differently, and how.
    ShadowReport {
        /// The shadow version (default: the one running, else the last one).
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The change log: every proposal, approval, activation and rollback, verified.
    Changes {
        #[arg(long)]
        json: bool,
    },
    /// Print a kept version's file exactly as it was loaded.
    Show {
        /// The version (its hash, or a unique prefix as `rules history` shows it).
        version: String,
        /// Which file of the version (default: its first, e.g. config/rules.toml).
        #[arg(long)]
        file: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum AuditCmd {
    /// Check every order's hash chain; exit 1 naming the first broken order and event.
    Verify,
    /// Write an audit anchor now (a sealed Merkle root over every order's chain head)
    /// and print it as one JSON line; exit 1 when the latest anchor no longer holds.
    Anchor,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ArchiveCmd {
    /// One archive pass now: orphaned segments removed, due orders moved, expired
    /// ones purged; prints the counts.
    Run {
        #[arg(long)]
        json: bool,
    },
    /// Keep an archived order past `archive.retain_years` (a legal hold), logged in
    /// the archive log.
    Hold {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Release an archived order's legal hold (logged).
    Release { id: String },
}

#[derive(Subcommand, Debug)]
pub(crate) enum OutboxCmd {
    /// Pending effects (due or backing off).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Effects that gave up.
    Dead {
        #[arg(long)]
        json: bool,
    },
    /// Re-queue a dead letter, attempts reset.
    Replay { id: String },
}

pub async fn run_command(cli: Cli) -> anyhow::Result<i32> {
    let dir = cli.config_dir.clone();
    match cli.command {
        Command::Run { log_format, allow_unreviewed_rules } => {
            run_daemon(&dir, log_format, allow_unreviewed_rules).await
        }
        Command::Check { online } => {
            let code = crate::check::run_check(&dir);
            if code != 0 || !online { Ok(code) } else { Ok(crate::check::run_online(&dir).await) }
        }
        Command::Bench(args) => crate::bench::run(args).await.map(|()| 0),
        Command::Orders(cmd) => orders(&dir, cmd).await,
        Command::Audit(AuditCmd::Verify) => audit_verify(&dir).await,
        Command::Audit(AuditCmd::Anchor) => anchor::audit_anchor(&dir).await,
        Command::Outbox(cmd) => outbox(&dir, cmd).await,
        Command::Store(StoreCmd::Quarantine { json, action: None }) => quarantine(&dir, json).await,
        Command::Store(StoreCmd::Quarantine {
            action: Some(QuarantineCmd::Resolve { row, by, reason, from, discard }),
            ..
        }) => quarantine::resolve(&dir, &row, &by, &reason, if discard { None } else { from }).await,
        Command::Store(StoreCmd::Copy { to_backend, to_path, to_url }) => {
            store_copy(&dir, to_backend, to_path, to_url).await
        }
        Command::Migrate => migrate(&dir).await,
        Command::Archive(cmd) => archive::archive(&dir, cmd).await,
        Command::Tokens(cmd) => tokens::tokens(&dir, cmd),
        Command::Keys(cmd) => keys::keys(&dir, cmd).await,
        Command::Mapping(MappingCmd::Test { mapping, input }) => mapping_test(&dir, &mapping, &input),
        Command::Rules(RulesCmd::Diff { against_history: _, last, candidate, json }) => {
            rules_diff(&dir, last, candidate, json).await
        }
        Command::Rules(RulesCmd::History { json }) => rules_history(&dir, json),
        Command::Rules(RulesCmd::Propose { file, note, by, last }) => {
            review::propose(&dir, &file, note, &by, last).await
        }
        Command::Rules(RulesCmd::Approve { version, by, note }) => review::approve(&dir, &version, &by, note),
        Command::Rules(RulesCmd::Activate { version, at, by }) => review::activate(&dir, &version, at.as_deref(), &by),
        Command::Rules(RulesCmd::Rollback { by }) => review::rollback(&dir, &by),
        Command::Rules(RulesCmd::Changes { json }) => review::changes(&dir, json),
        Command::Rules(RulesCmd::Shadow { version, stop, by }) => review::shadow(&dir, version.as_deref(), stop, &by),
        Command::Rules(RulesCmd::ShadowReport { version, json }) => {
            review::shadow_report(&dir, version.as_deref(), json)
        }
        Command::Rules(RulesCmd::Show { version, file }) => rules_show(&dir, &version, file.as_deref()),
        Command::Evidence(args) => evidence::run(&dir, args).await,
        Command::Export { since, until, format, out } => export(&dir, since, until.as_deref(), format, &out).await,
        Command::Report { mail: Some(name), at, .. } => report_mail(&dir, &name, at.as_deref()).await,
        Command::Report { from, to, format, .. } => {
            report(&dir, from.as_deref().unwrap_or_default(), to.as_deref(), format).await
        }
        Command::Explain { id, json } => {
            let src = Source::open(&dir).await?;
            let order = fetch_order(&src, id.parse()?).await?;
            let e = crate::explain::explain(&order).map_err(|e| anyhow::anyhow!(e))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&e.json)?);
            } else {
                e.lines.iter().for_each(|l| println!("{l}"));
            }
            Ok(0)
        }
    }
}

async fn run_daemon(dir: &Path, log_format: Option<String>, allow_unreviewed_rules: bool) -> anyhow::Result<i32> {
    let mut loaded = match crate::config::load_all(dir) {
        Ok(l) => l,
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            eprintln!("refusing to start: {} configuration problem(s); run `orderbridge check`", problems.len());
            return Ok(crate::check::EX_CONFIG);
        }
    };
    let format = match log_format.as_deref() {
        Some("json") => LogFormat::Json,
        Some("text") => LogFormat::Text,
        Some(other) => bail!("--log-format {other}: expected text or json"),
        None => loaded.settings.log_format,
    };
    crate::telemetry::init(format, &loaded.settings.log_level);
    for note in &loaded.notes {
        tracing::warn!("{note}");
    }
    if allow_unreviewed_rules && loaded.settings.require_review {
        tracing::warn!(
            "--allow-unreviewed-rules: this process runs config/rules.toml without review (development only)"
        );
        loaded.settings.require_review = false;
    }
    let app = crate::startup::Application::build(loaded).await?;
    app.run_until_stopped(crate::shutdown::signal()).await?;
    Ok(0)
}
