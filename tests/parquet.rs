//! `persona replay --output-format parquet`: the outputs as Parquet datasets
//! partitioned by user (item) bucket, read back with the `parquet` crate's
//! own reader and compared with the JSONL outputs of the same replay.

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::path::Path;

use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use arrow_schema::DataType;
use common::parquet::{dataset_rows, jsonl_rows};
use common::*;
use serde_json::Value;

/// The outputs and the field each is keyed (and partitioned) by.
const OUTPUTS: [(&str, &str); 4] = [
    ("profiles", "user"),
    ("similar_items", "item"),
    ("recommendations", "user"),
    ("item_feedback", "item"),
];

/// Replays `input` as JSONL and as Parquet with `buckets`; checks that
/// every dataset holds exactly the JSON lines, each row in its key's
/// partition, and that the summaries agree. Returns the Parquet folder.
fn assert_parquet_equals_jsonl(
    input: &Path,
    format: &str,
    extra: &[&str],
    buckets: u64,
) -> tempfile::TempDir {
    let (jsonl, jsonl_summary) = replay(input, format, extra);
    let buckets_flag = buckets.to_string();
    let mut parquet_flags = vec!["--output-format", "parquet", "--buckets", &buckets_flag];
    parquet_flags.extend_from_slice(extra);
    let (parquet, parquet_summary) = replay(input, format, &parquet_flags);
    for (name, key) in OUTPUTS {
        let mut expected = jsonl_rows(jsonl.path(), name);
        let mut got = dataset_rows(parquet.path(), name, key, buckets);
        let by_key = |a: &Value, b: &Value| a[key].as_str().cmp(&b[key].as_str());
        expected.sort_by(by_key);
        got.sort_by(by_key);
        assert_eq!(got.len(), expected.len(), "{name}: rows");
        for (got, expected) in got.iter().zip(&expected) {
            assert_eq!(got, expected, "{name}: a row differs");
        }
        assert!(!parquet.path().join(format!("{name}.jsonl")).exists());
        assert_eq!(
            parquet_summary["outputs"][format!("{name}/")],
            jsonl_summary["outputs"][format!("{name}.jsonl")],
            "{name}: the summary's count"
        );
    }
    assert_eq!(
        parquet_summary["users"], jsonl_summary["users"],
        "the summaries' users"
    );
    parquet
}

#[test]
fn parquet_datasets_hold_the_jsonl_records_partitioned_by_bucket() {
    // The whole Online Retail log: thousands of users over every bucket,
    // popular fallback lists, empty maps and lists, nulls.
    let parquet = assert_parquet_equals_jsonl(
        &shared_data("online_retail_all.csv.xz"),
        "online-retail",
        &[],
        16,
    );
    let partitions = std::fs::read_dir(parquet.path().join("profiles"))
        .unwrap()
        .count();
    assert_eq!(partitions, 16, "4,363 users fill every bucket");
}

#[test]
fn ratings_categories_and_attributes_survive_the_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("attributes.toml");
    std::fs::write(
        &config,
        format!(
            "[user_attributes]\npath = {:?}\n",
            fixture("user_attributes.csv")
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let movielens =
        assert_parquet_equals_jsonl(&fixture("u.data"), "movielens", &["--config", config], 3);
    let rows = dataset_rows(movielens.path(), "profiles", "user", 3);
    assert!(
        rows.iter()
            .any(|r| r["avg_rating"].is_f64() && r["attributes"]["region"].is_string()),
        "a rated profile with attributes: {rows:?}"
    );
    let taobao = assert_parquet_equals_jsonl(
        &fixture("UserBehavior.csv"),
        "taobao",
        &["--config", config],
        1,
    );
    let rows = dataset_rows(taobao.path(), "profiles", "user", 1);
    assert!(
        rows.iter().any(|r| r["top_categories"]
            .as_array()
            .is_some_and(|c| !c.is_empty())),
        "a profile with categories: {rows:?}"
    );
}

#[test]
fn nested_fields_are_parquet_maps_lists_and_structs() {
    let (out, _) = replay(
        &fixture("u.data"),
        "movielens",
        &["--output-format", "parquet", "--buckets", "1"],
    );
    let file = File::open(out.path().join("profiles/bucket=0/part-0.parquet")).unwrap();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let schema = builder.schema();
    let kind = |field: &str| schema.field_with_name(field).unwrap().data_type().clone();
    assert!(matches!(kind("counts"), DataType::Map(..)));
    assert!(matches!(kind("windows"), DataType::Map(..)));
    assert!(matches!(kind("attributes"), DataType::Map(..)));
    match kind("top_categories") {
        DataType::List(element) => assert!(
            matches!(element.data_type(), DataType::Struct(fields) if fields.len() == 2),
            "{element:?}"
        ),
        other => panic!("top_categories is {other:?}"),
    }
    assert_eq!(kind("first_seen"), DataType::Int64);
    // The feedback section: four counts and their windows.
    assert!(
        matches!(kind("feedback"), DataType::Struct(fields) if fields.len() == 5),
        "{:?}",
        kind("feedback")
    );
    // The risk section (with [risk]): as_of_ms, velocity, since_previous_ms,
    // purchase_after_idle_days, day.
    assert!(
        matches!(kind("risk"), DataType::Struct(fields) if fields.len() == 5),
        "{:?}",
        kind("risk")
    );
    // The k-means cluster (with [segments.kmeans]): id, distance.
    assert!(
        matches!(kind("cluster"), DataType::Struct(fields) if fields.len() == 2),
        "{:?}",
        kind("cluster")
    );
    // The factor vector (with [recommend.mf] embeddings).
    assert!(
        matches!(kind("factors"), DataType::List(element) if element.data_type() == &DataType::Float64),
        "{:?}",
        kind("factors")
    );
    let columns: BTreeSet<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(columns.len(), 19, "{columns:?}");
}

/// `persona replay` of the MovieLens fixture into `out`, with `extra` flags.
fn replay_into(out: &Path, extra: &[&str]) -> Result<String, String> {
    let input = fixture("u.data");
    let mut args = vec![
        "replay",
        "--input",
        input.to_str().unwrap(),
        "--format",
        "movielens",
    ];
    args.extend(["--out", out.to_str().unwrap()]);
    args.extend_from_slice(extra);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_persona"))
        .args(&args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    match output.status.success() {
        true => Ok(stderr),
        false => Err(stderr),
    }
}

#[test]
fn a_parquet_replay_replaces_the_jsonl_outputs_of_an_earlier_one_and_back() {
    let out = tempfile::tempdir().unwrap();
    let out = out.path();
    replay_into(out, &[]).unwrap();
    assert!(out.join("profiles.jsonl").exists());
    replay_into(out, &["--output-format", "parquet", "--buckets", "2"]).unwrap();
    assert!(!out.join("profiles.jsonl").exists(), "a stale jsonl stays");
    assert!(out.join("profiles").is_dir());
    replay_into(out, &[]).unwrap();
    assert!(!out.join("profiles").exists(), "a stale dataset stays");
    assert!(out.join("profiles.jsonl").exists());
}

#[test]
fn a_bucket_count_out_of_range_is_refused() {
    let out = tempfile::tempdir().unwrap();
    for buckets in ["0", "5000"] {
        let flags = ["--output-format", "parquet", "--buckets", buckets];
        let error = replay_into(out.path(), &flags).expect_err("replay succeeded");
        assert!(error.contains("--buckets"), "{error}");
    }
}
