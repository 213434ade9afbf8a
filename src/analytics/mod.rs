//! Lifecycle step 8: what the audit trail says about the process. Pure: the
//! application layer (`orders::analytics`) reads the orders and their trails and
//! hands them here.
//!
//! - `journey`: one order's trail → its stays, approval waits, tasks and milestones.
//! - `kpi`: the indicators of a set of journeys (processing and approval time,
//!   rework, exceptions, invoice-to-cash, satisfaction…), overall and by group.
//! - `process`: the process map, the bottlenecks, the approvers waited for, the variants.
//! - `report`: a period's KPIs and process beside the period before it.
//! - `render`: a report as text, CSV or HTML (JSON is the report itself).
//! - `stats`: medians, percentiles and ratios.

pub mod journey;
pub mod kpi;
pub mod process;
pub mod render;
pub mod report;
pub mod stats;

#[cfg(test)]
mod tests;

pub use journey::{Entry, Journey, Subject};
pub use report::Report;
