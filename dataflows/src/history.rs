//! Each user's history: their most recent N distinct items, each with the
//! user's affinity for it. History is the input of co-occurrence
//! ([`crate::similarity`]) and of scoring ([`crate::recommend`]).
//!
//! The state is integer: net event counts per (user, item, action, day)
//! bucket, plus the latest event time of each bucket. The affinity, a float,
//! is computed inside the per-user reduction from those integers in
//! day-ascending order, so [`crate::reference::cf`] reproduces it bit for bit.
//!
//! ```text
//! n(u,i,a,d)   = Σ diff of u's events on i with action a on day d; present iff > 0
//! candidate    = (u,i) with a present bucket of an action of positive weight
//! last_time    = max time_ms of such a bucket's net-present events
//! history(u)   = the first N candidates by (last_time desc, item asc)
//! affinity(u,i)= Σ_d w(u,i,d) · 2^((d − D)/H)   (day-ascending; decay off: Σ_d w)
//!   w(u,i,d)   = Σ_a weight(a) · n(u,i,a,d) over present buckets,  D = day of u's latest history item
//! ```

use serde::{Deserialize, Serialize};

use differential_dataflow::VecCollection;

pub use crate::event::ActionWeights;
use crate::recommend::CfConfig;
use crate::{Action, Event, EventTime, Id, Score};

/// What one user has done to one item, as integers: the input of the history.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UserItem {
    /// Latest `time_ms` of a net-present event of positive weight.
    pub last_time_ms: i64,
    /// `(day, w(u,i,day))` for the days with a nonzero weight, ascending.
    pub day_weights: Vec<(i64, i64)>,
}

/// One item of a user's history.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub item: Id,
    pub last_time_ms: i64,
    pub affinity: Score,
}

/// `((user, item), state)` of candidate pairs.
pub type UserItems<'s, T> = VecCollection<'s, T, ((Id, Id), UserItem)>;

/// The users and user-item pairs present in the events.
pub struct Interactions<'s, T: EventTime> {
    /// `((user, item), state)` for every candidate pair: every item the user
    /// has "seen", whether or not it is among their N most recent. Only
    /// events of `config.primary_action` count when it is set.
    pub user_items: UserItems<'s, T>,
    /// The same from events of `config.indicator_action` only, when set: the
    /// input of the cross-occurrence indicator.
    pub indicator_items: Option<UserItems<'s, T>>,
    /// Every user with a net-present event of any action, weight 0 included.
    pub users: VecCollection<'s, T, Id>,
}

/// Integer state of the events: present buckets folded per (user, item),
/// from the events of `config.primary_action` (all if unset) and, apart,
/// of `config.indicator_action`.
///
/// ```sql
/// SELECT user, item, max(time_ms) FILTER (weight > 0), array_agg((day, Σ weight·n))
/// FROM (SELECT user, item, action, day, sum(diff) AS n, max(time_ms) ... HAVING n > 0)
/// GROUP BY user, item HAVING bool_or(weight > 0)
/// ```
pub fn interactions<'s, T: EventTime>(
    events: VecCollection<'s, T, Event>,
    config: &CfConfig,
) -> Interactions<'s, T> {
    // Exact latest times under retraction need the distinct times of a bucket;
    // everything after this reduction is one record per present bucket.
    let buckets = events
        .map(|e| ((e.user, e.item, e.action, e.day()), e.time_ms))
        .reduce_named("CfBuckets", |_bucket, times, out| {
            let net: isize = times.iter().map(|(_, r)| *r).sum();
            if net > 0 {
                // A positive sum has a positive term, so `latest` exists.
                let latest = times.iter().filter(|(_, r)| *r > 0).map(|(t, _)| **t).max();
                if let Some(latest) = latest {
                    out.push(((net as i64, latest), 1));
                }
            }
        });

    let users = buckets
        .clone()
        .map(|((user, _, _, _), _)| (user, ()))
        .reduce_named("CfUsers", |_user, _, out| out.push(((), 1)))
        .map(|(user, ())| user);

    let weights = config.weights.clone();
    let fold = move |buckets: VecCollection<'s, T, _>| {
        let weights = weights.clone();
        buckets
            .map(|((user, item, action, day), (net, latest))| {
                ((user, item), (day, action, net, latest))
            })
            .reduce_named("CfUserItems", move |_pair, buckets, out| {
                if let Some(state) = fold_buckets(buckets.iter().map(|(b, _)| **b), &weights) {
                    out.push((state, 1));
                }
            })
    };
    let user_items = match config.primary_action {
        Some(primary) => fold(
            buckets
                .clone()
                .filter(move |((_, _, action, _), _)| *action == primary),
        ),
        None => fold(buckets.clone()),
    };
    let indicator_items = config
        .indicator_action
        .map(|indicator| fold(buckets.filter(move |((_, _, action, _), _)| *action == indicator)));

    Interactions {
        user_items,
        indicator_items,
        users,
    }
}

