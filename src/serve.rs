//! `persona serve`: the pipeline kept up to date and answering over HTTP.
//!
//! The workers read the log as `replay` does (each its share, one
//! watermark), complete it, and then take events POSTed to `/v1/events`. After the log, event time follows the wall
//! clock: the tick of wall time `w − [serve] lateness_ms` is the open one,
//! every earlier tick is complete, and an event of an earlier tick is
//! late.
//!
//! The dataflow is the serving graph ([`Graph::Serving`]): profiles, and
//! at every tick the exact state collaborative filtering ranks from. The
//! first worker of every process gathers their changes into its serving
//! index ([`index`]) as ticks complete, and takes the events POSTed to its
//! process; similar items and recommendations are ranked from the index
//! for the item or user asked about (`persona_dataflows::cf::on_demand`),
//! so an answer is exact at the time it states, any process answers for
//! any key, and ranking costs nothing while nobody asks. The decision and
//! its figures are in `docs/serve.md`.

mod auth;
mod http;
mod index;
mod kafka;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use timely::worker::Worker;

use crate::checkpoint::{Manifest, Settings, Store};
use crate::clean::Judge;
use crate::config::{wall_clock_ms, FormatKind, PipelineConfig};
use crate::format::Decoder;
use crate::kafka::Offsets;
use crate::metrics::{start_http, Metrics};
use crate::privacy::stats as private_stats;
use crate::privacy::Pseudonyms;
use crate::rejected::Position;
use crate::runtime::pipeline::Graph;
use crate::runtime::replay::read_log;
use crate::runtime::run::checkpoints::Checkpoints;
use crate::runtime::run::{restore, restore_letters, PartitionWatermarks};
use crate::runtime::worker::PipelineWorker;
use crate::runtime::{execute, TimelyArgs};
use crate::sink::dead_letters::{DeadLetterFiles, DeadLetters};
use crate::source::file::{input_files, SourceError};
use auth::Auth;
use http::{App, Arrivals, Ingest, Ingested};
use index::{IndexSink, SharedIndex};
use kafka::KafkaFeed;

pub use http::MAX_K;

/// Everything `persona serve` needs.
#[derive(Clone, Debug)]
pub struct ServePlan {
    pub config: PipelineConfig,
    /// The log read before serving, if any.
    pub input: Option<PathBuf>,
    /// Where rejected and late records are written, if anywhere (they are
    /// counted in `/metrics` either way).
    pub out: Option<PathBuf>,
    /// Overrides `[serve] listen`.
    pub listen: Option<String>,
    pub timely: TimelyArgs,
}

/// How long a live step may compute before new events are taken.
const STEP_BUDGET: Duration = Duration::from_millis(20);
/// POSTs waiting for the process's first worker: more wait in their handlers, so a server
/// that falls behind slows its clients down rather than queueing without
/// bound.
const INGEST_QUEUE: usize = 16;
/// POSTs applied between two steps of the dataflow.
const POSTS_PER_STEP: usize = 4;
/// How long an idle worker parks.
const IDLE: Duration = Duration::from_millis(1);

/// What the workers share with each other and the HTTP server.
struct Shared {
    config: PipelineConfig,
    input: Option<(PathBuf, Vec<PathBuf>)>,
    dead_letters: Option<DeadLetterFiles>,
    index: Arc<SharedIndex>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    /// Taken by the process's first worker.
    ingest: Mutex<Option<tokio::sync::mpsc::Receiver<Ingest>>>,
    /// POSTs arrived and not yet applied: the first worker holds their ticks open.
    arrivals: Arc<Arrivals>,
    /// This process and the number of processes: the share of the Kafka
    /// partitions it reads.
    process: (usize, usize),
    /// `[checkpoint]`, and the checkpoint this start restores.
    store: Option<Store>,
    restored: Option<Manifest>,
}

