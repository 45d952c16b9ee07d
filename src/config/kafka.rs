//! `[source.kafka]` and `[sink.kafka]`: where `persona run` reads events
//! and writes outputs (used by [`crate::source::kafka`] and
//! [`crate::sink::kafka`]).

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[source.kafka]`: where a Kafka source reads from.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSourceConfig {
    /// Bootstrap brokers, `host:port[,host:port...]`. Default: `127.0.0.1:9092`.
    pub brokers: String,
    /// Topics to read (records of all of them feed one pipeline). Required.
    pub topics: Vec<String>,
    /// Consumer group; its committed offsets are where a restart resumes.
    /// Default: `persona`.
    pub group_id: String,
    /// Where a partition without a committed offset starts: `earliest` or
    /// `latest`. Default: `earliest` (a new pipeline reads the whole topic).
    pub auto_offset_reset: OffsetReset,
    /// Consumer session timeout in ms. Default: 6000 (the group notices a
    /// dead worker quickly; librdkafka's 45000 makes joins slow).
    pub session_timeout_ms: u32,
    /// How partitions are spread across workers: `workers`, the only one
    /// (partition k of the sorted list to worker k mod workers, fixed for
    /// the run). Default: `workers`.
    pub assignment: AssignmentMode,
    /// Where each partition is read from. State lives in memory, so by
    /// default (`beginning`) a start reads every partition from its beginning
    /// and rebuilds it; the group's committed offsets then only mark how far
    /// the outputs got. `committed` starts at the committed offsets (for
    /// outputs over new events only). Default: `beginning`.
    pub resume_from: ResumeFrom,
    /// Extra librdkafka properties (`fetch.max.bytes = "..."`), applied last
    /// so they override the above. Default: none.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaSourceConfig {
    fn default() -> Self {
        KafkaSourceConfig {
            brokers: super::DEFAULT_BROKERS.into(),
            topics: Vec::new(),
            group_id: "persona".into(),
            auto_offset_reset: OffsetReset::Earliest,
            session_timeout_ms: 6000,
            assignment: AssignmentMode::Workers,
            resume_from: ResumeFrom::Beginning,
            properties: BTreeMap::new(),
        }
    }
}

/// Where a partition with no committed offset starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OffsetReset {
    #[default]
    Earliest,
    Latest,
}

/// Where a source starts reading each partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResumeFrom {
    /// The beginning of the partition: rebuilds the in-memory state.
    #[default]
    Beginning,
    /// The group's committed offset (or `auto_offset_reset` where none).
    Committed,
}

/// How partitions are spread across timely workers. The group protocol's
/// assignment is not offered: it may move a partition between workers
/// mid-run, and the records read in between would be read twice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssignmentMode {
    /// Partition `k` of the sorted list goes to worker `k % peers`; fixed for the run.
    #[default]
    Workers,
}

/// One output topic: where an output's upserts go (see `[sink.kafka]` in the config).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSinkConfig {
    /// Bootstrap brokers, `host:port[,host:port...]`. Default: `127.0.0.1:9092`.
    pub brokers: String,
    /// The output topic. Required.
    pub topic: String,
    /// Partitions of the topic if persona creates it. Default: 4.
    pub partitions: i32,
    /// Extra librdkafka producer properties, applied last so they override
    /// persona's (`acks=all`, one request in flight). Default: none.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaSinkConfig {
    fn default() -> Self {
        KafkaSinkConfig {
            brokers: super::DEFAULT_BROKERS.into(),
            topic: String::new(),
            partitions: DEFAULT_PARTITIONS,
            properties: BTreeMap::new(),
        }
    }
}

/// Partitions of a topic persona creates, unless configured.
pub const DEFAULT_PARTITIONS: i32 = 4;
