//! The file format, version 2 (this crate also reads version 1): constants, the record types,
//! and the byte encoding shared by the recorder, [`LogWriter`](crate::writer::LogWriter) and
//! [`LogReader`](crate::reader::LogReader).
//!
//! `docs/conflict-log.md` documents the same layout byte for byte; keep the two in step.
//!
//! ```text
//! header (24 bytes): magic "\x89STMLOG\n", version u16 LE, reserved u16 (0), pid u32 LE,
//!                    start time u64 LE (nanoseconds since the Unix epoch)
//! records:           tag u8, then fields; every integer field is unsigned LEB128
//! ```
//!
//! Version 2 added three records: [`Record::Process`] (the recording process's working
//! directory and executable, so that a report run anywhere finds the source files the locations
//! name), [`Record::UntimedCommit`] and [`Record::UntimedAbort`] (attempts that the runtime did
//! not time, see [`stm_core::Timing`]). Version 1 files have none of them.

use std::path::{Path, PathBuf};
use stm_core::ConflictKind;

/// The first eight bytes of every log file.
pub const MAGIC: [u8; 8] = *b"\x89STMLOG\n";
/// The format version this crate writes (and the newest it reads).
pub const VERSION: u16 = 2;
/// The oldest format version this crate reads.
pub const MIN_VERSION: u16 = 1;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 24;
/// Longest file name a location record may carry (longer names are truncated when written and
/// rejected as corrupt when read, so that a damaged length cannot make the reader allocate much).
pub const MAX_PATH_LEN: usize = 4096;
/// Upper bound on the size of one event record (every record but a location record).
pub(crate) const MAX_EVENT_LEN: usize = 64;

pub(crate) const TAG_LOCATION: u8 = 0x01;
pub(crate) const TAG_START: u8 = 0x02;
pub(crate) const TAG_COMMIT: u8 = 0x03;
pub(crate) const TAG_ABORT: u8 = 0x04;
pub(crate) const TAG_PAUSE_START: u8 = 0x05;
pub(crate) const TAG_PAUSE_END: u8 = 0x06;
pub(crate) const TAG_INEVITABLE_BEGIN: u8 = 0x07;
pub(crate) const TAG_INEVITABLE_END: u8 = 0x08;
pub(crate) const TAG_END: u8 = 0x09;
pub(crate) const TAG_PROCESS: u8 = 0x0A;
pub(crate) const TAG_UNTIMED_COMMIT: u8 = 0x0B;
pub(crate) const TAG_UNTIMED_ABORT: u8 = 0x0C;

/// The fixed header of a log file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The format version of the file.
    pub version: u16,
    /// The id of the process that wrote it.
    pub pid: u32,
    /// When the recorder started, in nanoseconds since the Unix epoch (every record's `time` is
    /// relative to this instant, measured on the monotonic clock).
    pub start_unix_ns: u64,
}

impl Header {
    /// The 24 bytes of this header.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        // 10..12 reserved, zero.
        b[12..16].copy_from_slice(&self.pid.to_le_bytes());
        b[16..24].copy_from_slice(&self.start_unix_ns.to_le_bytes());
        b
    }
}

/// Identifies a source location within one log file (see [`Record::Location`]).
pub type LocationId = u32;

/// Why an attempt ended without committing, as the log records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AbortReason {
    /// A conflict of this kind.
    Conflict(ConflictKind),
    /// The body called `Tx::retry`.
    Retry,
    /// The body gave up with a user error.
    Cancel,
    /// The body panicked.
    Panic,
}

impl AbortReason {
    pub(crate) fn code(self) -> u8 {
        match self {
            AbortReason::Conflict(k) => kind_code(k),
            AbortReason::Retry => 4,
            AbortReason::Cancel => 5,
            AbortReason::Panic => 6,
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1..=3 => AbortReason::Conflict(kind_from_code(c)?),
            4 => AbortReason::Retry,
            5 => AbortReason::Cancel,
            6 => AbortReason::Panic,
            _ => return None,
        })
    }
}

