//! Per-user profiles: counts, windows, spend, recency, distinct items and
//! categories, ratings, time-decayed category affinity, an RFM segment and
//! the user's attributes, kept exactly up to date by [`profiles`].
//!
//! State is proportional to distinct keys, not to raw events. Events are
//! first reduced to small keys whose weight is carried in the diff:
//! `explode` turns an event into `((user, measure), amount)` updates (a
//! purchase adds `quantity` to `(user, quantity)`, a rating adds its value to
//! `(user, rating_sum)`, ...), and one `count_total` sums them, so its arrangement
//! holds one entry per (user, measure). Distinctness features `threshold_total`
//! `(user, item)` and `(user, category)` keys; affinity is a reduction over
//! `(user, (category, day))` keys whose diff is the summed weight; first and
//! last seen, and the last purchase of an owned item, are a [`TimeSpan`]
//! diff of one record per user or (user, item). Only events that lack a
//! category (or a purchase that lacks a price) are joined with the catalog,
//! pre-aggregated to
//! `(item, (user, day, action, category, price, quantity))` keys. Exact
//! windows hold, in the delayed retractions, one update per distinct (user,
//! action, timestamp) of the last window.
//!
//! Floats (affinity, average rating) are computed inside reductions from
//! this integer state in a canonical order, so [`crate::reference::profile`]
//! reproduces them bit for bit.

mod config;
mod features;

use std::collections::{BTreeMap, HashMap};

use differential_dataflow::collection::AsCollection;
use differential_dataflow::operators::{CountTotal, ThresholdTotal};
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Capability, Operator};

use crate::time::{TimeSpan, DAY_MS};
use crate::{Action, Event, EventTime, Id, Score};

pub use config::{ActionWeights, InvalidProfileConfig, ProfileConfig, SegmentConfig};
pub use features::{CategoryAffinity, Profile, Segment};

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
/// affinity[c]          = Σ_{days d asc} w(c, d) · 2^((d − D) / half_life),
///                        w(c, d) = Σ_{c(e) = c, e.day() = d} weight(e.action),
///                        purchases left out where Σ_{c(e) = c} ±e.quantity <= 0,
///                        D = max {d : w(c', d) ≠ 0 for some c'}
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
    if let Err(error) = config.validate() {
        panic!("{error}");
    }

    let resolved = resolve_with_catalog(events.clone(), catalog);
    let owned = owned_items(events.clone());
    let measures = event_measures(events.clone())
        .concat(window_measures(events.clone(), config))
        .concat(resolved_measures(resolved.clone()))
        .concat(distinct_items(events.clone(), owned.clone()))
        .concat(distinct_categories(resolved.clone()))
        .count_total()
        .map(|((user, measure), total)| (user, Fact::Measure(measure, total as i64)));

    let facts = measures
        .concat(seen_times(events))
        .concat(last_purchase(owned))
        .concat(top_categories(resolved, config))
        .concat(current_attributes(user_attributes));

    assemble_profiles(facts, config.clone())
}

