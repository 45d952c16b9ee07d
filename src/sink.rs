//! Sinks: where output collections go.
//!
//! Every output collection is exchanged to worker 0, which keeps its current
//! state, writes the exact stream of changes (`X.changes.jsonl`, with
//! `--changelog`) as the frontier passes each time, and at the end writes the
//! consolidated state (`X.jsonl`). One writer keeps each output a single file
//! however many workers and processes run. `persona run` may also send each
//! output to a Kafka topic as upserts ([`kafka`]).

pub mod dead_letters;
pub mod fallback;
pub mod kafka;
pub mod parquet;
pub mod ranked;
pub mod render;
pub mod staging;

use std::cell::RefCell;
use std::collections::btree_map::{BTreeMap, Entry};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use differential_dataflow::{ExchangeData, VecCollection};
use serde_json::Value;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Exchange, Operator, Probe};
use timely::dataflow::{ProbeHandle, StreamVec};

use crate::config::{Output, ParquetSinkConfig};
use crate::names::{NameKind, Names};
use kafka::UpsertTopic;
pub use render::OutputRecord;

/// Updates gathered on worker 0, not yet applied.
pub type Pending<D> = Rc<RefCell<Vec<(D, u64, isize)>>>;

/// Routes a collection's updates to worker 0 and gathers them there.
pub fn gather<D: ExchangeData>(
    collection: VecCollection<'_, u64, D>,
    probe: &ProbeHandle<u64>,
) -> Pending<D> {
    gather_on(collection, probe, Rc::from([0]))
}

/// Routes a copy of each of a collection's updates to each of `workers`
/// and gathers them there (`persona serve`: the first worker of every
/// process keeps its own index).
pub fn gather_on<D: ExchangeData>(
    collection: VecCollection<'_, u64, D>,
    probe: &ProbeHandle<u64>,
    workers: Rc<[usize]>,
) -> Pending<D> {
    if let [worker] = *workers {
        // One copy: routed as it is, not tagged in a vector per update.
        let worker = worker as u64;
        return gather_here(
            collection.inner.exchange(move |_| worker),
            |update| update,
            probe,
        );
    }
    let copies = collection.inner.flat_map(move |(record, time, diff)| {
        // A copy for each worker but the first, which takes the record.
        let mut copies: Vec<_> = workers[1..]
            .iter()
            .map(|&worker| (worker as u64, (record.clone(), time, diff)))
            .collect();
        copies.push((workers[0] as u64, (record, time, diff)));
        copies
    });
    let copies = copies.exchange(|(worker, _)| *worker);
    gather_here(copies, |(_, update)| update, probe)
}

/// Moves the updates that reach this worker into the returned pending, as
/// `untag` makes them: the probe passes a time once they are all there.
fn gather_here<I: Clone + 'static, D: 'static>(
    updates: StreamVec<'_, u64, I>,
    untag: fn(I) -> (D, u64, isize),
    probe: &ProbeHandle<u64>,
) -> Pending<D> {
    let pending: Pending<D> = Rc::default();
    let sink = pending.clone();
    updates
        .unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(Pipeline, "Gather", move |_, _| {
            move |input, _| {
                input.for_each_stamp(|_, containers| {
                    let mut sink = sink.borrow_mut();
                    for container in containers {
                        sink.extend(container.drain(..).map(untag));
                    }
                })
            }
        })
        .probe_with(probe);
    pending
}

/// Which updates a drain may apply.
#[derive(Clone, Copy, Debug)]
pub enum Upto {
    /// Times before this frontier: they can no longer change.
    Before(u64),
    /// Every time up to and including the end of the input; later times
    /// (window expirations past the last event) are not part of the run.
    End(u64),
}

/// Whether a drain up to `upto` applies an update at `time` of an output
/// that changes once per `period` ms: the end of the input extends to the
/// end of its period.
pub fn is_ready(upto: Upto, period: u64, time: u64) -> bool {
    match upto {
        Upto::Before(frontier) => time < frontier,
        Upto::End(end) => time <= (end - end % period).saturating_add(period - 1),
    }
}

