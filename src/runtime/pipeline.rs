//! The dataflow graph every command shares: the profile and
//! collaborative-filtering dataflows over the clean events, and the sinks
//! they feed. Building it opens nothing: the sinks' files and topics are
//! made from what the command opened before.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::collection::AsCollection;
use differential_dataflow::VecCollection;
use persona_dataflows::cf::on_demand::{state_updates, StateUpdate};
use persona_dataflows::cf::recommend::Recommendations;
use persona_dataflows::cf::similarity::SimilarItems;
use persona_dataflows::cf::{collaborative_filtering, CfConfig, Rankings};
use persona_dataflows::feedback::{item_feedback, ItemFeedback};
use persona_dataflows::keyed::KeyedSums;
use persona_dataflows::kmeans::{segments, KMeansModel};
use persona_dataflows::mf::online::Rows;
use persona_dataflows::mf::{self, MfRow};
use persona_dataflows::profile::{profiles_and_alerts, AttributeVersion, CatalogVersion, Profile};
use persona_dataflows::risk::Alert;
use persona_dataflows::{Event, Id};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::ProbeHandle;

use crate::config::{end_of_period, Output, PipelineConfig, TimeConfig};
use crate::names::Names;
use crate::sink::fallback::{FallbackRecord, FallbackSink};
use crate::sink::kafka::UpsertTopic;
use crate::sink::ranked::{Periods, RankedSink, RankedState};
use crate::sink::{gather, gather_on, OutputFiles, OutputRecord, OutputSink, Pending, Sink};

/// The output collections, gathered on worker 0.
pub struct Gathered {
    /// The periods of the outputs.
    time: TimeConfig,
    profiles: Pending<(Id, Profile)>,
    /// With `[risk]`, the alerts of its rules.
    alerts: Option<Pending<(Id, Alert)>>,
    /// Impressions, clicks on recommendations and dismissals per item.
    item_feedback: Pending<(Id, ItemFeedback)>,
    /// With `[segments.kmeans]`, each cluster of the last refit's model.
    segments: Option<Pending<(Id, Arc<KMeansModel>)>>,
    similar_items: Pending<SimilarItems>,
    /// The personal lists.
    recommendations: Pending<Recommendations>,
    /// The shared popularity fallback, resolved per user by the sink.
    fallback: Pending<FallbackRecord>,
    /// The state on-demand rankings read ([`Graph::Serving`]).
    state: Pending<StateUpdate>,
    /// With [`Graph::Ranked`], what the sinks rank with.
    ranked: Option<CfConfig>,
    top_k: usize,
    users: Pending<Id>,
    items: Pending<Id>,
}

/// The gathered changes a serving index applies ([`Graph::Serving`]).
pub struct Served {
    pub profiles: Pending<(Id, Profile)>,
    pub alerts: Option<Pending<(Id, Alert)>>,
    pub item_feedback: Pending<(Id, ItemFeedback)>,
    pub segments: Option<Pending<(Id, Arc<KMeansModel>)>>,
    pub state: Pending<StateUpdate>,
}

/// Which outputs a graph computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Graph {
    /// Profiles, and similar items and recommendations once per
    /// `recommend_tick_ms`: the outputs `replay`, `run` and `bench` write.
    Outputs,
    /// Profiles, and at every tick the state similar items and
    /// recommendations are ranked from on demand (`persona serve`),
    /// gathered on the first worker of every process.
    Serving { workers_per_process: usize },
    /// Profiles, and the state of [`Graph::Serving`] gathered on worker 0,
    /// whose sinks rank every item and user from it (per period, or at the
    /// end: `sink::ranked`) with the code that answers `persona serve`.
    Ranked,
}

impl Graph {
    /// The graph of `replay` and `run`: rankings from the dataflow, or
    /// from its state on demand, as `[recommend] rankings` says.
    pub fn of_outputs(config: &PipelineConfig) -> Graph {
        match config.recommend.rankings() {
            Rankings::OnDemand => Graph::Ranked,
            Rankings::Dataflow => Graph::Outputs,
        }
    }