pub(crate) fn kind_code(k: ConflictKind) -> u8 {
    match k {
        ConflictKind::WriteWrite => 1,
        ConflictKind::WriteRead => 2,
        ConflictKind::Inevitable => 3,
    }
}

pub(crate) fn kind_from_code(c: u8) -> Option<ConflictKind> {
    match c {
        1 => Some(ConflictKind::WriteWrite),
        2 => Some(ConflictKind::WriteRead),
        3 => Some(ConflictKind::Inevitable),
        _ => None,
    }
}

/// The two sides of a conflict, by location id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConflictSides {
    /// The kind of conflict.
    pub kind: ConflictKind,
    /// Where this transaction touched the contended word, if known.
    pub this: Option<LocationId>,
    /// Where the other transaction touched it, if known.
    pub other: Option<LocationId>,
    /// The runtime's id of the other thread, if known.
    pub other_thread: Option<u64>,
}

/// One record of a log file. Times are nanoseconds since the recorder started
/// ([`Header::start_unix_ns`]); durations are nanoseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Record {
    /// Where the recording process ran (version 2; the recorder writes it first, right after the
    /// header): file names in location records that are relative (as the compiler passed them)
    /// are resolved against `cwd` and its parents, or the executable's folder and its parents.
    Process {
        /// The working directory of the recording process (empty when it could not be read).
        cwd: PathBuf,
        /// The recording program's executable (empty when it could not be read).
        exe: PathBuf,
    },
    /// Defines location `id`; written once, before the first record that refers to it.
    Location {
        /// The id later records use.
        id: LocationId,
        /// The source file, as `#[track_caller]` reports it.
        file: String,
        /// The line (from 1).
        line: u32,
        /// The column (from 1).
        column: u32,
    },
    /// An attempt started.
    Start {
        /// The thread.
        thread: u64,
        /// When.
        time: u64,
        /// It runs as the inevitable transaction from its start.
        inevitable: bool,
    },
    /// An attempt committed.
    Commit {
        /// The thread.
        thread: u64,
        /// When.
        time: u64,
        /// It wrote nothing.
        read_only: bool,
        /// How long the attempt ran.
        duration: u64,
    },
    /// An attempt that the runtime did not time committed (version 2): no start record came
    /// before it, and its duration is unknown (see [`stm_core::Timing`]).
    UntimedCommit {
        /// The thread.
        thread: u64,
        /// It wrote nothing.
        read_only: bool,
    },
    /// An attempt aborted.
    Abort {
        /// The thread.
        thread: u64,
        /// When.
        time: u64,
        /// Why.
        reason: AbortReason,
        /// Both sides of the conflict, for [`AbortReason::Conflict`] when the runtime knew them.
        conflict: Option<ConflictSides>,
        /// How long the attempt ran: the work thrown away.
        lost: u64,
    },
    /// An attempt that the runtime did not time aborted (version 2): no start record came before
    /// it, and the work it threw away is unknown.
    UntimedAbort {
        /// The thread.
        thread: u64,
        /// When.
        time: u64,
        /// Why.
        reason: AbortReason,
        /// Both sides of the conflict, for [`AbortReason::Conflict`] when the runtime knew them.
        conflict: Option<ConflictSides>,
    },
    /// The attempt starts waiting.
    PauseStart {
        /// The thread.
        thread: u64,
        /// When.
        time: u64,
        /// What it waits for.
        conflict: ConflictSides,
    },
    /// The wait is over.
    PauseEnd {
        /// The thread.
        thread: u64,
        /// When.
        time: u64,
        /// What it waited for.
        conflict: ConflictSides,
        /// How long it waited.
        paused: u64,
    },
    /// The thread took the inevitable token.
    InevitableBegin {
        /// The thread.
        thread: u64,
        /// When.
        time: u64,
    },
    /// The thread gave the inevitable token back.
    InevitableEnd {
        /// The thread.
        thread: u64,
        /// When.
        time: u64,
    },
    /// The recorder closed the file cleanly.
    End {
        /// When.
        time: u64,
    },
}

