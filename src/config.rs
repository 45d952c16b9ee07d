//! The pipeline config: one TOML file with the input (format and column
//! mapping), cleaning, time, feature and recommendation settings.
//!
//! Every table rejects unknown fields, so a typo is an error naming the field
//! rather than a silently ignored setting. Every field has a default, written
//! next to it; the presets (`--format online-retail`, ...) are configs too.
//! Runtime knobs (workers, paths) are command-line flags, not config; the
//! `[source]` and `[sink]` tables of `persona run` are config, as a
//! long-running job's connections are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use persona_dataflows::cf::CfConfig;
use persona_dataflows::kmeans::KMeansConfig;
use persona_dataflows::profile::ProfileConfig;
use persona_dataflows::risk::RiskConfig;
use serde::Deserialize;

pub mod dimension;
pub mod kafka;
pub mod output;

use dimension::{CatalogConfig, UserAttributesConfig};
use kafka::{KafkaSinkConfig, KafkaSourceConfig};
pub use output::Output;

/// Errors reading a config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The whole pipeline.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Where events come from and how they are read.
    pub input: InputConfig,
    /// What counts as a bad or duplicate record.
    pub cleaning: CleaningConfig,
    /// Event time, ticks and lateness.
    pub time: TimeConfig,
    /// Profile features: windows, decay, weights, segments.
    pub profile: ProfileConfig,
    /// Collaborative filtering: history, similarity, recommendations.
    pub recommend: CfConfig,
    /// An item catalog fused with events. Default: none.
    pub catalog: Option<CatalogConfig>,
    /// A user attribute table fused with profiles. Default: none.
    pub user_attributes: Option<UserAttributesConfig>,
    /// Where `persona run` reads events (replay reads `--input`). Default: none.
    pub source: SourceConfig,
    /// Where `persona run` writes its outputs (replay writes `--out`). Default: none.
    pub sink: SinkConfig,
    /// What the files of rejected and late records hold, and who may read them.
    pub output: OutputConfig,
    /// `persona serve`: the HTTP address and the events it takes.
    pub serve: ServeConfig,
    /// `[checkpoint]`: where and how often `persona run` checkpoints.
    /// Default: none (a start reads the topics as `resume_from` says).
    pub checkpoint: Option<CheckpointConfig>,
    /// `[privacy]`: pseudonymised ids (`crate::privacy`, docs/privacy.md).
    pub privacy: PrivacyConfig,
    /// `[risk]`: velocity and day features in the profiles, and the
    /// `alerts` output of their rules (docs/risk.md). Default: none.
    pub risk: Option<RiskConfig>,
    /// `[segments]`: learned user segments (docs/models.md).
    pub segments: SegmentsConfig,
}

/// `[segments]`: user segments learned from the profiles.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SegmentsConfig {
    /// `[segments.kmeans]`: k-means over profile features, a `cluster` in
    /// each profile and the `segments` output. Default: none.
    pub kmeans: Option<KMeansConfig>,
}

/// `[privacy]`: which ids are replaced by a keyed hash where records are
/// read, and where the key is. The key itself never sits in a config.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// The ids to pseudonymise: `"user"`, `"item"`. Default: none.
    pub pseudonymize: Vec<IdKind>,
    /// A file holding the key (its bytes, a final line break dropped).
    pub key_file: Option<PathBuf>,
    /// The environment variable holding the key, when there is no
    /// `key_file`. Default: `PERSONA_PSEUDONYM_KEY`.
    pub key_env: Option<String>,
    /// The file of forgotten users (`persona forget`): their events are
    /// left out of every output, counted as `forgotten`. Default: none.
    pub forgotten: Option<PathBuf>,
    /// A Kafka topic of users to forget, one id per message, that a running
    /// `persona run` reads from its beginning (on the `[source.kafka]`
    /// brokers); needs `forgotten`. Default: none.
    pub forget_topic: Option<String>,
    /// `[privacy.stats]`: differentially private aggregates (`persona
    /// export-stats`, `POST /v1/stats`). Default: none, no release.
    pub stats: Option<StatsConfig>,
}

/// `[privacy.stats]`: the privacy budget of the aggregate statistics and
/// how each user's contribution is bounded (`crate::privacy::stats`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StatsConfig {
    /// The ledger of releases (JSON lines): what was spent, across runs
    /// and processes. Required.
    pub ledger: PathBuf,
    /// The total ε every release together may spend.
    pub epsilon_budget: f64,
    /// The total δ every release together may spend. Default: 1e-6.
    #[serde(default = "default_delta_budget")]
    pub delta_budget: f64,
    /// The user attribute counted by `users_per_attribute`. Default:
    /// `country`.
    #[serde(default = "default_stats_attribute")]
    pub attribute: String,
    /// The most items one user counts in `users_per_item` (their items of
    /// highest affinity). Default: 10.
    #[serde(default = "default_max_items_per_user")]
    pub max_items_per_user: u32,
}

