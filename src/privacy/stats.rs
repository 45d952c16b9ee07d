//! Differentially private aggregate statistics (`persona export-stats`,
//! `POST /v1/stats`): users per segment, per top category, per value of a
//! user attribute and per item, with noise that OpenDP calibrates to the
//! requested ε (and δ), charged to a privacy budget kept in a ledger file.
//!
//! Two datasets are neighbours when one has a user the other has not, with
//! all their events (what forgetting removes). Each user counts in at most
//! one segment, one top category and one attribute value, and in at most
//! `max_items_per_user` items, each once: that bound is the sensitivity the
//! noise is calibrated to. The segments are a fixed list, released whole
//! with Laplace noise (pure ε). Categories, attribute values and items are
//! data: a key released at all says someone has it, so those go through
//! OpenDP's Laplace threshold mechanism, which drops noisy counts under a
//! threshold and costs a δ besides ε.
//!
//! Releases compose: the ε and δ of every release add up, and a release
//! that would take the ledger's total past `[privacy.stats]` budget is
//! refused before any noise is drawn.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use opendp::domains::{AtomDomain, MapDomain, VectorDomain};
use opendp::measurements::{make_laplace, make_laplace_threshold};
use opendp::measures::{Approximate, MaxDivergence};
use opendp::metrics::{AbsoluteDistance, L01InfDistance, L1Distance};
use persona_dataflows::profile::Segment;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::StatsConfig;

/// A statistic a release may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Statistic {
    /// Users per RFM segment (every segment, zeros included).
    UsersPerSegment,
    /// Users per first category of their `top_categories`.
    UsersPerTopCategory,
    /// Users per value of the `[privacy.stats] attribute`.
    UsersPerAttribute,
    /// Users per item of their collaborative-filtering history, at most
    /// `max_items_per_user` items per user.
    UsersPerItem,
}

impl Statistic {
    pub const ALL: [Statistic; 4] = [
        Statistic::UsersPerSegment,
        Statistic::UsersPerTopCategory,
        Statistic::UsersPerAttribute,
        Statistic::UsersPerItem,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Statistic::UsersPerSegment => "users_per_segment",
            Statistic::UsersPerTopCategory => "users_per_top_category",
            Statistic::UsersPerAttribute => "users_per_attribute",
            Statistic::UsersPerItem => "users_per_item",
        }
    }

    pub fn parse(name: &str) -> Option<Statistic> {
        Statistic::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// What one user adds to the statistics, as the profiles show it.
#[derive(Clone, Debug, Default)]
pub struct Contribution {
    pub segment: &'static str,
    pub top_category: Option<String>,
    pub attribute: Option<String>,
    /// The user's items, preferred first: the first `max_items_per_user`
    /// count.
    pub items: Vec<String>,
}

/// What a release asks for: its share of the budget, split evenly over
/// the statistics (and δ over those that need one).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub epsilon: f64,
    #[serde(default)]
    pub delta: Option<f64>,
    /// Default: every statistic.
    #[serde(default)]
    pub statistics: Option<Vec<Statistic>>,
}

/// Why a release was not made.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "the release needs ε {epsilon} and δ {delta}, but the ledger has spent ε {spent_epsilon} \
         and δ {spent_delta} of the budget of ε {budget_epsilon} and δ {budget_delta}"
    )]
    OverBudget {
        epsilon: f64,
        delta: f64,
        spent_epsilon: f64,
        spent_delta: f64,
        budget_epsilon: f64,
        budget_delta: f64,
    },
    #[error("privacy ledger {path}: {message}")]
    Ledger { path: String, message: String },
    #[error("the noise: {0}")]
    Noise(String),
}

fn noise_error(error: opendp::error::Error) -> StatsError {
    StatsError::Noise(error.to_string())
}

/// The relative slack of a budget check: ε shares that add up to the
/// budget in exact arithmetic may not in floating point.
const ROUNDING: f64 = 1e-9;

/// One line of the ledger.
#[derive(Debug, Serialize, Deserialize)]
struct LedgerEntry {
    at_ms: u64,
    caller: String,
    epsilon: f64,
    delta: f64,
    statistics: Vec<Statistic>,
}

