//! Files and stdin, read line by line with their positions.
//!
//! Compression is recognised by content (gzip, xz, zstd magic bytes), so a
//! `.gz` without its extension still reads. A folder is read as its files in
//! name order. Each timely worker reads every line but decodes only its own
//! share (line number modulo workers), which keeps the event-time order of
//! each worker's records close to the file's — what watermarks need — and
//! works for compressed files, which cannot be split by byte ranges.
//!
//! Lines are read with a bound ([`Lines::with_max_record_bytes`]): of a longer
//! line only the first bytes are kept and the rest is skipped as it streams
//! by, so a gzip of a gigabyte of zeros neither exhausts memory nor ends up
//! whole in `rejected.jsonl`. The decoder rejects such a line as
//! `record_too_large`, since it is longer than its limit.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::DEFAULT_MAX_RECORD_BYTES;
use crate::rejected::Position;

/// Errors opening or reading an input.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open input {path}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot read input {path} after line {line}")]
    Read {
        path: PathBuf,
        line: u64,
        source: io::Error,
    },
    #[error("input folder {folder} holds the folder {subfolder}: folders are not read recursively; give its files as their own input, or move them up")]
    Subfolder { folder: PathBuf, subfolder: PathBuf },
}

/// The files an input path stands for: the file itself, the files of a
/// folder (name order, hidden entries skipped), or `-` for stdin. A folder
/// inside the folder is an error rather than silently left unread.
pub fn input_files(path: &Path) -> Result<Vec<PathBuf>, SourceError> {
    if path.as_os_str() == "-" || !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let open_error = |source| SourceError::Open {
        path: path.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(open_error)? {
        let entry = entry.map_err(open_error)?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        // Follows symbolic links: a link to a file is read like the file.
        let is_dir = std::fs::metadata(entry.path())
            .map(|metadata| metadata.is_dir())
            .unwrap_or(false);
        if is_dir {
            return Err(SourceError::Subfolder {
                folder: path.to_owned(),
                subfolder: entry.path(),
            });
        }
        files.push(entry.path());
    }
    files.sort();
    Ok(files)
}

/// Total size in bytes of the files, for progress reporting (0 for stdin).
pub fn total_bytes(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .filter_map(|file| std::fs::metadata(file).ok())
        .map(|metadata| metadata.len())
        .sum()
}

/// Counts the bytes read through it, for a progress bar.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Opens a file (or stdin for `-`), decompressing by content.
/// `bytes_read` counts the bytes taken from the file, before decompression.
pub fn open(path: &Path, bytes_read: Arc<AtomicU64>) -> Result<Box<dyn BufRead>, SourceError> {
    let raw: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(io::stdin())
    } else {
        Box::new(File::open(path).map_err(|source| SourceError::Open {
            path: path.to_owned(),
            source,
        })?)
    };
    let mut reader = BufReader::with_capacity(
        1 << 16,
        Counting {
            inner: raw,
            count: bytes_read,
        },
    );
    let magic = reader.fill_buf().map_err(|source| SourceError::Open {
        path: path.to_owned(),
        source,
    })?;
    const BUFFER: usize = 1 << 16;
    let decoded: Box<dyn BufRead> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(BufReader::with_capacity(
            BUFFER,
            flate2::bufread::MultiGzDecoder::new(reader),
        ))
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Box::new(BufReader::with_capacity(
            BUFFER,
            liblzma::bufread::XzDecoder::new_multi_decoder(reader),
        ))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let decoder = zstd::stream::read::Decoder::with_buffer(reader).map_err(|source| {
            SourceError::Open {
                path: path.to_owned(),
                source,
            }
        })?;
        Box::new(BufReader::with_capacity(BUFFER, decoder))
    } else {
        Box::new(reader)
    };
    Ok(decoded)
}

/// Reads lines (without their `\n` or `\r\n`), numbering them from 1.
pub struct Lines {
    path: PathBuf,
    reader: Box<dyn BufRead>,
    line: u64,
    buffer: Vec<u8>,
    max_record_bytes: usize,
    /// The length of the last line if it was longer than the limit.
    cut_length: Option<u64>,
    /// Where the last line returned ends in `buffer`.
    end: usize,
}

impl Lines {
    /// Lines of at most [`DEFAULT_MAX_RECORD_BYTES`] bytes are read whole.
    pub fn new(path: &Path, reader: Box<dyn BufRead>) -> Lines {
        Lines {
            path: path.to_owned(),
            reader,
            line: 0,
            buffer: Vec::new(),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            cut_length: None,
            end: 0,
        }
    }

    /// Reads lines of up to `max` bytes whole; of a longer line, only its
    /// first `max + 1` bytes are returned, so a reader that checks the
    /// length against `max` (as [`crate::format::Decoder`] does) rejects it.
    pub fn with_max_record_bytes(mut self, max: usize) -> Lines {
        self.max_record_bytes = max;
        self
    }

