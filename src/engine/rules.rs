//! Screening rules, the approval matrix and effect rules, as loaded from
//! `config/rules.toml`. Rules are decision tables: rows of cells (see `table.rs`)
//! evaluated by our code over the inputs of one decision. Pure: evaluation takes the
//! inputs and returns data, including which rows matched.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::lifecycle::{RuleHit, Severity};
use super::table::{Inputs, Row};
use crate::domain::{ConnectorId, Order};

/// The loaded, validated rule set. `version` is recorded in every decision.
#[derive(Clone, Debug)]
pub struct Rules {
    pub version: String,
    pub screening: Vec<ScreeningRule>,
    pub approval: ApprovalRules,
    pub effects: Vec<EffectRule>,
    pub survey: SurveyRules,
    /// Who hears about what (`config/notifications.toml`, with the directory).
    pub notify: Arc<super::notify::Notifications>,
    pub watch_list: Arc<WatchList>,
    /// How far back `history.*` inputs look, in days.
    pub history_days: u32,
    pub sla: SlaRules,
    /// Execution tasks; when there are any, an approved order starts executing at once.
    pub tasks: Vec<TaskRule>,
    pub exceptions: ExceptionRules,
    /// Invoicing on acceptance; without it accepted orders wait for an operator.
    pub settlement: Option<SettlementRules>,
    /// Reminder steps, by days overdue (ascending).
    pub dunning: Vec<DunningStep>,
    pub reconciliation: Option<Reconciliation>,
    /// Each generated document is pushed to this connector operation.
    pub documents_push: Option<(ConnectorId, String)>,
}

/// Approval SLAs: working time per level, reminders, escalation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlaRules {
    /// Working hours and holidays; its time zone is `site.time_zone`.
    pub calendar: super::calendar::Calendar,
    /// Working minutes a level may take, by default and per role.
    pub default_minutes: u32,
    pub roles: BTreeMap<String, u32>,
    /// The reminder goes out after this share of the SLA (percent).
    pub remind_percent: u8,
    /// At the SLA, the level is escalated to this role (which may then approve it).
    pub escalate_to: BTreeMap<String, String>,
}

impl Default for SlaRules {
    fn default() -> Self {
        SlaRules {
            calendar: super::calendar::Calendar::office(chrono_tz::Asia::Shanghai),
            default_minutes: 8 * 60,
            roles: BTreeMap::new(),
            remind_percent: 50,
            escalate_to: BTreeMap::new(),
        }
    }
}

impl SlaRules {
    pub fn minutes(&self, role: &str) -> u32 {
        self.roles.get(role).copied().unwrap_or(self.default_minutes)
    }
}

/// After-sales follow-up of the satisfaction survey.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SurveyRules {
    /// A score at or below this (1–5) opens an after-sales ticket; so does a complaint.
    pub ticket_at_or_below: u8,
}

impl Default for SurveyRules {
    fn default() -> Self {
        SurveyRules { ticket_at_or_below: 2 }
    }
}

/// A screening rule: a row that *fires* when all its cells match.
#[derive(Clone, Debug)]
pub struct ScreeningRule {
    pub id: String,
    pub severity: Severity,
    pub message: String,
    pub row: Row,
}

/// The approval matrix: the first matching row picks the route.
#[derive(Clone, Debug, Default)]
pub struct ApprovalRules {
    /// Automatic approvals are recorded on behalf of this role.
    pub auto_role: String,
    pub matrix: Vec<MatrixRow>,
}

#[derive(Clone, Debug)]
pub struct MatrixRow {
    pub id: String,
    pub row: Row,
    /// `None`: approved automatically.
    pub chain: Option<Vec<Level>>,
}

/// One level of an approval chain: one role, one of a group, or all of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Level {
    Role(String),
    Any { any: Vec<String> },
    All { all: Vec<String> },
}

impl Level {
    pub fn roles(&self) -> &[String] {
        match self {
            Level::Role(r) => std::slice::from_ref(r),
            Level::Any { any } => any,
            Level::All { all } => all,
        }
    }

