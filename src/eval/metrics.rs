//! Offline evaluation of top-k recommendation lists against held-out
//! relevant items: precision@k, recall@k, NDCG@k, MAP@k, hit rate@k,
//! MRR@k and catalogue coverage, as pure functions, plus their mean over test users.
//!
//! Definitions follow Microsoft Recommenders' `python_evaluation.py`
//! (binary relevance); formulas and choices are in
//! `docs/recommendations.md`. Lists are assumed to hold distinct items, best
//! first; only their first k entries count.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

/// Ranks (1-based, ≤ k) at which `recommended` hits a relevant item.
fn hit_ranks<'a, T: Eq + Hash>(
    recommended: &'a [T],
    relevant: &'a HashSet<T>,
    k: usize,
) -> impl Iterator<Item = usize> + 'a {
    recommended
        .iter()
        .take(k)
        .enumerate()
        .filter(move |(_, item)| relevant.contains(item))
        .map(|(index, _)| index + 1)
}

/// hits in the top k / k (k, not the list length: a short list is penalised).
fn precision_at_k<T: Eq + Hash>(recommended: &[T], relevant: &HashSet<T>, k: usize) -> f64 {
    if k == 0 {
        return 0.0;
    }
    hit_ranks(recommended, relevant, k).count() as f64 / k as f64
}

/// hits in the top k / |relevant|.
fn recall_at_k<T: Eq + Hash>(recommended: &[T], relevant: &HashSet<T>, k: usize) -> f64 {
    if relevant.is_empty() {
        return 0.0;
    }
    hit_ranks(recommended, relevant, k).count() as f64 / relevant.len() as f64
}

/// DCG / IDCG with binary gains and a log2(rank + 1) discount; the ideal
/// list puts min(k, |relevant|) hits first.
fn ndcg_at_k<T: Eq + Hash>(recommended: &[T], relevant: &HashSet<T>, k: usize) -> f64 {
    let discount = |rank: usize| 1.0 / ((rank + 1) as f64).log2();
    let ideal: f64 = (1..=k.min(relevant.len())).map(discount).sum();
    if ideal == 0.0 {
        return 0.0;
    }
    hit_ranks(recommended, relevant, k)
        .map(discount)
        .sum::<f64>()
        / ideal
}

/// Average precision at k as Microsoft Recommenders' `map_at_k` defines it:
/// Σ over hits at rank r ≤ k of (hits up to r) / r, divided by
/// min(k, |relevant|).
fn average_precision_at_k<T: Eq + Hash>(recommended: &[T], relevant: &HashSet<T>, k: usize) -> f64 {
    let denominator = k.min(relevant.len());
    if denominator == 0 {
        return 0.0;
    }
    let sum: f64 = hit_ranks(recommended, relevant, k)
        .enumerate()
        .map(|(hits_before, rank)| (hits_before + 1) as f64 / rank as f64)
        .sum();
    sum / denominator as f64
}

/// 1 if the top k hits a relevant item, else 0.
fn hit_at_k<T: Eq + Hash>(recommended: &[T], relevant: &HashSet<T>, k: usize) -> f64 {
    f64::from(u8::from(
        hit_ranks(recommended, relevant, k).next().is_some(),
    ))
}

/// 1 / the rank of the first relevant item in the top k, 0 if none.
fn reciprocal_rank_at_k<T: Eq + Hash>(recommended: &[T], relevant: &HashSet<T>, k: usize) -> f64 {
    hit_ranks(recommended, relevant, k)
        .next()
        .map_or(0.0, |rank| 1.0 / rank as f64)
}

/// Distinct items in the top k of any list / distinct items in the training
/// catalogue.
pub fn catalog_coverage<'a, T: Eq + Hash + 'a>(
    lists: impl IntoIterator<Item = &'a [T]>,
    k: usize,
    catalog_size: usize,
) -> f64 {
    if catalog_size == 0 {
        return 0.0;
    }
    let recommended: HashSet<&T> = lists
        .into_iter()
        .flat_map(|list| list.iter().take(k))
        .collect();
    recommended.len() as f64 / catalog_size as f64
}

