//! [`TCounter`]: a sharded transactional counter, and the thread slots that pick its shard.

use crate::{TVar, Tx, TxResult, atomically};
use crossbeam_utils::CachePadded;
use std::sync::{Mutex, OnceLock};

/// The slot of a live thread: a small index, unique among live threads, handed back at exit.
struct Slot(usize);

/// Slots handed back by exited threads, and the next never-used one.
struct Slots {
    free: Vec<usize>,
    next: usize,
}

static SLOTS: Mutex<Slots> = Mutex::new(Slots {
    free: Vec::new(),
    next: 0,
});

impl Slot {
    fn acquire() -> Slot {
        let mut s = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        // The lowest free slot first, so that a few live threads use the first shards.
        if let Some((i, _)) = s.free.iter().enumerate().min_by_key(|(_, slot)| **slot) {
            return Slot(s.free.swap_remove(i));
        }
        s.next += 1;
        Slot(s.next - 1)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        SLOTS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .free
            .push(self.0);
    }
}

std::thread_local! {
    static SLOT: Slot = Slot::acquire();
}

/// The calling thread's slot (see the module doc). During thread-local destruction, where the
/// slot may be gone, falls back to the runtime's thread id (still a valid shard, just not
/// guaranteed to be unshared).
pub(crate) fn thread_slot() -> usize {
    SLOT.try_with(|s| s.0)
        .unwrap_or_else(|_| crate::thread_id() as usize)
}

/// The default number of shards: twice the available parallelism, at least 16, a power of two.
pub(crate) fn default_shards() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(8, |n| n.get());
        (cores * 2).max(16).next_power_of_two()
    })
}

/// A transactional counter whose [`add`](TCounter::add)s from different threads never conflict.
///
/// A shared counter in a single [`TVar`] makes every pair of concurrent increments conflict
/// (both read and write the one word). `TCounter` keeps one `TVar<i64>` per shard, each on its
/// own cache line, and a thread adds only to the shard of its slot (unique among live threads,
/// see the [module doc](crate::collections)): with at least as many shards as live threads,
/// `add`s never conflict. [`get`](TCounter::get) reads every shard, so it conflicts with
/// concurrent `add`s (a transaction that reads the total is invalidated by any later add, as
/// it must be); read it rarely, or outside the hot transactions.
///
/// ```
/// use stm_core::atomically;
/// use stm_core::collections::TCounter;
/// use std::sync::Arc;
///
/// let hits = Arc::new(TCounter::new());
/// let threads: Vec<_> = (0..2)
///     .map(|_| {
///         let hits = hits.clone();
///         std::thread::spawn(move || {
///             for _ in 0..1000 {
///                 atomically(|tx| hits.add(tx, 1));
///             }
///         })
///     })
///     .collect();
/// for t in threads {
///     t.join().unwrap();
/// }
/// assert_eq!(atomically(|tx| hits.get(tx)), 2000);
/// ```
pub struct TCounter {
    shards: Box<[CachePadded<TVar<i64>>]>,
}

impl TCounter {
    /// A counter at zero with the default number of shards (twice the available parallelism,
    /// at least 16).
    ///
    /// ```
    /// let c = stm_core::collections::TCounter::new();
    /// assert_eq!(c.load(), 0);
    /// ```
    pub fn new() -> Self {
        Self::with_shards(default_shards())
    }

    /// A counter at zero with `shards` shards (rounded up to a power of two, at least 1). Threads
    /// conflict on `add` only when more than `shards` of them are alive at once.
    ///
    /// ```
    /// let c = stm_core::collections::TCounter::with_shards(3);
    /// assert_eq!(c.shards(), 4);
    /// ```
    pub fn with_shards(shards: usize) -> Self {
        let n = shards.max(1).next_power_of_two();
        TCounter {
            shards: (0..n).map(|_| CachePadded::new(TVar::new(0))).collect(),
        }
    }

    /// The number of shards.
    ///
    /// ```
    /// assert!(stm_core::collections::TCounter::new().shards() >= 16);
    /// ```
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Adds `delta` (negative to subtract) to the calling thread's shard. Never conflicts with
    /// another thread's `add` (see the type's doc); conflicts with a concurrent [`get`](Self::get).
    ///
    /// ```
    /// use stm_core::{atomically, collections::TCounter};
    /// let c = TCounter::new();
    /// atomically(|tx| { c.add(tx, 5)?; c.add(tx, -2) });
    /// assert_eq!(c.load(), 3);
    /// ```
    #[track_caller]
    pub fn add<'t>(&'t self, tx: &Tx<'t, '_>, delta: i64) -> TxResult<()> {
        let shard = &self.shards[thread_slot() & (self.shards.len() - 1)];
        let v = tx.read(shard)?;
        tx.write(shard, v.wrapping_add(delta))
    }

    /// The total: the sum of every shard, consistent with the rest of the transaction. Reads
    /// every shard, so a concurrent `add` that commits first invalidates this transaction.
    ///
    /// ```
    /// use stm_core::{atomically, collections::TCounter};
    /// let c = TCounter::new();
    /// atomically(|tx| c.add(tx, 7));
    /// assert_eq!(atomically(|tx| c.get(tx)), 7);
    /// ```
    #[track_caller]
    pub fn get(&self, tx: &Tx<'_, '_>) -> TxResult<i64> {
        let mut sum = 0i64;
        for s in self.shards.iter() {
            sum = sum.wrapping_add(tx.read(s)?);
        }
        Ok(sum)
    }

    /// The total, read in a transaction of its own (so it is a consistent snapshot).
    ///
    /// # Panics
    ///
    /// Inside a transaction (nested transactions are rejected): use [`get`](Self::get) there.
    ///
    /// ```
    /// let c = stm_core::collections::TCounter::new();
    /// stm_core::atomically(|tx| c.add(tx, 1));
    /// assert_eq!(c.load(), 1);
    /// ```
    pub fn load(&self) -> i64 {
        atomically(|tx| self.get(tx))
    }
}

impl TCounter {
    /// The sum of the shards' committed values, read one by one outside any transaction: not a
    /// snapshot (adds that commit meanwhile may be half counted), but it conflicts with nothing.
    pub(crate) fn approximate(&self) -> i64 {
        self.shards
            .iter()
            .fold(0i64, |a, s| a.wrapping_add(s.load()))
    }
}

impl Default for TCounter {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for TCounter {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Not a snapshot across shards (Debug may be called inside a transaction, where
        // `load` would nest): each shard's committed value.
        f.debug_struct("TCounter")
            .field("committed_sum", &self.approximate())
            .field("shards", &self.shards.len())
            .finish()
    }
}
