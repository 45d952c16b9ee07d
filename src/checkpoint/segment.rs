//! A checkpoint's data files: Parquet, one file per worker and checkpoint.
//!
//! An event segment holds the records a worker gave its input between two
//! checkpoints, as they went in: the dataflow time, the multiplicity, the
//! deduplication key, the event's fields and the id strings the outputs
//! show. A letters segment holds the lines the worker wrote to
//! `rejected.jsonl` and `late.jsonl` in the same span. Any Parquet reader
//! (DuckDB, pyarrow) reads them.

use std::sync::Arc;

use anyhow::Context;
use arrow_array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use persona_dataflows::{Action, Event};

use crate::format::Decoded;
use crate::sink::parquet::encode;

/// One record a worker gave its input: `decoded` at dataflow time `time`.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    pub time: u64,
    pub decoded: Decoded,
}

/// One line of a dead-letter file: of `late.jsonl` when `late`, else of
/// `rejected.jsonl`; without its newline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Letter {
    pub late: bool,
    pub line: String,
}

fn events_schema() -> SchemaRef {
    let u64_field = |name: &str, nullable| Field::new(name, DataType::UInt64, nullable);
    let i64_field = |name: &str, nullable| Field::new(name, DataType::Int64, nullable);
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        u64_field("time", false),
        i64_field("diff", false),
        u64_field("dedup_key", false),
        u64_field("user", false),
        u64_field("item", false),
        text("action", false),
        i64_field("time_ms", false),
        u64_field("category", true),
        i64_field("price", true),
        i64_field("quantity", false),
        i64_field("rating", true),
        u64_field("event_id", true),
        u64_field("session", true),
        text("user_name", false),
        text("item_name", false),
        text("category_name", true),
    ]))
}

fn letters_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("late", DataType::Boolean, false),
        Field::new("line", DataType::Utf8, false),
    ]))
}

/// Decodes a Parquet file into its record batches, checking its schema
/// (the file's, so that an empty file of the other kind is refused too).
fn decode(bytes: Vec<u8>, schema: &SchemaRef) -> anyhow::Result<Vec<RecordBatch>> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes))?;
    anyhow::ensure!(
        builder.schema().fields() == schema.fields(),
        "unexpected columns {:?}",
        builder.schema().fields()
    );
    Ok(builder.build()?.collect::<Result<Vec<_>, _>>()?)
}

/// The Parquet file of a worker's records.
pub fn encode_events(records: &[Recorded]) -> anyhow::Result<Vec<u8>> {
    let column_u64 = |f: &dyn Fn(&Recorded) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(records.iter().map(f)))
    };
    let column_i64 = |f: &dyn Fn(&Recorded) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(records.iter().map(f)))
    };
    let optional_u64 = |f: &dyn Fn(&Recorded) -> Option<u64>| -> ArrayRef {
        Arc::new(records.iter().map(f).collect::<UInt64Array>())
    };
    let optional_i64 = |f: &dyn Fn(&Recorded) -> Option<i64>| -> ArrayRef {
        Arc::new(records.iter().map(f).collect::<Int64Array>())
    };
    let columns: Vec<ArrayRef> = vec![
        column_u64(&|r| r.time),
        column_i64(&|r| r.decoded.diff as i64),
        column_u64(&|r| r.decoded.dedup_key),
        column_u64(&|r| r.decoded.event.user),
        column_u64(&|r| r.decoded.event.item),
        Arc::new(StringArray::from_iter_values(
            records.iter().map(|r| r.decoded.event.action.name()),
        )),
        column_i64(&|r| r.decoded.event.time_ms),
        optional_u64(&|r| r.decoded.event.category),
        optional_i64(&|r| r.decoded.event.price),
        column_i64(&|r| r.decoded.event.quantity),
        optional_i64(&|r| r.decoded.event.rating),
        optional_u64(&|r| r.decoded.event.event_id),
        optional_u64(&|r| r.decoded.event.session),
        Arc::new(StringArray::from_iter_values(
            records.iter().map(|r| r.decoded.user_name.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            records.iter().map(|r| r.decoded.item_name.as_str()),
        )),
        Arc::new(
            records
                .iter()
                .map(|r| r.decoded.category_name.as_deref())
                .collect::<StringArray>(),
        ),
    ];
    Ok(encode(&RecordBatch::try_new(events_schema(), columns)?)?)
}

