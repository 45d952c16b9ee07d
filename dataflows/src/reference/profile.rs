//! From-scratch profiles: [`crate::profile::profiles`] recomputed with plain
//! loops over every update up to a time, the oracle of its tests.

use std::collections::{BTreeMap, BTreeSet};

use crate::decay::Decay;
use crate::profile::{
    rank_categories, AttributeVersion, CatalogVersion, Profile, ProfileConfig, Segment,
    TopCategories,
};
use crate::time::DAY_MS;
use crate::{Action, Event, Id, Score};

/// The profiles at time `at` of the updates `(record, timestamp, diff)` with
/// `timestamp <= at`.
pub fn profiles(
    events: &[(Event, u64, isize)],
    catalog: &[((Id, CatalogVersion), u64, isize)],
    user_attributes: &[((Id, AttributeVersion), u64, isize)],
    at: u64,
    config: &ProfileConfig,
) -> BTreeMap<Id, Profile> {
    let current_catalog: BTreeMap<Id, CatalogVersion> =
        latest_versions(catalog, at, |(item, version)| {
            (*item, version.version_ms, version.clone())
        });
    let current_attributes: BTreeMap<(Id, String), (i64, String)> =
        latest_versions(user_attributes, at, |(user, version)| {
            let key = (*user, version.name.clone());
            (
                key,
                version.version_ms,
                (version.version_ms, version.value.clone()),
            )
        });

    let mut users: BTreeMap<Id, UserTotals> = BTreeMap::new();
    for (event, multiplicity) in net(events, at) {
        let totals = users.entry(event.user).or_default();
        *totals.counts.entry(event.action).or_default() += multiplicity;
        // Units bought (+) or cancelled (−) by this record.
        let units = match event.action {
            Action::Purchase => event.quantity,
            Action::Cancellation => -event.quantity,
            _ => 0,
        };
        let transaction = matches!(event.action, Action::Purchase | Action::Cancellation);
        if transaction {
            let owned = totals.owned.entry(event.item).or_default();
            owned.units += multiplicity * units;
        } else {
            *totals.other_items.entry(event.item).or_default() += multiplicity;
        }
        let entry = current_catalog.get(&event.item);
        let category = event.category.or(entry.and_then(|e| e.category));
        if let Some(category) = category {
            if transaction {
                *totals.category_units.entry(category).or_default() += multiplicity * units;
            } else {
                *totals.other_categories.entry(category).or_default() += multiplicity;
            }
            let weight = config.action_weights.weight(event.action);
            let purchase = event.action == Action::Purchase;
            let (day, decay) = (event.day(), Decay::new(config.half_life_days));
            *totals
                .weights
                .entry((category, decay.era(day), purchase))
                .or_default() += decay.scaled(day, multiplicity * weight);
        }
        if transaction {
            totals.quantity += multiplicity * units;
            if let Some(price) = event.price.or(entry.and_then(|e| e.price)) {
                totals.spend += multiplicity * units * price;
            }
        }
        if let Some(rating) = event.rating {
            totals.rating_sum += multiplicity * rating;
            totals.ratings += multiplicity;
        }
    }

    // Times are those of inserted records, never taken back (see `TimeSpan`).
    for (event, time, diff) in events {
        if *time <= at && *diff > 0 {
            let totals = users.entry(event.user).or_default();
            let ms = event.time_ms;
            totals.seen = Some(match totals.seen {
                Some((first, last)) => (first.min(ms), last.max(ms)),
                None => (ms, ms),
            });
            if event.action == Action::Purchase {
                let owned = totals.owned.entry(event.item).or_default();
                owned.last_purchase = owned.last_purchase.max(Some(ms));
            }
        }
    }

    let windows: BTreeSet<u64> = config
        .window_days
        .iter()
        .copied()
        .chain([config.segment.recency_days])
        .collect();
    for (event, time, diff) in events {
        for &days in &windows {
            if *time <= at && at < time.saturating_add(days.saturating_mul(DAY_MS)) {
                let totals = users.entry(event.user).or_default();
                *totals.windows.entry((days, event.action)).or_default() += *diff as i64;
            }
        }
    }

    let mut profiles = BTreeMap::new();
    for (user, totals) in users {
        let counts: BTreeMap<Action, i64> = nonzero(totals.counts);
        if counts.is_empty() {
            continue;
        }
        let recent_purchases = totals
            .windows
            .get(&(config.segment.recency_days, Action::Purchase))
            .copied()
            .unwrap_or(0);
        let mut windows: BTreeMap<u64, BTreeMap<Action, i64>> = config
            .window_days
            .iter()
            .map(|days| (*days, BTreeMap::new()))
            .collect();
        for ((days, action), count) in nonzero(totals.windows.clone()) {
            if let Some(window) = windows.get_mut(&days) {
                window.insert(action, count);
            }
        }
        let recent_purchases = recent_purchases
            - totals
                .windows
                .get(&(config.segment.recency_days, Action::Cancellation))
                .copied()
                .unwrap_or(0);
        let count = |action| counts.get(&action).copied().unwrap_or(0);
        let purchases = count(Action::Purchase) - count(Action::Cancellation);
        let owned: Vec<&Owned> = totals.owned.values().filter(|o| o.units > 0).collect();
        let last_purchase = owned.iter().filter_map(|o| o.last_purchase).max();
        let mut items: BTreeSet<Id> = positive_keys(&totals.other_items).into_iter().collect();
        items.extend(
            totals
                .owned
                .iter()
                .filter(|(_, o)| o.units > 0 && o.last_purchase.is_some())
                .map(|(item, _)| *item),
        );
        let mut categories: BTreeSet<Id> = positive_keys(&totals.other_categories)
            .into_iter()
            .collect();
        categories.extend(positive_keys(&totals.category_units));
        // Purchases weigh nothing in a category without net units bought.
        let mut weights: BTreeMap<(Id, i64), i128> = BTreeMap::new();
        for (&(category, era, purchase), &weight) in &totals.weights {
            let units = totals.category_units.get(&category).copied().unwrap_or(0);
            if !(purchase && units <= 0) {
                *weights.entry((category, era)).or_default() += weight;
            }
        }
        let latest_day = totals.seen.map(|(_, last)| last.div_euclid(DAY_MS as i64));
        let attributes = current_attributes
            .range((user, String::new())..)
            .take_while(|((u, _), _)| *u == user)
            .map(|((_, name), (_, value))| (name.clone(), value.clone()))
            .collect();
        let profile = Profile {
            windows: windows
                .into_iter()
                .map(|(days, counts)| (days, counts.into_iter().collect()))
                .collect(),
            quantity: totals.quantity,
            spend: totals.spend,
            distinct_items: items.len() as i64,
            distinct_categories: categories.len() as i64,
            first_seen: totals.seen.map(|(first, _)| first),
            last_seen: totals.seen.map(|(_, last)| last),
            last_purchase,
            avg_rating: (totals.ratings > 0)
                .then(|| Score(totals.rating_sum as f64 / totals.ratings as f64 / 100.0)),
            ratings: totals.ratings,
            top_categories: latest_day
                .map(|day| top_categories(&weights, day, config))
                .unwrap_or_default(),
            segment: Segment::classify(
                last_purchase.is_some(),
                recent_purchases,
                purchases,
                totals.spend,
                &config.segment,
            ),
            attributes,
            counts: counts.into_iter().collect(),
            risk: None,
            cluster: None,
            factors: None,
        };
        profiles.insert(user, profile);
    }
    profiles
}

