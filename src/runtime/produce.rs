//! `persona produce`: load a log into a Kafka topic, one message per line,
//! keyed by user, so a historical log can be replayed through Kafka.
//!
//! The topic holds data lines only: a CSV header is read (to find the user
//! column) but not produced, so a pipeline reading the topic needs the
//! column names from its config (`[input.csv] has_header = false, columns =
//! [...]`); [`ProduceSummary::header`] gives them. Keying by user sends all
//! events of a user to one partition, in log order, which keeps a purchase
//! before its cancellation. A line that does not decode is produced anyway,
//! keyed by its line number, so the pipeline reading the topic rejects it
//! with its topic/partition/offset like any bad record. A line the
//! producer refuses as larger than `message.max.bytes` cannot be in the
//! topic: it is skipped with a warning naming it, counted in `too_large` and
//! listed in `too_large_lines`, and the lines after it are produced.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use crate::config::PipelineConfig;
use crate::format::{Decoder, Outcome};
use crate::kafka::ensure_topic;
use crate::rejected::Position;
use crate::sink::kafka::{KafkaProducer, DEFAULT_PARTITIONS};
use crate::source::file::input_files;

/// Where `produce` writes.
#[derive(Clone, Debug)]
pub struct ProduceTarget {
    pub brokers: String,
    pub topic: String,
    /// Partitions if the topic is created. Default: 4.
    pub partitions: i32,
    /// Extra librdkafka producer properties.
    pub properties: BTreeMap<String, String>,
}

/// What `produce` did, printed as JSON.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ProduceSummary {
    pub topic: String,
    /// Whether the topic was created by this run.
    pub created_topic: bool,
    /// Messages produced and acknowledged: one per non-blank data line
    /// but those `too_large`.
    pub messages: u64,
    /// Messages keyed by their user.
    pub keyed_by_user: u64,
    /// Messages keyed by line number, their line not decoding to an event.
    pub keyed_by_line: u64,
    /// Blank lines, not produced.
    pub blank_lines: u64,
    /// Lines not produced, the producer refusing them as larger than
    /// `message.max.bytes` (librdkafka's default: 1,000,000 bytes).
    pub too_large: u64,
    /// Where the first [`TOO_LARGE_LISTED`] of them are, and their bytes.
    pub too_large_lines: Vec<TooLargeLine>,
    /// The CSV header line of the (first) file, not produced; None for
    /// formats without one.
    pub header: Option<String>,
    pub elapsed_s: f64,
}

/// A line `produce` could not send.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TooLargeLine {
    /// `FILE:LINE`.
    pub position: String,
    pub bytes: u64,
}

/// How many too-large lines the summary lists (all are counted and warned
/// about).
pub const TOO_LARGE_LISTED: usize = 100;

/// Produces `input` into `topic` on `brokers`, creating the topic with 4
/// partitions if missing. `properties` are extra librdkafka producer settings.
pub fn produce(
    input: &Path,
    config: &PipelineConfig,
    brokers: &str,
    topic: &str,
    properties: &BTreeMap<String, String>,
) -> anyhow::Result<ProduceSummary> {
    produce_to(
        input,
        config,
        &ProduceTarget {
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
            partitions: DEFAULT_PARTITIONS,
            properties: properties.clone(),
        },
    )
}

/// [`produce`] with every setting of the target.
pub fn produce_to(
    input: &Path,
    config: &PipelineConfig,
    target: &ProduceTarget,
) -> anyhow::Result<ProduceSummary> {
    let started = Instant::now();
    let mut decoder = Decoder::new(config)?;
    let files = input_files(input)?;
    anyhow::ensure!(
        !files.is_empty(),
        "input {} holds no files",
        input.display()
    );
    let created_topic = ensure_topic(
        &target.brokers,
        &target.topic,
        target.partitions,
        &[],
        &target.properties,
    )?;
    let producer = KafkaProducer::new(&target.brokers, &target.topic, &target.properties)?;
    let mut summary = ProduceSummary {
        topic: target.topic.clone(),
        created_topic,
        ..ProduceSummary::default()
    };
    let mut outcomes: Vec<Outcome> = Vec::new();
    for path in &files {
        let mut records = decoder.records(path, Arc::default())?;
        if let Some((_, header)) = records.header() {
            summary
                .header
                .get_or_insert_with(|| String::from_utf8_lossy(header).into_owned());
        }
        while let Some((position, bytes)) = records.next_record()? {
            decoder.decode(bytes, &position, &mut outcomes);
            // A JSON line may hold several records, all of one user (OTTO's
            // sessions); the first decoded one names it.
            let user = outcomes
                .drain(..)
                .find_map(|outcome| outcome.ok().map(|decoded| decoded.user_name));
            let (key, by_user) = match user {
                Some(user) => (user, true),
                None => match &position {
                    Position::File { line, .. } => (line.to_string(), false),
                    other => (other.to_string(), false),
                },
            };
            let sent = producer.send(key.as_bytes(), Some(bytes));
            let length = bytes.len() as u64;
            match sent {
                Ok(()) => {
                    summary.messages += 1;
                    match by_user {
                        true => summary.keyed_by_user += 1,
                        false => summary.keyed_by_line += 1,
                    }
                }
                Err(error) if error.is_too_large() => {
                    // A line beyond `[cleaning] max_record_bytes` comes cut.
                    let bytes = records.cut_length().unwrap_or(length);
                    tracing::warn!(
                        "{position}: not produced, {bytes} bytes is more than the producer's \
                         message.max.bytes (raise it with --property, and the topic's \
                         max.message.bytes)"
                    );
                    summary.too_large += 1;
                    if summary.too_large_lines.len() < TOO_LARGE_LISTED {
                        let position = position.to_string();
                        summary
                            .too_large_lines
                            .push(TooLargeLine { position, bytes });
                    }
                }
                Err(error) => {
                    return Err(error).with_context(|| format!("producing {position}"));
                }
            }
        }
        summary.blank_lines += records.blank_lines();
    }
    producer.flush()?;
    anyhow::ensure!(
        producer.delivered() == summary.messages,
        "{} of {} messages to {} were acknowledged",
        producer.delivered(),
        summary.messages,
        target.topic
    );
    summary.elapsed_s = started.elapsed().as_secs_f64();
    Ok(summary)
}
