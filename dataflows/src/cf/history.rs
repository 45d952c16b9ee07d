//! Each user's history: their most recent N distinct items, each with the
//! user's affinity for it. History is the input of co-occurrence
//! ([`super::similarity`]) and of scoring ([`super::recommend`]).
//!
//! The state is integer: net event counts per (user, item, action, day)
//! bucket (the day only when the affinity decays: without decay every
//! event of a (user, item, action) is in day 0's bucket, so the state does
//! not grow with the days of the log), the latest event time of each bucket (of its inserted events: a
//! retraction takes back a count, not a time, see [`TimeSpan`]), and for
//! purchases and cancellations the net units. The affinity, a float, is
//! computed inside the per-user reduction from those integers in
//! day-ascending order, so [`crate::reference::cf`] reproduces it bit for
//! bit.
//!
//! Purchases count only while the user owns the item: a cancellation takes
//! back units, not the purchase record, so a user who cancels one of two
//! units still has the item in their history (and it is still "seen"), and
//! one who cancels every unit, on any day, has no purchase of it left.
//!
//! ```text
//! n(u,i,a,d)   = Σ diff of u's events on i with action a on day d; present iff > 0
//! q(u,i)       = Σ purchased units − Σ cancelled units;  u owns i iff q(u,i) > 0
//! counted      = present buckets, without the purchase buckets of an item u does not own
//! candidate    = (u,i) with a counted bucket of an action of positive weight
//! last_time    = max time_ms of such a bucket's inserted events
//! history(u)   = the first N candidates by (last_time desc, item asc)
//! affinity(u,i)= Σ_d w(u,i,d) · 2^((d − D)/H)   (day-ascending; decay off: Σ_d w)
//!   w(u,i,d)   = Σ_a weight(a) · n(u,i,a,d) over counted buckets,  D = day of u's latest history item
//! ```

use serde::{Deserialize, Serialize};

use differential_dataflow::collection::AsCollection;
use differential_dataflow::operators::{CountTotal, ThresholdTotal};
use differential_dataflow::VecCollection;
use timely::dataflow::operators::vec::Map;

use super::CfConfig;
use crate::time::TimeSpan;
use crate::{Action, ActionWeights, Event, EventTime, Id, Score};

/// What one user has done to one item, as integers: the input of the history.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UserItem {
    /// Latest `time_ms` of an inserted event in a counted bucket of
    /// positive weight.
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
    /// has "seen", whether or not it is among their N most recent; a
    /// purchased item only while the user owns it. Only events of
    /// `config.primary_action` count when it is set.
    pub user_items: UserItems<'s, T>,
    /// The same from events of `config.indicator_action` only, when set: the
    /// input of the cross-occurrence indicator.
    pub indicator_items: Option<UserItems<'s, T>>,
    /// Every user with a net-present event of any action, weight 0 included.
    pub users: VecCollection<'s, T, Id>,
}

