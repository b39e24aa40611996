//! Reading a log file: [`LogReader`], an iterator of typed [`Record`]s.
//!
//! ```no_run
//! use stm_log::reader::{LogReader, Record};
//! let mut commits = 0;
//! for r in LogReader::open("stm.log")? {
//!     match r {
//!         Ok(Record::Commit { .. }) => commits += 1,
//!         Ok(_) => {}
//!         Err(e) => { eprintln!("stopped: {e}"); break; } // e.g. truncated at byte offset N
//!     }
//! }
//! # Ok::<(), stm_log::reader::ReadError>(())
//! ```

use crate::format::{self, DecodeError, HEADER_LEN, MAGIC, MIN_VERSION, VERSION};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

pub use crate::format::{AbortReason, ConflictSides, Header, LocationId, Record};

/// Why a log could not be read (completely).
#[derive(Debug)]
#[non_exhaustive]
pub enum ReadError {
    /// Reading the underlying file failed.
    Io {
        /// Bytes read successfully before the failure.
        offset: u64,
        /// The error.
        source: io::Error,
    },
    /// The file does not start with the log's magic bytes.
    NotALog,
    /// The file was written by a newer (or unknown) version of the format.
    UnsupportedVersion {
        /// The version in the file.
        found: u16,
        /// The newest version this reader understands.
        supported: u16,
    },
    /// The file ends in the middle of a record (or of the header): the writer was stopped before
    /// it finished. Every record before `offset` was read.
    Truncated {
        /// The byte offset at which the incomplete record starts.
        offset: u64,
    },
    /// The bytes at `offset` are not a valid record. Every record before `offset` was read.
    Corrupt {
        /// The byte offset of the bad record.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
}

impl ReadError {
    /// The byte offset at which reading stopped, for errors after the header was read.
    pub fn offset(&self) -> Option<u64> {
        match self {
            ReadError::Io { offset, .. }
            | ReadError::Truncated { offset }
            | ReadError::Corrupt { offset, .. } => Some(*offset),
            ReadError::NotALog | ReadError::UnsupportedVersion { .. } => None,
        }
    }

    /// Whether the records read before the error are still worth reporting (the header was
    /// valid and the damage is further on).
    pub fn is_partial(&self) -> bool {
        matches!(
            self,
            ReadError::Truncated { offset } | ReadError::Corrupt { offset, .. }
                if *offset >= HEADER_LEN as u64
        ) || matches!(self, ReadError::Io { offset, .. } if *offset >= HEADER_LEN as u64)
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io { offset, source } => {
                write!(f, "read error at byte offset {offset}: {source}")
            }
            ReadError::NotALog => f.write_str(
                "not an stm conflict log (the file does not start with the magic bytes \\x89STMLOG\\n)",
            ),
            ReadError::UnsupportedVersion { found, supported } => write!(
                f,
                "conflict log format version {found} is not supported (this stm-log reads versions {MIN_VERSION} to {supported}); \
                 use a newer stm-log"
            ),
            ReadError::Truncated { offset } if *offset < HEADER_LEN as u64 => write!(
                f,
                "truncated log: the file ends inside its {HEADER_LEN}-byte header (at byte offset {offset})"
            ),
            ReadError::Truncated { offset } => write!(
                f,
                "truncated log: the record at byte offset {offset} is incomplete (the writer did not finish); \
                 everything before it was read"
            ),
            ReadError::Corrupt { offset, reason } => write!(
                f,
                "corrupt log at byte offset {offset}: {reason}; everything before it was read"
            ),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

const BUF_LEN: usize = 1 << 16;

/// Reads a log: the header on construction, then one [`Record`] per iteration.
///
/// The iterator yields every complete record in file order; at damage it yields one error that
/// names the byte offset (see [`ReadError`]) and then ends. It buffers its input itself, so pass
/// a plain `File`.
pub struct LogReader<R> {
    src: R,
    header: Header,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
    done: bool,
}

impl<R> fmt::Debug for LogReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogReader")
            .field("header", &self.header)
            .field("offset", &(self.base + self.pos as u64))
            .finish_non_exhaustive()
    }
}

impl LogReader<File> {
    /// Opens the log at `path` and reads its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ReadError> {
        let f = File::open(path).map_err(|source| ReadError::Io { offset: 0, source })?;
        LogReader::new(f)
    }
}

fn read_full(src: &mut impl Read, buf: &mut [u8], offset: u64) -> Result<usize, ReadError> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(ReadError::Io {
                    offset: offset + n as u64,
                    source,
                });
            }
        }
    }
    Ok(n)
}

impl<R: Read> LogReader<R> {
    /// Reads the header from `src`: an error if it is not a log, or a version this reader does
    /// not know.
    pub fn new(mut src: R) -> Result<Self, ReadError> {
        let mut h = [0u8; HEADER_LEN];
        let n = read_full(&mut src, &mut h, 0)?;
        let magic_len = n.min(MAGIC.len());
        if h[..magic_len] != MAGIC[..magic_len] || n == 0 {
            return Err(ReadError::NotALog);
        }
        if n < HEADER_LEN {
            return Err(ReadError::Truncated { offset: 0 });
        }
        let version = u16::from_le_bytes([h[8], h[9]]);
        if !(MIN_VERSION..=VERSION).contains(&version) {
            return Err(ReadError::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        let header = Header {
            version,
            pid: u32::from_le_bytes([h[12], h[13], h[14], h[15]]),
            start_unix_ns: u64::from_le_bytes(h[16..24].try_into().expect("8 bytes")),
        };
        Ok(LogReader {
            src,
            header,
            buf: vec![0u8; BUF_LEN].into_boxed_slice(),
            pos: 0,
            end: 0,
            base: HEADER_LEN as u64,
            eof: false,
            done: false,
        })
    }

    /// The file's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The byte offset of the next record.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn refill(&mut self) -> Result<(), ReadError> {
        self.buf.copy_within(self.pos..self.end, 0);
        self.base += self.pos as u64;
        self.end -= self.pos;
        self.pos = 0;
        loop {
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(k) => {
                    self.end += k;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ReadError::Io {
                        offset: self.base + self.end as u64,
                        source,
                    });
                }
            }
        }
    }

    fn next_record(&mut self) -> Option<Result<Record, ReadError>> {
        loop {
            match format::decode(&self.buf[self.pos..self.end], self.header.version) {
                Ok((r, n)) => {
                    self.pos += n;
                    return Some(Ok(r));
                }
                Err(DecodeError::Incomplete) => {
                    if self.eof {
                        if self.pos == self.end {
                            return None;
                        }
                        return Some(Err(ReadError::Truncated {
                            offset: self.offset(),
                        }));
                    }
                    // Every record fits the buffer (the longest, a process record, is at most
                    // 1 + 2 * (10 + MAX_PATH_LEN) bytes), so refilling always makes progress.
                    if let Err(e) = self.refill() {
                        return Some(Err(e));
                    }
                }
                Err(DecodeError::Corrupt(reason)) => {
                    return Some(Err(ReadError::Corrupt {
                        offset: self.offset(),
                        reason,
                    }));
                }
            }
        }
    }
}

impl<R: Read> Iterator for LogReader<R> {
    type Item = Result<Record, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.next_record();
        if !matches!(r, Some(Ok(_))) {
            self.done = true;
        }
        r
    }
}

impl<R: Read> std::iter::FusedIterator for LogReader<R> {}
