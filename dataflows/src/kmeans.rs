//! K-means user segments: users clustered by a few profile features, the
//! centroids refitted periodically and every changed user assigned to the
//! nearest centroid in between.
//!
//! A user's **vector** is the configured features of their profile
//! ([`Feature`]), counts and spend through `ln(1 + x)` with `log_scale`,
//! then standardised with the mean and population standard deviation of
//! the users at the last refit (a constant feature gets scale 1).
//!
//! A **refit** happens at a time the profiles change ([`refit_due`]): the
//! first time a user has a vector; `refit_days` or more after the last
//! refit; or, while the model has fewer than `k` centroids (too few
//! distinct vectors when it was fitted), once the users with a vector have
//! doubled since then — so a start does not keep a degenerate model for a
//! whole period, and a log with fewer distinct vectors than `k` does not
//! refit at every time. The centroids come from k-means++ seeding (the
//! seeded stream of [`crate::seeded`], users in id order) and Lloyd's
//! iterations until no assignment changes or `max_iterations` (see [`fit`]).
//! Every user is then assigned again. Between refits, a user whose profile
//! changes is assigned to the nearest centroid of the current model at each
//! time. So at any time a user's cluster is the nearest centroid (ties: the
//! lowest id) of the model fitted at the last refit, to their vector of that
//! time: [`crate::reference::kmeans`] recomputes it from scratch.
//!
//! The model is global, so one operator on worker 0 holds every user's
//! profile and vector; with it the output is the same for any number of
//! workers. Arithmetic is `f64` in user-id order, with no parallel reduction:
//! the same log gives the same bits.
//!
//! With `forgotten` (users forgotten while serving or running), it keeps
//! each time's changed vectors, and a time that forgets users replays the
//! refits on them without theirs ([`last_refit`]): when refits happen
//! depends on how many users had a vector, so the model is then the one a
//! replay without them fits, and every user is assigned to it again.

use std::collections::{BTreeMap, BTreeSet};

use differential_dataflow::collection::AsCollection;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;

use crate::profile::Profile;
use crate::seeded::Stream;
use crate::time::{hold_earliest, DAY_MS};
use crate::{Action, EventTime, Id, Score};

/// The largest `k`: seeding and every Lloyd pass cost users × k.
pub const MAX_K: usize = 1000;

/// `[segments.kmeans]`: k-means user segments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KMeansConfig {
    /// Clusters. Default 5.
    pub k: usize,
    /// The profile features that form a user's vector, each once. Default
    /// recency, frequency, spend (RFM).
    pub features: Vec<Feature>,
    /// Counts and spend through `ln(1 + x)` (negative values as 0) before
    /// standardising: they are heavy-tailed. Default true.
    pub log_scale: bool,
    /// Seeds the k-means++ draws. Default 0.
    pub seed: u64,
    /// Days of event time between refits. Default 7.
    pub refit_days: u64,
    /// Lloyd's iterations at most per refit. Default 100.
    pub max_iterations: usize,
}

impl Default for KMeansConfig {
    fn default() -> Self {
        KMeansConfig {
            k: 5,
            features: vec![Feature::Recency, Feature::Frequency, Feature::Spend],
            log_scale: true,
            seed: 0,
            refit_days: 7,
            max_iterations: 100,
        }
    }
}

impl KMeansConfig {
    /// Checks what serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_K).contains(&self.k) {
            return Err(format!("k: must be 1 to {MAX_K}"));
        }
        if self.features.is_empty() {
            return Err("features: name at least one feature".into());
        }
        for (at, feature) in self.features.iter().enumerate() {
            if self.features[..at].contains(feature) {
                return Err(format!("features: {feature:?} given twice"));
            }
        }
        if self.refit_days == 0 {
            return Err("refit_days: must be at least 1".into());
        }
        if self.max_iterations == 0 {
            return Err("max_iterations: must be at least 1".into());
        }
        Ok(())
    }

    fn refit_ms(&self) -> u64 {
        self.refit_days.saturating_mul(DAY_MS)
    }
}

