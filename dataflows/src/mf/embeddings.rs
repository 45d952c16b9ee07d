//! The factorisation trained inside the dataflow: each profile carries the
//! user's factor vector as the model stands after the events of its time.
//!
//! One operator on worker 0 holds the model, as k-means holds its (the
//! model is global, and SGD steps do not commute): at each completed time
//! it trains on that time's events with [`MfModel::train`] (canonical
//! order, seeded sampler), then emits again the profile of every user whose
//! profile or factors changed. So the factors at a time are those of a
//! model trained time after time on the log so far, the same bits for any
//! number of workers: `dataflows/tests/mf_oracle.rs` trains the plain model
//! the same way and compares. It holds each user's current profile, to
//! emit it again when only the factors move.

use std::collections::BTreeMap;

use differential_dataflow::collection::AsCollection;
use differential_dataflow::VecCollection;
use rustc_hash::FxHashMap as HashMap;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::{Capability, InputCapability};

use super::{Factors, MfConfig, MfModel};
use crate::event::ActionWeights;
use crate::profile::Profile;
use crate::{Event, EventTime, Id};

/// What arrived for one time: profile changes and events.
type Arrived = (Vec<((Id, Profile), isize)>, Vec<(Event, i64)>);

/// `profiles` with `factors`: see the module documentation. `weights`
/// decide which actions teach the model and how strongly.
///
/// # Panics
///
/// When `config` does not pass [`MfConfig::validate`], at construction.
pub fn embeddings<'s, T: EventTime>(
    profiles: VecCollection<'s, T, (Id, Profile)>,
    events: VecCollection<'s, T, Event>,
    config: &MfConfig,
    weights: &ActionWeights,
) -> VecCollection<'s, T, (Id, Profile)> {
    if let Err(error) = config.validate() {
        panic!("{error}");
    }
    let mut model = MfModel::new(config, weights);
    let mut builder = OperatorBuilder::new("Embeddings".to_string(), profiles.scope());
    let mut profiles_input = builder.new_input(profiles.inner, Exchange::new(|_| 0u64));
    let mut events_input = builder.new_input(events.inner, Exchange::new(|_| 0u64));
    let (output, stream) = builder.new_output();
    let mut output = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(output);
    builder.build(move |_| {
        let mut arrived: BTreeMap<T, Arrived> = BTreeMap::new();
        let mut held: Option<Capability<T>> = None;
        let mut users: HashMap<Id, Profile> = HashMap::default();
        move |frontiers| {
            profiles_input.for_each_stamp(|capability, containers| {
                hold_earliest(&mut held, &capability);
                for container in containers {
                    for (record, time, diff) in container.drain(..) {
                        arrived.entry(time).or_default().0.push((record, diff));
                    }
                }
            });
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
            let mut output = output.activate();
            let mut session = output.session(at);
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
                for (user, before, _) in &moved {
                    if let Some(profile) = users.get(user) {
                        let line = with_factors(profile, before.clone());
                        session.give(((*user, line), now.clone(), -1));
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
                        session.give(((user, with_factors(profile, after)), now.clone(), 1));
                    }
                }
            }
            drop(session);
            match arrived.keys().next() {
                Some(time) => held.as_mut().expect("held above").downgrade(time),
                None => held = None,
            }
        }
    });
    stream.as_collection()
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
