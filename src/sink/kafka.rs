//! Kafka topics as an upsert sink: one message per changed key, the record's
//! current JSON as the value, or a tombstone (null value) when the key's
//! record is gone, so a compacted topic holds exactly the current state.
//!
//! The sink is fed the final state per key after each completed time (see
//! [`upserts`]); messages of one key go to one partition in the order sent,
//! and `max.in.flight.requests.per.connection=1` keeps retries from
//! reordering them (the broker in the tests has no idempotent producer), so
//! the last message of a key is its current state. [`KafkaProducer`] is the
//! raw keyed producer under it, also used by `persona produce` and for
//! dead letters.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use serde_json::Value;

pub use crate::config::kafka::{KafkaSinkConfig, DEFAULT_PARTITIONS};
use crate::kafka::{apply, client, ensure_topic, TopicError};

/// Errors of the Kafka sink and producer.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    #[error("cannot create a Kafka client for {brokers}")]
    Create {
        brokers: String,
        source: Box<KafkaError>,
    },
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error("cannot send to topic {topic}")]
    Send {
        topic: String,
        source: Box<KafkaError>,
    },
    #[error("{failed} message(s) to topic {topic} were not delivered; first error: {first}")]
    Delivery {
        topic: String,
        failed: u64,
        first: String,
    },
    #[error("cannot flush messages to topic {topic}")]
    Flush {
        topic: String,
        source: Box<KafkaError>,
    },
    #[error("output key {key} has {count} records at once; an upsert output needs one per key")]
    SeveralValues { key: String, count: usize },
}

impl KafkaSinkError {
    /// Whether the producer refused a message as larger than
    /// `message.max.bytes`: that message alone cannot be sent.
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            KafkaSinkError::Send { source, .. }
                if source.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge)
        )
    }
}

/// How long a flush may take before it fails.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A keyed producer to one topic that counts deliveries and keeps the first
/// failure, so [`flush`](KafkaProducer::flush) can say whether all arrived.
pub struct KafkaProducer {
    producer: BaseProducer<DeliveryLog>,
    topic: String,
    /// The number of the next message, to tell which of a key's is newer.
    next: AtomicUsize,
}

impl KafkaProducer {
    /// A producer for `topic`; `properties` override persona's settings.
    pub fn new(
        brokers: &str,
        topic: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<KafkaProducer, KafkaSinkError> {
        Self::with_log(brokers, topic, properties, DeliveryLog::default())
    }

    /// A producer for an upsert topic, where only a key's latest message
    /// matters: a failed message is not sent again once a newer one of its
    /// key was delivered.
    fn upsert(
        brokers: &str,
        topic: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<KafkaProducer, KafkaSinkError> {
        let log = DeliveryLog {
            latest_only: true,
            ..DeliveryLog::default()
        };
        Self::with_log(brokers, topic, properties, log)
    }

    fn with_log(
        brokers: &str,
        topic: &str,
        properties: &BTreeMap<String, String>,
        log: DeliveryLog,
    ) -> Result<KafkaProducer, KafkaSinkError> {
        let mut settings = client(brokers);
        settings
            .set("acks", "all")
            // Retries must not reorder two messages of a key: the last one
            // of a key is its state. (Idempotence would allow more in flight,
            // but not every Kafka-protocol broker supports it.)
            .set("max.in.flight.requests.per.connection", "1")
            .set("linger.ms", "5");
        apply(&mut settings, properties);
        let producer =
            settings
                .create_with_context(log)
                .map_err(|source| KafkaSinkError::Create {
                    brokers: brokers.to_owned(),
                    source: Box::new(source),
                })?;
        Ok(KafkaProducer {
            producer,
            topic: topic.to_owned(),
            next: AtomicUsize::new(0),
        })
    }

    /// Queues one message (`None` payload: a tombstone). Waits only while
    /// the local queue is full.
    pub fn send(&self, key: &[u8], payload: Option<&[u8]>) -> Result<(), KafkaSinkError> {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let mut record = BaseRecord::with_opaque_to(&self.topic, number).key(key);
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    // Serve delivery reports, which frees the queue.
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((source, _)) => {
                    return Err(KafkaSinkError::Send {
                        topic: self.topic.clone(),
                        source: Box::new(source),
                    })
                }
            }
        }
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    /// Waits until every queued message is delivered. A message the broker
    /// failed (one restarting answers in-flight requests with errors that
    /// librdkafka does not retry) is sent again, for up to [`RESEND_FOR`];
    /// fails if some still were not delivered.
    pub fn flush(&self) -> Result<(), KafkaSinkError> {
        let started = Instant::now();
        loop {
            self.producer
                .flush(TIMEOUT)
                .map_err(|source| KafkaSinkError::Flush {
                    topic: self.topic.clone(),
                    source: Box::new(source),
                })?;
            let log = self.producer.context();
            let mut failed = std::mem::take(&mut *log.failed_messages.lock().expect("lock"));
            if failed.is_empty() || started.elapsed() >= RESEND_FOR {
                log.failed.fetch_add(failed.len() as u64, Ordering::Relaxed);
                break;
            }
            // Newest first, to keep only each key's newest failure.
            failed.sort_by_key(|message| std::cmp::Reverse(message.number));
            if log.latest_only {
                let delivered = log.latest_delivered.lock().expect("lock");
                let mut keys = HashSet::new();
                failed.retain(|message| {
                    keys.insert(message.key.clone())
                        && delivered
                            .get(&message.key)
                            .is_none_or(|&number| number < message.number)
                });
            }
            failed.reverse();
            std::thread::sleep(Duration::from_millis(500));
            for message in failed {
                self.send(&message.key, message.payload.as_deref())?;
            }
        }
        let log = self.producer.context();
        let failed = log.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = log.first_error.lock().expect("lock").clone();
            return Err(KafkaSinkError::Delivery {
                topic: self.topic.clone(),
                failed,
                first: first.unwrap_or_default(),
            });
        }
        Ok(())
    }