/// Serves until SIGINT or SIGTERM; prints `listening on http://ADDR` on
/// stdout once the port is bound.
pub fn serve(plan: ServePlan) -> anyhow::Result<()> {
    anyhow::ensure!(
        plan.config.recommend.indicator_action.is_none(),
        "persona serve ranks on demand, which does not rank the cross-occurrence \
         indicator: drop [recommend] indicator_action"
    );
    let config = plan.config.clone();
    Decoder::new(&config)?;
    let input = match &plan.input {
        None => None,
        Some(input) => {
            let files = input_files(input)?;
            for file in files.iter().filter(|f| f.as_os_str() != "-") {
                std::fs::metadata(file).map_err(|source| SourceError::Open {
                    path: file.clone(),
                    source,
                })?;
            }
            Some((input.clone(), files))
        }
    };
    let store = config
        .checkpoint
        .as_ref()
        .map(|checkpoint| Store::open(checkpoint, Settings::of(&config), plan.timely.process))
        .transpose()?;
    let restored = store.as_ref().map(Store::latest).transpose()?.flatten();
    if let Some(manifest) = &restored {
        eprintln!(
            "persona serve: restoring checkpoint {} ({} records before its offsets); \
             the log is not read again, the checkpoint holds it",
            manifest.seq, manifest.counts.records_read
        );
    }
    let dead_letters = plan
        .out
        .as_deref()
        .map(|dir| {
            let (process, processes) = (plan.timely.process, plan.timely.processes);
            DeadLetterFiles::create(dir, process, processes, config.output.raw_file_mode)
        })
        .transpose()?;
    if let (Some(files), Some(store), Some(manifest)) = (&dead_letters, &store, &restored) {
        restore_letters(files, (store, manifest), &plan.timely)?;
    }
    let listen = listen_address(
        plan.listen.as_ref().unwrap_or(&config.serve.listen),
        plan.timely.process,
    )?;
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen} ([serve] listen, --listen)"))?;
    let address = listener.local_addr()?;

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())
            .context("cannot handle SIGTERM/SIGINT")?;
    }
    let tls = config.serve.tls.clone();
    let header_timeout = Duration::from_millis(config.serve.header_timeout_ms);
    let (ingest, ingested) = tokio::sync::mpsc::channel(INGEST_QUEUE);
    let shared = Arc::new(Shared {
        config: config.clone(),
        input,
        dead_letters: dead_letters.clone(),
        index: SharedIndex::new(),
        metrics: Arc::new(Metrics::new(plan.timely.workers.max(1))),
        stop: stop.clone(),
        ingest: Mutex::new(Some(ingested)),
        arrivals: Arc::default(),
        process: (plan.timely.process, plan.timely.processes),
        store,
        restored,
    });
    let app = Arc::new(App {
        index: shared.index.clone(),
        decoder: Mutex::new(Decoder::new(&events_config(&config))?),
        pseudonyms: Pseudonyms::from_config(&config.privacy)?,
        auth: match &config.serve.auth {
            Some(auth) => Some(Arc::new(Auth::new(auth)?)),
            None => None,
        },
        config,
        metrics: shared.metrics.clone(),
        ingest,
        requests: AtomicU64::new(0),
        arrivals: shared.arrivals.clone(),
        stop: stop.clone(),
    });
    let server = start_http(
        listener,
        http::router(app),
        stop.clone(),
        tls.as_ref(),
        header_timeout,
    )?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("persona serve: listening on {scheme}://{address}");

    let timely_config = plan.timely.config()?;
    let connecting = plan.timely.connecting()?;
    let workers = shared.clone();
    let workers_per_process = plan.timely.workers.max(1);
    let outcome = execute(timely_config, connecting, move |worker| {
        serve_worker(worker, &workers, workers_per_process).map(|()| None)
    });
    stop.store(true, Ordering::Release);
    let served = server
        .join()
        .map_err(|_| anyhow::anyhow!("the HTTP server panicked"))?;
    outcome?;
    served?;
    if let Some(dead_letters) = dead_letters {
        dead_letters.flush()?;
    }
    Ok(())
}

/// Reads `input` whole into the index `persona serve` would answer from
/// once the log is read, then releases `request` from it
/// (`persona export-stats`): on one process, so the ledger is charged once.
pub fn export_stats(
    config: PipelineConfig,
    input: &std::path::Path,
    request: &private_stats::Request,
    timely: TimelyArgs,
) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        timely.processes <= 1,
        "persona export-stats runs on one process (-w sets its workers)"
    );
    let stats = config.privacy.stats.clone().context(
        "persona export-stats needs a [privacy.stats] table in the config: the ledger \
         and the budget every release is charged to",
    )?;
    private_stats::check_budget(&stats, request)?;
    Decoder::new(&config)?;
    let files = input_files(input)?;
    let index = SharedIndex::new();
    let shared = (config.clone(), input.to_path_buf(), files, index.clone());
    let shared = Arc::new(shared);
    let workers = timely.workers.max(1);
    execute(timely.config()?, timely.connecting()?, move |worker| {
        let (config, input, files, index) = &*shared;
        let metrics = Arc::new(Metrics::new(workers));
        let mut pipeline = serving_pipeline(worker, config, workers, index, &metrics)?;
        let mut dead = DeadLetters::new(None, None)?;
        read_log(
            worker,
            &mut pipeline,
            config,
            (input, files),
            &mut dead,
            Arc::default(),
            |_| {},
        )?;
        pipeline.end_input(worker)?;
        Ok(None)
    })?;
    let index = index.read();
    let contributions = index.contributions(&stats.attribute);
    Ok(private_stats::release(
        &stats,
        request,
        &contributions,
        "cli",
        index.as_of(),
    )?)
}

