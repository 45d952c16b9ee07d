//! Per-user top-k recommendations, and [`collaborative_filtering`], the entry
//! point wiring history → co-occurrence → similarity → recommendations.
//!
//! The score of item j for user u is SAR's: the user's affinity row times the
//! item-similarity matrix, `score(u,j) = Σ_{i ∈ history(u)} affinity(u,i) ·
//! sim(i,j)`, summed in ascending i inside the per-user reduction. With a
//! cross-occurrence indicator (the Universal Recommender's secondary event),
//! `Σ_{i ∈ indicator_history(u)} affinity(u,i) · llr_x(i,j)` follows. Users
//! with no scored item get the most popular items instead. Semantics,
//! defaults and their reasons: `docs/recommendations.md`.

use serde::{Deserialize, Serialize};

use differential_dataflow::VecCollection;

use super::history::{self, HistoryEntry, UserItem};
use super::similarity::{self, Cooccurrence, Neighbor, SimilarItems};
use super::CfConfig;
use crate::keyed::KeyedSums;
use crate::{Action, Event, EventTime, Id, Score};

/// One recommended item.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ScoredItem {
    pub item: Id,
    pub score: Score,
}

/// A user's recommendations, best first, ties by item id ascending (the
/// stable hash of the item's id string, not the string).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Recommendations {
    pub user: Id,
    pub items: Vec<ScoredItem>,
    /// True when the list is the popularity fallback (score = number of users
    /// with the item in their history).
    pub popular: bool,
}

/// Every output of collaborative filtering.
pub struct CfOutputs<'s, T: EventTime> {
    /// `(user, entry)`: each user's most recent N items with affinities.
    pub history: VecCollection<'s, T, (Id, HistoryEntry)>,
    /// One record per item with at least one neighbour.
    pub similar_items: VecCollection<'s, T, SimilarItems>,
    /// With an indicator: each user's most recent N indicator items.
    pub indicator_history: Option<VecCollection<'s, T, (Id, HistoryEntry)>>,
    /// With an indicator: per primary item j, its top-K indicator items i
    /// by cross-occurrence LLR (j itself may be among them).
    pub cross_similar_items: Option<VecCollection<'s, T, SimilarItems>>,
    /// The personal lists: one record per user with a scored unseen item.
    pub personal: VecCollection<'s, T, Recommendations>,
    /// Every other user with a net-present event gets the popular list,
    /// which is shared rather than copied into each of their records.
    pub fallback: Fallback<'s, T>,
    top_k: usize,
}

/// The popularity fallback, shared by every user without a personal list:
/// their list is the first k items of `ranking` that they have not seen
/// ([`popular_list`]). A change of popularity changes one `ranking` record,
/// not one record per fallback user; a fallback user's record changes only
/// when their own seen items or fallback status do.
pub struct Fallback<'s, T: EventTime> {
    /// `(user, seen)` for each user served the popular list, with their seen
    /// items ascending when `remove_seen`, and their dismissed items.
    pub users: VecCollection<'s, T, (Id, Vec<Id>)>,
    /// The one popular ranking, `(item, users with it in history)` best
    /// first, cut to the longest prefix any fallback user can need (k plus
    /// their number of seen items; all items if k = 0). Absent when no user
    /// falls back.
    pub ranking: VecCollection<'s, T, Vec<(Id, u64)>>,
}

impl<'s, T: EventTime> CfOutputs<'s, T> {
    /// One list per user with a net-present event, when it is non-empty:
    /// the personal lists and the fallback lists resolved per user. A
    /// popularity change re-emits every fallback user's list here; the
    /// pipeline writes [`CfOutputs::personal`] and [`CfOutputs::fallback`]
    /// instead and resolves fallback lists only when it writes them.
    pub fn recommendations(&self) -> VecCollection<'s, T, Recommendations> {
        let top_k = self.top_k;
        let resolved = self
            .fallback
            .users
            .clone()
            .map(|(user, seen)| ((), (user, seen)))
            .join_map(
                self.fallback.ranking.clone().map(|ranking| ((), ranking)),
                move |_, (user, seen), ranking| popular_list(*user, seen, ranking, top_k),
            )
            .flat_map(|list| list);
        self.personal.clone().concat(resolved)
    }
}

