//! The scheduler's step for scheduled management reports (`[[reports]]`): when a
//! report's stored due time has come, the brief of its period becomes one mail effect.
//!
//! Sent once per period: the job state `report:<name>` stores the next due time (so a
//! restart neither loses nor repeats one), and the step that queues the mail also
//! spends the single-use key `report:<name>:<first day>`, so of two daemons (or a
//! daemon whose job state went back) only one commits it. The effect's id and
//! idempotency key are computed from the report and the period alone.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{OrderError, Orders};
use crate::analytics::brief::Brief;
use crate::analytics::period::{Span, count_in};
use crate::analytics::{Journey, Report};
use crate::domain::OrderId;
use crate::engine::calendar::Calendar;
use crate::engine::directory::Directory;
use crate::locale::Locale;
use crate::reports::ReportSpec;
use crate::store::{EffectRecord, OutboxChange, Step, StoreError, UsedLink};

/// What the scheduled reports are sent with.
pub(crate) struct ReportContext<'a> {
    pub(crate) directory: &'a Directory,
    pub(crate) default_locale: Locale,
    pub(crate) calendar: &'a Calendar,
    /// When this daemon started: a report never due before is first due at its next
    /// run after this (not after the sweep that first sees it).
    pub(crate) since: DateTime<Utc>,
}

impl Orders {
    /// Queues the mail of every report whose due time has come; returns how many.
    ///
    /// # Errors
    /// A store that cannot be read or written (the next sweep tries again).
    pub(crate) async fn run_reports(
        &self,
        reports: &[ReportSpec],
        ctx: &ReportContext<'_>,
        now: DateTime<Utc>,
    ) -> Result<usize, OrderError> {
        let mut sent = 0;
        for spec in reports {
            if self.run_report(spec, ctx, now).await? {
                sent += 1;
            }
        }
        Ok(sent)
    }

