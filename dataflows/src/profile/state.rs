//! One user's running sums, from which their [`Profile`] is assembled.
//!
//! Every field is a sum that an update adds to or takes from (times only
//! widen, see [`TimeSpan`]), so updates apply in any order within a time and
//! the state is a function of the net updates alone. Keys with nothing left
//! are removed, so the state holds what the user's net events touch, and
//! decayed affinity holds one integer per (category, era), not per day.

use std::collections::BTreeMap;
use std::sync::Arc;

use differential_dataflow::difference::Semigroup;
use rustc_hash::FxHashMap as HashMap;
use smallvec::SmallVec;

use crate::decay::{Decay, EraFactors};
use crate::profile::features::rank_categories;
use crate::profile::{
    ActionCounts, CategoryAffinity, Profile, ProfileConfig, Segment, WindowCounts,
};
use crate::risk::{Alert, Recent, RiskConfig, RiskFeatures, RiskRules, RiskState};
use crate::time::{TimeSpan, DAY_MS};
use crate::{Action, Event, Id, Score};

/// What the catalog can complete about an event: its category and price.
/// Events other than purchases and cancellations drop price and quantity.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub(crate) struct ItemUse {
    pub user: Id,
    pub day: i64,
    pub action: Action,
    pub category: Option<Id>,
    pub price: Option<i64>,
    pub quantity: i64,
}

impl ItemUse {
    pub fn of(event: &Event) -> ItemUse {
        let transaction = is_transaction(event.action);
        ItemUse {
            user: event.user,
            day: event.day(),
            action: event.action,
            category: event.category,
            price: if transaction { event.price } else { None },
            quantity: if transaction { event.quantity } else { 0 },
        }
    }

    /// Whether the catalog could add something this use lacks.
    pub fn needs_catalog(&self) -> bool {
        self.category.is_none() || (is_transaction(self.action) && self.price.is_none())
    }

    /// Fills what the use lacks from an item's catalog entry.
    pub fn with_catalog(mut self, category: Option<Id>, price: Option<i64>) -> ItemUse {
        self.category = self.category.or(category);
        if is_transaction(self.action) {
            self.price = self.price.or(price);
        }
        self
    }

    /// The units this use adds to what the user owns: + for a purchase, −
    /// for a cancellation, 0 otherwise.
    fn signed_units(&self) -> i64 {
        signed_units(self.action, self.quantity)
    }
}

/// Whether an action moves units: a purchase or a cancellation.
pub(crate) fn is_transaction(action: Action) -> bool {
    matches!(action, Action::Purchase | Action::Cancellation)
}

/// `quantity` units bought (+), cancelled (−), or 0 for other actions.
fn signed_units(action: Action, quantity: i64) -> i64 {
    match action {
        Action::Purchase => quantity,
        Action::Cancellation => -quantity,
        _ => 0,
    }
}

/// A user's running sums.
#[derive(Default)]
pub(crate) struct UserState {
    counts: ActionCounts,
    /// `(window index, action, net count)` for nonzero counts, sorted.
    windows: Vec<(u32, Action, i64)>,
    quantity: i64,
    spend: i64,
    rating_sum: i64,
    ratings: i64,
    seen: TimeSpan,
    items: HashMap<Id, ItemState>,
    distinct_items: i64,
    categories: HashMap<Id, CategoryState>,
    distinct_categories: i64,
    /// Current `(name, value)` attributes, with their net count.
    attributes: BTreeMap<(String, String), isize>,
    /// What [`UserState::refresh`] derived from the items and categories
    /// when they last changed, so that a change of counts or windows alone
    /// assembles a profile without reading them.
    last_purchase: Option<i64>,
    /// A vector, not inline: most users have no category, and a user's
    /// state is most of the memory per user.
    top_categories: Vec<CategoryAffinity>,
    /// Whether an item that held `last_purchase` stopped being owned since
    /// the last refresh, so the latest purchase must be looked for again.
    rescan_purchases: bool,
    /// The categories changed since the last refresh.
    changed_categories: Changed,
    /// The day the categories' affinities are as of.
    affinity_day: Option<i64>,
    /// With `[risk]`: velocity, day buckets and open alerts.
    risk: Option<Box<RiskState>>,
    /// The risk features as of the latest event; here, not in the boxed
    /// state, so that a profile reads them without a pointer to chase.
    risk_features: Option<Arc<RiskFeatures>>,
}

