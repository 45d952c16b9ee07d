//! The runtime: timely workers wired around the dataflows, for each command.
//!
//! [`replay`] reads logs and [`run`] reads Kafka topics, each through a
//! [`worker::PipelineWorker`]; [`pipeline`] builds the dataflow graph that
//! every command shares (deduplication, profiles, collaborative filtering,
//! sinks).
//! Workers and processes use timely's own flags (`-w`, `-n`, `-p`, `-h`).

pub(crate) mod failure;
mod liveness;
pub mod load;
pub mod pipeline;
pub mod produce;
pub mod replay;
pub mod run;
pub mod worker;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use timely::worker::Worker;

use crate::summary::Summary;

/// Timely's worker flags, as timely itself names them.
#[derive(Clone, Debug, clap::Args)]
pub struct TimelyArgs {
    /// Worker threads per process.
    #[arg(
        short = 'w',
        long = "threads",
        default_value_t = 1,
        env = "PERSONA_WORKERS"
    )]
    pub workers: usize,
    /// Number of processes.
    #[arg(short = 'n', long = "processes", default_value_t = 1)]
    pub processes: usize,
    /// Index of this process, from 0.
    #[arg(short = 'p', long = "process", default_value_t = 0)]
    pub process: usize,
    /// File of process addresses (host:port), one per line.
    #[arg(short = 'h', long = "hostfile")]
    pub hostfile: Option<PathBuf>,
    /// Seconds the processes of a run may take to connect to each other.
    #[arg(long, default_value_t = 60, env = "PERSONA_CONNECT_TIMEOUT_S")]
    pub connect_timeout: u64,
    /// Seconds a connected process may stay silent (stopped, hung) before
    /// the others end the run.
    #[arg(long, default_value_t = 30, env = "PERSONA_PEER_TIMEOUT_S")]
    pub peer_timeout: u64,
}

/// Worker threads per process beyond this many times the cores are refused:
/// they only contend (a thousand workers on two cores ran for minutes on
/// ten thousand rows).
const MAX_WORKERS_PER_CORE: usize = 4;

/// Merge work an arrangement does each time it is scheduled while it is
/// not yet compact, as if this many updates had arrived.
const IDLE_MERGE_EFFORT: isize = 1_000;

/// Lets arrangements keep merging when no new updates arrive. Differential
/// merges an arrangement's batches, and drops superseded versions, only as
/// updates come in; without idle merging, the versions of every past time
/// of a profile stay until enough new updates push them out, and state
/// grows with the events instead of the keys (tests/state.rs).
pub fn configure_arrangements(config: &mut timely::Config) {
    let options =
        differential_dataflow::Config::default().idle_merge_effort(Some(IDLE_MERGE_EFFORT));
    differential_dataflow::configure(&mut config.worker, &options);
}

impl TimelyArgs {
    /// The timely configuration, built by timely's own parser.
    pub fn config(&self) -> anyhow::Result<timely::Config> {
        let mut args = vec![
            "persona".to_owned(),
            "-w".to_owned(),
            self.workers.to_string(),
            "-n".to_owned(),
            self.processes.to_string(),
            "-p".to_owned(),
            self.process.to_string(),
        ];
        if let Some(hostfile) = &self.hostfile {
            args.push("-h".to_owned());
            args.push(hostfile.display().to_string());
        }
        anyhow::ensure!(self.workers >= 1, "-w must be at least 1");
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let bound = (cores * MAX_WORKERS_PER_CORE).max(8);
        anyhow::ensure!(
            self.workers <= bound,
            "-w {} is more than {MAX_WORKERS_PER_CORE} worker threads per core ({cores} cores): use at most -w {bound}, and more processes (-n) to scale out",
            self.workers
        );
        if self.workers > cores {
            tracing::warn!(
                "-w {} is more worker threads than the {cores} cores: they will contend",
                self.workers
            );
        }
        anyhow::ensure!(
            self.process < self.processes,
            "-p {} is not below -n {}",
            self.process,
            self.processes
        );
        if self.processes > 1 {
            // Read first: timely's own error would not name the hostfile.
            self.addresses()?;
        }
        let mut config = timely::Config::from_args(args.into_iter())
            .map_err(|error| anyhow::anyhow!("timely flags: {error}"))?;
        configure_arrangements(&mut config);
        Ok(config)
    }