/// The records of an events file, in the order they were written.
pub fn decode_events(bytes: Vec<u8>) -> anyhow::Result<Vec<Recorded>> {
    let mut records = Vec::new();
    for batch in decode(bytes, &events_schema())? {
        let u64s = |i: usize| column::<UInt64Array>(&batch, i);
        let i64s = |i: usize| column::<Int64Array>(&batch, i);
        let texts = |i: usize| column::<StringArray>(&batch, i);
        let (time, diff, key, user, item) = (u64s(0)?, i64s(1)?, u64s(2)?, u64s(3)?, u64s(4)?);
        let (action, time_ms, category, price) = (texts(5)?, i64s(6)?, u64s(7)?, i64s(8)?);
        let (quantity, rating, event_id, session) = (i64s(9)?, i64s(10)?, u64s(11)?, u64s(12)?);
        let (user_name, item_name, category_name) = (texts(13)?, texts(14)?, texts(15)?);
        for row in 0..batch.num_rows() {
            let action = Action::from_name(action.value(row))
                .with_context(|| format!("unknown action {:?}", action.value(row)))?;
            let optional_u64 = |a: &UInt64Array| a.is_valid(row).then(|| a.value(row));
            let optional_i64 = |a: &Int64Array| a.is_valid(row).then(|| a.value(row));
            records.push(Recorded {
                time: time.value(row),
                decoded: Decoded {
                    event: Event {
                        user: user.value(row),
                        item: item.value(row),
                        action,
                        time_ms: time_ms.value(row),
                        category: optional_u64(category),
                        price: optional_i64(price),
                        quantity: quantity.value(row),
                        rating: optional_i64(rating),
                        event_id: optional_u64(event_id),
                        session: optional_u64(session),
                    },
                    diff: diff.value(row) as isize,
                    dedup_key: key.value(row),
                    user_name: user_name.value(row).to_owned(),
                    item_name: item_name.value(row).to_owned(),
                    category_name: category_name
                        .is_valid(row)
                        .then(|| category_name.value(row).to_owned()),
                },
            });
        }
    }
    Ok(records)
}

/// The Parquet file of a worker's dead letters.
pub fn encode_letters(letters: &[Letter]) -> anyhow::Result<Vec<u8>> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            letters
                .iter()
                .map(|l| Some(l.late))
                .collect::<BooleanArray>(),
        ),
        Arc::new(StringArray::from_iter_values(
            letters.iter().map(|l| l.line.as_str()),
        )),
    ];
    Ok(encode(&RecordBatch::try_new(letters_schema(), columns)?)?)
}

/// The dead letters of a letters file, in the order they were written.
pub fn decode_letters(bytes: Vec<u8>) -> anyhow::Result<Vec<Letter>> {
    let mut letters = Vec::new();
    for batch in decode(bytes, &letters_schema())? {
        let late = column::<BooleanArray>(&batch, 0)?;
        let line = column::<StringArray>(&batch, 1)?;
        for row in 0..batch.num_rows() {
            letters.push(Letter {
                late: late.value(row),
                line: line.value(row).to_owned(),
            });
        }
    }
    Ok(letters)
}

/// Column `index` of `batch` as the array type the schema gives it.
fn column<A: Array + 'static>(batch: &RecordBatch, index: usize) -> anyhow::Result<&A> {
    batch
        .column(index)
        .as_any()
        .downcast_ref::<A>()
        .with_context(|| format!("column {index} has an unexpected type"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(time: u64, category: Option<&str>) -> Recorded {
        let mut event = Event::new(7, 11, Action::Purchase, 1_000 + time as i64);
        event.price = Some(255);
        event.quantity = 3;
        event.category = category.map(|_| 5);
        event.session = Some(9);
        Recorded {
            time,
            decoded: Decoded {
                event,
                diff: if time.is_multiple_of(2) { 1 } else { -1 },
                dedup_key: time * 31,
                user_name: "u7".into(),
                item_name: "i11".into(),
                category_name: category.map(str::to_owned),
            },
        }
    }

    #[test]
    fn events_and_letters_read_back_as_written() {
        let records = vec![
            recorded(1, None),
            recorded(2, Some("tea")),
            recorded(3, None),
        ];
        let bytes = encode_events(&records).unwrap();
        assert_eq!(decode_events(bytes).unwrap(), records);
        let letters = vec![
            Letter {
                late: true,
                line: r#"{"reason":"late"}"#.into(),
            },
            Letter {
                late: false,
                line: "{}".into(),
            },
        ];
        let bytes = encode_letters(&letters).unwrap();
        assert_eq!(decode_letters(bytes).unwrap(), letters);
    }

    #[test]
    fn a_file_of_the_other_kind_is_refused() {
        let bytes = encode_letters(&[]).unwrap();
        let error = decode_events(bytes).unwrap_err();
        assert!(
            format!("{error:#}").contains("unexpected columns"),
            "{error:#}"
        );
    }
}
