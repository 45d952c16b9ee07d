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

use std::cmp::Reverse;

use differential_dataflow::collection::AsCollection;
use differential_dataflow::difference::Semigroup;
use differential_dataflow::Data;
use differential_dataflow::VecCollection;
use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::vec::Partition;
use timely::dataflow::operators::Operator;

use super::CfConfig;
use crate::keyed::ByTime;
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

/// Each user's interactions and history, and the changes of co-occurrence
/// they make.
pub struct Histories<'s, T: EventTime> {
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
    /// Each user's most recent `config.history_length` items with
    /// affinities, from `user_items`.
    pub history: VecCollection<'s, T, (Id, HistoryEntry)>,
    /// The same from `indicator_items`, when set.
    pub indicator_history: Option<VecCollection<'s, T, (Id, HistoryEntry)>>,
    /// `(i, j)` with `i < j`, once per user with both in their history:
    /// counted, the co-occurrence `c_ij`.
    pub pairs: VecCollection<'s, T, (Id, Id)>,
    /// `i` once per user with i in their history: counted, `c_ii`.
    pub items: VecCollection<'s, T, Id>,
    /// `()` once per user with a history or an indicator history.
    pub history_users: VecCollection<'s, T, ()>,
}

/// Each user's interactions and history, from the events of
/// `config.primary_action` (all if unset) and, apart, of
/// `config.indicator_action`.
///
/// ```sql
/// -- user_items: counted buckets folded per (user, item)
/// SELECT user, item, max(time_ms) FILTER (weight > 0), array_agg((day, Σ weight·n))
/// FROM (SELECT user, item, action, day, sum(diff) AS n, max(time_ms), sum(diff · units) ...)
/// WHERE n > 0 AND (action <> 'purchase' OR q(user, item) > 0)
/// GROUP BY user, item HAVING bool_or(weight > 0)
/// -- history
/// SELECT user, item, last_time, affinity FROM user_items
/// QUALIFY row_number() OVER (PARTITION BY user ORDER BY last_time DESC, item) <= N
/// -- pairs
/// SELECT a.item, b.item FROM history a JOIN history b USING (user) WHERE a.item < b.item
/// ```
///
/// All of it is one user's business, so one operator keeps each user's
/// buckets, folds and history, keyed by user, and on each completed time
/// works on the touched users only: it refolds their touched items,
/// reselects their history when a fold changed, and sends the changes of
/// both and of the pairs and items the history gained or lost. This is
/// what differential's operators computed (a `count_total` of the buckets,
/// a reduction per (user, item) and per user, an arrangement of the
/// histories and its self-join), without arranging any of it: the state is
/// each user's own, touched once per time.
pub fn histories<'s, T: EventTime>(
    events: VecCollection<'s, T, Event>,
    config: &CfConfig,
) -> Histories<'s, T> {
    let changes = user_changes(events, config, |user, change| Some((user, change)));

    // One stream per kind of change: each record is moved once, where each
    // consumer of one stream would get a copy of all of them.
    let parts: [_; Change::KINDS] = changes
        .inner
        .partition(Change::KINDS as u64, |((user, change), time, diff)| {
            (change.kind() as u64, ((user, change), time, diff))
        })
        .try_into()
        .unwrap_or_else(|_| unreachable!("one stream per kind"));
    let [items, indicator_items, entries, indicator_entries, users, pairs, counted, has_history] =
        parts.map(|part| part.as_collection());
    let user_items = |part: VecCollection<'s, T, (Id, Change)>| {
        part.flat_map(|(user, change)| match change {
            Change::Item(item, state, _) => Some(((user, item), state)),
            _ => None,
        })
    };
    let history = |part: VecCollection<'s, T, (Id, Change)>| {
        part.flat_map(|(user, change)| match change {
            Change::Entry(entry, _) => Some((user, entry)),
            _ => None,
        })
    };
    let has_indicator = config.indicator_action.is_some();
    Histories {
        user_items: user_items(items),
        indicator_items: has_indicator.then(|| user_items(indicator_items)),
        users: users.map(|(user, _)| user),
        history: history(entries),
        indicator_history: has_indicator.then(|| history(indicator_entries)),
        pairs: pairs.flat_map(|(_, change)| match change {
            Change::Pair(i, j) => Some((i, j)),
            _ => None,
        }),
        items: counted.flat_map(|(_, change)| match change {
            Change::Counted(item) => Some(item),
            _ => None,
        }),
        history_users: has_history.map(|_| ()),
    }
}

