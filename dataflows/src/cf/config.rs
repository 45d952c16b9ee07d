//! The `[recommend]` table of the pipeline config: what collaborative
//! filtering keeps and how it scores. Every field has a default, and unknown
//! keys are rejected. Imports nothing of collaborative filtering, which all
//! imports it.

use serde::{Deserialize, Serialize};

use crate::mf::MfConfig;
use crate::{Action, ActionWeights};

/// The `[recommend]` table of the pipeline config. Fields left out take the
/// defaults of the [`Mode`] (see [`CfConfig::for_mode`]).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "RecommendTable")]
pub struct CfConfig {
    /// Discovery (seen items left out) or repeat (seen items may come back).
    /// Default discovery.
    pub mode: Mode,
    /// History length N: the most recent distinct items kept per user; 0 =
    /// all (SAR).
    pub history_length: usize,
    /// Integer weight per action in the affinity; items enter the history
    /// through actions of positive weight only. Default view 1, click 1,
    /// cart 3, favourite 2, purchase 5, rating 2, others 0.
    pub weights: ActionWeights,
    /// Half-life H in days of the affinity decay `2^((day − D)/H)`, D the day
    /// of the user's latest history item; absent = no decay (integer sums).
    pub decay_half_life_days: Option<f64>,
    /// Similarity metric.
    pub metric: Metric,
    /// Pairs co-occurring for fewer users than this are dropped.
    pub min_support: u64,
    /// K: neighbours kept per item (similar items, and scoring); 0 = all.
    pub neighbors: usize,
    /// k: items recommended per user; 0 = all scored items. Default 10.
    pub top_k: usize,
    /// Leave out items the user has seen (any candidate item, not only the
    /// last N): true in discovery mode, false in repeat mode.
    pub remove_seen: bool,
    /// When seen items are kept: the weight of an item's own term in its
    /// score, `affinity · repeat_weight · sim(j, j)` (SAR's diagonal is 1).
    pub repeat_weight: f64,
    /// β of the popularity trend: a user's scores, divided by their largest
    /// magnitude, gain `β · trend(j) / max trend`, where `trend(j)` sums,
    /// over the last `trend_days` days up to the latest day of any event,
    /// the users with an event on j that day. 0 = off (SAR's scores).
    pub trend_weight: f64,
    /// W: the days of the trend window.
    pub trend_days: u32,
    /// The Universal Recommender's primary event: when set, only events of
    /// this action make histories, co-occurrence, similar items and seen
    /// items, so only items with such events are recommended. Default absent
    /// (every action of positive weight).
    pub primary_action: Option<Action>,
    /// A secondary indicator (e.g. `view` predicting `purchase`): each
    /// primary item keeps its K indicator items of highest log-likelihood
    /// ratio of cross-occurrence, and a user's last N items of this action
    /// add `affinity · llr` to the scores. Needs `primary_action`. Default
    /// absent.
    pub indicator_action: Option<Action>,
    /// How `replay` and `run` rank similar items and recommendations (see
    /// [`Rankings`]). Default: `on_demand`, or `dataflow` with an
    /// `indicator_action`, which only the dataflow ranks.
    pub rankings: Option<Rankings>,
    /// The share of the learned factorisation ([`crate::mf`]) in a blend
    /// with the co-occurrence scores, each normalised per user: 0 =
    /// co-occurrence alone, 1 = the factorisation alone. Ranked on demand
    /// (see docs/models.md). Default: 0.25 in discovery mode (the best on
    /// validation), 0 in repeat mode and with the dataflow's rankings.
    pub mf_weight: f64,
    /// `[recommend.mf]`: the factorisation's settings.
    pub mf: MfConfig,
}

/// Where the rankings of `replay` and `run` come from. Both give the same
/// lists; `persona serve` always ranks on demand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rankings {
    /// Ranked at the end of each period (with a changelog or upsert
    /// topic) or of the input, from the exact state the dataflow keeps,
    /// by the code that answers `persona serve`.
    OnDemand,
    /// Maintained by the dataflow itself: incremental joins and top-K
    /// reductions per period.
    Dataflow,
}

