//! `persona run`: the pipeline on Kafka topics, until stopped.
//!
//! Each worker reads its share of the partitions of `[source.kafka]` (a
//! fixed assignment, see [`crate::source::kafka`]) and decodes each message
//! as one line of the `[input]` format. Event time advances per partition,
//! as in Flink's Kafka source: a worker's watermark is the least latest
//! event time of its partitions (see [`PartitionWatermarks`]), less the
//! allowed lateness. Outputs go to the files of `[sink.files]` (or `--out`) and as
//! upserts to the topics of `[sink.kafka]`; rejected and late records go to
//! the files and the dead-letter topic.
//!
//! Offsets: every worker tells worker 0 how far it has read; worker 0
//! commits those offsets to the consumer group once the outputs of every
//! record before them (as of the record's own time) are written and the
//! Kafka sinks have acknowledged them. State lives in memory, so a start
//! reads every partition from its beginning and rebuilds it (`resume_from`);
//! upsert outputs then converge to the same state.
//!
//! SIGINT or SIGTERM stops consuming; the run then finishes what it read,
//! flushes the sinks, commits the offsets and writes `summary.json`. With
//! `--until-end` a worker stops by itself once its partitions are read to
//! the end, which replays a topic like a file. In a run of several
//! processes, signal every process.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use timely::dataflow::operators::vec::Input;
use timely::dataflow::operators::{Exchange, Inspect, Probe};
use timely::dataflow::{InputHandleVec as InputHandle, ProbeHandle};
use timely::worker::Worker;

use crate::config::{FormatKind, PipelineConfig};
use crate::format::Decoder;
use crate::rejected::{create_private_file, Position, RejectedRecord};
use crate::runtime::pipeline::{end_of_period, Sinks};
use crate::runtime::replay::SharedWriter;
use crate::runtime::worker::{DeadLetters, Dropped, Judge, PipelineWorker};
use crate::runtime::{execute, TimelyArgs};
use crate::sink::kafka::{ensure_topic, KafkaProducer};
use crate::sink::part_path;
use crate::source::kafka::{
    brokers_answer, group_committed, AssignmentMode, KafkaSource, KafkaSourceConfig, Offsets,
    ResumeFrom, TopicPartition,
};
use crate::summary::Summary;

/// Everything a run needs, shared by its workers.
#[derive(Clone, Debug)]
pub struct RunPlan {
    pub config: PipelineConfig,
    /// The folder of file outputs; overrides `[sink.files] dir`.
    pub out: Option<PathBuf>,
    /// Also write changelogs (or `[sink.files] changelog`).
    pub changelog: bool,
    /// Stop once every partition is read to its end.
    pub until_end: bool,
    pub timely: TimelyArgs,
}

