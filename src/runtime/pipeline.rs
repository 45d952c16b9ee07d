//! The dataflow graph every command shares: deduplication, the profile and
//! collaborative-filtering dataflows, and the sinks they feed.

use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::rc::Rc;

use differential_dataflow::collection::AsCollection;
use differential_dataflow::VecCollection;
use persona_dataflows::{Action, Event, Id, Names};
use serde_json::{json, Value};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Operator;
use timely::dataflow::ProbeHandle;

use crate::sink::{gather, JsonlSink, OutputRecord, Pending, Sink};

/// Drops records seen again within the horizon: the first of equal
/// `dedup_key`s is applied, later ones are counted in `duplicates`.
///
/// Records are routed by key, so equal records meet on one worker whatever
/// worker read them. A key is forgotten once the input frontier has passed
/// its timestamp by more than the horizon: no record that old can arrive any
/// more (readers drop it as late), so what counts as a duplicate does not
/// depend on how workers interleave.
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
            let mut seen: HashMap<u64, u64> = HashMap::new();
            let mut next_sweep = 1 << 16;
            move |(input, frontier), output| {
                input.for_each_stamp(|capability, containers| {
                    let mut session = output.session(&capability);
                    for container in containers {
                        for ((key, event), time, diff) in container.drain(..) {
                            if seen.insert(key, time).is_some() {
                                duplicates.set(duplicates.get() + 1);
                            } else {
                                session.give((event, time, diff));
                            }
                        }
                    }
                });
                if seen.len() >= next_sweep {
                    if let Some(&frontier) = frontier.frontier().first() {
                        seen.retain(|_, time| time.saturating_add(horizon_ms) >= frontier);
                    }
                    next_sweep = (seen.len() * 2).max(1 << 16);
                }
            }
        })
        .as_collection()
}

/// Per-user event counts by action (a stand-in for the profile dataflow).
pub type UserCounts = (Id, Vec<(Action, isize)>);

impl OutputRecord for UserCounts {
    fn to_json(&self, names: &dyn Names) -> Value {
        let counts: serde_json::Map<String, Value> = self
            .1
            .iter()
            .map(|(action, count)| (action.name().to_owned(), json!(count)))
            .collect();
        json!({"user": names.user(self.0), "counts": counts})
    }
}

impl OutputRecord for Id {
    fn to_json(&self, _names: &dyn Names) -> Value {
        json!(self)
    }
}

/// The output collections, gathered on worker 0.
pub struct Gathered {
    profiles: Pending<UserCounts>,
    users: Pending<Id>,
    items: Pending<Id>,
}

/// Builds every output from the clean event collection.
pub fn build<'s>(events: VecCollection<'s, u64, Event>, probe: &ProbeHandle<u64>) -> Gathered {
    let profiles = events
        .clone()
        .map(|event| (event.user, event.action))
        .count()
        .filter(|(_, count)| *count > 0)
        .map(|((user, action), count)| (user, (action, count)))
        .reduce(|_user, counts, output| {
            output.push((
                counts
                    .iter()
                    .map(|((action, count), _)| (*action, *count))
                    .collect::<Vec<_>>(),
                1,
            ))
        });
    let users = events.clone().map(|event| event.user).distinct();
    let items = events.map(|event| event.item).distinct();
    Gathered {
        profiles: gather(profiles, probe),
        users: gather(users, probe),
        items: gather(items, probe),
    }
}

/// The sinks of worker 0: the output files, and counters for the summary.
pub struct Sinks {
    pub outputs: Vec<Box<dyn Sink>>,
    pub users: Box<dyn Sink>,
    pub items: Box<dyn Sink>,
}

impl Gathered {
    pub fn into_sinks(self, dir: &Path, changelog: bool) -> io::Result<Sinks> {
        Ok(Sinks {
            outputs: vec![Box::new(JsonlSink::new(
                "profiles",
                self.profiles,
                dir,
                changelog,
            )?)],
            users: Box::new(JsonlSink::counter("users", self.users)),
            items: Box::new(JsonlSink::counter("items", self.items)),
        })
    }
}

impl Sinks {
    fn all(&mut self) -> impl Iterator<Item = &mut Box<dyn Sink>> {
        self.outputs
            .iter_mut()
            .chain([&mut self.users, &mut self.items])
    }

    /// Applies every complete update.
    pub fn drain(&mut self, upto: crate::sink::Upto, names: &dyn Names) -> io::Result<()> {
        self.all().try_for_each(|sink| sink.drain(upto, names))
    }
}
