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
//! - `period`, `brief`, `chart`: a scheduled report's period, what its mail shows,
//!   and its bar charts as PNG.

pub(crate) mod brief;
pub(crate) mod chart;
pub(crate) mod journey;
pub(crate) mod kpi;
pub(crate) mod period;
pub(crate) mod process;
pub(crate) mod render;
pub(crate) mod report;
pub(crate) mod stats;

#[cfg(test)]
mod tests;

pub(crate) use journey::{Entry, Journey, Subject};
pub(crate) use report::Report;
