//! The transaction: read, write, commit, abort, inevitable mode and blocking retry.
//!
//! This file is the hot path; `runtime.rs` documents the orec encoding and its invariants.
//!
//! # Protocol (normal transactions: lazy versioning, commit-time locking, TL2 with extension)
//!
//! Versions come from per-thread clocks instead of one global clock (TLC-style, see
//! `Runtime::clocks`): a commit is stamped `count << SLOT_BITS | slot` by its thread's slot, and
//! a transaction's snapshot is a vector `seen`, one stamp per slot.
//!
//! - **Start**: the snapshot is this thread's `seen` as its earlier attempts left it: every entry
//!   was loaded from its clock before the start (or is this thread's own last stamp), and
//!   nothing shared is touched.
//! - **Read**: `o1 = orec.load(SeqCst)`; if locked, wait (a committer, briefly; the inevitable
//!   transaction, parked: an `INEVITABLE` pause) or abort (`WRITE_READ`); `v = word.load(Acquire)`;
//!   `o2 = orec.load(SeqCst)`; if the version moved, read again; if its stamp `t` is newer than
//!   `seen[slot(t)]`, extend: `seen[slot(t)] = clocks[slot(t)].load(Acquire)`, then check that
//!   every read orec still holds the version it was read at. The value is consistent with every
//!   earlier read (opacity).
//! - **Commit, read-only**: nothing to do; every read was valid at the snapshot.
//! - **Commit, update**: lock each written orec by CAS (SeqCst); a lock held by another committer:
//!   spin, then abort (`WRITE_WRITE`); pinned or held by the inevitable transaction: release
//!   everything, wait (an `INEVITABLE` pause), lock again. Validate the read set (SeqCst loads;
//!   `WRITE_READ` on failure). Take the slot's next stamp `wv` (Release store). Write the words
//!   back with Release, then release each orec with `store(wv << 3, Release)`.
//!
//! Why this is a consistent snapshot. Call a commit *covered* when its stamp `t` has
//! `t <= seen[slot(t)]`. A covered commit stored its stamp (Release) after taking its locks, and
//! the snapshot entry was loaded (Acquire) from that store or a later one of the same slot, so
//! every orec load after that entry's load sees the covered commit's lock or its release. Each
//! entry was loaded before the attempt started, or at an extension that then validated every
//! earlier read. So a read returns a word whose last writer is covered, and no covered commit
//! can still change a word after it was read without the read being caught (the word would be
//! seen locked, or fail the validation of the extension that covered the commit). The reads
//! therefore all come from the same cut: every covered commit, and none of the others, and the
//! cut is closed under "read from": a commit that read a word read it after its writer
//! released it, so the writer stored its stamp before the reader locked anything, before the
//! reader stored its own stamp, before the snapshot loaded it.
//!
//! Why update commits serialise. After locking its write set and validating its read set, a
//! committer holds every word it writes and has seen every word it read unchanged since it was
//! read: it is serialised there. Two committers that each read what the other writes lock
//! (SeqCst RMW) and then validate (SeqCst loads); in the single total order of SeqCst
//! operations one of them validates after the other locked, sees the lock and aborts. With a
//! global clock the clock's RMW ordered them; here nothing shared is written, so these two
//! operations carry SeqCst (on x86-64 the same instructions as AcqRel and Acquire).
//!
//! The cut of covered commits must also include every commit `U` that a covered commit `C`
//! overwrote a word `x` read by (`U` read `x`, then `C` wrote it: `U` comes first). `U` locked
//! its write set and then validated `x` (SeqCst) without seeing `C`'s lock, so in the SeqCst
//! order `U`'s locks precede `C`'s lock CAS, which strongly happens before the reader's orec
//! loads (through `C`'s Release stamp store and the reader's Acquire clock load). Those loads
//! are SeqCst, so they see `U`'s locks or later values: the reader never reads a word from
//! before `U` once it has covered `C`. This is why the read path's orec loads are SeqCst too;
//! with Acquire loads the C++ model would allow the stale read (x86-64 never shows it).
//!
//! # Inevitable transactions
//!
//! At most one thread holds the token (`Runtime::inevitable`). Its reads pin their orec (`PINNED`,
//! version kept, so normal readers go on) and its writes lock their orec (`LOCKED | PINNED`, at
//! encounter time); values stay in the redo log until it commits. A normal committer never locks a
//! pinned orec, so nothing the inevitable transaction read can change under it, and nothing it
//! wrote can be read before its commit: it is serialised at its commit point and never aborts.
//! Everyone else keeps committing unless they touch its words.

use crate::error::{Abort, AbortCause, ConflictKind, TxError, TxResult};
use crate::hook::{Conflict, Event, EventKind, EventSink, SourceLocation, Timestamp, sink};
use crate::runtime::{
    FLAGS, INDEX_NONE, LOCKED, PINNED, Runtime, SHIFT, SLOT_MASK, SLOTS, WAITERS, index_of,
    locked_word, owner_of, runtime,
};
use crate::stats::{self, Counters};
use crate::sync::{AtomicU64, Ordering, Spin};
use crate::tvar::TVar;
use crate::word::{self, Word};
use core::cell::{Cell, UnsafeCell};
use core::panic::Location;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;

/// Spins on a lock held by a normal committer before giving up.
const LOCK_SPINS: u32 = 8;
/// Write sets longer than this get a hash index for read-after-write lookups.
const INDEX_AFTER: usize = 32;
/// Read-set capacity reserved when a thread's state is built (grown on demand, and kept: the
/// state is reused by every transaction of the thread, so only a thread's first transactions
/// may allocate).
const READS_RESERVED: usize = 64;
/// Write-set capacity reserved likewise.
const WRITES_RESERVED: usize = 16;

// ---------------------------------------------------------------------------------------------
// Per-thread context
// ---------------------------------------------------------------------------------------------

struct ThreadCtx {
    id: u64,
    /// Consecutive conflict aborts of the transaction now running on this thread.
    aborts: Cell<u32>,
    /// A transaction (or its after-commit actions' caller) is running on this thread.
    active: Cell<bool>,
    /// The state of the running attempt, for `forget_pending`; null between attempts.
    current: Cell<*mut State>,
    counters: Arc<Counters>,
    /// The transaction state, reused by every attempt of this thread (built on first use):
    /// nothing is allocated, copied or dropped per attempt, and spilled read/write sets keep
    /// their capacity. Reached only through raw pointers while `active` is set.
    state: UnsafeCell<Option<State>>,
    /// `TBox` values that the epoch collector retired while this thread was inside a transaction
    /// (collection runs inside any `pin()`): their `Drop` may run a transaction, which must not
    /// start inside another one, so they wait here for the next `release` (or thread exit).
    #[cfg(not(loom))]
    late: core::cell::RefCell<Vec<(u64, DropFn)>>,
    /// `late` may be non-empty: `release` must take its slow path.
    late_pending: Cell<bool>,
    /// An event sink is running, called from inside the body (`State::deliver_in_body`).
    in_sink: Cell<bool>,
    /// Addresses that `forget_pending` met while `in_sink`: discarded once the sink returns.
    forgotten: core::cell::RefCell<Vec<usize>>,
}

impl ThreadCtx {
    fn new() -> Self {
        // Thread ids only label threads (locks, logs); std atomic, Relaxed: uniqueness is all
        // that matters and the RMW gives it.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        ThreadCtx {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            aborts: Cell::new(0),
            active: Cell::new(false),
            current: Cell::new(core::ptr::null_mut()),
            counters: stats::register(),
            state: UnsafeCell::new(None),
            #[cfg(not(loom))]
            late: core::cell::RefCell::new(Vec::new()),
            late_pending: Cell::new(false),
            in_sink: Cell::new(false),
            forgotten: core::cell::RefCell::new(Vec::new()),
        }
    }
}

impl Drop for ThreadCtx {
    fn drop(&mut self) {
        stats::unregister(&self.counters);
        #[cfg(not(loom))]
        for (v, d) in self.late.get_mut().drain(..) {
            // SAFETY: retired values whose grace period is over (see `drop_retired`); the
            // thread is exiting, outside any transaction.
            unsafe { d(v) };
        }
    }
}

/// Frees a `TBox` value retired by a commit, when the epoch says no attempt can still see it.
/// Runs inside whatever `pin()` collects it: if that is inside a transaction on this thread, the
/// value waits in `ThreadCtx::late` until the transaction has ended (its `Drop` may run one).
///
/// # Safety
///
/// `bits` and `d` as for a `DropFn`: an allocation of the type `d` frees, owned by the caller.
#[cfg(not(loom))]
unsafe fn drop_retired(bits: u64, d: DropFn) {
    let queued = CTX
        .try_with(|c| {
            if c.active.get() {
                c.late.borrow_mut().push((bits, d));
                c.late_pending.set(true);
                true
            } else {
                false
            }
        })
        .unwrap_or(false);
    if !queued {
        // SAFETY: the caller's contract.
        unsafe { d(bits) };
    }
}

/// Frees the values that `drop_retired` queued on this thread (outside any transaction).
#[cfg(not(loom))]
fn drop_late() {
    loop {
        let late = CTX
            .try_with(|c| {
                c.late_pending.set(false);
                core::mem::take(&mut *c.late.borrow_mut())
            })
            .unwrap_or_default();
        if late.is_empty() {
            break;
        }
        for (v, d) in late {
            // SAFETY: queued by `drop_retired`, whose caller handed over the allocation.
            unsafe { d(v) };
        }
    }
}

#[cfg(not(loom))]
std::thread_local! {
    static CTX: ThreadCtx = ThreadCtx::new();
}
#[cfg(loom)]
loom::thread_local! {
    static CTX: ThreadCtx = ThreadCtx::new();
}

/// The runtime's id of the calling thread (the `thread` of its events).
pub fn thread_id() -> u64 {
    CTX.with(|c| c.id)
}