impl Record {
    /// The record's time, for every record but [`Record::Location`], [`Record::Process`] and
    /// [`Record::UntimedCommit`].
    pub fn time(&self) -> Option<u64> {
        match *self {
            Record::Location { .. } | Record::Process { .. } | Record::UntimedCommit { .. } => None,
            Record::Start { time, .. }
            | Record::Commit { time, .. }
            | Record::Abort { time, .. }
            | Record::UntimedAbort { time, .. }
            | Record::PauseStart { time, .. }
            | Record::PauseEnd { time, .. }
            | Record::InevitableBegin { time, .. }
            | Record::InevitableEnd { time, .. }
            | Record::End { time } => Some(time),
        }
    }
}

// ----- encoding -----

/// A small fixed buffer for one event record: no allocation on the recorder's hot path.
pub(crate) struct EventBuf {
    bytes: [u8; MAX_EVENT_LEN],
    len: usize,
}

impl EventBuf {
    #[inline(always)]
    pub(crate) fn new(tag: u8) -> Self {
        let mut b = EventBuf {
            bytes: [0; MAX_EVENT_LEN],
            len: 0,
        };
        b.byte(tag);
        b
    }

    #[inline(always)]
    pub(crate) fn byte(&mut self, v: u8) {
        // Cannot overflow: `encode_event` writes at most 52 bytes (see there).
        self.bytes[self.len] = v;
        self.len += 1;
    }

