//! Oracle tests of the profile dataflow: seeded random streams of events,
//! retractions, catalog and attribute versions, fed in batches to
//! `profile::profiles` on 1 and 4 workers, compared with
//! `reference::profile::profiles` at every batch time and at the exact
//! window boundaries in between; plus hand-computed cases.
//!
//! Run: `cargo test -p persona-dataflows --release --test profile_oracle`.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use differential_dataflow::input::Input;
use timely::dataflow::operators::capture::{Capture, Extract};

use persona_dataflows::profile::{
    profiles, ActionCounts, AttributeVersion, CatalogVersion, CategoryAffinity, Profile,
    ProfileConfig, Segment,
};
use persona_dataflows::time::DAY_MS;
use persona_dataflows::{reference, Action, Event, Id, Score};

use common::Rng;

const HOUR_MS: u64 = 3_600_000;
/// Event times start in November 2023.
const BASE_MS: u64 = 1_700_000_000_000 / DAY_MS * DAY_MS;

type Update<D> = (D, u64, isize);

/// The updates of one batch, all with timestamps in `(previous end, end]`.
#[derive(Clone, Default)]
struct Batch {
    end: u64,
    events: Vec<Update<Event>>,
    catalog: Vec<Update<(Id, CatalogVersion)>>,
    attributes: Vec<Update<(Id, AttributeVersion)>>,
}

/// Every update of a run, flattened, for the reference.
struct History {
    events: Vec<Update<Event>>,
    catalog: Vec<Update<(Id, CatalogVersion)>>,
    attributes: Vec<Update<(Id, AttributeVersion)>>,
}

impl History {
    fn of(batches: &[Batch]) -> History {
        History {
            events: batches.iter().flat_map(|b| b.events.clone()).collect(),
            catalog: batches.iter().flat_map(|b| b.catalog.clone()).collect(),
            attributes: batches.iter().flat_map(|b| b.attributes.clone()).collect(),
        }
    }

    fn profiles_at(&self, at: u64, config: &ProfileConfig) -> BTreeMap<Id, Profile> {
        reference::profile::profiles(&self.events, &self.catalog, &self.attributes, at, config)
    }
}

/// Feeds `batches` to the dataflow, waiting for each to be processed, and
/// returns every output update.
fn run_dataflow(
    batches: &[Batch],
    config: &ProfileConfig,
    workers: usize,
) -> Vec<Update<(Id, Profile)>> {
    let batches = Arc::new(batches.to_vec());
    let config = config.clone();
    let (send, recv) = std::sync::mpsc::channel();
    let send = Arc::new(Mutex::new(send));
    timely::execute(timely::Config::process(workers), move |worker| {
        let send = send.lock().unwrap().clone();
        let (mut events, mut catalog, mut attributes, probe) =
            worker.dataflow::<u64, _, _>(|scope| {
                let (events_input, events) = scope.new_collection();
                let (catalog_input, catalog) = scope.new_collection();
                let (attributes_input, attributes) = scope.new_collection();
                let (probe, output) = profiles(events, Some(catalog), attributes, &config).probe();
                output.inner.capture_into(send);
                (events_input, catalog_input, attributes_input, probe)
            });
        // Worker 0 reads the whole input; the others close theirs at once.
        if worker.index() != 0 {
            return;
        }
        for batch in batches.iter() {
            for (event, time, diff) in &batch.events {
                events.update_at(event.clone(), *time, *diff);
            }
            for (version, time, diff) in &batch.catalog {
                catalog.update_at(version.clone(), *time, *diff);
            }
            for (version, time, diff) in &batch.attributes {
                attributes.update_at(version.clone(), *time, *diff);
            }
            let next = batch.end + 1;
            events.advance_to(next);
            catalog.advance_to(next);
            attributes.advance_to(next);
            events.flush();
            catalog.flush();
            attributes.flush();
            worker.step_while(|| probe.less_than(&next));
        }
    })
    .expect("timely run");
    recv.extract()
        .into_iter()
        .flat_map(|(_, updates)| updates)
        .collect()
}

