//! The `persona` command line: replay logs, run on Kafka, produce, evaluate.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use persona::config::{IdKind, PipelineConfig};
use persona::eval::tune::{recommend_toml, tune};
use persona::eval::{
    check_args, evaluate, parse_split_time, scores_header, scores_row, table, Split, Task,
};
use persona::format::preset;
use persona::ids::normalise_id;
use persona::privacy::stats::{Request as StatsRequest, Statistic};
use persona::privacy::{add_forgotten, Pseudonyms};
use persona::runtime::produce::{produce_to, ProduceTarget};
use persona::runtime::replay::{check_out_is_not_read, replay, ReplayPlan};
use persona::runtime::run::{run as run_on_kafka, RunPlan};
use persona::runtime::TimelyArgs;
use persona::sink::FileFormat;
use persona_dataflows::cf::{CfConfig, Mode};
use serde::Deserialize;

#[derive(Parser)]
#[command(
    name = "persona",
    version,
    about = "Exact incremental user profiles and recommendations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a log through the pipeline and write its outputs into a folder.
    #[command(disable_help_flag = true)]
    Replay {
        #[command(flatten)]
        replay: ReplayArgs,
        #[arg(long, action = clap::ArgAction::Help, help = "Print help")]
        help: Option<bool>,
    },
    /// Forget users: add them to the config's [privacy] forgotten file and
    /// replay the log into --out again, as if they had never existed.
    #[command(disable_help_flag = true)]
    Forget {
        /// A user id as the source writes it (repeat for more users).
        #[arg(long, required = true)]
        user: Vec<String>,
        #[command(flatten)]
        replay: ReplayArgs,
        #[arg(long, action = clap::ArgAction::Help, help = "Print help")]
        help: Option<bool>,
    },
    /// Run the pipeline on Kafka topics until stopped (SIGINT/SIGTERM), with
    /// the sources and sinks of the config's [source] and [sink] tables.
    #[command(disable_help_flag = true)]
    Run {
        /// The pipeline config (TOML) with [source.kafka] and [sink.*] tables.
        #[arg(long, env = "PERSONA_CONFIG")]
        config: PathBuf,
        /// A preset for the topic's records (online-retail, movielens, taobao, otto);
        /// the config then may hold every table but [input], [cleaning] and [time].
        #[arg(long)]
        format: Option<String>,
        /// Folder for the file outputs (overrides [sink.files] dir).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also write each output's exact stream of changes, `X.changes.jsonl`.
        #[arg(long)]
        changelog: bool,
        /// Stop by itself once every partition is read to its end.
        #[arg(long)]
        until_end: bool,
        /// Serve Prometheus /metrics and /healthz on this address.
        #[arg(long)]
        listen: Option<String>,
        #[command(flatten)]
        timely: TimelyArgs,
        #[arg(long, action = clap::ArgAction::Help, help = "Print help")]
        help: Option<bool>,
    },
    /// Replay a log, then keep it up to date from POST /v1/events and answer
    /// profiles, recommendations and similar items over HTTP, exact as of
    /// the time each answer states. Runs until SIGINT/SIGTERM.
    #[command(disable_help_flag = true)]
    Serve {
        #[command(flatten)]
        input: InputArgs,
        /// The address to listen on (overrides [serve] listen); port 0 picks one.
        #[arg(long)]
        listen: Option<String>,
        /// Folder for rejected.jsonl and late.jsonl (created if missing).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        timely: TimelyArgs,
        #[arg(long, action = clap::ArgAction::Help, help = "Print help")]
        help: Option<bool>,
    },
    /// Release differentially private statistics of a log (users per
    /// segment, top category, attribute value and item), charged to the
    /// privacy budget of the config's [privacy.stats] ledger.
    #[command(disable_help_flag = true)]
    ExportStats {
        #[command(flatten)]
        input: InputArgs,
        /// The privacy loss ε this release spends, split evenly over its statistics.
        #[arg(long)]
        epsilon: f64,
        /// The δ it spends, split over the statistics whose keys are data
        /// (all but users_per_segment); needed for those.
        #[arg(long)]
        delta: Option<f64>,
        /// The statistics, comma-separated: users_per_segment,
        /// users_per_top_category, users_per_attribute, users_per_item. Default: all.
        #[arg(long, value_delimiter = ',')]
        statistics: Vec<String>,
        /// Write the release here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        timely: TimelyArgs,
        #[arg(long, action = clap::ArgAction::Help, help = "Print help")]
        help: Option<bool>,
    },
    /// Load a log into a Kafka topic: one message per line, keyed by user.
    Produce {
        #[command(flatten)]
        input: InputArgs,
        /// The topic to write (created with --partitions if missing).
        #[arg(long)]
        topic: String,
        /// Kafka bootstrap servers.
        #[arg(long, env = "PERSONA_KAFKA_BROKERS", default_value = persona::config::DEFAULT_BROKERS)]
        brokers: String,
        /// Partitions of the topic when it is created.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// A librdkafka producer property, KEY=VALUE (repeatable), as
        /// kafka-console-producer's --producer-property: e.g.
        /// message.max.bytes=2000000 for lines over 1,000,000 bytes.
        #[arg(long = "property", value_name = "KEY=VALUE", value_parser = parse_property)]
        properties: Vec<(String, String)>,
    },
    /// Print the pseudonyms `[privacy]` gives ids, one JSON line per id: to
    /// find a user of the outputs without keeping a table of raw ids.
    Pseudonym {
        #[command(flatten)]
        input: InputArgs,
        /// User ids, as the source writes them.
        #[arg(long)]
        user: Vec<String>,
        /// Item ids, as the source writes them.
        #[arg(long)]
        item: Vec<String>,
    },
    /// Split a log chronologically, train on the earlier part and score the
    /// top-k against the later part, beside SAR's settings and a popularity
    /// baseline.
    #[command(disable_help_flag = true)]
    Eval {
        #[command(flatten)]
        input: InputArgs,
        #[command(flatten)]
        split: SplitArgs,
        /// What the `persona` row scores: cf (co-occurrence), mf (the
        /// learned factorisation, [recommend.mf]) or blend (both, by
        /// [recommend] mf_weight, 0.5 if it is 0). Default: blend when
        /// mf_weight is above 0 (0.25 in discovery mode unless the config
        /// says otherwise), else cf.
        #[arg(long, value_enum)]
        model: Option<persona::eval::Model>,
        #[command(flatten)]
        timely: TimelyArgs,
        #[arg(long, action = clap::ArgAction::Help, help = "Print help")]
        help: Option<bool>,
    },
    /// Choose the [recommend] settings on a validation split of the training
    /// part, print every config tried, write the best as TOML, and score it
    /// on the test part once.
    #[command(disable_help_flag = true)]
    Tune {
        #[command(flatten)]
        input: InputArgs,
        #[command(flatten)]
        split: SplitArgs,
        /// With --split-time: the last fraction of training events (by
        /// time) that validates.
        #[arg(long, default_value_t = 0.15)]
        validation_fraction: f64,
        /// Where to write the best [recommend] table (TOML).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        timely: TimelyArgs,
        #[arg(long, action = clap::ArgAction::Help, help = "Print help")]
        help: Option<bool>,
    },
    /// Benchmark the pipeline: per-batch latency (open and closed loop),
    /// sustained throughput, memory, and ratios to baselines.
    #[command(disable_help_flag = true)]
    Bench {
        #[command(flatten)]
        input: InputArgs,
        #[command(flatten)]
        bench: persona::bench::BenchArgs,
        #[command(flatten)]
        timely: TimelyArgs,
        #[arg(long, action = clap::ArgAction::Help, help = "Print help")]
        help: Option<bool>,
    },
}