/// Messages a worker takes from Kafka between two advances of its frontier.
const POLL_MAX: usize = 4096;
/// How often an idle worker asks the broker where its partitions end.
const END_CHECK: Duration = Duration::from_millis(250);
/// How long asking where partitions end may block a worker.
const END_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a blocking request to the broker may take.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the pipeline on Kafka; returns the summary (on the process that
/// holds worker 0) once stopped.
pub fn run(plan: RunPlan) -> anyhow::Result<Option<Summary>> {
    let source = plan.config.source.kafka.clone().context(
        "persona run reads Kafka: the config needs a [source.kafka] table with `topics`",
    )?;
    anyhow::ensure!(
        source.assignment == AssignmentMode::Workers,
        "persona run needs [source.kafka] assignment = \"workers\": the group assignment may read a record twice"
    );
    let decoding = topic_decoding(&plan.config)?;
    Decoder::new(&decoding)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())
            .context("cannot handle SIGTERM/SIGINT")?;
    }
    wait_for_brokers(&source, &stop)?;
    let files = plan.config.sink.files.as_ref();
    let out = plan.out.clone().or_else(|| files.map(|f| f.dir.clone()));
    let changelog = plan.changelog || files.is_some_and(|f| f.changelog);
    let kafka = plan.config.sink.kafka.as_ref();
    let has_topics = kafka.is_some_and(|k| {
        k.profiles.is_some() || k.similar_items.is_some() || k.recommendations.is_some()
    });
    anyhow::ensure!(
        out.is_some() || has_topics,
        "persona run has no outputs: give --out DIR, a [sink.files] dir, or [sink.kafka] topics"
    );
    let writers = match &out {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let writer = |name: &str| -> anyhow::Result<SharedWriter> {
                let path = part_path(dir, name, plan.timely.process, plan.timely.processes)?;
                let file = create_private_file(&path, plan.config.output.raw_file_mode)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                Ok(Arc::new(Mutex::new(BufWriter::new(file))))
            };
            Some((writer("rejected")?, writer("late")?))
        }
        None => None,
    };
    if let Some((kafka, topic)) = kafka.and_then(|k| Some((k, k.rejected.as_ref()?))) {
        ensure_topic(
            &kafka.brokers,
            topic,
            kafka.partitions,
            &[],
            &kafka.properties,
        )?;
    }

    let shared = Arc::new(Shared {
        plan,
        source,
        decoding,
        out,
        changelog,
        writers: writers.clone(),
        stop,
        started: Instant::now(),
    });
    let connecting = shared.plan.timely.connecting()?;
    let summary = execute(shared.plan.timely.config()?, connecting, move |worker| {
        run_worker(worker, &shared)
    })?;
    if let Some((rejected, late)) = writers {
        for writer in [rejected, late] {
            writer.lock().expect("writer lock").flush()?;
        }
    }
    Ok(summary)
}

/// What the workers of a process share.
struct Shared {
    plan: RunPlan,
    source: KafkaSourceConfig,
    /// The config messages decode with.
    decoding: PipelineConfig,
    out: Option<PathBuf>,
    changelog: bool,
    writers: Option<(SharedWriter, SharedWriter)>,
    stop: Arc<AtomicBool>,
    started: Instant,
}

/// The config a topic's messages decode with: each message is one line of
/// the `[input]` format, and a topic has no header line, so a CSV topic's
/// columns come from `[input.csv] columns` (presets set them).
pub fn topic_decoding(config: &PipelineConfig) -> anyhow::Result<PipelineConfig> {
    let mut config = config.clone();
    let csv = &mut config.input.csv;
    if config.input.format == FormatKind::Csv && csv.has_header {
        anyhow::ensure!(
            !csv.columns.is_empty(),
            "a topic of CSV lines has no header line: set [input.csv] columns = [...] \
             (`persona produce` prints the header it left out)"
        );
        csv.has_header = false;
    }
    Ok(config)
}

