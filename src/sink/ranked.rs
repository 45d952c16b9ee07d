//! Similar items and recommendations ranked from the state collaborative
//! filtering keeps exact ([`Graph::Ranked`]), by the code that answers
//! `persona serve` (`cf::on_demand::CfState`), so a replay's files and a
//! server's answers cannot disagree.
//!
//! Without a changelog or upsert topic only the final lists are written,
//! so they are ranked once, at the end. With one, every item and user is
//! ranked again at the end of each period (`recommend_tick_ms`), where the
//! dataflow's own rankings change (`Rankings::Dataflow`), and what changed
//! goes to the output as a retraction of the old list and an insertion of
//! the new, at the time the dataflow would give it.
//!
//! Ranked only at the end, the state is read by nothing before then, so
//! its changes are applied on a thread of its own beside the worker
//! ([`CfStateApplier`]): on a replay or a restart that was a fifth of worker
//! 0's time, and the machine's other cores had it to spare. For the same
//! reason a ranking of every item and user, which only reads the state, is
//! split over the cores (`parallel::in_shares`).
//!
//! [`Graph::Ranked`]: crate::runtime::pipeline::Graph::Ranked

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

use persona_dataflows::cf::on_demand::{CfState, StateUpdate};
use persona_dataflows::cf::recommend::Recommendations;
use persona_dataflows::cf::similarity::SimilarItems;
use persona_dataflows::cf::CfConfig;
use persona_dataflows::Id;
use rustc_hash::FxHashMap as HashMap;

use super::{take_ready_at, OutputRecord, OutputSink, Pending, Sink, Upto};
use crate::config::end_of_period;
use crate::names::Names;
use crate::parallel;

/// When the rankings change: at the end of each period of `period` ms, or
/// at every tick when the period is no longer than one.
#[derive(Clone, Copy, Debug)]
pub struct Periods {
    pub period: u64,
    pub tick_ms: u64,
}

impl Periods {
    /// The time the rankings of the state at `time` are given at.
    fn change_time(self, time: u64) -> u64 {
        if self.period <= self.tick_ms {
            time
        } else {
            end_of_period(time, self.period)
        }
    }
}

/// The gathered state, applied as times complete, shared by the two sinks.
pub struct RankedState {
    pending: Pending<StateUpdate>,
    cf: CfStateApplier,
    config: CfConfig,
    periods: Periods,
    /// Whether the lists are ranked at the end of each period (a changelog
    /// or upsert topic reads them), or only at the end.
    per_period: bool,
    similar_items: Ranking<SimilarItems>,
    recommendations: Ranking<Recommendations>,
    /// Without a ranking per period: whether the final lists are ranked.
    ranked_at_end: bool,
    /// The threads a ranking of every item and user is split over.
    ranking_threads: usize,
    /// The change time of the period whose updates are applied but not
    /// yet ranked.
    open_period: Option<u64>,
}

/// One output's lists as last ranked, and where their changes go.
struct Ranking<D> {
    lists: HashMap<Id, D>,
    changes: Pending<D>,
}

impl<D: OutputRecord + PartialEq> Ranking<D> {
    fn new(changes: Pending<D>) -> Self {
        Ranking {
            lists: HashMap::default(),
            changes,
        }
    }

    /// Replaces the lists with `lists`, giving what changed at `time`.
    fn replace(&mut self, lists: HashMap<Id, D>, time: u64) {
        let mut changes = self.changes.borrow_mut();
        for (key, old) in &self.lists {
            if lists.get(key) != Some(old) {
                changes.push((old.clone(), time, -1));
            }
        }
        for (key, new) in &lists {
            if self.lists.get(key) != Some(new) {
                changes.push((new.clone(), time, 1));
            }
        }
        self.lists = lists;
    }
}

