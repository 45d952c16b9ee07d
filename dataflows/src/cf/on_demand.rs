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

use super::history::{self, Change, HistoryEntry};
use super::recommend::{self, popular_list, Recommendations, ScoreInput, BLEND_CANDIDATES};
use super::similarity::{self, Neighbor, SimilarItems, Totals};
use super::CfConfig;
use crate::keyed::KeyedSums;
use crate::mf::{MfRow, MfTable};
use crate::{Event, EventTime, Id, Score};

/// One record of the state the on-demand rankings read. The counts are the
/// multiplicities of their records, as in differential's own collections:
/// the dataflow sends the changes of each user's pairs and items without
/// counting them, and [`CfState`] adds them up.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StateUpdate {
    /// An entry of a user's history.
    History(Id, HistoryEntry),
    /// `(i, j)` with `i < j`, once per user with both in their history: its
    /// multiplicity is `c_ij`.
    Pair(Id, Id),
    /// An item, once per user with it in their history: its multiplicity is
    /// `c_ii`.
    Item(Id),
    /// `(user, item)`: an item the user has seen, never recommended to them.
    Seen(Id, Id),
    /// `(user, item)`: an item the user dismissed (`not_interested`), never
    /// recommended to them whatever the mode ([`recommend::dismissed`]).
    Dismissed(Id, Id),
    /// A user with a net-present event: served the popular list when they
    /// have no personal one.
    User(Id),
    /// `(item, day)`, once per user with a net-present event on the item
    /// that day, of positive weight (and of the primary action, when set):
    /// the popularity trend's input, kept when `trend_weight > 0`.
    ItemDay(Id, i64),
    /// A row of the factorisation trained in the dataflow, which a blend
    /// (`mf_weight > 0`) ranks with ([`crate::mf::online`]).
    Factors(MfRow),
}

impl StateUpdate {
    /// Whether the record is counted (its multiplicity is a count) rather
    /// than present or not.
    fn is_count(&self) -> bool {
        matches!(
            self,
            StateUpdate::Pair(..) | StateUpdate::Item(_) | StateUpdate::ItemDay(..)
        )
    }
}

/// The state of collaborative filtering that [`CfState`] ranks from, as one
/// collection: histories, co-occurrence and counts, without the rankings.
pub fn state_updates<'s, T: EventTime>(
    events: VecCollection<'s, T, Event>,
    config: &CfConfig,
) -> VecCollection<'s, T, StateUpdate> {
    // Straight from the users' operator: the kinds of change kept here, as
    // records of the state.
    let dismissed =
        recommend::dismissed(events.clone()).map(|(user, item)| StateUpdate::Dismissed(user, item));
    let mut updates = history::user_changes(events.clone(), config, |user, change| match change {
        Change::Entry(entry, false) => Some(StateUpdate::History(user, entry)),
        Change::Pair(i, j) => Some(StateUpdate::Pair(i, j)),
        Change::Counted(item) => Some(StateUpdate::Item(item)),
        Change::Item(item, _, false) => Some(StateUpdate::Seen(user, item)),
        Change::Present => Some(StateUpdate::User(user)),
        Change::Entry(_, true) | Change::Item(_, _, true) | Change::HasHistory => None,
    })
    .concat(dismissed);
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
                    (*count > 0).then_some(StateUpdate::ItemDay(item, day))
                }),
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
    /// `c_ij > 0`, in both orders (pairs under `min_support` are skipped
    /// when ranking).
    cooccurrences: Cooccurrences,
    /// `c_ii > 0`.
    item_users: HashMap<Id, i64>,
    /// Each user's seen items, ascending.
    seen: HashMap<Id, Vec<Id>>,
    /// Each user's dismissed items, ascending.
    dismissed: HashMap<Id, Vec<Id>>,
    users: HashSet<Id>,
    /// Items by (users desc, id asc), built on first use after a change.
    ranking: OnceLock<Vec<(Id, u64)>>,
    /// Per item, users per day ([`StateUpdate::ItemDay`]).
    item_days: HashMap<Id, BTreeMap<i64, i64>>,
    /// Per day, the items with users that day: the latest is the trend's end.
    days: BTreeMap<i64, usize>,
    /// The trend of the last window asked for, built on first use after a
    /// change.
    trend: Mutex<Option<Arc<Trend>>>,
    /// The factorisation, with `mf_weight > 0`.
    mf: MfTable,
}

