//! Kafka topics as a source: messages with their topic, partition and offset,
//! read by timely workers without blocking, with offsets committed only when
//! the caller says the outputs that include them are durable.
//!
//! Each timely worker creates its own [`KafkaSource`] in one consumer group
//! and reads a fixed share of the partitions: partition `k` of the sorted
//! (topic, partition) list goes to worker `k % peers`. Every worker knows its
//! share from the start and it never moves, so no record is read by two
//! workers in one run and a run on 4 workers reads what a run on 1 worker
//! reads; partitions added to a topic while running are picked up on
//! restart. This is how Flink's and Materialize's Kafka sources work too.
//! Each partition starts from its beginning or from the committed offset, as
//! `resume_from` says. The group is used for its committed offsets only; as
//! it has no members, any worker may commit the offsets of any partition:
//! `persona run` commits all of them from worker 0, once its sinks have
//! written the outputs.
//!
//! Offsets are never committed automatically (`enable.auto.commit=false`):
//! [`KafkaSource::offsets`] snapshots the next offset to read of each
//! partition, and [`KafkaSource::commit`] commits a snapshot once the
//! outputs of every record before it are written.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

pub use crate::config::kafka::{KafkaSinkConfig, KafkaSourceConfig, OffsetReset, ResumeFrom};
use crate::kafka::{apply, client, connection_settings};
pub use crate::kafka::{Offsets, TopicPartition};
use crate::rejected::Position;

/// Errors of the Kafka source. Each names the brokers, topic or partition.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    #[error("cannot create a Kafka consumer for {brokers}")]
    Create {
        brokers: String,
        source: Box<KafkaError>,
    },
    #[error("cannot read the partitions of topic {topic} from {brokers}")]
    Metadata {
        brokers: String,
        topic: String,
        source: Box<KafkaError>,
    },
    #[error("topic {topic} does not exist on {brokers} (create it, e.g. with `persona produce`)")]
    MissingTopic { brokers: String, topic: String },
    #[error("cannot read the committed offsets of group {group_id}")]
    Committed {
        group_id: String,
        source: Box<KafkaError>,
    },
    #[error("cannot assign partitions to the consumer")]
    Assign { source: Box<KafkaError> },
    #[error("cannot consume from Kafka")]
    Consume { source: Box<KafkaError> },
    #[error("cannot commit offsets {offsets:?} for group {group_id}")]
    Commit {
        group_id: String,
        offsets: Offsets,
        source: Box<KafkaError>,
    },
    #[error("topic {topic} was not read to its end {ends:?} within {within:?}")]
    NotToTheEnd {
        topic: String,
        ends: Offsets,
        within: Duration,
    },
    #[error("invalid [kafka] source config: {0}")]
    Invalid(String),
}

/// One message of a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaRecord {
    /// Topic, partition and offset, as rejected records show them.
    pub position: Position,
    /// The message key, if any (persona's producer keys by user).
    pub key: Option<Vec<u8>>,
    /// The message value; empty for a null value (a tombstone), which a
    /// format treats like a blank line.
    pub payload: Vec<u8>,
}

impl KafkaRecord {
    /// The message's topic and partition.
    pub fn partition(&self) -> TopicPartition {
        match &self.position {
            Position::Kafka {
                topic, partition, ..
            } => (topic.clone(), *partition),
            _ => unreachable!("Kafka records have Kafka positions"),
        }
    }

    /// Whether the message holds no record: a null value (a tombstone) or
    /// blank bytes.
    pub fn is_blank(&self) -> bool {
        self.payload.iter().all(u8::is_ascii_whitespace)
    }
}

/// How long blocking set-up calls (metadata, committed offsets) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// One worker's consumer. Poll it from the worker loop with
/// [`poll_batch`](KafkaSource::poll_batch), which never blocks.
pub struct KafkaSource {
    consumer: Arc<BaseConsumer>,
    config: KafkaSourceConfig,
    next_offsets: Offsets,
}

