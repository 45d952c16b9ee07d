//! `persona bench --serve URL`: a load test of a running `persona serve`,
//! over real HTTP connections to it.
//!
//! Three phases. **Idle**: profile lookups closed loop from several
//! connections, the most the server answers with nothing else to do.
//! **Ingest saturation** (with `--event-template`): POSTs of 100 events
//! closed loop, the most events per second it takes. **Mixed**: reads
//! offered open loop at `--request-rate` (80 % profiles, 20 %
//! recommendations) while events are POSTed open loop at half the ingest
//! saturation, and one client POSTs one event at a time with `?wait=true`
//! to measure freshness (from the POST to an answer whose `as_of` covers
//! it). Open-loop latency runs from when a request was due, not when it was
//! sent, so a server that falls behind shows it (no coordinated omission).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use persona_dataflows::Id;

use super::report::Percentiles;
use super::BenchArgs;
use crate::config::PipelineConfig;
use crate::names::Names;
use crate::runtime::load::load;

/// What a load test offers, and to whom.
pub struct ServeLoad {
    /// `http://host:port` of the server.
    pub url: String,
    /// User and item ids as the source writes them.
    pub users: Vec<String>,
    pub items: Vec<String>,
    /// Reads per second offered in the mixed phase.
    pub request_rate: f64,
    pub duration: Duration,
    /// A POSTed event with `{user}`, `{item}`, `{now_ms}` and `{now:FORMAT}`
    /// (strftime, UTC) substituted; no ingest without it.
    pub event_template: Option<String>,
    pub seed: u64,
}

/// What a load test measured.
#[derive(Debug, Serialize)]
pub struct ServeReport {
    pub url: String,
    /// Profile lookups per second, closed loop, nothing else running.
    pub idle_profile_lookups_per_s: f64,
    /// Events per second POSTed closed loop in batches of 100.
    pub ingest_saturation_events_per_s: Option<f64>,
    /// Reads offered per second in the mixed phase, and answered.
    pub offered_requests_per_s: f64,
    pub answered_requests_per_s: f64,
    /// Events offered per second during the mixed phase.
    pub offered_events_per_s: f64,
    /// Open-loop latency in the mixed phase, ms.
    pub profile_ms: Option<Percentiles>,
    pub recommendations_ms: Option<Percentiles>,
    /// From a POST with `?wait=true` to its answer, ms.
    pub freshness_ms: Option<Percentiles>,
    /// Answers that were not 2xx (404s of users without a profile included).
    pub non_2xx: u64,
    /// The server's resident memory after the run (its `/metrics`).
    pub server_rss_bytes: Option<u64>,
}

/// Connections of a closed-loop phase.
const CONNECTIONS: usize = 16;
/// Threads sending open-loop requests: enough that they are never all busy.
const SENDERS: usize = 48;
/// Events per POST when loading the ingest path.
const EVENTS_PER_POST: usize = 100;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Percentiles in ms of a histogram of µs; `None` when empty.
fn percentiles(histogram: &Histogram<u64>) -> Option<Percentiles> {
    (!histogram.is_empty()).then(|| Percentiles::from_micros(histogram))
}

impl ServeLoad {
    /// A load of `args` on the server at `url`, with the users and items of
    /// the log at `path`.
    pub fn from_log(
        url: &str,
        path: &Path,
        config: &PipelineConfig,
        args: &BenchArgs,
    ) -> anyhow::Result<ServeLoad> {
        eprintln!("bench --serve: reading the ids of {}", path.display());
        let log = load(path, config)?;
        let users: BTreeSet<Id> = log.updates.iter().map(|(e, _)| e.user).collect();
        let items: BTreeSet<Id> = log.updates.iter().map(|(e, _)| e.item).collect();
        anyhow::ensure!(
            args.duration_s.is_finite() && args.duration_s > 0.0,
            "--duration-s must be a positive number of seconds"
        );
        Ok(ServeLoad {
            url: url.trim_end_matches('/').to_owned(),
            users: users.into_iter().map(|u| log.names.user(u)).collect(),
            items: items.into_iter().map(|i| log.names.item(i)).collect(),
            request_rate: args.request_rate,
            duration: Duration::from_secs_f64(args.duration_s),
            event_template: args.event_template.clone(),
            seed: args.seed,
        })
    }

    fn event(&self, rng: &mut StdRng) -> Option<String> {
        let template = self.event_template.as_ref()?;
        let now = jiff::Timestamp::now();
        let mut event = template
            .replace("{user}", &self.users[rng.random_range(0..self.users.len())])
            .replace("{item}", &self.items[rng.random_range(0..self.items.len())])
            .replace("{now_ms}", &now.as_millisecond().to_string());
        while let Some(start) = event.find("{now:") {
            let end = start + event[start..].find('}')?;
            let formatted = now.strftime(&event[start + 5..end]).to_string();
            event.replace_range(start..=end, &formatted);
        }
        Some(event)
    }

