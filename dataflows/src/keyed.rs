//! Sums per key kept in a hash map: differential's `count_total`,
//! `threshold_total` and `distinct_total` without an arrangement.
//!
//! Those operators arrange their input (every update, until compaction
//! merges it) and, at each time, read the changed keys' updates back from
//! the trace. With totally ordered time and only the output wanted, a key's
//! running sum is all the state there is: times complete in order, each
//! time's updates are added to the sums, and a key whose output changed
//! retracts the old output and inserts the new one at that time. The
//! output collection is the same as the `*_total` operator's; the state is
//! one entry per key with a nonzero sum.

use std::collections::BTreeMap;

use differential_dataflow::collection::AsCollection;
use differential_dataflow::difference::Semigroup;
use differential_dataflow::hashable::Hashable;
use differential_dataflow::{ExchangeData, VecCollection};
use rustc_hash::FxHashMap as HashMap;
use std::hash::Hash;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Capability, InputCapability, Operator};
use timely::progress::frontier::AntichainRef;

use crate::EventTime;

/// Sums per key of a collection whose time is totally ordered.
pub trait KeyedSums<'s, T: EventTime, K, R> {
    /// `(key, sum)` for every key with a nonzero sum: `count_total`.
    fn count_keyed(self, name: &str) -> VecCollection<'s, T, (K, R)>;

    /// Every key with a nonzero sum: `distinct_total`.
    fn distinct_keyed(self, name: &str) -> VecCollection<'s, T, K>;

    /// What `output` makes of each key's sum, for the keys it gives an
    /// output for; the output of a zero sum is not asked for (the key is
    /// absent).
    fn sums_keyed<O: ExchangeData>(
        self,
        name: &str,
        output: impl Fn(&K, &R) -> Option<O> + 'static,
    ) -> VecCollection<'s, T, O>;
}

impl<'s, T, K, R> KeyedSums<'s, T, K, R> for VecCollection<'s, T, K, R>
where
    T: EventTime,
    K: ExchangeData + Hash,
    R: ExchangeData + Semigroup,
{
    fn count_keyed(self, name: &str) -> VecCollection<'s, T, (K, R)> {
        self.sums_keyed(name, |key, sum| Some((key.clone(), sum.clone())))
    }

    fn distinct_keyed(self, name: &str) -> VecCollection<'s, T, K> {
        self.sums_keyed(name, |key, _sum| Some(key.clone()))
    }

    fn sums_keyed<O: ExchangeData>(
        self,
        name: &str,
        output: impl Fn(&K, &R) -> Option<O> + 'static,
    ) -> VecCollection<'s, T, O> {
        let route = Exchange::new(|(key, _, _): &(K, T, R)| key.hashed());
        self.inner
            .unary_frontier::<CapacityContainerBuilder<Vec<(O, T, isize)>>, _, _, _>(
                route,
                name,
                move |_, _| {
                    let mut pending: ByTime<T, (K, R)> = ByTime::default();
                    let mut sums: HashMap<K, R> = HashMap::default();
                    move |(input, frontier), out| {
                        input.for_each_stamp(|capability, containers| {
                            pending.hold(&capability);
                            for container in containers {
                                for (key, time, diff) in container.drain(..) {
                                    pending.push(time, (key, diff));
                                }
                            }
                        });
                        let Some(capability) = pending.capability().cloned() else {
                            return;
                        };
                        let mut session = out.session(&capability);
                        while let Some((time, mut changes)) =
                            pending.pop_complete(frontier.frontier())
                        {
                            differential_dataflow::consolidation::consolidate(&mut changes);
                            for (key, change) in changes {
                                let before = sums.get(&key).and_then(|sum| output(&key, sum));
                                let after = match sums.get_mut(&key) {
                                    Some(sum) => {
                                        sum.plus_equals(&change);
                                        if sum.is_zero() {
                                            sums.remove(&key);
                                            None
                                        } else {
                                            output(&key, sum)
                                        }
                                    }
                                    None => {
                                        let after = output(&key, &change);
                                        sums.insert(key, change);
                                        after
                                    }
                                };
                                if before != after {
                                    if let Some(before) = before {
                                        session.give((before, time.clone(), -1));
                                    }
                                    if let Some(after) = after {
                                        session.give((after, time.clone(), 1));
                                    }
                                }
                            }
                        }
                        drop(session);
                        pending.settle();
                    }
                },
            )
            .as_collection()
    }
}

/// Updates held until their time completes, and one capability, for the
/// earliest time held: time is totally ordered, so times complete one after
/// another and each is worked on once, in order. An operator sends the
/// changes of every time completed in one activation in one batch, each
/// update carrying its own time, as differential's operators do.
pub struct ByTime<T: EventTime, D> {
    arrived: BTreeMap<T, Vec<D>>,
    held: Option<Capability<T>>,
}

