//! Event time per partition of a run: when a worker's input frontier may advance.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::TimeConfig;
use crate::kafka::TopicPartition;

/// Event time per partition, as Flink's Kafka source keeps it: the
/// watermark of a worker is the least latest event time of its partitions,
/// so a partition that lags holds the others back and its records are not
/// late. A partition that has given no event yet holds everything back
/// unless it is read to its end (empty); once every partition is read to
/// its end, the watermark is the latest time of any, so a quiet input still
/// completes its outputs up to the allowed lateness.
pub struct PartitionWatermarks {
    latest: BTreeMap<TopicPartition, Option<u64>>,
    /// Partitions read to their end when last asked.
    idle: BTreeSet<TopicPartition>,
}

impl PartitionWatermarks {
    pub fn new(partitions: &[TopicPartition]) -> PartitionWatermarks {
        PartitionWatermarks {
            latest: partitions.iter().map(|p| (p.clone(), None)).collect(),
            idle: BTreeSet::new(),
        }
    }

    /// The latest event time of each partition.
    pub fn latest(&self) -> impl Iterator<Item = (&TopicPartition, Option<u64>)> {
        self.latest.iter().map(|(p, latest)| (p, *latest))
    }

    /// The tick before which a record of `partition` is late by its own
    /// partition: that of the latest time it gave, less the allowed
    /// lateness (0 before it gave one). Judged record by record, it is a
    /// function of the partition's records alone, the same for any `-w`,
    /// poll batch or restart.
    pub fn late_before(&self, partition: &TopicPartition, time: &TimeConfig) -> u64 {
        let lateness_ms = time.allowed_lateness_s.saturating_mul(1000);
        let latest = self.latest.get(partition).copied().flatten();
        latest.map_or(0, |ms| time.tick_of(ms.saturating_sub(lateness_ms)))
    }

    pub fn has_data(&mut self, partition: &TopicPartition) {
        self.idle.remove(partition);
    }

    pub fn saw(&mut self, partition: &TopicPartition, time_ms: u64) {
        let latest = self.latest.entry(partition.clone()).or_default();
        *latest = (*latest).max(Some(time_ms));
    }

    pub fn idle(&mut self, partition: &TopicPartition) {
        self.idle.insert(partition.clone());
    }

    pub fn all_idle(&self) -> bool {
        self.latest.keys().all(|p| self.idle.contains(p))
    }

    /// The event time every partition has reached (see the type's doc);
    /// `None` while a partition with data to read has given no event yet.
    pub fn watermark(&self) -> Option<u64> {
        if self.all_idle() {
            return self.latest.values().flatten().max().copied();
        }
        self.latest
            .iter()
            .filter(|(p, latest)| latest.is_some() || !self.idle.contains(*p))
            .try_fold(u64::MAX, |least, (_, latest)| Some(least.min((*latest)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(p: i32) -> TopicPartition {
        ("t".to_owned(), p)
    }

    #[test]
    fn the_slowest_partition_holds_the_watermark() {
        let mut watermarks = PartitionWatermarks::new(&[partition(0), partition(1)]);
        assert_eq!(
            watermarks.watermark(),
            None,
            "no partition has given an event"
        );
        watermarks.saw(&partition(0), 100);
        assert_eq!(
            watermarks.watermark(),
            None,
            "partition 1 may still hold earlier events"
        );
        watermarks.saw(&partition(1), 40);
        assert_eq!(watermarks.watermark(), Some(40));
        watermarks.saw(&partition(1), 30);
        assert_eq!(watermarks.watermark(), Some(40), "it never goes back");
    }

    #[test]
    fn an_empty_partition_holds_nothing_back_and_a_quiet_input_completes() {
        let mut watermarks = PartitionWatermarks::new(&[partition(0), partition(1)]);
        watermarks.saw(&partition(0), 100);
        watermarks.idle(&partition(1));
        assert_eq!(watermarks.watermark(), Some(100));
        assert!(!watermarks.all_idle());
        watermarks.saw(&partition(1), 50);
        watermarks.idle(&partition(0));
        assert!(watermarks.all_idle());
        assert_eq!(
            watermarks.watermark(),
            Some(100),
            "all read: the latest of any"
        );
        watermarks.has_data(&partition(1));
        assert_eq!(
            watermarks.watermark(),
            Some(50),
            "new data: the least again"
        );
    }
}
