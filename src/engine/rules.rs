//! Screening rules, the approval route and effect rules, as loaded from
//! `config/rules.toml`. Pure: evaluation takes an order and returns data.
//!
//! This is the first, deliberately small rule set (fixed checks with parameters);
//! the decision-table engine replaces `ScreeningRule::check` without changing the
//! seam: `Rules::screen` and `Rules::route`.

use serde::{Deserialize, Serialize};

use super::lifecycle::{RuleHit, Severity};
use crate::domain::{ConnectorId, CreditRating, Money, Order, ProductType};

/// The loaded, validated rule set. `version` is recorded in every decision.
#[derive(Clone, Debug)]
pub struct Rules {
    pub version: String,
    pub screening: Vec<ScreeningRule>,
    pub approval: ApprovalRules,
    pub effects: Vec<EffectRule>,
    pub survey: SurveyRules,
    /// Who hears about what (`config/notifications.toml`, with the directory).
    pub notify: std::sync::Arc<super::notify::Notifications>,
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

#[derive(Clone, Debug)]
pub struct ScreeningRule {
    pub id: String,
    pub severity: Severity,
    pub message: String,
    pub check: Check,
}

/// The checks this rule set knows. Each fires (returns a hit) when the order fails it.
#[derive(Clone, Debug)]
pub enum Check {
    /// The source system must say KYC is complete.
    KycVerified,
    /// An ID document must be present and, for Chinese resident IDs, pass its checksum.
    IdDocumentValid,
    /// Amount at most `limit` for `product` (all products when `None`). A different
    /// currency cannot be compared, so it fires too.
    MaxAmount {
        product: Option<ProductType>,
        limit: Money,
    },
    MaxTermMonths {
        product: Option<ProductType>,
        months: u32,
    },
    /// Credit rating `floor` or better; a missing rating fires.
    MinCreditRating {
        floor: CreditRating,
    },
}

#[derive(Clone, Debug)]
pub struct ApprovalRules {
    /// Orders up to this amount are approved automatically on behalf of `auto_role`.
    pub auto_approve_up_to: Option<Money>,
    pub auto_role: String,
    pub levels: Vec<ApprovalLevel>,
}

#[derive(Clone, Debug)]
pub struct ApprovalLevel {
    pub role: String,
    /// The level is part of the chain when the amount is above this (always, when `None`).
    pub above: Option<Money>,
}

/// "When an order enters state `on` (or event `on` is recorded), push `operation` to
/// `connector`."
#[derive(Clone, Debug)]
pub struct EffectRule {
    pub on: String,
    pub connector: ConnectorId,
    pub operation: String,
}

/// What screening concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Screening {
    Passed,
    Flagged(Vec<RuleHit>),
    Rejected(Vec<RuleHit>),
}

/// The approval route an order takes: roles in order, or automatic approval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub chain: Vec<String>,
    /// When set, level 1 is approved automatically on behalf of this role.
    pub auto_on_behalf_of: Option<String>,
    pub reason: String,
}

impl Rules {
    pub fn screen(&self, order: &Order) -> Screening {
        let fired: Vec<RuleHit> = self
            .screening
            .iter()
            .filter(|r| r.check.fires(order))
            .map(|r| RuleHit { rule_id: r.id.clone(), severity: r.severity, message: r.message.clone() })
            .collect();
        if fired.is_empty() {
            Screening::Passed
        } else if fired.iter().any(|h| h.severity == Severity::Reject) {
            Screening::Rejected(fired)
        } else {
            Screening::Flagged(fired)
        }
    }

    pub fn route(&self, order: &Order) -> Route {
        let a = &self.approval;
        if let Some(limit) = &a.auto_approve_up_to
            && order.amount.partial_cmp_same(limit).is_some_and(|o| o.is_le())
        {
            return Route {
                chain: vec![a.auto_role.clone()],
                auto_on_behalf_of: Some(a.auto_role.clone()),
                reason: format!("amount {} is at most the automatic approval limit {limit}", order.amount),
            };
        }
        // A threshold in another currency cannot be compared; include the level (safe side).
        let chain: Vec<String> = a
            .levels
            .iter()
            .filter(|l| l.above.as_ref().is_none_or(|t| order.amount.partial_cmp_same(t).is_none_or(|o| o.is_gt())))
            .map(|l| l.role.clone())
            .collect();
        let reason = format!("amount {} routes through {} level(s)", order.amount, chain.len());
        Route { chain, auto_on_behalf_of: None, reason }
    }
}

impl Check {
    pub fn fires(&self, o: &Order) -> bool {
        let applies = |p: &Option<ProductType>| p.is_none_or(|p| p == o.product.kind);
        match self {
            Check::KycVerified => !o.customer.kyc_verified,
            Check::IdDocumentValid => match &o.customer.id_document {
                None => true,
                Some(d) => !d.checksum_ok(),
            },
            Check::MaxAmount { product, limit } => {
                applies(product) && o.amount.partial_cmp_same(limit).is_none_or(|c| c.is_gt())
            }
            Check::MaxTermMonths { product, months } => {
                applies(product) && o.term_months.is_some_and(|t| t.get() > *months)
            }
            Check::MinCreditRating { floor } => o.customer.credit_rating.is_none_or(|r| !r.at_least(*floor)),
        }
    }
}

