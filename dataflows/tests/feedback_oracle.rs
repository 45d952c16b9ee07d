//! Oracle tests of the per-item feedback dataflow: seeded random streams of
//! impressions, clicks on recommendations, dismissals, other events and
//! retractions, fed in batches to `feedback::item_feedback` on 1 and 4
//! workers, compared with `reference::feedback::item_feedback` at every
//! batch time and at every window boundary in between; plus a
//! hand-computed case.
//!
//! Run: `cargo test -p persona-dataflows --release --test feedback_oracle`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use differential_dataflow::input::Input;
use timely::dataflow::operators::capture::{Capture, Extract};

use persona_dataflows::feedback::{item_feedback, ItemFeedback};
use persona_dataflows::profile::ActionCounts;
use persona_dataflows::time::DAY_MS;
use persona_dataflows::{reference, Action, Event, Id};

use common::Rng;

const HOUR_MS: u64 = 3_600_000;
const BASE_MS: u64 = 1_700_000_000_000 / DAY_MS * DAY_MS;
const WINDOW_DAYS: [u64; 2] = [1, 3];

type Update<D> = (D, u64, isize);

/// Feeds `batches` (each: its end time and its updates) to the dataflow and
/// returns every output update.
fn run_dataflow(
    batches: &[(u64, Vec<Update<Event>>)],
    workers: usize,
) -> Vec<Update<(Id, ItemFeedback)>> {
    let batches = Arc::new(batches.to_vec());
    let (send, recv) = std::sync::mpsc::channel();
    let send = Arc::new(Mutex::new(send));
    timely::execute(timely::Config::process(workers), move |worker| {
        let send = send.lock().unwrap().clone();
        let (mut events, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (events_input, events) = scope.new_collection();
            let (probe, feedback) = item_feedback(events, &WINDOW_DAYS).probe();
            feedback.inner.capture_into(send);
            (events_input, probe)
        });
        if worker.index() != 0 {
            return;
        }
        for (end, updates) in batches.iter() {
            for (event, time, diff) in updates {
                events.update_at(event.clone(), *time, *diff);
            }
            events.advance_to(end + 1);
            events.flush();
            worker.step_while(|| probe.less_than(&(end + 1)));
        }
    })
    .expect("timely run");
    recv.extract()
        .into_iter()
        .flat_map(|(_, updates)| updates)
        .collect()
}

/// The dataflow's feedback at `at`: one record per item.
fn feedback_at(output: &[Update<(Id, ItemFeedback)>], at: u64) -> BTreeMap<Id, ItemFeedback> {
    let mut net: BTreeMap<(Id, ItemFeedback), isize> = BTreeMap::new();
    for (record, time, diff) in output {
        if *time <= at {
            *net.entry(record.clone()).or_default() += diff;
        }
    }
    let mut items = BTreeMap::new();
    for ((item, feedback), count) in net {
        if count != 0 {
            assert_eq!(count, 1, "item {item} at {at}: count {count}");
            assert!(
                items.insert(item, feedback).is_none(),
                "item {item} twice at {at}"
            );
        }
    }
    items
}

/// Batches hours to days apart, on whole hours so that updates often leave
/// a window exactly at a later batch's time; some updates retract earlier
/// ones, some count twice, some retract what was never inserted.
fn random_batches(seed: u64) -> Vec<(u64, Vec<Update<Event>>)> {
    let mut rng = Rng(seed);
    let mut inserted: Vec<Event> = Vec::new();
    let mut batches = Vec::new();
    let mut now = BASE_MS;
    for _ in 0..30 {
        now += HOUR_MS * (1 + rng.below(36));
        let mut updates = Vec::new();
        for _ in 0..(1 + rng.below(8)) {
            let time = now - HOUR_MS * rng.below(2);
            let action = match rng.below(8) {
                0..=2 => Action::Impression,
                3 | 4 => Action::RecClick,
                5 => Action::NotInterested,
                6 => Action::View,
                _ => Action::Purchase,
            };
            let event = Event::new(rng.below(5), rng.below(4), action, time as i64);
            match rng.below(20) {
                0 if !inserted.is_empty() => {
                    let taken = inserted.swap_remove(rng.below(inserted.len() as u64) as usize);
                    updates.push((taken, now, -1));
                }
                1 => updates.push((event, now, -1)),
                2 => {
                    inserted.push(event.clone());
                    updates.push((event, now, 2));
                }
                _ => {
                    inserted.push(event.clone());
                    updates.push((event, now, 1));
                }
            }
        }
        batches.push((now, updates));
    }
    batches
}

