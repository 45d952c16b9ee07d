//! Oracle tests of the factorisation trained in the dataflow
//! (`mf::online`): seeded random event streams with retractions fed in
//! batches to `profile::profiles` then `mf::online::train` on 1, 2 and 4
//! workers. At every batch end each profile's `factors` equal those of a
//! plain `MfModel` trained time after time on the log so far, the rest of
//! the profile is the reference's, and every worker count gives the same
//! updates, bit for bit. The model's rows, in the state the on-demand
//! rankings read, rebuild that plain model exactly, and a blend ranks from
//! it.
//!
//! Run: `cargo test -p persona-dataflows --release --test mf_oracle`.

mod common;

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use differential_dataflow::input::Input;
use timely::dataflow::operators::capture::{Capture, Extract};

use persona_dataflows::cf::on_demand::{state_updates, CfState, StateUpdate};
use persona_dataflows::cf::recommend::{blend, BLEND_CANDIDATES};
use persona_dataflows::cf::CfConfig;
use persona_dataflows::event::ActionWeights;
use persona_dataflows::mf::online::Rows;
use persona_dataflows::mf::{online, Factors, MfConfig, MfModel};
use persona_dataflows::profile::{profiles, Profile, ProfileConfig};
use persona_dataflows::{reference, Action, Event, Id};

use common::{at_time, feed_shares, flatten, without, Rng, Update};

const HOUR_MS: u64 = 3_600_000;
const BASE_MS: u64 = 1_700_000_000_000;

/// Batches of event updates, each with the time all of it is at or before.
fn random_batches(seed: u64) -> Vec<(u64, Vec<Update<Event>>)> {
    let mut rng = Rng(seed);
    let mut inserted: Vec<Event> = Vec::new();
    let mut batches = Vec::new();
    let mut end = BASE_MS;
    for _ in 0..20 {
        let start = end;
        let step_hours = 1 + rng.below(12);
        end = start + step_hours * HOUR_MS;
        let mut updates = Vec::new();
        for _ in 0..(5 + rng.below(30)) {
            let time = start + HOUR_MS * (1 + rng.below(step_hours));
            let action = *rng.pick(&[
                Action::View,
                Action::Click,
                Action::Cart,
                Action::Purchase,
                Action::Rating,
            ]);
            let mut event = Event::new(rng.below(25), rng.below(30), action, time as i64);
            if action == Action::Rating {
                event.rating = Some(100 * (1 + rng.below(5) as i64));
            }
            inserted.push(event.clone());
            updates.push((event, time, 1));
        }
        for _ in 0..rng.below(4) {
            let event = inserted.swap_remove(rng.below(inserted.len() as u64) as usize);
            updates.push((event, end, -1));
        }
        rng.shuffle(&mut updates);
        batches.push((end, updates));
    }
    batches
}

fn run_dataflow(
    batches: &[(u64, Vec<Update<Event>>)],
    config: &MfConfig,
    workers: usize,
) -> Vec<Update<(Id, Profile)>> {
    let batches = Arc::new(batches.to_vec());
    let config = config.clone();
    let (send, received) = std::sync::mpsc::channel();
    let send = Arc::new(Mutex::new(send));
    timely::execute(timely::Config::process(workers), move |worker| {
        let send = send.lock().unwrap().clone();
        let (mut events, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (events_input, events) = scope.new_collection();
            let attributes = scope.new_collection().1;
            let profiles = profiles(events.clone(), None, attributes, &ProfileConfig::default());
            let weights = ActionWeights::default();
            let trained =
                online::train(events, None, Some(profiles), Rows::Never, &config, &weights);
            let (probe, with_factors) = trained.profiles.expect("asked for").probe();
            with_factors.inner.capture_into(send);
            (events_input, probe)
        });
        feed_shares(worker, &mut events, &probe, &batches);
    })
    .expect("timely run");
    let mut updates = flatten(received.extract());
    updates.sort();
    updates
}

/// The plain model trained time after time on `events`, as it stands at
/// each batch end.
fn plain_models(batches: &[(u64, Vec<Update<Event>>)], config: &MfConfig) -> Vec<(u64, MfModel)> {
    let ends: Vec<u64> = batches.iter().map(|(end, _)| *end).collect();
    plain_models_at(batches, config, &ends)
}