    /// Roles that must still approve given the roles that already did, or none when
    /// the level is complete.
    pub fn missing(&self, approved: &[String]) -> Vec<String> {
        match self {
            Level::All { all } => all.iter().filter(|r| !approved.contains(r)).cloned().collect(),
            _ if self.roles().iter().any(|r| approved.contains(r)) => Vec::new(),
            _ => self.roles().to_vec(),
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Level::Role(r) => f.write_str(r),
            Level::Any { any } => write!(f, "any of {}", any.join(", ")),
            Level::All { all } => write!(f, "all of {}", all.join(", ")),
        }
    }
}

/// "When an order enters state `on` (or event `on` is recorded), push `operation` to
/// `connector`."
#[derive(Clone, Debug)]
pub struct EffectRule {
    pub on: String,
    pub connector: ConnectorId,
    pub operation: String,
}

/// Customers nobody may sell to without a second look: ids, ID numbers, names.
#[derive(Clone, Debug, Default)]
pub struct WatchList {
    customer_ids: HashSet<String>,
    id_numbers: HashSet<String>,
    names: HashSet<String>,
}

fn normalise(name: &str) -> String {
    name.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

impl WatchList {
    /// Parses `kind,value[,reason]` lines (`kind`: customer_id, id_number, name);
    /// `#` starts a comment. Errors carry the 1-based line.
    pub fn parse(text: &str) -> Result<WatchList, Vec<(usize, String)>> {
        let mut w = WatchList::default();
        let mut problems = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.splitn(3, ',').map(str::trim);
            let (kind, value) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
            if value.is_empty() {
                problems.push((i + 1, format!("expected `kind,value[,reason]`, got `{line}`")));
                continue;
            }
            match kind {
                "customer_id" => w.customer_ids.insert(value.to_owned()),
                "id_number" => w.id_numbers.insert(value.to_uppercase()),
                "name" => w.names.insert(normalise(value)),
                other => {
                    problems.push((i + 1, format!("unknown kind `{other}` (customer_id, id_number, name)")));
                    continue;
                }
            };
        }
        if problems.is_empty() { Ok(w) } else { Err(problems) }
    }

    pub fn matches(&self, order: &Order) -> bool {
        let c = &order.customer;
        self.customer_ids.contains(c.id.as_str())
            || c.id_document.as_ref().is_some_and(|d| self.id_numbers.contains(&d.number.as_str().to_uppercase()))
            || self.names.contains(&normalise(c.name.as_str()))
    }

    pub fn len(&self) -> usize {
        self.customer_ids.len() + self.id_numbers.len() + self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What screening concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Screening {
    Passed,
    Flagged(Vec<RuleHit>),
    Rejected(Vec<RuleHit>),
}

/// The approval route an order takes, with the matrix row that chose it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub chain: Vec<Level>,
    /// When set, level 1 is approved automatically on behalf of this role.
    pub auto_on_behalf_of: Option<String>,
    pub row: String,
    pub reason: String,
}

/// The rule id recorded when a rule cannot be evaluated or no route exists.
pub const NO_ROUTE: &str = "NO-ROUTE";

/// The rule id recorded when the customer's history total (`history.amount`) is too
/// large to compute: the order goes to manual review instead of failing intake.
pub const HISTORY_OVERFLOW: &str = "HISTORY-OVERFLOW";

impl Rules {
    /// Every rule is evaluated (collect-all); all that fire are recorded. A rule that
    /// cannot be evaluated flags the order rather than letting it pass, and so does a
    /// history total too large to compute (`history.amount` is null only then).
    pub fn screen(&self, inputs: &Inputs) -> Screening {
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
    pub fn route(&self, inputs: &Inputs) -> Result<Route, String> {
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconcileCheck {
    pub id: String,
    pub connector: ConnectorId,
    pub operation: String,
    pub expect: BTreeMap<String, Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reconciliation {
    pub schedule: crate::schedule::Schedule,
    pub checks: Vec<ReconcileCheck>,
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

/// One execution task template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRule {
    pub id: String,
    pub name: String,
    /// Empty: every product.
    pub products: Vec<String>,
    pub department: String,
    pub push: Option<(ConnectorId, String)>,
    pub required: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExceptionRules {
    pub owner: String,
    pub resolve_within: chrono::Duration,
    pub escalate_to: Option<String>,
}

impl Default for ExceptionRules {
    fn default() -> Self {
        ExceptionRules { owner: "operations".into(), resolve_within: chrono::Duration::hours(48), escalate_to: None }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettlementRules {
    pub connector: ConnectorId,
    pub operation: String,
    pub tax_rate: rust_decimal::Decimal,
    pub due_days: u32,
    pub voucher: Option<(ConnectorId, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DunningStep {
    pub id: String,
    pub days_overdue: u32,
    pub ratings: Vec<String>,
    pub to: Vec<String>,
    pub template: String,
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

impl SlaFile {
    fn validate(self) -> Result<SlaRules, Vec<String>> {
        let mut problems = Vec::new();
        let mut cal = super::calendar::Calendar::office(chrono_tz::Asia::Shanghai);
        match self.business_hours.split_once('-').map(|(a, b)| {
            (chrono::NaiveTime::parse_from_str(a.trim(), "%H:%M"), chrono::NaiveTime::parse_from_str(b.trim(), "%H:%M"))
        }) {
            Some((Ok(a), Ok(b))) if a < b => {
                cal.start = a;
                cal.end = b;
            }
            _ => problems.push(format!("sla.business_hours `{}` is not like \"09:00-17:30\"", self.business_hours)),
        }
        cal.days.clear();
        for d in &self.business_days {
            match d.parse::<chrono::Weekday>() {
                Ok(w) if !cal.days.contains(&w) => cal.days.push(w),
                Ok(_) => {}
                Err(_) => problems.push(format!("sla.business_days: `{d}` is not a weekday (mon … sun)")),
            }
        }
        for (list, days, name) in
            [(&mut cal.holidays, &self.holidays, "holidays"), (&mut cal.workdays, &self.workdays, "workdays")]
        {
            for h in days {
                match h.parse::<chrono::NaiveDate>() {
                    Ok(d) => {
                        list.insert(d);
                    }
                    Err(_) => problems.push(format!("sla.{name}: `{h}` is not a date like 2027-01-01")),
                }
            }
        }
        if self.hours == 0 || self.roles.values().any(|h| *h == 0) {
            problems.push("sla: hours must be positive".into());
        }
        if !(1..=99).contains(&self.remind_at_percent) {
            problems.push("sla.remind_at_percent must be 1–99".into());
        }
        for start in self.escalate_to.keys() {
            let mut cur = start;
            for _ in 0..=self.escalate_to.len() {
                match self.escalate_to.get(cur) {
                    Some(next) if next == start => {
                        problems.push(format!("sla.escalate_to goes round in a circle from `{start}`"));
                        break;
                    }
                    Some(next) => cur = next,
                    None => break,
                }
            }
        }
        if problems.is_empty() {
            Ok(SlaRules {
                calendar: cal,
                default_minutes: self.hours * 60,
                roles: self.roles.into_iter().map(|(k, v)| (k, v * 60)).collect(),
                remind_percent: self.remind_at_percent,
                escalate_to: self.escalate_to,
            })
        } else {
            Err(problems)
        }
    }
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

impl RulesFile {
    /// Meaning checks. Every problem is returned, not only the first. `watch_list`
    /// reads the file the rules name (relative to `config/`).
    pub fn validate(self, read: &dyn Fn(&str) -> Result<String, String>) -> Result<Rules, Vec<RuleProblem>> {
        let mut problems = Vec::new();
        let mut screening = Vec::new();
        let mut seen = HashSet::new();
        for r in self.screening {
            let span = r.span();
            let r = r.into_inner();
            let mut bad = |m: String| problems.push(RuleProblem { span: span.clone(), message: m });
            if !seen.insert(r.id.clone()) {
                bad(format!("screening rule id `{}` is used twice", r.id));
            }
            if r.when.is_empty() {
                bad(format!("screening rule {}: `when` is empty, so it would fire on every order", r.id));
                continue;
            }
            match Row::compile(&r.when) {
                Ok(row) => screening.push(ScreeningRule { id: r.id, severity: r.severity, message: r.message, row }),
                Err(es) => es.into_iter().for_each(|e| bad(format!("screening rule {}: {e}", r.id))),
            }
        }

        let mut matrix = Vec::new();
        let mut seen = HashSet::new();
        let mut default_row: Option<String> = None;
        for m in self.approval.matrix {
            let span = m.span();
            let m = m.into_inner();
            let mut bad = |msg: String| problems.push(RuleProblem { span: span.clone(), message: msg });
            if !seen.insert(m.id.clone()) {
                bad(format!("approval matrix row id `{}` is used twice", m.id));
            }
            if let Some(d) = &default_row {
                bad(format!("approval matrix row {} can never match: row {d} before it matches everything", m.id));
            }
            let chain = match (m.auto, m.chain) {
                (true, None) => None,
                (false, Some(c)) if c.is_empty() => {
                    bad(format!("approval matrix row {}: an empty chain; write `auto = true` instead", m.id));
                    continue;
                }
                (false, Some(c)) if c.len() > 10 => {
                    bad(format!("approval matrix row {}: at most 10 levels", m.id));
                    continue;
                }
                (false, Some(c)) => {
                    if c.iter().any(|l| l.roles().is_empty() || l.roles().iter().any(|r| r.trim().is_empty())) {
                        bad(format!("approval matrix row {}: every level needs at least one role", m.id));
                        continue;
                    }
                    Some(c)
                }
                _ => {
                    bad(format!("approval matrix row {}: give either `chain` or `auto = true`", m.id));
                    continue;
                }
            };
            if m.when.is_empty() {
                default_row = Some(m.id.clone());
            }
            match Row::compile(&m.when) {
                Ok(row) => matrix.push(MatrixRow { id: m.id, row, chain }),
                Err(es) => es.into_iter().for_each(|e| bad(format!("approval matrix row {}: {e}", m.id))),
            }
        }
        if matrix.is_empty() && problems.is_empty() {
            problems.push(RuleProblem {
                span: 0..0,
                message: "[[approval.matrix]] is empty: every order would stop without a route".into(),
            });
        }

        let mut effects = Vec::new();
        for e in self.effects {
            let span = e.span();
            let e = e.into_inner();
            let known = crate::engine::lifecycle::STATE_NAMES.contains(&e.on.as_str())
                || crate::engine::lifecycle::EVENT_NAMES.contains(&e.on.as_str());
            if !known {
                problems.push(RuleProblem {
                    span: span.clone(),
                    message: format!("effects: `{}` is neither a state nor an event name", e.on),
                });
                continue;
            }
            match e.connector.parse::<ConnectorId>() {
                Ok(connector) => effects.push(EffectRule { on: e.on, connector, operation: e.operation }),
                Err(err) => problems.push(RuleProblem { span, message: format!("effects: {err}") }),
            }
        }

        let survey = match self.survey {
            None => SurveyRules::default(),
            Some(s) if (1..=5).contains(&s.get_ref().ticket_at_or_below) => {
                SurveyRules { ticket_at_or_below: s.into_inner().ticket_at_or_below }
            }
            Some(s) => {
                problems
                    .push(RuleProblem { span: s.span(), message: "survey: ticket_at_or_below must be 1–5".into() });
                SurveyRules::default()
            }
        };

        let watch_list = match &self.reference.watch_list {
            None => WatchList::default(),
            Some(f) => match read(f.get_ref()).map_err(|e| vec![(0, e)]).and_then(|t| WatchList::parse(&t)) {
                Ok(w) => w,
                Err(es) => {
                    for (line, e) in es {
                        let at = if line == 0 { String::new() } else { format!(" line {line}") };
                        problems.push(RuleProblem {
                            span: f.span(),
                            message: format!("watch list config/{}{at}: {e}", f.get_ref()),
                        });
                    }
                    WatchList::default()
                }
            },
        };
        if !(1..=3660).contains(&self.reference.history_days) {
            problems.push(RuleProblem { span: 0..0, message: "reference.history_days must be 1–3660".into() });
        }

        let mut tasks: Vec<TaskRule> = Vec::new();
        for t in self.tasks {
            let span = t.span();
            let t = t.into_inner();
            let mut bad =
                |m: String| problems.push(RuleProblem { span: span.clone(), message: format!("tasks {}: {m}", t.id) });
            if tasks.iter().any(|x| x.id == t.id) {
                bad("the id is used twice".into());
            }
            for p in &t.products {
                if p.parse::<crate::domain::order::ProductType>().is_err() {
                    bad(format!("`{p}` is not a product type"));
                }
            }
            let push = match (&t.connector, &t.operation) {
                (Some(c), Some(op)) => match c.parse::<ConnectorId>() {
                    Ok(c) => Some((c, op.clone())),
                    Err(e) => {
                        bad(e.to_string());
                        None
                    }
                },
                (None, None) => None,
                _ => {
                    bad("give both `connector` and `operation`, or neither".into());
                    None
                }
            };
            tasks.push(TaskRule {
                id: t.id,
                name: t.name,
                products: t.products,
                department: t.department,
                push,
                required: t.required,
            });
        }
        let exceptions = match self.exceptions {
            None => ExceptionRules::default(),
            Some(e) => {
                let e = e.into_inner();
                ExceptionRules {
                    owner: e.owner,
                    resolve_within: chrono::Duration::hours(i64::from(e.resolve_within_hours.max(1))),
                    escalate_to: e.escalate_to,
                }
            }
        };
        let settlement = self.settlement.and_then(|s| {
            let span = s.span();
            let s = s.into_inner();
            let mut bad =
                |m: String| problems.push(RuleProblem { span: span.clone(), message: format!("settlement: {m}") });
            let rate = match s.tax_rate.parse::<rust_decimal::Decimal>() {
                Ok(r) if r >= rust_decimal::Decimal::ZERO && r < rust_decimal::Decimal::ONE => Some(r),
                _ => {
                    bad(format!(
                        "tax_rate `{}` is not a decimal fraction from 0 to below 1 (e.g. \"0.06\")",
                        s.tax_rate
                    ));
                    None
                }
            };
            let connector = s.connector.parse::<ConnectorId>().map_err(|e| bad(e.to_string())).ok();
            let voucher = match s.voucher {
                None => Some(None),
                Some(v) => v
                    .connector
                    .parse::<ConnectorId>()
                    .map_err(|e| bad(format!("voucher: {e}")))
                    .ok()
                    .map(|c| Some((c, v.operation))),
            };
            Some(SettlementRules {
                connector: connector?,
                operation: s.operation,
                tax_rate: rate?,
                due_days: s.due_days,
                voucher: voucher?,
            })
        });
        let mut dunning: Vec<DunningStep> = Vec::new();
        for d in self.dunning {
            let span = d.span();
            let d = d.into_inner();
            let mut bad = |m: String| {
                problems.push(RuleProblem { span: span.clone(), message: format!("dunning {}: {m}", d.id) })
            };
            if dunning.iter().any(|x| x.id == d.id) {
                bad("the id is used twice".into());
            }
            for r in &d.ratings {
                if r.parse::<crate::domain::order::CreditRating>().is_err() {
                    bad(format!("`{r}` is not a credit rating"));
                }
            }
            for a in &d.to {
                if !(a == "customer" || a == "sales_owner" || a.strip_prefix("role:").is_some_and(|r| !r.is_empty())) {
                    bad(format!("`{a}` is not customer, sales_owner or role:<role>"));
                }
            }
            dunning.push(DunningStep {
                id: d.id,
                days_overdue: d.days_overdue,
                ratings: d.ratings,
                to: d.to,
                template: d.template,
            });
        }
        dunning.sort_by_key(|d| d.days_overdue);
        let documents_push = self.documents.and_then(|d| match d.push.connector.parse::<ConnectorId>() {
            Ok(c) => Some((c, d.push.operation)),
            Err(e) => {
                problems.push(RuleProblem { span: 0..0, message: format!("documents.push: {e}") });
                None
            }
        });
        let reconciliation = self.reconciliation.and_then(|r| {
            let span = r.span();
            let r = r.into_inner();
            let mut bad =
                |m: String| problems.push(RuleProblem { span: span.clone(), message: format!("reconciliation: {m}") });
            let schedule = crate::schedule::from_config(None, Some(&r.cron), 86_400).map_err(&mut bad).ok();
            let mut checks = Vec::new();
            for c in r.checks {
                for state in c.expect.keys() {
                    if !crate::engine::lifecycle::STATE_NAMES.contains(&state.as_str()) {
                        bad(format!("check {}: `{state}` is not a state", c.id));
                    }
                }
                match c.connector.parse::<ConnectorId>() {
                    Ok(connector) => {
                        checks.push(ReconcileCheck { id: c.id, connector, operation: c.operation, expect: c.expect })
                    }
                    Err(e) => bad(format!("check {}: {e}", c.id)),
                }
            }
            Some(Reconciliation { schedule: schedule?, checks })
        });

        let sla = match self.sla {
            None => SlaRules::default(),
            Some(f) => {
                let span = f.span();
                match f.into_inner().validate() {
                    Ok(s) => s,
                    Err(es) => {
                        problems.extend(es.into_iter().map(|m| RuleProblem { span: span.clone(), message: m }));
                        SlaRules::default()
                    }
                }
            }
        };

        if problems.is_empty() {
            Ok(Rules {
                version: self.version.into_inner(),
                sla,
                screening,
                approval: ApprovalRules { auto_role: self.approval.auto_approver_role, matrix },
                effects,
                survey,
                notify: Default::default(),
                watch_list: Arc::new(watch_list),
                history_days: self.reference.history_days,
                tasks,
                exceptions,
                settlement,
                dunning,
                reconciliation,
                documents_push,
            })
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rust_decimal::Decimal;
    use serde_json::json;

    use super::*;
    use crate::engine::table::{History, inputs};

    fn repo_rules() -> Rules {
        crate::config::load_rules(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap_or_else(|e| panic!("{e:?}"))
    }

    /// A real-looking order: 张伟, a valid resident ID, rating A, KYC done.
    fn order(f: impl FnOnce(&mut serde_json::Value)) -> Order {
        let mut v = json!({
            "customer": {"id": "C-778", "name": "张伟", "kind": "individual",
                "id_document": {"type": "cn_resident_id", "number": "11010519491231002X"},
                "credit_rating": "A", "kyc_verified": true, "email": "zhang.wei@example.com"},
            "product": {"type": "wealth_management", "code": "WM-STABLE-12M"},
            "need": "客户希望配置稳健型理财产品，期限一年",
            "amount": {"amount": "1250000.00", "currency": "CNY"},
            "term_months": 12
        });
        f(&mut v);
        serde_json::from_value(v).unwrap()
    }

    fn screen(r: &Rules, o: &Order, h: &History) -> Screening {
        r.screen(&inputs(o, r.watch_list.matches(o), h))
    }

    fn fired(s: &Screening) -> Vec<String> {
        match s {
            Screening::Passed => vec![],
            Screening::Flagged(h) | Screening::Rejected(h) => h.iter().map(|h| h.rule_id.clone()).collect(),
        }
    }

    #[test]
    fn the_matrix_picks_the_right_row_at_every_band_edge() {
        let r = repo_rules();
        let chain = |names: &[&str]| names.iter().map(|n| Level::Role((*n).into())).collect::<Vec<_>>();
        let table: &[(&str, &str, Vec<Level>)] = &[
            ("0.01", "AUTO-SMALL", chain(&["line_supervisor"])),
            ("100000.00", "AUTO-SMALL", chain(&["line_supervisor"])),
            ("100000.01", "STANDARD", chain(&["line_supervisor"])),
            ("1000000.00", "STANDARD", chain(&["line_supervisor"])),
            ("1000000.01", "LARGE", chain(&["line_supervisor", "branch_manager"])),
            ("10000000.00", "LARGE", chain(&["line_supervisor", "branch_manager"])),
            ("10000000.01", "VERY-LARGE", chain(&["line_supervisor", "branch_manager", "risk_committee"])),
        ];
        for (amount, row, want) in table {
            let o = order(|v| v["amount"]["amount"] = (*amount).into());
            let route = r.route(&inputs(&o, false, &History::default())).unwrap();
            assert_eq!((&route.row, &route.chain), (&(*row).to_owned(), want), "amount {amount}");
            assert_eq!(route.auto_on_behalf_of.is_some(), *row == "AUTO-SMALL", "amount {amount}");
            assert!(route.reason.contains(row), "{}", route.reason);
        }
    }

    #[test]
    fn an_order_no_row_covers_gets_a_clear_error() {
        let r = repo_rules();
        let o = order(|v| v["amount"] = json!({"amount": "5000.00", "currency": "USD"}));
        let e = r.route(&inputs(&o, false, &History::default())).unwrap_err();
        assert!(
            e.contains("no approval matrix row matches") && e.contains("USD") && e.contains("wealth_management"),
            "{e}"
        );

        // A matrix keyed by product: a product it does not list has no route.
        let by_product = crate::engine::decide::tests::rules_from(
            r#"
version = "t"
[approval]
[[approval.matrix]]
id = "WM"
when = { "product.type" = "'wealth_management'" }
chain = ["line_supervisor"]
"#,
        );
        let loan = order(|v| v["product"] = json!({"type": "loan", "code": "LN-1"}));
        let e = by_product.route(&inputs(&loan, false, &History::default())).unwrap_err();
        assert!(e.contains("product loan"), "{e}");
    }

    #[test]
    fn every_credit_rating_is_screened_as_the_table_says() {
        let r = repo_rules();
        for (rating, want) in [
            (Some("AAA"), vec![]),
            (Some("AA"), vec![]),
            (Some("A"), vec![]),
            (Some("BBB"), vec![]),
            (Some("BB"), vec![]),
            (Some("B"), vec!["CREDIT-001"]),
            (Some("CCC"), vec!["CREDIT-001"]),
            (Some("CC"), vec!["CREDIT-001"]),
            (Some("C"), vec!["CREDIT-001"]),
            (Some("D"), vec!["CREDIT-001"]),
            (None, vec!["CREDIT-002"]),
        ] {
            let o = order(|v| v["customer"]["credit_rating"] = rating.map_or(json!(null), |r| json!(r)));
            let s = screen(&r, &o, &History::default());
            assert_eq!(fired(&s), want, "rating {rating:?}");
            if rating.is_some() && !want.is_empty() {
                assert!(matches!(s, Screening::Rejected(_)), "below BB rejects");
            }
        }
    }

    #[test]
    fn every_screening_rule_fires_on_its_case_and_only_there() {
        let r = repo_rules();
        let none = History::default();
        assert_eq!(screen(&r, &order(|_| {}), &none), Screening::Passed);
        let cases: Vec<(&str, Order, History)> = vec![
            ("KYC-001", order(|v| v["customer"]["kyc_verified"] = false.into()), none.clone()),
            // A resident ID with a wrong check character (GB 11643).
            ("ID-001", order(|v| v["customer"]["id_document"]["number"] = "110105194912310021".into()), none.clone()),
            (
                "ID-001",
                order(|v| v["customer"].as_object_mut().unwrap().remove("id_document").map(|_| ()).unwrap()),
                none.clone(),
            ),
            ("LIMIT-WM", order(|v| v["amount"]["amount"] = "50000000.01".into()), none.clone()),
            ("TERM-001", order(|v| v["term_months"] = 121.into()), none.clone()),
            ("WATCH-001", order(|v| v["customer"]["name"] = "示例可疑公司".into()), none.clone()),
            ("WATCH-001", order(|v| v["customer"]["id"] = "C-9001".into()), none.clone()),
            (
                "WATCH-001",
                order(|v| v["customer"]["id_document"]["number"] = "110101199003074477".into()),
                none.clone(),
            ),
            (
                "VELOCITY-001",
                order(|v| v["product"]["code"] = "WM-OTHER".into()),
                History { orders: 5, amount: Some(Decimal::ZERO), same_product: 0 },
            ),
            ("DUP-001", order(|_| {}), History { orders: 1, amount: Some(Decimal::ONE), same_product: 1 }),
        ];
        for (rule, o, h) in cases {
            assert_eq!(fired(&screen(&r, &o, &h)), vec![rule.to_owned()], "{rule}");
        }
        // Limits sit exactly on the edge: equal is allowed.
        assert_eq!(screen(&r, &order(|v| v["amount"]["amount"] = "50000000.00".into()), &none), Screening::Passed);
        assert_eq!(screen(&r, &order(|v| v["term_months"] = 120.into()), &none), Screening::Passed);
        assert_eq!(
            screen(&r, &order(|v| v["term_months"] = json!(null)), &none),
            Screening::Passed,
            "no term, no term rule"
        );
        // A loan bought again is not a duplicate by DUP-001 (it lists other products).
        let loan = order(|v| v["product"] = json!({"type": "loan", "code": "LN-1"}));
        assert_eq!(
            screen(&r, &loan, &History { orders: 1, amount: Some(Decimal::ONE), same_product: 1 }),
            Screening::Passed
        );
    }

    #[test]
    fn history_counts_only_this_currency_and_product() {
        let o = order(|_| {});
        let p = |a: &str, c: &str, code: &str| crate::engine::table::Prior {
            amount: crate::domain::Money::parse(a, c).unwrap(),
            product_code: code.into(),
        };
        let h = History::of(&o, &[p("100", "CNY", "WM-STABLE-12M"), p("50", "USD", "X"), p("1.5", "CNY", "Y")]);
        assert_eq!(h, History { orders: 3, amount: Some("101.5".parse().unwrap()), same_product: 1 });
    }

    #[test]
    fn a_history_total_too_large_to_compute_flags_the_order_for_review() {
        let r = repo_rules();
        let o = order(|_| {});
        let p = |a: &str| crate::engine::table::Prior {
            amount: crate::domain::Money::parse(a, "CNY").unwrap(),
            product_code: "OTHER".into(),
        };
        let max = Decimal::MAX.to_string();
        let h = History::of(&o, &[p(&max), p(&max), p("1")]);
        assert_eq!(h, History { orders: 3, amount: None, same_product: 0 });
        let ins = inputs(&o, false, &h);
        assert_eq!(ins["history.amount"], crate::engine::table::Input::Null);
        let s = screen(&r, &o, &h);
        assert_eq!(fired(&s), ["HISTORY-OVERFLOW"]);
        assert!(matches!(s, Screening::Flagged(_)), "review, not rejection: {s:?}");
        // Other rules still count: a rejection stays a rejection.
        let bad = order(|v| v["customer"]["credit_rating"] = "CCC".into());
        let s = screen(&r, &bad, &History::of(&bad, &[p(&max), p(&max)]));
        assert_eq!(fired(&s), ["HISTORY-OVERFLOW", "CREDIT-001"]);
        assert!(matches!(s, Screening::Rejected(_)));
        // Exactly the largest total is still a number.
        assert_eq!(History::of(&o, &[p(&max)]).amount, Some(Decimal::MAX));
    }

    #[test]
    fn rule_problems_are_reported_for_each_row() {
        let text = r#"
version = "t"
[[screening]]
id = "A"
when = { amont = "> 1" }
message = "typo"
[[screening]]
id = "B"
when = { amount = "> > 1" }
message = "bad cell"
[[screening]]
id = "C"
message = "fires on everything"
[approval]
[[approval.matrix]]
id = "ALL"
chain = ["x"]
[[approval.matrix]]
id = "NEVER"
when = { amount = "> 1" }
chain = ["y"]
[[approval.matrix]]
id = "NEITHER"
"#;
        let file: RulesFile = toml::from_str(text).unwrap();
        let errs: Vec<String> =
            file.validate(&|_| Err("none".into())).unwrap_err().into_iter().map(|p| p.message).collect();
        let has = |s: &str| errs.iter().any(|e| e.contains(s));
        assert!(has("screening rule A: unknown input `amont`"), "{errs:#?}");
        assert!(has("screening rule B: cell `amount = > > 1`"), "{errs:#?}");
        assert!(has("screening rule C: `when` is empty"), "{errs:#?}");
        assert!(has("row NEVER can never match: row ALL before it matches everything"), "{errs:#?}");
        assert!(has("row NEITHER: give either `chain` or `auto = true`"), "{errs:#?}");
    }

    #[test]
    fn watch_list_lines_are_checked() {
        let e = WatchList::parse("# c\ncustomer_id,C-1\nphone,123\nname\n").unwrap_err();
        assert_eq!(e.iter().map(|(l, _)| *l).collect::<Vec<_>>(), vec![3, 4]);
    }
}