/// The per-user assembly of facts into a [`Profile`], as one operator that
/// keeps each user's current facts and profile: at each completed time it
/// re-assembles only the users whose facts changed at that time, and emits
/// the change of their profile. A `reduce` would do the same work and more:
/// read each changed user's facts back from an arrangement, and keep an
/// arrangement of its own output to tell what changed. Time is totally
/// ordered, so the times of a worker complete one after another, and users
/// are routed to one worker each.
fn assemble_profiles<'s, T: EventTime>(
    facts: VecCollection<'s, T, (Id, Fact)>,
    config: ProfileConfig,
) -> VecCollection<'s, T, (Id, Profile)> {
    type Changes = Vec<(Id, Fact, isize)>;
    let route = Exchange::new(|((user, _), _, _): &((Id, Fact), T, isize)| *user);
    facts
        .inner
        .unary_frontier::<CapacityContainerBuilder<Vec<((Id, Profile), T, isize)>>, _, _, _>(
            route,
            "Profile",
            move |_, _| {
                let mut waiting: BTreeMap<T, (Capability<T>, Changes)> = BTreeMap::new();
                let mut facts: HashMap<Id, BTreeMap<Fact, isize>> = HashMap::new();
                let mut profiles: HashMap<Id, Profile> = HashMap::new();
                let mut touched: Vec<Id> = Vec::new();
                move |(input, frontier), output| {
                    input.for_each_stamp(|capability, containers| {
                        for container in containers {
                            for ((user, fact), time, diff) in container.drain(..) {
                                let (_, changes) = waiting
                                    .entry(time.clone())
                                    .or_insert_with(|| (capability.delayed(&time, 0), Vec::new()));
                                changes.push((user, fact, diff));
                            }
                        }
                    });
                    while let Some(entry) = waiting.first_entry() {
                        if frontier.frontier().less_equal(entry.key()) {
                            break;
                        }
                        let (capability, changes) = entry.remove();
                        let time = capability.time().clone();
                        touched.clear();
                        for (user, fact, diff) in changes {
                            let user_facts = facts.entry(user).or_default();
                            let count = user_facts.entry(fact.clone()).or_insert(0);
                            *count += diff;
                            if *count == 0 {
                                user_facts.remove(&fact);
                            }
                            touched.push(user);
                        }
                        touched.sort_unstable();
                        touched.dedup();
                        let mut session = output.session(&capability);
                        for &user in &touched {
                            let assembled = match facts.get(&user) {
                                Some(user_facts) if !user_facts.is_empty() => {
                                    assemble(user_facts.iter().map(|(f, c)| (f, *c)), &config)
                                }
                                _ => {
                                    facts.remove(&user);
                                    None
                                }
                            };
                            let previous = profiles.remove(&user);
                            if previous == assembled {
                                if let Some(profile) = previous {
                                    profiles.insert(user, profile);
                                }
                                continue;
                            }
                            if let Some(old) = previous {
                                session.give(((user, old), time.clone(), -1));
                            }
                            if let Some(new) = assembled {
                                session.give(((user, new.clone()), time.clone(), 1));
                                profiles.insert(user, new);
                            }
                        }
                    }
                }
            },
        )
        .as_collection()
}

/// An integer feature of a user, summed by `count`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Measure {
    Count(Action),
    Window { days: u64, action: Action },
    Quantity,
    Spend,
    RatingSum,
    RatingCount,
    DistinctItems,
    DistinctCategories,
}

/// Everything the final reduction needs to know about a user, each already
/// aggregated.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Fact {
    Measure(Measure, i64),
    Seen { first_ms: i64, last_ms: i64 },
    LastPurchase(i64),
    TopCategories(Vec<CategoryAffinity>),
    Attribute(String, String),
}

/// An event reduced to what the catalog-dependent features need. Events
/// other than purchases and cancellations drop price and quantity so that
/// they aggregate into fewer keys.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
struct ItemUse {
    user: Id,
    day: i64,
    action: Action,
    category: Option<Id>,
    price: Option<i64>,
    quantity: i64,
}

impl ItemUse {
    fn of(event: &Event) -> ItemUse {
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
    fn needs_catalog(&self) -> bool {
        self.category.is_none() || (is_transaction(self.action) && self.price.is_none())
    }

    /// Fills what the event lacks from the item's current catalog entry.
    fn with_catalog(mut self, entry: &CatalogEntry) -> ItemUse {
        self.category = self.category.or(entry.category);
        if is_transaction(self.action) {
            self.price = self.price.or(entry.price);
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
fn is_transaction(action: Action) -> bool {
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

/// The current catalog entry of an item.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
struct CatalogEntry {
    category: Option<Id>,
    price: Option<i64>,
}

/// Every event as an [`ItemUse`], with category and price taken from the
/// item's current catalog entry where the event has none. Without a catalog
/// the uses are the events as they are: nothing waits, arranged, for a
/// catalog entry that cannot come.
fn resolve_with_catalog<'s, T: EventTime>(
    events: VecCollection<'s, T, Event>,
    catalog: Option<VecCollection<'s, T, (Id, CatalogVersion)>>,
) -> VecCollection<'s, T, ItemUse> {
    let Some(catalog) = catalog else {
        return events.map(|event| ItemUse::of(&event));
    };
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

    let uses = events.map(|event| (event.item, ItemUse::of(&event)));
    let complete = uses
        .clone()
        .filter(|(_, item_use)| !item_use.needs_catalog());
    let incomplete = uses.filter(|(_, item_use)| item_use.needs_catalog());
    let matched = incomplete.clone().join(current_catalog);
    // A left outer join with one join: every incomplete use as it is, then
    // for the matched ones, swap the unresolved form for the resolved one.
    complete
        .concat(incomplete)
        .map(|(_, item_use)| item_use)
        .concat(matched.clone().map(|(_, (item_use, _))| item_use).negate())
        .concat(matched.map(|(_, (item_use, entry))| item_use.with_catalog(&entry)))
}

/// Lifetime counts, quantity and ratings: sums over events, no catalog.
fn event_measures<'s, T: EventTime>(
    events: VecCollection<'s, T, Event>,
) -> VecCollection<'s, T, (Id, Measure)> {
    // A fixed array, not a Vec: this runs once per event.
    events.explode(|event| {
        let user = event.user;
        let units = is_transaction(event.action).then(|| {
            (
                (user, Measure::Quantity),
                signed_units(event.action, event.quantity) as isize,
            )
        });
        let rating = event
            .rating
            .map(|rating| ((user, Measure::RatingSum), rating as isize));
        let rated = event.rating.map(|_| ((user, Measure::RatingCount), 1));
        [
            Some(((user, Measure::Count(event.action)), 1)),
            units,
            rating,
            rated,
        ]
        .into_iter()
        .flatten()
    })
}

/// Action counts in each window: an update at `t` enters at `t` and its
/// negation, delayed to `t + W`, takes it out again.
fn window_measures<'s, T: EventTime>(
    events: VecCollection<'s, T, Event>,
    config: &ProfileConfig,
) -> VecCollection<'s, T, (Id, Measure)> {
    let actions = events.map(|event| (event.user, event.action));
    let mut windows = Vec::new();
    for days in config.maintained_windows() {
        let entered = actions
            .clone()
            .map(move |(user, action)| (user, Measure::Window { days, action }));
        let left = entered
            .clone()
            .negate()
            .delay(move |time: &T| time.plus_ms(days.saturating_mul(DAY_MS)));
        windows.push(entered);
        windows.push(left);
    }
    differential_dataflow::collection::concatenate(actions.scope(), windows)
}