    #[inline(always)]
    pub(crate) fn uvar(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.byte(v as u8 | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }

    /// An attempt start record.
    #[inline(always)]
    pub(crate) fn start(thread: u64, time: u64, inevitable: bool) -> Self {
        let mut bytes = [0; MAX_EVENT_LEN];
        let len = put_start(&mut bytes, thread, time, inevitable);
        EventBuf { bytes, len }
    }

    /// A commit record.
    #[inline(always)]
    pub(crate) fn commit(thread: u64, time: u64, read_only: bool, duration: u64) -> Self {
        let mut bytes = [0; MAX_EVENT_LEN];
        let len = put_commit(&mut bytes, thread, time, read_only, duration);
        EventBuf { bytes, len }
    }

    /// An untimed commit record.
    #[inline(always)]
    pub(crate) fn untimed_commit(thread: u64, read_only: bool) -> Self {
        let mut bytes = [0; MAX_EVENT_LEN];
        let len = put_untimed_commit(&mut bytes, thread, read_only);
        EventBuf { bytes, len }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[inline(always)]
fn put_var(out: &mut [u8; MAX_EVENT_LEN], pos: &mut usize, mut v: u64) {
    while v >= 0x80 {
        out[*pos] = v as u8 | 0x80;
        *pos += 1;
        v >>= 7;
    }
    out[*pos] = v as u8;
    *pos += 1;
}

/// Writes an attempt start record at the front of `out`; returns its length (at most 22).
/// The recorder writes the two records of every transaction straight into its ring with this
/// and [`put_commit`], byte by byte: building them elsewhere and copying costs a stalled wide
/// load of freshly stored bytes.
#[inline(always)]
pub(crate) fn put_start(
    out: &mut [u8; MAX_EVENT_LEN],
    thread: u64,
    time: u64,
    inevitable: bool,
) -> usize {
    out[0] = TAG_START;
    let mut pos = 1;
    put_var(out, &mut pos, thread);
    put_var(out, &mut pos, time);
    out[pos] = u8::from(inevitable);
    pos + 1
}

/// Writes a commit record at the front of `out`; returns its length (at most 32).
#[inline(always)]
pub(crate) fn put_commit(
    out: &mut [u8; MAX_EVENT_LEN],
    thread: u64,
    time: u64,
    read_only: bool,
    duration: u64,
) -> usize {
    out[0] = TAG_COMMIT;
    let mut pos = 1;
    put_var(out, &mut pos, thread);
    put_var(out, &mut pos, time);
    out[pos] = u8::from(read_only);
    pos += 1;
    put_var(out, &mut pos, duration);
    pos
}

/// Writes an untimed commit record at the front of `out`; returns its length (at most 12).
#[inline(always)]
pub(crate) fn put_untimed_commit(
    out: &mut [u8; MAX_EVENT_LEN],
    thread: u64,
    read_only: bool,
) -> usize {
    out[0] = TAG_UNTIMED_COMMIT;
    let mut pos = 1;
    put_var(out, &mut pos, thread);
    out[pos] = u8::from(read_only);
    pos + 1
}

/// Appends `v` as unsigned LEB128.
pub(crate) fn put_uvar(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// An abort's reason and conflict, as both abort records store them.
fn abort_fields(b: &mut EventBuf, reason: AbortReason, conflict: Option<ConflictSides>) {
    b.byte(reason.code());
    match conflict {
        // A conflict's kind is the reason's kind; the record stores it once.
        Some(c) => {
            b.byte(1);
            b.uvar(c.this.map_or(0, |i| u64::from(i) + 1));
            b.uvar(c.other.map_or(0, |i| u64::from(i) + 1));
            b.uvar(c.other_thread.map_or(0, |t| t.saturating_add(1)));
        }
        None => b.byte(0),
    }
}

fn conflict_fields(b: &mut EventBuf, c: &ConflictSides) {
    b.byte(kind_code(c.kind));
    b.uvar(c.this.map_or(0, |i| u64::from(i) + 1));
    b.uvar(c.other.map_or(0, |i| u64::from(i) + 1));
    b.uvar(c.other_thread.map_or(0, |t| t.saturating_add(1)));
}

/// Encodes an event record (anything but a location record) into a fixed buffer.
///
/// The longest event record (a pause end) is 1 + 10 + 10 + 1 + 5 + 5 + 10 + 10 = 52 bytes, under
/// `MAX_EVENT_LEN`.
pub(crate) fn encode_event(r: &Record) -> Option<EventBuf> {
    let b = match *r {
        Record::Location { .. } | Record::Process { .. } => return None,
        Record::UntimedCommit { thread, read_only } => EventBuf::untimed_commit(thread, read_only),
        Record::UntimedAbort {
            thread,
            time,
            reason,
            conflict,
        } => {
            let mut b = EventBuf::new(TAG_UNTIMED_ABORT);
            b.uvar(thread);
            b.uvar(time);
            abort_fields(&mut b, reason, conflict);
            b
        }
        Record::Start {
            thread,
            time,
            inevitable,
        } => EventBuf::start(thread, time, inevitable),
        Record::Commit {
            thread,
            time,
            read_only,
            duration,
        } => EventBuf::commit(thread, time, read_only, duration),
        Record::Abort {
            thread,
            time,
            reason,
            conflict,
            lost,
        } => {
            let mut b = EventBuf::new(TAG_ABORT);
            b.uvar(thread);
            b.uvar(time);
            abort_fields(&mut b, reason, conflict);
            b.uvar(lost);
            b
        }
        Record::PauseStart {
            thread,
            time,
            ref conflict,
        } => {
            let mut b = EventBuf::new(TAG_PAUSE_START);
            b.uvar(thread);
            b.uvar(time);
            conflict_fields(&mut b, conflict);
            b
        }
        Record::PauseEnd {
            thread,
            time,
            ref conflict,
            paused,
        } => {
            let mut b = EventBuf::new(TAG_PAUSE_END);
            b.uvar(thread);
            b.uvar(time);
            conflict_fields(&mut b, conflict);
            b.uvar(paused);
            b
        }
        Record::InevitableBegin { thread, time } => {
            let mut b = EventBuf::new(TAG_INEVITABLE_BEGIN);
            b.uvar(thread);
            b.uvar(time);
            b
        }
        Record::InevitableEnd { thread, time } => {
            let mut b = EventBuf::new(TAG_INEVITABLE_END);
            b.uvar(thread);
            b.uvar(time);
            b
        }
        Record::End { time } => {
            let mut b = EventBuf::new(TAG_END);
            b.uvar(time);
            b
        }
    };
    Some(b)
}

/// Appends any record to `out`. A location's file name longer than [`MAX_PATH_LEN`] bytes is cut
/// at a character boundary.
pub(crate) fn encode(r: &Record, out: &mut Vec<u8>) {
    match r {
        Record::Location {
            id,
            file,
            line,
            column,
        } => {
            out.push(TAG_LOCATION);
            put_uvar(out, u64::from(*id));
            put_uvar(out, u64::from(*line));
            put_uvar(out, u64::from(*column));
            let name = truncate_path(file);
            put_uvar(out, name.len() as u64);
            out.extend_from_slice(name.as_bytes());
        }
        Record::Process { cwd, exe } => {
            out.push(TAG_PROCESS);
            for p in [cwd, exe] {
                let bytes = path_bytes(p);
                // A path too long to store is stored empty ("unknown") rather than cut.
                let bytes = if bytes.len() <= MAX_PATH_LEN {
                    &bytes[..]
                } else {
                    &[]
                };
                put_uvar(out, bytes.len() as u64);
                out.extend_from_slice(bytes);
            }
        }
        other => {
            if let Some(b) = encode_event(other) {
                out.extend_from_slice(b.as_slice());
            }
        }
    }
}

/// The bytes of a path as the file stores them: the operating system's own bytes on Unix, UTF-8
/// elsewhere.
fn path_bytes(p: &Path) -> std::borrow::Cow<'_, [u8]> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        std::borrow::Cow::Borrowed(p.as_os_str().as_bytes())
    }
    #[cfg(not(unix))]
    {
        match p.to_string_lossy() {
            std::borrow::Cow::Borrowed(s) => std::borrow::Cow::Borrowed(s.as_bytes()),
            std::borrow::Cow::Owned(s) => std::borrow::Cow::Owned(s.into_bytes()),
        }
    }
}

/// The path that [`path_bytes`] stored.
fn path_from_bytes(b: &[u8]) -> PathBuf {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        PathBuf::from(std::ffi::OsStr::from_bytes(b))
    }
    #[cfg(not(unix))]
    {
        PathBuf::from(String::from_utf8_lossy(b).into_owned())
    }
}

/// Cuts a file name to at most [`MAX_PATH_LEN`] bytes, at a character boundary.
pub(crate) fn truncate_path(file: &str) -> &str {
    if file.len() <= MAX_PATH_LEN {
        return file;
    }
    let mut end = MAX_PATH_LEN;
    while !file.is_char_boundary(end) {
        end -= 1;
    }
    &file[..end]
}

// ----- decoding -----

/// Why bytes could not be decoded as a record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The record continues past the end of the bytes given.
    Incomplete,
    /// The bytes are not a valid record.
    Corrupt(String),
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let v = *self.b.get(self.pos).ok_or(DecodeError::Incomplete)?;
        self.pos += 1;
        Ok(v)
    }

    fn uvar(&mut self, what: &str) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if i == 9 && bits > 1 {
                return Err(DecodeError::Corrupt(format!(
                    "{what}: integer overflows 64 bits"
                )));
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Corrupt(format!(
            "{what}: integer longer than 10 bytes"
        )))
    }

    fn u32var(&mut self, what: &str) -> Result<u32, DecodeError> {
        let v = self.uvar(what)?;
        u32::try_from(v).map_err(|_| DecodeError::Corrupt(format!("{what}: {v} exceeds 32 bits")))
    }

    fn flag(&mut self, what: &str) -> Result<bool, DecodeError> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            x => Err(DecodeError::Corrupt(format!("{what}: flag byte {x:#04x}"))),
        }
    }

    fn loc(&mut self, what: &str) -> Result<Option<LocationId>, DecodeError> {
        let v = self.uvar(what)?;
        if v == 0 {
            return Ok(None);
        }
        u32::try_from(v - 1)
            .map(Some)
            .map_err(|_| DecodeError::Corrupt(format!("{what}: location id {v} exceeds 32 bits")))
    }

    fn thread_opt(&mut self) -> Result<Option<u64>, DecodeError> {
        let v = self.uvar("other thread")?;
        Ok(v.checked_sub(1))
    }

    fn kind(&mut self) -> Result<ConflictKind, DecodeError> {
        let c = self.byte()?;
        kind_from_code(c).ok_or_else(|| DecodeError::Corrupt(format!("conflict kind {c:#04x}")))
    }

    /// An abort's reason and conflict (see `abort_fields`).
    fn abort(&mut self) -> Result<(AbortReason, Option<ConflictSides>), DecodeError> {
        let code = self.byte()?;
        let reason = AbortReason::from_code(code)
            .ok_or_else(|| DecodeError::Corrupt(format!("abort reason {code:#04x}")))?;
        let conflict = if self.flag("has conflict")? {
            let AbortReason::Conflict(kind) = reason else {
                return Err(DecodeError::Corrupt(
                    "conflict details on an abort that is not a conflict".into(),
                ));
            };
            Some(ConflictSides {
                kind,
                this: self.loc("this location")?,
                other: self.loc("other location")?,
                other_thread: self.thread_opt()?,
            })
        } else {
            None
        };
        Ok((reason, conflict))
    }

    /// A length-prefixed byte string of at most [`MAX_PATH_LEN`] bytes.
    fn bytes(&mut self, what: &str) -> Result<&[u8], DecodeError> {
        let len = self.uvar(what)?;
        if len > MAX_PATH_LEN as u64 {
            return Err(DecodeError::Corrupt(format!(
                "{what} {len} exceeds {MAX_PATH_LEN}"
            )));
        }
        let end = self.pos + len as usize;
        let bytes = self.b.get(self.pos..end).ok_or(DecodeError::Incomplete)?;
        self.pos = end;
        Ok(bytes)
    }

    fn sides(&mut self) -> Result<ConflictSides, DecodeError> {
        let kind = self.kind()?;
        let this = self.loc("this location")?;
        let other = self.loc("other location")?;
        let other_thread = self.thread_opt()?;
        Ok(ConflictSides {
            kind,
            this,
            other,
            other_thread,
        })
    }
}

