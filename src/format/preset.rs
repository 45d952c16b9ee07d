//! Presets: configs that read well-known public behaviour logs as they are,
//! with no preprocessing step. Each is an ordinary [`PipelineConfig`]: the
//! functions below, read as TOML tables, are a starting point for a mapped log.

use std::path::Path;

use crate::config::{
    Cancellation, CleaningConfig, CsvOptions, FormatKind, InputConfig, Mapping, PipelineConfig,
    TimeConfig,
};

/// The preset names `--format` accepts.
pub const NAMES: [&str; 4] = ["online-retail", "movielens", "taobao", "otto"];

/// The config of a preset, or `None` for an unknown name. `input` helps
/// presets whose source comes in several layouts (MovieLens' `u.data` and
/// `ratings.csv`).
pub fn preset(name: &str, input: Option<&Path>) -> Option<PipelineConfig> {
    let config = match name {
        "online-retail" => online_retail(),
        "movielens" => movielens(input),
        "taobao" => taobao(),
        "otto" => otto(),
        _ => return None,
    };
    Some(config)
}

/// Refuses an input a preset cannot read as it is: MovieLens releases are
/// folders of several tables (movies, tags, links) beside the ratings, and
/// the preset reads the ratings file alone.
pub fn check_input(name: &str, input: Option<&Path>) -> Result<(), String> {
    let Some(folder) = input.filter(|path| name == "movielens" && path.is_dir()) else {
        return Ok(());
    };
    let ratings = ["ratings.csv", "u.data"]
        .iter()
        .map(|file| folder.join(file))
        .find(|path| path.is_file());
    Err(match ratings {
        Some(file) => format!(
            "--format movielens reads one ratings file, not the folder {}: \
             pass --input {}",
            folder.display(),
            file.display()
        ),
        None => format!(
            "--format movielens reads one ratings file (u.data or ratings.csv), \
             not the folder {}",
            folder.display()
        ),
    })
}

/// UCI Online Retail: one row per invoice line; `C` invoices cancel purchases.
/// Times are the shop's local time (Europe/London).
fn online_retail() -> PipelineConfig {
    PipelineConfig {
        input: InputConfig {
            path: None,
            format: FormatKind::Csv,
            csv: CsvOptions {
                // The file's header; a topic of its lines has none.
                columns: [
                    "InvoiceNo",
                    "StockCode",
                    "Description",
                    "Quantity",
                    "InvoiceDate",
                    "UnitPrice",
                    "CustomerID",
                    "Country",
                ]
                .map(String::from)
                .to_vec(),
                ..CsvOptions::default()
            },
            mapping: Mapping {
                user: "CustomerID".into(),
                item: "StockCode".into(),
                action_constant: Some("purchase".into()),
                time: "InvoiceDate".into(),
                // `%.f`: optional fractional seconds, so live events can be stamped
                // to the millisecond (the log has whole seconds).
                time_format: Some("%Y-%m-%d %H:%M:%S%.f".into()),
                time_zone: Some("Europe/London".into()),
                price: Some("UnitPrice".into()),
                quantity: Some("Quantity".into()),
                session: Some("InvoiceNo".into()),
                cancellation: Some(Cancellation {
                    field: "InvoiceNo".into(),
                    prefix: "C".into(),
                }),
                ..Mapping::default()
            },
        },
        cleaning: CleaningConfig {
            // Postage, fees, manual adjustments, discounts, samples and charity
            // lines: the stock codes of Online Retail that are not products.
            non_product_items: [
                "POST",
                "DOT",
                "M",
                "m",
                "C2",
                "D",
                "S",
                "B",
                "BANK CHARGES",
                "AMAZONFEE",
                "CRUK",
                "PADS",
            ]
            .map(String::from)
            .to_vec(),
            ..CleaningConfig::default()
        },
        time: TimeConfig {
            // A monthly similarity model over a year of invoices: each refresh
            // recomputes most item pairs (see `recommend_tick_ms`).
            recommend_tick_ms: Some(30 * DAY_MS),
            ..TimeConfig::default()
        },
        ..PipelineConfig::default()
    }
}

