//! One timely worker of the pipeline, whatever its source: the dataflow and
//! its inputs, the reading of records into it, and the end of a run.
//!
//! A source (files for `replay`, Kafka for `run`) hands each record's bytes
//! and position to [`PipelineWorker::read`], and advances the input frontier
//! as event time passes with [`PipelineWorker::advance_to`]. Decoded events
//! are cleaned ([`crate::clean`]) and become updates at their event-time
//! tick; rejected and late records go to the [`DeadLetters`]. Worker 0 holds
//! the sinks and the name book.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use differential_dataflow::input::InputSession;
use differential_dataflow::logging::{DifferentialEvent, DifferentialEventBuilder};
use persona_dataflows::profile::{AttributeVersion, CatalogVersion};
use persona_dataflows::{Event, Id};
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::vec::Input;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Exchange, Inspect, Probe};
use timely::dataflow::{InputHandleVec as InputHandle, ProbeHandle};
use timely::worker::Worker;

use crate::checkpoint::Recorded;
use crate::clean::{self, Admission, Admitted, Judge};
use crate::config::{PipelineConfig, TimeConfig};
use crate::dimension::{read_catalog, read_user_attributes, IdRules};
use crate::format::{Decoded, Decoder, Outcome};
use crate::names::{NameBook, NameKind};
use crate::privacy::{read_forgotten, Pseudonyms};
use crate::rejected::{Position, Reason, RejectedRecord};
use crate::runtime::pipeline::{self, Gathered, Graph, Sinks};
use crate::sink::dead_letters::DeadLetters;
use crate::sink::Upto;
use crate::summary::{peak_rss_bytes, ReaderCounts, Summary};

/// What a worker reads into the dataflow.
struct Inputs {
    events: InputSession<u64, (u64, Event), isize>,
    names: InputHandle<u64, (NameKind, Id, String)>,
    /// Names this worker has already sent.
    named: HashSet<(NameKind, Id)>,
    /// Users forgotten while serving or running (`DELETE /v1/users/{id}`,
    /// `[privacy] forget_topic`): every input is antijoined with them.
    forget: Option<InputSession<u64, Id, isize>>,
}

impl Inputs {
    fn advance_to(&mut self, time: u64) {
        self.events.advance_to(time);
        self.names.advance_to(time);
        if let Some(forget) = &mut self.forget {
            forget.advance_to(time);
            forget.flush();
        }
    }

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
}

/// A worker's dataflow, its inputs, and (on worker 0) its sinks.
pub struct PipelineWorker {
    index: usize,
    time: TimeConfig,
    inputs: Inputs,
    counts_input: InputHandle<u64, ReaderCounts>,
    probe: ProbeHandle<u64>,
    counts_probe: ProbeHandle<u64>,
    duplicates: Rc<Cell<u64>>,
    name_book: Rc<RefCell<NameBook>>,
    totals: Rc<RefCell<ReaderCounts>>,
    sinks: Option<Sinks>,
    /// What this worker has read so far.
    pub counts: ReaderCounts,
    outcomes: Vec<Outcome>,
    /// Why the last record [`PipelineWorker::read`] dropped was dropped:
    /// a reason's code, or `forgotten`.
    last_dropped: Option<&'static str>,
    /// Steps 1 and 2 of cleaning (time plausibility, lateness).
    admission: Admission,
    /// The index of the dataflow, to drop it at the end of the input.
    dataflow: usize,
    /// Every worker's latest event time, to agree on the end of the input;
    /// taken when it is sent.
    ends_input: Option<InputHandle<u64, Option<u64>>>,
    ends_probe: ProbeHandle<u64>,
    end: Rc<Cell<Option<u64>>>,
    /// How many updates this worker applied at each time its input
    /// frontier has not passed.
    pending: BTreeMap<u64, u64>,
    /// The end of the input as collaborative filtering's gate learns it.
    input_end: Rc<Cell<Option<u64>>>,
    /// Updates held in this worker's arrangements.
    arranged: Rc<RefCell<i64>>,
    /// The records applied since the last checkpoint, when checkpointing.
    recorded: Option<Vec<Recorded>>,
    /// Users whose events are left out (`[privacy] forgotten`, and those
    /// forgotten since on any worker).
    forgotten: Rc<RefCell<HashSet<Id>>>,
}