/// The dataflow's output accumulated at each of `times` (ascending), as one
/// profile per user; panics if a user has other than one profile.
fn accumulate(
    mut updates: Vec<Update<(Id, Profile)>>,
    times: &[u64],
) -> Vec<BTreeMap<Id, Profile>> {
    updates.sort_by_key(|(_, time, _)| *time);
    let mut updates = updates.into_iter().peekable();
    let mut multiset: BTreeMap<(Id, Profile), isize> = BTreeMap::new();
    let mut snapshots = Vec::new();
    for &at in times {
        while let Some((record, _, diff)) = updates.next_if(|(_, time, _)| *time <= at) {
            *multiset.entry(record).or_default() += diff;
        }
        let mut snapshot = BTreeMap::new();
        for ((user, profile), count) in &multiset {
            if *count == 0 {
                continue;
            }
            assert_eq!(
                *count, 1,
                "user {user} at {at}: profile with multiplicity {count}: {profile:?}"
            );
            let previous = snapshot.insert(*user, profile.clone());
            assert!(previous.is_none(), "user {user} at {at}: two profiles");
        }
        snapshots.push(snapshot);
    }
    snapshots
}

/// Asserts equality, printing every differing user on both sides.
fn assert_same(
    label: &str,
    at: u64,
    dataflow: &BTreeMap<Id, Profile>,
    reference: &BTreeMap<Id, Profile>,
) {
    if dataflow == reference {
        return;
    }
    let users: std::collections::BTreeSet<&Id> = dataflow.keys().chain(reference.keys()).collect();
    let mut report = format!(
        "{label}: profiles differ at time {at} (BASE + {} ms)\n",
        at - BASE_MS
    );
    for user in users {
        let (left, right) = (dataflow.get(user), reference.get(user));
        if left != right {
            report += &format!("user {user}\n  dataflow:  {left:?}\n  reference: {right:?}\n");
        }
    }
    panic!("{report}");
}

const USERS: u64 = 20;
const ITEMS: u64 = 30;
const CATEGORIES: u64 = 6;
/// Items at or above this id never get a catalog entry.
const CATALOGUED_ITEMS: u64 = 25;

fn random_event(rng: &mut Rng, timestamp: u64) -> Event {
    let action = if rng.percent(30) {
        Action::Purchase
    } else {
        *rng.pick(&Action::ALL)
    };
    // Mostly on time, sometimes late by up to three days.
    let lateness = if rng.percent(10) {
        rng.below(3 * DAY_MS)
    } else {
        0
    };
    let time_ms = (timestamp + rng.below(HOUR_MS) - lateness) as i64;
    let mut event = Event::new(rng.below(USERS), rng.below(ITEMS), action, time_ms);
    if rng.percent(50) {
        event.category = Some(100 + rng.below(CATEGORIES));
    }
    if matches!(action, Action::Purchase | Action::Cancellation) {
        event.quantity = 1 + rng.below(3) as i64;
        if rng.percent(50) {
            event.price = Some(50 + rng.below(5_000) as i64);
        }
    }
    if action == Action::Rating || rng.percent(3) {
        event.rating = Some(50 * (1 + rng.below(10) as i64));
    }
    event
}

fn random_catalog_version(rng: &mut Rng, version_ms: i64) -> CatalogVersion {
    CatalogVersion {
        version_ms,
        category: rng.percent(85).then(|| 100 + rng.below(CATEGORIES)),
        price: rng.percent(80).then(|| 50 + rng.below(5_000) as i64),
    }
}