/// The co-occurrence counts `c_ij > 0`, a row per item with both orders
/// of each pair. Every pair's change probes two rows, most of the cost of
/// applying the state's changes, and nearly every probe misses the cache:
/// so items are numbered densely as they first come (a row is found by
/// its number, and an entry is 8 bytes, not 16, so the rows take half the
/// cache lines). A number is kept once its item's row empties.
#[derive(Debug, Default)]
struct Cooccurrences {
    numbers: HashMap<Id, u32>,
    ids: Vec<Id>,
    rows: Vec<HashMap<u32, u32>>,
}

impl Cooccurrences {
    fn number(&mut self, item: Id) -> u32 {
        let Cooccurrences { numbers, ids, rows } = self;
        *numbers.entry(item).or_insert_with(|| {
            ids.push(item);
            rows.push(HashMap::default());
            u32::try_from(ids.len() - 1).expect("more than 2^32 items in co-occurrence")
        })
    }

    /// Adds `diff` to `c_ij` (`i ≠ j`), in both rows.
    fn add(&mut self, i: Id, j: Id, diff: isize) {
        let (i, j) = (self.number(i), self.number(j));
        for (a, b) in [(i, j), (j, i)] {
            let row = &mut self.rows[a as usize];
            let count = row.entry(b).or_default();
            let sum = i64::from(*count) + diff as i64;
            debug_assert!(sum >= 0, "a count below zero");
            *count = u32::try_from(sum).expect("a co-occurrence count out of range");
            if sum == 0 {
                row.remove(&b);
                if row.is_empty() {
                    // Gives the table's memory back.
                    *row = HashMap::default();
                }
            }
        }
    }

    /// `(j, c_ij)` for every `j` co-occurring with `item`, in no order.
    fn row(&self, item: Id) -> impl Iterator<Item = (Id, u64)> + '_ {
        let row = self.numbers.get(&item).map(|&i| &self.rows[i as usize]);
        row.into_iter()
            .flatten()
            .map(|(&j, &c_ij)| (self.ids[j as usize], u64::from(c_ij)))
    }
}

/// Each item's trend over one window, and the largest.
#[derive(Debug)]
struct Trend {
    days: u32,
    of_item: HashMap<Id, u64>,
    max: u64,
}

/// Adds `diff` to `count`; `true` when it leaves zero, which the caller
/// then removes. A count below zero is a retraction of what was never
/// added: consolidated updates of complete times never make one.
fn add(count: &mut i64, diff: isize) -> bool {
    *count += diff as i64;
    debug_assert!(*count >= 0, "a count below zero");
    *count == 0
}

/// Adds `item` to (or removes it from) `user`'s ascending items.
fn set_item(of_user: &mut HashMap<Id, Vec<Id>>, user: Id, item: Id, insert: bool) {
    let items = of_user.entry(user).or_default();
    match (items.binary_search(&item), insert) {
        (Err(at), true) => items.insert(at, item),
        (Ok(at), false) => _ = items.remove(at),
        _ => {}
    }
    if items.is_empty() {
        of_user.remove(&user);
    }
}

impl CfState {
    /// Applies the consolidated changes of one or more complete times. A
    /// record replaced at a time is (−old, +new): retractions go first, so
    /// it ends as the new one whatever the order of the batch. Counts are
    /// added in any order.
    pub fn apply(&mut self, updates: &[(StateUpdate, isize)]) {
        for retractions in [true, false] {
            for (update, diff) in updates {
                if (*diff < 0) == retractions {
                    self.apply_one(update, *diff);
                }
            }
        }
    }

