//! Collaborative filtering: each user's history ([`history`]), item
//! co-occurrence and similarity ([`similarity`]), and per-user top-k
//! recommendations ([`recommend`]), configured by [`CfConfig`] and wired by
//! [`collaborative_filtering`]; [`on_demand`] evaluates the same rankings
//! for one item or user from the exact state, for `persona serve`. The
//! layers import downwards only: config ← history ← similarity ← recommend
//! ← on_demand.

mod config;
pub mod history;
pub mod on_demand;
pub mod recommend;
pub mod similarity;

pub use config::{CfConfig, Metric, Mode, Rankings};
pub use recommend::collaborative_filtering;
