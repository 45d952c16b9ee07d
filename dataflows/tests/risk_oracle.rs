//! Oracle tests of the risk features and alerts: seeded random streams of
//! purchases, cancellations, other events and retractions, bursty and
//! spread over days, fed in batches to `profile::profiles_and_alerts` on 1
//! and 4 workers; the `risk` section of every profile and the standing
//! alerts are compared with `reference::risk` at every batch time. Plus a
//! hand-computed episode: raised, ended by time, retracted by a
//! cancellation.
//!
//! Run: `cargo test -p persona-dataflows --release --test risk_oracle`.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use differential_dataflow::input::Input;
use timely::dataflow::operators::capture::{Capture, Extract};

use persona_dataflows::profile::{profiles_and_alerts, Profile, ProfileConfig};
use persona_dataflows::risk::{Alert, RiskConfig, RiskFeatures, RiskRule};
use persona_dataflows::time::DAY_MS;
use persona_dataflows::{reference, Action, Event, Id};

use common::{flatten, Rng, Update};

const STEP_MS: u64 = 10_000;
const BASE_MS: u64 = 1_700_000_000_000 / DAY_MS * DAY_MS;

/// Every update out of the dataflow.
struct Output {
    profiles: Vec<Update<(Id, Profile)>>,
    alerts: Vec<Update<(Id, Alert)>>,
}