/// Which categories changed since the last refresh: one event changes one,
/// and several are not told apart (every category is then valued again).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Changed {
    #[default]
    Nothing,
    One(Id),
    Several,
}

impl Changed {
    fn add(&mut self, category: Id) {
        *self = match *self {
            Changed::Nothing => Changed::One(category),
            Changed::One(one) if one == category => Changed::One(one),
            _ => Changed::Several,
        };
    }
}

/// A user's events on one item.
#[derive(Default)]
struct ItemState {
    /// Net count of events other than purchases and cancellations.
    other: i64,
    /// Units bought less cancelled.
    units: i64,
    /// Latest inserted purchase.
    purchased: TimeSpan,
}

impl ItemState {
    /// Whether the item counts in `distinct_items`.
    fn held(&self) -> bool {
        self.other > 0 || self.last_purchase().is_some()
    }

    /// The latest purchase, while the user owns the item.
    fn last_purchase(&self) -> Option<i64> {
        self.purchased.last().filter(|_| self.units > 0)
    }

    fn is_empty(&self) -> bool {
        self.other == 0 && self.units == 0 && self.purchased.last().is_none()
    }
}

/// A user's events in one category.
#[derive(Default)]
struct CategoryState {
    other: i64,
    units: i64,
    /// `(era, weight of other actions, weight of purchases)`, eras ascending,
    /// in the fixed point of [`Decay::scaled`].
    weights: Vec<(i64, i128, i128)>,
    /// The affinity as of the user's `affinity_day`, unless the category is
    /// in `changed_categories`.
    affinity: f64,
}

impl CategoryState {
    fn held(&self) -> bool {
        self.other > 0 || self.units > 0
    }

    fn is_empty(&self) -> bool {
        self.other == 0 && self.units == 0 && self.weights.is_empty()
    }

    fn add_weight(&mut self, era: i64, scaled: i128, purchase: bool) {
        let index = match self.weights.binary_search_by_key(&era, |(e, _, _)| *e) {
            Ok(index) => index,
            Err(index) => {
                self.weights.insert(index, (era, 0, 0));
                index
            }
        };
        let (_, other, purchases) = &mut self.weights[index];
        if purchase {
            *purchases += scaled;
        } else {
            *other += scaled;
        }
        if *other == 0 && *purchases == 0 {
            self.weights.remove(index);
        }
    }

    /// Σ of the era sums as of the factors' day; purchases weigh nothing
    /// unless the user has bought more units than cancelled in the category.
    fn value(&self, factors: &mut EraFactors) -> f64 {
        let owned = self.units > 0;
        let eras = self
            .weights
            .iter()
            .map(|&(era, other, purchases)| (era, if owned { other + purchases } else { other }));
        factors.value(eras)
    }
}

/// What a profile is assembled with: the config, its maintained windows
/// (numbered in ascending order: the configured ones and the segment's
/// recency), its decay, and the risk rules.
#[derive(Clone)]
pub(crate) struct Rules {
    pub config: ProfileConfig,
    pub window_days: Vec<u64>,
    /// The configured windows, every count zero: a profile's windows start
    /// as a copy of it.
    no_window_counts: WindowCounts,
    decay: Decay,
    pub risk: Option<RiskRules>,
}

impl Rules {
    pub fn new(config: &ProfileConfig, risk: Option<&RiskConfig>) -> Rules {
        Rules {
            config: config.clone(),
            window_days: config.maintained_windows().into_iter().collect(),
            no_window_counts: config
                .window_days
                .iter()
                .map(|days| (*days, ActionCounts::default()))
                .collect(),
            decay: Decay::new(config.half_life_days),
            risk: risk.map(RiskRules::new),
        }
    }
}

