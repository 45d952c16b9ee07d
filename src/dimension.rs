//! Dimension tables fused with events: an item catalog (item → category,
//! price) and user attributes (age band, region, ...), read from CSV files.
//!
//! Each row is a version: with a `version` column the row applies at that
//! time (so a replay sees the catalog change when it did, and every affected
//! profile changes with it), without one it applies from the start and later
//! rows win. The profile dataflow joins them incrementally; latest wins.
//! These tables are curated inputs, so a bad row is an error naming the file
//! and line, not a rejected record.

use std::path::Path;

use persona_dataflows::profile::{AttributeVersion, CatalogVersion};
use persona_dataflows::Id;

use crate::config::dimension::{CatalogConfig, UserAttributesConfig, VersionColumn};
use crate::config::DEFAULT_MAX_RECORD_BYTES;
use crate::config::{ConfigError, CsvOptions, IdKind};
use crate::format::csv::CsvFields;
use crate::format::mapping::{parse_price, Fields, TimeParser};
use crate::ids::{control_character, control_character_message, id_of, normalise_id};
use crate::privacy::Pseudonyms;
use crate::rejected::Position;
use crate::source::file::{Records, SourceError};

/// Errors reading a dimension table.
#[derive(Debug, thiserror::Error)]
pub enum DimensionError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Header(#[from] crate::format::csv::HeaderError),
    #[error("{position}: {detail}")]
    Row { position: Position, detail: String },
    /// A data problem, not a config one: the table's header lacks a column
    /// the config names.
    #[error("{path}: no column {column:?} (columns: {columns})")]
    MissingColumn {
        path: String,
        column: String,
        columns: String,
    },
}

/// One catalog row, with the names to show in outputs.
#[derive(Clone, Debug)]
pub struct CatalogRow {
    pub item: Id,
    pub item_name: String,
    pub category_name: Option<String>,
    pub version: CatalogVersion,
}

/// One user attribute value.
#[derive(Clone, Debug)]
pub struct AttributeRow {
    pub user: Id,
    pub user_name: String,
    pub version: AttributeVersion,
}

/// Reads the rows of a CSV table, calling `row` with each line's fields,
/// the line number and the column names.
fn read_table(
    path: &Path,
    mut row: impl FnMut(&dyn Fields, u64, &[String]) -> Result<(), String>,
) -> Result<(), DimensionError> {
    let max_bytes = DEFAULT_MAX_RECORD_BYTES;
    let mut records = Records::open(path, true, max_bytes, Default::default())?;
    let mut fields = CsvFields::new(&CsvOptions::default())?;
    let Some((position, header)) = records.header() else {
        return Ok(());
    };
    let columns = fields.read_header_columns(header, position)?;
    while let Some((position, bytes)) = records.next_record()? {
        if bytes.len() > max_bytes {
            return Err(DimensionError::Row {
                position,
                detail: format!("the line is longer than the {max_bytes} bytes a row may have"),
            });
        }
        let record = match fields.split(bytes) {
            Ok(record) => record,
            Err(rejection) => {
                return Err(DimensionError::Row {
                    position,
                    detail: rejection.detail,
                })
            }
        };
        let Position::File { line, .. } = position else {
            unreachable!("a file's records have file positions");
        };
        if let Err(detail) = row(&record, line, &columns) {
            return Err(DimensionError::Row { position, detail });
        }
    }
    Ok(())
}

/// A table's id, normalised; one with a control character is an error, as
/// it would be a second key that prints like the first.
/// Under pseudonymisation the id is its pseudonym, and an error does not
/// repeat it.
fn table_id(
    fields: &dyn Fields,
    column: &str,
    kind: IdKind,
    ids: &IdRules,
) -> Result<String, String> {
    let id = fields
        .get(column)
        .map_err(|r| r.detail)?
        .map(|id| normalise_id(&id, ids.numeric_ids).to_owned())
        .ok_or_else(|| format!("column {column:?} is empty"))?;
    match control_character(&id) {
        None => Ok(ids.pseudonyms.of(kind, &id).into_owned()),
        Some(c) => Err(control_character_message(
            &format!("column {column:?}"),
            &id,
            c,
            ids.pseudonyms.enabled(),
        )),
    }
}

/// How a table's ids are read: as the events' are (`[cleaning] numeric_ids`,
/// `[privacy] pseudonymize`).
pub struct IdRules<'a> {
    pub numeric_ids: bool,
    pub pseudonyms: &'a Pseudonyms,
}

fn require_columns(path: &Path, columns: &[String], wanted: &[&str]) -> Result<(), DimensionError> {
    for column in wanted {
        if !columns.iter().any(|c| c == column) {
            return Err(DimensionError::MissingColumn {
                path: path.display().to_string(),
                column: column.to_string(),
                columns: columns.join(", "),
            });
        }
    }
    Ok(())
}