/// Counts the updates held in this worker's arrangements from
/// differential's batch, merge and drop events.
pub fn count_arranged(worker: &mut Worker) -> Rc<RefCell<i64>> {
    let arranged = Rc::new(RefCell::new(0i64));
    let count = arranged.clone();
    if let Some(mut registry) = worker.log_register() {
        registry.insert::<DifferentialEventBuilder, _>(
            "differential/arrange",
            move |_time, events| {
                let Some(events) = events else { return };
                let mut count = count.borrow_mut();
                for (_, event) in events.iter() {
                    match event {
                        DifferentialEvent::Batch(batch) => *count += batch.length as i64,
                        DifferentialEvent::Merge(merge) => {
                            if let Some(merged) = merge.complete {
                                *count += merged as i64;
                                *count -= (merge.length1 + merge.length2) as i64;
                            }
                        }
                        DifferentialEvent::Drop(drop) => *count -= drop.length as i64,
                        _ => {}
                    }
                }
            },
        );
    }
    arranged
}

/// At most about this many steps take the dataflow from its input frontier
/// to the end of the input.
const FINAL_STEPS: u64 = 1024;

/// The end of a run on worker 0: the drained sinks and the run's totals.
pub struct Finished {
    pub sinks: Sinks,
    pub totals: ReaderCounts,
    pub names: NameBook,
}

impl PipelineWorker {
    /// Builds the dataflow on `worker`, loads the dimension tables (worker
    /// 0) and, on worker 0, makes the sinks from the gathered outputs.
    pub fn new(
        worker: &mut Worker,
        config: &PipelineConfig,
        graph: Graph,
        make_sinks: impl FnOnce(Gathered) -> anyhow::Result<Sinks>,
    ) -> anyhow::Result<PipelineWorker> {
        let index = worker.index();
        let forgotten = Rc::new(RefCell::new(match &config.privacy.forgotten {
            Some(path) => read_forgotten(path)?,
            None => HashSet::new(),
        }));
        let arranged = count_arranged(worker);
        let dedup_horizon = config
            .cleaning
            .dedup
            .then(|| config.cleaning.dedup_horizon_s.saturating_mul(1000));
        let mut inputs = Inputs {
            events: InputSession::new(),
            names: InputHandle::new(),
            named: HashSet::new(),
            // Only a server, or a run with a forget topic, forgets users
            // while it runs, and only with a file to keep them in: the
            // antijoin arranges every event by user (docs/privacy.md). A
            // replay leaves the forgotten users of its start out as it reads.
            forget: (config.privacy.forgotten.is_some()
                && (matches!(graph, Graph::Serving { .. })
                    || config.privacy.forget_topic.is_some()))
            .then(InputSession::new),
        };
        let mut catalog: InputSession<u64, (Id, CatalogVersion), isize> = InputSession::new();
        let mut user_attributes: InputSession<u64, (Id, AttributeVersion), isize> =
            InputSession::new();
        let mut counts_input: InputHandle<u64, ReaderCounts> = InputHandle::new();
        let probe = ProbeHandle::new();
        let counts_probe = ProbeHandle::new();
        let duplicates = Rc::new(Cell::new(0u64));
        let name_book = Rc::new(RefCell::new(NameBook::default()));
        let totals = Rc::new(RefCell::new(ReaderCounts::default()));

        let mut ends_input: InputHandle<u64, Option<u64>> = InputHandle::new();
        let ends_probe = ProbeHandle::new();
        let end = Rc::new(Cell::new(None));
        let input_end = Rc::new(Cell::new(None));
        let dataflow = worker.next_dataflow_index();
        let gathered = worker.dataflow::<u64, _, _>(|scope| {
            let latest = end.clone();
            scope
                .input_from(&mut ends_input)
                .broadcast()
                .inspect(move |time: &Option<u64>| latest.set(latest.get().max(*time)))
                .probe_with(&ends_probe);
            let records = inputs.events.to_collection(scope);
            let events = clean::dedup(records, dedup_horizon, duplicates.clone());
            let mut events = clean::mark_cancellations(events);
            let mut user_attributes = user_attributes.to_collection(scope);
            let mut forgotten_users = None;
            if let Some(forget) = &mut inputs.forget {
                let forgotten_now = forget.to_collection(scope);
                // Every worker learns who was forgotten on any, to drop
                // their later events as it reads them.
                let known = forgotten.clone();
                forgotten_now
                    .inner
                    .clone()
                    .broadcast()
                    .inspect(move |(user, _, _)| {
                        known.borrow_mut().insert(*user);
                    });
                let forgotten = forgotten_now.distinct();
                events = events
                    .map(|event| (event.user, event))
                    .antijoin(forgotten.clone())
                    .map(|(_, event)| event);
                user_attributes = user_attributes.antijoin(forgotten.clone());
                forgotten_users = Some(forgotten);
            }
            let book = name_book.clone();
            let gatherers = graph.gatherers(scope.peers());
            scope
                .input_from(&mut inputs.names)
                .flat_map(move |name| {
                    let copies: Vec<_> = gatherers
                        .iter()
                        .map(|&w| (w as u64, name.clone()))
                        .collect();
                    copies
                })
                .exchange(|(worker, _)| *worker)
                .inspect(
                    move |(_, (kind, id, name)): &(u64, (NameKind, Id, String))| {
                        book.borrow_mut().insert(*kind, *id, name.clone())
                    },
                )
                .probe_with(&probe);
            let sum = totals.clone();
            scope
                .input_from(&mut counts_input)
                .exchange(|_| 0)
                .inspect(move |counts: &ReaderCounts| sum.borrow_mut().merge(counts))
                .probe_with(&counts_probe);
            let inputs = pipeline::Inputs {
                events,
                catalog: config
                    .catalog
                    .as_ref()
                    .map(|_| catalog.to_collection(scope)),
                user_attributes,
                input_end: input_end.clone(),
                forgotten: forgotten_users,
            };
            pipeline::build(inputs, config, graph, &probe)
        });
        if index == 0 {
            load_dimensions(
                config,
                &forgotten.borrow(),
                &mut inputs,
                &mut catalog,
                &mut user_attributes,
            )?;
        }
        catalog.close();
        user_attributes.close();
        let sinks = if graph.gatherers(worker.peers()).contains(&index) {
            Some(make_sinks(gathered)?)
        } else {
            drop(gathered);
            None
        };
        Ok(PipelineWorker {
            index,
            time: config.time.clone(),
            inputs,
            counts_input,
            probe,
            counts_probe,
            duplicates,
            name_book,
            totals,
            sinks,
            counts: ReaderCounts::default(),
            outcomes: Vec::new(),
            last_dropped: None,
            admission: Admission::new(config),
            dataflow,
            ends_input: Some(ends_input),
            ends_probe,
            end,
            pending: BTreeMap::new(),
            input_end,
            arranged,
            recorded: None,
            forgotten,
        })
    }

