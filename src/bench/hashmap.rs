//! The hand-written baseline: the profile features of
//! [`persona_dataflows::profile::profiles`] kept up to date on one thread
//! with plain hash maps, one event at a time.
//!
//! Streaming, like the dataflow: [`HashMapProfiles::apply`] folds an update
//! into its user's running sums, [`HashMapProfiles::advance_to`] expires
//! window entries and rebuilds the profiles of the users it touched. The
//! profiles it holds after `advance_to(t)` are the dataflow's at time `t`,
//! bit for bit (a test checks it). No catalog or user attributes: the bench
//! measures event streams only.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use persona_dataflows::decay::Decay;
use persona_dataflows::profile::{
    rank_categories, ActionCounts, Profile, ProfileConfig, Segment, TopCategories,
};
use persona_dataflows::time::DAY_MS;
use persona_dataflows::{Action, Event, Id, Score};

use crate::clean::as_record;

const ACTIONS: usize = Action::ALL.len();

/// Profiles of a stream of updates, maintained with hash maps.
pub struct HashMapProfiles {
    config: ProfileConfig,
    decay: Decay,
    /// The maintained windows in days, ascending (configured and recency).
    window_days: Vec<u64>,
    /// Per maintained window, the updates inside it, oldest first:
    /// `(timestamp, user, action, diff)`.
    window_entries: Vec<VecDeque<(u64, Id, Action, i64)>>,
    users: HashMap<Id, UserState>,
    profiles: HashMap<Id, Profile>,
    /// Users whose profile must be rebuilt at the next `advance_to`.
    touched: HashSet<Id>,
}

/// A user's running sums. Maps keep nonzero entries only.
#[derive(Default)]
struct UserState {
    counts: [i64; ACTIONS],
    /// Per maintained window, net count per action.
    windows: Vec<[i64; ACTIONS]>,
    quantity: i64,
    spend: i64,
    rating_sum: i64,
    ratings: i64,
    /// Net count per item of events other than purchases and cancellations.
    other_items: HashMap<Id, i64>,
    /// Purchases and cancellations per item.
    owned: HashMap<Id, Owned>,
    distinct_items: i64,
    /// Net count per category of events other than purchases and cancellations.
    other_categories: HashMap<Id, i64>,
    /// Units bought less cancelled per category.
    category_units: HashMap<Id, i64>,
    distinct_categories: i64,
    times: BTreeMap<i64, i64>,
    /// Affinity weight per (category, era, whether of purchases), in the
    /// fixed point of [`Decay::scaled`].
    weights: BTreeMap<(Id, i64, bool), i128>,
}

/// What a user bought and cancelled of one item.
#[derive(Default)]
struct Owned {
    /// Units bought less cancelled.
    units: i64,
    /// Net count of purchase records per time.
    purchase_times: BTreeMap<i64, i64>,
}

impl Owned {
    /// The latest purchase time if the user owns the item.
    fn last_purchase(&self) -> Option<i64> {
        let latest = self.purchase_times.iter().rev().find(|(_, n)| **n > 0);
        latest.filter(|_| self.units > 0).map(|(t, _)| *t)
    }
}

impl UserState {
    /// Whether `item` counts in `distinct_items`.
    fn holds_item(&self, item: Id) -> bool {
        self.other_items.get(&item).is_some_and(|n| *n > 0)
            || self
                .owned
                .get(&item)
                .is_some_and(|o| o.last_purchase().is_some())
    }

    /// Whether `category` counts in `distinct_categories`.
    fn holds_category(&self, category: Id) -> bool {
        self.other_categories.get(&category).is_some_and(|n| *n > 0)
            || self.category_units.get(&category).is_some_and(|u| *u > 0)
    }
}

/// Adds `diff` to `map[key]`, dropping zeros; returns whether the key went
/// from non-positive to positive (+1), the reverse (−1) or neither (0).
fn add<K: Eq + std::hash::Hash>(map: &mut HashMap<K, i64>, key: K, diff: i64) -> i64 {
    use std::collections::hash_map::Entry;
    let (before, after) = match map.entry(key) {
        Entry::Occupied(mut occupied) => {
            let before = *occupied.get();
            *occupied.get_mut() += diff;
            let after = *occupied.get();
            if after == 0 {
                occupied.remove();
            }
            (before, after)
        }
        Entry::Vacant(vacant) => {
            if diff != 0 {
                vacant.insert(diff);
            }
            (0, diff)
        }
    };
    i64::from(after > 0) - i64::from(before > 0)
}