/// A profile feature of a user's vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// How long ago the user was last seen. Only differences count once
    /// standardised, so the vector holds minus the day of `last_seen`
    /// (days since the epoch, as a fraction): recency shifted by a
    /// constant, which does not change while the user is away.
    Recency,
    /// Purchase records less cancellation records.
    Frequency,
    /// Net spend, in major units.
    Spend,
    /// Records of every action.
    Events,
    DistinctItems,
    DistinctCategories,
    /// Average rating in stars; 0 without ratings.
    AvgRating,
    /// The affinity of the user's best category; 0 without one.
    TopAffinity,
}

impl Feature {
    /// The feature's value in `profile`, before standardising.
    fn value(self, profile: &Profile, log_scale: bool) -> f64 {
        let log = |x: f64| if log_scale { x.max(0.0).ln_1p() } else { x };
        match self {
            Feature::Recency => -(profile.last_seen.unwrap_or(0) as f64) / DAY_MS as f64,
            Feature::Frequency => log((profile.counts[&Action::Purchase]
                - profile.counts[&Action::Cancellation])
                as f64),
            Feature::Spend => log(profile.spend as f64 / 100.0),
            Feature::Events => log(profile.counts.iter().map(|(_, n)| n).sum::<i64>() as f64),
            Feature::DistinctItems => log(profile.distinct_items as f64),
            Feature::DistinctCategories => log(profile.distinct_categories as f64),
            Feature::AvgRating => profile.avg_rating.map_or(0.0, |r| r.0),
            Feature::TopAffinity => profile.top_categories.first().map_or(0.0, |c| c.affinity.0),
        }
    }
}

/// The features of `profile` in `config`'s order, before standardising (a
/// value that is not finite, from an extreme spend, as 0); none for a user
/// never seen (no `last_seen`), who has no cluster.
pub fn vector(profile: &Profile, config: &KMeansConfig) -> Option<Vec<f64>> {
    profile.last_seen?;
    let values = config.features.iter();
    let value = |f: &Feature| Some(f.value(profile, config.log_scale)).filter(|x| x.is_finite());
    Some(values.map(|f| value(f).unwrap_or(0.0)).collect())
}

/// A user's segment: the nearest centroid and the Euclidean distance to it,
/// in standardised units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cluster {
    pub id: u32,
    pub distance: Score,
}

/// The model of one refit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KMeansModel {
    pub features: Vec<Feature>,
    /// Per feature, the mean and the scale that standardise it.
    pub means: Vec<Score>,
    pub scales: Vec<Score>,
    /// Per cluster, its centre in standardised units; fewer than `k` when
    /// fewer distinct vectors exist.
    pub centroids: Vec<Vec<Score>>,
    /// Per cluster, the users nearest to it at the refit.
    pub sizes: Vec<u64>,
    /// Σ squared distance of each user to their centroid, at the refit.
    pub inertia: Score,
    /// Lloyd's iterations that changed an assignment.
    pub iterations: u32,
    /// Users the model was fitted on.
    pub users: u64,
}

impl KMeansModel {
    /// The nearest centroid to a vector of [`vector`] (ties: the lowest id).
    pub fn assign(&self, vector: &[f64]) -> Cluster {
        let point = self.standardise(vector);
        let centres = self.centroids.iter().map(|c| c.iter().map(|x| x.0));
        let (id, squared) = nearest(&point, centres);
        Cluster {
            id: id as u32,
            distance: Score(squared.sqrt()),
        }
    }

    /// A vector of [`vector`] in the model's standardised units.
    pub fn standardise(&self, vector: &[f64]) -> Vec<f64> {
        let scaling = self.means.iter().zip(&self.scales);
        standardise(vector, scaling.map(|(mean, scale)| (mean.0, scale.0)))
    }
}

/// `vector` less each mean, over each scale.
fn standardise(vector: &[f64], scaling: impl Iterator<Item = (f64, f64)>) -> Vec<f64> {
    let pairs = vector.iter().zip(scaling);
    pairs.map(|(x, (mean, scale))| (x - mean) / scale).collect()
}

