//! `persona eval`: how well persona recommends, measured offline the way
//! Microsoft Recommenders does it.
//!
//! The log is split chronologically — at a global cut time, or each user's
//! last fraction of events — the collaborative-filtering state is built by
//! the dataflow on the earlier part, and each test user's top-k list, ranked
//! from it by the code `persona serve` answers with, is scored against the
//! items they went on to interact with in the later part. SAR's settings
//! ([`sar`]) and the popularity baseline (the k most popular training items,
//! without the user's seen ones in discovery mode) are scored the same way,
//! side by side. [`tune`] searches the `[recommend]` settings on a
//! validation split of the training part.

pub mod metrics;
pub mod tune;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;

use anyhow::Context;
use differential_dataflow::consolidation::consolidate;
use differential_dataflow::input::InputSession;
use persona_dataflows::cf::on_demand::{state_updates, CfState, StateUpdate};
use persona_dataflows::cf::recommend::{blend, BLEND_CANDIDATES};
use persona_dataflows::cf::similarity::Neighbor;
use persona_dataflows::cf::{CfConfig, Metric, Mode};
use persona_dataflows::mf::{MfModel, TrainingLoss};
use persona_dataflows::{Action, Event, Id, Score};
use serde::Serialize;
use timely::dataflow::operators::{Exchange, Inspect, Probe};
use timely::dataflow::ProbeHandle;

use crate::config::PipelineConfig;
use crate::parallel;
use crate::runtime::load::load;
use crate::runtime::TimelyArgs;

/// How the log is split into training and test events.
#[derive(Clone, Copy, Debug)]
pub enum Split {
    /// Events before this time (ms) train, the rest test.
    Time(i64),
    /// Each user's last fraction of events (by time) test, the rest train.
    Fraction(f64),
}

/// The scores of one recommender.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Scores {
    pub precision: f64,
    pub recall: f64,
    pub ndcg: f64,
    pub map: f64,
    /// Test users with a relevant item in their top k.
    pub hit_rate: f64,
    /// Mean reciprocal rank of the first relevant item in the top k.
    pub mrr: f64,
    pub coverage: f64,
}

/// Which recommender the `persona` row of `persona eval` scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    /// Item co-occurrence alone.
    Cf,
    /// The learned factorisation alone ([`persona_dataflows::mf`]).
    Mf,
    /// Both, blended by `[recommend] mf_weight`.
    Blend,
}

impl Model {
    /// The recommender `config` describes: the blend when it gives the
    /// factorisation a weight.
    pub fn of(config: &CfConfig) -> Model {
        match config.mf_weight > 0.0 {
            true => Model::Blend,
            false => Model::Cf,
        }
    }
}

/// What `persona eval` prints.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub k: usize,
    pub mode: Mode,
    /// What the `persona` row scores.
    pub model: Model,
    pub persona: Scores,
    /// SAR's settings ([`sar`]) on the same state code.
    pub sar: Scores,
    pub popularity: Scores,
    pub train_events: usize,
    pub test_users: usize,
    /// With the factorisation: its training steps and mean BPR loss over
    /// the last tenth of the training events.
    pub mf_training: Option<TrainingLoss>,
}

/// Parses `--split-time`: a date (midnight UTC) or an RFC 3339 time.
pub fn parse_split_time(text: &str) -> anyhow::Result<i64> {
    // jiff reads a date out of any time that starts with one: only a text
    // that is a date alone is midnight.
    let is_date = text.len() == "YYYY-MM-DD".len();
    if let Some(date) = text.parse::<jiff::civil::Date>().ok().filter(|_| is_date) {
        return Ok(date
            .to_zoned(jiff::tz::TimeZone::UTC)?
            .timestamp()
            .as_millisecond());
    }
    let time: jiff::Timestamp = text.parse().with_context(|| {
        format!("--split-time {text:?}: expected YYYY-MM-DD or an RFC 3339 time")
    })?;
    Ok(time.as_millisecond())
}

/// Updates of events: +1, or −1 for a cancellation.
pub type Updates = Vec<(Event, isize)>;

