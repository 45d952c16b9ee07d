//! Matrix factorisation of implicit feedback, trained online by stochastic
//! gradient descent: Bayesian personalised ranking (BPR, Rendle et al.
//! 2009) with uniform negative sampling.
//!
//! Each user u and item i has `factors` weights (`p_u`, `q_i`) and each item
//! a bias `b_i`; the score of an item for a user is `b_i + p_u · q_i`. An
//! event of a positive-weight action is a step on `negatives` pairs (i, j),
//! j drawn uniformly from the items seen so far, that raises
//! `x = b_i − b_j + p_u · (q_i − q_j)` by the gradient of `ln σ(x)`, scaled
//! by the action's weight over the largest weight.
//!
//! **Retractions.** SGD steps do not commute, so no later step undoes an
//! earlier one exactly. The rule: a retraction (a cancellation, `diff < 0`)
//! or an event of a negative-weight action is the same step with the pair
//! reversed — the item becomes the negative against each sampled item — so
//! the model learns that the user took it back.
//!
//! **Determinism.** The model is a function of the sequence of events it is
//! given and the seed: initial factors are hashed from `(seed, id, factor)`,
//! so they do not depend on when an id first appears, and the sampler is one
//! seeded stream. [`MfModel::train`] takes the events of one time and sorts
//! them into the canonical order (event time, then the event's fields, then
//! the diff), so the model does not depend on how workers or files
//! delivered them. Arithmetic is `f32` in a fixed order, with no parallel
//! reduction: the same log gives the same bits.

pub mod online;

use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

use crate::event::{ActionWeights, Event, Id};
use crate::score::Score;
use crate::seeded::{mix, Stream, GOLDEN};

/// `[recommend.mf]`: the factorisation's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MfConfig {
    /// Weights per user and item. Default 32.
    pub factors: usize,
    /// The SGD step size. Default 0.05.
    pub learning_rate: f64,
    /// L2 regularisation of the weights touched by a step. Default 0.002.
    pub regularization: f64,
    /// Negative items sampled per event. Default 8.
    pub negatives: usize,
    /// Seeds the initial weights and the sampler. Default 0.
    pub seed: u64,
    /// Initial weights are uniform in ±`init_scale`. Default 0.1.
    pub init_scale: f64,
    /// Train the model inside `replay`, `run` and `serve` as events arrive:
    /// each profile gains `factors` ([`embeddings`]). Default false.
    pub embeddings: bool,
}

impl Default for MfConfig {
    fn default() -> Self {
        MfConfig {
            factors: 32,
            learning_rate: 0.05,
            regularization: 0.002,
            negatives: 8,
            seed: 0,
            init_scale: 0.1,
            embeddings: false,
        }
    }
}

/// The largest factor count: a user's vector is read on every ranking.
pub const MAX_FACTORS: usize = 1_024;
/// The most negatives per event.
pub const MAX_NEGATIVES: usize = 1_000;
/// Steps taken for one update at most: a diff of n is n events.
const MAX_REPEATS: u64 = 64;

impl MfConfig {
    /// Checks the ranges serde cannot; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let finite_positive = |x: f64| x.is_finite() && x > 0.0;
        if !(1..=MAX_FACTORS).contains(&self.factors) {
            return Err(format!("mf.factors must be 1 to {MAX_FACTORS}"));
        }
        if !(1..=MAX_NEGATIVES).contains(&self.negatives) {
            return Err(format!("mf.negatives must be 1 to {MAX_NEGATIVES}"));
        }
        if !finite_positive(self.learning_rate) || self.learning_rate > 1.0 {
            return Err("mf.learning_rate must be above 0 and at most 1".into());
        }
        if !(self.regularization.is_finite() && (0.0..1.0).contains(&self.regularization)) {
            return Err("mf.regularization must be at least 0 and below 1".into());
        }
        if !finite_positive(self.init_scale) || self.init_scale > 1.0 {
            return Err("mf.init_scale must be above 0 and at most 1".into());
        }
        Ok(())
    }
}