/// Takes the updates of `pending` that a drain up to `upto` applies (of
/// an output changing every tick), with their times; the others stay.
pub fn take_ready_at<D>(pending: &Pending<D>, upto: Upto) -> Vec<(D, u64, isize)> {
    let mut pending = pending.borrow_mut();
    if pending.iter().all(|(_, time, _)| is_ready(upto, 1, *time)) {
        return std::mem::take(&mut *pending);
    }
    let (ready, rest): (Vec<_>, Vec<_>) = pending
        .drain(..)
        .partition(|(_, time, _)| is_ready(upto, 1, *time));
    *pending = rest;
    ready
}

/// [`take_ready_at`], consolidated over the times.
pub fn take_ready<D: Ord>(pending: &Pending<D>, upto: Upto) -> Vec<(D, isize)> {
    let mut ready: Vec<(D, isize)> = take_ready_at(pending, upto)
        .into_iter()
        .map(|(record, _, diff)| (record, diff))
        .collect();
    differential_dataflow::consolidation::consolidate(&mut ready);
    ready
}

/// The sink side of one output.
pub trait Sink {
    /// Applies complete updates, writing changelog lines.
    fn drain(&mut self, upto: Upto, names: &dyn Names) -> io::Result<()>;
    /// Writes the final state; returns each file (or dataset folder)
    /// written and its record count.
    fn finish(&mut self, names: &dyn Names) -> io::Result<Vec<(String, usize)>>;
    /// Number of records in the current state.
    fn record_count(&self) -> usize;
    /// Waits until every change sent to Kafka is acknowledged.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Sends a tombstone for each key an earlier run left in the upsert
    /// topic that this run has not sent: call it once the state is rebuilt
    /// past where the earlier run got to. Returns how many.
    fn reconcile(&mut self) -> io::Result<usize> {
        Ok(0)
    }
}

/// The format of a replay's outputs (`--output-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FileFormat {
    /// `NAME.jsonl`: one JSON line per record.
    #[default]
    Jsonl,
    /// `NAME/bucket=B/part-0.parquet`: a Parquet dataset partitioned by bucket.
    Parquet,
}

/// Where worker 0 writes an output's files.
#[derive(Clone, Debug, Default)]
pub struct OutputFiles {
    /// The final state as `NAME.jsonl`, into this folder.
    pub jsonl: Option<PathBuf>,
    /// The stream of changes as `NAME.changes.jsonl`, into this folder.
    pub changelog: Option<PathBuf>,
    /// The final state as a Parquet dataset ([`parquet`]).
    pub parquet: Option<ParquetSinkConfig>,
}

/// An output's current state, written as files (`NAME.jsonl`, a Parquet
/// dataset, `NAME.changes.jsonl` with a changelog) and/or sent to a Kafka
/// topic.
pub struct OutputSink<D> {
    name: String,
    pending: Pending<D>,
    state: BTreeMap<D, isize>,
    changelog: Option<BufWriter<File>>,
    jsonl: Option<PathBuf>,
    parquet: Option<(Output, ParquetSinkConfig)>,
    /// The output changes at the end of periods this long (1: every tick).
    period: u64,
    upsert: Option<Upsert>,
}

/// A Kafka upsert topic fed by a sink, keyed by the records' keys.
struct Upsert {
    topic: kafka::KafkaSink,
    /// What the keys are ids of, to show them as the source did.
    key_kind: NameKind,
    /// Keys the topic held when the run started that it has not sent since:
    /// left by an earlier run, and gone unless the rebuilt state has them.
    stale: BTreeSet<String>,
}

impl<D: OutputRecord> OutputSink<D> {
    /// The sink of `output`, writing `files`.
    pub fn new(
        output: Output,
        pending: Pending<D>,
        files: &OutputFiles,
    ) -> io::Result<OutputSink<D>> {
        let name = output.name();
        let changelog = match &files.changelog {
            Some(dir) => Some(BufWriter::new(File::create(
                dir.join(format!("{name}.changes.jsonl")),
            )?)),
            None => None,
        };
        Ok(OutputSink {
            name: name.to_owned(),
            pending,
            state: BTreeMap::new(),
            changelog,
            jsonl: files.jsonl.clone(),
            parquet: files.parquet.clone().map(|config| (output, config)),
            period: 1,
            upsert: None,
        })
    }