/// Called when a `TVar`/`TBox` at `addr` is dropped or consumed: if the body of a transaction
/// is running on this thread and has a pending write to it, the write is discarded (its value
/// can no longer be stored anywhere). Drops that the runtime itself performs (freeing values,
/// epoch collection) happen while `current` is null.
pub(crate) fn forget_pending(addr: usize) {
    let _ = CTX.try_with(|c| {
        if c.in_sink.get() {
            // An event sink called by a `State` method, which holds `&mut State`: queue it.
            c.forgotten.borrow_mut().push(addr);
            return;
        }
        let p = c.current.get();
        if !p.is_null() {
            // SAFETY: `current` is non-null only while the body of an attempt runs on this thread
            // and points to its `State`, which lives as long as the thread. Being here, the
            // thread is in user code of that body (a drop), where no `Tx` method holds a
            // reference to the state (`Tx::pin_epoch` holds none while pinning runs
            // destructors; a sink called by a `Tx` method is handled above).
            unsafe { (*p).discard_write(addr) };
        }
    });
}

/// Pins the epoch for the rest of the attempt whose body is running on this thread, if any.
#[cfg(not(loom))]
pub(crate) fn pin_running_attempt() {
    let _ = CTX.try_with(|c| {
        let p = c.current.get();
        // SAFETY: as in `forget_pending`: non-null only while a body runs, which is where we
        // are (user code, not a sink: a sink has no `Tx` to hand values to); the references
        // live for one statement each and none is held while `pin()` runs deferred destructors.
        if !c.in_sink.get() && !p.is_null() && unsafe { (*p).guard.is_none() } {
            let g = crossbeam_epoch::pin();
            // SAFETY: as above.
            unsafe { (*p).guard = Some(g) };
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Read and write sets
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct ReadEntry {
    orec: &'static AtomicU64,
    /// The orec value (without flags) the word was read at.
    version: u64,
    loc: SourceLocation,
}

/// Hashes word addresses for the write-set index: one multiplication (Fibonacci hashing of the
/// word number), instead of SipHash, which is built to resist chosen keys, and costs ten times more
/// per lookup. The keys are addresses of the program's own words, not outside input.
#[derive(Default, Clone, Copy)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Not used by `usize` keys; a plain multiplicative fold, for completeness.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.0 = ((n as u64) >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // The product's low bits depend only on the key's low bits, and the table picks buckets
        // by low bits: fold the high half in, or addresses a power of two apart collide.
        self.0 ^ (self.0 >> 32)
    }
}

/// Word address -> write-set position.
type AddrMap = HashMap<usize, usize, BuildHasherDefault<AddrHasher>>;

/// Frees a boxed value of a `TBox` write, type-erased.
type DropFn = unsafe fn(u64);

struct WriteEntry {
    /// The word to store into at commit. Valid until the attempt ends: see `TVar`'s docs, the
    /// stack check in `write` and `forget_pending`.
    word: *const AtomicU64,
    orec: &'static AtomicU64,
    orec_index: usize,
    value: u64,
    loc: SourceLocation,
    /// `Some` for `TBox` writes: `value` is an allocation owned by this entry until published.
    drop_box: Option<DropFn>,
    /// The orec value before this attempt locked it; `owned` when this entry holds the lock.
    prev: u64,
    owned: bool,
    /// The `or_else` branch that last saved this entry's value in the undo list (0: none), so
    /// that a branch overwriting a word many times saves its value once.
    saved_by: u32,
}

/// Where a running `or_else` branch started: the lengths of the sets it may grow.
#[derive(Clone, Copy)]
struct Branch {
    writes: usize,
    after: usize,
    undo: usize,
    /// This branch's number (from 1, unique within the thread's attempts): the write-set
    /// entries it has saved an undo record for carry it in `WriteEntry::saved_by`.
    id: u32,
}

/// A write-set entry's value before an `or_else` branch overwrote it.
struct Undo {
    index: usize,
    value: u64,
    loc: SourceLocation,
    /// The entry's `saved_by` before this record.
    saved_by: u32,
}

/// An orec held by the inevitable transaction: pinned (read) or locked (written).
struct Held {
    orec: &'static AtomicU64,
    /// Its value before we touched it (unlocked, without `PINNED`).
    prev: u64,
    locked: bool,
}

/// The per-thread transaction state. `repr(C)`, with the fields of the read and write paths
/// first, so that they share the first cache line whatever is added below (measured: letting
/// the compiler order the fields moved `read10_write1` by 4 ns when two cold fields were added).
#[repr(C)]
struct State {
    rt: &'static Runtime,
    /// The snapshot, one entry per clock slot: `seen[s]` is a stamp of slot `s` loaded from its
    /// clock before this attempt started or at one of its extensions (or this thread's own last
    /// stamp). A word whose stamp `t` has `t <= seen[t & SLOT_MASK]` was written by a commit
    /// that locked it before that load. Kept across attempts; entries only grow.
    seen: Box<[u64; SLOTS]>,
    reads: Vec<ReadEntry>,
    writes: Vec<WriteEntry>,
    /// One bit per (address >> 3) % 64 of the written words: most reads skip the write-set scan.
    filter: u64,
    doomed: Option<Abort>,
    inevitable: bool,
    /// Lowest address of `execute`'s frame: words between the current stack pointer and this
    /// live on the body's own stack.
    frame: usize,
    id: u64,
    /// This thread's clock slot (`Runtime::clocks`); 0 is the shared one.
    slot: u64,
    index: Option<AddrMap>,
    sink: Option<&'static dyn EventSink>,
    after: Vec<Box<dyn FnOnce()>>,
    /// Superseded `TBox` allocations of this attempt (never published), freed when it ends.
    garbage: Vec<(u64, DropFn)>,
    held: Vec<Held>,
    /// Inevitable because the user asked (`inevitably`, `become_inevitable`): may have done I/O.
    user_inevitable: bool,
    /// The body of the attempt is running (`ThreadCtx::current` points here): events raised
    /// now go through `deliver_in_body`.
    in_body: bool,
    /// This attempt held the inevitable token at some point.
    took_token: bool,
    /// `become_inevitable` failed: run the next attempt inevitable from its start.
    wants_inevitable: bool,
    /// After-commit actions of attempts that did not commit, dropped by `release`.
    dropped_actions: Vec<Box<dyn FnOnce()>>,
    /// Where a retrying attempt keeps its read set while it waits (reused between retries).
    wait_on: Vec<(&'static AtomicU64, u64)>,
    /// The `or_else` branches running, innermost last: where each one started.
    branches: Vec<Branch>,
    /// Write-set entries that a running `or_else` branch overwrote, with their values from
    /// before, oldest first: what undoing the branch restores.
    undo: Vec<Undo>,
    /// The last `Branch::id` handed out.
    branch_ids: u32,
    #[cfg(not(loom))]
    guard: Option<crossbeam_epoch::Guard>,
    start: Option<Timestamp>,
    conflict: Option<Conflict>,
}

/// A running transaction, handed to the body of [`atomically`] as `&mut Tx`.
///
/// Every operation returns [`TxResult`]: `Err` means the attempt is doomed and the body should
/// leave with `?`; the runtime rolls it back and runs the body again. A `Tx` cannot leave its
/// body:
///
/// ```compile_fail
/// let mut leaked = None;
/// stm_core::atomically(|tx| { leaked = Some(tx); Ok(()) });
/// ```
pub struct Tx {
    /// The thread's reusable state (in its `ThreadCtx`). A raw pointer, so that the `&mut Tx`
    /// handed to the body never asserts exclusive access to the state that `forget_pending`
    /// may also reach; it also makes `Tx` neither `Send` nor `Sync`.
    s: *mut State,
}

impl Tx {
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    fn st(&self) -> &mut State {
        // SAFETY: `s` points to this thread's `State`, which lives in its `ThreadCtx` for as long
        // as the thread, and `execute` builds a `Tx` only while it holds the thread's `active`
        // flag, so no other `Tx` points to it. `Tx` is neither `Send` nor `Sync`, so only this
        // thread uses it. No method keeps this reference across a call into user code (`modify`
        // reads, lets go, calls `f`, then writes; `or_else` lets go before each branch) or across
        // another call of `st()`: a method that calls `st()` more than once uses each reference
        // only until the next call. `forget_pending` also reaches the state, only from user code.
        unsafe { &mut *self.s }
    }

    /// Reads `var`. `#[track_caller]`: the conflict log names this line.
    #[track_caller]
    #[inline]
    pub fn read<T: Word>(&self, var: &TVar<T>) -> TxResult<T> {
        let loc = Location::caller();
        let bits = self.st().read_fast(&var.word, loc)?;
        // SAFETY: the bits came from `to_bits::<T>` (the redo log or the word itself).
        Ok(unsafe { word::from_bits(bits) })
    }

    /// Writes `value` to `var` (visible to other threads when the transaction commits).
    ///
    /// # Panics
    ///
    /// If `var` lives on the transaction body's own stack (it would be gone before the commit
    /// stores into it).
    #[track_caller]
    #[inline]
    pub fn write<T: Word>(&self, var: &TVar<T>, value: T) -> TxResult<()> {
        let loc = Location::caller();
        self.st().write_fast(&var.word, word::to_bits(value), loc)
    }

    /// Reads `var`, writes `f(value)` back and returns the new value.
    #[track_caller]
    #[inline]
    pub fn modify<T: Word>(&self, var: &TVar<T>, f: impl FnOnce(T) -> T) -> TxResult<T> {
        let loc = Location::caller();
        let bits = self.st().read_fast(&var.word, loc)?;
        // SAFETY: as in `read`.
        let new = f(unsafe { word::from_bits::<T>(bits) });
        self.st().write_fast(&var.word, word::to_bits(new), loc)?;
        Ok(new)
    }

    /// Reads a [`TBox`](crate::TBox): a reference valid until the transaction ends.
    #[cfg(not(loom))]
    #[track_caller]
    pub fn read_box<'a, T: Send + Sync + 'static>(
        &'a self,
        b: &'a crate::TBox<T>,
    ) -> TxResult<&'a T> {
        let loc = Location::caller();
        self.pin_epoch();
        let bits = self.st().read_word(&b.word, loc)?;
        // SAFETY: the word holds a live `Box<T>` allocation: either a pending one of this
        // attempt (freed only when the attempt ends, after the body and so after 'a), or a
        // published one, which is retired through the epoch that this attempt pinned before
        // loading it and stays pinned until the attempt ends; `TBox::drop` needs `&mut`, which
        // the borrow 'a of `b` excludes. (A pending allocation replaced or undone by an
        // `or_else` branch goes to `garbage` too, freed only after the body.)
        Ok(unsafe { &*(bits as usize as *const T) })
    }

    /// Writes a new value into a [`TBox`](crate::TBox).
    #[cfg(not(loom))]
    #[track_caller]
    pub fn write_box<T: Send + Sync + 'static>(
        &self,
        b: &crate::TBox<T>,
        value: T,
    ) -> TxResult<()> {
        let loc = Location::caller();
        if let Some(a) = self.st().doomed {
            return Err(a);
        }
        self.pin_epoch();
        let bits = Box::into_raw(Box::new(value)) as usize as u64;
        self.st()
            .write_word(&b.word, bits, loc, Some(drop_box::<T>))
    }

    /// Pins the epoch for the rest of the attempt. Pinning may run deferred destructors (user
    /// `Drop` code), so no reference to the state is held across it.
    #[cfg(not(loom))]
    fn pin_epoch(&self) {
        if self.st().guard.is_none() {
            let g = crossbeam_epoch::pin();
            self.st().guard = Some(g);
        }
    }

    /// Runs `f` once, after this transaction commits (never if it aborts). Use it for I/O.
    pub fn after_commit(&self, f: impl FnOnce() + 'static) {
        self.st().after.push(Box::new(f));
    }

    /// Makes this transaction the inevitable one: from here on it never aborts, so it may do
    /// I/O. Waits while another transaction is inevitable. Fails (and the runtime reruns the body
    /// as inevitable from its start) if something read so far has changed.
    #[track_caller]
    pub fn become_inevitable(&self) -> TxResult<()> {
        let loc = Location::caller();
        self.st().become_inevitable(loc)
    }

    /// Whether this transaction is the inevitable one.
    pub fn is_inevitable(&self) -> bool {
        self.st().inevitable
    }

    /// Blocks until a word this attempt has read changes, then runs the body again (Haskell's
    /// `retry`): `return tx.retry();` when the transaction cannot go on yet.
    ///
    /// # Panics
    ///
    /// The runtime panics if the attempt read nothing (it would wait forever), or if the body
    /// asked to be inevitable (it cannot be rolled back).
    pub fn retry<T>(&self) -> TxResult<T> {
        let s = self.st();
        if let Some(a) = s.doomed {
            // Already doomed by a conflict: that verdict stands (rerun, do not wait).
            return Err(a);
        }
        let a = Abort {
            cause: AbortCause::Retry,
        };
        s.doomed = Some(a);
        Err(a)
    }

    /// Runs `first`; if it calls [`retry`](Tx::retry), undoes what it wrote (and the
    /// after-commit actions it added) and runs `second` instead (Haskell's `orElse`).
    ///
    /// If `second` retries too, the whole transaction retries, waking when anything either
    /// branch read changes. Conflicts are not alternatives: an `Err` from a conflict leaves
    /// `or_else` at once, like any other operation. Calls nest. The reads of an undone `first`
    /// stay in the transaction's read set (the choice of `second` depends on them).
    ///
    /// Only the transaction's own effects are undone: I/O that an inevitable `first` did
    /// directly stays done (do I/O in [`after_commit`](Tx::after_commit) actions, which are
    /// undone with the branch). An inevitable transaction stays inevitable.
    ///
    /// ```
    /// use stm_core::{TVar, atomically};
    /// let (a, b) = (TVar::new(0u32), TVar::new(5u32));
    /// // Take one unit from the first of the two that has one.
    /// let took_from_b = atomically(|tx| {
    ///     tx.or_else(
    ///         |tx| {
    ///             let x = tx.read(&a)?;
    ///             if x == 0 {
    ///                 return tx.retry();
    ///             }
    ///             tx.write(&a, x - 1)?;
    ///             Ok(false)
    ///         },
    ///         |tx| {
    ///             tx.modify(&b, |y| y - 1)?;
    ///             Ok(true)
    ///         },
    ///     )
    /// });
    /// assert!(took_from_b);
    /// assert_eq!((a.load(), b.load()), (0, 4));
    /// ```
    pub fn or_else<T>(
        &mut self,
        first: impl FnOnce(&mut Tx) -> TxResult<T>,
        second: impl FnOnce(&mut Tx) -> TxResult<T>,
    ) -> TxResult<T> {
        let s = self.st();
        if let Some(a) = s.doomed {
            return Err(a);
        }
        s.branch_start();
        /// Ends the branch if `first` unwinds: a body may catch the panic and go on, and the
        /// branch's writes must not outlive it (nor its records reach later transactions).
        struct Unwinding(*mut State);
        impl Drop for Unwinding {
            fn drop(&mut self) {
                // SAFETY: runs only while unwinding out of `first` (it is forgotten otherwise),
                // when every frame that held a reference to the state has been left; `self.0`
                // is this thread's state, alive as long as the thread (see `Tx::st`).
                unsafe { (*self.0).branch_undo() };
            }
        }
        let unwinding = Unwinding(self.s);
        let r = first(self);
        core::mem::forget(unwinding);
        let s = self.st();
        let retried = matches!(s.doomed, Some(a) if a.cause == AbortCause::Retry);
        match r {
            Err(_) if retried => {
                s.branch_undo();
                s.doomed = None;
                second(self)
            }
            r => {
                s.branch_keep();
                r
            }
        }
    }
}

#[cfg(not(loom))]
unsafe fn drop_box<T>(bits: u64) {
    // SAFETY: caller passes an allocation made by `Box::<T>::into_raw` and owned by it.
    drop(unsafe { Box::from_raw(bits as usize as *mut T) });
}

impl State {
    fn new(rt: &'static Runtime, id: u64) -> Self {
        let mut seen = Box::new([0u64; SLOTS]);
        for (s, e) in (0u64..).zip(seen.iter_mut()) {
            // Count 0 of each slot: older than every commit stamped by it.
            *e = s;
        }
        State {
            rt,
            id,
            slot: rt.acquire_slot(),
            seen,
            inevitable: false,
            user_inevitable: false,
            doomed: None,
            reads: Vec::with_capacity(READS_RESERVED),
            writes: Vec::with_capacity(WRITES_RESERVED),
            filter: 0,
            index: None,
            held: Vec::new(),
            after: Vec::new(),
            garbage: Vec::new(),
            branches: Vec::new(),
            undo: Vec::new(),
            branch_ids: 0,
            wait_on: Vec::new(),
            dropped_actions: Vec::new(),
            #[cfg(not(loom))]
            guard: None,
            sink: None,
            start: None,
            conflict: None,
            took_token: false,
            wants_inevitable: false,
            in_body: false,
            frame: 0,
        }
    }

    /// Starts an attempt: a fresh snapshot. Every set is empty (see `end`).
    #[inline(always)]
    fn begin(&mut self, frame: usize) {
        if !(self.reads.is_empty()
            && self.writes.is_empty()
            && self.held.is_empty()
            && self.after.is_empty())
            || self.inevitable
        {
            // Only after a panic inside the runtime itself, between an attempt's start and its
            // end: undo what that attempt still held before starting afresh.
            self.rollback();
            self.end();
        }
        // The snapshot `seen` is where the previous attempts of this thread left it, not a
        // fresh read of every clock: each entry was loaded (Acquire) before this attempt
        // started, which is all the snapshot argument needs (see the module doc), and a word
        // newer than it makes the attempt extend. Starting touches no shared cache line.
        self.inevitable = false;
        self.user_inevitable = false;
        self.doomed = None;
        self.took_token = false;
        self.wants_inevitable = false;
        self.in_body = false;
        self.frame = frame;
        let sink = sink();
        self.sink = sink;
        if sink.is_some() {
            self.start = Some(Timestamp::now());
            self.conflict = None;
        }
    }

    /// Ends an attempt (committed or rolled back): empties the sets, keeping their capacity.
    /// What the attempt allocated and never published moves to `garbage`; `release` frees it
    /// (and unpins the epoch) once no reference to the state is alive, because freeing runs
    /// user `Drop` code.
    #[inline(always)]
    fn end(&mut self) {
        debug_assert!(self.writes.iter().all(|w| !w.owned) && self.held.is_empty());
        debug_assert!(self.branches.is_empty() && self.undo.is_empty());
        self.free_pending();
        self.reads.clear();
        if !self.after.is_empty() {
            // Dropping an action runs its captures' `Drop`, which may run a transaction: do it
            // in `release`, outside this one.
            self.dropped_actions.append(&mut self.after);
        }
    }

    #[inline]
    fn emit(&mut self, kind: EventKind) {
        if self.sink.is_some() {
            self.emit_at(Timestamp::now(), kind);
        }
    }

    #[inline]
    fn emit_at(&mut self, time: Timestamp, kind: EventKind) {
        if let Some(s) = self.sink {
            let e = Event {
                thread: self.id,
                time,
                kind,
            };
            if self.in_body
                || matches!(
                    kind,
                    EventKind::PauseStart { .. } | EventKind::PauseEnd { .. }
                )
            {
                // During the body, and at a commit's pauses (the write set is unlocked then, and
                // the lock loop starts over afterwards), a sink may drop a written variable.
                self.deliver_in_body(s, &e);
            } else {
                // A sink runs inside the runtime (holding the token, locks, pins): a panic there
                // must not unwind through it. The event is lost instead.
                let _ = catch_unwind(AssertUnwindSafe(|| s.event(&e)));
            }
        }
    }

    /// Delivers an event raised while the body runs (a pause, the inevitable token taken or
    /// given back by `become_inevitable`), with `&mut self` alive in the caller: a `TVar` or
    /// `TBox` that the sink drops must not reach this state through `ThreadCtx::current`
    /// (`forget_pending`), so its discard is queued and applied here once the sink returns.
    #[cold]
    #[inline(never)]
    fn deliver_in_body(&mut self, s: &'static dyn EventSink, e: &Event) {
        /// Clears `in_sink` however the sink's call ends (a panic payload whose own `Drop`
        /// panics escapes `catch_unwind`); when unwinding, also forgets the queued addresses
        /// (the attempt is being rolled back, and a later one could have a new variable there).
        struct InSink;
        impl Drop for InSink {
            fn drop(&mut self) {
                let _ = CTX.try_with(|c| {
                    c.in_sink.set(false);
                    if std::thread::panicking() {
                        c.forgotten.borrow_mut().clear();
                    }
                });
            }
        }
        let _ = CTX.try_with(|c| c.in_sink.set(true));
        let in_sink = InSink;
        let _ = catch_unwind(AssertUnwindSafe(|| s.event(e)));
        drop(in_sink);
        let forgotten = CTX
            .try_with(|c| core::mem::take(&mut *c.forgotten.borrow_mut()))
            .unwrap_or_default();
        for addr in forgotten {
            self.discard_write(addr);
        }
    }

    /// Emits `PauseStart` (when a sink is installed) and returns its time.
    #[cold]
    fn pause_start(&mut self, conflict: Conflict) -> Option<Timestamp> {
        let t0 = self.sink.map(|_| Timestamp::now());
        if let Some(t0) = t0 {
            self.emit_at(t0, EventKind::PauseStart { conflict });
        }
        t0
    }

    /// Emits `PauseEnd` for a pause that `pause_start` began at `t0`. Its `paused` is exactly
    /// the difference of the two events' times, so a log's pause accounting adds up.
    #[cold]
    fn pause_end(&mut self, t0: Option<Timestamp>, conflict: Conflict) {
        if let Some(t0) = t0 {
            let t1 = Timestamp::now();
            self.emit_at(
                t1,
                EventKind::PauseEnd {
                    conflict,
                    paused: t1.saturating_duration_since(t0),
                },
            );
        }
    }

    /// Records a conflict (with both sides when a sink wants them) and dooms the attempt.
    #[cold]
    fn fail(
        &mut self,
        kind: ConflictKind,
        loc: SourceLocation,
        orec_index: Option<usize>,
        other_thread: Option<u64>,
    ) -> Abort {
        let a = Abort::conflict(kind);
        if self.sink.is_some() {
            let (mut other, mut thread) = (None, other_thread);
            if let Some(i) = orec_index {
                let side = self.rt.side();
                let p = side.loc[i].load(std::sync::atomic::Ordering::Relaxed);
                // SAFETY: side entries are null or come from `Location::caller()`, 'static.
                other = unsafe { p.as_ref() };
                if thread.is_none() {
                    let t = side.thread[i].load(std::sync::atomic::Ordering::Relaxed);
                    thread = (t != 0).then_some(t);
                }
            }
            self.conflict = Some(Conflict {
                kind,
                this: Some(loc),
                other,
                other_thread: thread,
            });
        }
        self.doomed = Some(a);
        a
    }

    /// Records in the side table that this thread, at `loc`, writes orec `i`, so that a
    /// transaction aborted by it can name the line. Only while a sink is installed; written
    /// once the commit is sure (validated) and before its release.
    #[cold]
    fn note_writer(&self, i: usize, loc: SourceLocation) {
        let side = self.rt.side();
        // Relaxed: diagnostics only (see `SideTable`); the orec's release orders them for
        // readers that acquire the new version.
        side.loc[i].store(
            loc as *const _ as *mut _,
            std::sync::atomic::Ordering::Relaxed,
        );
        side.thread[i].store(self.id, std::sync::atomic::Ordering::Relaxed);
    }

    fn orec_index_of(&self, orec: &AtomicU64) -> usize {
        // Recomputing from the address is cheaper than storing it in every read entry; only
        // the cold conflict path needs it.
        let base = self.rt.orec(0).0 as *const AtomicU64 as usize;
        (orec as *const AtomicU64 as usize - base) / core::mem::size_of::<AtomicU64>()
    }

    // ----- read -----

    /// The common read, inlined into `Tx::read`: a normal, healthy attempt reading a word it
    /// has not written, unlocked and not newer than the snapshot. Everything else goes to
    /// `read_word`. The three loads and their orderings are those of `read_word`.
    #[inline(always)]
    fn read_fast(&mut self, word: &AtomicU64, loc: SourceLocation) -> TxResult<u64> {
        let addr = word as *const AtomicU64 as usize;
        if self.doomed.is_none() && !self.inevitable && self.filter & filter_bit(addr) == 0 {
            let (orec, _) = self.rt.orec(addr);
            let o1 = orec.load(Ordering::SeqCst);
            let v = word.load(Ordering::Acquire);
            let o2 = orec.load(Ordering::SeqCst);
            let stamp = o1 >> SHIFT;
            if o1 == o2 && o1 & LOCKED == 0 && stamp <= self.seen[(stamp & SLOT_MASK) as usize] {
                self.reads.push(ReadEntry {
                    orec,
                    version: o1 & !FLAGS,
                    loc,
                });
                return Ok(v);
            }
        }
        self.read_word(word, loc)
    }

    #[inline(never)]
    fn read_word(&mut self, word: &AtomicU64, loc: SourceLocation) -> TxResult<u64> {
        if let Some(a) = self.doomed {
            return Err(a);
        }
        let addr = word as *const AtomicU64 as usize;
        if self.filter & filter_bit(addr) != 0
            && let Some(i) = self.find_write(addr)
        {
            return Ok(self.writes[i].value);
        }
        if self.inevitable {
            return Ok(self.read_inevitable(word, addr, loc));
        }
        let (orec, oi) = self.rt.orec(addr);
        let mut spin = Spin::new();
        loop {
            let o1 = spin.load(orec);
            if o1 & LOCKED != 0 {
                if o1 & PINNED != 0 {
                    self.pause_on(orec, o1, loc);
                    continue;
                }
                if spin.steps() < LOCK_SPINS {
                    spin.spin_on(orec, o1);
                    continue;
                }
                return Err(self.fail(ConflictKind::WriteRead, loc, Some(oi), Some(owner_of(o1))));
            }
            let v = word.load(Ordering::Acquire);
            let o2 = orec.load(Ordering::SeqCst);
            if (o1 ^ o2) & !FLAGS != 0 {
                continue;
            }
            let version = o1 & !FLAGS;
            let stamp = version >> SHIFT;
            if stamp > self.seen[(stamp & SLOT_MASK) as usize] {
                self.extend(stamp & SLOT_MASK)?;
                continue;
            }
            self.reads.push(ReadEntry { orec, version, loc });
            return Ok(v);
        }
    }

    /// Moves the snapshot of clock `slot` forward to now, if every read is still current.
    ///
    /// When refreshing every slot in use costs no more than the validation itself (few slots,
    /// or a long read set), all of them are refreshed, so that one validation covers the
    /// commits of every thread: a long reader among many writers then extends about once per
    /// burst of commits, not once per writer.
    #[cold]
    fn extend(&mut self, slot: u64) -> TxResult<()> {
        let used = self.rt.slots_used().min(SLOTS);
        let slots = if used <= self.reads.len().max(4) {
            // `slot` is below `used` (the stamp's committer took its slot before committing),
            // but the count is only a hint: include it whatever it says.
            0..used.max(slot as usize + 1)
        } else {
            slot as usize..slot as usize + 1
        };
        for s in slots {
            // Acquire: pairs with the Release store (or RMW) of the commit that stamped `now`;
            // the validation below and every later orec load see the locks of the commits
            // stamped up to `now` (see `Runtime::clocks`).
            let now = self.rt.clocks[s].load(Ordering::Acquire);
            let e = &mut self.seen[s];
            // The loads come before the validation, so they sample a point where every read so
            // far is current (if validation fails the attempt ends; a later one starts after
            // the loads). Entries only grow.
            *e = (*e).max(now);
        }
        self.validate()
    }

    /// Checks that every read orec still holds the version it was read at (or is locked by this
    /// attempt, which locked it at that version).
    #[inline(always)]
    fn validate(&mut self) -> TxResult<()> {
        for i in 0..self.reads.len() {
            let r = self.reads[i];
            // SeqCst: Acquire pairs with the Release of whichever commit last released this
            // orec; SeqCst, with the SeqCst lock CAS of `commit`, makes two committers that
            // each read what the other writes see at least one of the two locks (see `commit`).
            // On x86-64 it is the same plain load as an Acquire one.
            let o = r.orec.load(Ordering::SeqCst);
            let ok = if o & LOCKED == 0 {
                o & !FLAGS == r.version
            } else if o & PINNED == 0 && owner_of(o) == self.id {
                self.prev_of_own_lock(o, r.orec) & !FLAGS == r.version
            } else {
                false
            };
            if !ok {
                let kind = if o & PINNED != 0 && o & LOCKED != 0 {
                    ConflictKind::Inevitable
                } else {
                    ConflictKind::WriteRead
                };
                let oi = self.orec_index_of(r.orec);
                // A lock of our own on a changed word: the other side is whoever changed it,
                // which the side table names.
                let other = (o & LOCKED != 0 && owner_of(o) != self.id).then(|| owner_of(o));
                return Err(self.fail(kind, r.loc, Some(oi), other));
            }
        }
        Ok(())
    }

    fn prev_of_own_lock(&self, o: u64, orec: &AtomicU64) -> u64 {
        let i = index_of(o);
        if i != INDEX_NONE
            && let Some(w) = self.writes.get(i as usize)
            && core::ptr::eq(w.orec, orec)
            && w.owned
        {
            return w.prev;
        }
        self.writes
            .iter()
            .find(|w| w.owned && core::ptr::eq(w.orec, orec))
            .map_or(u64::MAX, |w| w.prev)
    }

    /// Waits (an `INEVITABLE` pause) until the inevitable transaction lets go of `orec`.
    #[cold]
    fn pause_on(&mut self, orec: &AtomicU64, seen: u64, loc: SourceLocation) {
        let conflict = Conflict {
            kind: ConflictKind::Inevitable,
            this: Some(loc),
            other: None,
            other_thread: Some(owner_of(seen)),
        };
        let t0 = self.pause_start(conflict);
        self.rt.wait_orec_change(orec, seen);
        self.pause_end(t0, conflict);
    }

    // ----- write -----

    /// The common write, inlined into `Tx::write`: a normal, healthy attempt writing a word it
    /// has not written yet, with a write set too small to need its index. Everything else goes to
    /// `write_word`, which does the same for this case.
    #[inline(always)]
    fn write_fast(&mut self, word: &AtomicU64, bits: u64, loc: SourceLocation) -> TxResult<()> {
        let addr = word as *const AtomicU64 as usize;
        if self.doomed.is_none()
            && !self.inevitable
            && self.filter & filter_bit(addr) == 0
            && self.writes.len() < INDEX_AFTER
        {
            // The index exists exactly when the set is past `INDEX_AFTER` entries (`write_word`
            // builds it, `reindex` drops it when removals take the set back under), so there is
            // none to update.
            debug_assert!(self.index.is_none());
            self.check_not_on_body_stack(addr);
            let (orec, orec_index) = self.rt.orec(addr);
            self.push_write(word, orec, orec_index, bits, loc, None);
            return Ok(());
        }
        self.write_word(word, bits, loc, None)
    }

    /// Appends a write-set entry for a word not in the set (the index is the caller's part).
    #[inline(always)]
    fn push_write(
        &mut self,
        word: &AtomicU64,
        orec: &'static AtomicU64,
        orec_index: usize,
        bits: u64,
        loc: SourceLocation,
        drop_box: Option<DropFn>,
    ) {
        self.writes.push(WriteEntry {
            word,
            orec,
            orec_index,
            value: bits,
            loc,
            drop_box,
            prev: 0,
            owned: false,
            saved_by: 0,
        });
        self.filter |= filter_bit(word as *const AtomicU64 as usize);
    }

    #[inline(never)]
    fn write_word(
        &mut self,
        word: &AtomicU64,
        bits: u64,
        loc: SourceLocation,
        drop_box: Option<DropFn>,
    ) -> TxResult<()> {
        if let Some(a) = self.doomed {
            if let Some(d) = drop_box {
                // The fresh allocation of `write_box`: freed by `release`, not here, since its
                // `Drop` may reach this state.
                self.garbage.push((bits, d));
            }
            return Err(a);
        }
        let addr = word as *const AtomicU64 as usize;
        self.check_not_on_body_stack(addr);
        if self.filter & filter_bit(addr) != 0
            && let Some(i) = self.find_write(addr)
        {
            self.overwrite(i, bits, loc);
            return Ok(());
        }
        let (orec, orec_index) = self.rt.orec(addr);
        if self.inevitable {
            self.lock_inevitable(orec);
            if self.sink.is_some() {
                self.note_writer(orec_index, loc);
            }
        }
        self.push_write(word, orec, orec_index, bits, loc, drop_box);
        let n = self.writes.len();
        if let Some(ix) = &mut self.index {
            ix.insert(addr, n - 1);
        } else if n > INDEX_AFTER {
            self.index = Some(
                self.writes
                    .iter()
                    .enumerate()
                    .map(|(i, w)| (w.word as usize, i))
                    .collect(),
            );
        }
        Ok(())
    }

    /// A write to a word this attempt has written already (entry `i`): out of line, to keep
    /// `write_word`'s common path short.
    #[inline(never)]
    fn overwrite(&mut self, i: usize, bits: u64, loc: SourceLocation) {
        let w = &mut self.writes[i];
        let branch = self.branches.last().filter(|b| i < b.writes);
        if let Some(b) = branch.filter(|b| w.saved_by != b.id) {
            // Written before the running `or_else` branch started, and not saved by it yet:
            // undoing the branch restores this value (and its allocation, for a `TBox`).
            self.undo.push(Undo {
                index: i,
                value: w.value,
                loc: w.loc,
                saved_by: w.saved_by,
            });
            w.saved_by = b.id;
        } else if let Some(d) = w.drop_box {
            // (Also a value this branch wrote over its saved one: the branch made it.)
            // The superseded allocation may be borrowed by a `read_box` of this attempt:
            // free it when the attempt ends, not now.
            self.garbage.push((w.value, d));
        }
        w.value = bits;
        w.loc = loc;
    }

    #[inline]
    fn find_write(&self, addr: usize) -> Option<usize> {
        match &self.index {
            Some(ix) => ix.get(&addr).copied(),
            None => self.writes.iter().rposition(|w| w.word as usize == addr),
        }
    }

    /// Panics when `addr` is on the stack of the running body (between the stack pointer and the
    /// frame of `execute`): such a variable would be gone when the commit stores into it.
    #[inline]
    fn check_not_on_body_stack(&self, addr: usize) {
        if stack_low() <= addr && addr < self.frame {
            body_stack_write();
        }
    }

    /// Rebuilds the write-set index after entries were removed. The index exists exactly when
    /// the write set has more than `INDEX_AFTER` entries (`write_fast` relies on it: below that
    /// it pushes without updating an index).
    fn reindex(&mut self) {
        if self.index.is_some() {
            self.index = (self.writes.len() > INDEX_AFTER).then(|| {
                self.writes
                    .iter()
                    .enumerate()
                    .map(|(i, w)| (w.word as usize, i))
                    .collect()
            });
        }
    }

    fn discard_write(&mut self, addr: usize) {
        if self.filter & filter_bit(addr) == 0 {
            return;
        }
        if let Some(i) = self.find_write(addr) {
            let w = self.writes.remove(i);
            debug_assert!(!w.owned);
            if !self.branches.is_empty() {
                self.forget_undo_of(i, w.drop_box);
            }
            if self.inevitable {
                // Its orec stays locked until the end: harmless, and other words may share it.
            }
            if let Some(d) = w.drop_box {
                self.garbage.push((w.value, d));
            }
            self.reindex();
        }
    }

    // ----- or_else -----

    /// Drops every undo record (when the last branch ends, keeping what it did): the entries keep
    /// their current values, and the superseded `TBox` allocations go to `garbage`.
    fn settle_undo(&mut self) {
        for u in self.undo.drain(..) {
            if let Some(d) = self.writes.get(u.index).and_then(|w| w.drop_box) {
                self.garbage.push((u.value, d));
            }
        }
    }

    /// The write-set entry `i` (whose `TBox` allocations, if any, are freed with `drop_box`)
    /// was removed: its undo records go (their allocations to `garbage`), and the positions
    /// after it move down by one.
    fn forget_undo_of(&mut self, i: usize, drop_box: Option<DropFn>) {
        let mut k = 0;
        while k < self.undo.len() {
            let u = &mut self.undo[k];
            if u.index == i {
                if let Some(d) = drop_box {
                    self.garbage.push((u.value, d));
                }
                self.undo.remove(k);
                for b in &mut self.branches {
                    if b.undo > k {
                        b.undo -= 1;
                    }
                }
                continue;
            }
            if u.index > i {
                u.index -= 1;
            }
            k += 1;
        }
        for b in &mut self.branches {
            if b.writes > i {
                b.writes -= 1;
            }
        }
    }

    /// Starts an `or_else` branch.
    fn branch_start(&mut self) {
        self.branch_ids = self.branch_ids.wrapping_add(1).max(1);
        self.branches.push(Branch {
            writes: self.writes.len(),
            after: self.after.len(),
            undo: self.undo.len(),
            id: self.branch_ids,
        });
    }

    /// Ends the innermost branch, keeping what it did.
    fn branch_keep(&mut self) {
        if self.branches.pop().is_some() && self.branches.is_empty() {
            // No branch left to undo: the superseded values are garbage now.
            self.settle_undo();
        }
    }

    /// Ends the innermost branch, undoing its writes and after-commit actions. Its reads stay
    /// in the read set: the choice of the other branch depends on them.
    fn branch_undo(&mut self) {
        let Some(b) = self.branches.pop() else {
            return;
        };
        while self.undo.len() > b.undo {
            let Some(u) = self.undo.pop() else { break };
            let w = &mut self.writes[u.index];
            if let Some(d) = w.drop_box {
                self.garbage.push((w.value, d));
            }
            w.value = u.value;
            w.loc = u.loc;
            w.saved_by = u.saved_by;
        }
        for w in self.writes.drain(b.writes..) {
            debug_assert!(!w.owned);
            if let Some(d) = w.drop_box {
                self.garbage.push((w.value, d));
            }
            // An inevitable attempt keeps the orec locked until it ends: harmless.
        }
        // The filter may keep bits of the undone words: a false positive costs only a search.
        self.reindex();
        // Dropped in `release`, outside the transaction (captures may run one).
        self.dropped_actions.extend(self.after.drain(b.after..));
        // The outermost branch started with no undo record (records exist only while a branch
        // runs, and are settled when the last one ends), so none is left after it.
        debug_assert!(!self.branches.is_empty() || self.undo.is_empty());
    }

    // ----- inevitable -----

    /// Reads as the inevitable transaction: pin the orec, keep it pinned until the end.
    fn read_inevitable(&mut self, word: &AtomicU64, addr: usize, loc: SourceLocation) -> u64 {
        let (orec, _) = self.rt.orec(addr);
        let mut spin = Spin::new();
        loop {
            let o = spin.load(orec);
            if o & LOCKED != 0 {
                if o & PINNED != 0 && owner_of(o) == self.id {
                    // Locked by us for another word of the same orec: nobody else can write.
                    return word.load(Ordering::Acquire);
                }
                // A normal committer writing back: it never waits while holding locks.
                spin.spin_on(orec, o);
                continue;
            }
            if o & PINNED == 0 {
                // AcqRel: Acquire pairs with the Release of the last commit of this orec.
                if orec
                    .compare_exchange(o, o | PINNED, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err()
                {
                    spin.spin();
                    continue;
                }
                self.rt.orec_written();
                self.held.push(Held {
                    orec,
                    prev: o,
                    locked: false,
                });
            }
            // Pinned (by us: only the token holder pins): no commit can change the word now.
            let v = word.load(Ordering::Acquire);
            self.reads.push(ReadEntry {
                orec,
                version: o & !FLAGS,
                loc,
            });
            return v;
        }
    }

    /// Locks `orec` for the inevitable transaction (encounter time); waits out a committer.
    fn lock_inevitable(&mut self, orec: &'static AtomicU64) {
        let mut spin = Spin::new();
        loop {
            let o = spin.load(orec);
            if o & LOCKED != 0 {
                if o & PINNED != 0 && owner_of(o) == self.id {
                    return;
                }
                spin.spin_on(orec, o);
                continue;
            }
            let pinned_by_us = o & PINNED != 0;
            let slot = if pinned_by_us {
                self.held
                    .iter()
                    .position(|h| core::ptr::eq(h.orec, orec))
                    .unwrap_or(usize::MAX)
            } else {
                self.held.len()
            };
            let new = locked_word(self.id, slot, (o & WAITERS) | PINNED);
            // SeqCst, as a normal commit's lock CAS: Acquire pairs with the last release of the
            // orec, and a committer that read this word and validated it before this lock (it
            // comes before us in the serial order) must precede the lock in the SeqCst order, so
            // that readers who cover our stamp also see that committer's locks (see the
            // anti-dependency argument at the top of this file).
            if orec
                .compare_exchange(o, new, Ordering::SeqCst, Ordering::Relaxed)
                .is_err()
            {
                spin.spin();
                continue;
            }
            self.rt.orec_written();
            if pinned_by_us && slot != usize::MAX {
                // The version cannot have moved while pinned, but a `retry` waiter may have set
                // WAITERS since: take the value we just locked as the one to restore or to
                // check for waiters.
                self.held[slot].prev = o & !PINNED;
                self.held[slot].locked = true;
            } else {
                self.held.push(Held {
                    orec,
                    prev: o & !PINNED,
                    locked: true,
                });
            }
            return;
        }
    }

    /// Takes the inevitable token, waiting (an `INEVITABLE` pause) while someone else has it.
    fn take_token(&mut self, loc: Option<SourceLocation>) {
        loop {
            // AcqRel: Acquire pairs with the previous holder's Release when it gave the token
            // back (after releasing its orecs).
            match self.rt.inevitable.compare_exchange(
                0,
                self.id,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(owner) => {
                    let conflict = Conflict {
                        kind: ConflictKind::Inevitable,
                        this: loc,
                        other: None,
                        other_thread: Some(owner),
                    };
                    let t0 = self.pause_start(conflict);
                    self.rt.wait_token_free(self.id);
                    self.pause_end(t0, conflict);
                }
            }
        }
        self.inevitable = true;
        self.took_token = true;
        self.emit(EventKind::InevitableBegin);
    }

    fn give_back_token(&mut self) {
        // Release: hands our orec releases (done before this) to the next taker.
        self.rt.inevitable.store(0, Ordering::Release);
        self.inevitable = false;
        self.rt.inevitable_done.notify();
        self.emit(EventKind::InevitableEnd);
    }

    fn become_inevitable(&mut self, loc: SourceLocation) -> TxResult<()> {
        if let Some(a) = self.doomed {
            return Err(a);
        }
        if self.inevitable {
            self.user_inevitable = true;
            return Ok(());
        }
        self.take_token(Some(loc));
        // Pin every read at the version it was read at.
        let mut ok = true;
        'reads: for i in 0..self.reads.len() {
            let r = self.reads[i];
            let mut spin = Spin::new();
            loop {
                let o = spin.load(r.orec);
                if o & LOCKED != 0 {
                    spin.spin_on(r.orec, o);
                    continue;
                }
                if o & !FLAGS != r.version {
                    ok = false;
                    break 'reads;
                }
                if o & PINNED != 0 {
                    continue 'reads;
                }
                // AcqRel, as the pin of `read_inevitable`: Acquire pairs with the Release of the
                // last commit of this orec; the failure load is only retried.
                if r.orec
                    .compare_exchange(o, o | PINNED, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    self.rt.orec_written();
                    self.held.push(Held {
                        orec: r.orec,
                        prev: o,
                        locked: false,
                    });
                    continue 'reads;
                }
                spin.spin();
            }
        }
        if !ok {
            self.release_held(None);
            self.give_back_token();
            self.wants_inevitable = true;
            return Err(self.fail(ConflictKind::WriteRead, loc, None, None));
        }
        for i in 0..self.writes.len() {
            let orec = self.writes[i].orec;
            self.lock_inevitable(orec);
        }
        self.user_inevitable = true;
        Ok(())
    }

    /// Releases the inevitable transaction's orecs: locked ones get `new_version` (commit) or
    /// their previous value (rollback); pinned ones lose the pin. Returns whether a released
    /// orec had waiters.
    fn release_held(&mut self, new_version: Option<u64>) -> bool {
        let mut waiters = false;
        for h in self.held.drain(..) {
            if h.locked {
                waiters |= h.prev & WAITERS != 0;
                let v = match new_version {
                    Some(wv) => wv << SHIFT,
                    None => h.prev,
                };
                // Release: publishes the written-back words with the new version.
                h.orec.store(v, Ordering::Release);
                self.rt.orec_written();
            } else {
                // Release: pairs with readers' Acquire; keeps a concurrent WAITERS bit.
                h.orec.fetch_and(!PINNED, Ordering::Release);
                self.rt.orec_written();
            }
        }
        waiters
    }

    // ----- commit -----

    /// `commit`, with the read-only case (nothing to do: every read was valid at the snapshot)
    /// decided inline.
    #[inline(always)]
    fn commit_fast(&mut self) -> TxResult<bool> {
        if self.writes.is_empty() && self.doomed.is_none() && !self.inevitable {
            return Ok(true);
        }
        self.commit()
    }

    /// Commits; returns whether the attempt wrote nothing. On failure everything is already
    /// released.
    #[inline(never)]
    fn commit(&mut self) -> TxResult<bool> {
        if let Some(a) = self.doomed {
            return Err(a);
        }
        let read_only = self.writes.is_empty();
        if self.inevitable {
            self.commit_inevitable();
            return Ok(read_only);
        }
        if read_only {
            return Ok(true);
        }
        'again: loop {
            // Lock the write set.
            for i in 0..self.writes.len() {
                let orec = self.writes[i].orec;
                let mut spin = Spin::new();
                loop {
                    let o = spin.load(orec);
                    if o & LOCKED != 0 {
                        if o & PINNED == 0 && owner_of(o) == self.id {
                            break; // another word of ours shares this orec
                        }
                        if o & PINNED != 0 {
                            self.unlock_writes();
                            let loc = self.writes[i].loc;
                            self.pause_on(orec, o, loc);
                            continue 'again;
                        }
                        if spin.steps() < LOCK_SPINS {
                            spin.spin_on(orec, o);
                            continue;
                        }
                        self.unlock_writes();
                        let (loc, oi) = (self.writes[i].loc, self.writes[i].orec_index);
                        return Err(self.fail(
                            ConflictKind::WriteWrite,
                            loc,
                            Some(oi),
                            Some(owner_of(o)),
                        ));
                    }
                    if o & PINNED != 0 {
                        self.unlock_writes();
                        let loc = self.writes[i].loc;
                        self.pause_on(orec, o, loc);
                        continue 'again;
                    }
                    let new = locked_word(self.id, i, o & WAITERS);
                    // SeqCst (an AcqRel RMW, and in the single total order): Acquire pairs with
                    // the previous release of this orec; the lock is sequenced before our clock
                    // store, whose Release publishes it to readers; SeqCst orders it before our
                    // SeqCst validation loads for a concurrent committer (see below).
                    if orec
                        .compare_exchange(o, new, Ordering::SeqCst, Ordering::Relaxed)
                        .is_ok()
                    {
                        self.rt.orec_written();
                        let w = &mut self.writes[i];
                        w.prev = o;
                        w.owned = true;
                        break;
                    }
                    spin.spin();
                }
            }
            break;
        }
        // Validate every read now that the write set is locked. Two committers that each read
        // a word the other writes (write skew) lock (SeqCst RMW) and then validate (SeqCst
        // loads): in the single total order of SeqCst operations one of them validates after
        // the other's lock, sees it and aborts. There is no global clock RMW to order them.
        // Loom does not model SeqCst loads as such, only SeqCst fences: the model gets a fence
        // here, which is at least as strong. (The loom build's `orec_written` signal, a mutex,
        // also orders the two lock CASes, so the model checks that validation happens and
        // catches the skew, not this ordering itself; that rests on the argument above.)
        #[cfg(loom)]
        loom::sync::atomic::fence(Ordering::SeqCst);
        if !self.reads.is_empty()
            && let Err(a) = self.validate()
        {
            self.unlock_writes();
            return Err(a);
        }
        // Locked and validated: this is the commit's serialisation point. Stamp it with our
        // slot's next stamp (a Release store, after the locks, before any release).
        let wv = self.rt.next_stamp(self.slot);
        if self.sink.is_some() {
            // After validation (an attempt that fails it must still find the previous writer
            // of its own locked orecs in the table) and before the release that publishes it.
            for w in self.writes.iter().filter(|w| w.owned) {
                self.note_writer(w.orec_index, w.loc);
            }
        }
        self.write_back();
        // Our own slot is known up to our own commit (for the shared slot, the RMW acquired
        // the other sharers' earlier stamps too).
        self.seen[(self.slot & SLOT_MASK) as usize] = wv;
        let mut waiters = false;
        for w in self.writes.iter_mut() {
            if w.owned {
                waiters |= w.prev & WAITERS != 0;
                // Release: publishes the written-back words together with the new version.
                w.orec.store(wv << SHIFT, Ordering::Release);
                self.rt.orec_written();
                w.owned = false;
            }
        }
        if waiters {
            self.rt.commits.notify();
        }
        Ok(false)
    }

    /// Stores the redo log into the words (their orecs are locked by us) and retires replaced
    /// boxed values.
    #[inline(always)]
    fn write_back(&mut self) {
        for w in self.writes.iter_mut() {
            // SAFETY: `w.word` is valid until the attempt ends (see `WriteEntry::word`).
            let word = unsafe { &*w.word };
            // Relaxed: we hold the orec lock, so the last write of this word was by a commit
            // whose release we acquired when locking (only `TBox` words need the old value).
            #[cfg(not(loom))]
            let old = w.drop_box.map(|_| word.load(Ordering::Relaxed));
            // Release: pairs with readers' Acquire word load (see the module doc).
            word.store(w.value, Ordering::Release);
            #[cfg(not(loom))]
            if let (Some(old), Some(d), Some(g)) = (old, w.drop_box.take(), self.guard.as_ref()) {
                // SAFETY: `old` was published by a commit (or `TBox::new`) and the word no
                // longer holds it: an attempt that pins from now on and then reads the word
                // finds our lock or our new value, never `old`. Attempts that may still hold it
                // pinned before reading it, and the epoch frees it only after they unpin. `d`
                // frees a `Box<T>` of this very `TBox<T>`'s type.
                // Freed through `drop_retired`, which holds it back while this thread is in a
                // transaction (collection may run inside this thread's own `pin()`).
                unsafe { g.defer_unchecked(move || drop_retired(old, d)) };
            }
        }
    }

    fn commit_inevitable(&mut self) {
        let wrote = self.held.iter().any(|h| h.locked);
        let wv = if wrote {
            self.write_back();
            // Our locks were taken at encounter time, before this store (see `clocks`).
            let wv = self.rt.next_stamp(self.slot);
            self.seen[(self.slot & SLOT_MASK) as usize] = wv;
            Some(wv)
        } else {
            None
        };
        if self.sink.is_some() {
            for w in &self.writes {
                self.note_writer(w.orec_index, w.loc);
            }
        }
        let waiters = self.release_held(wv);
        self.writes.clear();
        self.give_back_token();
        if waiters {
            self.rt.commits.notify();
        }
    }

    /// Releases the locks of a failed commit, restoring the orecs' previous values.
    fn unlock_writes(&mut self) {
        for w in self.writes.iter_mut() {
            if w.owned {
                // Release: nothing was written; pairs with the next locker's Acquire.
                w.orec.store(w.prev, Ordering::Release);
                self.rt.orec_written();
                w.owned = false;
            }
        }
    }

    /// Undoes an attempt that will not commit: releases locks, pins and the token; frees pending
    /// boxed values.
    fn rollback(&mut self) {
        // Every way out of `or_else` ends its branch, a panic out of `first` included (its
        // guard), so no branch outlives the body.
        debug_assert!(self.branches.is_empty() && self.undo.is_empty());
        self.unlock_writes();
        if self.inevitable {
            self.release_held(None);
            self.give_back_token();
        }
        self.free_pending();
    }

    #[inline(always)]
    fn guard_is_none(&self) -> bool {
        #[cfg(not(loom))]
        return self.guard.is_none();
        #[cfg(loom)]
        return true;
    }

    /// Empties the write set; its unpublished `TBox` allocations go to `garbage`.
    #[inline]
    fn free_pending(&mut self) {
        if self.writes.is_empty() && self.filter == 0 {
            return;
        }
        for w in self.writes.drain(..) {
            if let Some(d) = w.drop_box {
                self.garbage.push((w.value, d));
            }
        }
        self.filter = 0;
        if self.index.is_some() {
            self.index = None;
        }
    }

    /// Frees `garbage` in place: only for the thread-exit destructor, where no transaction can
    /// start from a `Drop` any more (see `release` for the normal path).
    fn free_garbage(&mut self) {
        for (v, d) in self.garbage.drain(..) {
            // SAFETY: superseded or discarded allocations of this attempt, never published; the
            // body has returned, so no `read_box` reference to them is alive.
            unsafe { d(v) };
        }
    }

    /// Blocks until one of the words read by this (rolled-back) attempt changes.
    fn wait_for_change(rt: &Runtime, reads: &[(&'static AtomicU64, u64)]) {
        rt.commits.wait_until(|| {
            reads.iter().any(|&(orec, version)| {
                // SeqCst RMW: either it precedes a committer's lock CAS (which then sees
                // WAITERS and notifies after releasing), or it follows it and returns the lock
                // or the new version. Setting the bit again on a later check is harmless.
                let o = orec.fetch_or(WAITERS, Ordering::SeqCst);
                o & LOCKED != 0 || o & !FLAGS != version
            })
        });
    }
}

/// Runs a committed transaction's after-commit actions, then gives the emptied list back to the
/// state to keep its capacity. Out of line: most commits have no actions.
#[cold]
#[inline(never)]
fn run_after_commit(state: *mut State, mut after: Vec<Box<dyn FnOnce()>>) {
    for f in after.drain(..) {
        f();
    }
    // SAFETY: no `Tx` and no reference to the state is alive here (the transaction has ended;
    // actions that ran transactions of their own ended them too, leaving `after` empty).
    let slot = unsafe { &mut (*state).after };
    if slot.capacity() == 0 {
        *slot = after;
    }
}

/// Frees what the ended attempt left in `garbage` and unpins the epoch, with no reference to
/// the state alive: the values' `Drop` code may run anything, including `forget_pending` (which
/// finds `current` null and does nothing) or, through an epoch collection, other frees.
#[inline]
fn release(ctx: &ThreadCtx, p: *mut State) {
    // SAFETY: as below; a read-only look for the common case of nothing to do.
    let nothing = unsafe {
        (*p).garbage.is_empty() && (*p).dropped_actions.is_empty() && (*p).guard_is_none()
    } && !ctx.late_pending.get();
    if !nothing {
        release_slow(p);
    }
}

/// `release` between two attempts of one transaction: the thread is briefly not in a
/// transaction, so that a freed value's `Drop` may run one of its own (it uses the same state,
/// which `end` has emptied, and leaves it empty; the next attempt's `begin` resets the rest).
#[inline]
fn release_between_attempts(ctx: &ThreadCtx, p: *mut State) {
    ctx.active.set(false);
    // A transaction run by a freed value's `Drop` starts with its own abort count and must not
    // reset ours (the progress guarantee counts this transaction's aborts).
    let aborts = ctx.aborts.replace(0);
    release(ctx, p);
    ctx.aborts.set(aborts);
    ctx.active.set(true);
}

#[inline(never)]
fn release_slow(p: *mut State) {
    // Unpin first: nothing freed below needs the guard (unpublished values, dropped actions, and
    // values whose grace period is over), and a panic in one of their `Drop`s must not leave the
    // epoch pinned.
    #[cfg(not(loom))]
    // SAFETY: `p` is this thread's state (see `Tx::st`); the reference lives only for this
    // statement, and no other reference to the state is alive in the caller.
    drop(unsafe { (*p).guard.take() });
    loop {
        // SAFETY: `p` is this thread's state (see `Tx::st`); the reference lives only for this
        // statement, and no other reference to the state is alive in the caller.
        let mut garbage = core::mem::take(unsafe { &mut (*p).garbage });
        if garbage.is_empty() {
            // Put the (empty) vector back to keep its capacity.
            // SAFETY: as above.
            unsafe { (*p).garbage = garbage };
            break;
        }
        for (v, d) in garbage.drain(..) {
            // SAFETY: allocations of the ended attempt that were never published (superseded,
            // discarded or rolled back); the body has returned, so no `read_box` reference to
            // them is alive.
            unsafe { d(v) };
        }
        // SAFETY: as above. A `Drop` that ran just now and started a transaction of its own
        // released that one's garbage itself; loop in case anything was added.
        unsafe { (*p).garbage = garbage };
    }
    // SAFETY: as above.
    let actions = core::mem::take(unsafe { &mut (*p).dropped_actions });
    drop(actions);
    #[cfg(not(loom))]
    drop_late();
}

/// An address at or below every live local of the calling function: the stack pointer, less
/// the 128-byte red zone that a leaf function may use below it on x86-64 (System V). A local's
/// address would not do: locals of one frame are laid out in any order, so a `TVar` of the same
/// frame may sit below it.
#[inline(always)]
fn stack_low() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let sp: usize;
        // SAFETY: copies the stack pointer into a register; touches no memory and no flags.
        unsafe {
            core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags))
        };
        sp.saturating_sub(128)
    }
    #[cfg(target_arch = "aarch64")]
    {
        let sp: usize;
        // SAFETY: as above (AArch64 has no red zone in the standard ABI; 128 bytes also covers
        // Apple's).
        unsafe {
            core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags))
        };
        sp.saturating_sub(128)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        // Elsewhere, a local of this (inlined) function: an approximation that may miss a
        // variable laid out below it in the same frame.
        let here = 0u8;
        core::ptr::addr_of!(here) as usize
    }
}

