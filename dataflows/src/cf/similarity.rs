//! Item co-occurrence and item-item similarity: the item-based half of
//! collaborative filtering, computed from users' histories
//! ([`super::history`]).
//!
//! Co-occurrence counts users: `c_ij` is the number of users with both i and j
//! in their history, `c_ii` the number with i. The similarity metrics are
//! functions of `(c_ij, c_ii, c_jj)` and, for some, of the number of users or
//! items ([`Totals`]); they are evaluated inside the top-K reduction from
//! those integers, so the incremental and the from-scratch result agree bit
//! for bit. Formulas and sources: `docs/recommendations.md`.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use differential_dataflow::VecCollection;

use super::history::Histories;
use super::{CfConfig, Metric};
use crate::keyed::KeyedSums;
use crate::{EventTime, Id, Score};

impl Metric {
    /// Every metric, in declaration order.
    pub const ALL: [Metric; 8] = [
        Metric::Cooccurrence,
        Metric::Jaccard,
        Metric::Lift,
        Metric::Cosine,
        Metric::InclusionIndex,
        Metric::MutualInformation,
        Metric::LexicographersMutualInformation,
        Metric::LogLikelihood,
    ];

    /// Whether the metric reads [`Totals`]; the others are spared the global
    /// join (a new user would otherwise touch every pair).
    pub fn needs_totals(self) -> bool {
        matches!(
            self,
            Metric::MutualInformation
                | Metric::LexicographersMutualInformation
                | Metric::LogLikelihood
        )
    }

    /// The similarity of items i and j from `c_ij`, `c_ii`, `c_jj` (all ≥ 1).
    pub fn similarity(self, c_ij: u64, c_ii: u64, c_jj: u64, totals: Totals) -> f64 {
        let (cij, cii, cjj) = (c_ij as f64, c_ii as f64, c_jj as f64);
        match self {
            Metric::Cooccurrence => cij,
            Metric::Jaccard => cij / (cii + cjj - cij),
            Metric::Lift => cij / (cii * cjj),
            Metric::Cosine => cij / (cii * cjj).sqrt(),
            Metric::InclusionIndex => cij / cii.min(cjj),
            Metric::MutualInformation => (totals.items as f64 * (cij / (cii * cjj))).log2(),
            Metric::LexicographersMutualInformation => {
                cij * (totals.items as f64 * (cij / (cii * cjj))).log2()
            }
            Metric::LogLikelihood => {
                let k11 = c_ij as i64;
                let k12 = c_ii as i64 - k11;
                let k21 = c_jj as i64 - k11;
                let k22 = totals.users as i64 - c_ii as i64 - c_jj as i64 + k11;
                log_likelihood_ratio(k11, k12, k21, k22)
            }
        }
    }
}

/// Mahout's `LogLikelihood.logLikelihoodRatio(k11, k12, k21, k22)`: twice
/// the un-normalised mutual information of the 2×2 table, clamped at 0 where
/// round-off makes it negative.
pub fn log_likelihood_ratio(k11: i64, k12: i64, k21: i64, k22: i64) -> f64 {
    /// `x ln x` of the counts below its length, computed once: ranking a
    /// user's recommendations takes thousands of ratios, and `ln` was most
    /// of their time. The table holds the very values `x_log_x` computes, so
    /// the ratios are the same bits.
    static TABLE: LazyLock<Vec<f64>> =
        LazyLock::new(|| (0..1 << 16).map(compute_x_log_x).collect());
    fn compute_x_log_x(x: i64) -> f64 {
        if x == 0 {
            0.0
        } else {
            x as f64 * (x as f64).ln()
        }
    }
    fn x_log_x(x: i64) -> f64 {
        usize::try_from(x)
            .ok()
            .and_then(|at| TABLE.get(at))
            .copied()
            .unwrap_or_else(|| compute_x_log_x(x))
    }
    fn entropy2(a: i64, b: i64) -> f64 {
        x_log_x(a + b) - x_log_x(a) - x_log_x(b)
    }
    let row_entropy = entropy2(k11 + k12, k21 + k22);
    let column_entropy = entropy2(k11 + k21, k12 + k22);
    let matrix_entropy =
        x_log_x(k11 + k12 + k21 + k22) - x_log_x(k11) - x_log_x(k12) - x_log_x(k21) - x_log_x(k22);
    if row_entropy + column_entropy < matrix_entropy {
        return 0.0;
    }
    2.0 * (row_entropy + column_entropy - matrix_entropy)
}