    /// Decodes one record, cleans each event in it ([`crate::clean`]) and
    /// applies it, or hands it to `dead` as rejected or late. `judge` says
    /// who decides lateness and whether this worker owns the record (a
    /// record it does not own only moves the shared clock); `None` is the
    /// worker's own input frontier. Returns the latest event time (ms) applied.
    pub fn read(
        &mut self,
        decoder: &Decoder,
        bytes: &[u8],
        position: &Position,
        judge: Option<Judge<'_>>,
        dead: &mut DeadLetters,
    ) -> anyhow::Result<Option<u64>> {
        let mut judge = judge.unwrap_or(Judge::Frontier(*self.inputs.events.time()));
        let mut latest = None;
        self.last_dropped = None;
        decoder.decode(bytes, position, &mut self.outcomes);
        let mut outcomes = std::mem::take(&mut self.outcomes);
        for outcome in outcomes.drain(..) {
            let (position, outcome) = match outcome {
                Ok(decoded) => (position.clone(), Ok(decoded)),
                Err((position, rejection)) => (position, Err(rejection)),
            };
            let admitted = self.admission.admit(outcome, &mut judge);
            if !judge.owns() {
                continue;
            }
            self.counts.records_read += 1;
            match admitted {
                Admitted::Dropped(mut rejection) => {
                    self.counts.dropped(rejection.reason);
                    self.last_dropped = Some(rejection.reason.code());
                    if rejection.reason == Reason::Late {
                        // Shown as the format's raw setting says (the
                        // decoder did that for its own rejections).
                        rejection.raw = Some(decoder.raw_record(bytes, &position));
                    }
                    dead.write(&RejectedRecord::new(position, rejection, bytes))?;
                }
                Admitted::Applied(decoded, _)
                    if self.forgotten.borrow().contains(&decoded.event.user) =>
                {
                    self.counts.forgotten += 1;
                    self.last_dropped = Some("forgotten");
                }
                Admitted::Applied(decoded, time) => {
                    self.counts.decoded += 1;
                    self.counts.max_time = self.counts.max_time.max(Some(time));
                    latest = latest.max(Some(decoded.event.time_ms as u64));
                    *self.pending.entry(time).or_insert(0) += 1;
                    if let Some(recorded) = &mut self.recorded {
                        let decoded = decoded.clone();
                        recorded.push(Recorded { time, decoded });
                    }
                    self.inputs.apply(decoded, time);
                }
            }
        }
        self.outcomes = outcomes;
        Ok(latest)
    }

