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
pub use super::effects::EffectSpec;
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
    pub at: DateTime<Utc>,
    pub actor: Actor,
    pub event: OrderEvent,
    /// The state after this event.
    pub state: OrderState,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub next: OrderState,
    pub audit: Vec<AuditEntry>,
    pub effects: Vec<EffectSpec>,
    /// The approval chain in progress after this decision (stored on the order).
    pub approval: Option<ApprovalProgress>,
    /// The order's due times after this decision (they replace the stored ones).
    pub timers: Vec<Timer>,
    /// Tasks, exception, invoice and payments after this decision (stored on the order).
    pub fulfilment: Option<Fulfilment>,
}

/// What a decision looks at besides the event: the order as it stands.
#[derive(Clone, Copy, Debug)]
pub struct Case<'a> {
    pub state: &'a OrderState,
    pub order: &'a Order,
    /// The customer's recent orders (velocity and duplicate rules).
    pub history: &'a History,
    pub approval: Option<&'a ApprovalProgress>,
    pub fulfilment: Option<&'a Fulfilment>,
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
pub fn decide(
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
pub fn all_timers(
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
pub fn due_timer_event(case: &Case<'_>, rules: &Rules, now: DateTime<Utc>) -> Option<OrderEvent> {
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
                .dunning
                .iter()
                .filter(|s| !f.dunning.contains(&s.id))
                .filter(|s| s.ratings.is_empty() || rating.as_ref().is_some_and(|r| s.ratings.contains(r)))
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
        rules
            .tasks
            .iter()
            .filter(|t| t.products.is_empty() || t.products.contains(&product))
            .find(|t| !assigned.iter().any(|a| a.id == t.id))
            .map(|t| OrderEvent::TaskAssigned {
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
        self.effects.extend(effects_of_step(
            entered.as_ref(),
            &event,
            order,
            (&after, self.approval.as_ref(), due),
            rules,
            now,
        ));
        self.next = after;
        self.audit.push(AuditEntry { at: now, actor, event, state: self.next.clone() });
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
pub(crate) mod tests {
    use super::*;
    use crate::engine::rules::EffectRule;

    pub(crate) fn sample_order(amount: &str) -> Order {
        serde_json::from_value(serde_json::json!({
            "customer": {"id": "C-778", "name": "张伟", "kind": "individual",
                "id_document": {"type": "cn_resident_id", "number": "11010519491231002X"},
                "credit_rating": "A", "kyc_verified": true, "email": "zhang.wei@example.com"},
            "product": {"type": "wealth_management", "code": "WM-STABLE-12M"},
            "need": "客户希望配置稳健型理财产品，期限一年",
            "amount": {"amount": amount, "currency": "CNY"},
            "term_months": 12
        }))
        .unwrap()
    }

    pub(crate) fn rules_from(text: &str) -> Rules {
        let file: crate::engine::rules::RulesFile = toml::from_str(text).unwrap();
        file.validate(&|_| Err("no files in tests".into()))
            .unwrap_or_else(|ps| panic!("{:?}", ps.iter().map(|p| &p.message).collect::<Vec<_>>()))
    }

    fn rules() -> Rules {
        rules_from(
            r#"
version = "test-1"
[[screening]]
id = "KYC"
when = { "customer.kyc_verified" = "false" }
message = "kyc"
[[screening]]
id = "ID"
when = { "customer.id_document_valid" = "false" }
message = "id"
[[screening]]
id = "CREDIT"
when = { "customer.credit_rank" = "> 4" }
severity = "reject"
message = "credit"
[approval]
[[approval.matrix]]
id = "AUTO"
when = { amount = "<= 100000" }
auto = true
[[approval.matrix]]
id = "ONE"
when = { amount = "<= 1000000" }
chain = ["line_supervisor"]
[[approval.matrix]]
id = "TWO"
chain = ["line_supervisor", "branch_manager"]
[[effects]]
on = "approved"
connector = "erp"
operation = "create"
"#,
        )
    }

    /// `decide` on an order in `state` with no history and no chain in progress.
    fn run(
        state: &OrderState,
        order: &Order,
        actor: Actor,
        ev: OrderEvent,
        r: &Rules,
    ) -> Result<Decision, DecideError> {
        let h = History::default();
        decide(&Case { state, order, history: &h, approval: None, fulfilment: None }, actor, ev, r, Utc::now())
    }

    fn received() -> OrderEvent {
        OrderEvent::Received { connector: "crm".into(), external_id: "D-1".into(), version: 1 }
    }

    #[test]
    fn small_order_is_screened_and_auto_approved_with_its_effect() {
        let d = decide_new(
            &sample_order("5000.00"),
            &History::default(),
            Actor::Connector("crm".into()),
            received(),
            &rules(),
            Utc::now(),
        )
        .unwrap();
        assert_eq!(d.next, OrderState::Approved);
        let names: Vec<_> = d.audit.iter().map(|a| a.event.name()).collect();
        assert_eq!(names, ["received", "screening_started", "screening_passed", "approved"]);
        assert!(
            matches!(&d.audit[3].event, OrderEvent::Approved { on_behalf_of: Some(r), .. } if r == "line_supervisor")
        );
        assert_eq!(d.effects.len(), 1);
        assert_eq!(d.effects[0].operation, "create");
    }

    #[test]
    fn large_order_waits_for_two_levels() {
        let d = decide_new(
            &sample_order("1250000.00"),
            &History::default(),
            Actor::System,
            received(),
            &rules(),
            Utc::now(),
        )
        .unwrap();
        assert_eq!(d.next, OrderState::AwaitingApproval { level: 1, of: 2 });
        assert!(d.effects.is_empty());
    }

    #[test]
    fn failing_rules_flag_or_reject_and_record_which_fired() {
        let mut o = sample_order("5000.00");
        o.customer.kyc_verified = false;
        let d = decide_new(&o, &History::default(), Actor::System, received(), &rules(), Utc::now()).unwrap();
        assert_eq!(d.next, OrderState::Flagged);
        assert!(
            matches!(&d.audit.last().unwrap().event, OrderEvent::ScreeningFlagged { fired, .. } if fired[0].rule_id == "KYC")
        );

        o.customer.credit_rating = Some(crate::domain::CreditRating::B);
        let d = decide_new(&o, &History::default(), Actor::System, received(), &rules(), Utc::now()).unwrap();
        assert_eq!(d.next, OrderState::Rejected);
    }

    #[test]
    fn illegal_event_decides_nothing() {
        let err =
            run(&OrderState::Approved, &sample_order("1.00"), Actor::System, OrderEvent::Closed, &rules()).unwrap_err();
        assert_eq!(err.to_string(), "event `closed` is not allowed in state `approved`");
    }

    fn approve(level: u8) -> OrderEvent {
        OrderEvent::Approved { level, role: "r".into(), comment: String::new(), on_behalf_of: None }
    }

    #[test]
    fn a_middle_approval_level_does_not_fire_approved_effects() {
        let (o, r) = (sample_order("1250000.00"), rules());
        let level1 = OrderState::AwaitingApproval { level: 1, of: 2 };
        let d = run(&level1, &o, Actor::System, approve(1), &r).unwrap();
        assert_eq!(d.next, OrderState::AwaitingApproval { level: 2, of: 2 });
        assert!(d.effects.is_empty(), "{:?}", d.effects);
        let d = run(&d.next, &o, Actor::System, approve(2), &r).unwrap();
        assert_eq!(d.next, OrderState::Approved);
        assert_eq!(d.effects.len(), 1);
        assert_eq!(d.effects[0].trigger.as_ref().map(OrderEvent::name), Some("approved"));
    }

    #[test]
    fn survey_answers_ask_for_a_ticket_at_or_below_the_threshold_or_on_complaint() {
        let mut r = rules();
        r.effects.push(EffectRule {
            on: "after_sales_ticket_requested".into(),
            connector: "desk".parse().unwrap(),
            operation: "create_ticket".into(),
        });
        let o = sample_order("100.00");
        for (score, complaint, ticket) in
            [(1, false, true), (2, false, true), (3, false, false), (5, false, false), (5, true, true), (4, true, true)]
        {
            let ev = OrderEvent::SurveyAnswered { score, comment: "评价".into(), complaint };
            let d = run(&OrderState::Closed, &o, Actor::Person("c".into()), ev, &r).unwrap();
            assert_eq!(d.next, OrderState::Closed);
            let requested = d.audit.iter().any(|a| a.event.name() == "after_sales_ticket_requested");
            assert_eq!(requested, ticket, "score {score}, complaint {complaint}");
            assert_eq!(d.effects.iter().any(|e| e.operation == "create_ticket"), ticket);
        }
        // Only a closed (or archived) order takes a survey answer.
        let ev = OrderEvent::SurveyAnswered { score: 1, comment: String::new(), complaint: false };
        assert!(run(&OrderState::Paid, &o, Actor::System, ev, &r).is_err());
    }

    #[test]
    fn an_all_of_level_waits_for_each_role_and_refuses_outsiders() {
        let mut r = rules_from(
            r#"
version = "t"
[approval]
[[approval.matrix]]
id = "RISKY"
chain = ["line_supervisor", { all = ["risk_officer", "compliance_officer"] }]
"#,
        );
        let dir = crate::engine::directory::Directory::parse(
            std::path::Path::new("d.toml"),
            r#"
[[person]]
id = "wang"
name = "王芳"
email = "wang@bank.example"
roles = ["line_supervisor"]
[[person]]
id = "chen"
name = "陈静"
email = "chen@bank.example"
roles = ["risk_officer"]
[[person]]
id = "sun"
name = "孙丽"
email = "sun@bank.example"
roles = ["compliance_officer"]
"#,
        )
        .unwrap();
        r.notify = std::sync::Arc::new(crate::engine::notify::Notifications {
            directory: std::sync::Arc::new(dir),
            ..Default::default()
        });
        let o = sample_order("5000000.00");
        let h = History::default();
        let d = decide_new(&o, &h, Actor::System, received(), &r, Utc::now()).unwrap();
        assert_eq!(d.next, OrderState::AwaitingApproval { level: 1, of: 2 });
        let mut state = d.next;
        let mut progress = d.approval;
        let mut step = |who: &str| -> Result<Decision, DecideError> {
            let case = Case { state: &state, order: &o, history: &h, approval: progress.as_ref(), fulfilment: None };
            let d = decide(&case, Actor::Person(who.into()), approve(0), &r, Utc::now())?;
            state = d.next.clone();
            progress = d.approval.clone();
            Ok(d)
        };
        assert!(matches!(step("chen"), Err(DecideError::Refused(Refusal::NotAnApprover { level: 1, .. }))));
        let d = step("wang").unwrap();
        assert_eq!(d.next, OrderState::AwaitingApproval { level: 2, of: 2 });
        let d = step("chen").unwrap();
        assert_eq!(d.next, OrderState::AwaitingApproval { level: 2, of: 2 }, "compliance still missing");
        assert!(matches!(&d.audit[0].event, OrderEvent::ApprovalGiven { role, .. } if role == "risk_officer"));
        assert!(matches!(step("chen"), Err(DecideError::Refused(Refusal::AlreadyApproved(_, 2)))));
        let d = step("sun").unwrap();
        assert_eq!(d.next, OrderState::Approved);
        assert!(
            matches!(&d.audit[0].event, OrderEvent::Approved { level: 2, role, .. } if role == "compliance_officer")
        );
        assert_eq!(d.approval.unwrap().given.len(), 3);
    }

    #[test]
    fn sla_timers_remind_then_escalate_along_the_chain() {
        let mut r = rules_from(
            r#"
version = "t"
[approval]
[[approval.matrix]]
id = "ONE"
chain = ["line_supervisor"]
[sla]
hours = 8
remind_at_percent = 50
[sla.roles]
branch_manager = 16
[sla.escalate_to]
line_supervisor = "branch_manager"
branch_manager = "risk_committee"
"#,
        );
        r.sla.calendar.tz = chrono_tz::Asia::Shanghai;
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let o = sample_order("500000.00");
        let h = History::default();
        let d = decide_new(&o, &h, Actor::System, received(), &r, at("2026-11-30T10:00:00+08:00")).unwrap();
        let due: Vec<(TimerKind, DateTime<Utc>)> = d.timers.iter().map(|t| (t.kind, t.due)).collect();
        assert_eq!(
            due,
            [
                (TimerKind::Remind, at("2026-11-30T14:00:00+08:00")),
                (TimerKind::Escalate, at("2026-12-01T09:30:00+08:00"))
            ]
        );
        let (mut state, mut progress) = (d.next, d.approval);
        let mut fire = |now: DateTime<Utc>| -> Option<Decision> {
            let case = Case { state: &state, order: &o, history: &h, approval: progress.as_ref(), fulfilment: None };
            let ev = due_timer_event(&case, &r, now)?;
            let d = decide(&case, Actor::System, ev, &r, now).unwrap();
            state = d.next.clone();
            progress = d.approval.clone();
            Some(d)
        };
        assert!(fire(at("2026-11-30T13:59:00+08:00")).is_none());
        let d = fire(at("2026-11-30T14:00:00+08:00")).unwrap();
        assert_eq!(d.audit[0].event, OrderEvent::ApprovalReminderDue { level: 1 });
        assert_eq!(d.timers.len(), 1, "the reminder is gone, the escalation stays");
        assert!(fire(at("2026-11-30T17:00:00+08:00")).is_none(), "never twice");
        let d = fire(at("2026-12-01T09:30:00+08:00")).unwrap();
        assert!(
            matches!(&d.audit[0].event, OrderEvent::ApprovalEscalated { to_role, .. } if to_role == "branch_manager")
        );
        // Next: branch_manager has 16 working hours from the escalation: 8 on Tuesday, 8 on Wednesday.
        assert_eq!(
            d.timers.iter().map(|t| (t.kind, t.due)).collect::<Vec<_>>(),
            [(TimerKind::Escalate, at("2026-12-02T17:00:00+08:00"))]
        );
        let d = fire(at("2026-12-02T17:00:00+08:00")).unwrap();
        assert!(
            matches!(&d.audit[0].event, OrderEvent::ApprovalEscalated { to_role, .. } if to_role == "risk_committee")
        );
        assert!(d.timers.is_empty(), "risk_committee escalates nowhere");
    }
}

#[cfg(test)]
mod fulfilment_tests {
    use super::tests::{rules_from, sample_order};
    use super::*;

    const RULES: &str = r#"
version = "test-cash-1"
[approval]
[[approval.matrix]]
id = "AUTO"
auto = true
[[tasks]]
id = "contract"
name = "合同生成"
department = "operations"
connector = "erp"
operation = "create_task"
[[tasks]]
id = "kyc_file"
name = "Archive KYC"
department = "compliance"
required = false
[[tasks]]
id = "loan_setup"
name = "Loan account"
products = ["loan"]
department = "credit_ops"
[exceptions]
owner = "operations"
resolve_within_hours = 24
escalate_to = "branch_manager"
[settlement]
connector = "xero"
operation = "create_invoice"
tax_rate = "0.06"
due_days = 30
[[dunning]]
id = "friendly"
days_overdue = 1
[[dunning]]
id = "firm"
days_overdue = 15
[[dunning]]
id = "escalation"
days_overdue = 45
ratings = ["BB", "B", "CCC"]
to = ["customer", "sales_owner"]
"#;

    /// An order carried through `decide` step by step, as the store would.
    struct Run {
        rules: Rules,
        order: Order,
        state: OrderState,
        approval: Option<ApprovalProgress>,
        fulfilment: Option<Fulfilment>,
        now: DateTime<Utc>,
        audit: Vec<AuditEntry>,
        effects: Vec<EffectSpec>,
        timers: Vec<Timer>,
    }

    impl Run {
        fn new(amount: &str) -> Run {
            let rules = rules_from(RULES);
            let order = sample_order(amount);
            let now: DateTime<Utc> = "2026-11-27T02:00:00Z".parse().unwrap();
            let h = History::default();
            let received = OrderEvent::Received { connector: "crm".into(), external_id: "D-1".into(), version: 1 };
            let d = decide_new(&order, &h, Actor::System, received, &rules, now).unwrap();
            let mut r = Run {
                rules,
                order,
                state: OrderState::Received,
                approval: None,
                fulfilment: None,
                now,
                audit: Vec::new(),
                effects: Vec::new(),
                timers: Vec::new(),
            };
            r.take(d);
            r
        }

        fn take(&mut self, d: Decision) {
            self.state = d.next;
            self.approval = d.approval;
            self.fulfilment = d.fulfilment;
            self.audit.extend(d.audit);
            self.effects = d.effects;
            self.timers = d.timers;
        }

        fn step(&mut self, actor: Actor, ev: OrderEvent) -> Result<(), DecideError> {
            let h = History::default();
            let case = Case {
                state: &self.state,
                order: &self.order,
                history: &h,
                approval: self.approval.as_ref(),
                fulfilment: self.fulfilment.as_ref(),
            };
            let d = decide(&case, actor, ev, &self.rules, self.now)?;
            self.take(d);
            Ok(())
        }

        /// Advances the clock and fires every timer due, as the scheduler does.
        fn wait(&mut self, by: chrono::Duration) -> Vec<String> {
            self.now += by;
            let mut fired = Vec::new();
            loop {
                let h = History::default();
                let case = Case {
                    state: &self.state,
                    order: &self.order,
                    history: &h,
                    approval: self.approval.as_ref(),
                    fulfilment: self.fulfilment.as_ref(),
                };
                let Some(ev) = due_timer_event(&case, &self.rules, self.now) else { break };
                fired.push(ev.name().to_owned());
                let d = decide(&case, Actor::System, ev, &self.rules, self.now).unwrap();
                self.take(d);
            }
            fired
        }

        fn events(&self) -> Vec<&'static str> {
            self.audit.iter().map(|a| a.event.name()).collect()
        }

        fn f(&self) -> &Fulfilment {
            self.fulfilment.as_ref().unwrap()
        }

        fn settle(&mut self, reference: &str) {
            self.step(
                Actor::Connector("xero".into()),
                OrderEvent::EffectSucceeded {
                    effect_id: "e".into(),
                    effect: "xero.create_invoice".into(),
                    attempts: 1,
                    receipt: "HTTP 200".into(),
                    reference: Some(reference.into()),
                },
            )
            .unwrap();
        }

        fn pay(&mut self, id: &str, amount: &str) -> Result<(), DecideError> {
            self.step(
                Actor::Connector("bank".into()),
                OrderEvent::PaymentReceived {
                    amount: Money::parse(amount, "CNY").unwrap(),
                    settled: false,
                    payment_id: id.into(),
                    outstanding: None,
                    excess: None,
                },
            )
        }

        fn to_invoiced(amount: &str) -> Run {
            let mut r = Run::new(amount);
            r.step(
                Actor::Connector("erp".into()),
                OrderEvent::TaskCompleted { task: "contract".into(), note: String::new() },
            )
            .unwrap();
            r.step(Actor::Person("ops".into()), OrderEvent::DeliveryRecorded { note: String::new() }).unwrap();
            r.step(Actor::Person("customer".into()), OrderEvent::AcceptanceConfirmed { note: String::new() }).unwrap();
            r.settle("INV-0042");
            r
        }
    }

    #[test]
    fn an_approved_order_executes_its_products_tasks_and_delivery_waits_for_the_required_ones() {
        let mut r = Run::new("50000.00");
        assert_eq!(r.state, OrderState::Executing);
        let tasks: Vec<&str> = r.f().tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(tasks, ["contract", "kyc_file"], "loan_setup is for loans only");
        assert!(r.events().ends_with(&["approved", "execution_started", "task_assigned", "task_assigned"]));
        // The task with a system was pushed to it, in the step that assigned it.
        let pushes: Vec<_> = r.effects.iter().filter(|e| e.connector.as_str() == "erp").collect();
        assert_eq!(pushes.len(), 1);
        assert!(matches!(&pushes[0].trigger, Some(OrderEvent::TaskAssigned { task, .. }) if task == "contract"));

        let refused = r.step(Actor::Person("ops".into()), OrderEvent::DeliveryRecorded { note: String::new() });
        assert_eq!(refused.unwrap_err().to_string(), "delivery waits for the required tasks still open: contract");
        let unknown = r.step(Actor::System, OrderEvent::TaskCompleted { task: "nope".into(), note: String::new() });
        assert_eq!(unknown.unwrap_err().to_string(), "the order has no task `nope`");
        r.step(
            Actor::Connector("erp".into()),
            OrderEvent::TaskCompleted { task: "contract".into(), note: "ERP SO-1".into() },
        )
        .unwrap();
        let again = r.step(Actor::System, OrderEvent::TaskCompleted { task: "contract".into(), note: String::new() });
        assert_eq!(again.unwrap_err().to_string(), "task `contract` is already done");
        // The optional task may stay open.
        r.step(Actor::Person("ops".into()), OrderEvent::DeliveryRecorded { note: String::new() }).unwrap();
        assert_eq!(r.state, OrderState::Delivered);
        assert_eq!(r.f().tasks[0].done.as_ref().unwrap().by, "connector:erp");
    }

    #[test]
    fn acceptance_invoices_once_the_finance_system_answers_and_payments_settle_it() {
        let mut r = Run::new("1250000.05");
        r.step(Actor::System, OrderEvent::TaskCompleted { task: "contract".into(), note: String::new() }).unwrap();
        r.step(Actor::Person("ops".into()), OrderEvent::DeliveryRecorded { note: String::new() }).unwrap();
        r.step(Actor::Person("customer".into()), OrderEvent::AcceptanceConfirmed { note: String::new() }).unwrap();
        assert_eq!(r.state, OrderState::Accepted);
        let invoice_push: Vec<_> = r.effects.iter().filter(|e| e.connector.as_str() == "xero").collect();
        assert_eq!(invoice_push.len(), 1);
        assert_eq!(invoice_push[0].operation, "create_invoice");

        // Another effect's success does not invoice.
        r.step(
            Actor::Connector("erp".into()),
            OrderEvent::EffectSucceeded {
                effect_id: "e0".into(),
                effect: "erp.create_task".into(),
                attempts: 1,
                receipt: String::new(),
                reference: Some("T-1".into()),
            },
        )
        .unwrap();
        assert_eq!(r.state, OrderState::Accepted);
        r.settle("INV-0042");
        assert_eq!(r.state, OrderState::Invoiced);
        let inv = r.f().invoice.clone().unwrap();
        assert_eq!(inv.number, "INV-0042");
        assert_eq!(inv.tax.to_string(), "75000.00 CNY", "6 %, rounded to the fen");
        assert_eq!(inv.total.to_string(), "1325000.05 CNY");
        assert_eq!(inv.due.to_string(), "2026-12-27", "30 days from the day in Shanghai");

        r.pay("P-1", "325000.05").unwrap();
        assert_eq!(r.state, OrderState::Invoiced);
        assert!(
            matches!(r.audit.last().unwrap().event, OrderEvent::PaymentReceived { settled: false, outstanding: Some(ref o), .. } if o.to_string() == "1000000.00 CNY")
        );
        let dup = r.pay("P-1", "325000.05").unwrap_err();
        assert_eq!(dup.to_string(), "payment P-1 is already recorded on this order");
        r.pay("P-2", "1000000.00").unwrap();
        assert_eq!(r.state, OrderState::Closed, "paid, then closed");
        assert!(r.events().ends_with(&["payment_received", "closed"]));
        assert!(r.timers.is_empty(), "nothing due after payment");
    }

    #[test]
    fn an_over_payment_opens_an_exception_and_a_foreign_currency_is_refused() {
        let mut r = Run::to_invoiced("1000.00");
        let usd = r.step(
            Actor::Connector("bank".into()),
            OrderEvent::PaymentReceived {
                amount: Money::parse("1060.00", "USD").unwrap(),
                settled: false,
                payment_id: "P-9".into(),
                outstanding: None,
                excess: None,
            },
        );
        assert_eq!(usd.unwrap_err().to_string(), "the payment is in USD but invoice INV-0042 is in CNY");
        r.pay("P-1", "1100.00").unwrap();
        assert_eq!(r.state, OrderState::Exception { during: super::super::lifecycle::Stage::Paid });
        assert!(r.f().exception.as_ref().unwrap().reason.contains("over-payment of 40.00 CNY"));
        r.step(
            Actor::Person("ops".into()),
            OrderEvent::ExceptionResolved { resolution: "refunded 40.00".into(), cancel: false },
        )
        .unwrap();
        assert_eq!(r.state, OrderState::Closed);
    }

    #[test]
    fn an_exception_escalates_at_its_deadline_once_and_may_cancel_before_invoicing() {
        let mut r = Run::new("50000.00");
        r.step(Actor::Person("ops".into()), OrderEvent::ExceptionOpened { reason: "合同信息有误".into() }).unwrap();
        assert_eq!(r.state, OrderState::Exception { during: super::super::lifecycle::Stage::Executing });
        assert!(r.wait(chrono::Duration::hours(23)).is_empty());
        assert_eq!(r.wait(chrono::Duration::hours(2)), ["exception_escalated"]);
        assert_eq!(r.f().exception.as_ref().unwrap().escalated_to.as_deref(), Some("branch_manager"));
        assert!(r.wait(chrono::Duration::days(10)).is_empty(), "escalated once");
        r.step(
            Actor::Person("bm".into()),
            OrderEvent::ExceptionResolved { resolution: "customer withdrew".into(), cancel: true },
        )
        .unwrap();
        assert_eq!(r.state, OrderState::Cancelled);
    }

    #[test]
    fn dunning_goes_out_on_its_days_by_rating_and_stops_with_payment() {
        // Rating A: the escalation step (BB and worse) does not apply.
        let mut r = Run::to_invoiced("1000.00");
        assert!(r.wait(chrono::Duration::days(30)).is_empty(), "due 2026-12-27, not yet overdue");
        // Overdue from 2026-12-28 00:00 Shanghai (16:00 UTC the day before).
        r.now = "2026-12-27T15:59:00Z".parse().unwrap();
        assert!(r.wait(chrono::Duration::zero()).is_empty());
        assert_eq!(r.wait(chrono::Duration::minutes(2)), ["payment_overdue"]);
        assert_eq!(r.state, OrderState::Overdue);
        assert_eq!(r.wait(chrono::Duration::days(1)), ["dunning_due"]);
        assert!(r.wait(chrono::Duration::days(13)).is_empty());
        assert_eq!(r.wait(chrono::Duration::days(1)), ["dunning_due"]);
        let mails: Vec<_> = r.effects.iter().filter_map(|e| e.mail.as_ref()).collect();
        assert_eq!(mails.len(), 1, "to the customer only");
        assert_eq!(mails[0].extra["stage"], "firm");
        assert_eq!(mails[0].digest_every_secs, Some(crate::engine::notify::DUNNING_GATHER_SECS));
        assert!(r.wait(chrono::Duration::days(60)).is_empty(), "no escalation for rating A");
        r.pay("P-1", "1060.00").unwrap();
        assert_eq!(r.state, OrderState::Closed);
        assert!(r.wait(chrono::Duration::days(90)).is_empty());
        assert_eq!(r.f().dunning, ["friendly", "firm"]);

        // Rating BB gets the escalation on day 45, to the customer and the sales owner.
        let mut r = Run::to_invoiced("1000.00");
        r.order.customer.credit_rating = Some("BB".parse().unwrap());
        r.now = "2026-12-27T16:01:00Z".parse().unwrap();
        assert_eq!(r.wait(chrono::Duration::zero()), ["payment_overdue"]);
        // 45 days on at once (a daemon that was down): only the escalation goes out.
        assert_eq!(r.wait(chrono::Duration::days(45)), ["dunning_due"]);
        assert_eq!(r.f().dunning, ["friendly", "firm", "escalation"]);
        assert!(matches!(&r.audit.last().unwrap().event, OrderEvent::DunningDue { step, .. } if step == "escalation"));
    }
}

#[cfg(test)]
mod dunning_catch_up {
    use super::tests::{rules_from, sample_order};
    use super::*;

    #[test]
    fn only_the_latest_due_step_goes_out_when_catching_up() {
        let rules = rules_from(
            r#"
version = "t"
[approval]
[[approval.matrix]]
id = "AUTO"
auto = true
[[dunning]]
id = "friendly"
days_overdue = 3
[[dunning]]
id = "firm"
days_overdue = 15
[[dunning]]
id = "escalation"
days_overdue = 30
"#,
        );
        let order = sample_order("1000.00");
        let money = Money::parse("1000.00", "CNY").unwrap();
        let f = Fulfilment {
            invoice: Some(Invoice {
                number: "INV-1".into(),
                net: money.clone(),
                tax: Money::parse("0", "CNY").unwrap(),
                total: money,
                issued_at: "2026-11-01T00:00:00Z".parse().unwrap(),
                due: "2026-12-01".parse().unwrap(),
            }),
            dunning: vec!["friendly".into()],
            ..Default::default()
        };
        let h = History::default();
        let case =
            Case { state: &OrderState::Overdue, order: &order, history: &h, approval: None, fulfilment: Some(&f) };
        // 40 days after the due date: firm and escalation are both due; only escalation goes.
        let now = "2027-01-10T00:00:00Z".parse().unwrap();
        let ev = due_timer_event(&case, &rules, now).unwrap();
        assert_eq!(ev, OrderEvent::DunningDue { step: "escalation".into(), days_overdue: 30 });
        let d = decide(&case, Actor::System, ev, &rules, now).unwrap();
        assert_eq!(d.fulfilment.unwrap().dunning, ["friendly", "firm", "escalation"], "firm is not sent late");
        assert!(d.timers.is_empty());
    }
}
