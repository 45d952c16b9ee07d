//! The outputs as Parquet datasets: `DIR/NAME/bucket=B/part-0.parquet`,
//! partitioned hive-style by a hash bucket of each record's key (the user
//! of a profile or recommendation list, the item of a similar-items list),
//! so that every record of one user is in one partition. Nested fields are
//! Parquet maps, lists and structs.
//!
//! The rows are the JSON lines' fields decoded into each output's declared
//! schema ([`schema`]), so the two formats hold the same values, and the
//! schema does not depend on the data (a column is there, possibly empty,
//! whatever the log holds).

use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_json::reader::ReaderBuilder;
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use persona_dataflows::Id;
use serde_json::Value;

use crate::config::Output;

/// The bucket of a record keyed by `key` (a user or item id: the stable
/// XXH3 hash of the id as the source writes it, see [`crate::ids`]).
pub fn bucket(key: Id, buckets: u32) -> u32 {
    (key % u64::from(buckets)) as u32
}

/// The partition folder of `bucket`: `bucket=B`, as Hive and Spark write
/// it, so that readers type the column as an integer.
pub fn partition(bucket: u32) -> String {
    format!("bucket={bucket}")
}

/// The schema of `output`'s rows.
pub fn schema(output: Output) -> SchemaRef {
    let fields = match output {
        Output::Profiles => {
            let counts = map(DataType::Int64);
            vec![
                Field::new("user", DataType::Utf8, false),
                Field::new("counts", counts.clone(), false),
                Field::new("windows", map(counts), false),
                Field::new("quantity", DataType::Int64, false),
                Field::new("spend", DataType::Int64, false),
                Field::new("distinct_items", DataType::Int64, false),
                Field::new("distinct_categories", DataType::Int64, false),
                Field::new("first_seen", DataType::Int64, true),
                Field::new("last_seen", DataType::Int64, true),
                Field::new("last_purchase", DataType::Int64, true),
                Field::new("avg_rating", DataType::Float64, true),
                Field::new("ratings", DataType::Int64, false),
                Field::new("top_categories", scored("category", "affinity"), false),
                Field::new("segment", DataType::Utf8, false),
                Field::new("attributes", map(DataType::Utf8), false),
                // Absent from a JSON line for a user without feedback events.
                Field::new("feedback", feedback(), true),
                // Absent without `[risk]`.
                Field::new("risk", risk(), true),
                // Absent without `[segments.kmeans]`.
                Field::new("cluster", cluster(), true),
                // Absent without `[recommend.mf] embeddings`.
                Field::new("factors", factors(), true),
            ]
        }
        Output::SimilarItems => vec![
            Field::new("item", DataType::Utf8, false),
            Field::new("neighbors", scored("item", "similarity"), false),
        ],
        Output::Recommendations => vec![
            Field::new("user", DataType::Utf8, false),
            Field::new("items", scored("item", "score"), false),
            // Absent from a JSON line unless the list is the popular fallback.
            Field::new("popular", DataType::Boolean, true),
        ],
        Output::Alerts => vec![
            Field::new("user", DataType::Utf8, false),
            Field::new("rule", DataType::Utf8, false),
            Field::new("feature", DataType::Utf8, false),
            Field::new("op", DataType::Utf8, false),
            Field::new("threshold", DataType::Float64, false),
            Field::new("value", DataType::Float64, false),
            Field::new("active_days", DataType::Int64, false),
            Field::new("time_ms", DataType::Int64, false),
        ],
        Output::Segments => vec![
            Field::new("cluster", DataType::Int64, false),
            Field::new("size", DataType::Int64, false),
            Field::new("centroid", map(DataType::Float64), false),
            Field::new("mean", map(DataType::Float64), false),
            Field::new("scale", map(DataType::Float64), false),
            Field::new("users", DataType::Int64, false),
            Field::new("inertia", DataType::Float64, false),
            Field::new("iterations", DataType::Int64, false),
        ],
        Output::ItemFeedback => {
            let mut fields = vec![Field::new("item", DataType::Utf8, false)];
            let DataType::Struct(counts) = feedback() else {
                unreachable!("the feedback section is a struct")
            };
            fields.extend(counts.iter().map(|field| field.as_ref().clone()));
            fields
        }
    };
    Arc::new(Schema::new(fields))
}

