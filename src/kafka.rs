//! What the Kafka source and sink share: client settings, the offsets of
//! topic partitions, and topic creation. The consumer is
//! [`crate::source::kafka`], the producers [`crate::sink::kafka`]; neither
//! imports the other.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// A (topic, partition) pair.
pub type TopicPartition = (String, i32);

/// The next offset to read (= to commit) of each partition.
pub type Offsets = BTreeMap<TopicPartition, i64>;

/// How long topic creation may take before it fails.
const TOPIC_TIMEOUT: Duration = Duration::from_secs(60);

/// The settings of a client of `brokers`; add persona's settings, then the
/// user's with [`apply`].
pub fn client(brokers: &str) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", brokers);
    client
}

/// Applies user `properties` to `client`, last, so they override persona's.
pub fn apply<'a>(
    client: &mut ClientConfig,
    properties: impl IntoIterator<Item = (&'a String, &'a String)>,
) {
    for (key, value) in properties {
        client.set(key, value);
    }
}

/// The properties about reaching the brokers (security, SASL, SSL), which
/// apply to every kind of client: a producer's or consumer's own settings
/// would make an admin client or a reader refuse to start.
pub fn connection_settings(
    properties: &BTreeMap<String, String>,
) -> impl Iterator<Item = (&String, &String)> {
    properties.iter().filter(|(key, _)| {
        key.starts_with("security.") || key.starts_with("sasl.") || key.starts_with("ssl.")
    })
}

/// Why a topic could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("cannot create a Kafka admin client for {brokers}")]
    Client {
        brokers: String,
        source: Box<KafkaError>,
    },
    #[error("cannot create topic {topic} on {brokers}")]
    Create {
        brokers: String,
        topic: String,
        source: Box<KafkaError>,
    },
}

/// Creates `topic` with `partitions` partitions (replication factor 1 and
/// `topic_config`) unless it exists. Returns whether it was created.
pub fn ensure_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    topic_config: &[(&str, &str)],
    properties: &BTreeMap<String, String>,
) -> Result<bool, TopicError> {
    let mut settings = client(brokers);
    apply(&mut settings, connection_settings(properties));
    let admin: AdminClient<_> = settings.create().map_err(|source| TopicError::Client {
        brokers: brokers.to_owned(),
        source: Box::new(source),
    })?;
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (key, value) in topic_config {
        new_topic = new_topic.set(key, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(TOPIC_TIMEOUT));
    let create_error = |source| TopicError::Create {
        brokers: brokers.to_owned(),
        topic: topic.to_owned(),
        source: Box::new(source),
    };
    let results = block_on(admin.create_topics([&new_topic], &options)).map_err(create_error)?;
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(true),
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) | None => Ok(false),
        Some(Err((_, code))) => Err(create_error(KafkaError::AdminOp(code))),
    }
}

/// Runs a future to completion on this thread. The admin client resolves
/// its futures from its own thread, so no async runtime is needed.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
    }
}
