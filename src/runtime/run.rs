//! `persona run`: the pipeline on Kafka topics, until stopped.
//!
//! Each worker reads its share of the partitions of `[source.kafka]` (a
//! fixed assignment, see [`crate::source::kafka`]) and decodes each message
//! as one line of the `[input]` format. Event time advances per partition,
//! as in Flink's Kafka source: a worker's watermark is the least latest
//! event time of its partitions, less the
//! allowed lateness (`run/watermarks.rs`). Outputs go to the files of `[sink.files]` (or `--out`) and as
//! upserts to the topics of `[sink.kafka]`; rejected and late records go to
//! the files and the dead-letter topic.
//!
//! Offsets: every worker tells worker 0 how far it has read; worker 0
//! commits those offsets to the consumer group once the outputs of every
//! record before them (as of the record's own time) are written and the
//! Kafka sinks have acknowledged them (`run/offsets.rs`); with
//! `[checkpoint]`, once a checkpoint holding them is durable as well.
//!
//! Without `[checkpoint]` state lives in memory, so a start reads every
//! partition from its beginning and rebuilds it (`resume_from`); upsert
//! outputs then converge to the same state. With it, a start applies the
//! newest complete checkpoint's records and reads on from its offsets
//! (`run/checkpoints.rs`, [`crate::checkpoint`]).
//!
//! SIGINT or SIGTERM stops consuming; the run then finishes what it read,
//! flushes the sinks, commits the offsets and writes `summary.json`. With
//! `--until-end` a worker stops by itself once its partitions are read to
//! the end, which replays a topic like a file. In a run of several
//! processes, signal every process.

pub(crate) mod checkpoints;
mod forgets;
mod offsets;
pub(crate) mod watermarks;

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use timely::dataflow::operators::vec::Input;
use timely::dataflow::operators::{Exchange, Inspect, Probe};
use timely::dataflow::{InputHandleVec as InputHandle, ProbeHandle};
use timely::worker::Worker;

use crate::checkpoint::{Manifest, Settings, Store};
use crate::clean::Judge;
use crate::config::end_of_period;
use crate::config::{FormatKind, Output, PipelineConfig, DEFAULT_HEADER_TIMEOUT_MS};
use crate::format::Decoder;
use crate::kafka::{ensure_topic, Offsets};
use crate::metrics::{self, start_http, Metrics};
use crate::runtime::pipeline::{Graph, UpsertTopics};
use crate::runtime::replay::CHUNK;
use crate::runtime::worker::PipelineWorker;
use crate::runtime::{execute, TimelyArgs};
use crate::sink::dead_letters::{DeadLetterFiles, DeadLetters};
use crate::sink::kafka::{KafkaSink, UpsertTopic};
use crate::sink::OutputFiles;
use crate::source::kafka::{
    brokers_answer, group_committed, upsert_keys, KafkaSource, KafkaSourceConfig, KafkaSourceError,
    ResumeFrom,
};
use crate::summary::Summary;
use checkpoints::Checkpoints;
use forgets::ForgetTopic;
use offsets::{EarlierRun, Snapshots};
pub(crate) use watermarks::PartitionWatermarks;

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
    /// Serve `/metrics` and `/healthz` on this address.
    pub listen: Option<String>,
    pub timely: TimelyArgs,
}