/// Spend: purchases less cancellations with a price, from the event or the
/// catalog.
fn resolved_measures<'s, T: EventTime>(
    resolved: VecCollection<'s, T, ItemUse>,
) -> VecCollection<'s, T, (Id, Measure)> {
    resolved.explode(|item_use| {
        let spend = item_use.price.map(|price| item_use.signed_units() * price);
        spend
            .filter(|spend| *spend != 0)
            .map(|spend| ((item_use.user, Measure::Spend), spend as isize))
    })
}

/// `((user, item), last_purchase_ms)` for each item the user owns: net units
/// bought less cancelled positive, with the latest time of the item's
/// purchases (see [`TimeSpan`]). One record per (user, item), whatever the
/// number of its purchases.
fn owned_items<'s, T: EventTime>(
    events: VecCollection<'s, T, Event>,
) -> VecCollection<'s, T, ((Id, Id), i64)> {
    events
        .inner
        .flat_map(|(event, time, diff)| {
            is_transaction(event.action).then(|| {
                let units = signed_units(event.action, event.quantity) * diff as i64;
                let purchased = match event.action {
                    Action::Purchase => TimeSpan::of_update(event.time_ms, diff),
                    _ => TimeSpan::EMPTY,
                };
                ((event.user, event.item), time, (units, purchased))
            })
        })
        .as_collection()
        .count_total()
        .flat_map(|(pair, (units, purchased))| {
            let last_purchase = purchased.last().filter(|_| units > 0);
            last_purchase.map(|ms| (pair, ms))
        })
}

/// One `DistinctItems` per (user, item) the user owns or has a net-present
/// event of another action on.
fn distinct_items<'s, T: EventTime>(
    events: VecCollection<'s, T, Event>,
    owned: VecCollection<'s, T, ((Id, Id), i64)>,
) -> VecCollection<'s, T, (Id, Measure)> {
    events
        .filter(|event| !is_transaction(event.action))
        .map(|event| (event.user, event.item))
        .threshold_total(|_, count| isize::from(*count > 0))
        .concat(owned.map(|(pair, _)| pair))
        .threshold_total(|_, count| isize::from(*count > 0))
        .map(|(user, _)| (user, Measure::DistinctItems))
}

/// One `DistinctCategories` per (user, category) with positive net units
/// bought, or a net-present event of another action.
fn distinct_categories<'s, T: EventTime>(
    resolved: VecCollection<'s, T, ItemUse>,
) -> VecCollection<'s, T, (Id, Measure)> {
    let interacted = resolved
        .clone()
        .flat_map(|item_use| {
            let other = !is_transaction(item_use.action);
            let category = item_use.category.filter(|_| other);
            category.map(|category| (item_use.user, category))
        })
        .threshold_total(|_, count| isize::from(*count > 0));
    let owned = resolved
        .explode(|item_use| {
            let category = item_use
                .category
                .filter(|_| is_transaction(item_use.action));
            category.map(|category| ((item_use.user, category), item_use.signed_units() as isize))
        })
        .threshold_total(|_, units| isize::from(*units > 0));
    interacted
        .concat(owned)
        .threshold_total(|_, count| isize::from(*count > 0))
        .map(|(user, _)| (user, Measure::DistinctCategories))
}