fn run_worker(worker: &mut Worker, shared: &Shared) -> anyhow::Result<Option<Summary>> {
    let index = worker.index();
    let peers = worker.peers();
    let config = &shared.plan.config;
    let files = shared.out.as_deref().map(|dir| (dir, shared.changelog));
    let mut pipeline = PipelineWorker::new(worker, config, |gathered| {
        Ok(gathered.into_sinks(files, config.sink.kafka.as_ref())?)
    })?;
    let period = config.time.recommend_period();

    // How far each worker has read, gathered on worker 0.
    let mut offsets_input: InputHandle<u64, (u64, Offsets)> = InputHandle::new();
    let offsets_probe = ProbeHandle::new();
    let read_so_far: Rc<RefCell<Vec<(u64, Offsets)>>> = Rc::default();
    let gathered = read_so_far.clone();
    worker.dataflow::<u64, _, _>(|scope| {
        scope
            .input_from(&mut offsets_input)
            .exchange(|_| 0)
            .inspect(move |snapshot: &(u64, Offsets)| gathered.borrow_mut().push(snapshot.clone()))
            .probe_with(&offsets_probe);
    });

    let mut source = KafkaSource::new(&shared.source, index, peers)?;
    let partitions = source.assignment()?;
    let start = match shared.source.resume_from {
        ResumeFrom::Beginning => Offsets::new(),
        ResumeFrom::Committed => source.committed(BROKER_TIMEOUT)?,
    };
    // Where an earlier run's outputs got to: once this run's outputs are
    // past it, keys it left in the upsert topics that the rebuilt state
    // lacks are tombstoned.
    let mut earlier = match index {
        0 => Some(EarlierRun {
            committed: Some(group_committed(&shared.source)?),
            durable: Offsets::new(),
        }),
        _ => None,
    };
    let mut dead = RunDeadLetters::new(shared)?;
    let decoder = Decoder::new(&shared.decoding)?;
    let lateness_ms = config.time.allowed_lateness_s.saturating_mul(1000);
    let mut watermarks = PartitionWatermarks::new(&partitions);
    let mut warnings = Warnings::default();
    let mut batch = Vec::new();
    let mut last_end_check: Option<Instant> = None;
    let mut last_sent: Option<Offsets> = None;
    let mut latest_tick: u64 = 0;
    if partitions.is_empty() {
        // More workers than partitions: this one holds nothing back.
        pipeline.advance_to(u64::MAX);
    }

    loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        batch.clear();
        let polled = match source.poll_batch(POLL_MAX, &mut batch) {
            Ok(polled) => polled,
            // The client reconnects by itself (a broker restart, say).
            Err(error) => {
                warnings.warn(&format!("{:#}", anyhow::Error::from(error)));
                0
            }
        };
        for record in &batch {
            let Position::Kafka {
                topic, partition, ..
            } = &record.position
            else {
                unreachable!("Kafka records have Kafka positions");
            };
            let partition = (topic.clone(), *partition);
            watermarks.has_data(&partition);
            // A null value (tombstone) or a blank message holds no record.
            if record.payload.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let applied = pipeline.read(
                &decoder,
                &record.payload,
                &record.position,
                Judge::Frontier,
                &mut dead,
            )?;
            if let Some(time_ms) = applied {
                watermarks.saw(&partition, time_ms);
                latest_tick = latest_tick.max(config.time.tick_of(time_ms));
            }
        }
        if polled == 0 && last_end_check.is_none_or(|at| at.elapsed() >= END_CHECK) {
            last_end_check = Some(Instant::now());
            match source.end_offsets(END_CHECK_TIMEOUT) {
                Ok(ends) => {
                    let read = source.offsets();
                    for (partition, end) in &ends {
                        let next = read.get(partition).or(start.get(partition));
                        if next.copied().unwrap_or(0) >= *end {
                            watermarks.idle(partition);
                        }
                    }
                    if shared.plan.until_end && watermarks.all_idle() {
                        break;
                    }
                }
                Err(error) => warnings.warn(&format!("{:#}", anyhow::Error::from(error))),
            }
        }
        if let Some(watermark) = watermarks.watermark() {
            pipeline.advance_to(watermark.saturating_sub(lateness_ms));
        }
        let read = source.offsets();
        if last_sent.as_ref() != Some(&read) {
            // Rejected records are durable before their offsets are told.
            dead.flush()?;
            offsets_input.send((end_of_period(latest_tick, period), read.clone()));
            offsets_input.flush();
            last_sent = Some(read);
        }
        pipeline.catch_up(worker, Some(Duration::from_millis(50)));
        if polled == 0 {
            worker.step_or_park(Some(Duration::from_millis(10)));
        }
        if let Some(done) = pipeline.drain()? {
            let ready = take_ready(&read_so_far, |time| time < done);
            if !ready.is_empty() {
                let sinks = pipeline.sinks().expect("worker 0 has the sinks");
                sinks.flush().context("cannot write the outputs to Kafka")?;
                if let Err(error) = source.commit(&ready) {
                    warnings.warn(&format!("{:#}", anyhow::Error::from(error)));
                    // Committed with a later snapshot, or at the end.
                    read_so_far.borrow_mut().push((0, ready));
                } else if let Some(earlier) = &mut earlier {
                    earlier.passed(&ready, sinks)?;
                }
            }
        }
    }

    // Stopped: finish what was read, write every output, commit, summarize.
    dead.flush()?;
    offsets_input.send((u64::MAX, source.offsets()));
    drop(offsets_input);
    let finished = pipeline.finish(worker, shared.plan.timely.workers)?;
    worker.step_while(|| !offsets_probe.done());
    let Some(mut finished) = finished else {
        return Ok(None);
    };
    finished
        .sinks
        .flush()
        .context("cannot write the outputs to Kafka")?;
    let all = take_ready(&read_so_far, |_| true);
    commit_with_retries(&source, &all)?;
    if let Some(earlier) = &mut earlier {
        earlier.passed(&all, &mut finished.sinks)?;
    }
    let per_process = [
        ("rejected", finished.totals.rejected.values().sum()),
        ("late", finished.totals.late),
    ];
    let summary = finished.summarize(
        shared.out.as_deref(),
        &per_process,
        shared.plan.timely.processes,
        peers,
        shared.started,
    )?;
    Ok(Some(summary))
}

