//! The recorder: an [`EventSink`] that buffers events per thread and writes them to one file.
//!
//! # How it works
//!
//! Each thread that delivers an event gets its own byte ring (a single-producer, single-consumer
//! queue of encoded records), registered with the recorder the first time. On the hot path the
//! thread encodes the event straight into its ring (start and commit records; the others through
//! a stack buffer and a copy): no lock, no read-modify-write, no allocation. Consumers drain rings
//! into the file while holding the recorder's mutex (which makes them one consumer at a time): a
//! producer whose ring is full (it drains its own ring, then goes on), a background thread every
//! [`FLUSH_INTERVAL`], and [`Recorder::flush`] / [`Recorder::close`]. Records of one thread
//! therefore appear in the file in the order they happened; records of different threads
//! interleave by chunks.
//!
//! A busy thread thus drains its own ring: the bytes it wrote are still in its core's cache, and
//! the ring's lines never travel to another core and back. Waking the background thread at half
//! full instead (the first version) cost the transaction thread about 20 ns per transaction on the
//! development machine (`docs/perf/log.md`): every line of the ring the flusher had read had to be
//! fetched back before the producer could write it again.
//!
//! The hot path starts from a second thread-local, `FAST`, which holds only the id of the
//! recorder this thread's ring belongs to and a pointer to that ring (no destructor, so reaching
//! it is one TLS offset): the start, commit and untimed-commit records go straight into the ring
//! from there, without borrowing the per-thread state. Everything else goes through `LOCAL`.
//!
//! # Timing
//!
//! Reading the event clock costs about as much as a third of a short transaction (an `rdtsc`
//! on x86-64), and timing an attempt takes two. The recorder asks stm-core to time every attempt
//! of a thread that met a conflict lately, and about one in [`Recorder::TIMING`]`.sample`
//! attempts of the others (see [`stm_core::Timing`]); an untimed attempt costs no clock read and
//! one 3-byte record. Counts stay exact; the time in committed attempts is estimated for the
//! untimed ones (the report says so), and an untimed abort (the first conflict of a thread
//! after a quiet spell) is counted without lost time.
//!
//! Source locations are interned: the first time a thread meets a `&'static Location` it asks the
//! recorder (under the mutex) for an id; a location seen for the first time in the whole process
//! is written as a location record right then, before any record that can refer to it. Later
//! lookups hit a per-thread cache keyed by the location's address.
//!
//! # The ring protocol
//!
//! `head` is written only by the producer, `tail` only by a consumer holding the mutex. Bytes in
//! `[tail, head)` are published records; bytes in `[head, tail + capacity)` belong to the
//! producer; the two ranges never overlap, so plain byte copies suffice. The indices carry the
//! ordering: the producer's `head.store(Release)` publishes the bytes it wrote before (paired with the
//! consumer's `head.load(Acquire)`), and the consumer's `tail.store(Release)` hands the bytes it
//! read back to the producer (paired with the producer's `tail.load(Acquire)`), so a byte is
//! never overwritten before it was read.

use crate::format::{
    self, AbortReason, ConflictSides, EventBuf, Header, LocationId, MAX_EVENT_LEN, Record, VERSION,
    put_commit, put_start, put_untimed_commit,
};
use std::cell::{Cell, RefCell, UnsafeCell};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};
use stm_core::{
    AbortCause, Conflict, Event, EventKind, EventSink, SourceLocation, Timestamp, Timing,
};

/// How often the background thread drains the per-thread buffers into the file.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Bytes of buffer per thread (a power of two). At 10 to 20 bytes per record that is several
/// thousand events; a thread whose ring is full drains it itself.
const RING_BYTES: usize = 1 << 17;
/// Buffer of the file writer.
const FILE_BUF: usize = 1 << 20;

/// A single-producer, single-consumer byte queue (see the module doc for the protocol).
struct Ring {
    bytes: Box<[UnsafeCell<u8>]>,
    /// Total bytes ever published (wraps after 2^64: never in practice). Stored by the producer.
    head: AtomicUsize,
    /// Total bytes ever consumed. Stored by the consumer.
    tail: AtomicUsize,
}

