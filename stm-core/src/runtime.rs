//! Global state: the version clocks, the versioned-lock table, the inevitable token, wait events.
//!
//! # Versioned locks (orecs)
//!
//! Every word maps to one orec, `table[(w ^ (w >> bits)) & mask]` with `w = address >> 3`. An orec is one `AtomicU64`:
//!
//! ```text
//! unlocked: stamp << 3 | PINNED? | WAITERS?            (bit 0 clear)
//! locked:   index << 40 | owner << 3 | PINNED? | WAITERS? | LOCKED
//! ```
//!
//! - `LOCKED`: a committer (or the inevitable transaction) owns every word of this orec. `owner` is
//!   the runtime id of its thread; `index` is where the owner keeps the orec's previous value (its
//!   write-set entry, or its held-orec entry when inevitable), so it can validate its own reads.
//! - `PINNED`: the inevitable transaction read a word of this orec (unlocked: readers may still
//!   read, nobody may lock it) or holds it locked (`LOCKED | PINNED`: long-held, so waiters park
//!   instead of spinning).
//! - `WAITERS`: a transaction blocked in `retry` read a word of this orec; a committer that finds
//!   the bit in the value it locked wakes the waiters after releasing.
//!
//! `stamp` names the commit that last wrote the orec: `count << SLOT_BITS | slot`, the `count`-th
//! commit stamped by clock slot `slot` (see `Runtime::clocks`). The initial stamp 0 is
//! "before every commit".
//!
//! Invariants: the stamps of one slot only grow; a word is written only while its orec is `LOCKED` by the
//! writer; a normal committer never waits while it holds a lock (it spins a bounded number of
//! times, or releases everything first); only the holder of the inevitable token sets `PINNED`.

use crate::sync::{AtomicU64, Event, Ordering};
use crossbeam_utils::CachePadded;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, AtomicU64 as StdAtomicU64};
use std::sync::{Mutex as StdMutex, PoisonError};

pub(crate) const LOCKED: u64 = 1;
pub(crate) const WAITERS: u64 = 2;
pub(crate) const PINNED: u64 = 4;
/// Bits that do not change the identity of an unlocked version.
pub(crate) const FLAGS: u64 = WAITERS | PINNED;
pub(crate) const SHIFT: u32 = 3;
const OWNER_BITS: u32 = 37;
const OWNER_MASK: u64 = (1 << OWNER_BITS) - 1;
const INDEX_SHIFT: u32 = SHIFT + OWNER_BITS;
/// Index values from here on mean "search for it".
pub(crate) const INDEX_NONE: u64 = (1 << (64 - INDEX_SHIFT)) - 1;

/// log2 of the number of version-clock slots (one per thread, see `Runtime::clocks`).
#[cfg(not(loom))]
pub(crate) const SLOT_BITS: u32 = 10;
/// Under loom, three owned slots: every model thread owns one. (With one owned slot, so that a
/// model's second thread shares slot 0, loom 0.7.3 trips its own internal assertion
/// `assert_ne!(mo_i, mo_j)` in `rt/atomic.rs`, marked "TODO: this sometimes fails" there; the
/// shared slot is exercised by the `more_threads_than_version_clocks` stress test instead.)
#[cfg(loom)]
pub(crate) const SLOT_BITS: u32 = 2;
/// Number of clock slots: slot 0 is shared (by RMW), the others are owned by one thread each.
pub(crate) const SLOTS: usize = 1 << SLOT_BITS;
/// The slot of a stamp is `stamp & SLOT_MASK`.
pub(crate) const SLOT_MASK: u64 = SLOTS as u64 - 1;
/// The difference between two consecutive stamps of one slot.
pub(crate) const STAMP_STEP: u64 = 1 << SLOT_BITS;

#[inline]
pub(crate) const fn locked_word(owner: u64, index: usize, flags: u64) -> u64 {
    let idx = if (index as u64) < INDEX_NONE {
        index as u64
    } else {
        INDEX_NONE
    };
    LOCKED | flags | ((owner & OWNER_MASK) << SHIFT) | (idx << INDEX_SHIFT)
}

