//! The factorisation trained inside the dataflow, as events arrive.
//!
//! One operator on worker 0 holds the model, as k-means holds its (the
//! model is global, and SGD steps do not commute): at each completed time
//! it trains on that time's events with [`MfModel::train`] (canonical
//! order, seeded sampler). So the model at a time is the one trained time
//! after time on the log so far, the same bits for any number of workers:
//! `dataflows/tests/mf_oracle.rs` trains the plain model the same way and
//! compares. What it gives, at the time it trained:
//!
//! - with profiles (`[recommend.mf] embeddings`), the profile of every
//!   user whose profile or factors changed, again, now with `factors` (it
//!   holds each user's current profile, to emit it again when only the
//!   factors move);
//! - with rows (`[recommend] mf_weight > 0`), every row of the model that
//!   changed ([`MfRow`]: the users of the events, the items they and the
//!   sampled negatives touched), which the on-demand rankings blend with
//!   co-occurrence (`cf::on_demand`): at every time trained, or, when the
//!   rankings read the state only at the end of each period
//!   ([`Rows::PerPeriod`]), once per period, at its end. A row that changed
//!   a thousand times in a period is then sent once, not a thousand times,
//!   and the state at a period's end is the same.
//!
//! With `forgotten` (users forgotten while serving or running), it keeps
//! every event trained, and a time that forgets users trains the model
//! again from the start on the events kept without theirs, time by time,
//! before that time's own events: SGD steps cannot be undone one by one,
//! and the model is then the one a replay without them trains. Every row
//! and profile line that moved is given again; the rows of users and items
//! only the forgotten touched are retracted.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use differential_dataflow::collection::AsCollection;
use differential_dataflow::VecCollection;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;

use super::{Factors, MfConfig, MfModel, MfRow};
use crate::event::ActionWeights;
use crate::profile::Profile;
use crate::time::hold_earliest;
use crate::{Event, EventTime, Id};

/// What arrived for one time.
#[derive(Default)]
struct Arrived {
    changes: Vec<((Id, Profile), isize)>,
    events: Vec<(Event, i64)>,
    /// Users forgotten at this time.
    forgotten: Vec<Id>,
}

/// Whether and when [`train`] gives the model's changed rows.
pub enum Rows<T> {
    /// Not at all.
    Never,
    /// At every time trained: serving reads the state at every tick.
    EveryTime,
    /// Once per period of `period_ms`, at its last time, the rows that
    /// changed during it: a replay ranks the state only there. Once
    /// `input_end` knows the end of the input, the period open then ends
    /// there instead (as the rankings' own periods do), so nothing waits
    /// for a time past the input.
    PerPeriod {
        period_ms: u64,
        input_end: Rc<dyn Fn() -> Option<T>>,
    },
}

impl<T> Rows<T> {
    fn given(&self) -> bool {
        !matches!(self, Rows::Never)
    }
}

/// What [`train`] gives: each output only when asked for.
pub struct Trained<'s, T: EventTime> {
    /// The profiles, with `factors`.
    pub profiles: Option<VecCollection<'s, T, (Id, Profile)>>,
    /// The model's rows as they change.
    pub rows: Option<VecCollection<'s, T, MfRow>>,
}

