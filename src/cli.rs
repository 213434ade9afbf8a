//! The command line (INTERFACE.md): `run`, `check`, `orders`, `audit`, `outbox`, `bench`.
//!
//! Read commands open the store directly when no daemon holds it, and otherwise go
//! through the running daemon's admin API, so they work either way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::analytics::render::Format;
use crate::domain::OrderId;
use crate::engine::Actor;
use crate::metrics::Metrics;
use crate::orders::Orders;
use crate::settings::{LogFormat, Settings};
use crate::store::{EffectId, StoreError};

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
        #[arg(long)]
        from: String,
        /// Last day, included, or an RFC 3339 time, excluded (default: now).
        #[arg(long)]
        to: Option<String>,
        /// text, json, csv or html.
        #[arg(long, default_value = "text")]
        format: crate::analytics::render::Format,
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
    /// Rule changes: what a candidate rules.toml would decide differently.
    #[command(subcommand)]
    Rules(RulesCmd),
    /// Load generator: posts signed webhooks to a running daemon and reports throughput.
    Bench(crate::bench::BenchArgs),
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
    /// List quarantined rows: what each was, why it could not be read, when, and its
    /// raw bytes (hex). They are kept for analysis; restore the order from a backup.
    Quarantine {
        #[arg(long)]
        json: bool,
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
}

