//! Formats: how the bytes of one record become events.
//!
//! Transports (files, stdin, Kafka) hand over records as lines; a format
//! splits a line into fields ([`csv`] or [`jsonl`]), and the [`mapping`]
//! turns fields into a cleaned [`Decoded`] event or a [`Rejection`]. A Kafka
//! topic of CSV lines and a file of CSV lines share one decoder. [`preset`]
//! holds the configs that read well-known public logs as they are.

pub mod csv;
pub mod jsonl;
pub mod mapping;
pub mod preset;

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use persona_dataflows::Event;

use crate::config::{ConfigError, FormatKind, PipelineConfig, RawRecords};
use crate::privacy::Pseudonyms;
use crate::rejected::{truncated_text, Position, Reason, Rejection, RAW_PREFIX_BYTES};
use crate::source::file::Records;
use csv::HeaderError;
use mapping::CompiledMapping;

/// A record that passed validation, ready for the dataflow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub event: Event,
    /// +1 for an event, −1 for the retraction of a cancelled purchase.
    pub diff: isize,
    /// Equal for records that are the same event seen twice.
    pub dedup_key: u64,
    /// The id strings as the outputs should show them.
    pub user_name: String,
    pub item_name: String,
    pub category_name: Option<String>,
}

/// The outcome of decoding one record.
pub type Outcome = Result<Decoded, (Position, Rejection)>;

/// Decodes lines of one input into events, per its config.
pub struct Decoder {
    format: Format,
    mapping: CompiledMapping,
    /// Longer records are rejected unread (`[cleaning] max_record_bytes`).
    max_record_bytes: usize,
    raw: RawRecords,
}

enum Format {
    Csv(Box<csv::CsvFields>),
    Jsonl,
}

impl Decoder {
    /// A decoder of the records `config` describes. The whole config is
    /// validated here too: every command builds a decoder before it reads,
    /// so a config merged from a preset and a file is checked as well.
    pub fn new(config: &PipelineConfig) -> Result<Decoder, ConfigError> {
        config.validate()?;
        let format = match config.input.format {
            FormatKind::Csv => Format::Csv(Box::new(csv::CsvFields::new(&config.input.csv)?)),
            FormatKind::Jsonl => Format::Jsonl,
        };
        let pseudonyms = Pseudonyms::from_config(&config.privacy)?;
        // A raw record would show the ids pseudonymisation hides: dead
        // letters then show the mapped fields, ids pseudonymised.
        let raw = if pseudonyms.enabled() {
            RawRecords::Mapped
        } else {
            config.output.raw
        };
        let mapping = CompiledMapping::new(&config.input.mapping, &config.cleaning)?
            .with_mapped_raw(raw == RawRecords::Mapped)
            .with_pseudonyms(pseudonyms);
        Ok(Decoder {
            format,
            mapping,
            max_record_bytes: config.cleaning.max_record_bytes,
            raw,
        })
    }

    /// The longest record this decoder reads, in bytes: a reader of lines
    /// need not keep more than one byte beyond it.
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    /// How ids are pseudonymised (`[privacy]`).
    pub fn pseudonyms(&self) -> &Pseudonyms {
        self.mapping.pseudonyms()
    }

    /// Whether the first line of each file names the columns.
    pub fn expects_header(&self) -> bool {
        matches!(&self.format, Format::Csv(fields) if fields.expects_header())
    }

    /// Takes the header line of a CSV file, so fields can be found by name.
    /// Opens one input file for decoding: its records, after the header
    /// line read into this decoder when the format has one.
    pub fn records(&mut self, path: &Path, bytes_read: Arc<AtomicU64>) -> anyhow::Result<Records> {
        let records = Records::open(
            path,
            self.expects_header(),
            self.max_record_bytes,
            bytes_read,
        )?;
        if let Some((position, header)) = records.header() {
            self.read_header(header, position)?;
        }
        Ok(records)
    }

    pub fn read_header(&mut self, line: &[u8], position: &Position) -> Result<(), HeaderError> {
        if line.len() > self.max_record_bytes {
            return Err(HeaderError::TooLong {
                position: position.clone(),
                limit: self.max_record_bytes,
            });
        }
        match &mut self.format {
            Format::Csv(fields) => fields.read_header(line, position, &self.mapping),
            Format::Jsonl => Ok(()),
        }
    }

