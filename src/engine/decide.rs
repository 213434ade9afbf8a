//! `decide`: the pure heart of the daemon. Given an order, an event, the rules and the
//! time, it returns the next state, the audit entries and the effects to perform.
//!
//! It also runs the automatic steps that follow an event without waiting for anyone
//! (screening after intake, automatic approval of small orders), so one external
//! stimulus is one decision and one store transaction. No I/O here (invariant 6).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::approval::{ApprovalProgress, Escalation, Given, Refusal, Timer, TimerKind};
use super::dunning::DunningStep;
pub(crate) use super::effects::EffectSpec;
use super::fulfilment::{Fulfilment, Invoice, Match, OpenException, PaymentLine, Task, TaskDone};
use super::lifecycle::{Actor, IllegalTransition, OrderEvent, OrderState, triggers};
use super::rules::{NO_ROUTE, Rules};
use super::screening::Screening;
use super::screening::{RuleHit, Severity};
use super::table::{self, History};
use crate::domain::{Money, Order};

/// One audit entry before the store gives it a sequence number and a hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub(crate) at: DateTime<Utc>,
    pub(crate) actor: Actor,
    /// Set by the application layer on the acting principal's own entries.
    pub(crate) channel: Option<super::access::Channel>,
    pub event: OrderEvent,
    /// The state after this event.
    pub(crate) state: OrderState,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub next: OrderState,
    pub audit: Vec<AuditEntry>,
    pub(crate) effects: Vec<EffectSpec>,
    /// The approval chain in progress after this decision (stored on the order).
    pub(crate) approval: Option<ApprovalProgress>,
    /// The order's due times after this decision (they replace the stored ones).
    pub(crate) timers: Vec<Timer>,
    /// Tasks, exception, invoice and payments after this decision (stored on the order).
    pub(crate) fulfilment: Option<Fulfilment>,
    /// The configuration's version the decision was taken under (recorded on the
    /// step's first event); empty for bookkeeping.
    pub(crate) config_version: String,
}

/// What a decision looks at besides the event: the order as it stands.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Case<'a> {
    pub(crate) state: &'a OrderState,
    pub(crate) order: &'a Order,
    /// The customer's recent orders (velocity and duplicate rules).
    pub(crate) history: &'a History,
    pub(crate) approval: Option<&'a ApprovalProgress>,
    pub(crate) fulfilment: Option<&'a Fulfilment>,
}