// SAFETY: the bytes are only accessed through `push` (by the one producer thread, on the range
// it owns) and `drain` (by one consumer at a time, on the published range); the two ranges are
// disjoint and handed over with Release/Acquire on `head` and `tail`, so there is no data race.
unsafe impl Sync for Ring {}

impl Ring {
    fn new() -> Self {
        Ring {
            bytes: (0..RING_BYTES).map(|_| UnsafeCell::new(0)).collect(),
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
        }
    }

    fn base(&self) -> *mut u8 {
        // `UnsafeCell<u8>` has the layout of `u8`, so the slice is `RING_BYTES` contiguous bytes.
        UnsafeCell::raw_get(self.bytes.as_ptr())
    }

    /// Appends `rec` whole and returns `true`, or returns `false` when there is no room.
    ///
    /// # Safety
    ///
    /// Only one thread, the ring's producer, ever calls `push` on a given ring.
    #[inline]
    unsafe fn push(&self, rec: &[u8]) -> bool {
        // Relaxed: only this thread (the producer) stores `head`.
        let h = self.head.load(Ordering::Relaxed);
        // Acquire: pairs with the consumer's Release store of `tail`, so its reads of the bytes
        // it freed happen before our writes below.
        let t = self.tail.load(Ordering::Acquire);
        let used = h.wrapping_sub(t);
        if RING_BYTES - used < rec.len() {
            return false;
        }
        let at = h & (RING_BYTES - 1);
        let first = rec.len().min(RING_BYTES - at);
        // SAFETY: bytes `[h, t + RING_BYTES)` belong to the producer (the consumer reads only
        // `[t, h)`), `rec.len()` of them are free, and we are the only producer (our contract).
        // `at + first <= RING_BYTES` and `rec.len() - first <= at`, so both copies stay inside
        // the buffer; `rec` is a separate allocation, so they do not overlap.
        unsafe {
            core::ptr::copy_nonoverlapping(rec.as_ptr(), self.base().add(at), first);
            core::ptr::copy_nonoverlapping(rec.as_ptr().add(first), self.base(), rec.len() - first);
        }
        // Release: pairs with the consumer's Acquire load of `head`; publishes the bytes above.
        self.head
            .store(h.wrapping_add(rec.len()), Ordering::Release);
        true
    }

    /// Lets `f` encode one event of at most `MAX_EVENT_LEN` bytes straight into the ring and
    /// publishes the length it returns. Returns `false`, calling nothing, when there are fewer
    /// than `MAX_EVENT_LEN` free bytes before the end of the buffer (then use `push`).
    ///
    /// # Safety
    ///
    /// As for `push`: only the ring's one producer thread calls it.
    #[inline(always)]
    unsafe fn push_in_place(&self, f: impl FnOnce(&mut [u8; MAX_EVENT_LEN]) -> usize) -> bool {
        // Relaxed / Acquire: as in `push`.
        let h = self.head.load(Ordering::Relaxed);
        let t = self.tail.load(Ordering::Acquire);
        let used = h.wrapping_sub(t);
        let at = h & (RING_BYTES - 1);
        if RING_BYTES - used < MAX_EVENT_LEN || RING_BYTES - at < MAX_EVENT_LEN {
            return false;
        }
        // SAFETY: `[h, h + MAX_EVENT_LEN)` is free (checked above), hence owned by the producer,
        // which we are (our contract); it does not wrap (checked above), so it is one contiguous
        // run inside the buffer, which may be viewed as an array of `u8` (`UnsafeCell<u8>` has
        // the same layout, and mutation through it is allowed). The consumer touches only
        // `[t, h)`, so this is the only reference to these bytes until `head` moves.
        let slot = unsafe { &mut *self.base().add(at).cast::<[u8; MAX_EVENT_LEN]>() };
        let len = f(slot).min(MAX_EVENT_LEN);
        // Release: pairs with the consumer's Acquire load of `head`; publishes the bytes above.
        self.head.store(h.wrapping_add(len), Ordering::Release);
        true
    }