/// The noise of one statistic, as OpenDP calibrated it.
enum Mechanism {
    /// Laplace noise on every key of a fixed list.
    Laplace { scale: f64 },
    /// Laplace noise, and keys whose noisy count is under `threshold`
    /// left out.
    Threshold { scale: f64, threshold: i64 },
}

/// A statistic, its bounded exact counts and the privacy it costs.
struct Planned {
    statistic: Statistic,
    counts: BTreeMap<String, i64>,
    mechanism: Mechanism,
    epsilon: f64,
    delta: f64,
}

/// Releases `request` over `contributions`, on behalf of `caller` (a token
/// name, or `cli`): charges the ledger, then draws the noise. `as_of` is
/// the tick the data is as of.
pub fn release(
    config: &StatsConfig,
    request: &Request,
    contributions: &[Contribution],
    caller: &str,
    as_of: Option<u64>,
) -> Result<Value, StatsError> {
    check_config(config)?;
    let statistics = statistics_of(request)?;
    let planned = plan(config, request, &statistics, contributions)?;
    let epsilon: f64 = planned.iter().map(|p| p.epsilon).sum();
    let delta: f64 = planned.iter().map(|p| p.delta).sum();
    let (spent_epsilon, spent_delta) = charge(
        config,
        LedgerEntry {
            at_ms: now_ms(),
            caller: caller.to_string(),
            epsilon,
            delta,
            statistics: statistics.clone(),
        },
    )?;
    let mut released = serde_json::Map::new();
    for planned in planned {
        released.insert(planned.statistic.name().into(), noisy(planned)?);
    }
    Ok(json!({
        "as_of": as_of,
        "epsilon": epsilon,
        "delta": delta,
        "budget": {
            "epsilon": config.epsilon_budget,
            "delta": config.delta_budget,
            "spent_epsilon": spent_epsilon,
            "spent_delta": spent_delta,
        },
        "statistics": released,
    }))
}

/// Refuses `request` up front when what it asks for is past what is left
/// of the budget (before a log is read for it); [`release`] checks again
/// with what the noise really costs.
pub fn check_budget(config: &StatsConfig, request: &Request) -> Result<(), StatsError> {
    check_config(config)?;
    let spent = spent(config)?;
    within_budget(
        config,
        (request.epsilon, request.delta.unwrap_or(0.0)),
        spent,
    )
}

/// Refuses spending `(epsilon, delta)` on top of `spent` past the budget
/// (up to rounding).
fn within_budget(
    config: &StatsConfig,
    (epsilon, delta): (f64, f64),
    (spent_epsilon, spent_delta): (f64, f64),
) -> Result<(), StatsError> {
    let over = |spent: f64, budget: f64| spent > budget * (1.0 + ROUNDING);
    if over(spent_epsilon + epsilon, config.epsilon_budget)
        || over(spent_delta + delta, config.delta_budget)
    {
        return Err(StatsError::OverBudget {
            epsilon,
            delta,
            spent_epsilon,
            spent_delta,
            budget_epsilon: config.epsilon_budget,
            budget_delta: config.delta_budget,
        });
    }
    Ok(())
}

/// The ε and δ the ledger has spent: `(0, 0)` for a ledger not written yet.
pub fn spent(config: &StatsConfig) -> Result<(f64, f64), StatsError> {
    let file = match File::open(&config.ledger) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0.0, 0.0)),
        Err(e) => return Err(ledger_error(&config.ledger, e.to_string())),
    };
    read_spent(&config.ledger, &file)
}

/// A budget that is not a finite number ≥ 0 would let every release
/// through (NaN compares false), so it is refused.
fn check_config(config: &StatsConfig) -> Result<(), StatsError> {
    for (name, budget) in [
        ("epsilon_budget", config.epsilon_budget),
        ("delta_budget", config.delta_budget),
    ] {
        if !(budget.is_finite() && budget >= 0.0) {
            return Err(StatsError::Invalid(format!(
                "[privacy.stats] {name} must be a finite number >= 0, not {budget:?}"
            )));
        }
    }
    Ok(())
}