    fn batch(&self, rng: &mut StdRng, events: usize) -> Option<String> {
        let events: Option<Vec<String>> = (0..events).map(|_| self.event(rng)).collect();
        Some(format!("[{}]", events?.join(",")))
    }
}

/// Runs the three phases against `load.url`.
pub fn load_test(load: &ServeLoad) -> anyhow::Result<ServeReport> {
    anyhow::ensure!(!load.users.is_empty(), "the log names no users");
    anyhow::ensure!(
        load.request_rate.is_finite() && load.request_rate > 0.0,
        "--request-rate must be a positive number of requests per second"
    );
    let probe = agent()
        .get(format!("{}/readyz", load.url))
        .call()
        .map_err(|e| anyhow::anyhow!("cannot reach {}: {e}", load.url))?;
    anyhow::ensure!(
        probe.status() == 200,
        "{} is not ready (GET /readyz answered {})",
        load.url,
        probe.status()
    );
    let non_2xx = AtomicU64::new(0);
    let get = |agent: &ureq::Agent, path: &str| -> anyhow::Result<()> {
        let mut response = agent.get(format!("{}{path}", load.url)).call()?;
        response.body_mut().read_to_vec()?;
        if !response.status().is_success() {
            non_2xx.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    };
    let post = |agent: &ureq::Agent, query: &str, body: &str| -> anyhow::Result<()> {
        let mut response = agent
            .post(format!("{}/v1/events{query}", load.url))
            .header("content-type", "application/json")
            .send(body)?;
        response.body_mut().read_to_vec()?;
        anyhow::ensure!(
            response.status().is_success(),
            "POST /v1/events answered {}: check --event-template",
            response.status()
        );
        Ok(())
    };

    // Idle: profile lookups, closed loop.
    eprintln!("bench --serve: idle profile lookups");
    let phase = load.duration.min(Duration::from_secs(5));
    let lookups = closed_loop(phase, |agent, rng| {
        let user = &load.users[rng.random_range(0..load.users.len())];
        get(agent, &format!("/v1/users/{user}/profile")).map(|()| 1)
    })?;
    let idle_profile_lookups_per_s = lookups as f64 / phase.as_secs_f64();

    // Ingest saturation: batches of events, closed loop, until the last
    // is visible. The server holds POSTs back while its dataflow is behind,
    // so this is the rate it keeps up with, not the rate it queues.
    let ingest_saturation = match &load.event_template {
        None => None,
        Some(_) => {
            eprintln!("bench --serve: ingest saturation");
            let started = Instant::now();
            let events = closed_loop(phase, |agent, rng| {
                let body = load.batch(rng, EVENTS_PER_POST).expect("a template");
                post(agent, "", &body).map(|()| EVENTS_PER_POST as u64)
            })?;
            let mut rng = StdRng::seed_from_u64(load.seed);
            post(
                &agent(),
                "?wait=true",
                &load.event(&mut rng).expect("a template"),
            )?;
            Some(events as f64 / started.elapsed().as_secs_f64())
        }
    };

    // Mixed: reads and events open loop, and a freshness prober.
    eprintln!(
        "bench --serve: {} reads/s for {:?} while ingesting",
        load.request_rate, load.duration
    );
    let offered_events_per_s = ingest_saturation.map_or(0.0, |s| s / 2.0);
    let reads = Mutex::new((histogram(), histogram()));
    let freshness = Mutex::new(histogram());
    let answered = AtomicU64::new(0);
    let started = Instant::now();
    let end = started + load.duration;
    let next_read = AtomicU64::new(0);
    let next_post = AtomicU64::new(0);
    let read_interval = Duration::from_secs_f64(1.0 / load.request_rate);
    let post_interval = (offered_events_per_s > 0.0)
        .then(|| Duration::from_secs_f64(EVENTS_PER_POST as f64 / offered_events_per_s));
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut senders = Vec::new();
        for sender in 0..SENDERS {
            let (reads, answered, next_read, get) = (&reads, &answered, &next_read, &get);
            senders.push(scope.spawn(move || -> anyhow::Result<()> {
                let agent = agent();
                let mut rng = StdRng::seed_from_u64(load.seed ^ sender as u64);
                loop {
                    let n = next_read.fetch_add(1, Ordering::Relaxed);
                    let due = started + read_interval.mul_f64(n as f64);
                    if due >= end {
                        return Ok(());
                    }
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    let user = &load.users[rng.random_range(0..load.users.len())];
                    let recommendations = rng.random_bool(0.2);
                    let path = if recommendations {
                        format!("/v1/users/{user}/recommendations?k=10")
                    } else {
                        format!("/v1/users/{user}/profile")
                    };
                    get(&agent, &path)?;
                    let took = u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX);
                    let mut reads = reads.lock().unwrap_or_else(|p| p.into_inner());
                    let histogram = if recommendations {
                        &mut reads.1
                    } else {
                        &mut reads.0
                    };
                    histogram.saturating_record(took.max(1));
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        if let Some(interval) = post_interval {
            for poster in 0..4 {
                let (next_post, post) = (&next_post, &post);
                senders.push(scope.spawn(move || -> anyhow::Result<()> {
                    let agent = agent();
                    let mut rng = StdRng::seed_from_u64(load.seed ^ (1000 + poster));
                    loop {
                        let n = next_post.fetch_add(1, Ordering::Relaxed);
                        let due = started + interval.mul_f64(n as f64);
                        if due >= end {
                            return Ok(());
                        }
                        std::thread::sleep(due.saturating_duration_since(Instant::now()));
                        let body = load.batch(&mut rng, EVENTS_PER_POST).expect("a template");
                        post(&agent, "", &body)?;
                    }
                }));
            }
            let (freshness, post) = (&freshness, &post);
            senders.push(scope.spawn(move || -> anyhow::Result<()> {
                let agent = agent();
                let mut rng = StdRng::seed_from_u64(load.seed ^ 2000);
                while Instant::now() < end {
                    let body = load.event(&mut rng).expect("a template");
                    let sent = Instant::now();
                    post(&agent, "?wait=true", &body)?;
                    let took = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                    freshness
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .saturating_record(took.max(1));
                }
                Ok(())
            }));
        }
        for sender in senders {
            sender
                .join()
                .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        }
        Ok(())
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let (profile, recommendations) = reads.into_inner().unwrap_or_else(|p| p.into_inner());
    let freshness = freshness.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok(ServeReport {
        url: load.url.clone(),
        idle_profile_lookups_per_s,
        ingest_saturation_events_per_s: ingest_saturation,
        offered_requests_per_s: load.request_rate,
        answered_requests_per_s: answered.load(Ordering::Relaxed) as f64 / elapsed,
        offered_events_per_s,
        profile_ms: percentiles(&profile),
        recommendations_ms: percentiles(&recommendations),
        freshness_ms: percentiles(&freshness),
        non_2xx: non_2xx.load(Ordering::Relaxed),
        server_rss_bytes: server_rss(&load.url),
    })
}

/// Runs `request` from [`CONNECTIONS`] threads, each sending the next when
/// the last is answered, for `phase`; returns the sum of what they counted.
fn closed_loop(
    phase: Duration,
    request: impl Fn(&ureq::Agent, &mut StdRng) -> anyhow::Result<u64> + Sync,
) -> anyhow::Result<u64> {
    let end = Instant::now() + phase;
    let total = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..CONNECTIONS)
            .map(|n| {
                let (total, request) = (&total, &request);
                scope.spawn(move || -> anyhow::Result<()> {
                    let agent = agent();
                    let mut rng = StdRng::seed_from_u64(n as u64);
                    while Instant::now() < end {
                        total.fetch_add(request(&agent, &mut rng)?, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        threads.into_iter().try_for_each(|thread| {
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("a load thread panicked"))?
        })
    })?;
    Ok(total.into_inner())
}

/// `persona_resident_memory_bytes` from the server's `/metrics`.
fn server_rss(url: &str) -> Option<u64> {
    let mut response = agent().get(format!("{url}/metrics")).call().ok()?;
    let text = response.body_mut().read_to_string().ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("persona_resident_memory_bytes "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|bytes| bytes as u64)
}

/// The report as a table.
pub fn table(report: &ServeReport) -> String {
    let row = |name: &str, p: &Option<Percentiles>| match p {
        Some(p) => format!(
            "{name:<16} {:>8.3} {:>8.3} {:>8.3} {:>8.3}\n",
            p.p50, p.p99, p.p999, p.max
        ),
        None => format!("{name:<16} {:>8}\n", "-"),
    };
    let mut out = format!(
        "persona serve at {}\nidle profile lookups/s: {:.0}\ningest saturation events/s: {}\n\
         mixed: {:.0} reads/s offered, {:.0} answered, {:.0} events/s ingested\n\n\
         latency ms        p50      p99    p99.9      max\n",
        report.url,
        report.idle_profile_lookups_per_s,
        report
            .ingest_saturation_events_per_s
            .map_or("-".to_owned(), |s| format!("{s:.0}")),
        report.offered_requests_per_s,
        report.answered_requests_per_s,
        report.offered_events_per_s,
    );
    out += &row("profile", &report.profile_ms);
    out += &row("recommendations", &report.recommendations_ms);
    out += &row("freshness", &report.freshness_ms);
    out += &format!(
        "\nnon-2xx answers: {}\nserver resident memory: {}\n",
        report.non_2xx,
        report
            .server_rss_bytes
            .map_or("-".to_owned(), |b| format!("{:.0} MB", b as f64 / 1e6)),
    );
    out
}
