//! The `[profile]` table of the pipeline config: which windows, weights and
//! thresholds the profile dataflow uses. Every field has a default, so an
//! empty table (or none at all) gives the documented behaviour, and unknown
//! keys are rejected so that a typo never silently falls back to a default.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

pub use crate::event::ActionWeights;

/// Settings of the profile dataflow (the `[profile]` table).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileConfig {
    /// Sliding event-time windows, in days, over which action counts are
    /// kept (`windows` in the output). Default `[1, 7, 30]`.
    pub window_days: Vec<u64>,
    /// Half-life of category affinity, in days: a day's weight counts half as
    /// much as a day `half_life_days` later. Must be positive. Default `30.0`.
    pub half_life_days: f64,
    /// How many categories `top_categories` keeps. Default `5`.
    pub top_categories: usize,
    /// Affinity weight of one event of each action. Default: view 1, click 1,
    /// cart 3, favourite 2, purchase 5, rating 2, every other action 0.
    pub action_weights: ActionWeights,
    /// Thresholds of the RFM segment. Defaults: see [`SegmentConfig`].
    pub segment: SegmentConfig,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        ProfileConfig {
            window_days: vec![1, 7, 30],
            half_life_days: 30.0,
            top_categories: 5,
            action_weights: ActionWeights::default(),
            segment: SegmentConfig::default(),
        }
    }
}

impl ProfileConfig {
    /// Checks what serde cannot: the half-life and the windows must be
    /// positive.
    pub fn validate(&self) -> Result<(), InvalidProfileConfig> {
        let invalid = |field: &'static str, expected: &'static str| {
            Err(InvalidProfileConfig { field, expected })
        };
        if !(self.half_life_days.is_finite() && self.half_life_days > 0.0) {
            return invalid("half_life_days", "a finite number of days > 0");
        }
        if self.window_days.contains(&0) {
            return invalid("window_days", "window lengths of at least 1 day");
        }
        if self.segment.recency_days == 0 {
            return invalid("segment.recency_days", "at least 1 day");
        }
        Ok(())
    }

    /// Every window the dataflow maintains: the output windows plus the
    /// segment's recency window, each once.
    pub(crate) fn maintained_windows(&self) -> BTreeSet<u64> {
        let mut windows: BTreeSet<u64> = self.window_days.iter().copied().collect();
        windows.insert(self.segment.recency_days);
        windows
    }
}

/// A `[profile]` setting out of its valid range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidProfileConfig {
    /// The offending key, e.g. `half_life_days`.
    pub field: &'static str,
    /// What the key must hold.
    pub expected: &'static str,
}

impl std::fmt::Display for InvalidProfileConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[profile] {}: expected {}", self.field, self.expected)
    }
}

impl std::error::Error for InvalidProfileConfig {}

/// Thresholds of the RFM segment (see [`crate::profile::Segment`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SegmentConfig {
    /// Recency: a user is recent if they have a net purchase within the last
    /// `recency_days` days. Default 30.
    pub recency_days: u64,
    /// Frequency: a user is frequent if their lifetime net purchase count is
    /// at least this. Default 3.
    pub min_purchases: i64,
    /// Monetary: a user is valuable if their spend, in minor units, is at
    /// least this. Default 10000 (100.00 in the currency of the prices).
    pub min_spend: i64,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        SegmentConfig {
            recency_days: 30,
            min_purchases: 3,
            min_spend: 10_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_gives_defaults() {
        let config: ProfileConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, ProfileConfig::default());
        assert!(config.validate().is_ok());
    }

    #[test]
    fn partial_tables_keep_other_defaults() {
        let config: ProfileConfig = serde_json::from_str(
            r#"{"window_days": [14], "action_weights": {"view": 4}, "segment": {"min_spend": 5}}"#,
        )
        .unwrap();
        assert_eq!(config.window_days, vec![14]);
        assert_eq!(config.action_weights.view, 4);
        assert_eq!(config.action_weights.purchase, 5);
        assert_eq!(config.segment.min_spend, 5);
        assert_eq!(config.segment.recency_days, 30);
        assert_eq!(config.maintained_windows(), BTreeSet::from([14, 30]));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let typo = serde_json::from_str::<ProfileConfig>(r#"{"half_life": 7}"#);
        assert!(typo.unwrap_err().to_string().contains("unknown field"));
        let action = serde_json::from_str::<ProfileConfig>(r#"{"action_weights": {"buy": 1}}"#);
        assert!(action.is_err());
    }

    #[test]
    fn out_of_range_values_are_named() {
        let config = ProfileConfig {
            half_life_days: 0.0,
            ..ProfileConfig::default()
        };
        let error = config.validate().unwrap_err();
        assert_eq!(error.field, "half_life_days");
        let config = ProfileConfig {
            window_days: vec![7, 0],
            ..ProfileConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().field, "window_days");
    }
}
