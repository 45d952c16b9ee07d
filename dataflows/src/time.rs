//! Event time as the dataflow timestamp.
//!
//! The timely timestamp of an event is its event time in milliseconds,
//! truncated to the configured tick. Windows are expressed as a shift of the
//! timestamp: an event enters a window at its timestamp `t` and leaves it at
//! `t + window`.

use differential_dataflow::lattice::Lattice;
use timely::progress::Timestamp;

/// Milliseconds in a day.
pub const DAY_MS: u64 = 86_400_000;

/// A timestamp that can be shifted forward by a duration in milliseconds.
pub trait EventTime: Timestamp + Lattice + Ord + Clone + 'static {
    /// The timestamp `ms` milliseconds later (saturating).
    fn plus_ms(&self, ms: u64) -> Self;
}

impl EventTime for u64 {
    fn plus_ms(&self, ms: u64) -> Self {
        self.saturating_add(ms)
    }
}