/// History, similar items and recommendations from behaviour events.
pub fn collaborative_filtering<'s, T: EventTime>(
    events: VecCollection<'s, T, Event>,
    config: &CfConfig,
) -> CfOutputs<'s, T> {
    let dismissed = dismissed(events.clone());
    let histories = history::histories(events, config);
    let cooccurrence = similarity::cooccurrence(&histories);
    let history = histories.history;
    let indicator_history = histories.indicator_history;
    let similar_items = similarity::similar_items(&cooccurrence, config);
    let cross_similar_items = similarity::cross_similar_items(&cooccurrence, config);
    let self_similarity =
        (!config.remove_seen).then(|| similarity::self_similarity(&cooccurrence, config));
    let indicator = indicator_history.clone().zip(cross_similar_items.clone());
    let (personal, fallback) = recommend(
        history.clone(),
        similar_items.clone(),
        self_similarity,
        indicator,
        histories.user_items,
        histories.users,
        dismissed,
        &cooccurrence,
        config,
    );
    CfOutputs {
        history,
        similar_items,
        indicator_history,
        cross_similar_items,
        personal,
        fallback,
        top_k: config.top_k,
    }
}

/// One value of the per-user scoring reduction. Values reach the reduction
/// sorted, so seen items come first, then primary history items by
/// ascending i, then indicator items by ascending i: the order in which
/// each score is summed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScoreInput {
    /// An item the user has seen: never recommended.
    Seen(Id),
    /// A history item i, `affinity(u,i)`, and a row of `sim(i,j)`.
    Primary(Id, Score, Vec<Neighbor>),
    /// An indicator history item i, its affinity, and a row of `llr(i,j)`.
    Indicator(Id, Score, Vec<Neighbor>),
}

/// `(user, item)` while the user has a net-present `not_interested` event
/// on the item: never recommended to them, whatever the mode (seen items
/// may come back in repeat mode; dismissed ones do not).
pub fn dismissed<'s, T: EventTime>(
    events: VecCollection<'s, T, Event>,
) -> VecCollection<'s, T, (Id, Id)> {
    events
        .filter(|e| e.action == Action::NotInterested)
        .map(|e| (e.user, e.item))
        // Present iff the net count is positive.
        .sums_keyed("CfDismissed", |&pair, count: &isize| {
            (*count > 0).then_some(pair)
        })
}

/// The indicator histories and the cross-similar items they are scored with.
pub type Indicator<'s, T> = (
    VecCollection<'s, T, (Id, HistoryEntry)>,
    VecCollection<'s, T, SimilarItems>,
);

