//! Rejections: why a record was not applied, and where it came from.
//!
//! Bad input never panics a worker and is never dropped silently: each
//! rejected record becomes one `rejected.jsonl` line with its source position,
//! a stable snake_case reason code, a human detail, and the raw record.

use std::fmt;

use serde::Serialize;

/// Where a record came from: a file and line (and the index inside the line
/// for logs with several records per line), or a topic, partition and offset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Position {
    File {
        file: String,
        line: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        index: Option<usize>,
    },
    Kafka {
        topic: String,
        partition: i32,
        offset: i64,
    },
}

impl Position {
    /// The same position, for the `index`-th record inside it.
    pub fn with_index(&self, index: usize) -> Position {
        match self {
            Position::File { file, line, .. } => Position::File {
                file: file.clone(),
                line: *line,
                index: Some(index),
            },
            other => other.clone(),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::File {
                file,
                line,
                index: None,
            } => write!(f, "{file}:{line}"),
            Position::File {
                file,
                line,
                index: Some(index),
            } => write!(f, "{file}:{line}#{index}"),
            Position::Kafka {
                topic,
                partition,
                offset,
            } => write!(f, "{topic}/{partition}/{offset}"),
        }
    }
}

/// Why a record was rejected. The codes are stable: users count and alert on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    ColumnCount,
    InvalidUtf8,
    InvalidJson,
    MissingUser,
    MissingItem,
    MissingAction,
    UnknownAction,
    MissingTime,
    InvalidTime,
    TimeOutOfRange,
    TimeInFuture,
    InvalidNumber,
    InvalidPrice,
    NegativePrice,
    InvalidQuantity,
    InvalidRating,
    NonProduct,
}

impl Reason {
    /// The snake_case code written to `rejected.jsonl` and `summary.json`.
    pub fn code(self) -> &'static str {
        match self {
            Reason::ColumnCount => "column_count",
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::InvalidJson => "invalid_json",
            Reason::MissingUser => "missing_user",
            Reason::MissingItem => "missing_item",
            Reason::MissingAction => "missing_action",
            Reason::UnknownAction => "unknown_action",
            Reason::MissingTime => "missing_time",
            Reason::InvalidTime => "invalid_time",
            Reason::TimeOutOfRange => "time_out_of_range",
            Reason::TimeInFuture => "time_in_future",
            Reason::InvalidNumber => "invalid_number",
            Reason::InvalidPrice => "invalid_price",
            Reason::NegativePrice => "negative_price",
            Reason::InvalidQuantity => "invalid_quantity",
            Reason::InvalidRating => "invalid_rating",
            Reason::NonProduct => "non_product",
        }
    }
}

/// A reason with a human detail, before the position and raw record are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

/// One line of `rejected.jsonl`.
#[derive(Clone, Debug, Serialize)]
pub struct RejectedRecord {
    pub source: Position,
    pub reason: &'static str,
    pub detail: String,
    pub raw: String,
}

impl RejectedRecord {
    pub fn new(source: Position, rejection: Rejection, raw: &[u8]) -> RejectedRecord {
        RejectedRecord {
            source,
            reason: rejection.reason.code(),
            detail: rejection.detail,
            raw: String::from_utf8_lossy(raw).into_owned(),
        }
    }
}
