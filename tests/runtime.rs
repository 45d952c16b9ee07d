//! The runtime as a careless or hostile user meets it, through the real
//! binary: stdin with several workers, lateness that must not depend on the
//! worker count, absurd timestamps, failed runs that must leave `--out` as
//! it was, failing workers and unreachable peers that must end the run
//! promptly with a message, and worker counts beyond reason.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const HEADER: &str =
    "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country";

/// An Online Retail row of `user` buying `item` at `time` (`YYYY-MM-DD HH:MM:SS`).
fn row(invoice: u32, item: &str, time: &str, user: u32) -> String {
    format!("{invoice},{item},THING,2,{time},1.25,{user}.0,United Kingdom")
}

/// `rows` plausible rows, one minute apart from 2011-01-01, over 50 users and 40 items.
fn rows(count: u32) -> Vec<String> {
    (0..count)
        .map(|n| {
            let minute = n as i64;
            let time = format!(
                "2011-01-{:02} {:02}:{:02}:00",
                1 + minute / 1440,
                (minute / 60) % 24,
                minute % 60
            );
            row(
                500_000 + n,
                &format!("I{}", (n * 7) % 40),
                &time,
                10_000 + (n * 13) % 50,
            )
        })
        .collect()
}

fn write_log(dir: &Path, name: &str, rows: &[String]) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut text = String::from(HEADER);
    for row in rows {
        text.push('\n');
        text.push_str(row);
    }
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `persona ARGS` (with `stdin` if given) to its end; returns the exit
/// status, stderr and how long it took.
fn persona_status(args: &[&str], stdin: Option<&[u8]>) -> (bool, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_persona"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run persona");
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        started.elapsed(),
    )
}

/// Runs `persona replay` of the Online Retail preset from `input` into `out`.
fn replay_status(
    input: &str,
    out: &str,
    extra: &[&str],
    stdin: Option<&[u8]>,
) -> (bool, String, Duration) {
    let mut args = vec![
        "replay",
        "--input",
        input,
        "--format",
        "online-retail",
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    persona_status(&args, stdin)
}

const OUTPUTS: [&str; 5] = [
    "profiles",
    "similar_items",
    "recommendations",
    "rejected",
    "late",
];

#[test]
fn stdin_with_two_workers_reads_every_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path(), "log.csv", &rows(12_000));
    let (from_file, summary_file) = replay(&log, "online-retail", &["-w", "1"]);
    let out = dir.path().join("from-stdin");
    let (ok, stderr, _) = replay_status(
        "-",
        out.to_str().unwrap(),
        &["-w", "2"],
        Some(&std::fs::read(&log).unwrap()),
    );
    assert!(ok, "{stderr}");
    let summary_stdin = read_json(&out.join("summary.json"));
    assert_eq!(summary_stdin["records_read"], 12_000, "{summary_stdin}");
    assert_eq!(
        deterministic_part(&summary_file),
        deterministic_part(&summary_stdin)
    );
    for output in OUTPUTS {
        assert_eq!(
            read_lines(from_file.path(), output),
            read_lines(&out, output),
            "{output} differs"
        );
    }
}

/// Out-of-order rows, rows later than the allowed lateness (one hour) and
/// one absurd timestamp: the verdicts and outputs of every worker count
/// are those of one worker.
#[test]
fn lateness_is_a_function_of_the_input_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = rows(10_000);
    // Twenty hours behind its neighbours (2011-01-05 04:00): late.
    log[6_000] = row(1, "I1", "2011-01-04 08:00:00", 10_001);
    // Ten minutes behind (2011-01-05 20:40): out of order, still applied.
    log[7_000] = row(2, "I2", "2011-01-05 20:30:00", 10_002);
    // Far in the future: rejected, and the watermark does not jump to it.
    log[100] = row(3, "I3", "2099-12-01 08:26:00", 10_003);
    let log = write_log(dir.path(), "log.csv", &log);

    let (one, summary) = replay(&log, "online-retail", &["-w", "1"]);
    assert_eq!(summary["late"], 1, "{summary}");
    assert_eq!(summary["rejected"]["time_in_future"], 1, "{summary}");
    assert_eq!(summary["accepted"], 9_998, "{summary}");
    assert_balances(&summary);
    let late = read_lines(one.path(), "late");
    assert!(late[0].contains("2011-01-04 08:00:00"), "{late:?}");

    for workers in ["2", "3", "4"] {
        let (other, other_summary) = replay(&log, "online-retail", &["-w", workers]);
        assert_eq!(
            deterministic_part(&summary),
            deterministic_part(&other_summary),
            "-w {workers}"
        );
        for output in OUTPUTS {
            assert_eq!(
                read_lines(one.path(), output),
                read_lines(other.path(), output),
                "{output} differs with -w {workers}"
            );
        }
    }
}

