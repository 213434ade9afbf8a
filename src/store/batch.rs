//! A batch of key-value writes: what the embedded layout (`kv/`) hands an engine
//! and what the group commit (`commit.rs`) merges. Below both, so neither imports
//! the other for it.

/// Writes applied all or none, also across a crash. `None` removes the key.
#[derive(Default, Debug)]
pub struct Batch {
    pub ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn put(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.ops.push((k, Some(v)));
    }
    pub fn del(&mut self, k: Vec<u8>) {
        self.ops.push((k, None));
    }
}