fn random_batches(seed: u64) -> Vec<Batch> {
    let mut rng = Rng(seed);
    let mut inserted: Vec<Event> = Vec::new();
    let mut catalog: Vec<(Id, CatalogVersion)> = Vec::new();
    let mut batches = Vec::new();
    let mut end = BASE_MS;
    for index in 0..10 {
        let start = end;
        // Mostly short steps; one jump past every window.
        let step_hours = if index == 6 {
            35 * 24
        } else {
            1 + rng.below(6 * 24)
        };
        end = start + step_hours * HOUR_MS;
        let timestamp = |rng: &mut Rng| start + HOUR_MS * (1 + rng.below(step_hours));
        let mut batch = Batch {
            end,
            ..Batch::default()
        };

        if index == 0 {
            for item in 0..CATALOGUED_ITEMS {
                let version_ms = rng.below(1_000) as i64;
                let version = random_catalog_version(&mut rng, version_ms);
                catalog.push((item, version.clone()));
                batch.catalog.push(((item, version), end, 1));
            }
        } else {
            for _ in 0..3 {
                let time = timestamp(&mut rng);
                match rng.below(4) {
                    // A newer version, an older (ignored) one, or a tie.
                    0 | 1 => {
                        let item = rng.below(CATALOGUED_ITEMS);
                        let version_ms = (index * 1_000 + rng.below(1_000)) as i64;
                        let version = random_catalog_version(&mut rng, version_ms);
                        catalog.push((item, version.clone()));
                        batch.catalog.push(((item, version), time, 1));
                    }
                    2 => {
                        let (item, existing) = rng.pick(&catalog).clone();
                        let tie = random_catalog_version(&mut rng, existing.version_ms);
                        catalog.push((item, tie.clone()));
                        batch.catalog.push(((item, tie), time, 1));
                    }
                    // A deletion: the previous version is current again.
                    _ => {
                        let position = rng.below(catalog.len() as u64) as usize;
                        let removed = catalog.swap_remove(position);
                        batch.catalog.push((removed, time, -1));
                    }
                }
            }
        }

        for _ in 0..2 {
            let user = rng.below(USERS);
            let name = rng.pick(&["country", "tier", "plan"]).to_string();
            let version = AttributeVersion {
                version_ms: rng.below(10) as i64,
                name,
                value: rng.pick(&["a", "b", "c"]).to_string(),
            };
            let time = timestamp(&mut rng);
            batch.attributes.push(((user, version.clone()), time, 1));
            if rng.percent(20) {
                batch
                    .attributes
                    .push(((user, version), timestamp(&mut rng), -1));
            }
        }

        for _ in 0..(15 + rng.below(25)) {
            let time = timestamp(&mut rng);
            let event = random_event(&mut rng, time);
            let copies = if rng.percent(5) { 2 } else { 1 };
            inserted.push(event.clone());
            batch.events.push((event, time, copies));
        }
        // Retractions of earlier events, at a time of this batch.
        for _ in 0..rng.below(8) {
            let event = rng.pick(&inserted).clone();
            batch.events.push((event, timestamp(&mut rng), -1));
        }
        // Cancellations of some or all units of earlier purchases, later.
        let purchases: Vec<Event> = inserted
            .iter()
            .filter(|e| e.action == Action::Purchase)
            .cloned()
            .collect();
        for _ in 0..rng.below(if purchases.is_empty() { 1 } else { 6 }) {
            let mut cancellation = rng.pick(&purchases).clone();
            let time = timestamp(&mut rng);
            cancellation.action = Action::Cancellation;
            cancellation.quantity = 1 + rng.below(cancellation.quantity as u64) as i64;
            cancellation.time_ms = cancellation
                .time_ms
                .max(time as i64 - rng.below(HOUR_MS) as i64);
            inserted.push(cancellation.clone());
            batch.events.push((cancellation, time, 1));
        }
        // A cancellation whose purchase predates the log.
        if rng.percent(30) {
            let time = timestamp(&mut rng);
            let mut purchase = random_event(&mut rng, time);
            purchase.action = Action::Purchase;
            batch.events.push((purchase, time, -1));
        }
        rng.shuffle(&mut batch.events);
        batches.push(batch);
    }
    batches
}

/// Every batch end, and just before and at the window boundaries `t + W` of
/// some updates, and after everything has expired.
fn query_times(batches: &[Batch], config: &ProfileConfig, seed: u64) -> Vec<u64> {
    let mut rng = Rng(seed ^ 0x5eed);
    let mut times: Vec<u64> = batches.iter().map(|b| b.end).collect();
    let events: Vec<&Update<Event>> = batches.iter().flat_map(|b| &b.events).collect();
    for days in config
        .window_days
        .iter()
        .chain([&config.segment.recency_days])
    {
        for _ in 0..3 {
            let (_, time, _) = rng.pick(&events);
            let boundary = time + days * DAY_MS;
            times.extend([boundary - 1, boundary]);
        }
    }
    let last = batches.last().map_or(BASE_MS, |b| b.end);
    times.push(last + 31 * DAY_MS);
    times.sort();
    times.dedup();
    times
}

fn check_seed(seed: u64, workers: usize, config: &ProfileConfig) {
    let batches = random_batches(seed);
    let history = History::of(&batches);
    let times = query_times(&batches, config, seed);
    let snapshots = accumulate(run_dataflow(&batches, config, workers), &times);
    for (at, dataflow) in times.iter().zip(&snapshots) {
        let expected = history.profiles_at(*at, config);
        assert_same(
            &format!("seed {seed}, {workers} workers"),
            *at,
            dataflow,
            &expected,
        );
    }
    // The streams must exercise what they are meant to.
    let last_end = batches[batches.len() - 1].end;
    let last = &snapshots[times.iter().position(|t| *t == last_end).unwrap()];
    assert!(last.len() >= 10, "seed {seed}: only {} users", last.len());
}