/// Net sums of one user's events at the queried time.
#[derive(Default)]
struct UserTotals {
    counts: BTreeMap<Action, i64>,
    windows: BTreeMap<(u64, Action), i64>,
    /// Net count per item of events other than purchases and cancellations.
    other_items: BTreeMap<Id, i64>,
    /// Purchases and cancellations per item.
    owned: BTreeMap<Id, Owned>,
    /// Net count per category of events other than purchases and cancellations.
    other_categories: BTreeMap<Id, i64>,
    /// Units bought less cancelled per category.
    category_units: BTreeMap<Id, i64>,
    /// Affinity weight per (category, era, whether of purchases), in the
    /// fixed point of [`Decay::scaled`].
    weights: BTreeMap<(Id, i64, bool), i128>,
    /// Earliest and latest time of the user's inserted records.
    seen: Option<(i64, i64)>,
    quantity: i64,
    spend: i64,
    rating_sum: i64,
    ratings: i64,
}

/// What a user bought and cancelled of one item.
#[derive(Default)]
struct Owned {
    /// Units bought less units cancelled: owned iff > 0.
    units: i64,
    /// Latest time of an inserted purchase record.
    last_purchase: Option<i64>,
}

/// Each distinct record with its nonzero net multiplicity at `at`.
fn net<D: Ord + Clone>(updates: &[(D, u64, isize)], at: u64) -> BTreeMap<D, i64> {
    let mut net = BTreeMap::new();
    for (record, time, diff) in updates {
        if *time <= at {
            *net.entry(record.clone()).or_default() += *diff as i64;
        }
    }
    nonzero(net)
}

fn nonzero<K: Ord>(map: BTreeMap<K, i64>) -> BTreeMap<K, i64> {
    map.into_iter().filter(|(_, count)| *count != 0).collect()
}

fn positive_keys<K: Ord + Clone>(map: &BTreeMap<K, i64>) -> Vec<K> {
    map.iter()
        .filter(|(_, count)| **count > 0)
        .map(|(key, _)| key.clone())
        .collect()
}

/// Per key, the value of the present version (positive net count) with the
/// largest (version, value).
fn latest_versions<D: Ord + Clone, K: Ord, V: Ord>(
    updates: &[(D, u64, isize)],
    at: u64,
    split: impl Fn(&D) -> (K, i64, V),
) -> BTreeMap<K, V> {
    let mut latest: BTreeMap<K, (i64, V)> = BTreeMap::new();
    for (record, count) in net(updates, at) {
        if count <= 0 {
            continue;
        }
        let (key, version, value) = split(&record);
        let candidate = (version, value);
        match latest.get(&key) {
            Some(best) if *best >= candidate => {}
            _ => {
                latest.insert(key, candidate);
            }
        }
    }
    latest
        .into_iter()
        .map(|(key, (_, value))| (key, value))
        .collect()
}

/// Σ over eras ascending of the era sums, decayed to `latest_day` (see
/// [`Decay::value`]); positive affinities only, best first, ties by id.
fn top_categories(
    weights: &BTreeMap<(Id, i64), i128>,
    latest_day: i64,
    config: &ProfileConfig,
) -> TopCategories {
    let decay = Decay::new(config.half_life_days);
    let mut eras: BTreeMap<Id, Vec<(i64, i128)>> = BTreeMap::new();
    for (&(category, era), &weight) in weights {
        eras.entry(category).or_default().push((era, weight));
    }
    let affinities = eras
        .into_iter()
        .map(|(category, eras)| (category, decay.value(eras, latest_day)));
    rank_categories(affinities, config.top_categories)
}
