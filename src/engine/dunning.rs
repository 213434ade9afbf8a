//! One dunning step as loaded from `[[dunning]]` in `config/rules.toml`: which
//! overdue customers are reminded, when, by which template and to whom.

/// A reminder step, by days overdue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DunningStep {
    pub id: String,
    pub days_overdue: u32,
    pub ratings: Vec<String>,
    pub to: Vec<String>,
    pub template: String,
}