/// The changes of [`histories`], as `convert` makes them into records
/// (`None` drops one): one operator, keyed by user, whatever its consumer
/// needs of them, so a consumer of a few kinds of change does not split all
/// of them into collections.
pub(super) fn user_changes<'s, T: EventTime, D: Data>(
    events: VecCollection<'s, T, Event>,
    config: &CfConfig,
    convert: impl Fn(Id, Change) -> Option<D> + 'static,
) -> VecCollection<'s, T, D> {
    let decays = config.decay_half_life_days.is_some();
    let rules = Rules {
        weights: config.weights.clone(),
        primary: config.primary_action,
        indicator: config.indicator_action,
        length: config.history_length,
        half_life_days: config.decay_half_life_days,
    };
    let route = Exchange::new(|(event, _, _): &(Event, T, isize)| event.user);
    events
        .inner
        .unary_frontier::<CapacityContainerBuilder<Vec<(D, T, isize)>>, _, _, _>(
            route,
            "CfHistories",
            move |_, _| {
                let mut pending: ByTime<T, (Event, isize)> = ByTime::default();
                // Boxed: the table holds a pointer per user, not the state.
                let mut users: HashMap<Id, Box<UserCf>> = HashMap::default();
                move |(input, frontier), out| {
                    input.for_each_stamp(|capability, containers| {
                        pending.hold(&capability);
                        for container in containers {
                            for (event, time, diff) in container.drain(..) {
                                pending.push(time, (event, diff));
                            }
                        }
                    });
                    let Some(capability) = pending.capability().cloned() else {
                        return;
                    };
                    let mut session = out.session(&capability);
                    let mut changes = Vec::new();
                    while let Some((time, mut events)) = pending.pop_complete(frontier.frontier()) {
                        events.sort_unstable_by_key(|(event, _)| (event.user, event.item));
                        let mut events = events.into_iter().peekable();
                        while let Some((first, _)) = events.peek() {
                            let user = first.user;
                            let state = users.entry(user).or_default();
                            let was_present = state.positive > 0;
                            let mut touched = Vec::new();
                            while let Some((event, diff)) = events.next_if(|(e, _)| e.user == user)
                            {
                                state.add(&event, diff, decays);
                                if touched.last() != Some(&event.item) {
                                    touched.push(event.item);
                                }
                            }
                            state.refresh(&touched, was_present, &rules, &mut changes);
                            if state.is_empty() {
                                users.remove(&user);
                            }
                            for (change, diff) in changes.drain(..) {
                                if let Some(record) = convert(user, change) {
                                    session.give((record, time.clone(), diff));
                                }
                            }
                        }
                    }
                    drop(session);
                    pending.settle();
                }
            },
        )
        .as_collection()
}

/// One change of a user's interactions or history; the `bool`s say
/// whether it is of the indicator's.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(super) enum Change {
    Item(Id, UserItem, bool),
    Entry(HistoryEntry, bool),
    /// The user has a net-present event.
    Present,
    /// Both items are in the user's history, the first the smaller.
    Pair(Id, Id),
    /// The item is in the user's history.
    Counted(Id),
    /// The user has a history or an indicator history.
    HasHistory,
}

impl Change {
    /// The number of kinds.
    const KINDS: usize = 8;

    /// The kind's number: its stream in [`histories`].
    fn kind(&self) -> usize {
        match self {
            Change::Item(_, _, false) => 0,
            Change::Item(_, _, true) => 1,
            Change::Entry(_, false) => 2,
            Change::Entry(_, true) => 3,
            Change::Present => 4,
            Change::Pair(..) => 5,
            Change::Counted(_) => 6,
            Change::HasHistory => 7,
        }
    }
}