impl KafkaSource {
    /// A consumer for worker `worker` of `peers` (timely's `index()` and
    /// `peers()`). It reads the topics' partition lists and the group's
    /// committed offsets now (blocking, up to 30 s each), so a missing topic
    /// is an error here rather than silence later.
    pub fn new(
        config: &KafkaSourceConfig,
        worker: usize,
        peers: usize,
    ) -> Result<KafkaSource, KafkaSourceError> {
        KafkaSource::new_at(config, worker, peers, None)
    }

    /// [`KafkaSource::new`], reading on from a checkpoint's offsets when
    /// given one (a partition it lacks from its beginning), whatever
    /// `resume_from` says.
    pub fn new_at(
        config: &KafkaSourceConfig,
        worker: usize,
        peers: usize,
        checkpoint: Option<&Offsets>,
    ) -> Result<KafkaSource, KafkaSourceError> {
        check(config)?;
        if peers == 0 || worker >= peers {
            return Err(KafkaSourceError::Invalid(format!(
                "worker {worker} is not below peers {peers}"
            )));
        }
        let mut settings = client(&config.brokers);
        settings
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            // Offsets advance only through `commit`; librdkafka's own offset
            // store would otherwise be committed on close.
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                match config.auto_offset_reset {
                    OffsetReset::Earliest => "earliest",
                    OffsetReset::Latest => "latest",
                },
            )
            .set("session.timeout.ms", config.session_timeout_ms.to_string())
            // A streaming job wants records soon; librdkafka's 500 ms wait
            // for a fuller fetch halves a replay's speed on some brokers.
            .set("fetch.wait.max.ms", "50")
            .set("client.id", format!("persona-worker-{worker}"));
        apply(&mut settings, &config.properties);
        let consumer: BaseConsumer =
            settings
                .create()
                .map_err(|source| KafkaSourceError::Create {
                    brokers: config.brokers.clone(),
                    source: Box::new(source),
                })?;
        let mut source = KafkaSource {
            consumer: Arc::new(consumer),
            config: config.clone(),
            next_offsets: Offsets::new(),
        };
        source.assign_share(worker, peers, checkpoint)?;
        Ok(source)
    }

    /// Assigns this worker's share of all partitions, each from its offset
    /// in `checkpoint`, or else from its beginning or from the group's
    /// committed offset (or `auto_offset_reset` where there is none), as
    /// `resume_from` says.
    fn assign_share(
        &mut self,
        worker: usize,
        peers: usize,
        checkpoint: Option<&Offsets>,
    ) -> Result<(), KafkaSourceError> {
        let mut all: Vec<TopicPartition> = Vec::new();
        for topic in &self.config.topics {
            let metadata_error = |source| KafkaSourceError::Metadata {
                brokers: self.config.brokers.clone(),
                topic: topic.clone(),
                source: Box::new(source),
            };
            let metadata = self
                .consumer
                .fetch_metadata(Some(topic), SETUP_TIMEOUT)
                .map_err(metadata_error)?;
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .filter(|t| t.name() == topic && t.error().is_none())
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            if partitions.is_empty() {
                return Err(KafkaSourceError::MissingTopic {
                    brokers: self.config.brokers.clone(),
                    topic: topic.clone(),
                });
            }
            all.extend(partitions.into_iter().map(|p| (topic.clone(), p)));
        }
        all.sort();
        let mut mine = TopicPartitionList::new();
        for (topic, partition) in all.iter().skip(worker).step_by(peers) {
            mine.add_partition(topic, *partition);
        }
        if mine.count() == 0 {
            return Ok(());
        }
        if let Some(checkpoint) = checkpoint {
            let mut start = TopicPartitionList::new();
            for (topic, partition) in all.iter().skip(worker).step_by(peers) {
                let key = (topic.clone(), *partition);
                let offset = match checkpoint.get(&key) {
                    Some(&next) => {
                        self.next_offsets.insert(key, next);
                        Offset::Offset(next)
                    }
                    None => Offset::Beginning,
                };
                start
                    .add_partition_offset(topic, *partition, offset)
                    .map_err(|source| KafkaSourceError::Assign {
                        source: Box::new(source),
                    })?;
            }
            return self
                .consumer
                .assign(&start)
                .map_err(|source| KafkaSourceError::Assign {
                    source: Box::new(source),
                });
        }
        if self.config.resume_from == ResumeFrom::Beginning {
            mine.set_all_offsets(Offset::Beginning)
                .map_err(|source| KafkaSourceError::Assign {
                    source: Box::new(source),
                })?;
            return self
                .consumer
                .assign(&mine)
                .map_err(|source| KafkaSourceError::Assign {
                    source: Box::new(source),
                });
        }
        let committed = self
            .consumer
            .committed_offsets(mine, SETUP_TIMEOUT)
            .map_err(|source| KafkaSourceError::Committed {
                group_id: self.config.group_id.clone(),
                source: Box::new(source),
            })?;
        let reset = match self.config.auto_offset_reset {
            OffsetReset::Earliest => Offset::Beginning,
            OffsetReset::Latest => Offset::End,
        };
        let mut start = TopicPartitionList::new();
        for element in committed.elements() {
            let offset = match element.offset() {
                Offset::Offset(n) => Offset::Offset(n),
                _ => reset,
            };
            start
                .add_partition_offset(element.topic(), element.partition(), offset)
                .map_err(|source| KafkaSourceError::Assign {
                    source: Box::new(source),
                })?;
        }
        self.consumer
            .assign(&start)
            .map_err(|source| KafkaSourceError::Assign {
                source: Box::new(source),
            })
    }

    /// Appends up to `max` waiting messages to `out`; returns how many. Never
    /// blocks: it returns 0 when nothing is waiting.
    pub fn poll_batch(
        &mut self,
        max: usize,
        out: &mut Vec<KafkaRecord>,
    ) -> Result<usize, KafkaSourceError> {
        let mut taken = 0;
        // A poll that serves a commit or other event returns nothing
        // although messages may wait; a few empty polls in a row mean empty.
        let mut empty_polls = 0;
        while taken < max && empty_polls < 3 {
            match self.consumer.poll(Duration::ZERO) {
                None => empty_polls += 1,
                Some(Err(KafkaError::PartitionEOF(_))) => empty_polls += 1,
                Some(Err(source)) => {
                    return Err(KafkaSourceError::Consume {
                        source: Box::new(source),
                    })
                }
                Some(Ok(message)) => {
                    empty_polls = 0;
                    let topic = message.topic().to_owned();
                    let partition = message.partition();
                    let offset = message.offset();
                    self.next_offsets
                        .insert((topic.clone(), partition), offset + 1);
                    out.push(KafkaRecord {
                        position: Position::Kafka {
                            topic,
                            partition,
                            offset,
                        },
                        key: message.key().map(<[u8]>::to_vec),
                        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    });
                    taken += 1;
                }
            }
        }
        Ok(taken)
    }

    /// The next offset to read of each partition this worker has read from:
    /// the snapshot to hand to [`commit`](Self::commit) once the outputs of
    /// every record read so far are durable.
    pub fn offsets(&self) -> Offsets {
        self.next_offsets.clone()
    }

    /// The partitions this worker owns (sorted), fixed from [`new`](Self::new).
    pub fn assignment(&self) -> Result<Vec<TopicPartition>, KafkaSourceError> {
        let list = self
            .consumer
            .assignment()
            .map_err(|source| KafkaSourceError::Consume {
                source: Box::new(source),
            })?;
        let mut partitions: Vec<TopicPartition> = list
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        partitions.sort();
        Ok(partitions)
    }

    /// Commits `offsets` (next offsets to read, as [`offsets`](Self::offsets)
    /// gives them) to the group and waits for the broker's answer; returns
    /// how many. Call it only with offsets whose records' outputs are
    /// durable: a restart resumes exactly there.
    pub fn commit(&self, offsets: &Offsets) -> Result<usize, KafkaSourceError> {
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in offsets {
            list.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .map_err(|source| KafkaSourceError::Consume {
                    source: Box::new(source),
                })?;
        }
        if list.count() == 0 {
            return Ok(0);
        }
        let commit_error = |source| KafkaSourceError::Commit {
            group_id: self.config.group_id.clone(),
            offsets: offsets.clone(),
            source: Box::new(source),
        };
        self.consumer
            .commit(&list, CommitMode::Sync)
            .map_err(commit_error)?;
        Ok(list.count())
    }

    /// The group's committed offsets of this worker's partitions (blocking):
    /// what a restarted worker would resume from.
    pub fn committed(&self, timeout: Duration) -> Result<Offsets, KafkaSourceError> {
        let list =
            self.consumer
                .committed(timeout)
                .map_err(|source| KafkaSourceError::Committed {
                    group_id: self.config.group_id.clone(),
                    source: Box::new(source),
                })?;
        Ok(list
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(n) => Some(((e.topic().to_owned(), e.partition()), n)),
                _ => None,
            })
            .collect())
    }

    /// The end (high watermark) of each partition this worker owns
    /// (blocking, one request per partition): with [`offsets`](Self::offsets)
    /// it tells whether the worker has caught up, e.g. to stop a run at the
    /// end of a topic.
    pub fn end_offsets(&self, timeout: Duration) -> Result<Offsets, KafkaSourceError> {
        partition_ends(&self.consumer, &self.config.brokers, timeout)
    }

    /// Asks where this worker's partitions end every `every`, on a thread
    /// of its own: a worker loop reads the latest answer from the returned
    /// [`EndWatch`] and never waits on a slow broker. Asking blocks (a
    /// request per partition), and a busy broker can take seconds to answer.
    pub fn watch_ends(&self, every: Duration, timeout: Duration) -> EndWatch {
        let watch = EndWatch::default();
        let (consumer, brokers) = (self.consumer.clone(), self.config.brokers.clone());
        let (latest, stop) = (watch.latest.clone(), watch.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let asked_at = Instant::now();
                let answer = partition_ends(&consumer, &brokers, timeout);
                *latest.lock().expect("the end watch never panics") = Some(answer);
                std::thread::sleep(every.saturating_sub(asked_at.elapsed()));
            }
        });
        watch
    }

    /// Whether this worker has read every partition in `ends` up to its end.
    /// A partition never read from counts as caught up only if it is empty
    /// from where the worker started, which `ends` alone cannot tell: pass
    /// ends fetched after the worker has polled, or compare with `committed`.
    pub fn caught_up(&self, ends: &Offsets, committed: &Offsets) -> bool {
        ends.iter().all(|(partition, end)| {
            let next = self
                .next_offsets
                .get(partition)
                .or_else(|| committed.get(partition))
                .copied()
                .unwrap_or(0);
            next >= *end
        })
    }
}

