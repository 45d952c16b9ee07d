//! The feedback loop through the real binary: how users answer what they
//! are shown reaches their profile and their next recommendations
//! (docs/recommendations.md, "The feedback loop").

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::{json, Value};

/// Users 1 and 2 viewed items A, B and C; user 3 viewed A, was shown C and
/// D, clicked the recommended C, and dismissed B.
const LOG: &str = r#"{"u":"1","i":"A","a":"view","t":1659304800000}
{"u":"1","i":"B","a":"view","t":1659304801000}
{"u":"1","i":"C","a":"view","t":1659304802000}
{"u":"2","i":"A","a":"view","t":1659304803000}
{"u":"2","i":"B","a":"view","t":1659304804000}
{"u":"2","i":"C","a":"view","t":1659304805000}
{"u":"3","i":"A","a":"view","t":1659304806000}
{"u":"3","i":"C","a":"impression","t":1659304807000}
{"u":"3","i":"D","a":"impression","t":1659304807000}
{"u":"3","i":"C","a":"rec_click","t":1659304808000}
{"u":"3","i":"B","a":"not_interested","t":1659304809000}
"#;

const CONFIG: &str = "[input]\nformat = \"jsonl\"\n[input.mapping]\nuser = \"u\"\nitem = \"i\"\n\
                      action = \"a\"\ntime = \"t\"\n";

#[test]
fn feedback_events_reach_the_profile_and_a_dismissed_item_leaves_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.jsonl");
    std::fs::write(&log, LOG).unwrap();
    let mut outputs = Vec::new();
    for workers in ["1", "2"] {
        let (out, summary) = replay_with_config(&log, CONFIG, &["-w", workers]);
        assert_eq!(summary["accepted"], 11, "{summary}");
        let profiles = records_by(out.path(), "profiles", "user");
        let feedback = &profiles["3"]["feedback"];
        let lifetime = json!({"impressions": 2, "rec_clicks": 1, "not_interested": 1, "ctr": 0.5});
        for (key, value) in lifetime.as_object().unwrap() {
            assert_eq!(&feedback[key], value, "{key} of {feedback}");
        }
        // Every event is of the same minute: each window holds them all.
        let windows = feedback["windows"].as_object().unwrap();
        assert!(!windows.is_empty(), "{feedback}");
        for window in windows.values() {
            assert_eq!(window, &lifetime, "{feedback}");
        }
        assert!(profiles["1"].get("feedback").is_none(), "{}", profiles["1"]);

        let recommendations = records_by(out.path(), "recommendations", "user");
        let items = |user: &str| -> Vec<String> {
            recommendations[user]["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["item"].as_str().unwrap().to_owned())
                .collect()
        };
        // B goes with A as much as C does; user 3 dismissed it.
        assert_eq!(items("3"), ["C"], "{}", recommendations["3"]);

        // Per item: C shown once and clicked, D shown once, B dismissed.
        let items = records_by(out.path(), "item_feedback", "item");
        assert_eq!(items.len(), 3, "{items:?}");
        let expected = [
            (
                "C",
                json!({"impressions": 1, "rec_clicks": 1, "not_interested": 0, "ctr": 1.0}),
            ),
            (
                "D",
                json!({"impressions": 1, "rec_clicks": 0, "not_interested": 0, "ctr": 0.0}),
            ),
            (
                "B",
                json!({"impressions": 0, "rec_clicks": 0, "not_interested": 1, "ctr": null}),
            ),
        ];
        for (item, counts) in expected {
            for (key, value) in counts.as_object().unwrap() {
                assert_eq!(&items[item][key], value, "{key} of {}", items[item]);
            }
            for window in items[item]["windows"].as_object().unwrap().values() {
                assert_eq!(window, &counts, "{}", items[item]);
            }
        }
        assert_eq!(summary["outputs"]["item_feedback.jsonl"], 3, "{summary}");
        let names = ["profiles", "recommendations", "item_feedback"];
        outputs.push(names.map(|name| read_lines(out.path(), name)));
    }
    assert_eq!(outputs[0], outputs[1], "1 and 2 workers");
}

#[test]
fn item_feedback_as_parquet_holds_the_jsonl_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.jsonl");
    std::fs::write(&log, LOG).unwrap();
    let (jsonl, _) = replay_with_config(&log, CONFIG, &[]);
    let flags = ["--output-format", "parquet", "--buckets", "2"];
    let (parquet, summary) = replay_with_config(&log, CONFIG, &flags);
    assert_eq!(summary["outputs"]["item_feedback/"], 3, "{summary}");
    let by_item = |rows: Vec<Value>| -> BTreeMap<String, Value> {
        rows.into_iter()
            .map(|row| (row["item"].as_str().unwrap().to_owned(), row))
            .collect()
    };
    let expected = by_item(parquet::jsonl_rows(jsonl.path(), "item_feedback"));
    let got = by_item(parquet::dataset_rows(
        parquet.path(),
        "item_feedback",
        "item",
        2,
    ));
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got, expected);
}
