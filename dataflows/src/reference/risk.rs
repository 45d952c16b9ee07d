//! From-scratch risk features and alerts (see [`crate::risk`]): the
//! features from the net events of each user, and the alerts by evaluating
//! every rule at each time a user has updates, from all updates up to it.

use std::collections::{BTreeMap, BTreeSet};

use crate::risk::{
    is_taking_back, spend_of, z_score, Alert, DayActivity, RiskConfig, RiskFeatures, RiskRules,
    Velocity,
};
use crate::time::DAY_MS;
use crate::{Action, Event, Id, Score};

/// The `risk` section of every user with a profile (a nonzero net count of
/// some action) and an inserted event, at time `at`.
pub fn features(
    events: &[(Event, u64, isize)],
    at: u64,
    config: &RiskConfig,
) -> BTreeMap<Id, RiskFeatures> {
    let mut counts: BTreeMap<(Id, Action), i64> = BTreeMap::new();
    for (event, time, diff) in events {
        if *time <= at {
            *counts.entry((event.user, event.action)).or_default() += *diff as i64;
        }
    }
    let users: BTreeSet<Id> = counts
        .into_iter()
        .filter(|(_, count)| *count != 0)
        .map(|((user, _), _)| user)
        .collect();
    users
        .into_iter()
        .filter_map(|user| {
            let updates = events
                .iter()
                .filter(|(e, time, _)| e.user == user && *time <= at)
                .map(|(e, _, diff)| (e, *diff as i64));
            user_features(updates, config).map(|features| (user, features))
        })
        .collect()
}

/// The alerts standing at time `at`, with their net counts.
pub fn alerts(
    events: &[(Event, u64, isize)],
    at: u64,
    config: &RiskConfig,
) -> BTreeMap<(Id, Alert), i64> {
    let rules = RiskRules::new(config);
    let times: BTreeSet<u64> = events
        .iter()
        .map(|(_, t, _)| *t)
        .filter(|t| *t <= at)
        .collect();
    let mut open: BTreeMap<(Id, usize), Alert> = BTreeMap::new();
    let mut standing: BTreeMap<(Id, Alert), i64> = BTreeMap::new();
    for time in times {
        let touched: BTreeSet<Id> = events
            .iter()
            .filter(|(_, t, _)| *t == time)
            .map(|(e, _, _)| e.user)
            .collect();
        for user in touched {
            let mine = || {
                events
                    .iter()
                    .filter(move |(e, t, _)| e.user == user && *t <= time)
            };
            let after = user_features(mine().map(|(e, _, d)| (e, *d as i64)), config);
            // The same, without this time's takings back but with their times.
            let kept = mine().map(|(e, t, d)| {
                let left_out = *t == time && is_taking_back(e.action, *d as i64);
                (e, if left_out { 0 } else { *d as i64 }, *d > 0)
            });
            let mid = features_of(kept, config);
            for index in 0..rules.rule_count() {
                let holds = after.as_ref().and_then(|f| rules.fires(index, f));
                match (open.remove(&(user, index)), holds) {
                    (None, Some(value)) => {
                        let alert = rules.alert(index, value, after.as_ref().unwrap());
                        *standing.entry((user, alert.clone())).or_default() += 1;
                        open.insert((user, index), alert);
                    }
                    (Some(alert), Some(_)) => {
                        open.insert((user, index), alert);
                    }
                    (Some(alert), None) => {
                        if mid.as_ref().and_then(|f| rules.fires(index, f)).is_some() {
                            *standing.entry((user, alert)).or_default() -= 1;
                        }
                    }
                    (None, None) => {}
                }
            }
        }
    }
    standing.retain(|_, count| *count != 0);
    standing
}

/// The features of one user's updates `(event, diff)`.
fn user_features<'a>(
    updates: impl Iterator<Item = (&'a Event, i64)>,
    config: &RiskConfig,
) -> Option<RiskFeatures> {
    features_of(updates.map(|(e, d)| (e, d, d > 0)), config)
}

/// The features of `(event, diff counted, whether its time counts)`.
fn features_of<'a>(
    updates: impl Iterator<Item = (&'a Event, i64, bool)>,
    config: &RiskConfig,
) -> Option<RiskFeatures> {
    let mut times = BTreeSet::new();
    let mut net: BTreeMap<&Event, i64> = BTreeMap::new();
    for (event, diff, inserted) in updates {
        if inserted {
            times.insert(event.time_ms);
        }
        *net.entry(event).or_default() += diff;
    }
    net.retain(|_, count| *count != 0);
    let latest = *times.last()?;
    let previous = times.range(..latest).next_back().copied();

    let velocity = config
        .velocity_secs
        .iter()
        .map(|&secs| {
            let start = latest - (secs * 1000) as i64;
            let mut counts = Velocity::default();
            let mut items: BTreeMap<Id, i64> = BTreeMap::new();
            let mut sessions: BTreeMap<Id, i64> = BTreeMap::new();
            for (event, count) in &net {
                if event.time_ms > start && event.time_ms <= latest {
                    counts.events += count;
                    if event.action == Action::Purchase {
                        counts.purchases += count;
                    }
                    counts.spend += count * spend_of(event);
                    *items.entry(event.item).or_default() += count;
                    if let Some(session) = event.session {
                        *sessions.entry(session).or_default() += count;
                    }
                }
            }
            counts.items = items.values().filter(|c| **c > 0).count() as i64;
            counts.sessions = sessions.values().filter(|c| **c > 0).count() as i64;
            (secs, counts)
        })
        .collect();

    let purchased_at_latest: i64 = net
        .iter()
        .filter(|(e, _)| e.time_ms == latest && e.action == Action::Purchase)
        .map(|(_, count)| count)
        .sum();
    let since_previous_ms = previous.map(|previous| latest - previous);

    let day = latest.div_euclid(DAY_MS as i64);
    let mut days: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for (event, count) in &net {
        let bucket = days.entry(event.day()).or_default();
        bucket.0 += count * spend_of(event);
        bucket.1 += count;
    }
    let n = config.history_days as i64;
    let (spend, events) = days.get(&day).copied().unwrap_or_default();
    let before: Vec<(i64, i64)> = (day - n..day)
        .map(|d| days.get(&d).copied().unwrap_or_default())
        .collect();
    let max_spend_before = before.iter().map(|b| b.0).max().unwrap_or(0).max(0);
    Some(RiskFeatures {
        velocity,
        since_previous_ms,
        purchase_after_idle_days: since_previous_ms
            .filter(|_| purchased_at_latest > 0)
            .map(|ms| Score(ms as f64 / DAY_MS as f64)),
        day: DayActivity {
            day,
            spend,
            events,
            active_days: before.iter().filter(|b| b.1 != 0).count() as i64,
            max_spend_before,
            spend_z: z_score(spend, before.iter().map(|b| b.0), config.history_days),
            events_z: z_score(events, before.iter().map(|b| b.1), config.history_days),
            spend_over_max: (max_spend_before > 0)
                .then(|| Score(spend as f64 / max_spend_before as f64)),
        },
        as_of_ms: latest,
    })
}
