//! `GET /metrics`: what a process has read and, for `persona serve`, how
//! fast it answers, in Prometheus' text format (version 0.0.4). Latencies
//! are summaries with quantiles from an HdrHistogram, in seconds.
//! `persona run --listen` serves the same page ([`router`]).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hdrhistogram::Histogram;

use crate::config::TlsConfig;
use crate::summary::{rss_bytes, ReaderCounts};
use axum_server::tls_rustls::RustlsConfig;

/// The endpoints whose request latency is measured, as labelled.
pub const ENDPOINTS: [&str; 14] = [
    "profile",
    "alerts",
    "recommendations",
    "similar",
    "similar_users",
    "embedding",
    "item_feedback",
    "events",
    "forget",
    "stats",
    "status",
    "healthz",
    "readyz",
    "metrics",
];

/// Counters and latencies of one serving process.
pub struct Metrics {
    /// Each worker's counts of what it read, as it last published them.
    readers: Mutex<Vec<Published>>,
    /// How long a live tick took, from the frontier's advance to the index
    /// showing it.
    ticks: Mutex<Histogram<u64>>,
    /// How long applying completed changes held the index's write lock.
    applies: Mutex<Histogram<u64>>,
    requests: Mutex<BTreeMap<&'static str, Histogram<u64>>>,
    /// Responses by status code, whatever answered them (a handler, a
    /// refused token, an unknown route).
    responses: Mutex<BTreeMap<u16, u64>>,
    /// Users, items and `as_of` of a serving index, when there is one.
    index: Mutex<Option<(usize, usize, Option<u64>)>>,
    /// Whether the initial log is caught up (always, for `persona run`).
    pub ready: AtomicBool,
}

/// A latency histogram in microseconds, up to an hour, 3 significant digits.
/// What a worker last published.
#[derive(Clone, Debug, Default)]
struct Published {
    counts: ReaderCounts,
    duplicates: u64,
    arranged: i64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

impl Metrics {
    pub fn new(workers: usize) -> Metrics {
        Metrics {
            readers: Mutex::new(vec![Published::default(); workers]),
            ticks: Mutex::new(histogram()),
            applies: Mutex::new(histogram()),
            requests: Mutex::new(ENDPOINTS.iter().map(|&e| (e, histogram())).collect()),
            responses: Mutex::new(BTreeMap::new()),
            index: Mutex::new(None),
            ready: AtomicBool::new(false),
        }
    }

    /// Worker `index`'s counts so far, the duplicates it dropped, and the
    /// updates its arrangements hold.
    pub fn publish(&self, index: usize, counts: &ReaderCounts, duplicates: u64, arranged: i64) {
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        readers[index] = Published {
            counts: counts.clone(),
            duplicates,
            arranged,
        };
    }

    /// Every worker's counts, summed.
    pub fn totals(&self) -> ReaderCounts {
        let readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        let mut totals = ReaderCounts::default();
        for published in readers.iter() {
            totals.merge(&published.counts);
            totals.duplicates += published.duplicates;
        }
        totals
    }

    pub fn record_tick(&self, took: Duration) {
        record(
            &mut self.ticks.lock().unwrap_or_else(|p| p.into_inner()),
            took,
        );
    }

    pub fn record_apply(&self, took: Duration) {
        record(
            &mut self.applies.lock().unwrap_or_else(|p| p.into_inner()),
            took,
        );
    }

    pub fn record_request(&self, endpoint: &'static str, took: Duration) {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(histogram) = requests.get_mut(endpoint) {
            record(histogram, took);
        }
    }

    /// Counts a response of `status`.
    pub fn record_response(&self, status: u16) {
        let mut responses = self.responses.lock().unwrap_or_else(|p| p.into_inner());
        *responses.entry(status).or_default() += 1;
    }

    /// Users, items and `as_of` of the serving index, after a change.
    pub fn set_index(&self, users: usize, items: usize, as_of: Option<u64>) {
        *self.index.lock().unwrap_or_else(|p| p.into_inner()) = Some((users, items, as_of));
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let ready = self.is_ready();
        let totals = self.totals();
        let mut out = String::new();
        let accepted = totals.decoded.saturating_sub(totals.duplicates);
        counter(
            &mut out,
            "persona_records_read_total",
            "Records read from the log and from POST /v1/events.",
            totals.records_read,
        );
        counter(
            &mut out,
            "persona_events_accepted_total",
            "Events applied: read, on time, not duplicates.",
            accepted,
        );
        counter(
            &mut out,
            "persona_duplicates_total",
            "Events dropped as duplicates.",
            totals.duplicates,
        );
        counter(
            &mut out,
            "persona_late_total",
            "Records behind the watermark, not applied.",
            totals.late,
        );
        let _ = writeln!(
            out,
            "# HELP persona_rejected_total Records rejected, by reason."
        );
        let _ = writeln!(out, "# TYPE persona_rejected_total counter");
        for (reason, count) in &totals.rejected {
            let _ = writeln!(
                out,
                "persona_rejected_total{{reason=\"{}\"}} {count}",
                reason.code()
            );
        }
        let index = *self.index.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((users, items, as_of)) = index {
            gauge(
                &mut out,
                "persona_index_users",
                "Users with a profile in the serving index.",
                users as f64,
            );
            gauge(
                &mut out,
                "persona_index_items",
                "Items in at least one history in the serving index.",
                items as f64,
            );
            if let Some(as_of) = as_of {
                gauge(
                    &mut out,
                    "persona_as_of_ms",
                    "The last complete tick answers are as of (event time, ms).",
                    as_of as f64,
                );
            }
        }
        gauge(
            &mut out,
            "persona_ready",
            "1 once the initial log is caught up.",
            f64::from(u8::from(ready)),
        );
        let arranged: i64 = self
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|published| published.arranged)
            .sum();
        gauge(
            &mut out,
            "persona_arranged_records",
            "Updates held in the dataflow's arrangements, all workers of this process.",
            arranged as f64,
        );
        gauge(
            &mut out,
            "persona_resident_memory_bytes",
            "Resident memory of this process.",
            rss_bytes() as f64,
        );
        let ticks = self.ticks.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(
            out,
            "# HELP persona_tick_latency_seconds From a live tick's close to the index showing it."
        );
        let _ = writeln!(out, "# TYPE persona_tick_latency_seconds summary");
        summary(&mut out, "persona_tick_latency_seconds", "", &ticks);
        let applies = self.applies.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "# HELP persona_index_apply_seconds How long applying completed changes held the serving index (answers wait meanwhile).");
        let _ = writeln!(out, "# TYPE persona_index_apply_seconds summary");
        summary(&mut out, "persona_index_apply_seconds", "", &applies);
        let responses = self.responses.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(
            out,
            "# HELP persona_http_responses_total HTTP responses, by status code.\n\
             # TYPE persona_http_responses_total counter"
        );
        for (code, count) in responses.iter() {
            let _ = writeln!(
                out,
                "persona_http_responses_total{{code=\"{code}\"}} {count}"
            );
        }
        drop(responses);
        let requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(
            out,
            "# HELP persona_request_duration_seconds HTTP request latency, by endpoint."
        );
        let _ = writeln!(out, "# TYPE persona_request_duration_seconds summary");
        for (endpoint, histogram) in requests.iter() {
            summary(
                &mut out,
                "persona_request_duration_seconds",
                &format!("endpoint=\"{endpoint}\","),
                histogram,
            );
        }
        out
    }
}

