//! The profile record: what the profile dataflow (and its reference) output
//! per user, and the RFM segment table.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::kmeans::Cluster;
use crate::mf::Factors;
use crate::profile::SegmentConfig;
use crate::risk::RiskFeatures;
use crate::{Action, Id, Score};

/// The features of one user. Every integer is a net sum over the user's
/// events (retractions subtract). A purchase and a cancellation are each a
/// record; a cancellation takes back units of the item, so the user owns an
/// item while more of its units were bought than cancelled.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Profile {
    /// Lifetime net count of records per action (`purchase` counts purchase
    /// records, `cancellation` cancellation records); zero counts are
    /// omitted. A count can be negative when the log retracts more than it
    /// inserted.
    pub counts: ActionCounts,
    /// Window length in days → net count per action of the updates whose
    /// timestamp `t` satisfies `t <= now < t + days`. Every configured
    /// window is present, possibly empty.
    pub windows: WindowCounts,
    /// Units bought less units cancelled.
    pub quantity: i64,
    /// Σ quantity · unit price over purchases less the same over
    /// cancellations, in minor units. The price is the event's, else the
    /// item's latest catalog price; records with neither add nothing.
    pub spend: i64,
    /// Number of items the user owns or has a net-present event of another
    /// action (view, cart, rating, ...) on.
    pub distinct_items: i64,
    /// Number of categories (the event's, else the item's latest catalog
    /// category) with more units bought than cancelled, or with a
    /// net-present event of another action.
    pub distinct_categories: i64,
    /// Earliest `time_ms` among the user's event times (cancellations
    /// included) with a positive net count; `None` if there is none.
    pub first_seen: Option<i64>,
    /// Latest such `time_ms`.
    pub last_seen: Option<i64>,
    /// Latest purchase time of an item the user still owns; `None` when they
    /// own nothing.
    pub last_purchase: Option<i64>,
    /// Σ rating / number of rated events / 100, in stars; `None` unless the
    /// net number of rated events is positive.
    pub avg_rating: Option<Score>,
    /// Net number of events that carry a rating.
    pub ratings: i64,
    /// Best categories by decayed affinity, best first, ties by category id
    /// (the stable hash of the category's name) ascending; only positive
    /// affinities. Purchases weigh nothing in a category where the user has
    /// not bought more units than cancelled.
    pub top_categories: TopCategories,
    pub segment: Segment,
    /// Latest value per user attribute name.
    pub attributes: BTreeMap<String, String>,
    /// Velocity and the day against the user's history, with `[risk]`
    /// (see [`crate::risk`]); `None` without it. Shared with the user's
    /// state: a profile is assembled at every change, and this part changes
    /// only with the user's events.
    pub risk: Option<Arc<RiskFeatures>>,
    /// The user's k-means segment, with `[segments.kmeans]` (see
    /// [`crate::kmeans`]); `None` without it.
    pub cluster: Option<Cluster>,
    /// The user's factor vector in the online factorisation, with
    /// `[recommend.mf] embeddings` (see [`crate::mf::online`]); `None`
    /// without it, or for a user the model has not learned from.
    pub factors: Option<Factors>,
}

/// A count per action, kept in place (a profile is assembled at every
/// change, so it should not allocate a map per count); it reads and
/// serializes as the map of its nonzero counts, in action order.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ActionCounts([i64; Action::ALL.len()]);

impl ActionCounts {
    /// The count of `action`, if nonzero.
    pub fn get(&self, action: &Action) -> Option<&i64> {
        Some(&self.0[*action as usize]).filter(|count| **count != 0)
    }

    /// Sets the count of `action`.
    pub fn insert(&mut self, action: Action, count: i64) {
        self.0[action as usize] = count;
    }

    /// The nonzero counts, in action order.
    pub fn iter(&self) -> impl Iterator<Item = (Action, i64)> + '_ {
        Action::ALL
            .into_iter()
            .map(|action| (action, self.0[action as usize]))
            .filter(|(_, count)| *count != 0)
    }

    /// Whether every count is zero.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|count| *count == 0)
    }
}

impl std::ops::Index<&Action> for ActionCounts {
    type Output = i64;

    fn index(&self, action: &Action) -> &i64 {
        &self.0[*action as usize]
    }
}

impl<const N: usize> From<[(Action, i64); N]> for ActionCounts {
    fn from(counts: [(Action, i64); N]) -> ActionCounts {
        counts.into_iter().collect()
    }
}

