//! Meaning checks of `config/rules.toml`, one phase per section: each turns its part
//! of `RulesFile` into the loaded rules and reports every problem it finds, so the
//! whole file is checked at once.

use std::collections::HashSet;
use std::sync::Arc;

use toml::Spanned;

use super::file::{
    DocumentsFile, DunningFile, EffectRuleFile, ExceptionsFile, MatrixRowFile, ReconciliationFile, ReferenceFile,
    RuleProblem, RulesFile, ScreeningRuleFile, SettlementFile, SlaFile, SurveyFile, TaskFile,
};
use super::{
    ApprovalRules, DunningStep, EffectRule, ExceptionRules, MatrixRow, ReconcileCheck, Reconciliation, Rules,
    ScreeningRule, SettlementRules, SlaRules, SurveyRules, TaskRule, WatchList,
};
use crate::domain::ConnectorId;
use crate::engine::lifecycle::{EVENT_NAMES, STATE_NAMES};
use crate::engine::table::Row;

/// Reads a file the rules name (relative to `config/`), for the watch list.
pub(crate) type Read<'a> = &'a dyn Fn(&str) -> Result<String, String>;

impl RulesFile {
    /// Meaning checks. Every problem is returned, not only the first. `watch_list`
    /// reads the file the rules name (relative to `config/`).
    pub fn validate(self, read: Read<'_>) -> Result<Rules, Vec<RuleProblem>> {
        let mut problems = Vec::new();
        let p = &mut problems;
        let screening = screening(self.screening, p);
        let matrix = matrix(self.approval.matrix, p);
        let effects = effects(self.effects, p);
        let survey = survey(self.survey, p);
        let watch_list = watch_list(&self.reference, read, p);
        let tasks = tasks(self.tasks, p);
        let exceptions = exceptions(self.exceptions);
        let settlement = self.settlement.and_then(|s| settlement(s, p));
        let dunning = dunning(self.dunning, p);
        let documents_push = self.documents.and_then(|d| documents_push(d, p));
        let reconciliation = self.reconciliation.and_then(|r| reconciliation(r, p));
        let sla = sla(self.sla, p);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Rules {
            version: self.version.into_inner(),
            config_version: String::new(),
            sla,
            screening,
            approval: ApprovalRules { auto_role: self.approval.auto_approver_role, matrix },
            effects,
            survey,
            notify: Arc::default(),
            watch_list: Arc::new(watch_list),
            history_days: self.reference.history_days,
            tasks,
            exceptions,
            settlement,
            dunning,
            reconciliation,
            documents_push,
        })
    }
}