/// What worker 0 knows of the run before this one.
struct EarlierRun {
    /// The offsets it committed, where its outputs got to; `None` once this
    /// run is past them.
    committed: Option<Offsets>,
    /// The offsets whose outputs this run has written.
    durable: Offsets,
}

impl EarlierRun {
    /// Notes newly durable offsets; once they pass the earlier run's, the
    /// keys it left that this run has not sent are tombstoned.
    fn passed(&mut self, durable: &Offsets, sinks: &mut Sinks) -> anyhow::Result<()> {
        let Some(committed) = &self.committed else {
            return Ok(());
        };
        for (partition, offset) in durable {
            let entry = self.durable.entry(partition.clone()).or_insert(*offset);
            *entry = (*entry).max(*offset);
        }
        let past = committed
            .iter()
            .all(|(partition, offset)| self.durable.get(partition).is_some_and(|o| o >= offset));
        if past {
            if sinks.reconcile()? > 0 {
                sinks.flush().context("cannot write the outputs to Kafka")?;
            }
            self.committed = None;
        }
        Ok(())
    }
}

/// Removes the offset snapshots whose time `durable` accepts and merges
/// them: the furthest offset of each partition.
fn take_ready(snapshots: &RefCell<Vec<(u64, Offsets)>>, durable: impl Fn(u64) -> bool) -> Offsets {
    let mut merged = Offsets::new();
    snapshots.borrow_mut().retain(|(time, offsets)| {
        if !durable(*time) {
            return true;
        }
        for (partition, offset) in offsets {
            let entry = merged.entry(partition.clone()).or_insert(*offset);
            *entry = (*entry).max(*offset);
        }
        false
    });
    merged
}

/// Waits until the brokers answer, warning every few seconds; a stop
/// (SIGINT, SIGTERM) while waiting ends the run at once.
fn wait_for_brokers(source: &KafkaSourceConfig, stop: &AtomicBool) -> anyhow::Result<()> {
    let mut warnings = Warnings::default();
    loop {
        anyhow::ensure!(
            !stop.load(Ordering::Relaxed),
            "stopped before the Kafka brokers at {} answered",
            source.brokers
        );
        match brokers_answer(source, Duration::from_secs(1)) {
            Ok(()) => return Ok(()),
            Err(error) => warnings.warn(&format!(
                "cannot reach the Kafka brokers at {}: {error}; retrying",
                source.brokers
            )),
        }
    }
}