/// Splits updates (in log order) into training and test updates.
fn split(updates: Updates, split: Split) -> (Updates, Updates) {
    match split {
        Split::Time(cut) => updates
            .into_iter()
            .partition(|(event, _)| event.time_ms < cut),
        Split::Fraction(fraction) => {
            let mut by_user: BTreeMap<Id, Vec<(Event, isize)>> = BTreeMap::new();
            for update in updates {
                by_user.entry(update.0.user).or_default().push(update);
            }
            let (mut train, mut test) = (Vec::new(), Vec::new());
            for (_, mut events) in by_user {
                // Stable: events at one time keep their log order.
                events.sort_by_key(|(event, _)| event.time_ms);
                let n = events.len();
                let held_out = if n < 2 {
                    0
                } else {
                    ((n as f64 * fraction).round() as usize).clamp(1, n - 1)
                };
                test.extend(events.split_off(n - held_out));
                train.extend(events);
            }
            (train, test)
        }
    }
}

/// Items per user.
type UserItems = HashMap<Id, HashSet<Id>>;

/// Items with a positive net count of positive-weight events, per user.
fn interacted(updates: &[(Event, isize)], config: &PipelineConfig) -> HashMap<Id, HashSet<Id>> {
    items_where(updates, |event| {
        config.recommend.weights.weight(event.action) > 0
    })
}

/// Items with a positive net count of events that `keep`, per user.
fn items_where(
    updates: &[(Event, isize)],
    keep: impl Fn(&Event) -> bool,
) -> HashMap<Id, HashSet<Id>> {
    let mut net: HashMap<(Id, Id), isize> = HashMap::new();
    for (event, diff) in updates {
        if keep(event) {
            *net.entry((event.user, event.item)).or_insert(0) += diff;
        }
    }
    let mut items: HashMap<Id, HashSet<Id>> = HashMap::new();
    for ((user, item), count) in net {
        if count > 0 {
            items.entry(user).or_default().insert(item);
        }
    }
    items
}

/// Runs the dataflow's collaborative-filtering state (histories,
/// co-occurrence and item counts, [`state_updates`]) over the training
/// updates and returns it as the [`CfState`] that `persona serve` ranks
/// from. Totals are kept whatever the metric, so one state serves every
/// metric (`persona tune` ranks one state many ways).
pub fn train_state(
    updates: &[(Event, isize)],
    config: &CfConfig,
    timely: &TimelyArgs,
) -> anyhow::Result<CfState> {
    let updates = std::sync::Arc::new(updates.to_vec());
    let state_config = CfConfig {
        metric: Metric::LogLikelihood,
        trend_weight: 1.0,
        ..config.clone()
    };
    let guards = timely::execute(timely.config()?, move |worker| {
        let index = worker.index();
        let peers = worker.peers();
        let mut input: InputSession<u64, Event, isize> = InputSession::new();
        let probe = ProbeHandle::new();
        let gathered: Rc<RefCell<Vec<(StateUpdate, isize)>>> = Rc::default();
        let sink = gathered.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            let events = input.to_collection(scope);
            state_updates(events, &state_config)
                .inner
                .exchange(|_| 0)
                .inspect(move |(update, _, diff): &(StateUpdate, u64, isize)| {
                    sink.borrow_mut().push((update.clone(), *diff))
                })
                .probe_with(&probe);
        });
        for (event, diff) in updates.iter().skip(index).step_by(peers) {
            input.update(event.clone(), *diff);
        }
        input.close();
        worker.step_while(|| !probe.done());
        let mut updates = std::mem::take(&mut *gathered.borrow_mut());
        consolidate(&mut updates);
        updates
    })
    .map_err(|error| anyhow::anyhow!("cannot start workers: {error}"))?;
    let mut state = CfState::default();
    for result in guards.join() {
        let updates = result.map_err(|panic| anyhow::anyhow!("a worker panicked: {panic}"))?;
        state.apply(&updates);
    }
    Ok(state)
}

