//! Risk signals: how fast a user is acting and how their day compares with
//! their own history, kept per user beside the profile, and the alerts their
//! rules raise.
//!
//! Every feature describes the user as of their latest event `L` (the
//! largest inserted event time, as `last_seen`) — the moment a risk decision
//! is taken — so it is a function of the user's events alone, exact to the
//! millisecond whatever the tick, and does not move while the user is idle:
//!
//! ```text
//! velocity[W]     over the net events e with L − W < e.time_ms <= L:
//!                 events = Σ 1, purchases = Σ_{purchases} 1,
//!                 spend = Σ_{purchases and cancellations} ±quantity · price (the event's own),
//!                 items / sessions = |{i : Σ_{e.item = i} 1 > 0}| / the same of sessions
//! since_previous_ms        = L − the latest inserted event time before L
//! purchase_after_idle_days = since_previous_ms / 1 day, when a net purchase is at L
//! day             the day D of L: spend and events of D, and over the
//!                 history_days N days before it (zeros included):
//!                 z(x) = (N·x − Σx_d) / √(N·Σx_d² − (Σx_d)²)   (none if the root is 0)
//!                 spend_over_max = spend / the largest day spend before (none if ≤ 0)
//!                 active_days = days before D with a net event
//! ```
//!
//! State is integers (sums over a short queue of recent events and per-day
//! buckets of the last N + 1 days), so the reference recomputes the same bits.
//!
//! An alert is raised once, at the time its rule starts to hold, with the
//! value that fired it and `L`. When the rule stops holding, the alert is
//! retracted if what made it stop is a taking back — the rule still held
//! with that time's cancellations and retracted events left out (their times
//! counted) — and otherwise stays, as the record of an episode that ended
//! (the window moved on, a new day began).

mod config;

use std::cell::RefCell;
use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::time::DAY_MS;
use crate::{Action, Event, Id, Score};

pub use config::{Comparison, Feature, InvalidRiskConfig, Measure, RiskConfig, RiskRule};

/// The `risk` section of a profile.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RiskFeatures {
    /// `L`, the user's latest event time, which the features are as of.
    pub as_of_ms: i64,
    /// Per configured window, in seconds, in the configured order.
    pub velocity: SmallVec<[(u64, Velocity); 3]>,
    pub since_previous_ms: Option<i64>,
    pub purchase_after_idle_days: Option<Score>,
    pub day: DayActivity,
}

/// What a velocity window counts.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Velocity {
    pub events: i64,
    pub purchases: i64,
    pub spend: i64,
    pub items: i64,
    pub sessions: i64,
}

/// The day of the latest event against the days before it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct DayActivity {
    /// UTC day number (days since the Unix epoch).
    pub day: i64,
    pub spend: i64,
    pub events: i64,
    pub active_days: i64,
    pub max_spend_before: i64,
    pub spend_z: Option<Score>,
    pub events_z: Option<Score>,
    pub spend_over_max: Option<Score>,
}

/// An alert: a rule that started to hold for a user.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Alert {
    pub rule: String,
    pub feature: String,
    pub op: String,
    pub threshold: Score,
    /// The feature's value when the rule started to hold.
    pub value: Score,
    pub active_days: i64,
    /// The user's latest event time then.
    pub time_ms: i64,
}

impl RiskFeatures {
    /// The value of `feature`, if the user has one.
    pub fn value(&self, feature: Feature) -> Option<f64> {
        let day = &self.day;
        match feature {
            Feature::Velocity(window, measure) => {
                let v = &self.velocity[window].1;
                let count = match measure {
                    Measure::Events => v.events,
                    Measure::Purchases => v.purchases,
                    Measure::Spend => v.spend,
                    Measure::Items => v.items,
                    Measure::Sessions => v.sessions,
                };
                Some(count as f64)
            }
            Feature::SincePreviousMs => self.since_previous_ms.map(|ms| ms as f64),
            Feature::PurchaseAfterIdleDays => self.purchase_after_idle_days.map(|d| d.0),
            Feature::DaySpend => Some(day.spend as f64),
            Feature::DayEvents => Some(day.events as f64),
            Feature::DaySpendZ => day.spend_z.map(|z| z.0),
            Feature::DayEventsZ => day.events_z.map(|z| z.0),
            Feature::DaySpendOverMax => day.spend_over_max.map(|r| r.0),
        }
    }
}

