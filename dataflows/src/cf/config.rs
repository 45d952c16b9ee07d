//! The `[recommend]` table of the pipeline config: what collaborative
//! filtering keeps and how it scores. Every field has a default, and unknown
//! keys are rejected. Imports nothing of collaborative filtering, which all
//! imports it.

use serde::{Deserialize, Serialize};

use crate::{Action, ActionWeights};

/// The `[recommend]` table of the pipeline config.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CfConfig {
    /// History length N: the most recent distinct items kept per user; 0 =
    /// all (SAR). Default 20.
    pub history_length: usize,
    /// Integer weight per action in the affinity; items enter the history
    /// through actions of positive weight only. Default view 1, click 1,
    /// cart 3, favourite 2, purchase 5, rating 2, others 0.
    pub weights: ActionWeights,
    /// Half-life H in days of the affinity decay `2^((day − D)/H)`, D the day
    /// of the user's latest history item; absent = no decay (integer sums).
    /// Default absent.
    pub decay_half_life_days: Option<f64>,
    /// Similarity metric. Default `jaccard`.
    pub metric: Metric,
    /// Pairs co-occurring for fewer users than this are dropped. Default 1.
    pub min_support: u64,
    /// K: neighbours kept per item (similar items, and scoring); 0 = all.
    /// Default 50.
    pub neighbors: usize,
    /// k: items recommended per user; 0 = all scored items. Default 10.
    pub top_k: usize,
    /// Leave out items the user has seen (any candidate item, not only the
    /// last N). Default true.
    pub remove_seen: bool,
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

impl Default for CfConfig {
    fn default() -> Self {
        CfConfig {
            history_length: 20,
            weights: ActionWeights::default(),
            decay_half_life_days: None,
            metric: Metric::Jaccard,
            min_support: 1,
            neighbors: 50,
            top_k: 10,
            remove_seen: true,
            primary_action: None,
            indicator_action: None,
            rankings: None,
        }
    }
}

impl CfConfig {
    /// Checks what serde cannot: an indicator needs a different primary action.
    pub fn validate(&self) -> Result<(), String> {
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
