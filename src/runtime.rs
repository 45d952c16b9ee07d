//! The runtime: timely workers wired around the dataflows, for each command.
//!
//! [`replay`] reads logs and [`run`] reads Kafka topics, each through a
//! [`worker::PipelineWorker`]; [`pipeline`] builds the dataflow graph that
//! every command shares (deduplication, profiles, collaborative filtering,
//! sinks).
//! Workers and processes use timely's own flags (`-w`, `-n`, `-p`, `-h`).

pub mod load;
pub mod pipeline;
pub mod produce;
pub mod replay;
pub mod run;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use timely::worker::Worker;

use crate::format::Decoder;
use crate::rejected::Position;
use crate::source::file::{open, Lines};
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
        anyhow::ensure!(
            self.process < self.processes,
            "-p {} is not below -n {}",
            self.process,
            self.processes
        );
        timely::Config::from_args(args.into_iter())
            .map_err(|error| anyhow::anyhow!("timely flags: {error}"))
    }

    /// Total workers across processes.
    pub fn total_workers(&self) -> usize {
        self.workers * self.processes
    }
}

/// Runs `work` on every worker of `config` and waits for them; returns the
/// summary of the worker that wrote it (worker 0), or the first error.
pub fn execute<F>(config: timely::Config, work: F) -> anyhow::Result<Option<Summary>>
where
    F: Fn(&mut Worker) -> anyhow::Result<Option<Summary>> + Send + Sync + 'static,
{
    let guards = timely::execute(config, move |worker| {
        work(worker).map_err(|error| format!("{error:#}"))
    })
    .map_err(|error| anyhow::anyhow!("cannot start workers: {error}"))?;
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

/// Opens one input file for decoding: when the format has a header line,
/// reads it into the decoder. Returns the lines after it and the header, or
/// `None` for a file with no lines at all.
pub fn open_for_decoding(
    path: &Path,
    decoder: &mut Decoder,
    bytes_read: Arc<AtomicU64>,
) -> anyhow::Result<Option<(Lines, Option<Vec<u8>>)>> {
    let mut lines =
        Lines::new(path, open(path, bytes_read)?).with_max_record_bytes(decoder.max_record_bytes());
    if !decoder.expects_header() {
        return Ok(Some((lines, None)));
    }
    let Some((line, header)) = lines.next_line()? else {
        return Ok(None);
    };
    let position = Position::File {
        file: path.display().to_string(),
        line,
        index: None,
    };
    decoder.read_header(header, &position)?;
    let header = header.to_vec();
    Ok(Some((lines, Some(header))))
}
