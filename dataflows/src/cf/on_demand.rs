//! Similar items and recommendations on demand, for one item or one user.
//!
//! What is cheap to keep exact per delta stays in the dataflow: each user's
//! history with affinities, the items each user has seen, the number of
//! users per item and the co-occurrence counts ([`state_updates`]). The
//! rankings are what is costly to maintain (with a normalised metric one
//! item count changes every pair of the item), so [`CfState`] keeps that
//! integer state as plain maps and ranks one item's neighbours or one
//! user's recommendations when asked, with the functions the dataflow ranks
//! with ([`similarity::neighbor_list`], [`recommend::score_items`]): an
//! answer equals the materialised outputs, and `reference::cf`, at the
//! state's time.
//!
//! The cross-occurrence indicator (`indicator_action`) is not evaluated on
//! demand: only the dataflow ranks it (`[recommend] rankings = "dataflow"`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use differential_dataflow::VecCollection;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use serde::{Deserialize, Serialize};

use super::history::{self, HistoryEntry};
use super::recommend::{self, popular_list, Recommendations, ScoreInput};
use super::similarity::{self, Neighbor, SimilarItems, Totals};
use super::CfConfig;
use crate::keyed::KeyedSums;
use crate::{Event, EventTime, Id, Score};

/// One record of the state the on-demand rankings read.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StateUpdate {
    /// An entry of a user's history.
    History(Id, HistoryEntry),
    /// `(i, j, c_ij)` with `i < j` and `c_ij ≥ min_support`: the pairs a
    /// neighbour list can hold, once per unordered pair.
    Pair(Id, Id, u64),
    /// `(i, c_ii)`: the number of users with i in their history.
    ItemUsers(Id, u64),
    /// The global counts, when the metric reads them.
    Totals(Totals),
    /// `(user, item)`: an item the user has seen, never recommended to them.
    Seen(Id, Id),
    /// A user with a net-present event: served the popular list when they
    /// have no personal one.
    User(Id),
    /// `(item, day, users)`: users with a net-present event on the item
    /// that day, of positive weight (and of the primary action, when set):
    /// the popularity trend's input, kept when `trend_weight > 0`.
    ItemDay(Id, i64, u64),
}

/// The state of collaborative filtering that [`CfState`] ranks from, as one
/// collection: histories, co-occurrence and counts, without the rankings.
pub fn state_updates<'s, T: EventTime>(
    events: VecCollection<'s, T, Event>,
    config: &CfConfig,
) -> VecCollection<'s, T, StateUpdate> {
    let histories = history::histories(events.clone(), config);
    let cooccurrence = similarity::cooccurrence(&histories);
    let history = histories.history;
    let min_support = config.min_support;
    let mut updates = history
        .map(|(user, entry)| StateUpdate::History(user, entry))
        .concat(
            cooccurrence
                .pairs
                .filter(move |(_, c_ij)| *c_ij >= min_support)
                .map(|((i, j), c_ij)| StateUpdate::Pair(i, j, c_ij)),
        )
        .concat(
            cooccurrence
                .item_users
                .map(|(item, users)| StateUpdate::ItemUsers(item, users)),
        )
        .concat(
            histories
                .user_items
                .map(|((user, item), _)| StateUpdate::Seen(user, item)),
        )
        .concat(histories.users.map(StateUpdate::User));
    if config.trend_weight > 0.0 {
        let weights = config.weights.clone();
        let primary = config.primary_action;
        updates = updates.concat(
            events
                .filter(move |e| {
                    weights.weight(e.action) > 0 && primary.is_none_or(|a| a == e.action)
                })
                .map(|e| (e.item, e.day(), e.user))
                // Present iff the net count is positive (`distinct_total`
                // would keep a net-negative key too).
                .sums_keyed("CfTrendUsers", |&(item, day, _user), count: &isize| {
                    (*count > 0).then_some((item, day))
                })
                .count_keyed("CfTrend")
                .map(|((item, day), users)| StateUpdate::ItemDay(item, day, users as u64)),
        );
    }
    if config.metric.needs_totals() {
        updates = updates.concat(
            cooccurrence
                .totals
                .map(|((), totals)| StateUpdate::Totals(totals)),
        );
    }
    updates
}