    /// Messages the broker has acknowledged so far.
    pub fn delivered(&self) -> u64 {
        self.producer.context().delivered.load(Ordering::Relaxed)
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }
}

/// Delivery reports, counted.
#[derive(Default)]
struct DeliveryLog {
    delivered: AtomicU64,
    /// Messages given up on.
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Failed since the last flush, to send again.
    failed_messages: Mutex<Vec<FailedMessage>>,
    /// Whether only a key's latest message matters (see [`KafkaProducer::upsert`]).
    latest_only: bool,
    /// The number of each key's latest delivered message, if `latest_only`.
    latest_delivered: Mutex<HashMap<Vec<u8>, usize>>,
}

/// A message the broker did not take, and its number in sending order.
struct FailedMessage {
    number: usize,
    key: Vec<u8>,
    payload: Option<Vec<u8>>,
}

/// How long a flush keeps sending failed messages again.
const RESEND_FOR: Duration = Duration::from_secs(300);

impl ClientContext for DeliveryLog {}

impl ProducerContext for DeliveryLog {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, number: usize) {
        match result {
            Ok(message) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                if let Some(key) = message.key().filter(|_| self.latest_only) {
                    let mut latest = self.latest_delivered.lock().expect("lock");
                    let entry = latest.entry(key.to_vec()).or_insert(number);
                    *entry = (*entry).max(number);
                }
            }
            Err((error, message)) => {
                self.failed_messages
                    .lock()
                    .expect("lock")
                    .push(FailedMessage {
                        number,
                        key: message.key().map(<[u8]>::to_vec).unwrap_or_default(),
                        payload: message.payload().map(<[u8]>::to_vec),
                    });
                let mut first = self.first_error.lock().expect("lock");
                if first.is_none() {
                    *first = Some(format!(
                        "{error} (topic {}, partition {}, key {:?})",
                        message.topic(),
                        message.partition(),
                        message.key().map(String::from_utf8_lossy)
                    ));
                }
            }
        }
    }
}

/// An output's upsert topic, opened before the dataflow is built, with the
/// keys it held then (see [`crate::source::kafka::upsert_keys`]).
pub struct UpsertTopic {
    pub sink: KafkaSink,
    pub existing: std::collections::BTreeSet<String>,
}

/// An upsert sink: the latest value of each key, or a tombstone.
pub struct KafkaSink {
    producer: KafkaProducer,
}