    /// Hands every published byte to `out` (in at most two slices), then frees them.
    ///
    /// # Safety
    ///
    /// Only one thread at a time drains a given ring (the recorder's mutex ensures it).
    unsafe fn drain(&self, mut out: impl FnMut(&[u8])) {
        // Relaxed: `tail` is only stored by consumers, which the caller serialises.
        let t = self.tail.load(Ordering::Relaxed);
        // Acquire: pairs with the producer's Release store of `head` (see `push`).
        let h = self.head.load(Ordering::Acquire);
        let n = h.wrapping_sub(t);
        if n == 0 {
            return;
        }
        let at = t & (RING_BYTES - 1);
        let first = n.min(RING_BYTES - at);
        // SAFETY: bytes `[t, h)` were published by the producer's Release store of `head`, which
        // our Acquire load saw; it does not touch them until we store `tail` below, and no other
        // consumer runs (our contract). Both ranges lie inside the buffer (`at + first <=
        // RING_BYTES`, `n - first <= at`).
        unsafe {
            out(core::slice::from_raw_parts(self.base().add(at), first));
            if n > first {
                out(core::slice::from_raw_parts(self.base(), n - first));
            }
        }
        // Release: pairs with the producer's Acquire load of `tail`; our reads above happen
        // before it reuses these bytes.
        self.tail.store(h, Ordering::Release);
    }

    fn is_empty(&self) -> bool {
        // Acquire/Relaxed as in `drain`.
        self.head.load(Ordering::Acquire) == self.tail.load(Ordering::Relaxed)
    }
}

struct Inner {
    out: Option<BufWriter<File>>,
    rings: Vec<Arc<Ring>>,
    /// Interned locations, by content (two `Location`s with equal content share an id).
    by_content: HashMap<(&'static str, u32, u32), LocationId>,
    /// The first write error; later data is dropped.
    error: Option<io::Error>,
}

impl Inner {
    fn write(&mut self, bytes: &[u8]) {
        if let Some(out) = self.out.as_mut()
            && let Err(e) = out.write_all(bytes)
        {
            self.error.get_or_insert(e);
            self.out = None;
        }
    }

    /// Moves every ring's published records to the file (or drops them once closed).
    fn drain_all(&mut self) {
        let rings = std::mem::take(&mut self.rings);
        for r in &rings {
            self.drain_one(r);
        }
        self.rings = rings;
        // A ring only we hold belongs to a thread that has exited (or moved on to another
        // recorder); it is empty now, so forget it.
        self.rings
            .retain(|r| Arc::strong_count(r) > 1 || !r.is_empty());
    }

    fn drain_one(&mut self, ring: &Ring) {
        // SAFETY: `&mut Inner` exists only under the recorder's mutex, so we are the only
        // consumer of the rings registered with this recorder (each ring belongs to one).
        unsafe { ring.drain(|bytes| self.write(bytes)) };
    }

    fn flush(&mut self) {
        if let Some(out) = self.out.as_mut()
            && let Err(e) = out.flush()
        {
            self.error.get_or_insert(e);
            self.out = None;
        }
    }

    fn result(&self) -> io::Result<()> {
        match &self.error {
            None => Ok(()),
            Some(e) => Err(io::Error::new(
                e.kind(),
                format!("writing the conflict log failed: {e}"),
            )),
        }
    }
}

struct Shared {
    /// Distinguishes recorders in the per-thread state (from 1; 0 means none).
    id: u64,
    start: Timestamp,
    path: PathBuf,
    inner: Mutex<Inner>,
    closed: AtomicBool,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the mutex cannot leave `Inner` inconsistent in a way that
        // matters (at worst a partly written chunk), so a poisoned lock is still used.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Nanoseconds from the recorder's start to `t` (0 for an earlier `t`).
    #[inline]
    fn nanos(&self, t: Timestamp) -> u64 {
        t.as_nanos().saturating_sub(self.start.as_nanos())
    }