/// A factorisation model and its trainer.
#[derive(Clone, Debug)]
pub struct MfModel {
    config: MfConfig,
    weights: ActionWeights,
    /// The largest action weight: its events take a whole step.
    unit: f32,
    users: HashMap<Id, Vec<f32>>,
    /// Item id → index into `item_ids`, `item_bias`, `item_factors`.
    item_index: HashMap<Id, usize>,
    /// Items in the order they were first trained on: the sampler's range.
    item_ids: Vec<Id>,
    item_bias: Vec<f32>,
    /// `factors` weights per item, item after item.
    item_factors: Vec<f32>,
    sampler: Stream,
    /// With [`MfModel::tracking_loss`]: steps taken, and the sum of their
    /// BPR losses `−ln σ(x)` before each (an `exp` and a `ln` per step,
    /// which only an evaluation reads).
    loss: Option<(u64, f64)>,
    /// With [`MfModel::tracking_changes`]: the items added or stepped
    /// since the last [`MfModel::take_changed_items`].
    changed_items: Option<ChangedItems>,
}

/// Item indices, each once: every step changes two items, and a period of
/// a replay takes hundreds of thousands of steps over a few thousand items.
#[derive(Clone, Debug, Default)]
struct ChangedItems {
    is_changed: Vec<bool>,
    indices: Vec<usize>,
}

impl ChangedItems {
    fn insert(&mut self, index: usize) {
        if index >= self.is_changed.len() {
            self.is_changed.resize(index + 1, false);
        }
        if !std::mem::replace(&mut self.is_changed[index], true) {
            self.indices.push(index);
        }
    }

    fn take(&mut self) -> Vec<usize> {
        for &index in &self.indices {
            self.is_changed[index] = false;
        }
        std::mem::take(&mut self.indices)
    }
}

/// A user's factor vector as a profile carries it: compared and hashed by
/// the bits, so it can live in a collection.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Factors(pub Vec<f32>);

impl Factors {
    fn bits(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().map(|x| x.to_bits())
    }
}

impl PartialEq for Factors {
    fn eq(&self, other: &Self) -> bool {
        self.bits().eq(other.bits())
    }
}

impl Eq for Factors {}

impl PartialOrd for Factors {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Factors {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.bits().cmp(other.bits())
    }
}

impl std::hash::Hash for Factors {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bits().for_each(|bits| bits.hash(state))
    }
}

/// How a model was trained so far: steps and their mean loss.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TrainingLoss {
    pub steps: u64,
    /// Mean of `−ln σ(x)` over the steps, each taken before its update.
    pub mean_loss: f64,
}

impl MfModel {
    /// An empty model. `weights` decide which actions are positive
    /// feedback and how strong.
    pub fn new(config: &MfConfig, weights: &ActionWeights) -> MfModel {
        let unit = crate::event::Action::ALL
            .iter()
            .map(|&action| weights.weight(action).unsigned_abs())
            .max()
            .unwrap_or(1)
            .max(1) as f32;
        MfModel {
            config: config.clone(),
            weights: weights.clone(),
            unit,
            users: HashMap::default(),
            item_index: HashMap::default(),
            item_ids: Vec::new(),
            item_bias: Vec::new(),
            item_factors: Vec::new(),
            sampler: Stream::new(config.seed ^ 0x6d66_5f73_616d_706c),
            loss: None,
            changed_items: None,
        }
    }

    /// The model, summing the loss of its steps ([`MfModel::loss`]).
    pub fn tracking_loss(mut self) -> MfModel {
        self.loss = Some((0, 0.0));
        self
    }

    /// The model, recording which items each training changes (for
    /// [`MfRow`]s of the items alone).
    pub fn tracking_changes(mut self) -> MfModel {
        self.changed_items = Some(ChangedItems::default());
        self
    }

    /// The items added or changed since the last call, ascending (none
    /// without [`MfModel::tracking_changes`]).
    pub fn take_changed_items(&mut self) -> Vec<Id> {
        let indices = self.changed_items.as_mut().map(ChangedItems::take);
        let mut items: Vec<Id> = indices
            .into_iter()
            .flatten()
            .map(|index| self.item_ids[index])
            .collect();
        items.sort_unstable();
        items
    }

    fn changed(&mut self, index: usize) {
        if let Some(changed) = self.changed_items.as_mut() {
            changed.insert(index);
        }
    }

