//! `persona tune`: chooses the `[recommend]` settings on a validation split
//! carved out of the training part only, then scores the choice on the
//! test part once.
//!
//! The search is coordinate ascent on validation NDCG@k, as a person tuning
//! by hand would do it: starting from the mode's defaults, each setting in
//! turn takes every value of its grid with the others held at the best so
//! far, and the rounds repeat until none improves. Settings that change the
//! state the dataflow keeps (history length, decay, support) are searched
//! first, each state is built once and ranked under every metric,
//! neighbour count, repeat weight and trend asked of it, and a config
//! already tried is not tried again.

use std::collections::HashMap;

use anyhow::Context;

use persona_dataflows::cf::on_demand::CfState;
use persona_dataflows::cf::{CfConfig, Metric, Mode};
use serde::Serialize;

use super::{scores_header, scores_row, train_mf, train_state, Scores, Split, Task};
use crate::config::PipelineConfig;
use crate::runtime::TimelyArgs;

/// The values each setting is searched over.
const HISTORY_LENGTHS: [usize; 6] = [10, 20, 50, 100, 200, 0];
const HALF_LIVES: [Option<f64>; 6] = [
    None,
    Some(7.0),
    Some(14.0),
    Some(30.0),
    Some(60.0),
    Some(120.0),
];
const MIN_SUPPORTS: [u64; 3] = [1, 2, 3];
const NEIGHBORS: [usize; 6] = [10, 20, 50, 100, 200, 0];
const REPEAT_WEIGHTS: [f64; 6] = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0];
const TREND_WEIGHTS: [f64; 6] = [0.0, 0.1, 0.25, 0.5, 1.0, 2.0];
const TREND_DAYS: [u32; 5] = [3, 7, 14, 30, 60];
const MF_WEIGHTS: [f64; 7] = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0];
/// Rounds of coordinate ascent at most.
const ROUNDS: usize = 3;

/// One config tried, and its validation scores.
#[derive(Clone, Debug, Serialize)]
pub struct Trial {
    pub history_length: usize,
    pub decay_half_life_days: Option<f64>,
    pub min_support: u64,
    pub metric: Metric,
    pub neighbors: usize,
    pub repeat_weight: f64,
    pub trend_weight: f64,
    pub trend_days: u32,
    pub mf_weight: f64,
    pub validation: Scores,
}

/// What `persona tune` prints.
#[derive(Clone, Debug, Serialize)]
pub struct TuneReport {
    pub k: usize,
    pub mode: Mode,
    /// Training events before the validation cut, and validation users.
    pub validation_train_events: usize,
    pub validation_users: usize,
    /// Every config tried, in the order tried.
    pub trials: Vec<Trial>,
    /// The best trial on validation, and its number (from 1) in `trials`.
    pub best: Trial,
    pub best_trial: usize,
    /// The best config retrained on the whole training part and scored on
    /// the test part: the one look at the test events.
    pub test: Scores,
    pub test_users: usize,
}

/// The validation split of the training part: the same kind of split as
/// the test one, never reading the test events. A time split holds out the
/// last `validation_fraction` of training events (by time); a per-user
/// split holds out each user's last fraction of training events.
pub fn validation_split(
    train: &[(persona_dataflows::Event, isize)],
    test_split: Split,
    validation_fraction: f64,
) -> Split {
    match test_split {
        Split::Fraction(fraction) => Split::Fraction(fraction),
        Split::Time(_) => {
            let mut times: Vec<i64> = train.iter().map(|(event, _)| event.time_ms).collect();
            times.sort_unstable();
            let index = ((times.len() as f64) * (1.0 - validation_fraction)) as usize;
            Split::Time(times.get(index).copied().unwrap_or(i64::MAX))
        }
    }
}