/// Personal lists where the user has a scored unseen item, the shared
/// popularity fallback for the other `users`.
///
/// ```sql
/// SELECT u, j, Σ a.affinity · s.similarity AS score
/// FROM history a JOIN neighbours s ON a.item = s.i   -- plus (i, i, self) if !remove_seen
///                                                    -- plus indicator_history ⋈ cross
/// WHERE j NOT IN seen(u) -- if remove_seen
///   AND j NOT IN dismissed(u) GROUP BY u, j
/// QUALIFY row_number() OVER (PARTITION BY u ORDER BY score DESC, j) <= k
/// ```
///
/// Each history entry joins its item's whole neighbour row, one record per
/// (user, item) instead of one per (user, item, neighbour): a changed row
/// costs one update per user holding the item, not K.
#[allow(clippy::too_many_arguments)]
pub fn recommend<'s, T: EventTime>(
    history: VecCollection<'s, T, (Id, HistoryEntry)>,
    similar_items: VecCollection<'s, T, SimilarItems>,
    self_similarity: Option<VecCollection<'s, T, (Id, Score)>>,
    indicator: Option<Indicator<'s, T>>,
    user_items: VecCollection<'s, T, ((Id, Id), UserItem)>,
    users: VecCollection<'s, T, Id>,
    dismissed: VecCollection<'s, T, (Id, Id)>,
    cooccurrence: &Cooccurrence<'s, T>,
    config: &CfConfig,
) -> (VecCollection<'s, T, Recommendations>, Fallback<'s, T>) {
    let top_k = config.top_k;
    let remove_seen = config.remove_seen;

    let mut rows = similar_items.map(|list| (list.item, list.neighbors));
    if let Some(self_similarity) = self_similarity {
        rows = rows.concat(self_similarity.map(|(i, similarity)| {
            (
                i,
                vec![Neighbor {
                    item: i,
                    similarity,
                }],
            )
        }));
    }
    let mut terms = history
        .map(|(user, entry)| (entry.item, (user, entry.affinity)))
        .join_map(rows, |&i, &(user, affinity), row| {
            (user, ScoreInput::Primary(i, affinity, row.clone()))
        });
    if let Some((indicator_history, cross_similar_items)) = indicator {
        // Cross lists are per primary item j; scoring reads them per
        // indicator item i.
        let cross = cross_similar_items.flat_map(|list| {
            let j = list.item;
            list.neighbors.into_iter().map(move |n| {
                (
                    n.item,
                    Neighbor {
                        item: j,
                        similarity: n.similarity,
                    },
                )
            })
        });
        terms = terms.concat(
            indicator_history
                .map(|(user, entry)| (entry.item, (user, entry.affinity)))
                .join_map(cross, |&i, &(user, affinity), neighbor| {
                    (
                        user,
                        ScoreInput::Indicator(i, affinity, vec![neighbor.clone()]),
                    )
                }),
        );
    }
    // Never recommended: seen items (in discovery mode) and dismissed ones.
    // An item both seen and dismissed is one value of count 2 to the
    // reductions below, which read values, not counts.
    let excluded = if remove_seen {
        user_items
            .map(|((user, item), _)| (user, item))
            .concat(dismissed)
    } else {
        dismissed
    };
    let inputs = terms.concat(
        excluded
            .clone()
            .map(|(user, item)| (user, ScoreInput::Seen(item))),
    );
    let personal = inputs
        .reduce_named("CfScores", move |_user, inputs, out| {
            let inputs = inputs.iter().filter(|(_, r)| *r > 0).map(|(v, _)| *v);
            let items = score_items(inputs, top_k);
            if !items.is_empty() {
                out.push((items, 1));
            }
        })
        .map(|(user, items)| Recommendations {
            user,
            items,
            popular: false,
        });

    let fallback_users = users
        .map(|user| (user, ()))
        .antijoin(personal.clone().map(|r| r.user))
        .map(|(user, ())| user);
    let fallback = popular_fallback(fallback_users, excluded, cooccurrence, config);
    (personal, fallback)
}

/// The top `top_k` (0 = all) of one user's scores from [`ScoreInput`]s in
/// ascending order; each score is `0.0 + term + term …` in that order.
pub(super) fn score_items<'a>(
    inputs: impl IntoIterator<Item = &'a ScoreInput>,
    top_k: usize,
) -> Vec<ScoredItem> {
    best_first(unranked_scores(inputs), top_k)
}

/// [`score_items`] before the ranking, in no order.
pub(super) fn unranked_scores<'a>(
    inputs: impl IntoIterator<Item = &'a ScoreInput>,
) -> Vec<ScoredItem> {
    let inputs = inputs.into_iter();
    // Sorted, as the inputs are.
    let mut seen: Vec<Id> = Vec::new();
    let mut scores: rustc_hash::FxHashMap<Id, f64> = Default::default();
    scores.reserve(inputs.size_hint().0 * 8);
    for input in inputs {
        match input {
            ScoreInput::Seen(item) => seen.push(*item),
            ScoreInput::Primary(_, affinity, row) | ScoreInput::Indicator(_, affinity, row) => {
                for n in row {
                    *scores.entry(n.item).or_insert(0.0) += affinity.0 * n.similarity.0;
                }
            }
        }
    }
    scores
        .into_iter()
        .filter(|(item, _)| seen.binary_search(item).is_err())
        .map(|(item, score)| ScoredItem {
            item,
            score: Score(score),
        })
        .collect()
}

