//! Feedback on the process (seed §五): what staff and customers report through the
//! feedback form (`http::feedback`), kept in the store's job rows on every backend
//! (`feedback:seq`, the last number given, and `feedback:<n>`, one report each, its
//! number also spent as a single-use key so two daemons never share one), with
//! the thank-you mail to its author queued in the same commit (the mail connector
//! sends it; retries and dead letters apply). A report that names an order also
//! appends `feedback_received` (its number, category and channel; the author is the
//! entry's actor, the text stays in the report) to that order's audit trail in the
//! same commit: lock → load → `engine::decide` → commit, like every other step.
//! Listed newest first for the process owner and counted per category for a period
//! in the KPI page, `GET /api/reports/kpis` and the scheduled report mail.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{OrderError, Orders, case, step_for};
use crate::analytics::report::FeedbackCounts;
use crate::domain::OrderId;
use crate::engine::access::{Acting, Channel};
use crate::engine::{Actor, History, OrderEvent, Rules};
use crate::store::{EffectId, EffectRecord, Loaded, OutboxChange, Step, StoreError, UsedLink};

/// Longest feedback text kept, in characters.
pub(crate) const MAX_TEXT: usize = 2000;
/// The job row holding the last feedback number given.
const SEQ: &str = "feedback:seq";
/// Most reports a listing reads (newest first).
const LIST_LIMIT: u64 = 500;
/// Feedback acknowledgements are numbered apart from other order-less mail.
const ACK_SEQ_BASE: u32 = 2_000_000_000;
const ACK_INDEX: u16 = u16::MAX - 1;

/// What the feedback is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Category {
    Problem,
    Suggestion,
    Complaint,
}

impl Category {
    pub(crate) const ALL: [Category; 3] = [Category::Problem, Category::Suggestion, Category::Complaint];

    pub(crate) fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Category::Problem => "problem",
            Category::Suggestion => "suggestion",
            Category::Complaint => "complaint",
        }
    }
}

/// One report, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Feedback {
    pub(crate) id: u64,
    pub(crate) at: DateTime<Utc>,
    pub(crate) category: Category,
    pub(crate) order_id: Option<OrderId>,
    /// A directory id (staff) or an e-mail address (a customer).
    pub(crate) author: String,
    /// Where the author's acknowledgement goes.
    pub(crate) email: String,
    /// `mail` (a staff mail's link), `console` (signed in) or `customer`.
    pub(crate) channel: String,
    pub(crate) text: String,
}

/// What a form gave, before it is numbered.
pub(crate) struct NewFeedback {
    pub(crate) category: Category,
    pub(crate) order_id: Option<OrderId>,
    pub(crate) author: String,
    pub(crate) email: String,
    pub(crate) channel: &'static str,
    pub(crate) text: String,
}

/// The thank-you mail, rendered in the author's language by the caller for its number.
pub(crate) struct Ack {
    pub(crate) subject: String,
    pub(crate) text: String,
}

fn row_key(n: u64) -> String {
    format!("feedback:{n}")
}

static SUBMIT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The commit of report `n`: its row, the number, its spent key and the thank-you mail.
fn numbered(f: &NewFeedback, n: u64, ack: Ack, now: DateTime<Utc>) -> Step {
    let stored = Feedback {
        id: n,
        at: now,
        category: f.category,
        order_id: f.order_id,
        author: f.author.clone(),
        email: f.email.clone(),
        channel: f.channel.to_owned(),
        text: f.text.clone(),
    };
    let id = EffectId {
        order_id: OrderId::nil(),
        seq: ACK_SEQ_BASE.saturating_add(u32::try_from(n).unwrap_or(u32::MAX - ACK_SEQ_BASE)),
        index: ACK_INDEX,
    };
    let effect = EffectRecord {
        idempotency_key: format!("orderbridge:{id}"),
        id,
        connector: crate::engine::notify::MAIL_CONNECTOR.parse().expect("valid id"),
        operation: "feedback_ack".into(),
        cause: "feedback".into(),
        body: json!({
            "effect_id": id.to_string(),
            "plain": {"to": stored.email, "subject": ack.subject, "text": ack.text},
            "created_at": now,
        }),
        attempts: 0,
        next_at: now,
        created_at: now,
        last_error: None,
    };
    let row = serde_json::to_value(&stored).expect("feedback serialises");
    Step {
        outbox: vec![OutboxChange::Add(effect)],
        spend: Some((row_key(n), UsedLink { at: now, order_id: OrderId::nil(), seq: 0 })),
        jobs: vec![(SEQ.to_owned(), json!(n)), (row_key(n), row)],
        ..Step::default()
    }
}

impl NewFeedback {
    /// Who the order's trail names: the directory person, or the customer's address
    /// as a survey answer records it; the channel is the door they came through.
    fn acting(&self) -> Acting {
        let channel = if self.channel == "console" { Channel::Console } else { Channel::MailLink };
        Acting { actor: Actor::Person(self.author.clone()), channel: Some(channel) }
    }
}