/// A validated [`RiskConfig`], its rules parsed.
#[derive(Clone, Debug)]
pub struct RiskRules {
    pub config: RiskConfig,
    rules: Vec<(RiskRule, Feature, Comparison)>,
    /// How far before the latest event the state keeps events: the longest
    /// window (at least 1 ms, to know the actions at the latest time).
    keep_ms: i64,
}

impl RiskRules {
    /// # Panics
    ///
    /// When `config` does not pass [`RiskConfig::validate`].
    pub fn new(config: &RiskConfig) -> RiskRules {
        if let Err(error) = config.validate() {
            panic!("{error}");
        }
        let rules = config
            .rules
            .iter()
            .map(|rule| {
                let feature = Feature::parse(&rule.feature, &config.velocity_secs).unwrap();
                let op = Comparison::parse(&rule.op).unwrap();
                (rule.clone(), feature, op)
            })
            .collect();
        let longest = config.velocity_secs.iter().max().copied().unwrap_or(0);
        RiskRules {
            config: config.clone(),
            rules,
            keep_ms: (longest.saturating_mul(1000).min(i64::MAX as u64) as i64).max(1),
        }
    }

    /// The value of rule number `index`'s feature, if the rule holds for
    /// `features`.
    pub fn fires(&self, index: usize, features: &RiskFeatures) -> Option<f64> {
        let (rule, feature, op) = &self.rules[index];
        if features.day.active_days < rule.min_history_days {
            return None;
        }
        let value = features.value(*feature)?;
        op.holds(value, rule.threshold).then_some(value)
    }

    /// The alert of rule number `index`, fired by `value` with `features`.
    pub fn alert(&self, index: usize, value: f64, features: &RiskFeatures) -> Alert {
        let rule = &self.rules[index].0;
        Alert {
            rule: rule.name.clone(),
            feature: rule.feature.clone(),
            op: rule.op.clone(),
            threshold: Score(rule.threshold),
            value: Score(value),
            active_days: features.day.active_days,
            time_ms: features.as_of_ms,
        }
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }
}

/// Whether an update takes something back: a cancellation or a retracted
/// event. Such updates can retract an alert (see the module docs).
pub fn is_taking_back(action: Action, diff: i64) -> bool {
    diff < 0 || action == Action::Cancellation
}

/// The spend of one event: ±quantity · its own price for purchases and
/// cancellations, else 0.
#[inline]
pub fn spend_of(event: &Event) -> i64 {
    let price = event.price.unwrap_or(0);
    match event.action {
        Action::Purchase => event.quantity.saturating_mul(price),
        Action::Cancellation => -event.quantity.saturating_mul(price),
        _ => 0,
    }
}

/// The z-score of `x` against `history` (the values of the N days before),
/// from exact integer sums; none when the deviation is 0, or when a sum
/// leaves i128 (days of spend beyond 10^16 minor units each).
pub fn z_score(x: i64, history: impl Iterator<Item = i64>, days: u64) -> Option<Score> {
    let (mut sum, mut squares) = (0i128, 0i128);
    for value in history {
        let value = i128::from(value);
        sum = sum.checked_add(value)?;
        squares = squares.checked_add(value.checked_mul(value)?)?;
    }
    let n = i128::from(days);
    let spread = n.checked_mul(squares)?.checked_sub(sum.checked_mul(sum)?)?;
    let deviation = n.checked_mul(i128::from(x))?.checked_sub(sum)?;
    (spread > 0).then(|| Score(deviation as f64 / (spread as f64).sqrt()))
}

/// What the risk state reads of one update: the event's time, action,
/// item, session and spend, and the update's diff as `count`. A fifth of an
/// [`Event`]'s bytes, copied once per event; the velocity windows keep it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recent {
    time_ms: i64,
    action: Action,
    item: Id,
    session: Option<Id>,
    spend: i64,
    count: i64,
}