fn default_delta_budget() -> f64 {
    1e-6
}

fn default_stats_attribute() -> String {
    "country".into()
}

fn default_max_items_per_user() -> u32 {
    10
}

/// Refuses unknown settings of `[privacy]` without the parser's message,
/// which would quote the line: someone may have written the key itself.
pub fn check_privacy_keys(table: &toml::Table) -> Result<(), ConfigError> {
    let Some(toml::Value::Table(privacy)) = table.get("privacy") else {
        return Ok(());
    };
    match privacy.keys().find(|key| {
        ![
            "pseudonymize",
            "key_file",
            "key_env",
            "forgotten",
            "forget_topic",
            "stats",
        ]
        .contains(&key.as_str())
    }) {
        None => Ok(()),
        Some(key) => Err(ConfigError::Invalid(format!(
            "[privacy] has an unknown setting `{key}` (its value is not shown): \
             the key is never read from a config; name key_file or key_env"
        ))),
    }
}

/// A kind of id of the events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdKind {
    User,
    Item,
}

impl IdKind {
    pub fn name(self) -> &'static str {
        match self {
            IdKind::User => "user",
            IdKind::Item => "item",
        }
    }
}

/// `[checkpoint]`: `persona run` writes a checkpoint every `interval_s` and
/// when it stops, and a start restores the newest complete one
/// (`crate::checkpoint`, docs/run.md).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// The folder of checkpoints (created if missing), shared by every
    /// process of a run.
    pub dir: PathBuf,
    /// Seconds between checkpoints. Default: 60.
    #[serde(default = "CheckpointConfig::default_interval_s")]
    pub interval_s: f64,
    /// Complete checkpoints kept; older ones are removed. Default: 3.
    #[serde(default = "CheckpointConfig::default_keep")]
    pub keep: usize,
    /// The user hash buckets compacted data files are partitioned by
    /// (`data/bucket=B/`, the hash of `[sink.parquet]`), 1 to
    /// [`MAX_BUCKETS`]. Default: 16.
    #[serde(default = "default_buckets")]
    pub buckets: u32,
    /// The per-worker event files a checkpoint may name before they are
    /// compacted into the buckets. Default: 16.
    #[serde(default = "CheckpointConfig::default_compact_files")]
    pub compact_files: usize,
}

impl CheckpointConfig {
    fn default_interval_s() -> f64 {
        60.0
    }

    fn default_keep() -> usize {
        3
    }

    fn default_compact_files() -> usize {
        16
    }
}

/// `[serve]`: where `persona serve` listens, and how it takes events.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// The address of the HTTP server; `--listen` overrides it, and port 0
    /// picks a free port. Default: `127.0.0.1:8080`.
    pub listen: String,
    /// The largest `POST /v1/events` body, in bytes; larger ones get 413.
    /// Default: 1 MiB.
    pub max_body_bytes: usize,
    /// After the log, event time advances with the wall clock: the tick of
    /// an event POSTed at wall time w becomes visible once the clock passes
    /// its end plus this many milliseconds, and an event whose tick the clock
    /// has passed by more is `late`. Default: 1000, so that events stamped
    /// in whole seconds (or by a client whose clock lags) are applied.
    pub lateness_ms: u64,
    /// Once the log is read, run the dataflow's workers under Linux's
    /// `SCHED_IDLE` policy, so that the threads answering reads always run
    /// first: under a read load that takes every core, events then become
    /// visible later rather than answers arriving later. Default: true.
    pub reads_first: bool,
    /// How long a client may take to send a request's headers (and an
    /// idle keep-alive connection may wait for its next request) before
    /// its connection is closed: a client that trickles bytes cannot hold
    /// a connection for ever. Default: 30000 (30 s).
    pub header_timeout_ms: u64,
    /// `[serve.auth]`: bearer tokens and their roles. Default: none, and
    /// every endpoint is open (docs/privacy.md).
    pub auth: Option<AuthConfig>,
    /// `[serve.tls]`: a certificate to serve HTTPS with. Default: none,
    /// plain HTTP.
    pub tls: Option<TlsConfig>,
}

