//! Screening rules, the approval matrix and effect rules, as loaded from
//! `config/rules.toml`. Rules are decision tables: rows of cells (see `table.rs`)
//! evaluated by our code over the inputs of one decision. Pure: evaluation takes the
//! inputs and returns data, including which rows matched.
//!
//! `file.rs` is the file as written, `validate.rs` checks it section by section.

mod file;
#[cfg(test)]
mod tests;
mod validate;
mod watch_list;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub(crate) use super::dunning::DunningStep;
pub(crate) use super::level::Level;
use super::notify::Notifications;
pub(crate) use super::screening::Screening;
use super::screening::{RuleHit, Severity};
pub(crate) use super::sla::SlaRules;
use super::table::{Inputs, Row};
use crate::domain::ConnectorId;
pub use file::RulesFile;
pub(crate) use watch_list::WatchList;

/// The loaded, validated rule set. `version` is recorded in every decision.
#[derive(Clone, Debug)]
pub struct Rules {
    /// The hand-typed label (`version` in the file), shown beside content versions.
    pub(crate) version: String,
    /// The configuration's version by content (`crate::versions`), set by the loader;
    /// each decision records it.
    pub(crate) config_version: String,
    pub(crate) screening: Vec<ScreeningRule>,
    pub(crate) approval: ApprovalRules,
    pub(crate) effects: Vec<EffectRule>,
    pub(crate) survey: SurveyRules,
    /// Who hears about what (`config/notifications.toml`, with the directory).
    pub(crate) notify: Arc<Notifications>,
    pub(crate) watch_list: Arc<WatchList>,
    /// How far back `history.*` inputs look, in days.
    pub(crate) history_days: u32,
    pub sla: SlaRules,
    /// Execution tasks; when there are any, an approved order starts executing at once.
    pub(crate) tasks: Vec<TaskRule>,
    pub(crate) exceptions: ExceptionRules,
    /// Invoicing on acceptance; without it accepted orders wait for an operator.
    pub(crate) settlement: Option<SettlementRules>,
    /// Reminder steps, by days overdue (ascending).
    pub(crate) dunning: Vec<DunningStep>,
    pub(crate) reconciliation: Option<Reconciliation>,
    /// Each generated document is pushed to this connector operation.
    pub(crate) documents_push: Option<(ConnectorId, String)>,
}

/// After-sales follow-up of the satisfaction survey.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SurveyRules {
    /// A score at or below this (1–5) opens an after-sales ticket; so does a complaint.
    pub(crate) ticket_at_or_below: u8,
}

impl Default for SurveyRules {
    fn default() -> Self {
        SurveyRules { ticket_at_or_below: 2 }
    }
}

/// A screening rule: a row that *fires* when all its cells match.
#[derive(Clone, Debug)]
pub(crate) struct ScreeningRule {
    pub(crate) id: String,
    pub(crate) severity: Severity,
    pub(crate) message: String,
    pub(crate) row: Row,
}

/// The approval matrix: the first matching row picks the route.
#[derive(Clone, Debug, Default)]
pub(crate) struct ApprovalRules {
    /// Automatic approvals are recorded on behalf of this role.
    pub(crate) auto_role: String,
    pub(crate) matrix: Vec<MatrixRow>,
}

#[derive(Clone, Debug)]
pub(crate) struct MatrixRow {
    pub(crate) id: String,
    pub(crate) row: Row,
    /// `None`: approved automatically.
    pub(crate) chain: Option<Vec<Level>>,
}

/// "When an order enters state `on` (or event `on` is recorded), push `operation` to
/// `connector`."
#[derive(Clone, Debug)]
pub(crate) struct EffectRule {
    pub(crate) on: String,
    pub(crate) connector: ConnectorId,
    pub(crate) operation: String,
}

/// The approval route an order takes, with the matrix row that chose it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Route {
    pub(crate) chain: Vec<Level>,
    /// When set, level 1 is approved automatically on behalf of this role.
    pub(crate) auto_on_behalf_of: Option<String>,
    pub(crate) row: String,
    pub(crate) reason: String,
}

/// The rule id recorded when a rule cannot be evaluated or no route exists.
pub(crate) const NO_ROUTE: &str = "NO-ROUTE";

/// The rule id recorded when the customer's history total (`history.amount`) is too
/// large to compute: the order goes to manual review instead of failing intake.
pub(crate) const HISTORY_OVERFLOW: &str = "HISTORY-OVERFLOW";