/// A config that differs from the default in every knob, so that the code
/// reads the config rather than constants.
fn tuned_config() -> ProfileConfig {
    let mut config = ProfileConfig {
        window_days: vec![2, 14],
        half_life_days: 3.5,
        top_categories: 2,
        ..ProfileConfig::default()
    };
    config.action_weights.view = 2;
    config.action_weights.not_interested = -4;
    config.segment.recency_days = 10;
    config.segment.min_purchases = 2;
    config.segment.min_spend = 2_000;
    config
}

#[test]
fn oracle_one_worker_default_config() {
    for seed in 0..40 {
        check_seed(seed, 1, &ProfileConfig::default());
    }
}

#[test]
fn oracle_one_worker_tuned_config() {
    for seed in 100..116 {
        check_seed(seed, 1, &tuned_config());
    }
}

#[test]
fn oracle_four_workers() {
    for seed in 200..208 {
        check_seed(seed, 4, &ProfileConfig::default());
    }
    for seed in 300..302 {
        check_seed(seed, 4, &tuned_config());
    }
}

// Hand-computed cases.

fn day(n: u64) -> u64 {
    BASE_MS + n * DAY_MS
}

/// The dataflow's profiles at `times`, after checking them against the
/// reference, from updates given in one batch.
fn profiles_at(
    events: Vec<Update<Event>>,
    catalog: Vec<Update<(Id, CatalogVersion)>>,
    config: &ProfileConfig,
    times: &[u64],
) -> Vec<BTreeMap<Id, Profile>> {
    let batch = Batch {
        end: times.iter().copied().max().unwrap(),
        events,
        catalog,
        attributes: Vec::new(),
    };
    let batches = [batch];
    let snapshots = accumulate(run_dataflow(&batches, config, 1), times);
    let history = History::of(&batches);
    for (at, snapshot) in times.iter().zip(&snapshots) {
        assert_same(
            "hand case",
            *at,
            snapshot,
            &history.profiles_at(*at, config),
        );
    }
    snapshots
}

fn purchase(user: Id, item: Id, time: u64, quantity: i64, price: i64) -> Event {
    let mut event = Event::new(user, item, Action::Purchase, time as i64);
    event.quantity = quantity;
    event.price = Some(price);
    event
}

fn cancellation(user: Id, item: Id, time: u64, quantity: i64, price: i64) -> Event {
    Event {
        action: Action::Cancellation,
        ..purchase(user, item, time, quantity, price)
    }
}

#[test]
fn a_partial_cancellation_leaves_the_item_owned() {
    let events = vec![
        (purchase(1, 7, day(0), 2, 255), day(0), 1),
        (cancellation(1, 7, day(1), 1, 255), day(1), 1),
    ];
    let snapshots = profiles_at(events, vec![], &ProfileConfig::default(), &[day(1)]);
    let profile = &snapshots[0][&1];
    assert_eq!(
        profile.counts,
        ActionCounts::from([(Action::Purchase, 1), (Action::Cancellation, 1)])
    );
    assert_eq!((profile.quantity, profile.spend), (1, 255));
    assert_eq!(profile.distinct_items, 1);
    assert_eq!(profile.last_purchase, Some(day(0) as i64));
    assert_eq!(profile.last_seen, Some(day(1) as i64));
    // Owns an item, but no purchase record outnumbers the cancellations.
    assert_eq!(profile.segment, Segment::Hibernating);
}

#[test]
fn a_full_cancellation_on_a_later_day_leaves_nothing_owned() {
    let mut bought = purchase(1, 7, day(0), 2, 255);
    bought.category = Some(3);
    let mut cancelled = cancellation(1, 7, day(2), 2, 255);
    cancelled.category = Some(3);
    let events = vec![
        (bought, day(0), 1),
        (purchase(1, 8, day(0), 1, 100), day(0), 1),
        (cancelled, day(2), 1),
    ];
    let [before, after] = <[_; 2]>::try_from(profiles_at(
        events,
        vec![],
        &ProfileConfig::default(),
        &[day(1), day(2)],
    ))
    .unwrap();
    assert_eq!(before[&1].distinct_items, 2);
    assert_eq!(before[&1].top_categories[0].category, 3);
    let after = &after[&1];
    assert_eq!((after.quantity, after.spend), (1, 100));
    assert_eq!(after.distinct_items, 1);
    assert_eq!(after.distinct_categories, 0);
    assert!(after.top_categories.is_empty());
    assert_eq!(after.last_purchase, Some(day(0) as i64));
}

