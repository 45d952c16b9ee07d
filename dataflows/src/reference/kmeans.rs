//! From-scratch k-means segments: the model a refit fits over the profiles
//! of a time, and each user's cluster under a model, written out step by
//! step from the definition in [`crate::kmeans`] (the shared parts are the
//! feature values and the seeded stream, which define the input).

use std::collections::BTreeMap;

use crate::kmeans::{vector, Cluster, KMeansConfig, KMeansModel};
use crate::profile::Profile;
use crate::seeded::Stream;
use crate::time::DAY_MS;
use crate::{Id, Score};

/// The model fitted over `profiles` (the profiles of one time); none when
/// no user has a vector.
pub fn fit(profiles: &BTreeMap<Id, Profile>, config: &KMeansConfig) -> Option<KMeansModel> {
    let raw: Vec<Vec<f64>> = profiles
        .values()
        .filter_map(|profile| vector(profile, config))
        .collect();
    if raw.is_empty() {
        return None;
    }
    let n = raw.len();
    let d = config.features.len();

    // Standardise each feature by its mean and population deviation.
    let mut means = vec![0.0; d];
    let mut scales = vec![1.0; d];
    for j in 0..d {
        let mut total = 0.0;
        for v in &raw {
            total += v[j];
        }
        means[j] = total / n as f64;
        let mut squares = 0.0;
        for v in &raw {
            let deviation = v[j] - means[j];
            squares += deviation * deviation;
        }
        let variance = squares / n as f64;
        if variance > 0.0 {
            scales[j] = variance.sqrt();
        }
    }
    let mut points = Vec::with_capacity(n);
    for v in &raw {
        let mut point = Vec::with_capacity(d);
        for j in 0..d {
            point.push((v[j] - means[j]) / scales[j]);
        }
        points.push(point);
    }

    // k-means++ seeding.
    let mut stream = Stream::new(config.seed);
    let mut centres: Vec<Vec<f64>> = Vec::new();
    centres.push(points[stream.below(n)].clone());
    while centres.len() < config.k {
        let mut weights = Vec::with_capacity(n);
        let mut total = 0.0;
        for point in &points {
            let (_, squared) = closest(point, &centres);
            weights.push(squared);
            total += squared;
        }
        if total <= 0.0 {
            break;
        }
        let target = stream.unit() * total;
        let mut running = 0.0;
        let mut chosen = None;
        let mut last_positive = 0;
        for (i, weight) in weights.iter().enumerate() {
            if *weight > 0.0 {
                running += weight;
                last_positive = i;
                if running > target {
                    chosen = Some(i);
                    break;
                }
            }
        }
        centres.push(points[chosen.unwrap_or(last_positive)].clone());
    }

    // Lloyd's iterations.
    let mut labels: Vec<Option<usize>> = vec![None; n];
    let mut iterations = 0u32;
    while (iterations as usize) < config.max_iterations {
        let new_labels: Vec<Option<usize>> = points
            .iter()
            .map(|point| Some(closest(point, &centres).0))
            .collect();
        if new_labels == labels {
            break;
        }
        labels = new_labels;
        iterations += 1;
        for (c, centre) in centres.iter_mut().enumerate() {
            let members: Vec<&Vec<f64>> = points
                .iter()
                .zip(&labels)
                .filter(|(_, label)| **label == Some(c))
                .map(|(point, _)| point)
                .collect();
            if members.is_empty() {
                continue;
            }
            for (j, value) in centre.iter_mut().enumerate() {
                let mut total = 0.0;
                for member in &members {
                    total += member[j];
                }
                *value = total / members.len() as f64;
            }
        }
    }

    let mut sizes = vec![0u64; centres.len()];
    let mut inertia = 0.0;
    for point in &points {
        let (c, squared) = closest(point, &centres);
        sizes[c] += 1;
        inertia += squared;
    }
    Some(KMeansModel {
        features: config.features.clone(),
        means: means.into_iter().map(Score).collect(),
        scales: scales.into_iter().map(Score).collect(),
        centroids: centres
            .into_iter()
            .map(|centre| centre.into_iter().map(Score).collect())
            .collect(),
        sizes,
        inertia: Score(inertia),
        iterations,
        users: n as u64,
    })
}

/// The refits over a log, given the profiles at each time they change, in
/// time order (times in ms). The rule of [`crate::kmeans`]: refit at the
/// first time some user has a vector; then when `refit_days` have passed
/// since the last refit, or when that refit found fewer than `k` centroids
/// and the users with a vector have at least doubled since.
pub fn refits(
    changes: &[(u64, BTreeMap<Id, Profile>)],
    config: &KMeansConfig,
) -> Vec<(u64, KMeansModel)> {
    let period = config.refit_days * DAY_MS;
    let mut refits: Vec<(u64, KMeansModel)> = Vec::new();
    for (now, profiles) in changes {
        let with_vector = profiles
            .values()
            .filter(|profile| vector(profile, config).is_some())
            .count() as u64;
        let due = match refits.last() {
            None => true,
            Some((at, model)) => {
                let period_passed = *now >= at + period;
                let too_few = model.centroids.len() < config.k;
                period_passed || (too_few && with_vector >= 2 * model.users)
            }
        };
        if due {
            if let Some(model) = fit(profiles, config) {
                refits.push((*now, model));
            }
        }
    }
    refits
}

/// Each user's cluster under `model`: the nearest centroid to their
/// standardised vector, ties to the lowest id.
pub fn clusters(
    profiles: &BTreeMap<Id, Profile>,
    model: &KMeansModel,
    config: &KMeansConfig,
) -> BTreeMap<Id, Cluster> {
    let centres: Vec<Vec<f64>> = model
        .centroids
        .iter()
        .map(|centre| centre.iter().map(|x| x.0).collect())
        .collect();
    let mut clusters = BTreeMap::new();
    for (user, profile) in profiles {
        let Some(raw) = vector(profile, config) else {
            continue;
        };
        let point: Vec<f64> = (0..raw.len())
            .map(|j| (raw[j] - model.means[j].0) / model.scales[j].0)
            .collect();
        let (id, squared) = closest(&point, &centres);
        let cluster = Cluster {
            id: id as u32,
            distance: Score(squared.sqrt()),
        };
        clusters.insert(*user, cluster);
    }
    clusters
}

/// The closest centre (first of equals) and its squared distance.
fn closest(point: &[f64], centres: &[Vec<f64>]) -> (usize, f64) {
    let mut best = 0;
    let mut best_squared = f64::INFINITY;
    for (c, centre) in centres.iter().enumerate() {
        let mut squared = 0.0;
        for j in 0..point.len() {
            let difference = point[j] - centre[j];
            squared += difference * difference;
        }
        if squared < best_squared {
            best = c;
            best_squared = squared;
        }
    }
    (best, best_squared)
}
