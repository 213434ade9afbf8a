//! The outbox index: every outbox row's due key, grouped by the effect's connector,
//! with where the row stands (`Slot`). The dispatcher reads it instead of the outbox
//! space, whose removed rows an LSM engine keeps as tombstones until compaction, and
//! takes only durable rows, so it never performs an effect a crash could take back.
//!
//! Grouped by connector so that a round costs what it takes, not what is queued: a
//! connector the dispatcher cannot use now (its slots full, throttled, paused) is
//! passed over whole instead of entry by entry, and a listing stops at its limit in
//! each connector it reads. One walk of a single due-ordered index dropping the
//! skipped connectors' effects one by one was a third of the daemon's CPU with a
//! large backlog (`docs/src/performance.md`).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use crate::store::ConnectorFilter;
use crate::store::records::EffectId;

/// A due key: due time (ms, big-endian) ‖ the effect's key (`EffectRecord::due_key`).
pub(super) type Due = [u8; 30];

/// Where an outbox row stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    /// Written by the commit of this generation, which is not durable yet.
    Pending(u64),
    /// On disk: the dispatcher may perform it.
    Durable,
    /// Removed by the commit of this generation, not durable yet: listings still
    /// read the row until it is gone, so an effect is never in neither the outbox
    /// nor the dead letters; the dispatcher no longer takes it.
    Removing(u64),
}

/// An outbox row a batch writes (`added`) or removes, with its effect's connector.
#[derive(Debug, Clone)]
pub(super) struct Move {
    pub due: Due,
    pub connector: Arc<str>,
    pub added: bool,
}

/// The index: connector → due key → slot. A connector keeps its (possibly empty)
/// map once seen, so its name is held once and shared by every `Move` and listing.
#[derive(Debug, Default)]
pub(super) struct OutboxIndex {
    connectors: BTreeMap<Arc<str>, BTreeMap<Due, Slot>>,
}

impl OutboxIndex {
    /// The shared copy of a connector's name.
    pub fn name(&mut self, connector: &str) -> Arc<str> {
        if let Some((name, _)) = self.connectors.get_key_value(connector) {
            return name.clone();
        }
        let name: Arc<str> = Arc::from(connector);
        self.connectors.insert(name.clone(), BTreeMap::new());
        name
    }

    /// A row found on disk (at open).
    pub fn insert_durable(&mut self, connector: &str, due: Due) {
        let name = self.name(connector);
        self.entries(&name).insert(due, Slot::Durable);
    }

    fn entries(&mut self, connector: &Arc<str>) -> &mut BTreeMap<Due, Slot> {
        self.connectors.entry(connector.clone()).or_default()
    }

    /// A batch of `generation` handed to the committer: its rows are pending, the
    /// rows it removes are being removed.
    pub fn written(&mut self, moves: &[Move], generation: u64) {
        for m in moves {
            let entries = self.entries(&m.connector);
            if m.added {
                entries.insert(m.due, Slot::Pending(generation));
            } else if let Some(slot) = entries.get_mut(&m.due) {
                *slot = Slot::Removing(generation);
            }
        }
    }

    /// The batch of `generation` is durable: its rows may be performed, the rows it
    /// removed are gone (unless a later batch changed them again).
    pub fn durable(&mut self, moves: &[Move], generation: u64) {
        for m in moves {
            let entries = self.entries(&m.connector);
            match entries.get(&m.due) {
                Some(Slot::Pending(g)) if m.added && *g == generation => {
                    entries.insert(m.due, Slot::Durable);
                }
                Some(Slot::Removing(g)) if !m.added && *g == generation => {
                    entries.remove(&m.due);
                }
                _ => {}
            }
        }
    }

    /// Drops a row set aside (quarantined), whatever connector it is under.
    pub fn forget(&mut self, due: &Due) {
        for entries in self.connectors.values_mut() {
            if entries.remove(due).is_some() {
                return;
            }
        }
    }

    /// Up to `limit` due keys in due order, before `to` when given, with their
    /// connector; with `durable_only`, rows whose commit is not durable yet are left
    /// out (what the dispatcher may perform); with `filter`, only the connectors and
    /// effects it keeps. Each connector's map is read up to `limit` kept entries.
    pub fn list(
        &self,
        limit: usize,
        to: Option<&Due>,
        durable_only: bool,
        filter: Option<&ConnectorFilter>,
    ) -> Vec<(Due, Arc<str>)> {
        let mut out = Vec::new();
        for (connector, entries) in &self.connectors {
            if filter.is_some_and(|f| !f.keeps(connector)) {
                continue;
            }
            let range = entries.range::<Due, _>((Bound::Unbounded, to.map_or(Bound::Unbounded, Bound::Excluded)));
            out.extend(
                range
                    .filter(|(due, slot)| {
                        (!durable_only || **slot == Slot::Durable)
                            && filter.is_none_or(|f| !f.is_performing(|| EffectId::from_key(&due[8..])))
                    })
                    .take(limit)
                    .map(|(due, _)| (*due, connector.clone())),
            );
        }
        // Due keys are unique across connectors (they end with the effect's id).
        out.sort_unstable_by_key(|a| a.0);
        out.truncate(limit);
        out
    }