impl Recent {
    // Inlined, as the helpers of the per-event loops below: as calls,
    // their results went through memory once per event.
    #[inline]
    pub fn new(event: &Event, diff: i64) -> Recent {
        Recent {
            time_ms: event.time_ms,
            action: event.action,
            item: event.item,
            session: event.session,
            spend: spend_of(event),
            count: diff,
        }
    }

    fn is_taking_back(&self) -> bool {
        is_taking_back(self.action, self.count)
    }

    /// The order of the recent events: by time first.
    fn key(&self) -> (i64, Action, Id, Option<Id>, i64) {
        (
            self.time_ms,
            self.action,
            self.item,
            self.session,
            self.spend,
        )
    }
}

/// A user's risk state: the recent events, the day buckets, the latest two
/// event times and the alerts raised and still holding.
#[derive(Clone, Debug, Default)]
pub struct RiskState {
    latest: Option<i64>,
    previous: Option<i64>,
    /// Net events after `latest − keep_ms`, by time.
    recent: Vec<Recent>,
    /// `(day, spend, events)` of the days from `day(latest) − N` on, nonzero
    /// only, by day. Two inline: most users are active on a day or two of
    /// the history, and a buffer of its own is one more cold line per time.
    days: SmallVec<[(i64, i64, i64); 2]>,
    /// The latest time of an update added to `recent` or `days`: when it
    /// is older than the horizon, both are dropped unread.
    added_until: Option<i64>,
    /// Per rule number, the alert raised while the rule holds.
    open: Vec<(usize, Alert)>,
}

impl RiskState {
    pub fn is_empty(&self) -> bool {
        self.latest.is_none() && self.recent.is_empty() && self.days.is_empty()
    }

    /// Applies one time's updates of the user ([`Recent::new`]), and
    /// returns the features after them (none before an event is inserted)
    /// and the changes of their alerts.
    pub fn apply(
        &mut self,
        updates: &[Recent],
        rules: &RiskRules,
    ) -> (Option<Arc<RiskFeatures>>, Vec<(Alert, i64)>) {
        let mut takes_back = false;
        for update in updates {
            if update.count > 0 {
                self.see(update.time_ms);
            }
            takes_back |= update.is_taking_back();
        }
        self.forget_old(rules);
        // A user has five times on average: grown a push at a time, the
        // queue reallocated several times at the first ones.
        self.recent.reserve(updates.len());
        let mut mid = None;
        if takes_back {
            self.add(updates.iter().filter(|u| !u.is_taking_back()), rules);
            if !self.open.is_empty() {
                mid = self.compute(rules);
            }
            self.add(updates.iter().filter(|u| u.is_taking_back()), rules);
        } else {
            self.add(updates.iter(), rules);
        }
        let features = self.compute(rules).map(Arc::new);

        let mut changes = Vec::new();
        let Some(features) = features else {
            return (None, changes);
        };
        for index in 0..rules.rule_count() {
            let holds = rules.fires(index, &features);
            let open = self.open.iter().position(|(rule, _)| *rule == index);
            match (open, holds) {
                (None, Some(value)) => {
                    let alert = rules.alert(index, value, &features);
                    changes.push((alert.clone(), 1));
                    self.open.push((index, alert));
                }
                (Some(position), None) => {
                    let (_, alert) = self.open.swap_remove(position);
                    let held_without = mid.as_ref().and_then(|f| rules.fires(index, f));
                    if held_without.is_some() {
                        changes.push((alert, -1));
                    }
                }
                _ => {}
            }
        }
        (Some(features), changes)
    }

    /// Counts an inserted event time.
    #[inline]
    fn see(&mut self, ms: i64) {
        match self.latest {
            Some(latest) if ms > latest => {
                self.previous = Some(latest);
                self.latest = Some(ms);
            }
            Some(latest) if ms < latest => self.previous = self.previous.max(Some(ms)),
            Some(_) => {}
            None => self.latest = Some(ms),
        }
    }

    /// The first time and day the state keeps.
    fn horizon(&self, rules: &RiskRules) -> Option<(i64, i64)> {
        let latest = self.latest?;
        let day = latest.div_euclid(DAY_MS as i64);
        let days = rules.config.history_days.min(i64::MAX as u64) as i64;
        Some((
            latest.saturating_sub(rules.keep_ms),
            day.saturating_sub(days),
        ))
    }