/// Feeds `batches` (each: its end time and its updates) to the dataflow.
fn run_dataflow(
    batches: &[(u64, Vec<Update<Event>>)],
    risk: &RiskConfig,
    workers: usize,
) -> Output {
    let batches = Arc::new(batches.to_vec());
    let risk = risk.clone();
    let (send_profiles, profiles) = std::sync::mpsc::channel();
    let (send_alerts, alerts) = std::sync::mpsc::channel();
    let sends = Arc::new(Mutex::new((send_profiles, send_alerts)));
    timely::execute(timely::Config::process(workers), move |worker| {
        let (send_profiles, send_alerts) = sends.lock().unwrap().clone();
        let (mut events, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (events_input, events) = scope.new_collection();
            let (_, attributes) = scope.new_collection();
            let config = ProfileConfig::default();
            let (profiles, alerts) =
                profiles_and_alerts(events, None, attributes, &config, Some(&risk));
            let alerts = alerts.expect("alerts with [risk]");
            let (probe, profiles) = profiles.probe();
            profiles.inner.capture_into(send_profiles);
            alerts.inner.capture_into(send_alerts);
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
    Output {
        profiles: flatten(profiles.extract()),
        alerts: flatten(alerts.extract()),
    }
}

/// The net multiset of `updates` up to `at`.
fn net_at<D: Ord + Clone>(updates: &[Update<D>], at: u64) -> BTreeMap<D, i64> {
    let mut net = BTreeMap::new();
    for (record, time, diff) in updates {
        if *time <= at {
            *net.entry(record.clone()).or_default() += *diff as i64;
        }
    }
    net.retain(|_, count| *count != 0);
    net
}

/// The `risk` sections of the dataflow's profiles at `at`.
fn risk_at(output: &Output, at: u64) -> BTreeMap<Id, RiskFeatures> {
    net_at(&output.profiles, at)
        .into_iter()
        .filter_map(|((user, profile), count)| {
            assert_eq!(count, 1, "user {user}: profile count {count}");
            profile.risk.map(|risk| (user, RiskFeatures::clone(&risk)))
        })
        .collect()
}

fn rule(name: &str, feature: &str, op: &str, threshold: f64, history: i64) -> RiskRule {
    RiskRule {
        name: name.into(),
        feature: feature.into(),
        op: op.into(),
        threshold,
        min_history_days: history,
    }
}

/// Short windows and history, and rules of every kind of feature, with
/// thresholds the random streams cross both ways.
fn oracle_config() -> RiskConfig {
    RiskConfig {
        velocity_secs: vec![60, 600],
        history_days: 3,
        rules: vec![
            rule("burst", "velocity.60.purchases", ">=", 2.0, 0),
            rule("hour_spend", "velocity.600.spend", ">", 4_000.0, 0),
            rule("many_items", "velocity.600.items", ">=", 3.0, 0),
            rule("sessions", "velocity.600.sessions", ">=", 2.0, 0),
            rule("day_z", "day.spend_z", ">=", 1.0, 1),
            rule("events_z", "day.events_z", ">", 1.5, 1),
            rule("above_max", "day.spend_over_max", ">=", 2.0, 1),
            rule("idle", "purchase_after_idle_days", ">=", 0.5, 0),
            rule("quick", "since_previous_ms", "<=", 5_000.0, 0),
            rule("big_day", "day.spend", ">", 6_000.0, 0),
            rule("quiet_day", "day.events", "<", 0.0, 0),
        ],
    }
}

/// Batches of bursts (several events seconds apart) and quiet stretches
/// (hours to days), late events, retractions and cancellations.
fn random_batches(seed: u64) -> Vec<(u64, Vec<Update<Event>>)> {
    let mut rng = Rng(seed);
    let mut inserted: Vec<Event> = Vec::new();
    let mut batches = Vec::new();
    let mut now = BASE_MS;
    for _ in 0..40 {
        // In steps of 10 s, so that events often sit exactly on a window's
        // or a day's boundary.
        now += STEP_MS
            * match rng.below(4) {
                0 => rng.below(3),
                1 => rng.below(60),
                2 => rng.below(6 * 12 * 60),
                _ => rng.below(6 * 3 * 24 * 60),
            };
        let mut updates = Vec::new();
        for _ in 0..(1 + rng.below(6)) {
            let time = now + STEP_MS * (1 + rng.below(3));
            let action = match rng.below(10) {
                0..=4 => Action::Purchase,
                5 => Action::Cancellation,
                6 => Action::Cart,
                _ => Action::View,
            };
            // Sometimes late, by up to two days.
            let late = if rng.percent(10) {
                rng.below(2 * DAY_MS)
            } else {
                0
            };
            let mut event = Event::new(rng.below(4), rng.below(6), action, (time - late) as i64);
            if matches!(action, Action::Purchase | Action::Cancellation) {
                event.quantity = 1 + rng.below(3) as i64;
                event.price = rng.percent(90).then(|| 100 + rng.below(2_000) as i64);
            }
            event.session = rng.percent(70).then(|| rng.below(3));
            if rng.percent(5) {
                updates.push((event.clone(), time, 2));
            } else {
                updates.push((event.clone(), time, 1));
            }
            inserted.push(event);
        }
        // Retractions of earlier events.
        for _ in 0..rng.below(3) {
            if rng.percent(40) && !inserted.is_empty() {
                let event = inserted[rng.below(inserted.len() as u64) as usize].clone();
                updates.push((event, now + STEP_MS * (1 + rng.below(3)), -1));
            }
        }
        let end = updates
            .iter()
            .map(|(_, t, _)| *t)
            .max()
            .unwrap_or(now)
            .max(now);
        now = end;
        batches.push((end, updates));
    }
    batches
}

fn check(seed: u64, workers: usize) -> (usize, usize) {
    let config = oracle_config();
    let batches = random_batches(seed);
    let output = run_dataflow(&batches, &config, workers);
    let all: Vec<Update<Event>> = batches.iter().flat_map(|(_, u)| u.clone()).collect();
    for (end, _) in &batches {
        let dataflow = risk_at(&output, *end);
        let expected = reference::risk::features(&all, *end, &config);
        assert_eq!(
            dataflow, expected,
            "seed {seed}, {workers} workers: risk at {end}"
        );
        let alerts = net_at(&output.alerts, *end);
        let expected = reference::risk::alerts(&all, *end, &config);
        assert_eq!(
            alerts, expected,
            "seed {seed}, {workers} workers: alerts at {end}"
        );
    }
    let raised = output.alerts.iter().filter(|(_, _, d)| *d > 0).count();
    let retracted = output.alerts.iter().filter(|(_, _, d)| *d < 0).count();
    (raised, retracted)
}

#[test]
fn risk_features_and_alerts_equal_the_reference_at_every_batch() {
    let (mut raised, mut retracted) = (0, 0);
    for seed in 0..12 {
        for workers in [1, 4] {
            let (r, t) = check(seed, workers);
            raised += r;
            retracted += t;
        }
    }
    // The streams exercise both: alerts raised, and retracted by takings back.
    assert!(raised > 50, "{raised} alerts raised");
    assert!(retracted > 5, "{retracted} alerts retracted");
}

#[test]
fn an_alert_is_raised_once_ends_with_its_window_and_is_retracted_by_a_cancellation() {
    let config = RiskConfig {
        velocity_secs: vec![60],
        history_days: 3,
        rules: vec![rule("burst", "velocity.60.spend", ">=", 1_000.0, 0)],
    };
    let purchase = |item: Id, ms: u64| {
        let mut event = Event::new(7, item, Action::Purchase, ms as i64);
        event.price = Some(600);
        event
    };
    let t = BASE_MS;
    let batches = vec![
        // 600, then 1,200: raised at t + 10 s, and not again at t + 20 s.
        (t, vec![(purchase(1, t), t, 1)]),
        (t + 10_000, vec![(purchase(2, t + 10_000), t + 10_000, 1)]),
        (t + 20_000, vec![(purchase(3, t + 20_000), t + 20_000, 1)]),
        // Two minutes later the window holds one purchase: the episode
        // ended, and its alert stays.
        (
            t + 140_000,
            vec![(purchase(4, t + 140_000), t + 140_000, 1)],
        ),
        // A new episode, then a cancellation within it: retracted.
        (
            t + 150_000,
            vec![(purchase(5, t + 150_000), t + 150_000, 1)],
        ),
        (t + 160_000, {
            let mut cancellation = purchase(5, t + 160_000);
            cancellation.action = Action::Cancellation;
            vec![(cancellation, t + 160_000, 1)]
        }),
    ];
    for workers in [1, 2] {
        let output = run_dataflow(&batches, &config, workers);
        let changes: Vec<(i64, u64, isize)> = output
            .alerts
            .iter()
            .map(|((_, alert), time, diff)| (alert.value.0 as i64, time - t, *diff))
            .collect();
        let mut changes = changes;
        changes.sort();
        assert_eq!(
            changes,
            vec![
                (1_200, 10_000, 1),
                (1_200, 150_000, 1),
                (1_200, 160_000, -1)
            ],
            "{workers} workers"
        );
        let standing = net_at(&output.alerts, t + 160_000);
        let all: Vec<Update<Event>> = batches.iter().flat_map(|(_, u)| u.clone()).collect();
        assert_eq!(
            standing,
            reference::risk::alerts(&all, t + 160_000, &config)
        );
        assert_eq!(standing.len(), 1);
        let ((_, alert), _) = standing.iter().next().unwrap();
        assert_eq!(alert.time_ms, (t + 10_000) as i64);
    }
}
