//! The `[risk]` table of the pipeline config: velocity windows, the history
//! the day's activity is compared with, and the alert rules. Rules are
//! checked at start ([`RiskConfig::validate`]): an unknown feature, a bad
//! comparison or a threshold that is not a number is an error naming the
//! rule, never a rule that silently never fires.

use serde::{Deserialize, Serialize};

/// Settings of the risk features and alerts (the `[risk]` table).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskConfig {
    /// Velocity windows, in seconds, ending at the user's latest event.
    /// Default `[60, 600, 3600]`.
    pub velocity_secs: Vec<u64>,
    /// How many days before the day of the user's latest event its activity
    /// is compared with (mean and deviation, zero days included). Default 30.
    pub history_days: u64,
    /// The alert rules (`[[risk.rules]]`). Default: [`RiskConfig::default_rules`].
    pub rules: Vec<RiskRule>,
}

impl Default for RiskConfig {
    fn default() -> Self {
        RiskConfig {
            velocity_secs: vec![60, 600, 3_600],
            history_days: 30,
            rules: RiskConfig::default_rules(),
        }
    }
}

/// One alert rule: `feature op threshold`, for users with at least
/// `min_history_days` active days among the `history_days` before.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskRule {
    /// Unique among the rules; the alerts carry it.
    pub name: String,
    /// A feature of the `risk` section (see [`Feature::parse`]), e.g.
    /// `day.spend_z` or `velocity.600.events`.
    pub feature: String,
    /// `>`, `>=`, `<` or `<=`.
    pub op: String,
    pub threshold: f64,
    /// Days with an event among the `history_days` before the day of the
    /// latest event that a user needs for the rule to apply. Default 0.
    #[serde(default)]
    pub min_history_days: i64,
}

/// The longest velocity window: a week. Velocity is about bursts; its
/// state holds every event of the longest window.
pub const MAX_VELOCITY_SECS: u64 = 7 * 86_400;

/// The longest history: ten years of days.
pub const MAX_HISTORY_DAYS: u64 = 3_660;

impl RiskConfig {
    /// The rules used when `[risk]` names none; their alert counts on Online
    /// Retail are in docs/risk.md.
    pub fn default_rules() -> Vec<RiskRule> {
        let rule = |name: &str, feature: &str, op: &str, threshold: f64, history: i64| RiskRule {
            name: name.to_string(),
            feature: feature.to_string(),
            op: op.to_string(),
            threshold,
            min_history_days: history,
        };
        vec![
            // A day's spend six deviations above the user's usual days.
            rule("unusual_day_spend", "day.spend_z", ">=", 6.0, 3),
            // Five times the user's largest day of the history.
            rule("spend_above_largest", "day.spend_over_max", ">=", 5.0, 2),
            // A purchase after half a year without any event.
            rule(
                "purchase_after_idle",
                "purchase_after_idle_days",
                ">=",
                180.0,
                0,
            ),
            // 5,000.00 spent within an hour.
            rule("hour_spend", "velocity.3600.spend", ">=", 500_000.0, 0),
        ]
    }

    /// Checks what serde cannot: windows and history in range, and every
    /// rule (name, feature, comparison, threshold).
    pub fn validate(&self) -> Result<(), InvalidRiskConfig> {
        let invalid = |field: String, expected: String| Err(InvalidRiskConfig { field, expected });
        // Bounded: the state keeps every event of the longest window and a
        // bucket per active day of the history.
        if self
            .velocity_secs
            .iter()
            .any(|secs| !(1..=MAX_VELOCITY_SECS).contains(secs))
        {
            return invalid(
                "velocity_secs".into(),
                format!("windows of 1 to {MAX_VELOCITY_SECS} seconds (7 days)"),
            );
        }
        if !(2..=MAX_HISTORY_DAYS).contains(&self.history_days) {
            return invalid(
                "history_days".into(),
                format!("2 (a deviation needs two days) to {MAX_HISTORY_DAYS} days"),
            );
        }
        for (index, rule) in self.rules.iter().enumerate() {
            let field = |key: &str| format!("rules[{index}] ({:?}).{key}", rule.name);
            if rule.name.trim().is_empty() {
                return invalid(field("name"), "a name".into());
            }
            if self.rules[..index].iter().any(|r| r.name == rule.name) {
                return invalid(field("name"), "a name no other rule has".into());
            }
            if let Err(expected) = Feature::parse(&rule.feature, &self.velocity_secs) {
                return invalid(field("feature"), expected);
            }
            if Comparison::parse(&rule.op).is_none() {
                return invalid(field("op"), "one of >, >=, <, <=".into());
            }
            if !rule.threshold.is_finite() {
                return invalid(field("threshold"), "a finite number".into());
            }
            if rule.min_history_days < 0 || rule.min_history_days as u64 > self.history_days {
                return invalid(
                    field("min_history_days"),
                    format!("0 to history_days ({})", self.history_days),
                );
            }
        }
        Ok(())
    }
}

/// A `[risk]` setting out of its valid range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidRiskConfig {
    /// The offending key, e.g. `rules[1] ("burst").feature`.
    pub field: String,
    /// What the key must hold.
    pub expected: String,
}

impl std::fmt::Display for InvalidRiskConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[risk] {}: expected {}", self.field, self.expected)
    }
}

impl std::error::Error for InvalidRiskConfig {}

/// A feature a rule reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// `velocity.SECS.MEASURE`: the window's number among the configured
    /// ones, and the measure.
    Velocity(usize, Measure),
    SincePreviousMs,
    PurchaseAfterIdleDays,
    DaySpend,
    DayEvents,
    DaySpendZ,
    DayEventsZ,
    DaySpendOverMax,
}