#[cold]
#[inline(never)]
fn body_stack_write() -> ! {
    panic!(
        "stm: a transaction wrote a TVar that lives on its own body's stack; it would be gone \
         before the commit. Create shared TVars outside the transaction."
    )
}

#[inline(always)]
fn filter_bit(addr: usize) -> u64 {
    1u64 << ((addr >> 3) & 63)
}

impl Drop for State {
    fn drop(&mut self) {
        // Normally empty by now; a defensive net for an unexpected unwind inside the runtime.
        self.unlock_writes();
        if !self.held.is_empty() {
            self.release_held(None);
        }
        if self.inevitable {
            self.give_back_token();
        }
        self.free_pending();
        self.free_garbage();
        // Under loom the runtime is a per-execution lazy static that may already be gone when
        // thread-locals are dropped at the end of an execution; it is discarded with its slots.
        #[cfg(not(loom))]
        self.rt.release_slot(self.slot);
    }
}

// ---------------------------------------------------------------------------------------------
// Running transactions
// ---------------------------------------------------------------------------------------------

/// Clears the thread's "in a transaction" flag on every exit, unwinding included.
struct Active<'a>(&'a ThreadCtx);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.current.set(core::ptr::null_mut());
        self.0.active.set(false);
    }
}

#[cold]
fn nested() -> ! {
    panic!(
        "stm: atomically/inevitably called inside a transaction; nested transactions are not \
         supported: pass the outer `&mut Tx` down instead"
    )
}