#[test]
fn cancelling_everything_leaves_a_prospect_with_nothing_owned() {
    // Online Retail's customer 12346: bought 74,215 and cancelled 74,215.
    let events = vec![
        (purchase(1, 7, day(0), 74_215, 104), day(0), 1),
        (
            cancellation(1, 7, day(0) + HOUR_MS, 74_215, 104),
            day(0) + HOUR_MS,
            1,
        ),
    ];
    let snapshots = profiles_at(events, vec![], &ProfileConfig::default(), &[day(1)]);
    let profile = &snapshots[0][&1];
    assert_eq!((profile.quantity, profile.spend), (0, 0));
    assert_eq!((profile.distinct_items, profile.last_purchase), (0, None));
    assert_eq!(profile.segment, Segment::Prospect);
    assert_eq!(
        (profile.first_seen, profile.last_seen),
        (Some(day(0) as i64), Some((day(0) + HOUR_MS) as i64))
    );
}

/// A retraction (diff −1) withdraws the record itself.
#[test]
fn a_retraction_nets_out_the_purchase() {
    let bought = purchase(1, 7, day(0), 2, 255);
    let events = vec![
        (Event::new(1, 7, Action::View, day(0) as i64), day(0), 1),
        (bought.clone(), day(0), 1),
        (bought, day(1), -1),
    ];
    let [before, after] = <[_; 2]>::try_from(profiles_at(
        events,
        vec![],
        &ProfileConfig::default(),
        &[day(0), day(1)],
    ))
    .unwrap();
    let before = &before[&1];
    assert_eq!(before.counts[&Action::Purchase], 1);
    assert_eq!((before.quantity, before.spend), (2, 510));
    assert_eq!(before.last_purchase, Some(day(0) as i64));
    assert_eq!(before.segment, Segment::New);
    let after = &after[&1];
    assert_eq!(after.counts, ActionCounts::from([(Action::View, 1)]));
    assert_eq!((after.quantity, after.spend), (0, 0));
    assert_eq!(after.last_purchase, None);
    assert_eq!(after.segment, Segment::Prospect);
    // The view still counts in the last 7 days; the purchase no longer does.
    assert_eq!(after.windows[&7], ActionCounts::from([(Action::View, 1)]));
}

/// Times are those of inserted records: a retraction takes back counts and
/// units, never a time, so the state keeps a span per key rather than
/// every time (`TimeSpan`; the pipeline sends no retractions at all).
#[test]
fn a_retraction_takes_back_counts_but_not_times() {
    let late_view = Event::new(1, 8, Action::View, day(2) as i64);
    let second = purchase(1, 7, day(1), 1, 100);
    let events = vec![
        (purchase(1, 7, day(0), 1, 100), day(0), 1),
        (second.clone(), day(1), 1),
        (late_view.clone(), day(2), 1),
        (late_view, day(3), -1),
        (second, day(3), -1),
    ];
    let snapshots = profiles_at(events, vec![], &ProfileConfig::default(), &[day(3)]);
    let profile = &snapshots[0][&1];
    assert_eq!(profile.counts, ActionCounts::from([(Action::Purchase, 1)]));
    assert_eq!((profile.quantity, profile.distinct_items), (1, 1));
    assert_eq!(
        (profile.first_seen, profile.last_seen),
        (Some(day(0) as i64), Some(day(2) as i64))
    );
    assert_eq!(profile.last_purchase, Some(day(1) as i64));
}