/// Refuses settings librdkafka would take and then fail on with errors
/// that name none of them, or retry forever.
pub fn check(config: &KafkaSourceConfig) -> Result<(), KafkaSourceError> {
    let invalid = |what: String| Err(KafkaSourceError::Invalid(what));
    if config.topics.is_empty() {
        return invalid("`topics` is empty".into());
    }
    if config.brokers.trim().is_empty() {
        return invalid("`brokers` is empty".into());
    }
    if config.group_id.trim().is_empty() {
        return invalid("`group_id` is empty".into());
    }
    let mut topics: Vec<&String> = config.topics.iter().collect();
    topics.sort();
    match topics.windows(2).find(|pair| pair[0] == pair[1]) {
        Some(pair) => invalid(format!("`topics` names {:?} twice", pair[0])),
        None => Ok(()),
    }
}

/// Asks the brokers of `config` for their metadata, waiting at most
/// `timeout`: whether they can be reached at all.
pub fn brokers_answer(config: &KafkaSourceConfig, timeout: Duration) -> Result<(), KafkaError> {
    let mut settings = client(&config.brokers);
    apply(&mut settings, &config.properties);
    let consumer: BaseConsumer = settings.create()?;
    consumer.fetch_metadata(None, timeout).map(|_| ())
}

/// The offsets `config.group_id` has committed on every partition of its
/// topics (blocking): where the last run's outputs got to.
pub fn group_committed(config: &KafkaSourceConfig) -> Result<Offsets, KafkaSourceError> {
    let all = KafkaSourceConfig {
        resume_from: ResumeFrom::Committed,
        ..config.clone()
    };
    KafkaSource::new(&all, 0, 1)?.committed(SETUP_TIMEOUT)
}

