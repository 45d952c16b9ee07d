//! Oracle test of collaborative filtering: seeded random streams of inserts
//! and retractions, in batches, on 1 and 4 workers, every metric, history N
//! in {0, 3}, K in {0, 3}, decay on and off, with and without a purchase
//! primary action and a view cross-occurrence indicator; after every batch
//! the histories, similar items, cross-similar items and recommendations must
//! equal `reference::cf` bit for bit. So must the rankings evaluated on
//! demand (`cf::on_demand::CfState`) from the state the dataflow maintains.
//!
//! Run: `cargo test -p persona-dataflows --release --test cf_oracle`.

mod common;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use differential_dataflow::input::Input;
use timely::dataflow::operators::capture::Extract;
use timely::dataflow::operators::Capture;

use persona_dataflows::cf::history::HistoryEntry;
use persona_dataflows::cf::on_demand::{state_updates, CfState, StateUpdate};
use persona_dataflows::cf::recommend::Recommendations;
use persona_dataflows::cf::similarity::SimilarItems;
use persona_dataflows::cf::{collaborative_filtering, CfConfig, Metric};
use persona_dataflows::reference::cf as reference;
use persona_dataflows::time::DAY_MS;
use persona_dataflows::{Action, ActionWeights, Event, Id};

use common::Rng;

const USERS: u64 = 15;
const ITEMS: u64 = 25;
const BATCHES: u64 = 6;
const UPDATES_PER_BATCH: usize = 25;

/// `(event, batch time, diff)`: inserts, retractions of live events,
/// duplicates, and a few retractions of events never inserted (net negative).
fn random_stream(seed: u64) -> Vec<(Event, u64, isize)> {
    let mut rng = Rng(seed);
    let mut live: Vec<Event> = Vec::new();
    let mut updates = Vec::new();
    for batch in 1..=BATCHES {
        for _ in 0..UPDATES_PER_BATCH {
            let roll = rng.below(100);
            if roll < 25 && !live.is_empty() {
                let index = rng.below(live.len() as u64) as usize;
                updates.push((live.swap_remove(index), batch, -1));
                continue;
            }
            // Few users and skewed items, so histories overlap; coarse times
            // within a day, so last-time ties happen.
            let user = rng.below(USERS);
            let item = rng.below(ITEMS).min(rng.below(ITEMS));
            // Views and purchases half the time, so the indicator has data.
            let action = if rng.below(2) == 0 {
                [Action::View, Action::Purchase][rng.below(2) as usize]
            } else {
                Action::ALL[rng.below(Action::ALL.len() as u64) as usize]
            };
            let day = (batch + rng.below(4)) as i64;
            let time_ms = day * DAY_MS as i64 + rng.below(3) as i64 * 3_600_000;
            let mut event = Event::new(user, item, action, time_ms);
            if matches!(action, Action::Purchase | Action::Cancellation) {
                event.quantity = 1 + rng.below(3) as i64;
            }
            // A cancellation of some or all units of a live purchase, on its
            // day or a later one.
            if roll >= 90 {
                if let Some(bought) = live.iter().find(|e| e.action == Action::Purchase) {
                    let mut cancellation = bought.clone();
                    cancellation.action = Action::Cancellation;
                    cancellation.quantity = 1 + rng.below(bought.quantity as u64) as i64;
                    cancellation.time_ms += rng.below(2) as i64 * DAY_MS as i64;
                    updates.push((cancellation.clone(), batch, 1));
                    live.push(cancellation);
                    continue;
                }
            }
            if roll < 28 {
                updates.push((event, batch, -1));
            } else {
                updates.push((event.clone(), batch, 1));
                live.push(event);
            }
        }
    }
    updates
}

/// The outputs of a run, as accumulated collections per batch time.
struct Captured {
    history: Vec<((Id, HistoryEntry), u64, isize)>,
    similar_items: Vec<(SimilarItems, u64, isize)>,
    indicator_history: Vec<((Id, HistoryEntry), u64, isize)>,
    cross_similar_items: Vec<(SimilarItems, u64, isize)>,
    recommendations: Vec<(Recommendations, u64, isize)>,
    /// The state on-demand rankings read (without an indicator).
    state: Vec<(StateUpdate, u64, isize)>,
}

