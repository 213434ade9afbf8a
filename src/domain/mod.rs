//! Domain types: money, ids, the canonical order. Pure data that parses at the edge;
//! no I/O, no store, no HTTP. The lifecycle lives in `engine`.

pub mod ids;
pub mod money;
pub mod order;

pub use ids::{ConnectorId, ExternalId, ExternalRef, IdError, OrderId};
pub use money::{CurrencyCode, Money, MoneyError};
pub use order::{CreditRating, Customer, FieldError, IdDocument, Order, Product, ProductType};
