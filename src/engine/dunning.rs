//! One dunning step as loaded from `[[dunning]]` in `config/rules.toml`: which
//! overdue customers are reminded, when, by which template and to whom.

/// A reminder step, by days overdue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DunningStep {
    pub(crate) id: String,
    pub(crate) days_overdue: u32,
    pub(crate) ratings: Vec<String>,
    pub(crate) to: Vec<String>,
    pub(crate) template: String,
}
