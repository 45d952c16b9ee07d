//! Hostile inputs through the real binary: every bad record becomes a
//! rejected record with its reason, counted in the summary; no number,
//! line or config value panics the run or is accepted silently.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::{json, Value};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn rejected_records(out: &Path) -> Vec<Value> {
    read_lines(out, "rejected")
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn oversize_lines_are_rejected_with_a_short_raw() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("UserBehavior.csv.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&log).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(b"1,100,7,pv,1511544070\n").unwrap();
    // 16 MiB of zeros in one line: 16 times the default limit.
    let zeros = vec![b'0'; 1 << 20];
    for _ in 0..16 {
        gz.write_all(&zeros).unwrap();
    }
    gz.write_all(b"\n2,200,8,buy,1511544080\n").unwrap();
    gz.finish().unwrap();

    let (out, summary) = replay(&log, "taobao", &[]);
    assert_eq!(summary["records_read"], 3, "{summary}");
    assert_eq!(summary["accepted"], 2, "{summary}");
    assert_eq!(summary["rejected"], json!({"record_too_large": 1}));
    let rejected = rejected_records(out.path());
    assert_eq!(rejected[0]["source"]["line"], 2);
    assert_eq!(rejected[0]["raw"].as_str().unwrap().len(), 4096);
    let size = std::fs::metadata(out.path().join("rejected.jsonl"))
        .unwrap()
        .len();
    assert!(size < 8192, "rejected.jsonl holds {size} bytes");
}

#[test]
fn overflowing_amounts_are_rejected_and_spend_stays_exact() {
    let dir = tempfile::tempdir().unwrap();
    let log = write(
        dir.path(),
        "retail.csv",
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n\
         536365,85123A,A,9223372036854775807,2010-12-01 08:26:00,2.00,17850.0,UK\n\
         536366,85123A,A,5000000000000000000,2010-12-01 08:27:00,0.01,17850.0,UK\n\
         536367,85123A,A,5000000000000000000,2010-12-01 08:28:00,0.01,17850.0,UK\n\
         536368,22633,B,6,2010-12-01 08:29:00,1e28,17850.0,UK\n\
         536369,22633,B,6,2010-12-01 08:30:00,1.85,17850.0,UK\n",
    );
    let (out, summary) = replay(&log, "online-retail", &[]);
    assert_eq!(summary["accepted"], 1, "{summary}");
    assert_eq!(summary["rejected"], json!({"amount_out_of_range": 4}));
    let profiles = records_by(out.path(), "profiles", "user");
    assert_eq!(profiles["17850"]["spend"], 1110, "{}", profiles["17850"]);
    assert_eq!(profiles["17850"]["quantity"], 6, "{}", profiles["17850"]);
}

#[test]
fn huge_times_and_ratings_are_rejected_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let taobao = write(
        dir.path(),
        "UserBehavior.csv",
        "1,100,7,pv,79228162514264337593543950335\n\
         1,100,7,pv,1511544070000\n\
         1,100,7,pv,1511544070\n",
    );
    let (_, summary) = replay(&taobao, "taobao", &[]);
    assert_eq!(summary["accepted"], 1, "{summary}");
    assert_eq!(summary["rejected"], json!({"time_unit_mismatch": 2}));

    let movielens = write(
        dir.path(),
        "u.data",
        "1\t10\t79228162514264337593543950335\t881250949\n\
         1\t20\t7.9e28\t881250949\n\
         1\t30\t4\t881250949\n",
    );
    let (out, summary) = replay(&movielens, "movielens", &[]);
    assert_eq!(summary["accepted"], 1, "{summary}");
    assert_eq!(summary["rejected"], json!({"rating_out_of_range": 2}));
    assert_eq!(rejected_records(out.path())[0]["source"]["line"], 1);
}