/// MovieLens ratings: `u.data` (tab-separated `user item rating timestamp`,
/// no header) or `ratings.csv` (`userId,movieId,rating,timestamp`). The
/// layout is chosen by the file name: a `.csv` file is `ratings.csv`.
/// Ratings files are sorted by user, not time, so lateness is unbounded.
fn movielens(input: Option<&Path>) -> PipelineConfig {
    let is_csv = input
        .and_then(Path::file_name)
        .map(|name| name.to_string_lossy().to_lowercase())
        .is_some_and(|name| {
            let name = name
                .trim_end_matches(".gz")
                .trim_end_matches(".xz")
                .trim_end_matches(".zst");
            name.ends_with(".csv")
        });
    let (csv, mapping) = if is_csv {
        (
            CsvOptions::default(),
            Mapping {
                user: "userId".into(),
                item: "movieId".into(),
                rating: Some("rating".into()),
                time: "timestamp".into(),
                ..Mapping::default()
            },
        )
    } else {
        (
            CsvOptions {
                has_header: false,
                columns: ["user", "item", "rating", "timestamp"]
                    .map(String::from)
                    .to_vec(),
                delimiter: "\t".into(),
            },
            Mapping {
                user: "user".into(),
                item: "item".into(),
                rating: Some("rating".into()),
                time: "timestamp".into(),
                ..Mapping::default()
            },
        )
    };
    PipelineConfig {
        input: InputConfig {
            path: None,
            format: FormatKind::Csv,
            csv,
            mapping: Mapping {
                action_constant: Some("rating".into()),
                time_format: Some("epoch_s".into()),
                ..mapping
            },
        },
        cleaning: CleaningConfig::default(),
        time: unbounded_lateness(),
        ..PipelineConfig::default()
    }
}

/// Taobao UserBehavior.csv: `user,item,category,pv|cart|fav|buy,unix seconds`,
/// no header, sorted by user.
fn taobao() -> PipelineConfig {
    PipelineConfig {
        input: InputConfig {
            path: None,
            format: FormatKind::Csv,
            csv: CsvOptions {
                has_header: false,
                columns: ["user", "item", "category", "behavior", "timestamp"]
                    .map(String::from)
                    .to_vec(),
                delimiter: ",".into(),
            },
            mapping: Mapping {
                user: "user".into(),
                item: "item".into(),
                category: Some("category".into()),
                action: Some("behavior".into()),
                action_synonyms: [
                    ("pv", "view"),
                    ("cart", "cart"),
                    ("fav", "favourite"),
                    ("buy", "purchase"),
                ]
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .into(),
                time: "timestamp".into(),
                time_format: Some("epoch_s".into()),
                ..Mapping::default()
            },
        },
        cleaning: CleaningConfig::default(),
        time: unbounded_lateness(),
        ..PipelineConfig::default()
    }
}

/// OTTO sessions: one JSON object per session, `{"session", "events": [{"aid",
/// "ts", "type": clicks|carts|orders}]}`; the session is the user. Sessions
/// overlap in time, so lateness is unbounded.
fn otto() -> PipelineConfig {
    PipelineConfig {
        input: InputConfig {
            path: None,
            format: FormatKind::Jsonl,
            csv: CsvOptions::default(),
            mapping: Mapping {
                records: Some("events".into()),
                user: "session".into(),
                item: "aid".into(),
                action: Some("type".into()),
                action_synonyms: [
                    ("clicks", "click"),
                    ("carts", "cart"),
                    ("orders", "purchase"),
                ]
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .into(),
                time: "ts".into(),
                time_format: Some("epoch_ms".into()),
                session: Some("session".into()),
                ..Mapping::default()
            },
        },
        cleaning: CleaningConfig::default(),
        time: unbounded_lateness(),
        ..PipelineConfig::default()
    }
}

/// Milliseconds in a day.
const DAY_MS: u64 = 86_400_000;

/// For logs not sorted by time: every record is applied, however late, at
/// a timestamp of one day.
///
/// The input frontier then moves only at the end of the log, so every
/// version of every output is computed then and held until the run ends.
/// Collaborative filtering therefore runs once, at the end (see
/// `TimeConfig::recommend_period`): a refresh per tick would hold users ×
/// seconds rankings, the square of the log. Day timestamps keep one
/// version of a profile per user and day rather than per second with an
/// event, which is the resolution the day windows need (an event counts in
/// a W-day window from the start of its day to W days later). The daily
/// `recommend_tick_ms` applies to a copy of the preset given a bounded
/// lateness, e.g. for the log sorted by time: a daily model, as the batch
/// jobs these logs come from would build.
fn unbounded_lateness() -> TimeConfig {
    TimeConfig {
        tick_ms: DAY_MS,
        allowed_lateness_s: u64::MAX / 1000,
        recommend_tick_ms: Some(DAY_MS),
        ..TimeConfig::default()
    }
}