/// A replay: the log, the folder of outputs and the workers.
#[derive(clap::Args)]
struct ReplayArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Folder for the outputs (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Also write each output's exact stream of changes, `X.changes.jsonl`.
    #[arg(long)]
    changelog: bool,
    /// The format of the outputs: `X.jsonl`, or Parquet datasets
    /// `X/bucket=B/part-0.parquet` partitioned by user (item) hash bucket.
    #[arg(long, value_enum, default_value_t)]
    output_format: FileFormat,
    /// Buckets of the Parquet datasets.
    #[arg(long, default_value_t = persona::config::DEFAULT_BUCKETS)]
    buckets: u32,
    #[command(flatten)]
    timely: TimelyArgs,
}

impl ReplayArgs {
    fn plan(self) -> anyhow::Result<ReplayPlan> {
        let (config, input) = self.input.resolve()?;
        Ok(ReplayPlan {
            config,
            input,
            out: self.out,
            changelog: self.changelog,
            format: self.output_format,
            buckets: self.buckets,
            timely: self.timely,
        })
    }
}

/// Replays and prints the summary (on the process that writes it).
fn replay_and_print(plan: ReplayPlan) -> anyhow::Result<()> {
    if let Some(summary) = replay(plan)? {
        say(serde_json::to_string_pretty(&summary)?)?;
    }
    Ok(())
}

