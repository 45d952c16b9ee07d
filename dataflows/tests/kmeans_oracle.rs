//! Oracle tests of the k-means segments: seeded random event streams fed in
//! batches to `profile::profiles` then `kmeans::segments` on 1, 2 and 4
//! workers. The refits (their times and models) equal
//! `reference::kmeans::refits` over the reference profiles of every hour,
//! and at every batch end each user's cluster equals the reference's
//! assignment under the last refit's model; every worker count gives the
//! same updates.
//!
//! Run: `cargo test -p persona-dataflows --release --test kmeans_oracle`.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use differential_dataflow::input::Input;
use timely::dataflow::operators::capture::{Capture, Extract};

use persona_dataflows::kmeans::{segments, Feature, KMeansConfig, KMeansModel};
use persona_dataflows::profile::{profiles, Profile, ProfileConfig};
use persona_dataflows::time::DAY_MS;
use persona_dataflows::{reference, Action, Event, Id};

use common::{at_time, feed_shares, flatten, without, Rng, Update};

const HOUR_MS: u64 = 3_600_000;
const BASE_MS: u64 = 1_700_000_000_000 / DAY_MS * DAY_MS;
const USERS: u64 = 60;

/// Batches of event updates, each with the time all of it is at or before.
fn random_batches(seed: u64) -> Vec<(u64, Vec<Update<Event>>)> {
    let mut rng = Rng(seed);
    let mut inserted: Vec<Event> = Vec::new();
    let mut batches = Vec::new();
    let mut end = BASE_MS;
    for batch in 0..30 {
        let start = end;
        let step_hours = 1 + rng.below(72);
        end = start + step_hours * HOUR_MS;
        let mut updates = Vec::new();
        if batch == 15 {
            // A browser whose every event is cancelled: their profile goes.
            let gone = inserted.iter().map(|e| e.user).find(|user| *user >= 6);
            for event in inserted.extract_if(.., |e| Some(e.user) == gone) {
                updates.push((event, start + HOUR_MS, -1));
            }
        }
        for _ in 0..(10 + rng.below(30)) {
            let time = start + HOUR_MS * (1 + rng.below(step_hours));
            // A few heavy buyers, many browsers: clusters worth finding.
            let user = if rng.percent(30) {
                rng.below(6)
            } else {
                rng.below(USERS)
            };
            let action = if user < 6 || rng.percent(15) {
                Action::Purchase
            } else {
                *rng.pick(&[Action::View, Action::Click, Action::Cart, Action::Rating])
            };
            let mut event = Event::new(user, rng.below(40), action, time as i64);
            event.category = Some(100 + rng.below(5));
            if action == Action::Purchase {
                event.quantity = 1 + rng.below(4) as i64;
                event.price = Some(100 + rng.below(20_000) as i64);
            }
            if action == Action::Rating {
                event.rating = Some(100 * (1 + rng.below(5) as i64));
            }
            inserted.push(event.clone());
            updates.push((event, time, 1));
        }
        for _ in 0..rng.below(3) {
            let event = inserted.swap_remove(rng.below(inserted.len() as u64) as usize);
            updates.push((event, start + HOUR_MS * (1 + rng.below(step_hours)), -1));
        }
        rng.shuffle(&mut updates);
        batches.push((end, updates));
    }
    batches
}

struct Outputs {
    profiles: Vec<Update<(Id, Profile)>>,
    models: Vec<Update<KMeansModel>>,
}

