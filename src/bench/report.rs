//! What `persona bench` reports: the figures, their table for people, and
//! their plots.

use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::driver::{Graph, OperatorTime};
use super::plot;

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
    pub fn of(latencies: &[Duration]) -> anyhow::Result<Percentiles> {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 24 * 3_600_000_000, 3)
            .context("latency histogram")?;
        for latency in latencies {
            histogram.saturating_record((latency.as_micros() as u64).max(1));
        }
        Ok(Percentiles::from_micros(&histogram))
    }

    /// The percentiles of a histogram of microseconds.
    pub fn from_micros(histogram: &Histogram<u64>) -> Percentiles {
        let ms = |micros: u64| micros as f64 / 1e3;
        Percentiles {
            p50: ms(histogram.value_at_quantile(0.5)),
            p90: ms(histogram.value_at_quantile(0.9)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
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

/// With `[risk]`, `[segments.kmeans]` or `[recommend.mf] embeddings`: the
/// profile dataflow's closed-loop throughput as configured and without that
/// part (the others stay), same workload, same run: nine rounds of the log
/// through both, interleaved a slice of batches at a time, totalled.
#[derive(Clone, Debug, Serialize)]
pub struct PartCost {
    pub profiles_events_per_s: f64,
    pub with_events_per_s: f64,
    /// Profiles alone ÷ with the part: how many times the profile cost.
    pub cost: f64,
    /// The same ratio for each round, ascending: how much the machine
    /// moved it.
    pub pair_costs: Vec<f64>,
}

impl PartCost {
    /// The table's line: both throughputs, the cost, and the range of the
    /// rounds' own ratios.
    fn line(&self, name: &str, part: &str) -> String {
        let mut line = format!(
            "{:<16}profiles {:.0} events/s alone vs {:.0} events/s with {part}: {:.2}x the cost",
            format!("{name} cost"),
            self.profiles_events_per_s,
            self.with_events_per_s,
            self.cost
        );
        if let (Some(low), Some(high)) = (self.pair_costs.first(), self.pair_costs.last()) {
            line += &format!(" (rounds {low:.2}x to {high:.2}x)");
        }
        line
    }
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
    /// Closed-loop cost: µs of wall time per event.
    pub us_per_event: f64,
    /// Distinct users in the log.
    pub users: usize,
    /// Peak resident memory of the closed-loop run above what the process
    /// held before it (the loaded log), per distinct user; null where the
    /// peak cannot be reset (not Linux).
    pub bytes_per_user: Option<f64>,
    /// Per-batch latency at `latency_offered_events_per_s` (closed loop when null).
    pub latency_ms: Percentiles,
    pub latency_offered_events_per_s: Option<f64>,
    pub open_loop: Vec<OpenLoopRun>,
    pub peak_rss_bytes: u64,
    pub arranged_records: i64,
    pub baselines: Baselines,
    pub ratios: Ratios,
    pub risk_cost: Option<PartCost>,
    /// With `[segments.kmeans]`: the cost of learning the segments.
    pub segments_cost: Option<PartCost>,
    /// With `[recommend.mf] embeddings`: the cost of training the
    /// factorisation as events arrive.
    pub embeddings_cost: Option<PartCost>,
    pub operators: Vec<OperatorTime>,
    pub scaling: Vec<ScalingPoint>,
    pub elapsed_s: f64,
}

pub fn write_plots(dir: &std::path::Path, report: &BenchReport) -> anyhow::Result<()> {
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
        "throughput      sustained {:.0} events/s, closed loop {:.0} events/s ({:.2} µs/event)",
        report.events_per_s, report.closed_loop_events_per_s, report.us_per_event
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
        "memory          peak RSS {:.0} MB, {} records in arrangements, {} per user ({} users)",
        report.peak_rss_bytes as f64 / 1e6,
        report.arranged_records,
        report
            .bytes_per_user
            .map_or("?".to_owned(), |bytes| format!("{bytes:.0} B")),
        report.users
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
    let parts = [
        ("risk", "[risk]", &report.risk_cost),
        ("segments", "[segments.kmeans]", &report.segments_cost),
        (
            "embeddings",
            "[recommend.mf] embeddings",
            &report.embeddings_cost,
        ),
    ];
    for (name, part, cost) in parts {
        if let Some(cost) = cost {
            let _ = writeln!(out, "{}", cost.line(name, part));
        }
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
