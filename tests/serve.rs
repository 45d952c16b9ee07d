//! `persona serve` through the real binary and a real HTTP client: answers
//! equal the replay of the same log on 1, 2 and 4 workers and on each of 2
//! processes × 2 workers, a POSTed purchase
//! shows in the profile and leaves the recommendations, a forgotten user
//! leaves every answer as if they had never existed, and every error code. No timing is asserted: waits are bounded, only to fail rather
//! than hang.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

const CONFIG: &str = r#"
[input]
format = "jsonl"
[input.mapping]
user = "user"
item = "item"
action = "action"
time = "ts"
quantity = "qty"
[time]
tick_ms = 100
[recommend]
neighbors = 5
top_k = 5
[serve]
lateness_ms = 0
# Tests share the cores with other tests: a dataflow under SCHED_IDLE
# would wait for them (the default is checked on its own below).
reads_first = false
"#;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The time of a live event to POST: a second ahead of the clock, so that
/// the server's open tick (`arrival − lateness_ms`, one second) cannot have
/// passed it when it arrives, however loaded the machine is on the way.
fn live_ms() -> i64 {
    now_ms() + 1_000
}

/// A log of the last minutes: 24 users over 30 items, skewed so histories
/// overlap. Recent, so that no profile window passes between the end of
/// the log and the wall clock the server runs on.
fn write_log(path: &Path) {
    let start = now_ms() - 10 * 60 * 1000;
    let mut lines = String::new();
    let mut state = 7u64;
    for n in 0..600i64 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let user = (state >> 33) % 24;
        let item = ((state >> 20) % 30).min((state >> 45) % 30);
        let action = ["view", "view", "cart", "purchase"][((state >> 10) % 4) as usize];
        let event = json!({"user": format!("u{user}"), "item": format!("i{item}"),
                           "action": action, "ts": start + n * 500, "qty": 1});
        lines.push_str(&event.to_string());
        lines.push('\n');
    }
    std::fs::write(path, lines).unwrap();
}

/// A running `persona serve`, killed when dropped.
struct Server {
    child: Child,
    base: String,
    agent: ureq::Agent,
}

impl Server {
    fn start(config: &Path, log: &Path, out: &Path, workers: &str) -> Server {
        let server = Server::spawn(config, log, out, &["-w", workers]);
        server.wait_ready();
        server
    }

