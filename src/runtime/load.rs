//! Loading a whole log into memory as clean events, on one thread: for the
//! commands that need every event before they start (evaluation splits a
//! log by time; benchmarks offer it at a controlled rate).
//!
//! The records and their cleaning are those of `replay` ([`crate::clean`]):
//! the same decoder, time checks, watermark and deduplication rule, so a
//! loaded log holds exactly the events a replay applies.

use std::path::Path;

use persona_dataflows::Event;

use crate::clean::{Admission, Admitted, Judge, Seen, Watermark};
use crate::config::PipelineConfig;
use crate::format::{Decoder, Outcome};
use crate::names::{NameBook, NameKind};
use crate::source::file::input_files;
use crate::summary::ReaderCounts;

/// A log read into memory.
pub struct LoadedLog {
    /// Each accepted record as an update: +1, or −1 for a cancellation, in log order.
    pub updates: Vec<(Event, isize)>,
    pub names: NameBook,
    pub counts: ReaderCounts,
}

/// Reads, decodes and cleans every record of `input`.
pub fn load(input: &Path, config: &PipelineConfig) -> anyhow::Result<LoadedLog> {
    let mut decoder = Decoder::new(config)?;
    let mut log = LoadedLog {
        updates: Vec::new(),
        names: NameBook::default(),
        counts: ReaderCounts::default(),
    };
    let admission = Admission::new(config);
    let mut watermark = Watermark::new(config.time.allowed_lateness_s.saturating_mul(1000));
    let mut seen = config
        .cleaning
        .dedup
        .then(|| Seen::new(config.cleaning.dedup_horizon_s.saturating_mul(1000)));
    let mut outcomes: Vec<Outcome> = Vec::new();
    for path in input_files(input)? {
        let mut records = decoder.records(&path, Default::default())?;
        while let Some((position, bytes)) = records.next_record()? {
            decoder.decode(bytes, &position, &mut outcomes);
            for outcome in outcomes.drain(..) {
                log.counts.records_read += 1;
                let mut judge = Judge::Clock {
                    watermark: &mut watermark,
                    own: true,
                };
                let (decoded, tick) = match admission.admit(outcome.map_err(|(_, r)| r), &mut judge)
                {
                    Admitted::Dropped(rejection) => {
                        log.counts.dropped(rejection.reason);
                        continue;
                    }
                    Admitted::Applied(decoded, tick) => (decoded, tick),
                };
                log.counts.decoded += 1;
                if let Some(seen) = &mut seen {
                    if !seen.first(decoded.dedup_key, tick) {
                        log.counts.duplicates += 1;
                        continue;
                    }
                    if let Some(frontier) = watermark.get() {
                        seen.forget_behind(config.time.tick_of(frontier));
                    }
                }
                log.names
                    .insert(NameKind::User, decoded.event.user, decoded.user_name);
                log.names
                    .insert(NameKind::Item, decoded.event.item, decoded.item_name);
                if let (Some(id), Some(name)) = (decoded.event.category, decoded.category_name) {
                    log.names.insert(NameKind::Category, id, name);
                }
                log.updates.push((decoded.event, decoded.diff));
            }
        }
    }
    Ok(log)
}
