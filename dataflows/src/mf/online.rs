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
//! - with `rows` (`[recommend] mf_weight > 0`), every row of the model
//!   that changed ([`MfRow`]: the users of the time's events, the items
//!   they and the sampled negatives touched), which the on-demand rankings
//!   blend with co-occurrence (`cf::on_demand`).

use std::collections::BTreeMap;

use differential_dataflow::collection::AsCollection;
use differential_dataflow::VecCollection;
use rustc_hash::FxHashMap as HashMap;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::{Capability, InputCapability};

use super::{Factors, MfConfig, MfModel, MfRow};
use crate::event::ActionWeights;
use crate::profile::Profile;
use crate::{Event, EventTime, Id};

/// What arrived for one time: profile changes and events.
type Arrived = (Vec<((Id, Profile), isize)>, Vec<(Event, i64)>);

/// What [`train`] gives: each output only when asked for.
pub struct Trained<'s, T: EventTime> {
    /// The profiles, with `factors`.
    pub profiles: Option<VecCollection<'s, T, (Id, Profile)>>,
    /// The model's rows as they change.
    pub rows: Option<VecCollection<'s, T, MfRow>>,
}

/// The model trained on `events`: see the module documentation. `profiles`
/// come back with `factors`, and with `rows` the model's changed rows.
/// `weights` decide which actions teach the model and how strongly.
///
/// # Panics
///
/// When `config` does not pass [`MfConfig::validate`], at construction.
pub fn train<'s, T: EventTime>(
    events: VecCollection<'s, T, Event>,
    profiles: Option<VecCollection<'s, T, (Id, Profile)>>,
    rows: bool,
    config: &MfConfig,
    weights: &ActionWeights,
) -> Trained<'s, T> {
    if let Err(error) = config.validate() {
        panic!("{error}");
    }
    let mut model = MfModel::new(config, weights);
    if rows {
        model = model.tracking_changes();
    }
    let with_profiles = profiles.is_some();
    let mut builder = OperatorBuilder::new("Factorisation".to_string(), events.scope());
    let mut events_input = builder.new_input(events.inner, Exchange::new(|_| 0u64));
    let mut profiles_input =
        profiles.map(|profiles| builder.new_input(profiles.inner, Exchange::new(|_| 0u64)));
    let (profiles_output, profiles_stream) = builder.new_output();
    let mut profiles_output =
        OutputBuilder::<_, CapacityContainerBuilder<_>>::from(profiles_output);
    let (rows_output, rows_stream) = builder.new_output();
    let mut rows_output = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(rows_output);
    builder.build(move |_| {
        let mut arrived: BTreeMap<T, Arrived> = BTreeMap::new();
        let mut held: Option<Capability<T>> = None;
        let mut users: HashMap<Id, Profile> = HashMap::default();
        // Each item's row as last sent, to retract it when it changes.
        let mut sent_items: HashMap<Id, Factors> = HashMap::default();
        move |frontiers| {
            if let Some(profiles_input) = profiles_input.as_mut() {
                profiles_input.for_each_stamp(|capability, containers| {
                    hold_earliest(&mut held, &capability);
                    for container in containers {
                        for (record, time, diff) in container.drain(..) {
                            arrived.entry(time).or_default().0.push((record, diff));
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
                            .1
                            .push((event, diff as i64));
                    }
                }
            });
            let Some(at) = held.as_ref() else {
                return;
            };
            let mut profiles_output = profiles_output.activate();
            let mut profiles_session = profiles_output.session(at);
            let mut rows_output = rows_output.activate();
            let mut rows_session = rows_output.session(at);
            while let Some(entry) = arrived.first_entry() {
                if frontiers
                    .iter()
                    .any(|f| f.frontier().less_equal(entry.key()))
                {
                    break;
                }
                let (now, (changes, mut events)) = entry.remove_entry();
                // Per user touched, in id order: their factors before this
                // time, and whether their profile changed.
                let factors = |model: &MfModel, user: Id| {
                    model.user_factors(user).map(|f| Factors(f.to_vec()))
                };
                let mut touched: BTreeMap<Id, (Option<Factors>, bool)> = BTreeMap::new();
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
                model.train(&mut events);
                // Users whose line changes: the profile or the factors moved.
                let moved: Vec<(Id, Option<Factors>, Option<Factors>)> = touched
                    .into_iter()
                    .map(|(user, (before, changed))| (user, before, changed, factors(&model, user)))
                    .filter(|(_, before, changed, after)| *changed || before != after)
                    .map(|(user, before, _, after)| (user, before, after))
                    .collect();
                if rows {
                    for (user, before, after) in moved.iter().filter(|(_, b, a)| b != a) {
                        let row = |factors: &Option<Factors>| {
                            factors.clone().map(|factors| MfRow::User(*user, factors))
                        };
                        rows_session.give_iterator(
                            [(row(before), -1), (row(after), 1)]
                                .into_iter()
                                .filter_map(|(row, diff)| Some((row?, now.clone(), diff))),
                        );
                    }
                    for item in model.take_changed_items() {
                        let (bias, q) = model.item_factors(item).expect("a trained item");
                        let row = Factors([bias].into_iter().chain(q.iter().copied()).collect());
                        match sent_items.insert(item, row.clone()) {
                            Some(old) if old == row => continue,
                            Some(old) => {
                                rows_session.give((MfRow::Item(item, old), now.clone(), -1))
                            }
                            None => {}
                        }
                        rows_session.give((MfRow::Item(item, row), now.clone(), 1));
                    }
                }
                if !with_profiles {
                    continue;
                }
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
            drop((profiles_session, rows_session));
            match arrived.keys().next() {
                Some(time) => held.as_mut().expect("held above").downgrade(time),
                None => held = None,
            }
        }
    });
    Trained {
        profiles: with_profiles.then(|| profiles_stream.as_collection()),
        rows: rows.then(|| rows_stream.as_collection()),
    }
}

/// Keeps the capability of the earliest message so far.
fn hold_earliest<T: EventTime>(held: &mut Option<Capability<T>>, capability: &InputCapability<T>) {
    let Some(least) = capability.least() else {
        return;
    };
    if held.as_ref().is_none_or(|held| least < held.time()) {
        *held = capability.retain_least(0);
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
