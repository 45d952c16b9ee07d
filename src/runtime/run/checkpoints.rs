//! The checkpoints of a run ([`crate::checkpoint`]) and of `persona serve`: worker 0 asks for one
//! every `interval_s`, each worker writes its part where it stands in its
//! loop (just after advancing its input), and worker 0 writes the manifest
//! once every part is durable. No barrier is needed: each worker's part is
//! the records it read from its own partitions up to their offsets, so any
//! set of parts is a consistent cut.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use persona_dataflows::Id;
use timely::dataflow::operators::vec::{Broadcast, Input};
use timely::dataflow::operators::{Exchange, Inspect, Probe};
use timely::dataflow::{InputHandleVec as InputHandle, ProbeHandle};
use timely::worker::Worker;

use super::PartitionWatermarks;
use crate::checkpoint::{Manifest, Part, PartitionState, Store};
use crate::kafka::Offsets;
use crate::runtime::worker::PipelineWorker;
use crate::sink::dead_letters::DeadLetters;

/// One worker's side of the run's checkpoints.
pub struct Checkpoints {
    store: Store,
    interval: Duration,
    index: usize,
    peers: usize,
    process: usize,
    /// Worker 0: the newest complete checkpoint, which the next builds on
    /// (numbered after every manifest in the folder).
    manifest: Manifest,
    /// Worker 0: when the last checkpoint was asked for.
    asked_at: Instant,
    /// Worker 0: the checkpoint asked for and not yet complete.
    awaiting: Option<u64>,
    requests_input: Option<InputHandle<u64, u64>>,
    requests: Rc<RefCell<Vec<u64>>>,
    requests_probe: ProbeHandle<u64>,
    parts_input: Option<InputHandle<u64, Part>>,
    parts: Rc<RefCell<Vec<Part>>>,
    parts_probe: ProbeHandle<u64>,
    /// The users left out of the run (`PipelineWorker::forgotten`).
    forgotten: Rc<RefCell<HashSet<Id>>>,
    /// Worker 0: how many users were forgotten at the last checkpoint.
    forgotten_before: usize,
    /// Worker 0: how many of the next checkpoints rewrite the files of the
    /// earlier ones without the users forgotten since.
    rewrites_due: u8,
}

impl Checkpoints {
    /// Builds the requests' and parts' dataflows on `worker`; `base` is the
    /// checkpoint the run restarted from.
    pub fn new(
        worker: &mut Worker,
        store: Store,
        interval: Duration,
        process: usize,
        base: Option<Manifest>,
        forgotten: Rc<RefCell<HashSet<Id>>>,
    ) -> anyhow::Result<Checkpoints> {
        // Numbered after every manifest in the folder, also those that
        // could not be restored: pruning keeps the highest numbers.
        let mut manifest = base.unwrap_or_default();
        manifest.seq = manifest.seq.max(store.newest_seq()?);
        let mut requests_input: InputHandle<u64, u64> = InputHandle::new();
        let requests: Rc<RefCell<Vec<u64>>> = Rc::default();
        let requests_probe = ProbeHandle::new();
        let mut parts_input: InputHandle<u64, Part> = InputHandle::new();
        let parts: Rc<RefCell<Vec<Part>>> = Rc::default();
        let parts_probe = ProbeHandle::new();
        worker.dataflow::<u64, _, _>(|scope| {
            let asked = requests.clone();
            scope
                .input_from(&mut requests_input)
                .broadcast()
                .inspect(move |seq: &u64| asked.borrow_mut().push(*seq))
                .probe_with(&requests_probe);
            let gathered = parts.clone();
            scope
                .input_from(&mut parts_input)
                .exchange(|_| 0)
                .inspect(move |part: &Part| gathered.borrow_mut().push(part.clone()))
                .probe_with(&parts_probe);
        });
        Ok(Checkpoints {
            store,
            interval,
            index: worker.index(),
            peers: worker.peers(),
            process,
            manifest,
            asked_at: Instant::now(),
            awaiting: None,
            requests_input: Some(requests_input),
            requests,
            requests_probe,
            parts_input: Some(parts_input),
            parts,
            parts_probe,
            forgotten,
            // Users forgotten before this start may be in the base's files.
            forgotten_before: 0,
            rewrites_due: 0,
        })
    }

    /// Worker 0: asks every worker for the next checkpoint when one is due
    /// and the last is complete.
    pub fn ask_if_due(&mut self) {
        if self.index != 0 || self.awaiting.is_some() || self.asked_at.elapsed() < self.interval {
            return;
        }
        self.ask();
    }

    fn ask(&mut self) {
        let seq = self.awaiting.unwrap_or(self.manifest.seq) + 1;
        if let Some(input) = &mut self.requests_input {
            input.send(seq);
            // A new epoch pushes the records on: flush() alone leaves them
            // in an exchange's buffer until it fills.
            input.advance_to(input.time() + 1);
        }
        self.awaiting = Some(seq);
        self.asked_at = Instant::now();
    }

