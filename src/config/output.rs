//! The outputs of the pipeline, by name: what files, topics and summaries
//! call them.

use crate::names::NameKind;

/// One output of the pipeline: a set of records, one per key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Output {
    /// One record per user seen.
    Profiles,
    /// One record per item with a neighbour.
    SimilarItems,
    /// One record per user: a personal list or the popular fallback.
    Recommendations,
    /// One record per alert a `[risk]` rule raised (only with `[risk]`).
    Alerts,
    /// One record per item with feedback: impressions, clicks on
    /// recommendations, dismissals.
    ItemFeedback,
    /// One record per k-means cluster of the last refit (only with
    /// `[segments.kmeans]`).
    Segments,
}

impl Output {
    /// Every output, in the order the summary lists them.
    pub const ALL: [Output; 6] = [
        Output::Profiles,
        Output::SimilarItems,
        Output::Recommendations,
        Output::Alerts,
        Output::ItemFeedback,
        Output::Segments,
    ];

    /// The name of its files (`NAME.jsonl`) and of its `[sink.kafka]` topic setting.
    pub fn name(self) -> &'static str {
        match self {
            Output::Profiles => "profiles",
            Output::SimilarItems => "similar_items",
            Output::Recommendations => "recommendations",
            Output::Alerts => "alerts",
            Output::ItemFeedback => "item_feedback",
            Output::Segments => "segments",
        }
    }

    /// What its records are keyed by: the key of its upsert messages;
    /// none for segments, keyed by their cluster number (they have no topic).
    pub fn key_kind(self) -> Option<NameKind> {
        match self {
            Output::Profiles | Output::Recommendations | Output::Alerts => Some(NameKind::User),
            Output::SimilarItems | Output::ItemFeedback => Some(NameKind::Item),
            Output::Segments => None,
        }
    }

    /// Whether it changes only once per recommendation period
    /// (`[time] recommend_tick_ms`), rather than at every tick.
    pub fn is_periodic(self) -> bool {
        !matches!(
            self,
            Output::Profiles | Output::Alerts | Output::ItemFeedback | Output::Segments
        )
    }
}
