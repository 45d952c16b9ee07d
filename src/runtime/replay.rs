//! `persona replay`: read a log from files or stdin through the whole
//! pipeline and write the outputs of DESIGN.md into a folder.
//!
//! Each worker reads every line of the input and decodes its own share
//! (line number modulo workers). Records become updates at their event-time
//! tick; a worker advances its input frontier to its watermark (the latest
//! event time it has read, less the allowed lateness), so the dataflow
//! finishes each tick while the replay goes on. Records behind the frontier
//! are late: counted and written to `late.jsonl`. Rejected records go to
//! `rejected.jsonl`. Outputs are consolidated on worker 0.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use timely::worker::Worker;

use crate::config::PipelineConfig;
use crate::format::Decoder;
use crate::rejected::{Position, RejectedRecord};
use crate::runtime::worker::{DeadLetters, Dropped, PipelineWorker};
use crate::runtime::{execute, open_for_decoding, TimelyArgs};
use crate::sink::part_path;
use crate::source::file::{input_files, total_bytes};
use crate::summary::Summary;

/// Everything a replay needs, shared by its workers.
#[derive(Clone, Debug)]
pub struct ReplayPlan {
    pub config: PipelineConfig,
    pub input: PathBuf,
    pub out: PathBuf,
    pub changelog: bool,
    pub timely: TimelyArgs,
}

/// Records a worker decodes between two advances of its frontier.
const CHUNK: u64 = 4096;

/// A shared line writer for one per-process output (rejected, late).
pub(crate) type SharedWriter = Arc<Mutex<BufWriter<File>>>;

/// Runs a replay; returns the summary (on the process that holds worker 0).
pub fn replay(plan: ReplayPlan) -> anyhow::Result<Option<Summary>> {
    std::fs::create_dir_all(&plan.out)
        .with_context(|| format!("cannot create {}", plan.out.display()))?;
    Decoder::new(&plan.config)?;
    let files = input_files(&plan.input)?;
    anyhow::ensure!(
        !files.is_empty(),
        "input {} holds no files",
        plan.input.display()
    );
    let shared_writer = |name: &str| -> anyhow::Result<SharedWriter> {
        let path = part_path(&plan.out, name, plan.timely.process, plan.timely.processes)?;
        let file =
            File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Arc::new(Mutex::new(BufWriter::new(file))))
    };
    let rejected = shared_writer("rejected")?;
    let late = shared_writer("late")?;
    let timely_config = plan.timely.config()?;
    let plan = Arc::new((plan, files));
    let started = Instant::now();
    let writers = (rejected.clone(), late.clone());
    let summary = execute(timely_config, move |worker| {
        let (plan, files) = &*plan;
        run_worker(worker, plan, files, &writers.0, &writers.1, started)
    })?;
    for writer in [rejected, late] {
        writer.lock().expect("writer lock").flush()?;
    }
    Ok(summary)
}

/// The replay's dead letters: per-process `rejected.jsonl` and `late.jsonl`.
struct Files<'a> {
    rejected: &'a SharedWriter,
    late: &'a SharedWriter,
}

impl DeadLetters for Files<'_> {
    fn write(&mut self, kind: Dropped, record: &RejectedRecord) -> anyhow::Result<()> {
        match kind {
            Dropped::Rejected => write_line(self.rejected, record),
            Dropped::Late => write_line(self.late, record),
        }
    }
}

fn run_worker(
    worker: &mut Worker,
    plan: &ReplayPlan,
    files: &[PathBuf],
    rejected: &SharedWriter,
    late: &SharedWriter,
    started: Instant,
) -> anyhow::Result<Option<Summary>> {
    let index = worker.index();
    let peers = worker.peers() as u64;
    let config = &plan.config;
    let lateness_ms = config.time.allowed_lateness_s.saturating_mul(1000);
    let mut pipeline = PipelineWorker::new(worker, config, |gathered| {
        Ok(gathered.into_sinks(Some((&plan.out, plan.changelog)), None)?)
    })?;
    let mut dead = Files { rejected, late };
    let mut decoder = Decoder::new(config)?;
    let mut max_seen_ms: Option<u64> = None;
    let mut decoded_since_advance = 0;
    let bytes_read = Arc::new(AtomicU64::new(0));
    let progress = (index == 0).then(|| progress_bar(total_bytes(files)));
    let mut record_index: u64 = 0;

    for path in files {
        let file_name = path.display().to_string();
        let Some((mut lines, _)) = open_for_decoding(path, &mut decoder, bytes_read.clone())?
        else {
            continue;
        };
        while let Some((line, bytes)) = lines.next_line()? {
            // Blank lines hold no record; they are not counted.
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            record_index += 1;
            if record_index % peers != index as u64 {
                continue;
            }
            let position = Position::File {
                file: file_name.clone(),
                line,
                index: None,
            };
            if let Some(time_ms) = pipeline.read(&decoder, bytes, &position, &mut dead)? {
                max_seen_ms = max_seen_ms.max(Some(time_ms));
                decoded_since_advance += 1;
            }
            if decoded_since_advance >= CHUNK {
                decoded_since_advance = 0;
                pipeline.advance_to(max_seen_ms.unwrap_or(0).saturating_sub(lateness_ms));
                pipeline.catch_up(worker, None);
                pipeline.drain()?;
                if let Some(progress) = &progress {
                    progress.set_position(bytes_read.load(Ordering::Relaxed));
                }
            }
        }
    }

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
        Some(&plan.out),
        &per_process,
        plan.timely.processes,
        peers as usize,
        started,
    )?;
    Ok(Some(summary))
}

fn write_line(writer: &SharedWriter, record: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut writer = writer.lock().expect("writer lock");
    serde_json::to_writer(&mut *writer, record)?;
    writer.write_all(b"\n")?;
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
