//! Kafka building blocks against a real broker: `produce` loads logs into
//! topics, the source reads every line back exactly once with its position
//! and key, committed offsets are where a restarted consumer resumes, and the
//! upsert sink leaves the latest value (or a tombstone) per key. And
//! `persona run` on a topic ends in the state of the file replay: after a
//! clean run, a SIGTERM and restart, and a broker restart.
//!
//! The broker address comes from `PERSONA_KAFKA_BROKERS`, else from
//! `scripts/kafka-broker.sh status`; without a reachable broker every test
//! fails and says to run `scripts/kafka-broker.sh start`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::kafka::*;
use common::parquet::{dataset_rows, jsonl_rows};
use common::{
    assert_balances, deterministic_part, free_port, newest_checkpoint, online_retail_slice,
    persona, raw_ids_in, read_json, read_lines, records_by, replay, replay_with_config,
    LOW_RISK_RULES,
};

use persona::config::PipelineConfig;
use persona::format::preset::preset;
use persona::format::Decoder;
use persona::rejected::Position;
use persona::runtime::produce::{produce, ProduceSummary};
use persona::sink::kafka::{latest_per_key, upserts, KafkaSink, KafkaSinkConfig};
use persona::source::file::{open, Lines};
use persona::source::kafka::{KafkaRecord, KafkaSource, KafkaSourceConfig, Offsets, ResumeFrom};
use serde_json::{json, Value};

fn online_retail() -> PipelineConfig {
    preset("online-retail", None).unwrap()
}

/// The (key, payload) of every message `produce` should write for a file:
/// non-blank data lines, keyed by user or else by line number.
fn expected_messages(path: &Path, config: &PipelineConfig) -> Vec<(String, Vec<u8>)> {
    let mut decoder = Decoder::new(config).unwrap();
    let mut lines = Lines::new(path, open(path, Arc::default()).unwrap());
    let position = |line| Position::File {
        file: path.display().to_string(),
        line,
        index: None,
    };
    if decoder.expects_header() {
        let (line, header) = lines.next_line().unwrap().unwrap();
        decoder.read_header(header, &position(line)).unwrap();
    }
    let mut expected = Vec::new();
    let mut outcomes = Vec::new();
    while let Some((line, bytes)) = lines.next_line().unwrap() {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        decoder.decode(bytes, &position(line), &mut outcomes);
        let key = outcomes
            .drain(..)
            .find_map(|o| o.ok().map(|d| d.user_name))
            .unwrap_or_else(|| line.to_string());
        expected.push((key, bytes.to_vec()));
    }
    expected
}

fn source_config(brokers: &str, topic: &str, group: &str) -> KafkaSourceConfig {
    KafkaSourceConfig {
        brokers: brokers.to_owned(),
        topics: vec![topic.to_owned()],
        group_id: group.to_owned(),
        resume_from: ResumeFrom::Committed,
        ..KafkaSourceConfig::default()
    }
}