    /// For an output that changes once per `period` ms, at the end of the
    /// period: the end of the input extends to the end of its period.
    pub fn with_period(self, period: u64) -> OutputSink<D> {
        OutputSink { period, ..self }
    }

    /// The period of the output's changes (see [`OutputSink::with_period`]).
    pub fn period(&self) -> u64 {
        self.period
    }

    /// Whether each change is written as it is applied (a changelog or an
    /// upsert topic), not only the final state.
    pub fn writes_changes(&self) -> bool {
        self.changelog.is_some() || self.upsert.is_some()
    }

    /// Adds updates to apply at the next drain, beside the gathered ones.
    pub fn push(&mut self, updates: Vec<(D, u64, isize)>) {
        self.pending.borrow_mut().extend(updates);
    }

    /// Adds records to the state directly, bypassing changelog and upserts:
    /// for records resolved only at the end of a run that writes neither.
    pub fn insert(&mut self, records: impl IntoIterator<Item = D>) {
        for record in records {
            *self.state.entry(record).or_insert(0) += 1;
        }
    }

    /// A sink that only counts its records (for the summary), writing nothing.
    pub fn counter(name: &str, pending: Pending<D>) -> OutputSink<D> {
        OutputSink {
            name: name.to_owned(),
            pending,
            state: BTreeMap::new(),
            changelog: None,
            jsonl: None,
            parquet: None,
            period: 1,
            upsert: None,
        }
    }

    /// Adds `diff` to `record`'s count in the state, removing it at zero.
    fn add(&mut self, record: D, diff: isize) {
        match self.state.entry(record) {
            Entry::Occupied(mut entry) => {
                *entry.get_mut() += diff;
                if *entry.get() == 0 {
                    entry.remove();
                }
            }
            Entry::Vacant(entry) => {
                entry.insert(diff);
            }
        }
    }

    /// The records of the current state, each with its count.
    fn records(&self) -> impl Iterator<Item = (&D, usize)> + '_ {
        self.state.iter().map(|(record, count)| {
            // A negative count would be a bug upstream: every output is a set.
            assert!(
                *count > 0,
                "output {} holds a record {count} times",
                self.name
            );
            (record, *count as usize)
        })
    }

    /// Also sends each change to `topic`: the new record of each changed
    /// key (an id of `key_kind`), or a tombstone when the key's record is
    /// gone. The keys the topic held already are reconciled at the end
    /// (see [`Sink::reconcile`]).
    pub fn with_upsert(self, topic: UpsertTopic, key_kind: NameKind) -> OutputSink<D> {
        OutputSink {
            upsert: Some(Upsert {
                topic: topic.sink,
                key_kind,
                stale: topic.existing,
            }),
            ..self
        }
    }
}

impl<D: OutputRecord> Sink for OutputSink<D> {
    fn drain(&mut self, upto: Upto, names: &dyn Names) -> io::Result<()> {
        let mut ready = {
            let mut pending = self.pending.borrow_mut();
            let (ready, rest): (Vec<_>, Vec<_>) = pending
                .drain(..)
                .partition(|(_, time, _)| is_ready(upto, self.period, *time));
            if let Upto::Before(_) = upto {
                *pending = rest;
            }
            ready
        };
        if ready.is_empty() {
            return Ok(());
        }
        if self.changelog.is_none() && self.upsert.is_none() {
            // Only the state, where diffs add up in any order: sorting
            // a tick's large records was a tenth of a replay.
            for (record, _, diff) in ready {
                self.add(record, diff);
            }
            return Ok(());
        }
        differential_dataflow::consolidation::consolidate_updates(&mut ready);
        // Consolidated, so (time, diff, record) is unique: unstable is stable.
        ready.sort_unstable_by(|(d1, t1, r1), (d2, t2, r2)| (t1, r1, d1).cmp(&(t2, r2, d2)));
        if let Some(upsert) = &mut self.upsert {
            send_upserts(upsert, &ready, names)?;
        }
        for (record, time, diff) in ready {
            if let Some(changelog) = &mut self.changelog {
                let mut line = serde_json::Map::new();
                line.insert("time".into(), time.into());
                line.insert("diff".into(), (diff as i64).into());
                match record.to_json(names) {
                    Value::Object(fields) => line.extend(fields),
                    other => {
                        line.insert("record".into(), other);
                    }
                }
                serde_json::to_writer(&mut *changelog, &line)?;
                changelog.write_all(b"\n")?;
            }
            self.add(record, diff);
        }
        Ok(())
    }

