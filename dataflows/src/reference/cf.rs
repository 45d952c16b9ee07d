//! Reference history, similar items and recommendations: the semantics of
//! [`crate::recommend::collaborative_filtering`] recomputed from scratch over
//! every update with timestamp ≤ `at`, with plain maps and sorts.
//!
//! Written independently of the dataflow's helpers on purpose (only the
//! similarity formulas, [`Metric::similarity`], are shared; they have their
//! own hand-computed tests), but with the same float operations in the same
//! order: day-ascending affinity sums, item-ascending score sums.

use std::collections::{BTreeMap, BTreeSet};

use crate::history::HistoryEntry;
use crate::recommend::{CfConfig, Recommendations, ScoredItem};
use crate::similarity::{Neighbor, SimilarItems, Totals};
use crate::time::DAY_MS;
use crate::{Action, Event, Id, Score};

/// Every output of collaborative filtering at one time, sorted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CfSnapshot {
    /// `(user, entry)` sorted.
    pub history: Vec<(Id, HistoryEntry)>,
    /// Sorted by item.
    pub similar_items: Vec<SimilarItems>,
    /// Sorted by user.
    pub recommendations: Vec<Recommendations>,
}

/// What one user did to one item: net counts per (day, action) and the latest
/// time of each net-present (day, action).
#[derive(Default)]
struct PairState {
    /// (day, action) → (net count, per time_ms net count).
    buckets: BTreeMap<(i64, Action), BTreeMap<i64, isize>>,
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
            *pairs
                .entry((event.user, event.item))
                .or_default()
                .buckets
                .entry((event.day(), event.action))
                .or_default()
                .entry(event.time_ms)
                .or_default() += diff;
        }
    }

    // Per (user, item): latest positive-weight time and day weights.
    let mut users: BTreeSet<Id> = BTreeSet::new();
    let mut candidates: Candidates = BTreeMap::new();
    for (&(user, item), state) in &pairs {
        let mut last_time: Option<i64> = None;
        let mut day_weights: BTreeMap<i64, i64> = BTreeMap::new();
        for (&(day, action), times) in &state.buckets {
            let net: isize = times.values().sum();
            if net <= 0 {
                continue;
            }
            users.insert(user);
            let weight = config.weights.weight(action);
            let latest = times.iter().filter(|(_, n)| **n > 0).map(|(t, _)| *t).max();
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

    let history = history(&candidates, config);
    let similar_items = similar_items(&history, config);
    let recommendations = recommendations(&users, &candidates, &history, &similar_items, config);
    CfSnapshot {
        history: history
            .iter()
            .flat_map(|(&user, entries)| entries.iter().map(move |e| (user, e.clone())))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        similar_items,
        recommendations,
    }
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

/// `c_ij` for all i, j (the diagonal is `c_ii`) and the totals.
fn cooccurrence(history: &BTreeMap<Id, Vec<HistoryEntry>>) -> (BTreeMap<(Id, Id), u64>, Totals) {
    let mut counts: BTreeMap<(Id, Id), u64> = BTreeMap::new();
    for entries in history.values() {
        for a in entries {
            for b in entries {
                *counts.entry((a.item, b.item)).or_default() += 1;
            }
        }
    }
    let items = counts.keys().filter(|(i, j)| i == j).count() as u64;
    let users = history.values().filter(|e| !e.is_empty()).count() as u64;
    (counts, Totals { users, items })
}

fn similar_items(
    history: &BTreeMap<Id, Vec<HistoryEntry>>,
    config: &CfConfig,
) -> Vec<SimilarItems> {
    let (counts, totals) = cooccurrence(history);
    let mut lists: BTreeMap<Id, Vec<Neighbor>> = BTreeMap::new();
    for (&(i, j), &c_ij) in &counts {
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
        .map(|(item, mut neighbors)| {
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
        })
        .collect()
}

fn recommendations(
    users: &BTreeSet<Id>,
    candidates: &Candidates,
    history: &BTreeMap<Id, Vec<HistoryEntry>>,
    similar_items: &[SimilarItems],
    config: &CfConfig,
) -> Vec<Recommendations> {
    let (counts, totals) = cooccurrence(history);
    // The similarity rows used for scoring: the neighbour lists, plus SAR's
    // diagonal when seen items stay.
    let mut rows: BTreeMap<Id, Vec<(Id, f64)>> = BTreeMap::new();
    for list in similar_items {
        let row = rows.entry(list.item).or_default();
        row.extend(list.neighbors.iter().map(|n| (n.item, n.similarity.0)));
    }
    if !config.remove_seen {
        for (&(i, j), &c_ii) in &counts {
            if i == j && c_ii >= config.min_support {
                let s = config.metric.similarity(c_ii, c_ii, c_ii, totals);
                rows.entry(i).or_default().push((i, s));
            }
        }
    }
    let no_items = Vec::new();
    let mut out = Vec::new();
    for &user in users {
        let seen: BTreeSet<Id> = candidates
            .get(&user)
            .unwrap_or(&no_items)
            .iter()
            .map(|c| c.0)
            .collect();
        // j → (i → affinity · similarity), summed below in ascending i.
        let mut terms: BTreeMap<Id, BTreeMap<Id, f64>> = BTreeMap::new();
        for entry in history.get(&user).map(Vec::as_slice).unwrap_or(&[]) {
            for &(j, s) in rows.get(&entry.item).map(Vec::as_slice).unwrap_or(&[]) {
                terms
                    .entry(j)
                    .or_default()
                    .insert(entry.item, entry.affinity.0 * s);
            }
        }
        let mut items: Vec<ScoredItem> = terms
            .into_iter()
            .filter(|(j, _)| !(config.remove_seen && seen.contains(j)))
            .map(|(item, by_i)| {
                let mut score = 0.0;
                for term in by_i.values() {
                    score += term;
                }
                ScoredItem {
                    item,
                    score: Score(score),
                }
            })
            .collect();
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
                .filter(|(i, _)| !(config.remove_seen && seen.contains(i)))
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