/// Polls the sources round-robin until `count` records arrived (or fails
/// after `timeout`); returns each source's records.
fn read_records(
    sources: &mut [KafkaSource],
    count: usize,
    timeout: Duration,
) -> Vec<Vec<KafkaRecord>> {
    let started = Instant::now();
    let mut records: Vec<Vec<KafkaRecord>> = sources.iter().map(|_| Vec::new()).collect();
    while records.iter().map(Vec::len).sum::<usize>() < count {
        assert!(
            started.elapsed() < timeout,
            "read {} of {count} records in {timeout:?}",
            records.iter().map(Vec::len).sum::<usize>()
        );
        let mut polled = 0;
        for (source, out) in sources.iter_mut().zip(&mut records) {
            polled += source.poll_batch(1000, out).unwrap();
        }
        if polled == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    records
}

fn partition_offset(record: &KafkaRecord) -> (i32, i64) {
    match &record.position {
        Position::Kafka {
            partition, offset, ..
        } => (*partition, *offset),
        other => panic!("a Kafka record at {other}"),
    }
}

/// Asserts the records are exactly the expected messages: each once, keyed
/// as expected, at dense offsets from 0 in each partition, and each key's
/// lines in file order.
fn assert_exactly_once(topic: &str, records: &[KafkaRecord], expected: &[(String, Vec<u8>)]) {
    assert_eq!(
        records.len(),
        expected.len(),
        "records read vs lines produced"
    );
    let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for record in records {
        match &record.position {
            Position::Kafka { topic: t, .. } => assert_eq!(t, topic),
            other => panic!("record at {other}"),
        }
        let (partition, offset) = partition_offset(record);
        by_partition.entry(partition).or_default().push(offset);
    }
    for (partition, offsets) in &by_partition {
        let dense: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(offsets, &dense, "offsets of partition {partition}");
    }
    // Per key, the payloads in partition order equal the file's lines of
    // that key in file order; together they are every line once.
    let mut sorted: Vec<&KafkaRecord> = records.iter().collect();
    sorted.sort_by_key(|r| partition_offset(r));
    let mut read: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    let mut partition_of_key: BTreeMap<String, i32> = BTreeMap::new();
    for record in sorted {
        let key = String::from_utf8(record.key.clone().expect("a key")).unwrap();
        let partition = partition_offset(record).0;
        assert_eq!(
            *partition_of_key.entry(key.clone()).or_insert(partition),
            partition,
            "key {key} in two partitions"
        );
        read.entry(key).or_default().push(record.payload.clone());
    }
    let mut wanted: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for (key, line) in expected {
        wanted.entry(key.clone()).or_default().push(line.clone());
    }
    assert_eq!(read, wanted, "messages per key");
}

fn produce_file(path: &Path, brokers: &str, topic: &str) -> ProduceSummary {
    produce(path, &online_retail(), brokers, topic, &BTreeMap::new()).unwrap()
}

#[test]
fn the_dirty_fixture_is_produced_and_read_back_exactly_once() {
    let brokers = brokers();
    let topic = unique("fixture");
    let path = root().join("tests/fixtures/retail_dirty.csv");
    let expected = expected_messages(&path, &online_retail());
    let summary = produce_file(&path, &brokers, &topic);
    assert!(summary.created_topic);
    assert_eq!(summary.messages as usize, expected.len());
    assert_eq!(
        summary.keyed_by_user + summary.keyed_by_line,
        summary.messages
    );
    assert!(
        summary.keyed_by_line > 0,
        "the dirty fixture has lines that do not decode: {summary:?}"
    );
    assert!(summary
        .header
        .as_deref()
        .unwrap()
        .starts_with("InvoiceNo,StockCode"));

    let mut sources =
        [KafkaSource::new(&source_config(&brokers, &topic, &unique("g")), 0, 1).unwrap()];
    assert_eq!(
        sources[0].assignment().unwrap().len(),
        4,
        "a lone worker owns every partition"
    );
    let records = read_records(&mut sources, expected.len(), Duration::from_secs(30));
    assert_exactly_once(&topic, &records[0], &expected);
    // Nothing more arrives: a line is never produced twice.
    std::thread::sleep(Duration::from_millis(500));
    let mut extra = Vec::new();
    sources[0].poll_batch(1000, &mut extra).unwrap();
    assert!(extra.is_empty(), "unexpected extra records: {extra:?}");
}

#[test]
fn a_slice_of_online_retail_is_spread_over_two_workers_exactly_once() {
    let brokers = brokers();
    let topic = unique("retail");
    // The first 20,000 data lines of the shipped log, header kept.
    let log = root().join("../shared/data/online_retail_all.csv.xz");
    assert!(log.exists(), "{} is missing", log.display());
    let dir = tempfile::tempdir().unwrap();
    let slice: PathBuf = dir.path().join("retail.csv");
    {
        let mut lines = Lines::new(&log, open(&log, Arc::default()).unwrap());
        let mut out = std::io::BufWriter::new(std::fs::File::create(&slice).unwrap());
        for _ in 0..20_001 {
            let (_, line) = lines.next_line().unwrap().unwrap();
            out.write_all(line).unwrap();
            out.write_all(b"\n").unwrap();
        }
    }
    let expected = expected_messages(&slice, &online_retail());
    assert_eq!(expected.len(), 20_000);
    let summary = produce_file(&slice, &brokers, &topic);
    assert_eq!(summary.messages, 20_000);

    let group = unique("g");
    let config = source_config(&brokers, &topic, &group);
    let mut workers = [
        KafkaSource::new(&config, 0, 2).unwrap(),
        KafkaSource::new(&config, 1, 2).unwrap(),
    ];
    let (zero, one) = (
        workers[0].assignment().unwrap(),
        workers[1].assignment().unwrap(),
    );
    assert_eq!(zero.len(), 2, "{zero:?}");
    assert_eq!(one.len(), 2, "{one:?}");
    let owned: BTreeSet<_> = zero.iter().chain(&one).collect();
    assert_eq!(
        owned.len(),
        4,
        "workers own disjoint partitions covering the topic"
    );

    let records = read_records(&mut workers, expected.len(), Duration::from_secs(45));
    for (worker, (records, owns)) in records.iter().zip([&zero, &one]).enumerate() {
        for record in records {
            let (partition, _) = partition_offset(record);
            assert!(
                owns.contains(&(topic.clone(), partition)),
                "worker {worker} read partition {partition}"
            );
        }
    }
    let all: Vec<KafkaRecord> = records.into_iter().flatten().collect();
    assert_exactly_once(&topic, &all, &expected);
}

#[test]
fn a_restarted_consumer_resumes_after_the_committed_offsets() {
    let brokers = brokers();
    let topic = unique("resume");
    let path = root().join("tests/fixtures/retail_dirty.csv");
    let expected = expected_messages(&path, &online_retail());
    produce_file(&path, &brokers, &topic);
    let group = unique("g");
    let config = source_config(&brokers, &topic, &group);

    // The first consumer reads everything but commits only what it says is
    // durable: the records read in its first few polls.
    let mut first = vec![KafkaSource::new(&config, 0, 1).unwrap()];
    let mut durable_records = Vec::new();
    let started = Instant::now();
    while durable_records.len() < 5 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "nothing to read"
        );
        first[0]
            .poll_batch(5 - durable_records.len(), &mut durable_records)
            .unwrap();
    }
    let durable: Offsets = first[0].offsets();
    let rest = read_records(&mut first, expected.len() - 5, Duration::from_secs(30));
    assert!(
        first[0].offsets() != durable,
        "the consumer read past the durable snapshot"
    );
    assert_eq!(first[0].commit(&durable).unwrap(), durable.len());
    assert_eq!(
        first[0].committed(Duration::from_secs(10)).unwrap(),
        durable
    );
    drop(first);
    drop(rest);

    // A restart resumes exactly there: it reads the rest, and nothing twice.
    let mut second = [KafkaSource::new(&config, 0, 1).unwrap()];
    let resumed = read_records(&mut second, expected.len() - 5, Duration::from_secs(30));
    let mut extra = Vec::new();
    std::thread::sleep(Duration::from_millis(500));
    second[0].poll_batch(1000, &mut extra).unwrap();
    assert!(
        extra.is_empty(),
        "records read again after the commit: {extra:?}"
    );
    for record in &resumed[0] {
        let (partition, offset) = partition_offset(record);
        let start = durable
            .get(&(topic.clone(), partition))
            .copied()
            .unwrap_or(0);
        assert!(
            offset >= start,
            "partition {partition} offset {offset} is before the commit {start}"
        );
    }
    let all: Vec<KafkaRecord> = durable_records
        .into_iter()
        .chain(resumed.into_iter().flatten())
        .collect();
    assert_exactly_once(&topic, &all, &expected);
    // At the end of the topic, the consumer knows it has caught up.
    let ends = second[0].end_offsets(Duration::from_secs(10)).unwrap();
    assert!(second[0].caught_up(&ends, &durable));
}

