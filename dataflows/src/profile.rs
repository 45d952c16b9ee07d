//! Per-user profiles: counts, windows, spend, recency, distinct items and
//! categories, ratings, time-decayed category affinity, an RFM segment and
//! the user's attributes, kept exactly up to date by [`profiles`].
//!
//! A profile is a per-user aggregation, so it is kept the way a stream
//! processor keeps keyed state: updates are routed by user to one operator
//! that holds each user's running sums ([`state::UserState`]: integers, and
//! per item and per category a few more) and, at each completed time,
//! applies that time's updates and re-assembles only the users they touched.
//! A user's many events in one tick cost one assembly. Differential
//! arrangements remain where data crosses users: the catalog join, which
//! completes events that lack a category or price, and the latest user
//! attribute. Windows hold their scheduled exits in one queue, an entry per
//! event of the longest window (see `Exits`).
//!
//! Floats (affinity, average rating) are computed from integer state in a
//! canonical order, so [`crate::reference::profile`] reproduces them bit for
//! bit; decayed affinity is kept as integers per era (see [`crate::decay`]).

mod config;
mod features;
mod state;

use std::collections::{BTreeMap, VecDeque};

use differential_dataflow::collection::AsCollection;
use differential_dataflow::VecCollection;
use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;

use crate::risk::{Alert, Recent, RiskConfig};
use crate::time::DAY_MS;
use crate::{Action, Event, EventTime, Id};
use state::{ItemUse, Rules, UserState};

pub use config::{ActionWeights, InvalidProfileConfig, ProfileConfig, SegmentConfig};
pub use features::{
    rank_categories, ActionCounts, CategoryAffinity, Profile, Segment, TopCategories, WindowCounts,
};

/// One version of an item's catalog entry. Of the versions with a positive
/// net count, the one with the largest `version_ms` is the item's current
/// entry (equal `version_ms`: the larger entry in field order wins). The
/// current entry replaces older ones as a whole: a `None` field does not
/// fall back to an older version.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CatalogVersion {
    pub version_ms: i64,
    pub category: Option<Id>,
    /// Unit price in minor units.
    pub price: Option<i64>,
}

/// One version of a user attribute. Per (user, name), the version with a
/// positive net count and the largest `version_ms` wins (equal `version_ms`:
/// the larger value wins).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttributeVersion {
    pub version_ms: i64,
    pub name: String,
    pub value: String,
}

