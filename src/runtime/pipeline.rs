//! The dataflow graph every command shares: deduplication, the profile and
//! collaborative-filtering dataflows, and the sinks they feed.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::Path;
use std::rc::Rc;

use differential_dataflow::collection::AsCollection;
use differential_dataflow::VecCollection;
use persona_dataflows::cf::collaborative_filtering;
use persona_dataflows::cf::recommend::Recommendations;
use persona_dataflows::cf::similarity::SimilarItems;
use persona_dataflows::profile::{profiles, AttributeVersion, CatalogVersion, Profile};
use persona_dataflows::{Action, Event, Id, Names};
use serde_json::{json, Value};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::ProbeHandle;

use crate::config::{KafkaOutputsConfig, PipelineConfig};
use crate::sink::fallback::{FallbackRecord, FallbackSink};
use crate::sink::kafka::{current_keys, KafkaSink, KafkaSinkConfig, KafkaSinkError};
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

impl OutputRecord for (Id, Profile) {
    fn to_json(&self, names: &dyn Names) -> Value {
        self.1.to_json(self.0, names)
    }
}

impl OutputRecord for SimilarItems {
    fn to_json(&self, names: &dyn Names) -> Value {
        SimilarItems::to_json(self, names)
    }
}

impl OutputRecord for Recommendations {
    fn to_json(&self, names: &dyn Names) -> Value {
        Recommendations::to_json(self, names)
    }
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

impl OutputRecord for Id {
    fn to_json(&self, _names: &dyn Names) -> Value {
        json!(self)
    }
}

/// The output collections, gathered on worker 0.
pub struct Gathered {
    /// Collaborative filtering's period (see `recommend_tick_ms`).
    recommend_period: u64,
    profiles: Pending<(Id, Profile)>,
    similar_items: Pending<SimilarItems>,
    /// The personal lists.
    recommendations: Pending<Recommendations>,
    /// The shared popularity fallback, resolved per user by the sink.
    fallback: Pending<FallbackRecord>,
    top_k: usize,
    users: Pending<Id>,
    items: Pending<Id>,
}

/// The inputs of the pipeline: clean events and the dimension tables.
pub struct Inputs<'s> {
    pub events: VecCollection<'s, u64, Event>,
    /// The item catalog, if the config has one.
    pub catalog: Option<VecCollection<'s, u64, (Id, CatalogVersion)>>,
    pub user_attributes: VecCollection<'s, u64, (Id, AttributeVersion)>,
    /// The end of the input, once every worker has read its input.
    pub input_end: Rc<Cell<Option<u64>>>,
}

/// Builds every output from the clean event collection.
pub fn build(inputs: Inputs<'_>, config: &PipelineConfig, probe: &ProbeHandle<u64>) -> Gathered {
    let Inputs {
        events,
        catalog,
        user_attributes,
        input_end,
    } = inputs;
    let profiles = profiles(events.clone(), catalog, user_attributes, &config.profile);
    let period = config.time.recommend_period();
    let cf = collaborative_filtering(
        cf_events(events.clone(), config, Some(input_end)),
        &config.recommend,
    );
    let fallback = cf
        .fallback
        .users
        .map(|(user, seen)| FallbackRecord::User(user, seen))
        .concat(cf.fallback.ranking.map(FallbackRecord::Ranking));
    let users = events.clone().map(|event| event.user).distinct();
    let items = events.map(|event| event.item).distinct();
    Gathered {
        recommend_period: period,
        profiles: gather(profiles, probe),
        similar_items: gather(cf.similar_items, probe),
        recommendations: gather(cf.personal, probe),
        fallback: gather(fallback, probe),
        top_k: config.recommend.top_k,
        users: gather(users, probe),
        items: gather(items, probe),
    }
}