    fn intern(&self, loc: SourceLocation) -> LocationId {
        let key = (loc.file(), loc.line(), loc.column());
        let mut inner = self.lock();
        if let Some(&id) = inner.by_content.get(&key) {
            return id;
        }
        let id = LocationId::try_from(inner.by_content.len()).unwrap_or(LocationId::MAX - 1);
        inner.by_content.insert(key, id);
        let mut buf = Vec::with_capacity(32 + loc.file().len());
        format::encode(
            &Record::Location {
                id,
                file: loc.file().to_owned(),
                line: loc.line(),
                column: loc.column(),
            },
            &mut buf,
        );
        inner.write(&buf);
        id
    }

    fn finish(&self) -> io::Result<()> {
        let end = self.nanos(Timestamp::now());
        let mut inner = self.lock();
        if inner.out.is_some() {
            inner.drain_all();
            if let Some(b) = format::encode_event(&Record::End { time: end }) {
                inner.write(b.as_slice());
            }
            inner.flush();
            // Dropping the writer closes the file.
            inner.out = None;
        }
        inner.rings.clear();
        inner.result()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last handle went away without `close`: finish the file anyway. (Not joining the
        // flusher: it holds only a weak reference and stops on its own.)
        if !self.closed.swap(true, Ordering::SeqCst) {
            let _ = self.finish();
        }
    }
}

/// Per-thread state: the ring this thread fills for the recorder it last delivered to.
struct Local {
    owner: u64,
    /// This thread is the ring's only producer.
    ring: Option<Arc<Ring>>,
    /// Location ids by the location's address, for `owner`.
    locs: Option<HashMap<usize, LocationId>>,
}

impl Local {
    const fn new() -> Self {
        Local {
            owner: 0,
            ring: None,
            locs: None,
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        // `FAST` must not keep pointing at the ring once this thread's `LOCAL` lets go of it.
        if let Some(ring) = &self.ring {
            let _ = FAST.try_with(|f| {
                if core::ptr::eq(f.ring.get(), Arc::as_ptr(ring)) {
                    f.owner.set(0);
                }
            });
        }
    }
}

/// The hot path's view of `LOCAL`: which recorder this thread's ring belongs to (0: none) and the
/// ring. Invariant: when `owner` is not 0, `ring` points to the ring that `LOCAL.ring` holds (an
/// `Arc`), and `LOCAL.owner == owner`; whoever replaces or drops `LOCAL.ring` updates `FAST`
/// first (`Local::attach`, `Local::drop`).
struct Fast {
    owner: Cell<u64>,
    ring: Cell<*const Ring>,
}

thread_local! {
    static LOCAL: RefCell<Local> = const { RefCell::new(Local::new()) };
    // No destructor: reaching it is a plain thread-local access, with no state check.
    static FAST: Fast = const {
        Fast {
            owner: Cell::new(0),
            ring: Cell::new(core::ptr::null()),
        }
    };
}

impl Local {
    fn attach(&mut self, shared: &Arc<Shared>) {
        let ring = Arc::new(Ring::new());
        shared.lock().rings.push(ring.clone());
        self.owner = shared.id;
        let _ = FAST.try_with(|f| {
            f.owner.set(shared.id);
            f.ring.set(Arc::as_ptr(&ring));
        });
        self.ring = Some(ring);
        self.locs = None;
    }

