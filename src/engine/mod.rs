//! The engine: lifecycle states and events, rules, and the pure `decide` function.
//! Never imports `store`, `http`, `connectors` or `workers` (invariant 6), and reads
//! no files: loaders outside hand it text or parsed values.
//!
//! Imports only go down these layers, so the files form no circle:
//! 1. data shared by everything above: `screening` (rule hits, verdicts), `level`
//!    (approval levels), `sla`, `dunning`, `calendar`, `table` (decision-table inputs),
//!    `fulfilment`, `directory` (the people, as data);
//! 2. `lifecycle`: states, events and the transitions between them;
//! 3. `approval` (progress along a chain) and `effects` (effect and mail specs, bodies);
//! 4. `notify` (who hears about what), then `rules` (the loaded rule set);
//! 5. `intake`, `decide` on top, and `payments`, `reporting` that use its results.

pub mod answers;
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
pub mod receivables;
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