/// Fits k-means to `vectors` (of [`vector`], in user-id order): standardise;
/// seed with k-means++ (the first centre uniform, each next drawn with
/// probability proportional to the squared distance to the nearest centre
/// so far, stopping early when every vector is a centre); then Lloyd's
/// iterations (assign each vector to its nearest centre, ties to the lowest
/// id; move each centre to the mean of its vectors, an empty one stays)
/// until no assignment changes or `max_iterations`. None without vectors.
pub fn fit(vectors: &[Vec<f64>], config: &KMeansConfig) -> Option<KMeansModel> {
    let n = vectors.len();
    if n == 0 {
        return None;
    }
    let dims = config.features.len();
    let (means, scales) = scaling(vectors, dims);
    let scaling = || means.iter().copied().zip(scales.iter().copied());
    let points: Vec<Vec<f64>> = vectors.iter().map(|v| standardise(v, scaling())).collect();

    let mut stream = Stream::new(config.seed);
    let mut centroids = vec![points[stream.below(n)].clone()];
    let mut to_nearest: Vec<f64> = points
        .iter()
        .map(|p| squared(p, centroids[0].iter().copied()))
        .collect();
    while centroids.len() < config.k {
        let total: f64 = to_nearest.iter().sum();
        if total <= 0.0 {
            break;
        }
        let next = draw_weighted(&to_nearest, stream.unit() * total);
        centroids.push(points[next].clone());
        for (point, d) in points.iter().zip(&mut to_nearest) {
            *d = d.min(squared(
                point,
                centroids[centroids.len() - 1].iter().copied(),
            ));
        }
    }

    let mut assignment = vec![usize::MAX; n];
    let mut iterations = 0;
    for _ in 0..config.max_iterations {
        let mut changed = false;
        for (point, assigned) in points.iter().zip(&mut assignment) {
            let (id, _) = nearest(point, as_values(&centroids));
            changed |= *assigned != id;
            *assigned = id;
        }
        if !changed {
            break;
        }
        iterations += 1;
        let mut sums = vec![vec![0.0; dims]; centroids.len()];
        let mut counts = vec![0u64; centroids.len()];
        for (point, &id) in points.iter().zip(&assignment) {
            counts[id] += 1;
            for (sum, x) in sums[id].iter_mut().zip(point) {
                *sum += x;
            }
        }
        for ((centroid, sum), count) in centroids.iter_mut().zip(sums).zip(&counts) {
            if *count > 0 {
                *centroid = sum.iter().map(|s| s / *count as f64).collect();
            }
        }
    }

    let mut sizes = vec![0u64; centroids.len()];
    let mut inertia = 0.0;
    for point in &points {
        let (id, squared) = nearest(point, as_values(&centroids));
        sizes[id] += 1;
        inertia += squared;
    }
    Some(KMeansModel {
        features: config.features.clone(),
        means: means.into_iter().map(Score).collect(),
        scales: scales.into_iter().map(Score).collect(),
        centroids: centroids
            .into_iter()
            .map(|c| c.into_iter().map(Score).collect())
            .collect(),
        sizes,
        inertia: Score(inertia),
        iterations,
        users: n as u64,
    })
}

/// Per dimension, the mean and the population standard deviation (1 where
/// it is 0).
fn scaling(vectors: &[Vec<f64>], dims: usize) -> (Vec<f64>, Vec<f64>) {
    let n = vectors.len() as f64;
    let means: Vec<f64> = (0..dims)
        .map(|j| vectors.iter().map(|v| v[j]).sum::<f64>() / n)
        .collect();
    let scales = (0..dims)
        .map(|j| {
            let deviations = vectors
                .iter()
                .map(|v| (v[j] - means[j]) * (v[j] - means[j]));
            let variance = deviations.sum::<f64>() / n;
            if variance > 0.0 {
                variance.sqrt()
            } else {
                1.0
            }
        })
        .collect();
    (means, scales)
}