impl KafkaSink {
    /// A sink to `config.topic`, created (compacted, `config.partitions`
    /// partitions) if missing.
    pub fn new(config: &KafkaSinkConfig) -> Result<KafkaSink, KafkaSinkError> {
        ensure_topic(
            &config.brokers,
            &config.topic,
            config.partitions,
            &[("cleanup.policy", "compact")],
            &config.properties,
        )?;
        Ok(KafkaSink {
            producer: KafkaProducer::upsert(&config.brokers, &config.topic, &config.properties)?,
        })
    }

    /// Sends the current value of `key` (its JSON), or a tombstone for `None`.
    pub fn send_upsert(&self, key: &str, value: Option<&Value>) -> Result<(), KafkaSinkError> {
        match value {
            Some(value) => {
                let payload = serde_json::to_vec(value).expect("JSON values serialize");
                self.producer.send(key.as_bytes(), Some(&payload))
            }
            None => self.producer.send(key.as_bytes(), None),
        }
    }

    /// Sends every upsert of a batch, in order.
    pub fn send_all(&self, upserts: &[(String, Option<Value>)]) -> Result<(), KafkaSinkError> {
        for (key, value) in upserts {
            self.send_upsert(key, value.as_ref())?;
        }
        Ok(())
    }

    /// Waits until everything sent is acknowledged: after it returns, the
    /// outputs sent so far are durable and their input offsets may be committed.
    pub fn flush(&self) -> Result<(), KafkaSinkError> {
        self.producer.flush()
    }

    /// Messages acknowledged so far.
    pub fn delivered(&self) -> u64 {
        self.producer.delivered()
    }
}

/// The upserts of one completed time, from its consolidated changes
/// `(key, record, diff)`: a key with a record present (diff > 0) gets that
/// record, a key whose records were only retracted gets a tombstone. Sorted
/// by key. Two present records of one key are an error: an upsert output
/// holds one record per key.
pub fn upserts<I>(changes: I) -> Result<Vec<(String, Option<Value>)>, KafkaSinkError>
where
    I: IntoIterator<Item = (String, Value, isize)>,
{
    let mut by_key: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (key, record, diff) in changes {
        let values = by_key.entry(key).or_default();
        if diff > 0 {
            values.push(record);
        }
    }
    by_key
        .into_iter()
        .map(|(key, mut values)| match values.len() {
            0 => Ok((key, None)),
            1 => Ok((key, values.pop())),
            count => Err(KafkaSinkError::SeveralValues { key, count }),
        })
        .collect()
}

/// The latest value of each key in a sequence of upserts (later wins), as a
/// reader of the topic sees it; `None` is a tombstone. Sorted by key.
pub fn latest_per_key<I>(upserts: I) -> BTreeMap<String, Option<Value>>
where
    I: IntoIterator<Item = (String, Option<Value>)>,
{
    upserts.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn upserts_give_the_new_record_or_a_tombstone() {
        let changes = vec![
            ("u1".to_owned(), json!({"spend": 1}), -1),
            ("u1".to_owned(), json!({"spend": 3}), 1),
            ("u2".to_owned(), json!({"spend": 2}), -1),
            ("u3".to_owned(), json!({"spend": 5}), 1),
        ];
        assert_eq!(
            upserts(changes).unwrap(),
            vec![
                ("u1".to_owned(), Some(json!({"spend": 3}))),
                ("u2".to_owned(), None),
                ("u3".to_owned(), Some(json!({"spend": 5}))),
            ]
        );
        let twice = vec![
            ("u1".to_owned(), json!(1), 1),
            ("u1".to_owned(), json!(2), 1),
        ];
        assert!(matches!(
            upserts(twice),
            Err(KafkaSinkError::SeveralValues { count: 2, .. })
        ));
    }

    #[test]
    fn the_latest_upsert_of_a_key_wins() {
        let latest = latest_per_key([
            ("a".to_owned(), Some(json!(1))),
            ("b".to_owned(), Some(json!(2))),
            ("a".to_owned(), None),
            ("b".to_owned(), Some(json!(3))),
        ]);
        assert_eq!(latest["a"], None);
        assert_eq!(latest["b"], Some(json!(3)));
    }
}
