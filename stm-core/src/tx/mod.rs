//! The transaction's hot path: begin, read, write, commit, rollback.
//!
//! This file is the protocol; `runtime.rs` documents the orec encoding and the clocks. Beside it:
//! `run.rs` (the attempt loop and the entry points `atomically`, `try_atomically`,
//! `inevitably`), `context.rs` (the per-thread context), `inevitable.rs` (the inevitable mode),
//! `branch.rs` (`or_else`), `retry.rs` (blocking `retry`), `reclaim.rs` (freeing `TBox` values
//! and what an attempt leaves behind), `events.rs` (the event hook and conflict records).
//!
//! # Invariants
//!
//! - **Every word in the redo log is alive and in place until the attempt has committed or
//!   rolled back.** The types give it: `Tx<'t, 'env>` is branded with the attempt `'t`, which
//!   the body cannot name and which outlives its call; `write`, `modify` and `write_box` take
//!   `&'t` references, so the variable stays borrowed (not movable, not droppable) until the
//!   attempt loop in `run.rs` has finished the commit. No run-time check is involved.
//! - A `read_box` reference (`&'t T`) points to an allocation that lives until the attempt ends:
//!   a published one is retired through the epoch this attempt pinned before loading it; a
//!   pending one of this attempt is freed only by `release`, after the body has returned.
//! - The state is the thread's own and is reached only through `Tx::st` or, between attempts,
//!   by the attempt loop: never two references at once (see `Tx::st`).
//! - At most one attempt per thread (`ThreadCtx::active`); nested `atomically` panics.
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
//! - **Read, unlogged** (an attempt without a read set, `State::unlogged`): the same loads and
//!   checks, and nothing is logged. A word newer than the snapshot: before the attempt's first
//!   read it extends (nothing to validate); after, it refreshes `seen` and stops
//!   (`NeedsReadSet`), and the body runs again with a read set. So does a write, a `retry` that
//!   must wait, and `become_inevitable`. Opaque because it is the logged protocol with the
//!   read-set appends left out and every use of the read set replaced by a stop
//!   (`docs/design.md`, "Opacity of an unlogged attempt").
//! - **Commit, read-only**: nothing to do; every read was valid at the snapshot.
//! - **Commit, update**: lock each written orec by CAS (SeqCst); a lock held by another committer:
//!   spin, then abort (`WRITE_WRITE`); pinned or held by the inevitable transaction: release
//!   everything, wait (an `INEVITABLE` pause), lock again. Validate the read set (SeqCst loads;
//!   `WRITE_READ` on failure). Take the slot's next stamp `wv` (Release store). Write the words
//!   back with Release and release each orec with `store(wv << 3, Release)`, in one backward
//!   pass that stores every word of an orec before releasing it (see `commit_update`).
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

use crate::error::{Abort, AbortCause, ConflictKind, TxError, TxResult};
use crate::hook::{Conflict, Event, EventKind, Installed, SourceLocation, Timestamp, sink};
use crate::runtime::{
    FLAGS, INDEX_NONE, LOCKED, PINNED, Runtime, SHIFT, SLOT_MASK, SLOTS, WAITERS, index_of,
    locked_word, owner_of, runtime,
};
use crate::stats::{self, Counters};
use crate::sync::{AtomicU64, Ordering, Spin};
use crate::tvar::TVar;
use crate::word::{self, Word};
use core::cell::{Cell, UnsafeCell};
use core::marker::PhantomData;
use core::panic::Location;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;

mod branch;
mod context;
mod events;
#[cfg(feature = "async")]
mod future;
mod inevitable;
mod reclaim;
mod retry;
mod run;

use branch::*;
use context::*;
use inevitable::*;
use reclaim::*;

pub use context::thread_id;
#[cfg(feature = "async")]
pub(crate) use future::WakerTable;
#[cfg(feature = "async")]
pub use future::{TxFuture, atomically_async, try_atomically_async};
pub use run::{ReadTx, atomically, atomically_read, inevitably, try_atomically};

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

