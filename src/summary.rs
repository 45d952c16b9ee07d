//! The run summary: `summary.json`, what a machine reads after a run.
//!
//! `records_read = accepted + duplicates + late + Σ rejected` always holds:
//! every record read is accounted for exactly once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::rejected::Reason;

/// What one reader (a worker) counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReaderCounts {
    pub records_read: u64,
    /// Decoded, on time and not yet deduplicated.
    pub decoded: u64,
    pub rejected: BTreeMap<Reason, u64>,
    pub late: u64,
    /// Events of forgotten users, left out.
    #[serde(default)]
    pub forgotten: u64,
    /// Counted by the deduplication operator of this worker.
    pub duplicates: u64,
    /// The latest dataflow timestamp this reader applied.
    pub max_time: Option<u64>,
    /// Peak resident memory of this worker's process, sent by one worker per process.
    pub peak_rss_bytes: u64,
}

impl ReaderCounts {
    /// Counts one record not applied, under its reason.
    pub fn dropped(&mut self, reason: Reason) {
        match reason {
            Reason::Late => self.late += 1,
            reason => *self.rejected.entry(reason).or_insert(0) += 1,
        }
    }

    /// Adds another reader's counts to these.
    pub fn merge(&mut self, other: &ReaderCounts) {
        self.records_read += other.records_read;
        self.decoded += other.decoded;
        for (reason, count) in &other.rejected {
            *self.rejected.entry(*reason).or_insert(0) += count;
        }
        self.late += other.late;
        self.forgotten += other.forgotten;
        self.duplicates += other.duplicates;
        self.max_time = self.max_time.max(other.max_time);
        self.peak_rss_bytes += other.peak_rss_bytes;
    }
}

/// `summary.json`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Summary {
    pub records_read: u64,
    pub accepted: u64,
    /// Rejected records by reason (every reason but `late`).
    pub rejected: BTreeMap<Reason, u64>,
    pub duplicates: u64,
    pub late: u64,
    /// Events of users forgotten (`[privacy] forgotten`), left out.
    pub forgotten: u64,
    pub users: u64,
    pub items: u64,
    pub outputs: BTreeMap<String, u64>,
    pub elapsed_s: f64,
    pub events_per_s: f64,
    pub peak_rss_bytes: u64,
    pub workers: usize,
}

impl Summary {
    /// Whether every record read is accounted for exactly once.
    pub fn balances(&self) -> bool {
        self.records_read
            == self.accepted
                + self.duplicates
                + self.late
                + self.forgotten
                + self.rejected.values().sum::<u64>()
    }
}

/// Peak resident set size of this process (VmHWM), 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    status_bytes("VmHWM:")
}

/// Resident set size of this process now (VmRSS), 0 where unknown.
pub fn rss_bytes() -> u64 {
    status_bytes("VmRSS:")
}

/// Restarts the peak resident set size from the current one (Linux's
/// `clear_refs` 5), so that [`peak_rss_bytes`] measures what follows;
/// returns whether it could.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// A `kB` field of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(0, |kib| kib * 1024)
}