/// The first index whose running sum of weights passes `target`; the last
/// positive weight if rounding leaves none.
fn draw_weighted(weights: &[f64], target: f64) -> usize {
    let mut running = 0.0;
    let mut last_positive = 0;
    for (i, &w) in weights.iter().enumerate() {
        if w > 0.0 {
            running += w;
            last_positive = i;
            if running > target {
                return i;
            }
        }
    }
    last_positive
}

/// The squared Euclidean distance between two points.
pub fn squared(a: &[f64], b: impl IntoIterator<Item = f64>) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// The nearest centre (ties: the lowest id) and the squared distance to it.
fn nearest<C>(point: &[f64], centres: impl Iterator<Item = C>) -> (usize, f64)
where
    C: IntoIterator<Item = f64>,
{
    let mut best = (0, f64::INFINITY);
    for (id, centre) in centres.enumerate() {
        let d = squared(point, centre);
        if d < best.1 {
            best = (id, d);
        }
    }
    best
}

fn as_values(centres: &[Vec<f64>]) -> impl Iterator<Item = impl Iterator<Item = f64> + '_> {
    centres.iter().map(|c| c.iter().copied())
}

/// Whether a time whose profiles changed refits the model fitted at `last`
/// (see the module documentation), `vectors` being the users with a
/// vector now.
pub fn refit_due<T: EventTime>(
    last: Option<(&T, &KMeansModel)>,
    now: &T,
    vectors: usize,
    config: &KMeansConfig,
) -> bool {
    last.is_none_or(|(at, model)| {
        let degenerate = model.centroids.len() < config.k;
        let doubled = vectors as u64 >= model.users.saturating_mul(2);
        *now >= at.plus_ms(config.refit_ms()) || (degenerate && doubled)
    })
}

/// A change of a user's profile: `((user, profile), diff)`.
type ProfileChange = ((Id, Profile), isize);

/// What arrived for one time: profile changes, and users forgotten.
type Arrived = (Vec<ProfileChange>, Vec<Id>);

/// The vector of each user whose profile changed at a time, after it
/// (none: no profile, or no vector).
type VectorChanges = Vec<(Id, Option<Vec<f64>>)>;

/// The last refit (its time and model) of the operator that saw these
/// changes, time after time: the refits [`segments`] would have made.
pub fn last_refit<T: EventTime>(
    history: &[(T, VectorChanges)],
    config: &KMeansConfig,
) -> Option<(T, KMeansModel)> {
    let mut vectors: BTreeMap<Id, &[f64]> = BTreeMap::new();
    let mut model: Option<(T, KMeansModel)> = None;
    for (now, changes) in history {
        for (user, vector) in changes {
            match vector {
                Some(vector) => vectors.insert(*user, vector),
                None => vectors.remove(user),
            };
        }
        let last = model.as_ref().map(|(at, model)| (at, model));
        if refit_due(last, now, vectors.len(), config) {
            let fitted: Vec<Vec<f64>> = vectors.values().map(|v| v.to_vec()).collect();
            if let Some(refit) = fit(&fitted, config) {
                model = Some((now.clone(), refit));
            }
        }
    }
    model
}

/// A user as the segments operator holds them.
struct Member {
    profile: Profile,
    vector: Option<Vec<f64>>,
    cluster: Option<Cluster>,
}

impl Member {
    fn output(&self) -> Profile {
        Profile {
            cluster: self.cluster,
            ..self.profile.clone()
        }
    }

    /// The member's cluster under `model`.
    fn assign(&self, model: Option<&KMeansModel>) -> Option<Cluster> {
        Some(model?.assign(self.vector.as_deref()?))
    }
}