impl RankedState {
    /// The state of `pending`, ranked into `similar_items` and
    /// `recommendations` (the pendings their [`OutputSink`]s drain). With
    /// `beside`, what need not run on the worker's thread does not: without
    /// a ranking per period the changes are applied on a thread of their
    /// own until the final ranking, and each ranking of every item and user
    /// is split over the machine's cores.
    pub fn new(
        pending: Pending<StateUpdate>,
        config: CfConfig,
        periods: Periods,
        per_period: bool,
        beside: bool,
        similar_items: Pending<SimilarItems>,
        recommendations: Pending<Recommendations>,
    ) -> RankedState {
        RankedState {
            pending,
            cf: if beside && !per_period {
                CfStateApplier::behind()
            } else {
                CfStateApplier::Here(Box::default())
            },
            config,
            periods,
            per_period,
            similar_items: Ranking::new(similar_items),
            recommendations: Ranking::new(recommendations),
            ranked_at_end: false,
            ranking_threads: if beside { parallel::cores() } else { 1 },
            open_period: None,
        }
    }

    /// Applies the complete updates; per period, ranks the state at the
    /// end of each period they complete. The updates are applied as their
    /// ticks complete, a period's before the next one's, so they never
    /// wait in `pending` for the end of their period.
    fn drain(&mut self, upto: Upto) {
        if !self.per_period {
            self.cf.apply(take_ready_at(&self.pending, upto));
            return;
        }
        let mut ready = take_ready_at(&self.pending, upto);
        ready.sort_by_key(|(_, time, _)| *time);
        let mut period: Vec<(StateUpdate, isize)> = Vec::new();
        for (update, time, diff) in ready {
            let change = self.periods.change_time(time);
            if let Some(open) = self.open_period.filter(|&open| open < change) {
                // A later period begins: this one's state is complete.
                self.apply(&mut period);
                self.rank(open);
            }
            self.open_period = Some(change);
            period.push((update, diff));
        }
        self.apply(&mut period);
        match (upto, self.open_period) {
            (Upto::Before(frontier), Some(open)) if open < frontier => {
                self.rank(open);
                self.open_period = None;
            }
            // The end of the input ends its period (as the dataflow's
            // `cf_events` releases it).
            (Upto::End(end), Some(open)) => {
                self.rank(open.min(end));
                self.open_period = None;
            }
            _ => {}
        }
    }

    /// Applies the updates of one period and empties them.
    fn apply(&mut self, updates: &mut Vec<(StateUpdate, isize)>) {
        self.cf
            .settled()
            .apply_changes(updates.iter().map(|(update, diff)| (update, *diff)));
        updates.clear();
    }

    /// Ranks the periods complete before `frontier`, and drops the
    /// changes (the bench: the ranking is the work it times).
    pub fn rank_until(&mut self, frontier: u64) {
        self.drain(Upto::Before(frontier));
        self.similar_items.changes.borrow_mut().clear();
        self.recommendations.changes.borrow_mut().clear();
    }

    /// Ranks every item and user again, giving the changes at `time`.
    fn rank(&mut self, time: u64) {
        let (similar_items, recommendations) = self.ranked();
        self.similar_items.replace(similar_items, time);
        self.recommendations.replace(recommendations, time);
    }

    /// Every item's and user's list as the files hold them (those not
    /// empty), from the state as it is.
    fn ranked(&mut self) -> (HashMap<Id, SimilarItems>, HashMap<Id, Recommendations>) {
        let threads = self.ranking_threads;
        let (cf, config) = (&*self.cf.settled(), &self.config);
        let similar_items = lists(cf.items(), threads, |item| {
            let list = cf.similar_items(item, config.neighbors, config);
            (!list.neighbors.is_empty()).then_some(list)
        });
        // Each item's neighbours ranked once, for every user.
        let neighbors = |item| {
            similar_items
                .get(&item)
                .map(|list| list.neighbors.clone())
                .unwrap_or_default()
        };
        let recommendations = lists(cf.users(), threads, |user| {
            let list = cf.recommendations_with(user, config.top_k, config, neighbors);
            (!list.items.is_empty()).then_some(list)
        });
        (similar_items, recommendations)
    }

    /// Without a ranking per period: ranks the final lists, once.
    pub fn rank_at_end(&mut self) {
        if !self.per_period && !self.ranked_at_end {
            let (similar_items, recommendations) = self.ranked();
            self.similar_items.lists = similar_items;
            self.recommendations.lists = recommendations;
            self.ranked_at_end = true;
        }
    }
}

/// The list of each of `keys` that has one, ranked over `threads` threads.
fn lists<D: Send>(
    keys: impl Iterator<Item = Id>,
    threads: usize,
    list: impl Fn(Id) -> Option<D> + Sync,
) -> HashMap<Id, D> {
    let keys: Vec<Id> = keys.collect();
    parallel::in_shares(&keys, threads, |keys| {
        keys.iter()
            .filter_map(|&key| Some((key, list(key)?)))
            .collect()
    })
    .into_iter()
    .collect()
}

