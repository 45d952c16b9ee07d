//! Event time as the dataflow timestamp.
//!
//! The timely timestamp of an event is its event time in milliseconds,
//! truncated to the configured tick. Windows are expressed as a shift of the
//! timestamp: an event enters a window at its timestamp `t` and leaves it at
//! `t + window`.
//!
//! [`TimeSpan`] keeps the earliest and latest event time of a key in the
//! difference of one record.

use differential_dataflow::difference::{IsZero, Monoid, Semigroup};
use differential_dataflow::lattice::Lattice;
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::{Capability, InputCapability};
use timely::order::TotalOrder;
use timely::progress::Timestamp;

/// Milliseconds in a day.
pub const DAY_MS: u64 = 86_400_000;

/// A timestamp that can be shifted forward by a duration in milliseconds.
/// Event time is totally ordered, which lets the dataflows use
/// differential's `*_total` operators (they read only a key's changes, and
/// keep no arrangement of their output) and complete times one by one.
pub trait EventTime: Timestamp + Lattice + TotalOrder + Ord + Clone + 'static {
    /// The timestamp `ms` milliseconds later (saturating).
    fn plus_ms(&self, ms: u64) -> Self;
    /// The last timestamp of the period of `period_ms` this one is in.
    fn end_of_period(&self, period_ms: u64) -> Self;
}

impl EventTime for u64 {
    fn plus_ms(&self, ms: u64) -> Self {
        self.saturating_add(ms)
    }

    fn end_of_period(&self, period_ms: u64) -> Self {
        end_of_period(*self, period_ms)
    }
}

/// Keeps the capabilities of the earliest message so far, one for each of
/// an operator's two outputs: what the operators that hold a time's input
/// until it is complete (k-means, the factorisation) emit under.
pub fn hold_earliest<T: EventTime>(
    held: &mut Option<[Capability<T>; 2]>,
    capability: &InputCapability<T>,
) {
    let Some(least) = capability.least() else {
        return;
    };
    if held.as_ref().is_none_or(|[held, _]| least < held.time()) {
        *held = capability
            .retain_least(0)
            .zip(capability.retain_least(1))
            .map(|(first, second)| [first, second]);
    }
}

/// The last millisecond of the period of `period` ms that `time` is in:
/// where an update that arrives during a period takes effect.
pub fn end_of_period(time: u64, period: u64) -> u64 {
    (time - time % period).saturating_add(period - 1)
}

/// The earliest and latest of a set of event times (ms), as a difference
/// type: adding two spans keeps the smaller first and the larger last.
///
/// Event logs only grow (a source's retraction reaches the dataflows as a
/// cancellation record), so the earliest and latest time of a key can be
/// kept as a difference that only widens: one record per key, where exact
/// extremes under retraction would need every distinct time (Materialize's
/// monotonic min/max do the same for append-only inputs). A negative update
/// adds [`TimeSpan::EMPTY`]: it takes back counts and sums, never a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TimeSpan {
    first: i64,
    last: i64,
}

impl TimeSpan {
    /// The span of no time, the identity of addition.
    pub const EMPTY: TimeSpan = TimeSpan {
        first: i64::MAX,
        last: i64::MIN,
    };

    /// The span of the one time `ms`.
    pub fn at(ms: i64) -> TimeSpan {
        TimeSpan {
            first: ms,
            last: ms,
        }
    }

    /// The span of an update of the time `ms` with multiplicity `diff`: the
    /// time if the update inserts, nothing if it retracts.
    pub fn of_update(ms: i64, diff: isize) -> TimeSpan {
        if diff > 0 {
            TimeSpan::at(ms)
        } else {
            TimeSpan::EMPTY
        }
    }

    /// The earliest time, if any.
    pub fn first(&self) -> Option<i64> {
        (!self.is_empty()).then_some(self.first)
    }

    /// The latest time, if any.
    pub fn last(&self) -> Option<i64> {
        (!self.is_empty()).then_some(self.last)
    }

    fn is_empty(&self) -> bool {
        self.first > self.last
    }
}

impl Default for TimeSpan {
    fn default() -> TimeSpan {
        TimeSpan::EMPTY
    }
}

impl IsZero for TimeSpan {
    fn is_zero(&self) -> bool {
        self.is_empty()
    }
}

impl Semigroup for TimeSpan {
    fn plus_equals(&mut self, other: &TimeSpan) {
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
    }
}

impl Monoid for TimeSpan {
    fn zero() -> TimeSpan {
        TimeSpan::EMPTY
    }
}
