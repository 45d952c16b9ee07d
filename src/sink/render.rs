//! How output records are shown: one JSON line each, with the ids of the
//! source ([`Names`]), and the key of their upsert messages. The dataflows
//! hold integer records only; formats are the sinks' business.

use std::sync::Arc;

use differential_dataflow::ExchangeData;
use persona_dataflows::cf::recommend::Recommendations;
use persona_dataflows::cf::similarity::SimilarItems;
use persona_dataflows::feedback::ItemFeedback;
use persona_dataflows::kmeans::KMeansModel;
use persona_dataflows::mf::Factors;
use persona_dataflows::profile::{ActionCounts, Profile};
use persona_dataflows::risk::{Alert, RiskFeatures};
use persona_dataflows::{Action, Id, Score};
use serde_json::{json, Map, Value};

use crate::names::{NameKind, Names};

/// A record of an output collection.
pub trait OutputRecord: ExchangeData {
    /// The record as one JSON line.
    fn to_json(&self, names: &dyn Names) -> Value;
    /// The id the output holds one record per (or, for alerts, several):
    /// its bucket, and its upsert key.
    fn key(&self) -> Id;
    /// The key of its upsert messages: the key shown as a `kind` id.
    fn upsert_key(&self, names: &dyn Names, kind: NameKind) -> String {
        names.name(kind, self.key())
    }
}

/// A `profiles.jsonl` line: the profile of a user, with ids shown as in the source.
impl OutputRecord for (Id, Profile) {
    fn to_json(&self, names: &dyn Names) -> Value {
        let (user, profile) = (self.0, &self.1);
        let windows: Map<String, Value> = profile
            .windows
            .iter()
            .map(|(days, counts)| (format!("{days}d"), action_counts(counts)))
            .collect();
        let top_categories: Vec<Value> = profile
            .top_categories
            .iter()
            .map(|c| json!({"category": names.category(c.category), "affinity": c.affinity.0}))
            .collect();
        let mut line = json!({
            "user": names.user(user),
            "counts": action_counts(&profile.counts),
            "windows": windows,
            "quantity": profile.quantity,
            "spend": profile.spend,
            "distinct_items": profile.distinct_items,
            "distinct_categories": profile.distinct_categories,
            "first_seen": profile.first_seen,
            "last_seen": profile.last_seen,
            "last_purchase": profile.last_purchase,
            "avg_rating": profile.avg_rating.map(|r| r.0),
            "ratings": profile.ratings,
            "top_categories": top_categories,
            "segment": profile.segment.name(),
            "attributes": profile.attributes,
        });
        if let Some(feedback) = feedback(profile) {
            line["feedback"] = feedback;
        }
        if let Some(risk) = &profile.risk {
            line["risk"] = risk_section(risk);
        }
        if let Some(cluster) = &profile.cluster {
            line["cluster"] = json!({"id": cluster.id, "distance": cluster.distance.0});
        }
        if let Some(factors) = &profile.factors {
            line["factors"] = factors_json(factors);
        }
        line
    }

    fn key(&self) -> Id {
        self.0
    }
}

/// The `feedback` section: how the user answered what they were shown
/// (docs/recommendations.md), over the lifetime and each window; absent for
/// a user without an impression, a click on a recommendation or a
/// dismissal.
fn feedback(profile: &Profile) -> Option<Value> {
    let feedback_actions = [Action::Impression, Action::RecClick, Action::NotInterested];
    if feedback_actions.iter().all(|a| profile.counts[a] == 0) {
        return None;
    }
    let windows: Map<String, Value> = profile
        .windows
        .iter()
        .map(|(days, counts)| (format!("{days}d"), feedback_counts(counts)))
        .collect();
    let mut section = feedback_counts(&profile.counts);
    section["windows"] = windows.into();
    Some(section)
}

/// The `risk` section: velocity per window (keyed by its seconds) and the
/// day against the user's history, as of their latest event (docs/risk.md).
/// A rule's feature is a path in it, e.g. `velocity.600.events`.
fn risk_section(risk: &RiskFeatures) -> Value {
    let velocity: Map<String, Value> = risk
        .velocity
        .iter()
        .map(|(secs, v)| {
            let counts = json!({
                "events": v.events,
                "purchases": v.purchases,
                "spend": v.spend,
                "items": v.items,
                "sessions": v.sessions,
            });
            (secs.to_string(), counts)
        })
        .collect();
    let day = &risk.day;
    json!({
        "as_of_ms": risk.as_of_ms,
        "velocity": velocity,
        "since_previous_ms": risk.since_previous_ms,
        "purchase_after_idle_days": risk.purchase_after_idle_days.map(|d| d.0),
        "day": {
            "day": day.day,
            "spend": day.spend,
            "events": day.events,
            "active_days": day.active_days,
            "max_spend_before": day.max_spend_before,
            "spend_z": day.spend_z.map(|z| z.0),
            "events_z": day.events_z.map(|z| z.0),
            "spend_over_max": day.spend_over_max.map(|r| r.0),
        },
    })
}