    /// Decodes one line (one message) into zero or more outcomes.
    pub fn decode(&self, line: &[u8], position: &Position, out: &mut Vec<Outcome>) {
        if line.len() > self.max_record_bytes {
            let mut rejection = Rejection::new(
                Reason::RecordTooLarge,
                format!(
                    "the record is longer than [cleaning] max_record_bytes = {} bytes",
                    self.max_record_bytes
                ),
            );
            rejection.raw = Some(match self.raw {
                RawRecords::Full => truncated_text(line, RAW_PREFIX_BYTES),
                RawRecords::Mapped => String::new(),
            });
            out.push(Err((position.clone(), rejection)));
            return;
        }
        let first = out.len();
        match &self.format {
            Format::Csv(fields) => out.push(
                fields
                    .split(line)
                    .and_then(|record| self.mapping.decode(&record))
                    .map_err(|rejection| (position.clone(), rejection)),
            ),
            Format::Jsonl => jsonl::decode(line, position, &self.mapping, out),
        }
        if self.raw == RawRecords::Mapped {
            // A record that could not be split into fields has no mapped
            // fields to show: show nothing rather than every column.
            for outcome in &mut out[first..] {
                if let Err((_, rejection)) = outcome {
                    rejection.raw.get_or_insert_with(String::new);
                }
            }
        }
    }

    /// The `raw` of a dead letter for the record at `position` of `line`
    /// (for records that decoded but are dropped later, such as late ones):
    /// the line as read, or its mapped fields under `[output] raw = "mapped"`.
    pub fn raw_record(&self, line: &[u8], position: &Position) -> String {
        match self.raw {
            RawRecords::Full if line.len() > self.max_record_bytes => {
                truncated_text(line, RAW_PREFIX_BYTES)
            }
            RawRecords::Full => String::from_utf8_lossy(line).into_owned(),
            RawRecords::Mapped if line.len() > self.max_record_bytes => String::new(),
            RawRecords::Mapped => match &self.format {
                Format::Csv(fields) => fields
                    .split(line)
                    .map(|record| self.mapping.mapped_raw(&record))
                    .unwrap_or_default(),
                Format::Jsonl => jsonl::mapped_raw(line, position, &self.mapping),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(index: Option<usize>) -> Position {
        Position::File {
            file: "log".into(),
            line: 2,
            index,
        }
    }

    fn decoder(config: &str) -> Decoder {
        let config: PipelineConfig = toml::from_str(config).unwrap();
        Decoder::new(&config).unwrap()
    }

    #[test]
    fn late_records_show_only_mapped_fields_when_asked() {
        let csv = "[input.csv]\nhas_header = false\ncolumns = [\"u\", \"name\", \"i\", \"t\"]\n\
                   [input.mapping]\nuser = \"u\"\nitem = \"i\"\ntime = \"t\"\naction_constant = \"view\"\n";
        let line = b"7,Ada Lovelace,42,1659304800000";
        assert_eq!(
            decoder(csv).raw_record(line, &position(None)),
            "7,Ada Lovelace,42,1659304800000"
        );
        let mapped = decoder(&format!("{csv}[output]\nraw = \"mapped\"\n"));
        assert_eq!(
            mapped.raw_record(line, &position(None)),
            r#"{"u":"7","i":"42","t":"1659304800000"}"#
        );
        let json =
            "[input]\nformat = \"jsonl\"\n[input.mapping]\nuser = \"session\"\nitem = \"aid\"\n\
                    time = \"ts\"\naction_constant = \"click\"\nrecords = \"events\"\n\
                    [output]\nraw = \"mapped\"\n";
        let line = br#"{"session":1,"secret":"x","events":[{"aid":5,"ts":1},{"aid":6,"ts":2}]}"#;
        assert_eq!(
            decoder(json).raw_record(line, &position(Some(1))),
            r#"{"session":"1","aid":"6","ts":"2"}"#
        );
    }

    #[test]
    fn records_over_the_limit_are_rejected_with_a_prefix() {
        let config = "[input.csv]\nhas_header = false\ncolumns = [\"u\", \"i\", \"t\"]\n\
                      [input.mapping]\nuser = \"u\"\nitem = \"i\"\ntime = \"t\"\naction_constant = \"view\"\n\
                      [cleaning]\nmax_record_bytes = 10000\n";
        let decoder = decoder(config);
        let line = vec![b'1'; 10_001];
        let mut out = Vec::new();
        decoder.decode(&line, &position(None), &mut out);
        let (_, rejection) = out.pop().unwrap().unwrap_err();
        assert_eq!(rejection.reason, Reason::RecordTooLarge);
        assert_eq!(rejection.raw.unwrap().len(), RAW_PREFIX_BYTES);
        decoder.decode(&line[..10_000], &position(None), &mut out);
        assert_ne!(
            out.pop().unwrap().unwrap_err().1.reason,
            Reason::RecordTooLarge
        );
    }
}