    fn loc_id(&mut self, shared: &Shared, loc: Option<SourceLocation>) -> Option<LocationId> {
        let loc = loc?;
        let addr = loc as *const _ as usize;
        let locs = self.locs.get_or_insert_with(HashMap::new);
        if let Some(&id) = locs.get(&addr) {
            return Some(id);
        }
        let id = shared.intern(loc);
        locs.insert(addr, id);
        Some(id)
    }
}

/// An [`EventSink`] that writes the conflict log. Usually installed through [`LogGuard`]; use it
/// directly to combine it with another sink, or to feed it events yourself.
///
/// Cloning gives another handle to the same recorder. The file is finished (remaining buffers
/// drained, an end record written, the file closed) by [`Recorder::close`], or when the last
/// handle is dropped.
#[derive(Clone)]
pub struct Recorder {
    shared: Arc<Shared>,
    /// `shared.id`, one pointer less away for the hot path.
    id: u64,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("path", &self.shared.path)
            // Relaxed: a snapshot for display; nothing is published through it.
            .field("closed", &self.shared.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// The timing the recorder asks of stm-core ([`EventSink::timing`]): every attempt of a
    /// thread during its first 1024 attempts and for 1024 attempts after each conflict, about
    /// one attempt in 64 otherwise.
    pub const TIMING: Timing = Timing {
        sample: 64,
        after_conflict: 1024,
    };

    /// Creates (or truncates) the file at `path`, writes the header and the process record (the
    /// working directory and the executable, for the report to find source files) and starts
    /// the background flusher. Does not install anything: see [`LogGuard::create`].
    pub fn create(path: impl AsRef<Path>) -> io::Result<Recorder> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let path = path.as_ref().to_path_buf();
        let file = File::create(&path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create conflict log {}: {e}", path.display()),
            )
        })?;
        let start = Timestamp::now();
        // The wall clock as the event clock sees it, so that header and record times agree.
        let start_unix_ns = start
            .to_system_time()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let mut out = BufWriter::with_capacity(FILE_BUF, file);
        out.write_all(
            &Header {
                version: VERSION,
                pid: std::process::id(),
                start_unix_ns,
            }
            .to_bytes(),
        )?;
        let mut process = Vec::new();
        format::encode(
            &Record::Process {
                cwd: std::env::current_dir().unwrap_or_default(),
                exe: std::env::current_exe().unwrap_or_default(),
            },
            &mut process,
        );
        out.write_all(&process)?;
        // The header goes to disk at once: a program that dies early still leaves a valid log.
        out.flush()?;
        let shared = Arc::new(Shared {
            // Relaxed: only uniqueness matters, which the RMW gives.
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            start,
            path,
            inner: Mutex::new(Inner {
                out: Some(out),
                rings: Vec::new(),
                by_content: HashMap::new(),
                error: None,
            }),
            closed: AtomicBool::new(false),
            flusher: Mutex::new(None),
        });
        let weak = Arc::downgrade(&shared);
        let handle = std::thread::Builder::new()
            .name("stm-log-flush".into())
            .spawn(move || {
                loop {
                    std::thread::park_timeout(FLUSH_INTERVAL);
                    let Some(s) = weak.upgrade() else { return };
                    if s.closed.load(Ordering::SeqCst) {
                        return;
                    }
                    let mut inner = s.lock();
                    inner.drain_all();
                    inner.flush();
                }
            })?;
        *shared.flusher.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        let id = shared.id;
        Ok(Recorder { shared, id })
    }

    /// The file this recorder writes.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The moment that record times count from, on stm-core's event clock.
    pub fn start(&self) -> Timestamp {
        self.shared.start
    }

    /// Writes every event delivered so far (by any thread) to the file and flushes it. Returns
    /// the first write error, if writing ever failed.
    pub fn flush(&self) -> io::Result<()> {
        let mut inner = self.shared.lock();
        inner.drain_all();
        inner.flush();
        inner.result()
    }

    /// Finishes the file: stops the background flusher, writes every buffered event and an end
    /// record, and closes it. Events delivered afterwards are dropped. Calling it again does
    /// nothing and returns `Ok(())`.
    pub fn close(&self) -> io::Result<()> {
        if self.shared.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let flusher = self
            .shared
            .flusher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = flusher {
            h.thread().unpark();
            // The flusher cannot panic except on a bug; its result carries nothing.
            let _ = h.join();
        }
        self.shared.finish()
    }

