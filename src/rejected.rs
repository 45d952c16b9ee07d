//! Rejections: why a record was not applied, and where it came from.
//!
//! Bad input never panics a worker and is never dropped silently: each
//! rejected record becomes one `rejected.jsonl` line with its source position,
//! a stable snake_case reason code, a human detail, and the raw record.
//! Files of raw records are created private ([`create_private_file`]): raw
//! lines carry every column of the source, not only the mapped ones.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

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
    /// The `index`-th event of the `request`-th `POST /v1/events` of a
    /// `persona serve` (counted from 1 and 0).
    Http { request: u64, index: usize },
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
            Position::Http { request, index } => write!(f, "POST /v1/events #{request}[{index}]"),
        }
    }
}

/// Why a record was not applied. The codes are stable: users count and
/// alert on them. Every reason but [`Reason::Late`] is a rejection
/// (`rejected.jsonl`, `summary.rejected`); a late record goes to
/// `late.jsonl` and `summary.late`. Reasons order (and `summary.json` lists
/// them) by code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    /// A quantity, price or quantity × price outside the per-row bounds that
    /// keep every sum of the profiles exact in 64 bits.
    AmountOutOfRange,
    /// A rating outside the configured scale (or beyond ±1e6).
    RatingOutOfRange,
    /// An id with a control character (NUL, tab inside, ESC, ...).
    InvalidId,
    /// Milliseconds in an `epoch_s` field or seconds in an `epoch_ms` one.
    TimeUnitMismatch,
    /// A record longer than `[input] max_record_bytes`.
    RecordTooLarge,
    /// A record whose event time is behind the watermark by more than the
    /// allowed lateness.
    Late,
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
            Reason::AmountOutOfRange => "amount_out_of_range",
            Reason::RatingOutOfRange => "rating_out_of_range",
            Reason::InvalidId => "invalid_id",
            Reason::TimeUnitMismatch => "time_unit_mismatch",
            Reason::RecordTooLarge => "record_too_large",
            Reason::Late => "late",
        }
    }

    /// Every reason.
    pub const ALL: [Reason; 23] = [
        Reason::ColumnCount,
        Reason::InvalidUtf8,
        Reason::InvalidJson,
        Reason::MissingUser,
        Reason::MissingItem,
        Reason::MissingAction,
        Reason::UnknownAction,
        Reason::MissingTime,
        Reason::InvalidTime,
        Reason::TimeOutOfRange,
        Reason::TimeInFuture,
        Reason::InvalidNumber,
        Reason::InvalidPrice,
        Reason::NegativePrice,
        Reason::InvalidQuantity,
        Reason::InvalidRating,
        Reason::NonProduct,
        Reason::AmountOutOfRange,
        Reason::RatingOutOfRange,
        Reason::InvalidId,
        Reason::TimeUnitMismatch,
        Reason::RecordTooLarge,
        Reason::Late,
    ];

    /// The reason of a code.
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|reason| reason.code() == code)
    }
}

impl PartialOrd for Reason {
    fn partial_cmp(&self, other: &Reason) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Reason {
    fn cmp(&self, other: &Reason) -> std::cmp::Ordering {
        self.code().cmp(other.code())
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Reason, D::Error> {
        let code = String::deserialize(deserializer)?;
        Reason::from_code(&code)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown reason `{code}`")))
    }
}

/// A reason with a human detail, before the position and raw record are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
    /// What to show as `raw` instead of the whole record: set by the decoder
    /// when `[output] raw = "mapped"`, or for a record too large to copy.
    pub raw: Option<String>,
}

impl Rejection {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            detail: detail.into(),
            raw: None,
        }
    }
}

/// At most this much of a record too large to decode is kept as its `raw`:
/// enough to recognise it, without copying megabytes into `rejected.jsonl`.
pub const RAW_PREFIX_BYTES: usize = 4096;

/// The first `max` bytes of `bytes` as text, cut at a character boundary.
pub fn truncated_text(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]);
    let mut text = text.into_owned();
    if bytes.len() > max {
        // The cut may split a character: drop its replacement character.
        if text.ends_with('\u{fffd}') {
            text.pop();
        }
    }
    text
}

/// One line of `rejected.jsonl`.
#[derive(Clone, Debug, Serialize)]
pub struct RejectedRecord {
    pub source: Position,
    pub reason: Reason,
    pub detail: String,
    pub raw: String,
}

impl RejectedRecord {
    /// `raw` is the record as read; the rejection's own `raw`, when the
    /// decoder set one, replaces it.
    pub fn new(source: Position, rejection: Rejection, raw: &[u8]) -> RejectedRecord {
        RejectedRecord {
            source,
            reason: rejection.reason,
            detail: rejection.detail,
            raw: rejection
                .raw
                .unwrap_or_else(|| String::from_utf8_lossy(raw).into_owned()),
        }
    }
}

/// Creates (or truncates) a file readable and writable only as `mode` says
/// (`0o600`: the owner only), for files that hold raw records. An existing
/// file gets `mode` too, before it is emptied, so a rerun into the same
/// folder does not keep an older, wider mode.
pub fn create_private_file(path: &Path, mode: u32) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(mode);
        let file = options.open(path)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.set_len(0)?;
        Ok(file)
    }
    #[cfg(not(unix))]
    {
        // Modes are a Unix notion; elsewhere the platform's defaults apply.
        let _ = mode;
        let file = options.open(path)?;
        file.set_len(0)?;
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn private_files_get_their_mode_even_when_they_exist() {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rejected.jsonl");
        std::fs::write(&path, "old contents\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut file = create_private_file(&path, 0o600).unwrap();
        file.write_all(b"new\n").unwrap();
        drop(file);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        let fresh = dir.path().join("late.jsonl");
        create_private_file(&fresh, 0o640).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }

    #[test]
    fn reasons_are_their_codes_in_code_order() {
        let mut codes: Vec<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
        let mut sorted = Reason::ALL;
        sorted.sort();
        codes.sort();
        assert_eq!(sorted.map(Reason::code).to_vec(), codes);
        for reason in Reason::ALL {
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("\"{}\"", reason.code()));
            assert_eq!(serde_json::from_str::<Reason>(&json).unwrap(), reason);
        }
        assert!(serde_json::from_str::<Reason>("\"nope\"").is_err());
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncated_text("abc".as_bytes(), 10), "abc");
        assert_eq!(truncated_text("abé".as_bytes(), 3), "ab");
        assert_eq!(truncated_text(&[b'0'; 10_000], 4096).len(), 4096);
    }

    #[test]
    fn a_decoder_raw_replaces_the_record() {
        let position = Position::File {
            file: "f".into(),
            line: 1,
            index: None,
        };
        let mut rejection = Rejection::new(Reason::InvalidId, "x");
        let full = RejectedRecord::new(position.clone(), rejection.clone(), b"a,b,c");
        assert_eq!(full.raw, "a,b,c");
        rejection.raw = Some("{}".into());
        assert_eq!(RejectedRecord::new(position, rejection, b"a,b,c").raw, "{}");
    }
}