    /// How many rows the index holds (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.connectors.values().map(BTreeMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OrderId;

    fn due(ms: u64, n: u32) -> Due {
        let mut d = [0u8; 30];
        d[..8].copy_from_slice(&ms.to_be_bytes());
        d[8..].copy_from_slice(&EffectId { order_id: OrderId::from_bytes([7; 16]), seq: n, index: 0 }.key());
        d
    }

    fn moved(index: &mut OutboxIndex, connector: &str, due: Due, added: bool) -> Move {
        Move { due, connector: index.name(connector), added }
    }

    fn listed(
        index: &OutboxIndex,
        limit: usize,
        to: Option<&Due>,
        durable: bool,
        f: Option<&ConnectorFilter>,
    ) -> Vec<(u64, String)> {
        index
            .list(limit, to, durable, f)
            .into_iter()
            .map(|(d, c)| (u64::from_be_bytes(d[..8].try_into().unwrap()), c.to_string()))
            .collect()
    }

    #[test]
    fn lists_in_due_order_across_connectors_up_to_the_limit_and_the_bound() {
        let mut index = OutboxIndex::default();
        for (c, ms, n) in [("erp", 30, 1), ("mail", 10, 2), ("erp", 20, 3), ("finance", 40, 4), ("mail", 50, 5)] {
            index.insert_durable(c, due(ms, n));
        }
        assert_eq!(
            listed(&index, 10, None, true, None),
            [(10, "mail"), (20, "erp"), (30, "erp"), (40, "finance"), (50, "mail")].map(|(m, c)| (m, c.to_string()))
        );
        assert_eq!(listed(&index, 2, None, true, None), [(10, "mail".into()), (20, "erp".into())]);
        assert_eq!(listed(&index, 10, Some(&due(40, 0)), true, None).len(), 3, "the bound is exclusive");
    }

    #[test]
    fn a_filter_passes_over_skipped_connectors_and_effects_in_flight() {
        let mut index = OutboxIndex::default();
        for n in 0..100 {
            index.insert_durable("erp", due(u64::from(n), n));
        }
        index.insert_durable("mail", due(500, 1000));
        let f = ConnectorFilter { skip: ["erp".to_string()].into(), ..Default::default() };
        assert_eq!(listed(&index, 5, None, true, Some(&f)), [(500, "mail".to_string())]);
        let f = ConnectorFilter {
            only: Some(["erp".to_string()].into()),
            performing: (0..3).map(|n| EffectId { order_id: OrderId::from_bytes([7; 16]), seq: n, index: 0 }).collect(),
            ..Default::default()
        };
        assert_eq!(
            listed(&index, 2, None, true, Some(&f)),
            [(3, "erp".to_string()), (4, "erp".to_string())],
            "the first three are in flight"
        );
    }

    #[test]
    fn rows_show_to_the_dispatcher_once_durable_and_go_once_their_removal_is() {
        let mut index = OutboxIndex::default();
        let a = moved(&mut index, "erp", due(1, 1), true);
        index.written(std::slice::from_ref(&a), 7);
        assert!(listed(&index, 10, None, true, None).is_empty(), "not durable yet");
        assert_eq!(listed(&index, 10, None, false, None).len(), 1, "listings see it");
        index.durable(std::slice::from_ref(&a), 7);
        assert_eq!(listed(&index, 10, None, true, None).len(), 1);

        // Rescheduled by generation 8: the old row goes once 8 is durable.
        let gone = Move { added: false, ..a.clone() };
        let b = moved(&mut index, "erp", due(9, 1), true);
        index.written(&[gone.clone(), b.clone()], 8);
        assert!(listed(&index, 10, None, true, None).is_empty(), "removing and pending rows are not taken");
        assert_eq!(listed(&index, 10, None, false, None).len(), 2, "a listing still reads both");
        index.durable(&[gone.clone(), b], 8);
        assert_eq!(listed(&index, 10, None, true, None), [(9, "erp".to_string())]);
        assert_eq!(index.len(), 1);

        // A later generation's change is not undone by an earlier one becoming durable.
        let c = moved(&mut index, "erp", due(20, 2), true);
        index.written(std::slice::from_ref(&c), 9);
        index.written(&[Move { added: false, ..c.clone() }], 10);
        index.durable(std::slice::from_ref(&c), 9);
        assert!(listed(&index, 10, None, true, None).iter().all(|(ms, _)| *ms != 20), "still being removed by 10");
        index.durable(&[Move { added: false, ..c }], 10);
        assert_eq!(index.len(), 1);

        index.forget(&due(9, 1));
        assert_eq!(index.len(), 0);
    }
}