    /// The workers that gather the outputs, of `peers` in all: worker 0,
    /// or for serving the first worker of every process.
    pub fn gatherers(self, peers: usize) -> Rc<[usize]> {
        match self {
            Graph::Outputs | Graph::Ranked => Rc::from([0]),
            Graph::Serving {
                workers_per_process,
            } => (0..peers).step_by(workers_per_process.max(1)).collect(),
        }
    }
}

/// The inputs of the pipeline: clean events and the dimension tables.
pub struct Inputs<'s> {
    pub events: VecCollection<'s, u64, Event>,
    /// The item catalog, if the config has one.
    pub catalog: Option<VecCollection<'s, u64, (Id, CatalogVersion)>>,
    pub user_attributes: VecCollection<'s, u64, (Id, AttributeVersion)>,
    /// The end of the input, once every worker has read its input.
    pub input_end: Rc<Cell<Option<u64>>>,
    /// Users forgotten while serving or running, each once: `events` and
    /// `user_attributes` are already without them.
    pub forgotten: Option<VecCollection<'s, u64, Id>>,
}

type Profiles<'s> = VecCollection<'s, u64, (Id, Profile)>;

/// The profiles with what the learned models add, and what the models
/// give besides (docs/models.md).
pub struct Learned<'s> {
    /// With `cluster` under `[segments.kmeans]`, then `factors` under
    /// `[recommend.mf] embeddings`.
    pub profiles: Profiles<'s>,
    /// With `[segments.kmeans]`: the model of each refit.
    pub kmeans: Option<VecCollection<'s, u64, KMeansModel>>,
    /// With `mf_weight > 0` and rankings: the factorisation's rows as they
    /// change, for the on-demand rankings to blend ([`ranking_state`]).
    pub mf_rows: Option<VecCollection<'s, u64, MfRow>>,
}

/// `profiles` with the learned models of `config`; `ranked` says when the
/// graph's rankings read the factorisation's rows for a blend
/// ([`Rows::Never`] when it ranks nothing on demand, see [`ranked_rows`]).
/// Both models learn again without users as `forgotten` names them.
pub fn with_learned_models<'s>(
    profiles: Profiles<'s>,
    events: VecCollection<'s, u64, Event>,
    forgotten: Option<VecCollection<'s, u64, Id>>,
    config: &PipelineConfig,
    ranked: Rows<u64>,
) -> Learned<'s> {
    let (profiles, kmeans) = match &config.segments.kmeans {
        Some(kmeans) => {
            let (profiles, models) = segments(profiles, forgotten.clone(), kmeans);
            (profiles, Some(models))
        }
        None => (profiles, None),
    };
    let recommend = &config.recommend;
    let rows = match recommend.mf_weight > 0.0 {
        true => ranked,
        false => Rows::Never,
    };
    if !recommend.mf.embeddings && matches!(rows, Rows::Never) {
        return Learned {
            profiles,
            kmeans,
            mf_rows: None,
        };
    }
    let trained = mf::online::train(
        events,
        forgotten,
        recommend.mf.embeddings.then(|| profiles.clone()),
        rows,
        &recommend.mf,
        &recommend.weights,
    );
    Learned {
        profiles: trained.profiles.unwrap_or(profiles),
        kmeans,
        mf_rows: trained.rows,
    }
}

/// When rankings that read the state at the end of each period
/// (`recommend_tick_ms`) need the factorisation's rows: once per period,
/// or at every tick when the period is no longer than one. `input_end`
/// ends the last period at the end of the input, as [`cf_events`] does.
pub fn ranked_rows(config: &PipelineConfig, input_end: Option<Rc<Cell<Option<u64>>>>) -> Rows<u64> {
    let period = config.time.recommend_period();
    if period <= config.time.tick_ms {
        return Rows::EveryTime;
    }
    Rows::PerPeriod {
        period_ms: period,
        input_end: Rc::new(move || input_end.as_ref().and_then(|end| end.get())),
    }
}

