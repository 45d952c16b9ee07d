//! The popularity fallback of `recommendations`, resolved where it is
//! written.
//!
//! The dataflow keeps one shared popular ranking and, per user without a
//! personal list, their seen items ([`Fallback`]); a popularity change is one
//! record there, not one per fallback user. This sink turns them into each
//! user's `recommendations` line ([`popular_list`]) beside the personal lists:
//! at the end of the run for the final file, or, when every change is written
//! as it happens (a changelog or an upsert topic), at each time, for the users
//! whose list changed.
//!
//! [`Fallback`]: persona_dataflows::cf::recommend::Fallback

use std::collections::BTreeMap;
use std::io;

use persona_dataflows::cf::recommend::{popular_list, Recommendations};
use persona_dataflows::Id;
use serde::{Deserialize, Serialize};

use crate::names::Names;
use crate::sink::{is_ready, OutputSink, Pending, Sink, Upto};

/// One record of the shared fallback, as gathered on worker 0.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FallbackRecord {
    /// A user served the popular list, with their seen items ascending.
    User(Id, Vec<Id>),
    /// The popular ranking, `(item, users)` best first.
    Ranking(Vec<(Id, u64)>),
}

/// The `recommendations` sink: the personal lists of `inner`, plus the
/// fallback users' lists resolved from the shared ranking.
pub struct FallbackSink {
    inner: OutputSink<Recommendations>,
    pending: Pending<FallbackRecord>,
    top_k: usize,
    /// Fallback user → seen items, as of the last applied time.
    users: BTreeMap<Id, Vec<Id>>,
    ranking: Vec<(Id, u64)>,
    /// The resolved lists handed to `inner` so far (when `eager`).
    lists: BTreeMap<Id, Recommendations>,
    /// Whether `inner` writes each change (changelog or upsert); otherwise
    /// the lists are resolved once, at the end.
    eager: bool,
}

impl FallbackSink {
    /// Wraps the sink of the personal lists; `top_k` is `[recommend] top_k`.
    pub fn new(
        inner: OutputSink<Recommendations>,
        pending: Pending<FallbackRecord>,
        top_k: usize,
    ) -> FallbackSink {
        let eager = inner.writes_changes();
        FallbackSink {
            inner,
            pending,
            top_k,
            users: BTreeMap::new(),
            ranking: Vec::new(),
            lists: BTreeMap::new(),
            eager,
        }
    }

    /// Applies the consolidated updates of one time; returns the users
    /// whose list may have changed.
    fn apply(&mut self, updates: &[(FallbackRecord, isize)]) -> Vec<Id> {
        let mut touched = Vec::new();
        let mut ranking_changed = false;
        // Retractions first: a changed record is its old version out, then
        // its new version in.
        for retract in [true, false] {
            for (record, diff) in updates.iter().filter(|(_, d)| (*d < 0) == retract) {
                match (record, retract) {
                    (FallbackRecord::User(user, _), true) => {
                        self.users.remove(user);
                        touched.push(*user);
                    }
                    (FallbackRecord::User(user, seen), false) => {
                        debug_assert_eq!(*diff, 1);
                        self.users.insert(*user, seen.clone());
                        touched.push(*user);
                    }
                    (FallbackRecord::Ranking(_), true) => {
                        self.ranking.clear();
                        ranking_changed = true;
                    }
                    (FallbackRecord::Ranking(ranking), false) => {
                        self.ranking.clone_from(ranking);
                        ranking_changed = true;
                    }
                }
            }
        }
        if ranking_changed {
            touched.extend(self.users.keys().copied());
        }
        touched.sort_unstable();
        touched.dedup();
        touched
    }

    fn resolve(&self, user: Id) -> Option<Recommendations> {
        let seen = self.users.get(&user)?;
        popular_list(user, seen, &self.ranking, self.top_k)
    }
}

impl Sink for FallbackSink {
    fn drain(&mut self, upto: Upto, names: &dyn Names) -> io::Result<()> {
        let period = self.inner.period();
        let mut ready: Vec<(FallbackRecord, u64, isize)> = {
            let mut pending = self.pending.borrow_mut();
            let (ready, rest) = pending
                .drain(..)
                .partition(|(_, time, _)| is_ready(upto, period, *time));
            *pending = rest;
            ready
        };
        differential_dataflow::consolidation::consolidate_updates(&mut ready);
        // Times ascending, each applied whole.
        ready.sort_by_key(|(_, time, _)| *time);
        let mut changes = Vec::new();
        for group in ready.chunk_by(|(_, t1, _), (_, t2, _)| t1 == t2) {
            let time = group[0].1;
            let updates: Vec<(FallbackRecord, isize)> =
                group.iter().map(|(r, _, d)| (r.clone(), *d)).collect();
            let touched = self.apply(&updates);
            if !self.eager {
                continue;
            }
            for user in touched {
                let list = self.resolve(user);
                if self.lists.get(&user) == list.as_ref() {
                    continue;
                }
                if let Some(old) = self.lists.remove(&user) {
                    changes.push((old, time, -1));
                }
                if let Some(new) = list {
                    changes.push((new.clone(), time, 1));
                    self.lists.insert(user, new);
                }
            }
        }
        self.inner.push(changes);
        self.inner.drain(upto, names)
    }

    fn finish(&mut self, names: &dyn Names) -> io::Result<Vec<(String, usize)>> {
        if !self.eager {
            let lists: Vec<Recommendations> = self
                .users
                .keys()
                .filter_map(|user| self.resolve(*user))
                .collect();
            self.inner.insert(lists);
            // Resolved into `inner` now: not counted twice.
            self.users.clear();
        }
        self.inner.finish(names)
    }

    fn record_count(&self) -> usize {
        let unresolved = if self.eager {
            0
        } else {
            let users = self.users.keys();
            users.filter(|user| self.resolve(**user).is_some()).count()
        };
        self.inner.record_count() + unresolved
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    fn reconcile(&mut self) -> io::Result<usize> {
        self.inner.reconcile()
    }
}
