//! Key performance indicators of a set of journeys (seed §五: approval duration, order
//! processing time, customer satisfaction, and what drives them). Every figure comes
//! from the audit trail, so a restart changes none of them.
//!
//! Durations are given twice where people's time matters: `elapsed` (wall clock) and
//! `business_hours` (the `[sla]` calendar: opening hours on working days only).
//! Satisfaction splits the 1–5 score NPS-style: 5 promotes, 4 is passive, 1–3 detract;
//! `net` is promoters minus detractors per 100 answers.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Serialize;

use super::journey::{Decided, Journey, Span};
use super::stats::{Summary, mean, per_100, share};
use crate::engine::calendar::Calendar;

/// A duration both ways.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Timing {
    pub(crate) elapsed: Summary,
    pub(crate) business_hours: Summary,
}

impl Timing {
    fn of(spans: impl Iterator<Item = Span>, calendar: &Calendar) -> Timing {
        let (elapsed, working): (Vec<i64>, Vec<i64>) =
            spans.map(|(a, b)| ((b - a).num_seconds(), calendar.working_between(a, b).num_seconds())).unzip();
        Timing { elapsed: Summary::of(elapsed), business_hours: Summary::of(working) }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Processing {
    /// Received → execution started.
    pub(crate) to_executing: Timing,
    /// Received → closed.
    pub(crate) to_closed: Timing,
}

/// An approval level's or an approver's decisions and the wait before each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Decisions {
    /// The level (`1`, `2`…) or the approver's address.
    pub(crate) key: String,
    pub(crate) approved: u64,
    pub(crate) declined: u64,
    pub(crate) wait: Timing,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Satisfaction {
    pub(crate) answers: u64,
    pub(crate) average: Option<Decimal>,
    pub(crate) promoters: u64,
    pub(crate) passives: u64,
    pub(crate) detractors: u64,
    pub(crate) net: Option<Decimal>,
    pub(crate) complaints: u64,
}

/// The headline figures of one group of orders (a product, a sales owner…).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Headline {
    pub(crate) key: String,
    pub(crate) orders: u64,
    pub(crate) closed: u64,
    /// Median received → closed, wall clock.
    pub(crate) to_closed_median_s: Option<i64>,
    /// Median wait of an approval level, business hours.
    pub(crate) approval_median_s: Option<i64>,
    pub(crate) exceptions_per_100: Option<Decimal>,
    pub(crate) satisfaction: Option<Decimal>,
    pub(crate) overdue_ratio: Option<Decimal>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Kpis {
    pub orders: u64,
    /// Orders that ended, by the state they ended in.
    pub(crate) ended: BTreeMap<String, u64>,
    pub(crate) processing: Processing,
    pub(crate) approval_levels: Vec<Decisions>,
    pub(crate) approvers: Vec<Decisions>,
    /// Time in each place of the process map (`awaiting_approval.2`, `manual_review`…).
    pub(crate) stages: BTreeMap<String, Timing>,
    /// Tasks by department, assigned → completed.
    pub(crate) departments: BTreeMap<String, Timing>,
    /// Approval levels and exceptions that ran past their deadline.
    pub(crate) sla_breaches: u64,
    /// Of the orders approved, those approved automatically.
    pub(crate) auto_approval_share: Option<Decimal>,
    /// Returns from review and voided approval chains.
    pub(crate) rework: u64,
    pub(crate) rework_per_100: Option<Decimal>,
    pub(crate) exceptions_per_100: Option<Decimal>,
    /// Invoice issued → settled.
    pub(crate) invoice_to_cash: Summary,
    /// Of the invoices issued, those that fell overdue.
    pub(crate) overdue_ratio: Option<Decimal>,
    /// Of the orders dunned, those paid afterwards.
    pub(crate) dunning_success: Option<Decimal>,
    pub(crate) satisfaction: Satisfaction,
    pub(crate) tickets_per_100: Option<Decimal>,
    pub(crate) by_product: Vec<Headline>,
    pub(crate) by_sales_owner: Vec<Headline>,
    pub(crate) by_rating: Vec<Headline>,
    pub(crate) by_month: Vec<Headline>,
}

/// The month (`2026-11`, in the calendar's time zone) an order was received in.
pub(crate) fn month(j: &Journey, calendar: &Calendar) -> String {
    j.received.map_or_else(|| "-".to_owned(), |r| r.with_timezone(&calendar.tz).format("%Y-%m").to_string())
}

impl Kpis {
    pub(crate) fn of(journeys: &[Journey], calendar: &Calendar) -> Kpis {
        let n = count(journeys.iter());
        let mut ended = BTreeMap::new();
        for (state, _) in journeys.iter().filter_map(|j| j.ended) {
            *ended.entry(state.to_owned()).or_insert(0) += 1;
        }
        let approved = count(journeys.iter().filter(|j| j.stays.iter().any(|s| s.node == "approved")));
        let auto = count(journeys.iter().filter(|j| j.auto_approved));
        let invoiced = count(journeys.iter().filter(|j| j.invoiced.is_some()));
        let dunned = journeys.iter().filter(|j| j.dunning_steps > 0);
        let rework: u64 = journeys.iter().map(|j| u64::from(j.reviews_returned + j.approvals_voided)).sum();
        let exceptions: u64 = journeys.iter().map(|j| u64::from(j.exceptions)).sum();
        let group = |key: &dyn Fn(&Journey) -> String| headlines(journeys, calendar, key);
        Kpis {
            orders: n,
            ended,
            processing: Processing {
                to_executing: Timing::of(journeys.iter().filter_map(|j| Some((j.received?, j.executing?))), calendar),
                to_closed: Timing::of(journeys.iter().filter_map(|j| Some((j.received?, j.closed?))), calendar),
            },
            approval_levels: decisions(journeys, calendar, |level, _| Some(level.to_string())),
            approvers: decisions(journeys, calendar, |_, actor| (actor != "system").then(|| actor.to_owned())),
            stages: stages(journeys, calendar),
            departments: departments(journeys, calendar),
            sla_breaches: journeys.iter().map(|j| u64::from(j.sla_breaches)).sum(),
            auto_approval_share: share(auto, approved),
            rework,
            rework_per_100: per_100(rework, n),
            exceptions_per_100: per_100(exceptions, n),
            invoice_to_cash: Summary::of(
                journeys.iter().filter_map(|j| Some((j.paid? - j.invoiced?).num_seconds())).collect(),
            ),
            overdue_ratio: share(count(journeys.iter().filter(|j| j.overdue)), invoiced),
            dunning_success: {
                let (paid, all) = dunned.fold((0, 0), |(p, a), j| (p + u64::from(j.paid.is_some()), a + 1));
                share(paid, all)
            },
            satisfaction: satisfaction(journeys),
            tickets_per_100: per_100(count(journeys.iter().filter(|j| j.ticket)), n),
            by_product: group(&|j| j.subject.product.clone()),
            by_sales_owner: group(&|j| j.subject.sales_owner.clone()),
            by_rating: group(&|j| j.subject.rating.clone()),
            by_month: group(&|j| month(j, calendar)),
        }
    }
}

fn count<'a>(it: impl Iterator<Item = &'a Journey>) -> u64 {
    u64::try_from(it.count()).unwrap_or(u64::MAX)
}

/// Decided approval waits grouped by `key(level, actor)` (`None`: left out).
fn decisions(journeys: &[Journey], calendar: &Calendar, key: impl Fn(u8, &str) -> Option<String>) -> Vec<Decisions> {
    let mut groups: BTreeMap<String, (u64, u64, Vec<Span>)> = BTreeMap::new();
    for wait in journeys.iter().flat_map(|j| &j.approvals) {
        let Some((to, Decided::By { actor, approved, .. })) = &wait.to else { continue };
        let Some(k) = key(wait.level, actor) else { continue };
        let g = groups.entry(k).or_default();
        if *approved {
            g.0 += 1;
        } else {
            g.1 += 1;
        }
        g.2.push((wait.from, *to));
    }
    groups
        .into_iter()
        .map(|(key, (approved, declined, spans))| Decisions {
            key,
            approved,
            declined,
            wait: Timing::of(spans.into_iter(), calendar),
        })
        .collect()
}

fn stages(journeys: &[Journey], calendar: &Calendar) -> BTreeMap<String, Timing> {
    let stays = journeys.iter().flat_map(|j| &j.stays);
    by_key(stays.filter_map(|s| Some((s.node.as_str(), (s.from, s.to?)))), calendar)
}

fn departments(journeys: &[Journey], calendar: &Calendar) -> BTreeMap<String, Timing> {
    let tasks = journeys.iter().flat_map(|j| &j.tasks);
    by_key(tasks.filter_map(|t| Some((t.department.as_str(), (t.from, t.to?)))), calendar)
}

/// The timing of the spans under each key.
fn by_key<'a>(spans: impl Iterator<Item = (&'a str, Span)>, calendar: &Calendar) -> BTreeMap<String, Timing> {
    let mut grouped: BTreeMap<&str, Vec<Span>> = BTreeMap::new();
    for (key, span) in spans {
        grouped.entry(key).or_default().push(span);
    }
    grouped.into_iter().map(|(k, v)| (k.to_owned(), Timing::of(v.into_iter(), calendar))).collect()
}