    fn record(&self, e: &Event, local: &mut Local) -> Option<Record> {
        let thread = e.thread;
        let time = self.shared.nanos(e.time);
        let mut sides = |c: &Conflict| ConflictSides {
            kind: c.kind,
            this: local.loc_id(&self.shared, c.this),
            other: local.loc_id(&self.shared, c.other),
            // A thread never conflicts with itself. stm-core no longer names the validating thread
            // for a word under its own commit-time lock (it takes the previous writer from the
            // side table); the filter stays as a safeguard.
            other_thread: c.other_thread.filter(|&t| t != thread),
        };
        Some(match e.kind {
            EventKind::Start { inevitable } => Record::Start {
                thread,
                time,
                inevitable,
            },
            EventKind::Commit {
                read_only,
                duration,
            } => Record::Commit {
                thread,
                time,
                read_only,
                duration: nanos(duration),
            },
            EventKind::Abort {
                cause,
                conflict,
                lost,
            } => {
                let reason = abort_reason(cause)?;
                let conflict = match (reason, conflict) {
                    (AbortReason::Conflict(_), Some(c)) => Some(sides(&c)),
                    _ => None,
                };
                Record::Abort {
                    thread,
                    time,
                    reason,
                    conflict,
                    lost: nanos(lost),
                }
            }
            EventKind::UntimedCommit { read_only } => Record::UntimedCommit { thread, read_only },
            EventKind::UntimedAbort { cause, conflict } => {
                let reason = abort_reason(cause)?;
                let conflict = match (reason, conflict) {
                    (AbortReason::Conflict(_), Some(c)) => Some(sides(&c)),
                    _ => None,
                };
                Record::UntimedAbort {
                    thread,
                    time,
                    reason,
                    conflict,
                }
            }
            EventKind::PauseStart { conflict } => Record::PauseStart {
                thread,
                time,
                conflict: sides(&conflict),
            },
            EventKind::PauseEnd { conflict, paused } => Record::PauseEnd {
                thread,
                time,
                conflict: sides(&conflict),
                paused: nanos(paused),
            },
            EventKind::InevitableBegin => Record::InevitableBegin { thread, time },
            EventKind::InevitableEnd => Record::InevitableEnd { thread, time },
            _ => return None,
        })
    }

    /// Every event that `push_in_place` did not take: encodes it into a stack buffer and appends
    /// that to this thread's ring, draining the ring first when it is full.
    #[cold]
    #[inline(never)]
    fn event_slow(&self, e: &Event, local: &mut Local) {
        let b = match e.kind {
            EventKind::Start { inevitable } => {
                EventBuf::start(e.thread, self.shared.nanos(e.time), inevitable)
            }
            EventKind::Commit {
                read_only,
                duration,
            } => EventBuf::commit(
                e.thread,
                self.shared.nanos(e.time),
                read_only,
                nanos(duration),
            ),
            EventKind::UntimedCommit { read_only } => EventBuf::untimed_commit(e.thread, read_only),
            _ => {
                let Some(r) = self.record(e, local) else {
                    return;
                };
                let Some(b) = format::encode_event(&r) else {
                    return;
                };
                b
            }
        };
        let Some(ring) = local.ring.as_ref() else {
            return;
        };
        // SAFETY: `local` is this thread's own state, so this thread is the ring's only producer.
        if !unsafe { ring.push(b.as_slice()) } {
            // Drain our own ring (as the consumer, under the mutex), then retry; an empty ring
            // always has room for one event.
            self.shared.lock().drain_one(ring);
            // SAFETY: as above.
            let pushed = unsafe { ring.push(b.as_slice()) };
            debug_assert!(pushed);
        }
    }