    /// Starts `persona serve` with `timely` flags, without waiting for it.
    fn spawn(config: &Path, log: &Path, out: &Path, timely: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_persona"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .args(["--input", log.to_str().unwrap()])
            .args(["--out", out.to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0"])
            .args(timely)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start persona serve");
        // The first line naming the address; the rest of stdout (timely
        // prints there too) is drained, so that no write to it fails.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let address = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| persona::serve::parse_listening(&line))
            .expect("persona serve prints the address it listens on");
        std::thread::spawn(move || lines.for_each(drop));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Server {
            child,
            base: format!("http://{address}"),
            agent,
        }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if self.get("/readyz").0 == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "not ready after 120 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None, None)
    }

    fn delete(&self, path: &str) -> (u16, Value) {
        self.call("DELETE", path, None, None)
    }

    fn post(&self, path: &str, body: &str) -> (u16, Value) {
        self.call("POST", path, None, Some(body))
    }

    /// `method path` with `Authorization: Bearer token` when given; the
    /// status and the JSON answer (a string if it is not JSON).
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let bearer = token.map(|t| format!("Bearer {t}"));
        let response = match method {
            "GET" | "DELETE" => {
                let mut request = match method {
                    "GET" => self.agent.get(url),
                    _ => self.agent.delete(url),
                };
                if let Some(bearer) = &bearer {
                    request = request.header("authorization", bearer);
                }
                request.call()
            }
            "POST" => {
                let mut request = self
                    .agent
                    .post(url)
                    .header("content-type", "application/json");
                if let Some(bearer) = &bearer {
                    request = request.header("authorization", bearer);
                }
                request.send(body.unwrap_or_default())
            }
            other => panic!("no method {other}"),
        };
        let mut response = response.unwrap();
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap();
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    /// Stops it with SIGTERM; asserts a clean exit.
    fn stop(self) {
        self.signal();
        self.wait_stopped();
    }

    /// Sends SIGTERM. Every process of a run is signalled before any is
    /// waited for: a process ends once its peers do.
    fn signal(&self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
    }

    /// Waits for the exit after [`Server::signal`]; asserts it is clean.
    fn wait_stopped(mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "persona serve exited with {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "persona serve did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An answer without its `as_of`, which the files do not carry.
fn without_as_of(mut answer: Value) -> Value {
    let as_of = answer.as_object_mut().unwrap().remove("as_of");
    assert!(as_of.is_some_and(|t| t.is_u64()), "no as_of in {answer}");
    answer
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let log = dir.path().join("events.jsonl");
    write_log(&log);
    (dir, config, log)
}

/// `persona replay` of the log with the config, into `dir/replayed`.
fn replay_log(dir: &Path, config: &Path, log: &Path) -> std::path::PathBuf {
    let replayed = dir.join("replayed");
    persona(&[
        "replay",
        "--config",
        config.to_str().unwrap(),
        "--input",
        log.to_str().unwrap(),
        "--out",
        replayed.to_str().unwrap(),
    ]);
    replayed
}

#[test]
fn answers_equal_the_replay_of_the_same_log_on_one_two_and_four_workers() {
    let (dir, config, log) = setup();
    let replayed = replay_log(dir.path(), &config, &log);
    let profiles = records_by(&replayed, "profiles", "user");
    let similar = records_by(&replayed, "similar_items", "item");
    let recommendations = records_by(&replayed, "recommendations", "user");
    assert!(profiles.len() > 20 && similar.len() > 20, "too small a log");
    assert!(recommendations.values().any(|r| r.get("popular").is_none()));

    for workers in ["1", "2", "4"] {
        let server = Server::start(&config, &log, &dir.path().join("out"), workers);
        assert_answers_equal(&server, &replayed, &format!("-w {workers}"));
        server.stop();
    }
}

/// Every profile, similar-items list and recommendation list `server`
/// answers equals the replay's in `replayed`; `k` cuts the same ranking.
fn assert_answers_equal(server: &Server, replayed: &Path, run: &str) {
    let profiles = records_by(replayed, "profiles", "user");
    let similar = records_by(replayed, "similar_items", "item");
    let recommendations = records_by(replayed, "recommendations", "user");
    for (user, expected) in &profiles {
        let (status, answer) = server.get(&format!("/v1/users/{user}/profile"));
        assert_eq!(status, 200, "{answer}");
        assert_eq!(&without_as_of(answer), expected, "profile of {user}, {run}");
    }
    for (item, expected) in &similar {
        let (status, answer) = server.get(&format!("/v1/items/{item}/similar"));
        assert_eq!(status, 200, "{answer}");
        assert_eq!(&without_as_of(answer), expected, "similar to {item}, {run}");
    }
    for (user, expected) in &recommendations {
        let (status, answer) = server.get(&format!("/v1/users/{user}/recommendations"));
        assert_eq!(status, 200, "{answer}");
        let mut expected = expected.clone();
        if expected.get("popular").is_none() {
            expected["popular"] = json!(false);
        }
        assert_eq!(
            &without_as_of(answer),
            &expected,
            "recommendations of {user}, {run}"
        );
    }
    let (item, expected) = similar.iter().next().unwrap();
    let (_, two) = server.get(&format!("/v1/items/{item}/similar?k=2"));
    let neighbors = expected["neighbors"].as_array().unwrap();
    assert_eq!(
        two["neighbors"].as_array().unwrap()[..],
        neighbors[..neighbors.len().min(2)]
    );
}

/// 2 processes × 2 workers: each process answers for every key, equal to
/// the replay, and an event POSTed to one shows in the other's answers.
#[test]
fn every_process_of_two_answers_for_every_key() {
    let (dir, config, log) = setup();
    let replayed = replay_log(dir.path(), &config, &log);
    let ports: Vec<std::net::TcpListener> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let hostfile = dir.path().join("hostfile");
    let hosts: Vec<String> = ports
        .iter()
        .map(|l| format!("127.0.0.1:{}", l.local_addr().unwrap().port()))
        .collect();
    std::fs::write(&hostfile, hosts.join("\n") + "\n").unwrap();
    drop(ports);
    let out = dir.path().join("out");
    let servers: Vec<Server> = (0..2)
        .map(|p| {
            let process = p.to_string();
            let timely = [
                "-w",
                "2",
                "-n",
                "2",
                "-p",
                &process,
                "-h",
                hostfile.to_str().unwrap(),
            ];
            Server::spawn(&config, &log, &out, &timely)
        })
        .collect();
    for (p, server) in servers.iter().enumerate() {
        server.wait_ready();
        assert_answers_equal(server, &replayed, &format!("process {p} of 2 × 2 workers"));
    }
    let event =
        json!({"user": "u3", "item": "i29", "action": "purchase", "ts": live_ms(), "qty": 1});
    let (status, answer) = servers[1].post("/v1/events?wait=true", &event.to_string());
    assert_eq!(status, 200, "{answer}");
    let visible_at = answer["visible_at"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let profile = loop {
        let (_, profile) = servers[0].get("/v1/users/u3/profile");
        if profile["as_of"].as_u64() >= Some(visible_at) {
            break profile;
        }
        assert!(
            Instant::now() < deadline,
            "process 0 never reached {visible_at}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let expected = records_by(&replayed, "profiles", "user")["u3"]["counts"]["purchase"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(profile["counts"]["purchase"], expected + 1, "{profile}");
    servers.iter().for_each(Server::signal);
    servers.into_iter().for_each(Server::wait_stopped);
}

#[test]
fn a_posted_purchase_shows_in_the_profile_and_leaves_the_recommendations() {
    let (dir, config, log) = setup();
    let server = Server::start(&config, &log, &dir.path().join("out"), "2");
    // A user with a personal list, and the item at its top.
    let (user, item) = (0..24)
        .find_map(|u| {
            let (_, recs) = server.get(&format!("/v1/users/u{u}/recommendations"));
            let top = recs["items"].as_array()?.first()?["item"]
                .as_str()?
                .to_owned();
            (recs["popular"] == json!(false)).then(|| (format!("u{u}"), top))
        })
        .expect("a user with a personal list");
    let (_, before) = server.get(&format!("/v1/users/{user}/profile"));
    let purchases = before["counts"]["purchase"].as_u64().unwrap_or(0);

    let event =
        json!({"user": user, "item": item, "action": "purchase", "ts": live_ms(), "qty": 1});
    let (status, answer) = server.post("/v1/events?wait=true", &event.to_string());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 1, "{answer}");
    assert!(
        answer["as_of"].as_u64() >= answer["visible_at"].as_u64(),
        "{answer}"
    );

    let (_, after) = server.get(&format!("/v1/users/{user}/profile"));
    assert_eq!(after["counts"]["purchase"], purchases + 1, "{after}");
    assert!(after["as_of"].as_u64() >= answer["visible_at"].as_u64());
    let (_, recs) = server.get(&format!("/v1/users/{user}/recommendations"));
    let items: Vec<&str> = recs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["item"].as_str().unwrap())
        .collect();
    assert!(
        !items.contains(&item.as_str()),
        "{item} still recommended: {recs}"
    );

    // A new user is served the popular list, then has a profile.
    let (_, cold) = server.get("/v1/users/newcomer/recommendations?k=3");
    assert_eq!(cold["popular"], true, "{cold}");
    assert_eq!(cold["items"].as_array().unwrap().len(), 3, "{cold}");
    let event = json!({"user": "newcomer", "item": "i1", "action": "view", "ts": live_ms()});
    let (status, _) = server.post("/v1/events?wait=true", &event.to_string());
    assert_eq!(status, 200);
    let (status, profile) = server.get("/v1/users/newcomer/profile");
    assert_eq!(
        (status, &profile["counts"]),
        (200, &json!({"view": 1})),
        "{profile}"
    );
    server.stop();
}

#[test]
fn posted_impressions_and_clicks_show_in_the_item_feedback() {
    let (dir, config, log) = setup();
    let server = Server::start(&config, &log, &dir.path().join("out"), "2");
    // The log has no feedback events: no item has feedback yet.
    let (status, answer) = server.get("/v1/items/i1/feedback");
    assert_eq!(
        (status, &answer["error"]["code"]),
        (404, &json!("unknown_item")),
        "{answer}"
    );

    let feedback = |user: &str, item: &str, action: &str| json!({"user": user, "item": item, "action": action, "ts": live_ms()});
    let body = json!([
        feedback("u1", "i1", "impression"),
        feedback("u2", "i1", "impression"),
        feedback("u3", "i1", "impression"),
        feedback("u4", "i1", "impression"),
        feedback("u1", "i1", "rec_click"),
        feedback("u5", "i2", "not_interested"),
    ])
    .to_string();
    let (status, answer) = server.post("/v1/events?wait=true", &body);
    assert_eq!((status, &answer["accepted"]), (200, &json!(6)), "{answer}");

    let (status, i1) = server.get("/v1/items/i1/feedback");
    assert_eq!(status, 200, "{i1}");
    assert!(
        i1["as_of"].as_u64() >= answer["visible_at"].as_u64(),
        "{i1}"
    );
    let counts = json!({"impressions": 4, "rec_clicks": 1, "not_interested": 0, "ctr": 0.25});
    for (key, value) in counts.as_object().unwrap() {
        assert_eq!(&i1[key], value, "{key} of {i1}");
    }
    // Every window holds the events of a moment ago.
    for (days, window) in i1["windows"].as_object().unwrap() {
        assert_eq!(window, &counts, "window {days} of {i1}");
    }
    let (_, i2) = server.get("/v1/items/i2/feedback");
    assert_eq!(
        (&i2["item"], &i2["not_interested"], &i2["ctr"]),
        (&json!("i2"), &json!(1), &Value::Null),
        "{i2}"
    );
    server.stop();
}

#[test]
fn a_spend_burst_raises_an_alert_that_its_cancellation_retracts() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let risk = r#"
[risk]
velocity_secs = [3600]
[[risk.rules]]
name = "hour_spend"
feature = "velocity.3600.spend"
op = ">="
threshold = 10000
"#;
    let mapped = CONFIG.replace(
        "quantity = \"qty\"",
        "quantity = \"qty\"\nprice = \"price\"",
    );
    std::fs::write(&config, format!("{mapped}{risk}")).unwrap();
    let log = dir.path().join("events.jsonl");
    write_log(&log);
    let server = Server::start(&config, &log, &dir.path().join("out"), "2");
    let alerts = |user: &str| {
        let (status, answer) = server.get(&format!("/v1/users/{user}/alerts"));
        assert_eq!(status, 200, "{answer}");
        without_as_of(answer)
    };
    assert_eq!(alerts("u1"), json!({"user": "u1", "alerts": []}));

    // 2 × 60.00 within the hour: the rule holds, an alert is raised.
    let post = |action: &str, qty: i64| {
        let event = json!({"user": "u1", "item": "i1", "action": action,
                           "ts": live_ms(), "qty": qty, "price": "60.00"});
        let (status, answer) = server.post("/v1/events?wait=true", &event.to_string());
        assert_eq!((status, &answer["accepted"]), (200, &json!(1)), "{answer}");
    };
    post("purchase", 2);
    let raised = alerts("u1");
    let standing = raised["alerts"].as_array().unwrap();
    assert_eq!(standing.len(), 1, "{raised}");
    assert_eq!(standing[0]["rule"], "hour_spend");
    assert_eq!(standing[0]["value"], 12000.0);
    // Another purchase while it holds raises nothing new.
    post("purchase", 1);
    assert_eq!(alerts("u1"), raised);
    // Cancelling 2 units leaves 60.00: the taking back retracts it.
    post("cancellation", 2);
    assert_eq!(alerts("u1"), json!({"user": "u1", "alerts": []}));
    server.stop();
}

/// With `[segments.kmeans]`, served profiles carry the replay's clusters,
/// and similar users are the nearest members of the user's cluster, at the
/// distances the model's standardisation gives.
#[test]
fn similar_users_are_the_nearest_of_the_same_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let kmeans = "[segments.kmeans]\nk = 3\nfeatures = [\"recency\", \"events\"]\n";
    std::fs::write(&config, format!("{CONFIG}{kmeans}")).unwrap();
    let log = dir.path().join("events.jsonl");
    write_log(&log);
    let replayed = replay_log(dir.path(), &config, &log);
    let server = Server::start(&config, &log, &dir.path().join("out"), "2");
    assert_answers_equal(&server, &replayed, "-w 2, [segments.kmeans]");

    // The vectors, standardised as segments.jsonl says.
    let model: Value = serde_json::from_str(&read_lines(&replayed, "segments")[0]).unwrap();
    let profiles = records_by(&replayed, "profiles", "user");
    let point = |profile: &Value| -> [f64; 2] {
        let recency = -(profile["last_seen"].as_i64().unwrap() as f64) / 86_400_000.0;
        let counts = profile["counts"].as_object().unwrap();
        let events: i64 = counts.values().map(|n| n.as_i64().unwrap()).sum();
        let raw = [recency, (events.max(0) as f64).ln_1p()];
        let scale = |x: f64, feature: &str| {
            (x - model["mean"][feature].as_f64().unwrap())
                / model["scale"][feature].as_f64().unwrap()
        };
        [scale(raw[0], "recency"), scale(raw[1], "events")]
    };
    for (user, profile) in profiles.iter().take(6) {
        let cluster = &profile["cluster"]["id"];
        let mut expected: Vec<f64> = profiles
            .iter()
            .filter(|(other, theirs)| *other != user && &theirs["cluster"]["id"] == cluster)
            .map(|(_, theirs)| {
                let (a, b) = (point(profile), point(theirs));
                ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
            })
            .collect();
        expected.sort_by(f64::total_cmp);
        let (status, answer) = server.get(&format!("/v1/users/{user}/similar?k=4"));
        assert_eq!(status, 200, "{answer}");
        assert_eq!(&answer["cluster"], cluster);
        let similar = answer["users"].as_array().unwrap();
        assert_eq!(similar.len(), expected.len().min(4), "{answer}");
        for (entry, distance) in similar.iter().zip(&expected) {
            let other = &profiles[entry["user"].as_str().unwrap()];
            assert_eq!(&other["cluster"]["id"], cluster, "{answer}");
            let served = entry["distance"].as_f64().unwrap();
            assert!((served - distance).abs() < 1e-9, "{answer}: {distance}");
        }
    }
    assert_eq!(server.get("/v1/users/nobody/similar").0, 404);
    assert_eq!(server.get("/v1/users/u1/similar?k=0").0, 400);
    server.stop();
}

/// With `[recommend.mf] embeddings` and `mf_weight = 0.5`, served
/// profiles carry the replay's factors, the embedding endpoint answers
/// them, and the blended recommendations are the replay's.
#[test]
fn embeddings_and_blended_recommendations_are_the_replays() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let blend = CONFIG.replace("top_k = 5\n", "top_k = 5\nmf_weight = 0.5\n");
    assert_ne!(blend, CONFIG);
    let mf = "[recommend.mf]\nembeddings = true\nfactors = 4\n";
    std::fs::write(&config, format!("{blend}{mf}")).unwrap();
    let log = dir.path().join("events.jsonl");
    write_log(&log);
    let replayed = replay_log(dir.path(), &config, &log);
    let server = Server::start(&config, &log, &dir.path().join("out"), "2");
    assert_answers_equal(&server, &replayed, "-w 2, embeddings and mf_weight 0.5");
    let profiles = records_by(&replayed, "profiles", "user");
    assert!(!profiles.is_empty());
    for (user, profile) in &profiles {
        let (status, answer) = server.get(&format!("/v1/users/{user}/embedding"));
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["user"], Value::from(user.as_str()));
        assert_eq!(answer["factors"], profile["factors"], "{user}");
        assert_eq!(answer["factors"].as_array().unwrap().len(), 4);
    }
    let (status, answer) = server.get("/v1/users/nobody/embedding");
    assert_eq!(
        (status, &answer["error"]["code"]),
        (404, &Value::from("unknown_user"))
    );
    server.stop();
}

/// A client that trickles a request's headers (slowloris) loses its
/// connection after `[serve] header_timeout_ms`; others are answered.
#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use std::io::{Read, Write};
    let (dir, _, log) = setup();
    let config = dir.path().join("timeout.toml");
    std::fs::write(&config, format!("{CONFIG}header_timeout_ms = 300\n")).unwrap();
    let server = Server::start(&config, &log, &dir.path().join("out"), "1");
    let address = server.base.trim_start_matches("http://").to_owned();
    let mut stalled = std::net::TcpStream::connect(&address).unwrap();
    stalled
        .write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = Vec::new();
    // Closed by the server: the end of the stream (or a reset), not the
    // read timeout, which fails as `WouldBlock`.
    match stalled.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}"),
    }
    let (status, _) = server.get("/v1/status");
    assert_eq!(status, 200);
    server.stop();
}

