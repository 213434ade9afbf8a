//! The engine: lifecycle states and events, rules, and the pure `decide` function.
//! Never imports `store`, `http`, `connectors` or `workers` (invariant 6), and reads
//! no files: loaders outside hand it text or parsed values.
//!
//! Imports only go down these layers, so the files form no circle:
//! 1. data shared by everything above: `screening` (rule hits, verdicts), `level`
//!    (approval levels), `sla`, `dunning`, `calendar`, `table` (decision-table inputs),
//!    `fulfilment`, `policy` (the policy table's actions and grants), `directory`
//!    (the people, as data);
//! 2. `lifecycle`: states, events and the transitions between them; `access`
//!    (principals, channels, `authorize`);
//! 3. `approval` (progress along a chain) and `effects` (effect and mail specs, bodies);
//! 4. `notify` (who hears about what), then `rules` (the loaded rule set);
//! 5. `intake`, `decide` on top, and `payments`, `reporting`, `compare` (two rule
//!    sets' decisions side by side) that use its results.

pub(crate) mod access;
pub(crate) mod answers;
pub(crate) mod approval;
pub(crate) mod calendar;
pub(crate) mod compare;
pub(crate) mod decide;
pub(crate) mod directory;
pub(crate) mod dunning;
pub(crate) mod effects;
pub(crate) mod fulfilment;
pub(crate) mod intake;
pub(crate) mod level;
pub(crate) mod lifecycle;
pub(crate) mod notify;
pub mod payments;
pub(crate) mod policy;
pub(crate) mod receivables;
pub(crate) mod reporting;
pub mod rules;
pub(crate) mod screening;
pub(crate) mod sla;
pub mod table;

pub use decide::decide_new;
pub(crate) use decide::{AuditEntry, Case, DecideError, Decision, decide};
pub(crate) use intake::IntakeRules;
pub(crate) use lifecycle::IllegalTransition;
pub use lifecycle::{Actor, OrderEvent, OrderState, STATE_NAMES};
pub use rules::Rules;
pub(crate) use table::History;