/// Decodes one record of a file of format `version` from the front of `b`; returns it with the
/// number of bytes it took.
pub(crate) fn decode(b: &[u8], version: u16) -> Result<(Record, usize), DecodeError> {
    let mut c = Cursor { b, pos: 0 };
    let tag = c.byte()?;
    let r = match tag {
        TAG_LOCATION => {
            let id = c.u32var("location id")?;
            let line = c.u32var("line")?;
            let column = c.u32var("column")?;
            let file = std::str::from_utf8(c.bytes("file name length")?)
                .map_err(|_| DecodeError::Corrupt("file name is not UTF-8".into()))?
                .to_owned();
            Record::Location {
                id,
                file,
                line,
                column,
            }
        }
        TAG_START => Record::Start {
            thread: c.uvar("thread")?,
            time: c.uvar("time")?,
            inevitable: c.flag("inevitable")?,
        },
        TAG_COMMIT => Record::Commit {
            thread: c.uvar("thread")?,
            time: c.uvar("time")?,
            read_only: c.flag("read_only")?,
            duration: c.uvar("duration")?,
        },
        TAG_ABORT => {
            let thread = c.uvar("thread")?;
            let time = c.uvar("time")?;
            let (reason, conflict) = c.abort()?;
            Record::Abort {
                thread,
                time,
                reason,
                conflict,
                lost: c.uvar("lost")?,
            }
        }
        TAG_PAUSE_START => Record::PauseStart {
            thread: c.uvar("thread")?,
            time: c.uvar("time")?,
            conflict: c.sides()?,
        },
        TAG_PAUSE_END => Record::PauseEnd {
            thread: c.uvar("thread")?,
            time: c.uvar("time")?,
            conflict: c.sides()?,
            paused: c.uvar("paused")?,
        },
        TAG_INEVITABLE_BEGIN => Record::InevitableBegin {
            thread: c.uvar("thread")?,
            time: c.uvar("time")?,
        },
        TAG_INEVITABLE_END => Record::InevitableEnd {
            thread: c.uvar("thread")?,
            time: c.uvar("time")?,
        },
        TAG_END => Record::End {
            time: c.uvar("time")?,
        },
        TAG_PROCESS if version >= 2 => Record::Process {
            cwd: path_from_bytes(c.bytes("working directory length")?),
            exe: path_from_bytes(c.bytes("executable path length")?),
        },
        TAG_UNTIMED_COMMIT if version >= 2 => Record::UntimedCommit {
            thread: c.uvar("thread")?,
            read_only: c.flag("read_only")?,
        },
        TAG_UNTIMED_ABORT if version >= 2 => {
            let thread = c.uvar("thread")?;
            let time = c.uvar("time")?;
            let (reason, conflict) = c.abort()?;
            Record::UntimedAbort {
                thread,
                time,
                reason,
                conflict,
            }
        }
        t => {
            return Err(DecodeError::Corrupt(format!(
                "unknown record tag {t:#04x} (format version {version})"
            )));
        }
    };
    Ok((r, c.pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [0, 1, 127, 128, 16383, 16384, u64::from(u32::MAX), u64::MAX] {
            let mut out = vec![TAG_END];
            put_uvar(&mut out, v);
            assert_eq!(
                decode(&out, VERSION),
                Ok((Record::End { time: v }, out.len()))
            );
        }
    }

    #[test]
    fn overlong_varint_is_corrupt() {
        let mut b = vec![TAG_END];
        b.extend_from_slice(&[0xff; 10]);
        b.push(0);
        assert!(matches!(decode(&b, VERSION), Err(DecodeError::Corrupt(_))));
        // The 10th byte may only carry the top bit.
        let mut b = vec![TAG_END];
        b.extend_from_slice(&[0x80; 9]);
        b.push(0x02);
        assert!(matches!(decode(&b, VERSION), Err(DecodeError::Corrupt(_))));
    }

    #[test]
    fn longest_event_fits_its_buffer() {
        let c = ConflictSides {
            kind: ConflictKind::WriteRead,
            this: Some(u32::MAX - 1),
            other: Some(u32::MAX - 1),
            other_thread: Some(u64::MAX - 1),
        };
        let r = Record::PauseEnd {
            thread: u64::MAX,
            time: u64::MAX,
            conflict: c,
            paused: u64::MAX,
        };
        let b = encode_event(&r).unwrap();
        assert_eq!(b.as_slice().len(), 52);
        assert_eq!(decode(b.as_slice(), VERSION), Ok((r, 52)));
    }

    #[test]
    fn long_paths_are_cut_at_a_char_boundary() {
        let long = "é".repeat(MAX_PATH_LEN);
        let cut = truncate_path(&long);
        assert!(cut.len() <= MAX_PATH_LEN && cut.len() >= MAX_PATH_LEN - 1);
        assert!(long.starts_with(cut));
    }
}
