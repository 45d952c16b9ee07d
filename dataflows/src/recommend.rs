//! Per-user top-k recommendations, and [`collaborative_filtering`], the entry
//! point wiring history → co-occurrence → similarity → recommendations.
//!
//! The score of item j for user u is SAR's: the user's affinity row times the
//! item-similarity matrix, `score(u,j) = Σ_{i ∈ history(u)} affinity(u,i) ·
//! sim(i,j)`, summed in ascending i inside the per-user reduction. Users with
//! no scored item get the most popular items instead. Semantics, defaults and
//! their reasons: `docs/recommendations.md`.

use serde::{Deserialize, Serialize};

use differential_dataflow::VecCollection;

use crate::history::{self, ActionWeights, HistoryEntry, UserItem};
use crate::similarity::{self, Cooccurrence, Metric, SimilarItems};
use crate::{Event, EventTime, Id, Names, Score};

/// The `[recommend]` table of the pipeline config.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CfConfig {
    /// History length N: the most recent distinct items kept per user; 0 =
    /// all (SAR). Default 20.
    pub history_length: usize,
    /// Integer weight per action in the affinity; items enter the history
    /// through actions of positive weight only. Default view 1, click 1,
    /// cart 3, favourite 2, purchase 5, rating 2, others 0.
    pub weights: ActionWeights,
    /// Half-life H in days of the affinity decay `2^((day − D)/H)`, D the day
    /// of the user's latest history item; absent = no decay (integer sums).
    /// Default absent.
    pub decay_half_life_days: Option<f64>,
    /// Similarity metric. Default `jaccard`.
    pub metric: Metric,
    /// Pairs co-occurring for fewer users than this are dropped. Default 1.
    pub min_support: u64,
    /// K: neighbours kept per item (similar items, and scoring); 0 = all.
    /// Default 50.
    pub neighbors: usize,
    /// k: items recommended per user; 0 = all scored items. Default 10.
    pub top_k: usize,
    /// Leave out items the user has seen (any candidate item, not only the
    /// last N). Default true.
    pub remove_seen: bool,
}

impl Default for CfConfig {
    fn default() -> Self {
        CfConfig {
            history_length: 20,
            weights: ActionWeights::default(),
            decay_half_life_days: None,
            metric: Metric::Jaccard,
            min_support: 1,
            neighbors: 50,
            top_k: 10,
            remove_seen: true,
        }
    }
}

/// One recommended item.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ScoredItem {
    pub item: Id,
    pub score: Score,
}

/// A user's recommendations, best first, ties by item id ascending.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Recommendations {
    pub user: Id,
    pub items: Vec<ScoredItem>,
    /// True when the list is the popularity fallback (score = number of users
    /// with the item in their history).
    pub popular: bool,
}

impl Recommendations {
    /// The `recommendations.jsonl` line: `{"user", "items": [{"item", "score"}]}`.
    pub fn to_json(&self, names: &dyn Names) -> serde_json::Value {
        let items: Vec<serde_json::Value> = self
            .items
            .iter()
            .map(|s| serde_json::json!({"item": names.item(s.item), "score": s.score.0}))
            .collect();
        serde_json::json!({"user": names.user(self.user), "items": items})
    }
}

/// Every output of collaborative filtering.
pub struct CfOutputs<'s, T: EventTime> {
    /// `(user, entry)`: each user's most recent N items with affinities.
    pub history: VecCollection<'s, T, (Id, HistoryEntry)>,
    /// One record per item with at least one neighbour.
    pub similar_items: VecCollection<'s, T, SimilarItems>,
    /// One record per user with a net-present event, when their list is non-empty.
    pub recommendations: VecCollection<'s, T, Recommendations>,
}

/// History, similar items and recommendations from behaviour events.
pub fn collaborative_filtering<'s, T: EventTime>(
    events: VecCollection<'s, T, Event>,
    config: &CfConfig,
) -> CfOutputs<'s, T> {
    let interactions = history::interactions(events, config);
    let history = history::history(interactions.user_items.clone(), config);
    let cooccurrence = similarity::cooccurrence(history.clone());
    let similar_items = similarity::similar_items(&cooccurrence, config);
    let self_similarity =
        (!config.remove_seen).then(|| similarity::self_similarity(&cooccurrence, config));
    let recommendations = recommend(
        history.clone(),
        similar_items.clone(),
        self_similarity,
        interactions.user_items,
        interactions.users,
        &cooccurrence,
        config,
    );
    CfOutputs {
        history,
        similar_items,
        recommendations,
    }
}

/// One value of the per-user scoring reduction, keyed by the scored item j:
/// `None` marks j as seen; `Some((i, affinity(u,i), sim(i,j)))` is a term.
type ScoreInput = (Id, Option<(Id, Score, Score)>);

