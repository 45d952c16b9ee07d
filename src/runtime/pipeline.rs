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
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Exchange;
use timely::dataflow::ProbeHandle;

use crate::sink::{gather, JsonlSink, OutputRecord, Pending, Sink};

/// Drops records seen again within the horizon: the first of equal
/// `dedup_key`s is applied, later ones are counted in `duplicates`.
///
/// Records are routed by key, so equal records meet on one worker whatever
/// worker read them. The memory of keys is bounded by the horizon, in event
/// time: keys older than the horizon behind the latest record are forgotten.
pub fn dedup<'s>(
    records: VecCollection<'s, u64, (u64, Event)>,
    horizon_ms: Option<i64>,
    duplicates: Rc<Cell<u64>>,
) -> VecCollection<'s, u64, Event> {
    let Some(horizon_ms) = horizon_ms else {
        return records.map(|(_, event)| event);
    };
    let mut seen: HashMap<u64, i64> = HashMap::new();
    let mut latest = i64::MIN;
    let mut next_sweep = 1 << 16;
    records
        .inner
        .exchange(|((key, _), _, _): &((u64, Event), u64, isize)| *key)
        .flat_map(move |((key, event), time, diff)| {
            latest = latest.max(event.time_ms);
            if seen.len() >= next_sweep {
                let oldest = latest.saturating_sub(horizon_ms);
                seen.retain(|_, seen_at| *seen_at >= oldest);
                next_sweep = (seen.len() * 2).max(1 << 16);
            }
            if seen.insert(key, event.time_ms).is_some() {
                duplicates.set(duplicates.get() + 1);
                None
            } else {
                Some((event, time, diff))
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