/// Where process `process` listens: `listen`, with the port moved up by
/// the process index so the processes of one host do not collide (port 0
/// stays 0: each picks a free port).
fn listen_address(listen: &str, process: usize) -> anyhow::Result<SocketAddr> {
    let mut address: SocketAddr = listen
        .parse()
        .with_context(|| format!("[serve] listen {listen:?} is not an IP address and port"))?;
    if address.port() != 0 {
        let port = u16::try_from(usize::from(address.port()) + process).with_context(|| {
            format!(
                "no port {} + {process} for process {process}",
                address.port()
            )
        })?;
        address.set_port(port);
    }
    Ok(address)
}

/// The config POSTed events are checked with: the `[input]` mapping, read
/// from JSON objects.
fn events_config(config: &PipelineConfig) -> PipelineConfig {
    let mut config = config.clone();
    config.input.format = FormatKind::Jsonl;
    config
}

/// A worker of the serving graph, whose outputs go to `index`.
fn serving_pipeline(
    worker: &mut Worker,
    config: &PipelineConfig,
    workers_per_process: usize,
    index: &Arc<SharedIndex>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<PipelineWorker> {
    let graph = Graph::Serving {
        workers_per_process,
    };
    PipelineWorker::new(worker, config, graph, |gathered| {
        let (index, metrics) = (index.clone(), metrics.clone());
        let tick_ms = config.time.tick_ms;
        Ok(gathered
            .into_serving(|served| Box::new(IndexSink::new(served, index, metrics, tick_ms))))
    })
}

/// One worker: reads its share of the log; the first worker of each
/// process then applies that process's POSTed events.
fn serve_worker(
    worker: &mut Worker,
    shared: &Shared,
    workers_per_process: usize,
) -> anyhow::Result<()> {
    let index = worker.index();
    let local = index % workers_per_process;
    let config = &shared.config;
    let mut pipeline = serving_pipeline(
        worker,
        config,
        workers_per_process,
        &shared.index,
        &shared.metrics,
    )?;
    let mut dead = DeadLetters::new(shared.dead_letters.clone(), None)?;
    if shared.store.is_some() {
        // Everything applied from the start on, the log's records too:
        // a restart restores them instead of reading the log.
        pipeline.record();
        dead.capture();
    }
    let publish = |pipeline: &PipelineWorker| {
        shared.metrics.publish(
            local,
            &pipeline.counts,
            pipeline.duplicates(),
            pipeline.arranged_records(),
        )
    };
    match (&shared.store, &shared.restored, &shared.input) {
        (Some(store), Some(manifest), _) => {
            // Every tick of the checkpoint's records was closed when it
            // was taken: nothing caps the frontier.
            restore(worker, &mut pipeline, (store, manifest), u64::MAX)?;
            publish(&pipeline);
        }
        (_, _, Some((input, files))) => read_log(
            worker,
            &mut pipeline,
            config,
            (input, files),
            &mut dead,
            Arc::default(),
            publish,
        )?,
        _ => {}
    }
    // The first worker of each process reads its share of the topics: the
    // backlog first, in event time, as `persona run` reads it.
    let mut feed = match local {
        0 => KafkaFeed::open(
            config,
            shared.process.0,
            shared.process.1,
            shared.restored.as_ref(),
        )?,
        _ => None,
    };
    if let Some(feed) = &mut feed {
        let lateness_ms = config.time.allowed_lateness_s.saturating_mul(1000);
        while !feed.backlog_read() && !shared.stop.load(Ordering::Acquire) {
            let polled = feed.read(&mut pipeline, None, &mut dead)?;
            if let Some(watermark) = feed.watermark() {
                pipeline.advance_to(watermark.saturating_sub(lateness_ms));
            }
            pipeline.catch_up(worker, Some(STEP_BUDGET));
            pipeline.drain()?;
            publish(&pipeline);
            if polled == 0 {
                worker.step_or_park(Some(IDLE));
            }
        }
    }
    let end = pipeline.end_input(worker)?;
    publish(&pipeline);
    dead.flush()?;
    if config.serve.reads_first {
        yield_to_reads(true);
    }
    // Built by every worker at the same point, once the log is in.
    let mut checkpoints = shared
        .store
        .as_ref()
        .map(|store| {
            let interval = config.checkpoint.as_ref().map_or(60.0, |c| c.interval_s);
            Checkpoints::new(
                worker,
                store.clone(),
                Duration::from_secs_f64(interval),
                shared.process.0,
                shared.restored.clone(),
                pipeline.forgotten(),
            )
        })
        .transpose()?;
    // The watermarks of a worker without topics.
    let nothing = PartitionWatermarks::new(&[]);
    if local != 0 {
        // The first worker of a process takes its live events: the others
        // hold nothing back, and write what they applied when asked.
        pipeline.advance_to(u64::MAX);
        while !shared.stop.load(Ordering::Acquire) {
            worker.step_or_park(Some(IDLE));
            publish(&pipeline);
            checkpoint(&mut checkpoints, &mut pipeline, &mut dead, (None, &nothing))?;
        }
        if config.serve.reads_first {
            yield_to_reads(false);
        }
        let place = (None, &nothing);
        return last_checkpoint(checkpoints, worker, &mut pipeline, &mut dead, place);
    }
    // Nothing before the end of the log can change any more.
    if let Some(end) = end {
        pipeline.advance_to(end.saturating_add(config.time.tick_ms));
    }
    shared.metrics.ready.store(true, Ordering::Release);
    let events = Decoder::new(&events_config(config))?;
    let ingest = shared
        .ingest
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .context("the first worker takes the POSTed events once")?;
    let mut ingest = ingest;
    let lateness_ms = config.serve.lateness_ms;
    while !shared.stop.load(Ordering::Acquire) {
        let mut busy = false;
        // New events only once the dataflow has done the last ones: a
        // server that falls behind holds POSTs back (see INGEST_QUEUE).
        let takes = if pipeline.caught_up() {
            POSTS_PER_STEP
        } else {
            0
        };
        for _ in 0..takes {
            let Ok(batch) = ingest.try_recv() else {
                break;
            };
            busy = true;
            let ingested = apply(&mut pipeline, &events, &batch, lateness_ms, &mut dead)?;
            // The client may have gone; its events are in either way.
            let _ = batch.reply.send(ingested);
        }
        if let (Some(feed), true) = (&mut feed, pipeline.caught_up()) {
            // Judged as a POST arriving now is; only once the dataflow has
            // done the last ones, as POSTs are taken.
            let closed = pipeline.tick_of(wall_clock_ms().saturating_sub(lateness_ms));
            busy |= feed.read(&mut pipeline, Some(closed), &mut dead)? > 0;
        }
        let before = pipeline.frontier();
        // Up to what the clock has closed, short of a POST still waiting.
        let now = wall_clock_ms().min(shared.arrivals.earliest().unwrap_or(u64::MAX));
        pipeline.advance_to(now.saturating_sub(lateness_ms));
        let closed = pipeline.frontier() > before;
        let started = Instant::now();
        pipeline.catch_up(worker, Some(STEP_BUDGET));
        if let Some(done) = pipeline.drain()? {
            if closed && done >= pipeline.frontier() {
                shared.metrics.record_tick(started.elapsed());
            }
        }
        publish(&pipeline);
        checkpoint(
            &mut checkpoints,
            &mut pipeline,
            &mut dead,
            (feed.as_ref(), &nothing),
        )?;
        if !busy && !closed {
            dead.flush()?;
            worker.step_or_park(Some(IDLE));
        }
    }
    if config.serve.reads_first {
        yield_to_reads(false);
    }
    let place = (feed.as_ref(), &nothing);
    last_checkpoint(checkpoints, worker, &mut pipeline, &mut dead, place)
}

/// Where a worker's topics stand: its feed, or `nothing` (no partitions)
/// for a worker without one.
type Place<'a> = (Option<&'a KafkaFeed>, &'a PartitionWatermarks);

fn offsets_and_watermarks<'a>((feed, nothing): Place<'a>) -> (Offsets, &'a PartitionWatermarks) {
    match feed {
        Some(feed) => (feed.offsets(), feed.watermarks()),
        None => (Offsets::new(), nothing),
    }
}