fn run_dataflow(
    updates: &[(Event, u64, isize)],
    config: &CfConfig,
    workers: usize,
    step: bool,
) -> Captured {
    let (history_send, history_recv) = std::sync::mpsc::channel();
    let (similar_send, similar_recv) = std::sync::mpsc::channel();
    let (recs_send, recs_recv) = std::sync::mpsc::channel();
    let (indicator_send, indicator_recv) = std::sync::mpsc::channel();
    let (cross_send, cross_recv) = std::sync::mpsc::channel();
    let (state_send, state_recv) = std::sync::mpsc::channel();
    let senders = Arc::new(Mutex::new((
        history_send,
        similar_send,
        recs_send,
        indicator_send,
        cross_send,
        state_send,
    )));
    let updates = updates.to_vec();
    let config = config.clone();

    timely::execute(timely::Config::process(workers), move |worker| {
        let (history_send, similar_send, recs_send, indicator_send, cross_send, state_send) =
            senders.lock().unwrap().clone();
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, events) = scope.new_collection::<Event, isize>();
            if config.indicator_action.is_none() {
                state_updates(events.clone(), &config)
                    .inner
                    .capture_into(state_send);
            }
            let outputs = collaborative_filtering(events, &config);
            let recommendations = outputs.recommendations();
            outputs.history.inner.capture_into(history_send);
            outputs.similar_items.inner.capture_into(similar_send);
            if let Some(indicator_history) = outputs.indicator_history {
                indicator_history.inner.capture_into(indicator_send);
            }
            if let Some(cross_similar_items) = outputs.cross_similar_items {
                cross_similar_items.inner.capture_into(cross_send);
            }
            let (probe, recommendations) = recommendations.probe();
            recommendations.inner.capture_into(recs_send);
            (input, probe)
        });
        let (index, peers) = (worker.index(), worker.peers());
        for batch in 1..=BATCHES {
            for (n, (event, time, diff)) in updates.iter().enumerate() {
                if *time == batch && n % peers == index {
                    input.update(event.clone(), *diff);
                }
            }
            input.advance_to(batch + 1);
            input.flush();
            if step {
                worker.step_while(|| probe.less_than(input.time()));
            }
        }
    })
    .expect("timely run");

    Captured {
        history: history_recv
            .extract()
            .into_iter()
            .flat_map(|(_, u)| u)
            .collect(),
        similar_items: similar_recv
            .extract()
            .into_iter()
            .flat_map(|(_, u)| u)
            .collect(),
        indicator_history: indicator_recv
            .extract()
            .into_iter()
            .flat_map(|(_, u)| u)
            .collect(),
        cross_similar_items: cross_recv
            .extract()
            .into_iter()
            .flat_map(|(_, u)| u)
            .collect(),
        recommendations: recs_recv
            .extract()
            .into_iter()
            .flat_map(|(_, u)| u)
            .collect(),
        state: state_recv
            .extract()
            .into_iter()
            .flat_map(|(_, u)| u)
            .collect(),
    }
}

/// The consolidated changes at times in `times`.
fn changes_in<D: Ord + Clone>(
    updates: &[(D, u64, isize)],
    times: std::ops::RangeInclusive<u64>,
) -> Vec<(D, isize)> {
    let mut diffs: BTreeMap<D, isize> = BTreeMap::new();
    for (record, time, diff) in updates {
        if times.contains(time) {
            *diffs.entry(record.clone()).or_default() += diff;
        }
    }
    diffs.into_iter().filter(|(_, diff)| *diff != 0).collect()
}