/// What the per-user operator needs of the config.
struct Rules {
    weights: ActionWeights,
    primary: Option<Action>,
    indicator: Option<Action>,
    length: usize,
    half_life_days: Option<f64>,
}

/// One (user, item, action, day) bucket's running sums: the state of the
/// `count_total` that bucketed events before. Kept at net zero too, since
/// its latest time still counts if the bucket comes back.
#[derive(Clone, Copy, Debug)]
struct BucketSums {
    net: i64,
    units: i64,
    span: TimeSpan,
}

/// One user's state: buckets, folds, histories. Sorted vectors, not maps:
/// most users have a few items, and a map's smallest allocation (a B-tree
/// node holds 11 entries) would be most of their memory.
#[derive(Debug, Default)]
struct UserCf {
    /// `(item, day, action, sums)`, ascending by (item, day, action).
    buckets: Vec<(Id, i64, Action, BucketSums)>,
    /// Buckets with a positive net count: the user is present while > 0.
    positive: usize,
    /// The folds of the primary and of the indicator events, by item.
    items: [Vec<(Id, UserItem)>; 2],
    /// The histories of both, by (last time desc, item asc).
    history: [Vec<HistoryEntry>; 2],
}

impl UserCf {
    fn add(&mut self, event: &Event, diff: isize, decays: bool) {
        let key = (event.item, bucket_day(event, decays), event.action);
        let found = self
            .buckets
            .binary_search_by_key(&key, |&(item, day, action, _)| (item, day, action));
        let at = found.unwrap_or_else(|at| {
            let empty = BucketSums {
                net: 0,
                units: 0,
                span: TimeSpan::EMPTY,
            };
            self.buckets.insert(at, (key.0, key.1, key.2, empty));
            at
        });
        let sums = &mut self.buckets[at].3;
        let was_positive = sums.net > 0;
        sums.net += diff as i64;
        sums.units += units(event) * diff as i64;
        sums.span
            .plus_equals(&TimeSpan::of_update(event.time_ms, diff));
        match (was_positive, sums.net > 0) {
            (false, true) => self.positive += 1,
            (true, false) => self.positive -= 1,
            _ => {}
        }
        // A bucket with no count, units or time is as if absent.
        if sums.net == 0 && sums.units == 0 && sums.span.last().is_none() {
            self.buckets.remove(at);
        }
    }

    fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The buckets of one item, by (day, action).
    fn buckets_of(&self, item: Id) -> &[(Id, i64, Action, BucketSums)] {
        let start = self.buckets.partition_point(|b| b.0 < item);
        let end = start + self.buckets[start..].partition_point(|b| b.0 == item);
        &self.buckets[start..end]
    }

