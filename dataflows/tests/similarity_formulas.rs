//! The similarity metrics on hand-computed examples, from the definitions in
//! Microsoft Recommenders' `recommenders/utils/python_utils.py` (SAR) and
//! Mahout's `LogLikelihood.logLikelihoodRatio` / `SimilarityAnalysis`; and
//! SAR's scoring (affinity row × item-similarity matrix, seen items removed)
//! recomputed with plain matrices against the dataflow.

use std::sync::{Arc, Mutex};

use differential_dataflow::input::Input;
use timely::dataflow::operators::capture::Extract;
use timely::dataflow::operators::Capture;

use persona_dataflows::cf::recommend::Recommendations;
use persona_dataflows::cf::similarity::{log_likelihood_ratio, SimilarItems, Totals};
use persona_dataflows::cf::{collaborative_filtering, CfConfig, Metric};
use persona_dataflows::time::DAY_MS;
use persona_dataflows::{Action, Event, Id};

const A: Id = 1;
const B: Id = 2;
const C: Id = 3;

/// Histories {A,B}, {A,B,C}, {A}, {C}: c_AA = 3, c_BB = 2, c_CC = 2,
/// c_AB = 2, c_AC = 1, c_BC = 1; 4 users, 3 items.
fn fixture() -> Vec<Event> {
    let histories: [(Id, &[Id]); 4] = [(10, &[A, B]), (11, &[A, B, C]), (12, &[A]), (13, &[C])];
    histories
        .iter()
        .flat_map(|(user, items)| {
            items
                .iter()
                .map(|&item| Event::new(*user, item, Action::Purchase, item as i64 * 1000))
        })
        .collect()
}

const TOTALS: Totals = Totals { users: 4, items: 3 };

/// Runs collaborative filtering on `events` (all at time 0) on one worker
/// and returns the final similar items and recommendations.
fn run(events: Vec<Event>, config: CfConfig) -> (Vec<SimilarItems>, Vec<Recommendations>) {
    let (similar_send, similar_recv) = std::sync::mpsc::channel();
    let (recs_send, recs_recv) = std::sync::mpsc::channel();
    let senders = Arc::new(Mutex::new((similar_send, recs_send)));
    timely::execute(timely::Config::process(1), move |worker| {
        let (similar_send, recs_send) = senders.lock().unwrap().clone();
        let mut input = worker.dataflow::<u64, _, _>(|scope| {
            let (input, events) = scope.new_collection::<Event, isize>();
            let outputs = collaborative_filtering(events, &config);
            let recommendations = outputs.recommendations();
            outputs.similar_items.inner.capture_into(similar_send);
            recommendations.inner.capture_into(recs_send);
            input
        });
        for event in &events {
            input.insert(event.clone());
        }
    })
    .expect("timely run");
    (
        final_records(similar_recv.extract()),
        final_records(recs_recv.extract()),
    )
}

/// What `Extract` returns: per time, the updates at it.
type Captured<D> = Vec<(u64, Vec<(D, u64, isize)>)>;

fn final_records<D: Ord + Clone>(batches: Captured<D>) -> Vec<D> {
    let mut updates: Vec<(D, isize)> = batches
        .into_iter()
        .flat_map(|(_, updates)| updates.into_iter().map(|(d, _, r)| (d, r)))
        .collect();
    differential_dataflow::consolidation::consolidate(&mut updates);
    assert!(updates.iter().all(|(_, r)| *r == 1));
    updates.into_iter().map(|(d, _)| d).collect()
}

fn assert_close(actual: f64, expected: f64, what: &str) {
    let tolerance = 1e-12 * expected.abs().max(1.0);
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: got {actual}, expected {expected}"
    );
}

/// `metric(c_ij, c_ii, c_jj)` for the pairs (A,B) = (2,3,2), (A,C) = (1,3,2),
/// (B,C) = (1,2,2) against values worked out by hand.
fn check_pairs(metric: Metric, ab: f64, ac: f64, bc: f64) {
    assert_close(
        metric.similarity(2, 3, 2, TOTALS),
        ab,
        &format!("{metric:?} A,B"),
    );
    assert_close(
        metric.similarity(1, 3, 2, TOTALS),
        ac,
        &format!("{metric:?} A,C"),
    );
    assert_close(
        metric.similarity(1, 2, 2, TOTALS),
        bc,
        &format!("{metric:?} B,C"),
    );
}

#[test]
fn cooccurrence_is_the_count() {
    check_pairs(Metric::Cooccurrence, 2.0, 1.0, 1.0);
}