    /// Keeps every record applied from now on, for checkpoints
    /// ([`PipelineWorker::take_recorded`]).
    pub fn record(&mut self) {
        self.recorded.get_or_insert_with(Vec::new);
    }

    /// The records applied since the last call (or since [`PipelineWorker::record`]).
    pub fn take_recorded(&mut self) -> Vec<Recorded> {
        let mut recorded = self
            .recorded
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        // A checkpoint written after a forget holds none of the user's events.
        let forgotten = self.forgotten.borrow();
        if !forgotten.is_empty() {
            recorded.retain(|record| !forgotten.contains(&record.decoded.event.user));
        }
        recorded
    }

    /// The users left out: those of `[privacy] forgotten` at the start and
    /// those forgotten since, on any worker.
    pub fn forgotten(&self) -> Rc<RefCell<HashSet<Id>>> {
        self.forgotten.clone()
    }

    /// Applies records a checkpoint holds, at their own times: the
    /// dataflow then rebuilds the state they made. Not recorded again.
    pub fn restore(&mut self, records: Vec<Recorded>) {
        for Recorded { time, decoded } in records {
            if self.forgotten.borrow().contains(&decoded.event.user) {
                continue;
            }
            *self.pending.entry(time).or_insert(0) += 1;
            self.inputs.apply(decoded, time);
        }
    }

    /// Forgets `user` from now on (`persona serve`, and `persona run` with a
    /// forget topic): every output becomes
    /// what it would be had the user's events never been applied, and the
    /// user's later events are dropped, counted as forgotten.
    pub fn forget(&mut self, user: Id) {
        if let Some(forget) = &mut self.inputs.forget {
            if self.forgotten.borrow_mut().insert(user) {
                forget.insert(user);
            }
        }
    }