impl FromIterator<(Action, i64)> for ActionCounts {
    fn from_iter<I: IntoIterator<Item = (Action, i64)>>(counts: I) -> ActionCounts {
        let mut all = ActionCounts::default();
        for (action, count) in counts {
            all.0[action as usize] += count;
        }
        all
    }
}

impl std::fmt::Debug for ActionCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for ActionCounts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        // With its length first: bincode, between processes, needs it.
        let mut map = serializer.serialize_map(Some(self.iter().count()))?;
        for (action, count) in self.iter() {
            map.serialize_entry(&action, &count)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ActionCounts {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let counts = BTreeMap::<Action, i64>::deserialize(deserializer)?;
        Ok(counts.into_iter().collect())
    }
}

/// Action counts per window length in days, ascending, kept inline for up
/// to three windows (as many as the default); it reads
/// and serializes as the map `{days: counts}`.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WindowCounts(SmallVec<[(u64, ActionCounts); 3]>);

impl WindowCounts {
    /// The counts of the window of `days`, if it is kept.
    pub fn get(&self, days: &u64) -> Option<&ActionCounts> {
        let index = self.0.binary_search_by_key(days, |(d, _)| *d).ok()?;
        Some(&self.0[index].1)
    }

    /// The counts of the window of `days`, to change, if it is kept.
    pub fn get_mut(&mut self, days: &u64) -> Option<&mut ActionCounts> {
        let index = self.0.binary_search_by_key(days, |(d, _)| *d).ok()?;
        Some(&mut self.0[index].1)
    }

    /// `(days, counts)`, days ascending.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &ActionCounts)> + '_ {
        self.0.iter().map(|(days, counts)| (*days, counts))
    }
}

impl std::ops::Index<&u64> for WindowCounts {
    type Output = ActionCounts;

    fn index(&self, days: &u64) -> &ActionCounts {
        self.get(days)
            .unwrap_or_else(|| panic!("no window of {days} days"))
    }
}

/// Windows in any order; a length given twice keeps the sum of its counts.
impl FromIterator<(u64, ActionCounts)> for WindowCounts {
    fn from_iter<I: IntoIterator<Item = (u64, ActionCounts)>>(windows: I) -> WindowCounts {
        let mut all: SmallVec<[(u64, ActionCounts); 3]> = windows.into_iter().collect();
        all.sort_by_key(|(days, _)| *days);
        all.dedup_by(|(days, counts), (kept_days, kept)| {
            let same = days == kept_days;
            if same {
                *kept = kept.iter().chain(counts.iter()).collect();
            }
            same
        });
        WindowCounts(all)
    }
}

impl<const N: usize> From<[(u64, ActionCounts); N]> for WindowCounts {
    fn from(windows: [(u64, ActionCounts); N]) -> WindowCounts {
        windows.into_iter().collect()
    }
}

impl std::fmt::Debug for WindowCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for WindowCounts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for WindowCounts {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let windows = BTreeMap::<u64, ActionCounts>::deserialize(deserializer)?;
        Ok(windows.into_iter().collect())
    }
}

/// [`Profile::top_categories`], inline up to the default five.
pub type TopCategories = SmallVec<[CategoryAffinity; 5]>;

/// One entry of [`Profile::top_categories`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CategoryAffinity {
    pub category: Id,
    /// Σ over the user's events in the category of weight · 2^((d − D) /
    /// half_life), d the event's day and D the day of `last_seen`: "as of
    /// the user's last active day" (in the fixed point of `crate::decay`).
    pub affinity: Score,
}

/// The RFM segment of a user who owns something, from three yes/no
/// questions: recent (more purchase than cancellation records within
/// `recency_days`), frequent (lifetime purchase records less cancellation
/// records >= `min_purchases`) and valuable (spend >= `min_spend`).
///
/// | segment       | purchased | recent | frequent | valuable |
/// |---------------|-----------|--------|----------|----------|
/// | `prospect`    | no        | any    | any      | any      |
/// | `champion`    | yes       | yes    | yes      | yes      |
/// | `loyal`       | yes       | yes    | yes      | no       |
/// | `promising`   | yes       | yes    | no       | yes      |
/// | `new`         | yes       | yes    | no       | no       |
/// | `at_risk`     | yes       | no     | either frequent or valuable |
/// | `hibernating` | yes       | no     | no       | no       |
///
/// "Purchased" means the user owns at least one item: more units bought
/// than cancelled (see [`Profile::last_purchase`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Segment {
    Prospect,
    Champion,
    Loyal,
    Promising,
    New,
    AtRisk,
    Hibernating,
}

