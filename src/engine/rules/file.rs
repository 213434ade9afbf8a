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
    pub version: toml::Spanned<String>,
    #[serde(default)]
    pub reference: ReferenceFile,
    #[serde(default)]
    pub screening: Vec<toml::Spanned<ScreeningRuleFile>>,
    pub approval: ApprovalFile,
    #[serde(default)]
    pub effects: Vec<toml::Spanned<EffectRuleFile>>,
    #[serde(default)]
    pub survey: Option<toml::Spanned<SurveyFile>>,
    #[serde(default)]
    pub sla: Option<toml::Spanned<SlaFile>>,
    /// Execution tasks by product (seed step 4).
    #[serde(default)]
    pub tasks: Vec<toml::Spanned<TaskFile>>,
    #[serde(default)]
    pub exceptions: Option<toml::Spanned<ExceptionsFile>>,
    /// Invoicing on acceptance (seed step 6).
    #[serde(default)]
    pub settlement: Option<toml::Spanned<SettlementFile>>,
    /// Payment reminders by days overdue and credit rating.
    #[serde(default)]
    pub dunning: Vec<toml::Spanned<DunningFile>>,
    /// Scheduled comparison of our states with the other systems'.
    #[serde(default)]
    pub reconciliation: Option<toml::Spanned<ReconciliationFile>>,
    /// Where generated documents are delivered (a document store, the ERP).
    #[serde(default)]
    pub documents: Option<DocumentsFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentsFile {
    /// `{ connector = "…", operation = "…" }`: each archived document is pushed there.
    pub push: VoucherFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconciliationFile {
    /// When it runs, in `site.time_zone` (default: 02:30 every day).
    #[serde(default = "default_reconcile_cron")]
    pub cron: String,
    #[serde(default)]
    pub checks: Vec<ReconcileCheckFile>,
}

fn default_reconcile_cron() -> String {
    "30 2 * * *".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileCheckFile {
    pub id: String,
    /// A connector operation whose `reference` selects the other system's status.
    pub connector: String,
    pub operation: String,
    /// Our state → the statuses the other system may show for it; orders in states
    /// not listed are not checked.
    pub expect: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFile {
    pub id: String,
    pub name: String,
    /// Product types it applies to (default: every product).
    #[serde(default)]
    pub products: Vec<String>,
    /// The role that carries it out (told by mail, audience `department`).
    pub department: String,
    /// Where the task is pushed (an ERP operation); absent: done by hand only.
    pub connector: Option<String>,
    pub operation: Option<String>,
    /// Delivery waits for required tasks (default true).
    #[serde(default = "yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionsFile {
    /// The role that owns (resolves) exceptions.
    pub owner: String,
    /// Hours until an open exception is escalated (default 48).
    #[serde(default = "default_exception_hours")]
    pub resolve_within_hours: u32,
    pub escalate_to: Option<String>,
}

fn default_exception_hours() -> u32 {
    48
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettlementFile {
    /// The finance connector and its invoice operation (its `reference` is the
    /// invoice number).
    pub connector: String,
    pub operation: String,
    /// Tax rate on the order amount, a decimal fraction (default "0").
    #[serde(default = "zero")]
    pub tax_rate: String,
    /// Days from invoicing to the due date (default 30).
    #[serde(default = "thirty")]
    pub due_days: u32,
    /// The accounts-receivable voucher pushed with the invoice, when the ledger wants
    /// one of its own: `{ connector = "…", operation = "…" }`.
    pub voucher: Option<VoucherFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoucherFile {
    pub connector: String,
    pub operation: String,
}

fn zero() -> String {
    "0".into()
}
fn thirty() -> u32 {
    30
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DunningFile {
    pub id: String,
    /// Sent this many days after the due date.
    pub days_overdue: u32,
    /// Credit ratings it applies to (default: all; orders without a rating count as
    /// unrated and match only a step without `ratings`).
    #[serde(default)]
    pub ratings: Vec<String>,
    /// `customer` (default), `sales_owner`, or `role:<role>`.
    #[serde(default = "default_dunning_to")]
    pub to: Vec<String>,
    /// The mail template (default `payment_reminder`); it sees `level` = the step id.
    #[serde(default = "default_dunning_template")]
    pub template: String,
}

fn default_dunning_to() -> Vec<String> {
    vec!["customer".into()]
}
fn default_dunning_template() -> String {
    "payment_reminder".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaFile {
    /// `"09:00-17:30"` in `site.time_zone`.
    #[serde(default = "default_business_hours")]
    pub business_hours: String,
    #[serde(default = "default_business_days")]
    pub business_days: Vec<String>,
    /// Local dates that are not working days, e.g. `"2027-01-01"`.
    #[serde(default)]
    pub holidays: Vec<String>,
    /// Local dates worked although their weekday is not (make-up days, 调休).
    #[serde(default)]
    pub workdays: Vec<String>,
    /// Working hours a level may take (default 8).
    #[serde(default = "default_sla_hours")]
    pub hours: u32,
    #[serde(default)]
    pub roles: BTreeMap<String, u32>,
    /// Reminder after this percentage of the SLA (default 50).
    #[serde(default = "default_remind")]
    pub remind_at_percent: u8,
    #[serde(default)]
    pub escalate_to: BTreeMap<String, String>,
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
pub struct ReferenceFile {
    /// `config/<file>`: the watch list (`kind,value[,reason]` lines).
    pub watch_list: Option<toml::Spanned<String>>,
    #[serde(default = "default_history_days")]
    pub history_days: u32,
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
pub struct SurveyFile {
    pub ticket_at_or_below: u8,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScreeningRuleFile {
    pub id: String,
    #[serde(default)]
    pub when: BTreeMap<String, String>,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    pub message: String,
}

fn default_severity() -> Severity {
    Severity::Flag
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalFile {
    #[serde(default = "default_auto_role")]
    pub auto_approver_role: String,
    #[serde(default)]
    pub matrix: Vec<toml::Spanned<MatrixRowFile>>,
}

fn default_auto_role() -> String {
    "line_supervisor".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixRowFile {
    pub id: String,
    #[serde(default)]
    pub when: BTreeMap<String, String>,
    #[serde(default)]
    pub auto: bool,
    pub chain: Option<Vec<Level>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EffectRuleFile {
    /// State name the order enters (e.g. `approved`) or event name recorded
    /// (e.g. `after_sales_ticket_requested`).
    pub on: String,
    pub connector: String,
    pub operation: String,
}

/// A problem in a rules file, with the byte span it points at.
#[derive(Debug, Clone)]
pub struct RuleProblem {
    pub span: std::ops::Range<usize>,
    pub message: String,
}