/// Folds the present buckets `(day, action, net, latest)` of one (user,
/// item), in ascending (day, action) order, into its [`UserItem`]; `None`
/// if no bucket has positive weight.
pub fn fold_buckets(
    buckets: impl IntoIterator<Item = (i64, Action, i64, i64)>,
    weights: &ActionWeights,
) -> Option<UserItem> {
    let mut last_time_ms: Option<i64> = None;
    let mut day_weights: Vec<(i64, i64)> = Vec::new();
    for (day, action, net, latest) in buckets {
        let weight = weights.weight(action);
        if weight > 0 {
            last_time_ms = Some(last_time_ms.map_or(latest, |t| t.max(latest)));
        }
        match day_weights.last_mut() {
            Some((d, w)) if *d == day => *w += weight * net,
            _ => day_weights.push((day, weight * net)),
        }
    }
    day_weights.retain(|&(_, w)| w != 0);
    last_time_ms.map(|last_time_ms| UserItem {
        last_time_ms,
        day_weights,
    })
}

/// Each user's most recent `config.history_length` items with affinities.
///
/// ```sql
/// SELECT user, item, last_time, affinity FROM user_items
/// QUALIFY row_number() OVER (PARTITION BY user ORDER BY last_time DESC, item) <= N
/// ```
pub fn history<'s, T: EventTime>(
    user_items: VecCollection<'s, T, ((Id, Id), UserItem)>,
    config: &CfConfig,
) -> VecCollection<'s, T, (Id, HistoryEntry)> {
    let length = config.history_length;
    let half_life_days = config.decay_half_life_days;
    user_items
        .map(|((user, item), state)| (user, (item, state)))
        .reduce_named("CfHistory", move |_user, items, out| {
            let items = items
                .iter()
                .filter(|(_, r)| *r > 0)
                .map(|(v, _)| (v.0, &v.1));
            for entry in select_history(items, length, half_life_days) {
                out.push((entry, 1));
            }
        })
}

/// The history of one user from their candidate items: top `length` (0 =
/// all) by (last time desc, item asc), with affinities. Shared by the
/// dataflow and the reference so both run the same float operations.
pub fn select_history<'a>(
    items: impl IntoIterator<Item = (Id, &'a UserItem)>,
    length: usize,
    half_life_days: Option<f64>,
) -> Vec<HistoryEntry> {
    let mut items: Vec<(Id, &UserItem)> = items.into_iter().collect();
    items.sort_by(|(a, sa), (b, sb)| sb.last_time_ms.cmp(&sa.last_time_ms).then(a.cmp(b)));
    if length > 0 {
        items.truncate(length);
    }
    let Some(latest) = items.first().map(|(_, s)| s.last_time_ms) else {
        return Vec::new();
    };
    let latest_day = latest.div_euclid(crate::time::DAY_MS as i64);
    items
        .into_iter()
        .map(|(item, state)| HistoryEntry {
            item,
            last_time_ms: state.last_time_ms,
            affinity: Score(affinity(&state.day_weights, latest_day, half_life_days)),
        })
        .collect()
}

/// Σ w · 2^((day − latest_day)/H) over `day_weights` in the given (day
/// ascending) order; without decay, the exact integer sum.
pub fn affinity(day_weights: &[(i64, i64)], latest_day: i64, half_life_days: Option<f64>) -> f64 {
    match half_life_days {
        None => day_weights.iter().map(|&(_, w)| w).sum::<i64>() as f64,
        Some(h) => day_weights.iter().fold(0.0, |acc, &(day, w)| {
            acc + w as f64 * ((day - latest_day) as f64 / h).exp2()
        }),
    }
}