/// The model trained on `events`: see the module documentation. `profiles`
/// come back with `factors`, and as `rows` says the model's changed rows.
/// `weights` decide which actions teach the model and how strongly. Users
/// in `forgotten` (a set: each at most once) are untrained when they come.
///
/// # Panics
///
/// When `config` does not pass [`MfConfig::validate`], at construction.
pub fn train<'s, T: EventTime>(
    events: VecCollection<'s, T, Event>,
    forgotten: Option<VecCollection<'s, T, Id>>,
    profiles: Option<VecCollection<'s, T, (Id, Profile)>>,
    rows: Rows<T>,
    config: &MfConfig,
    weights: &ActionWeights,
) -> Trained<'s, T> {
    if let Err(error) = config.validate() {
        panic!("{error}");
    }
    let mut model = MfModel::new(config, weights);
    let with_rows = rows.given();
    if with_rows {
        model = model.tracking_changes();
    }
    let with_profiles = profiles.is_some();
    // Every event trained, kept to train again without forgotten users.
    let mut history: Option<Vec<Vec<(Event, i64)>>> = forgotten.is_some().then(Vec::new);
    let blank = model.clone();
    let mut builder = OperatorBuilder::new("Factorisation".to_string(), events.scope());
    let mut events_input = builder.new_input(events.inner, Exchange::new(|_| 0u64));
    let mut profiles_input =
        profiles.map(|profiles| builder.new_input(profiles.inner, Exchange::new(|_| 0u64)));
    let mut forgotten_input =
        forgotten.map(|users| builder.new_input(users.inner, Exchange::new(|_| 0u64)));
    let (profiles_output, profiles_stream) = builder.new_output();
    let mut profiles_output =
        OutputBuilder::<_, CapacityContainerBuilder<_>>::from(profiles_output);
    let (rows_output, rows_stream) = builder.new_output();
    let mut rows_output = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(rows_output);
    builder.build(move |mut initial| {
        let mut arrived: BTreeMap<T, Arrived> = BTreeMap::new();
        // The earliest time arrived, for each output.
        let mut held: Option<[Capability<T>; 2]> = None;
        let mut users: HashMap<Id, Profile> = HashMap::default();
        let mut given = Given::default();
        let mut forgotten: HashSet<Id> = HashSet::default();
        // Per period: the rows' capability at the input frontier, to end
        // the open period at the end of the input, and the open period's
        // last time, where its rows go.
        let mut floor = matches!(rows, Rows::PerPeriod { .. }).then(|| initial.swap_remove(1));
        let mut open: Option<Capability<T>> = None;
        move |frontiers| {
            if let Some(profiles_input) = profiles_input.as_mut() {
                profiles_input.for_each_stamp(|capability, containers| {
                    hold_earliest(&mut held, &capability);
                    for container in containers {
                        for (record, time, diff) in container.drain(..) {
                            arrived
                                .entry(time)
                                .or_default()
                                .changes
                                .push((record, diff));
                        }
                    }
                });
            }
            events_input.for_each_stamp(|capability, containers| {
                hold_earliest(&mut held, &capability);
                for container in containers {
                    for (event, time, diff) in container.drain(..) {
                        arrived
                            .entry(time)
                            .or_default()
                            .events
                            .push((event, diff as i64));
                    }
                }
            });
            if let Some(forgotten_input) = forgotten_input.as_mut() {
                forgotten_input.for_each_stamp(|capability, containers| {
                    hold_earliest(&mut held, &capability);
                    for container in containers {
                        for (user, time, diff) in container.drain(..) {
                            if diff > 0 {
                                arrived.entry(time).or_default().forgotten.push(user);
                            }
                        }
                    }
                });
            }
            let mut rows_output = rows_output.activate();
            if let (Rows::PerPeriod { input_end, .. }, Some(at)) = (&rows, &open) {
                // The end of the input ends the open period.
                if let (Some(end), Some(floor)) = (input_end(), &floor) {
                    let end = end.max(floor.time().clone());
                    if end < *at.time() {
                        open = Some(floor.delayed(&end));
                    }
                }
            }
            let complete = |time: &T| !frontiers.iter().any(|f| f.frontier().less_equal(time));
            if let Some([profiles_at, rows_at]) = held.as_ref() {
                let mut profiles_output = profiles_output.activate();
                let mut profiles_session = profiles_output.session(profiles_at);
                while let Some(entry) = arrived.first_entry() {
                    if !complete(entry.key()) {
                        break;
                    }
                    let (now, arrived) = entry.remove_entry();
                    let Arrived {
                        changes,
                        mut events,
                        forgotten: newly_forgotten,
                    } = arrived;
                    let untrain = !newly_forgotten.is_empty();
                    forgotten.extend(newly_forgotten);
                    if !forgotten.is_empty() {
                        // Their events of this time: the retractions of a forget.
                        events.retain(|(event, _)| !forgotten.contains(&event.user));
                    }
                    if let Some(at) = open.take_if(|at| *at.time() < now) {
                        let rows = given.take(&mut model, at.time());
                        rows_output.session(&at).give_iterator(rows.into_iter());
                    }
                    // Per user touched, in id order: their factors before this
                    // time, and whether their profile changed.
                    let factors = |model: &MfModel, user: Id| {
                        model.user_factors(user).map(|f| Factors(f.to_vec()))
                    };
                    let mut touched: BTreeMap<Id, (Option<Factors>, bool)> = BTreeMap::new();
                    if with_profiles {
                        if untrain {
                            for user in users.keys() {
                                touched.insert(*user, (factors(&model, *user), false));
                            }
                        }
                        for (event, _) in &events {
                            touched
                                .entry(event.user)
                                .or_insert_with(|| (factors(&model, event.user), false));
                        }
                        for ((user, _), _) in &changes {
                            touched
                                .entry(*user)
                                .or_insert_with(|| (factors(&model, *user), false))
                                .1 = true;
                        }
                    }
                    if with_rows {
                        given
                            .users
                            .extend(events.iter().map(|(event, _)| event.user));
                    }
                    if let Some(history) = history.as_mut() {
                        if untrain {
                            model = blank.clone();
                            for events in history.iter_mut() {
                                events.retain(|(event, _)| !forgotten.contains(&event.user));
                                model.train(events);
                            }
                            history.retain(|events| !events.is_empty());
                            given.all = true;
                        }
                    }
                    model.train(&mut events);
                    match &rows {
                        Rows::Never => {}
                        Rows::EveryTime => {
                            let rows = given.take(&mut model, &now);
                            rows_output.session(rows_at).give_iterator(rows.into_iter());
                        }
                        Rows::PerPeriod {
                            period_ms,
                            input_end,
                        } => {
                            if open.is_none() && (!events.is_empty() || untrain) {
                                let last = now.end_of_period(*period_ms);
                                let last = match input_end() {
                                    Some(end) => last.min(end).max(now.clone()),
                                    None => last,
                                };
                                open = Some(rows_at.delayed(&last));
                            }
                        }
                    }
                    if let Some(history) = history.as_mut().filter(|_| !events.is_empty()) {
                        history.push(events);
                    }
                    if !with_profiles {
                        continue;
                    }
                    // Users whose line changes: the profile or the factors moved.
                    let moved: Vec<(Id, Option<Factors>, Option<Factors>)> = touched
                        .into_iter()
                        .map(|(user, (before, changed))| {
                            (user, before, changed, factors(&model, user))
                        })
                        .filter(|(_, before, changed, after)| *changed || before != after)
                        .map(|(user, before, _, after)| (user, before, after))
                        .collect();
                    for (user, before, _) in &moved {
                        if let Some(profile) = users.get(user) {
                            let line = with_factors(profile, before.clone());
                            profiles_session.give(((*user, line), now.clone(), -1));
                        }
                    }
                    for ((user, profile), diff) in sorted(changes) {
                        match diff < 0 {
                            true => users.remove(&user),
                            false => users.insert(user, profile),
                        };
                    }
                    for (user, _, after) in moved {
                        if let Some(profile) = users.get(&user) {
                            profiles_session.give((
                                (user, with_factors(profile, after)),
                                now.clone(),
                                1,
                            ));
                        }
                    }
                }
            }
            if let Some(at) = open.take_if(|at| complete(at.time())) {
                let rows = given.take(&mut model, at.time());
                rows_output.session(&at).give_iterator(rows.into_iter());
            }
            match arrived.keys().next() {
                Some(time) => held
                    .iter_mut()
                    .flatten()
                    .for_each(|held| held.downgrade(time)),
                None => held = None,
            }
            let least = frontiers
                .iter()
                .filter_map(|f| f.frontier().first().cloned())
                .min();
            match least {
                Some(least) => floor.iter_mut().for_each(|floor| floor.downgrade(&least)),
                None => floor = None,
            }
        }
    });
    Trained {
        profiles: with_profiles.then(|| profiles_stream.as_collection()),
        rows: with_rows.then(|| rows_stream.as_collection()),
    }
}