#[test]
fn jaccard() {
    // c_ij / (c_ii + c_jj − c_ij): 2/(3+2−2), 1/(3+2−1), 1/(2+2−1).
    check_pairs(Metric::Jaccard, 2.0 / 3.0, 1.0 / 4.0, 1.0 / 3.0);
}

#[test]
fn lift() {
    // c_ij / (c_ii · c_jj): 2/6, 1/6, 1/4.
    check_pairs(Metric::Lift, 1.0 / 3.0, 1.0 / 6.0, 1.0 / 4.0);
}

#[test]
fn cosine() {
    // c_ij / sqrt(c_ii · c_jj): 2/√6 = 0.8164965809277260, 1/√6, 1/√4.
    check_pairs(
        Metric::Cosine,
        0.816_496_580_927_726,
        0.408_248_290_463_863,
        0.5,
    );
}

#[test]
fn inclusion_index() {
    // c_ij / min(c_ii, c_jj): 2/2, 1/2, 1/2.
    check_pairs(Metric::InclusionIndex, 1.0, 0.5, 0.5);
}

#[test]
fn mutual_information_uses_sars_item_count() {
    // SAR: log2(cooccurrence.shape[0] · lift), shape[0] = 3 items:
    // log2(3 · 1/3) = 0, log2(3 · 1/6) = −1, log2(3 · 1/4) = log2 0.75 = −0.4150374992788438.
    check_pairs(
        Metric::MutualInformation,
        0.0,
        -1.0,
        -0.415_037_499_278_843_8,
    );
}

#[test]
fn lexicographers_mutual_information() {
    // SAR: c_ij · mutual_information: 2·0, 1·(−1), 1·(−0.41503…).
    check_pairs(
        Metric::LexicographersMutualInformation,
        0.0,
        -1.0,
        -0.415_037_499_278_843_8,
    );
}

#[test]
fn log_likelihood_ratio_by_hand() {
    // (A,B): k11 = 2, k12 = c_AA − 2 = 1, k21 = c_BB − 2 = 0,
    // k22 = n − c_AA − c_BB + c_AB = 4 − 3 − 2 + 2 = 1; rows (3, 1), columns (2, 2).
    // G² = 2 Σ k·ln(k·n/(row·col)) = 2 [2 ln(8/6) + 1 ln(4/6) + 1 ln(4/2)]
    //    = 2 ln(64/27) = 1.7260924347106847.
    // (A,C): k = (1, 2, 1, 0), rows (3, 1), columns (2, 2):
    //   2 [ln(4/6) + 2 ln(8/6) + ln(4/2)] = 2 ln(64/27) as well.
    // (B,C): k = (1, 1, 1, 1), rows (2, 2), columns (2, 2): every cell k·n/(row·col) = 1, G² = 0.
    let g2 = 2.0 * (64.0f64 / 27.0).ln();
    assert_close(g2, 1.726_092_434_710_684_7, "2 ln(64/27)");
    check_pairs(Metric::LogLikelihood, g2, g2, 0.0);
}

#[test]
fn log_likelihood_matches_mahouts_tests() {
    // Mahout's SimilarityAnalysisSuite "LLR calc": A = 100, B = 200, A∧B = 10,
    // 10000 interactions → 17.19462327013025; and (A = 1, B = 2, A∧B = 1,
    // 6 users) → 2.6341457841558764, "value calculated by hadoop itemsimilarity".
    assert_close(
        log_likelihood_ratio(10, 90, 190, 9710),
        17.194_623_270_130_25,
        "LLR calc",
    );
    assert_close(
        log_likelihood_ratio(1, 0, 1, 4),
        2.634_145_784_155_876_4,
        "LLR 1,1,2,6",
    );
    // Independence gives 0 up to round-off, never a negative value.
    let independent = log_likelihood_ratio(5, 5, 5, 5);
    assert!((0.0..1e-12).contains(&independent), "{independent}");
}