/// Which log, and how to read it.
#[derive(clap::Args)]
struct InputArgs {
    /// The log: a file (plain, .gz, .xz, .zst), a folder of files, or `-` for stdin.
    #[arg(long)]
    input: Option<PathBuf>,
    /// A preset for a well-known log: online-retail, movielens, taobao, otto.
    #[arg(long)]
    format: Option<String>,
    /// A pipeline config (TOML). With --format, it may hold every table but [input], [cleaning] and [time].
    #[arg(long, env = "PERSONA_CONFIG")]
    config: Option<PathBuf>,
}

impl InputArgs {
    /// The pipeline config and input path these flags describe.
    fn resolve(&self) -> anyhow::Result<(PipelineConfig, PathBuf)> {
        let config = self.config()?;
        let input = self
            .input
            .clone()
            .or_else(|| config.input.path.clone())
            .context("give --input PATH (or `path` in the config's [input])")?;
        Ok((config, input))
    }

    /// [`InputArgs::resolve`], with the config's `[recommend]` table read in
    /// `mode` when given: the settings it leaves out take that mode's
    /// defaults, and its `remove_seen` gives way to the mode.
    fn resolve_in_mode(&self, mode: Option<Mode>) -> anyhow::Result<(PipelineConfig, PathBuf)> {
        let (mut config, path) = self.resolve()?;
        if let Some(mode) = mode {
            let mut table = match &self.config {
                Some(file) => {
                    let text = std::fs::read_to_string(file)
                        .with_context(|| format!("cannot read config {}", file.display()))?;
                    let mut document: toml::Table = toml::from_str(&text)
                        .with_context(|| format!("invalid config {}", file.display()))?;
                    match document.remove("recommend") {
                        Some(toml::Value::Table(table)) => table,
                        _ => toml::Table::new(),
                    }
                }
                None => toml::Table::new(),
            };
            table.remove("remove_seen");
            table.insert("mode".into(), toml::Value::String(mode.name().into()));
            config.recommend = CfConfig::deserialize(toml::Value::Table(table))
                .context("invalid [recommend] table")?;
            config.validate()?;
        }
        Ok((config, path))
    }

    /// The pipeline config these flags describe.
    fn config(&self) -> anyhow::Result<PipelineConfig> {
        let preset = match &self.format {
            None => None,
            Some(name) => {
                preset::check_input(name, self.input.as_deref()).map_err(anyhow::Error::msg)?;
                Some(
                    preset::preset(name, self.input.as_deref()).with_context(|| {
                        format!(
                            "unknown --format {name:?}: expected one of {}",
                            preset::NAMES.join(", ")
                        )
                    })?,
                )
            }
        };
        let config = match (preset, &self.config) {
            (Some(preset), None) => preset,
            (None, Some(path)) => PipelineConfig::from_file(path)?,
            (Some(preset), Some(path)) => with_preset(preset, path)?,
            (None, None) => anyhow::bail!("give --format PRESET or --config FILE"),
        };
        Ok(config)
    }
}

/// How `eval` and `tune` split the log and score it.
#[derive(clap::Args)]
struct SplitArgs {
    /// Length of the recommendation lists scored.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Train on events before this date (YYYY-MM-DD, UTC) or RFC 3339 time.
    #[arg(
        long,
        conflicts_with = "split_fraction",
        required_unless_present = "split_fraction"
    )]
    split_time: Option<String>,
    /// Test on each user's last fraction of events.
    #[arg(long)]
    split_fraction: Option<f64>,
    /// discovery (seen items left out) or repeat (seen items may come
    /// back); default: the config's [recommend] mode.
    #[arg(long)]
    mode: Option<Mode>,
}