/// The rows given to the rankings, to retract each when it changes, and
/// the users trained on since.
#[derive(Default)]
struct Given {
    /// Each user's row and each item's (bias, then factors) as last given.
    user_rows: HashMap<Id, Factors>,
    item_rows: HashMap<Id, Factors>,
    /// The users of the events trained on since the rows were last given.
    users: BTreeSet<Id>,
    /// Whether the model was trained again from the start since: then
    /// every row is compared.
    all: bool,
}

impl Given {
    /// Every row that changed since last given, as a retraction of the
    /// old row and an insertion of the new, at `time`.
    fn take<T: EventTime>(&mut self, model: &mut MfModel, time: &T) -> Vec<(MfRow, T, isize)> {
        let mut changes = Vec::new();
        let mut users = std::mem::take(&mut self.users);
        let mut items = model.take_changed_items();
        if std::mem::take(&mut self.all) {
            // A new model: its items are all changed, and its users are
            // those given before and those trained on since.
            users.extend(self.user_rows.keys());
            items.extend(self.item_rows.keys());
            items.sort_unstable();
            items.dedup();
        }
        for user in users {
            match model.user_factors(user) {
                Some(row) => replace(&mut self.user_rows, user, row, MfRow::User, &mut changes),
                None => retract(&mut self.user_rows, user, MfRow::User, &mut changes),
            }
        }
        for item in items {
            match model.item_factors(item) {
                Some((bias, q)) => {
                    let row: Vec<f32> = [bias].into_iter().chain(q.iter().copied()).collect();
                    replace(&mut self.item_rows, item, &row, MfRow::Item, &mut changes);
                }
                None => retract(&mut self.item_rows, item, MfRow::Item, &mut changes),
            }
        }
        changes
            .into_iter()
            .map(|(row, diff)| (row, time.clone(), diff))
            .collect()
    }
}