    /// Writes this worker's part of every checkpoint asked for since the
    /// last call: what it applied and wrote off since its last part, and
    /// where its partitions stand.
    pub fn write_asked(
        &mut self,
        pipeline: &mut PipelineWorker,
        dead: &mut DeadLetters,
        offsets: &Offsets,
        watermarks: &PartitionWatermarks,
        latest_tick: u64,
    ) -> anyhow::Result<()> {
        let asked = std::mem::take(&mut *self.requests.borrow_mut());
        for seq in asked {
            // Letters sent to the dead-letter topic are acknowledged before
            // a checkpoint holds their offsets.
            dead.flush()?;
            let records = pipeline.take_recorded();
            let letters = dead.take_captured();
            let (events, letters) =
                self.store
                    .write_part_files(seq, self.index, self.process, &records, &letters)?;
            let partitions = watermarks
                .latest()
                .map(|((topic, partition), latest_ms)| PartitionState {
                    topic: topic.clone(),
                    partition: *partition,
                    next_offset: offsets.get(&(topic.clone(), *partition)).copied(),
                    latest_ms,
                })
                .collect();
            let part = Part {
                seq,
                worker: self.index,
                events,
                letters,
                partitions,
                counts: pipeline.counts.clone(),
                latest_tick,
            };
            let input = self
                .parts_input
                .as_mut()
                .expect("parts are sent until the end");
            input.send(part);
            input.advance_to(input.time() + 1);
        }
        Ok(())
    }

    /// Worker 0: makes durable every checkpoint all workers have written
    /// their part of; returns their manifests, oldest first.
    pub fn complete(&mut self) -> anyhow::Result<Vec<Manifest>> {
        let mut done = Vec::new();
        loop {
            let seq = self.manifest.seq + 1;
            let mut parts = self.parts.borrow_mut();
            if parts.iter().filter(|p| p.seq == seq).count() < self.peers {
                break;
            }
            let (mut mine, rest): (Vec<Part>, Vec<Part>) =
                parts.drain(..).partition(|p| p.seq == seq);
            *parts = rest;
            drop(parts);
            mine.sort_by_key(|p| p.worker);
            let mut manifest = self.manifest.with_parts(seq, &mine);
            self.leave_out_forgotten(&mut manifest)?;
            let compacting = Instant::now();
            if let Some(compacted) = self.store.compact_if_due(&mut manifest)? {
                tracing::info!(
                    "checkpoint {seq} compacted {} files into {} in {:.1} ms: {} bytes",
                    compacted.read,
                    compacted.written,
                    compacting.elapsed().as_secs_f64() * 1e3,
                    compacted.bytes
                );
            }
            self.store.commit(&mut manifest)?;
            if self.awaiting == Some(seq) {
                self.awaiting = None;
            }
            // From the request to the durable manifest: every worker's
            // files written and synced, then the manifest.
            let (files, bytes) = mine
                .iter()
                .flat_map(|part| part.events.iter().chain(&part.letters))
                .fold((0, 0), |(files, bytes), file| {
                    (files + 1, bytes + file.bytes)
                });
            tracing::info!(
                "checkpoint {seq} written in {:.1} ms: {files} new files, {bytes} bytes",
                self.asked_at.elapsed().as_secs_f64() * 1e3
            );
            self.manifest = manifest.clone();
            done.push(manifest);
        }
        Ok(done)
    }

    /// Rewrites the event files `manifest` names without the users
    /// forgotten since the last checkpoint, at this checkpoint and the next:
    /// a worker that recorded an event of a user before it learnt of the
    /// forget may write it in its next part.
    fn leave_out_forgotten(&mut self, manifest: &mut Manifest) -> anyhow::Result<()> {
        let forgotten = self.forgotten.borrow();
        if forgotten.len() > self.forgotten_before {
            self.forgotten_before = forgotten.len();
            self.rewrites_due = 2;
        }
        if self.rewrites_due > 0 {
            self.rewrites_due -= 1;
            manifest.events =
                self.store
                    .without_users(manifest.seq, &manifest.events, &forgotten)?;
        }
        Ok(())
    }

    /// At the end of the run, once nothing more is read: the last
    /// checkpoint, of everything read, written by every worker and made
    /// durable by worker 0, whose manifests this returns.
    pub fn finish(
        &mut self,
        worker: &mut Worker,
        pipeline: &mut PipelineWorker,
        dead: &mut DeadLetters,
        offsets: &Offsets,
        watermarks: &PartitionWatermarks,
        latest_tick: u64,
    ) -> anyhow::Result<Vec<Manifest>> {
        if self.index == 0 {
            self.ask();
        }
        self.requests_input = None;
        while !self.requests_probe.done() {
            worker.step_or_park(Some(Duration::from_millis(1)));
            self.write_asked(pipeline, dead, offsets, watermarks, latest_tick)?;
        }
        self.write_asked(pipeline, dead, offsets, watermarks, latest_tick)?;
        self.parts_input = None;
        while !self.parts_probe.done() {
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
        self.complete()
    }
}
