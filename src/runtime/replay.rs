//! `persona replay`: read a log from files or stdin through the whole
//! pipeline and write the outputs the README lists into a folder.
//!
//! Each worker reads every line of a file and applies its own share
//! (record number modulo workers); stdin, which cannot be read twice, is
//! read by worker 0 alone. Every reader decodes every record to keep the
//! same [`Watermark`]: the latest event time applied before a record, less
//! the allowed lateness. A record whose tick is behind it is late: counted
//! and written to `late.jsonl`. So lateness is a function of the input
//! alone, identical for any `-w`, `-n` or chunk size. Records become updates
//! at their event-time tick, and every [`CHUNK`] records the readers
//! advance their input frontier to the watermark, so the dataflow finishes
//! each tick while the replay goes on. Rejected records go to
//! `rejected.jsonl`. Outputs are consolidated on worker 0 and written into a
//! staging folder that replaces `--out` on success ([`Staging`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use timely::worker::Worker;

use crate::clean::{Judge, Watermark};
use crate::config::{ParquetSinkConfig, PipelineConfig, MAX_BUCKETS};
use crate::format::Decoder;
use crate::runtime::failure::failpoint;
use crate::runtime::pipeline::{Graph, UpsertTopics};
use crate::runtime::worker::PipelineWorker;
use crate::runtime::{execute, TimelyArgs};
use crate::sink::dead_letters::{merge_runs, DeadLetterFiles, DeadLetters};
use crate::sink::staging::Staging;
use crate::sink::{FileFormat, OutputFiles};
use crate::source::file::{input_files, total_bytes, SourceError};
use crate::summary::Summary;

/// Everything a replay needs, shared by its workers.
#[derive(Clone, Debug)]
pub struct ReplayPlan {
    pub config: PipelineConfig,
    pub input: PathBuf,
    pub out: PathBuf,
    pub changelog: bool,
    /// The format of the outputs' final state.
    pub format: FileFormat,
    /// Buckets of the Parquet datasets.
    pub buckets: u32,
    pub timely: TimelyArgs,
}

impl ReplayPlan {
    /// The files of the outputs, written into `dir`.
    fn output_files(&self, dir: &Path) -> OutputFiles {
        OutputFiles {
            jsonl: (self.format == FileFormat::Jsonl).then(|| dir.to_owned()),
            changelog: self.changelog.then(|| dir.to_owned()),
            parquet: (self.format == FileFormat::Parquet).then(|| ParquetSinkConfig {
                dir: dir.to_owned(),
                buckets: self.buckets,
            }),
        }
    }
}

/// Records of the input between two advances of the frontier. Counted over
/// the whole input, so every worker advances at the same records.
pub const CHUNK: u64 = 4096;

/// Runs a replay; returns the summary (on the process that holds worker 0).
/// The outputs are written into a staging folder and moved into `out`
/// only once the replay succeeded.
pub fn replay(plan: ReplayPlan) -> anyhow::Result<Option<Summary>> {
    let files = input_files(&plan.input)?;
    anyhow::ensure!(
        !files.is_empty(),
        "input {} holds no files",
        plan.input.display()
    );
    for file in files.iter().filter(|file| !is_stdin(file)) {
        // Before anything is created: a missing input leaves no trace.
        std::fs::metadata(file).map_err(|source| SourceError::Open {
            path: file.clone(),
            source,
        })?;
    }
    check_out_is_not_input(&plan.input, &plan.out)?;
    // Checked now, not after the whole replay when its files move in.
    anyhow::ensure!(
        !plan.out.exists() || plan.out.is_dir(),
        "--out {} is a file: it names the folder the outputs go to",
        plan.out.display()
    );
    anyhow::ensure!(
        (1..=MAX_BUCKETS).contains(&plan.buckets),
        "--buckets {}: expected between 1 and {MAX_BUCKETS}",
        plan.buckets
    );
    Decoder::new(&plan.config)?;
    let timely_config = plan.timely.config()?;
    let connecting = plan.timely.connecting()?;
    let staging = Staging::create(&plan.out, plan.timely.process, plan.timely.processes)
        .with_context(|| format!("cannot create a staging folder for {}", plan.out.display()))?;
    let dir = staging.dir().to_owned();
    let (process, processes) = (plan.timely.process, plan.timely.processes);
    let (workers, mode) = (plan.timely.workers, plan.config.output.raw_file_mode);
    let plan = Arc::new((plan, files, dir.clone()));
    let started = Instant::now();
    let summary = execute(timely_config, connecting, move |worker| {
        let (plan, files, dir) = &*plan;
        run_worker(worker, plan, files, dir, started)
    })?;
    let first = process * workers;
    merge_runs(&dir, first..first + workers, (process, processes), mode)?;
    staging.commit()?;
    Ok(summary)
}

/// A replay never reads its own outputs: `--out` may not be the input
/// folder nor lie inside it.
fn check_out_is_not_input(input: &Path, out: &Path) -> anyhow::Result<()> {
    if !input.is_dir() {
        return Ok(());
    }
    let (Ok(input_dir), Ok(out_dir)) = (
        input.canonicalize(),
        std::path::absolute(out).map(|out| normalise(&out)),
    ) else {
        return Ok(());
    };
    anyhow::ensure!(
        !out_dir.starts_with(&input_dir),
        "--out {} is inside the input folder {}: a second replay would read the outputs as input",
        out.display(),
        input.display()
    );
    Ok(())
}