fn backoff(aborts: u32) {
    let mut spin = Spin::new();
    for _ in 0..aborts.min(12) {
        spin.spin();
    }
}

enum Mode {
    Normal,
    /// `inevitably`: inevitable from the start, by the user's request.
    Inevitable,
}

/// Runs the body once. Never inlined, so that the body's locals live in a frame below
/// `execute`'s (the stack check of `Tx::write` relies on it: a `TVar` on the body's stack is gone
/// at commit time, and must not be mistaken for one of `execute`'s live locals); generic, so that
/// the body is inlined here rather than called through a `dyn` pointer.
#[inline(never)]
fn run_body<R, E, F: FnMut(&mut Tx) -> Result<R, TxError<E>>>(
    body: &mut F,
    tx: &mut Tx,
) -> Result<R, TxError<E>> {
    body(tx)
}

/// The loop shared by every entry point. Returns the body's value or the user's error.
///
/// Never inlined: its frame must lie entirely below the caller's (whose `TVar`s outlive the
/// transaction) and above `run_body`'s (whose do not), for the stack check of `Tx::write`.
#[inline(never)]
fn execute<R, E, F: FnMut(&mut Tx) -> Result<R, TxError<E>>>(
    body: &mut F,
    mode: Mode,
) -> Result<R, E> {
    CTX.with(|ctx| {
        if ctx.active.get() {
            nested();
        }
        ctx.active.set(true);
        let active = Active(ctx);
        let marker = 0u8;
        // A local of this never-inlined frame: everything above it outlives the attempt, and the
        // body's frames are below it. (Not the body closure's address: a closure that captures
        // nothing may sit at any dangling address.)
        let frame = core::ptr::addr_of!(marker) as usize;
        // SAFETY: the state lives in this thread's context; `active` (set above, cleared by
        // `Active::drop`) makes this the only `execute` on the thread using it, and nested calls
        // panic before reaching here. It is reached only through this raw pointer (and
        // `ctx.current`, derived from it) until `execute` returns.
        let state: *mut State =
            unsafe { &mut *ctx.state.get() }.get_or_insert_with(|| State::new(runtime(), ctx.id));
        // The runtime, from the state: `runtime()` (a `OnceLock`) is read once per thread.
        // SAFETY: as above; a shared read of one field.
        let rt = unsafe { (*state).rt };
        let mut tx = Tx { s: state };
        let mut force_inevitable = matches!(mode, Mode::Inevitable);
        loop {
            let from_start = force_inevitable || ctx.aborts.get() >= rt.abort_limit;
            {
                let s = tx.st();
                s.begin(frame);
                if let Some(t) = s.start.filter(|_| s.sink.is_some()) {
                    s.emit_at(
                        t,
                        EventKind::Start {
                            inevitable: from_start,
                        },
                    );
                }
                if from_start {
                    s.take_token(None);
                    s.user_inevitable = matches!(mode, Mode::Inevitable);
                }
            }
            // `current` is set only while user code of the body runs (see `forget_pending`).
            tx.st().in_body = true;
            ctx.current.set(state);
            let r = catch_unwind(AssertUnwindSafe(|| run_body(body, &mut tx)));
            ctx.current.set(core::ptr::null_mut());
            let s = tx.st();
            s.in_body = false;
            let r = match r {
                Ok(r) => r,
                Err(payload) => {
                    s.rollback();
                    ctx.counters.bump(stats::PANICS);
                    s.emit_abort(AbortCause::Panic);
                    s.end();
                    ctx.aborts.set(0);
                    drop(active);
                    release(ctx, state);
                    resume_unwind(payload);
                }
            };
            match r {
                Ok(v) => match s.commit_fast() {
                    Ok(read_only) => {
                        let inev = s.took_token;
                        ctx.counters.bump(if read_only {
                            stats::READ_ONLY_COMMITS
                        } else {
                            stats::UPDATE_COMMITS
                        });
                        if inev {
                            ctx.counters.bump(stats::INEVITABLE_RUNS);
                        }
                        if s.sink.is_some() {
                            let now = Timestamp::now();
                            let duration = s.start.map(|t| now - t).unwrap_or_default();
                            s.emit_at(
                                now,
                                EventKind::Commit {
                                    read_only,
                                    duration,
                                },
                            );
                        }
                        // Published values now belong to their TBoxes: not freed by `end`.
                        s.writes.clear();
                        let after = if s.after.is_empty() {
                            None
                        } else {
                            Some(core::mem::take(&mut s.after))
                        };
                        s.end();
                        ctx.aborts.set(0);
                        // Not in a transaction any more: a value's `Drop` run by `release` may
                        // start one of its own.
                        drop(active);
                        release(ctx, state);
                        if let Some(after) = after {
                            run_after_commit(state, after);
                        }
                        return Ok(v);
                    }
                    Err(a) => {
                        s.rollback();
                        s.count_abort(ctx, a);
                    }
                },
                Err(TxError::User(e)) => {
                    s.rollback();
                    ctx.counters.bump(stats::CANCELS);
                    s.emit_abort(AbortCause::Cancel);
                    s.end();
                    ctx.aborts.set(0);
                    drop(active);
                    release(ctx, state);
                    return Err(e);
                }
                Err(TxError::Abort(a)) => {
                    // A body may return an `Abort` it did not get from this attempt; trust the
                    // attempt's own verdict first.
                    let a = s.doomed.unwrap_or(a);
                    if a.cause == AbortCause::Retry {
                        let why = if s.user_inevitable {
                            Some("stm: retry() in an inevitable transaction: it cannot be rolled back")
                        } else if s.reads.is_empty() {
                            Some("stm: retry() in a transaction that read nothing would wait forever")
                        } else {
                            None
                        };
                        s.rollback();
                        if let Some(why) = why {
                            s.end();
                            drop(active);
                            release(ctx, state);
                            panic!("{why}");
                        }
                        ctx.counters.bump(stats::RETRIES);
                        s.emit_abort(AbortCause::Retry);
                        ctx.aborts.set(0);
                        force_inevitable = false;
                        // What to wait on: the read set, copied out of the state (a `Drop` run
                        // by the release below may run a transaction of its own on it, even one
                        // that retries).
                        let mut wait_on = core::mem::take(&mut s.wait_on);
                        wait_on.clear();
                        wait_on.extend(s.reads.iter().map(|r| (r.orec, r.version)));
                        s.end();
                        let rt = s.rt;
                        // Unpin the epoch (and free the attempt's garbage) before sleeping: a
                        // pinned sleeper would stop all reclamation. The thread is briefly not
                        // in a transaction, so a freed value's `Drop` may start one.
                        release_between_attempts(ctx, state);
                        State::wait_for_change(rt, &wait_on);
                        // Keep the vector's capacity for the next retry.
                        tx.st().wait_on = wait_on;
                        continue;
                    }
                    s.rollback();
                    s.count_abort(ctx, a);
                }
            }
            // A failed become_inevitable asks for an inevitable rerun.
            force_inevitable = matches!(mode, Mode::Inevitable) || s.wants_inevitable;
            s.end();
            release_between_attempts(ctx, state);
            backoff(ctx.aborts.get());
        }
    })
}

