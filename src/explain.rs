//! `orderbridge explain ORDER_ID`: why an order is where it is, read from its audit
//! trail: screening rules fired (with the rules version), the approval route and why,
//! every decision with who and when, effects, and what it waits for now. Pure.

use serde_json::{Value, json};

use crate::engine::rules::Level;
use crate::engine::{Actor, OrderEvent, OrderState};
use crate::store::EventRecord;
use crate::versions::short;

/// The explanation, as lines for people and as JSON for tools.
pub struct Explanation {
    pub lines: Vec<String>,
    pub(crate) json: Value,
}

fn actor(a: &Actor) -> String {
    match a {
        Actor::System => "the daemon".into(),
        Actor::Person(p) => p.clone(),
        Actor::Connector(c) => format!("connector {c}"),
    }
}

/// What the order waits for in `state`, given the approval chain last chosen.
fn waiting_for(state: &OrderState, chain: &[Level]) -> String {
    match state {
        OrderState::Flagged => "manual review of the flagged screening result".into(),
        OrderState::ManualReview => "the reviewer's decision".into(),
        OrderState::AwaitingApproval { level, of } => {
            let role = chain.get(usize::from(*level).saturating_sub(1)).map_or("?".to_owned(), ToString::to_string);
            format!("approval level {level} of {of} ({role})")
        }
        OrderState::Received | OrderState::Screening => "screening".into(),
        OrderState::Approved => "execution (effects on entering `approved` are listed above)".into(),
        OrderState::Rejected | OrderState::Cancelled | OrderState::Archived => "nothing: the order is closed".into(),
        other => format!("the next step after `{}`", other.name()),
    }
}

/// Explains an order from its API representation (`GET /api/orders/{id}`).
///
/// # Errors
/// When `order` lacks the events or they do not parse.
pub fn explain(order: &Value) -> Result<Explanation, String> {
    let events: Vec<EventRecord> =
        serde_json::from_value(order["events"].clone()).map_err(|e| format!("events do not parse: {e}"))?;
    let state: OrderState =
        serde_json::from_value(order["state_detail"].clone()).map_err(|e| format!("state does not parse: {e}"))?;
    let mut lines = vec![format!(
        "order {} ({}/{} version {}), now {}",
        order["id"].as_str().unwrap_or("?"),
        order["source"]["connector"].as_str().unwrap_or("?"),
        order["source"]["external_id"].as_str().unwrap_or("?"),
        order["source"]["version"],
        state.name(),
    )];
    lines.push(format!("mapping version {}", order["mapping_version"].as_str().unwrap_or("?")));
    if let Some(a) = order.get("archived") {
        lines.push(format!(
            "archived {} in segment {} (it ended {} at {})",
            a["archived_at"].as_str().unwrap_or("?"),
            a["segment"].as_str().unwrap_or("?"),
            a["ended"].as_str().unwrap_or("?"),
            a["ended_at"].as_str().unwrap_or("?")
        ));
    }

    let mut story = Story { lines, ..Story::default() };
    for e in &events {
        story.tell(e);
    }
    let Story { mut lines, chain, screening, decisions, effects, .. } = story;
    let waiting = waiting_for(&state, &chain);
    lines.push(format!("waiting for: {waiting}"));
    let json = json!({
        "order_id": order["id"], "state": state, "mapping_version": order["mapping_version"],
        "screening": screening, "route": chain, "decisions": decisions, "effects": effects, "waiting_for": waiting,
        "archived": order.get("archived"),
    });
    Ok(Explanation { lines, json })
}

/// The explanation as it is told, event by event: the text lines, the route as it
/// stands, and the JSON sections.
#[derive(Default)]
struct Story {
    lines: Vec<String>,
    chain: Vec<Level>,
    screening: Vec<Value>,
    decisions: Vec<Value>,
    effects: Vec<Value>,
    /// The configuration's version of the last decision told.
    config: Option<String>,
}

fn join(c: &[Level]) -> String {
    c.iter().map(ToString::to_string).collect::<Vec<_>>().join(" → ")
}

fn by_on_behalf(e: &EventRecord, on_behalf_of: Option<&String>) -> String {
    match on_behalf_of {
        Some(r) => format!("{} on behalf of {r}", actor(&e.actor)),
        None => actor(&e.actor),
    }
}

impl Story {
    fn tell(&mut self, e: &EventRecord) {
        let at = e.at.format("%Y-%m-%d %H:%M:%S UTC").to_string();
        if let Some(v) = e.config_version.as_ref().filter(|v| self.config.as_ref() != Some(*v)) {
            self.lines.push(format!("{at}  decided under configuration {} (`orderbridge rules history`)", short(v)));
            self.config = Some(v.clone());
        }
        if !self.screening(e, &at) && !self.decision(e, &at) {
            self.other(e, &at);
        }
    }

    /// Screening results; false when `e` is not one.
    fn screening(&mut self, e: &EventRecord, at: &str) -> bool {
        let lines = &mut self.lines;
        match &e.event {
            OrderEvent::ScreeningPassed { rules_version, chain: c, reason, row, inputs, .. } => {
                self.chain.clone_from(c);
                self.screening.push(json!({"at": e.at, "rules_version": rules_version, "result": "passed", "route": c, "matrix_row": row, "why": reason, "inputs": inputs}));
                lines.push(format!("{at}  screening passed (rules {rules_version}); route: {}: {reason}", join(c)));
                lines.push(format!("      inputs: {}", show_inputs(inputs)));
            }
            OrderEvent::ScreeningFlagged { rules_version, fired, inputs }
            | OrderEvent::ScreeningRejected { rules_version, fired, inputs } => {
                let result =
                    if matches!(e.event, OrderEvent::ScreeningFlagged { .. }) { "flagged" } else { "rejected" };
                self.screening.push(json!({"at": e.at, "rules_version": rules_version, "result": result, "fired": fired, "inputs": inputs}));
                lines.push(format!("{at}  screening {result} (rules {rules_version}):"));
                for h in fired {
                    lines.push(format!("      rule {} ({}): {}", h.rule_id, h.severity.as_str(), h.message));
                }
                lines.push(format!("      inputs: {}", show_inputs(inputs)));
            }
            _ => return false,
        }
        true
    }