/// `tune --out` writes a config: never over a file it reads (`what`), nor
/// into the input folder, where a replay would read it as a log.
pub fn check_out_is_not_read(out: &Path, what: &str, read: &Path) -> anyhow::Result<()> {
    let (Ok(read), Ok(out_path)) = (read.canonicalize(), std::path::absolute(out)) else {
        return Ok(());
    };
    anyhow::ensure!(
        !normalise(&out_path).starts_with(&read),
        "--out {} would overwrite what {what} reads ({})",
        out.display(),
        read.display()
    );
    Ok(())
}

/// `path` with `.` and `..` resolved as far as its existing ancestors allow.
fn normalise(path: &Path) -> PathBuf {
    let mut existing = path.to_owned();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_owned());
                existing = parent.to_owned();
            }
            _ => return path.to_owned(),
        }
    }
    let mut resolved = existing.canonicalize().unwrap_or(existing);
    resolved.extend(rest.iter().rev());
    resolved
}

/// Which records of the input a worker applies: record `n` (counted from 1
/// over the whole input) belongs to the worker `n % readers`, among the
/// first `readers` workers.
struct Share {
    index: u64,
    readers: u64,
}

impl Share {
    /// Every worker reads a file and applies its share; stdin cannot be
    /// read twice, so worker 0 reads it alone and the dataflow's exchanges
    /// spread its records.
    fn of(worker: &Worker, input: &Path) -> Share {
        if is_stdin(input) {
            Share {
                index: worker.index() as u64,
                readers: 1,
            }
        } else {
            Share {
                index: worker.index() as u64,
                readers: worker.peers() as u64,
            }
        }
    }

    fn reads(&self) -> bool {
        self.index < self.readers
    }

    fn owns(&self, record: u64) -> bool {
        record % self.readers == self.index
    }
}

fn is_stdin(input: &Path) -> bool {
    input.as_os_str() == "-"
}

fn run_worker(
    worker: &mut Worker,
    plan: &ReplayPlan,
    files: &[PathBuf],
    dir: &Path,
    started: Instant,
) -> anyhow::Result<Option<Summary>> {
    let index = worker.index();
    let peers = worker.peers();
    let config = &plan.config;
    let mut pipeline =
        PipelineWorker::new(worker, config, Graph::of_outputs(config), |gathered| {
            Ok(gathered.into_sinks(&plan.output_files(dir), UpsertTopics::new())?)
        })?;
    let runs = DeadLetterFiles::create_runs(dir, index, config.output.raw_file_mode)?;
    let mut dead = DeadLetters::new(Some(runs.clone()), None)?;
    let bytes_read = Arc::new(AtomicU64::new(0));
    let progress = (index == 0).then(|| progress_bar(total_bytes(files)));
    read_log(
        worker,
        &mut pipeline,
        config,
        (&plan.input, files),
        &mut dead,
        bytes_read.clone(),
        |_| {
            if let Some(progress) = &progress {
                progress.set_position(bytes_read.load(Ordering::Relaxed));
            }
        },
    )?;

    runs.flush()?;
    let finished = pipeline.finish(worker, plan.timely.workers)?;
    if let Some(progress) = &progress {
        progress.finish_and_clear();
    }
    let Some(mut finished) = finished else {
        return Ok(None);
    };
    let per_process = [
        ("rejected", finished.totals.rejected.values().sum()),
        ("late", finished.totals.late),
    ];
    let summary = finished.summarize(
        Some(dir),
        &per_process,
        plan.timely.processes,
        peers,
        started,
    )?;
    Ok(Some(summary))
}

/// Reads the log `input` (its `files`) into `pipeline`: each worker its
/// share, every worker the same watermark. Every [`CHUNK`] records the
/// frontier advances to the watermark, the dataflow catches up, worker 0
/// drains its sinks and `on_chunk` runs. The input stays open: end it with
/// [`PipelineWorker::end_input`] or [`PipelineWorker::finish`].
pub fn read_log(
    worker: &mut Worker,
    pipeline: &mut PipelineWorker,
    config: &PipelineConfig,
    (input, files): (&Path, &[PathBuf]),
    dead: &mut DeadLetters,
    bytes_read: Arc<AtomicU64>,
    mut on_chunk: impl FnMut(&PipelineWorker),
) -> anyhow::Result<()> {
    let index = worker.index();
    let share = Share::of(worker, input);
    let mut watermark = Watermark::new(config.time.allowed_lateness_s.saturating_mul(1000));
    let mut decoder = Decoder::new(config)?;
    let mut record_index: u64 = 0;
    if !share.reads() {
        // Holds nothing back: the reader's frontier is the dataflow's.
        pipeline.advance_to(u64::MAX);
    }
    for path in files.iter().filter(|_| share.reads()) {
        let mut records = decoder.records(path, bytes_read.clone())?;
        while let Some((position, bytes)) = records.next_record()? {
            record_index += 1;
            dead.at_record(record_index);
            let judge = Judge::Clock {
                watermark: &mut watermark,
                own: share.owns(record_index),
            };
            pipeline.read(&decoder, bytes, &position, Some(judge), dead)?;
            if record_index.is_multiple_of(CHUNK) {
                failpoint("worker-panic", index);
                pipeline.advance_to(watermark.get().unwrap_or(0));
                pipeline.catch_up(worker, None);
                pipeline.drain()?;
                on_chunk(pipeline);
            }
        }
    }
    Ok(())
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} replay [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({eta})",
        )
        .expect("valid template"),
    );
    bar
}