fn record(histogram: &mut Histogram<u64>, took: Duration) {
    let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.max(1));
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

/// The quantiles, sum and count of a histogram of microseconds, in seconds.
fn summary(out: &mut String, name: &str, labels: &str, histogram: &Histogram<u64>) {
    for quantile in [0.5, 0.9, 0.99, 0.999] {
        let seconds = histogram.value_at_quantile(quantile) as f64 / 1e6;
        let _ = writeln!(out, "{name}{{{labels}quantile=\"{quantile}\"}} {seconds}");
    }
    let sum: f64 = histogram
        .iter_recorded()
        .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64)
        .sum::<f64>()
        / 1e6;
    let labels = labels.trim_end_matches(',');
    let braces = |l: &str| {
        if l.is_empty() {
            String::new()
        } else {
            format!("{{{l}}}")
        }
    };
    let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
    let _ = writeln!(out, "{name}_count{} {}", braces(labels), histogram.len());
}

/// `GET /metrics` and `GET /healthz`.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(healthz))
        .with_state(metrics)
}

/// Counts every response by its status (`persona_http_responses_total`):
/// a layer, so that errors no handler wrote (401, 404, 405) count too.
pub async fn count_responses(
    State(metrics): State<Arc<Metrics>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    metrics.record_response(response.status().as_u16());
    response
}

/// The metrics page, timed as the `metrics` endpoint.
pub async fn metrics_page(State(metrics): State<Arc<Metrics>>) -> Response {
    let started = std::time::Instant::now();
    let response = (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
        .into_response();
    metrics.record_request("metrics", started.elapsed());
    response
}

/// 200 while the process runs.
pub async fn healthz(State(metrics): State<Arc<Metrics>>) -> Response {
    let started = std::time::Instant::now();
    let response = Json(serde_json::json!({"status": "ok"})).into_response();
    metrics.record_request("healthz", started.elapsed());
    response
}

/// Runs `router` on `listener` on threads of its own until `stop`,
/// closing connections that take longer than `header_timeout` to send a
/// request's headers.
pub fn start_http(
    listener: std::net::TcpListener,
    router: Router,
    stop: Arc<AtomicBool>,
    tls: Option<&TlsConfig>,
    header_timeout: Duration,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<()>>> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("persona-http")
        .enable_all()
        .build()
        .context("cannot start the HTTP server's runtime")?;
    // Read before the thread starts: a bad certificate is an error of the
    // command, not of a server that then never answers.
    let tls = match tls {
        None => None,
        Some(tls) => Some(runtime.block_on(rustls_config(tls))?),
    };
    let stopped = async move {
        while !stop.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    Ok(std::thread::spawn(move || {
        runtime.block_on(async move {
            let handle = axum_server::Handle::new();
            let stopping = handle.clone();
            tokio::spawn(async move {
                stopped.await;
                stopping.graceful_shutdown(Some(Duration::from_secs(1)));
            });
            let service = router.into_make_service();
            match tls {
                None => {
                    let mut server = axum_server::from_tcp(listener)?;
                    server
                        .http_builder()
                        .http1()
                        .header_read_timeout(header_timeout);
                    server.handle(handle).serve(service).await
                }
                Some(tls) => {
                    let mut server = axum_server::from_tcp_rustls(listener, tls)?;
                    server
                        .http_builder()
                        .http1()
                        .header_read_timeout(header_timeout);
                    server.handle(handle).serve(service).await
                }
            }
            .context("the HTTP server failed")
        })
    }))
}

/// The rustls config of `[serve.tls]`: its certificate chain and key.
async fn rustls_config(tls: &TlsConfig) -> anyhow::Result<RustlsConfig> {
    // One process-wide provider: ring, the one the build includes.
    let _ = rustls::crypto::ring::default_provider().install_default();
    RustlsConfig::from_pem_chain_file(&tls.cert, &tls.key)
        .await
        .with_context(|| {
            format!(
                "[serve.tls]: cannot use the certificate {} with the key {}",
                tls.cert.display(),
                tls.key.display()
            )
        })
}
