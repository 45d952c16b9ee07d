//! Drives batches of updates through the dataflow on timely workers and
//! times each one: from the moment the batch is offered to the input until
//! the probe passes its last timestamp.
//!
//! Open loop: batch b is offered at `start + (events before b) / rate`,
//! whatever the dataflow is doing, and its latency counts from that planned
//! instant, so a dataflow that falls behind shows it in the latencies
//! instead of slowing the offer down (no coordinated omission). Closed
//! loop: the next batch is offered when the last one has passed the probe.
//! Interleaved ([`run_interleaved`]): two configs of one log, a dataflow
//! each, closed loop, a slice of batches to one and then to the other, to
//! compare their costs under the same moment's machine.
//!
//! Every worker offers its share of each batch (update index modulo
//! workers); worker 0 reports the latencies. Differential's arrangement
//! events give the records held in arrangements; with `operators`, timely's
//! schedule events give the time spent in each operator.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;
use std::rc::Rc;
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use differential_dataflow::input::InputSession;
use persona_dataflows::cf::{collaborative_filtering, Rankings};
use persona_dataflows::mf::online::Rows;
use persona_dataflows::profile::{profiles_and_alerts, AttributeVersion, CatalogVersion};
use persona_dataflows::{Event, Id};
use timely::dataflow::operators::Probe;
use timely::dataflow::ProbeHandle;
use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder};
use timely::worker::Worker;

use crate::config::{PipelineConfig, TimeConfig};
use crate::runtime::pipeline;
use crate::runtime::worker::count_arranged;
use crate::sink::ranked::{Periods, RankedState};
use crate::sink::{gather, Pending};

/// Which outputs the dataflow maintains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Graph {
    /// Profiles only.
    Profiles,
    /// Profiles, co-occurrence, similar items and recommendations.
    Full,
}

/// How batches are offered.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// The next batch when the last one is done.
    ClosedLoop,
    /// At this many events per second, whatever the output does.
    OpenLoop { events_per_s: f64 },
}

/// Consecutive updates offered together, ending on a whole tick.
#[derive(Clone, Debug)]
pub struct Batch {
    pub updates: Range<usize>,
    /// The latest timestamp of the batch: done when the probe passes it.
    pub last_time: u64,
}

/// A log cut into batches, with the config it runs under.
pub struct Workload {
    /// Updates sorted by event time.
    pub updates: Vec<(Event, isize)>,
    pub batches: Vec<Batch>,
    pub config: PipelineConfig,
    /// Rank per recommendation period (`replay --changelog`), not once at
    /// the end.
    pub changelog: bool,
}

impl Workload {
    /// The same workload under the config `strip` changes (e.g. without
    /// `[risk]`: the profile cost alone).
    pub fn without(&self, strip: impl FnOnce(&mut PipelineConfig)) -> Workload {
        let mut config = self.config.clone();
        strip(&mut config);
        Workload {
            updates: self.updates.clone(),
            batches: self.batches.clone(),
            config,
            changelog: self.changelog,
        }
    }

    /// Sorts the updates by event time (stable) and cuts them into batches
    /// of at least `batch_size` updates that end on a tick boundary.
    pub fn new(
        mut updates: Vec<(Event, isize)>,
        batch_size: usize,
        config: PipelineConfig,
        changelog: bool,
    ) -> Workload {
        updates.sort_by_key(|(event, _)| event.time_ms);
        let mut batches = Vec::new();
        let mut begin = 0;
        while begin < updates.len() {
            let mut end = (begin + batch_size.max(1)).min(updates.len());
            let last_time = timestamp(&updates[end - 1].0, &config.time);
            while end < updates.len() && timestamp(&updates[end].0, &config.time) == last_time {
                end += 1;
            }
            batches.push(Batch {
                updates: begin..end,
                last_time,
            });
            begin = end;
        }
        Workload {
            updates,
            batches,
            config,
            changelog,
        }
    }

    /// The first `batches` batches as a workload of their own.
    pub fn prefix(&self, batches: usize) -> Workload {
        let batches: Vec<Batch> = self.batches[..batches.min(self.batches.len())].to_vec();
        let end = batches.last().map_or(0, |batch| batch.updates.end);
        Workload {
            updates: self.updates[..end].to_vec(),
            batches,
            config: self.config.clone(),
            changelog: self.changelog,
        }
    }

