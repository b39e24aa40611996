//! Writing a log file record by record: [`LogWriter`], for tools, tests and converters. Programs
//! record through [`LogGuard`](crate::LogGuard) instead.

use crate::format::{self, HEADER_LEN, Header, Record, VERSION};
use std::io::{self, Write};

/// Writes the header, then records, to any [`Write`]. It does not buffer: wrap files in a
/// `BufWriter`.
///
/// ```
/// use stm_log::reader::{LogReader, Record};
/// use stm_log::writer::LogWriter;
/// let mut w = LogWriter::new(Vec::new(), 0)?;
/// w.write(&Record::Start { thread: 1, time: 10, inevitable: false })?;
/// w.write(&Record::Commit { thread: 1, time: 50, read_only: true, duration: 40 })?;
/// let bytes = w.into_inner();
/// let records: Vec<Record> = LogReader::new(&bytes[..])?.collect::<Result<_, _>>()?;
/// assert_eq!(records.len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct LogWriter<W: Write> {
    out: W,
    scratch: Vec<u8>,
}

impl<W: Write> LogWriter<W> {
    /// Writes the header (current version, this process's id, `start_unix_ns`) to `out`.
    pub fn new(mut out: W, start_unix_ns: u64) -> io::Result<Self> {
        let h = Header {
            version: VERSION,
            pid: std::process::id(),
            start_unix_ns,
        };
        let bytes: [u8; HEADER_LEN] = h.to_bytes();
        out.write_all(&bytes)?;
        Ok(LogWriter {
            out,
            scratch: Vec::with_capacity(64),
        })
    }

    /// Appends one record. A location file name longer than
    /// [`MAX_PATH_LEN`](crate::format::MAX_PATH_LEN) bytes is cut.
    pub fn write(&mut self, r: &Record) -> io::Result<()> {
        self.scratch.clear();
        format::encode(r, &mut self.scratch);
        self.out.write_all(&self.scratch)
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}