/// Why nothing was decided.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    #[error("{0}")]
    Illegal(#[from] IllegalTransition),
    /// A person may not take this decision (not an approver, own order, …).
    #[error("{0}")]
    Refused(#[from] Refusal),
}

/// Applies `event` to an order, then every automatic step that follows.
///
/// A person's approval decision (`Approved`, `ApprovalDeclined`, `InfoRequested` by
/// `Actor::Person`) is checked here: the level must be the one waiting, the person
/// must hold one of its open roles (or stand in for an absent holder), must not own
/// the order and must not have approved it already. Their role is filled in, and an
/// approval that leaves an `all` level incomplete is recorded as `ApprovalGiven`.
///
/// # Errors
/// `Illegal` when `event` is not allowed in the state, `Refused` when the person may
/// not decide; nothing is decided then.
pub(crate) fn decide(
    case: &Case<'_>,
    actor: Actor,
    event: OrderEvent,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<Decision, DecideError> {
    let mut d = Decision {
        next: case.state.clone(),
        audit: Vec::new(),
        effects: Vec::new(),
        approval: case.approval.cloned(),
        timers: Vec::new(),
        fulfilment: case.fulfilment.cloned(),
        config_version: rules.config_version.clone(),
    };
    d.check_fulfilment(&event)?;
    let event = d.complete_payment(event)?;
    let event = match event {
        // A release from review takes the route the matrix gives now.
        OrderEvent::ReviewReleased { comment, chain } if chain.is_empty() => {
            let inputs = table::inputs(case.order, rules.watch_list.matches(case.order), case.history);
            let route = rules.route(&inputs).map_err(Refusal::NoRoute)?;
            OrderEvent::ReviewReleased { comment, chain: route.chain }
        }
        other => d.person_decision(case.order, &actor, other, rules, now)?,
    };
    d.apply(case.order, actor, event, rules, now)?;
    d.run_automatic(case.order, case.history, rules, now)?;
    d.timers = all_timers(&d.next, d.approval.as_ref(), d.fulfilment.as_ref(), case.order, rules);
    Ok(d)
}

/// Every due time of an order in `state`: approval reminders and escalations, the
/// deadline of an open exception, the invoice's due date, and the next dunning step.
pub(crate) fn all_timers(
    state: &OrderState,
    approval: Option<&ApprovalProgress>,
    fulfilment: Option<&Fulfilment>,
    order: &Order,
    rules: &Rules,
) -> Vec<Timer> {
    let mut out = approval.map(|p| p.timers(state, &rules.sla)).unwrap_or_default();
    let Some(f) = fulfilment else { return out };
    let timer = |due, kind, step: &str| Timer { due, kind, level: 0, round: 0, step: step.to_owned() };
    if let (OrderState::Exception { .. }, Some(e)) = (state, &f.exception)
        && e.escalated_to.is_none()
        && rules.exceptions.escalate_to.is_some()
    {
        out.push(timer(e.deadline, TimerKind::ExceptionDeadline, ""));
    }
    if let Some(inv) = &f.invoice {
        let overdue_from = end_of_day(inv.due, rules);
        match state {
            OrderState::Invoiced => out.push(timer(overdue_from, TimerKind::InvoiceDue, "")),
            OrderState::Overdue => {
                if let Some(step) = next_dunning_step(f, order, rules) {
                    let due = overdue_from + chrono::Duration::days(i64::from(step.days_overdue));
                    out.push(timer(due, TimerKind::Dunning, &step.id));
                }
            }
            _ => {}
        }
    }
    out
}

/// The first instant after the due day, in the site's time zone.
fn end_of_day(day: chrono::NaiveDate, rules: &Rules) -> DateTime<Utc> {
    use chrono::TimeZone as _;
    let next = day.succ_opt().unwrap_or(day).and_hms_opt(0, 0, 0).expect("midnight exists");
    rules
        .sla
        .calendar
        .tz
        .from_local_datetime(&next)
        .earliest()
        .map_or_else(|| next.and_utc(), |t| t.with_timezone(&Utc))
}

/// The next dunning step not yet sent that applies to the customer's rating.
fn next_dunning_step<'r>(f: &Fulfilment, order: &Order, rules: &'r Rules) -> Option<&'r DunningStep> {
    let rating = order.customer.credit_rating.map(|r| r.to_string());
    rules.dunning.iter().find(|s| {
        !f.dunning.contains(&s.id) && (s.ratings.is_empty() || rating.as_ref().is_some_and(|r| s.ratings.contains(r)))
    })
}

/// The event a due timer causes (the earliest one due at `now`), if any. Timers are
/// derived from the order, so a timer of a level that was decided meanwhile (or an
/// invoice paid meanwhile) no longer exists and fires nothing.
pub(crate) fn due_timer_event(case: &Case<'_>, rules: &Rules, now: DateTime<Utc>) -> Option<OrderEvent> {
    let mut timers = all_timers(case.state, case.approval, case.fulfilment, case.order, rules);
    timers.sort_by_key(|t| t.due);
    let t = timers.into_iter().find(|t| t.due <= now)?;
    Some(match t.kind {
        TimerKind::Remind => OrderEvent::ApprovalReminderDue { level: t.level },
        TimerKind::Escalate => {
            let from_role = case.approval?.answerable(t.level).unwrap_or_default();
            let to_role = rules.sla.escalate_to.get(&from_role).cloned().unwrap_or_default();
            OrderEvent::ApprovalEscalated { level: t.level, from_role, to_role }
        }
        TimerKind::ExceptionDeadline => {
            OrderEvent::ExceptionEscalated { to_role: rules.exceptions.escalate_to.clone().unwrap_or_default() }
        }
        TimerKind::InvoiceDue => OrderEvent::PaymentOverdue,
        TimerKind::Dunning => {
            // Catching up (after a dispute, or a daemon that was down): only the latest
            // step due goes out; the ones it passes over are not sent late.
            let f = case.fulfilment?;
            let overdue_from = end_of_day(f.invoice.as_ref()?.due, rules);
            let rating = case.order.customer.credit_rating.map(|r| r.to_string());
            let step = rules
                .dunning_for(rating.as_deref())
                .filter(|s| !f.dunning.contains(&s.id))
                .filter(|s| overdue_from + chrono::Duration::days(i64::from(s.days_overdue)) <= now)
                .max_by_key(|s| s.days_overdue)?;
            OrderEvent::DunningDue { step: step.id.clone(), days_overdue: step.days_overdue }
        }
    })
}

