//! `persona bench`: how fast the pipeline keeps up, and what it costs.
//!
//! A log (a preset or mapped file, or the [`synthetic`] generator) is sorted
//! by event time and cut into batches of whole ticks. The [`driver`] first
//! replays it closed loop (the next batch when the last is done), which
//! gives the saturation throughput, the records held in arrangements and,
//! with `--operators`, where the time goes. Then open loop: batches are
//! offered at a target rate whatever the output does, first at 50 % of
//! saturation (the latency percentiles reported), then at rates chosen by
//! bisection to find the sustained throughput: the highest rate at which the
//! run does not fall behind. Two baselines run in the same process on the
//! same input: the from-scratch [`recompute`] after each batch (on a prefix,
//! as its cost grows with the log) and the single-threaded [`hashmap`]
//! implementation of the profile features; persona is reported as ratios
//! to them. `--plots DIR` draws latency against offered rate and, with
//! `--scaling`, cost per event against log size.
//!
//! ```text
//! persona bench --input ../shared/data/online_retail_all.csv.xz --format online-retail
//! persona bench --synthetic 1000000 --pipeline profiles --closed-loop --json
//! persona bench --serve http://127.0.0.1:8080 --input LOG --format online-retail --event-template '{...}'
//! ```
//!
//! `--serve URL` load-tests a running `persona serve` instead ([`serve`]).

pub mod driver;
pub mod hashmap;
pub mod plot;
pub mod rate;
pub mod recompute;
pub mod report;
pub mod serve;
pub mod synthetic;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use persona_dataflows::time::DAY_MS;
use persona_dataflows::Event;

use crate::config::{PipelineConfig, TimeConfig};
use crate::runtime::load::load;
use crate::runtime::TimelyArgs;
use crate::summary::{peak_rss_bytes, reset_peak_rss, rss_bytes};
use driver::{Graph, Pace, RunOutcome, Workload};
use hashmap::HashMapProfiles;
pub use report::{table, BenchReport};
use report::{
    Baselines, HashMapBaseline, OpenLoopRun, PartCost, Percentiles, Ratios, RecomputeBaseline,
    ScalingPoint,
};
use synthetic::SyntheticSpec;