/// Maintains one [`Profile`] per user whose lifetime net count of some
/// action is nonzero. With `ev` the net multiset of events, `now` the
/// current timestamp and `c(e)`, `p(e)` an event's category and price, else
/// those of its item's current catalog entry:
///
/// A purchase and a cancellation are each a record of their own; a
/// cancellation takes back units. With `±` meaning + for a purchase and −
/// for a cancellation, `q(i) = Σ_{purchases and cancellations of i} ±e.quantity`
/// the units of item i the user owns, and "other" every action but those two:
///
/// ```text
/// counts[a]            = Σ_{e ∈ ev, e.action = a} 1
/// windows[W][a]        = Σ_{updates (e, t, d), e.action = a, t <= now < t + W days} d
/// quantity             = Σ_{purchases and cancellations} ±e.quantity  (= Σ_i q(i))
/// spend                = Σ_{purchases and cancellations with p(e)} ±e.quantity · p(e)
/// distinct_items       = |{i : q(i) > 0  or  Σ_{other e, e.item = i} 1 > 0}|
/// distinct_categories  = |{c : Σ_{purchases and cancellations, c(e) = c} ±e.quantity > 0
///                              or  Σ_{other e, c(e) = c} 1 > 0}|
/// first_seen/last_seen = min/max {e.time_ms : e inserted}
/// last_purchase        = max {e.time_ms : e an inserted purchase of i, q(i) > 0}
/// avg_rating           = (Σ_{rated} e.rating) / (Σ_{rated} 1) / 100
/// affinity[c]          = Σ_{eras r asc} S(c, r) · 2^((r · E − D) / half_life) / 2^32,
///                        S(c, r) = Σ_{c(e) = c, era(e.day()) = r} weight(e.action) · f(e.day()),
///                        purchases left out where Σ_{c(e) = c} ±e.quantity <= 0,
///                        D = the day of last_seen (see crate::decay for E, era, f:
///                        ≈ Σ_e weight(e.action) · 2^((e.day() − D) / half_life))
/// top_categories       = top N of {c : affinity[c] > 0} by affinity desc, id asc
/// segment              = Segment::classify(last_purchase.is_some(),
///                            windows[recency][purchase] − windows[recency][cancellation],
///                            counts[purchase] − counts[cancellation], spend)
/// attributes[n]        = value of the user's current version of n
/// ```
///
/// Counts can go negative for a key when the log retracts what it never
/// inserted (a cancellation whose purchase predates the log); they are output
/// as they are, and sets ("positive net count") ignore such keys. Times
/// are those of inserted events (updates with a positive diff): a negative
/// update, which the pipeline never sends (a source's retraction becomes a
/// cancellation record), takes back counts and sums but not a time, so the
/// state keeps one span per user and per (user, item), not every time.
///
/// # Panics
///
/// When `config` does not pass [`ProfileConfig::validate`], at construction.
pub fn profiles<'s, T: EventTime>(
    events: VecCollection<'s, T, Event>,
    catalog: Option<VecCollection<'s, T, (Id, CatalogVersion)>>,
    user_attributes: VecCollection<'s, T, (Id, AttributeVersion)>,
    config: &ProfileConfig,
) -> VecCollection<'s, T, (Id, Profile)> {
    let updates = profile_updates(events, catalog, user_attributes, config);
    maintain_profiles(updates, &Rules::new(config, None)).0
}

/// [`profiles`], with a `risk` section when `risk` is given (see
/// [`crate::risk`]), and then also the alerts of its rules: `(user,
/// alert)`, raised when a rule starts to hold and retracted when a taking
/// back makes it stop.
///
/// # Panics
///
/// When `config` or `risk` does not pass its `validate`, at construction.
pub fn profiles_and_alerts<'s, T: EventTime>(
    events: VecCollection<'s, T, Event>,
    catalog: Option<VecCollection<'s, T, (Id, CatalogVersion)>>,
    user_attributes: VecCollection<'s, T, (Id, AttributeVersion)>,
    config: &ProfileConfig,
    risk: Option<&RiskConfig>,
) -> (Profiles<'s, T>, Option<Alerts<'s, T>>) {
    let updates = profile_updates(events, catalog, user_attributes, config);
    let (profiles, alerts) = maintain_profiles(updates, &Rules::new(config, risk));
    (profiles, risk.map(|_| alerts))
}

/// What changes users' running sums: their events, the catalog's
/// completions of them, and their current attributes.
fn profile_updates<'s, T: EventTime>(
    events: VecCollection<'s, T, Event>,
    catalog: Option<VecCollection<'s, T, (Id, CatalogVersion)>>,
    user_attributes: VecCollection<'s, T, (Id, AttributeVersion)>,
    config: &ProfileConfig,
) -> VecCollection<'s, T, (Id, Update)> {
    if let Err(error) = config.validate() {
        panic!("{error}");
    }

    let mut updates = events
        .clone()
        .map(|event| (event.user, Update::Event(event)))
        .concat(current_attributes(user_attributes));
    if let Some(catalog) = catalog {
        updates = updates.concat(catalog_completions(events, catalog));
    }
    updates
}

/// The profiles of users: `(user, profile)`.
pub type Profiles<'s, T> = VecCollection<'s, T, (Id, Profile)>;

/// The alerts of the risk rules: `(user, alert)`.
pub type Alerts<'s, T> = VecCollection<'s, T, (Id, Alert)>;

/// What changes a user's running sums.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Update {
    /// An event, with its own category and price.
    Event(Event),
    /// The category and price of an event's use, as the catalog completes
    /// them: the use as the event has it is taken back (a negative diff)
    /// and the completed one added.
    Use(ItemUse),
    /// A current `(name, value)` attribute.
    Attribute(String, String),
}