/// The non-empty similar-item lists and recommendation lists `state` gives
/// every item and every known user, keyed as the outputs are.
fn on_demand(
    state: &CfState,
    config: &CfConfig,
) -> (BTreeMap<Id, SimilarItems>, BTreeMap<Id, Recommendations>) {
    let similar = (0..ITEMS)
        .map(|item| state.similar_items(item, config.neighbors, config))
        .filter(|list| !list.neighbors.is_empty())
        .map(|list| (list.item, list))
        .collect();
    let recs = (0..USERS)
        .filter(|&user| state.has_user(user))
        .map(|user| state.recommendations(user, config.top_k, config))
        .filter(|recs| !recs.items.is_empty())
        .map(|recs| (recs.user, recs))
        .collect();
    (similar, recs)
}

/// The records with positive accumulated count at `at`, keyed; panics on a
/// count other than 1 (outputs are sets).
fn at_time<D: Ord + Clone + Debug, K: Ord>(
    updates: &[(D, u64, isize)],
    at: u64,
    key: impl Fn(&D) -> K,
) -> BTreeMap<K, D> {
    let mut counts: BTreeMap<D, isize> = BTreeMap::new();
    for (record, time, diff) in updates {
        if *time <= at {
            *counts.entry(record.clone()).or_default() += diff;
        }
    }
    let mut out = BTreeMap::new();
    for (record, count) in counts {
        match count {
            0 => {}
            1 => {
                assert!(
                    out.insert(key(&record), record.clone()).is_none(),
                    "duplicate key: {record:?}"
                );
            }
            _ => panic!("record with count {count}: {record:?}"),
        }
    }
    out
}

/// Prints every key whose record differs; true if any did.
fn report<K: Ord + Debug, D: PartialEq + Debug>(
    what: &str,
    dataflow: &BTreeMap<K, D>,
    reference: &BTreeMap<K, D>,
) -> bool {
    let mut differ = false;
    for key in dataflow.keys().chain(reference.keys()) {
        let (d, r) = (dataflow.get(key), reference.get(key));
        if d != r {
            if !differ {
                eprintln!("{what} differs:");
            }
            differ = true;
            eprintln!("  key {key:?}\n    dataflow:  {d:?}\n    reference: {r:?}");
        }
    }
    differ
}

/// Counts of what a run compared, so a run that compares nothing fails.
#[derive(Default)]
struct Coverage {
    history: usize,
    similar_items: usize,
    personal: usize,
    popular: usize,
    indicator_history: usize,
    cross_similar_items: usize,
    on_demand: usize,
}

fn check(seed: u64, config: &CfConfig, workers: usize, coverage: &mut Coverage) {
    let updates = random_stream(seed);
    let step = seed.is_multiple_of(2);
    let captured = run_dataflow(&updates, config, workers, step);
    let mut state = CfState::default();
    // Fed as the sinks feed it: the captured changes as they came, not
    // consolidated, every third time at once (from the last applied), in
    // reverse order so a retraction comes before its insertion.
    let mut raw_state = CfState::default();
    let mut raw_applied = 0;
    for at in 1..=BATCHES {
        let expected = reference::collaborative_filtering(&updates, at, config);
        let history = at_time(&captured.history, at, |(u, e)| (*u, e.item));
        let similar = at_time(&captured.similar_items, at, |s| s.item);
        let recs = at_time(&captured.recommendations, at, |r| r.user);
        let expected_history = expected
            .history
            .iter()
            .map(|(u, e)| ((*u, e.item), (*u, e.clone())))
            .collect();
        let expected_similar = expected
            .similar_items
            .iter()
            .map(|s| (s.item, s.clone()))
            .collect();
        let expected_recs = expected
            .recommendations
            .iter()
            .map(|r| (r.user, r.clone()))
            .collect();
        let indicator_history = at_time(&captured.indicator_history, at, |(u, e)| (*u, e.item));
        let cross = at_time(&captured.cross_similar_items, at, |s| s.item);
        let expected_indicator_history = expected
            .indicator_history
            .iter()
            .map(|(u, e)| ((*u, e.item), (*u, e.clone())))
            .collect();
        let expected_cross = expected
            .cross_similar_items
            .iter()
            .map(|s| (s.item, s.clone()))
            .collect();
        let mut differ = report("history", &history, &expected_history);
        differ |= report("similar_items", &similar, &expected_similar);
        differ |= report(
            "indicator_history",
            &indicator_history,
            &expected_indicator_history,
        );
        differ |= report("cross_similar_items", &cross, &expected_cross);
        if config.trend_weight == 0.0 {
            // The dataflow ranks without the trend (`rankings = "on_demand"`).
            differ |= report("recommendations", &recs, &expected_recs);
        }
        if config.indicator_action.is_none() {
            // The first batch is applied at time 0, before the first advance.
            let from = if at == 1 { 0 } else { at };
            state.apply(&changes_in(&captured.state, from..=at));
            let (similar, recs) = on_demand(&state, config);
            differ |= report("similar_items on demand", &similar, &expected_similar);
            differ |= report("recommendations on demand", &recs, &expected_recs);
            coverage.on_demand += similar.len() + recs.len();
            if at % 3 == 0 || at == BATCHES {
                let raw = captured
                    .state
                    .iter()
                    .rev()
                    .filter(|(_, time, _)| (raw_applied..=at).contains(time));
                raw_state.apply_changes(raw.map(|(update, _, diff)| (update, *diff)));
                raw_applied = at + 1;
                let (similar, recs) = on_demand(&raw_state, config);
                differ |= report(
                    "similar_items from raw changes",
                    &similar,
                    &expected_similar,
                );
                differ |= report("recommendations from raw changes", &recs, &expected_recs);
            }
        }
        assert!(
            !differ,
            "seed {seed}, {workers} workers, step {step}, time {at}, config {config:?}"
        );
        coverage.history += history.len();
        coverage.similar_items += similar.len();
        coverage.personal += recs.values().filter(|r| !r.popular).count();
        coverage.popular += recs.values().filter(|r| r.popular).count();
        coverage.indicator_history += indicator_history.len();
        coverage.cross_similar_items += cross.len();
    }
}