/// The plain model trained time after time on `events`, as it stands at
/// each of `times` (ascending).
fn plain_models_at(
    batches: &[(u64, Vec<Update<Event>>)],
    config: &MfConfig,
    times: &[u64],
) -> Vec<(u64, MfModel)> {
    let mut by_time: BTreeMap<u64, Vec<(Event, i64)>> = BTreeMap::new();
    for (event, time, diff) in batches.iter().flat_map(|(_, u)| u) {
        by_time
            .entry(*time)
            .or_default()
            .push((event.clone(), *diff as i64));
    }
    let mut model = MfModel::new(config, &ActionWeights::default());
    let mut trained = by_time.into_iter().peekable();
    let mut models = Vec::new();
    for end in times {
        while let Some((_, mut updates)) = trained.next_if(|(time, _)| time <= end) {
            model.train(&mut updates);
        }
        models.push((*end, model.clone()));
    }
    models
}

fn check(seed: u64, config: &MfConfig) {
    let batches = random_batches(seed);
    let events: Vec<Update<Event>> = batches.iter().flat_map(|(_, u)| u.clone()).collect();
    let one = run_dataflow(&batches, config, 1);

    let mut with_factors = 0;
    for (end, model) in plain_models(&batches, config) {
        let end = &end;
        let expected = reference::profile::profiles(&events, &[], &[], *end, &Default::default());
        let served: BTreeMap<Id, Profile> = at_time(&one, *end).into_iter().collect();
        assert_eq!(served.len(), expected.len(), "seed {seed} at {end}");
        for (user, profile) in &served {
            let factors = model.user_factors(*user).map(|f| Factors(f.to_vec()));
            assert_eq!(
                profile.factors, factors,
                "seed {seed} at {end}: user {user}"
            );
            with_factors += profile.factors.is_some() as usize;
            let plain = Profile {
                factors: None,
                ..profile.clone()
            };
            assert_eq!(Some(&plain), expected.get(user), "seed {seed} at {end}");
        }
    }
    assert!(
        with_factors > 100,
        "seed {seed}: {with_factors} profiles with factors"
    );

    for workers in [2, 4] {
        let many = run_dataflow(&batches, config, workers);
        assert!(many == one, "seed {seed}, {workers} workers");
    }
}

#[test]
fn factors_follow_the_plain_model_at_every_batch_for_every_worker_count() {
    let config = MfConfig {
        factors: 8,
        negatives: 4,
        embeddings: true,
        ..MfConfig::default()
    };
    for seed in 0..3 {
        check(seed, &config);
    }
}

#[test]
fn another_seed_and_size_follow_the_plain_model() {
    let config = MfConfig {
        factors: 3,
        negatives: 1,
        seed: 9,
        learning_rate: 0.2,
        embeddings: true,
        ..MfConfig::default()
    };
    check(17, &config);
}

/// When the rows are given: at every time, or per period of `period_ms`,
/// told the end of the input (the last batch's end) before the last batch
/// or not at all.
#[derive(Clone, Copy)]
enum Given {
    EveryTime,
    PerPeriod { period_ms: u64, told_end: bool },
}

/// The state of the on-demand rankings with the model's rows
/// (`[recommend] mf_weight > 0`), as `persona replay` and `serve` build it;
/// with `forgets`, users forgotten at those times, their events antijoined
/// away as a server does.
fn run_ranking_state(
    batches: &[(u64, Vec<Update<Event>>)],
    config: &CfConfig,
    workers: usize,
    given: Given,
    forgets: &[(u64, Id)],
) -> Vec<Update<StateUpdate>> {
    let batches = Arc::new(batches.to_vec());
    let forgets = forgets.to_vec();
    let config = config.clone();
    let (send, received) = std::sync::mpsc::channel();
    let send = Arc::new(Mutex::new(send));
    timely::execute(timely::Config::process(workers), move |worker| {
        let send = send.lock().unwrap().clone();
        let input_end: Rc<Cell<Option<u64>>> = Rc::default();
        let (mut events, mut forgotten, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (events_input, events) = scope.new_collection::<Event, isize>();
            let (forgotten_input, forgotten) = scope.new_collection::<Id, isize>();
            let forgotten = forgotten.distinct();
            let events = events
                .map(|event| (event.user, event))
                .antijoin(forgotten.clone())
                .map(|(_, event)| event);
            let rows = match given {
                Given::EveryTime => Rows::EveryTime,
                Given::PerPeriod { period_ms, .. } => {
                    let input_end = input_end.clone();
                    Rows::PerPeriod {
                        period_ms,
                        input_end: Rc::new(move || input_end.get()),
                    }
                }
            };
            let forgotten = (!forgets.is_empty()).then_some(forgotten);
            let trained = online::train(
                events.clone(),
                forgotten,
                None,
                rows,
                &config.mf,
                &config.weights,
            );
            let rows = trained.rows.expect("asked for");
            let state = state_updates(events, &config).concat(rows.map(StateUpdate::Factors));
            let (probe, state) = state.probe();
            state.inner.capture_into(send);
            (events_input, forgotten_input, probe)
        });
        if worker.index() == 0 {
            for (time, user) in &forgets {
                forgotten.update_at(*user, *time, 1);
            }
        }
        forgotten.close();
        let (last, before) = batches.split_last().expect("batches");
        feed_shares(worker, &mut events, &probe, before);
        if let Given::PerPeriod { told_end: true, .. } = given {
            input_end.set(Some(last.0));
        }
        feed_shares(worker, &mut events, &probe, std::slice::from_ref(last));
    })
    .expect("timely run");
    let mut updates = flatten(received.extract());
    updates.sort();
    updates
}