#[test]
fn window_count_drops_exactly_at_t_plus_7_days() {
    let t = day(3) + 5 * HOUR_MS;
    let events = vec![(purchase(1, 7, t, 1, 100), t, 1)];
    let times = [
        t,
        t + 7 * DAY_MS - 1,
        t + 7 * DAY_MS,
        t + 30 * DAY_MS - 1,
        t + 30 * DAY_MS,
    ];
    let snapshots = profiles_at(events, vec![], &ProfileConfig::default(), &times);
    let purchases_in = |snapshot: &BTreeMap<Id, Profile>, days: u64| {
        snapshot[&1].windows[&days][&Action::Purchase]
    };
    let weekly: Vec<i64> = snapshots.iter().map(|s| purchases_in(s, 7)).collect();
    let monthly: Vec<i64> = snapshots.iter().map(|s| purchases_in(s, 30)).collect();
    assert_eq!(weekly, [1, 1, 0, 0, 0]);
    assert_eq!(monthly, [1, 1, 1, 1, 0]);
    // Recency follows the 30-day window: a lapsed one-time buyer.
    assert_eq!(snapshots[3][&1].segment, Segment::New);
    assert_eq!(snapshots[4][&1].segment, Segment::Hibernating);
    // The lifetime count stays.
    assert_eq!(snapshots[4][&1].counts[&Action::Purchase], 1);
}

#[test]
fn catalog_fills_missing_fields_and_its_changes_reach_the_profile() {
    let mut bought = Event::new(1, 7, Action::Purchase, day(0) as i64);
    bought.quantity = 3;
    let version = |version_ms, category, price| CatalogVersion {
        version_ms,
        category: Some(category),
        price: Some(price),
    };
    let catalog = vec![
        ((7, version(10, 50, 100)), day(0), 1),
        // An older version arriving later changes nothing.
        ((7, version(5, 51, 999)), day(1), 1),
        ((7, version(20, 52, 200)), day(2), 1),
    ];
    let events = vec![(bought, day(0), 1)];
    let times = [day(0), day(1), day(2)];
    let snapshots = profiles_at(events, catalog, &ProfileConfig::default(), &times);
    let spend_and_category = |snapshot: &BTreeMap<Id, Profile>| {
        let profile = &snapshot[&1];
        (profile.spend, profile.top_categories[0].category)
    };
    let observed: Vec<(i64, Id)> = snapshots.iter().map(spend_and_category).collect();
    assert_eq!(observed, [(300, 50), (300, 50), (600, 52)]);
    assert_eq!(snapshots[2][&1].distinct_categories, 1);
}

#[test]
fn a_retraction_without_its_purchase_shows_as_negative() {
    let events = vec![(purchase(1, 7, day(0), 2, 100), day(0), -1)];
    let snapshots = profiles_at(events, vec![], &ProfileConfig::default(), &[day(0)]);
    let profile = &snapshots[0][&1];
    assert_eq!(profile.counts, ActionCounts::from([(Action::Purchase, -1)]));
    assert_eq!((profile.quantity, profile.spend), (-2, -200));
    assert_eq!((profile.first_seen, profile.last_seen), (None, None));
    assert_eq!(
        (profile.distinct_items, profile.segment),
        (0, Segment::Prospect)
    );
}

#[test]
fn affinity_decays_by_half_life_as_of_the_last_active_day() {
    let mut viewed = Event::new(1, 7, Action::View, day(0) as i64);
    viewed.category = Some(3);
    let mut bought = purchase(1, 8, day(30), 1, 100);
    bought.category = Some(4);
    let mut rated = Event::new(1, 9, Action::Rating, day(30) as i64);
    rated.category = Some(5);
    rated.rating = Some(350);
    let events = vec![
        (viewed, day(0), 1),
        (bought, day(30), 1),
        (rated, day(30), 1),
    ];
    let snapshots = profiles_at(events, vec![], &ProfileConfig::default(), &[day(30)]);
    let profile = &snapshots[0][&1];
    // purchase 5, rating 2, and a view (1) one half-life earlier: 0.5, up
    // to the fixed point of the decay (2^-32 per day's factor).
    let expected = [(4, 5.0), (5, 2.0), (3, 0.5)];
    assert_eq!(profile.top_categories.len(), expected.len());
    for (CategoryAffinity { category, affinity }, (want_category, want)) in
        profile.top_categories.iter().zip(expected)
    {
        assert_eq!(*category, want_category);
        assert!(
            (affinity.0 - want).abs() < want * 1e-9,
            "{affinity:?} vs {want}"
        );
    }
    assert_eq!(profile.avg_rating, Some(Score(3.5)));
    assert_eq!(
        (profile.first_seen, profile.last_seen),
        (Some(day(0) as i64), Some(day(30) as i64))
    );
}