/// The flags of `persona bench` (beside the input and timely's flags).
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Instead of --input: a synthetic log of this many events (Zipf users
    /// and items, sessions, categories).
    #[arg(long, value_name = "EVENTS", conflicts_with_all = ["input", "format", "config"])]
    pub synthetic: Option<usize>,
    /// Seed of the synthetic log.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Users of the synthetic log (default: events / 20).
    #[arg(long)]
    pub users: Option<usize>,
    /// Items of the synthetic log (default: events / 100).
    #[arg(long)]
    pub items: Option<usize>,
    /// Run on the first N events of the log (0: all of it).
    #[arg(long, default_value_t = 50_000)]
    pub events: usize,
    /// Updates per batch, rounded up to whole ticks.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Which outputs to maintain.
    #[arg(long, value_enum, default_value = "full")]
    pub pipeline: Graph,
    /// Only the closed-loop run (maximum throughput), no rate search.
    #[arg(long)]
    pub closed_loop: bool,
    /// One open-loop run at this many events per second instead of the search.
    #[arg(long, conflicts_with = "closed_loop")]
    pub rate: Option<f64>,
    /// Open-loop runs of the sustained-throughput search.
    #[arg(long, default_value_t = 3)]
    pub search_steps: usize,
    /// Events of the prefix on which the recompute baseline runs (0: skip it).
    #[arg(long, default_value_t = 50_000)]
    pub recompute_events: usize,
    /// Skip both baselines.
    #[arg(long)]
    pub no_baselines: bool,
    /// With the full pipeline, rank every item and user at the end of each
    /// recommendation period, as `replay --changelog` writes them; without
    /// it, once at the end of the run, as `replay` does.
    #[arg(long)]
    pub changelog: bool,
    /// Closed-loop runs at these log sizes (comma-separated events), for cost per event against size.
    #[arg(long, value_delimiter = ',')]
    pub scaling: Vec<usize>,
    /// Write latency_vs_rate.svg (and cost_vs_size.svg with --scaling) into this folder.
    #[arg(long)]
    pub plots: Option<PathBuf>,
    /// Log timely's operator schedules in the closed-loop run and report the hottest operators.
    #[arg(long)]
    pub operators: bool,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Load-test a running `persona serve` at this URL (http://host:port),
    /// with the users and items of --input, instead of benchmarking the
    /// dataflow.
    #[arg(long, value_name = "URL", conflicts_with = "synthetic")]
    pub serve: Option<String>,
    /// With --serve: reads per second offered (80 % profiles, 20 %
    /// recommendations) while events are ingested.
    #[arg(long, default_value_t = 2000.0)]
    pub request_rate: f64,
    /// With --serve: seconds of the mixed phase.
    #[arg(long, default_value_t = 20.0)]
    pub duration_s: f64,
    /// With --serve: one event as POSTed, with `{user}`, `{item}`,
    /// `{now_ms}` and `{now:FORMAT}` (strftime, UTC) filled in; without it
    /// nothing is ingested.
    #[arg(long)]
    pub event_template: Option<String>,
}

/// The config of synthetic logs: default features, one recommendation
/// period per week of event time.
pub fn synthetic_config() -> PipelineConfig {
    PipelineConfig {
        time: TimeConfig {
            recommend_tick_ms: Some(7 * DAY_MS),
            ..TimeConfig::default()
        },
        ..PipelineConfig::default()
    }
}

/// The largest synthetic log and the most users or items it may have.
const MAX_SYNTHETIC_EVENTS: usize = 1_000_000_000;
const MAX_SYNTHETIC_KEYS: usize = 100_000_000;

/// Where the events come from.
pub enum BenchInput {
    /// A log file (or folder) read with this config.
    Log {
        config: Box<PipelineConfig>,
        path: PathBuf,
    },
    Synthetic(SyntheticSpec),
}

impl BenchArgs {
    /// The synthetic spec of `events` events, with the flags' seed, users and items.
    pub fn synthetic_spec(&self, events: usize) -> SyntheticSpec {
        let mut spec = SyntheticSpec::with_events(events, self.seed);
        if let Some(users) = self.users {
            spec.users = users;
        }
        if let Some(items) = self.items {
            spec.items = items;
        }
        spec
    }
}

/// Runs the bench. Progress goes to stderr.
pub fn bench(
    args: &BenchArgs,
    input: BenchInput,
    timely: &TimelyArgs,
) -> anyhow::Result<BenchReport> {
    let started = Instant::now();
    anyhow::ensure!(
        timely.processes == 1,
        "persona bench runs in one process: use -w for more workers, not -n {}",
        timely.processes
    );
    anyhow::ensure!(args.batch_size >= 1, "--batch-size must be at least 1");
    // A synthetic log is generated in memory: refuse sizes no machine
    // holds before allocating for them.
    for (flag, value, max) in [
        ("--users", args.users, MAX_SYNTHETIC_KEYS),
        ("--items", args.items, MAX_SYNTHETIC_KEYS),
        ("--synthetic", args.synthetic, MAX_SYNTHETIC_EVENTS),
    ]
    .into_iter()
    .chain(
        args.scaling
            .iter()
            .map(|&size| ("--scaling", Some(size), MAX_SYNTHETIC_EVENTS)),
    ) {
        if let Some(value) = value {
            anyhow::ensure!(
                (1..=max).contains(&value),
                "{flag} {value}: expected 1 to {max}"
            );
        }
    }
    anyhow::ensure!(
        args.rate.is_none_or(|rate| rate.is_finite() && rate > 0.0),
        "--rate must be a positive number of events per second"
    );
    let (name, config, mut updates) = match &input {
        BenchInput::Log { config, path } => {
            eprintln!("bench: loading {}", path.display());
            let log =
                load(path, config).with_context(|| format!("cannot load {}", path.display()))?;
            (
                path.display().to_string(),
                PipelineConfig::clone(config),
                log.updates,
            )
        }
        BenchInput::Synthetic(spec) => (
            format!("synthetic:{}", spec.events),
            synthetic_config(),
            synthetic::generate(spec),
        ),
    };
    if args.events > 0 {
        updates.truncate(args.events);
    }
    anyhow::ensure!(!updates.is_empty(), "input {name} holds no events");
    let workload = Arc::new(Workload::new(
        updates,
        args.batch_size,
        config,
        args.changelog,
    ));
    let events = workload.events();
    let workers = timely.workers;
    let run = |workload: &Arc<Workload>, graph: Graph, pace: Pace, operators: bool| {
        driver::run(workload, graph, pace, timely.config()?, workers, operators)
    };

    eprintln!(
        "bench: {events} events in {} batches, closed loop",
        workload.batches.len()
    );
    // Memory of the dataflow: the peak during the closed-loop run above
    // what the loaded log holds already, per distinct user.
    let users = workload
        .updates
        .iter()
        .map(|(event, _)| event.user)
        .collect::<std::collections::HashSet<_>>()
        .len();
    let measured_peak = reset_peak_rss();
    let rss_before = rss_bytes();
    let closed = run(&workload, args.pipeline, Pace::ClosedLoop, args.operators)?;
    let saturation = closed.events_per_s(events);
    let peak_rss = peak_rss_bytes();
    let bytes_per_user =
        measured_peak.then(|| peak_rss.saturating_sub(rss_before) as f64 / users.max(1) as f64);

    let mut open_loop: Vec<OpenLoopRun> = Vec::new();
    // A run keeps up when its last batch is done within the slowest
    // closed-loop batch (a recommendation period's recompute) plus a
    // quarter: a rate above capacity leaves a backlog that grows with the log.
    let slack = closed
        .latencies
        .iter()
        .max()
        .copied()
        .unwrap_or_default()
        .max(Duration::from_millis(50))
        .mul_f64(1.25);
    let mut offer = |rate: f64| -> anyhow::Result<OpenLoopRun> {
        eprintln!("bench: open loop at {rate:.0} events/s");
        let outcome = run(
            &workload,
            args.pipeline,
            Pace::OpenLoop { events_per_s: rate },
            false,
        )?;
        let kept_up = outcome.latencies.last().is_some_and(|last| *last <= slack);
        let result = OpenLoopRun {
            offered_events_per_s: rate,
            kept_up,
            latency_ms: Percentiles::of(&outcome.latencies)?,
        };
        open_loop.push(result.clone());
        Ok(result)
    };
    let (events_per_s, latency_ms, latency_rate) = if args.closed_loop {
        (saturation, Percentiles::of(&closed.latencies)?, None)
    } else if let Some(rate) = args.rate {
        let result = offer(rate)?;
        let sustained = if result.kept_up { rate } else { 0.0 };
        (sustained, result.latency_ms, Some(rate))
    } else {
        let search = rate::sustained(saturation, args.search_steps, &mut offer)?;
        (
            search.sustained,
            search.latency_ms,
            Some(search.latency_rate),
        )
    };

    // With `[risk]`: profiles with and without the risk features, nine
    // rounds of the whole log through both, interleaved a slice of batches
    // at a time (`driver::run_interleaved`): whole runs one after the
    // other moved by ±30 % a pair on a shared machine, more than the
    // difference measured. The cost is the ratio of the two times over all
    // rounds; each round's own ratio is kept too, to show how far one
    // figure can be trusted.
    let cost_of = |part: &str, strip: fn(&mut PipelineConfig)| -> anyhow::Result<PartCost> {
        eprintln!("bench: profiles with and without {part}, interleaved");
        let without = Arc::new(workload.without(strip));
        let (mut alone, mut with_part, mut pair_costs) = (0f64, 0f64, Vec::new());
        const ROUNDS: usize = 9;
        for _ in 0..ROUNDS {
            let [alone_now, with_now] = driver::run_interleaved(
                [&without, &workload],
                Graph::Profiles,
                timely.config()?,
                workers,
            )?;
            let (alone_now, with_now) = (alone_now.as_secs_f64(), with_now.as_secs_f64());
            (alone, with_part) = (alone + alone_now, with_part + with_now);
            pair_costs.push(with_now / alone_now.max(1e-9));
        }
        pair_costs.sort_by(f64::total_cmp);
        let events_per_s = |secs: f64| (ROUNDS * events) as f64 / secs.max(1e-9);
        Ok(PartCost {
            profiles_events_per_s: events_per_s(alone),
            with_events_per_s: events_per_s(with_part),
            cost: with_part / alone.max(1e-9),
            pair_costs,
        })
    };
    let risk_cost = match workload.config.risk.is_some() {
        true => Some(cost_of("[risk]", |config| config.risk = None)?),
        false => None,
    };
    // Learning cost: the k-means refits and assignments on top of profiles.
    let segments_cost = match workload.config.segments.kmeans.is_some() {
        true => Some(cost_of("[segments.kmeans]", |config| {
            config.segments.kmeans = None
        })?),
        false => None,
    };
    // Learning cost: the factorisation trained in the dataflow.
    let embeddings_cost = match workload.config.recommend.mf.embeddings {
        true => Some(cost_of("[recommend.mf] embeddings", |config| {
            config.recommend.mf.embeddings = false
        })?),
        false => None,
    };

    let mut baselines = Baselines {
        recompute: None,
        hashmap: None,
    };
    if !args.no_baselines {
        eprintln!("bench: hash-map baseline");
        let hashmap_time = run_hashmap(&workload);
        // The hash map keeps profiles without risk features or clusters.
        let plain = risk_cost.is_none() && segments_cost.is_none() && embeddings_cost.is_none();
        let persona_profiles = if args.pipeline == Graph::Profiles && plain {
            saturation
        } else {
            let profiles_only = Arc::new(workload.without(|config| {
                config.risk = None;
                config.segments.kmeans = None;
                config.recommend.mf.embeddings = false;
            }));
            run(&profiles_only, Graph::Profiles, Pace::ClosedLoop, false)?.events_per_s(events)
        };
        baselines.hashmap = Some(HashMapBaseline {
            events,
            events_per_s: events as f64 / hashmap_time.as_secs_f64().max(1e-9),
            persona_profiles_events_per_s: persona_profiles,
        });
        if args.recompute_events > 0 {
            let batches = workload
                .batches
                .iter()
                .position(|batch| batch.updates.end >= args.recompute_events)
                .map_or(workload.batches.len(), |index| index + 1);
            let prefix = Arc::new(workload.prefix(batches));
            eprintln!(
                "bench: recompute baseline on the first {} events",
                prefix.events()
            );
            let recompute_times = recompute::recompute(&prefix, args.pipeline);
            let persona_latencies = if batches == workload.batches.len() {
                closed.latencies.clone()
            } else {
                run(&prefix, args.pipeline, Pace::ClosedLoop, false)?.latencies
            };
            baselines.recompute = Some(RecomputeBaseline {
                events: prefix.events(),
                batches: prefix.batches.len(),
                ms_per_batch: mean_ms(&recompute_times),
                persona_ms_per_batch: mean_ms(&persona_latencies),
            });
        }
    }
    let ratios = Ratios {
        recompute_vs_persona: baselines
            .recompute
            .as_ref()
            .map(|r| r.ms_per_batch / r.persona_ms_per_batch.max(1e-9)),
        hashmap_vs_persona_profiles: baselines
            .hashmap
            .as_ref()
            .map(|h| h.events_per_s / h.persona_profiles_events_per_s.max(1e-9)),
    };

    let mut scaling = Vec::new();
    for &size in &args.scaling {
        let sized = match &input {
            BenchInput::Synthetic(_) => Workload::new(
                synthetic::generate(&args.synthetic_spec(size)),
                args.batch_size,
                synthetic_config(),
                args.changelog,
            ),
            BenchInput::Log { .. } => {
                anyhow::ensure!(
                    size <= events,
                    "--scaling {size} is more than the {events} events loaded (raise --events)"
                );
                let mut prefix: Vec<(Event, isize)> = workload.updates[..size].to_vec();
                prefix.shrink_to_fit();
                Workload::new(
                    prefix,
                    args.batch_size,
                    workload.config.clone(),
                    args.changelog,
                )
            }
        };
        let sized = Arc::new(sized);
        eprintln!("bench: scaling, {} events closed loop", sized.events());
        let outcome: RunOutcome = run(&sized, args.pipeline, Pace::ClosedLoop, false)?;
        let hashmap_time = run_hashmap(&sized);
        let per_event = |time: Duration| time.as_secs_f64() * 1e6 / sized.events() as f64;
        scaling.push(ScalingPoint {
            events: sized.events(),
            persona_us_per_event: per_event(outcome.elapsed),
            hashmap_us_per_event: per_event(hashmap_time),
            arranged_records: outcome.arranged_records,
        });
    }

    let report = BenchReport {
        input: name,
        pipeline: args.pipeline,
        workers,
        events,
        batches: workload.batches.len(),
        events_per_s,
        closed_loop_events_per_s: saturation,
        us_per_event: 1e6 / saturation.max(1e-9),
        users,
        bytes_per_user,
        latency_ms,
        latency_offered_events_per_s: latency_rate,
        open_loop,
        peak_rss_bytes: peak_rss,
        arranged_records: closed.arranged_records,
        baselines,
        ratios,
        risk_cost,
        segments_cost,
        embeddings_cost,
        operators: closed.operators.into_iter().take(15).collect(),
        scaling,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    if let Some(dir) = &args.plots {
        report::write_plots(dir, &report)?;
    }
    Ok(report)
}

/// The hash-map baseline over the whole workload, batch by batch.
fn run_hashmap(workload: &Workload) -> Duration {
    let started = Instant::now();
    let mut profiles = HashMapProfiles::new(&workload.config.profile);
    for batch in &workload.batches {
        for (event, diff) in &workload.updates[batch.updates.clone()] {
            profiles.apply(
                event,
                driver::timestamp(event, &workload.config.time),
                *diff,
            );
        }
        profiles.advance_to(batch.last_time);
    }
    std::hint::black_box(profiles.profiles().len());
    started.elapsed()
}

fn mean_ms(times: &[Duration]) -> f64 {
    if times.is_empty() {
        return 0.0;
    }
    times.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e3 / times.len() as f64
}