/// Each user's top-k items from the state under `config`, ranked by the
/// code `persona serve` answers with; each item's neighbour list is ranked
/// once per call. Users are shared out over the machine's cores.
pub fn rank(state: &CfState, users: &[Id], k: usize, config: &CfConfig) -> HashMap<Id, Vec<Id>> {
    rank_scored(state, users, k, config)
        .into_iter()
        .map(|(user, list)| (user, list.into_iter().map(|(item, _)| item).collect()))
        .collect()
}

/// [`rank`], with the scores.
fn rank_scored(
    state: &CfState,
    users: &[Id],
    k: usize,
    config: &CfConfig,
) -> HashMap<Id, Vec<(Id, Score)>> {
    parallel::in_shares(users, parallel::cores(), |users| {
        // Each item's neighbours ranked once per thread.
        let neighbors: RefCell<HashMap<Id, Vec<Neighbor>>> = RefCell::default();
        let ranked = |item: Id| {
            neighbors
                .borrow_mut()
                .entry(item)
                .or_insert_with(|| {
                    state
                        .similar_items(item, config.neighbors, config)
                        .neighbors
                })
                .clone()
        };
        users
            .iter()
            .map(|&user| {
                let list = state.cooccurrence_recommendations(user, k, config, ranked);
                let scored = list.items.iter().map(|s| (s.item, s.score)).collect();
                (user, scored)
            })
            .collect()
    })
    .into_iter()
    .collect()
}

/// Trains the factorisation on `updates` in the canonical order; the loss
/// reported is over the last tenth of them, once the model has seen the
/// rest.
pub fn train_mf(updates: &[(Event, isize)], config: &CfConfig) -> (MfModel, TrainingLoss) {
    let mut ordered: Vec<(Event, i64)> = updates
        .iter()
        .map(|(event, diff)| (event.clone(), *diff as i64))
        .collect();
    persona_dataflows::mf::canonical_order(&mut ordered);
    let mut model = MfModel::new(&config.mf, &config.weights).tracking_loss();
    let (head, tail) = ordered.split_at(updates.len() - updates.len() / 10);
    head.iter()
        .for_each(|(event, diff)| model.learn(event, *diff));
    model.reset_loss();
    tail.iter()
        .for_each(|(event, diff)| model.learn(event, *diff));
    let loss = model.loss().expect("tracked above");
    (model, loss)
}

/// Each user's `n` best items by the factorisation, with scores, under
/// the co-occurrence ranking's rule: `seen` items left out when
/// `remove_seen`, dismissed ones always.
fn rank_mf(
    model: &MfModel,
    users: &[Id],
    n: usize,
    (seen, dismissed): (&UserItems, &UserItems),
    remove_seen: bool,
) -> HashMap<Id, Vec<(Id, Score)>> {
    let empty = HashSet::new();
    users
        .iter()
        .map(|&user| {
            let seen = match remove_seen {
                true => seen.get(&user).unwrap_or(&empty),
                false => &empty,
            };
            let dismissed = dismissed.get(&user).unwrap_or(&empty);
            let excluded = |item| seen.contains(&item) || dismissed.contains(&item);
            (user, model.top_k(user, n, excluded))
        })
        .collect()
}

/// The k most popular training items (by users) each user has not seen.
fn popularity(
    train_items: &HashMap<Id, HashSet<Id>>,
    users: &[Id],
    k: usize,
    remove_seen: bool,
) -> HashMap<Id, Vec<Id>> {
    let mut counts: HashMap<Id, usize> = HashMap::new();
    for items in train_items.values() {
        for item in items {
            *counts.entry(*item).or_insert(0) += 1;
        }
    }
    let mut ranking: Vec<(Id, usize)> = counts.into_iter().collect();
    ranking.sort_by(|(i1, c1), (i2, c2)| c2.cmp(c1).then(i1.cmp(i2)));
    let empty = HashSet::new();
    users
        .iter()
        .map(|user| {
            let seen = if remove_seen {
                train_items.get(user).unwrap_or(&empty)
            } else {
                &empty
            };
            let list = ranking
                .iter()
                .map(|(item, _)| *item)
                .filter(|item| !seen.contains(item))
                .take(k)
                .collect();
            (*user, list)
        })
        .collect()
}