/// What recommendations are for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// New items only: what the user has seen is left out.
    #[default]
    Discovery,
    /// Seen items may come back ("buy again"), scored with their own term.
    Repeat,
}

impl Mode {
    /// The mode's name in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Discovery => "discovery",
            Mode::Repeat => "repeat",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "discovery" => Ok(Mode::Discovery),
            "repeat" => Ok(Mode::Repeat),
            _ => Err(format!(
                "unknown mode {text:?}: expected \"discovery\" or \"repeat\""
            )),
        }
    }
}

impl Default for CfConfig {
    fn default() -> Self {
        CfConfig::for_mode(Mode::Discovery)
    }
}

impl CfConfig {
    /// The defaults of a mode, chosen by `persona tune` on validation splits
    /// of the logs at hand (`docs/recommendations.md`, "Defaults").
    pub fn for_mode(mode: Mode) -> Self {
        let discovery = CfConfig {
            mode,
            history_length: 20,
            weights: ActionWeights::default(),
            decay_half_life_days: None,
            metric: Metric::LogLikelihood,
            min_support: 1,
            neighbors: 50,
            top_k: 10,
            remove_seen: true,
            repeat_weight: 1.0,
            trend_weight: 0.5,
            trend_days: 14,
            primary_action: None,
            indicator_action: None,
            rankings: None,
            // The blend won on Online Retail's validation split (NDCG@10
            // 0.0857 against 0.0816 for co-occurrence, docs/models.md).
            mf_weight: 0.25,
            mf: MfConfig::default(),
        };
        match mode {
            Mode::Discovery => discovery,
            Mode::Repeat => CfConfig {
                history_length: 50,
                metric: Metric::Cosine,
                remove_seen: false,
                repeat_weight: 8.0,
                trend_weight: 0.25,
                // Not validated in repeat mode: co-occurrence alone.
                mf_weight: 0.0,
                ..discovery
            },
        }
    }
}

/// The `[recommend]` table as written: every field optional, filled from
/// the mode's defaults.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecommendTable {
    mode: Option<Mode>,
    history_length: Option<usize>,
    weights: Option<ActionWeights>,
    decay_half_life_days: Option<f64>,
    /// `false` turns the mode's decay off (TOML has no null).
    decay: Option<bool>,
    metric: Option<Metric>,
    min_support: Option<u64>,
    neighbors: Option<usize>,
    top_k: Option<usize>,
    remove_seen: Option<bool>,
    repeat_weight: Option<f64>,
    trend_weight: Option<f64>,
    trend_days: Option<u32>,
    primary_action: Option<Action>,
    indicator_action: Option<Action>,
    rankings: Option<Rankings>,
    mf_weight: Option<f64>,
    mf: Option<MfConfig>,
}

impl TryFrom<RecommendTable> for CfConfig {
    type Error = String;

