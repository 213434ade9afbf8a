//! orderbridge: a sales-order automation daemon for financial-services firms.
//!
//! - `domain`: money, ids, the canonical order (pure data).
//! - `engine`: lifecycle states and events, rules, `decide` (pure).
//! - `analytics`: KPIs, the process map and bottlenecks, from audit trails (pure).
//! - `mapping`: declarative payload → canonical order mapping (pure).
//! - `connectors`: external systems: webhook verification, outbound pushes, their limits.
//! - `orders`: the application layer: per step, lock → load → `decide` → commit.
//! - `anchor`: the periodic sealed audit anchor over every order's chain head, and its check.
//! - `archive`: ended orders moved to immutable segment files, found there, held, purged.
//! - `vault`: personal data encrypted at rest per order, key rotation, erasure by
//!   deleting an order's data key.
//! - `store`: persistence verbs behind the `Store` trait (embedded engines; decides nothing).
//! - `workers`: the outbox dispatcher (fair per-connector scheduling), the scheduler
//!   (reminders, escalations, digests), pollers.
//! - `mail`, `links`, `locale`, `directory`, `notifications`: e-mail (templates, SMTP),
//!   signed links, showing values to people, reading the people we write to and who
//!   hears about what.
//! - `reports`: scheduled management reports (`[[reports]]`): read, checked, addressed.
//! - `http`: the public listener (webhooks, pages, the console, health) and the admin
//!   one (API, metrics), with connection and request limits (axum on hyper).
//! - `auth`: principals' credentials: API tokens (hashed) and console sessions.
//! - `settings`: `orderbridge.toml`, typed, one file per section.
//! - `config`: the one configuration loader `run` and `check` share (parse each file,
//!   cross-check references, build).
//! - `check`, `diagnostics`, `secrets`: printing the loader's problems, locating them,
//!   and what a secret must be (not empty, not published, long enough).
//! - `versions`: rules, mappings, notifications and templates versioned by content,
//!   each version kept under the data directory as loaded.
//! - `review`: reviewed rule changes: propose, approve (a second person), activate at
//!   a time without a restart, roll back; the hash-chained change log; the live rules.
//! - `evidence`: an order's signed evidence pack for auditors, and its offline check.
//! - `explain`: why an order is where it is, from its audit trail.
//! - `export`: the warehouse's tables (orders, events) as Parquet, CSV or JSON lines.
//! - `startup`, `cli`, `telemetry`, `shutdown`, `clock`, `metrics`, `bench`, `allocator`: the process.
//! - `future`: `BoxFuture`, the boxed future of trait objects (connectors, store).
//! - `sample`: the sample order and mail context configuration checks render with.
//! - `panics`: a panic caught at a task boundary (a request, an effect attempt).

pub mod allocator;
pub(crate) mod analytics;
pub(crate) mod anchor;
pub mod archive;
pub mod auth;
pub mod bench;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connectors;
pub(crate) mod diagnostics;
pub(crate) mod directory;
pub mod documents;
pub mod domain;
pub mod engine;
pub mod evidence;
pub mod explain;
pub mod export;
pub(crate) mod future;
pub mod http;
pub mod links;
pub mod locale;
pub mod mail;
pub mod mapping;
pub mod metrics;
pub(crate) mod notifications;
pub mod orders;
pub(crate) mod panics;
pub(crate) mod reports;
pub mod review;
pub(crate) mod rules_diff;
pub(crate) mod sample;
pub(crate) mod schedule;
pub(crate) mod secrets;
pub mod settings;
pub(crate) mod shutdown;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod vault;
pub mod versions;
pub(crate) mod view;
pub mod workers;