/// `config/rules.toml` as written. Amounts are strings; `validate` turns this into `Rules`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    /// Recorded in every decision; change it with every edit.
    pub version: toml::Spanned<String>,
    #[serde(default)]
    pub screening: Vec<toml::Spanned<ScreeningRuleFile>>,
    pub approval: ApprovalFile,
    #[serde(default)]
    pub effects: Vec<toml::Spanned<EffectRuleFile>>,
    #[serde(default)]
    pub survey: Option<toml::Spanned<SurveyFile>>,
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
    /// `kyc_verified`, `id_document_valid`, `max_amount`, `max_term_months`, `min_credit_rating`.
    pub check: String,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    pub message: String,
    pub product_type: Option<String>,
    pub amount: Option<String>,
    pub currency: Option<String>,
    pub months: Option<u32>,
    pub rating: Option<String>,
}

fn default_severity() -> Severity {
    Severity::Flag
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoneyFile {
    pub amount: String,
    pub currency: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalFile {
    pub auto_approve_up_to: Option<toml::Spanned<MoneyFile>>,
    #[serde(default = "default_auto_role")]
    pub auto_approver_role: String,
    #[serde(default)]
    pub levels: Vec<toml::Spanned<LevelFile>>,
}

fn default_auto_role() -> String {
    "line_supervisor".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelFile {
    pub role: String,
    pub above: Option<MoneyFile>,
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

fn money_of(m: &MoneyFile) -> Result<Money, String> {
    Money::parse(&m.amount, &m.currency).map_err(|e| e.to_string())
}

impl RulesFile {
    /// Meaning checks (no I/O). Every problem is returned, not only the first.
    pub fn validate(self) -> Result<Rules, Vec<RuleProblem>> {
        let mut problems = Vec::new();
        let mut screening = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for r in self.screening {
            let span = r.span();
            let r = r.into_inner();
            let mut bad = |m: String| problems.push(RuleProblem { span: span.clone(), message: m });
            if !seen.insert(r.id.clone()) {
                bad(format!("screening rule id `{}` is used twice", r.id));
            }
            let product = match r.product_type.as_deref().map(str::parse::<ProductType>) {
                None => None,
                Some(Ok(p)) => Some(p),
                Some(Err(e)) => {
                    bad(format!("rule {}: product_type {e}", r.id));
                    continue;
                }
            };
            let check = match r.check.as_str() {
                "kyc_verified" => Check::KycVerified,
                "id_document_valid" => Check::IdDocumentValid,
                "max_amount" => match (&r.amount, &r.currency) {
                    (Some(a), Some(c)) => match Money::parse(a, c) {
                        Ok(limit) => Check::MaxAmount { product, limit },
                        Err(e) => {
                            bad(format!("rule {}: {e}", r.id));
                            continue;
                        }
                    },
                    _ => {
                        bad(format!("rule {}: check max_amount needs `amount` and `currency`", r.id));
                        continue;
                    }
                },
                "max_term_months" => match r.months {
                    Some(months) => Check::MaxTermMonths { product, months },
                    None => {
                        bad(format!("rule {}: check max_term_months needs `months`", r.id));
                        continue;
                    }
                },
                "min_credit_rating" => match r.rating.as_deref().map(str::parse::<CreditRating>) {
                    Some(Ok(floor)) => Check::MinCreditRating { floor },
                    Some(Err(e)) => {
                        bad(format!("rule {}: rating {e}", r.id));
                        continue;
                    }
                    None => {
                        bad(format!("rule {}: check min_credit_rating needs `rating`", r.id));
                        continue;
                    }
                },
                other => {
                    bad(format!(
                        "rule {}: unknown check `{other}` (expected kyc_verified, id_document_valid, max_amount, max_term_months, min_credit_rating)",
                        r.id
                    ));
                    continue;
                }
            };
            screening.push(ScreeningRule { id: r.id, severity: r.severity, message: r.message, check });
        }

        let auto_approve_up_to = match self.approval.auto_approve_up_to {
            None => None,
            Some(m) => match money_of(m.get_ref()) {
                Ok(m) => Some(m),
                Err(e) => {
                    problems.push(RuleProblem { span: m.span(), message: format!("auto_approve_up_to: {e}") });
                    None
                }
            },
        };
        let mut levels = Vec::new();
        for l in self.approval.levels {
            let span = l.span();
            let l = l.into_inner();
            let above = match l.above.as_ref().map(money_of) {
                None => None,
                Some(Ok(m)) => Some(m),
                Some(Err(e)) => {
                    problems.push(RuleProblem { span, message: format!("level {}: above: {e}", l.role) });
                    continue;
                }
            };
            levels.push(ApprovalLevel { role: l.role, above });
        }
        if levels.len() > 10 {
            problems.push(RuleProblem { span: 0..0, message: "at most 10 approval levels".into() });
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

        if problems.is_empty() {
            Ok(Rules {
                version: self.version.into_inner(),
                screening,
                approval: ApprovalRules { auto_approve_up_to, auto_role: self.approval.auto_approver_role, levels },
                effects,
                survey,
                notify: Default::default(),
            })
        } else {
            Err(problems)
        }
    }
}