/// Every batch end, and every time an update leaves a window (and the ms
/// before it), up to the last batch.
fn check_times(batches: &[(u64, Vec<Update<Event>>)]) -> BTreeSet<u64> {
    let last = batches.last().map_or(0, |(end, _)| *end);
    let mut times: BTreeSet<u64> = batches.iter().map(|(end, _)| *end).collect();
    for (_, updates) in batches {
        for (_, time, _) in updates {
            for days in WINDOW_DAYS {
                let leaves = time + days * DAY_MS;
                times.extend([leaves - 1, leaves].into_iter().filter(|t| *t <= last));
            }
        }
    }
    times
}

#[test]
fn item_feedback_equals_the_reference_at_every_batch_and_window_boundary() {
    let mut checked = 0;
    let mut with_windows = 0;
    for seed in 0..10 {
        let batches = random_batches(seed);
        let history: Vec<Update<Event>> = batches.iter().flat_map(|(_, u)| u.clone()).collect();
        for workers in [1, 4] {
            let output = run_dataflow(&batches, workers);
            for at in check_times(&batches) {
                let expected = reference::feedback::item_feedback(&history, at, &WINDOW_DAYS);
                assert_eq!(
                    feedback_at(&output, at),
                    expected,
                    "seed {seed}, {workers} workers, at {at}"
                );
                checked += expected.len();
                with_windows += expected
                    .values()
                    .filter(|f| f.windows.iter().any(|(_, c)| !c.is_empty()))
                    .count();
            }
        }
    }
    // The streams exercise what they should: items with feedback, some of
    // them inside a window, some only outside.
    assert!(checked > 1_000, "{checked} item records checked");
    assert!(
        with_windows > 100 && with_windows < checked,
        "{with_windows} of {checked} with window counts"
    );
}

#[test]
fn an_impression_leaves_each_window_at_its_end_and_a_retraction_takes_it_back() {
    let item = 7;
    let impression = |user| Event::new(user, item, Action::Impression, BASE_MS as i64);
    let click = Event::new(1, item, Action::RecClick, BASE_MS as i64);
    let view = Event::new(1, item, Action::View, BASE_MS as i64);
    let t0 = BASE_MS;
    let batches = vec![
        (
            t0,
            vec![
                (impression(1), t0, 1),
                (impression(2), t0, 1),
                (view, t0, 1),
            ],
        ),
        (t0 + HOUR_MS, vec![(click, t0 + HOUR_MS, 1)]),
        (t0 + 2 * DAY_MS, vec![]),
        (t0 + 4 * DAY_MS, vec![(impression(2), t0 + 4 * DAY_MS, -1)]),
    ];
    let output = run_dataflow(&batches, 2);
    let counts = |impressions: i64, clicks: i64| -> ActionCounts {
        [
            (Action::Impression, impressions),
            (Action::RecClick, clicks),
        ]
        .into_iter()
        .collect()
    };
    let expect = |lifetime: ActionCounts, one_day: ActionCounts, three_days: ActionCounts| {
        BTreeMap::from([(
            item,
            ItemFeedback {
                counts: lifetime,
                windows: [(1, one_day), (3, three_days)].into(),
            },
        )])
    };
    // Shown twice, then clicked: CTR 1/2 in every window.
    assert_eq!(
        feedback_at(&output, t0),
        expect(counts(2, 0), counts(2, 0), counts(2, 0))
    );
    assert_eq!(
        feedback_at(&output, t0 + HOUR_MS),
        expect(counts(2, 1), counts(2, 1), counts(2, 1))
    );
    // The impressions leave the day window at t0 + 1 day, the click an hour later.
    assert_eq!(
        feedback_at(&output, t0 + DAY_MS),
        expect(counts(2, 1), counts(0, 1), counts(2, 1))
    );
    assert_eq!(
        feedback_at(&output, t0 + DAY_MS + HOUR_MS),
        expect(counts(2, 1), counts(0, 0), counts(2, 1))
    );
    assert_eq!(
        feedback_at(&output, t0 + 3 * DAY_MS + HOUR_MS),
        expect(counts(2, 1), counts(0, 0), counts(0, 0))
    );
    // A retraction four days later takes one impression out of the
    // lifetime, and enters the windows as −1.
    assert_eq!(
        feedback_at(&output, t0 + 4 * DAY_MS),
        expect(counts(1, 1), counts(-1, 0), counts(-1, 0))
    );
}