/// The settings of SAR as Microsoft Recommenders runs it, on the same
/// events with the same seen rule: all history, all neighbours, Jaccard,
/// a 30-day half-life, support 1, and co-occurrence alone (no trend,
/// no blend).
pub fn sar(config: &CfConfig) -> CfConfig {
    CfConfig {
        history_length: 0,
        neighbors: 0,
        decay_half_life_days: Some(30.0),
        metric: Metric::Jaccard,
        min_support: 1,
        repeat_weight: 1.0,
        trend_weight: 0.0,
        mf_weight: 0.0,
        ..config.clone()
    }
}

/// Training events, and what each test user went on to interact with.
pub struct Task {
    /// The training updates, in log order.
    pub train: Updates,
    /// Per test user (known from training, with something new to find),
    /// the items of their test events.
    relevant: HashMap<Id, HashSet<Id>>,
    /// The test users, ascending.
    pub users: Vec<Id>,
    /// Per training user, the items of their training events.
    train_items: HashMap<Id, HashSet<Id>>,
    /// Per training user, the items they dismissed (`not_interested`).
    train_dismissed: HashMap<Id, HashSet<Id>>,
    /// Distinct training items.
    catalog_size: usize,
}

impl Task {
    /// Splits `updates` (in log order) into training and test events.
    pub fn new(updates: Updates, split_by: Split, config: &PipelineConfig) -> anyhow::Result<Task> {
        let (train, test) = split(updates, split_by);
        let train_items = interacted(&train, config);
        let train_dismissed = items_where(&train, |event| event.action == Action::NotInterested);
        let relevant: HashMap<Id, HashSet<Id>> = interacted(&test, config)
            .into_iter()
            .filter(|(user, _)| train_items.contains_key(user))
            .collect();
        anyhow::ensure!(
            !relevant.is_empty(),
            "the split leaves no test user with training history"
        );
        let mut users: Vec<Id> = relevant.keys().copied().collect();
        users.sort_unstable();
        let catalog_size = train_items.values().flatten().collect::<HashSet<_>>().len();
        Ok(Task {
            train,
            relevant,
            users,
            train_items,
            train_dismissed,
            catalog_size,
        })
    }

    /// The scores of one list per test user.
    pub fn score(&self, lists: &HashMap<Id, Vec<Id>>, k: usize) -> Scores {
        let ranking = metrics::evaluate(lists, &self.relevant, k);
        Scores {
            precision: ranking.precision,
            recall: ranking.recall,
            ndcg: ranking.ndcg,
            map: ranking.map,
            hit_rate: ranking.hit_rate,
            mrr: ranking.mrr,
            coverage: metrics::catalog_coverage(
                self.users
                    .iter()
                    .filter_map(|user| lists.get(user).map(Vec::as_slice)),
                k,
                self.catalog_size,
            ),
        }
    }

    /// Trains `config` — the co-occurrence state, the factorisation, or
    /// both, as its `mf_weight` asks — and scores its lists.
    pub fn score_model(
        &self,
        config: &CfConfig,
        k: usize,
        timely: &TimelyArgs,
    ) -> anyhow::Result<(Scores, Option<TrainingLoss>)> {
        let state = match config.mf_weight < 1.0 {
            true => Some(train_state(&self.train, config, timely)?),
            false => None,
        };
        let mf = (config.mf_weight > 0.0).then(|| train_mf(&self.train, config));
        let lists = self.recommend(state.as_ref(), mf.as_ref().map(|(m, _)| m), config, k);
        Ok((self.score(&lists, k), mf.map(|(_, loss)| loss)))
    }

