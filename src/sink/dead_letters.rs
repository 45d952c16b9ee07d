//! Dead letters: the records a run did not apply, each with its position,
//! reason and raw bytes. Rejected records go to `rejected.jsonl` and late
//! ones to `late.jsonl` (one of each per process), and, for `persona run`,
//! also to the dead-letter topic of `[sink.kafka] rejected`, keyed by
//! position.
//!
//! `run` and `serve` write them as they come, all workers of a process into
//! the same files. A replay's files are in log order instead, the same for
//! any `-w`: each worker writes its share in order to a run of its own, each
//! line after its record's number in the log, and [`merge_runs`]
//! interleaves the runs by that number once the workers are done.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
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
    /// Whether these are a replay worker's runs, whose lines start with
    /// their record's number in the log ([`DeadLetterFiles::create_runs`]).
    runs: bool,
}

/// The names of the two files, by whether they hold late records.
const NAMES: [&str; 2] = ["rejected", "late"];

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
        let writer = |name| shared_writer(&part_path(dir, name, process, processes)?, mode);
        Ok(DeadLetterFiles {
            rejected: writer(NAMES[0])?,
            late: writer(NAMES[1])?,
            runs: false,
        })
    }

    /// Creates replay worker `worker`'s runs in the staging folder `dir`,
    /// for [`merge_runs`].
    pub fn create_runs(dir: &Path, worker: usize, mode: u32) -> anyhow::Result<DeadLetterFiles> {
        let writer = |name| shared_writer(&run_path(dir, name, worker), mode);
        Ok(DeadLetterFiles {
            rejected: writer(NAMES[0])?,
            late: writer(NAMES[1])?,
            runs: true,
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

/// A private file at `path`, for the workers of a process to share.
fn shared_writer(path: &Path, mode: u32) -> anyhow::Result<SharedWriter> {
    Ok(Arc::new(Mutex::new(private_writer(path, mode)?)))
}

/// A new file at `path` with permissions `mode`, buffered.
fn private_writer(path: &Path, mode: u32) -> anyhow::Result<BufWriter<File>> {
    let file = create_private_file(path, mode)
        .with_context(|| format!("cannot create {}", path.display()))?;
    Ok(BufWriter::new(file))
}

/// Where worker `worker`'s run of `name` is staged.
fn run_path(dir: &Path, name: &str, worker: usize) -> PathBuf {
    dir.join(format!(".{name}.w{worker}.run"))
}

/// Merges the runs of the process's `workers` in `dir` into its
/// `rejected.jsonl` and `late.jsonl` (parts, with several processes), in
/// the order of the records in the log, and removes the runs.
pub fn merge_runs(
    dir: &Path,
    workers: Range<usize>,
    (process, processes): (usize, usize),
    mode: u32,
) -> anyhow::Result<()> {
    for name in NAMES {
        let path = part_path(dir, name, process, processes)?;
        let mut out = private_writer(&path, mode)?;
        let mut runs = Vec::new();
        for worker in workers.clone() {
            let path = run_path(dir, name, worker);
            let file =
                File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
            runs.push((BufReader::new(file), path));
        }
        // The next line of each run and its record's number; a record
        // belongs to one worker, so numbers never tie across runs.
        let mut heads = Vec::with_capacity(runs.len());
        for (reader, path) in &mut runs {
            heads.push(next_line(reader, path)?);
        }
        while let Some(run) = (0..heads.len())
            .filter(|&run| heads[run].is_some())
            .min_by_key(|&run| heads[run].as_ref().map(|(number, _)| *number))
        {
            let (_, line) = heads[run].take().expect("a line");
            out.write_all(line.as_bytes())?;
            let (reader, path) = &mut runs[run];
            heads[run] = next_line(reader, path)?;
        }
        out.flush()
            .with_context(|| format!("cannot write {}", path.display()))?;
        for (_, path) in runs {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// The next line of a run, without its record's number, and that number.
fn next_line(reader: &mut impl BufRead, path: &Path) -> anyhow::Result<Option<(u64, String)>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let (number, rest) = line
        .split_once(' ')
        .and_then(|(number, rest)| Some((number.parse().ok()?, rest)))
        .with_context(|| format!("{}: a line without its record's number", path.display()))?;
    Ok(Some((number, rest.to_owned())))
}

/// One worker's dead letters: the process's files and/or the dead-letter topic.
pub struct DeadLetters {
    files: Option<DeadLetterFiles>,
    topic: Option<KafkaProducer>,
    /// Whether letters were sent to the topic since the last flush.
    unflushed: bool,
    /// The letters written since last taken, when checkpointing.
    captured: Option<Vec<Letter>>,
    /// The number in the log of the record being read, for runs.
    record: u64,
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
            record: 0,
        })
    }

    /// Numbers the letters of the record read next: its number in the log.
    pub fn at_record(&mut self, number: u64) {
        self.record = number;
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
            if files.runs {
                write!(file, "{} ", self.record)?;
            }
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