/// The state at `at`, applied as `persona serve` applies it.
fn state_at(updates: &[Update<StateUpdate>], at: u64) -> CfState {
    let mut upto: Vec<(StateUpdate, isize)> = updates
        .iter()
        .filter(|(_, time, _)| *time <= at)
        .map(|(update, _, diff)| (update.clone(), *diff))
        .collect();
    differential_dataflow::consolidation::consolidate(&mut upto);
    let mut state = CfState::default();
    state.apply(&upto);
    state
}

/// A half-and-half blend with a small model.
fn blend_config(factors: usize, negatives: usize, seed: u64) -> CfConfig {
    CfConfig {
        mf_weight: 0.5,
        mf: MfConfig {
            factors,
            negatives,
            seed,
            ..MfConfig::default()
        },
        ..CfConfig::default()
    }
}

#[test]
fn the_rankings_rows_rebuild_the_plain_model_and_the_blend_ranks_from_it() {
    let config = CfConfig {
        top_k: 5,
        ..blend_config(6, 3, 4)
    };
    for seed in [1, 8] {
        let batches = random_batches(seed);
        let one = run_ranking_state(&batches, &config, 1, Given::EveryTime, &[]);
        let mut blended = 0;
        for (end, model) in plain_models(&batches, &config.mf) {
            let state = state_at(&one, end);
            table_matches(&state, &model, &format!("seed {seed} at {end}"));
            for user in state.users() {
                let excluded = state.never_recommended(user, &config);
                let skip = |item| excluded.binary_search(&item).is_ok();
                let mf = model.top_k(user, BLEND_CANDIDATES, skip);
                let cf: Vec<_> = state
                    .cooccurrence_recommendations(user, BLEND_CANDIDATES, &config, |item| {
                        state
                            .similar_items(item, config.neighbors, &config)
                            .neighbors
                    })
                    .items
                    .iter()
                    .map(|s| (s.item, s.score))
                    .collect();
                let expected = blend(&cf, &mf, config.mf_weight, config.top_k);
                let served = state.recommendations(user, config.top_k, &config);
                assert_eq!(served.items, expected, "seed {seed} at {end}: user {user}");
                let alone = CfConfig {
                    mf_weight: 1.0,
                    ..config.clone()
                };
                let items: Vec<Id> = state
                    .recommendations(user, config.top_k, &alone)
                    .items
                    .iter()
                    .map(|s| s.item)
                    .collect();
                let top: Vec<Id> = mf.iter().take(config.top_k).map(|(i, _)| *i).collect();
                assert_eq!(items, top, "seed {seed} at {end}: user {user}, mf alone");
                blended += !expected.is_empty() as usize;
            }
        }
        assert!(blended > 100, "seed {seed}: {blended} blended lists");
        for workers in [2, 4] {
            let many = run_ranking_state(&batches, &config, workers, Given::EveryTime, &[]);
            assert!(many == one, "seed {seed}, {workers} workers");
        }
    }
}

/// Checks that the factors `state` holds are `model`'s, bit for bit.
fn table_matches(state: &CfState, model: &MfModel, at: &str) {
    let table = state.factorisation();
    for user in 0..25 {
        assert_eq!(
            table.user_factors(user),
            model.user_factors(user),
            "{at}: user {user}"
        );
    }
    for item in 0..30 {
        assert_eq!(
            table.item_factors(item),
            model.item_factors(item).map(|(bias, q)| (bias, q.to_vec())),
            "{at}: item {item}"
        );
    }
}