fn satisfaction(journeys: &[Journey]) -> Satisfaction {
    let scores: Vec<u8> = journeys.iter().filter_map(|j| j.survey.map(|(s, _)| s)).collect();
    let answers = u64::try_from(scores.len()).unwrap_or(u64::MAX);
    let promoters = u64::try_from(scores.iter().filter(|s| **s >= 5).count()).unwrap_or(0);
    let passives = u64::try_from(scores.iter().filter(|s| **s == 4).count()).unwrap_or(0);
    let detractors = answers - promoters - passives;
    Satisfaction {
        answers,
        average: mean(&scores),
        promoters,
        passives,
        detractors,
        net: (answers > 0).then(|| {
            let net = i64::try_from(promoters).unwrap_or(0) - i64::try_from(detractors).unwrap_or(0);
            (Decimal::from(net) * Decimal::ONE_HUNDRED / Decimal::from(answers)).round_dp(2).normalize()
        }),
        complaints: count(journeys.iter().filter(|j| j.survey.is_some_and(|(_, c)| c))),
    }
}

/// The headline figures of each group `key` makes, largest group first.
pub(crate) fn headlines(journeys: &[Journey], calendar: &Calendar, key: &dyn Fn(&Journey) -> String) -> Vec<Headline> {
    let mut groups: BTreeMap<String, Vec<&Journey>> = BTreeMap::new();
    for j in journeys {
        groups.entry(key(j)).or_default().push(j);
    }
    let mut out: Vec<Headline> = groups.into_iter().map(|(k, js)| headline(k, &js, calendar)).collect();
    out.sort_by(|a, b| b.orders.cmp(&a.orders).then_with(|| a.key.cmp(&b.key)));
    out
}