/// An `alerts.jsonl` line: the user, the rule and what fired it, when.
impl OutputRecord for (Id, Alert) {
    fn to_json(&self, names: &dyn Names) -> Value {
        let (user, alert) = (self.0, &self.1);
        json!({
            "user": names.user(user),
            "rule": alert.rule,
            "feature": alert.feature,
            "op": alert.op,
            "threshold": alert.threshold.0,
            "value": alert.value.0,
            "active_days": alert.active_days,
            "time_ms": alert.time_ms,
        })
    }

    fn key(&self) -> Id {
        self.0
    }

    /// A user has an alert per rule and episode: `user/rule/time_ms`.
    fn upsert_key(&self, names: &dyn Names, kind: NameKind) -> String {
        let alert = &self.1;
        let user = names.name(kind, self.0);
        format!("{user}/{}/{}", alert.rule, alert.time_ms)
    }
}

/// A factor vector as JSON: each `f32` as the shortest decimal that reads
/// back as the same `f32` (not its widened `f64`); a value that is not
/// finite as null.
pub fn factors_json(factors: &Factors) -> Value {
    let shortest = |x: &f32| x.to_string().parse::<f64>().ok().filter(|x| x.is_finite());
    Value::Array(factors.0.iter().map(|x| json!(shortest(x))).collect())
}

/// A `segments.jsonl` line: one cluster of the last refit's model, its
/// centroid in standardised units, and the model's scaling and fit.
impl OutputRecord for (Id, Arc<KMeansModel>) {
    fn to_json(&self, _names: &dyn Names) -> Value {
        let (cluster, model) = (self.0 as usize, &self.1);
        let per_feature = |values: &[Score]| -> Map<String, Value> {
            let names = model
                .features
                .iter()
                .map(|f| json!(f).as_str().map(str::to_owned));
            names
                .flatten()
                .zip(values.iter().map(|v| json!(v.0)))
                .collect()
        };
        json!({
            "cluster": cluster,
            "size": model.sizes[cluster],
            "centroid": per_feature(&model.centroids[cluster]),
            "mean": per_feature(&model.means),
            "scale": per_feature(&model.scales),
            "users": model.users,
            "inertia": model.inertia.0,
            "iterations": model.iterations,
        })
    }

    fn key(&self) -> Id {
        self.0
    }
}

/// An `item_feedback.jsonl` line: the item, and its counts as a profile's
/// `feedback` section shows a user's.
impl OutputRecord for (Id, ItemFeedback) {
    fn to_json(&self, names: &dyn Names) -> Value {
        let (item, feedback) = (self.0, &self.1);
        let windows: Map<String, Value> = feedback
            .windows
            .iter()
            .map(|(days, counts)| (format!("{days}d"), feedback_counts(counts)))
            .collect();
        let mut line = json!({"item": names.item(item)});
        if let (Some(fields), Value::Object(counts)) =
            (line.as_object_mut(), feedback_counts(&feedback.counts))
        {
            fields.extend(counts);
            fields.insert("windows".into(), windows.into());
        }
        line
    }

    fn key(&self) -> Id {
        self.0
    }
}

fn feedback_counts(counts: &ActionCounts) -> Value {
    let impressions = counts[&Action::Impression];
    let rec_clicks = counts[&Action::RecClick];
    json!({
        "impressions": impressions,
        "rec_clicks": rec_clicks,
        "not_interested": counts[&Action::NotInterested],
        // Clicks on recommendations per impression; none without one.
        "ctr": (impressions > 0).then(|| rec_clicks as f64 / impressions as f64),
    })
}

fn action_counts(counts: &ActionCounts) -> Value {
    counts
        .iter()
        .map(|(action, count)| (action.name().to_string(), json!(count)))
        .collect::<Map<String, Value>>()
        .into()
}