/// `[serve.tls]`: PEM files of the server's certificate chain and key.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[serve.auth]`: who may call which endpoints of `persona serve`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `[[serve.auth.tokens]]`: the tokens, stored as hashes.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// A TOML file of more `[[tokens]]`, in the same form: tokens kept
    /// apart from the config, with their own permissions. Default: none.
    pub tokens_file: Option<PathBuf>,
    /// A JSON-lines file for the audit log of admin actions. Default: stderr.
    pub audit_log: Option<PathBuf>,
}

/// One bearer token: only its SHA-256 is kept, so the config reveals no
/// token (`printf %s TOKEN | sha256sum`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it, as the audit log names them.
    pub name: String,
    /// The token's SHA-256, in hex.
    pub sha256: String,
    pub roles: Vec<Role>,
    /// Profile fields this token does not see (e.g. `spend`).
    #[serde(default)]
    pub hide_profile_fields: Vec<String>,
}

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// `GET /v1/users/{id}/profile`.
    ReadProfiles,
    /// `GET /v1/users/{id}/recommendations`, `GET /v1/items/{id}/similar`.
    ReadRecommendations,
    /// `POST /v1/events`.
    Ingest,
    /// `DELETE /v1/users/{id}`.
    Admin,
}

/// `[serve] header_timeout_ms` by default, and for `run`'s `/metrics`.
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 30_000;

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "127.0.0.1:8080".to_owned(),
            max_body_bytes: 1 << 20,
            lateness_ms: 1000,
            reads_first: true,
            header_timeout_ms: DEFAULT_HEADER_TIMEOUT_MS,
            auth: None,
            tls: None,
        }
    }
}

/// `[output]`: the dead letters (`rejected.jsonl`, `late.jsonl` and the
/// dead-letter topic) copy records of the source, which may hold columns
/// that are nobody's business (names, addresses): these settings limit that.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// What a dead letter's `raw` holds: `full`, the record as read, or
    /// `mapped`, a JSON object of only the fields the mapping reads (field
    /// name → value as read, null when empty; `""` for a record that could
    /// not be split into fields). Default: `full`.
    pub raw: RawRecords,
    /// Unix permission bits of the files holding raw records (`rejected`,
    /// `late`); write it in octal, `0o600`. Default: `0o600` (the owner only).
    pub raw_file_mode: u32,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            raw: RawRecords::Full,
            raw_file_mode: 0o600,
        }
    }
}

/// The `raw` of a dead letter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawRecords {
    /// The whole record as read.
    #[default]
    Full,
    /// Only the mapped fields.
    Mapped,
}

/// `[source]`: the long-running sources of `persona run`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// `[source.kafka]`: topics of records in the `[input]` format.
    pub kafka: Option<KafkaSourceConfig>,
}

/// `[sink]`: the outputs of `persona run`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// `[sink.files]`: the jsonl outputs of a replay, in a folder.
    pub files: Option<FileSinkConfig>,
    /// `[sink.kafka]`: upsert topics per output, and a dead-letter topic.
    pub kafka: Option<KafkaOutputsConfig>,
    /// `[sink.parquet]`: the outputs as Parquet datasets partitioned by bucket.
    pub parquet: Option<ParquetSinkConfig>,
}

/// `[sink.parquet]` (and `persona replay --output-format parquet`): each
/// output's final state as a Parquet dataset `dir/NAME/bucket=B/part-0.parquet`,
/// partitioned by a hash bucket of its user (similar items: item).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ParquetSinkConfig {
    /// The folder of the datasets (created if missing).
    pub dir: PathBuf,
    /// Number of buckets, 1 to [`MAX_BUCKETS`]. Default: 16.
    #[serde(default = "default_buckets")]
    pub buckets: u32,
}

/// The most buckets a Parquet dataset may have: each is a folder and a file.
pub const MAX_BUCKETS: u32 = 4096;

/// Buckets of a dataset unless configured: few enough files for a small
/// log, enough that rewriting one user's partition touches 1/16 of it.
pub const DEFAULT_BUCKETS: u32 = 16;

fn default_buckets() -> u32 {
    DEFAULT_BUCKETS
}

/// `[sink.files]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The folder of the outputs (created if missing); `--out` overrides it.
    pub dir: PathBuf,
    /// Also write each output's stream of changes, `X.changes.jsonl`. Default: false.
    #[serde(default)]
    pub changelog: bool,
}

