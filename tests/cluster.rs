//! Runs across worker processes: 2 real `persona` processes × 2 workers,
//! talking over loopback with a hostfile, give exactly the outputs of one
//! worker, for `replay` of a file and for `run` on a Kafka topic.

mod common;

use std::path::Path;
use std::process::{Child, Command};

use serde_json::Value;

use common::kafka::*;
use common::*;

/// A hostfile of `processes` free loopback ports.
fn hostfile(dir: &Path, processes: usize) -> std::path::PathBuf {
    let listeners: Vec<std::net::TcpListener> = (0..processes)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let lines: Vec<String> = listeners
        .iter()
        .map(|l| format!("127.0.0.1:{}", l.local_addr().unwrap().port()))
        .collect();
    let path = dir.join("hostfile");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// Starts process `p` of 2, with 2 workers each, of `persona ARGS`.
fn start_process(args: &[&str], hostfile: &Path, process: usize) -> Child {
    Command::new(env!("CARGO_BIN_EXE_persona"))
        .args(args)
        .args(["-w", "2", "-n", "2", "-p", &process.to_string(), "-h"])
        .arg(hostfile)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `persona ARGS` as 2 processes × 2 workers; both must succeed.
fn run_cluster(args: &[&str], dir: &Path) {
    let hostfile = hostfile(dir, 2);
    let processes: Vec<Child> = (0..2).map(|p| start_process(args, &hostfile, p)).collect();
    for (index, process) in processes.into_iter().enumerate() {
        let output = process.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "process {index} of persona {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The outputs of one run equal another's: the files of worker 0, and the
/// union of the per-process rejected and late parts.
fn assert_same_outputs(cluster: &Path, single: &Path) {
    for output in [
        "profiles",
        "similar_items",
        "recommendations",
        "item_feedback",
        "alerts",
        "rejected",
        "late",
    ] {
        // Alerts are written only with `[risk]`.
        if output == "alerts" && !single.join("alerts.jsonl").exists() {
            continue;
        }
        let lines = read_lines(cluster, output);
        assert_eq!(
            lines,
            read_lines(single, output),
            "{output} of 2 processes × 2 workers vs 1 worker"
        );
    }
    assert!(
        cluster.join("rejected").is_dir(),
        "each process writes its part"
    );
    let cluster_summary = read_json(&cluster.join("summary.json"));
    assert_eq!(cluster_summary["workers"], 4);
    let mut cluster_summary = deterministic_part(&cluster_summary);
    let mut single_summary = deterministic_part(&read_json(&single.join("summary.json")));
    // Parts are folders on 2 processes, files on one.
    for summary in [&mut cluster_summary, &mut single_summary] {
        let outputs = summary["outputs"].as_object_mut().unwrap();
        for name in ["rejected", "late"] {
            let lines = outputs
                .remove(&format!("{name}/"))
                .or_else(|| outputs.remove(&format!("{name}.jsonl")))
                .unwrap();
            outputs.insert(name.to_owned(), lines);
        }
    }
    assert_eq!(cluster_summary, single_summary);
}

/// Replays `slice` with `flags` on one worker and on 2 processes × 2
/// workers, asserts the same outputs, and returns the one worker's summary.
fn replay_on_two_processes_equals_one_worker(dir: &Path, slice: &Path, flags: &[&str]) -> Value {
    let (single, summary) = replay(slice, "online-retail", flags);
    let cluster = dir.join("cluster");
    let args = [
        &[
            "replay",
            "--input",
            slice.to_str().unwrap(),
            "--format",
            "online-retail",
            "--out",
            cluster.to_str().unwrap(),
        ],
        flags,
    ]
    .concat();
    run_cluster(&args, dir);
    assert_same_outputs(&cluster, single.path());
    summary
}

#[test]
fn replay_on_two_processes_of_two_workers_equals_one_worker() {
    let dir = tempfile::tempdir().unwrap();
    let slice = online_retail_lines(dir.path(), "slice", 0, 30_000);
    replay_on_two_processes_equals_one_worker(dir.path(), &slice, &[]);
}

#[test]
fn replay_with_risk_rules_on_two_processes_equals_one_worker() {
    let dir = tempfile::tempdir().unwrap();
    let slice = online_retail_lines(dir.path(), "slice", 0, 30_000);
    let config = dir.path().join("risk.toml");
    std::fs::write(&config, LOW_RISK_RULES).unwrap();
    let flags = ["--config", config.to_str().unwrap()];
    let summary = replay_on_two_processes_equals_one_worker(dir.path(), &slice, &flags);
    assert!(
        summary["outputs"]["alerts.jsonl"].as_u64().unwrap() > 0,
        "the low rules raise alerts on the slice: {summary}"
    );
}

#[test]
fn run_on_two_processes_of_two_workers_equals_one_worker() {
    let brokers = brokers();
    let dir = tempfile::tempdir().unwrap();
    let slice = online_retail_lines(dir.path(), "slice", 0, 30_000);
    let (single, _) = replay(&slice, "online-retail", &[]);
    let topics = RunTopics::new(&unique("cluster"));
    persona(&[
        "produce",
        "--input",
        slice.to_str().unwrap(),
        "--format",
        "online-retail",
        "--topic",
        &topics.input,
        "--brokers",
        &brokers,
    ]);
    let config = topics.config(&brokers, dir.path(), "");
    let cluster = dir.path().join("cluster");
    run_cluster(
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--format",
            "online-retail",
            "--out",
            cluster.to_str().unwrap(),
            "--until-end",
        ],
        dir.path(),
    );
    // Rejected records name topic/partition/offset rather than file:line.
    for output in ["profiles", "similar_items", "recommendations"] {
        assert_eq!(
            read_lines(&cluster, output),
            read_lines(single.path(), output),
            "{output} of a run on 2 processes × 2 workers vs a replay on 1 worker"
        );
    }
    let summary = deterministic_part(&read_json(&cluster.join("summary.json")));
    let replayed = deterministic_part(&read_json(&single.path().join("summary.json")));
    for key in [
        "records_read",
        "accepted",
        "rejected",
        "duplicates",
        "late",
        "users",
        "items",
    ] {
        assert_eq!(summary[key], replayed[key], "{key}");
    }
    let profiles = upsert_state(&brokers, &topics.profiles);
    assert_eq!(profiles, records_by(single.path(), "profiles", "user"));
}