    /// The limit on the length of a line, in bytes.
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    /// The whole length, in bytes, of the last line returned if it was cut
    /// for being longer than the limit (its line end left out); `None` if
    /// it was read whole.
    pub fn cut_length(&self) -> Option<u64> {
        self.cut_length
    }

    /// The next line and its number, or `None` at the end. A line longer
    /// than the limit comes cut to its first `max_record_bytes + 1` bytes.
    pub fn next_line(&mut self) -> Result<Option<(u64, &[u8])>, SourceError> {
        let Some(length) = self.read_bounded().map_err(|source| SourceError::Read {
            path: self.path.clone(),
            line: self.line,
            source,
        })?
        else {
            return Ok(None);
        };
        self.line += 1;
        let mut end = self.buffer.len();
        if length > end as u64 {
            self.cut_length = Some(length);
            end = end.min(self.max_record_bytes.saturating_add(1));
            self.end = end;
            return Ok(Some((self.line, &self.buffer[..end])));
        }
        if self.buffer[..end].ends_with(b"\n") {
            end -= 1;
        }
        if self.buffer[..end].ends_with(b"\r") {
            end -= 1;
        }
        self.cut_length = None;
        self.end = end;
        Ok(Some((self.line, &self.buffer[..end])))
    }

    /// The last line returned by [`next_line`](Self::next_line).
    fn current(&self) -> &[u8] {
        &self.buffer[..self.end]
    }

    /// Reads one line into the buffer, keeping at most the limit plus the
    /// room for `\r\n`, and skipping the rest; returns the line's whole
    /// length (without its line end, if it was cut), or `None` at the end of
    /// the input.
    fn read_bounded(&mut self) -> io::Result<Option<u64>> {
        self.buffer.clear();
        let keep = self.max_record_bytes.saturating_add(2) as u64;
        // `read_until` finds the line end fast; `take` bounds what it keeps.
        let kept = (&mut self.reader)
            .take(keep)
            .read_until(b'\n', &mut self.buffer)? as u64;
        if kept == 0 {
            return Ok(None);
        }
        let mut length = kept;
        if kept == keep && self.buffer.last() != Some(&b'\n') {
            // The byte before the line's `\n`, to leave a `\r\n` out of the length.
            let mut previous = self.buffer.last().copied();
            loop {
                let available = match self.reader.fill_buf() {
                    Ok(available) => available,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                    Err(error) => return Err(error),
                };
                if available.is_empty() {
                    break;
                }
                let (skipped, done) = match available.iter().position(|&b| b == b'\n') {
                    Some(at) => (at + 1, true),
                    None => (available.len(), false),
                };
                let line_end = match done {
                    true if skipped >= 2 => 1 + u64::from(available[skipped - 2] == b'\r'),
                    true => 1 + u64::from(previous == Some(b'\r')),
                    false => 0,
                };
                previous = available[..skipped].last().copied();
                self.reader.consume(skipped);
                length += skipped as u64 - line_end;
                if done {
                    break;
                }
            }
        }
        Ok(Some(length))
    }
}

/// The records of one input file (or stdin): its non-blank lines, each with
/// its position, after its header line when it has one. What every reader
/// of files shares: `replay`, the in-memory loader, `produce` and the
/// dimension tables.
pub struct Records {
    lines: Lines,
    file: String,
    header: Option<(Position, Vec<u8>)>,
    blank_lines: u64,
}

impl Records {
    /// Opens `path`; with `has_header`, its first line is the header
    /// ([`header`](Self::header)), not a record. Lines longer than
    /// `max_record_bytes` come cut (see [`Lines::with_max_record_bytes`]);
    /// `bytes_read` counts the bytes read, for a progress bar.
    pub fn open(
        path: &Path,
        has_header: bool,
        max_record_bytes: usize,
        bytes_read: Arc<AtomicU64>,
    ) -> Result<Records, SourceError> {
        let lines =
            Lines::new(path, open(path, bytes_read)?).with_max_record_bytes(max_record_bytes);
        let mut records = Records {
            lines,
            file: path.display().to_string(),
            header: None,
            blank_lines: 0,
        };
        if has_header {
            if let Some((line, header)) = records.lines.next_line()? {
                let header = header.to_vec();
                records.header = Some((records.position(line), header));
            }
        }
        Ok(records)
    }

    fn position(&self, line: u64) -> Position {
        Position::File {
            file: self.file.clone(),
            line,
            index: None,
        }
    }

    /// The whole length of the last record returned if it came cut.
    pub fn cut_length(&self) -> Option<u64> {
        self.lines.cut_length()
    }

    /// The header line and its position; `None` for an empty file or one
    /// opened without a header.
    pub fn header(&self) -> Option<(&Position, &[u8])> {
        self.header
            .as_ref()
            .map(|(position, line)| (position, line.as_slice()))
    }