    /// Trains on one time's updates `(event, diff)`, sorted first into the
    /// canonical order, so their order on arrival does not matter.
    pub fn train(&mut self, updates: &mut [(Event, i64)]) {
        canonical_order(updates);
        for (event, diff) in updates.iter() {
            self.learn(event, *diff);
        }
    }

    /// One update, in the order given.
    pub fn learn(&mut self, event: &Event, diff: i64) {
        let weight = self.weights.weight(event.action);
        if weight == 0 || diff == 0 {
            return;
        }
        let reversed = (weight < 0) != (diff < 0);
        let scale = weight.unsigned_abs() as f32 / self.unit;
        let item = self.item(event.item);
        let known = self.item_ids.len();
        let user = self.user(event.user);
        // Only one item known: nothing to rank it against yet.
        if known < 2 {
            return;
        }
        // The user's weights, out of the table for the event's steps and
        // back after them: not a lookup per step.
        let mut p = std::mem::take(user);
        for _ in 0..diff.unsigned_abs().min(MAX_REPEATS) {
            for _ in 0..self.config.negatives {
                let mut other = self.draw(self.item_ids.len() - 1);
                if other >= item {
                    other += 1;
                }
                let (better, worse) = if reversed {
                    (other, item)
                } else {
                    (item, other)
                };
                self.step(&mut p, better, worse, scale);
            }
        }
        self.users.insert(event.user, p);
    }

    /// One BPR step raising `better` over `worse` for the user of weights `p`.
    fn step(&mut self, p: &mut [f32], better: usize, worse: usize, scale: f32) {
        self.changed(better);
        self.changed(worse);
        let f = self.config.factors;
        let lr = self.config.learning_rate as f32 * scale;
        let reg = self.config.regularization as f32;
        let (qi, qj) = two_rows(&mut self.item_factors, better, worse, f);
        let mut x = self.item_bias[better] - self.item_bias[worse];
        for ((pk, a), b) in p.iter().zip(qi.iter()).zip(qj.iter()) {
            x += pk * (a - b);
        }
        // −ln σ(x) = ln(1 + e^−x), and its gradient's size σ(−x).
        if let Some((steps, sum)) = self.loss.as_mut() {
            *sum += f64::from((-x).exp().ln_1p());
            *steps += 1;
        }
        let g = 1.0 / (1.0 + x.exp());
        self.item_bias[better] += lr * (g - reg * self.item_bias[better]);
        self.item_bias[worse] += lr * (-g - reg * self.item_bias[worse]);
        for ((pk, a), b) in p.iter_mut().zip(qi.iter_mut()).zip(qj.iter_mut()) {
            let (p0, a0, b0) = (*pk, *a, *b);
            *pk += lr * (g * (a0 - b0) - reg * p0);
            *a += lr * (g * p0 - reg * a0);
            *b += lr * (-g * p0 - reg * b0);
        }
    }

    /// The index of an item, added with its hashed initial weights.
    fn item(&mut self, item: Id) -> usize {
        if let Some(&index) = self.item_index.get(&item) {
            return index;
        }
        let index = self.item_ids.len();
        self.item_index.insert(item, index);
        self.item_ids.push(item);
        self.item_bias.push(0.0);
        let initial = initial_weights(&self.config, ITEM, item);
        self.item_factors.extend(initial);
        self.changed(index);
        index
    }

    fn user(&mut self, user: Id) -> &mut Vec<f32> {
        let config = &self.config;
        self.users
            .entry(user)
            .or_insert_with(|| initial_weights(config, USER, user))
    }

    /// A draw uniform in `0..n` from the seeded stream.
    fn draw(&mut self, n: usize) -> usize {
        self.sampler.below(n)
    }

    /// The score of `item` for `user`: `b_i + p_u · q_i`, or the bias alone
    /// for a user the model has not seen; none for an unknown item.
    pub fn score(&self, user: Id, item: Id) -> Option<f32> {
        let index = *self.item_index.get(&item)?;
        Some(self.score_index(self.users.get(&user).map(Vec::as_slice), index))
    }

    fn score_index(&self, user: Option<&[f32]>, index: usize) -> f32 {
        let f = self.config.factors;
        let q = &self.item_factors[index * f..(index + 1) * f];
        score(self.item_bias[index], user, q)
    }

