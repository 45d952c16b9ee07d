//! persona's dataflows: pure functions from differential collections of
//! behaviour events to collections of user features, item similarities and
//! recommendations.
//!
//! Every dataflow here is generic over the timestamp (see [`EventTime`]) and
//! does no I/O: no probes, files or sockets. The `persona` binary wires
//! sources, workers and sinks around them. [`reference`](mod@reference) holds the plain-Rust,
//! from-scratch implementation of the same semantics, the oracle of the tests.
//!
//! State is integers (counts, sums of minor units, decayed weights in fixed
//! point, see [`decay`]); floating
//! point values are computed inside reductions from integer state in a
//! canonical order, so an incremental result and a from-scratch result are the
//! same bits.

#![forbid(unsafe_code)]

pub mod decay;
pub mod event;
pub mod keyed;
pub mod score;
pub mod seeded;
pub mod time;

// Profile features (issue: exact incremental user profiles).
pub mod profile;

// Collaborative filtering (issue: co-occurrence CF and top-k recommendations).
pub mod cf;

// Risk signals and alerts (issue: risk and the feedback loop).
pub mod risk;

// Feedback per item (issue: risk and the feedback loop).
pub mod feedback;

// Matrix factorisation trained online (issue: learned models).
pub mod mf;

// K-means user segments (issue: learned models).
pub mod kmeans;

pub mod reference;

pub use event::{Action, ActionWeights, Event, Id};
pub use score::Score;
pub use time::EventTime;