/// The integer state of collaborative filtering at one time, and the
/// rankings evaluated from it.
#[derive(Debug, Default)]
pub struct CfState {
    /// Each user's history, by item ascending: the order scores are summed
    /// in. Sorted vectors, not B-trees, whose smallest node holds 11
    /// entries: most users have a few.
    history: HashMap<Id, Vec<HistoryEntry>>,
    /// `c_ij ≥ min_support`, in both orders.
    rows: HashMap<Id, HashMap<Id, u64>>,
    item_users: HashMap<Id, u64>,
    totals: Totals,
    /// Each user's seen items, ascending.
    seen: HashMap<Id, Vec<Id>>,
    users: HashSet<Id>,
    /// Items by (users desc, id asc), built on first use after a change.
    ranking: OnceLock<Vec<(Id, u64)>>,
    /// Per item, users per day ([`StateUpdate::ItemDay`]).
    item_days: HashMap<Id, BTreeMap<i64, u64>>,
    /// Per day, the items with users that day: the latest is the trend's end.
    days: BTreeMap<i64, usize>,
    /// The trend of the last window asked for, built on first use after a
    /// change.
    trend: Mutex<Option<Arc<Trend>>>,
}

/// Each item's trend over one window, and the largest.
#[derive(Debug)]
struct Trend {
    days: u32,
    of_item: HashMap<Id, u64>,
    max: u64,
}

impl CfState {
    /// Applies the consolidated changes of one or more complete times:
    /// retractions first, so a record replaced at a time (−old, +new) ends
    /// as the new one whatever the order of the batch.
    pub fn apply(&mut self, updates: &[(StateUpdate, isize)]) {
        for insert in [false, true] {
            for (update, diff) in updates {
                if (*diff > 0) == insert {
                    self.apply_one(update.clone(), insert);
                }
            }
        }
    }

    fn apply_one(&mut self, update: StateUpdate, insert: bool) {
        match update {
            StateUpdate::History(user, entry) => {
                let entries = self.history.entry(user).or_default();
                let found = entries.binary_search_by_key(&entry.item, |e| e.item);
                match (found, insert) {
                    (Ok(at), true) => entries[at] = entry,
                    (Err(at), true) => entries.insert(at, entry),
                    (Ok(at), false) => _ = entries.remove(at),
                    (Err(_), false) => {}
                }
                if entries.is_empty() {
                    self.history.remove(&user);
                }
            }
            StateUpdate::Pair(i, j, c_ij) => {
                for (a, b) in [(i, j), (j, i)] {
                    let row = self.rows.entry(a).or_default();
                    if insert {
                        row.insert(b, c_ij);
                    } else if row.get(&b) == Some(&c_ij) {
                        row.remove(&b);
                        if row.is_empty() {
                            self.rows.remove(&a);
                        }
                    }
                }
            }
            StateUpdate::ItemUsers(item, users) => {
                self.ranking = OnceLock::new();
                if insert {
                    self.item_users.insert(item, users);
                } else if self.item_users.get(&item) == Some(&users) {
                    self.item_users.remove(&item);
                }
            }
            StateUpdate::Totals(totals) => {
                if insert {
                    self.totals = totals;
                } else if self.totals == totals {
                    self.totals = Totals::default();
                }
            }
            StateUpdate::Seen(user, item) => {
                let items = self.seen.entry(user).or_default();
                match (items.binary_search(&item), insert) {
                    (Err(at), true) => items.insert(at, item),
                    (Ok(at), false) => _ = items.remove(at),
                    _ => {}
                }
                if items.is_empty() {
                    self.seen.remove(&user);
                }
            }
            StateUpdate::User(user) => {
                if insert {
                    self.users.insert(user);
                } else {
                    self.users.remove(&user);
                }
            }
            StateUpdate::ItemDay(item, day, users) => {
                *self.trend.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
                let days = self.item_days.entry(item).or_default();
                if insert {
                    days.insert(day, users);
                    *self.days.entry(day).or_default() += 1;
                } else if days.get(&day) == Some(&users) {
                    days.remove(&day);
                    if days.is_empty() {
                        self.item_days.remove(&item);
                    }
                    let items = self.days.entry(day).or_default();
                    *items -= 1;
                    if *items == 0 {
                        self.days.remove(&day);
                    }
                }
            }
        }
    }