/// What a velocity window counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    Events,
    Purchases,
    Spend,
    Items,
    Sessions,
}

/// The features a rule can name, for error messages.
const FEATURES: &str = "velocity.SECS.{events,purchases,spend,items,sessions}, since_previous_ms, \
     purchase_after_idle_days, day.{spend,events,spend_z,events_z,spend_over_max}";

impl Feature {
    /// The feature named `name` (its path in the `risk` section), with
    /// `velocity_secs` the configured windows; else what is expected.
    pub fn parse(name: &str, velocity_secs: &[u64]) -> Result<Feature, String> {
        let feature = match name {
            "since_previous_ms" => Feature::SincePreviousMs,
            "purchase_after_idle_days" => Feature::PurchaseAfterIdleDays,
            "day.spend" => Feature::DaySpend,
            "day.events" => Feature::DayEvents,
            "day.spend_z" => Feature::DaySpendZ,
            "day.events_z" => Feature::DayEventsZ,
            "day.spend_over_max" => Feature::DaySpendOverMax,
            _ => {
                let unknown = || format!("one of {FEATURES}, not {name:?}");
                let mut parts = name.split('.');
                let (Some("velocity"), Some(secs), Some(measure), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return Err(unknown());
                };
                let measure = match measure {
                    "events" => Measure::Events,
                    "purchases" => Measure::Purchases,
                    "spend" => Measure::Spend,
                    "items" => Measure::Items,
                    "sessions" => Measure::Sessions,
                    _ => return Err(unknown()),
                };
                let window = secs
                    .parse::<u64>()
                    .ok()
                    .and_then(|secs| velocity_secs.iter().position(|s| *s == secs))
                    .ok_or_else(|| {
                        format!(
                            "a window of velocity_secs {velocity_secs:?}, not {secs:?} in {name:?}"
                        )
                    })?;
                Feature::Velocity(window, measure)
            }
        };
        Ok(feature)
    }
}

/// A rule's comparison of a feature with its threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    Above,
    AtLeast,
    Below,
    AtMost,
}

impl Comparison {
    pub fn parse(op: &str) -> Option<Comparison> {
        Some(match op {
            ">" => Comparison::Above,
            ">=" => Comparison::AtLeast,
            "<" => Comparison::Below,
            "<=" => Comparison::AtMost,
            _ => return None,
        })
    }

    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Above => value > threshold,
            Comparison::AtLeast => value >= threshold,
            Comparison::Below => value < threshold,
            Comparison::AtMost => value <= threshold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_rule(feature: &str, op: &str, threshold: f64) -> RiskConfig {
        RiskConfig {
            rules: vec![RiskRule {
                name: "r".into(),
                feature: feature.into(),
                op: op.into(),
                threshold,
                min_history_days: 0,
            }],
            ..RiskConfig::default()
        }
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(RiskConfig::default().validate(), Ok(()));
        let config: RiskConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, RiskConfig::default());
    }

    #[test]
    fn bad_rules_are_named() {
        let error = with_rule("day.spend_zz", ">", 1.0).validate().unwrap_err();
        assert_eq!(error.field, r#"rules[0] ("r").feature"#);
        assert!(error.expected.contains("day.spend_zz"), "{error}");
        let error = with_rule("velocity.90.events", ">", 1.0)
            .validate()
            .unwrap_err();
        assert!(error.expected.contains("[60, 600, 3600]"), "{error}");
        let error = with_rule("day.spend", "=>", 1.0).validate().unwrap_err();
        assert_eq!(error.field, r#"rules[0] ("r").op"#);
        let error = with_rule("day.spend", ">", f64::NAN)
            .validate()
            .unwrap_err();
        assert_eq!(error.field, r#"rules[0] ("r").threshold"#);
        let mut twice = with_rule("day.spend", ">", 1.0);
        twice.rules.push(twice.rules[0].clone());
        assert_eq!(
            twice.validate().unwrap_err().field,
            r#"rules[1] ("r").name"#
        );
        assert!(with_rule("velocity.600.sessions", "<=", 1.0)
            .validate()
            .is_ok());
    }

    #[test]
    fn windows_and_history_are_bounded() {
        let with = |velocity_secs: Vec<u64>, history_days: u64| RiskConfig {
            velocity_secs,
            history_days,
            ..RiskConfig::default()
        };
        for (config, field) in [
            (with(vec![60, 0], 30), "velocity_secs"),
            (with(vec![MAX_VELOCITY_SECS + 1], 30), "velocity_secs"),
            (with(vec![60], 1), "history_days"),
            (with(vec![60], MAX_HISTORY_DAYS + 1), "history_days"),
            (with(vec![60], u64::MAX), "history_days"),
        ] {
            let error = config.validate().unwrap_err();
            assert_eq!(error.field, field, "{error}");
        }
        assert_eq!(
            with(vec![60, 600, 3_600, MAX_VELOCITY_SECS], MAX_HISTORY_DAYS).validate(),
            Ok(())
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let typo = serde_json::from_str::<RiskConfig>(r#"{"velocity": [60]}"#);
        assert!(typo.unwrap_err().to_string().contains("unknown field"));
        let rule = r#"{"rules": [{"name": "a", "feature": "day.spend", "op": ">", "threshold": 1, "min_history": 2}]}"#;
        assert!(serde_json::from_str::<RiskConfig>(rule).is_err());
    }
}