/// Records `row` as `id`'s, pushing the change if it differs from the
/// row given before.
fn replace(
    given: &mut HashMap<Id, Factors>,
    id: Id,
    row: &[f32],
    as_row: fn(Id, Factors) -> MfRow,
    changes: &mut Vec<(MfRow, isize)>,
) {
    let row = Factors(row.to_vec());
    match given.get_mut(&id) {
        Some(old) if *old == row => {}
        Some(old) => {
            let old = std::mem::replace(old, row.clone());
            changes.extend([(as_row(id, old), -1), (as_row(id, row), 1)]);
        }
        None => {
            given.insert(id, row.clone());
            changes.push((as_row(id, row), 1));
        }
    }
}

/// Retracts the row given as `id`'s, if any: the model no longer has it.
fn retract(
    given: &mut HashMap<Id, Factors>,
    id: Id,
    as_row: fn(Id, Factors) -> MfRow,
    changes: &mut Vec<(MfRow, isize)>,
) {
    if let Some(old) = given.remove(&id) {
        changes.push((as_row(id, old), -1));
    }
}

/// Profile changes with each user's retraction before their insertion.
fn sorted(mut changes: Vec<((Id, Profile), isize)>) -> Vec<((Id, Profile), isize)> {
    changes.sort_unstable_by(|((a, _), da), ((b, _), db)| (a, da).cmp(&(b, db)));
    changes
}

fn with_factors(profile: &Profile, factors: Option<Factors>) -> Profile {
    Profile {
        factors,
        ..profile.clone()
    }
}
