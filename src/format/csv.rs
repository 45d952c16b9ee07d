//! CSV lines: a line is split into fields with `csv-core` (the parser of
//! the `csv` crate), and fields
//! are found by column name (from the header line or the config's `columns`).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;

use crate::config::{ConfigError, CsvOptions};
use crate::format::mapping::{CompiledMapping, Fields};
use crate::rejected::{Position, Reason, Rejection};

/// A header line that does not fit the config: a problem of the data file,
/// not of the config.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("{position}: cannot read the header line: {detail}")]
    Unreadable { position: Position, detail: String },
    #[error("{position}: the header has no column {column:?} (columns: {columns})")]
    MissingColumn {
        position: Position,
        column: String,
        columns: String,
    },
    #[error("{position}: the header line is longer than [cleaning] max_record_bytes = {limit}")]
    TooLong { position: Position, limit: usize },
}

/// Column layout of a CSV input.
pub struct CsvFields {
    /// Building a CSV reader compiles a state machine: build it once.
    reader: RefCell<csv_core::Reader>,
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
            reader: RefCell::new(csv_core::ReaderBuilder::new().delimiter(delimiter).build()),
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

    /// Reads a header line as the column names, and returns them.
    pub fn read_header_columns(
        &mut self,
        line: &[u8],
        position: &Position,
    ) -> Result<Vec<String>, HeaderError> {
        let header = self
            .split(line)
            .map_err(|rejection| HeaderError::Unreadable {
                position: position.clone(),
                detail: rejection.detail,
            })?;
        let names: Vec<String> = (0..header.field_count())
            .map(|i| {
                String::from_utf8_lossy(header.field(i).unwrap_or_default())
                    .trim_start_matches('\u{feff}')
                    .to_owned()
            })
            .collect();
        self.set_columns(names.iter().map(String::as_str));
        Ok(names)
    }

    /// Reads the header line and checks that every mapped column exists.
    pub fn read_header(
        &mut self,
        line: &[u8],
        position: &Position,
        mapping: &CompiledMapping,
    ) -> Result<(), HeaderError> {
        let names = self.read_header_columns(line, position)?;
        for field in mapping.field_names() {
            if !self.columns.contains_key(field) {
                return Err(HeaderError::MissingColumn {
                    position: position.clone(),
                    column: field.to_owned(),
                    // Escaped: a header is data, and may hold terminal escapes.
                    columns: names
                        .iter()
                        .map(|name| format!("{:?}", name))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        Ok(())
    }

    /// Splits one line into the fields of a record.
    pub fn split<'a>(&'a self, line: &[u8]) -> Result<CsvRecord<'a>, Rejection> {
        let mut input = Vec::with_capacity(line.len() + 1);
        input.extend_from_slice(line);
        input.push(b'\n');
        // Fields are never longer than the line, and there is at most one
        // more than there are delimiters (fewer when some are quoted): a
        // bound from the line's length alone would take 8 bytes per byte.
        let delimiters = line.iter().filter(|&&b| b == self.delimiter).count();
        let mut fields = vec![0; input.len()];
        let mut ends = vec![0; delimiters + 2];
        let mut reader = self.reader.borrow_mut();
        reader.reset();
        let (result, read, _, count) = reader.read_record(&input, &mut fields, &mut ends);
        if !matches!(result, csv_core::ReadRecordResult::Record) || count == 0 {
            return Err(Rejection::new(Reason::ColumnCount, "not a CSV record"));
        }
        // A bare carriage return (or, in a Kafka message, a line feed)
        // ends a CSV record: what follows it would be lost without a word
        // if the columns before it were enough.
        if input[read..].iter().any(|&b| b != b'\r' && b != b'\n') {
            let end = match input[..read].last() {
                Some(b'\n') => "a line feed",
                _ => "a carriage return",
            };
            return Err(Rejection::new(
                Reason::ColumnCount,
                format!("{end} inside the record ends it after byte {read}"),
            ));
        }
        ends.truncate(count);
        fields.truncate(ends[count - 1]);
        if self.width != 0 && count != self.width {
            return Err(Rejection::new(
                Reason::ColumnCount,
                format!("expected {} columns, found {count}", self.width),
            ));
        }
        Ok(CsvRecord {
            columns: &self.columns,
            fields,
            ends,
        })
    }
}

/// The fields of one CSV record.
pub struct CsvRecord<'a> {
    columns: &'a HashMap<String, usize>,
    /// The unquoted fields, back to back; field `i` ends at `ends[i]`.
    fields: Vec<u8>,
    ends: Vec<usize>,
}

impl CsvRecord<'_> {
    fn field(&self, index: usize) -> Option<&[u8]> {
        let end = *self.ends.get(index)?;
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        Some(&self.fields[start..end])
    }

    /// Number of fields.
    fn field_count(&self) -> usize {
        self.ends.len()
    }
}

impl Fields for CsvRecord<'_> {
    fn get(&self, name: &str) -> Result<Option<Cow<'_, str>>, Rejection> {
        let Some(&index) = self.columns.get(name) else {
            return Ok(None);
        };
        let Some(bytes) = self.field(index) else {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> CsvFields {
        CsvFields::new(&CsvOptions {
            has_header: false,
            columns: vec!["a".into(), "b".into()],
            delimiter: ",".into(),
        })
        .unwrap()
    }

    #[test]
    fn a_carriage_return_inside_a_line_is_not_a_silent_cut() {
        let fields = fields();
        assert_eq!(fields.split(b"1,2").unwrap().field_count(), 2);
        assert_eq!(fields.split(b"\"x\ry\",2").unwrap().field_count(), 2);
        let rejection = fields.split(b"1,2\rlost").err().unwrap();
        assert_eq!(rejection.reason, Reason::ColumnCount);
    }

    #[test]
    fn fields_need_not_be_bounded_by_the_line_length() {
        let fields = fields();
        // Quoted delimiters make fewer fields than delimiters, never more.
        let record = fields.split(b"\"a,b,c,d\",e").unwrap();
        assert_eq!(record.field(0), Some(&b"a,b,c,d"[..]));
        assert_eq!(record.field(1), Some(&b"e"[..]));
    }
}