#[inline]
pub(crate) const fn owner_of(o: u64) -> u64 {
    (o >> SHIFT) & OWNER_MASK
}

#[inline]
pub(crate) const fn index_of(o: u64) -> u64 {
    o >> INDEX_SHIFT
}

/// Tuning of the runtime, fixed before the first transaction (see [`configure`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// log2 of the number of versioned locks (default 20: one million locks, 8 MiB). More locks,
    /// fewer false conflicts between unrelated words that hash to the same lock.
    pub lock_table_bits: u32,
    /// Consecutive aborts after which a transaction's next attempt runs inevitable (default 16).
    pub abort_limit: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            lock_table_bits: 20,
            abort_limit: 16,
        }
    }
}

impl Config {
    /// The default configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`Config::lock_table_bits`] (accepted range 4..=28).
    pub fn lock_table_bits(mut self, bits: u32) -> Self {
        self.lock_table_bits = bits;
        self
    }

    /// Sets [`Config::abort_limit`] (at least 1).
    pub fn abort_limit(mut self, n: u32) -> Self {
        self.abort_limit = n;
        self
    }
}

/// Why [`configure`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A transaction already ran (or `configure` was already called): the runtime is fixed.
    AlreadyStarted,
    /// `lock_table_bits` outside 4..=28 or `abort_limit` of 0.
    OutOfRange,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConfigError::AlreadyStarted => f.write_str(
                "the STM runtime is already running; configure it before the first transaction",
            ),
            ConfigError::OutOfRange => {
                f.write_str("lock_table_bits must be in 4..=28 and abort_limit at least 1")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where committers note the source line and thread of their last write to each orec, so that a
/// reader aborted by that write can name it. Written and read only while an event sink is
/// installed; plain diagnostics (a stale entry names an older writer), hence `Relaxed` and `std`
/// atomics even under loom. Entries are written before the orec's releasing store, so a reader
/// that acquires the new version sees the entry of that commit or a later one.
pub(crate) struct SideTable {
    pub(crate) loc: Box<[AtomicPtr<core::panic::Location<'static>>]>,
    pub(crate) thread: Box<[StdAtomicU64]>,
}

pub(crate) struct Runtime {
    /// The version clocks, one cache line each: `clocks[s]` holds the last stamp of slot `s`
    /// (initially `s`, "count 0"). A thread owns one slot (`acquire_slot`) and stamps each
    /// commit with its slot's next stamp: a Relaxed load (it is the only writer) and a Release
    /// store, after locking and validating, before releasing its orecs. Slot 0 is shared by the
    /// threads that found no free slot; they advance it with `fetch_add` (AcqRel). Readers load
    /// a slot with Acquire when they meet a newer stamp of it (extension): a load that returns
    /// `c` synchronises with the commit that stored `c` (or, for slot 0, with every commit of
    /// the release sequence up to `c`), whose locks were taken before that store, so every later
    /// orec load of the reader sees the lock or the release of each commit of that slot stamped
    /// `<= c`. No cache line is written by every committer: threads that commit disjoint data
    /// share nothing.
    /// (An array, not a slice: indexing it by `slot & SLOT_MASK` needs no bounds check.)
    pub(crate) clocks: Box<[CachePadded<AtomicU64>; SLOTS]>,
    /// Free exclusive slots (1..SLOTS), taken by a thread's first transaction and given back
    /// when the thread exits. Outside the protocol (taken once per thread), so a std mutex.
    free_slots: StdMutex<Vec<u64>>,
    /// One more than the highest slot ever handed out: the slots an extension may refresh. A
    /// hint outside the protocol (a stale value only means fewer slots refreshed), so a std
    /// atomic, Relaxed.
    slots_used: StdAtomicU64,
    orecs: Box<[AtomicU64]>,
    mask: usize,
    /// log2 of the table size.
    bits: u32,
    /// Thread id of the inevitable transaction, 0 when none. CAS with AcqRel to take it, store
    /// with Release to give it back (pairs with the next taker's Acquire, handing over the
    /// released orecs too).
    pub(crate) inevitable: CachePadded<AtomicU64>,
    /// Notified when the inevitable transaction releases its orecs and the token.
    pub(crate) inevitable_done: Event,
    /// Notified by commits that released an orec with `WAITERS` set.
    pub(crate) commits: Event,
    side: OnceLock<SideTable>,
    pub(crate) abort_limit: u32,
    /// Futures waiting in `retry` (feature `async`), by orec: see `tx/future.rs`.
    #[cfg(feature = "async")]
    pub(crate) wakers: crate::sync::Mutex<crate::tx::WakerTable>,
    /// Under loom only: signalled after every orec change, so lock waiters can block.
    #[cfg(loom)]
    changed: Event,
}

impl Runtime {
    pub(crate) fn new(config: Config) -> Self {
        let n = 1usize << config.lock_table_bits;
        Runtime {
            clocks: (0..SLOTS as u64)
                .map(|s| CachePadded::new(AtomicU64::new(s)))
                .collect::<Box<[_]>>()
                .try_into()
                .unwrap_or_else(|_| unreachable!("SLOTS clocks")),
            // Popped from the back: the lowest slots first.
            free_slots: StdMutex::new((1..SLOTS as u64).rev().collect()),
            slots_used: StdAtomicU64::new(1),
            orecs: (0..n).map(|_| AtomicU64::new(0)).collect(),
            mask: n - 1,
            bits: config.lock_table_bits,
            inevitable: CachePadded::new(AtomicU64::new(0)),
            inevitable_done: Event::new(),
            commits: Event::new(),
            side: OnceLock::new(),
            abort_limit: config.abort_limit,
            #[cfg(feature = "async")]
            wakers: crate::sync::Mutex::new(Default::default()),
            #[cfg(loom)]
            changed: Event::new(),
        }
    }

    /// The orec of the word at `addr`.
    #[inline]
    pub(crate) fn orec(&self, addr: usize) -> (&AtomicU64, usize) {
        // Consecutive words within a table-sized region get consecutive orecs (arrays of TVars
        // stay dense in the table); the high bits are folded in, so that objects at the same
        // offset in different regions (per-thread heap arenas are 64 MiB aligned) do not share
        // orecs. Two words share an orec only by a hash collision: a false conflict, never an
        // error.
        let w = addr >> 3;
        let i = (w ^ (w >> self.bits)) & self.mask;
        debug_assert!(i < self.orecs.len());
        // SAFETY: `orecs` has `mask + 1` entries (both set in `new` from the same power of
        // two) and `i <= mask`.
        (unsafe { self.orecs.get_unchecked(i) }, i)
    }

    /// An exclusive clock slot for a new thread, or the shared slot 0 when all are taken.
    pub(crate) fn acquire_slot(&self) -> u64 {
        let slot = self
            .free_slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or(0);
        self.slots_used
            .fetch_max(slot + 1, std::sync::atomic::Ordering::Relaxed);
        slot
    }

    /// How many slots (from 0) have ever been handed out (see `slots_used`).
    #[inline]
    pub(crate) fn slots_used(&self) -> usize {
        self.slots_used.load(std::sync::atomic::Ordering::Relaxed) as usize
    }

    /// Gives back a slot taken by `acquire_slot` (its clock keeps its value: stamps of a slot
    /// never repeat, whoever owns it). The mutex orders the old owner's last clock store before
    /// the new owner's first Relaxed load of it.
    #[cfg_attr(loom, allow(dead_code))] // see `State::drop`
    pub(crate) fn release_slot(&self, slot: u64) {
        if slot != 0 {
            self.free_slots
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(slot);
        }
    }

    /// The next stamp of `slot`, for a commit that holds its locks and has validated its reads.
    /// Stored with Release before the commit releases any orec (see `clocks`).
    #[inline]
    pub(crate) fn next_stamp(&self, slot: u64) -> u64 {
        let c = &self.clocks[(slot & SLOT_MASK) as usize];
        if slot == 0 {
            // AcqRel: Release as for the exclusive slots; Acquire so that the stamp, as a
            // snapshot of this slot, covers the other sharers' earlier commits (their locks).
            c.fetch_add(STAMP_STEP, Ordering::AcqRel) + STAMP_STEP
        } else {
            // Relaxed load: this thread is the slot's only writer (see `release_slot`).
            let s = c.load(Ordering::Relaxed) + STAMP_STEP;
            // Release: publishes our locks to readers that Acquire-load the slot.
            c.store(s, Ordering::Release);
            s
        }
    }

    /// Called after every change of an orec; a no-op outside loom (see `Spin::spin_on`).
    #[inline(always)]
    pub(crate) fn orec_written(&self) {
        #[cfg(loom)]
        self.changed.notify();
    }

    /// Under loom: blocks until `a` no longer holds `seen`.
    #[cfg(loom)]
    pub(crate) fn loom_wait_change(&self, a: &AtomicU64, seen: u64) {
        self.changed
            .wait_until(|| a.load(Ordering::Acquire) != seen);
    }

    pub(crate) fn side(&self) -> &SideTable {
        self.side.get_or_init(|| {
            let n = self.mask + 1;
            SideTable {
                loc: (0..n)
                    .map(|_| AtomicPtr::new(core::ptr::null_mut()))
                    .collect(),
                thread: (0..n).map(|_| StdAtomicU64::new(0)).collect(),
            }
        })
    }

    /// Waits until `orec` no longer holds `seen` (it is held by the inevitable transaction, which
    /// may run for long: park rather than spin).
    pub(crate) fn wait_orec_change(&self, orec: &AtomicU64, seen: u64) {
        let mut spin = crate::sync::Spin::new();
        while spin.steps() < 10 {
            if spin.load(orec) != seen {
                return;
            }
            spin.spin();
        }
        // Acquire: pairs with the inevitable transaction's Release when it lets go.
        self.inevitable_done
            .wait_until(|| orec.load(Ordering::Acquire) != seen);
    }

    /// Waits until the inevitable token is free (or held by `me`).
    pub(crate) fn wait_token_free(&self, me: u64) {
        self.inevitable_done.wait_until(|| {
            // Acquire: pairs with the Release of the holder that gave it back.
            let t = self.inevitable.load(Ordering::Acquire);
            t == 0 || t == me
        });
    }
}

#[cfg(not(loom))]
static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// Fixes the runtime's [`Config`]. Call it before the first transaction of the process; later
/// calls fail with [`ConfigError::AlreadyStarted`].
///
/// ```
/// use stm_core::{Config, configure, ConfigError};
/// match configure(Config::new().abort_limit(8)) {
///     Ok(()) | Err(ConfigError::AlreadyStarted) => {}
///     Err(e) => panic!("{e}"),
/// }
/// assert_eq!(configure(Config::new().lock_table_bits(40)), Err(ConfigError::OutOfRange));
/// ```
#[cfg(not(loom))]
pub fn configure(config: Config) -> Result<(), ConfigError> {
    if !(4..=28).contains(&config.lock_table_bits) || config.abort_limit == 0 {
        return Err(ConfigError::OutOfRange);
    }
    let mut fresh = false;
    RUNTIME.get_or_init(|| {
        fresh = true;
        Runtime::new(config)
    });
    if fresh {
        Ok(())
    } else {
        Err(ConfigError::AlreadyStarted)
    }
}

#[cfg(not(loom))]
#[inline]
pub(crate) fn runtime() -> &'static Runtime {
    RUNTIME.get_or_init(|| Runtime::new(Config::default()))
}

#[cfg(loom)]
loom::lazy_static! {
    static ref RUNTIME: Runtime = Runtime::new(Config { lock_table_bits: 4, abort_limit: 3 });
}

/// Under loom: a runtime per model execution, with a tiny table and abort limit.
#[cfg(loom)]
pub(crate) fn runtime() -> &'static Runtime {
    &RUNTIME
}

/// Under loom the configuration is fixed by the model.
#[cfg(loom)]
pub fn configure(_config: Config) -> Result<(), ConfigError> {
    Err(ConfigError::AlreadyStarted)
}