impl SplitArgs {
    /// The split `--split-time` or `--split-fraction` asks for, checked
    /// with `--k`.
    fn split(&self) -> anyhow::Result<Split> {
        let split = match (&self.split_time, self.split_fraction) {
            (Some(time), _) => Split::Time(parse_split_time(time)?),
            (None, Some(fraction)) => Split::Fraction(fraction),
            (None, None) => anyhow::bail!("give --split-time or --split-fraction"),
        };
        check_args(split, self.k)?;
        Ok(split)
    }
}

/// A config file on top of a preset: the preset reads the log, the file sets the rest.
fn with_preset(preset: PipelineConfig, path: &Path) -> anyhow::Result<PipelineConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?;
    persona::config::check_privacy_keys(&table)?;
    for owned_by_preset in ["input", "cleaning", "time"] {
        anyhow::ensure!(
            !table.contains_key(owned_by_preset),
            "config {} has [{owned_by_preset}], which --format sets; drop one of them",
            path.display()
        );
    }
    let file = PipelineConfig::from_file(path);
    // The file alone may fail validation only for want of an [input] mapping.
    let file = match file {
        Ok(config) => config,
        Err(persona::config::ConfigError::Invalid(_)) => {
            toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?
        }
        Err(error) => return Err(error.into()),
    };
    let config = PipelineConfig {
        input: preset.input,
        cleaning: preset.cleaning,
        time: preset.time,
        ..file
    };
    config.validate()?;
    Ok(config)
}

/// Writes `text` and a newline to stdout. A reader that went away (`| head`)
/// ends the output quietly, as for `cat`, where `println!` would panic.
fn say(text: impl std::fmt::Display) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        written => written.context("cannot write to stdout"),
    }
}

/// `KEY=VALUE` of `--property`.
fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

