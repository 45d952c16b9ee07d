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
//! ```

pub mod driver;
pub mod hashmap;
pub mod plot;
pub mod recompute;
pub mod synthetic;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use persona_dataflows::time::DAY_MS;
use persona_dataflows::Event;
use serde::Serialize;

use crate::config::{PipelineConfig, TimeConfig};
use crate::runtime::load::load;
use crate::runtime::TimelyArgs;
use crate::summary::peak_rss_bytes;
use driver::{Graph, OperatorTime, Pace, RunOutcome, Workload};
use hashmap::HashMapProfiles;
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
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(latencies: &[Duration]) -> anyhow::Result<Percentiles> {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 24 * 3_600_000_000, 3)
            .context("latency histogram")?;
        for latency in latencies {
            histogram.saturating_record((latency.as_micros() as u64).max(1));
        }
        let ms = |micros: u64| micros as f64 / 1e3;
        Ok(Percentiles {
            p50: ms(histogram.value_at_quantile(0.5)),
            p90: ms(histogram.value_at_quantile(0.9)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        })
    }
}

/// One open-loop run.
#[derive(Clone, Debug, Serialize)]
pub struct OpenLoopRun {
    pub offered_events_per_s: f64,
    /// Whether the last batch finished within the slack of the end of the offer.
    pub kept_up: bool,
    pub latency_ms: Percentiles,
}

