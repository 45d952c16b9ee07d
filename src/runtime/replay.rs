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

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use differential_dataflow::input::InputSession;
use indicatif::{ProgressBar, ProgressStyle};
use persona_dataflows::profile::{AttributeVersion, CatalogVersion};
use persona_dataflows::{Event, Id};
use timely::dataflow::operators::vec::Input;
use timely::dataflow::operators::{Exchange, Inspect, Probe};
use timely::dataflow::{InputHandleVec as InputHandle, ProbeHandle};
use timely::worker::Worker;

use crate::config::PipelineConfig;
use crate::dimension::{read_catalog, read_user_attributes};
use crate::format::{Decoded, Decoder, Outcome};
use crate::names::{NameBook, NameKind};
use crate::rejected::{Position, RejectedRecord};
use crate::runtime::{open_for_decoding, pipeline, TimelyArgs};
use crate::sink::{part_path, Upto};
use crate::source::file::{input_files, total_bytes};
use crate::summary::{peak_rss_bytes, ReaderCounts, Summary};

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
type SharedWriter = Arc<Mutex<BufWriter<File>>>;

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
    let guards = timely::execute(timely_config, move |worker| {
        let (plan, files) = &*plan;
        run_worker(worker, plan, files, &writers.0, &writers.1, started)
            .map_err(|error| format!("{error:#}"))
    })
    .map_err(|error| anyhow::anyhow!("cannot start workers: {error}"))?;
    let mut summary = None;
    for result in guards.join() {
        match result {
            Ok(Ok(Some(worker_summary))) => summary = Some(worker_summary),
            Ok(Ok(None)) => {}
            Ok(Err(error)) => anyhow::bail!(error),
            Err(panic) => anyhow::bail!("a worker panicked: {panic}"),
        }
    }
    for writer in [rejected, late] {
        writer.lock().expect("writer lock").flush()?;
    }
    Ok(summary)
}

/// What a worker reads into the dataflow.
struct Inputs {
    events: InputSession<u64, (u64, Event), isize>,
    names: InputHandle<u64, (NameKind, Id, String)>,
    /// Names this worker has already sent.
    named: HashSet<(NameKind, Id)>,
}

impl Inputs {
    fn apply(&mut self, decoded: Decoded, time: u64) {
        let Decoded {
            event,
            diff,
            dedup_key,
            user_name,
            item_name,
            category_name,
        } = decoded;
        self.name(NameKind::User, event.user, user_name);
        self.name(NameKind::Item, event.item, item_name);
        if let (Some(id), Some(category)) = (event.category, category_name) {
            self.name(NameKind::Category, id, category);
        }
        self.events.update_at((dedup_key, event), time, diff);
    }

    /// Sends a name to the name book, once per worker.
    fn name(&mut self, kind: NameKind, id: Id, name: String) {
        if self.named.insert((kind, id)) {
            self.names.send((kind, id, name));
        }
    }

    fn advance_to(&mut self, time: u64) {
        if time > *self.events.time() {
            self.events.advance_to(time);
            self.names.advance_to(time);
        }
        self.events.flush();
    }
}

