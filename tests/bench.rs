//! `persona bench`: the harness runs on tiny inputs and reports every field
//! (never its numbers: machines are noisy), and the hash-map baseline keeps
//! the very profiles the dataflow does.

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::input::InputSession;
use persona::bench::driver::{timestamp, Workload};
use persona::bench::hashmap::HashMapProfiles;
use persona::bench::synthetic::{generate, SyntheticSpec};
use persona::bench::synthetic_config;
use persona::config::PipelineConfig;
use persona::format::preset::preset;
use persona::runtime::load::load;
use persona_dataflows::profile::{profiles, AttributeVersion, CatalogVersion, Profile};
use persona_dataflows::{Event, Id};
use serde_json::Value;
use timely::dataflow::operators::{Exchange, Inspect, Probe};
use timely::dataflow::ProbeHandle;

use common::{fixture, persona, shared_data};

/// Asserts that `report` has every field of the JSON contract, each sane.
fn check_report(report: &Value, events: u64) {
    assert_eq!(report["events"], events, "{report:#}");
    let batches = report["batches"].as_u64().expect("batches");
    assert!(batches >= 1 && batches <= events, "{report:#}");
    assert!(report["events_per_s"].as_f64().expect("events_per_s") >= 0.0);
    let latency = &report["latency_ms"];
    let percentiles: Vec<f64> = ["p50", "p90", "p99", "p999", "max"]
        .iter()
        .map(|name| {
            latency[name]
                .as_f64()
                .unwrap_or_else(|| panic!("latency_ms.{name} missing: {report:#}"))
        })
        .collect();
    assert!(percentiles[0] > 0.0, "{report:#}");
    assert!(
        percentiles.windows(2).all(|pair| pair[0] <= pair[1]),
        "percentiles out of order: {latency}"
    );
    assert!(report["peak_rss_bytes"].as_u64().expect("peak_rss_bytes") > 0);
    // Measured; only the catalog and user attributes are arranged, and
    // these logs have neither.
    assert!(
        report["arranged_records"]
            .as_i64()
            .expect("arranged_records")
            >= 0
    );
    let recompute = &report["baselines"]["recompute"];
    for field in ["events", "batches", "ms_per_batch", "persona_ms_per_batch"] {
        assert!(
            recompute[field].is_number(),
            "recompute.{field}: {report:#}"
        );
    }
    let hashmap = &report["baselines"]["hashmap"];
    for field in ["events", "events_per_s", "persona_profiles_events_per_s"] {
        assert!(hashmap[field].is_number(), "hashmap.{field}: {report:#}");
    }
    assert_eq!(hashmap["events"], events);
    for ratio in ["recompute_vs_persona", "hashmap_vs_persona_profiles"] {
        let value = report["ratios"][ratio].as_f64().expect(ratio);
        assert!(
            value.is_finite() && value > 0.0,
            "ratios.{ratio}: {report:#}"
        );
    }
}

#[test]
fn bench_json_on_the_dirty_retail_fixture_has_every_field() {
    let input = fixture("retail_dirty.csv");
    let stdout = persona(&[
        "bench",
        "--input",
        input.to_str().unwrap(),
        "--format",
        "online-retail",
        "--batch-size",
        "2",
        "--search-steps",
        "2",
        "--json",
    ]);
    let report: Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    let events = report["events"].as_u64().expect("events");
    assert!(events > 0);
    check_report(&report, events);
    assert_eq!(report["open_loop"].as_array().expect("open_loop").len(), 2);
}

#[test]
fn bench_json_on_a_synthetic_log_has_every_field_and_plots() {
    let plots = tempfile::tempdir().expect("temp dir");
    let stdout = persona(&[
        "bench",
        "--synthetic",
        "3000",
        "--batch-size",
        "100",
        "--search-steps",
        "2",
        "--recompute-events",
        "500",
        "--scaling",
        "1000,2000",
        "--operators",
        "-w",
        "2",
        "--plots",
        plots.path().to_str().unwrap(),
        "--json",
    ]);
    let report: Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    check_report(&report, 3000);
    assert_eq!(report["workers"], 2);
    assert_eq!(report["scaling"].as_array().expect("scaling").len(), 2);
    assert!(!report["operators"]
        .as_array()
        .expect("operators")
        .is_empty());
    for plot in ["latency_vs_rate.svg", "cost_vs_size.svg"] {
        let svg = std::fs::read_to_string(plots.path().join(plot)).expect(plot);
        assert!(svg.starts_with("<svg"), "{plot} is not an SVG");
    }
}