impl State {
    fn emit_abort(&mut self, cause: AbortCause) {
        if self.sink.is_some() {
            let now = Timestamp::now();
            let lost = self.start.map(|t| now - t).unwrap_or_default();
            let conflict = if matches!(cause, AbortCause::Conflict(_)) {
                self.conflict
            } else {
                None
            };
            self.emit_at(
                now,
                EventKind::Abort {
                    cause,
                    conflict,
                    lost,
                },
            );
        }
    }

    fn count_abort(&mut self, ctx: &ThreadCtx, a: Abort) {
        let i = match a.cause {
            AbortCause::Conflict(ConflictKind::WriteWrite) => stats::ABORT_WW,
            AbortCause::Conflict(ConflictKind::Inevitable) => stats::ABORT_INEV,
            _ => stats::ABORT_WR,
        };
        ctx.counters.bump(i);
        ctx.aborts.set(ctx.aborts.get().saturating_add(1));
        self.emit_abort(a.cause);
    }
}

/// Runs `f` as a transaction until it commits, and returns its value.
///
/// `f` may run several times (each failed attempt is rolled back, invisibly); after too many
/// conflicts in a row (16 by default, see [`Config`](crate::Config)) the next attempt runs as
/// the inevitable transaction, so every transaction commits eventually.
///
/// # Panics
///
/// A panic in `f` rolls the attempt back (no write of it is ever seen, its after-commit actions
/// are dropped, every lock it held is released) and then propagates to the caller. Calling
/// `atomically` (or `inevitably`) inside a transaction panics: pass the `&mut Tx` down instead.
///
/// ```
/// use stm_core::{TVar, atomically};
/// let a = TVar::new(100i64);
/// let b = TVar::new(0i64);
/// atomically(|tx| {
///     let x = tx.read(&a)?;
///     tx.write(&a, x - 10)?;
///     tx.modify(&b, |y| y + 10)?;
///     Ok(())
/// });
/// assert_eq!(a.load() + b.load(), 100);
/// ```
#[inline]
pub fn atomically<R>(mut f: impl FnMut(&mut Tx) -> TxResult<R>) -> R {
    let mut body = |tx: &mut Tx| f(tx).map_err(TxError::<core::convert::Infallible>::Abort);
    match execute(&mut body, Mode::Normal) {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// Like [`atomically`], but the body may give up with its own error: `Err(TxError::User(e))`
/// rolls the attempt back (no write is kept, no after-commit action runs) and returns `Err(e)`.
///
/// ```
/// use stm_core::{TVar, TxError, try_atomically};
/// let balance = TVar::new(50u64);
/// let r: Result<(), &str> = try_atomically(|tx| {
///     let b = tx.read(&balance)?;
///     tx.write(&balance, b.wrapping_sub(80))?;
///     if b < 80 { return Err(TxError::User("insufficient funds")); }
///     Ok(())
/// });
/// assert_eq!(r, Err("insufficient funds"));
/// assert_eq!(balance.load(), 50);
/// ```
#[inline]
pub fn try_atomically<R, E>(mut f: impl FnMut(&mut Tx) -> Result<R, TxError<E>>) -> Result<R, E> {
    execute(&mut f, Mode::Normal)
}

/// Runs `f` exactly once, as the inevitable transaction: it never aborts, so it may do I/O.
///
/// Waits while another transaction is inevitable; other transactions keep running and committing
/// unless they touch what `f` reads or writes. Inside `f` every operation returns `Ok`.
///
/// # Panics
///
/// If `f` calls [`Tx::retry`] (an inevitable transaction cannot wait for others), or panics.
///
/// ```
/// use stm_core::{TVar, inevitably};
/// let lines = TVar::new(0u32);
/// let n = inevitably(|tx| {
///     let n = tx.modify(&lines, |n| n + 1).unwrap();
///     println!("line {n}");                      // I/O: this body runs once
///     n
/// });
/// assert_eq!(n, 1);
/// ```
pub fn inevitably<R>(f: impl FnOnce(&mut Tx) -> R) -> R {
    let mut f = Some(f);
    let mut body = |tx: &mut Tx| match f.take() {
        Some(f) => Ok(f(tx)),
        // Unreachable: an inevitable attempt commits; kept total instead of panicking.
        None => Err(TxError::<core::convert::Infallible>::Abort(
            Abort::conflict(ConflictKind::Inevitable),
        )),
    };
    match execute(&mut body, Mode::Inevitable) {
        Ok(r) => r,
        Err(never) => match never {},
    }
}