/// The events as collaborative filtering sees them: each at the end of its
/// recommendation period (`recommend_tick_ms`), or at the end of the input if
/// that comes first.
///
/// `input_end` holds the end of the input (the latest event time of any
/// worker) once every worker has read its input (see
/// `PipelineWorker::finish`); events still waiting for their period then
/// take effect at it, so the run need not compute past its last event
/// (window expirations up to the end of the period) only to reach the last
/// refresh. Without it (the bench) every event waits for its period.
pub fn cf_events<'s>(
    events: VecCollection<'s, u64, Event>,
    config: &PipelineConfig,
    input_end: Option<Rc<Cell<Option<u64>>>>,
) -> VecCollection<'s, u64, Event> {
    let period = config.time.recommend_period();
    if period <= config.time.tick_ms {
        return events;
    }
    let Some(input_end) = input_end else {
        return events.delay(move |time| end_of_period(*time, period));
    };
    type Update = (Event, u64, isize);
    events
        .inner
        .unary_frontier::<CapacityContainerBuilder<Vec<Update>>, _, _, _>(
            Pipeline,
            "PeriodGate",
            move |initial, _| {
                // Held at the input frontier, to release at the end of the
                // input what waits for a later end of period.
                let mut floor = Some(initial);
                let mut waiting: BTreeMap<u64, (Capability<u64>, Vec<Update>)> = BTreeMap::new();
                let mut end: Option<u64> = None;
                move |(input, frontier), output| {
                    if let (None, Some(told), Some(floor)) = (end, input_end.get(), &floor) {
                        let last = told.max(*floor.time());
                        end = Some(last);
                        for (_, (_, updates)) in waiting.split_off(&last.saturating_add(1)) {
                            let (_, at_end) = waiting
                                .entry(last)
                                .or_insert_with(|| (floor.delayed(&last), Vec::new()));
                            at_end.extend(updates.into_iter().map(|(e, _, d)| (e, last, d)));
                        }
                    }
                    input.for_each_stamp(|capability, containers| {
                        for container in containers {
                            for (event, time, diff) in container.drain(..) {
                                let release = end_of_period(time, period);
                                let release = end.map_or(release, |end| release.min(end).max(time));
                                let (_, updates) = waiting.entry(release).or_insert_with(|| {
                                    (capability.delayed(&release, 0), Vec::new())
                                });
                                updates.push((event, release, diff));
                            }
                        }
                    });
                    while let Some(entry) = waiting.first_entry() {
                        if frontier.frontier().less_equal(entry.key()) {
                            break;
                        }
                        let (capability, updates) = entry.remove();
                        output
                            .session(&capability)
                            .give_iterator(updates.into_iter());
                    }
                    match frontier.frontier().first() {
                        Some(time) => floor.iter_mut().for_each(|floor| floor.downgrade(time)),
                        None => floor = None,
                    }
                }
            },
        )
        .as_collection()
}

/// The last millisecond of the period of `time`: where an update that
/// arrives during a period takes effect.
pub fn end_of_period(time: u64, period: u64) -> u64 {
    (time - time % period).saturating_add(period - 1)
}

/// The sinks of worker 0: the output files, and counters for the summary.
pub struct Sinks {
    pub outputs: Vec<Box<dyn Sink>>,
    pub users: Box<dyn Sink>,
    pub items: Box<dyn Sink>,
}

impl Gathered {
    /// The sinks of worker 0: files in `files` (a folder, and whether to
    /// write changelogs) and/or upserts to the topics of `kafka`.
    pub fn into_sinks(
        self,
        files: Option<(&Path, bool)>,
        kafka: Option<&KafkaOutputsConfig>,
    ) -> Result<Sinks, SinkError> {
        let period = self.recommend_period;
        let topic = |topic: Option<&String>| Some(kafka?.topic(topic?));
        let kafka_profiles = topic(kafka.and_then(|k| k.profiles.as_ref()));
        let kafka_similar = topic(kafka.and_then(|k| k.similar_items.as_ref()));
        let kafka_recommendations = topic(kafka.and_then(|k| k.recommendations.as_ref()));
        let recommendations = output(
            "recommendations",
            self.recommendations,
            period,
            files,
            kafka_recommendations,
            "user",
        )?;
        Ok(Sinks {
            outputs: vec![
                Box::new(output(
                    "profiles",
                    self.profiles,
                    1,
                    files,
                    kafka_profiles,
                    "user",
                )?),
                Box::new(output(
                    "similar_items",
                    self.similar_items,
                    period,
                    files,
                    kafka_similar,
                    "item",
                )?),
                Box::new(FallbackSink::new(
                    recommendations,
                    self.fallback,
                    self.top_k,
                )),
            ],
            users: Box::new(JsonlSink::counter("users", self.users)),
            items: Box::new(JsonlSink::counter("items", self.items)),
        })
    }
}

/// Why the sinks could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot create an output file")]
    File(#[from] io::Error),
    #[error(transparent)]
    Kafka(#[from] KafkaSinkError),
}

/// The sink of one output: its files, and its upsert topic keyed by `key_field`.
fn output<D: OutputRecord>(
    name: &str,
    pending: Pending<D>,
    period: u64,
    files: Option<(&Path, bool)>,
    topic: Option<KafkaSinkConfig>,
    key_field: &'static str,
) -> Result<JsonlSink<D>, SinkError> {
    let sink = match files {
        Some((dir, changelog)) => JsonlSink::new(name, pending, dir, changelog)?,
        None => JsonlSink::counter(name, pending),
    };
    let mut sink = sink.with_period(period);
    if let Some(topic) = topic {
        let kafka = KafkaSink::new(&topic)?;
        sink = sink.with_upsert(kafka, key_field, current_keys(&topic)?);
    }
    Ok(sink)
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

    /// Waits until every update sent to Kafka is acknowledged.
    pub fn flush(&mut self) -> io::Result<()> {
        self.all().try_for_each(|sink| sink.flush())
    }

    /// Tombstones the keys an earlier run left in the upsert topics that
    /// the rebuilt state does not have (see [`Sink::reconcile`]).
    pub fn reconcile(&mut self) -> io::Result<usize> {
        self.all().map(|sink| sink.reconcile()).sum()
    }
}