#[test]
fn dataflow_similar_items_follow_the_formulas() {
    for metric in Metric::ALL {
        let config = CfConfig {
            history_length: 0,
            neighbors: 0,
            metric,
            ..CfConfig::default()
        };
        let (similar, _) = run(fixture(), config);
        let pair = |i: Id, j: Id| {
            let list = similar.iter().find(|s| s.item == i).expect("item listed");
            assert!(list.neighbors.iter().all(|n| n.item != i), "self in list");
            list.neighbors
                .iter()
                .find(|n| n.item == j)
                .expect("neighbour")
                .similarity
                .0
        };
        let counts = |i: Id, j: Id| {
            let c = |x: Id, y: Id| match (x.min(y), x.max(y)) {
                (A, A) => 3,
                (B, B) | (C, C) => 2,
                (A, B) => 2,
                _ => 1,
            };
            metric.similarity(c(i, j), c(i, i), c(j, j), TOTALS)
        };
        for (i, j) in [(A, B), (B, A), (A, C), (C, A), (B, C), (C, B)] {
            assert_eq!(
                pair(i, j).to_bits(),
                counts(i, j).to_bits(),
                "{metric:?} {i},{j}"
            );
        }
        // Best first, ties by id ascending.
        for list in &similar {
            for w in list.neighbors.windows(2) {
                assert!(
                    w[0].similarity > w[1].similarity
                        || (w[0].similarity == w[1].similarity && w[0].item < w[1].item),
                    "{metric:?} order {list:?}"
                );
            }
        }
    }
}

#[test]
fn support_threshold_and_top_k_cut_lists() {
    let config = CfConfig {
        history_length: 0,
        min_support: 2,
        neighbors: 1,
        ..CfConfig::default()
    };
    let (similar, _) = run(fixture(), config);
    // Only A–B co-occur for 2 users.
    let lists: Vec<(Id, Vec<Id>)> = similar
        .iter()
        .map(|s| (s.item, s.neighbors.iter().map(|n| n.item).collect()))
        .collect();
    assert_eq!(lists, vec![(A, vec![B]), (B, vec![A])]);
}

/// SAR with N = 0, K = 0, Jaccard, no decay, seen items removed: scores =
/// affinity matrix × Jaccard matrix, computed here with dense matrices.
#[test]
fn scores_equal_sars_matrix_product() {
    // (user, item, action, day): affinities with default weights (view 1,
    // cart 3, purchase 5, favourite 2).
    let raw: &[(Id, Id, Action, i64)] = &[
        (1, 100, Action::Purchase, 0),
        (1, 101, Action::View, 1),
        (1, 101, Action::View, 2),
        (2, 100, Action::View, 0),
        (2, 102, Action::Cart, 1),
        (2, 103, Action::Purchase, 3),
        (3, 101, Action::Favourite, 0),
        (3, 102, Action::Purchase, 2),
        (3, 104, Action::View, 2),
        (4, 100, Action::Cart, 1),
        (4, 101, Action::View, 1),
        (4, 104, Action::Purchase, 4),
        (4, 105, Action::View, 5),
        (5, 103, Action::Favourite, 3),
        (5, 105, Action::Purchase, 3),
        (6, 102, Action::Impression, 1), // weight 0: no history, gets popular items
    ];
    let events: Vec<Event> = raw
        .iter()
        .map(|&(u, i, a, d)| Event::new(u, i, a, d * DAY_MS as i64 + u as i64))
        .collect();
    let weight = |a: Action| match a {
        Action::View => 1.0,
        Action::Cart => 3.0,
        Action::Purchase => 5.0,
        Action::Favourite => 2.0,
        _ => 0.0,
    };

    let users: Vec<Id> = vec![1, 2, 3, 4, 5];
    let items: Vec<Id> = (100..=105).collect();
    let (nu, ni) = (users.len(), items.len());
    let ui = |u: Id| users.iter().position(|&x| x == u).unwrap();
    let ii = |i: Id| items.iter().position(|&x| x == i).unwrap();
    let mut affinity = vec![vec![0.0f64; ni]; nu];
    for &(u, i, a, _) in raw {
        if weight(a) > 0.0 {
            affinity[ui(u)][ii(i)] += weight(a);
        }
    }
    // C = Hᵀ H with H the 0/1 hits; Jaccard S_ij = C_ij / (C_ii + C_jj − C_ij).
    let hits: Vec<Vec<f64>> = affinity
        .iter()
        .map(|row| {
            row.iter()
                .map(|&a| if a > 0.0 { 1.0 } else { 0.0 })
                .collect()
        })
        .collect();
    let mut cooc = vec![vec![0.0f64; ni]; ni];
    for row in &hits {
        for i in 0..ni {
            for j in 0..ni {
                cooc[i][j] += row[i] * row[j];
            }
        }
    }
    let mut jaccard = vec![vec![0.0f64; ni]; ni];
    for i in 0..ni {
        for j in 0..ni {
            if cooc[i][j] > 0.0 {
                jaccard[i][j] = cooc[i][j] / (cooc[i][i] + cooc[j][j] - cooc[i][j]);
            }
        }
    }

    let config = CfConfig {
        history_length: 0,
        neighbors: 0,
        metric: Metric::Jaccard,
        top_k: 3,
        ..CfConfig::default()
    };
    let (_, recommendations) = run(events, config);

    for &u in &users {
        let mut expected: Vec<(Id, f64)> = (0..ni)
            .filter(|&j| affinity[ui(u)][j] == 0.0) // remove seen
            .map(|j| {
                let score: f64 = (0..ni).map(|i| affinity[ui(u)][i] * jaccard[i][j]).sum();
                (items[j], score)
            })
            .filter(|&(_, score)| score > 0.0)
            .collect();
        expected.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        expected.truncate(3);
        let actual = recommendations
            .iter()
            .find(|r| r.user == u)
            .expect("user listed");
        assert!(!actual.popular, "user {u} should get a personal list");
        assert_eq!(
            actual.items.len(),
            expected.len(),
            "user {u}: {actual:?} vs {expected:?}"
        );
        for (got, (item, score)) in actual.items.iter().zip(&expected) {
            assert_eq!(got.item, *item, "user {u}: {actual:?} vs {expected:?}");
            assert_close(got.score.0, *score, &format!("user {u} item {item}"));
        }
    }

    // User 6 has no history: the most popular items (users with the item in
    // history, ties by id): 100, 101, 102 (3 users each), then 103…
    let cold = recommendations
        .iter()
        .find(|r| r.user == 6)
        .expect("cold user listed");
    assert!(cold.popular);
    let cold_items: Vec<(Id, f64)> = cold.items.iter().map(|s| (s.item, s.score.0)).collect();
    assert_eq!(cold_items, vec![(100, 3.0), (101, 3.0), (102, 2.0)]);
}

