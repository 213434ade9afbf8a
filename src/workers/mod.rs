//! Background workers: the outbox dispatcher (and, later, pollers and the scheduler).
//! Each exposes one step for tests and a `run(stop)` loop for the daemon.

pub mod dispatcher;
