//! Reference history, similar items and recommendations: the semantics of
//! [`crate::cf::collaborative_filtering`] recomputed from scratch over
//! every update with timestamp ≤ `at`, with plain maps and sorts.
//!
//! Written independently of the dataflow's helpers on purpose (only the
//! similarity formulas, [`crate::cf::Metric::similarity`] and its log-likelihood ratio,
//! are shared; they have their own hand-computed tests), but with the same
//! float operations in the same order: day-ascending affinity sums, score
//! sums over primary then indicator items, each item-ascending.

use std::collections::{BTreeMap, BTreeSet};

use crate::cf::history::HistoryEntry;
use crate::cf::recommend::{Recommendations, ScoredItem};
use crate::cf::similarity::{Neighbor, SimilarItems, Totals};
use crate::cf::CfConfig;
use crate::time::DAY_MS;
use crate::{Action, Event, Id, Score};

/// Every output of collaborative filtering at one time, sorted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CfSnapshot {
    /// `(user, entry)` sorted.
    pub history: Vec<(Id, HistoryEntry)>,
    /// Sorted by item.
    pub similar_items: Vec<SimilarItems>,
    /// With an indicator: `(user, entry)` of indicator histories, sorted.
    pub indicator_history: Vec<(Id, HistoryEntry)>,
    /// With an indicator: per primary item, its indicator items, sorted by item.
    pub cross_similar_items: Vec<SimilarItems>,
    /// Sorted by user.
    pub recommendations: Vec<Recommendations>,
}

/// What one user did to one item: net counts per (day, action) and the latest
/// time of each (day, action)'s inserted records, and net units bought and
/// cancelled.
#[derive(Default)]
struct PairState {
    /// (day, action) → (net count, latest time of an inserted record).
    buckets: BTreeMap<(i64, Action), (isize, Option<i64>)>,
    /// Σ diff · quantity of purchases minus that of cancellations: the user
    /// owns the item iff > 0.
    owned_units: i64,
}

/// Per user: `(item, last_time_ms, day weights ascending)` of each candidate item.
type Candidates = BTreeMap<Id, Vec<(Id, i64, Vec<(i64, i64)>)>>;

/// Recomputes every output from `updates` with timestamp ≤ `at`.
pub fn collaborative_filtering(
    updates: &[(Event, u64, isize)],
    at: u64,
    config: &CfConfig,
) -> CfSnapshot {
    let mut pairs: BTreeMap<(Id, Id), PairState> = BTreeMap::new();
    for (event, time, diff) in updates {
        if *time <= at {
            let state = pairs.entry((event.user, event.item)).or_default();
            let (net, latest) = state
                .buckets
                // Days matter only to decay (see `cf::history`).
                .entry((day_of_bucket(event, config), event.action))
                .or_default();
            *net += diff;
            // A retraction takes back a count, never a time (see `TimeSpan`).
            if *diff > 0 {
                *latest = (*latest).max(Some(event.time_ms));
            }
            state.owned_units += match event.action {
                Action::Purchase => *diff as i64 * event.quantity,
                Action::Cancellation => -(*diff as i64) * event.quantity,
                _ => 0,
            };
        }
    }

    let users: BTreeSet<Id> = pairs
        .iter()
        .filter(|(_, state)| state.buckets.values().any(|(net, _)| *net > 0))
        .map(|(&(user, _), _)| user)
        .collect();
    let indicator_history = match config.indicator_action {
        Some(indicator) => history(&candidates(&pairs, Some(indicator), config), config),
        None => BTreeMap::new(),
    };
    let candidates = candidates(&pairs, config.primary_action, config);
    let history = history(&candidates, config);
    let (counts, totals) = cooccurrence(&history, &indicator_history);
    let similar_items = similar_items(&counts, totals, config);
    let cross_similar_items = if config.indicator_action.is_some() {
        cross_similar_items(&history, &indicator_history, &counts, totals, config)
    } else {
        Vec::new()
    };
    let trend = trend(updates, at, config);
    // A user's dismissed items: a net-present `not_interested` on any day.
    let mut dismissed: BTreeMap<Id, BTreeSet<Id>> = BTreeMap::new();
    for (&(user, item), state) in &pairs {
        let net: isize = state
            .buckets
            .iter()
            .filter(|((_, action), _)| *action == Action::NotInterested)
            .map(|(_, (net, _))| net)
            .sum();
        if net > 0 {
            dismissed.entry(user).or_default().insert(item);
        }
    }
    let recommendations = recommendations(
        (&users, &dismissed),
        &trend,
        &candidates,
        (&history, &similar_items),
        (&indicator_history, &cross_similar_items),
        (&counts, totals),
        config,
    );
    CfSnapshot {
        history: flatten(&history),
        similar_items,
        indicator_history: flatten(&indicator_history),
        cross_similar_items,
        recommendations,
    }
}

