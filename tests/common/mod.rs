//! Helpers shared by the integration tests: run the real binary in a temp
//! dir and read what it wrote.

#![allow(dead_code)]

pub mod kafka;
pub mod parquet;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// `[risk]` rules low enough that a slice of Online Retail raises alerts
/// of each, and cancellations retract some.
pub const LOW_RISK_RULES: &str = r#"
[risk]
[[risk.rules]]
name = "hour_spend"
feature = "velocity.3600.spend"
op = ">="
threshold = 20000
[[risk.rules]]
name = "unusual_day"
feature = "day.spend_z"
op = ">="
threshold = 3
min_history_days = 1
[[risk.rules]]
name = "many_items"
feature = "velocity.600.items"
op = ">"
threshold = 30
"#;

/// The sequence number of the newest checkpoint in `dir` (0 if none).
pub fn newest_checkpoint(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|name| {
            name.strip_prefix("manifest-")?
                .strip_suffix(".json")?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

/// Epoch ms of an Online Retail invoice date, London time.
pub fn london_ms(date: &str) -> i64 {
    let civil: jiff::civil::DateTime = date.replacen(' ', "T", 1).parse().unwrap();
    civil
        .in_tz("Europe/London")
        .unwrap()
        .timestamp()
        .as_millisecond()
}

/// Cents of an Online Retail unit price, by string arithmetic.
pub fn cents(price: &str) -> i64 {
    let (units, fraction) = price.split_once('.').unwrap_or((price, ""));
    let fraction = format!("{fraction:0<2}");
    assert!(fraction.len() == 2, "price {price} has sub-cent digits");
    units.parse::<i64>().unwrap() * 100 + fraction.parse::<i64>().unwrap()
}

/// A free port on the loopback interface.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The shipped data folder (`../shared/data` from the project root).
pub fn shared_data(file: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(file);
    assert!(
        path.exists(),
        "{} is missing: the tests read the shipped logs from ../shared/data beside the checkout",
        path.display()
    );
    path
}

pub fn fixture(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(file)
}

/// Runs `persona ARGS`, asserting success; returns stdout.
pub fn persona(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_persona"))
        .args(args)
        .output()
        .expect("run persona");
    assert!(
        output.status.success(),
        "persona {} failed: {}\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 stdout")
}

/// Runs `persona ARGS`, asserting failure; returns stderr.
/// `persona replay` of the dirty retail fixture with `config` (TOML text),
/// which must fail; returns stderr.
pub fn replay_refuses(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let input = fixture("retail_dirty.csv");
    persona_fails(&[
        "replay",
        "--input",
        input.to_str().unwrap(),
        "--format",
        "online-retail",
        "--config",
        path.to_str().unwrap(),
        "--out",
        dir.path().join("out").to_str().unwrap(),
    ])
}

pub fn persona_fails(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_persona"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "persona {} succeeded",
        args.join(" ")
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `persona replay` on `input` with `extra` flags into a fresh folder.
pub fn replay(input: &Path, format: &str, extra: &[&str]) -> (tempfile::TempDir, Value) {
    replay_with_flags(input, &[&["--format", format], extra].concat())
}

/// `persona replay --input INPUT --config CONFIG` (plus `extra`), the
/// config written from `config`, into a fresh folder.
pub fn replay_with_config(
    input: &Path,
    config: &str,
    extra: &[&str],
) -> (tempfile::TempDir, Value) {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, config).unwrap();
    let flags = [&["--config", config_path.to_str().unwrap()], extra].concat();
    replay_with_flags(input, &flags)
}

/// `persona replay --input INPUT --out OUT` plus `flags`, OUT a fresh
/// folder; returns it and its summary.
fn replay_with_flags(input: &Path, flags: &[&str]) -> (tempfile::TempDir, Value) {
    let out = tempfile::tempdir().expect("temp dir");
    let mut args = vec![
        "replay",
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ];
    args.extend_from_slice(flags);
    persona(&args);
    let summary = read_json(&out.path().join("summary.json"));
    (out, summary)
}

pub fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// The lines of an output: the file `NAME.jsonl`, or the union of the parts
/// in the folder `NAME/`, sorted.
pub fn read_lines(dir: &Path, name: &str) -> Vec<String> {
    let file = dir.join(format!("{name}.jsonl"));
    let mut lines: Vec<String> = if file.exists() {
        std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    } else {
        let mut lines = Vec::new();
        for part in std::fs::read_dir(dir.join(name)).unwrap() {
            let text = std::fs::read_to_string(part.unwrap().path()).unwrap();
            lines.extend(text.lines().map(String::from));
        }
        lines
    };
    lines.sort();
    lines
}

/// The JSON records of an output, keyed by `key` (e.g. "user").
pub fn records_by(dir: &Path, name: &str, key: &str) -> std::collections::BTreeMap<String, Value> {
    read_lines(dir, name)
        .iter()
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap();
            (value[key].as_str().expect("string key").to_owned(), value)
        })
        .collect()
}

