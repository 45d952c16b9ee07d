//! A floating-point value that can live in a differential collection.
//!
//! Collections need `Ord`; `f64` has no total order. Scores are only ever
//! computed from integer state inside reductions, so two runs that agree on
//! the state produce the same bits, and ordering by `total_cmp` is exact.

use serde::{Deserialize, Serialize};

/// An `f64` ordered by [`f64::total_cmp`].
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Score(pub f64);

impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl std::hash::Hash for Score {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state)
    }
}