    async fn run_report(
        &self,
        spec: &ReportSpec,
        ctx: &ReportContext<'_>,
        now: DateTime<Utc>,
    ) -> Result<bool, OrderError> {
        let tz = ctx.calendar.tz;
        let key = format!("report:{}", spec.name);
        let state = self.store.job_state(&key).await?;
        // A schedule changed since the due time was stored is due at its own next run.
        let due = state
            .as_ref()
            .filter(|s| s["schedule"] == spec.schedule_text.as_str())
            .and_then(|s| s["next_due"].as_str()?.parse::<DateTime<Utc>>().ok());
        let Some(due) = due else {
            let next = spec.schedule.next_after(ctx.since.min(now), tz);
            let value = json!({"schedule": spec.schedule_text, "next_due": next});
            self.commit(vec![Step { jobs: vec![(key, value)], ..Step::default() }]).await?;
            // Due already (this daemon started before it): the next sweep sends it.
            return Ok(false);
        };
        if due > now {
            return Ok(false);
        }
        let span = spec.period.before(due, tz);
        let once = spec.once_key(&span);
        let advance = (
            key,
            json!({"schedule": spec.schedule_text, "next_due": spec.schedule.next_after(now, tz), "last_period": span.first_day}),
        );
        let recipients = spec.recipients(ctx.directory, ctx.default_locale);
        if self.store.used(&once).await?.is_some() || recipients.is_empty() {
            if recipients.is_empty() {
                tracing::warn!(report = %spec.name, "a scheduled report's audience names nobody in the directory; not sent");
            }
            self.commit(vec![Step { jobs: vec![advance], ..Step::default() }]).await?;
            return Ok(false);
        }
        let brief = self.report_brief(spec, &span, ctx.calendar).await?;
        let id = spec.effect_id(&span);
        // One message for everyone: the report's language, else the first reader's.
        let locale = recipients.first().map_or(ctx.default_locale, |r| r.locale);
        let effect = EffectRecord {
            idempotency_key: format!("orderbridge:{once}"),
            id,
            connector: crate::engine::notify::MAIL_CONNECTOR.parse().expect("valid id"),
            operation: "report".into(),
            cause: "report".into(),
            body: json!({
                "effect_id": id.to_string(),
                "report": brief,
                "to": recipients,
                "locale": locale,
                "created_at": now,
            }),
            attempts: 0,
            next_at: now,
            created_at: now,
            last_error: None,
        };
        let step = Step {
            outbox: vec![OutboxChange::Add(effect)],
            spend: Some((once, UsedLink { at: now, order_id: OrderId::nil(), seq: 0 })),
            jobs: vec![advance],
            ..Step::default()
        };
        match self.commit(vec![step]).await {
            Ok(()) => {
                tracing::info!(report = %spec.name, from = %span.first_day, to = %span.last_day, "scheduled report queued");
                Ok(true)
            }
            // Another daemon queued this period first: nothing was written here.
            Err(StoreError::Conflict(reason)) => {
                tracing::debug!(report = %spec.name, %reason, "scheduled report already queued");
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The brief of `spec`'s period `span`: its report beside the period before, the
    /// orders received per hour or day, and the feedback reported in the period.
    ///
    /// # Errors
    /// A store that cannot be read.
    pub(crate) async fn report_brief(
        &self,
        spec: &ReportSpec,
        span: &Span,
        calendar: &Calendar,
    ) -> Result<Brief, OrderError> {
        let (before_from, before_to) = Report::previous_period(span.from, span.to);
        let (journeys, before) = tokio::join!(self.journeys(span.from, span.to), self.journeys(before_from, before_to));
        let (journeys, before) = (journeys?, before?);
        let mut report = Report::of(span.from, span.to, &journeys, &before, calendar);
        report.feedback = self.feedback_counts(span.from, span.to).await?;
        let buckets = spec.period.buckets(span, calendar.tz);
        let received = count_in(&buckets, span.to, journeys.iter().filter_map(|j: &Journey| j.received));
        Ok(Brief::of((&spec.name, &spec.period_text), span, calendar.tz, &report, &buckets, &received))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::store::{Options, Store};

    const DIRECTORY: &str = r#"
[[person]]
id = "gao.ming"
name = "高明"
email = "gao.ming@bank.example"
roles = ["management"]
"#;

    const REPORTS: &str = r#"
[[reports]]
name = "daily"
schedule = "0 8 * * *"
audience = ["role:management"]
period = "previous_day"
"#;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    async fn pending(store: &Arc<dyn Store>) -> Vec<EffectRecord> {
        store.pending_effects(100).await.unwrap()
    }

    /// Two application layers over one store, as two daemons on one database.
    #[tokio::test]
    async fn each_period_is_queued_once_even_when_its_due_time_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options::test_fjall(dir.path());
        let store = crate::store::open(&options, Arc::default()).await.unwrap();
        let (a, b) = (Orders::new(store.clone()), Orders::new(store.clone()));
        let directory = crate::directory::Directory::parse(Path::new("d.toml"), DIRECTORY).unwrap();
        let (reports, _) = crate::reports::parse(Path::new("n.toml"), REPORTS).unwrap();
        let calendar = Calendar::office(chrono_tz::Asia::Shanghai);
        // Started on Sunday; it is Monday 08:01 in Shanghai by the first sweep.
        let ctx = ReportContext {
            directory: &directory,
            default_locale: Locale::En,
            calendar: &calendar,
            since: at("2026-11-29T04:00:00Z"),
        };
        let monday = at("2026-11-30T00:01:00Z");
        // The first sweep stores the due time (Monday 08:00, after the start), the next sends.
        assert_eq!(a.run_reports(&reports, &ctx, monday).await.unwrap(), 0);
        assert_eq!(a.run_reports(&reports, &ctx, monday).await.unwrap(), 1);
        assert_eq!(a.run_reports(&reports, &ctx, monday).await.unwrap(), 0, "due again tomorrow");
        let queued = pending(&store).await;
        assert_eq!(queued.len(), 1);
        let e = &queued[0];
        assert_eq!(e.idempotency_key, "orderbridge:report:daily:2026-11-29");
        assert_eq!(e.body["report"]["first_day"], "2026-11-29");
        assert_eq!(e.body["to"][0]["email"], "gao.ming@bank.example");
        assert_eq!(e.body["report"]["received"].as_array().unwrap().len(), 24, "hours of Sunday");

        // The stored due time goes back (a restored backup, a second daemon that read
        // it before the first wrote): both daemons sweep at once, nobody queues it again.
        let back = json!({"schedule": "0 8 * * *", "next_due": "2026-11-30T00:00:00Z"});
        store.commit(vec![Step { jobs: vec![("report:daily".into(), back)], ..Step::default() }]).await.unwrap();
        let (x, y) = tokio::join!(a.run_reports(&reports, &ctx, monday), b.run_reports(&reports, &ctx, monday));
        assert_eq!(x.unwrap() + y.unwrap(), 0);
        assert_eq!(pending(&store).await.len(), 1);

        // Tuesday 08:00: Monday's report, with an id and key of its own.
        let tuesday = at("2026-12-01T00:00:30Z");
        let (x, y) = tokio::join!(a.run_reports(&reports, &ctx, tuesday), b.run_reports(&reports, &ctx, tuesday));
        assert_eq!(x.unwrap() + y.unwrap(), 1, "one of the two daemons queues it");
        let queued = pending(&store).await;
        assert_eq!(queued.len(), 2);
        assert_ne!(queued[0].id, queued[1].id);
        assert!(queued.iter().any(|e| e.idempotency_key == "orderbridge:report:daily:2026-11-30"));
        store.close().await.unwrap();
    }
}
