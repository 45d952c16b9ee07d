//! From-scratch item feedback: [`crate::feedback::item_feedback`]
//! recomputed with plain loops over every update up to a time.

use std::collections::{BTreeMap, BTreeSet};

use crate::feedback::{ItemFeedback, FEEDBACK_ACTIONS};
use crate::profile::ActionCounts;
use crate::time::DAY_MS;
use crate::{Action, Event, Id};

/// The item feedback at time `at` of the updates `(event, timestamp, diff)`
/// with `timestamp <= at`, with windows of `window_days`.
pub fn item_feedback(
    events: &[(Event, u64, isize)],
    at: u64,
    window_days: &[u64],
) -> BTreeMap<Id, ItemFeedback> {
    let window_days: BTreeSet<u64> = window_days.iter().copied().collect();
    // Per item: lifetime counts, and counts per (window days, action).
    let mut lifetime: BTreeMap<Id, BTreeMap<Action, i64>> = BTreeMap::new();
    let mut windows: BTreeMap<Id, BTreeMap<(u64, Action), i64>> = BTreeMap::new();
    for (event, time, diff) in events {
        if *time > at || !FEEDBACK_ACTIONS.contains(&event.action) {
            continue;
        }
        let diff = *diff as i64;
        *lifetime
            .entry(event.item)
            .or_default()
            .entry(event.action)
            .or_default() += diff;
        for &days in &window_days {
            if at < time.saturating_add(days.saturating_mul(DAY_MS)) {
                *windows
                    .entry(event.item)
                    .or_default()
                    .entry((days, event.action))
                    .or_default() += diff;
            }
        }
    }
    let mut feedback = BTreeMap::new();
    for (item, counts) in lifetime {
        if counts.values().all(|count| *count == 0) {
            continue;
        }
        let in_windows = windows.remove(&item).unwrap_or_default();
        let item_windows = window_days
            .iter()
            .map(|&days| {
                let counts: ActionCounts = FEEDBACK_ACTIONS
                    .iter()
                    .map(|&action| {
                        let count = in_windows.get(&(days, action)).copied().unwrap_or(0);
                        (action, count)
                    })
                    .collect();
                (days, counts)
            })
            .collect();
        let item_feedback = ItemFeedback {
            counts: counts.into_iter().collect(),
            windows: item_windows,
        };
        feedback.insert(item, item_feedback);
    }
    feedback
}