/// Per item, the sum over the last `trend_days` days up to the latest day
/// with a net-present counted event of the users with such an event on the
/// item that day (events of positive weight, of the primary action if set).
fn trend(updates: &[(Event, u64, isize)], at: u64, config: &CfConfig) -> BTreeMap<Id, u64> {
    if config.trend_weight <= 0.0 {
        return BTreeMap::new();
    }
    let mut net: BTreeMap<(Id, i64, Id), isize> = BTreeMap::new();
    for (event, time, diff) in updates {
        let counted = config.weights.weight(event.action) > 0
            && config.primary_action.is_none_or(|a| a == event.action);
        if *time <= at && counted {
            *net.entry((event.item, event.day(), event.user))
                .or_default() += diff;
        }
    }
    let present: Vec<(Id, i64)> = net
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|((item, day, _), _)| (item, day))
        .collect();
    let Some(last) = present.iter().map(|(_, day)| *day).max() else {
        return BTreeMap::new();
    };
    let first = last - i64::from(config.trend_days) + 1;
    let mut trend = BTreeMap::new();
    for (item, day) in present {
        if day >= first {
            *trend.entry(item).or_default() += 1;
        }
    }
    trend
}

/// The event's day when the affinity decays, else 0: one bucket per (user,
/// item, action) for all time.
fn day_of_bucket(event: &Event, config: &CfConfig) -> i64 {
    if config.decay_half_life_days.is_some() {
        event.day()
    } else {
        0
    }
}