/// Personal lists where the user has a scored unseen item, the popularity
/// fallback for the other `users`.
///
/// ```sql
/// SELECT u, j, Σ a.affinity · s.similarity AS score
/// FROM history a JOIN neighbours s ON a.item = s.i   -- plus (i, i, self) if !remove_seen
/// WHERE j NOT IN seen(u) GROUP BY u, j
/// QUALIFY row_number() OVER (PARTITION BY u ORDER BY score DESC, j) <= k
/// ```
pub fn recommend<'s, T: EventTime>(
    history: VecCollection<'s, T, (Id, HistoryEntry)>,
    similar_items: VecCollection<'s, T, SimilarItems>,
    self_similarity: Option<VecCollection<'s, T, (Id, Score)>>,
    user_items: VecCollection<'s, T, ((Id, Id), UserItem)>,
    users: VecCollection<'s, T, Id>,
    cooccurrence: &Cooccurrence<'s, T>,
    config: &CfConfig,
) -> VecCollection<'s, T, Recommendations> {
    let top_k = config.top_k;
    let remove_seen = config.remove_seen;

    let mut neighbors = similar_items.flat_map(|list| {
        let item = list.item;
        list.neighbors
            .into_iter()
            .map(move |n| (item, (n.item, n.similarity)))
    });
    if let Some(self_similarity) = self_similarity {
        neighbors = neighbors.concat(self_similarity.map(|(i, s)| (i, (i, s))));
    }
    let terms = history
        .map(|(user, entry)| (entry.item, (user, entry.affinity)))
        .join_map(neighbors, |&i, &(user, affinity), &(j, similarity)| {
            (user, (j, Some((i, affinity, similarity))))
        });
    let seen = user_items.map(|((user, item), _)| (user, item));
    let inputs: VecCollection<'s, T, (Id, ScoreInput)> = if remove_seen {
        terms.concat(seen.clone().map(|(user, item)| (user, (item, None))))
    } else {
        terms
    };
    let personal = inputs
        .reduce_named("CfScores", move |_user, inputs, out| {
            let inputs = inputs.iter().filter(|(_, r)| *r > 0).map(|(v, _)| **v);
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
    let fallback = popular_fallback(fallback_users, seen, cooccurrence, config);
    personal.concat(fallback)
}

/// The top `top_k` (0 = all) of one user's scores from [`ScoreInput`]s in
/// ascending order (by j, seen marker first, then by i). Shared by the
/// dataflow and the reference so both sum in the same order.
pub fn score_items(inputs: impl IntoIterator<Item = ScoreInput>, top_k: usize) -> Vec<ScoredItem> {
    let mut items: Vec<ScoredItem> = Vec::new();
    let mut current: Option<(Id, bool, f64)> = None;
    let flush = |current: Option<(Id, bool, f64)>, items: &mut Vec<ScoredItem>| {
        if let Some((item, false, score)) = current {
            items.push(ScoredItem {
                item,
                score: Score(score),
            });
        }
    };
    for (j, term) in inputs {
        if current.map(|c| c.0) != Some(j) {
            flush(current.take(), &mut items);
            current = Some((j, false, 0.0));
        }
        if let Some(c) = current.as_mut() {
            match term {
                None => c.1 = true,
                Some((_, affinity, similarity)) => c.2 += affinity.0 * similarity.0,
            }
        }
    }
    flush(current, &mut items);
    items.sort_by(|a, b| b.score.cmp(&a.score).then(a.item.cmp(&b.item)));
    if top_k > 0 {
        items.truncate(top_k);
    }
    items
}

/// Popular items for users without a personal list: the top k by number of
/// users with the item in history, ties by id, seen items skipped if
/// `remove_seen`.
///
/// Every fallback user reads one global ranking, cut to the longest prefix any
/// of them can need (k plus their number of seen items), so the ranking of the
/// long tail never reaches them.
fn popular_fallback<'s, T: EventTime>(
    fallback_users: VecCollection<'s, T, Id>,
    seen: VecCollection<'s, T, (Id, Id)>,
    cooccurrence: &Cooccurrence<'s, T>,
    config: &CfConfig,
) -> VecCollection<'s, T, Recommendations> {
    let top_k = config.top_k;
    let remove_seen = config.remove_seen;
    let keyed_users = fallback_users.clone().map(|user| (user, ()));
    let fallback_seen = if remove_seen {
        seen.semijoin(fallback_users.clone())
    } else {
        seen.filter(|_| false)
    };

    // The longest prefix needed, 0 meaning all items.
    let prefix_length = keyed_users
        .clone()
        .map(|_| ((), 0u64))
        .concat(
            fallback_seen
                .clone()
                .map(|(user, _)| user)
                .count()
                .map(|(_, seen)| ((), seen as u64)),
        )
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
        });

    keyed_users
        .map(|(user, ())| ((), user))
        .join_map(ranking, |_, &user, ranking| {
            (user, (0u8, Some(ranking.clone()), 0))
        })
        .concat(fallback_seen.map(|(user, item)| (user, (1u8, None, item))))
        .reduce_named("CfFallback", move |&user, inputs, out| {
            let ranking = inputs.iter().find_map(|(v, _)| v.1.as_ref());
            let seen = inputs.iter().filter(|(v, _)| v.0 == 1).map(|(v, _)| v.2);
            if let Some(ranking) = ranking {
                let items = pick_popular(ranking, seen.collect(), top_k);
                if !items.is_empty() {
                    out.push((
                        Recommendations {
                            user,
                            items,
                            popular: true,
                        },
                        1,
                    ));
                }
            }
        })
        .map(|(_, recommendations)| recommendations)
}

/// Items by (users desc, id asc), the first `length` (0 = all).
pub fn rank_popular(items: impl IntoIterator<Item = (Id, u64)>, length: usize) -> Vec<(Id, u64)> {
    let mut ranked: Vec<(Id, u64)> = items.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    if length > 0 {
        ranked.truncate(length);
    }
    ranked
}

/// The first `top_k` (0 = all) ranked items not in `seen` (sorted).
pub fn pick_popular(ranking: &[(Id, u64)], seen: Vec<Id>, top_k: usize) -> Vec<ScoredItem> {
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