/// A map from strings to `values`.
fn map(values: DataType) -> DataType {
    let entries = Fields::from(vec![
        Field::new("keys", DataType::Utf8, false),
        Field::new("values", values, true),
    ]);
    DataType::Map(
        Arc::new(Field::new("entries", DataType::Struct(entries), false)),
        false,
    )
}

/// A profile's `feedback` section: its counts, and the same per window.
fn feedback() -> DataType {
    let counts = Fields::from(vec![
        Field::new("impressions", DataType::Int64, false),
        Field::new("rec_clicks", DataType::Int64, false),
        Field::new("not_interested", DataType::Int64, false),
        Field::new("ctr", DataType::Float64, true),
    ]);
    let mut lifetime = counts.to_vec();
    lifetime.push(Arc::new(Field::new(
        "windows",
        map(DataType::Struct(counts)),
        false,
    )));
    DataType::Struct(Fields::from(lifetime))
}

/// A profile's `risk` section (see `render::risk_section`).
fn risk() -> DataType {
    let int = |name: &str| Field::new(name, DataType::Int64, false);
    let float = |name: &str| Field::new(name, DataType::Float64, true);
    let velocity = Fields::from(
        ["events", "purchases", "spend", "items", "sessions"]
            .into_iter()
            .map(int)
            .collect::<Vec<_>>(),
    );
    let day = Fields::from(vec![
        int("day"),
        int("spend"),
        int("events"),
        int("active_days"),
        int("max_spend_before"),
        float("spend_z"),
        float("events_z"),
        float("spend_over_max"),
    ]);
    DataType::Struct(Fields::from(vec![
        int("as_of_ms"),
        Field::new("velocity", map(DataType::Struct(velocity)), false),
        Field::new("since_previous_ms", DataType::Int64, true),
        float("purchase_after_idle_days"),
        Field::new("day", DataType::Struct(day), false),
    ]))
}

/// A profile's k-means cluster.
fn cluster() -> DataType {
    DataType::Struct(Fields::from(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("distance", DataType::Float64, false),
    ]))
}

/// A profile's factor vector (a value that is not finite is null).
fn factors() -> DataType {
    DataType::List(Arc::new(Field::new("element", DataType::Float64, true)))
}

/// A ranked list of `{name: string, score: double}`.
fn scored(name: &str, score: &str) -> DataType {
    let entry = Fields::from(vec![
        Field::new(name, DataType::Utf8, false),
        Field::new(score, DataType::Float64, false),
    ]);
    DataType::List(Arc::new(Field::new(
        "element",
        DataType::Struct(entry),
        false,
    )))
}

/// Writes `rows` (each a record's key and JSON line) as the dataset
/// `dir/NAME`, replacing what an earlier run left there; returns the rows
/// written. Empty buckets have no folder, except bucket 0 of an empty
/// output, which holds one file of no rows.
pub fn write_dataset(
    dir: &Path,
    output: Output,
    rows: impl IntoIterator<Item = (Id, Value)>,
    buckets: u32,
) -> io::Result<usize> {
    let root = dir.join(output.name());
    match fs::remove_dir_all(&root) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let mut partitions: Vec<Vec<Value>> = vec![Vec::new(); buckets as usize];
    let mut written = 0;
    for (key, row) in rows {
        partitions[bucket(key, buckets) as usize].push(row);
        written += 1;
    }
    let schema = schema(output);
    for (index, rows) in partitions.iter().enumerate() {
        // An empty output is one empty file, so that readers find its columns.
        if rows.is_empty() && (written > 0 || index > 0) {
            continue;
        }
        let folder = root.join(partition(index as u32));
        fs::create_dir_all(&folder)?;
        let batch = decode(&schema, rows)
            .map_err(|error| io::Error::other(format!("{}: {error}", output.name())))?;
        fs::write(folder.join("part-0.parquet"), encode(&batch)?)?;
    }
    Ok(written)
}

/// The JSON rows as one record batch of `schema`.
fn decode(schema: &SchemaRef, rows: &[Value]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let mut decoder = ReaderBuilder::new(schema.clone()).build_decoder()?;
    decoder.serialize(rows)?;
    Ok(decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(schema.clone())))
}

