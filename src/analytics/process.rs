//! Bottleneck analysis (seed §六–七): the process map as the orders walked it, where
//! they waited longest, and the distinct paths they took.
//!
//! - **Map**: places (states, approval levels apart) as nodes, observed moves as arcs
//!   with how often and how long the order stayed before moving (median, p90).
//! - **Bottlenecks**: the places the firm's people work in, ranked by the business
//!   hours orders spent there in total: each approval level, review, exceptions,
//!   delivery and acceptance, and each department's tasks (the `executing` state is
//!   made of its tasks, so it is counted by department). Waiting for the customer to
//!   pay (`invoiced`, `overdue`) is the invoice-to-cash KPI, not a bottleneck.
//! - **Approvers**: the people whose decisions orders waited longest for.
//! - **Variants**: the distinct paths, most frequent first.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Serialize;

use super::journey::{Decided, Journey, Span};
use super::stats::{Summary, share};
use crate::engine::calendar::Calendar;

/// How many bottlenecks, approvers and variants a report lists.
pub(crate) const TOP: usize = 10;

/// Places that are not the firm's work: the end of the road, or the customer's turn.
const NOT_WORK: &[&str] = &["executing", "invoiced", "overdue", "paid", "closed", "archived", "cancelled", "rejected"];

/// One observed move of the map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Arc {
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) count: u64,
    /// The stay in `from` before the move, wall clock.
    pub(crate) median_s: i64,
    pub(crate) p90_s: i64,
}

/// A place where orders wait for the firm's people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Bottleneck {
    /// `stage` (a place of the map) or `department`.
    pub(crate) kind: &'static str,
    pub(crate) name: String,
    /// The stays' (or tasks') time in business hours.
    pub(crate) business_hours: Summary,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Variant {
    pub(crate) path: Vec<String>,
    pub(crate) orders: u64,
    pub(crate) share: Option<Decimal>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Process {
    pub(crate) arcs: Vec<Arc>,
    pub(crate) bottlenecks: Vec<Bottleneck>,
    /// Approvers by the business hours orders waited for their decisions.
    pub(crate) approvers: Vec<Bottleneck>,
    pub(crate) variants: Vec<Variant>,
    /// Distinct paths in all.
    pub variant_count: u64,
}

impl Process {
    pub(crate) fn of(journeys: &[Journey], calendar: &Calendar) -> Process {
        let (variants, variant_count) = variants(journeys);
        Process {
            arcs: arcs(journeys),
            bottlenecks: bottlenecks(journeys, calendar),
            approvers: approvers(journeys, calendar),
            variants,
            variant_count,
        }
    }
}

fn arcs(journeys: &[Journey]) -> Vec<Arc> {
    let mut moves: BTreeMap<(&str, &str), Vec<i64>> = BTreeMap::new();
    for j in journeys {
        for pair in j.stays.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let stayed = a.to.map_or(0, |to| (to - a.from).num_seconds());
            moves.entry((&a.node, &b.node)).or_default().push(stayed);
        }
    }
    let mut out: Vec<Arc> = moves
        .into_iter()
        .map(|((from, to), stays)| {
            let s = Summary::of(stays);
            Arc { from: from.to_owned(), to: to.to_owned(), count: s.count, median_s: s.median_s, p90_s: s.p90_s }
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| (&a.from, &a.to).cmp(&(&b.from, &b.to))));
    out
}

type Spans<'a> = BTreeMap<(&'static str, &'a str), Vec<Span>>;

fn ranked(spans: Spans<'_>, calendar: &Calendar) -> Vec<Bottleneck> {
    let mut out: Vec<Bottleneck> = spans
        .into_iter()
        .map(|((kind, name), v)| Bottleneck {
            kind,
            name: name.to_owned(),
            business_hours: Summary::of(
                v.into_iter().map(|(a, b)| calendar.working_between(a, b).num_seconds()).collect(),
            ),
        })
        .collect();
    out.sort_by(|a, b| b.business_hours.total_s.cmp(&a.business_hours.total_s).then_with(|| a.name.cmp(&b.name)));
    out.truncate(TOP);
    out
}

fn bottlenecks(journeys: &[Journey], calendar: &Calendar) -> Vec<Bottleneck> {
    let mut spans: Spans<'_> = BTreeMap::new();
    for j in journeys {
        for s in j.stays.iter().filter(|s| !NOT_WORK.contains(&s.node.as_str())) {
            if let Some(to) = s.to {
                spans.entry(("stage", &s.node)).or_default().push((s.from, to));
            }
        }
        for t in &j.tasks {
            if let Some(to) = t.to {
                spans.entry(("department", &t.department)).or_default().push((t.from, to));
            }
        }
    }
    ranked(spans, calendar)
}

fn approvers(journeys: &[Journey], calendar: &Calendar) -> Vec<Bottleneck> {
    let mut spans: Spans<'_> = BTreeMap::new();
    for w in journeys.iter().flat_map(|j| &j.approvals) {
        if let Some((to, Decided::By { actor, .. })) = &w.to
            && actor != "system"
        {
            spans.entry(("approver", actor)).or_default().push((w.from, *to));
        }
    }
    ranked(spans, calendar)
}

fn variants(journeys: &[Journey]) -> (Vec<Variant>, u64) {
    let mut paths: BTreeMap<Vec<&str>, u64> = BTreeMap::new();
    for j in journeys {
        *paths.entry(j.path()).or_insert(0) += 1;
    }
    let distinct = u64::try_from(paths.len()).unwrap_or(u64::MAX);
    let total = u64::try_from(journeys.len()).unwrap_or(u64::MAX);
    let mut out: Vec<Variant> = paths
        .into_iter()
        .map(|(path, orders)| Variant {
            path: path.into_iter().map(str::to_owned).collect(),
            orders,
            share: share(orders, total),
        })
        .collect();
    out.sort_by(|a, b| b.orders.cmp(&a.orders).then_with(|| a.path.cmp(&b.path)));
    out.truncate(TOP);
    (out, distinct)
}