    /// Each test user's top k under `config`: from the co-occurrence
    /// `state` when `mf_weight` is 0, from the factorisation `mf` when it
    /// is 1, and their [`blend`] in between (each model must be given
    /// when its weight is not 0).
    pub fn recommend(
        &self,
        state: Option<&CfState>,
        mf: Option<&MfModel>,
        config: &CfConfig,
        k: usize,
    ) -> HashMap<Id, Vec<Id>> {
        let w = config.mf_weight;
        let (state, mf) = (state.filter(|_| w < 1.0), mf.filter(|_| w > 0.0));
        let n = k.max(BLEND_CANDIDATES);
        let excluded = (&self.train_items, &self.train_dismissed);
        match (state, mf) {
            (Some(state), None) => rank(state, &self.users, k, config),
            (None, Some(mf)) => rank_mf(mf, &self.users, k, excluded, config.remove_seen)
                .into_iter()
                .map(|(user, list)| (user, list.into_iter().map(|(i, _)| i).collect()))
                .collect(),
            (Some(state), Some(mf)) => {
                let cf = rank_scored(state, &self.users, n, config);
                let mf = rank_mf(mf, &self.users, n, excluded, config.remove_seen);
                let list = |lists: &HashMap<Id, Vec<(Id, Score)>>, user| {
                    lists.get(user).map_or(Vec::new(), Vec::clone)
                };
                self.users
                    .iter()
                    .map(|user| {
                        let blended = blend(&list(&cf, user), &list(&mf, user), w, k);
                        (*user, blended.into_iter().map(|s| s.item).collect())
                    })
                    .collect()
            }
            (None, None) => panic!("mf_weight {w} needs the model it weighs"),
        }
    }

    /// Scores the popularity baseline.
    pub fn score_popularity(&self, k: usize, remove_seen: bool) -> Scores {
        self.score(
            &popularity(&self.train_items, &self.users, k, remove_seen),
            k,
        )
    }
}

/// Splits, trains, and scores persona, SAR and the popularity baseline.
pub fn evaluate(
    input: &Path,
    config: &PipelineConfig,
    split_by: Split,
    k: usize,
    model: Option<Model>,
    timely: &TimelyArgs,
) -> anyhow::Result<EvalReport> {
    check_args(split_by, k)?;
    let log = load(input, config)?;
    let task = Task::new(log.updates, split_by, config)?;
    let chosen = model.unwrap_or(Model::of(&config.recommend));
    let recommender = CfConfig {
        mf_weight: match chosen {
            Model::Cf => 0.0,
            Model::Mf => 1.0,
            Model::Blend if config.recommend.mf_weight > 0.0 => config.recommend.mf_weight,
            Model::Blend => DEFAULT_BLEND,
        },
        ..config.recommend.clone()
    };
    let (persona, mf_training) = task.score_model(&recommender, k, timely)?;
    let cooccurrence = CfConfig {
        mf_weight: 0.0,
        ..recommender.clone()
    };
    Ok(EvalReport {
        k,
        mode: recommender.mode,
        model: chosen,
        persona,
        sar: task.score_model(&sar(&cooccurrence), k, timely)?.0,
        popularity: task.score_popularity(k, recommender.remove_seen),
        train_events: task.train.len(),
        test_users: task.users.len(),
        mf_training,
    })
}

/// The factorisation's share in `--model blend` when the config gives it
/// none.
pub const DEFAULT_BLEND: f64 = 0.5;

/// Checks the flags `eval` and `tune` share.
pub fn check_args(split_by: Split, k: usize) -> anyhow::Result<()> {
    anyhow::ensure!(k > 0, "--k must be at least 1");
    if let Split::Fraction(fraction) = split_by {
        anyhow::ensure!(
            fraction > 0.0 && fraction < 1.0,
            "--split-fraction must be between 0 and 1"
        );
    }
    Ok(())
}

/// The report as a table for people.
pub fn table(report: &EvalReport) -> String {
    let k = report.k;
    let mut table = scores_header(k, "model");
    let persona = format!(
        "persona {}",
        serde_json::to_value(report.model)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    );
    for (name, s) in [
        (persona.as_str(), &report.persona),
        ("sar", &report.sar),
        ("popularity", &report.popularity),
    ] {
        table.push_str(&scores_row(name, s));
    }
    table.push_str(&format!(
        "{} mode, {} training events, {} test users\n",
        report.mode.name(),
        report.train_events,
        report.test_users
    ));
    if let Some(loss) = report.mf_training {
        table.push_str(&format!(
            "factorisation: {} steps on the last tenth of training, mean BPR loss {:.4} (ln 2 = {:.4} is chance)\n",
            loss.steps,
            loss.mean_loss,
            std::f64::consts::LN_2
        ));
    }
    table
}

