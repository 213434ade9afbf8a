//! `config/rules.toml` as written: the serde structs of each section with their
//! defaults. `validate.rs` turns them into `Rules`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Level;
use crate::engine::screening::Severity;

/// `config/rules.toml` as written; `validate` turns this into `Rules`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    /// Recorded in every decision; change it with every edit.
    pub(crate) version: toml::Spanned<String>,
    #[serde(default)]
    pub(crate) reference: ReferenceFile,
    #[serde(default)]
    pub(crate) screening: Vec<toml::Spanned<ScreeningRuleFile>>,
    pub(crate) approval: ApprovalFile,
    #[serde(default)]
    pub(crate) effects: Vec<toml::Spanned<EffectRuleFile>>,
    #[serde(default)]
    pub(crate) survey: Option<toml::Spanned<SurveyFile>>,
    #[serde(default)]
    pub(crate) sla: Option<toml::Spanned<SlaFile>>,
    /// Execution tasks by product (seed step 4).
    #[serde(default)]
    pub(crate) tasks: Vec<toml::Spanned<TaskFile>>,
    #[serde(default)]
    pub(crate) exceptions: Option<toml::Spanned<ExceptionsFile>>,
    /// Invoicing on acceptance (seed step 6).
    #[serde(default)]
    pub(crate) settlement: Option<toml::Spanned<SettlementFile>>,
    /// Payment reminders by days overdue and credit rating.
    #[serde(default)]
    pub(crate) dunning: Vec<toml::Spanned<DunningFile>>,
    /// Scheduled comparison of our states with the other systems'.
    #[serde(default)]
    pub(crate) reconciliation: Option<toml::Spanned<ReconciliationFile>>,
    /// Where generated documents are delivered (a document store, the ERP).
    #[serde(default)]
    pub(crate) documents: Option<DocumentsFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DocumentsFile {
    /// `{ connector = "…", operation = "…" }`: each archived document is pushed there.
    pub(crate) push: VoucherFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReconciliationFile {
    /// When it runs, in `site.time_zone` (default: 02:30 every day).
    #[serde(default = "default_reconcile_cron")]
    pub(crate) cron: String,
    #[serde(default)]
    pub(crate) checks: Vec<ReconcileCheckFile>,
}

fn default_reconcile_cron() -> String {
    "30 2 * * *".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReconcileCheckFile {
    pub(crate) id: String,
    /// A connector operation whose `reference` selects the other system's status.
    pub(crate) connector: String,
    pub(crate) operation: String,
    /// Our state → the statuses the other system may show for it; orders in states
    /// not listed are not checked.
    pub(crate) expect: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskFile {
    pub(crate) id: String,
    pub(crate) name: String,
    /// Product types it applies to (default: every product).
    #[serde(default)]
    pub(crate) products: Vec<String>,
    /// The role that carries it out (told by mail, audience `department`).
    pub(crate) department: String,
    /// Where the task is pushed (an ERP operation); absent: done by hand only.
    pub(crate) connector: Option<String>,
    pub(crate) operation: Option<String>,
    /// Delivery waits for required tasks (default true).
    #[serde(default = "yes")]
    pub(crate) required: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExceptionsFile {
    /// The role that owns (resolves) exceptions.
    pub(crate) owner: String,
    /// Hours until an open exception is escalated (default 48).
    #[serde(default = "default_exception_hours")]
    pub(crate) resolve_within_hours: u32,
    pub(crate) escalate_to: Option<String>,
}

fn default_exception_hours() -> u32 {
    48
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SettlementFile {
    /// The finance connector and its invoice operation (its `reference` is the
    /// invoice number).
    pub(crate) connector: String,
    pub(crate) operation: String,
    /// Tax rate on the order amount, a decimal fraction (default "0").
    #[serde(default = "zero")]
    pub(crate) tax_rate: String,
    /// Days from invoicing to the due date (default 30).
    #[serde(default = "thirty")]
    pub(crate) due_days: u32,
    /// The accounts-receivable voucher pushed with the invoice, when the ledger wants
    /// one of its own: `{ connector = "…", operation = "…" }`.
    pub(crate) voucher: Option<VoucherFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VoucherFile {
    pub(crate) connector: String,
    pub(crate) operation: String,
}

fn zero() -> String {
    "0".into()
}
fn thirty() -> u32 {
    30
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DunningFile {
    pub(crate) id: String,
    /// Sent this many days after the due date.
    pub(crate) days_overdue: u32,
    /// Credit ratings it applies to (default: all; orders without a rating count as
    /// unrated and match only a step without `ratings`).
    #[serde(default)]
    pub(crate) ratings: Vec<String>,
    /// `customer` (default), `sales_owner`, or `role:<role>`.
    #[serde(default = "default_dunning_to")]
    pub(crate) to: Vec<String>,
    /// The mail template (default `payment_reminder`); it sees `level` = the step id.
    #[serde(default = "default_dunning_template")]
    pub(crate) template: String,
}

fn default_dunning_to() -> Vec<String> {
    vec!["customer".into()]
}
fn default_dunning_template() -> String {
    "payment_reminder".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SlaFile {
    /// `"09:00-17:30"` in `site.time_zone`.
    #[serde(default = "default_business_hours")]
    pub(crate) business_hours: String,
    #[serde(default = "default_business_days")]
    pub(crate) business_days: Vec<String>,
    /// Local dates that are not working days, e.g. `"2027-01-01"`.
    #[serde(default)]
    pub(crate) holidays: Vec<String>,
    /// Local dates worked although their weekday is not (make-up days, 调休).
    #[serde(default)]
    pub(crate) workdays: Vec<String>,
    /// Working hours a level may take (default 8).
    #[serde(default = "default_sla_hours")]
    pub(crate) hours: u32,
    #[serde(default)]
    pub(crate) roles: BTreeMap<String, u32>,
    /// Reminder after this percentage of the SLA (default 50).
    #[serde(default = "default_remind")]
    pub(crate) remind_at_percent: u8,
    #[serde(default)]
    pub(crate) escalate_to: BTreeMap<String, String>,
}

fn default_business_hours() -> String {
    "09:00-17:30".into()
}
fn default_business_days() -> Vec<String> {
    ["mon", "tue", "wed", "thu", "fri"].map(String::from).to_vec()
}
fn default_sla_hours() -> u32 {
    8
}
fn default_remind() -> u8 {
    50
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReferenceFile {
    /// `config/<file>`: the watch list (`kind,value[,reason]` lines).
    pub(crate) watch_list: Option<toml::Spanned<String>>,
    #[serde(default = "default_history_days")]
    pub(crate) history_days: u32,
}

impl Default for ReferenceFile {
    fn default() -> Self {
        ReferenceFile { watch_list: None, history_days: default_history_days() }
    }
}

fn default_history_days() -> u32 {
    30
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SurveyFile {
    pub(crate) ticket_at_or_below: u8,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScreeningRuleFile {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) when: BTreeMap<String, String>,
    #[serde(default = "default_severity")]
    pub(crate) severity: Severity,
    pub(crate) message: String,
}

fn default_severity() -> Severity {
    Severity::Flag
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApprovalFile {
    #[serde(default = "default_auto_role")]
    pub(crate) auto_approver_role: String,
    #[serde(default)]
    pub(crate) matrix: Vec<toml::Spanned<MatrixRowFile>>,
}

fn default_auto_role() -> String {
    "line_supervisor".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MatrixRowFile {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) when: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) auto: bool,
    pub(crate) chain: Option<Vec<Level>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EffectRuleFile {
    /// State name the order enters (e.g. `approved`) or event name recorded
    /// (e.g. `after_sales_ticket_requested`).
    pub(crate) on: String,
    pub(crate) connector: String,
    pub(crate) operation: String,
}

/// A problem in a rules file, with the byte span it points at.
#[derive(Debug, Clone)]
pub struct RuleProblem {
    pub(crate) span: std::ops::Range<usize>,
    pub message: String,
}
