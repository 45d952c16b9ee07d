//! End-to-end bench of the pipeline on a synthetic log, through the same
//! library code as `persona bench`: per-batch latency percentiles (open
//! loop at 50 % of saturation), sustained and closed-loop throughput, peak
//! RSS, arranged records and the ratios to the recompute and hash-map
//! baselines, for profiles alone and for the full pipeline.
//!
//! ```text
//! cargo bench --bench pipeline                          # 100,000 events, 1 worker
//! cargo bench --bench pipeline -- --synthetic 1000000 -w 2
//! ```
//!
//! Prints a table per pipeline and writes the reports as JSON into
//! `target/persona-bench/` (or `$CARGO_TARGET_DIR/persona-bench/`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use persona::bench::{bench, table, BenchArgs, BenchInput};
use persona::runtime::TimelyArgs;

#[derive(Parser)]
#[command(disable_help_flag = true)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
    #[command(flatten)]
    timely: TimelyArgs,
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench` to harnesses; it means nothing here.
    let forwarded = std::env::args().skip(1).filter(|arg| arg != "--bench");
    let defaults = ["pipeline", "--synthetic", "100000"].map(String::from);
    let cli = Cli::try_parse_from(defaults.into_iter().chain(forwarded))?;
    let out = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("persona-bench");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    for pipeline in [
        persona::bench::driver::Graph::Profiles,
        persona::bench::driver::Graph::Full,
    ] {
        let args = BenchArgs {
            pipeline,
            ..cli.bench.clone()
        };
        let events = args.synthetic.unwrap_or(100_000);
        let input = BenchInput::Synthetic(args.synthetic_spec(events));
        let report = bench(&args, input, &cli.timely)?;
        print!("{}", table(&report));
        let path = out.join(format!("pipeline-{:?}.json", pipeline).to_lowercase());
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}\n", path.display());
    }
    Ok(())
}