    /// Applies the changes of one or more complete times, not consolidated.
    /// Counts (pairs, items, item days; most of the changes) are added as
    /// they come, every increase before any decrease, so no count passes
    /// through zero on the way and a count that reaches zero stays there.
    /// The other records are consolidated first: a record inserted and
    /// retracted within the changes must cancel. Consolidating the counts
    /// too (a sort of every change) was most of the cost of applying them.
    pub fn apply_changes<'a>(
        &mut self,
        changes: impl Iterator<Item = (&'a StateUpdate, isize)> + Clone,
    ) {
        for increases in [true, false] {
            for (update, diff) in changes.clone() {
                if update.is_count() && (diff > 0) == increases {
                    self.apply_one(update, diff);
                }
            }
        }
        let mut records: Vec<(StateUpdate, isize)> = changes
            .filter(|(update, _)| !update.is_count())
            .map(|(update, diff)| (update.clone(), diff))
            .collect();
        differential_dataflow::consolidation::consolidate(&mut records);
        self.apply(&records);
    }

    /// [`CfState::apply_changes`] of updates as the dataflow gives them,
    /// their times dropped.
    pub fn apply_updates<T>(&mut self, updates: &[(StateUpdate, T, isize)]) {
        self.apply_changes(updates.iter().map(|(update, _, diff)| (update, *diff)));
    }

    fn apply_one(&mut self, update: &StateUpdate, diff: isize) {
        let insert = diff > 0;
        match *update {
            StateUpdate::History(user, ref entry) => {
                let entries = self.history.entry(user).or_default();
                let found = entries.binary_search_by_key(&entry.item, |e| e.item);
                match (found, insert) {
                    (Ok(at), true) => entries[at] = entry.clone(),
                    (Err(at), true) => entries.insert(at, entry.clone()),
                    (Ok(at), false) => _ = entries.remove(at),
                    (Err(_), false) => {}
                }
                if entries.is_empty() {
                    self.history.remove(&user);
                }
            }
            StateUpdate::Pair(i, j) => self.cooccurrences.add(i, j, diff),
            StateUpdate::Item(item) => {
                self.ranking = OnceLock::new();
                if add(self.item_users.entry(item).or_default(), diff) {
                    self.item_users.remove(&item);
                }
            }
            StateUpdate::Seen(user, item) => set_item(&mut self.seen, user, item, insert),
            StateUpdate::Dismissed(user, item) => set_item(&mut self.dismissed, user, item, insert),
            StateUpdate::User(user) => {
                if insert {
                    self.users.insert(user);
                } else {
                    self.users.remove(&user);
                }
            }
            StateUpdate::ItemDay(item, day) => {
                *self.trend.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
                let per_day = self.item_days.entry(item).or_default();
                let users = per_day.entry(day).or_default();
                let was_new = *users == 0;
                let items = self.days.entry(day).or_default();
                if was_new {
                    *items += 1;
                }
                if add(users, diff) {
                    per_day.remove(&day);
                    if per_day.is_empty() {
                        self.item_days.remove(&item);
                    }
                    *items -= 1;
                    if *items == 0 {
                        self.days.remove(&day);
                    }
                }
            }
            StateUpdate::Factors(ref row) => self.mf.apply(row, insert),
        }
    }