/// The default settings, co-occurrence alone: the reference has no
/// factorisation to blend with.
fn cooccurrence() -> CfConfig {
    CfConfig {
        mf_weight: 0.0,
        ..CfConfig::default()
    }
}

/// Every combination of metric, N ∈ {0,3}, K ∈ {0,3} and decay on/off, with
/// the other knobs (support, k, seen rule, repeat weight, trend) varied by
/// the seed; then the same with purchases as the
/// primary action and views as the indicator.
fn configs() -> Vec<CfConfig> {
    let mut configs = plain_configs();
    let indicator: Vec<CfConfig> = plain_configs()
        .into_iter()
        .enumerate()
        .filter(|(n, _)| n % 4 == 0 || n % 4 == 3)
        .map(|(_, config)| CfConfig {
            primary_action: Some(Action::Purchase),
            indicator_action: Some(Action::View),
            // Only the on-demand rankings have the trend.
            trend_weight: 0.0,
            ..config
        })
        .collect();
    configs.extend(indicator);
    configs
}

fn plain_configs() -> Vec<CfConfig> {
    let mut configs = Vec::new();
    for metric in Metric::ALL {
        for history_length in [0, 3] {
            for neighbors in [0, 3] {
                for decay in [None, Some(2.0)] {
                    let n = configs.len();
                    let mut weights = ActionWeights::default();
                    if n.is_multiple_of(3) {
                        // A negative weight: lowers affinities, adds no history.
                        weights.not_interested = -4;
                    }
                    configs.push(CfConfig {
                        history_length,
                        weights,
                        decay_half_life_days: decay,
                        metric,
                        min_support: 1 + (n % 4 == 1) as u64,
                        neighbors,
                        top_k: [10, 2, 0][n % 3],
                        remove_seen: n % 5 != 2,
                        repeat_weight: [1.0, 2.5][n % 2],
                        trend_weight: if n % 6 == 1 { 0.7 } else { 0.0 },
                        trend_days: 1 + (n % 3) as u32,
                        ..cooccurrence()
                    });
                }
            }
        }
    }
    configs
}

