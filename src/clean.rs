//! Cleaning: what happens to a decoded record between its format and the
//! dataflows, in this order, for every command (`replay`, `run`, and the
//! in-memory loader of `bench` and `eval`):
//!
//! 1. **Plausible time**: an event time after `[time] max_future_s` from
//!    now is rejected as `time_in_future` ([`Admission`]).
//! 2. **Lateness**: a record whose tick is behind the watermark is `late`
//!    ([`Judge`], [`Watermark`]).
//! 3. **Deduplication**: the second of two records with equal `dedup_key`
//!    within `[cleaning] dedup_horizon_s` of each other is dropped and
//!    counted ([`Seen`], and the [`dedup`] operator that routes equal keys
//!    to one worker).
//! 4. **Cancellations as records**: a source's retraction becomes an
//!    inserted `cancellation` record ([`as_record`], [`mark_cancellations`]).
//!
//! Validation and normalisation of fields belong to the format's mapping
//! (`format::mapping`), which rejects with a reason before any of this.

use std::cell::Cell;
use std::collections::hash_map::{Entry, HashMap};
use std::rc::Rc;

use differential_dataflow::collection::AsCollection;
use differential_dataflow::VecCollection;
use persona_dataflows::{Action, Event};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Operator;

use crate::config::{PipelineConfig, TimeConfig};
use crate::format::Decoded;
use crate::rejected::{Reason, Rejection};

/// The replay's event-time clock: a watermark that is a function of the
/// input alone. Every worker feeds it every record of the input in file
/// order (whichever worker owns the record), so every worker judges
/// lateness identically whatever `-w`, `-n` or chunk size: a record is late
/// when its tick is behind the tick of (latest event time applied before
/// it − allowed lateness), as a Flink source emitting a bounded
/// out-of-orderness watermark after every record would judge it.
#[derive(Clone, Debug)]
pub struct Watermark {
    lateness_ms: u64,
    latest_ms: Option<u64>,
}

impl Watermark {
    pub fn new(lateness_ms: u64) -> Watermark {
        Watermark {
            lateness_ms,
            latest_ms: None,
        }
    }

    /// The event time (ms) before which records are late, if any record
    /// has been applied yet.
    pub fn get(&self) -> Option<u64> {
        self.latest_ms
            .map(|latest| latest.saturating_sub(self.lateness_ms))
    }

    fn saw(&mut self, time_ms: u64) {
        self.latest_ms = self.latest_ms.max(Some(time_ms));
    }
}

/// Who decides lateness for a source, and whether this reader applies a record.
pub enum Judge<'a> {
    /// The reader's input frontier, a tick (Kafka: per-partition
    /// watermarks advance it); the reader owns every record it reads.
    Frontier(u64),
    /// A shared clock fed with every record of the input; the reader
    /// applies only the records it owns.
    Clock {
        watermark: &'a mut Watermark,
        own: bool,
    },
}

impl Judge<'_> {
    /// Whether this reader applies the record (rather than only moving the clock).
    pub fn owns(&self) -> bool {
        match self {
            Judge::Frontier(_) => true,
            Judge::Clock { own, .. } => *own,
        }
    }
}

/// Steps 1 and 2 of cleaning, for one reader.
#[derive(Clone, Debug)]
pub struct Admission {
    time: TimeConfig,
    /// Latest plausible event time (ms): later records are `time_in_future`.
    max_time_ms: u64,
}

impl Admission {
    pub fn new(config: &PipelineConfig) -> Admission {
        Admission {
            time: config.time.clone(),
            max_time_ms: config.time.max_event_time_ms(),
        }
    }