/// Purchases (primary) and views (indicator) with hand-computed counts:
///
/// ```text
/// purchased: u10 {A}, u11 {A, B}, u12 {B}          c_AA = 2, c_BB = 2
/// viewed:    u10 {A, C}, u11 {C}, u13 {C}, u14 {B}  b_A = 1, b_B = 1, b_C = 3
/// n_users = 5 (a purchase or a view history)
/// x_AC = 2 (u10, u11), x_AA = 1 (u10), x_BC = 1 (u11), every other x = 0
/// ```
fn cross_fixture() -> Vec<Event> {
    let purchases: [(Id, &[Id]); 3] = [(10, &[A]), (11, &[A, B]), (12, &[B])];
    let views: [(Id, &[Id]); 4] = [(10, &[A, C]), (11, &[C]), (13, &[C]), (14, &[B])];
    let events = |histories: &[(Id, &[Id])], action| -> Vec<Event> {
        histories
            .iter()
            .flat_map(|(user, items)| {
                items
                    .iter()
                    .map(move |&item| Event::new(*user, item, action, item as i64 * 1000))
            })
            .collect()
    };
    let mut all = events(&purchases, Action::Purchase);
    all.extend(events(&views, Action::View));
    // A cart is neither primary nor indicator: it changes nothing.
    all.push(Event::new(12, C, Action::Cart, 5000));
    all
}

