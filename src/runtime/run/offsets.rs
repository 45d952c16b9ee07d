//! Offsets of a run: what worker 0 may commit, and when the run has rebuilt
//! the state an earlier run left in the upsert topics.

use std::cell::RefCell;

use crate::kafka::Offsets;

/// The offset snapshots the workers sent, each with the time whose outputs
/// must be written before it may be committed.
#[derive(Default)]
pub struct Snapshots {
    waiting: RefCell<Vec<(u64, Offsets)>>,
}

impl Snapshots {
    /// Adds a snapshot of offsets whose records' outputs are complete once
    /// time `until` is.
    pub fn push(&self, until: u64, offsets: Offsets) {
        self.waiting.borrow_mut().push((until, offsets));
    }

    /// Removes the snapshots whose time `durable` accepts and merges them:
    /// the furthest offset of each partition.
    pub fn take_ready(&self, durable: impl Fn(u64) -> bool) -> Offsets {
        let mut merged = Offsets::new();
        self.waiting.borrow_mut().retain(|(time, offsets)| {
            if !durable(*time) {
                return true;
            }
            merge(&mut merged, offsets);
            false
        });
        merged
    }
}

/// Raises each partition of `into` to its offset in `offsets`.
fn merge(into: &mut Offsets, offsets: &Offsets) {
    for (partition, offset) in offsets {
        let entry = into.entry(partition.clone()).or_insert(*offset);
        *entry = (*entry).max(*offset);
    }
}

/// What worker 0 knows of the run before this one.
pub struct EarlierRun {
    /// The offsets it committed, where its outputs got to; `None` once this
    /// run is past them.
    committed: Option<Offsets>,
    /// The offsets whose outputs this run has written.
    durable: Offsets,
}

impl EarlierRun {
    pub fn new(committed: Offsets) -> EarlierRun {
        EarlierRun {
            committed: Some(committed),
            durable: Offsets::new(),
        }
    }

    /// Notes newly durable offsets; returns true once, when they pass the
    /// earlier run's: the keys it left that this run has not sent are then
    /// to be tombstoned.
    pub fn passed(&mut self, durable: &Offsets) -> bool {
        let Some(committed) = &self.committed else {
            return false;
        };
        merge(&mut self.durable, durable);
        let past = committed
            .iter()
            .all(|(partition, offset)| self.durable.get(partition).is_some_and(|o| o >= offset));
        if past {
            self.committed = None;
        }
        past
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(pairs: &[(i32, i64)]) -> Offsets {
        pairs
            .iter()
            .map(|(p, o)| (("t".to_owned(), *p), *o))
            .collect()
    }

    #[test]
    fn ready_snapshots_merge_to_the_furthest_offset_of_each_partition() {
        let snapshots = Snapshots::default();
        snapshots.push(10, offsets(&[(0, 5)]));
        snapshots.push(30, offsets(&[(0, 9), (1, 3)]));
        snapshots.push(20, offsets(&[(0, 7), (1, 4)]));
        assert_eq!(snapshots.take_ready(|t| t < 5), Offsets::new());
        assert_eq!(snapshots.take_ready(|t| t < 25), offsets(&[(0, 7), (1, 4)]));
        assert_eq!(snapshots.take_ready(|_| true), offsets(&[(0, 9), (1, 3)]));
        assert_eq!(snapshots.take_ready(|_| true), Offsets::new());
    }

    #[test]
    fn an_earlier_run_is_passed_once_every_partition_is_past_it() {
        let mut earlier = EarlierRun::new(offsets(&[(0, 10), (1, 5)]));
        assert!(!earlier.passed(&offsets(&[(0, 12)])));
        assert!(!earlier.passed(&offsets(&[(1, 4)])));
        assert!(earlier.passed(&offsets(&[(1, 5)])));
        assert!(!earlier.passed(&offsets(&[(1, 6)])), "only once");
    }

    #[test]
    fn an_earlier_run_that_committed_nothing_is_passed_at_once() {
        assert!(EarlierRun::new(Offsets::new()).passed(&Offsets::new()));
    }
}