/// The headline figures of `journeys`.
pub(crate) fn headline(key: String, journeys: &[&Journey], calendar: &Calendar) -> Headline {
    let n = count(journeys.iter().copied());
    let closed: Vec<i64> = journeys.iter().filter_map(|j| Some((j.closed? - j.received?).num_seconds())).collect();
    let waits: Vec<i64> = journeys
        .iter()
        .flat_map(|j| &j.approvals)
        .filter_map(|w| match &w.to {
            Some((to, Decided::By { .. })) => Some(calendar.working_between(w.from, *to).num_seconds()),
            _ => None,
        })
        .collect();
    let scores: Vec<u8> = journeys.iter().filter_map(|j| j.survey.map(|(s, _)| s)).collect();
    let invoiced = count(journeys.iter().copied().filter(|j| j.invoiced.is_some()));
    Headline {
        key,
        orders: n,
        closed: u64::try_from(closed.len()).unwrap_or(0),
        to_closed_median_s: (!closed.is_empty()).then(|| Summary::of(closed.clone()).median_s),
        approval_median_s: (!waits.is_empty()).then(|| Summary::of(waits).median_s),
        exceptions_per_100: per_100(journeys.iter().map(|j| u64::from(j.exceptions)).sum(), n),
        satisfaction: mean(&scores),
        overdue_ratio: share(count(journeys.iter().copied().filter(|j| j.overdue)), invoiced),
    }
}