    /// The user's `k` best items with their scores, best first, ties by
    /// item id; `skip` items are left out.
    pub fn top_k(&self, user: Id, k: usize, skip: impl Fn(Id) -> bool) -> Vec<(Id, Score)> {
        let p = self.users.get(&user).map(Vec::as_slice);
        let scored = (self.item_ids.iter().enumerate())
            .map(|(index, &item)| (item, Score(f64::from(self.score_index(p, index)))))
            .collect();
        best(scored, k, skip)
    }

    /// A user's factor vector, if the model has seen the user.
    pub fn user_factors(&self, user: Id) -> Option<&[f32]> {
        self.users.get(&user).map(Vec::as_slice)
    }

    /// An item's bias and factor vector, if the model has seen the item.
    pub fn item_factors(&self, item: Id) -> Option<(f32, &[f32])> {
        let f = self.config.factors;
        let index = *self.item_index.get(&item)?;
        Some((
            self.item_bias[index],
            &self.item_factors[index * f..(index + 1) * f],
        ))
    }

    /// Steps taken and their mean loss, with [`MfModel::tracking_loss`];
    /// [`MfModel::reset_loss`] starts a new window.
    pub fn loss(&self) -> Option<TrainingLoss> {
        self.loss.map(|(steps, sum)| TrainingLoss {
            steps,
            mean_loss: match steps {
                0 => 0.0,
                n => sum / n as f64,
            },
        })
    }

    pub fn reset_loss(&mut self) {
        if let Some(loss) = self.loss.as_mut() {
            *loss = (0, 0.0);
        }
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    pub fn item_count(&self) -> usize {
        self.item_ids.len()
    }
}

/// The score of an item of bias `bias` and factors `q`: `b_i + p_u · q_i`,
/// the bias alone for a user without factors. The dot product is summed in
/// factor order from 0.0, as [`MfTable::top_k`] sums it for every item at
/// once, so the model and the table give the same bits.
fn score(bias: f32, user: Option<&[f32]>, q: &[f32]) -> f32 {
    let dot = user.map_or(0.0, |p| {
        p.iter().zip(q).fold(0.0, |sum, (a, b)| sum + a * b)
    });
    bias + dot
}

/// The `k` best of `scored` `(id, score)`, best first, ties by id (so the
/// order of `scored` does not matter); `skip` items are left out.
fn best(mut scored: Vec<(Id, Score)>, k: usize, skip: impl Fn(Id) -> bool) -> Vec<(Id, Score)> {
    let by_rank = |a: &(Id, Score), b: &(Id, Score)| b.1.cmp(&a.1).then(a.0.cmp(&b.0));
    // `skip` is asked only of a prefix of the ranking: if the first `want`
    // items keep k, they are the k best kept; otherwise a longer prefix.
    let mut want = k.saturating_add(SKIPPED_ALLOWANCE);
    loop {
        let whole = scored.len() <= want;
        if !whole {
            scored.select_nth_unstable_by(want, by_rank);
        }
        let prefix = &scored[..want.min(scored.len())];
        let mut kept: Vec<(Id, Score)> = prefix
            .iter()
            .copied()
            .filter(|&(item, _)| !skip(item))
            .collect();
        if whole || kept.len() >= k {
            if kept.len() > k {
                kept.select_nth_unstable_by(k, by_rank);
                kept.truncate(k);
            }
            kept.sort_unstable_by(by_rank);
            return kept;
        }
        want = want.saturating_mul(4);
    }
}

/// How many skipped items [`best`] first allows for beyond the k asked:
/// about a user's seen items in discovery mode.
const SKIPPED_ALLOWANCE: usize = 64;

/// One row of the model as the on-demand rankings receive it: sent as the
/// model changes, a retraction of the old row and an insertion of the new
/// ([`online::train`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MfRow {
    /// A user's factors.
    User(Id, Factors),
    /// An item's bias, then its factors.
    Item(Id, Factors),
}