impl UserState {
    /// Applies an event with multiplicity `diff`, its category and price as
    /// the event has them, but not its windows (see
    /// [`UserState::add_window`]).
    pub fn apply_event(&mut self, event: &Event, diff: i64, rules: &Rules) {
        let action = event.action;
        self.counts.insert(action, self.counts[&action] + diff);
        let units = signed_units(action, event.quantity);
        self.quantity += diff * units;
        if let Some(rating) = event.rating {
            self.rating_sum += diff * rating;
            self.ratings += diff;
        }
        let time = TimeSpan::of_update(event.time_ms, diff as isize);
        self.seen.plus_equals(&time);

        let item = self.items.entry(event.item).or_default();
        let held = item.held();
        if is_transaction(action) {
            let owned_before = item.last_purchase();
            item.units += diff * units;
            if action == Action::Purchase {
                item.purchased.plus_equals(&time);
            }
            // Purchase times only grow, so an item still owned can only
            // raise the latest purchase; one no longer owned may have held it.
            match item.last_purchase() {
                Some(last) => self.last_purchase = self.last_purchase.max(Some(last)),
                None if owned_before.is_some() && owned_before == self.last_purchase => {
                    self.rescan_purchases = true;
                }
                None => {}
            }
        } else {
            item.other += diff;
        }
        self.distinct_items += i64::from(item.held()) - i64::from(held);
        if item.is_empty() {
            self.items.remove(&event.item);
        }
        self.apply_use(&ItemUse::of(event), diff, rules);
    }

    /// Applies the price and category of a use with multiplicity `diff`:
    /// spend, distinct categories and affinity.
    pub fn apply_use(&mut self, item_use: &ItemUse, diff: i64, rules: &Rules) {
        let units = item_use.signed_units();
        if let Some(price) = item_use.price {
            self.spend += diff * units * price;
        }
        let Some(category) = item_use.category else {
            return;
        };
        self.changed_categories.add(category);
        let state = self.categories.entry(category).or_default();
        let held = state.held();
        if is_transaction(item_use.action) {
            state.units += diff * units;
        } else {
            state.other += diff;
        }
        self.distinct_categories += i64::from(state.held()) - i64::from(held);
        let weight = rules.config.action_weights.weight(item_use.action) * diff;
        if weight != 0 {
            let (decay, day) = (&rules.decay, item_use.day);
            let purchase = item_use.action == Action::Purchase;
            state.add_weight(decay.era(day), decay.scaled(day, weight), purchase);
        }
        if state.is_empty() {
            self.categories.remove(&category);
        }
    }

    /// Adds `diff` to the count of `action` in the maintained window number
    /// `window`.
    pub fn add_window(&mut self, window: u32, action: Action, diff: i64) {
        let key = (window, action);
        match self
            .windows
            .binary_search_by_key(&key, |(w, a, _)| (*w, *a))
        {
            Ok(index) => {
                self.windows[index].2 += diff;
                if self.windows[index].2 == 0 {
                    self.windows.remove(index);
                }
            }
            Err(index) => self.windows.insert(index, (window, action, diff)),
        }
    }

    /// Applies one time's updates ([`Recent::new`]) to the risk state, and
    /// returns the changes of the user's alerts (none without `[risk]`).
    pub fn apply_risk(&mut self, events: &[Recent], rules: &Rules) -> Vec<(Alert, i64)> {
        match &rules.risk {
            Some(risk_rules) => {
                let risk = self.risk.get_or_insert_with(Box::default);
                let (features, changes) = risk.apply(events, risk_rules);
                self.risk_features = features;
                changes
            }
            None => Vec::new(),
        }
    }

    /// Adds `diff` to the count of a current `(name, value)` attribute.
    pub fn add_attribute(&mut self, name: String, value: String, diff: isize) {
        use std::collections::btree_map::Entry;
        match self.attributes.entry((name, value)) {
            Entry::Occupied(mut entry) => {
                *entry.get_mut() += diff;
                if *entry.get() == 0 {
                    entry.remove();
                }
            }
            Entry::Vacant(entry) => {
                entry.insert(diff);
            }
        }
    }

