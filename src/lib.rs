//! persona keeps user profiles and recommendations exactly up to date with
//! every behaviour event, on timely and differential dataflow.
//!
//! ```text
//! source              format              clean                     dataflows (differential)   sink
//! files, stdin  ─┐    csv, jsonl    ─┐    time checks, lateness,    profiles ─────────┐        X.jsonl, X.changes.jsonl
//! kafka topics  ─┴──▶ mapping,      ─┴──▶ dedup, cancellations ───▶ cf history ─▶      ├──────▶ Kafka upserts, summary.json
//!                     presets             as records                similarity ─▶      │        rejected.jsonl, late.jsonl
//!                                                                   recommend ─────────┘
//! ```
//!
//! - [`source`]: where records come from (files, stdin, Kafka), with positions.
//! - [`format`]: how a record becomes events (CSV, JSON Lines, column
//!   mapping, presets), or a [`rejected`] reason.
//! - [`clean`]: what happens to an event before the dataflows, the same for
//!   every command.
//! - [`runtime`]: timely workers wiring sources, cleaning, the dataflows of
//!   `persona_dataflows` and the [`sink`]s together, for each command.
//! - [`serve`]: `persona serve`, the serving graph's state answered over
//!   HTTP, similar items and recommendations ranked on demand.
//! - [`config`] is a leaf every layer reads; [`kafka`] is what the Kafka
//!   source and sink share; [`summary`] is the run summary every command
//!   writes. `docs/architecture.md` has the whole layout.

#![forbid(unsafe_code)]

pub mod bench;
pub mod checkpoint;
pub mod clean;
pub mod config;
pub mod dimension;
pub mod eval;
pub mod format;
pub mod ids;
pub mod kafka;
pub mod metrics;
pub mod names;
pub mod parallel;
pub mod privacy;
pub mod rejected;
pub mod runtime;
pub mod serve;
pub mod sink;
pub mod source;
pub mod summary;