/// The segments of the log; with `forgets`, users forgotten at those
/// times, their events antijoined away as a server does.
fn run_dataflow(
    batches: &[(u64, Vec<Update<Event>>)],
    profile: &ProfileConfig,
    kmeans: &KMeansConfig,
    workers: usize,
    forgets: &[(u64, Id)],
) -> Outputs {
    let batches = Arc::new(batches.to_vec());
    let forgets = forgets.to_vec();
    let (profile, kmeans) = (profile.clone(), kmeans.clone());
    let (send_profiles, profiles_out) = std::sync::mpsc::channel();
    let (send_models, models_out) = std::sync::mpsc::channel();
    let senders = Arc::new(Mutex::new((send_profiles, send_models)));
    timely::execute(timely::Config::process(workers), move |worker| {
        let (send_profiles, send_models) = senders.lock().unwrap().clone();
        let (mut events, mut forgotten, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (events_input, events) = scope.new_collection::<Event, isize>();
            let (forgotten_input, forgotten) = scope.new_collection::<Id, isize>();
            let forgotten = forgotten.distinct();
            let events = events
                .map(|event| (event.user, event))
                .antijoin(forgotten.clone())
                .map(|(_, event)| event);
            let attributes = scope.new_collection().1;
            let forgotten = (!forgets.is_empty()).then_some(forgotten);
            let (with_clusters, models) = segments(
                profiles(events, None, attributes, &profile),
                forgotten,
                &kmeans,
            );
            models.inner.capture_into(send_models);
            let (probe, with_clusters) = with_clusters.probe();
            with_clusters.inner.capture_into(send_profiles);
            (events_input, forgotten_input, probe)
        });
        if worker.index() == 0 {
            for (time, user) in &forgets {
                forgotten.update_at(*user, *time, 1);
            }
        }
        forgotten.close();
        feed_shares(worker, &mut events, &probe, &batches);
    })
    .expect("timely run");
    Outputs {
        profiles: flatten(profiles_out.extract()),
        models: flatten(models_out.extract()),
    }
}

fn sorted<D: Ord + Clone>(updates: &[Update<D>]) -> Vec<Update<D>> {
    let mut updates = updates.to_vec();
    updates.sort();
    updates
}

/// Checks one log; returns the refits and the times the profiles changed.
fn check(seed: u64, kmeans: &KMeansConfig) -> (usize, usize) {
    let profile = ProfileConfig::default();
    let batches = random_batches(seed);
    let events: Vec<Update<Event>> = batches.iter().flat_map(|(_, u)| u.clone()).collect();
    let reference_profiles =
        |at: u64| reference::profile::profiles(&events, &[], &[], at, &profile);
    let one = run_dataflow(&batches, &profile, kmeans, 1, &[]);

    // The refits are the reference's, walking every hour (events and their
    // exits from the windows fall on hours) until the last exit, and keeping
    // those whose profiles changed.
    let longest_window = profile.window_days.iter().max().copied().unwrap_or(0);
    let last_exit = batches.last().unwrap().0 + longest_window * DAY_MS;
    let mut changes: Vec<(u64, BTreeMap<Id, Profile>)> = Vec::new();
    for hour in (BASE_MS..=last_exit).step_by(HOUR_MS as usize) {
        let profiles = reference_profiles(hour);
        if changes
            .last()
            .map_or(!profiles.is_empty(), |(_, p)| *p != profiles)
        {
            changes.push((hour, profiles));
        }
    }
    let expected = reference::kmeans::refits(&changes, kmeans);
    let mut refits: Vec<(u64, KMeansModel)> = one
        .models
        .iter()
        .filter(|(_, _, diff)| *diff > 0)
        .map(|(model, time, _)| (*time, model.clone()))
        .collect();
    refits.sort_by_key(|(at, _)| *at);
    assert!(refits.len() >= 4, "seed {seed}: {} refits", refits.len());
    let times =
        |refits: &[(u64, KMeansModel)]| refits.iter().map(|(at, _)| *at).collect::<Vec<_>>();
    assert_eq!(times(&refits), times(&expected), "seed {seed}: refit times");
    assert!(refits == expected, "seed {seed}: refit models");
    for (_, model) in &refits {
        assert!(model.centroids.len() <= kmeans.k.min(model.users as usize));
    }

    // At every batch end, each user's cluster is the nearest centroid of
    // the last refit's model, and the rest of the profile is the reference's.
    for (end, _) in &batches {
        let Some((_, model)) = refits.iter().rev().find(|(at, _)| at <= end) else {
            continue;
        };
        let expected_profiles = reference_profiles(*end);
        let expected_clusters = reference::kmeans::clusters(&expected_profiles, model, kmeans);
        let served: BTreeMap<Id, Profile> = at_time(&one.profiles, *end).into_iter().collect();
        assert_eq!(
            served.len(),
            expected_profiles.len(),
            "seed {seed} at {end}"
        );
        for (user, profile) in &served {
            assert_eq!(
                profile.cluster,
                expected_clusters.get(user).copied(),
                "seed {seed} at {end}: cluster of user {user}"
            );
            let unclustered = Profile {
                cluster: None,
                ..profile.clone()
            };
            assert_eq!(Some(&unclustered), expected_profiles.get(user));
        }
    }

    // Two and four workers give the same updates, bit for bit.
    for workers in [2, 4] {
        let many = run_dataflow(&batches, &profile, kmeans, workers, &[]);
        assert!(
            sorted(&many.models) == sorted(&one.models),
            "{workers} workers: models"
        );
        assert!(
            sorted(&many.profiles) == sorted(&one.profiles),
            "{workers} workers: profiles"
        );
    }
    (refits.len(), changes.len())
}

