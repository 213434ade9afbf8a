//! A batch of key-value writes: what the embedded layout (`kv/`) hands an engine
//! and what the group commit (`commit.rs`) merges. Below both, so neither imports
//! the other for it.

use bytes::Bytes;

/// Writes applied all or none, also across a crash. `None` removes the key. Keys and
/// values are shared, not copied, on their way to the engine: the pending-write index
/// and the committer's merge hold the same bytes (`kv::step`, `commit.rs`).
#[derive(Default, Debug)]
pub struct Batch {
    pub ops: Vec<(Bytes, Option<Bytes>)>,
}

impl Batch {
    pub fn put(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.ops.push((k.into(), Some(v.into())));
    }
    pub fn del(&mut self, k: Vec<u8>) {
        self.ops.push((k.into(), None));
    }
}