/// Messages a worker takes from Kafka between two advances of its frontier.
const POLL_MAX: usize = 4096;
/// How often a worker asks the broker where its partitions end (on a
/// thread of its own: the answer may take seconds).
const END_CHECK: Duration = Duration::from_millis(250);
/// How long asking where a partition ends may take.
const END_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a blocking request to the broker may take.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the pipeline on Kafka; returns the summary (on the process that
/// holds worker 0) once stopped.
pub fn run(plan: RunPlan) -> anyhow::Result<Option<Summary>> {
    let source = plan.config.source.kafka.clone().context(
        "persona run reads Kafka: the config needs a [source.kafka] table with `topics`",
    )?;
    let decoding = topic_decoding(&plan.config)?;
    Decoder::new(&decoding)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())
            .context("cannot handle SIGTERM/SIGINT")?;
    }
    crate::source::kafka::check(&source)?;
    wait_for_brokers(&source, &stop)?;
    tracing::debug!("the brokers answer");
    let files = plan.config.sink.files.as_ref();
    let out = plan.out.clone().or_else(|| files.map(|f| f.dir.clone()));
    let changelog = plan.changelog || files.is_some_and(|f| f.changelog);
    let kafka = plan.config.sink.kafka.as_ref();
    let has_topics = kafka.is_some_and(|k| Output::ALL.iter().any(|&o| k.topic_of(o).is_some()));
    anyhow::ensure!(
        out.is_some() || has_topics || plan.config.sink.parquet.is_some(),
        "persona run has no outputs: give --out DIR, a [sink.files] dir, [sink.parquet] \
         or [sink.kafka] topics"
    );
    let store = plan
        .config
        .checkpoint
        .as_ref()
        .map(|checkpoint| Store::open(checkpoint, Settings::of(&plan.config), plan.timely.process))
        .transpose()?;
    let restored = store.as_ref().map(Store::latest).transpose()?.flatten();
    if let Some(manifest) = &restored {
        eprintln!(
            "persona run: restoring checkpoint {} ({} records before its offsets)",
            manifest.seq, manifest.counts.records_read
        );
    }
    let dead_letters = out
        .as_deref()
        .map(|dir| {
            let (process, processes) = (plan.timely.process, plan.timely.processes);
            DeadLetterFiles::create(dir, process, processes, plan.config.output.raw_file_mode)
        })
        .transpose()?;
    if let (Some(files), Some(store), Some(manifest)) = (&dead_letters, &store, &restored) {
        restore_letters(files, (store, manifest), &plan.timely)?;
    }
    if let Some((kafka, topic)) = kafka.and_then(|k| Some((k, k.rejected.as_ref()?))) {
        ensure_topic(
            &kafka.brokers,
            topic,
            kafka.partitions,
            &[],
            &kafka.properties,
        )?;
    }

    let metrics = Arc::new(Metrics::new(plan.timely.workers.max(1)));
    // Nothing to catch up before answering: run has no initial log.
    metrics.ready.store(true, Ordering::Release);
    let server = match &plan.listen {
        None => None,
        Some(listen) => {
            let listener = std::net::TcpListener::bind(listen)
                .with_context(|| format!("cannot listen on {listen} (--listen)"))?;
            eprintln!("persona run: /metrics on http://{}", listener.local_addr()?);
            Some(start_http(
                listener,
                metrics::router(metrics.clone()),
                stop.clone(),
                None,
                Duration::from_millis(DEFAULT_HEADER_TIMEOUT_MS),
            )?)
        }
    };
    let shared = Arc::new(Shared {
        plan,
        metrics,
        source,
        decoding,
        out,
        changelog,
        dead_letters: dead_letters.clone(),
        store,
        restored,
        stop,
        started: Instant::now(),
    });
    // Which checkpoint this start restored, and the records it held.
    let restored_from = shared
        .restored
        .as_ref()
        .map(|manifest| (manifest.seq, manifest.counts.records_read));
    let connecting = shared.plan.timely.connecting()?;
    let stopped = shared.stop.clone();
    let summary = execute(shared.plan.timely.config()?, connecting, move |worker| {
        run_worker(worker, &shared)
    });
    stopped.store(true, Ordering::Release);
    if let Some(server) = server {
        server
            .join()
            .map_err(|_| anyhow::anyhow!("the metrics server panicked"))??;
    }
    let summary = summary?;
    if let Some(dead_letters) = dead_letters {
        dead_letters.flush()?;
    }
    if let (Some(summary), Some((seq, before))) = (&summary, restored_from) {
        // What the checkpoint saved: nothing before its offsets was read.
        eprintln!(
            "persona run: read {} records from the topics; {before} came from checkpoint {seq}",
            summary.records_read.saturating_sub(before),
        );
    }
    Ok(summary)
}

/// What the workers of a process share.
struct Shared {
    plan: RunPlan,
    /// What `/metrics` shows, when `--listen` serves it.
    metrics: Arc<Metrics>,
    source: KafkaSourceConfig,
    /// The config messages decode with.
    decoding: PipelineConfig,
    out: Option<PathBuf>,
    changelog: bool,
    dead_letters: Option<DeadLetterFiles>,
    /// `[checkpoint]`, and the checkpoint this start restores.
    store: Option<Store>,
    restored: Option<Manifest>,
    stop: Arc<AtomicBool>,
    started: Instant,
}

