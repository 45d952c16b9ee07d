//! Loading a whole log into memory as clean events, on one thread: for the
//! commands that need every event before they start (evaluation splits a
//! log by time; benchmarks offer it at a controlled rate).
//!
//! The same decoder and the same deduplication rule as `replay` apply; late
//! records do not exist here, since nothing has advanced a frontier.

use std::collections::HashSet;
use std::path::Path;

use persona_dataflows::Event;

use crate::config::PipelineConfig;
use crate::format::{Decoder, Outcome};
use crate::names::{NameBook, NameKind};
use crate::rejected::Position;
use crate::runtime::open_for_decoding;
use crate::source::file::input_files;
use crate::summary::ReaderCounts;

/// A log read into memory.
pub struct LoadedLog {
    /// Each accepted record as an update: +1, or −1 for a cancellation, in log order.
    pub updates: Vec<(Event, isize)>,
    pub names: NameBook,
    pub counts: ReaderCounts,
}

/// Reads, decodes and deduplicates every record of `input`.
pub fn load(input: &Path, config: &PipelineConfig) -> anyhow::Result<LoadedLog> {
    let mut decoder = Decoder::new(config)?;
    let mut log = LoadedLog {
        updates: Vec::new(),
        names: NameBook::default(),
        counts: ReaderCounts::default(),
    };
    let mut seen = HashSet::new();
    let mut outcomes: Vec<Outcome> = Vec::new();
    for path in input_files(input)? {
        let file = path.display().to_string();
        let Some((mut lines, _)) = open_for_decoding(&path, &mut decoder, Default::default())?
        else {
            continue;
        };
        while let Some((line, bytes)) = lines.next_line()? {
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let position = Position::File {
                file: file.clone(),
                line,
                index: None,
            };
            decoder.decode(bytes, &position, &mut outcomes);
            for outcome in outcomes.drain(..) {
                log.counts.records_read += 1;
                match outcome {
                    Err((_, rejection)) => {
                        *log.counts
                            .rejected
                            .entry(rejection.reason.code().to_owned())
                            .or_insert(0) += 1;
                    }
                    Ok(decoded) if config.cleaning.dedup && !seen.insert(decoded.dedup_key) => {
                        log.counts.decoded += 1;
                        log.counts.duplicates += 1;
                    }
                    Ok(decoded) => {
                        log.counts.decoded += 1;
                        log.names
                            .insert(NameKind::User, decoded.event.user, decoded.user_name);
                        log.names
                            .insert(NameKind::Item, decoded.event.item, decoded.item_name);
                        if let (Some(id), Some(name)) =
                            (decoded.event.category, decoded.category_name)
                        {
                            log.names.insert(NameKind::Category, id, name);
                        }
                        log.updates.push((decoded.event, decoded.diff));
                    }
                }
            }
        }
    }
    Ok(log)
}