fn add_ordered<K: Ord, V: Copy + Default + PartialEq + std::ops::AddAssign>(
    map: &mut BTreeMap<K, V>,
    key: K,
    diff: V,
) {
    use std::collections::btree_map::Entry;
    match map.entry(key) {
        Entry::Occupied(mut occupied) => {
            *occupied.get_mut() += diff;
            if *occupied.get() == V::default() {
                occupied.remove();
            }
        }
        Entry::Vacant(vacant) => {
            if diff != V::default() {
                vacant.insert(diff);
            }
        }
    }
}

impl HashMapProfiles {
    pub fn new(config: &ProfileConfig) -> HashMapProfiles {
        // The configured windows and the recency window of the segment.
        let window_days: Vec<u64> = config
            .window_days
            .iter()
            .copied()
            .chain([config.segment.recency_days])
            .collect::<BTreeSet<u64>>()
            .into_iter()
            .collect();
        HashMapProfiles {
            config: config.clone(),
            decay: Decay::new(config.half_life_days),
            window_entries: vec![VecDeque::new(); window_days.len()],
            window_days,
            users: HashMap::new(),
            profiles: HashMap::new(),
            touched: HashSet::new(),
        }
    }

    /// Applies one update at `timestamp`; like the pipeline's
    /// `mark_cancellations`, a retraction is a `cancellation` record.
    /// Timestamps must not decrease from one call to the next.
    pub fn apply(&mut self, event: &Event, timestamp: u64, diff: isize) {
        let (record, diff) = as_record(event.clone(), diff);
        self.apply_record(&record, timestamp, diff as i64);
    }

    fn apply_record(&mut self, event: &Event, timestamp: u64, diff: i64) {
        let action = event.action;
        let windows = self.window_days.len();
        let state = self.users.entry(event.user).or_insert_with(|| UserState {
            windows: vec![[0; ACTIONS]; windows],
            ..UserState::default()
        });
        self.touched.insert(event.user);
        state.counts[action as usize] += diff;
        for (index, entries) in self.window_entries.iter_mut().enumerate() {
            state.windows[index][action as usize] += diff;
            entries.push_back((timestamp, event.user, action, diff));
        }
        if let Some(rating) = event.rating {
            state.rating_sum += rating * diff;
            state.ratings += diff;
        }
        let units = match action {
            Action::Purchase => event.quantity,
            Action::Cancellation => -event.quantity,
            _ => 0,
        };
        let transaction = matches!(action, Action::Purchase | Action::Cancellation);
        let held_before = state.holds_item(event.item);
        if transaction {
            let owned = state.owned.entry(event.item).or_default();
            owned.units += units * diff;
            if units > 0 {
                add_ordered(&mut owned.purchase_times, event.time_ms, diff);
            }
        } else {
            add(&mut state.other_items, event.item, diff);
        }
        state.distinct_items += i64::from(state.holds_item(event.item)) - i64::from(held_before);
        add_ordered(&mut state.times, event.time_ms, diff);
        if transaction {
            state.quantity += units * diff;
            if let Some(price) = event.price {
                state.spend += units * price * diff;
            }
        }
        if let Some(category) = event.category {
            let held_before = state.holds_category(category);
            if transaction {
                add(&mut state.category_units, category, units * diff);
            } else {
                add(&mut state.other_categories, category, diff);
            }
            state.distinct_categories +=
                i64::from(state.holds_category(category)) - i64::from(held_before);
            let weight = self.config.action_weights.weight(action);
            if weight != 0 {
                let day = event.day();
                let key = (category, self.decay.era(day), action == Action::Purchase);
                add_ordered(
                    &mut state.weights,
                    key,
                    self.decay.scaled(day, weight * diff),
                );
            }
        }
    }

