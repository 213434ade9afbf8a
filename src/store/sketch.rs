//! An order as a report reads it ([`Store::sketches`](super::Store::sketches)): what
//! the report groups by and its audit entries as [`Mark`]s, without the rest of the
//! order row, the chain's hashes or the event fields a mark does not measure. The
//! key-value store decodes its rows straight into these (a report over a million
//! orders is mostly decoding); a row that does not read this way is read whole
//! instead, so a sketch never differs from the trail it stands for.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::Trail;
use super::records::{EventRecord, OrderRecord};
use crate::analytics::journey::Mark;
use crate::domain::OrderId;
use crate::domain::order::{CreditRating, Email};
use crate::engine::{Actor, OrderState};

/// An order and its trail as a report reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sketch {
    pub id: OrderId,
    /// The product's code.
    pub product: String,
    pub sales_owner: Option<String>,
    /// The customer's credit rating.
    pub rating: Option<String>,
    /// The audit entries, oldest first.
    pub entries: Vec<Marked>,
}

/// One audit entry as a report reads it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Marked {
    pub at: DateTime<Utc>,
    pub actor: Actor,
    #[serde(rename = "event")]
    pub mark: Mark,
    pub state: OrderState,
}

impl Marked {
    pub(crate) fn of(e: &EventRecord) -> Marked {
        Marked { at: e.at, actor: e.actor.clone(), mark: Mark::of(&e.event), state: e.state.clone() }
    }
}

impl Sketch {
    /// The sketch of a trail read whole.
    pub fn of((rec, events): &Trail) -> Sketch {
        Sketch { entries: events.iter().map(Marked::of).collect(), ..Sketch::head(rec) }
    }

    /// The sketch of an order read whole, its entries to come.
    pub(crate) fn head(rec: &OrderRecord) -> Sketch {
        let order = &rec.order;
        Sketch {
            id: rec.id,
            product: order.product.code.to_string(),
            sales_owner: order.sales_owner.as_ref().map(ToString::to_string),
            rating: order.customer.credit_rating.as_ref().map(ToString::to_string),
            entries: Vec::new(),
        }
    }
}

/// What a sketch reads of an order row (`OrderRecord`'s JSON).
#[derive(Deserialize)]
pub(crate) struct SketchRow {
    order: RowOrder,
}

#[derive(Deserialize)]
struct RowOrder {
    product: RowProduct,
    #[serde(default)]
    sales_owner: Option<Email>,
    customer: RowCustomer,
}

#[derive(Deserialize)]
struct RowProduct {
    code: String,
}

#[derive(Deserialize)]
struct RowCustomer {
    #[serde(default)]
    credit_rating: Option<CreditRating>,
}

impl SketchRow {
    /// The sketch of order `id`, its entries to come.
    pub(crate) fn sketch(self, id: OrderId) -> Sketch {
        let o = self.order;
        Sketch {
            id,
            product: o.product.code,
            sales_owner: o.sales_owner.as_ref().map(ToString::to_string),
            rating: o.customer.credit_rating.as_ref().map(ToString::to_string),
            entries: Vec::new(),
        }
    }
}

/// What a sketch reads of a step's events row, packed (`StepEvents`' JSON: the
/// step's time, each event's own time when it differs) or whole (`EventRecord`s).
#[derive(Deserialize)]
struct PackedMarks {
    at: DateTime<Utc>,
    events: Vec<PackedMarked>,
}

#[derive(Deserialize)]
struct PackedMarked {
    #[serde(default)]
    at: Option<DateTime<Utc>>,
    actor: Actor,
    event: Mark,
    state: OrderState,
}

/// A step's events row (`codec::encode`d) as marked entries.
///
/// # Errors
/// What is wrong with the row for this reading (the caller then reads it whole).
pub(crate) fn marks(row: &[u8]) -> Result<Vec<Marked>, String> {
    let json = super::codec::json(row)?;
    if json.first() == Some(&b'{') {
        let step: PackedMarks = serde_json::from_slice(&json).map_err(|e| e.to_string())?;
        Ok(step
            .events
            .into_iter()
            .map(|e| Marked { at: e.at.unwrap_or(step.at), actor: e.actor, mark: e.event, state: e.state })
            .collect())
    } else {
        serde_json::from_slice(&json).map_err(|e| e.to_string())
    }
}