/// Writes this worker's part of the checkpoints asked for since the last
/// call; worker 0 also asks for one when it is due and completes them.
fn checkpoint(
    checkpoints: &mut Option<Checkpoints>,
    pipeline: &mut PipelineWorker,
    dead: &mut DeadLetters,
    place: Place,
) -> anyhow::Result<()> {
    if let Some(checkpoints) = checkpoints {
        let (offsets, watermarks) = offsets_and_watermarks(place);
        let tick = pipeline.frontier();
        checkpoints.ask_if_due();
        checkpoints.write_asked(pipeline, dead, &offsets, watermarks, tick)?;
        checkpoints.complete()?;
    }
    Ok(())
}

/// The last checkpoint, of everything applied, on the way out: every
/// worker takes part.
fn last_checkpoint(
    checkpoints: Option<Checkpoints>,
    worker: &mut Worker,
    pipeline: &mut PipelineWorker,
    dead: &mut DeadLetters,
    place: Place,
) -> anyhow::Result<()> {
    if let Some(mut checkpoints) = checkpoints {
        let (offsets, watermarks) = offsets_and_watermarks(place);
        let tick = pipeline.frontier();
        checkpoints.finish(worker, pipeline, dead, &offsets, watermarks, tick)?;
    }
    Ok(())
}