/// Encodes `batch` as one Parquet file, compressed with zstd.
pub fn encode(batch: &RecordBatch) -> io::Result<Vec<u8>> {
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut writer = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(properties))
        .map_err(io::Error::other)?;
    writer.write(batch).map_err(io::Error::other)?;
    writer.into_inner().map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::NumericNames;
    use crate::sink::OutputRecord;
    use persona_dataflows::kmeans::{fit, Feature, KMeansConfig};

    #[test]
    fn a_segments_line_decodes_into_its_schema() {
        let config = KMeansConfig {
            k: 2,
            features: vec![Feature::Frequency, Feature::Spend],
            ..KMeansConfig::default()
        };
        let model = Arc::new(fit(&[vec![1.0, 2.0], vec![3.0, 5.0]], &config).unwrap());
        let rows: Vec<serde_json::Value> = (0..2)
            .map(|cluster| (cluster, model.clone()).to_json(&NumericNames))
            .collect();
        let batch = decode(&schema(Output::Segments), &rows).unwrap();
        assert_eq!((batch.num_rows(), batch.num_columns()), (2, 8));
        assert!(!encode(&batch).unwrap().is_empty());
    }

    #[test]
    fn a_key_is_in_one_bucket_below_the_count() {
        assert_eq!(partition(bucket(35, 16)), "bucket=3");
        assert_eq!(bucket(u64::MAX, 4096), 4095);
        assert_eq!(bucket(u64::MAX, 1), 0);
    }

    #[test]
    fn a_json_line_decodes_into_its_schema() {
        let row = serde_json::json!({
            "user": "17",
            "counts": {"purchase": 2, "view": 5},
            "windows": {"7d": {"purchase": 1}, "30d": {}},
            "quantity": 3, "spend": 1250, "distinct_items": 4, "distinct_categories": 2,
            "first_seen": 1000, "last_seen": 2000, "last_purchase": null,
            "avg_rating": 3.5, "ratings": 2,
            "top_categories": [{"category": "9", "affinity": 1.5}],
            "segment": "new", "attributes": {"country": "FR"},
        });
        let mut with_feedback = row.clone();
        with_feedback["feedback"] = serde_json::json!({
            "impressions": 8, "rec_clicks": 2, "not_interested": 1, "ctr": 0.25,
            "windows": {"7d": {"impressions": 0, "rec_clicks": 0, "not_interested": 0, "ctr": null}},
        });
        let mut with_risk = row.clone();
        with_risk["risk"] = serde_json::json!({
            "as_of_ms": 2000,
            "velocity": {"60": {"events": 2, "purchases": 1, "spend": 500, "items": 2, "sessions": 1}},
            "since_previous_ms": 1000, "purchase_after_idle_days": null,
            "day": {"day": 0, "spend": 500, "events": 2, "active_days": 0, "max_spend_before": 0,
                    "spend_z": null, "events_z": null, "spend_over_max": null},
        });
        let mut with_cluster = row.clone();
        with_cluster["cluster"] = serde_json::json!({"id": 2, "distance": 0.5});
        let mut with_factors = row.clone();
        with_factors["factors"] = serde_json::json!([0.25, -1.5, null]);
        let rows = [row, with_feedback, with_risk, with_cluster, with_factors];
        let batch = decode(&schema(Output::Profiles), &rows).unwrap();
        assert_eq!((batch.num_rows(), batch.num_columns()), (5, 19));
        let feedback = batch.column_by_name("feedback").unwrap();
        assert_eq!(feedback.null_count(), 4, "no section, no feedback");
        let risk = batch.column_by_name("risk").unwrap();
        assert_eq!(risk.null_count(), 4, "no [risk], no section");
        let cluster = batch.column_by_name("cluster").unwrap();
        assert_eq!(cluster.null_count(), 4, "no [segments.kmeans], no cluster");
        let factors = batch.column_by_name("factors").unwrap();
        assert_eq!(
            factors.null_count(),
            4,
            "no [recommend.mf] embeddings, no factors"
        );
        assert!(!encode(&batch).unwrap().is_empty());
    }

    #[test]
    fn a_line_missing_a_required_field_is_an_error() {
        let row = serde_json::json!({"item": "A"});
        assert!(decode(&schema(Output::SimilarItems), &[row]).is_err());
    }
}