#[test]
fn bench_table_closed_loop_names_the_percentiles() {
    let stdout = persona(&[
        "bench",
        "--synthetic",
        "2000",
        "--pipeline",
        "profiles",
        "--closed-loop",
        "--no-baselines",
    ]);
    for label in ["p50", "p99", "p99.9", "max", "events/s", "peak RSS"] {
        assert!(stdout.contains(label), "no {label} in:\n{stdout}");
    }
}

#[test]
fn bench_rejects_bad_flags_with_a_message() {
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_persona"))
            .args(args)
            .output()
            .expect("run persona");
        assert!(!output.status.success(), "persona {args:?} succeeded");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = run(&["bench", "--synthetic", "100", "--batch-size", "0"]);
    assert!(stderr.contains("--batch-size"), "{stderr}");
    let stderr = run(&["bench", "--synthetic", "100", "-n", "2"]);
    assert!(stderr.contains("one process"), "{stderr}");
    let stderr = run(&[
        "bench",
        "--input",
        "nowhere.csv",
        "--format",
        "online-retail",
    ]);
    assert!(stderr.contains("nowhere.csv"), "{stderr}");
    let stderr = run(&["bench", "--synthetic", "100", "--format", "otto"]);
    assert!(stderr.contains("--format"), "{stderr}");
}

/// Profile updates as the dataflow emits them.
type ProfileUpdates = Vec<((Id, Profile), u64, isize)>;

/// The profile dataflow's output at the end of each batch, on `workers` workers.
fn dataflow_profiles(workload: Arc<Workload>, workers: usize) -> Vec<BTreeMap<Id, Profile>> {
    let times: Vec<u64> = workload.batches.iter().map(|b| b.last_time).collect();
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let peers = worker.peers();
        let config = &workload.config;
        let mut input: InputSession<u64, Event, isize> = InputSession::new();
        let mut catalog: InputSession<u64, (Id, CatalogVersion), isize> = InputSession::new();
        let mut attributes: InputSession<u64, (Id, AttributeVersion), isize> = InputSession::new();
        let probe = ProbeHandle::new();
        let output: Rc<RefCell<ProfileUpdates>> = Rc::default();
        let sink = output.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            let events = persona::clean::mark_cancellations(input.to_collection(scope));
            profiles(
                events,
                Some(catalog.to_collection(scope)),
                attributes.to_collection(scope),
                &config.profile,
            )
            .inner
            .exchange(|_| 0)
            .inspect(move |update: &((Id, Profile), u64, isize)| {
                sink.borrow_mut().push(update.clone())
            })
            .probe_with(&probe);
        });
        catalog.close();
        attributes.close();
        for batch in &workload.batches {
            for position in batch.updates.clone().filter(|p| p % peers == index) {
                let (event, diff) = &workload.updates[position];
                input.update_at(event.clone(), timestamp(event, &config.time), *diff);
            }
            input.advance_to(batch.last_time + 1);
            input.flush();
            worker.step_while(|| probe.less_than(input.time()));
        }
        output.take()
    })
    .expect("timely");
    let mut updates: ProfileUpdates = guards
        .join()
        .into_iter()
        .flat_map(|result| result.expect("worker"))
        .collect();
    updates.sort_by_key(|(_, time, _)| *time);
    let mut state: BTreeMap<(Id, Profile), isize> = BTreeMap::new();
    let mut applied = 0;
    times
        .iter()
        .map(|&at| {
            while applied < updates.len() && updates[applied].1 <= at {
                let (record, _, diff) = updates[applied].clone();
                *state.entry(record).or_insert(0) += diff;
                applied += 1;
            }
            state.retain(|_, count| *count != 0);
            state
                .iter()
                .map(|((user, profile), count)| {
                    assert_eq!(*count, 1, "user {user} has profile multiplicity {count}");
                    (*user, profile.clone())
                })
                .collect()
        })
        .collect()
}

/// Asserts the hash-map baseline holds the dataflow's profiles after every batch.
fn assert_identical_profiles(
    updates: Vec<(Event, isize)>,
    config: PipelineConfig,
    batch: usize,
    workers: usize,
) {
    let workload = Arc::new(Workload::new(updates, batch, config, false));
    assert!(workload.batches.len() > 1, "too few batches to compare");
    let expected = dataflow_profiles(workload.clone(), workers);
    let mut baseline = HashMapProfiles::new(&workload.config.profile);
    for (batch, expected) in workload.batches.iter().zip(&expected) {
        for (event, diff) in &workload.updates[batch.updates.clone()] {
            baseline.apply(event, timestamp(event, &workload.config.time), *diff);
        }
        baseline.advance_to(batch.last_time);
        let actual: BTreeMap<Id, Profile> = baseline
            .profiles()
            .iter()
            .map(|(user, profile)| (*user, profile.clone()))
            .collect();
        if actual != *expected {
            let user = expected
                .keys()
                .chain(actual.keys())
                .find(|user| actual.get(user) != expected.get(user))
                .expect("a differing user");
            panic!(
                "at time {}: {} dataflow profiles, {} hash-map profiles; user {user}:\n dataflow {:?}\n hash map {:?}",
                batch.last_time,
                expected.len(),
                actual.len(),
                expected.get(user),
                actual.get(user)
            );
        }
    }
    assert!(!expected.last().expect("a batch").is_empty());
}