/// An event's count leaving a window: `(user, window number, action, diff)`.
type Leaving = (Id, u32, Action, i64);

/// The counts that will leave a window: one entry per event, in the order
/// of the times they entered at, and per window the next entry to leave it.
/// Times complete in order, and what entered at `t` leaves the window of `W`
/// days at `t + W`, so each window's exits come in the queue's order; an
/// entry is dropped once it has left the longest window.
struct Exits<T> {
    /// `(entered at, user, action, diff)`.
    queue: VecDeque<(T, Id, Action, i64)>,
    /// Entries dropped from the front so far: positions below are absolute.
    dropped: usize,
    /// Per window, `(length in ms, position of the next entry to leave)`.
    windows: Vec<(u64, usize)>,
}

impl<T: EventTime> Exits<T> {
    fn new(window_days: &[u64]) -> Exits<T> {
        Exits {
            queue: VecDeque::new(),
            dropped: 0,
            windows: window_days
                .iter()
                .map(|days| (days.saturating_mul(DAY_MS), 0))
                .collect(),
        }
    }

    /// Schedules the exits of what entered at `time`.
    fn enter(&mut self, time: T, user: Id, action: Action, diff: i64) {
        self.queue.push_back((time, user, action, diff));
    }

    /// When the entry at `position` leaves the window of `length` ms.
    fn leaves_at(&self, (length, position): (u64, usize)) -> Option<T> {
        let (entered, ..) = self.queue.get(position - self.dropped)?;
        Some(entered.plus_ms(length))
    }

    /// The earliest time a count leaves a window.
    fn earliest(&self) -> Option<T> {
        self.windows
            .iter()
            .filter_map(|window| self.leaves_at(*window))
            .min()
    }

    /// Moves the counts leaving their windows at `time` into `left`, as
    /// `(user, window number, action, -diff)`.
    fn take(&mut self, time: &T, left: &mut Vec<Leaving>) {
        for number in 0..self.windows.len() {
            while self.leaves_at(self.windows[number]).as_ref() == Some(time) {
                let position = &mut self.windows[number].1;
                let (_, user, action, diff) = self.queue[*position - self.dropped];
                left.push((user, number as u32, action, -diff));
                *position += 1;
            }
        }
        let done = self.windows.iter().map(|(_, position)| *position).min();
        while self.dropped < done.unwrap_or(0) {
            self.queue.pop_front();
            self.dropped += 1;
        }
    }
}