#[test]
fn segments_follow_the_reference_at_every_refit_and_batch_for_every_worker_count() {
    let kmeans = KMeansConfig {
        k: 4,
        refit_days: 7,
        ..KMeansConfig::default()
    };
    for seed in 0..3 {
        check(seed, &kmeans);
    }
}

#[test]
fn a_k_above_the_users_refits_as_they_double_and_by_period() {
    // 60 users, so never k distinct vectors: refits come as users double
    // and every period, not at every time.
    let kmeans = KMeansConfig {
        k: 100,
        ..KMeansConfig::default()
    };
    let (refits, changes) = check(5, &kmeans);
    assert!(
        refits * 4 < changes,
        "{refits} refits over {changes} changes"
    );
}

#[test]
fn every_feature_and_a_small_k_follow_the_reference() {
    let kmeans = KMeansConfig {
        k: 3,
        features: vec![
            Feature::Recency,
            Feature::Frequency,
            Feature::Spend,
            Feature::Events,
            Feature::DistinctItems,
            Feature::DistinctCategories,
            Feature::AvgRating,
            Feature::TopAffinity,
        ],
        log_scale: false,
        seed: 7,
        refit_days: 5,
        max_iterations: 2,
    };
    check(11, &kmeans);
}

#[test]
fn a_forget_refits_as_if_the_user_never_existed() {
    let profile = ProfileConfig::default();
    let kmeans = KMeansConfig {
        k: 4,
        refit_days: 7,
        ..KMeansConfig::default()
    };
    for seed in [1, 4] {
        let batches = random_batches(seed);
        let ends: Vec<u64> = batches.iter().map(|(end, _)| *end).collect();
        // A heavy buyer, a browser inside a batch, and two at once.
        let forgets = [
            (ends[8], 2),
            (ends[12] - HOUR_MS, 30),
            (ends[20], 0),
            (ends[20], 45),
        ];
        let one = run_dataflow(&batches, &profile, &kmeans, 1, &forgets);
        let never = run_dataflow(&batches, &profile, &kmeans, 1, &[]);
        // The replays without the users forgotten by each time.
        let mut replays: BTreeMap<Vec<Id>, Outputs> = BTreeMap::new();
        let mut moved = 0;
        for end in &ends {
            let gone: Vec<Id> = forgets
                .iter()
                .filter(|(time, _)| time <= end)
                .map(|(_, user)| *user)
                .collect();
            let replay = replays.entry(gone.clone()).or_insert_with(|| {
                run_dataflow(&without(&batches, &gone), &profile, &kmeans, 1, &[])
            });
            let at = format!("seed {seed} at {end}, without {gone:?}");
            let models = at_time(&one.models, *end);
            assert!(models == at_time(&replay.models, *end), "{at}: model");
            let served = at_time(&one.profiles, *end);
            assert!(served == at_time(&replay.profiles, *end), "{at}: profiles");
            moved += (models != at_time(&never.models, *end)) as usize;
        }
        assert!(
            moved > 3,
            "seed {seed}: the forgets moved the model {moved} times"
        );
        for workers in [2, 4] {
            let many = run_dataflow(&batches, &profile, &kmeans, workers, &forgets);
            assert!(
                sorted(&many.models) == sorted(&one.models)
                    && sorted(&many.profiles) == sorted(&one.profiles),
                "seed {seed}, {workers} workers"
            );
        }
    }
}