/// The config a topic's messages decode with: each message is one line of
/// the `[input]` format, and a topic has no header line, so a CSV topic's
/// columns come from `[input.csv] columns` (presets set them).
pub(crate) fn topic_decoding(config: &PipelineConfig) -> anyhow::Result<PipelineConfig> {
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
    let files = OutputFiles {
        jsonl: shared.out.clone(),
        changelog: shared.out.clone().filter(|_| shared.changelog),
        parquet: config.sink.parquet.clone(),
    };
    // Where an earlier run's outputs got to: once this run's outputs are
    // past it, keys it left in the upsert topics that the rebuilt state
    // lacks are tombstoned. Reading it joins the group's coordinator, a
    // round trip of a tenth of a second or more, so it is read beside the
    // dataflow's building and the restore, and awaited before reading on.
    let earlier_committed = match index {
        0 => Some(read_committed(&shared.source)?),
        _ => None,
    };
    let topics = match index {
        0 => upsert_topics(config)?,
        _ => UpsertTopics::new(),
    };
    let mut pipeline =
        PipelineWorker::new(worker, config, Graph::of_outputs(config), |gathered| {
            Ok(gathered.into_sinks(&files, topics)?)
        })?;
    let period = config.time.recommend_period();

    // How far each worker has read, gathered on worker 0.
    let mut offsets_input: InputHandle<u64, (u64, Offsets)> = InputHandle::new();
    let offsets_probe = ProbeHandle::new();
    let read_so_far: Rc<Snapshots> = Rc::default();
    let gathered = read_so_far.clone();
    worker.dataflow::<u64, _, _>(|scope| {
        scope
            .input_from(&mut offsets_input)
            .exchange(|_| 0)
            .inspect(move |(until, offsets): &(u64, Offsets)| {
                gathered.push(*until, offsets.clone())
            })
            .probe_with(&offsets_probe);
    });

    tracing::debug!(index, "dataflow built, upsert topics read");
    let checkpoint = shared.restored.as_ref().map(Manifest::offsets);
    let mut source = KafkaSource::new_at(&shared.source, index, peers, checkpoint.as_ref())?;
    let partitions = source.assignment()?;
    let ends = source.watch_ends(END_CHECK, END_CHECK_TIMEOUT);
    let start = match (checkpoint, shared.source.resume_from) {
        (Some(offsets), _) => offsets,
        (None, ResumeFrom::Beginning) => Offsets::new(),
        (None, ResumeFrom::Committed) => source.committed(BROKER_TIMEOUT)?,
    };
    tracing::debug!(index, "source assigned");
    let mut dead = DeadLetters::new(shared.dead_letters.clone(), config.sink.kafka.as_ref())?;
    let decoder = Decoder::new(&shared.decoding)?;
    let lateness_ms = config.time.allowed_lateness_s.saturating_mul(1000);
    let mut watermarks = PartitionWatermarks::new(&partitions);
    let mut warnings = Warnings::default();
    let mut batch = Vec::new();
    let mut last_sent: Option<Offsets> = None;
    let mut latest_tick: u64 = 0;
    let mut checkpoints = None;
    if let Some(store) = &shared.store {
        if let Some(manifest) = &shared.restored {
            // No frontier of any worker was before the least watermark
            // less the lateness when the checkpoint was taken.
            let least = manifest
                .partitions
                .iter()
                .map(|p| p.latest_ms)
                .min()
                .flatten();
            let cap_ms = least.map_or(0, |ms| ms.saturating_sub(lateness_ms));
            restore(worker, &mut pipeline, (store, manifest), cap_ms)?;
            for state in &manifest.partitions {
                let partition = (state.topic.clone(), state.partition);
                if let (true, Some(time_ms)) = (partitions.contains(&partition), state.latest_ms) {
                    watermarks.saw(&partition, time_ms);
                }
            }
            latest_tick = manifest.latest_tick;
            // The frontier the checkpoint was taken at, before reading on.
            if let Some(watermark) = watermarks.watermark() {
                pipeline.advance_to(watermark.saturating_sub(lateness_ms));
            }
        }
        pipeline.record();
        dead.capture();
        let interval =
            Duration::from_secs_f64(config.checkpoint.as_ref().map_or(60.0, |c| c.interval_s));
        let process = index / shared.plan.timely.workers.max(1);
        checkpoints = Some(Checkpoints::new(
            worker,
            store.clone(),
            interval,
            process,
            shared.restored.clone(),
            pipeline.forgotten(),
        )?);
    }
    if partitions.is_empty() {
        // More workers than partitions: this one holds nothing back.
        pipeline.advance_to(u64::MAX);
    }
    // Worker 0 forgets the users of the forget topic: those asked before
    // the start first, then new ones as they come.
    let mut forgets = match index {
        0 => ForgetTopic::open(config, &shared.source)?,
        _ => None,
    };
    if let Some(forgets) = &mut forgets {
        forgets
            .catch_up()?
            .into_iter()
            .for_each(|user| pipeline.forget(user));
    }
    let mut earlier = match earlier_committed {
        Some(reading) => {
            let committed = reading.join().map_err(|_| {
                anyhow::anyhow!("the thread reading the committed offsets panicked")
            })??;
            Some(EarlierRun::new(committed))
        }
        None => None,
    };
    tracing::debug!(index, "committed offsets read");

    loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        if let Some(forgets) = &mut forgets {
            for user in forgets.poll()? {
                tracing::info!("a user was forgotten (forget topic)");
                pipeline.forget(user);
            }
        }
        batch.clear();
        let polled = match source.poll_batch(POLL_MAX, &mut batch) {
            Ok(polled) => polled,
            // The client reconnects by itself (a broker restart, say).
            Err(error) => {
                warnings.warn(&format!("{:#}", anyhow::Error::new(error)));
                0
            }
        };
        for record in &batch {
            let partition = record.partition();
            watermarks.has_data(&partition);
            if record.is_blank() {
                continue;
            }
            // Late behind its own partition's watermark. (The worker's
            // frontier, the least of its partitions', passes that only once
            // all are read to their end.)
            let own = watermarks.late_before(&partition, &config.time);
            let judge = Judge::Frontier(pipeline.frontier().max(own));
            let applied = pipeline.read(
                &decoder,
                &record.payload,
                &record.position,
                Some(judge),
                &mut dead,
            )?;
            if let Some(time_ms) = applied {
                watermarks.saw(&partition, time_ms);
                latest_tick = latest_tick.max(config.time.tick_of(time_ms));
            }
        }
        if let Some(answer) = ends.take() {
            match answer {
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
                Err(error) => warnings.warn(&format!("{:#}", anyhow::Error::new(error))),
            }
        }
        if let Some(watermark) = watermarks.watermark() {
            pipeline.advance_to(watermark.saturating_sub(lateness_ms));
        }
        let read = source.offsets();
        if let Some(checkpoints) = &mut checkpoints {
            // Offsets are committed once a checkpoint holds them.
            checkpoints.ask_if_due();
            checkpoints.write_asked(&mut pipeline, &mut dead, &read, &watermarks, latest_tick)?;
            for manifest in checkpoints.complete()? {
                let until = end_of_period(manifest.latest_tick, period);
                read_so_far.push(until, manifest.offsets());
            }
        } else if last_sent.as_ref() != Some(&read) {
            // Rejected records are durable before their offsets are told.
            dead.flush()?;
            offsets_input.send((end_of_period(latest_tick, period), read.clone()));
            // A new epoch pushes the snapshot on to worker 0: flush() alone
            // leaves it in the exchange's buffer until that fills.
            offsets_input.advance_to(offsets_input.time() + 1);
            last_sent = Some(read);
        }
        pipeline.catch_up(worker, Some(Duration::from_millis(50)));
        let local = index % shared.plan.timely.workers.max(1);
        shared.metrics.publish(
            local,
            &pipeline.counts,
            pipeline.duplicates(),
            pipeline.arranged_records(),
        );
        if polled == 0 {
            worker.step_or_park(Some(Duration::from_millis(10)));
        }
        if let Some(done) = pipeline.drain()? {
            let ready = read_so_far.take_ready(|time| time < done);
            if !ready.is_empty() {
                let sinks = pipeline.sinks().expect("worker 0 has the sinks");
                sinks.flush().context("cannot write the outputs to Kafka")?;
                if let Err(error) = source.commit(&ready) {
                    warnings.warn(&format!("{:#}", anyhow::Error::new(error)));
                    // Committed with a later snapshot, or at the end.
                    read_so_far.push(0, ready);
                } else if earlier.as_mut().is_some_and(|e| e.passed(&ready)) {
                    reconcile(sinks)?;
                }
            }
        }
    }

    // Stopped: finish what was read, write every output, commit, summarize.
    dead.flush()?;
    match &mut checkpoints {
        Some(checkpoints) => {
            let read = source.offsets();
            let last = checkpoints.finish(
                worker,
                &mut pipeline,
                &mut dead,
                &read,
                &watermarks,
                latest_tick,
            )?;
            for manifest in last {
                read_so_far.push(u64::MAX, manifest.offsets());
            }
        }
        None => offsets_input.send((u64::MAX, source.offsets())),
    }
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
    let all = read_so_far.take_ready(|_| true);
    commit_with_retries(&source, &all)?;
    if earlier.as_mut().is_some_and(|e| e.passed(&all)) {
        reconcile(&mut finished.sinks)?;
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

/// [`group_committed`], on a thread of its own.
fn read_committed(
    source: &KafkaSourceConfig,
) -> anyhow::Result<JoinHandle<Result<Offsets, KafkaSourceError>>> {
    let source = source.clone();
    std::thread::Builder::new()
        .name("persona:committed".to_string())
        .spawn(move || group_committed(&source))
        .context("cannot start the thread that reads the committed offsets")
}

/// Writes the dead letters of a checkpoint that this process wrote back
/// into its files: `rejected.jsonl` and `late.jsonl` hold every one once.
pub(crate) fn restore_letters(
    files: &DeadLetterFiles,
    (store, manifest): (&Store, &Manifest),
    timely: &TimelyArgs,
) -> anyhow::Result<()> {
    let processes = timely.processes.max(1);
    for file in &manifest.letters {
        if file.process % processes == timely.process {
            for letter in store.read_letters(file)? {
                files.restore(&letter)?;
            }
        }
    }
    Ok(())
}

/// Applies worker `index`'s share of a checkpoint's records in time order,
/// [`CHUNK`] at a time: the frontier follows the records up to `cap` and
/// the dataflow catches up after each chunk, as in a replay, so the state
/// and the pending outputs stay bounded rather than every time of the
/// history being in flight at once. Every worker reads every file and
/// takes every `peers`-th record, so all advance through the same times.
/// Worker 0 takes the checkpoint's counts.
pub(crate) fn restore(
    worker: &mut Worker,
    pipeline: &mut PipelineWorker,
    (store, manifest): (&Store, &Manifest),
    cap_ms: u64,
) -> anyhow::Result<()> {
    let (index, peers) = (worker.index(), worker.peers());
    let mut records = Vec::new();
    for file in &manifest.events {
        records.extend(store.read_events(file)?);
    }
    // Within a time the order is free: any worker count permutes it.
    records.sort_unstable_by_key(|record| record.time);
    let mut records = records.into_iter().enumerate().peekable();
    while records.peek().is_some() {
        let chunk: Vec<_> = records.by_ref().take(CHUNK as usize).collect();
        // Every worker advances to the same time, whatever its share.
        let last = chunk.last().map_or(0, |(_, record)| record.time);
        pipeline.restore(
            chunk
                .into_iter()
                .filter(|(n, _)| n % peers == index)
                .map(|(_, record)| record)
                .collect(),
        );
        pipeline.advance_to(last.min(cap_ms));
        pipeline.catch_up(worker, None);
        pipeline.drain()?;
    }
    if index == 0 {
        pipeline.counts = manifest.counts.clone();
        // Measured afresh by this run; counted by the dataflow as it rebuilds.
        pipeline.counts.peak_rss_bytes = 0;
        pipeline.counts.duplicates = 0;
    }
    Ok(())
}

/// Opens the upsert topic of each output that has one (creating it if
/// missing) and reads the keys it holds: before the dataflow is built.
fn upsert_topics(config: &PipelineConfig) -> anyhow::Result<UpsertTopics> {
    let mut topics = UpsertTopics::new();
    let Some(kafka) = &config.sink.kafka else {
        return Ok(topics);
    };
    for output in Output::ALL {
        if let Some(topic) = kafka.topic_of(output) {
            let sink = KafkaSink::new(&topic)?;
            let existing = upsert_keys(&topic)
                .with_context(|| format!("cannot read the keys of upsert topic {}", topic.topic))?;
            topics.insert(output, UpsertTopic { sink, existing });
        }
    }
    Ok(topics)
}

/// Tombstones the keys an earlier run left in the upsert topics that the
/// rebuilt state does not have, and waits for them.
fn reconcile(sinks: &mut crate::runtime::pipeline::Sinks) -> anyhow::Result<()> {
    if sinks.reconcile()? > 0 {
        sinks.flush().context("cannot write the outputs to Kafka")?;
    }
    Ok(())
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
            // Settings the client refuses stay refused: no retry fixes them.
            Err(
                error @ (rdkafka::error::KafkaError::ClientConfig(..)
                | rdkafka::error::KafkaError::ClientCreation(_)),
            ) => anyhow::bail!(
                "cannot create a Kafka client for {} with [source.kafka]: {error}",
                source.brokers
            ),
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
                tracing::warn!("{:#}; retrying", anyhow::Error::new(error));
                attempt += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
        }
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
            tracing::warn!("{message}");
            self.last = Some(Instant::now());
        }
    }
}