impl<T: EventTime, D> Default for ByTime<T, D> {
    fn default() -> Self {
        ByTime {
            arrived: BTreeMap::new(),
            held: None,
        }
    }
}

impl<T: EventTime, D> ByTime<T, D> {
    /// Keeps `capability` if it is for an earlier time than the one held.
    pub fn hold(&mut self, capability: &InputCapability<T>) {
        let earlier = |time: &T| self.held.as_ref().is_none_or(|held| time < held.time());
        if capability.least().is_some_and(earlier) {
            self.held = capability.retain_least(0);
        }
    }

    /// Holds an update until its time completes.
    pub fn push(&mut self, time: T, update: D) {
        self.arrived.entry(time).or_default().push(update);
    }

    /// The capability to send the held times' changes with.
    pub fn capability(&self) -> Option<&Capability<T>> {
        self.held.as_ref()
    }

    /// The earliest time held and its updates, once `frontier` has passed it.
    pub fn pop_complete(&mut self, frontier: AntichainRef<'_, T>) -> Option<(T, Vec<D>)> {
        let entry = self.arrived.first_entry()?;
        (!frontier.less_equal(entry.key())).then(|| entry.remove_entry())
    }

    /// Keeps the capability for the earliest time still held, or none.
    pub fn settle(&mut self) {
        match self.arrived.keys().next() {
            Some(time) => {
                if let Some(held) = self.held.as_mut() {
                    held.downgrade(time);
                }
            }
            None => self.held = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use differential_dataflow::operators::{CountTotal, ThresholdTotal};
    use proptest::prelude::*;
    use timely::dataflow::operators::capture::Extract;
    use timely::dataflow::operators::probe::Handle;
    use timely::dataflow::operators::{Capture, Probe};

    use super::KeyedSums;

    /// The consolidated output of `count_total` and `threshold_total`, and
    /// of the keyed operators, for the same updates: `(key, time, diff)`
    /// rounds of small keys, with insertions and retractions.
    fn outputs(rounds: Vec<Vec<(u8, i8)>>, workers: usize) -> [Vec<(String, u64, isize)>; 2] {
        let (total, keyed) = timely::execute(timely::Config::process(workers), move |worker| {
            let mut input = differential_dataflow::input::InputSession::new();
            let probe = Handle::new();
            let (total, keyed) = worker.dataflow::<u64, _, _>(|scope| {
                let updates = input.to_collection(scope);
                let counts = updates.clone().count_total().map(|c| format!("{c:?}"));
                let present = updates
                    .clone()
                    .threshold_total(|_, c: &isize| isize::from(*c > 0))
                    .map(|k: u8| format!("{k}"));
                let distinct = updates.clone().distinct_total().map(|k| format!("d{k}"));
                let keyed_counts = updates.clone().count_keyed("C").map(|c| format!("{c:?}"));
                let keyed_present = updates
                    .clone()
                    .sums_keyed("P", |k: &u8, c: &isize| (*c > 0).then_some(*k))
                    .map(|k| format!("{k}"));
                let keyed_distinct = updates.distinct_keyed("D").map(|k| format!("d{k}"));
                let total = counts.concat(present).concat(distinct);
                let keyed = keyed_counts.concat(keyed_present).concat(keyed_distinct);
                (
                    total.inner.probe_with(&probe).capture(),
                    keyed.inner.probe_with(&probe).capture(),
                )
            });
            for (round, updates) in rounds.iter().enumerate() {
                if worker.index() == 0 {
                    for &(key, diff) in updates {
                        input.update(key, diff as isize);
                    }
                }
                input.advance_to(round as u64 + 1);
                input.flush();
                worker.step_while(|| probe.less_than(input.time()));
            }
            input.close();
            (total, keyed)
        })
        .unwrap()
        .join()
        .into_iter()
        .map(Result::unwrap)
        .fold((Vec::new(), Vec::new()), |(mut a, mut b), (t, k)| {
            a.extend(t.extract().into_iter().flat_map(|(_, d)| d));
            b.extend(k.extract().into_iter().flat_map(|(_, d)| d));
            (a, b)
        });
        let mut both = [total, keyed];
        for updates in &mut both {
            differential_dataflow::consolidation::consolidate_updates(updates);
        }
        both
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn keyed_sums_equal_the_total_operators(
            rounds in prop::collection::vec(
                prop::collection::vec((0u8..6, -2i8..3), 0..8), 1..12),
            workers in 1usize..3,
        ) {
            let [total, keyed] = outputs(rounds, workers);
            prop_assert_eq!(total, keyed);
        }
    }
}