/// Global counts some metrics need.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Totals {
    /// Users with a non-empty history (Mahout's `numUsers`).
    pub users: u64,
    /// Items in at least one history (SAR's `cooccurrence.shape[0]`).
    pub items: u64,
}

/// The co-occurrence counts of the current histories.
pub struct Cooccurrence<'s, T: EventTime> {
    /// `((i, j), c_ij)` for i < j with c_ij ≥ 1: once per unordered pair.
    pub pairs: VecCollection<'s, T, ((Id, Id), u64)>,
    /// `(i, c_ii)`: the number of users with i in their history (its popularity).
    pub item_users: VecCollection<'s, T, (Id, u64)>,
    /// The single record `((), totals)`, absent when no one has a history.
    pub totals: VecCollection<'s, T, ((), Totals)>,
    /// The cross-occurrence with the indicator histories, when configured.
    pub cross: Option<CrossOccurrence<'s, T>>,
}

/// Cross-occurrence of indicator items (e.g. viewed) with primary items (e.g.
/// purchased): Mahout's `A'B` with A the primary and B the indicator matrix.
pub struct CrossOccurrence<'s, T: EventTime> {
    /// `((j, i), x_ij)`: the number of users with primary item j in their
    /// history and indicator item i in their indicator history, i = j included.
    pub pairs: VecCollection<'s, T, ((Id, Id), u64)>,
    /// `(i, b_i)`: the number of users with i in their indicator history.
    pub indicator_item_users: VecCollection<'s, T, (Id, u64)>,
}

/// Co-occurrence counts from histories, and the cross-occurrence with the
/// indicator histories if there are.
///
/// ```sql
/// SELECT a.item, b.item, count(*) FROM history a JOIN history b USING (user)
/// WHERE a.item <> b.item GROUP BY a.item, b.item
/// -- cross: FROM history a JOIN indicator_history b USING (user), i = j kept
/// ```
///
/// A history change of user u touches |history(u)| unordered pairs, so N
/// bounds the work per event; [`history::histories`] sends those pair
/// changes, and here they are counted. `n_users` counts users with a
/// primary or an indicator history (Mahout's shared row count of A and B).
pub fn cooccurrence<'s, T: EventTime>(histories: &Histories<'s, T>) -> Cooccurrence<'s, T> {
    let pairs = histories
        .pairs
        .clone()
        .count_keyed("CfPairs")
        .map(|(pair, count)| (pair, count as u64));
    let item_users = histories
        .items
        .clone()
        .count_keyed("CfItemUsers")
        .map(|(item, count)| (item, count as u64));

    let cross = histories
        .indicator_history
        .clone()
        .map(|indicator_history| {
            let user_item = histories
                .history
                .clone()
                .map(|(user, entry)| (user, entry.item))
                .arrange_by_key();
            let user_indicator = indicator_history
                .map(|(user, entry)| (user, entry.item))
                .arrange_by_key();
            let pairs = user_item
                .join_core(user_indicator.clone(), |_user, &j, &i| Some((j, i)))
                .count_keyed("CfCrossPairs")
                .map(|(pair, count)| (pair, count as u64));
            let indicator_item_users = user_indicator
                .as_collection(|_user, &item| item)
                .count_keyed("CfIndicatorItemUsers")
                .map(|(item, count)| (item, count as u64));
            CrossOccurrence {
                pairs,
                indicator_item_users,
            }
        });

    let users = histories.history_users.clone().count_keyed("CfUserTotal");
    let items = item_users.clone().map(|_| ()).count_keyed("CfItemTotal");
    let totals = users.join_map(items, |_, &users, &items| {
        (
            (),
            Totals {
                users: users as u64,
                items: items as u64,
            },
        )
    });

    Cooccurrence {
        pairs,
        item_users,
        totals,
        cross,
    }
}

/// One neighbour in a similar-items list.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Neighbor {
    pub item: Id,
    pub similarity: Score,
}

/// An item and its top-K most similar other items, best first, ties by item
/// id ascending. The item itself is never among its neighbours.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SimilarItems {
    pub item: Id,
    pub neighbors: Vec<Neighbor>,
}

/// Every item count a neighbour selection reads, as one record. With a
/// normalised metric a change of `c_jj` changes every pair of j; kept per
/// pair, that is one update per pair of every changed item, about the
/// whole matrix per time step. Kept as one table, it is one update, and
/// each row item's list is recomputed from its row of `c_ij` and the table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CountTable {
    /// `(i, c_ii)` of the row items, sorted by item.
    pub rows: Vec<(Id, u64)>,
    /// `(j, c_jj)` of the column items, sorted by item.
    pub columns: Vec<(Id, u64)>,
    /// Zeros when the metric does not read them.
    pub totals: Totals,
}