/// The orecs (and versions) a retrying attempt read: what it waits on.
type WaitList = Vec<(&'static AtomicU64, u64)>;

/// Word address -> write-set position.
type AddrMap = HashMap<usize, usize, BuildHasherDefault<AddrHasher>>;

struct WriteEntry {
    /// The word to store into at commit. Valid until the attempt ends: `Tx::write` takes
    /// `&'t TVar`, borrowed for the whole attempt (see `Tx`).
    word: *const AtomicU64,
    orec: &'static AtomicU64,
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
    // The flags that `begin` resets, together from here on (it stores them in fewer, wider
    // stores: measured 2 instructions per transaction).
    doomed: Option<Abort>,
    inevitable: bool,
    /// Between `begin` and `end`. Still set at the next `begin` only if a panic inside the
    /// runtime itself left an attempt unfinished (`recover`).
    in_attempt: bool,
    /// Inevitable because the user asked (`inevitably`, `become_inevitable`): may have done I/O.
    user_inevitable: bool,
    /// This attempt held the inevitable token at some point.
    took_token: bool,
    /// `become_inevitable` failed: run the next attempt inevitable from its start.
    wants_inevitable: bool,
    /// The attempt has more to finish than its read and write sets: after-commit actions,
    /// values to free (`garbage`), a pinned epoch, a write-set index, the inevitable token, an
    /// event sink, wakers. Cleared by `begin`, set by whatever adds one of those; a commit
    /// without it ends the short way (`end_plain`, no `release`).
    extra: bool,
    /// This attempt keeps no read set (an inferred read-only attempt, see `run::execute`): each
    /// read is checked against the snapshot and forgotten; whatever would consult the read set
    /// (a write, a `retry` that waits, `become_inevitable`, an extension after a read) stops the
    /// attempt with `NeedsReadSet` instead. `filter` is all ones meanwhile, so that every write
    /// leaves `write_fast` for `write_word`, and `read_fast` reaches its unlogged branch
    /// without a test on the logged path.
    unlogged: bool,
    /// This unlogged attempt has read a word: its snapshot can no longer move forward.
    touched: bool,
    /// Why this unlogged attempt stopped with `NeedsReadSet`: `true` for a write, `retry` or
    /// `become_inevitable` (the site goes into the table); `false` for a word newer than its
    /// snapshot (only this transaction's next attempt keeps a read set). Reset by the attempt
    /// loop when it has read it (`stopped_unlogged`).
    needs_log: bool,
    id: u64,
    /// This thread's clock slot (`Runtime::clocks`); 0 is the shared one.
    slot: u64,
    index: Option<AddrMap>,
    sink: Option<&'static Installed>,
    after: Vec<Box<dyn FnOnce()>>,
    /// Superseded `TBox` allocations of this attempt (never published) and the `Arc` clones that
    /// `Tx::hold` kept, freed when it ends.
    garbage: Vec<(u64, DropFn)>,
    held: Vec<Held>,
    /// After-commit actions of attempts that did not commit, dropped by `release`.
    dropped_actions: Vec<Box<dyn FnOnce()>>,
    /// Where a retrying attempt keeps its read set while it waits (reused between retries).
    wait_on: WaitList,
    /// The `or_else` branches running, innermost last: where each one started.
    branches: Vec<Branch>,
    /// Write-set entries that a running `or_else` branch overwrote, with their values from
    /// before, oldest first: what undoing the branch restores.
    undo: Vec<Undo>,
    /// The last `Branch::id` handed out.
    branch_ids: u32,
    #[cfg(not(loom))]
    guard: Option<crossbeam_epoch::Guard>,
    /// When this attempt started, if it is timed (see `hook::Timing`).
    start: Option<Timestamp>,
    conflict: Option<Conflict>,
    /// Attempts still to be timed whatever the sample says (after a conflict or an install).
    time_all: u32,
    /// Untimed attempts left before the next sampled one.
    untimed_left: u32,
    /// xorshift state for drawing `untimed_left` (never 0).
    rng: u32,
    /// Async waiters of the orecs the last commit released, woken once it has ended.
    #[cfg(feature = "async")]
    to_wake: Vec<core::task::Waker>,
    /// Call sites of `atomically` that needed a read set lately (see `run::execute`).
    sites: [Site; SITES],
}

/// Entries of the per-thread table of call sites (a power of two).
const SITES: usize = 64;
/// Read-only commits of a site after which it runs without a read set again.
const SITE_DECAY: u32 = 64;

/// A call site of `atomically` that needed a read set: its attempts keep one until `left` more
/// of them have committed without writing.
#[derive(Clone, Copy)]
struct Site {
    /// The address of the site's `Location`; 0 for a free entry, and once `left` is 0 (so that
    /// the lookup is one comparison).
    key: usize,
    left: u32,
}

/// The table entry of a call site: direct-mapped by the `Location`'s address, bits 3 to 8. A
/// `Location` is 24 bytes (8-aligned) in read-only data; when the compiler places a module's
/// `Location`s side by side, 64 of them take 64 different entries (24 / 8 = 3 is odd). Two sites
/// that write and share an entry evict each other: while both are called, each call of either
/// may pay a rerun (correct, only slower; `Stats::unlogged_reruns` shows it).
#[inline(always)]
fn site_index(site: SourceLocation) -> usize {
    (site as *const Location<'static> as usize >> 3) & (SITES - 1)
}

/// A running transaction, handed to the body of [`atomically`] as `&mut Tx<'t, 'env>`.
///
/// Every operation returns [`TxResult`]: `Err` means the attempt is doomed and the body should
/// leave with `?`; the runtime rolls it back and runs the body again.
///
/// # The two lifetimes
///
/// `'t` is the attempt: it starts before the body is called and ends after the attempt has
/// committed or rolled back. The body gets a `Tx<'t, 'env>` for a `'t` it cannot name, in the
/// style of [`std::thread::scope`], and the operations that leave an address in the redo log
/// ([`write`](Tx::write), [`modify`](Tx::modify), [`write_box`](Tx::write_box)) or hand out a
/// reference into the value ([`read_box`](Tx::read_box)) take `&'t TVar` / `&'t TBox`: the
/// variable stays borrowed, so alive and in place, until the commit has stored into it. `'env`
/// is everything the body borrows from outside (`'env: 't`). Variables borrowed from outside the
/// body work as they are; a variable that the body owns, a local of the body, or a reference
/// behind a lock guard is refused by the borrow checker, because it could be moved or freed
/// before the commit:
///
/// ```compile_fail,E0597
/// use stm_core::{TVar, atomically};
/// atomically(|tx| {
///     let local = TVar::new(0u64);
///     tx.write(&local, 1) // `local` is gone before the commit stores into it
/// });
/// ```
///
/// A shared variable that lives in an [`Arc`] the body only has a clone of is made to outlive
/// the attempt with [`hold`](Tx::hold). A `Tx` cannot leave its body:
///
/// ```compile_fail
/// let mut leaked = None;
/// stm_core::atomically(|tx| { leaked = Some(tx); Ok(()) });
/// ```
///
/// Helpers that only read take any `&TVar`; helpers that write name the attempt's lifetime:
///
/// ```
/// use stm_core::{TVar, Tx, TxResult, atomically};
/// fn total(tx: &Tx<'_, '_>, vars: &[TVar<u64>]) -> TxResult<u64> {
///     vars.iter().map(|v| tx.read(v)).sum()
/// }
/// fn bump<'t>(tx: &Tx<'t, '_>, v: &'t TVar<u64>) -> TxResult<u64> {
///     tx.modify(v, |n| n + 1)
/// }
/// let vars = [TVar::new(1), TVar::new(2)];
/// assert_eq!(atomically(|tx| { bump(tx, &vars[0])?; total(tx, &vars) }), 4);
/// ```
pub struct Tx<'t, 'env: 't> {
    /// The thread's reusable state (in its `ThreadCtx`). A raw pointer, so that the `&mut Tx`
    /// handed to the body never asserts exclusive access to the state (the `or_else` panic
    /// guard also reaches it); it also makes `Tx` neither `Send` nor `Sync`.
    s: *mut State,
    /// The attempt, invariant: a covariant `'t` could be shortened through `&Tx` to the
    /// lifetime of a body-local borrow, which is exactly what the brand must refuse.
    _attempt: PhantomData<&'t mut &'t ()>,
    /// What the body borrows from its environment, invariant as in `std::thread::Scope`.
    _env: PhantomData<&'env mut &'env ()>,
}

impl<'t, 'env> Tx<'t, 'env> {
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    fn st(&self) -> &mut State {
        // SAFETY: `s` points to this thread's `State`, which lives in its `ThreadCtx` for as long
        // as the thread, and `execute` builds a `Tx` only while it holds the thread's `active`
        // flag, so no other `Tx` points to it. `Tx` is neither `Send` nor `Sync`, so only this
        // thread uses it. No method keeps this reference across a call into user code (`modify`
        // reads, lets go, calls `f`, then writes; `or_else` lets go before each branch) or across
        // another call of `st()`: a method that calls `st()` more than once uses each reference
        // only until the next call.
        unsafe { &mut *self.s }
    }

    /// Reads `var`. `#[track_caller]`: the conflict log names this line.
    ///
    /// A read leaves no address behind (the read set keeps the word's lock, which is static),
    /// so `var` may be borrowed for just this call.
    ///
    /// ```
    /// use stm_core::{TVar, atomically};
    /// let (a, b) = (TVar::new(1u64), TVar::new(2u64));
    /// // Both reads come from one consistent snapshot.
    /// assert_eq!(atomically(|tx| Ok(tx.read(&a)? + tx.read(&b)?)), 3);
    /// ```
    #[track_caller]
    // `always`: with its unlogged branch `read_fast` is twice as long, and under `#[inline]` the
    // compiler left `Tx::read` out of line (measured: a ten-read transaction ran 851 instructions
    // instead of 626; `benches/examples/txcount.rs`).
    #[inline(always)]
    pub fn read<T: Word>(&self, var: &TVar<T>) -> TxResult<T> {
        let loc = Location::caller();
        let bits = self.st().read_fast(&var.word, loc)?;
        // SAFETY: the bits came from `to_bits::<T>` (the redo log or the word itself).
        Ok(unsafe { word::from_bits(bits) })
    }

    /// Writes `value` to `var` (visible to other threads when the transaction commits).
    ///
    /// `var` is borrowed for the attempt `'t`: the commit stores into it after the body has
    /// returned.
    ///
    /// ```
    /// use stm_core::{TVar, atomically};
    /// let (from, to) = (TVar::new(10i64), TVar::new(0i64));
    /// atomically(|tx| {
    ///     let n = tx.read(&from)?;
    ///     tx.write(&from, 0)?;
    ///     tx.write(&to, n) // both writes become visible together, at the commit
    /// });
    /// assert_eq!((from.load(), to.load()), (0, 10));
    /// ```
    #[track_caller]
    #[inline]
    pub fn write<T: Word>(&self, var: &'t TVar<T>, value: T) -> TxResult<()> {
        let loc = Location::caller();
        self.st().write_fast(&var.word, word::to_bits(value), loc)
    }

    /// Reads `var`, writes `f(value)` back and returns the new value.
    ///
    /// ```
    /// use stm_core::{TVar, atomically};
    /// let hits = TVar::new(41u64);
    /// assert_eq!(atomically(|tx| tx.modify(&hits, |n| n + 1)), 42);
    /// ```
    #[track_caller]
    #[inline]
    pub fn modify<T: Word>(&self, var: &'t TVar<T>, f: impl FnOnce(T) -> T) -> TxResult<T> {
        let loc = Location::caller();
        let bits = self.st().read_fast(&var.word, loc)?;
        // SAFETY: as in `read`.
        let new = f(unsafe { word::from_bits::<T>(bits) });
        self.st().write_fast(&var.word, word::to_bits(new), loc)?;
        Ok(new)
    }

    /// Reads a [`TBox`](crate::TBox): a reference valid for the rest of the attempt, so that
    /// `TVar`s inside the value can be written.
    ///
    /// ```
    /// use stm_core::{TBox, TVar, atomically};
    /// struct Account { owner: String, balance: TVar<i64> }
    /// let acct = TBox::new(Account { owner: "ann".into(), balance: TVar::new(5) });
    /// let owner = atomically(|tx| {
    ///     let a = tx.read_box(&acct)?; // borrowed until the attempt ends
    ///     tx.modify(&a.balance, |b| b + 1)?;
    ///     Ok(a.owner.clone())
    /// });
    /// assert_eq!(owner, "ann");
    /// assert_eq!(acct.with(|a| a.balance.load()), 6);
    /// ```
    #[cfg(not(loom))]
    #[track_caller]
    pub fn read_box<T: Send + Sync + 'static>(&self, b: &'t crate::TBox<T>) -> TxResult<&'t T> {
        let loc = Location::caller();
        self.pin_epoch();
        let bits = self.st().read_word(&b.word, loc)?;
        // SAFETY: the word holds a live `Box<T>` allocation: either a pending one of this
        // attempt (freed only when the attempt ends, after the body and so after every use of
        // 't), or a published one, which is retired through the epoch that this attempt pinned
        // before loading it and stays pinned until the attempt ends; `TBox::drop` needs `&mut`,
        // which the borrow 't of `b` excludes until the attempt has ended. (A pending allocation replaced or undone by an
        // `or_else` branch goes to `garbage` too, freed only after the body.)
        Ok(unsafe { &*(bits as usize as *const T) })
    }

    /// Writes a new value into a [`TBox`](crate::TBox). The replaced value is freed once no
    /// transaction can still see it; later reads in this transaction see the new one.
    ///
    /// ```
    /// use stm_core::{TBox, atomically};
    /// let log = TBox::new(Vec::<String>::new());
    /// atomically(|tx| {
    ///     let mut next = tx.read_box(&log)?.clone();
    ///     next.push("started".into());
    ///     tx.write_box(&log, next)?;
    ///     assert_eq!(tx.read_box(&log)?.len(), 1);
    ///     Ok(())
    /// });
    /// assert_eq!(log.load(), ["started"]);
    /// ```
    #[cfg(not(loom))]
    #[track_caller]
    pub fn write_box<T: Send + Sync + 'static>(
        &self,
        b: &'t crate::TBox<T>,
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

    /// Runs `f` once, after this transaction commits (never if it aborts). Use it for I/O.
    ///
    /// An attempt that is rolled back and run again drops the actions it registered, so `f`
    /// runs once whatever the number of attempts.
    ///
    /// ```
    /// use stm_core::{TVar, atomically};
    /// use std::sync::mpsc;
    /// let balance = TVar::new(100u64);
    /// let (log, lines) = mpsc::channel();
    /// atomically(|tx| {
    ///     let b = tx.modify(&balance, |b| b - 30)?;
    ///     let log = log.clone();
    ///     tx.after_commit(move || log.send(format!("balance now {b}")).unwrap());
    ///     Ok(())
    /// });
    /// assert_eq!(lines.try_recv().unwrap(), "balance now 70");
    /// ```
    pub fn after_commit(&self, f: impl FnOnce() + 'static) {
        let s = self.st();
        s.after.push(Box::new(f));
        s.extra = true;
    }

    /// Keeps `value` alive until this attempt has committed or rolled back, and lends it for
    /// the attempt: the way to write `TVar`s that live in an [`Arc`] of which the body (or a
    /// `'static` task) only holds a clone, or that another thread may drop at any time.
    ///
    /// Costs one small allocation per call; the clone is dropped after the attempt ends.
    ///
    /// ```
    /// use stm_core::{TVar, atomically};
    /// use std::collections::HashMap;
    /// use std::sync::{Arc, Mutex};
    ///
    /// let registry: Mutex<HashMap<&str, Arc<TVar<u64>>>> = Mutex::new(HashMap::new());
    /// registry.lock().unwrap().insert("hits", Arc::new(TVar::new(0)));
    /// atomically(|tx| {
    ///     let counter = registry.lock().unwrap()["hits"].clone();
    ///     // Another thread may replace the entry now: the transaction keeps its own clone.
    ///     let counter = tx.hold(counter);
    ///     tx.modify(counter, |n| n + 1)
    /// });
    /// assert_eq!(registry.lock().unwrap()["hits"].load(), 1);
    /// ```
    pub fn hold<T: ?Sized + 'static>(&self, value: Arc<T>) -> &'t T {
        let p: *const T = Arc::as_ptr(&value);
        // The clone goes to the attempt's garbage, which `release` frees after the commit or
        // rollback (a thin pointer to a box, so that unsized `T` fits the list's `u64`).
        let kept = Box::into_raw(Box::new(value)) as usize as u64;
        let s = self.st();
        s.garbage.push((kept, drop_held::<T>));
        s.extra = true;
        // SAFETY: `p` points into the `Arc`'s allocation, which the clone just moved into the
        // garbage list keeps alive (an `Arc` never moves its value) until `release` frees it,
        // after the attempt has committed or rolled back, so after every use of 't (the body
        // has returned; nothing typed with 't outlives it). Shared access only, as `Arc` gives.
        unsafe { &*p }
    }
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
            in_attempt: false,
            extra: false,
            unlogged: false,
            touched: false,
            needs_log: false,
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
            time_all: 0,
            untimed_left: 0,
            // Any odd number will do; the thread id spreads the threads' sequences apart.
            rng: (id as u32).wrapping_mul(0x9E37_79B9) | 1,
            took_token: false,
            wants_inevitable: false,
            #[cfg(feature = "async")]
            to_wake: Vec::new(),
            sites: [Site { key: 0, left: 0 }; SITES],
        }
    }

    /// Starts an attempt: a fresh snapshot. Every set is empty (see `end`). `unlogged`: the
    /// attempt loop would like it to run without a read set; it does unless it starts inevitable
    /// or an event sink is installed (the conflict log names the reads a conflict hit).
    #[inline(always)]
    fn begin(&mut self, inevitable_from_start: bool, unlogged: bool) {
        // A panic inside the runtime itself left an attempt unfinished: clean it up, and end
        // this attempt the long way (`recover` may leave garbage or a pinned epoch behind).
        let recovered = self.in_attempt;
        if recovered {
            self.recover();
        }
        debug_assert!(
            self.reads.is_empty()
                && self.writes.is_empty()
                && self.held.is_empty()
                && self.after.is_empty()
                && !self.inevitable
        );
        self.in_attempt = true;
        // The snapshot `seen` is where the previous attempts of this thread left it, not a
        // fresh read of every clock: each entry was loaded (Acquire) before this attempt
        // started, which is all the snapshot argument needs (see the module doc), and a word
        // newer than it makes the attempt extend. Starting touches no shared cache line.
        self.inevitable = false;
        // (Stores to neighbouring bytes: `doomed`, `inevitable`, `unlogged` and `touched` are
        // reset by one store.)
        self.unlogged = false;
        self.touched = false;
        self.user_inevitable = false;
        self.doomed = None;
        self.took_token = false;
        self.wants_inevitable = false;
        let sink = sink();
        if unlogged && !inevitable_from_start && sink.is_none() {
            self.unlogged = true;
            // Every write goes to `write_word`, which stops the attempt (see `unlogged`); `end`
            // clears the filter.
            self.filter = !0;
        }
        if let Some(inst) = sink {
            if !self.sink.is_some_and(|s| core::ptr::eq(s, inst)) {
                // A sink was installed since this thread's last attempt.
                self.time_all = inst.timing.after_conflict;
            }
            // An inevitable run is always timed (`hook::Timing`): it holds the token, which the
            // log accounts for.
            self.start =
                (inevitable_from_start || self.timed(inst.timing.sample)).then(Timestamp::now);
            self.conflict = None;
        }
        self.sink = sink;
        // Events to emit at the end: not the short way.
        self.extra = sink.is_some() || recovered;
    }

    /// Whether the attempt now starting is timed (see `hook::Timing`).
    #[inline(always)]
    fn timed(&mut self, sample: u32) -> bool {
        if self.time_all > 0 {
            self.time_all -= 1;
            return true;
        }
        if self.untimed_left > 0 {
            self.untimed_left -= 1;
            return false;
        }
        if sample > 1 {
            // xorshift32; the gap is uniform in 0..2 * sample - 1 (mean sample - 1).
            let mut x = self.rng;
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            self.rng = x;
            self.untimed_left = x % (sample.saturating_mul(2) - 1);
        }
        true
    }

    /// Only after a panic inside the runtime itself, between an attempt's start and its end:
    /// undoes what that attempt still held before starting afresh. Cold and out of line: inlined
    /// into `begin`, its loops were laid out inside the attempt loop's hot path (measured:
    /// `read_only_1` 1.15x the build before the branded `Tx`, 0.97x with this).
    #[cold]
    #[inline(never)]
    fn recover(&mut self) {
        self.rollback();
        self.end();
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
        // Read (and cleared) by `stopped_unlogged` before `end` when the attempt stopped; an
        // attempt that ended otherwise (a panic, a user error) must not hand it to the next.
        self.needs_log = false;
        self.in_attempt = false;
    }

    /// `end` for a committed attempt without `extra`: nothing but the read and write sets to
    /// empty (their entries own nothing: no `TBox` value, since a `TBox` write pins the epoch),
    /// and nothing for `release` to do but `ThreadCtx::late`.
    #[inline(always)]
    fn end_plain(&mut self) {
        debug_assert!(!self.extra && self.after.is_empty() && self.index.is_none());
        debug_assert!(self.garbage.is_empty() && self.dropped_actions.is_empty());
        debug_assert!(self.guard_is_none() && self.held.is_empty() && !self.inevitable);
        debug_assert!(self.writes.iter().all(|w| !w.owned && w.drop_box.is_none()));
        debug_assert!(self.branches.is_empty() && self.undo.is_empty());
        self.writes.clear();
        self.filter = 0;
        self.reads.clear();
        self.in_attempt = false;
    }

    // ----- read -----

    /// The common read, inlined into `Tx::read`: a normal, healthy attempt reading a word it
    /// has not written, unlocked and not newer than the snapshot. Everything else goes to
    /// `read_word`. The three loads and their orderings are those of `read_word`.
    ///
    /// An unlogged attempt fails the filter test (its filter is all ones, no word of it is in
    /// the write set) and passes the `unlogged` one instead: the same loads and checks, nothing
    /// logged. The logged path pays one test of a byte of the state after the loads.
    #[inline(always)]
    fn read_fast(&mut self, word: &AtomicU64, loc: SourceLocation) -> TxResult<u64> {
        let addr = word as *const AtomicU64 as usize;
        if self.doomed.is_none() && !self.inevitable {
            if self.filter & filter_bit(addr) == 0 {
                let (orec, _) = self.rt.orec(addr);
                if let Some((v, o1)) = self.load_at_snapshot(orec, word) {
                    self.reads.push(ReadEntry {
                        orec,
                        version: o1 & !FLAGS,
                        loc,
                    });
                    return Ok(v);
                }
            } else if self.unlogged {
                let (orec, _) = self.rt.orec(addr);
                if let Some((v, _)) = self.load_at_snapshot(orec, word) {
                    // Valid at the snapshot, which stays fixed from now on: nothing to log.
                    self.touched = true;
                    return Ok(v);
                }
            }
        }
        self.read_word(word, loc)
    }

    /// The three loads of a fast read and their test: `Some((value, orec value))` when the
    /// word's orec was unlocked, the same before and after the word was loaded, and stamped by
    /// a commit the snapshot covers; `None` sends the read to `read_word`.
    #[inline(always)]
    fn load_at_snapshot(&self, orec: &AtomicU64, word: &AtomicU64) -> Option<(u64, u64)> {
        // SeqCst: Acquire pairs with the Release store that last released this orec, so the word
        // load below sees that commit's write-back; SeqCst puts it in the single total order
        // with the committers' lock CAS (see the protocol at the top of this module).
        let o1 = orec.load(Ordering::SeqCst);
        // Acquire: pairs with the write-back's Release store of the word, and keeps the second
        // orec load after this one.
        let v = word.load(Ordering::Acquire);
        // SeqCst, as `o1`: a lock taken or released since `o1` changes it (the seqlock test).
        let o2 = orec.load(Ordering::SeqCst);
        let stamp = o1 >> SHIFT;
        (o1 == o2 && o1 & LOCKED == 0 && stamp <= self.seen[(stamp & SLOT_MASK) as usize])
            .then_some((v, o1))
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
                if self.unlogged && self.touched {
                    // Without a read set the earlier reads cannot be validated: move the
                    // snapshot forward for the next attempt and stop this one.
                    self.refresh(stamp & SLOT_MASK);
                    return Err(self.stop_unlogged(false));
                }
                // (An unlogged attempt that has read nothing yet extends with nothing to
                // validate: as if it had started after the clock loads.)
                self.extend(stamp & SLOT_MASK)?;
                continue;
            }
            if self.unlogged {
                self.touched = true;
            } else {
                self.reads.push(ReadEntry { orec, version, loc });
            }
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
        self.refresh(slot);
        self.validate()
    }

    /// The first half of `extend`: loads the clock of `slot` (and of every slot in use, when
    /// that costs no more than the validation, or when there is nothing to validate) into the
    /// snapshot.
    fn refresh(&mut self, slot: u64) {
        let used = self.rt.slots_used().min(SLOTS);
        // An unlogged attempt has nothing to validate (it refreshes before its first read, or
        // for its next attempt): every slot, so that only commits from now on can stop it.
        let slots = if self.unlogged || used <= self.reads.len().max(4) {
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
    }

    /// Stops an unlogged attempt with `NeedsReadSet` (see `needs_log`); the next attempt keeps a
    /// read set either way.
    #[cold]
    fn stop_unlogged(&mut self, needs_log: bool) -> Abort {
        debug_assert!(self.unlogged && self.doomed.is_none());
        let a = Abort {
            cause: AbortCause::NeedsReadSet,
        };
        self.needs_log = needs_log;
        self.doomed = Some(a);
        a
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
            let (orec, _) = self.rt.orec(addr);
            self.push_write(word, orec, bits, loc, None);
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
        bits: u64,
        loc: SourceLocation,
        drop_box: Option<DropFn>,
    ) {
        self.writes.push(WriteEntry {
            word,
            orec,
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
                self.extra = true;
            }
            return Err(a);
        }
        if self.unlogged {
            if let Some(d) = drop_box {
                self.garbage.push((bits, d));
                self.extra = true;
            }
            // The commit must validate what was read: rerun with a read set.
            return Err(self.stop_unlogged(true));
        }
        let addr = word as *const AtomicU64 as usize;
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
        self.push_write(word, orec, bits, loc, drop_box);
        let n = self.writes.len();
        if let Some(ix) = &mut self.index {
            ix.insert(addr, n - 1);
        } else if n > INDEX_AFTER {
            self.extra = true;
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
            self.extra = true;
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

    // ----- commit -----

    /// `commit`, with the read-only case (nothing to do: every read was valid at the snapshot)
    /// decided inline.
    #[inline(always)]
    fn commit_fast(&mut self) -> TxResult<bool> {
        if self.doomed.is_none() && !self.inevitable {
            if self.writes.is_empty() {
                return Ok(true);
            }
            return self.commit_update().map(|()| false);
        }
        self.commit()
    }

    /// Commits; returns whether the attempt wrote nothing. On failure everything is already
    /// released.
    #[cold]
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
        self.commit_update().map(|()| false)
    }

    /// The commit of a normal, healthy attempt that wrote something (see the protocol in the
    /// module doc).
    #[inline(never)]
    fn commit_update(&mut self) -> TxResult<()> {
        debug_assert!(self.doomed.is_none() && !self.inevitable && !self.writes.is_empty());
        // One word written is the common case (a read-modify-write): the same code, with the
        // loops over the write set known to run once.
        if self.writes.len() == 1 {
            self.commit_update_n::<true>()
        } else {
            self.commit_update_n::<false>()
        }
    }

    /// The write set, as a slice known to have one entry when `ONE` (the caller checked).
    #[inline(always)]
    fn writes_n<const ONE: bool>(writes: &mut [WriteEntry]) -> &mut [WriteEntry] {
        if ONE { &mut writes[..1] } else { writes }
    }

    #[inline(always)]
    fn commit_update_n<const ONE: bool>(&mut self) -> TxResult<()> {
        self.lock_writes::<ONE>()?;
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
        if !self.reads_current::<ONE>()
            && let Err(a) = self.validate()
        {
            // `validate` checks again, and names the conflict. (If it passes, the write set
            // was locked before its loads too: a validation as good as the first.)
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
                self.note_writer(self.orec_index_of(w.orec), w.loc);
            }
        }
        // Our own slot is known up to our own commit (for the shared slot, the RMW acquired
        // the other sharers' earlier stamps too).
        self.seen[(self.slot & SLOT_MASK) as usize] = wv;
        // Write back and release in one pass, backwards: the entry that holds an orec's lock
        // is the first of the entries on that orec (`lock_writes` locks in order; the later
        // ones find the lock already ours), so going backwards every word of an orec is stored
        // before the orec is released.
        #[cfg(not(loom))]
        let guard = self.guard.as_ref();
        let mut waiters = false;
        for w in Self::writes_n::<ONE>(&mut self.writes).iter_mut().rev() {
            write_back_one(
                w,
                #[cfg(not(loom))]
                guard,
            );
            // (The only entry of a one-word write set holds its lock.)
            if ONE || w.owned {
                debug_assert!(w.owned);
                waiters |= w.prev & WAITERS != 0;
                // Release: publishes the written-back words of this orec (stored above, in
                // program order before it) together with the new version.
                crate::sync::release_orec(w.orec, wv << SHIFT);
                self.rt.orec_written();
                w.owned = false;
            }
        }
        if waiters {
            self.rt.commits.notify();
            #[cfg(feature = "async")]
            {
                self.collect_wakers();
                self.extra = true; // wakers to wake
            }
        }
        Ok(())
    }

    /// Locks the orec of every write-set entry (the first entry on each orec holds its lock).
    /// On failure nothing is held. The common case in line: every orec free, each CAS
    /// succeeding the first time; anything else continues in `lock_writes_from`.
    #[inline(always)]
    fn lock_writes<const ONE: bool>(&mut self) -> TxResult<()> {
        let id = self.id;
        let mut stopped = None;
        for (i, w) in Self::writes_n::<ONE>(&mut self.writes)
            .iter_mut()
            .enumerate()
        {
            // SeqCst: as in `lock_writes_from` (this is its first load and CAS for entry `i`).
            let o = w.orec.load(Ordering::SeqCst);
            if o & (LOCKED | PINNED) == 0 {
                let new = locked_word(id, i, o & WAITERS);
                // SeqCst: see `lock_writes_from`.
                if w.orec
                    .compare_exchange(o, new, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
                {
                    self.rt.orec_written();
                    w.prev = o;
                    w.owned = true;
                    continue;
                }
            } else if o & (LOCKED | PINNED) == LOCKED && owner_of(o) == id {
                continue; // another word of ours shares this orec
            }
            stopped = Some(i);
            break;
        }
        match stopped {
            None => Ok(()),
            Some(i) => self.lock_writes_from(i),
        }
    }

    /// `lock_writes` from entry `first` on, with every case: spinning on another committer's
    /// lock, pausing on the inevitable transaction's (releasing everything, then locking again
    /// from the start), giving up.
    #[cold]
    #[inline(never)]
    fn lock_writes_from(&mut self, first: usize) -> TxResult<()> {
        let mut first = first;
        'again: loop {
            for i in core::mem::take(&mut first)..self.writes.len() {
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
                        let (loc, oi) = (self.writes[i].loc, self.orec_index_of(orec));
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
                    // SeqCst validation loads for a concurrent committer (see `commit`).
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
            return Ok(());
        }
    }

    /// The common case of `validate` at commit, with the write set locked: whether every read
    /// orec still holds the version it was read at, or is locked by this attempt, which locked
    /// it at that version. `false` sends the commit to `validate`, which looks again and says
    /// why.
    #[inline(always)]
    fn reads_current<const ONE: bool>(&self) -> bool {
        if ONE && let [w] = &self.writes[..] {
            // One word written (the usual read-modify-write): the only orec we hold is its, and
            // we locked it at `prev`, so a read of it is current exactly when it was read at
            // `prev` (no need to load it); any other orec is current when unlocked at its version.
            // One branch per read: a read of our own orec compares `prev` instead of what the
            // load returns (our lock); `!FLAGS` keeps `LOCKED`, so a locked orec differs.
            let (mine, prev) = (w.orec, w.prev);
            return self.reads.iter().all(|r| {
                // SeqCst: as in `validate`, whose loads these are.
                let o = r.orec.load(Ordering::SeqCst);
                let o = if core::ptr::eq(r.orec, mine) { prev } else { o };
                o & !FLAGS == r.version
            });
        }
        self.reads.iter().all(|r| {
            // SeqCst: as in `validate`, whose loads these are.
            let o = r.orec.load(Ordering::SeqCst);
            if o & LOCKED == 0 {
                o & !FLAGS == r.version
            } else {
                o & PINNED == 0
                    && owner_of(o) == self.id
                    && self.prev_of_own_lock(o, r.orec) & !FLAGS == r.version
            }
        })
    }

    /// Stores the redo log into the words (their orecs are locked by us) and retires replaced
    /// boxed values.
    #[inline(always)]
    fn write_back(&mut self) {
        #[cfg(not(loom))]
        let guard = self.guard.as_ref();
        for w in self.writes.iter_mut() {
            write_back_one(
                w,
                #[cfg(not(loom))]
                guard,
            );
        }
    }

    /// Releases the locks of a failed commit, restoring the orecs' previous values.
    fn unlock_writes(&mut self) {
        for w in self.writes.iter_mut() {
            if w.owned {
                // Release: nothing was written; pairs with the next locker's Acquire.
                crate::sync::release_orec(w.orec, w.prev);
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
}

/// Stores one redo-log entry into its word (whose orec is locked by us) and retires the boxed
/// value it replaces.
#[inline(always)]
fn write_back_one(w: &mut WriteEntry, #[cfg(not(loom))] guard: Option<&crossbeam_epoch::Guard>) {
    // SAFETY: `w.word` is valid until the attempt ends (see `WriteEntry::word`).
    let word = unsafe { &*w.word };
    // Relaxed: we hold the orec lock, so the last write of this word was by a commit whose
    // release we acquired when locking (only `TBox` words need the old value).
    #[cfg(not(loom))]
    let old = w.drop_box.map(|_| word.load(Ordering::Relaxed));
    // Release: pairs with readers' Acquire word load (see the module doc).
    word.store(w.value, Ordering::Release);
    #[cfg(not(loom))]
    if let Some(old) = old
        && let (Some(d), Some(g)) = (w.drop_box.take(), guard)
    {
        // SAFETY: `old` was published by a commit (or `TBox::new`) and the word no longer holds
        // it: an attempt that pins from now on and then reads the word finds our lock or our
        // new value, never `old`. Attempts that may still hold it pinned before reading it, and
        // the epoch frees it only after they unpin. `d` frees a `Box<T>` of this very
        // `TBox<T>`'s type. Freed through `drop_retired`, which holds it back while this thread
        // is in a transaction (collection may run inside this thread's own `pin()`).
        unsafe { g.defer_unchecked(move || drop_retired(old, d)) };
    }
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
