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

use persona_dataflows::Event;

use crate::config::{ConfigError, FormatKind, PipelineConfig};
use crate::rejected::{Position, Rejection};
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
}

enum Format {
    Csv(Box<csv::CsvFields>),
    Jsonl,
}

impl Decoder {
    pub fn new(config: &PipelineConfig) -> Result<Decoder, ConfigError> {
        let format = match config.input.format {
            FormatKind::Csv => Format::Csv(Box::new(csv::CsvFields::new(&config.input.csv)?)),
            FormatKind::Jsonl => Format::Jsonl,
        };
        let mapping = CompiledMapping::new(&config.input.mapping, &config.cleaning)?;
        Ok(Decoder { format, mapping })
    }

    /// Whether the first line of each file names the columns.
    pub fn expects_header(&self) -> bool {
        matches!(&self.format, Format::Csv(fields) if fields.expects_header())
    }

    /// Takes the header line of a CSV file, so fields can be found by name.
    pub fn read_header(&mut self, line: &[u8], position: &Position) -> Result<(), ConfigError> {
        match &mut self.format {
            Format::Csv(fields) => fields.read_header(line, position, &self.mapping),
            Format::Jsonl => Ok(()),
        }
    }

    /// Decodes one line (one message) into zero or more outcomes.
    pub fn decode(&self, line: &[u8], position: &Position, out: &mut Vec<Outcome>) {
        match &self.format {
            Format::Csv(fields) => out.push(
                fields
                    .split(line)
                    .and_then(|record| self.mapping.decode(&record))
                    .map_err(|rejection| (position.clone(), rejection)),
            ),
            Format::Jsonl => jsonl::decode(line, position, &self.mapping, out),
        }
    }
}