/// The end (high watermark) of each partition assigned to `consumer`.
fn partition_ends(
    consumer: &BaseConsumer,
    brokers: &str,
    timeout: Duration,
) -> Result<Offsets, KafkaSourceError> {
    let assignment = consumer
        .assignment()
        .map_err(|source| KafkaSourceError::Consume {
            source: Box::new(source),
        })?;
    let mut ends = Offsets::new();
    for element in assignment.elements() {
        let (topic, partition) = (element.topic(), element.partition());
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, timeout)
            .map_err(|source| KafkaSourceError::Metadata {
                brokers: brokers.to_owned(),
                topic: topic.to_owned(),
                source: Box::new(source),
            })?;
        ends.insert((topic.to_owned(), partition), high);
    }
    Ok(ends)
}

/// The latest answer of [`KafkaSource::watch_ends`]; dropping it stops
/// the asking.
#[derive(Default)]
pub struct EndWatch {
    latest: Arc<Mutex<Option<Result<Offsets, KafkaSourceError>>>>,
    stop: Arc<AtomicBool>,
}

impl EndWatch {
    /// The answer that came since the last call, if one did.
    pub fn take(&self) -> Option<Result<Offsets, KafkaSourceError>> {
        self.latest
            .lock()
            .expect("the end watch never panics")
            .take()
    }
}