    /// The address of each process, as timely reads them: the hostfile's
    /// first `-n` lines that are not blank, or timely's own without one.
    fn addresses(&self) -> anyhow::Result<Vec<String>> {
        let Some(hostfile) = &self.hostfile else {
            return Ok((0..self.processes)
                .map(|process| format!("localhost:{}", 2101 + process))
                .collect());
        };
        let text = std::fs::read_to_string(hostfile)
            .with_context(|| format!("cannot read the hostfile {}", hostfile.display()))?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .take(self.processes)
            .map(str::to_owned)
            .collect())
    }

    /// The connection watchdog of a run of several processes.
    pub fn connecting(&self) -> anyhow::Result<Connecting> {
        let mut peers = Vec::new();
        let mut own = None;
        if self.processes > 1 {
            for (process, address) in self.addresses()?.into_iter().enumerate() {
                if process == self.process {
                    own = Some(address);
                } else {
                    peers.push((process, address));
                }
            }
        }
        Ok(Connecting {
            own,
            peers,
            timeout: Duration::from_secs(self.connect_timeout),
            peer_timeout: Duration::from_secs(self.peer_timeout),
        })
    }
}

/// Runs `work` on every worker of `config` and waits for them; returns the
/// summary of the worker that wrote it (worker 0), or the first error.
///
/// A worker that fails or panics cannot be waited for by its peers (they
/// would wait for its progress forever), so with more than one worker a
/// failure ends the process at once, with the first failure's message and
/// a non-zero exit: the root cause, not the cascade of panics it causes in
/// the other workers and processes. Processes that cannot reach their peers
/// within `connect_timeout` end the same way, naming the peers.
pub fn execute<F>(
    config: timely::Config,
    connect: Connecting,
    work: F,
) -> anyhow::Result<Option<Summary>>
where
    F: Fn(&mut Worker) -> anyhow::Result<Option<Summary>> + Send + Sync + 'static,
{
    failure::install_hook();
    let connected = connect.clone().watch();
    let guards = timely::execute(config, move |worker| {
        let index = worker.index();
        let peers = worker.peers();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(worker)));
        let error = match outcome {
            Ok(Ok(summary)) => return Ok(summary),
            Ok(Err(error)) => format!("worker {index}: {error:#}"),
            Err(panic) => format!("worker {index} panicked: {}", failure::message(&*panic)),
        };
        if peers > 1 {
            failure::exit(&error);
        }
        Err(error)
    })
    .map_err(|error| anyhow::anyhow!("cannot start workers: {error}"))?;
    connected.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(own) = &connect.own {
        liveness::watch(own, &connect.peers, connect.peer_timeout);
    }
    let mut summary = None;
    for result in guards.join() {
        match result {
            Ok(Ok(Some(worker_summary))) => summary = Some(worker_summary),
            Ok(Ok(None)) => {}
            Ok(Err(error)) => anyhow::bail!(error),
            Err(panic) => anyhow::bail!("a worker panicked: {panic}"),
        }
    }
    Ok(summary)
}

/// How long the processes of a run may take to connect to each other.
#[derive(Clone, Debug)]
pub struct Connecting {
    /// This process's address, from the hostfile.
    own: Option<String>,
    /// The other processes' addresses, by process index (empty for one process).
    peers: Vec<(usize, String)>,
    timeout: Duration,
    /// How long a connected peer may stay silent (see [`liveness`]).
    peer_timeout: Duration,
}

impl Connecting {
    /// Starts a watchdog that ends the process once `timeout` passes before
    /// the returned flag is set (when timely has connected every process).
    fn watch(self) -> Arc<AtomicBool> {
        let connected = Arc::new(AtomicBool::new(false));
        if self.peers.is_empty() {
            return connected;
        }
        let flag = connected.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            while started.elapsed() < self.timeout {
                if flag.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            let unreachable: Vec<String> = self
                .peers
                .iter()
                .filter(|(_, address)| !reachable(address))
                .map(|(process, address)| format!("process {process} at {address}"))
                .collect();
            let peers = if unreachable.is_empty() {
                "some peer".to_owned()
            } else {
                unreachable.join(", ")
            };
            failure::exit(&format!(
                "could not connect to {peers} within {} s (--connect-timeout): start every process of the run, each with its own -p",
                self.timeout.as_secs()
            ));
        });
        connected
    }
}

/// Whether something listens at `address`.
fn reachable(address: &str) -> bool {
    use std::net::ToSocketAddrs;
    address
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .is_some_and(|address| {
            std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok()
        })
}
