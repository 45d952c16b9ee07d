//! `[privacy] forget_topic`: the users to forget, one id per message as the
//! source writes it, for a Kafka deployment's running `persona run`.
//! Worker 0 reads the topic from its beginning: a start applies every
//! forget asked before it, and the loop applies new ones as they come.
//! Each user goes into the `[privacy] forgotten` file first, so a restart
//! (and every replay and server) leaves them out as well.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use persona_dataflows::Id;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::{IdKind, PipelineConfig};
use crate::kafka::{apply, client, connection_settings, ensure_topic};
use crate::privacy::{add_forgotten, Pseudonyms};
use crate::source::kafka::KafkaSourceConfig;

/// How long a start waits for the topic's metadata and for the forgets
/// asked before it.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// The forget topic's reader.
pub struct ForgetTopic {
    consumer: BaseConsumer,
    topic: String,
    file: PathBuf,
    numeric_ids: bool,
    pseudonyms: Pseudonyms,
}

impl ForgetTopic {
    /// The reader of `[privacy] forget_topic`, if the config names one
    /// (created if missing, on the `[source.kafka]` brokers).
    pub fn open(
        config: &PipelineConfig,
        source: &KafkaSourceConfig,
    ) -> anyhow::Result<Option<ForgetTopic>> {
        let Some(topic) = &config.privacy.forget_topic else {
            return Ok(None);
        };
        let file = config.privacy.forgotten.clone().context(
            "[privacy] forget_topic needs forgotten = FILE: the file that keeps \
             forgotten users out after a restart",
        )?;
        ensure_topic(&source.brokers, topic, 1, &[], &source.properties)?;
        let mut settings = client(&source.brokers);
        settings
            .set("group.id", format!("{}.forget", source.group_id))
            .set("enable.auto.commit", "false")
            .set("client.id", "persona-forget");
        apply(&mut settings, connection_settings(&source.properties));
        let consumer: BaseConsumer = settings
            .create()
            .with_context(|| format!("cannot read the forget topic {topic}"))?;
        // A topic just created may show no partitions yet: ask again.
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        let partitions = loop {
            let metadata = consumer
                .fetch_metadata(Some(topic), CATCH_UP_TIMEOUT)
                .with_context(|| format!("no metadata of the forget topic {topic}"))?;
            let partitions = metadata
                .topics()
                .first()
                .map_or(0, |t| t.partitions().len());
            if partitions > 0 {
                break partitions;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the forget topic {topic} has no partitions"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions as i32 {
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        Ok(Some(ForgetTopic {
            consumer,
            topic: topic.clone(),
            file,
            numeric_ids: config.cleaning.numeric_ids,
            pseudonyms: Pseudonyms::from_config(&config.privacy)?,
        }))
    }

    /// The users asked for before now: reads up to the ends the topic's
    /// partitions have now.
    pub fn catch_up(&mut self) -> anyhow::Result<Vec<Id>> {
        let mut ends = Vec::new();
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), CATCH_UP_TIMEOUT)?;
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (_, high) =
                self.consumer
                    .fetch_watermarks(&self.topic, partition.id(), CATCH_UP_TIMEOUT)?;
            ends.push((partition.id(), high));
        }
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        let mut users = Vec::new();
        let mut next = vec![0_i64; ends.len()];
        while next.iter().zip(&ends).any(|(n, (_, end))| n < end) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the forget topic {} was not read to its end in {} s",
                self.topic,
                CATCH_UP_TIMEOUT.as_secs()
            );
            let Some(message) = self.consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = message?;
            if let Some(slot) = ends.iter().position(|(p, _)| *p == message.partition()) {
                next[slot] = message.offset() + 1;
            }
            users.extend(self.user_of(message.payload(), message.offset()));
        }
        self.keep(&users)?;
        Ok(users)
    }

    /// The users asked for since the last call, without waiting.
    pub fn poll(&mut self) -> anyhow::Result<Vec<Id>> {
        let mut users = Vec::new();
        while let Some(message) = self.consumer.poll(Duration::ZERO) {
            match message {
                Ok(message) => users.extend(self.user_of(message.payload(), message.offset())),
                // The client reconnects by itself.
                Err(error) => tracing::warn!("forget topic {}: {error}", self.topic),
            }
        }
        self.keep(&users)?;
        Ok(users)
    }

    /// The user a message names; a message naming none is logged (without
    /// its bytes, which may be an id) and skipped.
    fn user_of(&self, payload: Option<&[u8]>, offset: i64) -> Option<Id> {
        let text = payload.and_then(|bytes| std::str::from_utf8(bytes).ok());
        let problem = match text.map(str::trim) {
            None => Some("is not UTF-8 text".to_owned()),
            Some("") => Some("is empty".to_owned()),
            Some(text) if text.chars().any(char::is_control) => {
                Some("holds a control character".to_owned())
            }
            Some(_) => None,
        };
        if let Some(problem) = problem {
            tracing::warn!(
                "forget topic {} offset {offset}: the message {problem}; skipped",
                self.topic
            );
            return None;
        }
        let text = text?.trim();
        Some(self.pseudonyms.id(IdKind::User, text, self.numeric_ids).0)
    }

    /// Keeps `users` in the forgotten file before they are forgotten.
    fn keep(&self, users: &[Id]) -> anyhow::Result<()> {
        if !users.is_empty() {
            add_forgotten(&self.file, users)?;
        }
        Ok(())
    }
}