/// The decision for a brand-new order: the `Received` entry, then the automatic steps.
pub fn decide_new(
    order: &Order,
    history: &History,
    actor: Actor,
    received: OrderEvent,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<Decision, DecideError> {
    if !matches!(received, OrderEvent::Received { .. }) {
        return Err(IllegalTransition { state: "new", event: received.name() }.into());
    }
    let next = OrderState::Received;
    let mut d = Decision {
        audit: Vec::new(),
        next: next.clone(),
        effects: Vec::new(),
        approval: None,
        timers: vec![],
        fulfilment: None,
        config_version: rules.config_version.clone(),
    };
    d.record(order, Some(next), actor, received, rules, now);
    d.run_automatic(order, history, rules, now)?;
    d.timers = all_timers(&d.next, d.approval.as_ref(), d.fulfilment.as_ref(), order, rules);
    Ok(d)
}

/// Effects of one step: connector pushes from `[[effects]]` and mail from the
/// notification rules, for the state entered (if it changed) and the event recorded.
fn effects_of_step(
    entered: Option<&OrderState>,
    event: &OrderEvent,
    order: &Order,
    at: (&OrderState, Option<&ApprovalProgress>, Option<DateTime<Utc>>),
    rules: &Rules,
    now: DateTime<Utc>,
) -> Vec<EffectSpec> {
    let entered = entered.map(OrderState::name);
    let mut out: Vec<EffectSpec> = rules
        .effects
        .iter()
        .filter(|r| triggers(&r.on, entered, event))
        .map(|r| EffectSpec {
            connector: r.connector.clone(),
            operation: r.operation.clone(),
            cause: r.on.clone(),
            mail: None,
            trigger: Some(event.clone()),
        })
        .collect();
    // A task with a system is pushed to it when assigned.
    if let OrderEvent::TaskAssigned { task, .. } = event
        && let Some((connector, operation)) = rules.tasks.iter().find(|t| &t.id == task).and_then(|t| t.push.as_ref())
    {
        out.push(EffectSpec {
            connector: connector.clone(),
            operation: operation.clone(),
            cause: "task_assigned".into(),
            mail: None,
            trigger: Some(event.clone()),
        });
    }
    // Acceptance invoices the order in the finance system.
    if let (Some("accepted"), Some(s)) = (entered, &rules.settlement) {
        out.push(EffectSpec {
            connector: s.connector.clone(),
            operation: s.operation.clone(),
            cause: "accepted".into(),
            mail: None,
            trigger: Some(event.clone()),
        });
        if let Some((connector, operation)) = &s.voucher {
            out.push(EffectSpec {
                connector: connector.clone(),
                operation: operation.clone(),
                cause: "accepted".into(),
                mail: None,
                trigger: Some(event.clone()),
            });
        }
    }
    // A dunning step mails its audiences (customers get one consolidated mail).
    if let OrderEvent::DunningDue { step, .. } = event
        && let Some(s) = rules.dunning.iter().find(|s| &s.id == step)
    {
        out.extend(rules.notify.dunning(s, event, order, now));
    }
    out.extend(rules.notify.for_step(entered, event, order, at, now));
    out
}

impl Decision {
    /// Automatic steps; bounded (at most one screening and one automatic approval).
    fn run_automatic(
        &mut self,
        order: &Order,
        history: &History,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<(), IllegalTransition> {
        // Bounded: screening, an automatic approval, execution with one step per task,
        // invoicing, an over-payment exception, closing.
        for _ in 0..(8 + rules.tasks.len()) {
            let last = self.audit.last().map(|a| &a.event);
            let follow = match &self.next {
                OrderState::Received => Some(OrderEvent::ScreeningStarted { rules_version: rules.version.clone() }),
                OrderState::Screening => Some(screening_event(order, history, rules)),
                OrderState::AwaitingApproval { level: 1, .. } => auto_approval(&self.audit),
                OrderState::Approved if !rules.tasks.is_empty() => Some(OrderEvent::ExecutionStarted),
                OrderState::Executing => self.next_task(order, rules),
                OrderState::Accepted => self.invoice_from(last, order, rules, now),
                OrderState::Paid => match last {
                    Some(OrderEvent::PaymentReceived { excess: Some(x), .. }) => {
                        Some(OrderEvent::ExceptionOpened { reason: format!("over-payment of {x}: refund or apply it") })
                    }
                    _ => Some(OrderEvent::Closed),
                },
                OrderState::Closed | OrderState::Archived => after_sales(&self.audit, rules),
                _ => None,
            };
            match follow {
                Some(ev) => self.apply(order, Actor::System, ev, rules, now)?,
                None => break,
            }
        }
        Ok(())
    }

    /// While executing, right after `ExecutionStarted`: the next task of the product
    /// not yet assigned.
    fn next_task(&self, order: &Order, rules: &Rules) -> Option<OrderEvent> {
        let started = self.audit.iter().any(|a| matches!(a.event, OrderEvent::ExecutionStarted));
        if !started {
            return None;
        }
        let assigned = self.fulfilment.as_ref().map(|f| f.tasks.as_slice()).unwrap_or_default();
        let product = order.product.kind.to_string();
        rules.tasks_for(&product).find(|t| !assigned.iter().any(|a| a.id == t.id)).map(|t| OrderEvent::TaskAssigned {
            task: t.id.clone(),
            name: t.name.clone(),
            department: t.department.clone(),
        })
    }

    /// Accepted, and the settlement push just answered with the invoice number: the
    /// invoice is issued (net = the order amount, tax at the configured rate).
    fn invoice_from(
        &self,
        last: Option<&OrderEvent>,
        order: &Order,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Option<OrderEvent> {
        let s = rules.settlement.as_ref()?;
        let Some(OrderEvent::EffectSucceeded { effect, reference: Some(number), .. }) = last else { return None };
        if *effect != format!("{}.{}", s.connector, s.operation) {
            return None;
        }
        let net = order.amount.clone();
        let tax = super::fulfilment::tax_on(&net, s.tax_rate).ok()?;
        let total = net.checked_add(&tax).ok()?;
        let today = now.with_timezone(&rules.sla.calendar.tz).date_naive();
        let due = today + chrono::Duration::days(i64::from(s.due_days));
        Some(OrderEvent::InvoiceIssued { number: number.clone(), net, tax, total, due })
    }

    /// Refuses what the order's execution cannot take: delivery with required tasks
    /// open, an unknown or finished task, resolving when nothing is open. Payments are
    /// completed (settled, outstanding, excess) from the invoice.
    fn check_fulfilment(&self, event: &OrderEvent) -> Result<(), Refusal> {
        let f = self.fulfilment.clone().unwrap_or_default();
        match event {
            OrderEvent::DeliveryRecorded { .. } => {
                let open = f.open_required_tasks();
                if open.is_empty() {
                    Ok(())
                } else {
                    Err(Refusal::TasksOpen(open.into_iter().map(str::to_owned).collect()))
                }
            }
            OrderEvent::TaskCompleted { task, .. } => match f.tasks.iter().find(|t| &t.id == task) {
                None => Err(Refusal::UnknownTask(task.clone())),
                Some(t) if t.done.is_some() => Err(Refusal::TaskAlreadyDone(task.clone())),
                Some(_) => Ok(()),
            },
            OrderEvent::ExceptionResolved { .. } | OrderEvent::ExceptionEscalated { .. } if f.exception.is_none() => {
                Err(Refusal::NoException)
            }
            _ => Ok(()),
        }
    }

    /// Fills in what a reported payment means for the invoice (settled, outstanding,
    /// excess), or refuses it (no invoice, another currency, already recorded, …).
    fn complete_payment(&self, event: OrderEvent) -> Result<OrderEvent, Refusal> {
        let OrderEvent::PaymentReceived { amount, payment_id, .. } = event else { return Ok(event) };
        let f = self.fulfilment.clone().unwrap_or_default();
        let zero = || Money::new(rust_decimal::Decimal::ZERO, amount.currency()).expect("zero is valid");
        let (settled, outstanding, excess) = match super::fulfilment::match_payment(&f, &payment_id, &amount) {
            Match::Full => (true, Some(zero()), None),
            Match::Partial { outstanding } => (false, Some(outstanding), None),
            Match::Over { excess } => (true, Some(zero()), Some(excess)),
            Match::Refused(reason) => return Err(Refusal::PaymentNotApplicable(reason)),
        };
        Ok(OrderEvent::PaymentReceived { amount, settled, payment_id, outstanding, excess })
    }

    /// Keeps tasks, the exception, the invoice and the payments in step with the event.
    fn track_fulfilment(&mut self, actor: &Actor, event: &OrderEvent, rules: &Rules, now: DateTime<Utc>) {
        let touches = matches!(
            event,
            OrderEvent::TaskAssigned { .. }
                | OrderEvent::TaskCompleted { .. }
                | OrderEvent::ExceptionOpened { .. }
                | OrderEvent::ExceptionEscalated { .. }
                | OrderEvent::ExceptionResolved { .. }
                | OrderEvent::InvoiceIssued { .. }
                | OrderEvent::PaymentReceived { .. }
                | OrderEvent::DunningDue { .. }
        );
        if !touches {
            return;
        }
        let f = self.fulfilment.get_or_insert_with(Fulfilment::default);
        match event {
            OrderEvent::TaskAssigned { task, name, department } => {
                let required = rules.tasks.iter().find(|t| &t.id == task).is_none_or(|t| t.required);
                f.tasks.push(Task {
                    id: task.clone(),
                    name: name.clone(),
                    department: department.clone(),
                    required,
                    done: None,
                });
            }
            OrderEvent::TaskCompleted { task, note } => {
                if let Some(t) = f.tasks.iter_mut().find(|t| &t.id == task) {
                    t.done = Some(TaskDone { at: now, by: actor.to_string(), note: note.clone() });
                }
            }
            OrderEvent::ExceptionOpened { reason } => {
                f.exception = Some(OpenException {
                    reason: reason.clone(),
                    owner: rules.exceptions.owner.clone(),
                    opened_at: now,
                    deadline: now + rules.exceptions.resolve_within,
                    escalated_to: None,
                });
            }
            OrderEvent::ExceptionEscalated { to_role } => {
                if let Some(e) = &mut f.exception {
                    e.escalated_to = Some(to_role.clone());
                }
            }
            OrderEvent::ExceptionResolved { .. } => f.exception = None,
            OrderEvent::InvoiceIssued { number, net, tax, total, due } => {
                f.invoice = Some(Invoice {
                    number: number.clone(),
                    net: net.clone(),
                    tax: tax.clone(),
                    total: total.clone(),
                    issued_at: now,
                    due: *due,
                });
            }
            OrderEvent::PaymentReceived { amount, payment_id, .. } => {
                f.payments.push(PaymentLine { id: payment_id.clone(), amount: amount.clone(), at: now });
            }
            OrderEvent::DunningDue { days_overdue, .. } => {
                // This step, and any earlier one it stands in for.
                for s in rules.dunning.iter().filter(|s| s.days_overdue <= *days_overdue) {
                    if !f.dunning.contains(&s.id) {
                        f.dunning.push(s.id.clone());
                    }
                }
            }
            _ => {}
        }
    }

    /// Checks and completes a person's approval decision (see `decide`).
    fn person_decision(
        &self,
        order: &Order,
        actor: &Actor,
        event: OrderEvent,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<OrderEvent, Refusal> {
        let Actor::Person(person) = actor else { return Ok(event) };
        let asked = match &event {
            OrderEvent::Approved { level, .. }
            | OrderEvent::ApprovalDeclined { level, .. }
            | OrderEvent::InfoRequested { level, .. } => *level,
            _ => return Ok(event),
        };
        let (OrderState::AwaitingApproval { level, .. }, Some(progress)) = (&self.next, &self.approval) else {
            return Err(Refusal::NotAwaiting);
        };
        let level = *level;
        if asked != 0 && asked != level {
            return Err(Refusal::WrongLevel { asked, current: level });
        }
        let today = now.with_timezone(&rules.notify.presentation.time_zone).date_naive();
        let standing = progress.standing(&rules.notify.directory, order, person, level, today)?;
        Ok(match event {
            OrderEvent::Approved { comment, .. } if progress.completes(level, &standing.role) => {
                OrderEvent::Approved { level, role: standing.role, comment, on_behalf_of: standing.on_behalf_of }
            }
            OrderEvent::Approved { comment, .. } => {
                OrderEvent::ApprovalGiven { level, role: standing.role, comment, on_behalf_of: standing.on_behalf_of }
            }
            OrderEvent::ApprovalDeclined { comment, .. } => {
                OrderEvent::ApprovalDeclined { level, role: standing.role, comment }
            }
            OrderEvent::InfoRequested { question, .. } => {
                OrderEvent::InfoRequested { level, role: standing.role, question }
            }
            other => other,
        })
    }

    fn apply(
        &mut self,
        order: &Order,
        actor: Actor,
        event: OrderEvent,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<(), IllegalTransition> {
        let next = self.next.on(&event)?;
        let entered = (next != self.next).then_some(next);
        let voided = match (&event, &self.approval) {
            (OrderEvent::Amended { material: true, changed, .. }, Some(p)) if !p.given.is_empty() => {
                Some(OrderEvent::ApprovalsVoided {
                    approvals: u32::try_from(p.given.len()).unwrap_or(u32::MAX),
                    reason: format!("material change: {}", changed.join(", ")),
                })
            }
            _ => None,
        };
        self.record(order, entered, actor, event, rules, now);
        if let Some(v) = voided {
            self.record(order, None, Actor::System, v, rules, now);
        }
        Ok(())
    }

    /// Keeps the approval chain in step with the event.
    fn track_approval(&mut self, actor: &Actor, event: &OrderEvent, now: DateTime<Utc>) {
        let next_round = self.approval.as_ref().map_or(1, |p| p.round + 1);
        match event {
            OrderEvent::ScreeningPassed { chain, row, .. } => {
                self.approval = Some(ApprovalProgress::new(next_round, chain.clone(), row.clone()));
            }
            OrderEvent::ReviewReleased { chain, .. } => {
                self.approval = Some(ApprovalProgress::new(next_round, chain.clone(), "review".into()));
            }
            OrderEvent::Approved { level, role, .. } | OrderEvent::ApprovalGiven { level, role, .. } => {
                if let Some(p) = &mut self.approval {
                    let person = match actor {
                        Actor::Person(id) => id.clone(),
                        other => other.to_string(),
                    };
                    p.given.push(Given { level: *level, role: role.clone(), person });
                }
            }
            OrderEvent::ApprovalsVoided { .. } => {
                if let Some(p) = &mut self.approval {
                    p.given.clear();
                    p.chain.clear();
                }
            }
            OrderEvent::ApprovalReminderDue { level } => {
                if let Some(p) = &mut self.approval {
                    p.reminded.push(*level);
                }
            }
            OrderEvent::ApprovalEscalated { level, to_role, .. } => {
                if let Some(p) = &mut self.approval {
                    p.escalated.push(Escalation { level: *level, role: to_role.clone(), at: now });
                }
            }
            _ => {}
        }
    }

    fn record(
        &mut self,
        order: &Order,
        entered: Option<OrderState>,
        actor: Actor,
        event: OrderEvent,
        rules: &Rules,
        now: DateTime<Utc>,
    ) {
        self.track_approval(&actor, &event, now);
        self.track_fulfilment(&actor, &event, rules, now);
        let after = entered.clone().unwrap_or_else(|| self.next.clone());
        if let (Some(OrderState::AwaitingApproval { .. }), Some(p)) = (&entered, &mut self.approval) {
            p.level_since = Some(now);
        }
        let due = self.approval.as_ref().and_then(|p| {
            p.timers(&after, &rules.sla).into_iter().find(|t| t.kind == TimerKind::Escalate).map(|t| t.due)
        });
        // A screening that approves level 1 automatically passes through the waiting
        // state within this decision: nobody is asked to approve what is approved.
        let waits = !matches!(event, OrderEvent::ScreeningPassed { auto_on_behalf_of: Some(_), .. });
        self.effects.extend(effects_of_step(
            entered.as_ref().filter(|_| waits),
            &event,
            order,
            (&after, self.approval.as_ref(), due),
            rules,
            now,
        ));
        self.next = after;
        self.audit.push(AuditEntry { at: now, actor, channel: None, event, state: self.next.clone() });
    }
}

/// A survey answer at or below the threshold, or a complaint, asks for a ticket.
fn after_sales(audit: &[AuditEntry], rules: &Rules) -> Option<OrderEvent> {
    let Some(OrderEvent::SurveyAnswered { score, comment, complaint }) = audit.last().map(|a| &a.event) else {
        return None;
    };
    let low = *score <= rules.survey.ticket_at_or_below;
    let reason = match (low, complaint) {
        (true, true) => format!("score {score} (at or below {}) and a complaint", rules.survey.ticket_at_or_below),
        (true, false) => format!("score {score} (at or below {})", rules.survey.ticket_at_or_below),
        (false, true) => "complaint".to_owned(),
        (false, false) => return None,
    };
    Some(OrderEvent::AfterSalesTicketRequested { score: *score, comment: comment.clone(), reason })
}

/// Screening and routing: every rule over the order's inputs, then the matrix. No
/// matching matrix row flags the order for a person, naming why.
fn screening_event(order: &Order, history: &History, rules: &Rules) -> OrderEvent {
    let rules_version = rules.version.clone();
    let inputs = table::inputs(order, rules.watch_list.matches(order), history);
    match rules.screen(&inputs) {
        Screening::Passed => match rules.route(&inputs) {
            Ok(route) => OrderEvent::ScreeningPassed {
                rules_version,
                chain: route.chain,
                reason: route.reason,
                row: route.row,
                auto_on_behalf_of: route.auto_on_behalf_of,
                inputs,
            },
            Err(why) => OrderEvent::ScreeningFlagged {
                rules_version,
                fired: vec![RuleHit { rule_id: NO_ROUTE.into(), severity: Severity::Flag, message: why }],
                inputs,
            },
        },
        Screening::Flagged(fired) => OrderEvent::ScreeningFlagged { rules_version, fired, inputs },
        Screening::Rejected(fired) => OrderEvent::ScreeningRejected { rules_version, fired, inputs },
    }
}

/// Level 1 is approved automatically when screening just chose an automatic route.
fn auto_approval(audit: &[AuditEntry]) -> Option<OrderEvent> {
    match audit.last().map(|a| &a.event) {
        Some(OrderEvent::ScreeningPassed { auto_on_behalf_of: Some(role), reason, .. }) => Some(OrderEvent::Approved {
            level: 1,
            role: role.clone(),
            comment: format!("automatic approval: {reason}"),
            on_behalf_of: Some(role.clone()),
        }),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod fulfilment_tests;

#[cfg(test)]
mod dunning_catch_up;