/// The settings one trial varies, as a key of the configs already tried.
fn key(config: &CfConfig) -> String {
    format!(
        "{} {} {:?} {} {:?} {} {} {} {}",
        config.mf_weight,
        config.history_length,
        config.decay_half_life_days,
        config.min_support,
        config.metric,
        config.neighbors,
        config.repeat_weight,
        config.trend_weight,
        // The window matters only with a trend.
        if config.trend_weight > 0.0 {
            config.trend_days
        } else {
            0
        }
    )
}

/// The settings that change the state: a new state is trained when they do.
fn state_key(config: &CfConfig) -> String {
    format!(
        "{} {:?} {}",
        config.history_length, config.decay_half_life_days, config.min_support
    )
}

/// Searches the settings of `config.recommend` on a validation split of
/// `task`'s training part and scores the best on `task`'s test part.
/// `progress` receives each trial's table row as it is scored.
pub fn tune(
    task: &Task,
    config: &PipelineConfig,
    k: usize,
    validation_fraction: f64,
    test_split: Split,
    timely: &TimelyArgs,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<(TuneReport, CfConfig)> {
    anyhow::ensure!(
        validation_fraction > 0.0 && validation_fraction < 1.0,
        "--validation-fraction must be between 0 and 1"
    );
    let inner = validation_split(&task.train, test_split, validation_fraction);
    let validation = Task::new(task.train.clone(), inner, config)
        .context("the validation split of the training part")?;
    let mut best = config.recommend.clone();
    let mut trials: Vec<Trial> = Vec::new();
    // Config key → index in `trials`.
    let mut tried: HashMap<String, usize> = HashMap::new();
    let mut state: Option<(String, CfState)> = None;
    // Its settings are not searched: trained once, when a blend asks.
    let mut mf = None;
    progress(&format!(
        "{}  history  half-life  support  {:<33}  neighbors  repeat  trend  trend_days  mf_weight\n",
        scores_header(k, "trial").trim_end_matches('\n'),
        "metric"
    ));
    let mut try_config = |candidate: &CfConfig,
                          trials: &mut Vec<Trial>,
                          progress: &mut dyn FnMut(&str)|
     -> anyhow::Result<usize> {
        if let Some(&index) = tried.get(&key(candidate)) {
            return Ok(index);
        }
        if state
            .as_ref()
            .is_none_or(|(key, _)| *key != state_key(candidate))
        {
            state = None; // free the old state before building the next
            state = Some((
                state_key(candidate),
                train_state(&validation.train, candidate, timely)?,
            ));
        }
        if candidate.mf_weight > 0.0 && mf.is_none() {
            mf = Some(train_mf(&validation.train, candidate).0);
        }
        let (_, trained) = state.as_ref().expect("just built");
        let lists = validation.recommend(Some(trained), mf.as_ref(), candidate, k);
        let scores = validation.score(&lists, k);
        let trial = Trial {
            history_length: candidate.history_length,
            decay_half_life_days: candidate.decay_half_life_days,
            min_support: candidate.min_support,
            metric: candidate.metric,
            neighbors: candidate.neighbors,
            repeat_weight: candidate.repeat_weight,
            trend_weight: candidate.trend_weight,
            trend_days: candidate.trend_days,
            mf_weight: candidate.mf_weight,
            validation: scores,
        };
        progress(&format!(
            "{}  {:>7}  {:>9}  {:>7}  {:<33}  {:>9}  {:>6}  {:>5}  {:>10}  {:>9}\n",
            scores_row(&format!("#{}", trials.len() + 1), &scores).trim_end_matches('\n'),
            trial.history_length,
            trial
                .decay_half_life_days
                .map_or("none".to_owned(), |days| days.to_string()),
            trial.min_support,
            // As the config spells it.
            serde_json::to_value(trial.metric)?
                .as_str()
                .unwrap_or_default(),
            trial.neighbors,
            trial.repeat_weight,
            trial.trend_weight,
            trial.trend_days,
            trial.mf_weight
        ));
        trials.push(trial);
        tried.insert(key(candidate), trials.len() - 1);
        Ok(trials.len() - 1)
    };
    let mut best_index = try_config(&best, &mut trials, &mut progress)?;
    for _ in 0..ROUNDS {
        let before = best_index;
        for setting in Setting::ALL {
            let idle = match setting {
                // The own term scores seen items only.
                Setting::RepeatWeight => best.remove_seen,
                Setting::TrendDays => best.trend_weight == 0.0,
                _ => false,
            };
            if idle {
                continue;
            }
            for candidate in setting.candidates(&best) {
                let index = try_config(&candidate, &mut trials, &mut progress)?;
                // Strictly better: ties keep the earlier, simpler choice.
                if trials[index].validation.ndcg > trials[best_index].validation.ndcg {
                    (best, best_index) = (candidate, index);
                }
            }
        }
        if best_index == before {
            break;
        }
    }
    let best_trial = trials[best_index].clone();
    let (test, _) = task.score_model(&best, k, timely)?;
    let report = TuneReport {
        k,
        mode: best.mode,
        validation_train_events: validation.train.len(),
        validation_users: validation.users.len(),
        trials,
        best: best_trial,
        best_trial: best_index + 1,
        test,
        test_users: task.users.len(),
    };
    Ok((report, best))
}

/// A setting the search varies, state-changing ones first.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setting {
    HistoryLength,
    HalfLife,
    MinSupport,
    Metric,
    Neighbors,
    RepeatWeight,
    TrendWeight,
    TrendDays,
    MfWeight,
}

