//! Background workers: the outbox dispatcher, the digest job (later: pollers, the scheduler).
//! Each exposes one step for tests and a `run(stop)` loop for the daemon.

pub mod digest;
pub mod dispatcher;
pub mod poller;