    pub fn events(&self) -> usize {
        self.updates.len()
    }
}

/// The dataflow timestamp of an event: its time truncated to the tick.
pub fn timestamp(event: &Event, time: &TimeConfig) -> u64 {
    time.tick_of(event.time_ms.max(0) as u64)
}

/// Time spent in one operator, summed over workers.
#[derive(Clone, Debug, serde::Serialize)]
pub struct OperatorTime {
    pub name: String,
    pub ms: f64,
    /// Share of the time of all operators.
    pub share: f64,
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    /// Per batch, from offer to the probe passing it.
    pub latencies: Vec<Duration>,
    /// From the first offer until the last batch passed the probe.
    pub elapsed: Duration,
    /// Updates held in arrangements at the end, summed over workers.
    pub arranged_records: i64,
    /// Operators by time spent, largest first (empty unless asked for).
    pub operators: Vec<OperatorTime>,
}

impl RunOutcome {
    pub fn events_per_s(&self, events: usize) -> f64 {
        events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// What one worker measured.
struct WorkerOutcome {
    latencies: Vec<Duration>,
    elapsed: Duration,
    arranged_records: i64,
    /// Each operator's name, address and busy time.
    operators: Vec<(String, Vec<usize>, Duration)>,
}

/// Runs the workload through a fresh dataflow on `timely` workers (one
/// process) at `pace`.
pub fn run(
    workload: &Arc<Workload>,
    graph: Graph,
    pace: Pace,
    timely: timely::Config,
    workers: usize,
    log_operators: bool,
) -> anyhow::Result<RunOutcome> {
    let barrier = Arc::new(Barrier::new(workers));
    let start: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let workload = workload.clone();
    let guards = timely::execute(timely, move |worker| {
        run_worker(
            worker,
            &workload,
            graph,
            pace,
            &barrier,
            &start,
            log_operators,
        )
    })
    .map_err(|error| anyhow::anyhow!("cannot start workers: {error}"))?;
    let mut outcome = RunOutcome {
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
        arranged_records: 0,
        operators: Vec::new(),
    };
    let mut operators: Vec<(String, Vec<usize>, Duration)> = Vec::new();
    for (index, result) in guards.join().into_iter().enumerate() {
        let worker = result.map_err(|panic| anyhow::anyhow!("a worker panicked: {panic}"))?;
        if index == 0 {
            outcome.latencies = worker.latencies;
            outcome.elapsed = worker.elapsed;
        }
        outcome.arranged_records += worker.arranged_records;
        operators.extend(worker.operators);
    }
    outcome.operators = leaf_operator_times(operators);
    Ok(outcome)
}

/// Runs two workloads of the same batches (the same log under two configs)
/// through a dataflow each on the same `timely` workers, closed loop,
/// interleaved a slice of batches at a time ([`SLICE_UPDATES`]), and
/// returns the time each spent on its batches. A shared machine runs
/// faster and slower for tens of milliseconds to seconds at a time; runs
/// one after the other each meet a different phase, slices a few
/// milliseconds apart meet the same one, so the ratio of the two times
/// holds steady where the ratio of two runs does not. Which dataflow goes
/// first alternates.
pub fn run_interleaved(
    pair: [&Arc<Workload>; 2],
    graph: Graph,
    timely: timely::Config,
    workers: usize,
) -> anyhow::Result<[Duration; 2]> {
    anyhow::ensure!(
        pair[0].updates.len() == pair[1].updates.len()
            && pair[0].batches.len() == pair[1].batches.len(),
        "interleaved runs need the same batches"
    );
    let barrier = Arc::new(Barrier::new(workers));
    let pair = pair.map(Arc::clone);
    let guards = timely::execute(timely, move |worker| {
        run_worker_interleaved(worker, [&pair[0], &pair[1]], graph, &barrier)
    })
    .map_err(|error| anyhow::anyhow!("cannot start workers: {error}"))?;
    let mut spent = [Duration::ZERO; 2];
    for (index, result) in guards.join().into_iter().enumerate() {
        let worker = result.map_err(|panic| anyhow::anyhow!("a worker panicked: {panic}"))?;
        if index == 0 {
            spent = worker;
        }
    }
    Ok(spent)
}

/// Updates in a slice of [`run_interleaved`]. Shorter slices find the
/// caches holding the other dataflow's state, a cost both pay, which pulls
/// the ratio toward 1 (the `[risk]` cost on Online Retail: 1.23× a batch
/// at a time, 1.26× four, 1.30–1.31× sixteen and thirty-two); at about
/// 8 ms a slice, the machine's phases still meet both.
const SLICE_UPDATES: usize = 16_000;

/// Consecutive batches of at least [`SLICE_UPDATES`] updates (the last
/// one may hold fewer).
fn slices(batches: &[Batch]) -> impl Iterator<Item = &[Batch]> {
    let mut rest = batches;
    std::iter::from_fn(move || {
        let mut updates = 0;
        let end = rest
            .iter()
            .position(|batch| {
                updates += batch.updates.len();
                updates >= SLICE_UPDATES
            })
            .map_or(rest.len(), |at| at + 1);
        let (slice, after) = rest.split_at(end);
        rest = after;
        (!slice.is_empty()).then_some(slice)
    })
}

fn run_worker_interleaved(
    worker: &mut Worker,
    pair: [&Workload; 2],
    graph: Graph,
    barrier: &Barrier,
) -> [Duration; 2] {
    let (index, peers) = (worker.index(), worker.peers());
    let mut built = pair.map(|workload| build(worker, workload, graph));
    let mut spent = [Duration::ZERO; 2];
    barrier.wait();
    for (number, slice) in slices(&pair[0].batches).enumerate() {
        let order = match number % 2 {
            0 => [0, 1],
            _ => [1, 0],
        };
        for side in order {
            let started = Instant::now();
            for batch in slice {
                built[side].offer(pair[side], batch, index, peers);
                while !built[side].done(batch, index) {
                    worker.step();
                }
            }
            spent[side] += started.elapsed();
        }
    }
    for (side, built) in built.iter_mut().enumerate() {
        let started = Instant::now();
        built.finish(index);
        spent[side] += started.elapsed();
    }
    barrier.wait();
    for built in built {
        built.drop_unfinished(worker);
    }
    spent
}

/// Sums busy time by operator name over the operators that contain no
/// other (a scope's time includes its children's).
fn leaf_operator_times(operators: Vec<(String, Vec<usize>, Duration)>) -> Vec<OperatorTime> {
    let addresses: Vec<Vec<usize>> = operators.iter().map(|(_, addr, _)| addr.clone()).collect();
    let mut by_name: HashMap<String, Duration> = HashMap::new();
    for (name, addr, busy) in operators {
        let is_scope = addresses
            .iter()
            .any(|other| other.len() > addr.len() && other.starts_with(&addr));
        if !is_scope {
            *by_name.entry(name).or_default() += busy;
        }
    }
    let total: f64 = by_name.values().map(Duration::as_secs_f64).sum();
    let mut times: Vec<OperatorTime> = by_name
        .into_iter()
        .map(|(name, busy)| OperatorTime {
            name,
            ms: busy.as_secs_f64() * 1e3,
            share: if total > 0.0 {
                busy.as_secs_f64() / total
            } else {
                0.0
            },
        })
        .collect();
    times.sort_by(|a, b| b.ms.total_cmp(&a.ms).then(a.name.cmp(&b.name)));
    times
}

/// Operator names, addresses and busy times of this worker.
type OperatorLog = Rc<RefCell<HashMap<usize, (String, Vec<usize>, Duration, Option<Duration>)>>>;

/// Sums each operator's scheduled time from timely's schedule events.
fn log_operator_times(worker: &mut Worker) -> OperatorLog {
    let log: OperatorLog = Rc::default();
    let sink = log.clone();
    if let Some(mut registry) = worker.log_register() {
        registry.insert::<TimelyEventBuilder, _>("timely", move |_time, events| {
            let Some(events) = events else { return };
            let mut log = sink.borrow_mut();
            for (at, event) in events.iter() {
                match event {
                    TimelyEvent::Operates(operates) => {
                        log.insert(
                            operates.id,
                            (
                                operates.name.clone(),
                                operates.addr.clone(),
                                Duration::ZERO,
                                None,
                            ),
                        );
                    }
                    TimelyEvent::Schedule(schedule) => {
                        if let Some(entry) = log.get_mut(&schedule.id) {
                            match schedule.start_stop {
                                StartStop::Start => entry.3 = Some(*at),
                                StartStop::Stop => {
                                    if let Some(started) = entry.3.take() {
                                        entry.2 += at.saturating_sub(started);
                                    }
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
        });
    }
    log
}

/// One dataflow of a workload on a worker: its inputs, the probe that
/// tells a batch done and, for the full graph ranked on demand, the state
/// it ranks from.
struct Built {
    input: InputSession<u64, Event, isize>,
    probe: ProbeHandle<u64>,
    ranked: Option<RankedState>,
    dataflow: usize,
}

impl Built {
    /// Offers this worker's share of `batch` and advances past it.
    fn offer(&mut self, workload: &Workload, batch: &Batch, index: usize, peers: usize) {
        for position in batch.updates.clone() {
            if position % peers == index {
                let (event, diff) = &workload.updates[position];
                self.input.update_at(
                    event.clone(),
                    timestamp(event, &workload.config.time),
                    *diff,
                );
            }
        }
        self.input.advance_to(batch.last_time + 1);
        self.input.flush();
    }

    /// Whether every output has passed `batch`; on worker 0, the rankings
    /// of the periods it completed are then made (part of its latency).
    fn done(&mut self, batch: &Batch, index: usize) -> bool {
        if self.probe.less_than(&(batch.last_time + 1)) {
            return false;
        }
        if let (Some(ranked), 0) = (&mut self.ranked, index) {
            ranked.rank_until(batch.last_time + 1);
        }
        true
    }

    /// Without a changelog, `replay` ranks the lists once, at the end of
    /// the log: part of the run.
    fn finish(&mut self, index: usize) {
        if let (Some(ranked), 0) = (&mut self.ranked, index) {
            ranked.rank_at_end();
        }
    }

    /// What is left (window expirations and recommendation periods after
    /// the last event) is not part of the run: the dataflow is dropped
    /// unfinished.
    fn drop_unfinished(self, worker: &mut Worker) {
        let Built {
            input, dataflow, ..
        } = self;
        drop(input);
        worker.drop_dataflow(dataflow);
    }
}

/// Builds `workload`'s dataflow of `graph` on `worker`.
fn build(worker: &mut Worker, workload: &Workload, graph: Graph) -> Built {
    let config = &workload.config;
    let mut input: InputSession<u64, Event, isize> = InputSession::new();
    let mut catalog: InputSession<u64, (Id, CatalogVersion), isize> = InputSession::new();
    let mut user_attributes: InputSession<u64, (Id, AttributeVersion), isize> = InputSession::new();
    let probe = ProbeHandle::new();
    let dataflow = worker.next_dataflow_index();
    let mut ranked: Option<RankedState> = None;
    worker.dataflow::<u64, _, _>(|scope| {
        let events = crate::clean::mark_cancellations(input.to_collection(scope));
        let catalog = config
            .catalog
            .as_ref()
            .map(|_| catalog.to_collection(scope));
        let user_attributes = user_attributes.to_collection(scope);
        let (profiles, alerts) = profiles_and_alerts(
            events.clone(),
            catalog,
            user_attributes,
            &config.profile,
            config.risk.as_ref(),
        );
        let rows = match graph == Graph::Full && config.recommend.rankings() == Rankings::OnDemand {
            true => pipeline::ranked_rows(config, None),
            false => Rows::Never,
        };
        let learned = pipeline::with_learned_models(profiles, events.clone(), None, config, rows);
        if let Some(models) = learned.kmeans {
            models.inner.probe_with(&probe);
        }
        learned.profiles.inner.probe_with(&probe);
        if let Some(alerts) = alerts {
            alerts.inner.probe_with(&probe);
        }
        if graph == Graph::Full {
            match config.recommend.rankings() {
                Rankings::Dataflow => {
                    let cf = collaborative_filtering(
                        pipeline::cf_events(events, config, None),
                        &config.recommend,
                    );
                    cf.similar_items.inner.probe_with(&probe);
                    cf.personal.inner.probe_with(&probe);
                    cf.fallback.users.inner.probe_with(&probe);
                    cf.fallback.ranking.inner.probe_with(&probe);
                }
                // As `replay` ranks: the state at every tick, gathered on
                // worker 0, which ranks it at the end of every period.
                Rankings::OnDemand => {
                    let state = pipeline::ranking_state(events, learned.mf_rows, config);
                    let state = gather(state, &probe);
                    let periods = Periods {
                        period: config.time.recommend_period(),
                        tick_ms: config.time.tick_ms,
                    };
                    ranked = Some(RankedState::new(
                        state,
                        config.recommend.clone(),
                        periods,
                        workload.changelog,
                        // Applied and ranked on the worker's thread alone:
                        // a batch's latency includes all of it, on one core.
                        false,
                        Pending::default(),
                        Pending::default(),
                    ));
                }
            }
        }
    });
    catalog.close();
    user_attributes.close();
    Built {
        input,
        probe,
        ranked,
        dataflow,
    }
}

fn run_worker(
    worker: &mut Worker,
    workload: &Workload,
    graph: Graph,
    pace: Pace,
    barrier: &Barrier,
    start: &OnceLock<Instant>,
    log_operators: bool,
) -> WorkerOutcome {
    let index = worker.index();
    let peers = worker.peers();
    let arranged = count_arranged(worker);
    let operator_log = log_operators.then(|| log_operator_times(worker));
    let mut built = build(worker, workload, graph);

    // Offer times: the planned instant of each batch, relative to the start.
    let mut planned: Vec<Duration> = Vec::with_capacity(workload.batches.len());
    let mut offered_events = 0usize;
    for batch in &workload.batches {
        let offset = match pace {
            Pace::ClosedLoop => Duration::ZERO,
            Pace::OpenLoop { events_per_s } => {
                Duration::from_secs_f64(offered_events as f64 / events_per_s)
            }
        };
        planned.push(offset);
        offered_events += batch.updates.len();
    }

    barrier.wait();
    let start = *start.get_or_init(Instant::now);
    let mut offered_at: Vec<Instant> = Vec::with_capacity(workload.batches.len());
    let mut latencies = Vec::with_capacity(workload.batches.len());
    let mut next = 0;
    let total = workload.batches.len();
    while latencies.len() < total {
        let now = Instant::now();
        while next < total {
            let due = match pace {
                Pace::ClosedLoop if next == latencies.len() => now,
                Pace::ClosedLoop => break,
                Pace::OpenLoop { .. } => start + planned[next],
            };
            if due > now {
                break;
            }
            built.offer(workload, &workload.batches[next], index, peers);
            offered_at.push(due);
            next += 1;
        }
        if next == latencies.len() {
            // Idle until the next planned offer.
            let wait = (start + planned[next]).saturating_duration_since(Instant::now());
            worker.step_or_park(Some(wait));
        } else {
            worker.step();
        }
        while latencies.len() < next && built.done(&workload.batches[latencies.len()], index) {
            latencies.push(offered_at[latencies.len()].elapsed());
        }
    }
    built.finish(index);
    let elapsed = start.elapsed();
    let arranged_records = *arranged.borrow();

    barrier.wait();
    built.drop_unfinished(worker);
    let operators = operator_log
        .map(|log| {
            log.borrow()
                .values()
                .map(|(name, addr, busy, _)| (name.clone(), addr.clone(), *busy))
                .collect()
        })
        .unwrap_or_default();
    WorkerOutcome {
        latencies,
        elapsed,
        arranged_records,
        operators,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_the_batches_in_order_each_of_enough_updates() {
        // Batches of 1000, 7000 and 300 updates, in turn.
        let sizes = [1000, 7000, 300].repeat(20);
        let mut begin = 0;
        let batches: Vec<Batch> = sizes
            .iter()
            .enumerate()
            .map(|(n, size)| {
                begin += size;
                Batch {
                    updates: begin - size..begin,
                    last_time: n as u64,
                }
            })
            .collect();
        let cut: Vec<&[Batch]> = slices(&batches).collect();
        let joined: Vec<u64> = cut.concat().iter().map(|b| b.last_time).collect();
        assert_eq!(joined, (0..60).collect::<Vec<u64>>());
        let updates = |slice: &[Batch]| slice.iter().map(|b| b.updates.len()).sum::<usize>();
        let (last, whole) = cut.split_last().unwrap();
        for slice in whole {
            // Enough, and not one batch more than that takes.
            assert!(updates(slice) >= SLICE_UPDATES);
            assert!(updates(&slice[..slice.len() - 1]) < SLICE_UPDATES);
        }
        assert!(updates(last) > 0);
        assert!(slices(&[]).next().is_none());
    }
}