/// The state the on-demand rankings read: co-occurrence and counts
/// ([`state_updates`]), and with a blend the factorisation's rows.
pub fn ranking_state<'s>(
    events: VecCollection<'s, u64, Event>,
    mf_rows: Option<VecCollection<'s, u64, MfRow>>,
    config: &PipelineConfig,
) -> VecCollection<'s, u64, StateUpdate> {
    let state = state_updates(events, &config.recommend);
    match mf_rows {
        Some(rows) => state.concat(rows.map(StateUpdate::Factors)),
        None => state,
    }
}

/// Builds the outputs of `graph` from the clean event collection.
pub fn build(
    inputs: Inputs<'_>,
    config: &PipelineConfig,
    graph: Graph,
    probe: &ProbeHandle<u64>,
) -> Gathered {
    let Inputs {
        events,
        catalog,
        user_attributes,
        input_end,
        forgotten,
    } = inputs;
    let gatherers = graph.gatherers(events.scope().peers());
    let (profiles, alerts) = profiles_and_alerts(
        events.clone(),
        catalog,
        user_attributes,
        &config.profile,
        config.risk.as_ref(),
    );
    let rows = match graph {
        Graph::Outputs => Rows::Never,
        Graph::Serving { .. } => Rows::EveryTime,
        Graph::Ranked => ranked_rows(config, Some(input_end.clone())),
    };
    let learned = with_learned_models(profiles, events.clone(), forgotten, config, rows);
    let profiles = learned.profiles;
    // One record per cluster, all sharing the refit's model.
    let segments = learned.kmeans.map(|models| {
        models.flat_map(|model| {
            let clusters = 0..model.centroids.len() as Id;
            let model = Arc::new(model);
            clusters.map(move |cluster| (cluster, Arc::clone(&model)))
        })
    });
    let item_feedback = item_feedback(events.clone(), &config.profile.window_days);
    let users = events
        .clone()
        .map(|event| event.user)
        .distinct_keyed("Users");
    let items = events
        .clone()
        .map(|event| event.item)
        .distinct_keyed("Items");
    let mut gathered = Gathered {
        time: config.time.clone(),
        profiles: gather_on(profiles, probe, gatherers.clone()),
        alerts: alerts.map(|alerts| gather_on(alerts, probe, gatherers.clone())),
        item_feedback: gather_on(item_feedback, probe, gatherers.clone()),
        segments: segments.map(|segments| gather_on(segments, probe, gatherers.clone())),
        similar_items: Pending::default(),
        recommendations: Pending::default(),
        fallback: Pending::default(),
        state: Pending::default(),
        ranked: (graph == Graph::Ranked).then(|| config.recommend.clone()),
        top_k: config.recommend.top_k,
        users: gather_on(users, probe, gatherers.clone()),
        items: gather_on(items, probe, gatherers.clone()),
    };
    match graph {
        Graph::Outputs => {
            let cf = collaborative_filtering(
                cf_events(events, config, Some(input_end)),
                &config.recommend,
            );
            let fallback = cf
                .fallback
                .users
                .map(|(user, seen)| FallbackRecord::User(user, seen))
                .concat(cf.fallback.ranking.map(FallbackRecord::Ranking));
            gathered.similar_items = gather(cf.similar_items, probe);
            gathered.recommendations = gather(cf.personal, probe);
            gathered.fallback = gather(fallback, probe);
        }
        Graph::Serving { .. } | Graph::Ranked => {
            let state = ranking_state(events, learned.mf_rows, config);
            gathered.state = gather_on(state, probe, gatherers);
        }
    }
    gathered
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

/// The sinks of worker 0: the output files, and counters for the summary.
pub struct Sinks {
    pub outputs: Vec<Box<dyn Sink>>,
    pub users: Box<dyn Sink>,
    pub items: Box<dyn Sink>,
}

/// The upsert topic of each output that has one, opened by the command
/// before the graph is built (only `persona run` has them).
pub type UpsertTopics = BTreeMap<Output, UpsertTopic>;

impl Gathered {
    /// The sinks of worker 0: `files` and/or upserts to `topics`.
    pub fn into_sinks(self, files: &OutputFiles, mut topics: UpsertTopics) -> io::Result<Sinks> {
        let profiles = self.output(
            Output::Profiles,
            self.profiles.clone(),
            files,
            topics.remove(&Output::Profiles),
        )?;
        let similar_items = self.output(
            Output::SimilarItems,
            self.similar_items.clone(),
            files,
            topics.remove(&Output::SimilarItems),
        )?;
        let recommendations = self.output(
            Output::Recommendations,
            self.recommendations.clone(),
            files,
            topics.remove(&Output::Recommendations),
        )?;
        let alerts = match self.alerts.clone() {
            Some(alerts) => {
                let topic = topics.remove(&Output::Alerts);
                Some(self.output(Output::Alerts, alerts, files, topic)?)
            }
            None => None,
        };
        let item_feedback = self.output(
            Output::ItemFeedback,
            self.item_feedback.clone(),
            files,
            topics.remove(&Output::ItemFeedback),
        )?;
        let segments = match self.segments.clone() {
            Some(segments) => Some(self.output(Output::Segments, segments, files, None)?),
            None => None,
        };
        let rankings: [Box<dyn Sink>; 2] = match &self.ranked {
            // Ranked from the gathered state.
            Some(cf) => {
                let periods = Periods {
                    period: similar_items.period(),
                    tick_ms: self.time.tick_ms,
                };
                let per_period = similar_items.writes_changes() || recommendations.writes_changes();
                let state = Rc::new(RefCell::new(RankedState::new(
                    self.state,
                    cf.clone(),
                    periods,
                    per_period,
                    true,
                    self.similar_items.clone(),
                    self.recommendations.clone(),
                )));
                [
                    Box::new(RankedSink::similar_items(state.clone(), similar_items)),
                    Box::new(RankedSink::recommendations(state, recommendations)),
                ]
            }
            None => [
                Box::new(similar_items),
                Box::new(FallbackSink::new(
                    recommendations,
                    self.fallback,
                    self.top_k,
                )),
            ],
        };
        let [similar_items, recommendations] = rankings;
        let mut outputs: Vec<Box<dyn Sink>> =
            vec![Box::new(profiles), similar_items, recommendations];
        if let Some(alerts) = alerts {
            outputs.push(Box::new(alerts));
        }
        outputs.push(Box::new(item_feedback));
        if let Some(segments) = segments {
            outputs.push(Box::new(segments));
        }
        Ok(Sinks {
            outputs,
            users: Box::new(OutputSink::counter("users", self.users)),
            items: Box::new(OutputSink::counter("items", self.items)),
        })
    }

    /// The sinks of a [`Graph::Serving`] graph: `serving`, made from the
    /// gathered profiles and state, and the counters.
    pub fn into_serving(self, serving: impl FnOnce(Served) -> Box<dyn Sink>) -> Sinks {
        Sinks {
            outputs: vec![serving(Served {
                profiles: self.profiles,
                alerts: self.alerts,
                item_feedback: self.item_feedback,
                segments: self.segments,
                state: self.state,
            })],
            users: Box::new(OutputSink::counter("users", self.users)),
            items: Box::new(OutputSink::counter("items", self.items)),
        }
    }

    /// The sink of one output: its files, and its upsert topic.
    fn output<D: OutputRecord>(
        &self,
        output: Output,
        pending: Pending<D>,
        files: &OutputFiles,
        topic: Option<UpsertTopic>,
    ) -> io::Result<OutputSink<D>> {
        let mut sink =
            OutputSink::new(output, pending, files)?.with_period(self.time.period_of(output));
        if let Some(topic) = topic {
            let kind = output
                .key_kind()
                .expect("an output with a topic is keyed by name");
            sink = sink.with_upsert(topic, kind);
        }
        Ok(sink)
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