/// Loads the dimension tables into their inputs (worker 0 only), each row at
/// the tick from which it applies.
fn load_dimensions(
    config: &PipelineConfig,
    inputs: &mut Inputs,
    catalog: &mut InputSession<u64, (Id, CatalogVersion), isize>,
    user_attributes: &mut InputSession<u64, (Id, AttributeVersion), isize>,
    tick_ms: u64,
) -> anyhow::Result<()> {
    let numeric_ids = config.cleaning.numeric_ids;
    let tick = |ms: i64| ms as u64 - ms as u64 % tick_ms;
    if let Some(table) = &config.catalog {
        for (row, applies_ms) in read_catalog(table, numeric_ids)? {
            inputs.name(NameKind::Item, row.item, row.item_name);
            if let (Some(id), Some(name)) = (row.version.category, row.category_name) {
                inputs.name(NameKind::Category, id, name);
            }
            catalog.update_at((row.item, row.version), tick(applies_ms), 1);
        }
    }
    if let Some(table) = &config.user_attributes {
        for (row, applies_ms) in read_user_attributes(table, numeric_ids)? {
            inputs.name(NameKind::User, row.user, row.user_name);
            user_attributes.update_at((row.user, row.version), tick(applies_ms), 1);
        }
    }
    Ok(())
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
    let tick_ms = config.time.tick_ms;
    let lateness_ms = config.time.allowed_lateness_s.saturating_mul(1000);
    let dedup_horizon = config
        .cleaning
        .dedup
        .then(|| config.cleaning.dedup_horizon_s.saturating_mul(1000));

    let mut inputs = Inputs {
        events: InputSession::new(),
        names: InputHandle::new(),
        named: HashSet::new(),
    };
    let mut catalog: InputSession<u64, (Id, CatalogVersion), isize> = InputSession::new();
    let mut user_attributes: InputSession<u64, (Id, AttributeVersion), isize> = InputSession::new();
    let mut counts_input: InputHandle<u64, ReaderCounts> = InputHandle::new();
    let probe = ProbeHandle::new();
    let counts_probe = ProbeHandle::new();
    let duplicates = Rc::new(Cell::new(0u64));
    let name_book = Rc::new(RefCell::new(NameBook::default()));
    let totals = Rc::new(RefCell::new(ReaderCounts::default()));

    let gathered = worker.dataflow::<u64, _, _>(|scope| {
        let records = inputs.events.to_collection(scope);
        let events = pipeline::dedup(records, dedup_horizon, duplicates.clone());
        let events = pipeline::mark_cancellations(events);
        let book = name_book.clone();
        scope
            .input_from(&mut inputs.names)
            .exchange(|_| 0)
            .inspect(move |(kind, id, name): &(NameKind, Id, String)| {
                book.borrow_mut().insert(*kind, *id, name.clone())
            })
            .probe_with(&probe);
        let sum = totals.clone();
        scope
            .input_from(&mut counts_input)
            .exchange(|_| 0)
            .inspect(move |counts: &ReaderCounts| sum.borrow_mut().merge(counts))
            .probe_with(&counts_probe);
        let inputs = pipeline::Inputs {
            events,
            catalog: catalog.to_collection(scope),
            user_attributes: user_attributes.to_collection(scope),
        };
        pipeline::build(inputs, config, &probe)
    });
    if index == 0 {
        load_dimensions(
            config,
            &mut inputs,
            &mut catalog,
            &mut user_attributes,
            tick_ms,
        )?;
    }
    catalog.close();
    user_attributes.close();
    let mut sinks = if index == 0 {
        Some(gathered.into_sinks(&plan.out, plan.changelog)?)
    } else {
        drop(gathered);
        None
    };

    let mut decoder = Decoder::new(config)?;
    let mut counts = ReaderCounts::default();
    let mut outcomes: Vec<Outcome> = Vec::new();
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
            decoder.decode(bytes, &position, &mut outcomes);
            for outcome in outcomes.drain(..) {
                counts.records_read += 1;
                match outcome {
                    Err((position, rejection)) => {
                        *counts
                            .rejected
                            .entry(rejection.reason.code().to_owned())
                            .or_insert(0) += 1;
                        write_line(rejected, &RejectedRecord::new(position, rejection, bytes))?;
                    }
                    Ok(decoded) => {
                        let time_ms = decoded.event.time_ms as u64;
                        let time = time_ms - time_ms % tick_ms;
                        if time < *inputs.events.time() {
                            counts.late += 1;
                            let detail = format!(
                                "event time {time_ms} is behind the input frontier {} by more than the allowed lateness",
                                inputs.events.time()
                            );
                            write_line(
                                late,
                                &serde_json::json!({"source": position, "reason": "late", "detail": detail,
                                                    "raw": String::from_utf8_lossy(bytes)}),
                            )?;
                            continue;
                        }
                        counts.decoded += 1;
                        counts.max_time = counts.max_time.max(Some(time));
                        max_seen_ms = max_seen_ms.max(Some(time_ms));
                        inputs.apply(decoded, time);
                        decoded_since_advance += 1;
                    }
                }
            }
            if decoded_since_advance >= CHUNK {
                decoded_since_advance = 0;
                let watermark = max_seen_ms.unwrap_or(0).saturating_sub(lateness_ms);
                inputs.advance_to(watermark - watermark % tick_ms);
                // Let the dataflow catch up before reading on, so state and
                // pending output stay bounded by the lateness, not the log.
                let frontier = *inputs.events.time();
                worker.step_while(|| probe.less_than(&frontier));
                if let Some(sinks) = &mut sinks {
                    let done = probe.with_frontier(|f| f.first().copied());
                    if let Some(done) = done {
                        sinks.drain(Upto::Before(done), &*name_book.borrow())?;
                    }
                }
                if let Some(progress) = &progress {
                    progress.set_position(bytes_read.load(Ordering::Relaxed));
                }
            }
        }
    }

    // End of input: close the inputs and let the dataflow finish.
    let Inputs { events, names, .. } = inputs;
    events.close();
    drop(names);
    worker.step_while(|| !probe.done());
    counts.duplicates = duplicates.get();
    if index.is_multiple_of(plan.timely.workers) {
        counts.peak_rss_bytes = peak_rss_bytes();
    }
    counts_input.send(counts);
    drop(counts_input);
    worker.step_while(|| !counts_probe.done());
    if let Some(progress) = &progress {
        progress.finish_and_clear();
    }

    let Some(mut sinks) = sinks else {
        return Ok(None);
    };
    let totals = totals.borrow().clone();
    let names = name_book.borrow();
    let end = totals.max_time.unwrap_or(0);
    sinks.drain(Upto::End(end), &*names)?;
    let mut outputs = std::collections::BTreeMap::new();
    for sink in &mut sinks.outputs {
        if let Some((file, lines)) = sink.finish(&plan.out, &*names)? {
            outputs.insert(file, lines as u64);
        }
    }
    let rejected_total: u64 = totals.rejected.values().sum();
    outputs.insert(
        output_name("rejected", plan.timely.processes),
        rejected_total,
    );
    outputs.insert(output_name("late", plan.timely.processes), totals.late);
    let accepted = totals.decoded - totals.duplicates;
    let elapsed_s = started.elapsed().as_secs_f64();
    let summary = Summary {
        records_read: totals.records_read,
        accepted,
        rejected: totals.rejected,
        duplicates: totals.duplicates,
        late: totals.late,
        users: sinks.users.record_count() as u64,
        items: sinks.items.record_count() as u64,
        outputs,
        elapsed_s,
        events_per_s: if elapsed_s > 0.0 {
            accepted as f64 / elapsed_s
        } else {
            0.0
        },
        peak_rss_bytes: totals.peak_rss_bytes,
        workers: peers as usize,
    };
    let file = File::create(plan.out.join("summary.json"))?;
    let mut writer = BufWriter::new(file);
    serde_json::to_writer_pretty(&mut writer, &summary)?;
    writer.write_all(b"\n")?;
    writer.flush()?;
    Ok(Some(summary))
}

/// The name of a per-process output in the summary: a file, or a folder of parts.
fn output_name(name: &str, processes: usize) -> String {
    if processes > 1 {
        format!("{name}/")
    } else {
        format!("{name}.jsonl")
    }
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