fn flatten(history: &BTreeMap<Id, Vec<HistoryEntry>>) -> Vec<(Id, HistoryEntry)> {
    history
        .iter()
        .flat_map(|(&user, entries)| entries.iter().map(move |e| (user, e.clone())))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Per (user, item): latest positive-weight time and day weights, from the
/// buckets of `action` only if given; purchases only of items still owned.
fn candidates(
    pairs: &BTreeMap<(Id, Id), PairState>,
    action: Option<Action>,
    config: &CfConfig,
) -> Candidates {
    let mut candidates: Candidates = BTreeMap::new();
    for (&(user, item), state) in pairs {
        let mut last_time: Option<i64> = None;
        let mut day_weights: BTreeMap<i64, i64> = BTreeMap::new();
        for (&(day, bucket_action), &(net, latest)) in &state.buckets {
            let unowned = bucket_action == Action::Purchase && state.owned_units <= 0;
            if net <= 0 || unowned || action.is_some_and(|a| a != bucket_action) {
                continue;
            }
            let weight = config.weights.weight(bucket_action);
            if weight > 0 {
                last_time = last_time.max(latest);
            }
            *day_weights.entry(day).or_default() += weight * net as i64;
        }
        if let Some(last_time) = last_time {
            let day_weights = day_weights.into_iter().filter(|(_, w)| *w != 0).collect();
            candidates
                .entry(user)
                .or_default()
                .push((item, last_time, day_weights));
        }
    }
    candidates
}

fn history(candidates: &Candidates, config: &CfConfig) -> BTreeMap<Id, Vec<HistoryEntry>> {
    let mut history = BTreeMap::new();
    for (&user, items) in candidates {
        let mut items = items.clone();
        items.sort_by_key(|(item, last_time, _)| (std::cmp::Reverse(*last_time), *item));
        if config.history_length > 0 {
            items.truncate(config.history_length);
        }
        let latest_day = items[0].1.div_euclid(DAY_MS as i64);
        let entries = items
            .into_iter()
            .map(|(item, last_time_ms, day_weights)| {
                let affinity = match config.decay_half_life_days {
                    None => day_weights.iter().map(|(_, w)| w).sum::<i64>() as f64,
                    Some(h) => {
                        let mut sum = 0.0;
                        for (day, w) in day_weights {
                            sum += w as f64 * ((day - latest_day) as f64 / h).exp2();
                        }
                        sum
                    }
                };
                HistoryEntry {
                    item,
                    last_time_ms,
                    affinity: Score(affinity),
                }
            })
            .collect();
        history.insert(user, entries);
    }
    history
}

/// `c_ij` for all i, j (the diagonal is `c_ii`) and the totals: users with
/// a primary or an indicator history, items with a primary history.
fn cooccurrence(
    history: &BTreeMap<Id, Vec<HistoryEntry>>,
    indicator_history: &BTreeMap<Id, Vec<HistoryEntry>>,
) -> (BTreeMap<(Id, Id), u64>, Totals) {
    let mut counts: BTreeMap<(Id, Id), u64> = BTreeMap::new();
    for entries in history.values() {
        for a in entries {
            for b in entries {
                *counts.entry((a.item, b.item)).or_default() += 1;
            }
        }
    }
    let items = counts.keys().filter(|(i, j)| i == j).count() as u64;
    let users = history
        .iter()
        .chain(indicator_history)
        .filter(|(_, e)| !e.is_empty())
        .map(|(u, _)| *u)
        .collect::<BTreeSet<_>>()
        .len() as u64;
    (counts, Totals { users, items })
}

/// Sorts by similarity descending, item ascending, and keeps the first K.
fn top(item: Id, mut neighbors: Vec<Neighbor>, config: &CfConfig) -> SimilarItems {
    neighbors.sort_by(|a, b| {
        b.similarity
            .0
            .total_cmp(&a.similarity.0)
            .then(a.item.cmp(&b.item))
    });
    if config.neighbors > 0 {
        neighbors.truncate(config.neighbors);
    }
    SimilarItems { item, neighbors }
}

fn similar_items(
    counts: &BTreeMap<(Id, Id), u64>,
    totals: Totals,
    config: &CfConfig,
) -> Vec<SimilarItems> {
    let mut lists: BTreeMap<Id, Vec<Neighbor>> = BTreeMap::new();
    for (&(i, j), &c_ij) in counts {
        if i != j && c_ij >= config.min_support {
            let similarity =
                config
                    .metric
                    .similarity(c_ij, counts[&(i, i)], counts[&(j, j)], totals);
            lists.entry(i).or_default().push(Neighbor {
                item: j,
                similarity: Score(similarity),
            });
        }
    }
    lists
        .into_iter()
        .map(|(item, neighbors)| top(item, neighbors, config))
        .collect()
}

/// Per primary item j: indicator items i by `llr(x_ij, c_jj, b_i, n_users)`,
/// where x_ij counts users with j in their history and i in their indicator
/// history, and b_i users with i in their indicator history.
fn cross_similar_items(
    history: &BTreeMap<Id, Vec<HistoryEntry>>,
    indicator_history: &BTreeMap<Id, Vec<HistoryEntry>>,
    counts: &BTreeMap<(Id, Id), u64>,
    totals: Totals,
    config: &CfConfig,
) -> Vec<SimilarItems> {
    let mut cross: BTreeMap<(Id, Id), u64> = BTreeMap::new();
    let mut indicator_counts: BTreeMap<Id, u64> = BTreeMap::new();
    for (user, indicator_entries) in indicator_history {
        for b in indicator_entries {
            *indicator_counts.entry(b.item).or_default() += 1;
            for a in history.get(user).map(Vec::as_slice).unwrap_or(&[]) {
                *cross.entry((a.item, b.item)).or_default() += 1;
            }
        }
    }
    let mut lists: BTreeMap<Id, Vec<Neighbor>> = BTreeMap::new();
    for (&(j, i), &x_ij) in &cross {
        if x_ij >= config.min_support {
            let llr = crate::cf::similarity::log_likelihood_ratio(
                x_ij as i64,
                counts[&(j, j)] as i64 - x_ij as i64,
                indicator_counts[&i] as i64 - x_ij as i64,
                totals.users as i64 - counts[&(j, j)] as i64 - indicator_counts[&i] as i64
                    + x_ij as i64,
            );
            lists.entry(j).or_default().push(Neighbor {
                item: i,
                similarity: Score(llr),
            });
        }
    }
    lists
        .into_iter()
        .map(|(item, neighbors)| top(item, neighbors, config))
        .collect()
}

/// A user's history and the similarity lists it is scored with.
type Indicator<'a> = (&'a BTreeMap<Id, Vec<HistoryEntry>>, &'a [SimilarItems]);

/// Each user with a net-present event, and the items they dismissed.
type Users<'a> = (&'a BTreeSet<Id>, &'a BTreeMap<Id, BTreeSet<Id>>);

fn recommendations(
    (users, dismissed): Users<'_>,
    trend: &BTreeMap<Id, u64>,
    candidates: &Candidates,
    (history, similar_items): Indicator<'_>,
    (indicator_history, cross_similar_items): Indicator<'_>,
    (counts, totals): (&BTreeMap<(Id, Id), u64>, Totals),
    config: &CfConfig,
) -> Vec<Recommendations> {
    // The similarity rows used for scoring: the neighbour lists, plus SAR's
    // diagonal when seen items stay.
    let mut rows: BTreeMap<Id, Vec<(Id, f64)>> = BTreeMap::new();
    for list in similar_items {
        let row = rows.entry(list.item).or_default();
        row.extend(list.neighbors.iter().map(|n| (n.item, n.similarity.0)));
    }
    if !config.remove_seen {
        for (&(i, j), &c_ii) in counts {
            if i == j && c_ii >= config.min_support {
                let s = config.repeat_weight * config.metric.similarity(c_ii, c_ii, c_ii, totals);
                rows.entry(i).or_default().push((i, s));
            }
        }
    }
    // Cross rows, per indicator item i: the primary items j whose lists hold i.
    let mut cross_rows: BTreeMap<Id, Vec<(Id, f64)>> = BTreeMap::new();
    for list in cross_similar_items {
        for n in &list.neighbors {
            cross_rows
                .entry(n.item)
                .or_default()
                .push((list.item, n.similarity.0));
        }
    }
    let no_items = Vec::new();
    let mut out = Vec::new();
    for &user in users {
        // Never recommended: seen items in discovery mode, dismissed ones.
        let mut excluded: BTreeSet<Id> = match config.remove_seen {
            true => candidates
                .get(&user)
                .unwrap_or(&no_items)
                .iter()
                .map(|c| c.0)
                .collect(),
            false => BTreeSet::new(),
        };
        excluded.extend(dismissed.get(&user).into_iter().flatten());
        // j → (i → affinity · similarity) for primary, then for indicator
        // items: summed below in that order, each in ascending i.
        type Terms = (BTreeMap<Id, f64>, BTreeMap<Id, f64>);
        let mut terms: BTreeMap<Id, Terms> = BTreeMap::new();
        for entry in history.get(&user).map(Vec::as_slice).unwrap_or(&[]) {
            for &(j, s) in rows.get(&entry.item).map(Vec::as_slice).unwrap_or(&[]) {
                terms
                    .entry(j)
                    .or_default()
                    .0
                    .insert(entry.item, entry.affinity.0 * s);
            }
        }
        for entry in indicator_history
            .get(&user)
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            for &(j, s) in cross_rows
                .get(&entry.item)
                .map(Vec::as_slice)
                .unwrap_or(&[])
            {
                terms
                    .entry(j)
                    .or_default()
                    .1
                    .insert(entry.item, entry.affinity.0 * s);
            }
        }
        let mut items: Vec<ScoredItem> = terms
            .into_iter()
            .filter(|(j, _)| !excluded.contains(j))
            .map(|(item, (primary, indicator))| {
                let mut score = 0.0;
                for term in primary.values().chain(indicator.values()) {
                    score += term;
                }
                ScoredItem {
                    item,
                    score: Score(score),
                }
            })
            .collect();
        if config.trend_weight > 0.0 {
            let largest = items.iter().map(|s| s.score.0.abs()).fold(0.0, f64::max);
            let scale = if largest > 0.0 { largest } else { 1.0 };
            let max_trend = trend.values().copied().max().unwrap_or(0);
            for scored in &mut items {
                let users = trend.get(&scored.item).copied().unwrap_or(0);
                let lift = if max_trend > 0 {
                    config.trend_weight * (users as f64 / max_trend as f64)
                } else {
                    0.0
                };
                scored.score = Score(scored.score.0 / scale + lift);
            }
        }
        items.sort_by(|a, b| b.score.0.total_cmp(&a.score.0).then(a.item.cmp(&b.item)));
        if config.top_k > 0 {
            items.truncate(config.top_k);
        }
        let mut popular = false;
        if items.is_empty() {
            popular = true;
            let mut ranking: Vec<(Id, u64)> = counts
                .iter()
                .filter(|((i, j), _)| i == j)
                .map(|(&(i, _), &c)| (i, c))
                .collect();
            ranking.sort_by_key(|&(i, c)| (std::cmp::Reverse(c), i));
            items = ranking
                .into_iter()
                .filter(|(i, _)| !excluded.contains(i))
                .take(if config.top_k == 0 {
                    usize::MAX
                } else {
                    config.top_k
                })
                .map(|(item, c)| ScoredItem {
                    item,
                    score: Score(c as f64),
                })
                .collect();
        }
        if !items.is_empty() {
            out.push(Recommendations {
                user,
                items,
                popular,
            });
        }
    }
    out
}