/// A MovieLens release is a folder of tables; the preset reads its ratings
/// file alone, and says which to pass rather than reject every line.
#[test]
fn a_movielens_folder_is_refused_naming_its_ratings_file() {
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("ml-latest-small");
    std::fs::create_dir(&release).unwrap();
    write(
        &release,
        "ratings.csv",
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n",
    );
    write(
        &release,
        "movies.csv",
        "movieId,title,genres\n1,Toy Story,Adventure\n",
    );
    let out = dir.path().join("out");
    let error = persona_fails(&[
        "replay",
        "--input",
        release.to_str().unwrap(),
        "--format",
        "movielens",
        "--out",
        out.to_str().unwrap(),
    ]);
    let ratings = release.join("ratings.csv");
    assert!(
        error.contains(&format!("pass --input {}", ratings.display())),
        "{error}"
    );
    assert!(!out.exists());
    let (_, summary) = replay(&ratings, "movielens", &[]);
    assert_eq!(summary["accepted"], 1, "{summary}");
}

#[test]
fn a_mixed_log_maps_quantity_and_empty_means_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = write(
        dir.path(),
        "mixed.csv",
        "user,item,action,ts,qty,price,order\n\
         1,10,view,1659304800000,,,\n\
         1,10,purchase,1659304800001,2,3.00,O1\n\
         1,20,purchase,1659304800002,,4.00,O2\n\
         1,10,purchase,1659304800003,,,C1\n",
    );
    let config = "[input.mapping]\nuser = \"user\"\nitem = \"item\"\naction = \"action\"\n\
                  time = \"ts\"\nquantity = \"qty\"\nprice = \"price\"\n\
                  cancellation = { field = \"order\", prefix = \"C\" }\n";
    let (out, summary) = replay_with_config(&log, config, &[]);
    assert_eq!(summary["accepted"], 3, "{summary}");
    // A cancellation must say how much it takes back.
    assert_eq!(summary["rejected"], json!({"invalid_quantity": 1}));
    let profiles = records_by(out.path(), "profiles", "user");
    assert_eq!(profiles["1"]["counts"], json!({"view": 1, "purchase": 2}));
    assert_eq!(profiles["1"]["quantity"], 3);
    assert_eq!(profiles["1"]["spend"], 1000);
}

/// The cancellation marker means a cancelled purchase whatever action the
/// row names: it becomes a `cancellation` record, never the retraction of
/// a record, so the dataflows only ever see inserted events.
#[test]
fn a_cancellation_marker_on_any_row_is_a_cancellation() {
    let dir = tempfile::tempdir().unwrap();
    let log = write(
        dir.path(),
        "marked.csv",
        "user,item,action,ts,qty,order\n\
         1,10,purchase,1659304800000,2,O1\n\
         1,10,view,1659304800005,1,C1\n",
    );
    let config = "[input.mapping]\nuser = \"user\"\nitem = \"item\"\naction = \"action\"\n\
                  time = \"ts\"\nquantity = \"qty\"\n\
                  cancellation = { field = \"order\", prefix = \"C\" }\n";
    let (out, summary) = replay_with_config(&log, config, &[]);
    assert_eq!(summary["accepted"], 2, "{summary}");
    let profiles = records_by(out.path(), "profiles", "user");
    assert_eq!(
        profiles["1"]["counts"],
        json!({"purchase": 1, "cancellation": 1})
    );
    assert_eq!(profiles["1"]["quantity"], 1);
    assert_eq!(profiles["1"]["last_seen"], 1659304800005_i64);
}