#[test]
fn cross_occurrence_counts_and_llr_by_hand() {
    // Each (x_ij, c_jj, b_i, n = 5) table, G² = 2 Σ k ln(k n / (row col)):
    // (A,C): k = (2, 0, 1, 2), rows (2, 3), columns (3, 2):
    //   2 [2 ln(10/6) + ln(5/9) + 2 ln(10/6)] = 2 ln(3125/729)
    // (A,A): k = (1, 1, 0, 3), rows (2, 3), columns (1, 4):
    //   2 [ln(5/2) + ln(5/8) + 3 ln(15/12)] = 2 ln(3125/1024)
    // (B,C): k = (1, 1, 2, 1), rows (2, 3), columns (3, 2):
    //   2 [ln(5/6) + ln(5/4) + 2 ln(10/9) + ln(5/6)] = 2 ln(3125/2916)
    let ac = 2.0 * (3125.0f64 / 729.0).ln();
    let aa = 2.0 * (3125.0f64 / 1024.0).ln();
    let bc = 2.0 * (3125.0f64 / 2916.0).ln();
    assert_close(log_likelihood_ratio(2, 0, 1, 2), ac, "llr A,C");
    assert_close(log_likelihood_ratio(1, 1, 0, 3), aa, "llr A,A");
    assert_close(log_likelihood_ratio(1, 1, 2, 1), bc, "llr B,C");

    let config = CfConfig {
        history_length: 0,
        metric: Metric::Cooccurrence,
        primary_action: Some(Action::Purchase),
        indicator_action: Some(Action::View),
        mf_weight: 0.0,
        ..CfConfig::default()
    };
    let (cross, recommendations) = run_cross(cross_fixture(), config);
    let lists: Vec<(Id, Vec<(Id, f64)>)> = cross
        .iter()
        .map(|l| {
            let row = l.neighbors.iter().map(|n| (n.item, n.similarity.0));
            (l.item, row.collect())
        })
        .collect();
    assert_eq!(lists.len(), 2, "{lists:?}");
    assert_eq!(lists[0].0, A);
    assert_eq!(
        lists[0].1.iter().map(|n| n.0).collect::<Vec<_>>(),
        [C, A],
        "A's indicators, best first (i = j allowed)"
    );
    assert_close(lists[0].1[0].1, ac, "dataflow A,C");
    assert_close(lists[0].1[1].1, aa, "dataflow A,A");
    assert_eq!(lists[1].0, B);
    assert_eq!(lists[1].1.len(), 1);
    assert_eq!(lists[1].1[0].0, C);
    assert_close(lists[1].1[0].1, bc, "dataflow B,C");

    let by_user = |user: Id| {
        let list = recommendations.iter().find(|r| r.user == user).unwrap();
        let items: Vec<(Id, f64)> = list.items.iter().map(|s| (s.item, s.score.0)).collect();
        (list.popular, items)
    };
    // u13 only viewed C: scored by the cross lists alone.
    let (popular, items) = by_user(13);
    assert!(!popular);
    assert_eq!(items.iter().map(|s| s.0).collect::<Vec<_>>(), [A, B]);
    assert_close(items[0].1, ac, "u13 A");
    assert_close(items[1].1, bc, "u13 B");
    // u10 bought A (weight 5; c_AB = 1) and viewed A and C (weight 1):
    // B = 5 · 1 + 1 · llr(B,C); A is seen (bought), C was never bought.
    let (popular, items) = by_user(10);
    assert!(!popular);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].0, B);
    let llr_bc = lists[1].1[0].1;
    assert_eq!(
        items[0].1,
        5.0 + llr_bc,
        "primary term first, then indicator"
    );
    // u14 viewed B, which no list holds: popular purchases, ties by id.
    let (popular, items) = by_user(14);
    assert!(popular);
    assert_eq!(items, [(A, 2.0), (B, 2.0)]);
}

#[test]
fn indicator_needs_a_distinct_primary_action() {
    let indicator_alone = CfConfig {
        indicator_action: Some(Action::View),
        trend_weight: 0.0,
        mf_weight: 0.0,
        ..CfConfig::default()
    };
    assert!(indicator_alone.validate().is_err());
    let same = CfConfig {
        primary_action: Some(Action::View),
        ..indicator_alone.clone()
    };
    assert!(same.validate().is_err());
    let both = CfConfig {
        primary_action: Some(Action::Purchase),
        ..indicator_alone
    };
    assert!(both.validate().is_ok());
    assert!(CfConfig::default().validate().is_ok());
    // The trend is ranked on demand only, which an indicator is not.
    let with_trend = CfConfig {
        trend_weight: 0.5,
        ..both
    };
    assert!(with_trend.validate().is_err());
}

/// Like [`run`], returning the cross-similar items instead of similar items.
fn run_cross(events: Vec<Event>, config: CfConfig) -> (Vec<SimilarItems>, Vec<Recommendations>) {
    let (cross_send, cross_recv) = std::sync::mpsc::channel();
    let (recs_send, recs_recv) = std::sync::mpsc::channel();
    let senders = Arc::new(Mutex::new((cross_send, recs_send)));
    timely::execute(timely::Config::process(1), move |worker| {
        let (cross_send, recs_send) = senders.lock().unwrap().clone();
        let mut input = worker.dataflow::<u64, _, _>(|scope| {
            let (input, events) = scope.new_collection::<Event, isize>();
            let outputs = collaborative_filtering(events, &config);
            let recommendations = outputs.recommendations();
            let cross = outputs
                .cross_similar_items
                .expect("an indicator is configured");
            cross.inner.capture_into(cross_send);
            recommendations.inner.capture_into(recs_send);
            input
        });
        for event in &events {
            input.insert(event.clone());
        }
    })
    .expect("timely run");
    (
        final_records(cross_recv.extract()),
        final_records(recs_recv.extract()),
    )
}
