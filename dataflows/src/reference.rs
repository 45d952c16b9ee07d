//! The from-scratch oracle: plain Rust, no differential, written for clarity.
//! Each function recomputes an output from the full set of updates at a
//! given time; the tests compare the dataflows against it after every batch.

pub mod cf;
pub mod feedback;
pub mod kmeans;
pub mod profile;
pub mod risk;