    /// People's (and the SLA's) decisions on the route; false when `e` is not one.
    fn decision(&mut self, e: &EventRecord, at: &str) -> bool {
        let (lines, decisions) = (&mut self.lines, &mut self.decisions);
        match &e.event {
            OrderEvent::ReviewReleased { chain: c, comment } => {
                self.chain.clone_from(c);
                decisions
                    .push(json!({"at": e.at, "by": e.actor, "decision": "released", "comment": comment, "route": c}));
                lines.push(format!("{at}  released from review by {}: {comment}; route: {}", actor(&e.actor), join(c)));
            }
            OrderEvent::Approved { level, role, comment, on_behalf_of } => {
                let by = by_on_behalf(e, on_behalf_of.as_ref());
                decisions.push(json!({"at": e.at, "by": e.actor, "decision": "approved", "level": level, "role": role, "on_behalf_of": on_behalf_of, "comment": comment}));
                lines.push(format!("{at}  approved level {level} ({role}) by {by}: {comment}"));
            }
            OrderEvent::ApprovalDeclined { level, role, comment } => {
                decisions.push(json!({"at": e.at, "by": e.actor, "decision": "declined", "level": level, "role": role, "comment": comment}));
                lines.push(format!("{at}  declined at level {level} ({role}) by {}: {comment}", actor(&e.actor)));
            }
            OrderEvent::ApprovalGiven { level, role, comment, on_behalf_of } => {
                let by = by_on_behalf(e, on_behalf_of.as_ref());
                decisions.push(json!({"at": e.at, "by": e.actor, "decision": "approved (level still open)", "level": level, "role": role, "on_behalf_of": on_behalf_of, "comment": comment}));
                lines.push(format!(
                    "{at}  approved level {level} as {role} by {by} (the level needs more approvals): {comment}"
                ));
            }
            OrderEvent::InfoRequested { level, role, question } => {
                decisions.push(json!({"at": e.at, "by": e.actor, "decision": "asked for information", "level": level, "role": role, "question": question}));
                lines.push(format!("{at}  {} ({role}, level {level}) asked: {question}", actor(&e.actor)));
            }
            OrderEvent::ApprovalEscalated { level, from_role, to_role } => {
                decisions.push(
                    json!({"at": e.at, "decision": "escalated", "level": level, "from": from_role, "to": to_role}),
                );
                lines.push(format!("{at}  level {level} escalated from {from_role} to {to_role} (SLA passed)"));
            }
            OrderEvent::ReviewRejected { comment } => {
                decisions
                    .push(json!({"at": e.at, "by": e.actor, "decision": "rejected in review", "comment": comment}));
                lines.push(format!("{at}  rejected in review by {}: {comment}", actor(&e.actor)));
            }
            _ => return false,
        }
        true
    }

    /// Effects, amendments, reminders and every other event.
    fn other(&mut self, e: &EventRecord, at: &str) {
        let lines = &mut self.lines;
        match &e.event {
            OrderEvent::ApprovalReminderDue { level } => {
                lines.push(format!("{at}  level {level} passed its reminder point; approvers reminded"));
            }
            OrderEvent::ApprovalsVoided { approvals, reason } => {
                lines.push(format!("{at}  {approvals} approval(s) voided ({reason}); the chain starts again"));
            }
            OrderEvent::Amended { version, changed, material } => {
                lines.push(format!(
                    "{at}  amended to version {version} by {} (changed: {}){}",
                    actor(&e.actor),
                    changed.join(", "),
                    if *material { "; screened again" } else { "; not material, nothing decided again" }
                ));
            }
            OrderEvent::EffectSucceeded { effect, attempts, receipt, .. } => {
                self.effects.push(json!({"at": e.at, "effect": effect, "result": "succeeded", "attempts": attempts, "receipt": receipt}));
                lines.push(format!("{at}  {effect} succeeded after {attempts} attempt(s): {receipt}"));
            }
            OrderEvent::EffectDeadLettered { effect, attempts, error, .. } => {
                self.effects.push(json!({"at": e.at, "effect": effect, "result": "dead letter", "attempts": attempts, "error": error}));
                lines.push(format!("{at}  {effect} gave up after {attempts} attempt(s): {error}"));
            }
            OrderEvent::EffectReplayed { effect, .. } => {
                lines.push(format!("{at}  {effect} replayed by {}", actor(&e.actor)));
            }
            OrderEvent::FeedbackReceived { feedback, category, channel } => {
                lines.push(format!(
                    "{at}  feedback no. {feedback} ({category}, through {channel}) from {}",
                    actor(&e.actor)
                ));
            }
            other => lines.push(format!("{at}  {} by {}", other.name(), actor(&e.actor))),
        }
    }
}

fn show_inputs(inputs: &crate::engine::table::Inputs) -> String {
    if inputs.is_empty() {
        return "(not recorded)".into();
    }
    inputs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}