    /// Moves "now" to `now`: updates at `t` with `t + window <= now` leave
    /// their window, and the profiles of every user touched since the last
    /// call are rebuilt.
    pub fn advance_to(&mut self, now: u64) {
        for (index, entries) in self.window_entries.iter_mut().enumerate() {
            let length = self.window_days[index].saturating_mul(DAY_MS);
            while let Some(&(timestamp, user, action, diff)) = entries.front() {
                if timestamp.saturating_add(length) > now {
                    break;
                }
                entries.pop_front();
                if let Some(state) = self.users.get_mut(&user) {
                    state.windows[index][action as usize] -= diff;
                    self.touched.insert(user);
                }
            }
        }
        for user in std::mem::take(&mut self.touched) {
            match self.users.get(&user).and_then(|state| self.build(state)) {
                Some(profile) => {
                    self.profiles.insert(user, profile);
                }
                None => {
                    self.profiles.remove(&user);
                }
            }
        }
    }

    /// The current profiles (as of the last `advance_to`).
    pub fn profiles(&self) -> &HashMap<Id, Profile> {
        &self.profiles
    }

    fn build(&self, state: &UserState) -> Option<Profile> {
        let nonzero = |counts: &[i64; ACTIONS]| -> ActionCounts {
            Action::ALL
                .iter()
                .filter(|action| counts[**action as usize] != 0)
                .map(|action| (*action, counts[*action as usize]))
                .collect()
        };
        let counts = nonzero(&state.counts);
        if counts.is_empty() {
            return None;
        }
        let window_index = |days: u64| self.window_days.iter().position(|d| *d == days);
        let windows = self
            .config
            .window_days
            .iter()
            .map(|days| {
                let counts = window_index(*days)
                    .map(|index| nonzero(&state.windows[index]))
                    .unwrap_or_default();
                (*days, counts)
            })
            .collect();
        let net_purchases = |counts: &[i64; ACTIONS]| {
            counts[Action::Purchase as usize] - counts[Action::Cancellation as usize]
        };
        let recent_purchases = window_index(self.config.segment.recency_days)
            .map_or(0, |index| net_purchases(&state.windows[index]));
        let purchases = net_purchases(&state.counts);
        let mut present = state.times.iter().filter(|(_, n)| **n > 0).map(|(t, _)| *t);
        let first_seen = present.next();
        let last_seen = present.next_back().or(first_seen);
        let last_purchase = state.owned.values().filter_map(Owned::last_purchase).max();
        Some(Profile {
            counts,
            windows,
            quantity: state.quantity,
            spend: state.spend,
            distinct_items: state.distinct_items,
            distinct_categories: state.distinct_categories,
            first_seen,
            last_seen,
            last_purchase,
            avg_rating: (state.ratings > 0)
                .then(|| Score(state.rating_sum as f64 / state.ratings as f64 / 100.0)),
            ratings: state.ratings,
            top_categories: last_seen
                .map(|ms| self.top_categories(state, ms.div_euclid(DAY_MS as i64)))
                .unwrap_or_default(),
            segment: Segment::classify(
                last_purchase.is_some(),
                recent_purchases,
                purchases,
                state.spend,
                &self.config.segment,
            ),
            attributes: BTreeMap::new(),
            risk: None,
            cluster: None,
            factors: None,
        })
    }

    /// Per category, the era sums decayed to `latest_day`, eras ascending
    /// (see [`Decay::value`]); purchases weigh nothing in a category without
    /// net units bought.
    fn top_categories(&self, state: &UserState, latest_day: i64) -> TopCategories {
        let mut eras: BTreeMap<Id, Vec<(i64, i128)>> = BTreeMap::new();
        for (&(category, era, purchase), &weight) in &state.weights {
            let units = state.category_units.get(&category).copied().unwrap_or(0);
            if purchase && units <= 0 {
                continue;
            }
            let eras = eras.entry(category).or_default();
            match eras.last_mut() {
                Some((last, sum)) if *last == era => *sum += weight,
                _ => eras.push((era, weight)),
            }
        }
        let affinities = eras
            .into_iter()
            .map(|(category, eras)| (category, self.decay.value(eras, latest_day)));
        rank_categories(affinities, self.config.top_categories)
    }
}