fn screening(rules: Vec<Spanned<ScreeningRuleFile>>, problems: &mut Vec<RuleProblem>) -> Vec<ScreeningRule> {
    let mut screening = Vec::new();
    let mut seen = HashSet::new();
    for r in rules {
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
    screening
}

/// The approval matrix; an empty one is a problem when nothing else is wrong.
fn matrix(rows: Vec<Spanned<MatrixRowFile>>, problems: &mut Vec<RuleProblem>) -> Vec<MatrixRow> {
    let mut matrix = Vec::new();
    let mut seen = HashSet::new();
    let mut default_row: Option<String> = None;
    for m in rows {
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
    matrix
}

fn effects(rules: Vec<Spanned<EffectRuleFile>>, problems: &mut Vec<RuleProblem>) -> Vec<EffectRule> {
    let mut effects = Vec::new();
    for e in rules {
        let span = e.span();
        let e = e.into_inner();
        let known = STATE_NAMES.contains(&e.on.as_str()) || EVENT_NAMES.contains(&e.on.as_str());
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
    effects
}

fn survey(survey: Option<Spanned<SurveyFile>>, problems: &mut Vec<RuleProblem>) -> SurveyRules {
    match survey {
        None => SurveyRules::default(),
        Some(s) if (1..=5).contains(&s.get_ref().ticket_at_or_below) => {
            SurveyRules { ticket_at_or_below: s.into_inner().ticket_at_or_below }
        }
        Some(s) => {
            problems.push(RuleProblem { span: s.span(), message: "survey: ticket_at_or_below must be 1–5".into() });
            SurveyRules::default()
        }
    }
}

/// The watch list the rules name, and the history window.
fn watch_list(reference: &ReferenceFile, read: Read<'_>, problems: &mut Vec<RuleProblem>) -> WatchList {
    let watch_list = match &reference.watch_list {
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
    if !(1..=3660).contains(&reference.history_days) {
        problems.push(RuleProblem { span: 0..0, message: "reference.history_days must be 1–3660".into() });
    }
    watch_list
}

fn tasks(files: Vec<Spanned<TaskFile>>, problems: &mut Vec<RuleProblem>) -> Vec<TaskRule> {
    let mut tasks: Vec<TaskRule> = Vec::new();
    for t in files {
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
    tasks
}

fn exceptions(file: Option<Spanned<ExceptionsFile>>) -> ExceptionRules {
    match file {
        None => ExceptionRules::default(),
        Some(e) => {
            let e = e.into_inner();
            ExceptionRules {
                owner: e.owner,
                resolve_within: chrono::Duration::hours(i64::from(e.resolve_within_hours.max(1))),
                escalate_to: e.escalate_to,
            }
        }
    }
}

fn settlement(s: Spanned<SettlementFile>, problems: &mut Vec<RuleProblem>) -> Option<SettlementRules> {
    let span = s.span();
    let s = s.into_inner();
    let mut bad = |m: String| problems.push(RuleProblem { span: span.clone(), message: format!("settlement: {m}") });
    let rate = match s.tax_rate.parse::<rust_decimal::Decimal>() {
        Ok(r) if r >= rust_decimal::Decimal::ZERO && r < rust_decimal::Decimal::ONE => Some(r),
        _ => {
            bad(format!("tax_rate `{}` is not a decimal fraction from 0 to below 1 (e.g. \"0.06\")", s.tax_rate));
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
}

/// Dunning steps, by days overdue (ascending).
fn dunning(files: Vec<Spanned<DunningFile>>, problems: &mut Vec<RuleProblem>) -> Vec<DunningStep> {
    let mut dunning: Vec<DunningStep> = Vec::new();
    for d in files {
        let span = d.span();
        let d = d.into_inner();
        let mut bad =
            |m: String| problems.push(RuleProblem { span: span.clone(), message: format!("dunning {}: {m}", d.id) });
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
    dunning
}

fn documents_push(d: DocumentsFile, problems: &mut Vec<RuleProblem>) -> Option<(ConnectorId, String)> {
    match d.push.connector.parse::<ConnectorId>() {
        Ok(c) => Some((c, d.push.operation)),
        Err(e) => {
            problems.push(RuleProblem { span: 0..0, message: format!("documents.push: {e}") });
            None
        }
    }
}

fn reconciliation(r: Spanned<ReconciliationFile>, problems: &mut Vec<RuleProblem>) -> Option<Reconciliation> {
    let span = r.span();
    let r = r.into_inner();
    let mut bad =
        |m: String| problems.push(RuleProblem { span: span.clone(), message: format!("reconciliation: {m}") });
    let schedule = crate::schedule::from_config(None, Some(&r.cron), 86_400).map_err(&mut bad).ok();
    let mut checks = Vec::new();
    for c in r.checks {
        for state in c.expect.keys() {
            if !STATE_NAMES.contains(&state.as_str()) {
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
}

fn sla(file: Option<Spanned<SlaFile>>, problems: &mut Vec<RuleProblem>) -> SlaRules {
    match file {
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
    }
}

impl SlaFile {
    /// The SLA section; each problem is a message (the section's span locates it).
    fn validate(self) -> Result<SlaRules, Vec<String>> {
        let mut problems = Vec::new();
        let mut cal = crate::engine::calendar::Calendar::office(chrono_tz::Asia::Shanghai);
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