/// First and last seen: the earliest and latest event time of the user, one
/// record per user (see [`TimeSpan`]).
fn seen_times<'s, T: EventTime>(
    events: VecCollection<'s, T, Event>,
) -> VecCollection<'s, T, (Id, Fact)> {
    events
        .inner
        .map(|(event, time, diff)| (event.user, time, TimeSpan::of_update(event.time_ms, diff)))
        .as_collection()
        .count_total()
        .flat_map(|(user, span)| {
            let (first_ms, last_ms) = (span.first()?, span.last()?);
            Some((user, Fact::Seen { first_ms, last_ms }))
        })
}

/// The latest purchase of an item the user still owns.
fn last_purchase<'s, T: EventTime>(
    owned: VecCollection<'s, T, ((Id, Id), i64)>,
) -> VecCollection<'s, T, (Id, Fact)> {
    owned
        .map(|((user, _item), ms)| (user, ms))
        .reduce_named("LastPurchase", |_, times, output| {
            // Times arrive in ascending order, each of an owned item.
            let (last_ms, _) = times[times.len() - 1];
            output.push((*last_ms, 1));
        })
        .map(|(user, ms)| (user, Fact::LastPurchase(ms)))
}

/// The user's best categories by decayed affinity, from integer weights per
/// (category, day) and net units per category carried in the diffs.
fn top_categories<'s, T: EventTime>(
    resolved: VecCollection<'s, T, ItemUse>,
    config: &ProfileConfig,
) -> VecCollection<'s, T, (Id, Fact)> {
    let weights = config.action_weights.clone();
    let half_life_days = config.half_life_days;
    let keep = config.top_categories;
    resolved
        .explode(move |item_use| {
            let weight = weights.weight(item_use.action);
            let (user, day) = (item_use.user, item_use.day);
            let units = item_use.signed_units();
            let purchase = item_use.action == Action::Purchase;
            item_use.category.into_iter().flat_map(move |category| {
                let weighed = (weight != 0).then_some((
                    (user, CategoryInput::Weight(category, day, purchase)),
                    weight as isize,
                ));
                let owned = (units != 0)
                    .then_some(((user, CategoryInput::Units(category)), units as isize));
                weighed.into_iter().chain(owned)
            })
        })
        .reduce_named("TopCategories", move |_user, inputs, output| {
            let inputs = inputs.iter().map(|(input, sum)| (**input, *sum as i64));
            let Some((weights, latest_day)) = category_weights(inputs) else {
                return;
            };
            let affinities = rank_categories(weights, latest_day, half_life_days, keep);
            if !affinities.is_empty() {
                output.push((Fact::TopCategories(affinities), 1));
            }
        })
}

/// The `keep` categories of highest affinity Σ w·2^((day − latest_day)/H),
/// from nonzero weights per (category, day) in ascending order (summed in
/// that order, so every implementation gets the same bits); ties by
/// category. Categories of affinity 0 or less are left out.
pub fn rank_categories(
    weights: impl IntoIterator<Item = ((Id, i64), i64)>,
    latest_day: i64,
    half_life_days: f64,
    keep: usize,
) -> Vec<CategoryAffinity> {
    let mut affinities: Vec<CategoryAffinity> = Vec::new();
    for ((category, day), weight) in weights {
        let decayed = weight as f64 * ((day - latest_day) as f64 / half_life_days).exp2();
        if affinities
            .last()
            .is_none_or(|last| last.category != category)
        {
            affinities.push(CategoryAffinity {
                category,
                affinity: Score(0.0),
            });
        }
        if let Some(last) = affinities.last_mut() {
            last.affinity.0 += decayed;
        }
    }
    affinities.retain(|c| c.affinity.0 > 0.0);
    affinities.sort_by(|a, b| {
        b.affinity
            .cmp(&a.affinity)
            .then(a.category.cmp(&b.category))
    });
    affinities.truncate(keep);
    affinities
}

/// One input of the per-user category affinity: net units bought in a
/// category, or the summed weight of (category, day, whether purchases).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum CategoryInput {
    Units(Id),
    Weight(Id, i64, bool),
}

/// `((category, day), weight)`.
type CategoryDayWeight = ((Id, i64), i64);