/// The model as the rankings hold it, rebuilt from [`MfRow`]s: its scores
/// and top k are [`MfModel`]'s, the same bits. Items are held by column
/// (the biases, then each factor of every item), so a top k scores all
/// items at once, factor after factor: each item's sum keeps the factor
/// order of [`score`], and the additions across items use vector registers.
#[derive(Clone, Debug, Default)]
pub struct MfTable {
    users: HashMap<Id, Vec<f32>>,
    /// Item id → its index in `item_ids` and in every column.
    item_index: HashMap<Id, usize>,
    item_ids: Vec<Id>,
    /// Column 0 the items' biases, column k + 1 their factor k.
    columns: Vec<Vec<f32>>,
}

impl MfTable {
    /// Inserts `row`, or removes the row of its id; a row replaced at a
    /// time comes as a retraction then an insertion.
    pub fn apply(&mut self, row: &MfRow, insert: bool) {
        match (row, insert) {
            (MfRow::User(user, factors), true) => _ = self.users.insert(*user, factors.0.clone()),
            (MfRow::User(user, _), false) => _ = self.users.remove(user),
            (MfRow::Item(item, values), true) => self.insert_item(*item, &values.0),
            (MfRow::Item(item, _), false) => self.remove_item(*item),
        }
    }

    fn insert_item(&mut self, item: Id, values: &[f32]) {
        if self.item_ids.is_empty() {
            self.columns = vec![Vec::new(); values.len()];
        }
        assert_eq!(
            values.len(),
            self.columns.len(),
            "item rows of one model have one length"
        );
        match self.item_index.get(&item) {
            Some(&index) => {
                for (column, &value) in self.columns.iter_mut().zip(values) {
                    column[index] = value;
                }
            }
            None => {
                self.item_index.insert(item, self.item_ids.len());
                self.item_ids.push(item);
                for (column, &value) in self.columns.iter_mut().zip(values) {
                    column.push(value);
                }
            }
        }
    }

    /// Removes `item`, moving the last item into its place.
    fn remove_item(&mut self, item: Id) {
        let Some(index) = self.item_index.remove(&item) else {
            return;
        };
        self.item_ids.swap_remove(index);
        for column in &mut self.columns {
            column.swap_remove(index);
        }
        if let Some(&moved) = self.item_ids.get(index) {
            self.item_index.insert(moved, index);
        }
    }

    /// [`MfModel::top_k`] of the model the rows were sent from.
    pub fn top_k(&self, user: Id, k: usize, skip: impl Fn(Id) -> bool) -> Vec<(Id, Score)> {
        let Some((biases, factors)) = self.columns.split_first() else {
            return Vec::new();
        };
        let mut dots = vec![0.0f32; self.item_ids.len()];
        if let Some(p) = self.users.get(&user) {
            for (&pk, column) in p.iter().zip(factors) {
                for (dot, &q) in dots.iter_mut().zip(column) {
                    *dot += pk * q;
                }
            }
        }
        let scored = (self.item_ids.iter().zip(biases).zip(dots))
            .map(|((&item, &bias), dot)| (item, Score(f64::from(bias + dot))))
            .collect();
        best(scored, k, skip)
    }

    /// A user's factors, if the model has seen the user.
    pub fn user_factors(&self, user: Id) -> Option<&[f32]> {
        self.users.get(&user).map(Vec::as_slice)
    }

    /// An item's bias and factors, if the model has seen the item.
    pub fn item_factors(&self, item: Id) -> Option<(f32, Vec<f32>)> {
        let index = *self.item_index.get(&item)?;
        let mut values = self.columns.iter().map(|column| column[index]);
        let bias = values.next()?;
        Some((bias, values.collect()))
    }
}

/// Sorts updates into the order the model learns them in: event time,
/// then the event's fields, then the diff.
pub fn canonical_order(updates: &mut [(Event, i64)]) {
    updates.sort_unstable_by(|(a, da), (b, db)| (a.time_ms, a, da).cmp(&(b.time_ms, b, db)));
}

const USER: u64 = 0x7573_6572;
const ITEM: u64 = 0x6974_656d;

/// Rows `a` and `b` (different) of `f` weights each, both mutable.
fn two_rows(all: &mut [f32], a: usize, b: usize, f: usize) -> (&mut [f32], &mut [f32]) {
    if a < b {
        let (low, high) = all.split_at_mut(b * f);
        (&mut low[a * f..(a + 1) * f], &mut high[..f])
    } else {
        let (low, high) = all.split_at_mut(a * f);
        (&mut high[..f], &mut low[b * f..(b + 1) * f])
    }
}