#[derive(Subcommand, Debug)]
pub(crate) enum AuditCmd {
    /// Check every order's hash chain; exit 1 naming the first broken order and event.
    Verify,
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

/// Where read commands get their data.
enum Source {
    Store(Arc<Orders>),
    Api { base: String, token: Option<String>, client: reqwest::Client },
}

impl Source {
    async fn open(config_dir: &Path) -> anyhow::Result<Source> {
        let settings = Settings::load_with(config_dir, false)
            .map_err(|ds| anyhow::anyhow!(ds.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))?;
        if !crate::store::exists(&settings.store) {
            bail!(
                "no store at {} (is --config-dir right? store.path is relative to it)",
                settings.store_path.display()
            );
        }
        let options = crate::store::Options {
            cache_bytes: 16 * 1024 * 1024,
            commit_delay: std::time::Duration::ZERO,
            ..settings.store.clone()
        };
        match crate::store::open(&options, Arc::new(Metrics::default())).await {
            Ok(s) => Ok(Source::Store(Arc::new(Orders::new(s)))),
            Err(StoreError::Locked(_)) => {
                // The admin listener serves /api (the public one does not).
                let mut addr = settings.admin_listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                let token = settings.admin_token.as_ref().map(|t| t.expose_secret().to_owned());
                if token.is_none() {
                    bail!(
                        "the daemon holds the store; set the admin token (server.admin_token) so this command can use its API"
                    );
                }
                crate::connectors::install_crypto_provider();
                let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60)).build()?;
                Ok(Source::Api { base: format!("http://{addr}/api"), token, client })
            }
            Err(e) => Err(e).context(format!("opening the store at {}", settings.store_path.display())),
        }
    }

    /// A GET of `path` with `params` whose answer is text (a report, JSON lines).
    async fn api_text(&self, path: &str, params: &[(&str, String)]) -> anyhow::Result<String> {
        Ok(self.api_text_with_headers(path, params).await?.0)
    }

    /// `api_text`, with the answer's headers.
    async fn api_text_with_headers(
        &self,
        path: &str,
        params: &[(&str, String)],
    ) -> anyhow::Result<(String, reqwest::header::HeaderMap)> {
        let Source::Api { base, token, client } = self else {
            unreachable!("api_text() is only called on Source::Api")
        };
        let mut req = client.get(reqwest::Url::parse_with_params(&format!("{base}{path}"), params)?);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.context("calling the daemon's API")?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.context("reading the daemon's answer")?;
        if !status.is_success() {
            let body: Value = serde_json::from_str(&text).unwrap_or_default();
            bail!("{}", body["error"]["message"].as_str().unwrap_or(&text));
        }
        Ok((text, headers))
    }

    async fn api(&self, method: reqwest::Method, path: &str) -> anyhow::Result<Value> {
        let Source::Api { base, token, client } = self else { unreachable!("api() is only called on Source::Api") };
        let mut req = client.request(method, format!("{base}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.context("calling the daemon's API")?;
        let status = resp.status();
        let body: Value = resp.json().await.context("reading the daemon's answer")?;
        if !status.is_success() {
            bail!("{}", body["error"]["message"].as_str().unwrap_or("request failed"));
        }
        Ok(body)
    }
}

pub async fn run_command(cli: Cli) -> anyhow::Result<i32> {
    let dir = cli.config_dir.clone();
    match cli.command {
        Command::Run { log_format } => run_daemon(&dir, log_format).await,
        Command::Check { online } => {
            let code = crate::check::run_check(&dir);
            if code != 0 || !online { Ok(code) } else { Ok(crate::check::run_online(&dir).await) }
        }
        Command::Bench(args) => crate::bench::run(args).await.map(|()| 0),
        Command::Orders(cmd) => orders(&dir, cmd).await,
        Command::Audit(AuditCmd::Verify) => audit_verify(&dir).await,
        Command::Outbox(cmd) => outbox(&dir, cmd).await,
        Command::Store(StoreCmd::Quarantine { json }) => quarantine(&dir, json).await,
        Command::Store(StoreCmd::Copy { to_backend, to_path, to_url }) => {
            store_copy(&dir, to_backend, to_path, to_url).await
        }
        Command::Migrate => migrate(&dir).await,
        Command::Mapping(MappingCmd::Test { mapping, input }) => mapping_test(&dir, &mapping, &input),
        Command::Rules(RulesCmd::Diff { against_history: _, last, candidate, json }) => {
            rules_diff(&dir, last, candidate, json).await
        }
        Command::Export { since, until, format, out } => export(&dir, since, until.as_deref(), format, &out).await,
        Command::Report { from, to, format } => report(&dir, &from, to.as_deref(), format).await,
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

async fn run_daemon(dir: &Path, log_format: Option<String>) -> anyhow::Result<i32> {
    let loaded = match crate::config::load_all(dir) {
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
    let app = crate::startup::Application::build(loaded).await?;
    app.run_until_stopped(crate::shutdown::signal()).await?;
    Ok(0)
}

async fn orders(dir: &Path, cmd: OrdersCmd) -> anyhow::Result<i32> {
    let src = Source::open(dir).await?;
    match cmd {
        OrdersCmd::List { state, limit, json } => {
            let rows: Vec<Value> = match &src {
                Source::Store(s) => s
                    .store()
                    .list(state.as_deref(), None, limit)
                    .await?
                    .iter()
                    .map(crate::http::api::order_json)
                    .collect(),
                Source::Api { .. } => {
                    let q = state.map(|s| format!("&state={s}")).unwrap_or_default();
                    let v = src.api(reqwest::Method::GET, &format!("/orders?limit={limit}{q}")).await?;
                    v["orders"].as_array().cloned().unwrap_or_default()
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{:<37} {:<18} {:<28} {:>20}  CUSTOMER", "ORDER", "STATE", "SOURCE", "AMOUNT");
                for r in &rows {
                    println!(
                        "{:<37} {:<18} {:<28} {:>16} {}  {}",
                        r["id"].as_str().unwrap_or(""),
                        r["state"].as_str().unwrap_or(""),
                        format!(
                            "{}/{}",
                            r["source"]["connector"].as_str().unwrap_or(""),
                            r["source"]["external_id"].as_str().unwrap_or("")
                        ),
                        r["order"]["amount"]["amount"].as_str().unwrap_or(""),
                        r["order"]["amount"]["currency"].as_str().unwrap_or(""),
                        r["order"]["customer"]["name"].as_str().unwrap_or(""),
                    );
                }
                println!("{} order(s)", rows.len());
            }
            Ok(0)
        }
        OrdersCmd::Show { id, json } => {
            let v = fetch_order(&src, id.parse()?).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("order     {}", v["id"].as_str().unwrap_or(""));
                println!("state     {}", v["state"].as_str().unwrap_or(""));
                println!(
                    "source    {}/{} v{}",
                    v["source"]["connector"].as_str().unwrap_or(""),
                    v["source"]["external_id"].as_str().unwrap_or(""),
                    v["source"]["version"]
                );
                println!("customer  {}", v["order"]["customer"]["name"].as_str().unwrap_or(""));
                println!(
                    "amount    {} {}",
                    v["order"]["amount"]["amount"].as_str().unwrap_or(""),
                    v["order"]["amount"]["currency"].as_str().unwrap_or("")
                );
                println!("events:");
                for e in v["events"].as_array().into_iter().flatten() {
                    println!(
                        "  {:>3}  {}  {:<22} -> {:<18} by {}",
                        e["seq"],
                        e["at"].as_str().unwrap_or(""),
                        e["event"]["type"].as_str().unwrap_or(""),
                        e["state"]["name"].as_str().unwrap_or(""),
                        actor_text(&e["actor"]),
                    );
                }
            }
            Ok(0)
        }
    }
}

fn mapping_test(dir: &Path, mapping: &str, input: &Path) -> anyhow::Result<i32> {
    let path = if mapping.ends_with(".toml") {
        PathBuf::from(mapping)
    } else {
        dir.join("mappings").join(format!("{mapping}.toml"))
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let bytes = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let payload: Value = serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", input.display()))?;
    if toml::from_str::<toml::Table>(&text)
        .is_ok_and(|t| t.get("direction").and_then(|d| d.as_str()) == Some("outbound"))
    {
        return outbound_test(&path, &text, &name, &payload);
    }
    let file: crate::mapping::MappingFile = match toml::from_str(&text) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{}", crate::diagnostics::Diagnostic::from_toml(&path, &text, &e));
            return Ok(crate::check::EX_CONFIG);
        }
    };
    let m = match file.validate(&name) {
        Ok(m) => m,
        Err(ps) => {
            for p in ps {
                eprintln!("{}", crate::diagnostics::Diagnostic::at(&path, &text, Some(p.span), p.message));
            }
            return Ok(crate::check::EX_CONFIG);
        }
    };
    match m.apply_exact(&payload, &std::sync::Arc::new(crate::mapping::NumberTexts::scan(&bytes)).root()) {
        Ok(Ok(mapped)) => {
            let out = serde_json::json!({
                "external_id": mapped.external_id.as_str(),
                "version": mapped.version,
                "mapping_version": m.version,
                "order": mapped.order,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(0)
        }
        Ok(Err(skipped)) => {
            println!("skipped: {}", skipped.reason);
            Ok(0)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(1)
        }
    }
}

/// Renders an outbound mapping for an effect (the JSON the dispatcher would hand the
/// connector: `order_id`, `order`, `references`, `state`, …) and prints the body.
fn outbound_test(path: &Path, text: &str, name: &str, effect: &Value) -> anyhow::Result<i32> {
    let file: crate::mapping::outbound::OutboundFile = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{}", crate::diagnostics::Diagnostic::from_toml(path, text, &e));
            return Ok(crate::check::EX_CONFIG);
        }
    };
    let m = match file.validate(name) {
        Ok(m) => m,
        Err(ps) => {
            for p in ps {
                eprintln!("{}", crate::diagnostics::Diagnostic::at(path, text, Some(p.span), p.message));
            }
            return Ok(crate::check::EX_CONFIG);
        }
    };
    let mut ctx = effect.clone();
    if let Value::Object(o) = &mut ctx {
        o.entry("connector").or_insert_with(|| Value::String(m.connector.clone()));
        o.entry("idempotency_key").or_insert_with(|| Value::String("orderbridge:example".into()));
        o.entry("references").or_insert_with(|| serde_json::json!({}));
    }
    match m.render(&ctx) {
        Ok(body) => {
            // Exactly the bytes the connector would send.
            println!("Content-Type: {}\n\n{}", body.content_type, body.text());
            Ok(0)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(1)
        }
    }
}

async fn rules_diff(dir: &Path, last: Option<usize>, candidate: Option<PathBuf>, json: bool) -> anyhow::Result<i32> {
    let path = candidate.unwrap_or_else(|| crate::config::rules_path(dir));
    let rules = match crate::config::load_rules_file(&path, dir) {
        Ok(r) => r,
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            return Ok(crate::check::EX_CONFIG);
        }
    };
    let src = Source::open(dir).await?;
    // Every order id, in arrival order (pages of 1000).
    let mut ids: Vec<OrderId> = Vec::new();
    let mut after: Option<OrderId> = None;
    loop {
        let page: Vec<OrderId> = match &src {
            Source::Store(s) => s.store().list(None, after, 1000).await?.into_iter().map(|r| r.id).collect(),
            Source::Api { .. } => {
                let q = after.map(|a| format!("&after={a}")).unwrap_or_default();
                let v = src.api(reqwest::Method::GET, &format!("/orders?limit=1000{q}")).await?;
                v["orders"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|o| o["id"].as_str().and_then(|i| i.parse().ok()))
                    .collect()
            }
        };
        let Some(l) = page.last().copied() else { break };
        after = Some(l);
        ids.extend(page);
    }
    if let Some(n) = last {
        ids = ids.split_off(ids.len().saturating_sub(n));
    }
    let mut report = crate::rules_diff::Report::new(&rules);
    for id in ids {
        let order = fetch_order(&src, id).await?;
        let events: Vec<crate::store::EventRecord> = serde_json::from_value(order["events"].clone())?;
        report.add(&rules, &order, &events);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for l in report.lines() {
            println!("{l}");
        }
    }
    Ok(i32::from(!report.changes.is_empty()))
}

/// An order with its events, as `GET /api/orders/{id}` shows it.
async fn fetch_order(src: &Source, oid: OrderId) -> anyhow::Result<Value> {
    Ok(match src {
        Source::Store(s) => {
            let rec = s.store().order(oid).await?.ok_or_else(|| anyhow::anyhow!("order {oid} not found"))?;
            let mut v = crate::http::api::order_json(&rec);
            v["events"] = serde_json::to_value(s.store().events(oid).await?)?;
            v
        }
        Source::Api { .. } => src.api(reqwest::Method::GET, &format!("/orders/{oid}")).await?,
    })
}

fn actor_text(a: &Value) -> String {
    match (a["kind"].as_str(), a["id"].as_str()) {
        (Some(k), Some(id)) => format!("{k}:{id}"),
        (Some(k), None) => k.to_owned(),
        _ => String::new(),
    }
}

async fn report(dir: &Path, from: &str, to: Option<&str>, format: Format) -> anyhow::Result<i32> {
    let src = Source::open(dir).await?;
    let body = match &src {
        Source::Store(s) => {
            let settings = Settings::load_with(dir, false).map_err(|ds| anyhow::anyhow!("{}", ds[0]))?;
            let rules = crate::config::load_rules(dir).map_err(|ds| anyhow::anyhow!("{}", ds[0]))?;
            let tz = settings.presentation.time_zone;
            let (from, to) =
                crate::analytics::report::period(from, to, tz, chrono::Utc::now()).map_err(anyhow::Error::msg)?;
            crate::analytics::render::write(&s.kpi_report(from, to, &rules.sla.calendar).await?, format)
        }
        Source::Api { .. } => {
            let mut params = vec![("from", from.to_owned()), ("format", format!("{format:?}").to_lowercase())];
            params.extend(to.map(|t| ("to", t.to_owned())));
            src.api_text("/reports/kpis", &params).await?
        }
    };
    print!("{body}");
    Ok(0)
}

async fn export(
    dir: &Path,
    since: Option<String>,
    until: Option<&str>,
    format: crate::export::write::Format,
    out: &Path,
) -> anyhow::Result<i32> {
    std::fs::create_dir_all(out).with_context(|| format!("making {}", out.display()))?;
    let settings = Settings::load_with(dir, false).map_err(|ds| anyhow::anyhow!("{}", ds[0]))?;
    let tz = settings.presentation.time_zone;
    let since = match since {
        Some(s) => Some(s),
        None => crate::export::last_until(out)?.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    };
    let src = Source::open(dir).await?;
    let ((orders, events), since_at, until_at) = match &src {
        Source::Store(s) => {
            let (since_at, until_at) =
                crate::analytics::report::window(since.as_deref(), until, tz, chrono::Utc::now())
                    .map_err(anyhow::Error::msg)?;
            let rules = crate::config::load_rules(dir).map_err(|ds| anyhow::anyhow!("{}", ds[0]))?;
            (s.export_rows(since_at, until_at, &rules.sla.calendar).await?, since_at, until_at)
        }
        Source::Api { .. } => {
            // The daemon's clock ends the window when --until does not.
            let mut params: Vec<(&str, String)> = since.iter().map(|s| ("since", s.clone())).collect();
            params.extend(until.map(|u| ("until", u.to_owned())));
            let (text, headers) = src.api_text_with_headers("/export", &params).await?;
            let until_at = headers
                .get(crate::http::reports::UNTIL)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .context("the daemon's export names no window end")?;
            let (since_at, _) =
                crate::analytics::report::window(since.as_deref(), None, tz, until_at).map_err(anyhow::Error::msg)?;
            (rows_from_lines(&text)?, since_at, until_at)
        }
    };
    let done = crate::export::write_all(out, &orders, &events, format, since_at, until_at)?;
    let since_text = done.since.map_or_else(|| "the beginning".to_owned(), |s| s.to_rfc3339());
    println!(
        "exported {} orders and {} events changed from {since_text} to {} into {} files under {}",
        done.orders,
        done.events,
        done.until.to_rfc3339(),
        done.files.len(),
        out.display()
    );
    Ok(0)
}

/// The rows of the daemon's export (JSON lines, `{"table": …, "row": …}`).
fn rows_from_lines(
    text: &str,
) -> anyhow::Result<(Vec<crate::export::rows::OrderRow>, Vec<crate::export::rows::EventRow>)> {
    let (mut orders, mut events) = (Vec::new(), Vec::new());
    for line in text.lines().filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_str(line).context("reading the daemon's export")?;
        match v["table"].as_str() {
            Some("orders") => orders.push(serde_json::from_value(v["row"].clone())?),
            Some("events") => events.push(serde_json::from_value(v["row"].clone())?),
            other => bail!("the daemon's export has a row of table {other:?}"),
        }
    }
    Ok((orders, events))
}

async fn audit_verify(dir: &Path) -> anyhow::Result<i32> {
    let src = Source::open(dir).await?;
    let v = match &src {
        Source::Store(s) => {
            let r = s.verify_audit().await?;
            serde_json::json!({
                "orders": r.orders, "events": r.events, "intact": r.broken.is_none(),
                "broken": r.broken.map(|(o, seq, why)| serde_json::json!({"order_id": o.to_string(), "seq": seq, "problem": why})),
            })
        }
        Source::Api { .. } => src.api(reqwest::Method::GET, "/audit/verify").await?,
    };
    if v["intact"].as_bool() == Some(true) {
        println!("audit intact: {} orders, {} events verified", v["orders"], v["events"]);
        Ok(0)
    } else {
        let b = &v["broken"];
        println!(
            "audit BROKEN at order {} event {}: {}",
            b["order_id"].as_str().unwrap_or("?"),
            b["seq"],
            b["problem"].as_str().unwrap_or("?")
        );
        Ok(1)
    }
}

async fn outbox(dir: &Path, cmd: OutboxCmd) -> anyhow::Result<i32> {
    let src = Source::open(dir).await?;
    let print = |rows: Vec<Value>, json: bool| -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
            return Ok(());
        }
        println!("{:<50} {:<28} {:>8}  {:<25} LAST ERROR", "EFFECT", "CONNECTOR.OPERATION", "ATTEMPTS", "NEXT AT");
        for r in &rows {
            println!(
                "{:<50} {:<28} {:>8}  {:<25} {}",
                r["id"].as_str().unwrap_or(""),
                format!("{}.{}", r["connector"].as_str().unwrap_or(""), r["operation"].as_str().unwrap_or("")),
                r["attempts"],
                r["next_at"].as_str().unwrap_or(""),
                r["last_error"].as_str().unwrap_or(""),
            );
        }
        println!("{} effect(s)", rows.len());
        Ok(())
    };
    match cmd {
        OutboxCmd::List { json } | OutboxCmd::Dead { json } => {
            let dead = matches!(cmd, OutboxCmd::Dead { .. });
            let rows: Vec<Value> = match &src {
                Source::Store(s) => {
                    let rows = if dead {
                        s.store().dead_letters(10_000).await?
                    } else {
                        s.store().pending_effects(10_000).await?
                    };
                    rows.iter().map(serde_json::to_value).collect::<Result<_, _>>()?
                }
                Source::Api { .. } => {
                    let v = src
                        .api(
                            reqwest::Method::GET,
                            if dead { "/outbox/dead?limit=10000" } else { "/outbox?limit=10000" },
                        )
                        .await?;
                    v["effects"].as_array().cloned().unwrap_or_default()
                }
            };
            print(rows, json)?;
            Ok(0)
        }
        OutboxCmd::Replay { id } => {
            let eid: EffectId = id.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            match &src {
                Source::Store(s) => {
                    s.replay(&eid, Actor::Person(whoami()), chrono::Utc::now()).await?;
                }
                Source::Api { .. } => {
                    src.api(reqwest::Method::POST, &format!("/outbox/dead/{eid}/replay")).await?;
                }
            }
            println!("replayed {eid}: queued for delivery");
            Ok(0)
        }
    }
}