fn statistics_of(request: &Request) -> Result<Vec<Statistic>, StatsError> {
    let mut statistics = request
        .statistics
        .clone()
        .unwrap_or_else(|| Statistic::ALL.to_vec());
    statistics.sort();
    statistics.dedup();
    if statistics.is_empty() {
        return Err(StatsError::Invalid("no statistic asked for".into()));
    }
    if !(request.epsilon.is_finite() && request.epsilon > 0.0) {
        return Err(StatsError::Invalid(format!(
            "epsilon must be a positive number, not {:?}",
            request.epsilon
        )));
    }
    Ok(statistics)
}

/// Bounds each user's contribution, counts, and calibrates each
/// statistic's noise to its share of ε and δ.
fn plan(
    config: &StatsConfig,
    request: &Request,
    statistics: &[Statistic],
    contributions: &[Contribution],
) -> Result<Vec<Planned>, StatsError> {
    let epsilon = request.epsilon / statistics.len() as f64;
    // The largest noise scale planned below, sensitivity / ε: an ε so small
    // that it is not a number would fail deep in the noise's construction.
    if !(config.max_items_per_user.max(1) as f64 / epsilon).is_finite() {
        return Err(StatsError::Invalid(format!(
            "epsilon {:?} is too small: the noise's scale, sensitivity / epsilon, is not finite",
            request.epsilon
        )));
    }
    let thresholded = statistics
        .iter()
        .filter(|s| **s != Statistic::UsersPerSegment)
        .count();
    let delta = match (thresholded, request.delta) {
        (0, _) => 0.0,
        (_, Some(delta)) if delta > 0.0 && delta < 1.0 => delta / thresholded as f64,
        (_, Some(delta)) => {
            return Err(StatsError::Invalid(format!(
                "delta must be in (0, 1), not {delta:?}"
            )))
        }
        (_, None) => {
            return Err(StatsError::Invalid(
                "users per top category, attribute or item need a delta: a key \
                 released at all tells that someone has it"
                    .into(),
            ))
        }
    };
    let max_items = config.max_items_per_user.max(1) as usize;
    statistics
        .iter()
        .map(|&statistic| {
            let counts = counts(statistic, contributions, max_items);
            if statistic == Statistic::UsersPerSegment {
                // One user is in one segment: L1 sensitivity 1.
                let scale = 1.0 / epsilon;
                let spent = laplace(scale)?.map(&1).map_err(noise_error)?;
                return Ok(Planned {
                    statistic,
                    counts,
                    mechanism: Mechanism::Laplace { scale },
                    epsilon: spent,
                    delta: 0.0,
                });
            }
            // A user in at most `keys` keys, once in each.
            let keys = if statistic == Statistic::UsersPerItem {
                max_items as u32
            } else {
                1
            };
            let sensitivity = (keys, i64::from(keys), 1);
            let scale = f64::from(keys) / epsilon;
            let threshold = threshold_for(scale, sensitivity, delta)?;
            let (spent_epsilon, spent_delta) = laplace_threshold(scale, threshold)?
                .map(&sensitivity)
                .map_err(noise_error)?;
            Ok(Planned {
                statistic,
                counts,
                mechanism: Mechanism::Threshold { scale, threshold },
                epsilon: spent_epsilon,
                delta: spent_delta,
            })
        })
        .collect()
}

/// The exact counts of `statistic`, each user bounded to one key (items:
/// `max_items`).
fn counts(
    statistic: Statistic,
    contributions: &[Contribution],
    max_items: usize,
) -> BTreeMap<String, i64> {
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    if statistic == Statistic::UsersPerSegment {
        for segment in Segment::ALL {
            counts.insert(segment.name().into(), 0);
        }
    }
    for contribution in contributions {
        let keys: Vec<&String> = match statistic {
            Statistic::UsersPerSegment => {
                *counts.entry(contribution.segment.into()).or_default() += 1;
                continue;
            }
            Statistic::UsersPerTopCategory => contribution.top_category.iter().collect(),
            Statistic::UsersPerAttribute => contribution.attribute.iter().collect(),
            Statistic::UsersPerItem => {
                let mut items: Vec<&String> = Vec::with_capacity(max_items);
                for item in &contribution.items {
                    if items.len() == max_items {
                        break;
                    }
                    if !items.contains(&item) {
                        items.push(item);
                    }
                }
                items
            }
        };
        for key in keys {
            *counts.entry(key.clone()).or_default() += 1;
        }
    }
    counts
}