/// The first `top_k` (0 = all) of `items` by score descending, ties by
/// item ascending. Items are distinct, so the order is total and selecting
/// the top k before sorting them gives the full sort's prefix.
fn best_first(mut items: Vec<ScoredItem>, top_k: usize) -> Vec<ScoredItem> {
    let by_rank = |a: &ScoredItem, b: &ScoredItem| b.score.cmp(&a.score).then(a.item.cmp(&b.item));
    if top_k > 0 && items.len() > top_k {
        items.select_nth_unstable_by(top_k, by_rank);
        items.truncate(top_k);
    }
    items.sort_unstable_by(by_rank);
    items
}

/// Popular items for users without a personal list: the top k by number of
/// users with the item in history, ties by id, seen items skipped if
/// `remove_seen`, dismissed ones always.
///
/// Every fallback user reads one global ranking, cut to the longest prefix any
/// of them can need (k plus their number of seen items), so the ranking of the
/// long tail never reaches them. The ranking stays one record: joining it to
/// each user here would re-emit every fallback user's list whenever any
/// popularity changes, the square of the log in a replay whose frontier only
/// moves at the end.
fn popular_fallback<'s, T: EventTime>(
    fallback_users: VecCollection<'s, T, Id>,
    excluded: VecCollection<'s, T, (Id, Id)>,
    cooccurrence: &Cooccurrence<'s, T>,
    config: &CfConfig,
) -> Fallback<'s, T> {
    let top_k = config.top_k;
    let keyed_users = fallback_users.clone().map(|user| (user, ()));
    let fallback_seen = excluded.semijoin(fallback_users.clone());

    let users = keyed_users
        .clone()
        .map(|(user, ())| (user, None))
        .concat(fallback_seen.clone().map(|(user, item)| (user, Some(item))))
        .reduce_named("CfFallbackUsers", |_user, inputs, out| {
            // Sorted: `None` first, then the seen items ascending.
            if inputs.first().is_some_and(|(v, r)| v.is_none() && *r > 0) {
                let seen: Vec<Id> = inputs.iter().filter_map(|(v, _)| **v).collect();
                out.push((seen, 1));
            }
        });

    // The longest prefix needed, 0 meaning all items.
    let prefix_length = users
        .clone()
        .map(|(_, seen)| ((), seen.len() as u64))
        .reduce_named("CfFallbackLength", move |_, lengths, out| {
            let longest = lengths.iter().map(|(l, _)| **l).max().unwrap_or(0);
            let length = if top_k == 0 {
                0
            } else {
                top_k as u64 + longest
            };
            out.push((length, 1));
        });

    let ranking = cooccurrence
        .item_users
        .clone()
        .map(|(item, users)| ((), (item, users)))
        .join_map(prefix_length, |_, &(item, users), &length| {
            ((), (length, item, users))
        })
        .reduce_named("CfPopularRanking", |_, items, out| {
            let length = items.first().map_or(0, |(v, _)| v.0) as usize;
            let ranked = rank_popular(items.iter().map(|(v, _)| (v.1, v.2)), length);
            out.push((ranked, 1));
        })
        .map(|((), ranked)| ranked);

    Fallback { users, ranking }
}

/// The fallback list of `user`: the first `top_k` (0 = all) items of
/// `ranking` not in `seen` (ascending), scored by their popularity; `None`
/// if that leaves nothing.
pub fn popular_list(
    user: Id,
    seen: &[Id],
    ranking: &[(Id, u64)],
    top_k: usize,
) -> Option<Recommendations> {
    let items = pick_popular(ranking, seen, top_k);
    (!items.is_empty()).then_some(Recommendations {
        user,
        items,
        popular: true,
    })
}

/// Items by (users desc, id asc), the first `length` (0 = all).
pub(super) fn rank_popular(
    items: impl IntoIterator<Item = (Id, u64)>,
    length: usize,
) -> Vec<(Id, u64)> {
    let mut ranked: Vec<(Id, u64)> = items.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    if length > 0 {
        ranked.truncate(length);
    }
    ranked
}