/// Puts the calling worker thread under `SCHED_IDLE` (`[serve]
/// reads_first`), or back under `SCHED_OTHER` at nice 0 (`yield_ = false`).
/// Yielding, it runs only when no thread answering a read wants the core,
/// and a read never waits for the end of a worker's time slice (a few ms
/// under Linux's EEVDF scheduler, which a lower nice value does not
/// shorten). Measured in BENCHMARKS.md, "Issue 13". Once the server stops
/// no read is left to yield to, and on a busy machine the last checkpoint
/// would wait for idle cores (past an orchestrator's grace period): Linux
/// allows the way back to a process with `CAP_SYS_NICE` or a nice limit
/// (`RLIMIT_NICE`) of 20; elsewhere the worker stays idle.
fn yield_to_reads(yield_: bool) {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
        ThreadPriority, ThreadPriorityOsValue, ThreadSchedulePolicy,
    };
    let policy = match yield_ {
        true => NormalThreadSchedulePolicy::Idle,
        false => NormalThreadSchedulePolicy::Other,
    };
    // Nice 0, as the thread had before (the only value `SCHED_IDLE` takes).
    let nice_0 = ThreadPriority::Os(ThreadPriorityOsValue::default());
    let policy = ThreadSchedulePolicy::Normal(policy);
    if let Err(error) = set_thread_priority_and_policy(thread_native_id(), nice_0, policy) {
        match yield_ {
            true => tracing::warn!("cannot put a dataflow worker under SCHED_IDLE: {error:?}"),
            false => tracing::debug!("a stopping worker stays under SCHED_IDLE: {error:?}"),
        }
    }
}

/// Applies the events of one POST at their ticks; says which were not
/// applied (late, in the future) and when the others become visible. An
/// event is late if its tick had closed when the POST arrived: the clock
/// at the arrival, less `lateness_ms`, was past its tick.
fn apply(
    pipeline: &mut PipelineWorker,
    decoder: &Decoder,
    batch: &Ingest,
    lateness_ms: u64,
    dead: &mut DeadLetters,
) -> anyhow::Result<Ingested> {
    // (Never before the input's frontier, should the wall clock step back.)
    let closed = pipeline
        .tick_of(batch.arrival.at_ms.saturating_sub(lateness_ms))
        .max(pipeline.frontier());
    let mut ingested = Ingested::default();
    for &user in &batch.forget {
        pipeline.forget(user);
        ingested.visible_at = ingested.visible_at.max(Some(pipeline.frontier()));
    }
    for (index, line) in batch.lines.iter().enumerate() {
        let position = Position::Http {
            request: batch.request,
            index,
        };
        let judge = Judge::Frontier(closed);
        match pipeline.read(decoder, line, &position, Some(judge), dead)? {
            Some(time_ms) => {
                ingested.accepted += 1;
                let tick = pipeline.tick_of(time_ms);
                ingested.visible_at = ingested.visible_at.max(Some(tick));
            }
            None => {
                let reason = pipeline.last_dropped().unwrap_or("rejected");
                ingested.dropped.push((index, reason));
            }
        }
    }
    pipeline.advance_to(pipeline.frontier());
    Ok(ingested)
}

/// The address `persona serve` printed, parsed from its line.
pub fn parse_listening(line: &str) -> Option<SocketAddr> {
    let line = line.strip_prefix("persona serve: listening on ")?;
    line.strip_prefix("http://")
        .or_else(|| line.strip_prefix("https://"))?
        .trim()
        .parse()
        .ok()
}
