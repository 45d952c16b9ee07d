//! The serving index: the exact state `persona serve` answers from, as of
//! one time. [`IndexSink`], a sink of the first worker of each process,
//! applies the dataflow's
//! completed changes to it, all the times a drain completes at once, so a
//! reader never sees a mix of two times.
//!
//! The index is kept twice ([`SharedIndex`]): the changes go into the copy
//! readers are not using, which then becomes the one they read, and then
//! into the other. A reader never waits for a tick being applied (under
//! heavy ingest that is hundreds of ms of co-occurrence changes), at the
//! cost of a second copy of the index and of applying each change twice.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, TryLockError};
use std::time::Instant;

use persona_dataflows::cf::on_demand::{CfState, StateUpdate};
use persona_dataflows::cf::CfConfig;
use persona_dataflows::feedback::ItemFeedback;
use persona_dataflows::kmeans::{squared, vector, KMeansConfig, KMeansModel};
use persona_dataflows::profile::Profile;
use persona_dataflows::risk::Alert;
use persona_dataflows::{Id, Score};
use rustc_hash::FxHashMap as HashMap;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::names::{NameBook, NameKind, Names};
use crate::privacy::stats::Contribution;
use crate::runtime::pipeline::Served;
use crate::sink::render::factors_json;
use crate::sink::{take_ready, take_ready_at, OutputRecord, Sink, Upto};

/// Profiles, the state of collaborative filtering, and the names to show
/// ids with, as of [`Index::as_of`].
#[derive(Default)]
pub struct Index {
    /// The last complete tick (ms): every event of it or before is in, no
    /// later one is. `None` before the first tick completes.
    as_of: Option<u64>,
    profiles: HashMap<Id, Profile>,
    /// With `[risk]`: each user's standing alerts, with their counts.
    alerts: Option<HashMap<Id, BTreeMap<Alert, isize>>>,
    item_feedback: HashMap<Id, ItemFeedback>,
    /// With `[segments.kmeans]`: the model and each cluster's users.
    segments: ClusterMembers,
    cf: CfState,
    names: NameBook,
}

/// The current k-means model and the users of each cluster, for similar
/// users.
#[derive(Default)]
struct ClusterMembers {
    model: Option<Arc<KMeansModel>>,
    members: HashMap<u32, BTreeSet<Id>>,
}

impl ClusterMembers {
    fn join(&mut self, cluster: u32, user: Id) {
        self.members.entry(cluster).or_default().insert(user);
    }

    fn leave(&mut self, cluster: u32, user: Id) {
        if let Some(members) = self.members.get_mut(&cluster) {
            members.remove(&user);
            if members.is_empty() {
                self.members.remove(&cluster);
            }
        }
    }
}

impl Index {
    pub fn as_of(&self) -> Option<u64> {
        self.as_of
    }

    /// Users with a profile.
    pub fn users(&self) -> usize {
        self.profiles.len()
    }

    /// Items in at least one history.
    pub fn items(&self) -> usize {
        self.cf.item_count()
    }

    /// The `profiles.jsonl` record of `user`, if they have a profile.
    pub fn profile(&self, user: Id) -> Option<Value> {
        let profile = self.profiles.get(&user)?;
        Some((user, profile.clone()).to_json(&self.names))
    }

    /// The `item_feedback.jsonl` record of `item`, if it has feedback.
    pub fn item_feedback(&self, item: Id) -> Option<Value> {
        let feedback = self.item_feedback.get(&item)?;
        Some((item, feedback.clone()).to_json(&self.names))
    }

    /// `user`'s standing alerts, oldest first, as `alerts.jsonl` shows them.
    pub fn alerts(&self, user: Id, user_name: &str) -> Value {
        let lines: Vec<Value> = self
            .alerts
            .as_ref()
            .and_then(|alerts| alerts.get(&user))
            .into_iter()
            .flatten()
            .flat_map(|(alert, count)| std::iter::repeat_n(alert, (*count).max(0) as usize))
            .map(|alert| {
                let mut line = (user, alert.clone()).to_json(&self.names);
                if let Some(fields) = line.as_object_mut() {
                    fields.remove("user");
                }
                line
            })
            .collect();
        let mut lines = lines;
        lines.sort_by_key(|line| line["time_ms"].as_i64());
        serde_json::json!({"user": user_name, "alerts": lines})
    }

    /// `user`'s top `k` recommendations (the popular list for a user with no
    /// personal one, unknown users included), as `recommendations.jsonl`
    /// shows them; `user_name` shows an unknown user.
    pub fn recommendations(&self, user: Id, user_name: &str, k: usize, cf: &CfConfig) -> Value {
        let mut json = self.cf.recommendations(user, k, cf).to_json(&self.names);
        json["user"] = Value::from(user_name);
        json["popular"] = Value::Bool(json.get("popular").is_some());
        json
    }

