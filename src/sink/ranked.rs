//! Similar items and recommendations ranked at the end of a replay from
//! the state collaborative filtering keeps exact ([`Graph::Ranked`]), by
//! the code that answers `persona serve` (`cf::on_demand::CfState`), so a
//! replay's files and a server's answers cannot disagree.
//!
//! [`Graph::Ranked`]: crate::runtime::pipeline::Graph::Ranked

use std::cell::RefCell;
use std::io;
use std::path::Path;
use std::rc::Rc;

use persona_dataflows::cf::on_demand::{CfState, StateUpdate};
use persona_dataflows::cf::recommend::Recommendations;
use persona_dataflows::cf::similarity::SimilarItems;
use persona_dataflows::cf::CfConfig;

use super::{take_ready, JsonlSink, Pending, Sink, Upto};
use crate::names::Names;

/// The gathered state, applied as times complete, shared by the two sinks.
pub struct RankedState {
    pending: Pending<StateUpdate>,
    cf: CfState,
    config: CfConfig,
}

impl RankedState {
    pub fn new(pending: Pending<StateUpdate>, config: CfConfig) -> RankedState {
        RankedState {
            pending,
            cf: CfState::default(),
            config,
        }
    }

    /// Applies the complete updates (the state changes at every tick).
    fn drain(&mut self, upto: Upto) {
        self.cf.apply(&take_ready(&self.pending, upto));
    }
}

/// Which ranking a [`RankedSink`] writes.
enum Ranking {
    SimilarItems(JsonlSink<SimilarItems>),
    Recommendations(JsonlSink<Recommendations>),
}

/// `similar_items.jsonl` or `recommendations.jsonl`, ranked at the end.
pub struct RankedSink {
    state: Rc<RefCell<RankedState>>,
    ranking: Ranking,
}

impl RankedSink {
    /// Every item's top-K neighbours, into `file` (a sink of no updates).
    pub fn similar_items(state: Rc<RefCell<RankedState>>, file: JsonlSink<SimilarItems>) -> Self {
        RankedSink {
            state,
            ranking: Ranking::SimilarItems(file),
        }
    }

    /// Every user's recommendations, into `file` (a sink of no updates).
    pub fn recommendations(
        state: Rc<RefCell<RankedState>>,
        file: JsonlSink<Recommendations>,
    ) -> Self {
        RankedSink {
            state,
            ranking: Ranking::Recommendations(file),
        }
    }
}

impl Sink for RankedSink {
    fn drain(&mut self, upto: Upto, _names: &dyn Names) -> io::Result<()> {
        self.state.borrow_mut().drain(upto);
        Ok(())
    }

    /// Ranks every item (or user) as `similar_items.jsonl` (or
    /// `recommendations.jsonl`) holds them: those with a non-empty list.
    fn finish(&mut self, dir: &Path, names: &dyn Names) -> io::Result<Option<(String, usize)>> {
        let state = self.state.borrow();
        let (cf, config) = (&state.cf, &state.config);
        match &mut self.ranking {
            Ranking::SimilarItems(file) => {
                file.insert(
                    cf.items()
                        .map(|item| cf.similar_items(item, config.neighbors, config))
                        .filter(|list| !list.neighbors.is_empty()),
                );
                file.finish(dir, names)
            }
            Ranking::Recommendations(file) => {
                file.insert(
                    cf.users()
                        .map(|user| cf.recommendations(user, config.top_k, config))
                        .filter(|list| !list.items.is_empty()),
                );
                file.finish(dir, names)
            }
        }
    }

    fn record_count(&self) -> usize {
        0
    }
}
