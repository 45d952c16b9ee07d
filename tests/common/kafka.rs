//! Helpers for tests against a real Kafka-protocol broker: its address,
//! fresh topic names, a slice of the shipped log, `persona run` configs, and
//! reading an upsert topic back to the state it holds.
//!
//! The broker address comes from `PERSONA_KAFKA_BROKERS`, else from
//! `scripts/kafka-broker.sh status`; without a reachable broker a test fails
//! and says to run `scripts/kafka-broker.sh start`.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use persona::source::kafka::{KafkaSource, KafkaSourceConfig, Offsets, ResumeFrom};
use serde_json::Value;

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The broker's address; fails the test when none is reachable.
pub fn brokers() -> String {
    let address = std::env::var("PERSONA_KAFKA_BROKERS").ok().or_else(|| {
        let output = Command::new(root().join("scripts/kafka-broker.sh"))
            .arg("status")
            .output()
            .ok()?;
        let address = String::from_utf8(output.stdout).ok()?.trim().to_owned();
        (output.status.success() && !address.is_empty()).then_some(address)
    });
    let Some(address) = address else {
        panic!(
            "no Kafka broker: run `scripts/kafka-broker.sh start` (or set PERSONA_KAFKA_BROKERS)"
        );
    };
    assert!(
        reachable(&address),
        "Kafka broker {address} is not reachable: run `scripts/kafka-broker.sh start`"
    );
    address
}

/// Whether any broker of `address` accepts a connection.
pub fn reachable(address: &str) -> bool {
    address.split(',').any(|broker| {
        broker
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .is_some_and(|socket| {
                TcpStream::connect_timeout(&socket, Duration::from_secs(2)).is_ok()
            })
    })
}

/// A name no earlier run has used, for topics and groups. Its numbers are
/// glued to letters: a bare number in a topic name, which rejected records
/// quote, could equal a user id of the log and fool the privacy checks.
pub fn unique(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("persona-test-{name}-p{}t{nanos}", std::process::id())
}

/// The header and data lines `from..to` (0-based) of the shipped Online
/// Retail log, written to `dir/NAME.csv`.
pub fn online_retail_lines(dir: &Path, name: &str, from: usize, to: usize) -> PathBuf {
    let source = super::shared_data("online_retail_all.csv.xz");
    // Decompress only as far as the slice reaches.
    let xz = liblzma::read::XzDecoder::new(std::fs::File::open(source).unwrap());
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(xz));
    let header = lines.next().unwrap().unwrap();
    let path = dir.join(format!("{name}.csv"));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(file, "{header}").unwrap();
    for line in lines.skip(from).take(to - from) {
        writeln!(file, "{}", line.unwrap()).unwrap();
    }
    file.flush().unwrap();
    path
}

/// The output topics of a run, named after `topic`.
pub struct RunTopics {
    pub input: String,
    pub group: String,
    pub profiles: String,
    pub similar_items: String,
    pub recommendations: String,
    pub rejected: String,
}

impl RunTopics {
    pub fn new(input: &str) -> RunTopics {
        RunTopics {
            input: input.to_owned(),
            group: format!("{input}.group"),
            profiles: format!("{input}.profiles"),
            similar_items: format!("{input}.similar_items"),
            recommendations: format!("{input}.recommendations"),
            rejected: format!("{input}.rejected"),
        }
    }

    /// A `persona run` config reading `input` and writing every output
    /// topic, with `extra` TOML lines in `[source.kafka]`.
    pub fn config(&self, brokers: &str, dir: &Path, extra_source: &str) -> PathBuf {
        let path = dir.join(format!("run-{}.toml", unique("config")));
        let text = format!(
            r#"[source.kafka]
brokers = "{brokers}"
topics = ["{input}"]
group_id = "{group}"
{extra_source}

[sink.kafka]
brokers = "{brokers}"
profiles = "{profiles}"
similar_items = "{similar_items}"
recommendations = "{recommendations}"
rejected = "{rejected}"
"#,
            input = self.input,
            group = self.group,
            profiles = self.profiles,
            similar_items = self.similar_items,
            recommendations = self.recommendations,
            rejected = self.rejected,
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// Every message of `topic` from the beginning, in offset order per
/// partition, as (key, value) with `None` for a tombstone.
pub fn read_topic(brokers: &str, topic: &str) -> Vec<(String, Option<Vec<u8>>)> {
    let config = KafkaSourceConfig {
        brokers: brokers.to_owned(),
        topics: vec![topic.to_owned()],
        group_id: unique("reader"),
        resume_from: ResumeFrom::Beginning,
        ..KafkaSourceConfig::default()
    };
    let mut source = KafkaSource::new(&config, 0, 1).unwrap();
    let ends = source.end_offsets(Duration::from_secs(10)).unwrap();
    let started = Instant::now();
    let mut records = Vec::new();
    while !source.caught_up(&ends, &Offsets::new()) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "read {} records of {topic} in 60 s; ends {ends:?}",
            records.len()
        );
        if source.poll_batch(10_000, &mut records).unwrap() == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    records
        .into_iter()
        .map(|record| {
            let key = String::from_utf8(record.key.expect("a keyed message")).unwrap();
            let value = (!record.payload.is_empty()).then_some(record.payload);
            (key, value)
        })
        .collect()
}

/// The state an upsert topic holds: the latest value per key, tombstoned
/// keys left out.
pub fn upsert_state(brokers: &str, topic: &str) -> BTreeMap<String, Value> {
    let mut latest: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
    for (key, value) in read_topic(brokers, topic) {
        latest.insert(key, value);
    }
    latest
        .into_iter()
        .filter_map(|(key, value)| Some((key, serde_json::from_slice(&value?).unwrap())))
        .collect()
}

/// The offsets `group` has committed on `topic`, summed over partitions.
pub fn committed_total(brokers: &str, topic: &str, group: &str) -> i64 {
    let config = KafkaSourceConfig {
        brokers: brokers.to_owned(),
        topics: vec![topic.to_owned()],
        group_id: group.to_owned(),
        resume_from: ResumeFrom::Committed,
        ..KafkaSourceConfig::default()
    };
    let source = KafkaSource::new(&config, 0, 1).unwrap();
    source
        .committed(Duration::from_secs(10))
        .unwrap()
        .values()
        .sum()
}