    /// Judges one decoded record (or the rejection of its format): the tick
    /// at which it applies, or why it does not. A record on time moves the
    /// judge's clock, whoever owns it.
    pub fn admit(&self, outcome: Result<Decoded, Rejection>, judge: &mut Judge<'_>) -> Admitted {
        let outcome = outcome.and_then(|decoded| {
            let time_ms = decoded.event.time_ms as u64;
            if time_ms > self.max_time_ms {
                return Err(Rejection::new(
                    Reason::TimeInFuture,
                    format!(
                        "event time {time_ms} is after the latest plausible time {} ([time] max_future_s)",
                        self.max_time_ms
                    ),
                ));
            }
            Ok(decoded)
        });
        let late_before = match judge {
            Judge::Frontier(frontier) => Some(*frontier),
            Judge::Clock { watermark, .. } => {
                let before = watermark.get().map(|w| self.time.tick_of(w));
                if let Ok(decoded) = &outcome {
                    let time_ms = decoded.event.time_ms as u64;
                    if before.is_none_or(|before| self.time.tick_of(time_ms) >= before) {
                        watermark.saw(time_ms);
                    }
                }
                before
            }
        };
        match outcome {
            Err(rejection) => Admitted::Dropped(rejection),
            Ok(decoded) => {
                let time_ms = decoded.event.time_ms as u64;
                let tick = self.time.tick_of(time_ms);
                match late_before.filter(|&before| tick < before) {
                    Some(frontier) => Admitted::Dropped(Rejection::new(
                        Reason::Late,
                        format!(
                            "event time {time_ms} is behind the watermark {frontier} by more than the allowed lateness"
                        ),
                    )),
                    None => Admitted::Applied(decoded, tick),
                }
            }
        }
    }
}

/// What cleaning made of one record.
pub enum Admitted {
    /// Apply it at this tick (deduplication follows in the dataflow).
    Applied(Decoded, u64),
    /// Rejected, or late.
    Dropped(Rejection),
}

/// The dedup keys seen within the horizon, and the rule: a record is a
/// duplicate when a record of equal key was seen at most `horizon_ms` away
/// from it in event time. Keys more than the horizon behind the input
/// frontier are forgotten, which cannot change a verdict: a record on time
/// is at or after the frontier, so farther than the horizon from them.
/// Verdicts thus do not depend on when keys are forgotten, nor on how
/// workers interleave.
pub struct Seen {
    horizon_ms: u64,
    seen: HashMap<u64, u64>,
    next_sweep: usize,
}

impl Seen {
    pub fn new(horizon_ms: u64) -> Seen {
        Seen {
            horizon_ms,
            seen: HashMap::new(),
            next_sweep: 1 << 16,
        }
    }

    /// Whether a record of `key` at `time` is the first within the horizon.
    pub fn first(&mut self, key: u64, time: u64) -> bool {
        match self.seen.entry(key) {
            Entry::Occupied(earlier) if earlier.get().abs_diff(time) <= self.horizon_ms => false,
            Entry::Occupied(mut earlier) => {
                earlier.insert(time);
                true
            }
            Entry::Vacant(entry) => {
                entry.insert(time);
                true
            }
        }
    }

    /// Forgets keys the horizon no longer reaches from `frontier`, once
    /// enough have gathered to make a sweep worth it.
    pub fn forget_behind(&mut self, frontier: u64) {
        if self.seen.len() >= self.next_sweep {
            let horizon = self.horizon_ms;
            self.seen
                .retain(|_, time| time.saturating_add(horizon) >= frontier);
            self.next_sweep = (self.seen.len() * 2).max(1 << 16);
        }
    }
}

/// Drops duplicates ([`Seen`]): the first of equal `dedup_key`s is
/// applied, later ones within the horizon are counted in `duplicates`.
/// Records are routed by key, so equal records meet on one worker whatever
/// worker read them.
pub fn dedup<'s>(
    records: VecCollection<'s, u64, (u64, Event)>,
    horizon_ms: Option<u64>,
    duplicates: Rc<Cell<u64>>,
) -> VecCollection<'s, u64, Event> {
    let Some(horizon_ms) = horizon_ms else {
        return records.map(|(_, event)| event);
    };
    let route = Exchange::new(|((key, _), _, _): &((u64, Event), u64, isize)| *key);
    records
        .inner
        .unary_frontier::<CapacityContainerBuilder<Vec<_>>, _, _, _>(route, "Dedup", |_, _| {
            let mut seen = Seen::new(horizon_ms);
            move |(input, frontier), output| {
                input.for_each_stamp(|capability, containers| {
                    let mut session = output.session(&capability);
                    for container in containers {
                        for ((key, event), time, diff) in container.drain(..) {
                            if seen.first(key, time) {
                                session.give((event, time, diff));
                            } else {
                                duplicates.set(duplicates.get() + 1);
                            }
                        }
                    }
                });
                if let Some(&frontier) = frontier.frontier().first() {
                    seen.forget_behind(frontier);
                }
            }
        })
        .as_collection()
}