    /// The next record and its position, or `None` at the end. Blank lines
    /// hold no record: they are skipped and counted.
    pub fn next_record(&mut self) -> Result<Option<(Position, &[u8])>, SourceError> {
        loop {
            let Some((line, bytes)) = self.lines.next_line()? else {
                return Ok(None);
            };
            if bytes.iter().all(u8::is_ascii_whitespace) {
                self.blank_lines += 1;
                continue;
            }
            return Ok(Some((self.position(line), self.lines.current())));
        }
    }

    /// Blank lines skipped so far.
    pub fn blank_lines(&self) -> u64 {
        self.blank_lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read_all(path: &Path) -> Vec<(u64, String)> {
        let mut lines = Lines::new(path, open(path, Arc::default()).unwrap());
        let mut out = Vec::new();
        while let Some((n, line)) = lines.next_line().unwrap() {
            out.push((n, String::from_utf8(line.to_vec()).unwrap()));
        }
        out
    }

    #[test]
    fn compressed_files_read_like_plain_ones() {
        let dir = tempfile::tempdir().unwrap();
        let text = "a,b\r\n1,2\n3,4";
        let plain = dir.path().join("plain");
        std::fs::write(&plain, text).unwrap();
        let gz = dir.path().join("gz");
        let mut encoder = flate2::write::GzEncoder::new(
            File::create(&gz).unwrap(),
            flate2::Compression::default(),
        );
        encoder.write_all(text.as_bytes()).unwrap();
        encoder.finish().unwrap();
        let xz = dir.path().join("xz");
        let mut encoder = liblzma::write::XzEncoder::new(File::create(&xz).unwrap(), 6);
        encoder.write_all(text.as_bytes()).unwrap();
        encoder.finish().unwrap();
        let zst = dir.path().join("zst");
        std::fs::write(&zst, zstd::encode_all(text.as_bytes(), 3).unwrap()).unwrap();

        let expected = vec![
            (1, "a,b".to_owned()),
            (2, "1,2".to_owned()),
            (3, "3,4".to_owned()),
        ];
        for path in [plain, gz, xz, zst] {
            assert_eq!(read_all(&path), expected, "{}", path.display());
        }
        assert_eq!(input_files(dir.path()).unwrap().len(), 4);
    }

    #[test]
    fn long_lines_are_cut_and_skipped_without_being_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long.gz");
        // 64 MiB of zeros in one line, between two short lines.
        let mut encoder = flate2::write::GzEncoder::new(
            File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        encoder.write_all(b"first\n").unwrap();
        let zeros = vec![b'0'; 1 << 20];
        for _ in 0..64 {
            encoder.write_all(&zeros).unwrap();
        }
        encoder.write_all(b"\r\nlast\r\n").unwrap();
        encoder.finish().unwrap();
        let mut lines =
            Lines::new(&path, open(&path, Arc::default()).unwrap()).with_max_record_bytes(1000);
        assert_eq!(lines.next_line().unwrap(), Some((1, &b"first"[..])));
        assert_eq!(lines.cut_length(), None);
        let (number, cut) = lines.next_line().unwrap().unwrap();
        assert_eq!((number, cut.len()), (2, 1001));
        assert_eq!(lines.cut_length(), Some(64 << 20));
        // The buffer never held more than the limit and a line end.
        assert!(
            lines.buffer.capacity() < 4096,
            "{}",
            lines.buffer.capacity()
        );
        assert_eq!(lines.next_line().unwrap(), Some((3, &b"last"[..])));
        assert_eq!(lines.cut_length(), None);
        assert_eq!(lines.next_line().unwrap(), None);
    }

    #[test]
    fn lines_at_the_limit_are_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("limit");
        std::fs::write(&path, "abcd\r\nabcde\nabcdefgh\nabcdefgh").unwrap();
        let mut lines =
            Lines::new(&path, open(&path, Arc::default()).unwrap()).with_max_record_bytes(4);
        assert_eq!(lines.next_line().unwrap(), Some((1, &b"abcd"[..])));
        assert_eq!(lines.cut_length(), None);
        // One byte over the limit: the decoder sees it is too long.
        assert_eq!(lines.next_line().unwrap(), Some((2, &b"abcde"[..])));
        assert_eq!(lines.next_line().unwrap(), Some((3, &b"abcde"[..])));
        assert_eq!(lines.cut_length(), Some(8));
        assert_eq!(lines.next_line().unwrap(), Some((4, &b"abcde"[..])));
        assert_eq!(lines.cut_length(), Some(8));
        assert_eq!(lines.next_line().unwrap(), None);
    }

    #[test]
    fn subfolders_are_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.csv"), "x\n").unwrap();
        std::fs::create_dir(dir.path().join("2024")).unwrap();
        std::fs::create_dir(dir.path().join(".hidden")).unwrap();
        let error = input_files(dir.path()).unwrap_err();
        assert!(matches!(error, SourceError::Subfolder { .. }), "{error}");
        assert!(error.to_string().contains("2024"), "{error}");
        std::fs::remove_dir(dir.path().join("2024")).unwrap();
        assert_eq!(input_files(dir.path()).unwrap().len(), 1);
    }
}
