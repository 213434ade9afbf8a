//! Background workers: the outbox dispatcher, the scheduler (`digest.rs`: approval
//! reminders and escalations, digests) and the pollers.
//! `archive.rs`: the archive sweep; `anchor.rs`: the periodic audit anchor. `rules.rs`:
//! the live rules following the rules change log. `privacy.rs`: rewrapping data keys
//! and erasing personal data after its retention.
//! Each exposes one step for tests and a `run(stop)` loop for the daemon.

pub(crate) mod anchor;
pub(crate) mod archive;
pub(crate) mod digest;
pub mod dispatcher;
pub mod poller;
pub(crate) mod privacy;
pub(crate) mod reconcile;
pub(crate) mod rules;