#[test]
fn a_failed_replay_leaves_the_earlier_outputs_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let good = write_log(dir.path(), "good.csv", &rows(500));
    persona(&[
        "replay",
        "--input",
        good.to_str().unwrap(),
        "--format",
        "online-retail",
        "--out",
        out.to_str().unwrap(),
    ]);
    let before: Vec<Vec<String>> = OUTPUTS.iter().map(|o| read_lines(&out, o)).collect();
    let summary_before = std::fs::read(out.join("summary.json")).unwrap();

    // A gzip file cut short: the replay fails after it has written some
    // rejected lines into its staging folder.
    let mut text = String::from(HEADER);
    for n in 0..20_000 {
        text.push_str(&format!("\n{n},X,Y,1,2011-01-01 00:00:00,1,,UK"));
    }
    let mut gz = flate2_like_gzip(text.as_bytes());
    gz.truncate(gz.len() / 2);
    let broken = dir.path().join("broken.csv.gz");
    std::fs::write(&broken, gz).unwrap();
    let (ok, stderr, _) = replay_status(broken.to_str().unwrap(), out.to_str().unwrap(), &[], None);
    assert!(!ok, "a truncated gzip must fail the replay");
    assert!(stderr.contains("broken.csv.gz"), "{stderr}");
    let after: Vec<Vec<String>> = OUTPUTS.iter().map(|o| read_lines(&out, o)).collect();
    assert_eq!(before, after);
    assert_eq!(
        summary_before,
        std::fs::read(out.join("summary.json")).unwrap()
    );

    // A missing input creates nothing.
    let nowhere = dir.path().join("never-created");
    let (ok, stderr, _) = replay_status("no-such-file.csv", nowhere.to_str().unwrap(), &[], None);
    assert!(!ok);
    assert!(stderr.contains("no-such-file.csv"), "{stderr}");
    assert_eq!(
        stderr.matches("No such file").count(),
        1,
        "the cause is printed once: {stderr}"
    );
    assert!(!nowhere.exists());
}

/// gzip through the system's `gzip`, which every machine has.
fn flate2_like_gzip(bytes: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = child.stdin.take().unwrap();
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    output.stdout
}

#[test]
fn the_output_folder_is_never_read_as_input() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    write_log(&logs, "log.csv", &rows(100));
    for out in [logs.clone(), logs.join("out")] {
        let (ok, stderr, _) =
            replay_status(logs.to_str().unwrap(), out.to_str().unwrap(), &[], None);
        assert!(!ok, "--out {} was accepted", out.display());
        assert!(stderr.contains("inside the input folder"), "{stderr}");
    }
}

#[test]
fn a_thousand_workers_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path(), "log.csv", &rows(100));
    let out = dir.path().join("out");
    let (ok, stderr, took) = replay_status(
        log.to_str().unwrap(),
        out.to_str().unwrap(),
        &["-w", "1000"],
        None,
    );
    assert!(!ok);
    assert!(stderr.contains("-w 1000"), "{stderr}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

/// Process `process` of a two-process Online Retail replay of `input`
/// (stdin piped), with `extra` flags.
fn spawn_process(
    input: &str,
    out: &Path,
    hosts: &Path,
    process: &str,
    extra: &[&str],
) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_persona"))
        .args(["replay", "--input", input, "--format", "online-retail"])
        .args(["--out", out.to_str().unwrap(), "-n", "2", "-p", process])
        .args(["-h", hosts.to_str().unwrap()])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run persona")
}

#[test]
fn a_peer_that_never_starts_ends_the_run_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path(), "log.csv", &rows(100));
    let hosts = dir.path().join("hosts.txt");
    let missing = format!("127.0.0.1:{}", free_port());
    std::fs::write(&hosts, format!("127.0.0.1:{}\n{missing}\n", free_port())).unwrap();
    let out = dir.path().join("out");
    let (ok, stderr, took) = replay_status(
        log.to_str().unwrap(),
        out.to_str().unwrap(),
        &[
            "-n",
            "2",
            "-p",
            "0",
            "-h",
            hosts.to_str().unwrap(),
            "--connect-timeout",
            "3",
        ],
        None,
    );
    assert!(!ok);
    assert!(
        stderr.contains(&format!("process 1 at {missing}")),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert!(!out.exists());
}

#[test]
fn a_killed_peer_ends_the_other_process_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = shared_data("online_retail_all.csv.xz");
    let hosts = dir.path().join("hosts.txt");
    std::fs::write(
        &hosts,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()),
    )
    .unwrap();
    let out = dir.path().join("out");
    let spawn = |process: &str| spawn_process(input.to_str().unwrap(), &out, &hosts, process, &[]);
    let survivor = spawn("0");
    let mut victim = spawn("1");
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the replay ended too soon"
    );
    victim.kill().unwrap();
    victim.wait().unwrap();
    let killed_at = Instant::now();
    let output = survivor.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        killed_at.elapsed() < Duration::from_secs(30),
        "took {:?}",
        killed_at.elapsed()
    );
    assert!(
        stderr.contains("lost the connection to process 1"),
        "{stderr}"
    );
    assert!(!out.join("summary.json").exists());
}

