//! Domain types: money, ids, the canonical order, masking its personal data. Pure data
//! that parses at the edge; no I/O, no store, no HTTP. The lifecycle lives in `engine`.

pub(crate) mod ids;
pub(crate) mod money;
pub(crate) mod order;
pub(crate) mod privacy;

pub(crate) use ids::{ConnectorId, ExternalId};
pub use ids::{ExternalRef, IdError, OrderId};
pub(crate) use money::CurrencyCode;
pub use money::Money;
pub use order::Order;