    /// Whether nothing of the user is left: no sums, no keys. (A time once
    /// seen stays, as in [`TimeSpan`], so a user whose events were all taken
    /// back keeps their span.)
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
            && self.windows.is_empty()
            && self.items.is_empty()
            && self.categories.is_empty()
            && self.attributes.is_empty()
            && self.risk.as_ref().is_none_or(|risk| risk.is_empty())
            && self.seen.last().is_none()
            && (self.quantity, self.spend, self.rating_sum, self.ratings) == (0, 0, 0, 0)
    }

    /// The user's profile; `None` if no action count is nonzero.
    pub fn profile(&self, rules: &Rules) -> Option<Profile> {
        let mut profile = self.profile_without_risk(rules)?;
        profile.risk = self.risk_features.clone();
        Some(profile)
    }

    /// The profile before a time's updates: as [`UserState::profile`], but
    /// when the time's events will replace the risk features (`replaced`),
    /// they move into it instead of being shared: sharing touches the
    /// refcount of an allocation that is cold by the user's next time, a
    /// cache miss per user and time.
    pub fn profile_before(&mut self, rules: &Rules, replaced: bool) -> Option<Profile> {
        let mut profile = self.profile_without_risk(rules)?;
        profile.risk = match replaced {
            true => self.risk_features.take(),
            false => self.risk_features.clone(),
        };
        Some(profile)
    }

    fn profile_without_risk(&self, rules: &Rules) -> Option<Profile> {
        let config = &rules.config;
        let counts = self.counts;
        if counts.is_empty() {
            return None;
        }
        let mut windows = rules.no_window_counts.clone();
        let mut recent_purchases = 0;
        for &(window, action, count) in &self.windows {
            let days = rules.window_days[window as usize];
            if days == config.segment.recency_days {
                recent_purchases += match action {
                    Action::Purchase => count,
                    Action::Cancellation => -count,
                    _ => 0,
                };
            }
            if let Some(counts) = windows.get_mut(&days) {
                counts.insert(action, count);
            }
        }
        let last_purchase = self.last_purchase;
        let purchases = counts[&Action::Purchase] - counts[&Action::Cancellation];
        let attributes = self
            .attributes
            .iter()
            .filter(|(_, count)| **count > 0)
            .map(|((name, value), _)| (name.clone(), value.clone()))
            .collect();
        Some(Profile {
            segment: Segment::classify(
                last_purchase.is_some(),
                recent_purchases,
                purchases,
                self.spend,
                &config.segment,
            ),
            counts,
            windows,
            quantity: self.quantity,
            spend: self.spend,
            distinct_items: self.distinct_items,
            distinct_categories: self.distinct_categories,
            first_seen: self.seen.first(),
            last_seen: self.seen.last(),
            last_purchase,
            avg_rating: (self.ratings > 0)
                .then(|| Score(self.rating_sum as f64 / self.ratings as f64 / 100.0)),
            ratings: self.ratings,
            top_categories: self.top_categories.iter().cloned().collect(),
            attributes,
            risk: None,
            cluster: None,
            factors: None,
        })
    }

    /// Looks for the latest purchase again if its item stopped being owned
    /// since the last call, and derives the top categories if categories
    /// changed or the user's latest day moved. Call it after applying a
    /// time's changes, before [`UserState::profile`].
    ///
    /// When one category alone changed, on the same day, only it is valued
    /// again, and if its affinity rose, only it and the previous top are
    /// ranked: every other category ranked below each of the previous top
    /// and still does, so the result is the full ranking's, at a cost
    /// independent of how many categories the user has. Otherwise every
    /// affinity is valued again and all are ranked.
    pub fn refresh(&mut self, rules: &Rules) {
        if std::mem::take(&mut self.rescan_purchases) {
            self.last_purchase = self
                .items
                .values()
                .filter_map(ItemState::last_purchase)
                .max();
        }
        let changed = std::mem::take(&mut self.changed_categories);
        let latest_day = self.seen.last().map(|ms| ms.div_euclid(DAY_MS as i64));
        let moved = latest_day != self.affinity_day;
        if changed == Changed::Nothing && !moved {
            return;
        }
        self.affinity_day = latest_day;
        let Some(latest_day) = latest_day else {
            self.top_categories.clear();
            return;
        };
        let mut factors = EraFactors::new(&rules.decay, latest_day);
        let keep = rules.config.top_categories;
        // The one changed category, when it alone changed and rose.
        let mut rose = None;
        match (moved, changed) {
            (false, Changed::One(category)) => {
                if let Some(state) = self.categories.get_mut(&category) {
                    let affinity = state.value(&mut factors);
                    if affinity >= state.affinity {
                        rose = Some(category);
                    }
                    state.affinity = affinity;
                }
            }
            // Values of unchanged categories come out the same again.
            _ => {
                for state in self.categories.values_mut() {
                    state.affinity = state.value(&mut factors);
                }
            }
        }
        let categories = &self.categories;
        let affinity = |category: &Id| (*category, categories[category].affinity);
        let ranked = match rose {
            Some(category) => {
                let mut candidates: SmallVec<[Id; 8]> =
                    self.top_categories.iter().map(|c| c.category).collect();
                if !candidates.contains(&category) {
                    candidates.push(category);
                }
                rank_categories(candidates.iter().map(affinity), keep)
            }
            None => rank_categories(categories.keys().map(affinity), keep),
        };
        self.top_categories.clear();
        self.top_categories.extend(ranked);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_state_is_per_era_not_per_day() {
        let rules = Rules::new(&ProfileConfig::default(), None);
        let mut state = UserState::default();
        let days = 2_000;
        for day in 0..days {
            let mut event = Event::new(1, day as Id, Action::View, day * DAY_MS as i64);
            event.category = Some(9);
            state.apply_event(&event, 1, &rules);
        }
        state.refresh(&rules);
        // 16 half-lives of 30 days: 480 days an era.
        assert_eq!(state.categories[&9].weights.len(), 5);
        let affinity = state.top_categories[0].affinity.0;
        // Σ_{k=0}^{1999} 2^(-k/30) = (1 − 2^(-2000/30)) / (1 − 2^(-1/30)).
        let exact = (1.0 - (-(days as f64) / 30.0).exp2()) / (1.0 - (-1.0f64 / 30.0).exp2());
        assert!(
            (affinity - exact).abs() < exact * 1e-9,
            "{affinity} vs {exact}"
        );
    }

    #[test]
    fn the_latest_purchase_is_looked_for_again_when_its_item_is_cancelled() {
        let rules = Rules::new(&ProfileConfig::default(), None);
        let mut state = UserState::default();
        let mut purchase = |item, ms| {
            let event = Event::new(1, item, Action::Purchase, ms);
            state.apply_event(&event, 1, &rules);
        };
        purchase(7, 1_000);
        purchase(8, 2_000);
        state.refresh(&rules);
        assert_eq!(state.last_purchase, Some(2_000));
        let cancellation = Event::new(1, 8, Action::Cancellation, 3_000);
        state.apply_event(&cancellation, 1, &rules);
        state.refresh(&rules);
        assert_eq!(state.last_purchase, Some(1_000));
        state.apply_event(&Event::new(1, 7, Action::Cancellation, 4_000), 1, &rules);
        state.refresh(&rules);
        assert_eq!(state.last_purchase, None);
    }

    #[test]
    fn top_categories_ranked_from_the_changes_equal_a_full_ranking() {
        let mut config = ProfileConfig {
            top_categories: 3,
            ..ProfileConfig::default()
        };
        config.action_weights.not_interested = -3;
        let rules = Rules::new(&config, None);
        let mut state = UserState::default();
        // A small linear congruential generator: the test is deterministic.
        let mut seed = 7u64;
        let mut next = |below: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % below
        };
        let actions = [
            Action::View,
            Action::Purchase,
            Action::Cancellation,
            Action::NotInterested,
        ];
        for step in 0..3_000 {
            // Mostly within one day (ranked from the changes), sometimes the
            // next day (everything valued again).
            let day = step / 500;
            let time = day * DAY_MS as i64 + step;
            let action = actions[next(actions.len() as u64) as usize];
            let mut event = Event::new(1, next(40), action, time);
            event.category = Some(next(20));
            event.quantity = 1 + next(2) as i64;
            let diff = if next(10) == 0 { -1 } else { 1 };
            state.apply_event(&event, diff, &rules);
            state.refresh(&rules);
            let mut factors = EraFactors::new(&rules.decay, day);
            let all = state
                .categories
                .iter()
                .map(|(category, s)| (*category, s.value(&mut factors)));
            let expected = rank_categories(all, 3);
            assert_eq!(state.top_categories[..], expected[..], "step {step}");
        }
    }
}