/// The state the lists are ranked from: here, or being built by a thread
/// that applies the changes sent to it in the order sent, so it ends as
/// the same state.
enum CfStateApplier {
    Here(Box<CfState>),
    Behind {
        changes: SyncSender<Vec<(StateUpdate, u64, isize)>>,
        thread: JoinHandle<CfState>,
    },
}

impl CfStateApplier {
    /// A thread of its own, a few batches of changes behind at most.
    fn behind() -> CfStateApplier {
        let (changes, received) = sync_channel::<Vec<(StateUpdate, u64, isize)>>(4);
        let thread = std::thread::Builder::new()
            .name("persona:cf-state".to_string())
            .spawn(move || {
                let mut cf = CfState::default();
                for ready in received {
                    cf.apply_updates(&ready);
                }
                cf
            })
            .expect("cannot start the thread that applies the ranking state's changes");
        CfStateApplier::Behind { changes, thread }
    }

    fn apply(&mut self, ready: Vec<(StateUpdate, u64, isize)>) {
        if ready.is_empty() {
            return;
        }
        match self {
            CfStateApplier::Here(cf) => {
                cf.apply_updates(&ready);
            }
            CfStateApplier::Behind { changes, .. } => {
                if changes.send(ready).is_err() {
                    // The thread is gone: joining it raises its panic here.
                    self.settled();
                }
            }
        }
    }

    /// The state with every change sent applied, the thread joined.
    fn settled(&mut self) -> &mut CfState {
        if let CfStateApplier::Behind { .. } = self {
            let CfStateApplier::Behind { changes, thread } =
                std::mem::replace(self, CfStateApplier::Here(Box::default()))
            else {
                unreachable!()
            };
            drop(changes);
            match thread.join() {
                Ok(cf) => *self = CfStateApplier::Here(Box::new(cf)),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        match self {
            CfStateApplier::Here(cf) => cf,
            CfStateApplier::Behind { .. } => unreachable!("settled above"),
        }
    }
}

/// `similar_items.jsonl` or `recommendations.jsonl`, ranked from the
/// shared [`RankedState`].
pub struct RankedSink<D> {
    state: Rc<RefCell<RankedState>>,
    file: OutputSink<D>,
    /// This output's lists in the state.
    lists: fn(&RankedState) -> &HashMap<Id, D>,
}

impl RankedSink<SimilarItems> {
    /// `similar_items.jsonl`; `file`'s pending updates are the state's
    /// changes of similar items.
    pub fn similar_items(state: Rc<RefCell<RankedState>>, file: OutputSink<SimilarItems>) -> Self {
        let lists: fn(&RankedState) -> &HashMap<Id, SimilarItems> =
            |state| &state.similar_items.lists;
        RankedSink { state, file, lists }
    }
}

impl RankedSink<Recommendations> {
    /// `recommendations.jsonl`; `file`'s pending updates are the state's
    /// changes of recommendations.
    pub fn recommendations(
        state: Rc<RefCell<RankedState>>,
        file: OutputSink<Recommendations>,
    ) -> Self {
        let lists: fn(&RankedState) -> &HashMap<Id, Recommendations> =
            |state| &state.recommendations.lists;
        RankedSink { state, file, lists }
    }
}

impl<D: OutputRecord> Sink for RankedSink<D> {
    fn drain(&mut self, upto: Upto, names: &dyn Names) -> io::Result<()> {
        self.state.borrow_mut().drain(upto);
        self.file.drain(upto, names)
    }

    fn finish(&mut self, names: &dyn Names) -> io::Result<Vec<(String, usize)>> {
        let mut state = self.state.borrow_mut();
        if !state.per_period {
            // Nothing reads the changes: the final lists go in directly.
            state.rank_at_end();
            self.file.insert((self.lists)(&state).values().cloned());
        }
        drop(state);
        self.file.finish(names)
    }

    fn record_count(&self) -> usize {
        self.file.record_count()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    fn reconcile(&mut self) -> io::Result<usize> {
        self.file.reconcile()
    }
}