impl Setting {
    const ALL: [Setting; 9] = [
        Setting::HistoryLength,
        Setting::HalfLife,
        Setting::MinSupport,
        Setting::Metric,
        Setting::Neighbors,
        Setting::RepeatWeight,
        Setting::TrendWeight,
        Setting::TrendDays,
        Setting::MfWeight,
    ];

    /// `config` with this setting at each value of its grid.
    fn candidates(self, config: &CfConfig) -> Vec<CfConfig> {
        let with = |change: &dyn Fn(&mut CfConfig)| {
            let mut candidate = config.clone();
            change(&mut candidate);
            candidate
        };
        match self {
            Setting::HistoryLength => HISTORY_LENGTHS
                .iter()
                .map(|&n| with(&|c| c.history_length = n))
                .collect(),
            Setting::HalfLife => HALF_LIVES
                .iter()
                .map(|&h| with(&|c| c.decay_half_life_days = h))
                .collect(),
            Setting::MinSupport => MIN_SUPPORTS
                .iter()
                .map(|&s| with(&|c| c.min_support = s))
                .collect(),
            Setting::Metric => Metric::ALL
                .iter()
                .map(|&m| with(&|c| c.metric = m))
                .collect(),
            Setting::Neighbors => NEIGHBORS
                .iter()
                .map(|&n| with(&|c| c.neighbors = n))
                .collect(),
            Setting::RepeatWeight => REPEAT_WEIGHTS
                .iter()
                .map(|&w| with(&|c| c.repeat_weight = w))
                .collect(),
            Setting::TrendWeight => TREND_WEIGHTS
                .iter()
                .map(|&w| with(&|c| c.trend_weight = w))
                .collect(),
            Setting::TrendDays => TREND_DAYS
                .iter()
                .map(|&d| with(&|c| c.trend_days = d))
                .collect(),
            Setting::MfWeight => MF_WEIGHTS
                .iter()
                .map(|&w| with(&|c| c.mf_weight = w))
                .collect(),
        }
    }
}

/// The `[recommend]` table of `config` as TOML, every setting written out
/// (`decay = false` for no decay: TOML has no null).
pub fn recommend_toml(config: &CfConfig) -> anyhow::Result<String> {
    let mut table = toml::Table::try_from(config)?;
    if config.decay_half_life_days.is_none() {
        table.insert("decay".into(), toml::Value::Boolean(false));
    }
    let mut document = toml::Table::new();
    document.insert("recommend".into(), toml::Value::Table(table));
    Ok(toml::to_string(&document)?)
}