/// The header of a table of scores at k.
pub fn scores_header(k: usize, first: &str) -> String {
    format!(
        "{first:<13} {:>12} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9}\n",
        format!("precision@{k}"),
        format!("recall@{k}"),
        format!("ndcg@{k}"),
        format!("map@{k}"),
        "hit_rate",
        "mrr",
        "coverage"
    )
}

/// One row of a table of scores.
pub fn scores_row(name: &str, s: &Scores) -> String {
    format!(
        "{name:<13} {:>12.4} {:>10.4} {:>8.4} {:>8.4} {:>8.4} {:>8.4} {:>9.4}\n",
        s.precision, s.recall, s.ndcg, s.map, s.hit_rate, s.mrr, s.coverage
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use persona_dataflows::Action;

    const DAY: i64 = 86_400_000;

    fn one_worker() -> TimelyArgs {
        TimelyArgs {
            workers: 1,
            processes: 1,
            process: 0,
            hostfile: None,
            connect_timeout: 60,
            peer_timeout: 30,
        }
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn a_split_time_keeps_its_hour_and_offset() {
        let midnight = 1_291_766_400_000; // 2010-12-08
        let hour = 3_600_000;
        let at = |text| parse_split_time(text).ok();
        assert_eq!(at("2010-12-08"), Some(midnight));
        assert_eq!(at("2010-12-08T12:00:00Z"), Some(midnight + 12 * hour));
        assert_eq!(at("2010-12-08T12:00:00+00:00"), Some(midnight + 12 * hour));
        assert_eq!(at("2010-12-09T00:00:00+12:00"), Some(midnight + 12 * hour));
        assert_eq!(at("2010-12-08T12:00:00"), None, "no offset: which zone?");
        assert_eq!(at("2010-12-8"), None);
    }

    fn purchase(user: Id, item: Id, day: i64) -> (Event, isize) {
        (Event::new(user, item, Action::Purchase, day * DAY), 1)
    }

    /// The factorisation's lists follow the co-occurrence rule: a dismissed
    /// item is never listed, a seen one only in repeat mode.
    #[test]
    fn the_factorisation_never_lists_a_dismissed_item() {
        let mut events: Vec<(Event, isize)> = (1..=6)
            .flat_map(|user| [purchase(user, 10, 1), purchase(user, 11, 2)])
            .collect();
        events.push(purchase(7, 10, 3));
        let (model, _) = train_mf(&events, &CfConfig::default());
        let seen = items_where(&events, |event| event.action == Action::Purchase);
        let dismissed: HashMap<Id, HashSet<Id>> = [(7, HashSet::from([11]))].into();
        let none = HashMap::new();
        let listed = |excluded, remove_seen| {
            let lists = rank_mf(&model, &[7], 5, excluded, remove_seen);
            lists[&7].iter().map(|(item, _)| *item).collect::<Vec<_>>()
        };
        assert!(listed((&seen, &none), true).contains(&11));
        assert!(!listed((&seen, &dismissed), true).contains(&11));
        assert!(!listed((&seen, &dismissed), false).contains(&11));
        assert!(!listed((&seen, &none), true).contains(&10));
        assert!(listed((&seen, &none), false).contains(&10));
    }

    /// SAR by hand: users 1–4 buy items 10 (x), 11 (y), 12 (z), 13 (w).
    /// User 1 bought x 30 days before y; everyone else bought on day 30.
    ///   histories (all items): 1 {x, y}, 2 {x, z}, 3 {y, z}, 4 {x, w}
    ///   c_xx = 3, c_yy = c_zz = 2, c_ww = 1; c_xy = c_xz = c_yz = c_xw = 1
    ///   Jaccard: s_xy = s_xz = 1/(3+2−1) = 1/4, s_yz = 1/3, s_xw = 1/3
    ///   user 1's affinities, purchase weight 5, half-life 30 days:
    ///     a_x = 5 · 2^(−30/30) = 2.5, a_y = 5
    ///   scores: z = 2.5 · 1/4 + 5 · 1/3, w = 2.5 · 1/3;
    ///   with seen items: x = 2.5 · 1 + 5 · 1/4, y = 2.5 · 1/4 + 5 · 1.
    #[test]
    fn the_sar_row_scores_a_hand_computed_example() {
        let updates = vec![
            purchase(1, 10, 0),
            purchase(1, 11, 30),
            purchase(2, 10, 30),
            purchase(2, 12, 30),
            purchase(3, 11, 30),
            purchase(3, 12, 30),
            purchase(4, 10, 30),
            purchase(4, 13, 30),
        ];
        let scores = |config: &CfConfig| {
            let state = train_state(&updates, config, &one_worker()).unwrap();
            let list = state.recommendations(1, 0, config);
            assert!(!list.popular);
            list.items
                .iter()
                .map(|scored| (scored.item, scored.score.0))
                .collect::<Vec<_>>()
        };
        let discovery = scores(&sar(&CfConfig::for_mode(Mode::Discovery)));
        assert_eq!(discovery.iter().map(|s| s.0).collect::<Vec<_>>(), [12, 13]);
        close(discovery[0].1, 2.5 / 4.0 + 5.0 / 3.0);
        close(discovery[1].1, 2.5 / 3.0);
        let repeat = scores(&sar(&CfConfig::for_mode(Mode::Repeat)));
        assert_eq!(
            repeat.iter().map(|s| s.0).collect::<Vec<_>>(),
            [11, 10, 12, 13]
        );
        close(repeat[0].1, 2.5 / 4.0 + 5.0);
        close(repeat[1].1, 2.5 + 5.0 / 4.0);
        close(repeat[2].1, 2.5 / 4.0 + 5.0 / 3.0);
        close(repeat[3].1, 2.5 / 3.0);
    }

    /// The trend lifts recently popular items: user 1's CF scores are
    /// divided by their largest and the item's share of the busiest item's
    /// recent users, times β, is added.
    #[test]
    fn the_trend_lifts_recent_items() {
        // User 1 bought x; z co-occurs with x twice, w once; w is bought by
        // three users in the last week, z by none after day 0.
        let mut updates = vec![
            purchase(1, 10, 0),
            purchase(2, 10, 0),
            purchase(2, 12, 0),
            purchase(3, 10, 0),
            purchase(3, 12, 0),
            purchase(4, 10, 0),
            purchase(4, 13, 0),
        ];
        for user in 5..8 {
            updates.push(purchase(user, 13, 40));
        }
        let config = CfConfig {
            decay_half_life_days: None,
            metric: Metric::Jaccard,
            trend_weight: 0.0,
            mf_weight: 0.0,
            ..CfConfig::for_mode(Mode::Discovery)
        };
        let state = train_state(&updates, &config, &one_worker()).unwrap();
        // Jaccard: s_xz = 2/(4+2−2) = 1/2, s_xw = 1/(4+4−1) = 1/7; a_x = 5.
        let plain = state.recommendations(1, 0, &config);
        assert_eq!(
            plain.items.iter().map(|s| s.item).collect::<Vec<_>>(),
            [12, 13]
        );
        let trend = CfConfig {
            trend_weight: 1.0,
            trend_days: 7,
            ..config
        };
        // w's trend is 3 users (the busiest), z's 0: w = 5/7 / 2.5 + 1.
        let lifted = state.recommendations(1, 0, &trend);
        assert_eq!(
            lifted.items.iter().map(|s| s.item).collect::<Vec<_>>(),
            [13, 12]
        );
        close(lifted.items[0].score.0, (5.0 / 7.0) / 2.5 + 1.0);
        close(lifted.items[1].score.0, 1.0);
    }
}