#[test]
fn rows_given_per_period_are_the_model_at_each_period_end_and_at_the_input_end() {
    const PERIOD_MS: u64 = 6 * HOUR_MS;
    let config = blend_config(4, 2, 7);
    let period_end = |time: u64| persona_dataflows::time::end_of_period(time, PERIOD_MS);
    for seed in [2, 5] {
        let batches = random_batches(seed);
        let every_time = run_ranking_state(&batches, &config, 1, Given::EveryTime, &[]);
        let last = batches.last().expect("batches").0;
        for told_end in [false, true] {
            let given = Given::PerPeriod {
                period_ms: PERIOD_MS,
                told_end,
            };
            let one = run_ranking_state(&batches, &config, 1, given, &[]);
            // Rows only at period ends, or at the end of the input once told.
            let row_times: BTreeSet<u64> = one
                .iter()
                .filter(|(update, _, _)| matches!(update, StateUpdate::Factors(_)))
                .map(|(_, time, _)| *time)
                .collect();
            let at = format!("seed {seed}, told the end: {told_end}");
            for time in &row_times {
                let expected = period_end(*time) == *time || (told_end && *time == last);
                assert!(expected, "{at}: rows at {time}");
            }
            assert!(row_times.len() > 3, "{at}: {} times", row_times.len());
            let rows = |updates: &[Update<StateUpdate>]| {
                updates
                    .iter()
                    .filter(|(update, _, _)| matches!(update, StateUpdate::Factors(_)))
                    .count()
            };
            assert!(rows(&one) < rows(&every_time), "{at}: fewer rows");
            // At each period end, and at the end: the model trained so far.
            let mut ends: Vec<u64> = row_times.iter().copied().collect();
            if told_end {
                ends.retain(|time| *time <= last);
                assert_eq!(ends.last(), Some(&last), "{at}");
            }
            for (end, model) in plain_models_at(&batches, &config.mf, &ends) {
                table_matches(&state_at(&one, end), &model, &format!("{at} at {end}"));
            }
            for workers in [2, 4] {
                let many = run_ranking_state(&batches, &config, workers, given, &[]);
                assert!(many == one, "{at}, {workers} workers");
            }
        }
    }
}

#[test]
fn a_forget_trains_the_model_again_as_if_the_user_never_existed() {
    const PERIOD_MS: u64 = 6 * HOUR_MS;
    let config = blend_config(4, 2, 3);
    for seed in [3, 6] {
        let batches = random_batches(seed);
        let ends: Vec<u64> = batches.iter().map(|(end, _)| *end).collect();
        // At a batch end, inside a batch, and at the same time as another.
        let forgets = [
            (ends[5], 3),
            (ends[9] - HOUR_MS, 11),
            (ends[14], 7),
            (ends[14], 20),
        ];
        // The model a replay without the users forgotten by `at` trains.
        let expected_at = |at: u64| {
            let gone: Vec<Id> = forgets
                .iter()
                .filter(|(time, _)| *time <= at)
                .map(|(_, user)| *user)
                .collect();
            let (_, model) = plain_models_at(&without(&batches, &gone), &config.mf, &[at])
                .pop()
                .expect("one time");
            model
        };
        for given in [
            Given::EveryTime,
            Given::PerPeriod {
                period_ms: PERIOD_MS,
                told_end: false,
            },
        ] {
            let one = run_ranking_state(&batches, &config, 1, given, &forgets);
            let row_times: BTreeSet<u64> = one
                .iter()
                .filter(|(update, _, _)| matches!(update, StateUpdate::Factors(_)))
                .map(|(_, time, _)| *time)
                .collect();
            let checked: Vec<u64> = match given {
                Given::EveryTime => ends.clone(),
                Given::PerPeriod { .. } => row_times.into_iter().collect(),
            };
            assert!(checked.len() > 5, "seed {seed}: {checked:?}");
            for at in checked {
                let state = state_at(&one, at);
                let model = expected_at(at);
                table_matches(&state, &model, &format!("seed {seed} at {at}"));
            }
            for workers in [2, 4] {
                let many = run_ranking_state(&batches, &config, workers, given, &forgets);
                assert!(many == one, "seed {seed}, {workers} workers");
            }
        }
        // The forgotten had rows before: the check above sees them go.
        let before = expected_at(ends[5] - 1);
        for (_, user) in forgets {
            assert!(
                before.user_factors(user).is_some(),
                "seed {seed}: user {user}"
            );
        }
    }
}
