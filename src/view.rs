//! An order as people and systems are shown it: the JSON document of the API, the
//! console's order page, the command line's `orders show` and `rules diff` (one
//! home, so they show the same thing). Masking personal data for a reader who may
//! not see it is `domain::privacy`'s, applied by the caller that knows the reader.

use serde_json::{Value, json};

use crate::archive::Found;
use crate::store::OrderRecord;

/// The order as the API shows it (without its events).
pub(crate) fn order_json(rec: &OrderRecord) -> Value {
    json!({
        "id": rec.id.to_string(),
        "state": rec.state.name(),
        "state_detail": rec.state,
        "source": {"connector": rec.source.connector, "external_id": rec.source.id, "version": rec.source_version},
        "mapping_version": rec.mapping_version,
        "order": rec.order,
        "created_at": rec.created_at,
        "updated_at": rec.updated_at,
        "references": rec.references,
        "approval": rec.approval,
        "fulfilment": rec.fulfilment,
        "event_count": rec.last_seq,
        "chain_head": rec.last_hash,
    })
}

/// An order found hot or archived, with its events, as the API shows it: an archived
/// order's state is `archived`, and `archived` says where and how it ended.
pub(crate) fn found_json(f: &Found) -> Value {
    let mut body = order_json(&f.record);
    if let Some(a) = &f.archived {
        body["state"] = "archived".into();
        body["state_detail"] = serde_json::to_value(crate::engine::OrderState::Archived).unwrap_or_default();
        body["archived"] = json!({
            "segment": a.segment, "archived_at": a.archived_at, "ended": a.ended, "ended_at": a.ended_at,
            "legal_hold": a.hold,
        });
    }
    body["events"] = serde_json::to_value(&f.events).unwrap_or_default();
    body
}
