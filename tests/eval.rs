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

/// `persona eval` of Online Retail split at 2011-11-01, with `extra` flags.
fn eval_online_retail(extra: &[&str]) -> Value {
    let input = shared_data("online_retail_all.csv.xz");
    let mut args = vec![
        "--input",
        input.to_str().unwrap(),
        "--format",
        "online-retail",
    ];
    args.extend(["--split-time", "2011-11-01"]);
    args.extend_from_slice(extra);
    eval(&args)
}

#[test]
fn online_retail_recommendations_beat_popularity() {
    let report = eval_online_retail(&["--k", "10"]);
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

#[test]
fn eval_shows_sar_hit_rate_and_mrr_in_both_modes() {
    let discovery = eval_online_retail(&["--mode", "discovery"]);
    let repeat = eval_online_retail(&["--mode", "repeat"]);
    assert_eq!(discovery["mode"], "discovery");
    assert_eq!(repeat["mode"], "repeat");
    for report in [&discovery, &repeat] {
        for model in ["persona", "sar", "popularity"] {
            for metric in ["hit_rate", "mrr", "ndcg"] {
                let value = report[model][metric].as_f64().unwrap();
                assert!((0.0..=1.0).contains(&value), "{model}.{metric} = {value}");
            }
            // A hit in the top k is at least as likely as a hit at rank 1.
            assert!(report[model]["hit_rate"].as_f64() >= report[model]["mrr"].as_f64());
        }
    }
}

/// Writes Online Retail's rows from September 2011 on, with the rows of the
/// test part (from November) poisoned when asked: each test row's customer
/// and stock code are those of another test row.
fn online_retail_slice(path: &std::path::Path, poison: bool) {
    use std::io::Read;
    let mut text = String::new();
    liblzma::read::XzDecoder::new(
        std::fs::File::open(shared_data("online_retail_all.csv.xz")).unwrap(),
    )
    .read_to_string(&mut text)
    .unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = reader
        .records()
        .map(Result::unwrap)
        .filter(|row| &row[4] >= "2011-09-01")
        .collect();
    let test: Vec<usize> = (0..rows.len())
        .filter(|&i| &rows[i][4] >= "2011-11-01")
        .collect();
    let mut writer = csv::Writer::from_path(path).unwrap();
    writer.write_record(&header).unwrap();
    for (index, row) in rows.iter().enumerate() {
        let mut row: Vec<String> = row.iter().map(str::to_owned).collect();
        if poison && &row[4][..] >= "2011-11-01" {
            let position = test.iter().position(|&i| i == index).unwrap();
            let other = &rows[test[(position * 7919 + 13) % test.len()]];
            row[1] = other[1].to_owned();
            row[6] = other[6].to_owned();
        }
        writer.write_record(&row).unwrap();
    }
    writer.flush().unwrap();
}

#[test]
fn tune_never_reads_the_test_part() {
    let dir = tempfile::tempdir().unwrap();
    let tune = |poison: bool| {
        let input = dir.path().join(format!("retail-{poison}.csv"));
        online_retail_slice(&input, poison);
        let out = dir.path().join(format!("best-{poison}.toml"));
        let report: Value = serde_json::from_str(&persona(&[
            "tune",
            "--input",
            input.to_str().unwrap(),
            "--format",
            "online-retail",
            "--split-time",
            "2011-11-01",
            "--out",
            out.to_str().unwrap(),
        ]))
        .unwrap();
        (report, std::fs::read_to_string(out).unwrap())
    };
    let (clean, clean_toml) = tune(false);
    let (poisoned, poisoned_toml) = tune(true);
    let trials = clean["trials"].as_array().unwrap();
    assert!(trials.len() > 10, "{clean}");
    // Every config tried, its validation scores and the choice are the
    // same whatever the test part holds...
    assert_eq!(clean["trials"], poisoned["trials"]);
    assert_eq!(clean["best"], poisoned["best"]);
    assert_eq!(clean_toml, poisoned_toml);
    // ...which the final score does read.
    assert_ne!(clean["test"], poisoned["test"]);
    // The best is the best of the trials, and its TOML reads back as a
    // config that eval takes.
    let best = clean["best"]["validation"]["ndcg"].as_f64().unwrap();
    assert!(trials
        .iter()
        .all(|trial| trial["validation"]["ndcg"].as_f64().unwrap() <= best));
    let config = dir.path().join("best-false.toml");
    let input = dir.path().join("retail-false.csv");
    let report = eval(&[
        "--input",
        input.to_str().unwrap(),
        "--format",
        "online-retail",
        "--config",
        config.to_str().unwrap(),
        "--split-time",
        "2011-11-01",
    ]);
    assert_eq!(report["persona"], clean["test"], "{report}");
}

/// `--model mf` and `--model blend` on Online Retail: the factorisation
/// learns (its loss well under chance), beats popularity alone, and the
/// report is the same bits with 1 and 2 workers.
#[test]
fn the_factorisation_learns_and_replays_identically() {
    let eval_with =
        |model: &str, workers: &str| eval_online_retail(&["--model", model, "-w", workers]);
    let mf = eval_with("mf", "1");
    assert_eq!(mf["model"], "mf", "{mf}");
    let loss = mf["mf_training"]["mean_loss"].as_f64().unwrap();
    assert!(loss < 0.5 * std::f64::consts::LN_2, "{mf}");
    let ndcg = |report: &Value, row: &str| report[row]["ndcg"].as_f64().unwrap();
    assert!(ndcg(&mf, "persona") > 1.3 * ndcg(&mf, "popularity"), "{mf}");
    assert_eq!(mf, eval_with("mf", "2"));

    let blend = eval_with("blend", "2");
    assert_eq!(blend["model"], "blend", "{blend}");
    assert_eq!(blend["mf_training"], mf["mf_training"]);
    assert_ne!(blend["persona"], mf["persona"]);
    assert!(ndcg(&blend, "persona") > 1.3 * ndcg(&blend, "popularity"));
    let cf = eval_with("cf", "1");
    assert_eq!(cf["model"], "cf");
    assert!(cf["mf_training"].is_null(), "{cf}");
}

/// A blend is ranked on demand: the dataflow's rankings refuse it, naming
/// the setting; a bad `[recommend.mf]` value is named.
#[test]
fn a_blend_needs_on_demand_rankings() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("blend.toml");
    let out = dir.path().join("out");
    let fails = |table: &str, command: &[&str]| {
        std::fs::write(&config, table).unwrap();
        let input = fixture("retail_dirty.csv");
        let mut args = command.to_vec();
        args.extend([
            "--input",
            input.to_str().unwrap(),
            "--format",
            "online-retail",
        ]);
        args.extend(["--config", config.to_str().unwrap()]);
        persona_fails(&args)
    };
    let replay = ["replay", "--out", out.to_str().unwrap()];
    let dataflow = "[recommend]\nmf_weight = 0.5\nrankings = \"dataflow\"\n";
    let error = fails(dataflow, &replay);
    assert!(
        error.contains("mf_weight is ranked on demand only"),
        "{error}"
    );
    let eval = ["eval", "--split-fraction", "0.2"];
    let error = fails("[recommend.mf]\nfactors = 0\n", &eval);
    assert!(error.contains("mf.factors"), "{error}");
}