impl Segment {
    /// Every segment, in the order of the table in docs/profiles.md.
    pub const ALL: [Segment; 7] = [
        Segment::Prospect,
        Segment::Champion,
        Segment::Loyal,
        Segment::Promising,
        Segment::New,
        Segment::AtRisk,
        Segment::Hibernating,
    ];

    /// The segment of a user who owns an item (`purchased`), with
    /// `recent_purchases` purchase less cancellation records in the recency
    /// window, `purchases` lifetime purchase less cancellation records and
    /// `spend` minor units.
    pub fn classify(
        purchased: bool,
        recent_purchases: i64,
        purchases: i64,
        spend: i64,
        config: &SegmentConfig,
    ) -> Segment {
        if !purchased {
            return Segment::Prospect;
        }
        let recent = recent_purchases > 0;
        let frequent = purchases >= config.min_purchases;
        let valuable = spend >= config.min_spend;
        match (recent, frequent, valuable) {
            (true, true, true) => Segment::Champion,
            (true, true, false) => Segment::Loyal,
            (true, false, true) => Segment::Promising,
            (true, false, false) => Segment::New,
            (false, false, false) => Segment::Hibernating,
            (false, _, _) => Segment::AtRisk,
        }
    }

    /// The snake_case name used in outputs.
    pub fn name(self) -> &'static str {
        match self {
            Segment::Prospect => "prospect",
            Segment::Champion => "champion",
            Segment::Loyal => "loyal",
            Segment::Promising => "promising",
            Segment::New => "new",
            Segment::AtRisk => "at_risk",
            Segment::Hibernating => "hibernating",
        }
    }
}

/// The `keep` categories of highest affinity, best first, ties by category;
/// categories of affinity 0 or less are left out.
pub fn rank_categories(
    affinities: impl IntoIterator<Item = (Id, f64)>,
    keep: usize,
) -> TopCategories {
    let mut ranked: SmallVec<[CategoryAffinity; 16]> = affinities
        .into_iter()
        .filter(|(_, affinity)| *affinity > 0.0)
        .map(|(category, affinity)| CategoryAffinity {
            category,
            affinity: Score(affinity),
        })
        .collect();
    let order = |a: &CategoryAffinity, b: &CategoryAffinity| {
        b.affinity
            .cmp(&a.affinity)
            .then(a.category.cmp(&b.category))
    };
    // The order is total, so selecting the best `keep` first picks the same
    // ones a full sort would.
    if keep < ranked.len() {
        ranked.select_nth_unstable_by(keep, order);
        ranked.truncate(keep);
    }
    ranked.sort_by(order);
    ranked.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_and_serialize_as_maps_of_nonzero_counts() {
        let counts =
            ActionCounts::from([(Action::View, 5), (Action::Purchase, 2), (Action::Cart, 0)]);
        assert_eq!(counts.get(&Action::Cart), None);
        assert_eq!(counts[&Action::Cart], 0);
        let windows = WindowCounts::from([(30, ActionCounts::default()), (7, counts)]);
        let json = serde_json::to_string(&windows).unwrap();
        assert_eq!(json, r#"{"7":{"view":5,"purchase":2},"30":{}}"#);
        let back: WindowCounts = serde_json::from_str(&json).unwrap();
        assert_eq!(back, windows);
        assert_eq!(format!("{counts:?}"), "{View: 5, Purchase: 2}");
    }

    #[test]
    fn segment_table() {
        let config = SegmentConfig {
            recency_days: 30,
            min_purchases: 3,
            min_spend: 100,
        };
        let classify = |recent, purchases, spend| {
            Segment::classify(purchases > 0, recent, purchases, spend, &config)
        };
        assert_eq!(classify(1, 0, 500), Segment::Prospect);
        assert_eq!(classify(0, -1, 0), Segment::Prospect);
        // Owning an item after cancelling part of it: no net purchase record.
        assert_eq!(Segment::classify(true, 0, 0, 100, &config), Segment::AtRisk);
        assert_eq!(classify(1, 3, 100), Segment::Champion);
        assert_eq!(classify(1, 3, 99), Segment::Loyal);
        assert_eq!(classify(1, 2, 100), Segment::Promising);
        assert_eq!(classify(1, 1, 10), Segment::New);
        assert_eq!(classify(0, 5, 0), Segment::AtRisk);
        assert_eq!(classify(0, 1, 100), Segment::AtRisk);
        assert_eq!(classify(0, 1, 10), Segment::Hibernating);
    }
}