#[test]
fn the_upsert_sink_leaves_the_latest_value_or_a_tombstone_per_key() {
    let brokers = brokers();
    let topic = unique("profiles");
    let sink = KafkaSink::new(&KafkaSinkConfig {
        brokers: brokers.clone(),
        topic: topic.clone(),
        ..KafkaSinkConfig::default()
    })
    .unwrap();
    // Three completed times of an output keyed by user.
    let times = [
        vec![
            ("u1", json!({"user": "u1", "spend": 100}), 1),
            ("u2", json!({"user": "u2", "spend": 5}), 1),
        ],
        vec![
            ("u1", json!({"user": "u1", "spend": 100}), -1),
            ("u1", json!({"user": "u1", "spend": 250}), 1),
            ("u3", json!({"user": "u3", "spend": 7}), 1),
        ],
        vec![("u2", json!({"user": "u2", "spend": 5}), -1)],
    ];
    let mut sent = 0;
    for changes in times {
        let batch = upserts(changes.into_iter().map(|(k, v, d)| (k.to_owned(), v, d))).unwrap();
        sent += batch.len();
        sink.send_all(&batch).unwrap();
        sink.flush().unwrap();
    }
    assert_eq!(sink.delivered() as usize, sent);

    let mut reader =
        [KafkaSource::new(&source_config(&brokers, &topic, &unique("g")), 0, 1).unwrap()];
    let records = read_records(&mut reader, sent, Duration::from_secs(30));
    let mut in_order = records.into_iter().flatten().collect::<Vec<_>>();
    in_order.sort_by_key(partition_offset);
    let latest = latest_per_key(in_order.into_iter().map(|record| {
        let key = String::from_utf8(record.key.unwrap()).unwrap();
        let value = (!record.payload.is_empty())
            .then(|| serde_json::from_slice::<Value>(&record.payload).unwrap());
        (key, value)
    }));
    let expected: BTreeMap<String, Option<Value>> = [
        ("u1".to_owned(), Some(json!({"user": "u1", "spend": 250}))),
        ("u2".to_owned(), None),
        ("u3".to_owned(), Some(json!({"user": "u3", "spend": 7}))),
    ]
    .into();
    assert_eq!(latest, expected);
}