    /// Why the last call of [`PipelineWorker::read`] dropped a record
    /// (a reason's code, or `forgotten`), if it dropped one.
    pub fn last_dropped(&self) -> Option<&'static str> {
        self.last_dropped
    }

    /// The tick (ms) of an event time (ms).
    pub fn tick_of(&self, time_ms: u64) -> u64 {
        self.time.tick_of(time_ms)
    }

    /// The time before which this worker gives no more updates.
    pub fn frontier(&self) -> u64 {
        *self.inputs.events.time()
    }

    /// Advances the inputs to the tick of `watermark_ms` (never back).
    pub fn advance_to(&mut self, watermark_ms: u64) {
        let time = self.time.tick_of(watermark_ms);
        if time > *self.inputs.events.time() {
            self.inputs.advance_to(time);
            self.pending = self.pending.split_off(&time);
        }
        self.inputs.events.flush();
    }

    /// Steps the dataflow until it has caught up with this worker's input
    /// frontier, or for at most `budget`: state and pending output then stay
    /// bounded by the lateness rather than by the log.
    pub fn catch_up(&mut self, worker: &mut Worker, budget: Option<Duration>) {
        let frontier = *self.inputs.events.time();
        let started = Instant::now();
        step_until(worker, || {
            !self.probe.less_than(&frontier) || budget.is_some_and(|b| started.elapsed() >= b)
        });
    }

    /// Whether the dataflow has completed every time before this worker's
    /// input frontier.
    pub fn caught_up(&self) -> bool {
        !self.probe.less_than(self.inputs.events.time())
    }

    /// On worker 0, applies every output update the dataflow has completed
    /// to the sinks; returns the time before which outputs are complete.
    pub fn drain(&mut self) -> anyhow::Result<Option<u64>> {
        let Some(sinks) = &mut self.sinks else {
            return Ok(None);
        };
        let Some(done) = self.probe.with_frontier(|f| f.first().copied()) else {
            return Ok(None);
        };
        sinks.drain(Upto::Before(done), &*self.name_book.borrow())?;
        Ok(Some(done))
    }

    /// The sinks of worker 0, e.g. to flush them.
    pub fn sinks(&mut self) -> Option<&mut Sinks> {
        self.sinks.as_mut()
    }

    /// Completes the input read so far: agrees with every worker on the
    /// latest event time any of them applied, then completes every output
    /// up to it (collaborative filtering up to the end of its period),
    /// draining the sinks of worker 0 on the way. Returns that end, `None`
    /// for an empty input. Every worker calls it once; `persona serve` goes
    /// on applying events after it, at later times.
    pub fn end_input(&mut self, worker: &mut Worker) -> anyhow::Result<Option<u64>> {
        let Some(mut ends_input) = self.ends_input.take() else {
            return Ok(self.end.get());
        };
        ends_input.send(self.counts.max_time);
        drop(ends_input);
        let ends_probe = &self.ends_probe;
        worker.step_while(|| !ends_probe.done());
        let end = self.end.get();
        self.input_end.set(end);
        let Some(end) = end else {
            return Ok(None);
        };
        // Advance through the times still pending, a slice of them at a
        // time: each step then computes few versions of each output, and
        // passed versions are compacted, instead of every version of an
        // unsorted log (whose frontier waits for the end) at once.
        // Collaborative filtering applies what waits for its period at
        // `end` (`pipeline::cf_events`), so nothing past it is computed.
        let target = end.saturating_add(1);
        let total: u64 = self.pending.values().sum();
        let slice = (total / FINAL_STEPS).max(1);
        let mut in_slice = 0;
        let mut steps: Vec<u64> = Vec::new();
        for (&time, &count) in self.pending.range(..target) {
            in_slice += count;
            if in_slice >= slice {
                steps.push(time + 1);
                in_slice = 0;
            }
        }
        steps.push(target);
        for time in steps {
            if time <= *self.inputs.events.time() {
                continue;
            }
            self.inputs.advance_to(time);
            self.inputs.events.flush();
            let probe = &self.probe;
            step_until(worker, || !probe.less_than(&time));
            if let Some(sinks) = &mut self.sinks {
                sinks.drain(Upto::Before(time), &*self.name_book.borrow())?;
            }
        }
        // A worker whose input was past the end already (stdin's readers
        // but one) skipped the steps: it waits too, or the counts its
        // operators keep (duplicates) would be read before they are whole.
        let probe = &self.probe;
        step_until(worker, || !probe.less_than(&target));
        self.pending = self.pending.split_off(&target);
        Ok(Some(end))
    }

    /// Ends the run: completes the input ([`PipelineWorker::end_input`]),
    /// gathers every worker's counts, and on worker 0 applies the outputs up
    /// to the end of the input. Nothing after the end is computed: window
    /// expirations past it would be thrown away, so the dataflow is dropped
    /// instead of run to completion.
    pub fn finish(
        mut self,
        worker: &mut Worker,
        workers_per_process: usize,
    ) -> anyhow::Result<Option<Finished>> {
        self.end_input(worker)?;
        let PipelineWorker {
            index,
            inputs,
            mut counts_input,
            counts_probe,
            duplicates,
            name_book,
            totals,
            sinks,
            mut counts,
            dataflow,
            ..
        } = self;
        counts.duplicates = duplicates.get();
        if index.is_multiple_of(workers_per_process) {
            counts.peak_rss_bytes = peak_rss_bytes();
        }
        counts_input.send(counts);
        drop(counts_input);
        worker.step_while(|| !counts_probe.done());
        worker.drop_dataflow(dataflow);
        drop(inputs);
        let Some(mut sinks) = sinks else {
            return Ok(None);
        };
        let totals = totals.borrow().clone();
        let names = name_book.take();
        sinks.drain(Upto::End(totals.max_time.unwrap_or(0)), &names)?;
        Ok(Some(Finished {
            sinks,
            totals,
            names,
        }))
    }

    /// The updates held in this worker's arrangements now.
    pub fn arranged_records(&self) -> i64 {
        *self.arranged.borrow()
    }

    /// The duplicates this worker's deduplication dropped so far.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.get()
    }
}

