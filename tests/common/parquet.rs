//! Reading the Parquet datasets of the outputs back with the `parquet`
//! crate's own reader, as JSON comparable with the JSONL outputs.

use std::fs::File;
use std::path::Path;

use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use persona::ids::id_of;
use serde_json::Value;

use super::read_lines;

/// The rows of the dataset `dir/NAME`, as JSON without null fields, each
/// checked to sit in the partition of its key's bucket.
pub fn dataset_rows(dir: &Path, name: &str, key: &str, buckets: u64) -> Vec<Value> {
    let mut rows = Vec::new();
    for partition in std::fs::read_dir(dir.join(name)).unwrap() {
        let partition = partition.unwrap();
        let folder = partition.file_name().into_string().unwrap();
        let bucket = folder
            .strip_prefix("bucket=")
            .and_then(|b| b.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name}/{folder} is not a bucket=B partition"));
        assert!(bucket < buckets, "{name}/{folder}");
        let files: Vec<_> = std::fs::read_dir(partition.path())
            .unwrap()
            .map(|f| f.unwrap().file_name())
            .collect();
        assert_eq!(files, ["part-0.parquet"], "{name}/{folder}");
        let file = File::open(partition.path().join("part-0.parquet")).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        let mut json = arrow_json::ArrayWriter::new(Vec::new());
        for batch in reader {
            json.write(&batch.unwrap()).unwrap();
        }
        json.finish().unwrap();
        let bytes = json.into_inner();
        let batch_rows: Vec<Value> = match bytes.is_empty() {
            true => Vec::new(),
            false => serde_json::from_slice(&bytes).unwrap(),
        };
        // Only an empty output has an empty file, in bucket 0.
        assert!(
            !batch_rows.is_empty() || bucket == 0,
            "{name}/{folder} is empty"
        );
        for row in batch_rows {
            let id = row[key].as_str().expect("string key");
            assert_eq!(
                id_of(id) % buckets,
                bucket,
                "{name}: {key} {id} is in the wrong partition"
            );
            rows.push(row);
        }
    }
    rows
}

/// The JSON lines of `dir/NAME.jsonl`, without null fields (a Parquet
/// null is an absent field in the reader's JSON).
pub fn jsonl_rows(dir: &Path, name: &str) -> Vec<Value> {
    read_lines(dir, name)
        .iter()
        .map(|line| without_nulls(serde_json::from_str(line).unwrap()))
        .collect()
}

fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}