impl Orders {
    /// Stores `f` under the next number and queues its acknowledgement, in one commit;
    /// a report on an order appends `feedback_received` to its trail in that commit.
    /// The caller has checked the text and the order.
    pub(crate) async fn add_feedback(
        &self,
        f: NewFeedback,
        ack: impl Fn(u64) -> Ack,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<u64, OrderError> {
        let _g = SUBMIT.lock().await;
        let _order = match f.order_id {
            Some(id) => Some(self.lock_order(id).await),
            None => None,
        };
        // Each number is also spent as a single-use key: another daemon on the same
        // database that took it first makes this commit a conflict, and the next is
        // tried (as is a step that lost a race for the order).
        let mut tries = 0;
        loop {
            let last = self.store.job_state(SEQ).await?.and_then(|v| v.as_u64()).unwrap_or(0);
            let n = last + 1;
            let step = self.on_order(&f, n, numbered(&f, n, ack(n), now), rules, now).await?;
            match self.commit(vec![step]).await {
                Ok(()) => {
                    tracing::info!(
                        feedback = n,
                        channel = f.channel,
                        category = f.category.as_str(),
                        "feedback received"
                    );
                    return Ok(n);
                }
                Err(StoreError::Conflict(reason)) if tries < 3 => {
                    tries += 1;
                    tracing::debug!(feedback = n, %reason, "feedback number or order taken by another step; tried again");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// `report` with the order's `feedback_received` entry, as the engine decides it
    /// (no order named: `report` as it is). The caller holds the order's lock.
    async fn on_order(
        &self,
        f: &NewFeedback,
        n: u64,
        report: Step,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<Step, OrderError> {
        let Some(id) = f.order_id else { return Ok(report) };
        let rec = self.load(id).await?;
        let event = OrderEvent::FeedbackReceived {
            feedback: n,
            category: f.category.as_str().to_owned(),
            channel: f.channel.to_owned(),
        };
        let Acting { actor, channel } = f.acting();
        let history = History::default();
        let mut decision = crate::engine::decide(&case(&rec, &history), actor.clone(), event, rules, now)?;
        decision.audit.iter_mut().filter(|e| e.actor == actor).for_each(|e| e.channel = channel);
        let loaded = Loaded::of(&rec);
        let mut step = step_for(rec, Some(loaded), decision, now);
        step.outbox.extend(report.outbox);
        step.jobs.extend(report.jobs);
        step.spend = report.spend;
        Ok(step)
    }

    /// Feedback newest first (at most the last `LIST_LIMIT`), only `order`'s if given.
    pub(crate) async fn feedback(&self, order: Option<OrderId>) -> Result<Vec<Feedback>, OrderError> {
        let last = self.store.job_state(SEQ).await?.and_then(|v| v.as_u64()).unwrap_or(0);
        let mut out = Vec::new();
        for n in (last.saturating_sub(LIST_LIMIT) + 1..=last).rev() {
            let Some(v) = self.store.job_state(&row_key(n)).await? else { continue };
            match serde_json::from_value::<Feedback>(v) {
                Ok(f) if order.is_none() || f.order_id == order => out.push(f),
                Ok(_) => {}
                Err(e) => tracing::warn!(feedback = n, error = %e, "a feedback row does not read; left out"),
            }
        }
        Ok(out)
    }

    /// How much feedback came in within `[from, to)`, per category.
    pub(crate) async fn feedback_counts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<FeedbackCounts, OrderError> {
        Ok(count(&self.feedback(None).await?, from, to))
    }
}

/// The reports of `all` made within `[from, to)`, per category.
fn count(all: &[Feedback], from: DateTime<Utc>, to: DateTime<Utc>) -> FeedbackCounts {
    let mut c = FeedbackCounts::default();
    for f in all.iter().filter(|f| f.at >= from && f.at < to) {
        match f.category {
            Category::Problem => c.problem += 1,
            Category::Suggestion => c.suggestion += 1,
            Category::Complaint => c.complaint += 1,
        }
        c.total += 1;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_read_back_and_nothing_else_does() {
        for c in Category::ALL {
            assert_eq!(Category::parse(c.as_str()), Some(c));
        }
        assert_eq!(Category::parse("praise"), None);
        assert_eq!(Category::parse(""), None);
    }

    #[test]
    fn a_period_counts_from_its_first_instant_up_to_its_end_excluded() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let report = |id, category, when: &str| Feedback {
            id,
            at: at(when),
            category,
            order_id: None,
            author: "wang.fang".into(),
            email: "wang.fang@bank.example".into(),
            channel: "mail".into(),
            text: "慢".into(),
        };
        let all = [
            report(1, Category::Problem, "2026-11-22T15:59:59Z"),
            report(2, Category::Problem, "2026-11-22T16:00:00Z"),
            report(3, Category::Complaint, "2026-11-29T15:59:59Z"),
            report(4, Category::Suggestion, "2026-11-29T16:00:00Z"),
        ];
        let c = count(&all, at("2026-11-22T16:00:00Z"), at("2026-11-29T16:00:00Z"));
        assert_eq!(c, FeedbackCounts { problem: 1, suggestion: 0, complaint: 1, total: 2 });
        let json = serde_json::to_value(c).unwrap();
        assert_eq!(json, json!({"problem": 1, "suggestion": 0, "complaint": 1, "total": 2}));
    }
}