    /// The `k` users of `user`'s cluster nearest to them, in the
    /// standardised units of the current model (ties: the lower id), with
    /// their distance; `None` for a user without a profile or a cluster.
    /// Costs a distance per member of the cluster.
    pub fn similar_users(&self, user: Id, k: usize, config: &KMeansConfig) -> Option<Value> {
        let profile = self.profiles.get(&user)?;
        let (cluster, model) = (profile.cluster?, self.segments.model.as_ref()?);
        let point = model.standardise(&vector(profile, config)?);
        let members = self.segments.members.get(&cluster.id).into_iter().flatten();
        let mut nearest: Vec<(Score, Id)> = members
            .filter(|other| **other != user)
            .filter_map(|other| {
                let theirs = model.standardise(&vector(self.profiles.get(other)?, config)?);
                Some((Score(squared(&point, theirs).sqrt()), *other))
            })
            .collect();
        nearest.sort_unstable();
        nearest.truncate(k);
        let users: Vec<Value> = nearest
            .into_iter()
            .map(
                |(distance, other)| json!({"user": self.names.user(other), "distance": distance.0}),
            )
            .collect();
        Some(json!({"user": self.names.user(user), "cluster": cluster.id, "users": users}))
    }

    /// `user`'s factor vector, `{"user", "factors"}`; `None` for a user
    /// without a profile or factors.
    pub fn embedding(&self, user: Id) -> Option<Value> {
        let factors = self.profiles.get(&user)?.factors.as_ref()?;
        Some(json!({"user": self.names.user(user), "factors": factors_json(factors)}))
    }

    /// `item`'s `k` most similar items as `similar_items.jsonl` shows them
    /// (with K = k), `None` for an item in no history.
    pub fn similar_items(&self, item: Id, k: usize, cf: &CfConfig) -> Option<Value> {
        self.cf
            .has_item(item)
            .then(|| self.cf.similar_items(item, k, cf).to_json(&self.names))
    }
}

impl Index {
    /// What each user adds to the private statistics (`crate::privacy::stats`):
    /// their segment, first top category, value of `attribute` and history
    /// items by affinity, highest first (ties by item id).
    pub fn contributions(&self, attribute: &str) -> Vec<Contribution> {
        self.profiles
            .iter()
            .map(|(&user, profile)| {
                let mut history = self.cf.history(user).to_vec();
                history.sort_by(|a, b| {
                    b.affinity
                        .0
                        .total_cmp(&a.affinity.0)
                        .then(a.item.cmp(&b.item))
                });
                Contribution {
                    segment: profile.segment.name(),
                    top_category: profile
                        .top_categories
                        .first()
                        .map(|c| self.names.category(c.category)),
                    attribute: profile.attributes.get(attribute).cloned(),
                    items: history.iter().map(|e| self.names.item(e.item)).collect(),
                }
            })
            .collect()
    }
}

/// The index, shared by the first worker and the HTTP server, in two copies, and
/// the time it is as of, which a waiting request watches.
pub struct SharedIndex {
    copies: [RwLock<Index>; 2],
    /// The copy readers read.
    current: AtomicUsize,
    pub as_of: watch::Sender<Option<u64>>,
}

impl SharedIndex {
    pub fn new() -> Arc<SharedIndex> {
        Arc::new(SharedIndex {
            copies: Default::default(),
            current: AtomicUsize::new(0),
            as_of: watch::Sender::new(None),
        })
    }

    /// The current copy, read-locked. A reader that finds its copy being
    /// written took it just before the writer switched copies: the other
    /// one is then current, and complete.
    pub fn read(&self) -> RwLockReadGuard<'_, Index> {
        loop {
            let current = self.current.load(Ordering::Acquire);
            match self.copies[current].try_read() {
                Ok(index) => return index,
                // A panic of the writer left the copy as it was: changes are
                // applied only after they are consolidated.
                Err(TryLockError::Poisoned(poisoned)) => return poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => std::thread::yield_now(),
            }
        }
    }

    /// Applies `change` to the copy readers are not using, makes it the
    /// current one, then applies `change` to the other.
    fn update(&self, mut change: impl FnMut(&mut Index)) {
        let current = self.current.load(Ordering::Acquire);
        let next = 1 - current;
        for copy in [next, current] {
            let mut index = self.copies[copy]
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            change(&mut index);
            if copy == next {
                self.current.store(next, Ordering::Release);
            }
        }
    }
}