/// The keyed-state operator: routes updates by user, and at each completed
/// time applies them to the users' sums and emits the change of each touched
/// user's profile (the one before less the one after, assembled from the
/// sums; profiles are not stored). An event at `t` also enters each window,
/// and leaves it at `t + W`, a time the operator schedules itself.
///
/// Time is totally ordered, so times complete one after another, and one
/// capability, for the earliest time with work, covers them all: the changes
/// of every time completed in one activation go out in one batch, each
/// update carrying its own time, as differential's operators send them.
fn maintain_profiles<'s, T: EventTime>(
    updates: VecCollection<'s, T, (Id, Update)>,
    rules: &Rules,
) -> (Profiles<'s, T>, Alerts<'s, T>) {
    let rules = rules.clone();
    let route = Exchange::new(|((user, _), _, _): &((Id, Update), T, isize)| *user);
    let mut builder = OperatorBuilder::new("Profiles".to_owned(), updates.inner.scope());
    let mut input = builder.new_input(updates.inner, route);
    let (profiles_output, profiles) = builder.new_output();
    let (alerts_output, alerts) = builder.new_output();
    let mut profiles_output = OutputBuilder::<
        T,
        CapacityContainerBuilder<Vec<((Id, Profile), T, isize)>>,
    >::from(profiles_output);
    let mut alerts_output = OutputBuilder::<
        T,
        CapacityContainerBuilder<Vec<((Id, Alert), T, isize)>>,
    >::from(alerts_output);
    builder.build(move |_initial| {
        let mut arrived: BTreeMap<T, Vec<(Id, Update, isize)>> = BTreeMap::new();
        let mut exits: Exits<T> = Exits::new(&rules.window_days);
        // One per output: profiles, alerts.
        let mut held: Option<[Capability<T>; 2]> = None;
        // Boxed: the table then holds a pointer per user, not the
        // whole state, and a resize moves 16 bytes per user.
        let mut users: HashMap<Id, Box<UserState>> = HashMap::default();
        let mut left_now: Vec<Leaving> = Vec::new();
        // Emptied vectors of past times, for the next times to fill:
        // with an event per tick, a vector per tick is most of the cost.
        let mut spare: Vec<Vec<(Id, Update, isize)>> = Vec::new();
        // A user's events of one time, as the risk state reads them: built
        // once, read in up to three passes.
        let mut recents: Vec<Recent> = Vec::new();
        move |frontiers| {
            let frontier = &frontiers[0];
            input.for_each_stamp(|capability, containers| {
                let earlier = |time: &T| held.as_ref().is_none_or(|held| time < held[0].time());
                if capability.least().is_some_and(earlier) {
                    held = capability
                        .retain_least(0)
                        .zip(capability.retain_least(1))
                        .map(|(profiles, alerts)| [profiles, alerts]);
                }
                for container in containers {
                    for ((user, update), time, diff) in container.drain(..) {
                        let at = arrived
                            .entry(time)
                            .or_insert_with(|| spare.pop().unwrap_or_default());
                        at.push((user, update, diff));
                    }
                }
            });
            let Some([profiles_at, alerts_at]) = held.as_ref() else {
                return;
            };
            let mut profiles_output = profiles_output.activate();
            let mut session = profiles_output.session(profiles_at);
            let mut alerts_output = alerts_output.activate();
            let mut alerts = alerts_output.session(alerts_at);
            loop {
                let next = match (arrived.keys().next(), exits.earliest()) {
                    (Some(a), Some(l)) => a.clone().min(l),
                    (Some(a), None) => a.clone(),
                    (None, Some(l)) => l,
                    (None, None) => break,
                };
                if frontier.frontier().less_equal(&next) {
                    break;
                }
                let mut arrived_now = arrived.remove(&next).unwrap_or_default();
                exits.take(&next, &mut left_now);
                arrived_now.sort_unstable_by_key(|(user, _, _)| *user);
                left_now.sort_unstable_by_key(|(user, _, _, _)| *user);
                // The users' updates are runs of `arrived_now`, read in
                // place: the risk state reads a user's events from there.
                let mut at = 0;
                let mut left = left_now.drain(..).peekable();
                loop {
                    let user = match (arrived_now.get(at), left.peek()) {
                        (Some((a, _, _)), Some((b, _, _, _))) => *a.min(b),
                        (Some((a, _, _)), None) => *a,
                        (None, Some((b, _, _, _))) => *b,
                        (None, None) => break,
                    };
                    let end = arrived_now[at..]
                        .iter()
                        .position(|(u, _, _)| *u != user)
                        .map_or(arrived_now.len(), |n| at + n);
                    let mine = &mut arrived_now[at..end];
                    at = end;
                    let state = users.entry(user).or_default();
                    let feeds_risk = rules.risk.is_some()
                        && mine.iter().any(|(_, u, _)| matches!(u, Update::Event(_)));
                    let before = state.profile_before(&rules, feeds_risk);
                    for (_, update, diff) in mine.iter_mut() {
                        let diff = *diff as i64;
                        match update {
                            Update::Event(event) => {
                                state.apply_event(event, diff, &rules);
                                for window in 0..rules.window_days.len() as u32 {
                                    state.add_window(window, event.action, diff);
                                }
                                exits.enter(next.clone(), user, event.action, diff);
                            }
                            Update::Use(item_use) => state.apply_use(item_use, diff, &rules),
                            Update::Attribute(name, value) => {
                                let (name, value) = (std::mem::take(name), std::mem::take(value));
                                state.add_attribute(name, value, diff as isize);
                            }
                        }
                    }
                    while let Some((_, window, action, diff)) =
                        left.next_if(|(u, _, _, _)| *u == user)
                    {
                        state.add_window(window, action, diff);
                    }
                    if feeds_risk {
                        recents.clear();
                        recents.extend(mine.iter().filter_map(|(_, update, diff)| match update {
                            Update::Event(event) => Some(Recent::new(event, *diff as i64)),
                            _ => None,
                        }));
                        for (alert, diff) in state.apply_risk(&recents, &rules) {
                            alerts.give(((user, alert), next.clone(), diff as isize));
                        }
                    }
                    state.refresh(&rules);
                    let after = state.profile(&rules);
                    if state.is_empty() {
                        users.remove(&user);
                    }
                    if before != after {
                        if let Some(before) = before {
                            session.give(((user, before), next.clone(), -1));
                        }
                        if let Some(after) = after {
                            session.give(((user, after), next.clone(), 1));
                        }
                    }
                }
                drop(left);
                arrived_now.clear();
                // Kept for a later time, unless a burst made it large.
                if arrived_now.capacity() <= 1024 && spare.len() < 64 {
                    spare.push(arrived_now);
                }
            }
            drop((session, alerts));
            // Keep a capability for the earliest time still to come.
            let earliest = arrived
                .keys()
                .next()
                .into_iter()
                .cloned()
                .chain(exits.earliest())
                .min();
            match earliest {
                Some(time) => {
                    for held in held.iter_mut().flatten() {
                        held.downgrade(&time);
                    }
                }
                None => held = None,
            }
        }
    });
    (profiles.as_collection(), alerts.as_collection())
}

