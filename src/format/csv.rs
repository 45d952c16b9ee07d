//! CSV lines: a line is split into fields with the `csv` crate, and fields
//! are found by column name (from the header line or the config's `columns`).

use std::borrow::Cow;
use std::collections::HashMap;

use crate::config::{ConfigError, CsvOptions};
use crate::format::mapping::{CompiledMapping, Fields};
use crate::rejected::{Position, Reason, Rejection};

/// Column layout of a CSV input.
pub struct CsvFields {
    delimiter: u8,
    expects_header: bool,
    columns: HashMap<String, usize>,
    width: usize,
}

impl CsvFields {
    pub fn new(options: &CsvOptions) -> Result<CsvFields, ConfigError> {
        let delimiter = match options.delimiter.as_bytes() {
            [byte] => *byte,
            _ => {
                return Err(ConfigError::Invalid(format!(
                    "[input.csv] delimiter must be one byte, got {:?}",
                    options.delimiter
                )))
            }
        };
        let mut fields = CsvFields {
            delimiter,
            expects_header: options.has_header,
            columns: HashMap::new(),
            width: 0,
        };
        if !options.has_header {
            if options.columns.is_empty() {
                return Err(ConfigError::Invalid(
                    "[input.csv] has_header = false needs `columns`".into(),
                ));
            }
            fields.set_columns(options.columns.iter().map(String::as_str));
        }
        Ok(fields)
    }

    pub fn expects_header(&self) -> bool {
        self.expects_header
    }

    fn set_columns<'a>(&mut self, names: impl Iterator<Item = &'a str>) {
        self.columns.clear();
        self.width = 0;
        for (index, name) in names.enumerate() {
            // The first column of a name wins, as a reader would expect.
            self.columns.entry(name.trim().to_owned()).or_insert(index);
            self.width = index + 1;
        }
    }

    /// Reads the header line and checks that every mapped column exists.
    pub fn read_header(
        &mut self,
        line: &[u8],
        position: &Position,
        mapping: &CompiledMapping,
    ) -> Result<(), ConfigError> {
        let header = self.split(line).map_err(|rejection| {
            ConfigError::Invalid(format!("{position}: header: {}", rejection.detail))
        })?;
        let names: Vec<String> = (0..header.fields.len())
            .map(|i| {
                String::from_utf8_lossy(&header.fields[i])
                    .trim_start_matches('\u{feff}')
                    .to_owned()
            })
            .collect();
        self.set_columns(names.iter().map(String::as_str));
        for field in mapping.field_names() {
            if !self.columns.contains_key(field) {
                return Err(ConfigError::Invalid(format!(
                    "{position}: the header has no column {field:?} (columns: {})",
                    names.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Splits one line into the fields of a record.
    pub fn split<'a>(&'a self, line: &[u8]) -> Result<CsvRecord<'a>, Rejection> {
        let mut reader = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(self.delimiter)
            .buffer_capacity(line.len() + 16)
            .from_reader(line);
        let mut record = ::csv::ByteRecord::new();
        match reader.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => return Err(Rejection::new(Reason::ColumnCount, "empty record")),
            Err(error) => return Err(Rejection::new(Reason::ColumnCount, error.to_string())),
        }
        if self.width != 0 && record.len() != self.width {
            return Err(Rejection::new(
                Reason::ColumnCount,
                format!("expected {} columns, found {}", self.width, record.len()),
            ));
        }
        Ok(CsvRecord {
            columns: &self.columns,
            fields: record,
        })
    }
}

/// The fields of one CSV record.
pub struct CsvRecord<'a> {
    columns: &'a HashMap<String, usize>,
    fields: ::csv::ByteRecord,
}

impl Fields for CsvRecord<'_> {
    fn get(&self, name: &str) -> Result<Option<Cow<'_, str>>, Rejection> {
        let Some(&index) = self.columns.get(name) else {
            return Ok(None);
        };
        let Some(bytes) = self.fields.get(index) else {
            return Ok(None);
        };
        match std::str::from_utf8(bytes) {
            Ok(text) if text.trim().is_empty() => Ok(None),
            Ok(text) => Ok(Some(Cow::Borrowed(text))),
            Err(error) => Err(Rejection::new(
                Reason::InvalidUtf8,
                format!("column {name:?}: {error}"),
            )),
        }
    }
}