#[test]
fn bad_requests_get_json_errors_with_stable_codes_and_ingest_nothing() {
    let (dir, config, log) = setup();
    let out = dir.path().join("out");
    let server = Server::start(&config, &log, &out, "1");
    let code = |(status, body): (u16, Value)| {
        (
            status,
            body["error"]["code"].as_str().unwrap_or("").to_owned(),
        )
    };
    let error = |status: u16, code: &str| (status, code.to_owned());

    assert_eq!(
        code(server.get("/v1/users/nobody/profile")),
        error(404, "unknown_user")
    );
    assert_eq!(
        code(server.get("/v1/users/u1/alerts")),
        error(404, "risk_not_configured")
    );
    assert_eq!(
        code(server.get("/v1/items/nothing/similar")),
        error(404, "unknown_item")
    );
    assert_eq!(
        code(server.get("/v1/users/u1/similar")),
        error(404, "segments_not_configured")
    );
    assert_eq!(
        code(server.get("/v1/users/u1/embedding")),
        error(404, "embeddings_not_configured")
    );
    assert_eq!(code(server.get("/v1/nowhere")), error(404, "not_found"));
    // A known route with another method.
    assert_eq!(
        code(server.post("/v1/users/u1/profile", "{}")),
        error(405, "method_not_allowed")
    );
    assert_eq!(
        code(server.call("DELETE", "/v1/events", None, None)),
        error(405, "method_not_allowed")
    );
    // Ids that are not UTF-8 once percent-decoded.
    for route in ["/v1/users/%FF/profile", "/v1/items/%FE%FF/similar"] {
        assert_eq!(code(server.get(route)), error(400, "bad_id"));
    }
    assert_eq!(
        code(server.get("/v1/users/u1/recommendations?k=1&k=2")),
        error(400, "bad_query")
    );
    for k in ["0", "-1", "ten", "10001"] {
        assert_eq!(
            code(server.get(&format!("/v1/users/u1/recommendations?k={k}"))),
            error(400, "bad_k")
        );
        assert_eq!(
            code(server.get(&format!("/v1/items/i1/similar?k={k}"))),
            error(400, "bad_k")
        );
    }

    let (_, status) = server.get("/v1/status");
    let read = status["records_read"].clone();
    assert_eq!(read, 600, "{status}");
    assert_eq!(
        code(server.post("/v1/events", "{not json")),
        error(400, "invalid_json")
    );
    assert_eq!(
        code(server.post("/v1/events", "42")),
        error(400, "invalid_json")
    );
    // One good event and one without a user: 400, and neither is ingested.
    let batch = json!([
        {"user": "u1", "item": "i2", "action": "view", "ts": live_ms()},
        {"item": "i2", "action": "view", "ts": live_ms()},
        {"user": "u1", "item": "i2", "action": "teleport", "ts": live_ms()},
    ]);
    let (status_code, answer) = server.post("/v1/events?wait=true", &batch.to_string());
    assert_eq!(status_code, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_events");
    let reasons: Vec<(u64, &str)> = answer["error"]["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reasons,
        [(1, "missing_user"), (2, "unknown_action")],
        "{answer}"
    );
    let big = format!("[{}]", vec![batch[0].to_string(); 20_000].join(","));
    assert_eq!(
        code(server.post("/v1/events", &big)),
        error(413, "body_too_large")
    );
    // Every refusal is counted by its status, those no handler wrote too.
    let (_, metrics) = server.get("/metrics");
    let metrics = metrics.as_str().unwrap();
    for line in [
        "persona_http_responses_total{code=\"405\"} 2",
        "persona_http_responses_total{code=\"413\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
    let (_, status) = server.get("/v1/status");
    assert_eq!(
        status["records_read"], read,
        "a refused POST ingested something: {status}"
    );

    // An event of a tick the clock has passed is read, and dropped as late.
    let late = json!({"user": "u1", "item": "i2", "action": "view", "ts": now_ms() - 3_600_000});
    let (status_code, answer) = server.post("/v1/events", &late.to_string());
    assert_eq!(status_code, 202, "{answer}");
    assert_eq!(answer["accepted"], 0);
    assert_eq!(answer["dropped"], json!([{"index": 0, "reason": "late"}]));

    // The counters are published by the dataflow once it has read the
    // record, which may be after the POST's answer: poll, within bounds.
    let expected = [
        "persona_records_read_total 601",
        "persona_late_total 1",
        "persona_ready 1",
        "persona_request_duration_seconds_count{endpoint=\"profile\"} 1",
    ];
    let mut metrics = String::new();
    for _ in 0..200 {
        let (status_code, text) = server.get("/metrics");
        assert_eq!(status_code, 200);
        metrics = text.as_str().unwrap().to_owned();
        if expected
            .iter()
            .all(|line| metrics.lines().any(|l| l == *line))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for line in expected {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
    let arranged: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("persona_arranged_records "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no persona_arranged_records in\n{metrics}"));
    // The serving graph keeps its state in per-key operators; only a
    // catalog and user attributes, which this config has not, are arranged.
    assert_eq!(
        arranged, 0.0,
        "the serving graph arranges nothing of the log"
    );
    assert_eq!(server.get("/healthz").0, 200);
    server.stop();
    // The late event is a dead letter, with where it came from.
    let late_lines = read_lines(&out, "late");
    assert_eq!(late_lines.len(), 1, "{late_lines:?}");
    assert!(late_lines[0].contains("\"request\":"), "{}", late_lines[0]);
}

/// `[source.kafka]`: the log's second half produced to a topic is read
/// after the first half from the file, to the same answers as the replay
/// of the whole log, on 1 and 2 workers; a message produced while serving
/// then shows in the profile.
/// A log's first half in a file, its second half in a new topic of 3
/// partitions on the test broker.
struct HalfInTopic {
    head: std::path::PathBuf,
    config: std::path::PathBuf,
    brokers: String,
    topic: String,
}

impl HalfInTopic {
    fn new(dir: &Path, config: &Path, log: &Path) -> HalfInTopic {
        let text = std::fs::read_to_string(log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let (first, second) = lines.split_at(lines.len() / 2);
        let head = dir.join("head.jsonl");
        let tail = dir.join("tail.jsonl");
        std::fs::write(&head, first.join("\n") + "\n").unwrap();
        std::fs::write(&tail, second.join("\n") + "\n").unwrap();
        let split = HalfInTopic {
            head,
            config: config.to_owned(),
            brokers: common::kafka::brokers(),
            topic: common::kafka::unique("serve-events"),
        };
        split.produce(&tail);
        split
    }

    /// Each line of `file` one message of the topic.
    fn produce(&self, file: &Path) {
        persona(&[
            "produce",
            "--config",
            self.config.to_str().unwrap(),
            "--input",
            file.to_str().unwrap(),
            "--topic",
            &self.topic,
            "--brokers",
            &self.brokers,
            "--partitions",
            "3",
        ]);
    }

    /// The test config reading the topic (a group of its own), and `extra`.
    fn config(&self, extra: &str) -> String {
        let (brokers, topic) = (&self.brokers, &self.topic);
        let group = common::kafka::unique("serve-group");
        format!(
            "{}\n[source.kafka]\nbrokers = \"{brokers}\"\ntopics = [\"{topic}\"]\n\
             group_id = \"{group}\"\n{extra}",
            // A live message is judged when it is read: the lateness covers
            // its way through the broker.
            CONFIG.replace("lateness_ms = 0", "lateness_ms = 2000")
        )
    }
}

/// SIGTERM while a `?wait=true` POST waits for a tick a minute ahead: the
/// POST is answered `stopping` at once, and the server exits, rather than
/// both waiting for the 30 s the wait may last.
#[test]
fn a_stopping_server_answers_a_waiting_post_at_once() {
    let (dir, config, log) = setup();
    let server = Server::start(&config, &log, &dir.path().join("out"), "1");
    let event = json!({"user": "u1", "item": "i1", "action": "view", "ts": now_ms() + 60_000});
    let (agent, url) = (
        server.agent.clone(),
        format!("{}/v1/events?wait=true", server.base),
    );
    let waiting = std::thread::spawn(move || {
        let mut response = agent
            .post(url)
            .header("content-type", "application/json")
            .send(event.to_string())
            .unwrap();
        let status = response.status().as_u16();
        let body: Value =
            serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        (status, body)
    });
    // Time for the POST to reach its wait.
    std::thread::sleep(Duration::from_secs(1));
    let signalled = Instant::now();
    server.stop();
    let (status, body) = waiting.join().unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "stopping", "{body}");
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(15), "stopped after {took:?}");
}

#[test]
fn a_topic_after_the_log_gives_the_answers_of_the_whole_log() {
    let (dir, config, log) = setup();
    let replayed = replay_log(dir.path(), &config, &log);
    let split = HalfInTopic::new(dir.path(), &config, &log);
    let head = &split.head;
    let with_kafka = dir.path().join("kafka.toml");
    std::fs::write(&with_kafka, split.config("")).unwrap();
    for workers in ["1", "2"] {
        let server = Server::start(&with_kafka, head, &dir.path().join("out"), workers);
        assert_answers_equal(&server, &replayed, &format!("log + topic, -w {workers}"));
        server.stop();
    }

    // Live: a purchase produced now shows in its user's profile.
    let server = Server::start(&with_kafka, head, &dir.path().join("out"), "1");
    let (_, before) = server.get("/v1/users/u1/profile");
    let purchases = |profile: &Value| profile["counts"]["purchase"].as_u64().unwrap_or(0);
    let live = dir.path().join("live.jsonl");
    let event =
        json!({"user": "u1", "item": "i29", "action": "purchase", "ts": live_ms(), "qty": 1});
    std::fs::write(&live, format!("{event}\n")).unwrap();
    split.produce(&live);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, after) = server.get("/v1/users/u1/profile");
        if purchases(&after) == purchases(&before) + 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the produced purchase is not in the profile after 60 s: {after}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop();
}

/// `[checkpoint]` in `persona serve`: killed with SIGKILL after a
/// checkpoint holds a POSTed purchase, a server restarts from it on another
/// worker count, without the log (an empty file), and answers what it
/// answered before: the log's, the topic's (read once, from the
/// checkpoint's offsets on) and the POSTed events are all in.
#[test]
fn a_killed_server_restarts_from_its_checkpoint_with_every_event() {
    let (dir, config, log) = setup();
    let split = HalfInTopic::new(dir.path(), &config, &log);
    let head = &split.head;
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let checkpointed = dir.path().join("checkpointed.toml");
    let extra =
        format!("[checkpoint]\ndir = {checkpoints:?}\ninterval_s = 0.2\ncompact_files = 2\n");
    std::fs::write(&checkpointed, split.config(&extra)).unwrap();
    let newest = || newest_checkpoint(&checkpoints);
    // Every answer, by path.
    let answers = |server: &Server| -> Vec<(String, Value)> {
        let mut paths: Vec<String> = (0..24)
            .flat_map(|u| {
                [
                    format!("/v1/users/u{u}/profile"),
                    format!("/v1/users/u{u}/recommendations"),
                ]
            })
            .collect();
        paths.extend((0..30).map(|i| format!("/v1/items/i{i}/similar")));
        paths
            .into_iter()
            .map(|path| {
                let (status, answer) = server.get(&path);
                let answer = match status {
                    200 => without_as_of(answer),
                    _ => answer,
                };
                (path, answer)
            })
            .collect()
    };

    let out = dir.path().join("out");
    let server = Server::start(&checkpointed, head, &out, "2");
    let event =
        json!({"user": "u1", "item": "i29", "action": "purchase", "ts": live_ms(), "qty": 3});
    let (status, answer) = server.post("/v1/events?wait=true", &event.to_string());
    assert_eq!((status, &answer["accepted"]), (200, &json!(1)), "{answer}");
    let before = answers(&server);
    // A checkpoint asked for after the POST was applied holds it.
    let posted_at = newest();
    let deadline = Instant::now() + Duration::from_secs(60);
    while newest() < posted_at + 2 {
        assert!(
            Instant::now() < deadline,
            "no checkpoint after the POST in 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A second server given the same checkpoint folder meanwhile would
    // prune this one's files: it is refused at start.
    let second = Command::new(env!("CARGO_BIN_EXE_persona"))
        .args(["serve", "--config", checkpointed.to_str().unwrap()])
        .args(["--input", empty.to_str().unwrap()])
        .args(["--out", dir.path().join("out-2").to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success() && stderr.contains("another run is writing checkpoints into"),
        "{stderr}"
    );
    drop(server); // SIGKILL

    let server = Server::start(&checkpointed, &empty, &out, "1");
    let after = answers(&server);
    for ((path, expected), (_, answer)) in before.iter().zip(&after) {
        assert_eq!(answer, expected, "{path} after the restart");
    }
    let profile = &after[2].1;
    assert_eq!(
        profile["counts"]["purchase"].as_u64().map(|n| n >= 1),
        Some(true),
        "{profile}"
    );
    server.stop();
    let stopped_at = newest();
    assert!(stopped_at > posted_at + 1, "a last checkpoint on SIGTERM");
    // Restarted again (2 workers), from the checkpoint SIGTERM wrote.
    let server = Server::start(&checkpointed, &empty, &out, "2");
    let again = answers(&server);
    for ((path, expected), (_, answer)) in before.iter().zip(&again) {
        assert_eq!(answer, expected, "{path} after the second restart");
    }
    server.stop();
}

/// By default (`[serve] reads_first`) the dataflow's worker runs under
/// `SCHED_IDLE` once the log is read, so that reads always run first.
#[test]
fn the_dataflow_yields_to_reads_once_ready() {
    let (dir, _, log) = setup();
    let default = dir.path().join("default.toml");
    std::fs::write(&default, CONFIG.replace("reads_first = false", "")).unwrap();
    let server = Server::start(&default, &log, &dir.path().join("out"), "1");
    let tasks = format!("/proc/{}/task", server.child.id());
    // `stat` fields after the `(comm)`: the state is field 3, the policy 41.
    let policies: Vec<(String, u32)> = std::fs::read_dir(&tasks)
        .unwrap()
        .filter_map(|task| {
            let path = task.ok()?.path();
            let comm = std::fs::read_to_string(path.join("comm")).ok()?;
            let stat = std::fs::read_to_string(path.join("stat")).ok()?;
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            Some((comm.trim().to_owned(), fields.get(41 - 3)?.parse().ok()?))
        })
        .collect();
    const SCHED_OTHER: u32 = 0;
    const SCHED_IDLE: u32 = 5;
    let worker: Vec<u32> = policies
        .iter()
        .filter(|(comm, _)| comm.starts_with("timely:work"))
        .map(|(_, policy)| *policy)
        .collect();
    assert_eq!(worker, [SCHED_IDLE], "{policies:?}");
    assert!(
        policies
            .iter()
            .filter(|(comm, _)| comm.starts_with("persona-http"))
            .all(|(_, policy)| *policy == SCHED_OTHER),
        "{policies:?}"
    );
    server.stop();
}

/// Users forgotten one by one between POSTs leave every answer equal to the
/// replay of the log and the POSTed events without them, on 1 and 4
/// workers; their later events are dropped as `forgotten`.
#[test]
fn forgotten_users_leave_every_answer_as_if_they_never_existed_on_one_and_four_workers() {
    use rand::{Rng, SeedableRng};
    let (dir, _, log) = setup();
    // With the learned models, which a forget trains again without them.
    let learned = CONFIG.replace("[recommend]\n", "[recommend]\nmf_weight = 0.25\n")
        + "[recommend.mf]\nembeddings = true\n[segments.kmeans]\nk = 3\n";
    let reference = dir.path().join("learned.toml");
    std::fs::write(&reference, &learned).unwrap();
    for workers in [1u64, 4] {
        let file = dir.path().join(format!("forgotten-{workers}.txt"));
        let config = dir.path().join(format!("forget-{workers}.toml"));
        std::fs::write(
            &config,
            format!("{learned}\n[privacy]\nforgotten = {file:?}\n"),
        )
        .unwrap();
        let out = dir.path().join(format!("out-{workers}"));
        let server = Server::start(&config, &log, &out, &workers.to_string());
        let mut rng = rand::rngs::StdRng::seed_from_u64(16 + workers);
        let mut users: Vec<u64> = (0..24).collect();
        let mut forgotten = Vec::new();
        let mut posted = Vec::new();
        for _ in 0..3 {
            let user = users.swap_remove(rng.random_range(0..users.len()));
            let other = users[rng.random_range(0..users.len())];
            let events: Vec<Value> = [user, other]
                .iter()
                .map(|u| {
                    json!({"user": format!("u{u}"), "item": format!("i{}", rng.random_range(0..30)),
                           "action": "purchase", "ts": live_ms(), "qty": 1})
                })
                .collect();
            let (status, answer) = server.post(
                "/v1/events?wait=true",
                &Value::from(events.clone()).to_string(),
            );
            assert_eq!((status, &answer["accepted"]), (200, &json!(2)), "{answer}");
            posted.extend(events);
            let user = format!("u{user}");
            let (status, answer) = server.delete(&format!("/v1/users/{user}"));
            assert_eq!(status, 200, "{answer}");
            assert_eq!(answer["forgotten"], true, "{answer}");
            let (status, answer) = server.get(&format!("/v1/users/{user}/profile"));
            assert_eq!(status, 404, "{user} still has a profile: {answer}");
            forgotten.push(user);
        }
        // An id with a control character, which no record can have: 400,
        // and nothing is added to the forgotten file.
        // Nor can one of whitespace alone.
        for id in ["u1%00", "%20%20"] {
            let (status, answer) = server.delete(&format!("/v1/users/{id}"));
            assert_eq!(
                (status, &answer["error"]["code"]),
                (400, &json!("invalid_id")),
                "{id}: {answer}"
            );
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 3);
        let release = json!({"epsilon": 1.0}).to_string();
        let (status, answer) = server.post("/v1/stats", &release);
        assert_eq!(
            (status, &answer["error"]["code"]),
            (409, &json!("stats_disabled"))
        );
        let late = json!({"user": forgotten[0], "item": "i1", "action": "view", "ts": live_ms()});
        let (status, answer) = server.post("/v1/events?wait=true", &late.to_string());
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            answer["dropped"],
            json!([{"index": 0, "reason": "forgotten"}])
        );

        // The reference: the log and the POSTed events, without the users.
        let mut lines: Vec<String> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        lines.extend(posted.iter().map(Value::to_string));
        lines.retain(|line| {
            let event: Value = serde_json::from_str(line).unwrap();
            !forgotten.iter().any(|user| event["user"] == user.as_str())
        });
        let without = dir.path().join(format!("without-{workers}.jsonl"));
        std::fs::write(&without, lines.join("\n") + "\n").unwrap();
        let replayed = replay_log(
            &dir.path().join(format!("w{workers}")),
            &reference,
            &without,
        );
        assert_answers_equal(&server, &replayed, &format!("forgotten, -w {workers}"));
        server.stop();
    }
}

/// `[serve.auth]`: every /v1 endpoint without a token, with a wrong one and
/// with one of the wrong role gets 401/403 with a JSON error; the right
/// role gets through; hidden profile fields are left out; a forget is
/// audited by token name, without the user.
#[test]
fn every_endpoint_checks_the_bearer_token_and_its_role() {
    use sha2::Digest;
    let (dir, _, log) = setup();
    let hash = |token: &str| -> String {
        sha2::Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let audit = dir.path().join("audit.jsonl");
    let forgotten = dir.path().join("forgotten.txt");
    let tokens = [
        (
            "profiles-token",
            "analyst",
            "read_profiles",
            "[\"spend\", \"factors\"]",
        ),
        ("recs-token", "shop", "read_recommendations", "[]"),
        ("ingest-token", "tracker", "ingest", "[]"),
        ("admin-token", "dpo", "admin", "[]"),
    ];
    let ledger = dir.path().join("ledger.jsonl");
    let mut config = format!(
        "{CONFIG}\n[recommend.mf]\nembeddings = true\n\n[risk]\n\n[privacy]\nforgotten = {forgotten:?}\n\n\
         [privacy.stats]\nledger = {ledger:?}\nepsilon_budget = 1.0\n\n\
         [serve.auth]\naudit_log = {audit:?}\n"
    );
    for (token, name, role, hidden) in tokens {
        config.push_str(&format!(
            "\n[[serve.auth.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nroles = [\"{role}\"]\nhide_profile_fields = {hidden}\n",
            hash(token)
        ));
    }
    assert!(!config.contains("admin-token"), "tokens are stored hashed");
    let path = dir.path().join("auth.toml");
    std::fs::write(&path, config).unwrap();
    // i1 was shown to u1 after the log's last event, so that its feedback
    // answers 200 to the right role.
    let shown = json!({"user": "u1", "item": "i1", "action": "impression",
                       "ts": now_ms() - 60_000, "qty": 1});
    let mut text = std::fs::read_to_string(&log).unwrap();
    text.push_str(&format!("{shown}\n"));
    std::fs::write(&log, text).unwrap();
    let server = Server::start(&path, &log, &dir.path().join("out"), "1");

    let endpoints = [
        ("GET", "/v1/users/u1/profile", Some("profiles-token")),
        ("GET", "/v1/users/u1/recommendations", Some("recs-token")),
        ("GET", "/v1/items/i1/similar", Some("recs-token")),
        ("POST", "/v1/events?wait=true", Some("ingest-token")),
        ("GET", "/v1/users/u1/alerts", Some("profiles-token")),
        ("GET", "/v1/items/i1/feedback", Some("profiles-token")),
        ("GET", "/v1/status", None),
        ("DELETE", "/v1/users/u2", Some("admin-token")),
        ("POST", "/v1/stats", Some("admin-token")),
    ];
    let release = json!({"epsilon": 0.5, "statistics": ["users_per_segment"]}).to_string();
    for (method, endpoint, allowed) in endpoints {
        let event = json!({"user": "u1", "item": "i1", "action": "view", "ts": live_ms()});
        let body = match endpoint {
            "/v1/events?wait=true" => Some(event.to_string()),
            "/v1/stats" => Some(release.clone()),
            _ => None,
        };
        for token in [None, Some("wrong-token"), Some("")] {
            let (status, answer) = server.call(method, endpoint, token, body.as_deref());
            assert_eq!(status, 401, "{method} {endpoint} with {token:?}: {answer}");
            assert_eq!(answer["error"]["code"], "unauthorized", "{answer}");
        }
        for (token, ..) in tokens {
            let (status, answer) = server.call(method, endpoint, Some(token), body.as_deref());
            if allowed.is_none_or(|allowed| allowed == token) {
                assert_eq!(status, 200, "{method} {endpoint} with {token}: {answer}");
            } else {
                assert_eq!(status, 403, "{method} {endpoint} with {token}: {answer}");
                assert_eq!(answer["error"]["code"], "forbidden", "{answer}");
            }
        }
    }
    // The analyst's token does not see spend or factors, nor the embedding;
    // probes and metrics stay open.
    let (_, profile) = server.call("GET", "/v1/users/u1/profile", Some("profiles-token"), None);
    assert!(
        profile.get("spend").is_none() && profile.get("counts").is_some(),
        "{profile}"
    );
    assert!(profile.get("factors").is_none(), "{profile}");
    let embedding = "/v1/users/u1/embedding";
    let (status, answer) = server.call("GET", embedding, Some("profiles-token"), None);
    assert_eq!(
        (status, &answer["error"]["code"]),
        (403, &json!("forbidden")),
        "{answer}"
    );
    assert_eq!(server.call("GET", embedding, None, None).0, 401);
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(server.get(open).0, 200, "{open}");
    }
    // The release above spent ε 0.5 of 1: one of 0.6 is refused (and
    // audited), one without ε is malformed; neither is charged.
    let admin = Some("admin-token");
    let over = json!({"epsilon": 0.6, "statistics": ["users_per_segment"]}).to_string();
    let (status, answer) = server.call("POST", "/v1/stats", admin, Some(&over));
    assert_eq!(status, 409, "{answer}");
    assert_eq!(
        answer["error"]["code"], "privacy_budget_exceeded",
        "{answer}"
    );
    let (status, answer) = server.call("POST", "/v1/stats", admin, Some("{\"delta\": 1e-6}"));
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &json!("invalid_request")),
        "{answer}"
    );
    let ledger = std::fs::read_to_string(&ledger).unwrap();
    assert_eq!(ledger.lines().count(), 1, "{ledger}");
    assert!(ledger.contains("\"caller\":\"dpo\""), "{ledger}");
    server.stop();
    let audit = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<Value> = audit
        .lines()
        .map(|line| serde_json::from_str(line.strip_prefix("persona audit: ").unwrap()).unwrap())
        .collect();
    let actions: Vec<&Value> = lines.iter().map(|line| &line["action"]).collect();
    assert_eq!(
        actions,
        ["forget_user", "release_stats", "release_stats"],
        "{audit}"
    );
    assert!(lines.iter().all(|line| line["caller"] == "dpo"), "{audit}");
    assert!(
        !audit.contains("u2"),
        "the audit log names the user: {audit}"
    );
}

/// One HTTPS request over rustls, trusting only `certificate`: the status
/// and the body.
fn https_call(address: &str, path: &str, token: &str, certificate: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    use std::sync::Arc;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            certificate.to_vec(),
        ))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let socket = std::net::TcpStream::connect(address).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(connection, socket);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    // A server that closes without close_notify ends the read with an error
    // after the whole response.
    let _ = tls.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned());
    (status, body)
}