    /// The slow path: no usable per-thread state (the thread is being torn down, or the sink was
    /// re-entered). Writes straight to the file, after every buffered record so that this
    /// thread's records stay in order.
    #[cold]
    fn event_direct(&self, e: &Event) {
        let mut local = Local::new();
        let Some(r) = self.record(e, &mut local) else {
            return;
        };
        let Some(b) = format::encode_event(&r) else {
            return;
        };
        let mut inner = self.shared.lock();
        inner.drain_all();
        inner.write(b.as_slice());
    }
}

#[inline]
fn nanos(d: Duration) -> u64 {
    // u64 arithmetic (cheaper than `as_nanos`'s u128); saturates after 584 years.
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

impl Recorder {
    /// Encodes the start, commit and untimed-commit events straight into `ring`; returns `false`
    /// for every other event, and when the ring has no room.
    ///
    /// # Safety
    ///
    /// The calling thread is `ring`'s producer.
    #[inline(always)]
    unsafe fn push_fast(&self, ring: &Ring, e: &Event) -> bool {
        // `push_in_place` and the encoders call nothing that could deliver an event, so two
        // pushes never interleave on this thread.
        match e.kind {
            EventKind::UntimedCommit { read_only } => {
                // SAFETY: the caller is the ring's producer (our contract).
                unsafe { ring.push_in_place(|out| put_untimed_commit(out, e.thread, read_only)) }
            }
            EventKind::Start { inevitable } => {
                let time = self.shared.nanos(e.time);
                // SAFETY: as above.
                unsafe { ring.push_in_place(|out| put_start(out, e.thread, time, inevitable)) }
            }
            EventKind::Commit {
                read_only,
                duration,
            } => {
                let (time, d) = (self.shared.nanos(e.time), nanos(duration));
                // SAFETY: as above.
                unsafe { ring.push_in_place(|out| put_commit(out, e.thread, time, read_only, d)) }
            }
            _ => false,
        }
    }

    /// Every event the hot path did not take: through this thread's `LOCAL` state (attaching a
    /// ring first if it has none for this recorder), or straight to the file when that state is
    /// unusable.
    #[inline(never)]
    fn event_local(&self, e: &Event) {
        let done = LOCAL
            .try_with(|cell| {
                let Ok(mut local) = cell.try_borrow_mut() else {
                    return false;
                };
                if local.owner != self.shared.id {
                    local.attach(&self.shared);
                }
                let Some(ring) = local.ring.as_ref() else {
                    return false;
                };
                // Restore the hot path's view (a temporary `Local` may have cleared it).
                let _ = FAST.try_with(|f| {
                    f.owner.set(self.id);
                    f.ring.set(Arc::as_ptr(ring));
                });
                // SAFETY: `local` is this thread's own state, so this thread is the ring's only
                // producer (`attach` makes a ring for one thread only).
                if !unsafe { self.push_fast(ring, e) } {
                    self.event_slow(e, &mut local);
                }
                true
            })
            .unwrap_or(false);
        if !done {
            self.event_direct(e);
        }
    }
}

impl EventSink for Recorder {
    #[inline]
    fn event(&self, e: &Event) {
        let fast = FAST.with(|f| {
            f.owner.get() == self.id && {
                // SAFETY: `owner` is this recorder's id, so (the invariant of `Fast`) `ring`
                // points to the ring that this thread's `LOCAL` holds alive, of which this
                // thread is the only producer.
                unsafe { self.push_fast(&*f.ring.get(), e) }
            }
        });
        if !fast {
            self.event_local(e);
        }
    }

    fn timing(&self) -> Timing {
        Self::TIMING
    }
}

/// Keeps a [`Recorder`] installed as `stm-core`'s event sink. Dropping it uninstalls the sink,
/// writes what is buffered and closes the file.
///
/// There is one global sink: creating a guard replaces any sink installed before, and dropping
/// it leaves none installed. Events of an attempt that was already running when the guard was
/// dropped are discarded.
///
/// ```
/// use stm_core::{TVar, atomically};
/// let path = std::env::temp_dir().join(format!("doc-guard-{}.log", std::process::id()));
/// let guard = stm_log::LogGuard::create(&path)?;
/// let v = TVar::new(0u64);
/// atomically(|tx| tx.modify(&v, |x| x + 1));
/// guard.finish()?;
/// let report = stm_log::report::Report::from_path(&path)?;
/// assert!(report.commits >= 1);
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[must_use = "dropping the guard uninstalls the recorder and closes the log at once"]
pub struct LogGuard {
    rec: Recorder,
}

impl LogGuard {
    /// Creates the log file at `path` and installs the recorder for every thread.
    pub fn create(path: impl AsRef<Path>) -> io::Result<LogGuard> {
        let rec = Recorder::create(path)?;
        stm_core::set_event_sink(Some(Arc::new(rec.clone())));
        Ok(LogGuard { rec })
    }

    /// Writes everything recorded so far to the file (see [`Recorder::flush`]).
    pub fn flush(&self) -> io::Result<()> {
        self.rec.flush()
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        self.rec.path()
    }

    /// The installed recorder.
    pub fn recorder(&self) -> &Recorder {
        &self.rec
    }

    /// Uninstalls the recorder and finishes the file, returning any write error (dropping the
    /// guard does the same but can only print the error).
    pub fn finish(self) -> io::Result<()> {
        stm_core::set_event_sink(None);
        self.rec.close()
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        stm_core::set_event_sink(None);
        if let Err(e) = self.rec.close() {
            eprintln!("stm-log: {} is incomplete: {e}", self.rec.path().display());
        }
    }
}

/// Installs the recorder when the environment variable `STM_LOG` names a file: returns the guard
/// that keeps it installed (hold it until the program ends). Without `STM_LOG` (or with it
/// empty), returns `Ok(None)` and installs nothing, so recording costs nothing.
///
/// ```no_run
/// fn main() -> std::io::Result<()> {
///     let _log = stm_log::init_from_env()?; // STM_LOG=stm.log ./program
///     // ... transactions ...
///     Ok(())
/// }
/// ```
pub fn init_from_env() -> io::Result<Option<LogGuard>> {
    match std::env::var_os("STM_LOG") {
        Some(p) if !p.is_empty() => LogGuard::create(PathBuf::from(p)).map(Some),
        _ => Ok(None),
    }
}

/// The format's code for an abort's cause; `None` for a cause added to stm-core later, which the
/// format has no code for yet (the event is not recorded).
fn abort_reason(cause: AbortCause) -> Option<AbortReason> {
    Some(match cause {
        AbortCause::Conflict(k) => AbortReason::Conflict(k),
        AbortCause::Retry => AbortReason::Retry,
        AbortCause::Cancel => AbortReason::Cancel,
        AbortCause::Panic => AbortReason::Panic,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drained(r: &Ring) -> Vec<u8> {
        let mut out = Vec::new();
        // SAFETY: this test is the only consumer.
        unsafe { r.drain(|b| out.extend_from_slice(b)) };
        out
    }

    #[test]
    fn ring_fills_wraps_and_hands_over_every_byte_in_order() {
        let r = Ring::new();
        let mut expect = Vec::new();
        let mut next = 0u8;
        let mut record = |len: usize| -> Vec<u8> {
            (0..len)
                .map(|_| {
                    next = next.wrapping_add(1);
                    next
                })
                .collect()
        };
        // Fill to the brim with 7-byte records, until one no longer fits.
        loop {
            let rec = record(7);
            // SAFETY: this test is the only producer.
            if !unsafe { r.push(&rec) } {
                break;
            }
            expect.extend_from_slice(&rec);
        }
        assert_eq!(expect.len(), RING_BYTES / 7 * 7);
        assert_eq!(drained(&r), expect);
        assert!(r.is_empty());
        // Now records straddle the end of the buffer, through both paths.
        let mut got = Vec::new();
        expect.clear();
        for i in 0..(3 * RING_BYTES / 20) {
            let rec = record(1 + i % 19);
            // SAFETY: as above.
            let fast = unsafe {
                r.push_in_place(|out| {
                    out[..rec.len()].copy_from_slice(&rec);
                    rec.len()
                })
            };
            if !fast {
                // SAFETY: as above.
                assert!(unsafe { r.push(&rec) });
            }
            expect.extend_from_slice(&rec);
            if i % 1000 == 999 {
                got.extend(drained(&r));
            }
        }
        got.extend(drained(&r));
        assert_eq!(got, expect);
    }
}