/// The current catalog entry of an item.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
struct CatalogEntry {
    category: Option<Id>,
    price: Option<i64>,
}

/// The catalog's completions of events that lack a category, or a
/// purchase or cancellation that lacks a price: per such event whose item has
/// a current catalog entry, its use as the event has it taken back and the
/// completed use added. Without a catalog, nothing waits, arranged, for an
/// entry that cannot come.
fn catalog_completions<'s, T: EventTime>(
    events: VecCollection<'s, T, Event>,
    catalog: VecCollection<'s, T, (Id, CatalogVersion)>,
) -> VecCollection<'s, T, (Id, Update)> {
    let current_catalog = catalog.reduce_named("CurrentCatalog", |_item, versions, output| {
        // Versions arrive sorted, so the last one with a positive count wins.
        if let Some((version, _)) = versions.iter().rev().find(|(_, count)| *count > 0) {
            let entry = CatalogEntry {
                category: version.category,
                price: version.price,
            };
            output.push((entry, 1));
        }
    });
    let incomplete = events.flat_map(|event| {
        let item_use = ItemUse::of(&event);
        item_use.needs_catalog().then_some((event.item, item_use))
    });
    let matched = incomplete.join(current_catalog);
    let taken_back = matched.clone().map(|(_, (item_use, _))| item_use).negate();
    let completed =
        matched.map(|(_, (item_use, entry))| item_use.with_catalog(entry.category, entry.price));
    taken_back
        .concat(completed)
        .map(|item_use| (item_use.user, Update::Use(item_use)))
}

/// The current value of each (user, attribute name).
fn current_attributes<'s, T: EventTime>(
    user_attributes: VecCollection<'s, T, (Id, AttributeVersion)>,
) -> VecCollection<'s, T, (Id, Update)> {
    user_attributes
        .map(|(user, version)| ((user, version.name), (version.version_ms, version.value)))
        .reduce_named("CurrentAttributes", |_, versions, output| {
            if let Some(((_, value), _)) = versions.iter().rev().find(|(_, count)| *count > 0) {
                output.push((value.clone(), 1));
            }
        })
        .map(|((user, name), value)| (user, Update::Attribute(name, value)))
}