/// One value of the reduction building a [`CountTable`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum TableInput {
    Row(Id, u64),
    Column(Id, u64),
    Totals(Totals),
}

/// Row items are spread over this many keys, each with a copy of the
/// [`CountTable`], so workers share the neighbour selection.
const SHARDS: u64 = 64;

/// Each item's top-K neighbours under `config.metric`, pairs with
/// `c_ij < config.min_support` dropped.
///
/// ```sql
/// SELECT i, j, metric(c_ij, c_ii, c_jj, totals) AS s FROM pairs WHERE c_ij >= support
/// QUALIFY row_number() OVER (PARTITION BY i ORDER BY s DESC, j) <= K
/// ```
pub fn similar_items<'s, T: EventTime>(
    cooccurrence: &Cooccurrence<'s, T>,
    config: &CfConfig,
) -> VecCollection<'s, T, SimilarItems> {
    // Counted once per unordered pair, ranked in both orders.
    let pairs = cooccurrence
        .pairs
        .clone()
        .flat_map(|((i, j), c_ij)| [((i, j), c_ij), ((j, i), c_ij)]);
    top_lists(
        "CfTopNeighbors",
        pairs,
        cooccurrence.item_users.clone(),
        cooccurrence.item_users.clone(),
        cooccurrence,
        config.metric,
        config,
    )
}

/// The cross-occurrence indicator: for each primary item j, the top-K
/// indicator items i by log-likelihood ratio of `(x_ij, c_jj, b_i, n_users)`,
/// pairs with `x_ij < config.min_support` dropped; i = j allowed. `None`
/// without an indicator.
///
/// ```sql
/// SELECT j, i, llr(x_ij, c_jj, b_i, n_users) AS s FROM cross_pairs WHERE x_ij >= support
/// QUALIFY row_number() OVER (PARTITION BY j ORDER BY s DESC, i) <= K
/// ```
pub fn cross_similar_items<'s, T: EventTime>(
    cooccurrence: &Cooccurrence<'s, T>,
    config: &CfConfig,
) -> Option<VecCollection<'s, T, SimilarItems>> {
    let cross = cooccurrence.cross.as_ref()?;
    Some(top_lists(
        "CfTopCrossNeighbors",
        cross.pairs.clone(),
        cooccurrence.item_users.clone(),
        cross.indicator_item_users.clone(),
        cooccurrence,
        Metric::LogLikelihood,
        config,
    ))
}

/// Per row item i, the top-K columns j of `((i, j), c_ij)` under `metric`
/// with `c_ii` from `row_counts` and `c_jj` from `column_counts`.
fn top_lists<'s, T: EventTime>(
    name: &str,
    pairs: VecCollection<'s, T, ((Id, Id), u64)>,
    row_counts: VecCollection<'s, T, (Id, u64)>,
    column_counts: VecCollection<'s, T, (Id, u64)>,
    cooccurrence: &Cooccurrence<'s, T>,
    metric: Metric,
    config: &CfConfig,
) -> VecCollection<'s, T, SimilarItems> {
    let neighbors = config.neighbors;
    let min_support = config.min_support;

    // Each row item's `(j, c_ij)`, ascending j: changes only with its c_ij.
    let rows = pairs
        .filter(move |(_, c_ij)| *c_ij >= min_support)
        .map(|((i, j), c_ij)| (i, (j, c_ij)))
        .reduce_named(&format!("{name}Rows"), |_i, pairs, out| {
            let row: Vec<(Id, u64)> = pairs
                .iter()
                .filter(|(_, r)| *r > 0)
                .map(|(pair, _)| **pair)
                .collect();
            out.push((row, 1isize));
        })
        .map(|(i, row)| (i % SHARDS, (i, row)))
        .arrange_by_key();

    let mut table_inputs = row_counts
        .map(|(i, c)| ((), TableInput::Row(i, c)))
        .concat(column_counts.map(|(j, c)| ((), TableInput::Column(j, c))));
    if metric.needs_totals() {
        table_inputs = table_inputs.concat(
            cooccurrence
                .totals
                .clone()
                .map(|((), totals)| ((), TableInput::Totals(totals))),
        );
    }
    let tables = table_inputs
        .reduce_named(&format!("{name}Counts"), |_, inputs, out| {
            let mut table = CountTable {
                rows: Vec::new(),
                columns: Vec::new(),
                totals: Totals::default(),
            };
            for (input, _) in inputs {
                match **input {
                    TableInput::Row(i, c) => table.rows.push((i, c)),
                    TableInput::Column(j, c) => table.columns.push((j, c)),
                    TableInput::Totals(totals) => table.totals = totals,
                }
            }
            out.push((table, 1isize));
        })
        .flat_map(|((), table)| (0..SHARDS).map(move |shard| (shard, table.clone())))
        .arrange_by_key();

    rows.join_core(tables, move |_shard, (item, row), table| {
        // A count is missing only where the join pairs a row with a table
        // of another time; those outputs cancel, so any value will do.
        let count = |counts: &[(Id, u64)], item: Id| {
            counts
                .binary_search_by_key(&item, |&(i, _)| i)
                .map_or(0, |index| counts[index].1)
        };
        let list = neighbor_list(
            *item,
            row.iter().copied(),
            count(&table.rows, *item),
            |j| count(&table.columns, j),
            table.totals,
            metric,
            neighbors,
        );
        (!list.neighbors.is_empty()).then_some(list)
    })
}