fn load_preset(path: &Path, format: &str) -> (Vec<(Event, isize)>, PipelineConfig) {
    let config = preset(format, Some(path)).expect("preset");
    let log = load(path, &config).expect("load");
    (log.updates, config)
}

#[test]
fn hashmap_profiles_equal_the_dataflow_on_online_retail() {
    let (mut updates, config) =
        load_preset(&shared_data("online_retail_all.csv.xz"), "online-retail");
    // Two months of the real log, cancellations and all.
    updates.truncate(60_000);
    assert!(updates.iter().any(|(_, diff)| *diff < 0));
    assert_identical_profiles(updates, config, 1500, 1);
}

#[test]
fn hashmap_profiles_equal_the_dataflow_on_the_dirty_fixture() {
    let (updates, config) = load_preset(&fixture("retail_dirty.csv"), "online-retail");
    assert_identical_profiles(updates, config, 1, 1);
}

#[test]
fn hashmap_profiles_equal_the_dataflow_on_a_synthetic_stream() {
    let mut spec = SyntheticSpec::with_events(20_000, 7);
    spec.days = 60;
    let updates = generate(&spec);
    assert!(updates.iter().any(|(_, diff)| *diff < 0));
    assert!(updates.iter().any(|(event, _)| event.rating.is_some()));
    assert_identical_profiles(updates.clone(), synthetic_config(), 250, 1);
    assert_identical_profiles(updates, synthetic_config(), 1000, 2);
}

#[test]
fn synthetic_logs_are_seeded() {
    let spec = SyntheticSpec::with_events(2_000, 3);
    assert_eq!(generate(&spec), generate(&spec));
    let other = SyntheticSpec::with_events(2_000, 4);
    assert_ne!(generate(&spec), generate(&other));
    assert_eq!(generate(&spec).len(), 2_000);
}

#[test]
fn bench_with_risk_reports_its_cost_and_each_interleaved_round() {
    let input = fixture("retail_dirty.csv");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("risk.toml");
    std::fs::write(&config, "[risk]\n").expect("config");
    let args = [
        "bench",
        "--input",
        input.to_str().unwrap(),
        "--format",
        "online-retail",
        "--config",
        config.to_str().unwrap(),
        "--pipeline",
        "profiles",
        "--closed-loop",
        "--no-baselines",
    ];
    let stdout = persona(&[&args[..], &["--json"]].concat());
    let report: Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    let cost = &report["risk_cost"];
    let field = |name: &str| {
        cost[name]
            .as_f64()
            .unwrap_or_else(|| panic!("risk_cost.{name}: {report:#}"))
    };
    let (alone, with_risk) = (field("profiles_events_per_s"), field("with_events_per_s"));
    assert!(alone > 0.0 && with_risk > 0.0, "{report:#}");
    assert!(
        (field("cost") - alone / with_risk).abs() < 1e-9,
        "{report:#}"
    );
    let rounds: Vec<f64> = cost["pair_costs"]
        .as_array()
        .expect("pair_costs")
        .iter()
        .map(|round| round.as_f64().expect("a ratio"))
        .collect();
    assert_eq!(rounds.len(), 9, "{report:#}");
    assert!(rounds.iter().all(|round| round.is_finite() && *round > 0.0));
    assert!(
        rounds.windows(2).all(|w| w[0] <= w[1]),
        "not ascending: {rounds:?}"
    );
    // The cost is the rounds' times totalled: a weighted mean of their
    // ratios, so within their range.
    let cost_ratio = field("cost");
    assert!(
        rounds[0] - 1e-9 <= cost_ratio && cost_ratio <= rounds[8] + 1e-9,
        "{cost_ratio} outside {rounds:?}"
    );

    let table = persona(&args);
    let line = table
        .lines()
        .find(|line| line.starts_with("risk cost"))
        .unwrap_or_else(|| panic!("no risk cost line in:\n{table}"));
    assert!(line.contains(" (rounds "), "{line}");
}