#[test]
fn a_panicking_worker_ends_the_run_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path(), "log.csv", &rows(20_000));
    let out = dir.path().join("out");
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_persona"))
        .args([
            "replay",
            "--input",
            log.to_str().unwrap(),
            "--format",
            "online-retail",
            "--out",
            out.to_str().unwrap(),
            "-w",
            "2",
        ])
        .env("PERSONA_FAILPOINT", "worker-panic:1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("worker 1 panicked: injected failure"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(!out.exists());
}

#[test]
fn a_run_with_no_reachable_broker_warns_and_stops_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.toml");
    std::fs::write(
        &config,
        format!(
            "[source.kafka]\nbrokers = \"127.0.0.1:{}\"\ntopics = [\"retail\"]\ngroup_id = \"nobody\"\n",
            free_port()
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let child = Command::new(env!("CARGO_BIN_EXE_persona"))
        .args([
            "run",
            "--format",
            "online-retail",
            "--config",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(8_500));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let signalled = Instant::now();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "took {:?} to stop",
        signalled.elapsed()
    );
    assert!(!output.status.success());
    let warnings = stderr.matches("cannot reach the Kafka brokers").count();
    assert!((2..=3).contains(&warnings), "{stderr}");
    assert!(
        stderr.contains("stopped before the Kafka brokers"),
        "{stderr}"
    );
}

#[test]
fn a_stopped_peer_ends_the_other_process_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts.txt");
    let peer = format!("127.0.0.1:{}", free_port());
    std::fs::write(&hosts, format!("127.0.0.1:{}\n{peer}\n", free_port())).unwrap();
    let out = dir.path().join("out");
    let spawn = |process: &str| spawn_process("-", &out, &hosts, process, &["--peer-timeout", "2"]);
    // Process 0 reads stdin, which stays open: the run waits for more.
    let mut survivor = spawn("0");
    let mut victim = spawn("1");
    let mut stdin = survivor.stdin.take().unwrap();
    writeln!(stdin, "{HEADER}").unwrap();
    for line in rows(100) {
        writeln!(stdin, "{line}").unwrap();
    }
    stdin.flush().unwrap();
    // Longer than the peer timeout: live, connected peers are not ended.
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        survivor.try_wait().unwrap().is_none(),
        "ended while its peer was alive"
    );
    assert!(
        victim.try_wait().unwrap().is_none(),
        "ended while its peer was alive"
    );
    let status = Command::new("kill")
        .args(["-STOP", &victim.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let stopped_at = Instant::now();
    let output = survivor.wait_with_output().unwrap();
    let took = stopped_at.elapsed();
    victim.kill().unwrap();
    victim.wait().unwrap();
    drop(stdin);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(
        stderr.contains(&format!("process 1 at {peer} has not answered for 2 s")),
        "{stderr}"
    );
    assert!(!out.join("summary.json").exists());
}

/// The time of each line of a changelog.
fn changelog_times(dir: &Path, output: &str) -> Vec<u64> {
    let lines = read_lines(dir, &format!("{output}.changes"));
    let time =
        |line: &String| serde_json::from_str::<serde_json::Value>(line).unwrap()["time"].as_u64();
    lines.iter().map(|line| time(line).unwrap()).collect()
}

/// Collaborative filtering's last period (30 days in the preset) is cut
/// short by the end of the input: its refresh carries the last event's
/// tick, so no window expiration after the end had to be computed to reach
/// it; the files are those of every worker count.
#[test]
fn the_last_refresh_happens_at_the_end_of_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path(), "log.csv", &rows(3_000));
    let (one, _) = replay(&log, "online-retail", &["--changelog"]);
    let (two, _) = replay(&log, "online-retail", &["--changelog", "-w", "2"]);
    let end = *changelog_times(one.path(), "profiles")
        .iter()
        .max()
        .unwrap();
    for output in ["similar_items", "recommendations"] {
        let times = changelog_times(one.path(), output);
        assert!(!times.is_empty(), "{output} has no changes");
        assert_eq!(
            times.iter().max(),
            Some(&end),
            "{output} refreshed after the end"
        );
        assert_eq!(
            read_lines(one.path(), &format!("{output}.changes")),
            read_lines(two.path(), &format!("{output}.changes")),
        );
    }
    for output in OUTPUTS {
        assert_eq!(
            read_lines(one.path(), output),
            read_lines(two.path(), output)
        );
    }
}