    /// Refolds the `touched` items, reselects the histories whose folds
    /// changed, and pushes the changes as `(change, diff)`.
    fn refresh(
        &mut self,
        touched: &[Id],
        was_present: bool,
        rules: &Rules,
        changes: &mut Vec<(Change, isize)>,
    ) {
        let present = self.positive > 0;
        if was_present != present {
            changes.push((Change::Present, if present { 1 } else { -1 }));
        }
        let had_history = self.history.iter().any(|h| !h.is_empty());
        let folds = [Some(rules.primary), rules.indicator.map(Some)];
        for (index, only) in folds.into_iter().enumerate() {
            let Some(only) = only else { continue };
            let indicator = index == 1;
            let mut changed = Vec::new();
            for &item in touched {
                let counted = self
                    .buckets_of(item)
                    .iter()
                    .filter(|(_, _, action, _)| only.is_none_or(|only| counts_for(only, *action)))
                    .filter(|(_, _, _, sums)| sums.net != 0 || sums.units != 0)
                    .map(|&(_, day, action, sums)| {
                        let bucket = Bucket {
                            net: sums.net,
                            latest: sums.span.last(),
                            units: sums.units,
                        };
                        (day, action, bucket)
                    });
                let after = fold_buckets(counted, &rules.weights, only);
                let items = &mut self.items[index];
                let found = items.binary_search_by_key(&item, |(item, _)| *item);
                let before = found.ok().map(|at| &items[at].1);
                if before == after.as_ref() {
                    continue;
                }
                changed.push(item);
                match (found, after) {
                    (Ok(at), Some(after)) => {
                        changes.push((Change::Item(item, items[at].1.clone(), indicator), -1));
                        changes.push((Change::Item(item, after.clone(), indicator), 1));
                        items[at].1 = after;
                    }
                    (Ok(at), None) => {
                        let (_, before) = items.remove(at);
                        changes.push((Change::Item(item, before, indicator), -1));
                    }
                    (Err(at), Some(after)) => {
                        changes.push((Change::Item(item, after.clone(), indicator), 1));
                        items.insert(at, (item, after));
                    }
                    (Err(_), None) => {}
                }
            }
            if !changed.is_empty() {
                let after = reselect_history(
                    &self.history[index],
                    &self.items[index],
                    &changed,
                    rules.length,
                    rules.half_life_days,
                );
                let before = std::mem::replace(&mut self.history[index], after);
                history_changes(&before, &self.history[index], indicator, changes);
            }
        }
        let has_history = self.history.iter().any(|h| !h.is_empty());
        if had_history != has_history {
            changes.push((Change::HasHistory, if has_history { 1 } else { -1 }));
        }
    }
}
/// The changes from one history to the next, both by (last time desc,
/// item asc): entries, and for the primary history the items and pairs it
/// gained or lost (a pair of two items both gained or both lost once).
fn history_changes(
    before: &[HistoryEntry],
    after: &[HistoryEntry],
    indicator: bool,
    changes: &mut Vec<(Change, isize)>,
) {
    fn by_item(history: &[HistoryEntry]) -> Vec<&HistoryEntry> {
        let mut entries: Vec<&HistoryEntry> = history.iter().collect();
        entries.sort_unstable_by_key(|entry| entry.item);
        entries
    }
    let (before, after) = (by_item(before), by_item(after));
    let (mut lost, mut gained) = (Vec::new(), Vec::new());
    let (mut old, mut new) = (before.iter().peekable(), after.iter().peekable());
    loop {
        let (entry, diff) = match (old.peek(), new.peek()) {
            (Some(a), Some(b)) if a.item == b.item => {
                let (a, b) = (old.next().unwrap(), new.next().unwrap());
                if a != b {
                    changes.push((Change::Entry((*a).clone(), indicator), -1));
                    changes.push((Change::Entry((*b).clone(), indicator), 1));
                }
                continue;
            }
            (Some(a), Some(b)) if a.item < b.item => (old.next().unwrap(), -1),
            (Some(_), Some(_)) | (None, Some(_)) => (new.next().unwrap(), 1),
            (Some(_), None) => (old.next().unwrap(), -1),
            (None, None) => break,
        };
        changes.push((Change::Entry((*entry).clone(), indicator), diff));
        if diff < 0 {
            lost.push(entry.item)
        } else {
            gained.push(entry.item)
        }
    }
    if indicator {
        return;
    }
    for (moved, history, diff) in [(&lost, &before, -1), (&gained, &after, 1)] {
        for &i in moved.iter() {
            changes.push((Change::Counted(i), diff));
            for other in history.iter() {
                let j = other.item;
                // A pair of two moved items is sent from its larger item.
                if j == i || (j > i && moved.binary_search(&j).is_ok()) {
                    continue;
                }
                changes.push((Change::Pair(i.min(j), i.max(j)), diff));
            }
        }
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

/// The order of a history: last time descending, then item ascending.
fn history_key(item: Id, last_time_ms: i64) -> (Reverse<i64>, Id) {
    (Reverse(last_time_ms), item)
}

/// The history of one user after the folds of the `changed` items (a
/// sorted subset of `items`, the user's candidates by item) changed: the
/// top `length` (0 = all) by [`history_key`], with affinities.
///
/// Only the changed items' keys moved, so the history before and the
/// changed items hold the new top `length` unless a full history lost one
/// of its entries, or one fell behind where it ended (what it pushed out
/// may come back): only then are all the candidates read. A user's next
/// event on an item makes it their latest, so a long history is not
/// sorted again at every event.
fn reselect_history(
    before: &[HistoryEntry],
    items: &[(Id, UserItem)],
    changed: &[Id],
    length: usize,
    half_life_days: Option<f64>,
) -> Vec<HistoryEntry> {
    let state = |item: Id| {
        let at = items.binary_search_by_key(&item, |(item, _)| *item).ok()?;
        Some(&items[at].1)
    };
    let full = length > 0 && before.len() >= length;
    let end = before.last().map(|e| history_key(e.item, e.last_time_ms));
    let within = |item: Id, state: &UserItem| {
        !full || end.is_some_and(|end| history_key(item, state.last_time_ms) <= end)
    };
    let mut candidates: Vec<(Id, &UserItem)> = Vec::with_capacity(before.len() + changed.len());
    for entry in before {
        if changed.binary_search(&entry.item).is_ok() {
            match state(entry.item) {
                Some(state) if within(entry.item, state) => {}
                _ if full => return rank_history(all(items), length, half_life_days),
                _ => {}
            }
            continue;
        }
        let state = state(entry.item).expect("an entry of the history is a candidate");
        candidates.push((entry.item, state));
    }
    for &item in changed {
        if let Some(state) = state(item).filter(|state| within(item, state)) {
            candidates.push((item, state));
        }
    }
    rank_history(candidates, length, half_life_days)
}

/// Every candidate of `items`.
fn all(items: &[(Id, UserItem)]) -> Vec<(Id, &UserItem)> {
    items.iter().map(|(item, state)| (*item, state)).collect()
}

/// The top `length` (0 = all) of `items` by [`history_key`], with
/// affinities as of the first one's day. The keys are distinct (one per
/// item), so the selection before the sort picks the same items as a sort.
fn rank_history(
    mut items: Vec<(Id, &UserItem)>,
    length: usize,
    half_life_days: Option<f64>,
) -> Vec<HistoryEntry> {
    let key = |(item, state): &(Id, &UserItem)| history_key(*item, state.last_time_ms);
    if length > 0 && items.len() > length {
        items.select_nth_unstable_by_key(length - 1, key);
        items.truncate(length);
    }
    items.sort_unstable_by_key(key);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn item(last_time_ms: i64) -> UserItem {
        UserItem {
            last_time_ms,
            day_weights: vec![(0, 1)],
        }
    }

    /// Items 1..=5, item i last seen at time i.
    fn items() -> Vec<(Id, UserItem)> {
        (1..=5).map(|i| (i, item(i as i64))).collect()
    }

    fn ids(history: &[HistoryEntry]) -> Vec<Id> {
        history.iter().map(|entry| entry.item).collect()
    }

    #[test]
    fn a_history_is_chosen_again_from_what_changed_and_from_everything_when_it_lost_an_entry() {
        let mut items = items();
        let before = rank_history(all(&items), 3, None);
        assert_eq!(ids(&before), [5, 4, 3]);

        // Item 1 seen again: it becomes the latest and pushes 3 out.
        items[0].1 = item(6);
        let after = reselect_history(&before, &items, &[1], 3, None);
        assert_eq!(ids(&after), [1, 5, 4]);
        assert_eq!(after, rank_history(all(&items), 3, None));

        // Item 5 taken back: 3, outside the history, comes back.
        items.remove(4);
        let after = reselect_history(&after, &items, &[5], 3, None);
        assert_eq!(ids(&after), [1, 4, 3]);

        // Item 4 falls behind the end (the bucket of its latest events
        // taken back): 3 and 2 now come before it.
        items[3].1 = item(0);
        let after = reselect_history(&after, &items, &[4], 3, None);
        assert_eq!(ids(&after), [1, 3, 2]);

        // Not full: every candidate is in it, so what changed is enough.
        let short = rank_history(all(&items[..2]), 3, None);
        let after = reselect_history(&short, &items[..3], &[3], 3, None);
        assert_eq!(ids(&after), [1, 3, 2]);
    }
}