fn check_all(workers: usize, seeds_per_config: u64) {
    let started = std::time::Instant::now();
    let mut coverage = Coverage::default();
    for (n, config) in configs().iter().enumerate() {
        for s in 0..seeds_per_config {
            let seed = 1000 * workers as u64 + 17 * n as u64 + s;
            check(seed, config, workers, &mut coverage);
        }
    }
    eprintln!(
        "{} configs × {seeds_per_config} seeds on {workers} worker(s): {:.1?}; compared {} history entries, {} similar-item lists, {} personal and {} popular recommendation lists, {} indicator history entries, {} cross-similar lists",
        configs().len(),
        started.elapsed(),
        coverage.history,
        coverage.similar_items,
        coverage.personal,
        coverage.popular,
        coverage.indicator_history,
        coverage.cross_similar_items,
    );
    assert!(
        coverage.history > 0
            && coverage.similar_items > 0
            && coverage.personal > 0
            && coverage.popular > 0
            && coverage.indicator_history > 0
            && coverage.cross_similar_items > 0
            && coverage.on_demand > 0
    );
}

#[test]
fn one_worker_matches_reference() {
    check_all(1, 6);
}

#[test]
fn four_workers_match_reference() {
    check_all(4, 1);
}

#[test]
fn defaults_match_reference_on_many_seeds() {
    let mut coverage = Coverage::default();
    for seed in 0..20 {
        check(
            seed,
            &cooccurrence(),
            1 + (seed as usize % 2),
            &mut coverage,
        );
    }
    assert!(coverage.personal > 0 && coverage.popular > 0);
}

/// Co-occurrence pair updates per input update on a random stream with the
/// default N = 20: each history change of user u touches about |history(u)|
/// unordered pairs (counted once, as the co-occurrence dataflow does), so N
/// bounds the work per event. Prints the average.
#[test]
fn cooccurrence_work_per_event_is_bounded_by_history_length() {
    use persona_dataflows::cf::history::histories;
    let config = cooccurrence();
    let updates: Vec<(Event, u64, isize)> = (0..20).flat_map(random_stream).collect();
    let pair_updates = Arc::new(Mutex::new(0usize));
    let counter = pair_updates.clone();
    let inputs = updates.clone();
    timely::execute(timely::Config::process(1), move |worker| {
        let counter = counter.clone();
        let mut input = worker.dataflow::<u64, _, _>(|scope| {
            let (input, events) = scope.new_collection::<Event, isize>();
            histories(events, &config)
                .pairs
                .inspect(move |_| *counter.lock().unwrap() += 1);
            input
        });
        for (event, time, diff) in &inputs {
            input.update_at(event.clone(), *time, *diff);
        }
    })
    .expect("timely run");
    let per_event = *pair_updates.lock().unwrap() as f64 / updates.len() as f64;
    eprintln!("co-occurrence pair updates per input update: {per_event:.2}");
    // An event changes at most two history entries (one in, one out).
    assert!(per_event > 0.0 && per_event <= 2.0 * 20.0);
}