impl Finished {
    /// Writes the file outputs (where the sinks were told to) and the
    /// summary (into `dir/summary.json` too, if the run has a folder of
    /// files); returns the summary.
    /// `per_process` are the outputs each process writes in parts.
    pub fn summarize(
        &mut self,
        dir: Option<&Path>,
        per_process: &[(&str, u64)],
        processes: usize,
        workers: usize,
        started: Instant,
    ) -> anyhow::Result<Summary> {
        let mut outputs = BTreeMap::new();
        for sink in &mut self.sinks.outputs {
            for (file, records) in sink.finish(&self.names)? {
                outputs.insert(file, records as u64);
            }
        }
        if dir.is_some() {
            for (name, lines) in per_process {
                outputs.insert(output_name(name, processes), *lines);
            }
        }
        let totals = &self.totals;
        let accepted = totals.decoded - totals.duplicates;
        let elapsed_s = started.elapsed().as_secs_f64();
        let summary = Summary {
            records_read: totals.records_read,
            accepted,
            rejected: totals.rejected.clone(),
            duplicates: totals.duplicates,
            late: totals.late,
            forgotten: totals.forgotten,
            users: self.sinks.users.record_count() as u64,
            items: self.sinks.items.record_count() as u64,
            outputs,
            elapsed_s,
            events_per_s: if elapsed_s > 0.0 {
                accepted as f64 / elapsed_s
            } else {
                0.0
            },
            peak_rss_bytes: totals.peak_rss_bytes,
            workers,
        };
        if let Some(dir) = dir {
            let mut writer = BufWriter::new(File::create(dir.join("summary.json"))?);
            serde_json::to_writer_pretty(&mut writer, &summary)?;
            writer.write_all(b"\n")?;
            writer.flush()?;
        }
        Ok(summary)
    }
}

/// Steps `worker` until `done`, parking it briefly when it has nothing to
/// do rather than spinning: while it waits for other processes, their
/// messages then get the CPU (timely wakes a parked worker when they
/// arrive). Spinning workers on a machine with fewer cores than threads
/// made each cross-process round trip wait for a time slice.
fn step_until(worker: &mut Worker, mut done: impl FnMut() -> bool) {
    while !done() {
        worker.step_or_park(Some(Duration::from_millis(1)));
    }
}

/// The name of a per-process output in the summary: a file, or a folder of parts.
fn output_name(name: &str, processes: usize) -> String {
    if processes > 1 {
        format!("{name}/")
    } else {
        format!("{name}.jsonl")
    }
}

/// Loads the dimension tables into their inputs (worker 0 only), each row at
/// the tick from which it applies.
fn load_dimensions(
    config: &PipelineConfig,
    forgotten: &HashSet<Id>,
    inputs: &mut Inputs,
    catalog: &mut InputSession<u64, (Id, CatalogVersion), isize>,
    user_attributes: &mut InputSession<u64, (Id, AttributeVersion), isize>,
) -> anyhow::Result<()> {
    let pseudonyms = Pseudonyms::from_config(&config.privacy)?;
    let ids = IdRules {
        numeric_ids: config.cleaning.numeric_ids,
        pseudonyms: &pseudonyms,
    };
    let tick = |ms: i64| config.time.tick_of(ms as u64);
    if let Some(table) = &config.catalog {
        for (row, applies_ms) in read_catalog(table, &ids)? {
            inputs.name(NameKind::Item, row.item, row.item_name);
            if let (Some(id), Some(name)) = (row.version.category, row.category_name) {
                inputs.name(NameKind::Category, id, name);
            }
            catalog.update_at((row.item, row.version), tick(applies_ms), 1);
        }
    }
    if let Some(table) = &config.user_attributes {
        for (row, applies_ms) in read_user_attributes(table, &ids)? {
            if forgotten.contains(&row.user) {
                continue;
            }
            inputs.name(NameKind::User, row.user, row.user_name);
            user_attributes.update_at((row.user, row.version), tick(applies_ms), 1);
        }
    }
    Ok(())
}