    /// The global counts: users with a history, items in one.
    fn totals(&self) -> Totals {
        Totals {
            users: self.history.len() as u64,
            items: self.item_users.len() as u64,
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
            .map(|(&item, per_day)| {
                let users: i64 = per_day.range(first..=last).map(|(_, n)| n).sum();
                (item, users as u64)
            })
            .filter(|(_, users)| *users > 0)
            .collect();
        let max = of_item.values().copied().max().unwrap_or(0);
        let trend = Arc::new(Trend { days, of_item, max });
        *cached = Some(trend.clone());
        trend
    }

    /// The factorisation as the rows sent so far give it.
    pub fn factorisation(&self) -> &MfTable {
        &self.mf
    }

    /// Whether `item` is in anyone's history.
    pub fn has_item(&self, item: Id) -> bool {
        self.item_users.contains_key(&item)
    }

    /// `user`'s history, by item ascending (empty for a user with none).
    pub fn history(&self, user: Id) -> &[HistoryEntry] {
        self.history.get(&user).map_or(&[], Vec::as_slice)
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
        similarity::neighbor_list(
            item,
            self.cooccurrences
                .row(item)
                .filter(|&(_, c_ij)| c_ij >= config.min_support),
            self.count(item),
            |j| self.count(j),
            self.totals(),
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
    /// every user of a pass). With `mf_weight > 0` the list is the
    /// [`recommend::blend`] of the co-occurrence list and the
    /// factorisation's, each of `top_k` or [`BLEND_CANDIDATES`] items,
    /// whichever is more (`popular` as the co-occurrence list was); with
    /// `mf_weight = 1`, the factorisation's list alone.
    pub fn recommendations_with(
        &self,
        user: Id,
        top_k: usize,
        config: &CfConfig,
        neighbors: impl Fn(Id) -> Vec<Neighbor>,
    ) -> Recommendations {
        let w = config.mf_weight;
        if w == 0.0 {
            return self.cooccurrence_recommendations(user, top_k, config, neighbors);
        }
        let candidates = match top_k {
            0 => 0,
            k => k.max(BLEND_CANDIDATES),
        };
        let excluded = self.never_recommended(user, config);
        let mf = self.mf.top_k(
            user,
            if candidates == 0 {
                usize::MAX
            } else {
                candidates
            },
            |item| excluded.binary_search(&item).is_ok(),
        );
        let (cf, popular) = match w < 1.0 {
            true => {
                let list = self.cooccurrence_recommendations(user, candidates, config, neighbors);
                let scored = list.items.iter().map(|s| (s.item, s.score)).collect();
                (scored, list.popular)
            }
            false => (Vec::new(), false),
        };
        let items = match w < 1.0 {
            true => recommend::blend(&cf, &mf, w, top_k),
            false => mf
                .into_iter()
                .take(if top_k == 0 { usize::MAX } else { top_k })
                .map(|(item, score)| recommend::ScoredItem { item, score })
                .collect(),
        };
        Recommendations {
            user,
            items,
            popular,
        }
    }

    /// The items never recommended to `user`, ascending: seen ones (in
    /// discovery mode) and dismissed ones.
    pub fn never_recommended(&self, user: Id, config: &CfConfig) -> Vec<Id> {
        let mut seen: Vec<Id> = match (config.remove_seen, self.seen.get(&user)) {
            (true, Some(items)) => items.to_vec(),
            _ => Vec::new(),
        };
        if let Some(dismissed) = self.dismissed.get(&user) {
            seen.extend(dismissed);
            seen.sort_unstable();
            seen.dedup();
        }
        seen
    }

    /// The co-occurrence list of [`CfState::recommendations_with`], without
    /// the factorisation whatever `mf_weight` says.
    pub fn cooccurrence_recommendations(
        &self,
        user: Id,
        top_k: usize,
        config: &CfConfig,
        neighbors: impl Fn(Id) -> Vec<Neighbor>,
    ) -> Recommendations {
        let seen = self.never_recommended(user, config);
        let mut inputs: Vec<ScoreInput> = seen.iter().map(|&item| ScoreInput::Seen(item)).collect();
        for entry in self.history.get(&user).into_iter().flatten() {
            let i = entry.item;
            let list = neighbors(i);
            if !list.is_empty() {
                inputs.push(ScoreInput::Primary(i, entry.affinity, list));
            }
            let c_ii = self.count(i);
            if !config.remove_seen && c_ii >= config.min_support && c_ii > 0 {
                let similarity = similarity::own_similarity(config, c_ii, self.totals());
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
                recommend::unranked_scores(&inputs),
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
            recommend::rank_popular(self.item_users.iter().map(|(&i, &c)| (i, c as u64)), 0)
        });
        popular_list(user, &seen, ranking, top_k).unwrap_or(Recommendations {
            user,
            items: Vec::new(),
            popular: true,
        })
    }

    /// `c_ii`, 0 for an item in no history.
    fn count(&self, item: Id) -> u64 {
        self.item_users.get(&item).map_or(0, |&c| c as u64)
    }
}
