//! Global counters: per-thread, single-writer cells summed on demand.
//!
//! Each thread counts into its own cache-padded block (a relaxed load and store, no read-modify-
//! write, no shared cache line); `stats()` sums the live blocks and the totals of exited threads.
//! These counters are statistics, not part of the synchronisation protocol, so they use `std`
//! atomics even under loom, and `Relaxed` everywhere: a sum may miss events that are in flight.

use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Update commits (read-only ones are counted apart: one bump per commit).
pub(crate) const UPDATE_COMMITS: usize = 0;
pub(crate) const READ_ONLY_COMMITS: usize = 1;
pub(crate) const ABORT_WW: usize = 2;
pub(crate) const ABORT_WR: usize = 3;
pub(crate) const ABORT_INEV: usize = 4;
pub(crate) const INEVITABLE_RUNS: usize = 5;
pub(crate) const RETRIES: usize = 6;
pub(crate) const CANCELS: usize = 7;
pub(crate) const PANICS: usize = 8;
pub(crate) const UNLOGGED_RERUNS: usize = 9;
const N: usize = 10;

#[derive(Debug, Default)]
pub(crate) struct Counters(CachePadded<[AtomicU64; N]>);

impl Counters {
    /// Adds one; only the owning thread calls this, so load + store cannot lose an update.
    #[inline]
    pub(crate) fn bump(&self, i: usize) {
        let c = &self.0[i];
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    fn add_into(&self, out: &mut [u64; N]) {
        for (o, c) in out.iter_mut().zip(self.0.iter()) {
            *o += c.load(Ordering::Relaxed);
        }
    }
}

struct Registry {
    live: Vec<Arc<Counters>>,
    exited: [u64; N],
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    live: Vec::new(),
    exited: [0; N],
});

pub(crate) fn register() -> Arc<Counters> {
    let c = Arc::new(Counters::default());
    REGISTRY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .live
        .push(c.clone());
    c
}

pub(crate) fn unregister(c: &Arc<Counters>) {
    let mut r = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let mut sum = r.exited;
    c.add_into(&mut sum);
    r.exited = sum;
    r.live.retain(|x| !Arc::ptr_eq(x, c));
}

/// A snapshot of the runtime's global counters, summed over all threads (see [`stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Committed transactions (read-only ones included).
    pub commits: u64,
    /// Of those, the ones that wrote nothing.
    pub read_only_commits: u64,
    /// Attempts aborted by a `WRITE_WRITE` conflict.
    pub aborts_write_write: u64,
    /// Attempts aborted by a `WRITE_READ` conflict.
    pub aborts_write_read: u64,
    /// Attempts aborted because of the inevitable transaction.
    pub aborts_inevitable: u64,
    /// Transactions that ran (or finished) as the inevitable transaction.
    pub inevitable_runs: u64,
    /// Times a body called `retry` and waited for a change.
    pub retries: u64,
    /// Attempts given up with a user error (`try_atomically`).
    pub cancels: u64,
    /// Attempts whose body panicked.
    pub panics: u64,
    /// Attempts run without a read set (inferred read-only, see
    /// [`atomically`](crate::atomically)) that stopped and ran the body again: with a read set
    /// when the body wrote, waited in `retry` or became inevitable, or with a newer snapshot when
    /// a read met a word newer than its snapshot. Not conflict aborts: not in [`Stats::aborts`],
    /// and not counted towards [`Config::abort_limit`](crate::Config::abort_limit).
    pub unlogged_reruns: u64,
}

impl Stats {
    /// All conflict aborts.
    pub fn aborts(&self) -> u64 {
        self.aborts_write_write + self.aborts_write_read + self.aborts_inevitable
    }

    /// Conflict aborts per attempt (`aborts / (commits + aborts)`), 0 when nothing ran.
    pub fn abort_rate(&self) -> f64 {
        let total = self.commits + self.aborts();
        if total == 0 {
            0.0
        } else {
            self.aborts() as f64 / total as f64
        }
    }

    /// Counter-wise difference `self - earlier`, for measuring an interval.
    pub fn since(&self, earlier: &Stats) -> Stats {
        Stats {
            commits: self.commits.saturating_sub(earlier.commits),
            read_only_commits: self
                .read_only_commits
                .saturating_sub(earlier.read_only_commits),
            aborts_write_write: self
                .aborts_write_write
                .saturating_sub(earlier.aborts_write_write),
            aborts_write_read: self
                .aborts_write_read
                .saturating_sub(earlier.aborts_write_read),
            aborts_inevitable: self
                .aborts_inevitable
                .saturating_sub(earlier.aborts_inevitable),
            inevitable_runs: self.inevitable_runs.saturating_sub(earlier.inevitable_runs),
            retries: self.retries.saturating_sub(earlier.retries),
            cancels: self.cancels.saturating_sub(earlier.cancels),
            panics: self.panics.saturating_sub(earlier.panics),
            unlogged_reruns: self.unlogged_reruns.saturating_sub(earlier.unlogged_reruns),
        }
    }
}

/// The runtime's global counters, summed over every thread that ever ran a transaction.
///
/// ```
/// let before = stm_core::stats();
/// let v = stm_core::TVar::new(1u8);
/// stm_core::atomically(|tx| tx.write(&v, 2));
/// assert!(stm_core::stats().since(&before).commits >= 1);
/// ```
pub fn stats() -> Stats {
    let r = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = r.exited;
    for c in &r.live {
        c.add_into(&mut s);
    }
    Stats {
        commits: s[UPDATE_COMMITS] + s[READ_ONLY_COMMITS],
        read_only_commits: s[READ_ONLY_COMMITS],
        aborts_write_write: s[ABORT_WW],
        aborts_write_read: s[ABORT_WR],
        aborts_inevitable: s[ABORT_INEV],
        inevitable_runs: s[INEVITABLE_RUNS],
        retries: s[RETRIES],
        cancels: s[CANCELS],
        panics: s[PANICS],
        unlogged_reruns: s[UNLOGGED_RERUNS],
    }
}