    fn finish(&mut self, names: &dyn Names) -> io::Result<Vec<(String, usize)>> {
        if let Some(changelog) = &mut self.changelog {
            changelog.flush()?;
        }
        let mut written = Vec::new();
        if let Some(dir) = &self.jsonl {
            let mut lines: Vec<String> = Vec::with_capacity(self.state.len());
            for (record, count) in self.records() {
                let line =
                    serde_json::to_string(&record.to_json(names)).map_err(io::Error::other)?;
                lines.extend(std::iter::repeat_n(line, count));
            }
            lines.sort();
            let file = format!("{}.jsonl", self.name);
            let mut writer = BufWriter::new(File::create(dir.join(&file))?);
            for line in &lines {
                writer.write_all(line.as_bytes())?;
                writer.write_all(b"\n")?;
            }
            writer.flush()?;
            written.push((file, lines.len()));
        }
        if let Some((output, config)) = &self.parquet {
            let rows = self.records().flat_map(|(record, count)| {
                std::iter::repeat_n((record.key(), record.to_json(names)), count)
            });
            let rows = parquet::write_dataset(&config.dir, *output, rows, config.buckets)?;
            written.push((format!("{}/", self.name), rows));
        }
        Ok(written)
    }

    fn record_count(&self) -> usize {
        self.state.values().map(|c| *c as usize).sum()
    }

    fn flush(&mut self) -> io::Result<()> {
        match &self.upsert {
            Some(upsert) => upsert.topic.flush().map_err(io::Error::other),
            None => Ok(()),
        }
    }

    fn reconcile(&mut self) -> io::Result<usize> {
        let Some(upsert) = &mut self.upsert else {
            return Ok(0);
        };
        let stale = std::mem::take(&mut upsert.stale);
        for key in &stale {
            upsert
                .topic
                .send_upsert(key, None)
                .map_err(io::Error::other)?;
        }
        Ok(stale.len())
    }
}

/// Sends the net change of each key over `changes` (consolidated updates of
/// several times): the state held one record per key before and holds one
/// or none after, so a key's net insertion is its new record, and a key
/// with only a net retraction is gone. Keys whose record came back to what
/// it was send nothing.
fn send_upserts<D: OutputRecord>(
    upsert: &mut Upsert,
    changes: &[(D, u64, isize)],
    names: &dyn Names,
) -> io::Result<()> {
    let mut net: Vec<(&D, isize)> = changes.iter().map(|(d, _, r)| (d, *r)).collect();
    differential_dataflow::consolidation::consolidate(&mut net);
    let keyed = net.into_iter().map(|(record, diff)| {
        let key = record.upsert_key(names, upsert.key_kind);
        (key, record.to_json(names), diff)
    });
    let upserts = kafka::upserts(keyed).map_err(io::Error::other)?;
    for (key, _) in &upserts {
        upsert.stale.remove(key);
    }
    upsert.topic.send_all(&upserts).map_err(io::Error::other)
}

/// The path of a per-process part of an output written by every process:
/// `dir/NAME.jsonl` for one process, `dir/NAME/part-P.jsonl` for several.
pub fn part_path(dir: &Path, name: &str, process: usize, processes: usize) -> io::Result<PathBuf> {
    if processes <= 1 {
        return Ok(dir.join(format!("{name}.jsonl")));
    }
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder)?;
    Ok(folder.join(format!("part-{process}.jsonl")))
}
