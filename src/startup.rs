//! Wiring only: open the store, bind the listeners (public and admin), build the
//! state, start the workers, serve until the shutdown future resolves, then drain, flush
//! and close the store.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::clock::Clock;
use crate::config::Loaded;
use crate::engine::notify::MAIL_CONNECTOR;
use crate::http::server::{Timeouts, serve};
use crate::http::{AppState, admin_router, router};
use crate::links::LinkSigner;
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::orders::Orders;
use crate::workers::digest::DigestJob;
use crate::workers::dispatcher::Dispatcher;
use crate::workers::poller::Poller;

/// Resolves once the store can no longer make writes durable.
async fn store_failed(store: Arc<dyn crate::store::Store>) {
    while store.failure().is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for every task to record what it was doing, up to `GRACE`; then stops the
/// rest where they are (as a process exit would) and waits until they are gone.
async fn drain(mut tasks: Vec<JoinHandle<()>>) {
    let all = async {
        while let Some(t) = tasks.last_mut() {
            let _ = t.await;
            tasks.pop();
        }
    };
    if tokio::time::timeout(GRACE, all).await.is_err() {
        tracing::warn!("effects still in flight after {GRACE:?}; they stay in the outbox and run after restart");
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// The live rules following the change log (activations from the CLI, scheduled ones).
fn rules_watch(state: &AppState) -> crate::workers::rules::RulesWatch {
    crate::workers::rules::RulesWatch {
        live: state.rules.clone(),
        shadow: state.orders.shadow().cloned(),
        data: state.settings.store_path.clone(),
        clock: state.clock.clone(),
        interval: state.settings.scheduler_sweep_interval,
    }
}

/// The application over `store`, with the shadow run the change log names (if any).
fn orders(
    store: &Arc<dyn crate::store::Store>,
    metrics: &Arc<Metrics>,
    settings: &crate::settings::Settings,
    rules: &crate::review::LiveRules,
) -> Arc<Orders> {
    let shadow = crate::review::Shadow::new(rules.clone(), settings.store_path.clone(), Some(metrics.clone()));
    if let Err(e) = shadow.sync() {
        tracing::error!(error = %e, "the shadow rules the change log names cannot run; no shadow runs");
    }
    Arc::new(
        Orders::new(store.clone())
            .with_metrics(metrics.clone())
            .with_audit_keys(settings.audit_keys.clone())
            .with_privacy_keys(settings.privacy_keys.clone())
            .with_shadow(shadow),
    )
}

/// How long shutdown waits for effects in flight before giving up on them (they stay
/// in the outbox and run again after restart, with the same idempotency key).
const GRACE: Duration = Duration::from_secs(10);

pub struct Application {
    /// Webhooks, pages, health.
    listener: TcpListener,
    /// `/api/*` and `/metrics` (`[server.admin]`).
    admin_listener: TcpListener,
    state: AppState,
    dispatcher: Arc<Dispatcher>,
    digests: DigestJob,
    pollers: Vec<Poller>,
}

impl Application {
    pub async fn build(loaded: Loaded) -> anyhow::Result<Application> {
        Application::build_with_clock(loaded, Clock::system()).await
    }

    /// Opens the store and binds first, so `address()` is real even for port 0.
    pub async fn build_with_clock(loaded: Loaded, clock: Clock) -> anyhow::Result<Application> {
        let Loaded { settings, mut registry, rules, templates, reports, versions, .. } = loaded;
        // Reviewed rules only (unless review is off): refused before anything is opened.
        let rules =
            crate::review::start(&settings.store_path, rules, versions, settings.require_review, clock.now())
                .with_context(|| format!("the rules, with the change log under {}", settings.store_path.display()))?;
        let metrics = Arc::new(Metrics::default());
        let store = crate::store::open(&settings.store, metrics.clone())
            .await
            .with_context(|| format!("opening the store at {}", settings.store_path.display()))?;
        let orders = orders(&store, &metrics, &settings, &rules);
        let (listener, admin_listener) = bind(&settings).await?;
        let public_url = public_url(&settings, &listener);
        let links = settings.links.as_ref().map(|l| Arc::new(LinkSigner::new(l.keys.clone(), &public_url, l.ttl)));
        let page_templates = templates.clone();
        let oidc =
            crate::auth::oidc::Oidc::configured(settings.oidc.as_ref(), &public_url).map_err(anyhow::Error::msg)?;
        let console_mailer = mail_connector(&settings, templates, links.clone(), &public_url, &mut registry)?;
        let registry = Arc::new(registry);
        let wake = Arc::new(Notify::new());
        let dispatcher = Dispatcher::new(
            orders.clone(),
            rules.clone(),
            registry.clone(),
            metrics.clone(),
            settings.dispatcher.clone(),
            clock.clone(),
            wake.clone(),
        );
        let digests = DigestJob {
            orders: orders.clone(),
            clock: clock.clone(),
            interval: settings.scheduler_sweep_interval,
            rules: rules.clone(),
            dispatcher: wake.clone(),
            reports: Arc::new(reports),
            default_locale: settings.presentation.default_locale,
            started: clock.now(),
        };
        let pollers = registry
            .connectors
            .values()
            .filter_map(|c| c.poll.clone())
            .map(|poll| Poller {
                poll,
                orders: orders.clone(),
                rules: rules.clone(),
                intake: settings.intake.clone(),
                metrics: metrics.clone(),
                clock: clock.clone(),
                dispatcher: wake.clone(),
                time_zone: settings.presentation.time_zone,
            })
            .collect();
        let archive = Arc::new(
            crate::archive::Archive::new(orders.clone(), settings.archive.clone()).with_metrics(metrics.clone()),
        );
        let state = AppState::new(crate::http::App {
            archive,
            templates: page_templates,
            paused: dispatcher.paused.clone(),
            links,
            orders,
            store,
            registry,
            rules,
            sessions: Arc::new(crate::auth::sessions::Sessions::new(settings.console)),
            settings: Arc::new(settings),
            metrics,
            clock,
            ready: Arc::new(AtomicBool::new(false)),
            dispatcher_wake: wake,
            mailer: console_mailer,
            oidc,
            public_url: public_url.into(),
            reports: digests.reports.clone(),
        });
        Ok(Application { listener, admin_listener, state, dispatcher, digests, pollers })
    }

    pub fn address(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Where `/api/*` and `/metrics` are served.
    pub fn admin_address(&self) -> SocketAddr {
        self.admin_listener.local_addr().expect("bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves; then stops accepting, finishes requests,
    /// lets the dispatcher record what is in flight, and flushes and closes the
    /// store: when this returns, nothing of the daemon holds the store any more but
    /// the caller's own `AppState` clones (an embedded store's lock goes with the
    /// last of them).
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Application { listener, admin_listener, state, dispatcher, digests, pollers } = self;
        let stop = CancellationToken::new();
        // A worker that ends before shutdown was asked for is a failure: stop serving
        // (readiness goes false first) and exit non-zero, rather than accept orders
        // whose effects nobody performs.
        let worker_died = CancellationToken::new();
        let reconciler = crate::workers::reconcile::Reconciler {
            orders: state.orders.clone(),
            registry: state.registry.clone(),
            rules: state.rules.clone(),
            metrics: state.metrics.clone(),
            clock: state.clock.clone(),
            time_zone: state.settings.presentation.time_zone,
        };
        // Started before any task: failing here leaves nothing running.
        let background = Background::start(state.settings.dispatcher.background_nice)
            .context("starting the dispatcher's and scheduler's threads")?;
        // Every task started here is awaited at shutdown (`drain`): once this returns,
        // none of them holds the store any more.
        let mut tasks =
            vec![tokio::spawn(reconciler.run(stop.clone())), tokio::spawn(rules_watch(&state).run(stop.clone()))];
        // Pollers stop with the daemon; one that fails only logs (it retries each run).
        tasks.extend(pollers.into_iter().map(|p| tokio::spawn(p.run(stop.clone()))));
        tasks.extend(sweeps(&state, &stop));
        tasks.push({
            let (stop, died) = (stop.clone(), worker_died.clone());
            let store = state.store.clone();
            let background = background.handle();
            tokio::spawn(async move {
                // Aborted with this task if shutdown gives up waiting for it.
                let mut dispatch = AbortOnDropHandle::new(background.spawn(dispatcher.run(stop.clone())));
                let mut digest = AbortOnDropHandle::new(background.spawn(digests.run(stop.clone())));
                let (name, result, first_is_dispatch) = tokio::select! {
                    r = &mut dispatch => ("dispatcher", r, true),
                    r = &mut digest => ("scheduler", r, false),
                    // A failed sync is fatal: stop accepting and exit non-zero.
                    () = store_failed(store.clone()) => ("store", Ok(()), false),
                };
                if !stop.is_cancelled() {
                    match &result {
                        Err(e) => tracing::error!(error = %e, "the {name} failed; stopping"),
                        Ok(()) => tracing::error!("the {name} stopped unexpectedly; stopping"),
                    }
                    died.cancel();
                }
                // Shutdown: let the other one record what it was doing too.
                let _ = if first_is_dispatch { digest.await } else { dispatch.await };
            })
        });
        state.ready.store(true, Ordering::SeqCst);
        let (public, admin) = (listener.local_addr()?, admin_listener.local_addr()?);
        tracing::info!(
            address = %public,
            admin_address = %admin,
            "orderbridge listening on http://{public} (admin API and metrics on http://{admin})"
        );
        if state.settings.secret_policy.example.is_some() {
            tracing::info!("{}", example_welcome(&state, admin));
        }

        // Readiness goes false first, then both listeners stop accepting and finish
        // the requests in flight.
        let http_stop = CancellationToken::new();
        {
            let (ready, died, http_stop) = (state.ready.clone(), worker_died.clone(), http_stop.clone());
            tokio::spawn(async move {
                tokio::select! {
                    () = shutdown => {}
                    () = died.cancelled() => {}
                }
                ready.store(false, Ordering::SeqCst);
                http_stop.cancel();
            });
        }
        let timeouts = Timeouts { header_read: state.settings.header_read_timeout, idle: state.settings.idle_timeout };
        tokio::join!(
            serve(listener, router(state.clone()), timeouts, http_stop.clone()),
            serve(admin_listener, admin_router(state.clone()), timeouts, http_stop),
        );

        stop.cancel();
        drain(tasks).await;
        drop(background);
        // Last, once nothing writes any more: flushes and stops the store's own tasks,
        // so the store is released when `state` (its last holder here) goes.
        state.store.close().await.context("final flush")?;
        if worker_died.is_cancelled() {
            anyhow::bail!("a background worker died; see the log above");
        }
        tracing::info!("stopped cleanly");
        Ok(())
    }
}

/// What the example configuration prints at start: where the console and the API
/// are, and how to sign in as one of its demo people.
fn example_welcome(state: &AppState, admin: SocketAddr) -> String {
    let base = &state.public_url;
    let directory = &state.rules.notify.directory;
    let approver = directory.with_role("line_supervisor").next();
    let administrator = directory
        .people()
        .find(|p| directory.policy().actions_of(&p.roles).any(|a| a == crate::engine::access::Action::Administer));
    let smtp = state
        .settings
        .smtp
        .as_ref()
        .map_or_else(|| "(no [smtp] configured)".to_owned(), |s| format!("{}:{}", s.host, s.port));
    format!(
        "example configuration with DEMO secrets (config/demo-secrets.toml): the console is at {base}/console; sign in at {base}/signin as a demo person, e.g. the line supervisor {email} (the administration page: {admin_email}), and open the link mailed to that address (the example sends mail to {smtp}; `python3 -m aiosmtpd -n -l 127.0.0.1:2525` prints it). The admin API is at http://{admin}/api with `Authorization: Bearer <server.admin_token>` (ORDERBRIDGE_ADMIN_TOKEN, else its demo value), or a personal token: `orderbridge tokens create --person {id}`",
        email = approver.map_or("an address in config/directory.toml", |p| p.email.as_str()),
        id = approver.map_or("ID", |p| p.id.as_str()),
        admin_email = administrator.map_or("nobody in config/directory.toml", |p| p.email.as_str()),
    )
}

/// The built-in mail connector (with `[smtp]` and templates), registered; the mailer
/// is also the console's, for sign-in links.
fn mail_connector(
    settings: &crate::settings::Settings,
    templates: Option<Arc<crate::mail::Templates>>,
    links: Option<Arc<LinkSigner>>,
    public_url: &str,
    registry: &mut crate::connectors::Registry,
) -> anyhow::Result<Option<Arc<Mailer>>> {
    let (Some(smtp), Some(templates)) = (&settings.smtp, templates) else { return Ok(None) };
    let mailer =
        Arc::new(Mailer::new(smtp, templates, links, &settings.site_name, public_url).map_err(anyhow::Error::msg)?);
    let names = crate::mail::templates::TEMPLATE_NAMES.iter().map(|s| (*s).to_owned()).collect();
    // Mail has slots of its own, outside dispatcher.concurrency: however slow
    // another system is, mail is never waiting for a shared slot.
    let limits = crate::connectors::limits::Limits { concurrency: smtp.pool_max as usize, rate: None, own_slots: true };
    registry.add_builtin_with_limits(MAIL_CONNECTOR, mailer.clone(), names, limits);
    Ok(Some(mailer))
}

/// The base of the daemon's own links: `site.public_url`, else the public listener's address.
fn public_url(settings: &crate::settings::Settings, listener: &TcpListener) -> String {
    settings
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", listener.local_addr().expect("bound listener has an address")))
}

/// The public listener and the admin one.
async fn bind(settings: &crate::settings::Settings) -> anyhow::Result<(TcpListener, TcpListener)> {
    let listener = TcpListener::bind(settings.listen).await.with_context(|| format!("binding {}", settings.listen))?;
    let admin_listener = TcpListener::bind(settings.admin_listen)
        .await
        .with_context(|| format!("binding the admin listener {}", settings.admin_listen))?;
    Ok((listener, admin_listener))
}

/// The periodic sweeps over the store that are switched on: personal data's (key
/// rotation, erasure), the archive sweep and the audit anchor.
fn sweeps(state: &AppState, stop: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    if state.orders.vault().encrypts() || state.settings.privacy_keys.retain_years.is_some() {
        let job = crate::workers::privacy::PrivacyJob { orders: state.orders.clone(), clock: state.clock.clone() };
        tasks.push(tokio::spawn(job.run(stop.clone())));
    }
    if state.settings.archive.enabled {
        let job = crate::workers::archive::ArchiveJob { archive: state.archive.clone(), clock: state.clock.clone() };
        tasks.push(tokio::spawn(job.run(stop.clone())));
    }
    if let Some(every) = state.settings.audit_anchor_every {
        let job = crate::workers::anchor::AnchorJob {
            archive: state.archive.clone(),
            clock: state.clock.clone(),
            every,
            push: state.settings.audit_anchor_push.clone(),
        };
        tasks.push(tokio::spawn(job.run(stop.clone())));
    }
    tasks
}

/// The threads the dispatcher and the scheduler run on: a runtime of their own, at a
/// lower CPU priority than the listeners' (`dispatcher.background_nice`). Under full
/// load the kernel gives acknowledgements the CPU first and pushes what is left
/// (about a tenth at nice 10, never nothing); on a machine with CPU to spare they take
/// all they need. Effects wait in the durable outbox meanwhile: later, never lost.
struct Background(Option<tokio::runtime::Runtime>);

impl Background {
    fn start(nice: i32) -> std::io::Result<Background> {
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("orderbridge-background")
            .enable_all()
            .on_thread_start(move || lower_priority(nice))
            .build()?;
        Ok(Background(Some(runtime)))
    }

    fn handle(&self) -> tokio::runtime::Handle {
        self.0.as_ref().expect("running until dropped").handle().clone()
    }
}

impl Drop for Background {
    /// Its tasks have ended by then (`drain`); idle connections' tasks are dropped.
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Sets the calling thread's nice value `by` above the process's (its main thread's;
/// at most 19). Linux keeps a nice value per thread, and a thread starts with its
/// creator's, so the base is the process's, not the caller's: a blocking thread
/// started by a background thread is not lowered twice. Elsewhere the threads keep
/// the process's priority.
#[cfg(target_os = "linux")]
fn lower_priority(by: i32) {
    if by == 0 {
        return;
    }
    // SAFETY: getpid, gettid, getpriority and setpriority take integers and touch no
    // memory of ours; errno is read right after the call that set it.
    let failed = unsafe {
        let pid = libc::id_t::try_from(libc::getpid()).unwrap_or(0);
        let tid = libc::id_t::try_from(libc::syscall(libc::SYS_gettid)).unwrap_or(0);
        *libc::__errno_location() = 0;
        let base = libc::getpriority(libc::PRIO_PROCESS, pid);
        let base = if base == -1 && *libc::__errno_location() != 0 { 0 } else { base };
        libc::setpriority(libc::PRIO_PROCESS, tid, (base + by).min(19)) != 0
    };
    if failed {
        tracing::warn!(error = %std::io::Error::last_os_error(), "could not lower the background threads' priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(_by: i32) {}