fn main() -> ExitCode {
    // Warnings (a broker away, more workers than cores) go to stderr;
    // PERSONA_LOG takes a tracing filter (`info`, `persona=debug`).
    let filter = tracing_subscriber::EnvFilter::try_from_env("PERSONA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("persona: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Replay { replay, help: _ } => replay_and_print(replay.plan()?),
        Command::Forget {
            user,
            replay,
            help: _,
        } => {
            let plan = replay.plan()?;
            let privacy = &plan.config.privacy;
            let file = privacy.forgotten.clone().context(
                "persona forget needs [privacy] forgotten = FILE in the config: the file \
                 that keeps the users forgotten in every later replay, run and serve",
            )?;
            let pseudonyms = Pseudonyms::from_config(privacy)?;
            let ids: Vec<_> = user
                .iter()
                .map(|id| {
                    let numeric_ids = plan.config.cleaning.numeric_ids;
                    pseudonyms.id(IdKind::User, id, numeric_ids).0
                })
                .collect();
            let added = add_forgotten(&file, &ids)?;
            eprintln!(
                "persona forget: {added} user(s) added to {} ({} already there); replaying",
                file.display(),
                ids.len() - added
            );
            replay_and_print(plan)
        }
        Command::Run {
            config,
            format,
            out,
            changelog,
            until_end,
            listen,
            timely,
            help: _,
        } => {
            let input = InputArgs {
                input: None,
                format,
                config: Some(config),
            };
            let plan = RunPlan {
                config: input.config()?,
                out,
                changelog,
                until_end,
                listen,
                timely,
            };
            if let Some(summary) = run_on_kafka(plan)? {
                say(serde_json::to_string_pretty(&summary)?)?;
            }
            Ok(())
        }
        Command::Serve {
            input,
            listen,
            out,
            timely,
            help: _,
        } => {
            let config = input.config()?;
            let log = input.input.clone().or_else(|| config.input.path.clone());
            persona::serve::serve(persona::serve::ServePlan {
                config,
                input: log,
                out,
                listen,
                timely,
            })
        }
        Command::ExportStats {
            input,
            epsilon,
            delta,
            statistics,
            out,
            timely,
            help: _,
        } => {
            let (config, input) = input.resolve()?;
            let statistics = statistics
                .iter()
                .map(|name| {
                    Statistic::parse(name).with_context(|| {
                        format!(
                            "--statistics: no statistic {name:?} (users_per_segment, \
                             users_per_top_category, users_per_attribute, users_per_item)"
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let request = StatsRequest {
                epsilon,
                delta,
                statistics: (!statistics.is_empty()).then_some(statistics),
            };
            let release = persona::serve::export_stats(config, &input, &request, timely)?;
            let text = serde_json::to_string_pretty(&release)? + "\n";
            match out {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => say(text.trim_end())?,
            }
            Ok(())
        }
        Command::Produce {
            input,
            topic,
            brokers,
            partitions,
            properties,
        } => {
            let (config, input) = input.resolve()?;
            let target = ProduceTarget {
                brokers,
                topic,
                partitions,
                properties: properties.into_iter().collect(),
            };
            let summary = produce_to(&input, &config, &target)?;
            say(serde_json::to_string_pretty(&summary)?)?;
            Ok(())
        }
        Command::Pseudonym { input, user, item } => {
            let config = input.config()?;
            let pseudonyms = Pseudonyms::from_config(&config.privacy)?;
            anyhow::ensure!(
                pseudonyms.enabled(),
                "the config's [privacy] pseudonymize names no ids"
            );
            let ids = (user.iter().map(|id| (IdKind::User, id)))
                .chain(item.iter().map(|id| (IdKind::Item, id)));
            for (kind, id) in ids {
                let normalised = normalise_id(id, config.cleaning.numeric_ids);
                let line = serde_json::json!({
                    "kind": kind.name(),
                    "id": id,
                    "pseudonym": pseudonyms.of(kind, normalised),
                });
                say(line)?;
            }
            Ok(())
        }
        Command::Eval {
            input,
            split,
            model,
            timely,
            help: _,
        } => {
            let (config, path) = input.resolve_in_mode(split.mode)?;
            let report = evaluate(&path, &config, split.split()?, split.k, model, &timely)?;
            eprint!("{}", table(&report));
            say(serde_json::to_string_pretty(&report)?)?;
            Ok(())
        }
        Command::Tune {
            input,
            split: split_args,
            validation_fraction,
            out,
            timely,
            help: _,
        } => {
            for (what, read) in [("--input", &input.input), ("--config", &input.config)] {
                if let Some(read) = read {
                    check_out_is_not_read(&out, what, read)?;
                }
            }
            let (config, path) = input.resolve_in_mode(split_args.mode)?;
            let (split, k) = (split_args.split()?, split_args.k);
            let log = persona::runtime::load::load(&path, &config)?;
            let task = Task::new(log.updates, split, &config)?;
            let (report, best) = tune(
                &task,
                &config,
                k,
                validation_fraction,
                split,
                &timely,
                |row| eprint!("{row}"),
            )?;
            std::fs::write(&out, recommend_toml(&best)?)
                .with_context(|| format!("cannot write {}", out.display()))?;
            eprint!(
                "best on validation: #{}; on the test part ({} users):\n{}{}wrote {}\n",
                report.best_trial,
                report.test_users,
                scores_header(k, "model"),
                scores_row("tuned", &report.test),
                out.display()
            );
            say(serde_json::to_string_pretty(&report)?)?;
            Ok(())
        }
        Command::Bench {
            input,
            bench,
            timely,
            help: _,
        } => {
            use persona::bench::BenchInput;
            if let Some(url) = &bench.serve {
                let (config, path) = input.resolve()?;
                let report = persona::bench::serve::load_test(
                    &persona::bench::serve::ServeLoad::from_log(url, &path, &config, &bench)?,
                )?;
                if bench.json {
                    say(serde_json::to_string_pretty(&report)?)?;
                } else {
                    say(persona::bench::serve::table(&report).trim_end())?;
                }
                return Ok(());
            }
            let source = match bench.synthetic {
                Some(events) => BenchInput::Synthetic(bench.synthetic_spec(events)),
                None => {
                    let (config, path) = input.resolve()?;
                    BenchInput::Log {
                        config: Box::new(config),
                        path,
                    }
                }
            };
            let report = persona::bench::bench(&bench, source, &timely)?;
            if bench.json {
                say(serde_json::to_string_pretty(&report)?)?;
            } else {
                say(persona::bench::table(&report).trim_end())?;
            }
            Ok(())
        }
    }
}