#[derive(Clone, Debug, Serialize)]
pub struct RecomputeBaseline {
    pub events: usize,
    pub batches: usize,
    /// Mean time of one from-scratch recompute after a batch.
    pub ms_per_batch: f64,
    /// Mean closed-loop batch latency of persona on the same prefix.
    pub persona_ms_per_batch: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct HashMapBaseline {
    pub events: usize,
    pub events_per_s: f64,
    /// Closed-loop throughput of persona's profile dataflow on the same input.
    pub persona_profiles_events_per_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Baselines {
    pub recompute: Option<RecomputeBaseline>,
    pub hashmap: Option<HashMapBaseline>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Ratios {
    /// Recompute time per batch ÷ persona's batch latency (closed loop, same prefix): the speed-up of incremental.
    pub recompute_vs_persona: Option<f64>,
    /// Hash-map events/s ÷ persona profiles events/s (closed loop): how much faster the single-threaded hand-written code is.
    pub hashmap_vs_persona_profiles: Option<f64>,
}

/// Cost per event at one log size.
#[derive(Clone, Debug, Serialize)]
pub struct ScalingPoint {
    pub events: usize,
    pub persona_us_per_event: f64,
    pub hashmap_us_per_event: f64,
    pub arranged_records: i64,
}

/// What `persona bench` prints.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub input: String,
    pub pipeline: Graph,
    pub workers: usize,
    pub events: usize,
    pub batches: usize,
    /// Sustained throughput (open loop), or the closed-loop throughput with --closed-loop.
    pub events_per_s: f64,
    pub closed_loop_events_per_s: f64,
    /// Per-batch latency at `latency_offered_events_per_s` (closed loop when null).
    pub latency_ms: Percentiles,
    pub latency_offered_events_per_s: Option<f64>,
    pub open_loop: Vec<OpenLoopRun>,
    pub peak_rss_bytes: u64,
    pub arranged_records: i64,
    pub baselines: Baselines,
    pub ratios: Ratios,
    pub operators: Vec<OperatorTime>,
    pub scaling: Vec<ScalingPoint>,
    pub elapsed_s: f64,
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
    let workload = Arc::new(Workload::new(updates, args.batch_size, config));
    let events = workload.events();
    let workers = timely.workers;
    let run = |workload: &Arc<Workload>, graph: Graph, pace: Pace, operators: bool| {
        driver::run(workload, graph, pace, timely.config()?, workers, operators)
    };

    eprintln!(
        "bench: {events} events in {} batches, closed loop",
        workload.batches.len()
    );
    let closed = run(&workload, args.pipeline, Pace::ClosedLoop, args.operators)?;
    let saturation = closed.events_per_s(events);
    let peak_rss = peak_rss_bytes();

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
        let half = offer(saturation / 2.0)?;
        let (mut low, mut high) = if half.kept_up {
            (saturation / 2.0, saturation * 2.0)
        } else {
            (0.0, saturation / 2.0)
        };
        for _ in 1..args.search_steps {
            let rate = if low > 0.0 {
                (low * high).sqrt()
            } else {
                high / 2.0
            };
            if offer(rate)?.kept_up {
                low = rate;
            } else {
                high = rate;
            }
        }
        (low, half.latency_ms, Some(saturation / 2.0))
    };

    let mut baselines = Baselines {
        recompute: None,
        hashmap: None,
    };
    if !args.no_baselines {
        eprintln!("bench: hash-map baseline");
        let hashmap_time = run_hashmap(&workload);
        let persona_profiles = if args.pipeline == Graph::Profiles {
            saturation
        } else {
            run(&workload, Graph::Profiles, Pace::ClosedLoop, false)?.events_per_s(events)
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
            ),
            BenchInput::Log { .. } => {
                anyhow::ensure!(
                    size <= events,
                    "--scaling {size} is more than the {events} events loaded (raise --events)"
                );
                let mut prefix: Vec<(Event, isize)> = workload.updates[..size].to_vec();
                prefix.shrink_to_fit();
                Workload::new(prefix, args.batch_size, workload.config.clone())
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
        latency_ms,
        latency_offered_events_per_s: latency_rate,
        open_loop,
        peak_rss_bytes: peak_rss,
        arranged_records: closed.arranged_records,
        baselines,
        ratios,
        operators: closed.operators.into_iter().take(15).collect(),
        scaling,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    if let Some(dir) = &args.plots {
        write_plots(dir, &report)?;
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

fn write_plots(dir: &std::path::Path, report: &BenchReport) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut runs = report.open_loop.clone();
    runs.sort_by(|a, b| a.offered_events_per_s.total_cmp(&b.offered_events_per_s));
    if !runs.is_empty() {
        type Pick = fn(&Percentiles) -> f64;
        let lines: [(&str, Pick); 4] = [
            ("p50", |p| p.p50),
            ("p90", |p| p.p90),
            ("p99", |p| p.p99),
            ("max", |p| p.max),
        ];
        let series: Vec<plot::Series> = lines
            .iter()
            .map(|(label, pick)| plot::Series {
                label: label.to_string(),
                points: runs
                    .iter()
                    .map(|run| (run.offered_events_per_s, pick(&run.latency_ms)))
                    .collect(),
            })
            .collect();
        plot::line_chart(
            &dir.join("latency_vs_rate.svg"),
            &format!(
                "Batch latency, {} pipeline, {} ({} w)",
                pipeline_name(report.pipeline),
                report.input.rsplit('/').next().unwrap_or(&report.input),
                report.workers
            ),
            "offered events/s",
            "latency (ms)",
            &series,
        )?;
    }
    if !report.scaling.is_empty() {
        let series = vec![
            plot::Series {
                label: format!("persona {}", pipeline_name(report.pipeline)),
                points: report
                    .scaling
                    .iter()
                    .map(|p| (p.events as f64, p.persona_us_per_event))
                    .collect(),
            },
            plot::Series {
                label: "hash map (profiles)".into(),
                points: report
                    .scaling
                    .iter()
                    .map(|p| (p.events as f64, p.hashmap_us_per_event))
                    .collect(),
            },
        ];
        plot::line_chart(
            &dir.join("cost_vs_size.svg"),
            &format!("Cost per event against log size ({} w)", report.workers),
            "events in the log",
            "µs per event (closed loop)",
            &series,
        )?;
    }
    Ok(())
}

fn pipeline_name(graph: Graph) -> &'static str {
    match graph {
        Graph::Profiles => "profiles",
        Graph::Full => "full",
    }
}

/// The report as a table for humans.
pub fn table(report: &BenchReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let p = &report.latency_ms;
    let _ = writeln!(
        out,
        "{} events in {} batches, {} pipeline, {} worker(s), {}",
        report.events,
        report.batches,
        pipeline_name(report.pipeline),
        report.workers,
        report.input
    );
    let _ = writeln!(
        out,
        "throughput      sustained {:.0} events/s, closed loop {:.0} events/s",
        report.events_per_s, report.closed_loop_events_per_s
    );
    let at = report
        .latency_offered_events_per_s
        .map_or("closed loop".to_owned(), |rate| {
            format!("offered {rate:.0} events/s")
        });
    let _ = writeln!(
        out,
        "latency (ms)    p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  ({at})",
        p.p50, p.p90, p.p99, p.p999, p.max
    );
    for run in &report.open_loop {
        let l = &run.latency_ms;
        let _ = writeln!(
            out,
            "  open loop {:>10.0} events/s  p50 {:.1}  p99 {:.1}  max {:.1}  {}",
            run.offered_events_per_s,
            l.p50,
            l.p99,
            l.max,
            if run.kept_up {
                "kept up"
            } else {
                "fell behind"
            }
        );
    }
    let _ = writeln!(
        out,
        "memory          peak RSS {:.0} MB, {} records in arrangements",
        report.peak_rss_bytes as f64 / 1e6,
        report.arranged_records
    );
    if let Some(r) = &report.baselines.recompute {
        let _ = writeln!(
            out,
            "vs recompute    {:.1} ms per batch from scratch vs {:.2} ms incremental on {} events: {:.1}x",
            r.ms_per_batch,
            r.persona_ms_per_batch,
            r.events,
            report.ratios.recompute_vs_persona.unwrap_or(f64::NAN)
        );
    }
    if let Some(h) = &report.baselines.hashmap {
        let _ = writeln!(
            out,
            "vs hash map     {:.0} events/s single-threaded vs {:.0} events/s persona profiles: {:.2}x",
            h.events_per_s,
            h.persona_profiles_events_per_s,
            report.ratios.hashmap_vs_persona_profiles.unwrap_or(f64::NAN)
        );
    }
    for point in &report.scaling {
        let _ = writeln!(
            out,
            "size {:>9} events: persona {:.2} µs/event, hash map {:.2} µs/event",
            point.events, point.persona_us_per_event, point.hashmap_us_per_event
        );
    }
    if !report.operators.is_empty() {
        let _ = writeln!(out, "hottest operators (closed loop):");
        for operator in &report.operators {
            let _ = writeln!(
                out,
                "  {:>9.0} ms  {:>5.1} %  {}",
                operator.ms,
                operator.share * 100.0,
                operator.name
            );
        }
    }
    out
}