/// Makes each cancellation a `cancellation` record.
///
/// A source transports a cancellation as the retraction (diff −1) of the
/// record it reads (an Online Retail `C` invoice line, a row with the
/// configured cancellation marker); every retraction that reaches the
/// pipeline from a source is one, whatever action the row names, since the
/// marker means a cancelled purchase (`[input.mapping.cancellation]`). It
/// is not the retraction of the purchase it cancels: a `C` line of 1
/// against a purchase of 2 leaves the customer owning 1. So it becomes a
/// `cancellation` event of that quantity, inserted (diff +1), which the
/// dataflows net against the user's purchases of the item unit by unit
/// (see `docs/profiles.md`). The dataflows thus only ever see inserted
/// events, which lets them keep a key's earliest and latest time in one
/// record (`TimeSpan`). It must run on the records as read, one update
/// each, before anything consolidates them.
pub fn mark_cancellations(events: VecCollection<'_, u64, Event>) -> VecCollection<'_, u64, Event> {
    events
        .inner
        .map(|(event, time, diff)| {
            let (record, diff) = as_record(event, diff);
            (record, time, diff)
        })
        .as_collection()
}

/// One source update as the record the dataflows receive: a retraction is
/// an inserted `cancellation` record of the same item, quantity, price and
/// time (see [`mark_cancellations`]); the hash-map and recompute baselines
/// apply the same rule.
pub fn as_record(event: Event, diff: isize) -> (Event, isize) {
    if diff < 0 {
        let cancellation = Event {
            action: Action::Cancellation,
            ..event
        };
        (cancellation, -diff)
    } else {
        (event, diff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duplicate_is_one_within_the_horizon_whenever_keys_are_forgotten() {
        let mut seen = Seen::new(10);
        assert!(seen.first(1, 100));
        assert!(!seen.first(1, 110));
        assert!(!seen.first(1, 90));
        assert!(seen.first(1, 111), "farther than the horizon");
        assert!(seen.first(2, 100));
        // Sweeping (forced here) forgets only what no record on time can match.
        seen.next_sweep = 0;
        seen.forget_behind(115);
        assert!(!seen.first(1, 120), "111 is within the horizon of 120");
        assert!(seen.first(2, 200));
    }

    #[test]
    fn a_retraction_becomes_an_inserted_cancellation() {
        let purchase = Event::new(1, 2, Action::Purchase, 5);
        assert_eq!(as_record(purchase.clone(), 1), (purchase.clone(), 1));
        let (record, diff) = as_record(purchase, -1);
        assert_eq!((record.action, diff), (Action::Cancellation, 1));
    }

    #[test]
    fn lateness_follows_the_clock_of_the_input() {
        let config = PipelineConfig::default();
        let admission = Admission::new(&config);
        let mut watermark = Watermark::new(0);
        let decoded = |time_ms: i64| Decoded {
            event: Event::new(1, 2, Action::View, time_ms),
            diff: 1,
            dedup_key: time_ms as u64,
            user_name: String::new(),
            item_name: String::new(),
            category_name: None,
        };
        let mut admit = |time_ms| {
            let mut judge = Judge::Clock {
                watermark: &mut watermark,
                own: true,
            };
            matches!(
                admission.admit(Ok(decoded(time_ms)), &mut judge),
                Admitted::Applied(..)
            )
        };
        assert!(admit(10_000));
        assert!(!admit(1_000), "behind the watermark with no lateness");
        assert!(admit(20_000));
    }
}