/// Scored items (every one a user has) re-ranked with the popularity
/// trend: `score / max |score| + β · trend(j) / max trend`, best first,
/// ties by item ascending; the first `top_k` (0 = all).
pub(super) fn with_trend(
    mut items: Vec<ScoredItem>,
    (trend, max_trend): (impl Fn(Id) -> u64, u64),
    beta: f64,
    top_k: usize,
) -> Vec<ScoredItem> {
    let largest = items
        .iter()
        .map(|scored| scored.score.0.abs())
        .fold(0.0, f64::max);
    let scale = if largest > 0.0 { largest } else { 1.0 };
    for scored in &mut items {
        let lift = if max_trend > 0 {
            beta * (trend(scored.item) as f64 / max_trend as f64)
        } else {
            0.0
        };
        scored.score = Score(scored.score.0 / scale + lift);
    }
    best_first(items, top_k)
}

/// The first `top_k` (0 = all) ranked items not in `seen` (sorted).
fn pick_popular(ranking: &[(Id, u64)], seen: &[Id], top_k: usize) -> Vec<ScoredItem> {
    let limit = if top_k == 0 { usize::MAX } else { top_k };
    ranking
        .iter()
        .filter(|(item, _)| seen.binary_search(item).is_err())
        .take(limit)
        .map(|&(item, users)| ScoredItem {
            item,
            score: Score(users as f64),
        })
        .collect()
}

/// Candidates each side of a blend brings, at least: an item ranked low by
/// one model and high by the other can still make the top k.
pub const BLEND_CANDIDATES: usize = 100;

/// The first `top_k` (0 = all) of two scored lists blended (`[recommend]
/// mf_weight`): each list's scores min-max normalised to [0, 1] (1 when
/// they are all equal), then `(1 − w) · cf + w · mf`, an item missing from
/// a list counting 0 there; best first, ties by item id.
pub fn blend(
    cf: &[(Id, Score)],
    mf: &[(Id, Score)],
    mf_weight: f64,
    top_k: usize,
) -> Vec<ScoredItem> {
    fn normalised(list: &[(Id, Score)]) -> impl Iterator<Item = (Id, f64)> + '_ {
        let min = list.iter().map(|(_, s)| s.0).fold(f64::INFINITY, f64::min);
        let max = list
            .iter()
            .map(|(_, s)| s.0)
            .fold(f64::NEG_INFINITY, f64::max);
        list.iter().map(move |(item, s)| match max > min {
            true => (*item, (s.0 - min) / (max - min)),
            false => (*item, 1.0),
        })
    }
    let mut blended: rustc_hash::FxHashMap<Id, f64> = Default::default();
    blended.reserve(cf.len() + mf.len());
    for (item, x) in normalised(cf) {
        *blended.entry(item).or_default() += (1.0 - mf_weight) * x;
    }
    for (item, x) in normalised(mf) {
        *blended.entry(item).or_default() += mf_weight * x;
    }
    let items: Vec<ScoredItem> = blended
        .into_iter()
        .map(|(item, score)| ScoredItem {
            item,
            score: Score(score),
        })
        .collect();
    best_first(items, top_k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(list: Vec<ScoredItem>) -> Vec<Id> {
        list.into_iter().map(|s| s.item).collect()
    }

    #[test]
    fn a_blend_normalises_each_list_then_weighs_them() {
        let cf = [(1, Score(10.0)), (2, Score(6.0)), (3, Score(2.0))];
        let mf = [(3, Score(0.5)), (4, Score(-1.5))];
        // cf: 1 → 1, 2 → 0.5, 3 → 0; mf: 3 → 1, 4 → 0.
        // w = 0.75: 1 → 0.25, 2 → 0.125, 3 → 0.75, 4 → 0.
        assert_eq!(items(blend(&cf, &mf, 0.75, 3)), vec![3, 1, 2]);
        // w = 0.25: 1 → 0.75, 2 → 0.375, 3 → 0.25; 4 ties 0 with nothing.
        assert_eq!(items(blend(&cf, &mf, 0.25, 4)), vec![1, 2, 3, 4]);
        // One score, or all equal: 1 each.
        assert_eq!(
            items(blend(&[(9, Score(3.0))], &[(8, Score(1.0))], 0.5, 2)),
            vec![8, 9]
        );
    }
}