    /// The trend over the last `days` days up to the latest day with an
    /// event: per item, the sum of its users per day.
    fn trend(&self, days: u32) -> Arc<Trend> {
        let mut cached = self.trend.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(trend) = cached.as_ref().filter(|trend| trend.days == days) {
            return trend.clone();
        }
        let last = self.days.keys().next_back().copied().unwrap_or(0);
        let first = last - i64::from(days) + 1;
        let of_item: HashMap<Id, u64> = self
            .item_days
            .iter()
            .map(|(&item, per_day)| (item, per_day.range(first..=last).map(|(_, n)| n).sum()))
            .filter(|(_, users)| *users > 0)
            .collect();
        let max = of_item.values().copied().max().unwrap_or(0);
        let trend = Arc::new(Trend { days, of_item, max });
        *cached = Some(trend.clone());
        trend
    }

    /// Whether `item` is in anyone's history.
    pub fn has_item(&self, item: Id) -> bool {
        self.item_users.contains_key(&item)
    }

    /// Whether `user` has a net-present event.
    pub fn has_user(&self, user: Id) -> bool {
        self.users.contains(&user)
    }

    /// Items in at least one history.
    pub fn item_count(&self) -> usize {
        self.item_users.len()
    }

    /// The items in at least one history, in no order.
    pub fn items(&self) -> impl Iterator<Item = Id> + '_ {
        self.item_users.keys().copied()
    }

    /// The users with a net-present event, in no order.
    pub fn users(&self) -> impl Iterator<Item = Id> + '_ {
        self.users.iter().copied()
    }

    /// `item`'s `limit` (0 = all) most similar other items under
    /// `config.metric`: `similar_items.jsonl`'s record with K = `limit`.
    pub fn similar_items(&self, item: Id, limit: usize, config: &CfConfig) -> SimilarItems {
        let row = self.rows.get(&item);
        similarity::neighbor_list(
            item,
            row.into_iter().flatten().map(|(&j, &c_ij)| (j, c_ij)),
            self.count(item),
            |j| self.count(j),
            self.totals,
            config.metric,
            limit,
        )
    }

    /// `user`'s top `top_k` (0 = all) recommendations, scored with
    /// `config.neighbors` neighbours per history item; a user with no scored
    /// unseen item, or unknown, gets the popular list (`popular: true`).
    pub fn recommendations(&self, user: Id, top_k: usize, config: &CfConfig) -> Recommendations {
        self.recommendations_with(user, top_k, config, |item| {
            self.similar_items(item, config.neighbors, config).neighbors
        })
    }

    /// [`CfState::recommendations`], with each history item's
    /// `config.neighbors` neighbours from `neighbors` (e.g. ranked once for
    /// every user of a pass).
    pub fn recommendations_with(
        &self,
        user: Id,
        top_k: usize,
        config: &CfConfig,
        neighbors: impl Fn(Id) -> Vec<Neighbor>,
    ) -> Recommendations {
        let seen: Vec<Id> = match (config.remove_seen, self.seen.get(&user)) {
            (true, Some(items)) => items.to_vec(),
            _ => Vec::new(),
        };
        let mut inputs: Vec<ScoreInput> = seen.iter().map(|&item| ScoreInput::Seen(item)).collect();
        for entry in self.history.get(&user).into_iter().flatten() {
            let i = entry.item;
            let list = neighbors(i);
            if !list.is_empty() {
                inputs.push(ScoreInput::Primary(i, entry.affinity, list));
            }
            let c_ii = self.count(i);
            if !config.remove_seen && c_ii >= config.min_support && c_ii > 0 {
                let similarity = similarity::own_similarity(config, c_ii, self.totals);
                let own = Neighbor {
                    item: i,
                    similarity: Score(similarity),
                };
                inputs.push(ScoreInput::Primary(i, entry.affinity, vec![own]));
            }
        }
        let items = if config.trend_weight > 0.0 {
            let trend = self.trend(config.trend_days);
            let of = |item: Id| trend.of_item.get(&item).copied().unwrap_or(0);
            recommend::with_trend(
                recommend::score_items(&inputs, 0),
                (of, trend.max),
                config.trend_weight,
                top_k,
            )
        } else {
            recommend::score_items(&inputs, top_k)
        };
        if !items.is_empty() {
            return Recommendations {
                user,
                items,
                popular: false,
            };
        }
        let ranking = self.ranking.get_or_init(|| {
            recommend::rank_popular(self.item_users.iter().map(|(&i, &c)| (i, c)), 0)
        });
        popular_list(user, &seen, ranking, top_k).unwrap_or(Recommendations {
            user,
            items: Vec::new(),
            popular: true,
        })
    }

    /// `c_ii`, 0 for an item in no history.
    fn count(&self, item: Id) -> u64 {
        self.item_users.get(&item).copied().unwrap_or(0)
    }
}