impl Rules {
    /// The execution tasks of a product (`product.type`), in file order.
    pub(crate) fn tasks_for<'a>(&'a self, product: &'a str) -> impl Iterator<Item = &'a TaskRule> + 'a {
        self.tasks.iter().filter(move |t| t.products.is_empty() || t.products.iter().any(|p| p == product))
    }

    /// The dunning steps for a customer of this credit rating (a step without ratings
    /// is for everyone).
    pub(crate) fn dunning_for<'a>(&'a self, rating: Option<&'a str>) -> impl Iterator<Item = &'a DunningStep> + 'a {
        self.dunning
            .iter()
            .filter(move |s| s.ratings.is_empty() || rating.is_some_and(|r| s.ratings.iter().any(|x| x == r)))
    }

    /// Every rule is evaluated (collect-all); all that fire are recorded. A rule that
    /// cannot be evaluated flags the order rather than letting it pass, and so does a
    /// history total too large to compute (`history.amount` is null only then).
    pub(crate) fn screen(&self, inputs: &Inputs) -> Screening {
        let mut fired = Vec::new();
        if inputs.get("history.amount").is_some_and(|v| *v == super::table::Input::Null) {
            fired.push(RuleHit {
                rule_id: HISTORY_OVERFLOW.into(),
                severity: Severity::Flag,
                message: format!(
                    "客户近期订单合计超出可计算范围，须人工复核 / the customer's recent orders total more than the largest amount that can be computed ({}): review them by hand",
                    rust_decimal::Decimal::MAX
                ),
            });
        }
        for r in &self.screening {
            match r.row.matches(inputs) {
                Ok(false) => {}
                Ok(true) => {
                    fired.push(RuleHit { rule_id: r.id.clone(), severity: r.severity, message: r.message.clone() })
                }
                Err(e) => fired.push(RuleHit {
                    rule_id: r.id.clone(),
                    severity: Severity::Flag,
                    message: format!("rule could not be evaluated: {e}"),
                }),
            }
        }
        if fired.is_empty() {
            Screening::Passed
        } else if fired.iter().any(|h| h.severity == Severity::Reject) {
            Screening::Rejected(fired)
        } else {
            Screening::Flagged(fired)
        }
    }

    /// The first matching matrix row's route.
    ///
    /// # Errors
    /// No row matches (or a row cannot be evaluated): the message names the inputs
    /// the matrix is keyed by, so a person can see why.
    pub(crate) fn route(&self, inputs: &Inputs) -> Result<Route, String> {
        for m in &self.approval.matrix {
            if !m.row.matches(inputs).map_err(|e| format!("approval matrix row {}: {e}", m.id))? {
                continue;
            }
            let cells = m.row.cells.iter().map(|c| format!("{} {}", c.input, c.source)).collect::<Vec<_>>().join(", ");
            let why = if cells.is_empty() { "default row".to_owned() } else { cells };
            return Ok(match &m.chain {
                None => Route {
                    chain: vec![Level::Role(self.approval.auto_role.clone())],
                    auto_on_behalf_of: Some(self.approval.auto_role.clone()),
                    row: m.id.clone(),
                    reason: format!("matrix row {} ({why}): automatic approval", m.id),
                },
                Some(chain) => Route {
                    chain: chain.clone(),
                    auto_on_behalf_of: None,
                    row: m.id.clone(),
                    reason: format!(
                        "matrix row {} ({why}): {}",
                        m.id,
                        chain.iter().map(ToString::to_string).collect::<Vec<_>>().join(" → ")
                    ),
                },
            });
        }
        let show = |k: &str| inputs.get(k).map_or("null".to_owned(), ToString::to_string);
        Err(format!(
            "no approval matrix row matches amount {} {}, product {}, credit rating {}",
            show("amount"),
            show("currency"),
            show("product.type"),
            show("customer.credit_rating")
        ))
    }
}

/// One execution task template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TaskRule {
    pub(crate) id: String,
    pub(crate) name: String,
    /// Empty: every product.
    pub(crate) products: Vec<String>,
    pub(crate) department: String,
    pub(crate) push: Option<(ConnectorId, String)>,
    pub(crate) required: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ExceptionRules {
    pub(crate) owner: String,
    pub(crate) resolve_within: chrono::Duration,
    pub(crate) escalate_to: Option<String>,
}

impl Default for ExceptionRules {
    fn default() -> Self {
        ExceptionRules { owner: "operations".into(), resolve_within: chrono::Duration::hours(48), escalate_to: None }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SettlementRules {
    pub(crate) connector: ConnectorId,
    pub(crate) operation: String,
    pub(crate) tax_rate: rust_decimal::Decimal,
    pub(crate) due_days: u32,
    pub(crate) voucher: Option<(ConnectorId, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReconcileCheck {
    pub(crate) id: String,
    pub(crate) connector: ConnectorId,
    pub(crate) operation: String,
    pub(crate) expect: BTreeMap<String, Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reconciliation {
    pub(crate) schedule: crate::schedule::Schedule,
    pub(crate) checks: Vec<ReconcileCheck>,
}