#[test]
fn the_produce_command_loads_a_log_keyed_by_user() {
    let brokers = brokers();
    let topic = unique("produce-cli");
    let path = root().join("tests/fixtures/UserBehavior.csv");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_persona"))
        .args([
            "produce",
            "--format",
            "taobao",
            "--topic",
            &topic,
            "--brokers",
            &brokers,
            "--input",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["messages"], 7, "{summary}");
    let mut sources =
        [KafkaSource::new(&source_config(&brokers, &topic, &unique("g")), 0, 1).unwrap()];
    let records = read_records(&mut sources, 7, Duration::from_secs(30));
    assert_eq!(records[0].len(), 7);
    let keys: std::collections::BTreeSet<Vec<u8>> =
        records[0].iter().filter_map(|r| r.key.clone()).collect();
    // Users 1 and 2 key their lines; user 3's two lines do not decode
    // (unknown action, bad time) and are keyed by their line numbers 5 and 6.
    assert_eq!(summary["keyed_by_user"], 5, "{summary}");
    assert_eq!(summary["keyed_by_line"], 2, "{summary}");
    let expected: std::collections::BTreeSet<Vec<u8>> = ["1", "2", "5", "6"]
        .iter()
        .map(|k| k.as_bytes().to_vec())
        .collect();
    assert_eq!(keys, expected);
}

/// A line larger than the producer's `message.max.bytes` cannot be in the
/// topic: `produce` names and counts it, and produces the lines after it.
#[test]
fn the_produce_command_skips_a_line_too_large_for_a_message_and_goes_on() {
    let brokers = brokers();
    let topic = unique("produce-too-large");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("retail.csv");
    let line = |invoice: u32, description: &str| {
        format!("{invoice},85123A,{description},6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom")
    };
    let lines = [
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country".into(),
        line(536365, "HEART"),
        line(536366, &"X".repeat(1_500_000)),
        line(536367, "BIRD"),
    ];
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let produce = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_persona"))
            .args(["produce", "--format", "online-retail", "--topic", &topic])
            .args(["--brokers", &brokers, "--input"])
            .arg(&path)
            .args(extra)
            .output()
            .unwrap()
    };
    let output = produce(&[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("retail.csv:3: not produced"), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["messages"], 2, "{summary}");
    assert_eq!(summary["keyed_by_user"], 2, "{summary}");
    assert_eq!(summary["too_large"], 1, "{summary}");
    let skipped = &summary["too_large_lines"][0];
    assert!(
        skipped["position"]
            .as_str()
            .unwrap()
            .ends_with("retail.csv:3"),
        "{summary}"
    );
    assert_eq!(skipped["bytes"], lines[2].len(), "{summary}");
    let mut sources =
        [KafkaSource::new(&source_config(&brokers, &topic, &unique("g")), 0, 1).unwrap()];
    let records = read_records(&mut sources, 2, Duration::from_secs(30));
    let payloads: Vec<Vec<u8>> = records[0].iter().map(|r| r.payload.clone()).collect();
    let expected: Vec<Vec<u8>> = [&lines[1], &lines[3]].map(|l| l.as_bytes().to_vec()).into();
    assert_eq!(payloads, expected);

    let output = produce(&["--property", "message.max.bytes"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("expected KEY=VALUE"),
        "{stderr}"
    );
}

/// The first lines of Online Retail replayed to files, and produced (in
/// part, or all) into a fresh topic: what a run on the topic must end in.
struct RunCase {
    dir: tempfile::TempDir,
    topics: RunTopics,
    /// The file replay's outputs.
    expected: tempfile::TempDir,
    lines: usize,
    /// Lines produced so far.
    produced: usize,
}

impl RunCase {
    fn new(name: &str, lines: usize) -> RunCase {
        let dir = tempfile::tempdir().unwrap();
        let slice = online_retail_lines(dir.path(), "slice", 0, lines);
        let (expected, _) = replay(&slice, "online-retail", &[]);
        RunCase {
            dir,
            topics: RunTopics::new(&unique(name)),
            expected,
            lines,
            produced: 0,
        }
    }

    /// Produces the next lines, up to `to`, into the input topic.
    fn produce_up_to(&mut self, brokers: &str, to: usize) {
        let part = online_retail_lines(self.dir.path(), "part", self.produced, to);
        let summary = produce_file(&part, brokers, &self.topics.input);
        assert_eq!(summary.messages as usize, to - self.produced);
        self.produced = to;
    }
}

/// `persona run --config CONFIG --format online-retail --out OUT EXTRA...`.
fn run_command(config: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_persona"));
    command
        .args(["run", "--format", "online-retail", "--config"])
        .arg(config)
        .arg("--out")
        .arg(out)
        .args(extra);
    command
}

/// Starts `persona run` in the background, its stderr kept for the test.
fn spawn_run(config: &Path, out: &Path, extra: &[&str]) -> std::process::Child {
    run_command(config, out, extra)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs to the end of the topic; returns the summary.
fn run_until_end(config: &Path, out: &Path, extra: &[&str]) -> Value {
    let output = run_command(config, out, &[&["--until-end"], extra].concat())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "persona run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    read_json(&out.join("summary.json"))
}

/// The state each output topic holds equals the file replay's output.
fn assert_topics_hold(brokers: &str, topics: &RunTopics, expected: &Path) {
    for (output, topic, key) in [
        ("profiles", &topics.profiles, "user"),
        ("similar_items", &topics.similar_items, "item"),
        ("recommendations", &topics.recommendations, "user"),
    ] {
        let state = upsert_state(brokers, topic);
        let wanted = records_by(expected, output, key);
        assert!(!wanted.is_empty(), "the replay has no {output}");
        if state != wanted {
            let differing = wanted
                .iter()
                .find(|(k, v)| state.get(*k) != Some(*v))
                .map(|(k, v)| format!("{key} {k}: topic has {:?}, replay {v}", state.get(k)));
            panic!(
                "topic {topic} holds {} {output} records, the replay {}; first difference: {differing:?}",
                state.len(),
                wanted.len()
            );
        }
    }
}

/// (reason, raw record) of each line of a rejected output, sorted.
fn reasons_and_raws(lines: impl IntoIterator<Item = Vec<u8>>) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = lines
        .into_iter()
        .map(|line| {
            let value: Value = serde_json::from_slice(&line).unwrap();
            (
                value["reason"].as_str().unwrap().to_owned(),
                value["raw"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    pairs.sort();
    pairs
}

#[test]
fn a_run_on_a_topic_ends_in_the_state_of_the_file_replay() {
    let brokers = brokers();
    let mut case = RunCase::new("run", 30_000);
    case.produce_up_to(&brokers, case.lines);
    let parquet = case.dir.path().join("parquet");
    let extra = format!(
        "\n[sink.parquet]\ndir = {:?}\nbuckets = 4\n",
        parquet.display().to_string()
    );
    let config = case.topics.config(&brokers, case.dir.path(), &extra);
    let out = case.dir.path().join("run");
    let summary = run_until_end(&config, &out, &[]);

    assert_topics_hold(&brokers, &case.topics, case.expected.path());
    for (output, key) in [
        ("profiles", "user"),
        ("similar_items", "item"),
        ("recommendations", "user"),
    ] {
        assert_eq!(
            read_lines(&out, output),
            read_lines(case.expected.path(), output),
            "{output}.jsonl of the run vs the replay"
        );
        // [sink.parquet]: the same records, each in its key's bucket.
        let by_key = |a: &Value, b: &Value| a[key].as_str().cmp(&b[key].as_str());
        let mut rows = dataset_rows(&parquet, output, key, 4);
        rows.sort_by(by_key);
        let mut expected = jsonl_rows(case.expected.path(), output);
        expected.sort_by(by_key);
        assert!(
            rows == expected,
            "{output}: the Parquet dataset vs the replay"
        );
        assert_eq!(summary["outputs"][format!("{output}/")], rows.len());
    }
    let replayed = read_json(&case.expected.path().join("summary.json"));
    assert_balances(&summary);
    // Beside the replay's outputs, the run's summary counts its datasets.
    let mut files = summary.clone();
    let outputs = files["outputs"].as_object_mut().unwrap();
    outputs.retain(|name, _| !name.ends_with('/'));
    assert_eq!(deterministic_part(&files), deterministic_part(&replayed));
    assert_eq!(summary["records_read"], case.lines as u64);

    // Rejected records: in the file and the dead-letter topic, with their
    // topic/partition/offset, the same reasons and records as the replay's.
    let rejected = read_lines(&out, "rejected");
    let first: Value = serde_json::from_str(&rejected[0]).unwrap();
    assert_eq!(
        first["source"]["topic"],
        case.topics.input.as_str(),
        "{first}"
    );
    let expected = reasons_and_raws(
        read_lines(case.expected.path(), "rejected")
            .into_iter()
            .map(String::into_bytes),
    );
    assert!(!expected.is_empty());
    assert_eq!(
        reasons_and_raws(rejected.into_iter().map(String::into_bytes)),
        expected
    );
    let dead_letters = read_topic(&brokers, &case.topics.rejected);
    assert_eq!(
        reasons_and_raws(dead_letters.into_iter().map(|(_, v)| v.unwrap())),
        expected
    );
    // Every message's offset is committed once its outputs are written.
    assert_eq!(
        committed_total(&brokers, &case.topics.input, &case.topics.group),
        case.lines as i64
    );
}

/// Waits until `group` has committed offsets while the run still runs.
fn wait_for_commits(brokers: &str, topics: &RunTopics, child: &mut std::process::Child) {
    let started = Instant::now();
    loop {
        let running = child.try_wait().unwrap().is_none();
        assert!(running, "the run ended before it was stopped");
        if committed_total(brokers, &topics.input, &topics.group) > 0 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "no offsets committed in 180 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A free address for a run's /metrics.
fn free_listen() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// The records a run has read, from its /metrics (0 while it does not
/// listen yet).
fn records_read(listen: &str) -> u64 {
    let Ok(mut response) = ureq::get(format!("http://{listen}/metrics")).call() else {
        return 0;
    };
    let metrics = response.body_mut().read_to_string().unwrap();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("persona_records_read_total "))
        .unwrap_or_else(|| panic!("no records read in /metrics:\n{metrics}"))
        .parse()
        .unwrap()
}

/// Sends SIGTERM to a run and asserts it exits with success.
fn stop_cleanly(run: std::process::Child, what: &str) {
    let kill = Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let stopped = run.wait_with_output().unwrap();
    assert!(
        stopped.status.success(),
        "{what}: {} {}",
        stopped.status,
        String::from_utf8_lossy(&stopped.stderr)
    );
}

#[test]
fn a_run_stopped_by_sigterm_and_restarted_converges_to_the_same_state() {
    let brokers = brokers();
    // The first 80,000 lines reach into 2011: the first commits come when
    // the frontier passes the end of the 30-day period of December, as
    // similar items and recommendations include the records then.
    let mut case = RunCase::new("sigterm", 100_000);
    case.produce_up_to(&brokers, 80_000);
    let config = case.topics.config(&brokers, case.dir.path(), "");
    let first_out = case.dir.path().join("first");
    let listen = free_listen();
    let mut first = spawn_run(&config, &first_out, &["--listen", &listen]);
    wait_for_commits(&brokers, &case.topics, &mut first);
    let scraped = records_read(&listen);
    stop_cleanly(first, "a stopped run exits cleanly");
    let summary = read_json(&first_out.join("summary.json"));
    assert_balances(&summary);
    let read = summary["records_read"].as_u64().unwrap();
    assert!(
        0 < scraped && scraped <= read,
        "/metrics showed {scraped} records read of the run's {read}"
    );
    assert!(
        0 < read && read <= case.produced as u64,
        "read {read} of the {} lines produced",
        case.produced
    );
    assert_eq!(
        committed_total(&brokers, &case.topics.input, &case.topics.group),
        read as i64,
        "the shutdown commits the offset of every record read"
    );

    // More events arrive; a restart rebuilds the state from the topic and
    // ends in the replay's: nothing lost, nothing counted twice.
    case.produce_up_to(&brokers, case.lines);
    let second_out = case.dir.path().join("second");
    let summary = run_until_end(&config, &second_out, &[]);
    let replayed = read_json(&case.expected.path().join("summary.json"));
    assert_eq!(deterministic_part(&summary), deterministic_part(&replayed));
    assert_topics_hold(&brokers, &case.topics, case.expected.path());
    assert_eq!(
        committed_total(&brokers, &case.topics.input, &case.topics.group),
        case.lines as i64
    );
}

/// Lateness on a topic is judged against the record's own partition,
/// record by record, so one and two workers, which read the partitions in
/// other interleavings and poll batches, drop the same records as late and
/// end in the same state.
#[test]
fn late_records_of_a_topic_are_the_same_for_one_and_two_workers() {
    let brokers = brokers();
    let dir = tempfile::tempdir().unwrap();
    let slice = online_retail_lines(dir.path(), "slice", 0, 30_000);
    // Every 500th line moved 10,000 lines on: days behind its neighbours.
    let text = std::fs::read_to_string(&slice).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let mut keyed: Vec<(usize, &str)> = lines
        .enumerate()
        .map(|(n, line)| (2 * n + if n % 500 == 0 { 20_001 } else { 0 }, line))
        .collect();
    keyed.sort_by_key(|(key, _)| *key);
    let mut shuffled_text = format!("{header}\n");
    for (_, line) in keyed {
        shuffled_text.push_str(line);
        shuffled_text.push('\n');
    }
    let shuffled = dir.path().join("shuffled.csv");
    std::fs::write(&shuffled, shuffled_text).unwrap();

    let mut results = Vec::new();
    for workers in ["1", "2"] {
        let topics = RunTopics::new(&unique("late"));
        produce_file(&shuffled, &brokers, &topics.input);
        let config = topics.config(&brokers, dir.path(), "");
        let out = dir.path().join(format!("w{workers}"));
        let summary = run_until_end(&config, &out, &["-w", workers]);
        assert_balances(&summary);
        let late = summary["late"].as_u64().unwrap();
        // Each run reads a topic of its own name: the rest of the position.
        let mut records: Vec<(i64, i64, String)> = read_lines(&out, "late")
            .iter()
            .map(|line| {
                let letter: Value = serde_json::from_str(line).unwrap();
                let source = &letter["source"];
                let raw = letter["raw"].as_str().unwrap().to_owned();
                (
                    source["partition"].as_i64().unwrap(),
                    source["offset"].as_i64().unwrap(),
                    raw,
                )
            })
            .collect();
        records.sort();
        results.push((late, read_lines(&out, "profiles"), records));
    }
    assert!(results[0].0 > 0, "the moved lines are late");
    assert_eq!(results[0].0, results[1].0, "late records, -w 1 and -w 2");
    assert!(results[0].2 == results[1].2, "late.jsonl, -w 1 and -w 2");
    assert!(results[0].1 == results[1].1, "profiles, -w 1 and -w 2");
}

/// A broker of this test's own, on a free port with its own data folder,
/// so restarting it disturbs no other test.
struct OwnBroker {
    dir: tempfile::TempDir,
    port: u16,
}

impl OwnBroker {
    fn start() -> OwnBroker {
        let port = free_port();
        let broker = OwnBroker {
            dir: tempfile::tempdir().unwrap(),
            port,
        };
        broker.script("start");
        broker
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn script(&self, command: &str) {
        let output = Command::new(root().join("scripts/kafka-broker.sh"))
            .arg(command)
            .env("PERSONA_KAFKA_PORT", self.port.to_string())
            .env("PERSONA_KAFKA_DIR", self.dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "kafka-broker.sh {command}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.script("stop");
    }
}

#[test]
fn a_broker_restarted_midway_loses_nothing() {
    let broker = OwnBroker::start();
    let brokers = broker.address();
    let mut case = RunCase::new("broker-restart", 150_000);
    case.produce_up_to(&brokers, 80_000);
    let config = case.topics.config(&brokers, case.dir.path(), "");
    let out = case.dir.path().join("run");
    let listen = free_listen();
    let mut run = spawn_run(&config, &out, &["--listen", &listen]);
    wait_for_commits(&brokers, &case.topics, &mut run);
    broker.script("stop");
    assert!(!reachable(&brokers), "the broker is down");
    std::thread::sleep(Duration::from_secs(2));
    if run.try_wait().unwrap().is_some() {
        let output = run.wait_with_output().unwrap();
        panic!(
            "the run did not wait for the broker: {} {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    broker.script("start");
    // The run reads on through the restarted broker, to the last line (it
    // commits the offsets of the last ticks only when it stops).
    case.produce_up_to(&brokers, case.lines);
    let started = Instant::now();
    while records_read(&listen) < case.lines as u64 {
        assert!(run.try_wait().unwrap().is_none(), "the run ended by itself");
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the new lines not all read in 180 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop_cleanly(run, "the run survives the broker's restart");
    let summary = read_json(&out.join("summary.json"));
    let replayed = read_json(&case.expected.path().join("summary.json"));
    assert_eq!(deterministic_part(&summary), deterministic_part(&replayed));
    assert_topics_hold(&brokers, &case.topics, case.expected.path());
    assert_eq!(
        committed_total(&brokers, &case.topics.input, &case.topics.group),
        case.lines as i64
    );
}

/// Starts a run that checkpoints every 0.2 s and kills it (SIGKILL) ten
/// times, each start restoring the newest checkpoint; then runs to the end.
/// Most kills land at a random moment after the run has written a
/// checkpoint of its own (while the log is read, while checkpoints
/// are written, between a checkpoint and its commit), the others in the
/// first second, while a start restores one. Kills are paced by the
/// checkpoints, not by the clock: a busy broker may take seconds to answer.
/// Every checkpoint compacts its new files (`compact_files = 1`), so kills
/// land in compactions too: the log may be read in as few as three
/// checkpoints, which a larger threshold would never compact.
#[test]
fn a_run_killed_at_random_moments_ends_in_the_state_of_the_file_replay() {
    use rand::{Rng, SeedableRng};
    let brokers = brokers();
    let mut case = RunCase::new("kill", 150_000);
    case.produce_up_to(&brokers, case.lines);
    let checkpoints = case.dir.path().join("checkpoints");
    // Manifests that cannot be read, left by some mishap: the run's own
    // checkpoints are numbered after them, or pruning, which keeps the
    // highest numbers, would remove each new one as it is written.
    std::fs::create_dir_all(&checkpoints).unwrap();
    for seq in 19..=21 {
        std::fs::write(checkpoints.join(format!("manifest-{seq:010}.json")), "").unwrap();
    }
    let extra = format!(
        "\n[checkpoint]\ndir = {:?}\ninterval_s = 0.2\nkeep = 2\nbuckets = 4\ncompact_files = 1\n",
        checkpoints.display().to_string()
    );
    let config = case.topics.config(&brokers, case.dir.path(), &extra);
    let out = case.dir.path().join("run");
    let mut random = rand::rngs::StdRng::seed_from_u64(15);
    let mut restored = 0;
    for kill in 0..10 {
        // Odd starts run 2 workers: a checkpoint restores into any count.
        let workers = if kill % 2 == 1 { "2" } else { "1" };
        let before = newest_checkpoint(&checkpoints);
        let mut run = spawn_run(&config, &out, &["-w", workers]);
        if random.random_range(0..4) > 0 {
            let started = Instant::now();
            while newest_checkpoint(&checkpoints) <= before {
                assert!(
                    run.try_wait().unwrap().is_none(),
                    "run {kill} ended by itself"
                );
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "run {kill} wrote no checkpoint in 120 s"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let wait = Duration::from_millis(random.random_range(0..1_500));
        std::thread::sleep(wait);
        assert!(
            run.try_wait().unwrap().is_none(),
            "run {kill} ended by itself"
        );
        run.kill().unwrap();
        let output = run.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        restored += stderr.contains("restoring checkpoint") as usize;
        let restoring = stderr
            .lines()
            .find(|line| line.contains("restoring checkpoint"));
        eprintln!(
            "killed run {kill} (-w {workers}) {wait:?} after checkpoint {}; {restoring:?}",
            before
        );
    }
    eprintln!("{restored} of 10 starts restored a checkpoint");
    assert!(restored > 0, "no start restored a checkpoint");
    // The last start reads from the newest checkpoint's offsets on: no
    // record before them, so the topic's retention may have deleted them.
    let newest = newest_checkpoint(&checkpoints);
    let manifest = read_json(&checkpoints.join(format!("manifest-{newest:010}.json")));
    let names: Vec<&str> = manifest["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|file| file["name"].as_str().unwrap())
        .collect();
    assert!(
        names.iter().any(|name| name.starts_with("bucket=")),
        "the run's files were compacted into buckets: {names:?}"
    );
    let before: i64 = manifest["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["next_offset"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(manifest["counts"]["records_read"], before, "{manifest}");
    let last = run_command(&config, &out, &["--until-end"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&last.stderr);
    assert!(last.status.success(), "persona run failed: {stderr}");
    let fetched = case.lines as i64 - before;
    assert!(
        stderr.contains(&format!(
            "read {fetched} records from the topics; {before} came from checkpoint {newest}"
        )),
        "{stderr}"
    );
    let summary = read_json(&out.join("summary.json"));

    let replayed = read_json(&case.expected.path().join("summary.json"));
    assert_eq!(deterministic_part(&summary), deterministic_part(&replayed));
    for output in ["profiles", "similar_items", "recommendations"] {
        assert_eq!(
            read_lines(&out, output),
            read_lines(case.expected.path(), output),
            "{output}.jsonl of the killed run vs the replay"
        );
    }
    assert_topics_hold(&brokers, &case.topics, case.expected.path());
    let expected = reasons_and_raws(
        read_lines(case.expected.path(), "rejected")
            .into_iter()
            .map(String::into_bytes),
    );
    let rejected = read_lines(&out, "rejected");
    assert_eq!(
        reasons_and_raws(rejected.into_iter().map(String::into_bytes)),
        expected,
        "rejected.jsonl holds each rejected record once"
    );
    // The dead-letter topic is written at least once: a record rejected
    // after the last checkpoint of a killed run is sent again, under the
    // same key (its position).
    let letters: BTreeMap<String, Vec<u8>> = read_topic(&brokers, &case.topics.rejected)
        .into_iter()
        .map(|(key, value)| (key, value.unwrap()))
        .collect();
    assert_eq!(reasons_and_raws(letters.into_values()), expected);
    assert_eq!(
        committed_total(&brokers, &case.topics.input, &case.topics.group),
        case.lines as i64
    );
}

/// A run with `[privacy] pseudonymize`: no raw user or item id of the topic
/// is in the output files, the output and dead-letter topics, the Parquet
/// datasets, the checkpoint's data files or what the process printed.
#[test]
fn a_pseudonymised_run_leaves_no_raw_id_in_topics_checkpoints_or_files() {
    let brokers = brokers();
    let mut case = RunCase::new("private", 20_000);
    case.produce_up_to(&brokers, case.lines);
    let (key, checkpoints, parquet) = (
        case.dir.path().join("key"),
        case.dir.path().join("checkpoints"),
        case.dir.path().join("parquet"),
    );
    std::fs::write(&key, "a key of at least thirty-two bytes, for the test").unwrap();
    let extra = format!(
        "\n[privacy]\npseudonymize = [\"user\", \"item\"]\nkey_file = {key:?}\n\
         [checkpoint]\ndir = {checkpoints:?}\ninterval_s = 0.5\ncompact_files = 1\n\
         [sink.parquet]\ndir = {parquet:?}\nbuckets = 2\n"
    );
    let config = case.topics.config(&brokers, case.dir.path(), &extra);
    let out = case.dir.path().join("run");
    let output = run_command(&config, &out, &["--until-end"])
        .env("PERSONA_LOG", "info")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");

    // The raw ids: the keys of the plain file replay's outputs (with a digit
    // and 3 characters at least, so that words of messages do not count).
    let mut raw_ids: BTreeSet<String> = BTreeSet::new();
    for (name, key) in [("profiles", "user"), ("similar_items", "item")] {
        raw_ids.extend(records_by(case.expected.path(), name, key).into_keys());
    }
    raw_ids.retain(|id| id.len() >= 3 && id.bytes().any(|b| b.is_ascii_digit()));
    assert!(raw_ids.len() > 1_000, "{} ids", raw_ids.len());

    let mut texts: Vec<(String, String)> = vec![
        (
            "stdout".into(),
            String::from_utf8_lossy(&output.stdout).into(),
        ),
        (
            "stderr".into(),
            // Less the checkpoints' progress lines: their sizes and
            // timings are figures that can equal a numeric id by chance.
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .filter(|line| !line.contains(" written in "))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    ];
    for name in ["profiles", "similar_items", "recommendations", "rejected"] {
        texts.push((format!("{name}.jsonl"), read_lines(&out, name).join("\n")));
    }
    for topic in [
        &case.topics.profiles,
        &case.topics.similar_items,
        &case.topics.recommendations,
        &case.topics.rejected,
    ] {
        let messages = read_topic(&brokers, topic);
        assert!(!messages.is_empty(), "{topic} is empty");
        for (key, value) in messages {
            let value = value
                .map(|v| String::from_utf8(v).unwrap())
                .unwrap_or_default();
            texts.push((
                format!("topic {topic} key"),
                serde_json::to_string(&key).unwrap(),
            ));
            texts.push((format!("topic {topic}"), value));
        }
    }
    for (name, key) in [("profiles", "user"), ("similar_items", "item")] {
        let rows = dataset_rows(&parquet, name, key, 2);
        texts.push((format!("{name}/ dataset"), Value::from(rows).to_string()));
    }
    let mut data_files = 0;
    // The per-worker files and the compacted ones of the bucket folders.
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(checkpoints.join("data")).unwrap() {
        let path = entry.unwrap().path();
        match path.is_dir() {
            true => paths.extend(std::fs::read_dir(path).unwrap().map(|e| e.unwrap().path())),
            false => paths.push(path),
        }
    }
    assert!(
        paths
            .iter()
            .any(|path| path.to_string_lossy().contains("bucket=")),
        "compacted: {paths:?}"
    );
    for path in paths {
        let bytes = std::fs::read(path).unwrap();
        data_files += 1;
        let text = match persona::checkpoint::segment::decode_events(bytes.clone()) {
            Ok(records) => records
                .iter()
                .map(|r| {
                    let d = &r.decoded;
                    serde_json::json!([d.user_name, d.item_name, d.category_name]).to_string()
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Err(_) => persona::checkpoint::segment::decode_letters(bytes)
                .unwrap()
                .into_iter()
                .map(|letter| letter.line)
                .collect::<Vec<_>>()
                .join("\n"),
        };
        texts.push(("checkpoint data".into(), text));
    }
    assert!(data_files > 0, "no checkpoint was written");
    for (name, text) in &texts {
        let found = raw_ids_in(text, &raw_ids);
        assert!(found.is_empty(), "{name} holds raw ids: {found:?}");
    }
    // Pseudonyms did reach every place checked.
    let profiles = records_by(&out, "profiles", "user");
    assert_eq!(
        profiles.len(),
        records_by(case.expected.path(), "profiles", "user").len()
    );
    assert!(profiles.keys().all(|user| user.len() == 32));
}

/// `[privacy] forget_topic`: users forgotten through the control topic while
/// a run (on two workers) is running leave its outputs — files and upsert
/// topics — as if they had never existed; the forgotten file keeps them.
#[test]
fn users_forgotten_through_the_control_topic_leave_a_running_run() {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let brokers = brokers();
    let dir = tempfile::tempdir().unwrap();
    let lines = 30_000;
    let (all, _) = online_retail_slice(dir.path(), lines, &BTreeSet::new());
    let (full, _) = replay(&all, "online-retail", &[]);
    // Two users drawn with a fixed seed, whose last event is not the log's
    // last: the run, which read their events, ends at the same time.
    let profiles = records_by(full.path(), "profiles", "user");
    let last = profiles
        .values()
        .filter_map(|p| p["last_seen"].as_i64())
        .max();
    let mut users: Vec<String> = profiles
        .iter()
        .filter(|(_, p)| p["last_seen"].as_i64() < last)
        .map(|(user, _)| user.clone())
        .collect();
    users.shuffle(&mut rand::rngs::StdRng::seed_from_u64(17));
    let forgotten: BTreeSet<String> = users.into_iter().take(2).collect();
    let (_, without) = online_retail_slice(dir.path(), lines, &forgotten);
    let (expected, _) = replay(&without, "online-retail", &[]);

    let topics = RunTopics::new(&unique("forget"));
    produce_file(&all, &brokers, &topics.input);
    let control = format!("{}.forget", topics.input);
    let file = dir.path().join("forgotten.txt");
    let checkpoints = dir.path().join("checkpoints");
    let checkpoint = format!("\n[checkpoint]\ndir = {checkpoints:?}\ninterval_s = 0.5\n");
    let privacy = format!("\n[privacy]\nforgotten = {file:?}\nforget_topic = \"{control}\"\n");
    let config = topics.config(&brokers, dir.path(), &format!("{checkpoint}{privacy}"));
    let out = dir.path().join("run");
    let listen = free_listen();
    let mut run = spawn_run(&config, &out, &["--listen", &listen, "-w", "2"]);
    let started = Instant::now();
    while records_read(&listen) < lines as u64 {
        let running = run.try_wait().unwrap().is_none();
        assert!(running, "the run ended before it was stopped");
        assert!(started.elapsed() < Duration::from_secs(180), "not all read");
        std::thread::sleep(Duration::from_millis(200));
    }
    // As the source writes one id (`17850.0`), and as outputs show the other.
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for (n, user) in forgotten.iter().enumerate() {
        let id = if n == 0 {
            format!("{user}.0")
        } else {
            user.clone()
        };
        producer
            .send(BaseRecord::<(), str>::to(&control).payload(&id))
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    while std::fs::read_to_string(&file).map_or(0, |f| f.lines().count()) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "not forgotten"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Time for the antijoin to reach the outputs is taken by the stop,
    // which completes what was read.
    stop_cleanly(run, "a run that forgot users");
    for name in ["profiles", "similar_items", "recommendations"] {
        assert!(
            read_lines(&out, name) == read_lines(expected.path(), name),
            "{name}.jsonl of the run differs from the log without the users"
        );
    }
    assert_topics_hold(&brokers, &topics, expected.path());
    let summary = read_json(&out.join("summary.json"));
    assert_balances(&summary);
    assert_eq!(summary["records_read"], lines as u64);
    // The checkpoints written since hold none of their events: a restart
    // from them with no forgotten users at all (no file, no topic) still
    // gives the outputs without them.
    let forgetting_nobody = topics.config(&brokers, dir.path(), &checkpoint);
    let restarted = dir.path().join("restarted");
    let output = run_command(&forgetting_nobody, &restarted, &["--until-end", "-w", "2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "persona run failed: {stderr}");
    assert!(stderr.contains("restoring checkpoint"), "{stderr}");
    for name in ["profiles", "similar_items", "recommendations"] {
        assert!(
            read_lines(&restarted, name) == read_lines(expected.path(), name),
            "{name}.jsonl restored from the checkpoint differs from the log without the users"
        );
    }
}

#[test]
fn risk_alerts_reach_their_topic_as_the_replay_writes_them() {
    let brokers = brokers();
    let dir = tempfile::tempdir().unwrap();
    let lines = 30_000;
    let slice = online_retail_lines(dir.path(), "slice", 0, lines);
    let (expected, _) = replay_with_config(
        &slice,
        LOW_RISK_RULES,
        &["--format", "online-retail", "-w", "2"],
    );
    let wanted = read_lines(expected.path(), "alerts");
    assert!(wanted.len() > 10, "{} alerts", wanted.len());

    let topics = RunTopics::new(&unique("alerts"));
    let summary = produce_file(&slice, &brokers, &topics.input);
    assert_eq!(summary.messages as usize, lines);
    let alerts_topic = format!("{}.alerts", topics.input);
    let config = topics.config(&brokers, dir.path(), "");
    let mut text = std::fs::read_to_string(&config).unwrap();
    // Inside [sink.kafka], which the config ends with; then [risk].
    text += &format!("alerts = {alerts_topic:?}\n{LOW_RISK_RULES}");
    std::fs::write(&config, text).unwrap();
    let out = dir.path().join("run");
    run_until_end(&config, &out, &["-w", "2"]);

    assert_eq!(read_lines(&out, "alerts"), wanted, "alerts.jsonl");
    // The topic's state: one message per standing alert, keyed user/rule/time_ms.
    let state = upsert_state(&brokers, &alerts_topic);
    let expected: BTreeMap<String, Value> = wanted
        .iter()
        .map(|line| {
            let alert: Value = serde_json::from_str(line).unwrap();
            let key = format!(
                "{}/{}/{}",
                alert["user"].as_str().unwrap(),
                alert["rule"].as_str().unwrap(),
                alert["time_ms"]
            );
            (key, alert)
        })
        .collect();
    assert_eq!(state, expected);
}

#[test]
fn item_feedback_reaches_its_topic_keyed_by_item() {
    let brokers = brokers();
    let dir = tempfile::tempdir().unwrap();
    // Users view items; user 3 is shown C and D, clicks C and dismisses B;
    // user 4 is shown C too.
    let log = dir.path().join("events.jsonl");
    let mut lines = Vec::new();
    for (n, (user, item, action)) in [
        ("1", "A", "view"),
        ("1", "B", "view"),
        ("2", "A", "view"),
        ("3", "C", "impression"),
        ("3", "D", "impression"),
        ("3", "C", "rec_click"),
        ("3", "B", "not_interested"),
        ("4", "C", "impression"),
    ]
    .into_iter()
    .enumerate()
    {
        let t = 1_659_304_800_000_i64 + n as i64 * 1000;
        lines.push(json!({"u": user, "i": item, "a": action, "t": t}).to_string());
    }
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let input = "[input]\nformat = \"jsonl\"\n[input.mapping]\nuser = \"u\"\nitem = \"i\"\n\
                 action = \"a\"\ntime = \"t\"\n";
    let (expected, _) = replay_with_config(&log, input, &[]);
    let wanted = records_by(expected.path(), "item_feedback", "item");
    assert_eq!(wanted.len(), 3, "{wanted:?}");

    let topic = unique("feedback");
    let feedback_topic = format!("{topic}.item_feedback");
    let config = dir.path().join("run.toml");
    std::fs::write(
        &config,
        format!(
            "{input}\n[source.kafka]\nbrokers = {brokers:?}\ntopics = [{topic:?}]\n\
             group_id = \"{topic}.group\"\n\n[sink.kafka]\nbrokers = {brokers:?}\n\
             item_feedback = {feedback_topic:?}\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let log = log.to_str().unwrap();
    persona(&[
        "produce",
        "--config",
        config,
        "--input",
        log,
        "--topic",
        &topic,
        "--brokers",
        &brokers,
    ]);
    let out = dir.path().join("run");
    let out_dir = out.to_str().unwrap();
    persona(&[
        "run",
        "--until-end",
        "-w",
        "2",
        "--config",
        config,
        "--out",
        out_dir,
    ]);

    assert_eq!(
        read_lines(&out, "item_feedback"),
        read_lines(expected.path(), "item_feedback")
    );
    // One message per item with feedback, holding its record.
    assert_eq!(upsert_state(&brokers, &feedback_topic), wanted);
}