/// The sink of a serving graph on a process's first worker: applies the completed changes
/// of profiles and of collaborative filtering's state to the index.
pub struct IndexSink {
    served: Served,
    shared: Arc<SharedIndex>,
    metrics: Arc<Metrics>,
    tick_ms: u64,
}

impl IndexSink {
    pub fn new(
        served: Served,
        shared: Arc<SharedIndex>,
        metrics: Arc<Metrics>,
        tick_ms: u64,
    ) -> IndexSink {
        IndexSink {
            served,
            shared,
            metrics,
            tick_ms,
        }
    }
}

impl Sink for IndexSink {
    fn drain(&mut self, upto: Upto, names: &dyn Names) -> io::Result<()> {
        let frontier = match upto {
            Upto::Before(frontier) => frontier,
            Upto::End(end) => end.saturating_add(1),
        };
        // The last complete tick: `frontier` is a tick or past every tick.
        let as_of = frontier.checked_sub(1).map(|t| t - t % self.tick_ms);
        let served = &self.served;
        let profiles = take_ready(&served.profiles, upto);
        let alerts = served
            .alerts
            .as_ref()
            .map(|alerts| take_ready(alerts, upto));
        let item_feedback = take_ready(&served.item_feedback, upto);
        let segments = served.segments.as_ref().map(|s| take_ready(s, upto));
        // Applied as they come: `CfState::apply_changes` consolidates what needs it.
        let state = take_ready_at(&served.state, upto);
        let no_alerts = alerts.as_ref().is_none_or(Vec::is_empty);
        let no_segments = segments.as_ref().is_none_or(Vec::is_empty);
        let unchanged = profiles.is_empty() && no_alerts && no_segments && item_feedback.is_empty();
        if unchanged && state.is_empty() && self.shared.read().as_of == as_of {
            return Ok(());
        }
        let started = Instant::now();
        // Names of what the changes show, for answers to show them again.
        let mut named: Vec<(NameKind, Id, String)> = Vec::new();
        for ((user, profile), diff) in &profiles {
            if *diff > 0 {
                named.push((NameKind::User, *user, names.user(*user)));
                for category in &profile.top_categories {
                    let id = category.category;
                    named.push((NameKind::Category, id, names.category(id)));
                }
            }
        }
        for ((item, _), diff) in &item_feedback {
            if *diff > 0 {
                named.push((NameKind::Item, *item, names.item(*item)));
            }
        }
        for (update, _, diff) in &state {
            if let (StateUpdate::Item(item), 1..) = (update, diff) {
                named.push((NameKind::Item, *item, names.item(*item)));
            }
        }
        self.shared.update(|index| {
            // Retractions first: a profile replaced at a time is (−old, +new).
            for ((user, profile), diff) in &profiles {
                if *diff < 0 {
                    index.profiles.remove(user);
                    if let Some(cluster) = profile.cluster {
                        index.segments.leave(cluster.id, *user);
                    }
                }
            }
            for ((user, profile), diff) in &profiles {
                if *diff > 0 {
                    index.profiles.insert(*user, profile.clone());
                    if let Some(cluster) = profile.cluster {
                        index.segments.join(cluster.id, *user);
                    }
                }
            }
            // Every record of a refit carries the whole model.
            let refit = segments.iter().flatten().find(|(_, diff)| *diff > 0);
            if let Some(((_, model), _)) = refit {
                index.segments.model = Some(Arc::clone(model));
            }
            for ((item, _), diff) in &item_feedback {
                if *diff < 0 {
                    index.item_feedback.remove(item);
                }
            }
            for ((item, feedback), diff) in &item_feedback {
                if *diff > 0 {
                    index.item_feedback.insert(*item, feedback.clone());
                }
            }
            for (kind, id, name) in &named {
                index.names.insert(*kind, *id, name.clone());
            }
            if let Some(alerts) = &alerts {
                let standing = index.alerts.get_or_insert_with(HashMap::default);
                for ((user, alert), diff) in alerts {
                    let of_user = standing.entry(*user).or_default();
                    let count = of_user.entry(alert.clone()).or_default();
                    *count += diff;
                    if *count == 0 {
                        of_user.remove(alert);
                        if of_user.is_empty() {
                            standing.remove(user);
                        }
                    }
                }
            }
            index.cf.apply_updates(&state);
            index.as_of = as_of;
        });
        self.metrics.record_apply(started.elapsed());
        let index = self.shared.read();
        self.metrics
            .set_index(index.users(), index.items(), index.as_of());
        drop(index);
        self.shared.as_of.send_replace(as_of);
        Ok(())
    }

    fn finish(&mut self, _names: &dyn Names) -> io::Result<Vec<(String, usize)>> {
        Ok(Vec::new())
    }

    fn record_count(&self) -> usize {
        self.shared.read().users()
    }
}