/// The means over test users of the per-user metrics at one k.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RankingMetrics {
    pub k: usize,
    /// Test users averaged over: those with at least one relevant item.
    pub users: usize,
    pub precision: f64,
    pub recall: f64,
    pub ndcg: f64,
    pub map: f64,
    pub hit_rate: f64,
    pub mrr: f64,
}

/// Means over every test user with a relevant item; a test user without a
/// list counts as an empty list (all metrics 0), so a recommender cannot
/// score well by staying silent. Users are summed in ascending order, so
/// the means are the same bits in every run.
pub fn evaluate<U: Ord + Hash, T: Eq + Hash>(
    recommendations: &HashMap<U, Vec<T>>,
    relevant: &HashMap<U, HashSet<T>>,
    k: usize,
) -> RankingMetrics {
    let mut metrics = RankingMetrics {
        k,
        ..RankingMetrics::default()
    };
    let mut users: Vec<(&U, &HashSet<T>)> = relevant.iter().collect();
    users.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (user, relevant) in users {
        if relevant.is_empty() {
            continue;
        }
        let list = recommendations.get(user).map(Vec::as_slice).unwrap_or(&[]);
        metrics.users += 1;
        metrics.precision += precision_at_k(list, relevant, k);
        metrics.recall += recall_at_k(list, relevant, k);
        metrics.ndcg += ndcg_at_k(list, relevant, k);
        metrics.map += average_precision_at_k(list, relevant, k);
        metrics.hit_rate += hit_at_k(list, relevant, k);
        metrics.mrr += reciprocal_rank_at_k(list, relevant, k);
    }
    if metrics.users > 0 {
        let n = metrics.users as f64;
        metrics.precision /= n;
        metrics.recall /= n;
        metrics.ndcg /= n;
        metrics.map /= n;
        metrics.hit_rate /= n;
        metrics.mrr /= n;
    }
    metrics
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[u64]) -> HashSet<u64> {
        items.iter().copied().collect()
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    // Recommended [1, 2, 3, 4, 5], relevant {2, 4, 9}: hits at ranks 2 and 4.

    #[test]
    fn precision_divides_by_k() {
        close(
            precision_at_k(&[1, 2, 3, 4, 5], &set(&[2, 4, 9]), 5),
            2.0 / 5.0,
        );
        // Top 3 holds one hit; a list shorter than k still divides by k.
        close(
            precision_at_k(&[1, 2, 3, 4, 5], &set(&[2, 4, 9]), 3),
            1.0 / 3.0,
        );
        close(precision_at_k(&[2], &set(&[2, 4, 9]), 4), 1.0 / 4.0);
    }

    #[test]
    fn recall_divides_by_relevant() {
        close(
            recall_at_k(&[1, 2, 3, 4, 5], &set(&[2, 4, 9]), 5),
            2.0 / 3.0,
        );
        close(
            recall_at_k(&[1, 2, 3, 4, 5], &set(&[2, 4, 9]), 3),
            1.0 / 3.0,
        );
        close(recall_at_k(&[1, 2], &set(&[]), 3), 0.0);
    }

    #[test]
    fn ndcg_by_hand() {
        // DCG = 1/log2(3) + 1/log2(5) = 0.6309297535714575 + 0.43067655807339306;
        // IDCG over min(5, 3) = 3 hits = 1 + 0.6309297535714575 + 0.5.
        let dcg = 0.630_929_753_571_457_5 + 0.430_676_558_073_393_06;
        let idcg = 1.0 + 0.630_929_753_571_457_5 + 0.5;
        close(ndcg_at_k(&[1, 2, 3, 4, 5], &set(&[2, 4, 9]), 5), dcg / idcg);
        // The ideal list scores 1; k smaller than |relevant| caps the ideal.
        close(ndcg_at_k(&[2, 4, 9], &set(&[2, 4, 9]), 3), 1.0);
        close(ndcg_at_k(&[2, 4], &set(&[2, 4, 9]), 2), 1.0);
        close(ndcg_at_k(&[7, 8], &set(&[2]), 2), 0.0);
    }

    #[test]
    fn map_uses_min_of_k_and_relevant() {
        // Hits at 2 and 4: (1/2 + 2/4) / min(5, 3) = 1/3.
        close(
            average_precision_at_k(&[1, 2, 3, 4, 5], &set(&[2, 4, 9]), 5),
            1.0 / 3.0,
        );
        // k = 2: one hit at 2: (1/2) / min(2, 3) = 1/4.
        close(
            average_precision_at_k(&[1, 2, 3, 4, 5], &set(&[2, 4, 9]), 2),
            1.0 / 4.0,
        );
        // Hits at 1 and 3 with one relevant left out: (1 + 2/3) / 3.
        close(
            average_precision_at_k(&[2, 7, 4], &set(&[2, 4, 9]), 3),
            (1.0 + 2.0 / 3.0) / 3.0,
        );
    }

    #[test]
    fn hit_rate_and_reciprocal_rank_look_at_the_first_hit() {
        // First hit at rank 2.
        close(hit_at_k(&[1, 2, 3, 4, 5], &set(&[2, 4, 9]), 5), 1.0);
        close(
            reciprocal_rank_at_k(&[1, 2, 3, 4, 5], &set(&[2, 4, 9]), 5),
            0.5,
        );
        // k = 1 cuts it off.
        close(hit_at_k(&[1, 2, 3, 4, 5], &set(&[2, 4, 9]), 1), 0.0);
        close(
            reciprocal_rank_at_k(&[1, 2, 3, 4, 5], &set(&[2, 4, 9]), 1),
            0.0,
        );
        close(
            reciprocal_rank_at_k(&[7, 8, 4], &set(&[2, 4, 9]), 3),
            1.0 / 3.0,
        );
    }

    #[test]
    fn coverage_counts_distinct_items_in_top_k() {
        let lists: [&[u64]; 3] = [&[1, 2, 3], &[2, 3, 4], &[5]];
        // Top 2 of each: {1, 2, 3, 5} out of a catalogue of 10.
        close(catalog_coverage(lists, 2, 10), 0.4);
        close(catalog_coverage(lists, 3, 10), 0.5);
        close(catalog_coverage(lists, 3, 0), 0.0);
    }

    #[test]
    fn evaluate_means_over_test_users_and_counts_missing_lists_as_zero() {
        let recommendations: HashMap<&str, Vec<u64>> =
            [("ann", vec![1, 2, 3, 4, 5]), ("bob", vec![9, 8])]
                .into_iter()
                .collect();
        let relevant: HashMap<&str, HashSet<u64>> = [
            ("ann", set(&[2, 4, 9])),
            ("bob", set(&[9])),
            ("cy", set(&[1])), // no list: zeros
            ("dee", set(&[])), // nothing relevant: not a test user
        ]
        .into_iter()
        .collect();
        let m = evaluate(&recommendations, &relevant, 5);
        assert_eq!(m.users, 3);
        // ann: p 2/5, r 2/3, map 1/3; bob: p 1/5, r 1, ndcg 1, map 1; cy: 0.
        close(m.precision, (2.0 / 5.0 + 1.0 / 5.0) / 3.0);
        close(m.recall, (2.0 / 3.0 + 1.0) / 3.0);
        close(m.map, (1.0 / 3.0 + 1.0) / 3.0);
        let ann_ndcg = (0.630_929_753_571_457_5 + 0.430_676_558_073_393_06)
            / (1.0 + 0.630_929_753_571_457_5 + 0.5);
        close(m.ndcg, (ann_ndcg + 1.0) / 3.0);
        // ann's first hit at 2, bob's at 1, cy none.
        close(m.hit_rate, 2.0 / 3.0);
        close(m.mrr, (0.5 + 1.0) / 3.0);
    }
}