    /// Drops what no window or day of the history can hold any more.
    fn forget_old(&mut self, rules: &RiskRules) {
        let Some((after, first_day)) = self.horizon(rules) else {
            return;
        };
        let until = self.added_until.unwrap_or(i64::MIN);
        // A user back after a pause: clearing spares reading cold buffers.
        if until <= after {
            self.recent.clear();
        } else {
            // Sorted: what is too old is a prefix.
            let old = self.recent.partition_point(|r| r.time_ms <= after);
            self.recent.drain(..old);
        }
        if until.div_euclid(DAY_MS as i64) < first_day {
            self.days.clear();
        } else {
            let old = self.days.partition_point(|(day, _, _)| *day < first_day);
            self.days.drain(..old);
        }
    }

    /// Adds `updates` to the recent events and the day buckets.
    fn add<'a>(&mut self, updates: impl Iterator<Item = &'a Recent>, rules: &RiskRules) {
        let horizon = self.horizon(rules);
        let keeps_time = |ms: i64| horizon.is_none_or(|(after, _)| ms > after);
        let keeps_day = |day: i64| horizon.is_none_or(|(_, first_day)| day >= first_day);
        let known = self.recent.len();
        let mut taken_back = false;
        // The updates of one day summed before they meet the buckets: a
        // time's updates share their day.
        let mut day_sum: Option<(i64, i64, i64)> = None;
        for &update in updates {
            self.added_until = self.added_until.max(Some(update.time_ms));
            taken_back |= update.count < 0;
            if keeps_time(update.time_ms) {
                self.recent.push(update);
            }
            let day = update.time_ms.div_euclid(DAY_MS as i64);
            if keeps_day(day) {
                let (count, spend) = (update.count, update.count * update.spend);
                match &mut day_sum {
                    Some(sum) if sum.0 == day => (sum.1, sum.2) = (sum.1 + spend, sum.2 + count),
                    _ => {
                        if let Some(sum) = day_sum.replace((day, spend, count)) {
                            self.add_to_day(sum);
                        }
                    }
                }
            }
        }
        if let Some(sum) = day_sum {
            self.add_to_day(sum);
        }
        // The windows only need the events in time order, and count
        // repeated keys by their net sum: an invoice of hundreds of lines
        // at the latest time is only appended (a stable sort of two sorted
        // runs is a merge, for late events; the check spares its scratch
        // buffer when nothing came late).
        if !taken_back {
            // What was kept is sorted: only the appended part and where it
            // joins need a look.
            if !self.recent[known.saturating_sub(1)..].is_sorted_by_key(|r| r.time_ms) {
                self.recent.sort_by_key(|r| r.time_ms);
            }
        } else if self.recent.len() > known {
            // A negative count cancels its insertion here, so that the
            // state of a user whose events are all taken back empties.
            self.recent.sort_unstable_by_key(Recent::key);
            self.recent.dedup_by(|later, earlier| {
                let same = later.key() == earlier.key();
                if same {
                    earlier.count += later.count;
                }
                same
            });
            self.recent.retain(|r| r.count != 0);
        }
    }

    /// Adds `(day, spend, events)` to that day's bucket.
    fn add_to_day(&mut self, (day, spend, events): (i64, i64, i64)) {
        // Most updates are of the latest day, the last bucket.
        let index = match self.days.last() {
            Some((last, _, _)) if *last == day => self.days.len() - 1,
            _ => match self.days.binary_search_by_key(&day, |(d, _, _)| *d) {
                Ok(index) => index,
                Err(index) => {
                    self.days.insert(index, (day, 0, 0));
                    index
                }
            },
        };
        let bucket = &mut self.days[index];
        bucket.1 += spend;
        bucket.2 += events;
        if bucket.1 == 0 && bucket.2 == 0 {
            self.days.remove(index);
        }
    }

    /// The features of the state.
    fn compute(&self, rules: &RiskRules) -> Option<RiskFeatures> {
        let latest = self.latest?;
        let config = &rules.config;
        let end = self.recent.partition_point(|r| r.time_ms <= latest);
        let velocity = velocities(&self.recent[..end], latest, &config.velocity_secs);
        let at_latest = self.recent.partition_point(|r| r.time_ms < latest);
        let purchased_now: i64 = self.recent[at_latest..end.max(at_latest)]
            .iter()
            .filter(|r| r.action == Action::Purchase)
            .map(|r| r.count)
            .sum();
        let since_previous_ms = self.previous.map(|previous| latest - previous);
        let day = latest.div_euclid(DAY_MS as i64);
        Some(RiskFeatures {
            as_of_ms: latest,
            velocity,
            since_previous_ms,
            purchase_after_idle_days: since_previous_ms
                .filter(|_| purchased_now > 0)
                .map(|ms| Score(ms as f64 / DAY_MS as f64)),
            day: day_activity(day, &self.days, config.history_days),
        })
    }
}