/// Integer state of the events: counted buckets folded per (user, item),
/// from the events of `config.primary_action` (all if unset) and, apart,
/// of `config.indicator_action`.
///
/// ```sql
/// SELECT user, item, max(time_ms) FILTER (weight > 0), array_agg((day, Σ weight·n))
/// FROM (SELECT user, item, action, day, sum(diff) AS n, max(time_ms), sum(diff · units) ...)
/// WHERE n > 0 AND (action <> 'purchase' OR q(user, item) > 0)
/// GROUP BY user, item HAVING bool_or(weight > 0)
/// ```
pub fn interactions<'s, T: EventTime>(
    events: VecCollection<'s, T, Event>,
    config: &CfConfig,
) -> Interactions<'s, T> {
    // One record per bucket: net events and units are sums, and the latest
    // time a span that only widens (see `TimeSpan`).
    let decays = config.decay_half_life_days.is_some();
    let buckets = events
        .inner
        .map(move |(e, time, diff)| {
            let sums = (diff as i64, units(&e) * diff as i64);
            let span = TimeSpan::of_update(e.time_ms, diff);
            (
                (e.user, e.item, e.action, bucket_day(&e, decays)),
                time,
                (sums, span),
            )
        })
        .as_collection()
        .count_total()
        .flat_map(|(bucket, ((net, units), span))| {
            let state = Bucket {
                net,
                latest: span.last(),
                units,
            };
            (net != 0 || units != 0).then_some((bucket, state))
        });

    let users = buckets
        .clone()
        .filter(|(_, bucket)| bucket.net > 0)
        .map(|((user, _, _, _), _)| (user, ()))
        .distinct_total()
        .map(|(user, ())| user);

    let weights = config.weights.clone();
    let fold = move |buckets: VecCollection<'s, T, _>, only: Option<Action>| {
        let weights = weights.clone();
        buckets
            .map(|((user, item, action, day), bucket): (_, Bucket)| {
                ((user, item), (day, action, bucket))
            })
            .reduce_named("CfUserItems", move |_pair, buckets, out| {
                let buckets = buckets.iter().map(|(b, _)| **b);
                if let Some(state) = fold_buckets(buckets, &weights, only) {
                    out.push((state, 1));
                }
            })
    };
    let user_items = match config.primary_action {
        Some(primary) => fold(
            buckets
                .clone()
                .filter(move |((_, _, action, _), _)| counts_for(primary, *action)),
            Some(primary),
        ),
        None => fold(buckets.clone(), None),
    };
    let indicator_items = config.indicator_action.map(|indicator| {
        fold(
            buckets.filter(move |((_, _, action, _), _)| counts_for(indicator, *action)),
            Some(indicator),
        )
    });

    Interactions {
        user_items,
        indicator_items,
        users,
    }
}

/// The day of an event's bucket: its day when the affinity decays by day,
/// else 0, so that without decay a (user, item, action) keeps one bucket
/// however many days the log spans.
pub fn bucket_day(event: &Event, decays: bool) -> i64 {
    if decays {
        event.day()
    } else {
        0
    }
}

/// The units an event adds to or takes from what the user owns: a
/// purchase's quantity, a cancellation's, 0 for other actions.
fn units(event: &Event) -> i64 {
    match event.action {
        Action::Purchase | Action::Cancellation => event.quantity,
        _ => 0,
    }
}

/// Whether buckets of `action` are read when only `only`'s events count:
/// its own, and cancellations beside purchases, for ownership.
fn counts_for(only: Action, action: Action) -> bool {
    action == only || (only == Action::Purchase && action == Action::Cancellation)
}

/// The integer state of one (user, item, action, day) bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Bucket {
    /// Net number of events; the bucket is present iff > 0.
    pub net: i64,
    /// Latest `time_ms` of the bucket's inserted events, if any.
    pub latest: Option<i64>,
    /// Net units (Σ diff · quantity) of a purchase or cancellation bucket.
    pub units: i64,
}

/// Folds the buckets `(day, action, bucket)` of one (user, item), in
/// ascending (day, action) order, into its [`UserItem`]; `None` if no
/// counted bucket has positive weight. With `only`, buckets of other actions
/// weigh nothing (cancellations still count for ownership).
fn fold_buckets(
    buckets: impl IntoIterator<Item = (i64, Action, Bucket)>,
    weights: &ActionWeights,
    only: Option<Action>,
) -> Option<UserItem> {
    let buckets: Vec<(i64, Action, Bucket)> = buckets.into_iter().collect();
    let owned_units: i64 = buckets
        .iter()
        .map(|(_, action, bucket)| match action {
            Action::Purchase => bucket.units,
            Action::Cancellation => -bucket.units,
            _ => 0,
        })
        .sum();
    let mut last_time_ms: Option<i64> = None;
    let mut day_weights: Vec<(i64, i64)> = Vec::new();
    for (day, action, bucket) in buckets {
        if bucket.net <= 0 || (action == Action::Purchase && owned_units <= 0) {
            continue;
        }
        let weight = match only {
            Some(only) if only != action => 0,
            _ => weights.weight(action),
        };
        if weight > 0 {
            last_time_ms = last_time_ms.max(bucket.latest);
        }
        match day_weights.last_mut() {
            Some((d, w)) if *d == day => *w += weight * bucket.net,
            _ => day_weights.push((day, weight * bucket.net)),
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
fn select_history<'a>(
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