/// Checks `records_read = accepted + duplicates + late + forgotten + Σ rejected`.
pub fn assert_balances(summary: &Value) {
    let n = |key: &str| {
        summary[key]
            .as_u64()
            .unwrap_or_else(|| panic!("summary has no {key}: {summary}"))
    };
    let rejected: u64 = summary["rejected"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        n("records_read"),
        n("accepted") + n("duplicates") + n("late") + n("forgotten") + rejected,
        "summary does not balance: {summary}"
    );
}

/// A summary without the fields that depend on the machine or the run.
pub fn deterministic_part(summary: &Value) -> Value {
    let mut summary = summary.clone();
    let object = summary.as_object_mut().unwrap();
    for key in ["elapsed_s", "events_per_s", "peak_rss_bytes", "workers"] {
        assert!(object.remove(key).is_some(), "summary has no {key}");
    }
    summary
}

/// The strings of a JSON value (object keys too), at any depth, and of
/// the JSON held in its strings (a dead letter's `raw`): where an id can
/// be. Numbers (line numbers, prices) are not ids.
pub fn strings_of(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(inner @ (Value::Object(_) | Value::Array(_))) => strings_of(&inner, out),
            _ => out.push(text.clone()),
        },
        Value::Array(values) => values.iter().for_each(|v| strings_of(v, out)),
        Value::Object(object) => {
            for (key, field) in object {
                out.push(key.clone());
                strings_of(field, out);
            }
        }
        _ => {}
    }
}

/// The ids of `ids` that occur as whole words of the strings of `text`
/// (JSON, or JSON lines, or plain text): runs of letters, digits and points,
/// a final point or `.0` dropped (Online Retail writes `17850.0`), so
/// that a customer number inside a hex pseudonym or a price does not count.
pub fn raw_ids_in<'a>(text: &str, ids: &'a BTreeSet<String>) -> BTreeSet<&'a str> {
    let mut strings = Vec::new();
    match serde_json::from_str::<Value>(text) {
        Ok(value) => strings_of(&value, &mut strings),
        Err(_) => {
            for line in text.lines() {
                match serde_json::from_str::<Value>(line) {
                    Ok(value) => strings_of(&value, &mut strings),
                    Err(_) => strings.push(line.to_owned()),
                }
            }
        }
    }
    strings
        .iter()
        .flat_map(|text| text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.')))
        .map(|word| word.trim_end_matches('.'))
        .filter_map(|word| {
            let word = word.strip_suffix(".0").unwrap_or(word);
            ids.get(word).map(String::as_str)
        })
        .take(10)
        .collect()
}

/// The first `lines` data lines of the shipped Online Retail log, header
/// kept, and the same lines without the records of `users`.
pub fn online_retail_slice(
    dir: &Path,
    lines: usize,
    users: &BTreeSet<String>,
) -> (PathBuf, PathBuf) {
    let log = shared_data("online_retail_all.csv.xz");
    let reader = persona::source::file::open(&log, std::sync::Arc::default()).unwrap();
    let mut csv = csv::ReaderBuilder::new().from_reader(reader);
    let (all, without) = (dir.join("slice.csv"), dir.join("without.csv"));
    let mut writers = [
        csv::Writer::from_path(&all).unwrap(),
        csv::Writer::from_path(&without).unwrap(),
    ];
    let header = csv.headers().unwrap().clone();
    let user_column = header.iter().position(|c| c == "CustomerID").unwrap();
    for writer in &mut writers {
        writer.write_record(&header).unwrap();
    }
    for record in csv.byte_records().take(lines) {
        let record = record.unwrap();
        writers[0].write_byte_record(&record).unwrap();
        let user = String::from_utf8_lossy(&record[user_column]);
        if !users.contains(user.trim().trim_end_matches(".0")) {
            writers[1].write_byte_record(&record).unwrap();
        }
    }
    for writer in &mut writers {
        writer.flush().unwrap();
    }
    (all, without)
}