/// The counts of each velocity window of `secs` seconds, `(latest − W,
/// latest]`, in the order of `secs`, from `recent` (by time, none after
/// `latest`). The windows nest, so one walk back from the latest event
/// serves them all, shortest first, keeping each item's and session's net
/// count and how many are positive as it goes: no window is sorted.
fn velocities(recent: &[Recent], latest: i64, secs: &[u64]) -> SmallVec<[(u64, Velocity); 3]> {
    let mut shortest_first: SmallVec<[usize; 4]> = (0..secs.len()).collect();
    shortest_first.sort_by_key(|&number| secs[number]);
    let mut windows: SmallVec<[(u64, Velocity); 3]> =
        smallvec::smallvec![(0, Velocity::default()); secs.len()];
    // Sized once: the longest window can hold every recent event.
    let longest = secs.iter().max().map_or(0, |&secs| {
        let after = latest.saturating_sub(secs.saturating_mul(1000).min(i64::MAX as u64) as i64);
        recent.len() - recent.partition_point(|r| r.time_ms <= after)
    });
    let mut items = NetCounts::with_capacity(longest);
    let mut sessions = NetCounts::with_capacity(0);
    let mut counts = Velocity::default();
    let mut next = recent.len();
    for number in shortest_first {
        let length_ms = secs[number].saturating_mul(1000).min(i64::MAX as u64) as i64;
        let after = latest.saturating_sub(length_ms);
        while let Some(r) = next.checked_sub(1).map(|n| &recent[n]) {
            if r.time_ms <= after {
                break;
            }
            next -= 1;
            counts.events += r.count;
            if r.action == Action::Purchase {
                counts.purchases += r.count;
            }
            counts.spend += r.count * r.spend;
            counts.items += positive_change(items.entry(r.item), r.count);
            if let Some(session) = r.session {
                counts.sessions += positive_change(sessions.entry(session), r.count);
            }
        }
        windows[number] = (secs[number], counts);
    }
    windows
}

/// Net counts per key: a short list scanned in place for the few keys of a
/// typical window (an invoice's lines), a hash map beyond.
// A scratch on the stack of one call: the inline list is the point.
#[allow(clippy::large_enum_variant)]
enum NetCounts {
    Few(SmallVec<[(Id, i64); NetCounts::FEW]>),
    Many(HashMap<Id, i64>),
}

thread_local! {
    /// Emptied maps of earlier windows, per worker thread: half of Online
    /// Retail's events are in windows of more keys than the list holds,
    /// and a map allocated per window and time was a malloc and a free.
    static SPARE_MAPS: RefCell<Vec<HashMap<Id, i64>>> = const { RefCell::new(Vec::new()) };
}

impl NetCounts {
    const FEW: usize = 32;
    /// A spare map larger than this is dropped: clearing it would cost
    /// every later window as much as its largest.
    const KEPT_CAPACITY: usize = 4096;

    fn with_capacity(keys: usize) -> NetCounts {
        match keys <= NetCounts::FEW {
            true => NetCounts::Few(SmallVec::new()),
            false => NetCounts::Many(NetCounts::map(keys)),
        }
    }

    fn map(keys: usize) -> HashMap<Id, i64> {
        let mut map = SPARE_MAPS.with_borrow_mut(Vec::pop).unwrap_or_default();
        map.reserve(keys);
        map
    }

