//! The online factorisation through the real binary: `[recommend.mf]
//! embeddings = true` gives each profile its `factors`, the same bytes for
//! 1, 2 and 4 workers and across runs.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

const EMBEDDINGS: &str = "[recommend.mf]\nembeddings = true\nfactors = 8\nseed = 5\n";

#[test]
fn factors_are_the_same_bytes_for_every_worker_count_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let (slice, _) = online_retail_slice(dir.path(), 30_000, &BTreeSet::new());
    let run = |workers: &str| {
        let flags = ["--format", "online-retail", "-w", workers, "--changelog"];
        replay_with_config(&slice, EMBEDDINGS, &flags).0
    };
    let one = run("1");
    for (label, other) in [
        ("2 workers", run("2")),
        ("4 workers", run("4")),
        ("again", run("1")),
    ] {
        for file in ["profiles.jsonl", "profiles.changes.jsonl"] {
            let read = |dir: &tempfile::TempDir| std::fs::read(dir.path().join(file)).unwrap();
            assert!(read(&one) == read(&other), "{file} differs: {label}");
        }
    }

    // Every buyer has 8 finite factors, distinct from every other buyer's; a
    // user with cancellations alone (weight 0 by default) taught the model
    // nothing and has none.
    let mut distinct = BTreeSet::new();
    let mut buyers = 0;
    for line in read_lines(one.path(), "profiles") {
        let profile: Value = serde_json::from_str(&line).unwrap();
        let Some(factors) = profile["factors"].as_array() else {
            assert!(profile["counts"]["purchase"].is_null(), "{profile}");
            continue;
        };
        buyers += 1;
        assert_eq!(factors.len(), 8, "{profile}");
        assert!(factors
            .iter()
            .all(|x| x.as_f64().is_some_and(f64::is_finite)));
        distinct.insert(profile["factors"].to_string());
    }
    assert!(buyers > 500, "{buyers} buyers");
    assert_eq!(distinct.len(), buyers);
}

#[test]
fn bad_factorisation_settings_fail_naming_the_key() {
    for (setting, expected) in [
        ("factors = 0", "mf.factors must be 1 to 1024"),
        ("embeddings = \"yes\"", "embeddings"),
    ] {
        let stderr = replay_refuses(&format!("[recommend.mf]\n{setting}\n"));
        assert!(stderr.contains(expected), "{setting}: {stderr}");
    }
}

/// `mf_weight = 0.5` ranks the blend of co-occurrence and the model trained
/// as events arrive: the same bytes for 1, 2 and 4 workers, per period and
/// at the end, and other lists than co-occurrence alone.
#[test]
fn blended_recommendations_are_the_same_bytes_for_every_worker_count() {
    let dir = tempfile::tempdir().unwrap();
    let (slice, _) = online_retail_slice(dir.path(), 30_000, &BTreeSet::new());
    let run = |config: &str, workers: &str| {
        let flags = ["--format", "online-retail", "-w", workers, "--changelog"];
        replay_with_config(&slice, config, &flags).0
    };
    let blend = "[recommend]\nmf_weight = 0.5\n[recommend.mf]\nfactors = 8\nseed = 5\n";
    let one = run(blend, "1");
    let read = |dir: &tempfile::TempDir, file: &str| std::fs::read(dir.path().join(file)).unwrap();
    for (label, other) in [
        ("2 workers", run(blend, "2")),
        ("4 workers", run(blend, "4")),
    ] {
        for file in ["recommendations.jsonl", "recommendations.changes.jsonl"] {
            assert!(
                read(&one, file) == read(&other, file),
                "{file} differs: {label}"
            );
        }
    }
    let cooccurrence = run("", "1");
    let lists = |dir: &tempfile::TempDir| -> std::collections::BTreeMap<String, Value> {
        read_lines(dir.path(), "recommendations")
            .iter()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .map(|list| (list["user"].to_string(), list["items"].clone()))
            .collect()
    };
    let (blended, plain) = (lists(&one), lists(&cooccurrence));
    assert!(blended.len() > 500, "{} lists", blended.len());
    let differ = blended
        .iter()
        .filter(|(user, items)| plain.get(*user) != Some(items))
        .count();
    assert!(
        differ > blended.len() / 2,
        "{differ} of {} differ",
        blended.len()
    );
    // Without embeddings the profiles carry no factors.
    assert!(read_lines(one.path(), "profiles")
        .iter()
        .all(|line| !line.contains("\"factors\"")));
}