/// A `similar_items.jsonl` line: `{"item", "neighbors": [{"item", "similarity"}]}`.
impl OutputRecord for SimilarItems {
    fn to_json(&self, names: &dyn Names) -> Value {
        let neighbors: Vec<Value> = self
            .neighbors
            .iter()
            .map(|n| json!({"item": names.item(n.item), "similarity": n.similarity.0}))
            .collect();
        json!({"item": names.item(self.item), "neighbors": neighbors})
    }

    fn key(&self) -> Id {
        self.item
    }
}

/// A `recommendations.jsonl` line: `{"user", "items": [{"item", "score"}]}`,
/// plus `"popular": true` on a popularity fallback list.
impl OutputRecord for Recommendations {
    fn to_json(&self, names: &dyn Names) -> Value {
        let items: Vec<Value> = self
            .items
            .iter()
            .map(|s| json!({"item": names.item(s.item), "score": s.score.0}))
            .collect();
        let mut line = json!({"user": names.user(self.user), "items": items});
        if self.popular {
            line["popular"] = Value::Bool(true);
        }
        line
    }

    fn key(&self) -> Id {
        self.user
    }
}

/// The distinct users and items, counted for the summary.
impl OutputRecord for Id {
    fn to_json(&self, _names: &dyn Names) -> Value {
        json!(self)
    }

    fn key(&self) -> Id {
        *self
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use persona_dataflows::profile::{CategoryAffinity, Segment, WindowCounts};
    use persona_dataflows::{Action, Score};

    use super::*;
    use crate::names::NumericNames;

    #[test]
    fn json_line_has_the_documented_fields() {
        let profile = Profile {
            counts: ActionCounts::from([(Action::Purchase, 2), (Action::View, 5)]),
            windows: WindowCounts::from([
                (7, ActionCounts::from([(Action::Purchase, 1)])),
                (30, ActionCounts::default()),
            ]),
            quantity: 3,
            spend: 1250,
            distinct_items: 4,
            distinct_categories: 2,
            first_seen: Some(1000),
            last_seen: Some(2000),
            last_purchase: Some(1500),
            avg_rating: Some(Score(3.5)),
            ratings: 2,
            top_categories: [CategoryAffinity {
                category: 9,
                affinity: Score(1.5),
            }]
            .into_iter()
            .collect(),
            segment: Segment::New,
            attributes: BTreeMap::from([("country".to_string(), "FR".to_string())]),
            risk: None,
            cluster: None,
            factors: None,
        };
        let line = (17, profile).to_json(&NumericNames);
        assert_eq!(
            line,
            json!({
                "user": "17",
                "counts": {"purchase": 2, "view": 5},
                "windows": {"7d": {"purchase": 1}, "30d": {}},
                "quantity": 3,
                "spend": 1250,
                "distinct_items": 4,
                "distinct_categories": 2,
                "first_seen": 1000,
                "last_seen": 2000,
                "last_purchase": 1500,
                "avg_rating": 3.5,
                "ratings": 2,
                "top_categories": [{"category": "9", "affinity": 1.5}],
                "segment": "new",
                "attributes": {"country": "FR"},
            })
        );
    }

    #[test]
    fn feedback_section_appears_with_feedback_events() {
        let counts = |impressions, clicks, dismissals| {
            ActionCounts::from([
                (Action::Impression, impressions),
                (Action::RecClick, clicks),
                (Action::NotInterested, dismissals),
                (Action::View, 1),
            ])
        };
        let profile = |lifetime: ActionCounts, week: ActionCounts| Profile {
            counts: lifetime,
            windows: WindowCounts::from([(7, week)]),
            quantity: 0,
            spend: 0,
            distinct_items: 1,
            distinct_categories: 0,
            first_seen: Some(1000),
            last_seen: Some(2000),
            last_purchase: None,
            avg_rating: None,
            ratings: 0,
            top_categories: Default::default(),
            segment: Segment::New,
            attributes: BTreeMap::new(),
            risk: None,
            cluster: None,
            factors: None,
        };
        let line = (17, profile(counts(8, 2, 1), counts(0, 1, 0))).to_json(&NumericNames);
        assert_eq!(
            line["feedback"],
            json!({
                "impressions": 8, "rec_clicks": 2, "not_interested": 1, "ctr": 0.25,
                "windows": {"7d": {"impressions": 0, "rec_clicks": 1, "not_interested": 0, "ctr": null}},
            })
        );
        let plain = (17, profile(counts(0, 0, 0), counts(0, 0, 0))).to_json(&NumericNames);
        assert!(plain.get("feedback").is_none(), "{plain}");
    }
}