#[test]
fn control_ids_repeated_keys_time_units_and_rating_scales_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let log = write(
        dir.path(),
        "events.jsonl",
        concat!(
            r#"{"u":"17850","i":"A","a":"view","t":1659304800000}"#,
            "\n",
            r#"{"u":"17850\u0000","i":"A","a":"view","t":1659304800001}"#,
            "\n",
            r#"{"u":"17850","i":"A","a":"view","t":1659304800,"t":1659304800002}"#,
            "\n",
            r#"{"u":"17850","i":"A","a":"view","t":1659304800}"#,
            "\n",
            r#"{"u":"17850","i":"A","a":"rating","t":1659304800003,"r":7}"#,
            "\n",
            r#"{"u":"17850","i":"B","a":"rating","t":1659304800004,"r":4.5}"#,
            "\n",
        ),
    );
    let config = "[input]\nformat = \"jsonl\"\n[input.mapping]\nuser = \"u\"\nitem = \"i\"\n\
                  action = \"a\"\ntime = \"t\"\nrating = \"r\"\nrating_min = 0.5\nrating_max = 5.0\n";
    let (out, summary) = replay_with_config(&log, config, &[]);
    assert_eq!(summary["accepted"], 2, "{summary}");
    assert_eq!(summary["users"], 1, "{summary}");
    assert_eq!(
        summary["rejected"],
        json!({"invalid_id": 1, "invalid_json": 1, "time_unit_mismatch": 1, "rating_out_of_range": 1})
    );
    let rejected = rejected_records(out.path());
    let detail = |reason: &str| {
        rejected.iter().find(|r| r["reason"] == reason).unwrap()["detail"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        detail("invalid_json").contains(r#"duplicate key "t""#),
        "{}",
        detail("invalid_json")
    );
    assert!(detail("invalid_id").contains("U+0000"));
}

#[test]
fn a_subfolder_of_the_input_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.csv", "1,100,7,pv,1511544070\n");
    std::fs::create_dir(dir.path().join("2017-12")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let stderr = persona_fails(&[
        "replay",
        "--input",
        dir.path().to_str().unwrap(),
        "--format",
        "taobao",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(stderr.contains("2017-12"), "{stderr}");
}

#[test]
fn nonsense_config_values_fail_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let log = write(dir.path(), "UserBehavior.csv", "1,100,7,pv,1511544070\n");
    let out = dir.path().join("out");
    for (config, field) in [
        (
            "[recommend]\ndecay_half_life_days = 0.0\n",
            "decay_half_life_days",
        ),
        (
            "[recommend]\ndecay_half_life_days = nan\n",
            "decay_half_life_days",
        ),
        (
            "[catalog]\npath = \"catalog.csv\"\nprice_decimals = 64\n",
            "price_decimals",
        ),
        ("[recommend]\ntrend_weight = -1.0\n", "trend_weight"),
        ("[recommend]\nrepeat_weight = inf\n", "repeat_weight"),
        ("[recommend]\ntrend_days = 0\n", "trend_days"),
        (
            "[recommend]\nmode = \"repeat\"\nremove_seen = true\n",
            "contradicts mode",
        ),
        ("[recommend]\nmode = \"buy_again\"\n", "mode"),
        (
            "[recommend]\ndecay = false\ndecay_half_life_days = 30.0\n",
            "decay",
        ),
        (
            "[recommend]\nrankings = \"dataflow\"\ntrend_weight = 0.5\n",
            "trend_weight",
        ),
    ] {
        let config_path = write(dir.path(), "config.toml", config);
        let stderr = persona_fails(&[
            "replay",
            "--input",
            log.to_str().unwrap(),
            "--format",
            "taobao",
            "--config",
            config_path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(stderr.contains(field), "{config}: {stderr}");
    }
}

#[test]
fn mapped_raw_keeps_only_the_mapped_columns() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "output.toml", "[output]\nraw = \"mapped\"\n");
    let (out, summary) = replay(
        &fixture("retail_dirty.csv"),
        "online-retail",
        &["--config", config.to_str().unwrap()],
    );
    assert_eq!(summary["accepted"], 4, "{summary}");
    let rejected = rejected_records(out.path());
    assert_eq!(rejected.len(), 8);
    for record in &rejected {
        let raw = record["raw"].as_str().unwrap();
        // Description and Country are not mapped: they never show.
        assert!(
            !raw.contains("France") && !raw.contains("CLOCK"),
            "{record}"
        );
    }
    let non_product = rejected
        .iter()
        .find(|r| r["reason"] == "non_product")
        .unwrap();
    let raw: Value = serde_json::from_str(non_product["raw"].as_str().unwrap()).unwrap();
    assert_eq!(
        raw,
        json!({"CustomerID": "12583.0", "StockCode": "POST", "InvoiceDate": "2010-12-01 08:45:00",
               "UnitPrice": "18.0", "Quantity": "3", "InvoiceNo": "536368"})
    );
    // A record that does not split into columns shows nothing.
    let short = rejected
        .iter()
        .find(|r| r["reason"] == "column_count")
        .unwrap();
    assert_eq!(short["raw"], "");
}
