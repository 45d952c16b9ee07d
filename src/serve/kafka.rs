//! `[source.kafka]` in `persona serve`: the topics' messages, after the log.
//!
//! The first worker of each process reads that process's share of the
//! partitions (partition k of the sorted list goes to process k mod the
//! number of processes), from their beginning, or with `[checkpoint]`
//! from the offsets of the checkpoint the start restored. No offset is
//! committed to the group: a checkpoint holds its own. Until every partition is read to the end it had when serving
//! started (the backlog), event time is the messages' own, kept as
//! `persona run` keeps it: per-partition watermarks, less the allowed
//! lateness. After that a message is judged as a POSTed event is, against
//! the wall clock when it was read.

use std::time::Duration;

use anyhow::Context;

use crate::checkpoint::Manifest;
use crate::clean::Judge;
use crate::config::{PipelineConfig, TimeConfig};
use crate::format::Decoder;
use crate::kafka::Offsets;
use crate::runtime::run::{topic_decoding, PartitionWatermarks};
use crate::runtime::worker::PipelineWorker;
use crate::sink::dead_letters::DeadLetters;
use crate::source::kafka::{KafkaRecord, KafkaSource, ResumeFrom};

/// Messages read between two steps of the dataflow.
const POLL_MAX: usize = 10_000;
/// How long reading the partitions' end offsets may take.
const ENDS_TIMEOUT: Duration = Duration::from_secs(30);

/// One process's share of the topics of `[source.kafka]`.
pub struct KafkaFeed {
    source: KafkaSource,
    decoder: Decoder,
    watermarks: PartitionWatermarks,
    /// Each partition's end offset when serving started: the backlog.
    backlog: Offsets,
    batch: Vec<KafkaRecord>,
    time: TimeConfig,
}

impl KafkaFeed {
    /// The feed of process `process` of `processes`, if the config has a
    /// `[source.kafka]` table.
    /// Reads on from the offsets of `restored`, when given, with the
    /// watermarks it holds.
    pub fn open(
        config: &PipelineConfig,
        process: usize,
        processes: usize,
        restored: Option<&Manifest>,
    ) -> anyhow::Result<Option<KafkaFeed>> {
        let Some(source) = &config.source.kafka else {
            return Ok(None);
        };
        let mut source = source.clone();
        source.resume_from = ResumeFrom::Beginning;
        let offsets = restored.map(Manifest::offsets);
        let source = KafkaSource::new_at(&source, process, processes.max(1), offsets.as_ref())
            .context("persona serve reads [source.kafka]")?;
        let partitions = source.assignment()?;
        let backlog = source.end_offsets(ENDS_TIMEOUT)?;
        let mut watermarks = PartitionWatermarks::new(&partitions);
        for state in restored.iter().flat_map(|manifest| &manifest.partitions) {
            let partition = (state.topic.clone(), state.partition);
            if let (true, Some(time_ms)) = (partitions.contains(&partition), state.latest_ms) {
                watermarks.saw(&partition, time_ms);
            }
        }
        Ok(Some(KafkaFeed {
            source,
            decoder: Decoder::new(&topic_decoding(config)?)?,
            watermarks,
            backlog,
            batch: Vec::new(),
            time: config.time.clone(),
        }))
    }

    /// The next offset to read of each partition read from.
    pub fn offsets(&self) -> Offsets {
        self.source.offsets()
    }

    /// The latest event time of each partition, for checkpoints.
    pub fn watermarks(&self) -> &PartitionWatermarks {
        &self.watermarks
    }

    /// Reads the messages waiting (none blocks) and applies their records:
    /// judged late against `closed` (a tick), or, in the backlog (`None`),
    /// against their partition's watermark and the pipeline's frontier.
    /// Returns how many messages it read.
    pub fn read(
        &mut self,
        pipeline: &mut PipelineWorker,
        closed: Option<u64>,
        dead: &mut DeadLetters,
    ) -> anyhow::Result<usize> {
        self.batch.clear();
        let polled = self.source.poll_batch(POLL_MAX, &mut self.batch)?;
        for record in &self.batch {
            let partition = record.partition();
            self.watermarks.has_data(&partition);
            if record.is_blank() {
                continue;
            }
            // The backlog as `persona run` judges it: behind the
            // partition's own watermark.
            let before =
                closed.unwrap_or_else(|| self.watermarks.late_before(&partition, &self.time));
            let judge = Some(Judge::Frontier(before.max(pipeline.frontier())));
            let applied = pipeline.read(
                &self.decoder,
                &record.payload,
                &record.position,
                judge,
                dead,
            )?;
            if let Some(time_ms) = applied {
                self.watermarks.saw(&partition, time_ms);
            }
        }
        let read = self.source.offsets();
        for (partition, end) in &self.backlog {
            if read.get(partition).copied().unwrap_or(0) >= *end {
                self.watermarks.idle(partition);
            }
        }
        Ok(polled)
    }

    /// Whether every partition is read to the end it had at the start.
    pub fn backlog_read(&self) -> bool {
        self.watermarks.all_idle()
    }

    /// The event time every partition has reached (see
    /// [`PartitionWatermarks::watermark`]).
    pub fn watermark(&self) -> Option<u64> {
        self.watermarks.watermark()
    }
}