/// `[sink.kafka]`: one compacted topic per output, each message keyed by
/// user (or item) holding its current record, or a tombstone when it is
/// gone. An output without a topic is not sent to Kafka.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaOutputsConfig {
    /// Bootstrap brokers. Default: `127.0.0.1:9092`.
    pub brokers: String,
    /// Topic of `profiles` upserts, keyed by user. Default: none.
    pub profiles: Option<String>,
    /// Topic of `similar_items` upserts, keyed by item. Default: none.
    pub similar_items: Option<String>,
    /// Topic of `recommendations` upserts, keyed by user. Default: none.
    pub recommendations: Option<String>,
    /// Topic of `alerts` (with `[risk]`), keyed by `user/rule/time_ms`: a
    /// raised alert, or a tombstone when it is retracted. Default: none.
    pub alerts: Option<String>,
    /// Topic of `item_feedback` upserts, keyed by item. Default: none.
    pub item_feedback: Option<String>,
    /// Dead-letter topic: rejected and late records with reason and
    /// topic/partition/offset, as in `rejected.jsonl`. Default: none.
    pub rejected: Option<String>,
    /// Partitions of the topics persona creates. Default: 4.
    pub partitions: i32,
    /// Extra librdkafka producer properties. Default: none.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaOutputsConfig {
    fn default() -> Self {
        KafkaOutputsConfig {
            brokers: DEFAULT_BROKERS.into(),
            profiles: None,
            similar_items: None,
            recommendations: None,
            alerts: None,
            item_feedback: None,
            rejected: None,
            partitions: kafka::DEFAULT_PARTITIONS,
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaOutputsConfig {
    /// The upsert topic of `output`, if it has one.
    pub fn topic_of(&self, output: Output) -> Option<KafkaSinkConfig> {
        let topic = match output {
            Output::Profiles => &self.profiles,
            Output::SimilarItems => &self.similar_items,
            Output::Recommendations => &self.recommendations,
            Output::Alerts => &self.alerts,
            Output::ItemFeedback => &self.item_feedback,
            // A handful of records that change at a refit: files only.
            Output::Segments => return None,
        };
        Some(self.topic(topic.as_ref()?))
    }

    /// The sink config of one topic.
    pub fn topic(&self, topic: &str) -> KafkaSinkConfig {
        KafkaSinkConfig {
            brokers: self.brokers.clone(),
            topic: topic.to_owned(),
            partitions: self.partitions,
            properties: self.properties.clone(),
        }
    }
}

impl PipelineConfig {
    /// Reads and validates a TOML config file.
    pub fn from_file(path: &Path) -> Result<PipelineConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let parse_error = |source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        };
        let table: toml::Table = toml::from_str(&text).map_err(parse_error)?;
        check_privacy_keys(&table)?;
        let config: PipelineConfig = toml::from_str(&text).map_err(parse_error)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: required mapping fields and value ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(checkpoint) = &self.checkpoint {
            if !(checkpoint.interval_s.is_finite() && checkpoint.interval_s > 0.0) {
                return Err(ConfigError::Invalid(format!(
                    "[checkpoint] interval_s must be a positive number of seconds, not {}",
                    checkpoint.interval_s
                )));
            }
            if checkpoint.keep == 0 {
                return Err(ConfigError::Invalid(
                    "[checkpoint] keep must be at least 1".into(),
                ));
            }
            if !(1..=MAX_BUCKETS).contains(&checkpoint.buckets) {
                return Err(invalid_field(
                    "[checkpoint] buckets",
                    &format!("between 1 and {MAX_BUCKETS}"),
                ));
            }
            if checkpoint.compact_files == 0 {
                return Err(ConfigError::Invalid(
                    "[checkpoint] compact_files must be at least 1".into(),
                ));
            }
        }
        if self.serve.header_timeout_ms == 0 {
            return Err(invalid_field(
                "[serve] header_timeout_ms",
                "a positive number of milliseconds",
            ));
        }
        let mapping = &self.input.mapping;
        if mapping.user.is_empty() || mapping.item.is_empty() {
            return Err(ConfigError::Invalid(
                "[input.mapping] needs `user` and `item` fields".into(),
            ));
        }
        if mapping.time.is_empty() {
            return Err(ConfigError::Invalid(
                "[input.mapping] needs a `time` field".into(),
            ));
        }
        match (&mapping.action, &mapping.action_constant) {
            (None, None) => {
                return Err(ConfigError::Invalid(
                    "[input.mapping] needs `action` (a field) or `action_constant`".into(),
                ))
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "[input.mapping] has both `action` and `action_constant`; keep one".into(),
                ))
            }
            _ => {}
        }
        if let Some(cancellation) = &mapping.cancellation {
            // Values are trimmed before the comparison: an empty prefix
            // would cancel every record, a padded one none.
            if cancellation.field.is_empty() {
                return Err(invalid_field(
                    "[input.mapping.cancellation] field",
                    "the name of a field",
                ));
            }
            let prefix = &cancellation.prefix;
            if prefix.is_empty() || prefix.trim() != prefix {
                return Err(invalid_field(
                    "[input.mapping.cancellation] prefix",
                    "a nonempty prefix without surrounding whitespace (every record would be a cancellation, or none)",
                ));
            }
        }
        if mapping
            .price_decimals
            .is_some_and(|d| d > MAX_PRICE_DECIMALS)
        {
            return Err(invalid_field(
                "[input.mapping] price_decimals",
                "at most 6 decimal places",
            ));
        }
        for (name, bound) in [
            ("rating_min", mapping.rating_min),
            ("rating_max", mapping.rating_max),
        ] {
            if bound.is_some_and(|b| !b.is_finite()) {
                return Err(invalid_field(
                    &format!("[input.mapping] {name}"),
                    "a finite number",
                ));
            }
        }
        if let (Some(min), Some(max)) = (mapping.rating_min, mapping.rating_max) {
            if min > max {
                return Err(invalid_field(
                    "[input.mapping] rating_min",
                    "at most rating_max",
                ));
            }
        }
        if !(1..=MAX_RECORD_BYTES_LIMIT).contains(&self.cleaning.max_record_bytes) {
            return Err(invalid_field(
                "[cleaning] max_record_bytes",
                "between 1 and 1073741824 (1 GiB)",
            ));
        }
        if let Some(catalog) = &self.catalog {
            if catalog
                .price_decimals
                .is_some_and(|d| d > MAX_PRICE_DECIMALS)
            {
                return Err(invalid_field(
                    "[catalog] price_decimals",
                    "at most 6 decimal places",
                ));
            }
        }
        // The profile's and the risk's errors name their table and field.
        self.profile
            .validate()
            .map_err(|error| ConfigError::Invalid(error.to_string()))?;
        if let Some(risk) = &self.risk {
            risk.validate()
                .map_err(|error| ConfigError::Invalid(error.to_string()))?;
        }
        if let Some(kmeans) = &self.segments.kmeans {
            kmeans
                .validate()
                .map_err(|error| ConfigError::Invalid(format!("[segments.kmeans] {error}")))?;
        }
        if self.profile.segment.min_purchases < 0 {
            return Err(invalid_field(
                "[profile.segment] min_purchases",
                "a count of at least 0",
            ));
        }
        if self.profile.segment.min_spend < 0 {
            return Err(invalid_field(
                "[profile.segment] min_spend",
                "an amount of at least 0 minor units",
            ));
        }
        self.recommend
            .validate()
            .map_err(|error| ConfigError::Invalid(format!("[recommend] {error}")))?;
        // NaN, zero or a negative half-life turns every score into null.
        if let Some(days) = self.recommend.decay_half_life_days {
            if !(days.is_finite() && days > 0.0) {
                return Err(invalid_field(
                    "[recommend] decay_half_life_days",
                    "a finite number of days > 0 (decay = false for no decay)",
                ));
            }
        }
        for (field, weight) in [
            ("[recommend] repeat_weight", self.recommend.repeat_weight),
            ("[recommend] trend_weight", self.recommend.trend_weight),
        ] {
            if !(weight.is_finite() && weight >= 0.0) {
                return Err(invalid_field(field, "a finite weight ≥ 0"));
            }
        }
        if self.output.raw_file_mode > 0o777 {
            return Err(invalid_field(
                "[output] raw_file_mode",
                "permission bits between 0o000 and 0o777",
            ));
        }
        if let Some(kafka) = &self.sink.kafka {
            if kafka.partitions < 1 {
                return Err(invalid_field(
                    "[sink.kafka] partitions",
                    "at least 1 partition",
                ));
            }
        }
        if let Some(parquet) = &self.sink.parquet {
            if !(1..=MAX_BUCKETS).contains(&parquet.buckets) {
                return Err(invalid_field(
                    "[sink.parquet] buckets",
                    &format!("between 1 and {MAX_BUCKETS}"),
                ));
            }
        }
        if self.time.recommend_tick_ms == Some(0) {
            return Err(ConfigError::Invalid(
                "[time] recommend_tick_ms must be at least 1".into(),
            ));
        }
        if self.time.tick_ms == 0 {
            return Err(ConfigError::Invalid(
                "[time] tick_ms must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// More decimal places than this would overflow 64-bit minor units of
/// ordinary prices (and 10^19 does not fit at all).
const MAX_PRICE_DECIMALS: u32 = 6;

/// The largest `max_record_bytes` allowed: a line is held in memory whole.
const MAX_RECORD_BYTES_LIMIT: usize = 1 << 30;

/// The default `max_record_bytes`, 1 MiB: a thousand times a typical record.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;

fn invalid_field(field: &str, expected: &str) -> ConfigError {
    ConfigError::Invalid(format!("{field}: expected {expected}"))
}

/// `[input]`: the log and how to read it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    /// The log to read; `--input` overrides it. `-` is stdin. Default: none.
    pub path: Option<PathBuf>,
    /// `csv` or `jsonl`. Default: `csv`.
    pub format: FormatKind,
    /// CSV options (ignored for JSON Lines).
    pub csv: CsvOptions,
    /// Which field of a record is what.
    pub mapping: Mapping,
}

/// The text formats. Both frame records as lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FormatKind {
    #[default]
    Csv,
    Jsonl,
}

/// `[input.csv]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsvOptions {
    /// Whether the first line names the columns. Default: true.
    pub has_header: bool,
    /// Column names when there is no header line, and of the records of a
    /// Kafka topic, which has none (a file's header line wins). Default: none.
    pub columns: Vec<String>,
    /// Field delimiter, one byte (`"\t"` for tab-separated). Default: `","`.
    pub delimiter: String,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            has_header: true,
            columns: Vec::new(),
            delimiter: ",".into(),
        }
    }
}