type Laplace = opendp::core::Measurement<
    VectorDomain<AtomDomain<i64>>,
    L1Distance<i64>,
    MaxDivergence,
    Vec<i64>,
>;

type LaplaceThreshold = opendp::core::Measurement<
    MapDomain<AtomDomain<String>, AtomDomain<i64>>,
    L01InfDistance<AbsoluteDistance<i64>>,
    Approximate<MaxDivergence>,
    HashMap<String, i64>,
>;

fn laplace(scale: f64) -> Result<Laplace, StatsError> {
    make_laplace(
        VectorDomain::new(AtomDomain::<i64>::default()),
        L1Distance::<i64>::default(),
        scale,
        None,
    )
    .map_err(noise_error)
}

fn laplace_threshold(scale: f64, threshold: i64) -> Result<LaplaceThreshold, StatsError> {
    make_laplace_threshold(
        MapDomain::new(
            AtomDomain::<String>::default(),
            AtomDomain::<i64>::new_non_nan(),
        ),
        L01InfDistance::<AbsoluteDistance<i64>>::default(),
        scale,
        threshold,
        None,
    )
    .map_err(noise_error)
}

/// The smallest threshold whose δ (by OpenDP's privacy map) is at most
/// `delta`.
fn threshold_for(scale: f64, sensitivity: (u32, i64, i64), delta: f64) -> Result<i64, StatsError> {
    let delta_at = |threshold: i64| -> Result<f64, StatsError> {
        let (_, delta) = laplace_threshold(scale, threshold)?
            .map(&sensitivity)
            .map_err(noise_error)?;
        Ok(delta)
    };
    let (mut low, mut high) = (1_i64, 1_i64 << 40);
    if delta_at(high)? > delta {
        return Err(StatsError::Invalid(format!(
            "no threshold gets δ down to {delta} at noise scale {scale}: ask for a larger delta"
        )));
    }
    while low < high {
        let middle = low + (high - low) / 2;
        if delta_at(middle)? <= delta {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    Ok(low)
}

/// The released counts of one statistic.
fn noisy(planned: Planned) -> Result<Value, StatsError> {
    let Planned {
        statistic: _,
        counts,
        mechanism,
        epsilon,
        delta,
    } = planned;
    match mechanism {
        Mechanism::Laplace { scale } => {
            let (keys, values): (Vec<String>, Vec<i64>) = counts.into_iter().unzip();
            let noisy = laplace(scale)?.invoke(&values).map_err(noise_error)?;
            let released: BTreeMap<String, i64> = keys.into_iter().zip(noisy).collect();
            Ok(json!({
                "mechanism": "laplace",
                "epsilon": epsilon,
                "delta": delta,
                "scale": scale,
                "counts": released,
            }))
        }
        Mechanism::Threshold { scale, threshold } => {
            let counts: HashMap<String, i64> = counts.into_iter().collect();
            let noisy = laplace_threshold(scale, threshold)?
                .invoke(&counts)
                .map_err(noise_error)?;
            let released: BTreeMap<String, i64> = noisy.into_iter().collect();
            Ok(json!({
                "mechanism": "laplace_threshold",
                "epsilon": epsilon,
                "delta": delta,
                "scale": scale,
                "threshold": threshold,
                "counts": released,
            }))
        }
    }
}

/// Adds `entry` to the ledger unless it takes the total past the budget;
/// returns the total spent with it. The ledger is locked meanwhile, so two
/// processes releasing at once cannot both spend the last of the budget.
fn charge(config: &StatsConfig, entry: LedgerEntry) -> Result<(f64, f64), StatsError> {
    let path = &config.ledger;
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .map_err(|e| ledger_error(path, e.to_string()))?;
    file.lock().map_err(|e| ledger_error(path, e.to_string()))?;
    let (spent_epsilon, spent_delta) = read_spent(path, &file)?;
    within_budget(
        config,
        (entry.epsilon, entry.delta),
        (spent_epsilon, spent_delta),
    )?;
    let (epsilon, delta) = (spent_epsilon + entry.epsilon, spent_delta + entry.delta);
    let mut line = serde_json::to_vec(&entry).expect("a ledger entry serialises");
    line.push(b'\n');
    file.write_all(&line)
        .and_then(|()| file.sync_all())
        .map_err(|e| ledger_error(path, e.to_string()))?;
    Ok((epsilon, delta))
}

fn read_spent(path: &Path, file: &File) -> Result<(f64, f64), StatsError> {
    let (mut epsilon, mut delta) = (0.0, 0.0);
    for (number, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| ledger_error(path, e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: LedgerEntry = serde_json::from_str(&line)
            .map_err(|e| ledger_error(path, format!("line {}: {e}", number + 1)))?;
        epsilon += entry.epsilon;
        delta += entry.delta;
    }
    Ok((epsilon, delta))
}

fn ledger_error(path: &Path, message: String) -> StatsError {
    StatsError::Ledger {
        path: path.display().to_string(),
        message,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(ledger: &Path, epsilon_budget: f64) -> StatsConfig {
        StatsConfig {
            ledger: ledger.to_path_buf(),
            epsilon_budget,
            delta_budget: 1e-3,
            attribute: "country".into(),
            max_items_per_user: 3,
        }
    }

    fn users(n: usize) -> Vec<Contribution> {
        (0..n)
            .map(|u| Contribution {
                segment: Segment::ALL[u % 7].name(),
                top_category: Some(format!("c{}", u % 3)),
                attribute: Some(["GB", "FR"][u % 2].into()),
                items: (0..(u % 6)).map(|i| format!("i{i}")).collect(),
            })
            .collect()
    }

    #[test]
    fn one_user_counts_in_at_most_max_items_items() {
        let mut heavy = users(1);
        heavy[0].items = (0..50).map(|i| format!("i{}", i % 20)).collect();
        let counts = counts(Statistic::UsersPerItem, &heavy, 3);
        assert_eq!(counts.values().sum::<i64>(), 3);
        assert_eq!(counts.keys().collect::<Vec<_>>(), ["i0", "i1", "i2"]);
        let segments = counts_of(Statistic::UsersPerSegment, &users(14));
        assert_eq!(segments.len(), 7);
        assert!(segments.values().all(|&c| c == 2));
    }

    fn counts_of(statistic: Statistic, contributions: &[Contribution]) -> BTreeMap<String, i64> {
        counts(statistic, contributions, 3)
    }

    /// Laplace noise of scale b has mean 0, variance 2b² and
    /// P(|X| <= b·ln 2) = 1/2; over 7,000 draws each figure is within
    /// bounds a correct sampler leaves with odds below 1e-6.
    #[test]
    fn the_noise_of_segments_follows_the_laplace_distribution() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(&dir.path().join("ledger.jsonl"), 1e9);
        let contributions = users(700);
        let exact = counts_of(Statistic::UsersPerSegment, &contributions);
        let request = Request {
            epsilon: 0.25,
            delta: None,
            statistics: Some(vec![Statistic::UsersPerSegment]),
        };
        let scale = 4.0;
        let mut noise = Vec::new();
        for _ in 0..1000 {
            let released = release(&config, &request, &contributions, "test", None).unwrap();
            let segments = &released["statistics"]["users_per_segment"];
            assert_eq!(segments["scale"], scale);
            for (segment, count) in segments["counts"].as_object().unwrap() {
                noise.push((count.as_i64().unwrap() - exact[segment]) as f64);
            }
        }
        let n = noise.len() as f64;
        let mean = noise.iter().sum::<f64>() / n;
        let variance = noise.iter().map(|x| x * x).sum::<f64>() / n;
        // sd of the mean: sqrt(2b²/n) ≈ 0.068; of the variance: ≈ 1.7.
        assert!(mean.abs() < 0.4, "mean {mean}");
        assert!(
            (variance - 2.0 * scale * scale).abs() < 9.0,
            "variance {variance}"
        );
        // The discrete Laplace's median of |X|: P(|X| <= 2) ≈ 0.45 at b = 4.
        let within = noise.iter().filter(|x| x.abs() <= 2.0).count() as f64 / n;
        let expected = 1.0 - 2.0 * (-3.0_f64 / scale).exp() / (1.0 + (-1.0_f64 / scale).exp());
        assert!((within - expected).abs() < 0.03, "{within} vs {expected}");
        // The ledger has every release.
        let (epsilon, delta) = spent(&config).unwrap();
        assert!((epsilon - 250.0).abs() < 1e-6, "{epsilon}");
        assert_eq!(delta, 0.0);
    }

    #[test]
    fn a_release_over_the_budget_is_refused_and_not_charged() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(&dir.path().join("ledger.jsonl"), 1.0);
        let request = Request {
            epsilon: 0.4,
            delta: Some(1e-4),
            statistics: None,
        };
        let contributions = users(100);
        for _ in 0..2 {
            release(&config, &request, &contributions, "test", Some(0)).unwrap();
        }
        let refused = release(&config, &request, &contributions, "test", Some(0));
        assert!(
            matches!(refused, Err(StatsError::OverBudget { .. })),
            "{refused:?}"
        );
        let (epsilon, delta) = spent(&config).unwrap();
        assert!((epsilon - 0.8).abs() < 1e-9, "{epsilon}");
        assert!(delta <= 2e-4 && delta > 0.0, "{delta}");
        // What is left can still be spent.
        let rest = Request {
            epsilon: 0.2,
            ..request
        };
        release(&config, &rest, &contributions, "test", Some(0)).unwrap();
    }

    #[test]
    fn thresholds_hide_rare_keys_and_keep_common_ones() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(&dir.path().join("ledger.jsonl"), 10.0);
        let mut contributions = users(3000);
        contributions[0].attribute = Some("rare".into());
        let request = Request {
            epsilon: 1.0,
            delta: Some(1e-6),
            statistics: Some(vec![Statistic::UsersPerAttribute]),
        };
        let released = release(&config, &request, &contributions, "test", None).unwrap();
        let attribute = &released["statistics"]["users_per_attribute"];
        let threshold = attribute["threshold"].as_i64().unwrap();
        assert!(threshold > 1, "{threshold}");
        let counts = attribute["counts"].as_object().unwrap();
        assert!(!counts.contains_key("rare"), "{counts:?}");
        assert!(counts["GB"].as_i64().unwrap() > 1400, "{counts:?}");
        assert!(attribute["delta"].as_f64().unwrap() <= 1e-6);
    }

    #[test]
    fn bad_requests_are_refused_with_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(&dir.path().join("ledger.jsonl"), 1.0);
        let no_delta = Request {
            epsilon: 0.1,
            delta: None,
            statistics: None,
        };
        let error = release(&config, &no_delta, &users(5), "test", None).unwrap_err();
        assert!(error.to_string().contains("need a delta"), "{error}");
        let negative = Request {
            epsilon: -1.0,
            delta: None,
            statistics: Some(vec![Statistic::UsersPerSegment]),
        };
        let error = release(&config, &negative, &users(5), "test", None).unwrap_err();
        assert!(error.to_string().contains("epsilon must be"), "{error}");
        for tiny in [5e-324, 1e-310] {
            let tiny = Request {
                epsilon: tiny,
                delta: Some(1e-6),
                statistics: None,
            };
            let error = release(&config, &tiny, &users(5), "test", None).unwrap_err();
            assert!(
                matches!(&error, StatsError::Invalid(text) if text.contains("too small")),
                "{error}"
            );
        }
        let unbounded = StatsConfig {
            epsilon_budget: f64::NAN,
            ..config.clone()
        };
        let segments = Request {
            epsilon: 0.1,
            ..negative
        };
        let error = release(&unbounded, &segments, &users(5), "test", None).unwrap_err();
        assert!(
            error.to_string().contains("epsilon_budget must be"),
            "{error}"
        );
        assert_eq!(spent(&config).unwrap(), (0.0, 0.0));
    }
}