/// Attaches the [`Totals`] to each record when the metric reads them, and
/// zeros otherwise (so a new user does not touch every pair).
fn with_totals<'s, T: EventTime, V: differential_dataflow::ExchangeData>(
    records: VecCollection<'s, T, (Id, (u64, V))>,
    cooccurrence: &Cooccurrence<'s, T>,
    metric: Metric,
) -> VecCollection<'s, T, (Id, (u64, Totals, V))> {
    if metric.needs_totals() {
        records
            .map(|(i, (c_ii, v))| ((), (i, c_ii, v)))
            .join_map(cooccurrence.totals.clone(), |_, (i, c_ii, v), totals| {
                (*i, (*c_ii, *totals, v.clone()))
            })
    } else {
        records.map(|(i, (c_ii, v))| (i, (c_ii, Totals::default(), v)))
    }
}

/// One item's neighbour list from its row of `(j, c_ij)`, its count
/// `c_ii` and the column counts `c_jj`: best first, ties by id, `limit` of
/// them (0 = all). The dataflow and the on-demand queries
/// ([`super::on_demand`]) both rank with it, so they agree bit for bit.
pub(super) fn neighbor_list(
    item: Id,
    row: impl IntoIterator<Item = (Id, u64)>,
    c_ii: u64,
    c_jj: impl Fn(Id) -> u64,
    totals: Totals,
    metric: Metric,
    limit: usize,
) -> SimilarItems {
    let mut neighbors: Vec<Neighbor> = row
        .into_iter()
        .map(|(j, c_ij)| Neighbor {
            item: j,
            similarity: Score(metric.similarity(c_ij, c_ii, c_jj(j), totals)),
        })
        .collect();
    let best_first =
        |a: &Neighbor, b: &Neighbor| b.similarity.cmp(&a.similarity).then(a.item.cmp(&b.item));
    // A total order: selecting the first `limit` and sorting them gives the
    // prefix of the sorted row, without sorting the rest of it.
    if limit > 0 && limit < neighbors.len() {
        neighbors.select_nth_unstable_by(limit - 1, best_first);
        neighbors.truncate(limit);
    }
    neighbors.sort_unstable_by(best_first);
    SimilarItems { item, neighbors }
}

/// The similarity of an item with itself, weighted by `repeat_weight`: the
/// diagonal of SAR's similarity matrix, which scores a seen item when seen
/// items are kept.
pub fn own_similarity(config: &CfConfig, c_ii: u64, totals: Totals) -> f64 {
    config.repeat_weight * config.metric.similarity(c_ii, c_ii, c_ii, totals)
}

/// `(i, own_similarity(c_ii))` for items with `c_ii ≥ min_support`, used in
/// scores only when seen items are kept (otherwise it only ever scores seen
/// items).
pub fn self_similarity<'s, T: EventTime>(
    cooccurrence: &Cooccurrence<'s, T>,
    config: &CfConfig,
) -> VecCollection<'s, T, (Id, Score)> {
    let own = config.clone();
    let min_support = config.min_support;
    let items = cooccurrence
        .item_users
        .clone()
        .filter(move |(_, c_ii)| *c_ii >= min_support)
        .map(|(i, c_ii)| (i, (c_ii, ())));
    with_totals(items, cooccurrence, config.metric)
        .map(move |(i, (c_ii, totals, ()))| (i, Score(own_similarity(&own, c_ii, totals))))
}
