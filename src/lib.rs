//! persona keeps user profiles and recommendations exactly up to date with
//! every behaviour event, on timely and differential dataflow.
//!
//! ```text
//! sources            formats           cleaning             dataflows (differential)          sinks
//! file replay  ─┐    csv  mapping ─┐   validate, normalise  profile ──────────────┐   changelog (jsonl)
//! kafka topic  ─┼──▶ json mapping ─┼─▶ dedup, fuse with  ─▶ history ─▶ cooccur ─▶ ├──▶ snapshot (jsonl)
//! stdin        ─┘    presets      ─┘   catalogs; errors     recommend ◀──────────┘   summary.json
//!                                      ─▶ rejected sink
//! ```
//!
//! - [`source`]: where bytes come from (files, stdin), as lines with positions.
//! - [`format`]: how a line becomes events (CSV, JSON Lines, column mapping,
//!   presets), with every bad record turned into a [`rejected`] line.
//! - [`runtime`]: timely workers wiring sources, the dataflows of
//!   `persona_dataflows` and the [`sink`]s together, for each command.
//! - [`summary`]: the run summary every command writes.

#![forbid(unsafe_code)]

pub mod bench;
pub mod clean;
pub mod config;
pub mod dimension;
pub mod eval;
pub mod format;
pub mod ids;
pub mod kafka;
pub mod names;
pub mod rejected;
pub mod runtime;
pub mod sink;
pub mod source;
pub mod summary;
