//! `BoxFuture`: the one boxed-future shape of the crate's trait objects (connectors'
//! `Push`/`Poll`/`Health`, the `Store`), kept in a leaf so both depend on nothing
//! above them.

use std::future::Future;
use std::pin::Pin;

/// A sendable future behind a box, so traits with async verbs stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