async fn migrate(dir: &Path) -> anyhow::Result<i32> {
    let settings = Settings::load_with(dir, true)
        .map_err(|ds| anyhow::anyhow!(ds.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))?;
    match &settings.store.postgres {
        Some(pg) => {
            let (now, all) = crate::store::postgres::migrate(pg).await.context("migrating PostgreSQL")?;
            let list = |v: &[i64]| v.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            if now.is_empty() {
                println!("the PostgreSQL schema is up to date (migrations {})", list(&all));
            } else {
                println!("applied migrations {} (the database now has {})", list(&now), list(&all));
            }
        }
        None => {
            // Opening an embedded store upgrades its layout in place.
            let options = crate::store::Options { commit_delay: std::time::Duration::ZERO, ..settings.store.clone() };
            match crate::store::open(&options, Arc::new(Metrics::default())).await {
                Err(StoreError::Locked(_)) => {
                    bail!("the store is in use (is the daemon running?); it upgrades its layout when it opens")
                }
                other => other.context("opening the store")?,
            };
            println!("the {} store at {} has the current layout", options.backend.name(), options.path.display());
        }
    }
    Ok(0)
}

async fn store_copy(
    dir: &Path,
    to_backend: Option<String>,
    to_path: Option<PathBuf>,
    to_url: Option<String>,
) -> anyhow::Result<i32> {
    use crate::store::{Backend, postgres::PgOptions};
    let settings = Settings::load_with(dir, false)
        .map_err(|ds| anyhow::anyhow!(ds.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))?;
    let from = settings.store.clone();
    if !crate::store::exists(&from) {
        bail!("no store at {} (is --config-dir right? store.path is relative to it)", from.path.display());
    }
    let backend = match to_backend {
        Some(b) => b.parse().map_err(|e: String| anyhow::anyhow!(e))?,
        None => from.backend,
    };
    let to = if backend == Backend::Postgres {
        let Some(url) = to_url else {
            bail!("--to-backend postgres needs --to-url '${{ENV_NAME}}' (or file:PATH) naming the target database")
        };
        let url = crate::settings::SecretRef::parse(&url)
            .and_then(|r| r.resolve(dir))
            .map_err(|e| anyhow::anyhow!("--to-url: {e}"))?;
        if from.postgres.as_ref().is_some_and(|p| p.url.expose_secret() == url.expose_secret()) {
            bail!("the target must be another database than the store itself");
        }
        let base = from.postgres.clone().unwrap_or(PgOptions {
            url: url.clone(),
            max_connections: 4,
            acquire_timeout: std::time::Duration::from_secs(5),
            statement_timeout: std::time::Duration::from_secs(30),
            lease: std::time::Duration::from_secs(60),
        });
        crate::store::Options { backend, postgres: Some(PgOptions { url, ..base }), ..from.clone() }
    } else {
        let Some(path) = to_path else { bail!("--to-backend {} needs --to-path DIR", backend.name()) };
        if path == from.path {
            bail!("the target must be another directory than the store itself");
        }
        crate::store::Options { backend, path, postgres: None, ..from.clone() }
    };
    let metrics = Arc::new(Metrics::default());
    let name = |o: &crate::store::Options| {
        if o.backend.is_embedded() { o.path.display().to_string() } else { "the database".to_owned() }
    };
    let (from_name, to_name) = (name(&from), name(&to));
    let copied = if from.backend.is_embedded() && to.backend.is_embedded() {
        match crate::store::copy(&from, &to, metrics.clone()).await {
            Err(StoreError::Locked(_)) => bail!("a store is in use (is the daemon running?); stop it before copying"),
            other => other.context("copying the store")?,
        }
        .to_string()
    } else {
        match crate::store::dump::copy(&from, &to, metrics.clone()).await {
            Err(e @ StoreError::Locked(_)) => bail!("{e}; stop it before copying"),
            other => other.context("copying the store")?,
        }
        .to_string()
    };
    println!("copied {copied} from {from_name} ({}) to {to_name} ({})", from.backend.name(), to.backend.name());
    // The copy's own handle on the target is closed; sled lets its file lock go a
    // moment later, so a lock still held by this process is waited for, briefly.
    let mut attempts = 0;
    let target = loop {
        match crate::store::open(&to, metrics.clone()).await {
            Err(StoreError::Locked(_)) if attempts < 100 => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => break other?,
        }
    };
    let orders = Orders::new(target);
    let r = orders.verify_audit().await?;
    match r.broken {
        None => {
            println!("audit intact on the copy: {} orders, {} events verified", r.orders, r.events);
            Ok(0)
        }
        Some((o, seq, why)) => {
            println!("audit BROKEN on the copy at order {o} event {seq}: {why}");
            Ok(1)
        }
    }
}

async fn quarantine(dir: &Path, json: bool) -> anyhow::Result<i32> {
    let src = Source::open(dir).await?;
    let rows: Vec<Value> = match &src {
        Source::Store(s) => {
            s.store().quarantined().await?.iter().map(serde_json::to_value).collect::<Result<_, _>>()?
        }
        Source::Api { .. } => {
            src.api(reqwest::Method::GET, "/store/quarantine").await?["rows"].as_array().cloned().unwrap_or_default()
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for r in &rows {
            println!(
                "{}  {}: {}",
                r["at"].as_str().unwrap_or(""),
                r["what"].as_str().unwrap_or(""),
                r["error"].as_str().unwrap_or("")
            );
        }
        println!("{} quarantined row(s)", rows.len());
    }
    Ok(0)
}

fn whoami() -> String {
    format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}
