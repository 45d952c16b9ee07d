//! `persona eval` through the real binary: the JSON has every field, and on
//! Online Retail persona beats the popularity baseline.

mod common;

use common::*;
use serde_json::Value;

fn eval(args: &[&str]) -> Value {
    let mut all = vec!["eval"];
    all.extend_from_slice(args);
    serde_json::from_str(&persona(&all)).expect("eval prints JSON")
}

#[test]
fn online_retail_recommendations_beat_popularity() {
    let input = shared_data("online_retail_all.csv.xz");
    let report = eval(&[
        "--input",
        input.to_str().unwrap(),
        "--format",
        "online-retail",
        "--k",
        "10",
        "--split-time",
        "2011-11-01",
    ]);
    assert_eq!(report["k"], 10);
    for model in ["persona", "popularity"] {
        for metric in ["precision", "recall", "ndcg", "map", "coverage"] {
            let value = report[model][metric]
                .as_f64()
                .unwrap_or_else(|| panic!("no {model}.{metric}: {report}"));
            assert!((0.0..=1.0).contains(&value), "{model}.{metric} = {value}");
        }
    }
    assert!(
        report["train_events"].as_u64().unwrap() > 300_000,
        "{report}"
    );
    assert!(report["test_users"].as_u64().unwrap() > 1000, "{report}");
    let (persona, popular) = (&report["persona"], &report["popularity"]);
    for metric in ["ndcg", "recall"] {
        let (p, b) = (
            persona[metric].as_f64().unwrap(),
            popular[metric].as_f64().unwrap(),
        );
        assert!(
            p > 1.3 * b,
            "persona {metric} {p} is not clearly above popularity {b}"
        );
    }
}

#[test]
fn split_by_fraction_on_otto_sessions() {
    let input = shared_data("otto_sample.jsonl");
    let report = eval(&[
        "--input",
        input.to_str().unwrap(),
        "--format",
        "otto",
        "--k",
        "5",
        "--split-fraction",
        "0.2",
    ]);
    assert_eq!(report["k"], 5);
    // Each of the 20 sessions keeps at least one event for training.
    assert!(report["test_users"].as_u64().unwrap() <= 20);
    assert!(report["persona"]["coverage"].as_f64().is_some());
}