/// `[input.mapping]`: field names (CSV column names, or JSON keys) for each
/// part of an event. Only `user`, `item`, `time` and one of `action` /
/// `action_constant` are required.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mapping {
    /// Field of the user id. Required.
    pub user: String,
    /// Field of the item id. Required.
    pub item: String,
    /// Field of the action name. Default: none (then `action_constant`).
    pub action: Option<String>,
    /// The action of every record, for logs of one kind (`purchase`). Default: none.
    pub action_constant: Option<String>,
    /// Source action names → persona's (`pv = "view"`). Canonical names
    /// (view, click, cart, uncart, favourite, purchase, rating, impression,
    /// rec_click, not_interested) are always understood. Default: none.
    pub action_synonyms: BTreeMap<String, String>,
    /// Field of the event time. Required.
    pub time: String,
    /// `epoch_s`, `epoch_ms`, `rfc3339`, or a strftime pattern such as
    /// `%Y-%m-%d %H:%M:%S` (read in `time_zone`). Default: `epoch_ms`.
    pub time_format: Option<String>,
    /// IANA zone of times without an offset. Default: `UTC`.
    pub time_zone: Option<String>,
    /// Field of the item category. Default: none.
    pub category: Option<String>,
    /// Field of the unit price, a decimal in major units. Default: none.
    pub price: Option<String>,
    /// Decimal places of the minor unit (2: "2.55" is 255). Default: 2.
    pub price_decimals: Option<u32>,
    /// Field of the quantity (an integer). Default: none (quantity 1).
    pub quantity: Option<String>,
    /// Field of the rating, a decimal (stored in hundredths). Default: none.
    pub rating: Option<String>,
    /// Lowest rating of the scale (e.g. 0.5); lower ones are rejected as
    /// `rating_out_of_range`. At most two decimals. Default: none (only
    /// ratings below −1,000,000 are rejected).
    pub rating_min: Option<f64>,
    /// Highest rating of the scale (e.g. 5); higher ones are rejected as
    /// `rating_out_of_range`. At most two decimals. Default: none (only
    /// ratings above 1,000,000 are rejected).
    pub rating_max: Option<f64>,
    /// Field of a unique event id, used for deduplication. Default: none.
    pub event_id: Option<String>,
    /// Field of the session id. Default: none.
    pub session: Option<String>,
    /// A record whose `field` starts with `prefix` cancels a purchase: it is
    /// applied as the retraction of that purchase. Default: none.
    pub cancellation: Option<Cancellation>,
    /// JSON only: the key of an array whose elements are the records; other
    /// fields are looked up in the element first, then in the enclosing
    /// object (OTTO's `{"session", "events": [...]}`). Default: none.
    pub records: Option<String>,
}