    fn try_from(table: RecommendTable) -> Result<Self, String> {
        // remove_seen alone names the mode it implies.
        let mode = match (table.mode, table.remove_seen) {
            (Some(mode), _) => mode,
            (None, Some(false)) => Mode::Repeat,
            (None, _) => Mode::Discovery,
        };
        let defaults = CfConfig::for_mode(mode);
        let by_dataflow = matches!(
            (table.rankings, table.indicator_action),
            (Some(Rankings::Dataflow), _) | (None, Some(_))
        );
        if table
            .remove_seen
            .is_some_and(|remove| remove != defaults.remove_seen)
        {
            return Err(format!(
                "remove_seen = {} contradicts mode = \"{}\": give one of them",
                !defaults.remove_seen,
                mode.name()
            ));
        }
        let decay_half_life_days = match (table.decay, table.decay_half_life_days) {
            (Some(false), Some(_)) => {
                return Err("decay = false contradicts decay_half_life_days".into())
            }
            (Some(false), None) => None,
            (_, Some(days)) => Some(days),
            (_, None) => defaults.decay_half_life_days,
        };
        Ok(CfConfig {
            mode,
            history_length: table.history_length.unwrap_or(defaults.history_length),
            weights: table.weights.unwrap_or(defaults.weights),
            decay_half_life_days,
            metric: table.metric.unwrap_or(defaults.metric),
            min_support: table.min_support.unwrap_or(defaults.min_support),
            neighbors: table.neighbors.unwrap_or(defaults.neighbors),
            top_k: table.top_k.unwrap_or(defaults.top_k),
            remove_seen: defaults.remove_seen,
            repeat_weight: table.repeat_weight.unwrap_or(defaults.repeat_weight),
            // Only the on-demand rankings have the trend and the blend:
            // the dataflow's default to none.
            trend_weight: table.trend_weight.unwrap_or(if by_dataflow {
                0.0
            } else {
                defaults.trend_weight
            }),
            trend_days: table.trend_days.unwrap_or(defaults.trend_days),
            primary_action: table.primary_action.or(defaults.primary_action),
            indicator_action: table.indicator_action.or(defaults.indicator_action),
            rankings: table.rankings.or(defaults.rankings),
            mf_weight: table.mf_weight.unwrap_or(if by_dataflow {
                0.0
            } else {
                defaults.mf_weight
            }),
            mf: table.mf.unwrap_or(defaults.mf),
        })
    }
}

impl CfConfig {
    /// Checks what serde cannot: an indicator needs a different primary action.
    pub fn validate(&self) -> Result<(), String> {
        if self.trend_weight > 0.0 && self.rankings() == Rankings::Dataflow {
            return Err(
                "trend_weight is ranked on demand only: use rankings = \"on_demand\" \
                 (and no indicator_action), or trend_weight = 0"
                    .into(),
            );
        }
        if !(self.mf_weight.is_finite() && (0.0..=1.0).contains(&self.mf_weight)) {
            return Err("mf_weight must be 0 to 1".into());
        }
        if self.mf_weight > 0.0 && self.rankings() == Rankings::Dataflow {
            return Err(
                "mf_weight is ranked on demand only: use rankings = \"on_demand\" \
                 (and no indicator_action), or mf_weight = 0"
                    .into(),
            );
        }
        self.mf.validate()?;
        if self.trend_days == 0 {
            return Err("trend_days must be at least 1".into());
        }
        if let (Some(Rankings::OnDemand), Some(_)) = (self.rankings, self.indicator_action) {
            return Err(
                "rankings = \"on_demand\" cannot rank the cross-occurrence indicator: \
                 use rankings = \"dataflow\", or drop indicator_action"
                    .into(),
            );
        }
        match (self.primary_action, self.indicator_action) {
            (None, Some(indicator)) => Err(format!(
                "indicator_action = \"{indicator}\" needs a primary_action (e.g. \"purchase\")"
            )),
            (Some(primary), Some(indicator)) if primary == indicator => Err(format!(
                "indicator_action must differ from primary_action (both \"{primary}\")"
            )),
            _ => Ok(()),
        }
    }
}

impl CfConfig {
    /// Where the rankings come from (see [`CfConfig::rankings`]).
    pub fn rankings(&self) -> Rankings {
        match (self.rankings, self.indicator_action) {
            (Some(rankings), _) => rankings,
            (None, Some(_)) => Rankings::Dataflow,
            (None, None) => Rankings::OnDemand,
        }
    }
}

/// How co-occurrence counts become a similarity.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// `c_ij`.
    Cooccurrence,
    /// `c_ij / (c_ii + c_jj − c_ij)`.
    #[default]
    Jaccard,
    /// `c_ij / (c_ii · c_jj)`.
    Lift,
    /// `c_ij / sqrt(c_ii · c_jj)`.
    Cosine,
    /// `c_ij / min(c_ii, c_jj)`.
    InclusionIndex,
    /// `log2(n_items · lift)`, with SAR's `n_items` (not users).
    MutualInformation,
    /// `c_ij · mutual_information`.
    LexicographersMutualInformation,
    /// Mahout's log-likelihood ratio (G²) of the 2×2 user contingency table.
    LogLikelihood,
}
