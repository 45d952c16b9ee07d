//! K-means segments through the real binary: `[segments.kmeans]` gives each
//! profile a `cluster` and writes `segments.jsonl`, the same bytes for 1, 2
//! and 4 workers and across runs.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

const KMEANS: &str = "[segments.kmeans]\nk = 4\nrefit_days = 7\nseed = 3\n";

#[test]
fn segments_are_the_same_bytes_for_every_worker_count_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let (slice, _) = online_retail_slice(dir.path(), 60_000, &BTreeSet::new());
    let run = |workers: &str| {
        let flags = ["--format", "online-retail", "-w", workers, "--changelog"];
        replay_with_config(&slice, KMEANS, &flags).0
    };
    let one = run("1");
    let files = [
        "profiles.jsonl",
        "segments.jsonl",
        "profiles.changes.jsonl",
        "segments.changes.jsonl",
    ];
    for (label, other) in [
        ("2 workers", run("2")),
        ("4 workers", run("4")),
        ("again", run("1")),
    ] {
        for file in files {
            let read = |dir: &tempfile::TempDir| std::fs::read(dir.path().join(file)).unwrap();
            assert!(read(&one) == read(&other), "{file} differs: {label}");
        }
    }

    // Every profile has a cluster of the model; the sizes count the users
    // the model was fitted on.
    let segments: Vec<Value> = read_lines(one.path(), "segments")
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(segments.len(), 4);
    let sizes: u64 = segments.iter().map(|s| s["size"].as_u64().unwrap()).sum();
    assert_eq!(sizes, segments[0]["users"].as_u64().unwrap());
    for segment in &segments {
        let centroid = segment["centroid"].as_object().unwrap();
        let features: Vec<&str> = centroid.keys().map(String::as_str).collect();
        assert_eq!(features, ["recency", "frequency", "spend"]);
    }
    for line in read_lines(one.path(), "profiles") {
        let profile: Value = serde_json::from_str(&line).unwrap();
        let cluster = &profile["cluster"];
        assert!(cluster["id"].as_u64().unwrap() < 4, "{profile}");
        assert!(cluster["distance"].as_f64().unwrap() >= 0.0, "{profile}");
    }
    // The slice spans weeks, so the model was refitted more than once.
    let refits: BTreeSet<u64> = read_lines(one.path(), "segments.changes")
        .iter()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|change| change["diff"] == 1)
        .map(|change| change["time"].as_u64().unwrap())
        .collect();
    assert!(refits.len() >= 2, "{refits:?}");
}

#[test]
fn bad_kmeans_settings_fail_naming_the_key() {
    for (setting, expected) in [
        ("k = 0", "[segments.kmeans] k: must be 1 to 1000"),
        (
            "features = []",
            "[segments.kmeans] features: name at least one feature",
        ),
        ("features = [\"age\"]", "unknown variant `age`"),
        ("refit_days = 0", "[segments.kmeans] refit_days"),
    ] {
        let stderr = replay_refuses(&format!("[segments.kmeans]\n{setting}\n"));
        assert!(stderr.contains(expected), "{setting}: {stderr}");
    }
}