/// The version time of a row: its version column, else its line number (so
/// later rows win), and the timestamp from which it applies.
fn version_of(
    fields: &dyn Fields,
    line: u64,
    version: &VersionColumn,
    parser: &TimeParser,
) -> Result<(i64, i64), String> {
    match &version.version {
        None => Ok((line as i64, 0)),
        Some(column) => {
            let text = fields
                .get(column)
                .map_err(|r| r.detail)?
                .ok_or_else(|| format!("column {column:?} is empty"))?;
            let ms = parser.parse(&text, column).map_err(|r| r.detail)?;
            Ok((ms, ms))
        }
    }
}

/// Reads a catalog; each row comes with the event time from which it applies.
pub fn read_catalog(
    config: &CatalogConfig,
    ids: &IdRules,
) -> Result<Vec<(CatalogRow, i64)>, DimensionError> {
    let parser = TimeParser::new(
        config.version.version_format.as_deref(),
        config.version.time_zone.as_deref(),
    )?;
    let price_decimals = config.price_decimals.unwrap_or(2);
    if price_decimals > 6 {
        return Err(DimensionError::Config(ConfigError::Invalid(
            "[catalog] price_decimals: expected at most 6 decimal places".into(),
        )));
    }
    let mut rows = Vec::new();
    let mut checked = false;
    read_table(&config.path, |fields, line, columns| {
        if !checked {
            let mut wanted = vec![config.item.as_str()];
            wanted.extend(config.category.as_deref());
            wanted.extend(config.price.as_deref());
            wanted.extend(config.version.version.as_deref());
            require_columns(&config.path, columns, &wanted).map_err(|e| e.to_string())?;
            checked = true;
        }
        let item_name = table_id(fields, &config.item, IdKind::Item, ids)?;
        let category_name = match &config.category {
            None => None,
            Some(column) => fields
                .get(column)
                .map_err(|r| r.detail)?
                .map(|c| normalise_id(&c, ids.numeric_ids).to_owned()),
        };
        let price = match &config.price {
            None => None,
            Some(column) => fields
                .get(column)
                .map_err(|r| r.detail)?
                .map(|p| parse_price(&p, column, price_decimals))
                .transpose()
                .map_err(|r| r.detail)?,
        };
        let (version_ms, applies_ms) = version_of(fields, line, &config.version, &parser)?;
        rows.push((
            CatalogRow {
                item: id_of(&item_name),
                item_name,
                category_name: category_name.clone(),
                version: CatalogVersion {
                    version_ms,
                    category: category_name.as_deref().map(id_of),
                    price,
                },
            },
            applies_ms,
        ));
        Ok(())
    })?;
    Ok(rows)
}

/// Reads user attributes; each value comes with the event time from which it applies.
pub fn read_user_attributes(
    config: &UserAttributesConfig,
    ids: &IdRules,
) -> Result<Vec<(AttributeRow, i64)>, DimensionError> {
    let parser = TimeParser::new(
        config.version.version_format.as_deref(),
        config.version.time_zone.as_deref(),
    )?;
    let mut rows = Vec::new();
    let mut attributes: Option<Vec<String>> = None;
    read_table(&config.path, |fields, line, columns| {
        let attributes = match &attributes {
            Some(attributes) => attributes,
            None => {
                let mut wanted = vec![config.user.as_str()];
                wanted.extend(config.attributes.iter().map(String::as_str));
                wanted.extend(config.version.version.as_deref());
                require_columns(&config.path, columns, &wanted).map_err(|e| e.to_string())?;
                let chosen = if config.attributes.is_empty() {
                    columns
                        .iter()
                        .filter(|c| {
                            **c != config.user
                                && Some(c.as_str()) != config.version.version.as_deref()
                        })
                        .cloned()
                        .collect()
                } else {
                    config.attributes.clone()
                };
                attributes.insert(chosen)
            }
        };
        let user_name = table_id(fields, &config.user, IdKind::User, ids)?;
        let (version_ms, applies_ms) = version_of(fields, line, &config.version, &parser)?;
        for name in attributes {
            if let Some(value) = fields.get(name).map_err(|r| r.detail)? {
                rows.push((
                    AttributeRow {
                        user: id_of(&user_name),
                        user_name: user_name.clone(),
                        version: AttributeVersion {
                            version_ms,
                            name: name.clone(),
                            value: value.trim().to_owned(),
                        },
                    },
                    applies_ms,
                ));
            }
        }
        Ok(())
    })?;
    Ok(rows)
}