/// A user who cancels one of two units still owns the item: it stays in
/// their history, so it is not recommended to them. One who cancels every
/// unit, on a later day than the purchase, has no purchase of it left.
#[test]
fn a_partly_cancelled_purchase_stays_seen_and_a_cancelled_one_goes() {
    let at = |day: i64, user: Id, item: Id, action: Action, quantity: i64| {
        let mut event = Event::new(user, item, action, day * DAY_MS as i64);
        event.quantity = quantity;
        (event, 1, 1)
    };
    let updates = vec![
        // Users 1 and 2 bought items 10 and 11: they co-occur.
        at(1, 1, 10, Action::Purchase, 1),
        at(1, 1, 11, Action::Purchase, 1),
        at(1, 2, 10, Action::Purchase, 1),
        at(1, 2, 11, Action::Purchase, 1),
        // User 3 bought two of item 10 and cancelled one the same day.
        at(1, 3, 10, Action::Purchase, 2),
        at(1, 3, 10, Action::Cancellation, 1),
        // User 4 bought items 10 and 12, and cancelled all of 12 a day later.
        at(1, 4, 10, Action::Purchase, 1),
        at(1, 4, 12, Action::Purchase, 3),
        at(2, 4, 12, Action::Cancellation, 3),
    ];
    // The dataflow's own rankings, which have no trend.
    let config = CfConfig {
        trend_weight: 0.0,
        ..cooccurrence()
    };
    let captured = run_dataflow(&updates, &config, 1, true);
    let history = at_time(&captured.history, 1, |(u, e)| (*u, e.item));
    let recs = at_time(&captured.recommendations, 1, |r| r.user);
    let expected = reference::collaborative_filtering(&updates, 1, &config);
    let expected_history: BTreeMap<_, _> = expected
        .history
        .iter()
        .map(|(u, e)| ((*u, e.item), (*u, e.clone())))
        .collect();
    let expected_recs: BTreeMap<_, _> = expected
        .recommendations
        .iter()
        .map(|r| (r.user, r.clone()))
        .collect();
    assert!(!report("history", &history, &expected_history));
    assert!(!report("recommendations", &recs, &expected_recs));

    assert!(history.contains_key(&(3, 10)), "{history:?}");
    let items = |user: Id| -> Vec<Id> { recs[&user].items.iter().map(|s| s.item).collect() };
    assert_eq!(items(3), [11]);
    assert!(!history.contains_key(&(4, 12)), "{history:?}");
    assert_eq!(items(4), [11]);
}

/// `not_interested` takes an item out of the user's recommendations in
/// both modes (repeat mode keeps seen items, not dismissed ones), and out of
/// their popular list; retracting the dismissal brings it back. The
/// dataflow, the on-demand state and the reference agree at every time.
#[test]
fn a_dismissed_item_is_never_recommended_until_the_dismissal_is_retracted() {
    let event = |user: Id, item: Id, action: Action| Event::new(user, item, action, DAY_MS as i64);
    let updates = vec![
        // Users 1 and 2 viewed items 10, 11 and 12: they co-occur.
        (event(1, 10, Action::View), 1, 1),
        (event(1, 11, Action::View), 1, 1),
        (event(1, 12, Action::View), 1, 1),
        (event(2, 10, Action::View), 1, 1),
        (event(2, 11, Action::View), 1, 1),
        (event(2, 12, Action::View), 1, 1),
        // User 3 viewed item 10, and dismissed item 11 (the best for them).
        (event(3, 10, Action::View), 1, 1),
        (event(3, 11, Action::NotInterested), 1, 1),
        // User 4 has only a dismissal: the popular list, without item 10.
        (event(4, 10, Action::NotInterested), 1, 1),
        // At time 2 user 3 takes the dismissal back.
        (event(3, 11, Action::NotInterested), 2, -1),
    ];
    for config in [
        cooccurrence(),
        CfConfig::for_mode(persona_dataflows::cf::Mode::Repeat),
    ] {
        let config = CfConfig {
            trend_weight: 0.0,
            ..config
        };
        let captured = run_dataflow(&updates, &config, 2, true);
        let mut state = CfState::default();
        for at in [1, 2] {
            let recs = at_time(&captured.recommendations, at, |r| r.user);
            let expected = reference::collaborative_filtering(&updates, at, &config);
            let expected: BTreeMap<_, _> = expected
                .recommendations
                .iter()
                .map(|r| (r.user, r.clone()))
                .collect();
            assert!(!report("recommendations", &recs, &expected), "at {at}");
            // The first batch is applied at time 0, before the first advance.
            let from = if at == 1 { 0 } else { at };
            state.apply(&changes_in(&captured.state, from..=at));
            let (_, on_demand) = on_demand(&state, &config);
            assert!(!report("on demand", &on_demand, &expected), "at {at}");

            let items =
                |user: Id| -> Vec<Id> { recs[&user].items.iter().map(|s| s.item).collect() };
            assert_eq!(items(3).contains(&11), at == 2, "{:?} at {at}", recs[&3]);
            assert!(
                recs[&4].popular && !items(4).contains(&10),
                "{:?}",
                recs[&4]
            );
            assert!(items(4).contains(&11), "{:?}", recs[&4]);
        }
    }
}