/// How a cancellation is recognised.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cancellation {
    pub field: String,
    pub prefix: String,
}

/// `[cleaning]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CleaningConfig {
    /// Item ids that are not products (postage, fees): rejected as
    /// `non_product`. Compared after trimming. Default: none.
    pub non_product_items: Vec<String>,
    /// Write integers written as floats (`17850.0`) as integers. Default: true.
    pub numeric_ids: bool,
    /// Count a record seen again (same event id, or same content when the
    /// log has no ids) as a duplicate instead of applying it twice. Default: true.
    pub dedup: bool,
    /// How long, in event-time seconds, a record is remembered for
    /// deduplication. Default: 86400 (a day).
    pub dedup_horizon_s: u64,
    /// Longest record, in bytes (a line of a file, a Kafka message). Longer
    /// ones are rejected as `record_too_large`, with only their first 4 KiB
    /// as `raw`, and a file's line is skipped without being held in memory.
    /// At most 1 GiB. Default: 1048576 (1 MiB).
    pub max_record_bytes: usize,
}

impl Default for CleaningConfig {
    fn default() -> Self {
        CleaningConfig {
            non_product_items: Vec::new(),
            numeric_ids: true,
            dedup: true,
            dedup_horizon_s: 86_400,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

/// `[time]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeConfig {
    /// Event times are truncated to this many milliseconds to form the
    /// dataflow timestamp; outputs change at most once per tick. Default: 1000.
    pub tick_ms: u64,
    /// Similar items and recommendations change at most once per this many
    /// milliseconds of event time: events reach collaborative filtering at
    /// the end of their period. Exact at that granularity; a finer period
    /// costs about one recomputation of the similarity lists per period
    /// (with a normalised metric a changed item count changes every pair of
    /// the item). Default: `tick_ms`.
    pub recommend_tick_ms: Option<u64>,
    /// How far, in seconds of event time, a record may arrive behind the
    /// latest one a reader has seen and still be applied. Later records are
    /// counted as `late` and written to `late.jsonl`. Default: 3600.
    pub allowed_lateness_s: u64,
    /// Records whose event time is more than this many seconds after the
    /// wall clock (at the start of the run, whole hours) are rejected as
    /// `time_in_future`, so one absurd timestamp cannot advance the
    /// watermark past the rest of the log (as Kafka's
    /// `message.timestamp.after.max.ms`). Default: 86400 (one day).
    pub max_future_s: u64,
}

/// Allowed lateness from which the input frontier cannot move before the end
/// of a log: a century reaches back before the first event of any log.
const UNBOUNDED_LATENESS_S: u64 = 100 * 365 * 86_400;

pub use persona_dataflows::time::end_of_period;

/// The Kafka brokers when a config names none.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

impl TimeConfig {
    /// The dataflow timestamp of an event time (ms): its tick.
    pub fn tick_of(&self, time_ms: u64) -> u64 {
        time_ms - time_ms % self.tick_ms
    }

    /// Collaborative filtering's period: `recommend_tick_ms` (default the
    /// tick), or, when the allowed lateness is unbounded, one period for all
    /// time, so that it runs once, at the end of the input.
    ///
    /// With unbounded lateness (the presets of logs not in time order) the
    /// input frontier only moves at the end, so every refresh of the
    /// similarity lists and rankings would be computed then, all at once,
    /// and held together in memory: refreshes × (items × K + users × N × K),
    /// the square of the log when refreshes grow with it. Nothing but the
    /// last one would reach the output files.
    pub fn recommend_period(&self) -> u64 {
        if self.allowed_lateness_s >= UNBOUNDED_LATENESS_S {
            u64::MAX
        } else {
            self.recommend_tick_ms.unwrap_or(self.tick_ms)
        }
    }

    /// How often `output` changes: every tick, or once per
    /// [`recommend_period`](Self::recommend_period).
    pub fn period_of(&self, output: Output) -> u64 {
        if output.is_periodic() {
            self.recommend_period()
        } else {
            1
        }
    }

    /// The latest plausible event time (ms): the wall clock at the start of
    /// the hour, plus `max_future_s`. Whole hours, so that the processes of
    /// one run, started moments apart, agree.
    pub fn max_event_time_ms(&self) -> u64 {
        const HOUR_MS: u64 = 3_600_000;
        let now_ms = wall_clock_ms();
        (now_ms - now_ms % HOUR_MS).saturating_add(self.max_future_s.saturating_mul(1000))
    }
}

/// The wall clock, in ms since the Unix epoch (0 before it).
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

impl Default for TimeConfig {
    fn default() -> Self {
        TimeConfig {
            tick_ms: 1000,
            recommend_tick_ms: None,
            allowed_lateness_s: 3600,
            max_future_s: 86_400,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(toml: &str) -> Result<(), ConfigError> {
        let base = "[input.mapping]\nuser = \"u\"\nitem = \"i\"\ntime = \"t\"\naction = \"a\"\n";
        let config: PipelineConfig = toml::from_str(&format!("{base}{toml}")).unwrap();
        config.validate()
    }

    fn rejects(toml: &str, field: &str) {
        let error = validate(toml).expect_err(toml).to_string();
        assert!(error.contains(field), "{toml}: {error}");
    }

    /// The blend is the default where it won on validation, and a config
    /// that asks for the dataflow's rankings is not refused for it.
    #[test]
    fn the_blend_is_the_default_of_discovery_ranked_on_demand() {
        let mf_weight = |toml: &str| {
            assert!(validate(toml).is_ok(), "{toml}");
            let config: PipelineConfig = toml::from_str(toml).unwrap();
            config.recommend.mf_weight
        };
        assert_eq!(mf_weight(""), 0.25);
        assert_eq!(mf_weight("[recommend]\ntop_k = 5\n"), 0.25);
        assert_eq!(mf_weight("[recommend]\nmode = \"repeat\"\n"), 0.0);
        assert_eq!(mf_weight("[recommend]\nrankings = \"dataflow\"\n"), 0.0);
        let indicator = "[recommend]\nprimary_action = \"purchase\"\nindicator_action = \"view\"\n";
        assert_eq!(mf_weight(indicator), 0.0);
        assert_eq!(mf_weight("[recommend]\nmf_weight = 0\n"), 0.0);
    }

    #[test]
    fn nonsense_numbers_name_their_field() {
        assert!(validate("").is_ok());
        for days in ["0.0", "-1.0", "nan", "inf"] {
            rejects(
                &format!("[recommend]\ndecay_half_life_days = {days}\n"),
                "decay_half_life_days",
            );
        }
        assert!(validate("[recommend]\ndecay_half_life_days = 30.0\n").is_ok());
        rejects(
            "[catalog]\npath = \"c.csv\"\nprice_decimals = 64\n",
            "[catalog] price_decimals",
        );
        rejects("price_decimals = 7\n", "price_decimals");
        rejects("rating_min = 5.0\nrating_max = 0.5\n", "rating_min");
        for prefix in ["\"\"", "\" C\""] {
            rejects(
                &format!("[input.mapping.cancellation]\nfield = \"i\"\nprefix = {prefix}\n"),
                "cancellation] prefix",
            );
        }
        rejects(
            "[input.mapping.cancellation]\nfield = \"\"\nprefix = \"C\"\n",
            "cancellation] field",
        );
        assert!(validate("[input.mapping.cancellation]\nfield = \"i\"\nprefix = \"C\"\n").is_ok());
        rejects("rating_max = nan\n", "rating_max");
        rejects("[cleaning]\nmax_record_bytes = 0\n", "max_record_bytes");
        rejects("[serve]\nheader_timeout_ms = 0\n", "header_timeout_ms");
        rejects("[output]\nraw_file_mode = 0o1777\n", "raw_file_mode");
        rejects("[sink.kafka]\npartitions = 0\n", "partitions");
        rejects("[sink.parquet]\ndir = \"p\"\nbuckets = 0\n", "buckets");
        rejects("[sink.parquet]\ndir = \"p\"\nbuckets = 5000\n", "buckets");
        rejects("[checkpoint]\ndir = \"c\"\nkeep = 0\n", "[checkpoint] keep");
        rejects(
            "[checkpoint]\ndir = \"c\"\nbuckets = 0\n",
            "[checkpoint] buckets",
        );
        rejects(
            "[checkpoint]\ndir = \"c\"\ncompact_files = 0\n",
            "[checkpoint] compact_files",
        );
        assert!(validate("[checkpoint]\ndir = \"c\"\nbuckets = 4096\n").is_ok());
        rejects("[profile.segment]\nmin_spend = -1\n", "min_spend");
        rejects("[profile.segment]\nmin_purchases = -1\n", "min_purchases");
        rejects("[profile]\nhalf_life_days = nan\n", "half_life_days");
    }

    #[test]
    fn output_defaults_keep_raw_records_private() {
        let config = PipelineConfig::default();
        assert_eq!(config.output.raw, RawRecords::Full);
        assert_eq!(config.output.raw_file_mode, 0o600);
        assert_eq!(config.cleaning.max_record_bytes, 1 << 20);
        let config: PipelineConfig =
            toml::from_str("[output]\nraw = \"mapped\"\nraw_file_mode = 0o640\n").unwrap();
        assert_eq!(config.output.raw, RawRecords::Mapped);
        assert_eq!(config.output.raw_file_mode, 0o640);
    }
}