/// Initial weights of an id, uniform in ±init_scale, from `(seed, kind,
/// id, factor)` alone.
fn initial_weights(config: &MfConfig, kind: u64, id: Id) -> Vec<f32> {
    let base = mix(config.seed ^ mix(kind ^ mix(id)));
    (0..config.factors as u64)
        .map(|k| {
            let bits = mix(base.wrapping_add(k.wrapping_mul(GOLDEN)));
            // 24 random bits to a uniform in [−1, 1).
            let unit = (bits >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
            unit * config.init_scale as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Action;

    fn purchase(user: Id, item: Id, time_ms: i64) -> (Event, i64) {
        (Event::new(user, item, Action::Purchase, time_ms), 1)
    }

    /// Users 0..20 buy from items 0..5, users 20..40 from items 5..10;
    /// each user leaves one item of their group out.
    fn planted() -> Vec<(Event, i64)> {
        let mut updates = Vec::new();
        for round in 0..30 {
            for user in 0..40u64 {
                let group = if user < 20 { 0 } else { 5 };
                let left_out = group + user % 5;
                let item = group + (user + round) % 5;
                if item != left_out {
                    updates.push(purchase(user, item, round as i64 * 1_000 + user as i64));
                }
            }
        }
        updates
    }

    fn trained(updates: &[(Event, i64)]) -> MfModel {
        let mut model = MfModel::new(&MfConfig::default(), &ActionWeights::default());
        model.train(&mut updates.to_vec());
        model
    }

    #[test]
    fn the_planted_structure_ranks_the_left_out_item_first() {
        let model = trained(&planted());
        for user in 0..40u64 {
            let group = if user < 20 { 0 } else { 5 };
            let left_out = group + user % 5;
            let seen = |item: Id| item >= group && item < group + 5 && item != left_out;
            let top = model.top_k(user, 1, seen);
            assert_eq!(top[0].0, left_out, "user {user}: {top:?}");
        }
    }

    #[test]
    fn the_loss_falls_over_a_replay() {
        let updates = planted();
        let mut model =
            MfModel::new(&MfConfig::default(), &ActionWeights::default()).tracking_loss();
        let (first, rest) = updates.split_at(updates.len() / 3);
        model.train(&mut first.to_vec());
        let early = model.loss().unwrap();
        model.reset_loss();
        let (middle, last) = rest.split_at(rest.len() / 2);
        model.train(&mut middle.to_vec());
        model.reset_loss();
        model.train(&mut last.to_vec());
        let late = model.loss().unwrap();
        assert!(early.steps > 0 && late.steps > 0);
        assert!(
            late.mean_loss < 0.5 * early.mean_loss,
            "early {early:?}, late {late:?}"
        );
    }

    #[test]
    fn the_order_of_arrival_within_a_time_does_not_matter() {
        let updates = planted();
        let mut reversed = updates.clone();
        reversed.reverse();
        let (a, b) = (trained(&updates), trained(&reversed));
        for user in 0..40u64 {
            assert_eq!(a.user_factors(user), b.user_factors(user));
        }
        for item in 0..10u64 {
            assert_eq!(a.item_factors(item), b.item_factors(item));
        }
    }

    #[test]
    fn a_retraction_pushes_the_item_down() {
        let mut model = trained(&planted());
        let before = model.score(3, 1).unwrap();
        let (event, _) = purchase(3, 1, 100_000);
        model.train(&mut [(event, -1)]);
        assert!(model.score(3, 1).unwrap() < before);
    }

    #[test]
    fn ranges_are_checked() {
        assert_eq!(MfConfig::default().validate(), Ok(()));
        let bad = |change: fn(&mut MfConfig)| {
            let mut config = MfConfig::default();
            change(&mut config);
            config.validate().unwrap_err()
        };
        assert!(bad(|c| c.factors = 0).contains("mf.factors"));
        assert!(bad(|c| c.negatives = 0).contains("mf.negatives"));
        assert!(bad(|c| c.learning_rate = f64::NAN).contains("mf.learning_rate"));
        assert!(bad(|c| c.regularization = -1.0).contains("mf.regularization"));
        assert!(bad(|c| c.init_scale = 0.0).contains("mf.init_scale"));
    }
}
