//! The engine: lifecycle states and events, rules, and the pure `decide` function.
//! Never imports `store`, `http`, `connectors` or `workers` (invariant 6).

pub mod approval;
pub mod calendar;
pub mod decide;
pub mod directory;
pub mod dunning;
pub mod effects;
pub mod fulfilment;
pub mod intake;
pub mod level;
pub mod lifecycle;
pub mod notify;
pub mod payments;
pub mod reporting;
pub mod rules;
pub mod screening;
pub mod sla;
pub mod table;

pub use decide::{AuditEntry, Case, DecideError, Decision, EffectSpec, decide, decide_new};
pub use intake::{IntakeError, IntakeRules};
pub use lifecycle::{Actor, IllegalTransition, OrderEvent, OrderState};
pub use rules::Rules;
pub use table::History;