    // Inlined into the walk, which calls it twice per event.
    #[inline(always)]
    fn entry(&mut self, key: Id) -> &mut i64 {
        if let NetCounts::Few(few) = self {
            if few.len() == NetCounts::FEW && few.iter().all(|(k, _)| *k != key) {
                self.spill();
            }
        }
        match self {
            NetCounts::Few(few) => {
                let at = match few.iter().position(|(k, _)| *k == key) {
                    Some(at) => at,
                    None => {
                        few.push((key, 0));
                        few.len() - 1
                    }
                };
                &mut few[at].1
            }
            NetCounts::Many(many) => many.entry(key).or_default(),
        }
    }

    /// Moves the list into a map: more keys than a scan is quick for.
    #[cold]
    fn spill(&mut self) {
        if let NetCounts::Few(few) = self {
            let mut map = NetCounts::map(2 * NetCounts::FEW);
            map.extend(few.drain(..));
            *self = NetCounts::Many(map);
        }
    }
}

impl Drop for NetCounts {
    fn drop(&mut self) {
        if let NetCounts::Many(map) = self {
            if map.capacity() <= NetCounts::KEPT_CAPACITY {
                let mut map = std::mem::take(map);
                map.clear();
                SPARE_MAPS.with_borrow_mut(|spare| {
                    // Two at most: a walk counts items and sessions.
                    if spare.len() < 2 {
                        spare.push(map);
                    }
                });
            }
        }
    }
}

/// Adds `count` to a key's net count; +1 if that makes it positive, −1 if
/// it stops being so.
#[inline]
fn positive_change(net: &mut i64, count: i64) -> i64 {
    let was = *net > 0;
    *net += count;
    i64::from(*net > 0) - i64::from(was)
}

/// The day `day` against the `history_days` before it, from the buckets
/// `(day, spend, events)`, one per day, ascending (others are left out).
pub fn day_activity(day: i64, buckets: &[(i64, i64, i64)], history_days: u64) -> DayActivity {
    let first = day.saturating_sub(history_days as i64);
    let (mut spend, mut events) = (0, 0);
    let before = buckets.iter().filter(|(d, _, _)| *d >= first && *d < day);
    if let Some((_, s, e)) = buckets.iter().find(|(d, _, _)| *d == day) {
        (spend, events) = (*s, *e);
    }
    let max_spend_before = before.clone().map(|b| b.1).max().unwrap_or(0).max(0);
    DayActivity {
        day,
        spend,
        events,
        active_days: before.clone().filter(|b| b.2 != 0).count() as i64,
        max_spend_before,
        spend_z: z_score(spend, before.clone().map(|b| b.1), history_days),
        events_z: z_score(events, before.map(|b| b.2), history_days),
        spend_over_max: (max_spend_before > 0)
            .then(|| Score(spend as f64 / max_spend_before as f64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_distinct_items_beyond_the_short_list() {
        // 40 items twice over, one of them taken back twice: more keys than
        // `NetCounts::FEW`, so the count moves from the list to a hash map;
        // the second walk reuses the first one's maps.
        let recent: Vec<Recent> = (0..80)
            .map(|n: u64| Recent {
                time_ms: n as i64,
                action: Action::View,
                item: n % 40,
                session: Some(n % 3),
                spend: 0,
                count: if n % 40 == 7 { -1 } else { 1 },
            })
            .collect();
        for _ in 0..2 {
            let windows = velocities(&recent, 79, &[1]);
            assert_eq!(windows[0].1.events, 76);
            assert_eq!(windows[0].1.items, 39);
            assert_eq!(windows[0].1.sessions, 3);
        }
    }

    #[test]
    fn z_scores_are_exact_and_none_beyond_i128() {
        // N = 2, Σx = 4, Σx² = 10: (2·5 − 4) / √(2·10 − 16) = 3.
        assert_eq!(z_score(5, [1, 3].into_iter(), 2), Some(Score(3.0)));
        assert_eq!(z_score(5, [2, 2].into_iter(), 2), None, "no deviation");
        let huge = [i64::MAX; 3].into_iter();
        assert_eq!(z_score(i64::MAX, huge, 3_660), None);
    }
}
