//! Dead letters: the records a run did not apply, each with its position,
//! reason and raw bytes. Rejected records go to `rejected.jsonl` and late
//! ones to `late.jsonl` (one of each per process, written by all its
//! workers), and, for `persona run`, also to the dead-letter topic of
//! `[sink.kafka] rejected`, keyed by position.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;

use crate::checkpoint::Letter;
use crate::config::KafkaOutputsConfig;
use crate::rejected::{create_private_file, Reason, RejectedRecord};
use crate::sink::kafka::KafkaProducer;
use crate::sink::part_path;

/// A line writer shared by the workers of a process.
type SharedWriter = Arc<Mutex<BufWriter<File>>>;

/// A process's `rejected.jsonl` and `late.jsonl` (parts of a folder when
/// several processes run), created private: raw records carry every column.
#[derive(Clone)]
pub struct DeadLetterFiles {
    rejected: SharedWriter,
    late: SharedWriter,
}

impl DeadLetterFiles {
    /// Creates both files in `dir` (and `dir`, if missing) with
    /// permissions `mode`.
    pub fn create(
        dir: &Path,
        process: usize,
        processes: usize,
        mode: u32,
    ) -> anyhow::Result<DeadLetterFiles> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let writer = |name: &str| -> anyhow::Result<SharedWriter> {
            let path = part_path(dir, name, process, processes)?;
            let file = create_private_file(&path, mode)
                .with_context(|| format!("cannot create {}", path.display()))?;
            Ok(Arc::new(Mutex::new(BufWriter::new(file))))
        };
        Ok(DeadLetterFiles {
            rejected: writer("rejected")?,
            late: writer("late")?,
        })
    }

    /// Writes a letter a checkpoint holds, as it was written before.
    pub fn restore(&self, letter: &Letter) -> std::io::Result<()> {
        let file = if letter.late {
            &self.late
        } else {
            &self.rejected
        };
        let mut file = file.lock().expect("writer lock");
        file.write_all(letter.line.as_bytes())?;
        file.write_all(b"\n")
    }

    /// Writes what the workers buffered.
    pub fn flush(&self) -> std::io::Result<()> {
        for writer in [&self.rejected, &self.late] {
            writer.lock().expect("writer lock").flush()?;
        }
        Ok(())
    }
}

/// One worker's dead letters: the process's files and/or the dead-letter topic.
pub struct DeadLetters {
    files: Option<DeadLetterFiles>,
    topic: Option<KafkaProducer>,
    /// Whether letters were sent to the topic since the last flush.
    unflushed: bool,
    /// The letters written since last taken, when checkpointing.
    captured: Option<Vec<Letter>>,
}

impl DeadLetters {
    /// Dead letters to `files` and to the `rejected` topic of `kafka`, if any.
    pub fn new(
        files: Option<DeadLetterFiles>,
        kafka: Option<&KafkaOutputsConfig>,
    ) -> anyhow::Result<DeadLetters> {
        let topic = match kafka.and_then(|k| Some((k, k.rejected.as_ref()?))) {
            Some((kafka, topic)) => Some(KafkaProducer::new(
                &kafka.brokers,
                topic,
                &kafka.properties,
            )?),
            None => None,
        };
        Ok(DeadLetters {
            files,
            topic,
            unflushed: false,
            captured: None,
        })
    }

    /// Writes one record not applied, to the file of its reason and the topic.
    pub fn write(&mut self, record: &RejectedRecord) -> anyhow::Result<()> {
        let line = serde_json::to_vec(record)?;
        if let Some(files) = &self.files {
            let file = match record.reason {
                Reason::Late => &files.late,
                _ => &files.rejected,
            };
            let mut file = file.lock().expect("writer lock");
            file.write_all(&line)?;
            file.write_all(b"\n")?;
        }
        if let Some(topic) = &self.topic {
            topic.send(record.source.to_string().as_bytes(), Some(&line))?;
            self.unflushed = true;
        }
        if let Some(captured) = &mut self.captured {
            captured.push(Letter {
                late: record.reason == Reason::Late,
                line: String::from_utf8(line)?,
            });
        }
        Ok(())
    }

    /// Keeps every letter written from now on, for checkpoints.
    pub fn capture(&mut self) {
        self.captured.get_or_insert_with(Vec::new);
    }

    /// The letters written since the last call (or since [`DeadLetters::capture`]).
    pub fn take_captured(&mut self) -> Vec<Letter> {
        self.captured
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Waits until every letter sent to the topic is acknowledged, so a
    /// record's offset is committed only once its letter is durable.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        if let (Some(topic), true) = (&self.topic, self.unflushed) {
            topic.flush()?;
            self.unflushed = false;
        }
        Ok(())
    }
}