/// The last commit of a run: retried while the broker is away for a while.
fn commit_with_retries(source: &KafkaSource, offsets: &Offsets) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        match source.commit(offsets) {
            Ok(_) => return Ok(()),
            Err(error) if attempt >= 10 => return Err(error.into()),
            Err(error) => {
                eprintln!(
                    "persona: warning: {:#}; retrying",
                    anyhow::Error::from(error)
                );
                attempt += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Event time per partition, as Flink's Kafka source keeps it: the
/// watermark of a worker is the least latest event time of its partitions,
/// so a partition that lags holds the others back and its records are not
/// late. A partition that has given no event yet holds everything back
/// unless it is read to its end (empty); once every partition is read to
/// its end, the watermark is the latest time of any, so a quiet input still
/// completes its outputs up to the allowed lateness.
struct PartitionWatermarks {
    latest: BTreeMap<TopicPartition, Option<u64>>,
    /// Partitions read to their end when last asked.
    idle: BTreeSet<TopicPartition>,
}

impl PartitionWatermarks {
    fn new(partitions: &[TopicPartition]) -> PartitionWatermarks {
        PartitionWatermarks {
            latest: partitions.iter().map(|p| (p.clone(), None)).collect(),
            idle: BTreeSet::new(),
        }
    }

    fn has_data(&mut self, partition: &TopicPartition) {
        self.idle.remove(partition);
    }

    fn saw(&mut self, partition: &TopicPartition, time_ms: u64) {
        let latest = self.latest.entry(partition.clone()).or_default();
        *latest = (*latest).max(Some(time_ms));
    }

    fn idle(&mut self, partition: &TopicPartition) {
        self.idle.insert(partition.clone());
    }

    fn all_idle(&self) -> bool {
        self.latest.keys().all(|p| self.idle.contains(p))
    }

    /// The event time every partition has reached (see the type's doc);
    /// `None` while a partition with data to read has given no event yet.
    fn watermark(&self) -> Option<u64> {
        if self.all_idle() {
            return self.latest.values().flatten().max().copied();
        }
        self.latest
            .iter()
            .filter(|(p, latest)| latest.is_some() || !self.idle.contains(*p))
            .try_fold(u64::MAX, |least, (_, latest)| Some(least.min((*latest)?)))
    }
}

/// A run's dead letters: the per-process files and the dead-letter topic.
struct RunDeadLetters {
    files: Option<(SharedWriter, SharedWriter)>,
    topic: Option<KafkaProducer>,
    unflushed: bool,
}

impl RunDeadLetters {
    fn new(shared: &Shared) -> anyhow::Result<RunDeadLetters> {
        let topic = match &shared.plan.config.sink.kafka {
            Some(kafka) => match &kafka.rejected {
                Some(topic) => Some(KafkaProducer::new(
                    &kafka.brokers,
                    topic,
                    &kafka.properties,
                )?),
                None => None,
            },
            None => None,
        };
        Ok(RunDeadLetters {
            files: shared.writers.clone(),
            topic,
            unflushed: false,
        })
    }

    /// Waits until every dead letter sent is acknowledged.
    fn flush(&mut self) -> anyhow::Result<()> {
        if let (Some(topic), true) = (&self.topic, self.unflushed) {
            topic.flush()?;
            self.unflushed = false;
        }
        Ok(())
    }
}

impl DeadLetters for RunDeadLetters {
    fn write(&mut self, kind: Dropped, record: &RejectedRecord) -> anyhow::Result<()> {
        let line = serde_json::to_vec(record)?;
        if let Some((rejected, late)) = &self.files {
            let file = match kind {
                Dropped::Rejected => rejected,
                Dropped::Late => late,
            };
            let mut file = file.lock().expect("writer lock");
            file.write_all(&line)?;
            file.write_all(b"\n")?;
        }
        if let Some(topic) = &self.topic {
            topic.send(record.source.to_string().as_bytes(), Some(&line))?;
            self.unflushed = true;
        }
        Ok(())
    }
}

/// Warnings about a broker that is away, at most one every few seconds.
#[derive(Default)]
struct Warnings {
    last: Option<Instant>,
}

impl Warnings {
    fn warn(&mut self, message: &str) {
        if self
            .last
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(5))
        {
            eprintln!("persona: warning: {message}");
            self.last = Some(Instant::now());
        }
    }
}