impl Drop for EndWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The keys an upsert topic holds now (read from its beginning to its end,
/// tombstoned keys left out): what an earlier run left there.
pub fn upsert_keys(config: &KafkaSinkConfig) -> Result<BTreeSet<String>, KafkaSourceError> {
    let reader = KafkaSourceConfig {
        brokers: config.brokers.clone(),
        topics: vec![config.topic.clone()],
        group_id: format!("persona-upsert-reader-{}", std::process::id()),
        resume_from: ResumeFrom::Beginning,
        properties: connection_settings(&config.properties)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
        ..KafkaSourceConfig::default()
    };
    let within = Duration::from_secs(60);
    let mut source = KafkaSource::new(&reader, 0, 1)?;
    let ends = source.end_offsets(within)?;
    let mut keys = BTreeSet::new();
    let mut batch = Vec::new();
    let started = Instant::now();
    while !source.caught_up(&ends, &Offsets::new()) {
        if started.elapsed() > within {
            return Err(KafkaSourceError::NotToTheEnd {
                topic: config.topic.clone(),
                ends,
                within,
            });
        }
        batch.clear();
        if source.poll_batch(10_000, &mut batch)? == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
        for record in batch.drain(..) {
            let key = String::from_utf8_lossy(&record.key.unwrap_or_default()).into_owned();
            if record.payload.is_empty() {
                keys.remove(&key);
            } else {
                keys.insert(key);
            }
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_unknown_fields() {
        let config: KafkaSourceConfig = toml::from_str("topics = [\"events\"]").unwrap();
        assert_eq!(config.group_id, "persona");
        assert_eq!(config.auto_offset_reset, OffsetReset::Earliest);
        assert_eq!(config.session_timeout_ms, 6000);
        assert!(toml::from_str::<KafkaSourceConfig>("topic = \"events\"").is_err());
    }

    #[test]
    fn settings_librdkafka_would_fail_on_are_refused_by_name() {
        let refused = |text: &str| {
            let config: KafkaSourceConfig = toml::from_str(text).unwrap();
            check(&config).unwrap_err().to_string()
        };
        assert!(refused("topics = []").contains("`topics` is empty"));
        assert!(refused("topics = [\"a\"]\nbrokers = \" \"").contains("`brokers` is empty"));
        assert!(refused("topics = [\"a\"]\ngroup_id = \"\"").contains("`group_id` is empty"));
        assert!(refused("topics = [\"b\", \"a\", \"b\"]").contains("\"b\" twice"));
        let fine: KafkaSourceConfig = toml::from_str("topics = [\"a\", \"b\"]").unwrap();
        assert!(check(&fine).is_ok());
    }
}
