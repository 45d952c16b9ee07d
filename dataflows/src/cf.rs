//! Collaborative filtering: each user's history ([`history`]), item
//! co-occurrence and similarity ([`similarity`]), and per-user top-k
//! recommendations ([`recommend`]), configured by [`CfConfig`] and wired by
//! [`collaborative_filtering`]. The layers import downwards only: config ←
//! history ← similarity ← recommend.

mod config;
pub mod history;
pub mod recommend;
pub mod similarity;

pub use config::{CfConfig, Metric};
pub use recommend::collaborative_filtering;