/// The profiles with their `cluster`, and the model of each refit (one
/// record at a time: the new model replaces the previous one). Users in
/// `forgotten` (a set: each at most once) leave the model when they come.
/// See the module documentation.
///
/// # Panics
///
/// When `config` does not pass [`KMeansConfig::validate`], at construction.
pub fn segments<'s, T: EventTime>(
    profiles: VecCollection<'s, T, (Id, Profile)>,
    forgotten: Option<VecCollection<'s, T, Id>>,
    config: &KMeansConfig,
) -> (
    VecCollection<'s, T, (Id, Profile)>,
    VecCollection<'s, T, KMeansModel>,
) {
    if let Err(error) = config.validate() {
        panic!("{error}");
    }
    let config = config.clone();
    let mut builder = OperatorBuilder::new("Segments".to_string(), profiles.scope());
    let mut input = builder.new_input(profiles.inner, Exchange::new(|_| 0u64));
    // Each time's changed vectors, kept to refit again without forgotten users.
    let mut history: Option<Vec<(T, VectorChanges)>> = forgotten.is_some().then(Vec::new);
    let mut forgotten_input =
        forgotten.map(|users| builder.new_input(users.inner, Exchange::new(|_| 0u64)));
    let (profiles_output, profiles_stream) = builder.new_output();
    let mut profiles_output =
        OutputBuilder::<_, CapacityContainerBuilder<_>>::from(profiles_output);
    let (models_output, models_stream) = builder.new_output();
    let mut models_output = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(models_output);
    builder.build(move |_| {
        let mut arrived: BTreeMap<T, Arrived> = BTreeMap::new();
        let mut held: Option<[Capability<T>; 2]> = None;
        let mut users: BTreeMap<Id, Member> = BTreeMap::new();
        // Users with a vector: those a refit fits.
        let mut vectors = 0usize;
        let mut model: Option<(T, KMeansModel)> = None;
        let mut forgotten: BTreeSet<Id> = BTreeSet::new();
        move |frontiers| {
            input.for_each_stamp(|capability, containers| {
                hold_earliest(&mut held, &capability);
                for container in containers {
                    for (record, time, diff) in container.drain(..) {
                        arrived.entry(time).or_default().0.push((record, diff));
                    }
                }
            });
            if let Some(forgotten_input) = forgotten_input.as_mut() {
                forgotten_input.for_each_stamp(|capability, containers| {
                    hold_earliest(&mut held, &capability);
                    for container in containers {
                        for (user, time, diff) in container.drain(..) {
                            if diff > 0 {
                                arrived.entry(time).or_default().1.push(user);
                            }
                        }
                    }
                });
            }
            let Some([profiles_at, models_at]) = held.as_ref() else {
                return;
            };
            let mut profiles_output = profiles_output.activate();
            let mut profiles = profiles_output.session(profiles_at);
            let mut models_output = models_output.activate();
            let mut models = models_output.session(models_at);
            while let Some(entry) = arrived.first_entry() {
                if frontiers
                    .iter()
                    .any(|f| f.frontier().less_equal(entry.key()))
                {
                    break;
                }
                let (now, (mut updates, newly_forgotten)) = entry.remove_entry();
                if !newly_forgotten.is_empty() {
                    forgotten.extend(newly_forgotten.iter().copied());
                    // Their profiles go, not as a change of this time.
                    for user in &newly_forgotten {
                        if let Some(member) = users.remove(user) {
                            vectors -= member.vector.is_some() as usize;
                            profiles.give(((*user, member.output()), now.clone(), -1));
                        }
                    }
                    let history = history.as_mut().expect("kept with forgotten users");
                    for (_, changes) in history.iter_mut() {
                        changes.retain(|(user, _)| !forgotten.contains(user));
                    }
                    history.retain(|(_, changes)| !changes.is_empty());
                    let refit = last_refit(history, &config);
                    if refit.as_ref().map(|(_, m)| m) != model.as_ref().map(|(_, m)| m) {
                        if let Some((_, old)) = model.take() {
                            models.give((old, now.clone(), -1));
                        }
                        if let Some((_, new)) = &refit {
                            models.give((new.clone(), now.clone(), 1));
                        }
                        for (user, member) in users.iter_mut() {
                            let cluster = member.assign(refit.as_ref().map(|(_, m)| m));
                            if cluster != member.cluster {
                                profiles.give(((*user, member.output()), now.clone(), -1));
                                member.cluster = cluster;
                                profiles.give(((*user, member.output()), now.clone(), 1));
                            }
                        }
                    }
                    model = refit;
                }
                if !forgotten.is_empty() {
                    updates.retain(|((user, _), _)| !forgotten.contains(user));
                }
                if updates.is_empty() {
                    continue;
                }
                // Retractions first: a user's old profile goes before the new comes.
                updates.sort_unstable_by(|((a, _), da), ((b, _), db)| (a, da).cmp(&(b, db)));
                // Per user changed, in user order: the profile taken back (as
                // the input has it, without a cluster) and the cluster it had.
                let mut touched: Vec<(Id, Option<Profile>, Option<Cluster>)> = Vec::new();
                for ((user, profile), diff) in updates {
                    if touched.last().is_none_or(|(last, _, _)| *last != user) {
                        let cluster = users.get(&user).and_then(|member| member.cluster);
                        touched.push((user, None, cluster));
                    }
                    if diff < 0 {
                        let removed = users.remove(&user);
                        vectors -= removed.is_some_and(|m| m.vector.is_some()) as usize;
                        touched.last_mut().expect("pushed above").1 = Some(profile);
                    } else {
                        let vector = vector(&profile, &config);
                        vectors += vector.is_some() as usize;
                        let member = Member {
                            profile,
                            vector,
                            cluster: None,
                        };
                        users.insert(user, member);
                    }
                }
                let last = model.as_ref().map(|(at, model)| (at, model));
                let refit = match refit_due(last, &now, vectors, &config) {
                    true => {
                        let vectors = users.values().filter_map(|m| m.vector.clone());
                        fit(&vectors.collect::<Vec<_>>(), &config)
                    }
                    false => None,
                };
                if let Some(refit) = refit {
                    if let Some((_, old)) = model.take() {
                        models.give((old, now.clone(), -1));
                    }
                    models.give((refit.clone(), now.clone(), 1));
                    model = Some((now.clone(), refit));
                    // Users whose profile did not change: a new cluster is a change.
                    for (user, member) in users.iter_mut() {
                        let cluster = member.assign(model.as_ref().map(|(_, m)| m));
                        let changed = touched.binary_search_by_key(user, |(u, _, _)| *u).is_ok();
                        if cluster != member.cluster && !changed {
                            profiles.give(((*user, member.output()), now.clone(), -1));
                            member.cluster = cluster;
                            profiles.give(((*user, member.output()), now.clone(), 1));
                        }
                    }
                }
                if let Some(history) = history.as_mut() {
                    let vector = |user: &Id| users.get(user).and_then(|m| m.vector.clone());
                    let changes = touched.iter().map(|(user, _, _)| (*user, vector(user)));
                    history.push((now.clone(), changes.collect()));
                }
                for (user, before, cluster) in touched {
                    if let Some(before) = before {
                        let before = Profile { cluster, ..before };
                        profiles.give(((user, before), now.clone(), -1));
                    }
                    if let Some(member) = users.get_mut(&user) {
                        member.cluster = member.assign(model.as_ref().map(|(_, m)| m));
                        profiles.give(((user, member.output()), now.clone(), 1));
                    }
                }
            }
            drop((profiles, models));
            match arrived.keys().next() {
                Some(time) => {
                    for held in held.iter_mut().flatten() {
                        held.downgrade(time);
                    }
                }
                None => held = None,
            }
        }
    });
    (
        profiles_stream.as_collection(),
        models_stream.as_collection(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_features(k: usize) -> KMeansConfig {
        KMeansConfig {
            k,
            features: vec![Feature::Frequency, Feature::Spend],
            ..KMeansConfig::default()
        }
    }

    /// Three blobs of 20 points around (0, 0), (10, 0) and (0, 10).
    fn blobs() -> Vec<Vec<f64>> {
        let mut stream = Stream::new(42);
        let centres = [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0)];
        (0..60)
            .map(|i| {
                let (x, y) = centres[i % 3];
                vec![x + stream.unit() - 0.5, y + stream.unit() - 0.5]
            })
            .collect()
    }

    #[test]
    fn planted_clusters_are_recovered_for_every_seed() {
        let points = blobs();
        for seed in 0..20 {
            let config = KMeansConfig {
                seed,
                ..two_features(3)
            };
            let model = fit(&points, &config).unwrap();
            assert_eq!(model.sizes, vec![20, 20, 20], "seed {seed}");
            // Points of one blob share a cluster; the blobs' clusters differ.
            let labels: Vec<u32> = points.iter().map(|p| model.assign(p).id).collect();
            for (i, label) in labels.iter().enumerate() {
                assert_eq!(*label, labels[i % 3], "seed {seed}, point {i}");
            }
            assert_ne!(labels[0], labels[1]);
            assert_ne!(labels[1], labels[2]);
            assert_ne!(labels[0], labels[2]);
            // Jitter of ±0.5 around centres 10 apart: small inertia.
            assert!(
                model.inertia.0 < 60.0 * 0.02,
                "seed {seed}: {:?}",
                model.inertia
            );
        }
    }

    #[test]
    fn fewer_distinct_vectors_than_k_give_fewer_centroids() {
        let points = vec![vec![1.0, 2.0], vec![1.0, 2.0], vec![3.0, 4.0]];
        let model = fit(&points, &two_features(5)).unwrap();
        assert_eq!(model.centroids.len(), 2);
        assert_eq!(model.inertia, Score(0.0));
        assert!(fit(&[], &two_features(5)).is_none());
    }

    #[test]
    fn a_constant_feature_is_scaled_by_one() {
        let points = vec![vec![1.0, 5.0], vec![3.0, 5.0]];
        let model = fit(&points, &two_features(1)).unwrap();
        assert_eq!(model.means, vec![Score(2.0), Score(5.0)]);
        assert_eq!(model.scales, vec![Score(1.0), Score(1.0)]);
        assert_eq!(model.assign(&[2.0, 5.0]).distance, Score(0.0));
    }

    #[test]
    fn extreme_profiles_give_finite_vectors() {
        use crate::profile::ProfileConfig;
        use crate::Event;
        let mut events = Vec::new();
        for (user, time_ms) in [(1, i64::MIN), (2, i64::MAX), (3, 0)] {
            let mut bought = Event::new(user, 1, Action::Purchase, time_ms);
            (bought.quantity, bought.price) = (i64::MAX, Some(i64::MAX));
            bought.category = Some(7);
            let mut rated = Event::new(user, 2, Action::Rating, time_ms);
            rated.rating = Some(i64::MAX);
            events.extend([(bought, 0, 1), (rated, 0, 1)]);
        }
        let profiles =
            crate::reference::profile::profiles(&events, &[], &[], 0, &ProfileConfig::default());
        let config = KMeansConfig {
            k: 2,
            features: vec![
                Feature::Recency,
                Feature::Frequency,
                Feature::Spend,
                Feature::AvgRating,
                Feature::TopAffinity,
            ],
            log_scale: false,
            ..KMeansConfig::default()
        };
        let vectors: Vec<Vec<f64>> = profiles
            .values()
            .filter_map(|p| vector(p, &config))
            .collect();
        assert_eq!(vectors.len(), 3);
        assert!(
            vectors.iter().flatten().all(|x| x.is_finite()),
            "{vectors:?}"
        );
        let model = fit(&vectors, &config).unwrap();
        assert!(model.centroids.iter().flatten().all(|x| x.0.is_finite()));
    }

    #[test]
    fn invalid_settings_name_their_key() {
        let invalid = |config: KMeansConfig| config.validate().unwrap_err();
        assert!(invalid(two_features(0)).starts_with("k:"));
        let twice = KMeansConfig {
            features: vec![Feature::Spend, Feature::Spend],
            ..KMeansConfig::default()
        };
        assert!(invalid(twice).contains("Spend given twice"));
        let never = KMeansConfig {
            refit_days: 0,
            ..KMeansConfig::default()
        };
        assert!(invalid(never).starts_with("refit_days:"));
        assert!(KMeansConfig::default().validate().is_ok());
    }
}