/// The nonzero weights per (category, day), ascending, leaving out purchases
/// in categories where the user's net units are not positive, and the latest
/// day among them; `None` if there is none. `inputs` arrive sorted: every
/// `Units` first, then weights by (category, day).
fn category_weights(
    inputs: impl IntoIterator<Item = (CategoryInput, i64)>,
) -> Option<(Vec<CategoryDayWeight>, i64)> {
    let mut units: BTreeMap<Id, i64> = BTreeMap::new();
    let mut weights: Vec<CategoryDayWeight> = Vec::new();
    for (input, sum) in inputs {
        match input {
            CategoryInput::Units(category) => *units.entry(category).or_default() += sum,
            CategoryInput::Weight(category, day, purchase) => {
                if purchase && units.get(&category).copied().unwrap_or(0) <= 0 {
                    continue;
                }
                match weights.last_mut() {
                    Some((key, weight)) if *key == (category, day) => *weight += sum,
                    _ => weights.push(((category, day), sum)),
                }
            }
        }
    }
    weights.retain(|(_, weight)| *weight != 0);
    let latest_day = weights.iter().map(|((_, day), _)| *day).max()?;
    Some((weights, latest_day))
}

/// The current value of each (user, attribute name).
fn current_attributes<'s, T: EventTime>(
    user_attributes: VecCollection<'s, T, (Id, AttributeVersion)>,
) -> VecCollection<'s, T, (Id, Fact)> {
    user_attributes
        .map(|(user, version)| ((user, version.name), (version.version_ms, version.value)))
        .reduce_named("CurrentAttributes", |_, versions, output| {
            if let Some(((_, value), _)) = versions.iter().rev().find(|(_, count)| *count > 0) {
                output.push((value.clone(), 1));
            }
        })
        .map(|((user, name), value)| (user, Fact::Attribute(name, value)))
}

/// Builds the profile from a user's facts; `None` if no action count is
/// nonzero (the user has no events, net).
fn assemble<'a>(
    facts: impl IntoIterator<Item = (&'a Fact, isize)>,
    config: &ProfileConfig,
) -> Option<Profile> {
    let mut profile = Profile {
        counts: BTreeMap::new(),
        windows: config
            .window_days
            .iter()
            .map(|days| (*days, BTreeMap::new()))
            .collect(),
        quantity: 0,
        spend: 0,
        distinct_items: 0,
        distinct_categories: 0,
        first_seen: None,
        last_seen: None,
        last_purchase: None,
        avg_rating: None,
        ratings: 0,
        top_categories: Vec::new(),
        segment: Segment::Prospect,
        attributes: BTreeMap::new(),
    };
    let mut rating_sum = 0;
    let mut recent_purchases = 0;
    for (fact, _) in facts.into_iter().filter(|(_, count)| *count > 0) {
        match fact.clone() {
            Fact::Measure(measure, total) => match measure {
                Measure::Count(action) => {
                    profile.counts.insert(action, total);
                }
                Measure::Window { days, action } => {
                    if days == config.segment.recency_days {
                        recent_purchases += match action {
                            Action::Purchase => total,
                            Action::Cancellation => -total,
                            _ => 0,
                        };
                    }
                    if let Some(counts) = profile.windows.get_mut(&days) {
                        counts.insert(action, total);
                    }
                }
                Measure::Quantity => profile.quantity = total,
                Measure::Spend => profile.spend = total,
                Measure::RatingSum => rating_sum = total,
                Measure::RatingCount => profile.ratings = total,
                Measure::DistinctItems => profile.distinct_items = total,
                Measure::DistinctCategories => profile.distinct_categories = total,
            },
            Fact::Seen { first_ms, last_ms } => {
                profile.first_seen = Some(first_ms);
                profile.last_seen = Some(last_ms);
            }
            Fact::LastPurchase(ms) => profile.last_purchase = Some(ms),
            Fact::TopCategories(top) => profile.top_categories = top,
            Fact::Attribute(name, value) => {
                profile.attributes.insert(name, value);
            }
        }
    }
    if profile.counts.is_empty() {
        return None;
    }
    if profile.ratings > 0 {
        profile.avg_rating = Some(Score(rating_sum as f64 / profile.ratings as f64 / 100.0));
    }
    let count = |action| profile.counts.get(&action).copied().unwrap_or(0);
    let purchases = count(Action::Purchase) - count(Action::Cancellation);
    profile.segment = Segment::classify(
        profile.last_purchase.is_some(),
        recent_purchases,
        purchases,
        profile.spend,
        &config.segment,
    );
    Some(profile)
}