/// `[serve.tls]`: the API answers over HTTPS only, with the configured
/// certificate; tokens come from a separate `tokens_file`.
#[test]
fn serve_answers_over_https_with_tokens_from_a_file() {
    use sha2::Digest;
    let (dir, _, log) = setup();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let hash: String = sha2::Sha256::digest(b"reader-token")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        format!(
            "[[tokens]]\nname = \"reader\"\nsha256 = \"{hash}\"\nroles = [\"read_profiles\"]\n"
        ),
    )
    .unwrap();
    let config = dir.path().join("tls.toml");
    std::fs::write(
        &config,
        format!(
            "{CONFIG}\n[serve.tls]\ncert = {cert:?}\nkey = {key:?}\n\n\
             [serve.auth]\ntokens_file = {tokens:?}\n"
        ),
    )
    .unwrap();
    let server = Server::spawn(&config, &log, &dir.path().join("out"), &["-w", "1"]);
    let address = server.base.trim_start_matches("http://").to_owned();
    let certificate = certified.cert.der().to_vec();
    let deadline = Instant::now() + Duration::from_secs(120);
    while https_call(&address, "/readyz", "", &certificate).0 != 200 {
        assert!(Instant::now() < deadline, "not ready after 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = https_call(
        &address,
        "/v1/users/u1/profile",
        "reader-token",
        &certificate,
    );
    assert_eq!(status, 200, "{body}");
    let profile: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(profile["user"], "u1", "{profile}");
    let (status, _) = https_call(&address, "/v1/users/u1/profile", "wrong", &certificate);
    assert_eq!(status, 401);
    // Plain HTTP gets no HTTP answer (a TLS alert at most).
    use std::io::{Read, Write};
    let mut plain = std::net::TcpStream::connect(&address).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
    server.stop();
}
