//! Files and stdin, read line by line with their positions.
//!
//! Compression is recognised by content (gzip, xz, zstd magic bytes), so a
//! `.gz` without its extension still reads. A folder is read as its files in
//! name order. Each timely worker reads every line but decodes only its own
//! share (line number modulo workers), which keeps the event-time order of
//! each worker's records close to the file's — what watermarks need — and
//! works for compressed files, which cannot be split by byte ranges.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Errors opening or reading an input.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open input {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot read input {path} after line {line}: {source}")]
    Read {
        path: PathBuf,
        line: u64,
        source: io::Error,
    },
}

/// The files an input path stands for: the file itself, the files of a
/// folder (name order, hidden files skipped), or `-` for stdin.
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
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !hidden && entry.file_type().map_err(open_error)?.is_file() {
            files.push(entry.path());
        }
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
}

impl Lines {
    pub fn new(path: &Path, reader: Box<dyn BufRead>) -> Lines {
        Lines {
            path: path.to_owned(),
            reader,
            line: 0,
            buffer: Vec::new(),
        }
    }

    /// The next line and its number, or `None` at the end.
    pub fn next_line(&mut self) -> Result<Option<(u64, &[u8])>, SourceError> {
        self.buffer.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.buffer)
            .map_err(|source| SourceError::Read {
                path: self.path.clone(),
                line: self.line,
                source,
            })?;
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        let mut end = self.buffer.len();
        if self.buffer[..end].ends_with(b"\n") {
            end -= 1;
        }
        if self.buffer[..end].ends_with(b"\r") {
            end -= 1;
        }
        Ok(Some((self.line, &self.buffer[..end])))
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
}
