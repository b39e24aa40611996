//! The classic STM integer-set workloads (TinySTM's `intset`): a sorted linked list, a skip
//! list, a red-black tree and a hash set of `u32` keys in `0..range`.
//!
//! # Layout: one flat array of words, one node slot per key
//!
//! Each structure is written once, against the [`Read`] / [`Write`] word-access traits, over a
//! flat array of `u32` words: links are node indices, [`NIL`] is "none". Node `k` holds key `k`,
//! so comparisons never read memory, and the key range of the workload (bounded, as in TinySTM's
//! benchmark) is also the node pool: inserting `k` links slot `k`, removing it unlinks the slot,
//! and a later insert of `k` reuses it. So the sets need no allocator inside transactions and no
//! memory reclamation: a reader still walking an unlinked node reads words whose versions have
//! moved, and the STM's validation aborts or extends it as for any other write.
//!
//! The same code runs three ways:
//! - [`StmSet`]: the words are [`stm_core::TVar<u32>`]s, each operation one transaction;
//! - [`MutexSet`]: plain `u32`s behind one `std::sync::Mutex`;
//! - [`RwLockSet`]: plain `u32`s behind one `std::sync::RwLock` (lookups share it).
//!
//! [`check`](Structure::check) verifies a structure's invariants (order, balance, bucket
//! placement) on a snapshot and returns its keys, for the tests.

mod hashset;
mod list;
mod rbtree;
mod skiplist;

pub use hashset::HashSet;
pub use list::List;
pub use rbtree::RbTree;
pub use skiplist::SkipList;

use crate::rng::Rng;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, RwLock};
use stm_core::{Abort, TVar, Tx, atomically};

/// The "no node" link.
pub const NIL: u32 = u32::MAX;

/// Reads words of a structure (inside a transaction or under a lock).
pub trait Read {
    /// The word at index `i`. `Err` means the transaction is doomed: leave with `?`.
    fn get(&self, i: usize) -> Result<u32, Abort>;
}

/// Reads and writes words of a structure.
pub trait Write: Read {
    /// Stores `v` at index `i`.
    fn set(&mut self, i: usize, v: u32) -> Result<(), Abort>;
}

/// Plain words, read only (under a read lock, or a snapshot).
pub struct Plain<'a>(pub &'a [u32]);

impl Read for Plain<'_> {
    #[inline]
    fn get(&self, i: usize) -> Result<u32, Abort> {
        Ok(self.0[i])
    }
}

/// Plain words, read and written (under an exclusive lock).
pub struct PlainMut<'a>(pub &'a mut [u32]);

impl Read for PlainMut<'_> {
    #[inline]
    fn get(&self, i: usize) -> Result<u32, Abort> {
        Ok(self.0[i])
    }
}

impl Write for PlainMut<'_> {
    #[inline]
    fn set(&mut self, i: usize, v: u32) -> Result<(), Abort> {
        self.0[i] = v;
        Ok(())
    }
}

/// Transactional words: every access goes through the running [`Tx`].
pub struct TxMem<'a, 't, 'env> {
    tx: &'a Tx<'t, 'env>,
    words: &'t [TVar<u32>],
}

impl Read for TxMem<'_, '_, '_> {
    #[inline]
    fn get(&self, i: usize) -> Result<u32, Abort> {
        self.tx.read(&self.words[i])
    }
}

impl Write for TxMem<'_, '_, '_> {
    #[inline]
    fn set(&mut self, i: usize, v: u32) -> Result<(), Abort> {
        self.tx.write(&self.words[i], v)
    }
}

/// A set algorithm over a flat word array, for keys in `0..range`.
pub trait Structure: Send + Sync + Sized + 'static {
    /// Short name for tables ("list", "skiplist", "rbtree", "hashset").
    const NAME: &'static str;
    /// The layout for keys in `0..range` (`range` is at least 1 and below `u32::MAX / 8`).
    fn new(range: u32) -> Self;
    /// The words of the empty set.
    fn empty(&self) -> Vec<u32>;
    /// Whether `k` is in the set.
    fn contains<M: Read>(&self, m: &M, k: u32) -> Result<bool, Abort>;
    /// Adds `k`; `false` if it was already there.
    fn insert<M: Write>(&self, m: &mut M, k: u32) -> Result<bool, Abort>;
    /// Removes `k`; `false` if it was not there.
    fn remove<M: Write>(&self, m: &mut M, k: u32) -> Result<bool, Abort>;
    /// Checks the invariants of the structure in `words` and returns its keys in ascending
    /// order, or what is wrong.
    fn check(&self, words: &[u32]) -> Result<Vec<u32>, String>;
}

/// A key outside `0..range`, or a range the layout cannot index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntSetError {
    /// The key is not below the set's range.
    KeyOutOfRange {
        /// The key given.
        key: u32,
        /// The set's range.
        range: u32,
    },
    /// The range is zero or too large (at most `u32::MAX / 64`).
    BadRange(u32),
}

impl fmt::Display for IntSetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntSetError::KeyOutOfRange { key, range } => {
                write!(f, "key {key} is outside the set's range 0..{range}")
            }
            IntSetError::BadRange(r) => {
                write!(f, "key range {r} must be between 1 and {}", MAX_RANGE)
            }
        }
    }
}

impl std::error::Error for IntSetError {}

/// The largest key range a set accepts (node slots times words per node stay indexable).
pub const MAX_RANGE: u32 = u32::MAX / 64;

fn check_range(range: u32) -> Result<(), IntSetError> {
    if range == 0 || range > MAX_RANGE {
        Err(IntSetError::BadRange(range))
    } else {
        Ok(())
    }
}

/// A concurrent set of `u32` keys in `0..range()`: the interface the workloads drive.
pub trait ConcurrentSet: Sync {
    /// What runs it ("stm", "mutex", "rwlock").
    fn sync_name(&self) -> &'static str;
    /// Keys are in `0..range()`.
    fn range(&self) -> u32;
    /// Whether `k` is in the set.
    fn contains(&self, k: u32) -> Result<bool, IntSetError>;
    /// Adds `k`; `Ok(false)` if it was already there.
    fn insert(&self, k: u32) -> Result<bool, IntSetError>;
    /// Removes `k`; `Ok(false)` if it was not there.
    fn remove(&self, k: u32) -> Result<bool, IntSetError>;
    /// Checks the structure (call it while no operation runs) and returns its keys.
    fn check(&self) -> Result<Vec<u32>, String>;
}

fn key_ok(k: u32, range: u32) -> Result<(), IntSetError> {
    if k < range {
        Ok(())
    } else {
        Err(IntSetError::KeyOutOfRange { key: k, range })
    }
}

/// A set whose words are `TVar`s; each operation is one `stm_core` transaction.
pub struct StmSet<S: Structure> {
    s: S,
    range: u32,
    words: Box<[TVar<u32>]>,
}

impl<S: Structure> StmSet<S> {
    /// An empty set for keys in `0..range`.
    pub fn new(range: u32) -> Result<Self, IntSetError> {
        check_range(range)?;
        let s = S::new(range);
        let words = s.empty().into_iter().map(TVar::new).collect();
        Ok(StmSet { s, range, words })
    }
}

impl<S: Structure> ConcurrentSet for StmSet<S> {
    fn sync_name(&self) -> &'static str {
        "stm"
    }
    fn range(&self) -> u32 {
        self.range
    }
    fn contains(&self, k: u32) -> Result<bool, IntSetError> {
        key_ok(k, self.range)?;
        let words = &self.words[..];
        Ok(atomically(|tx| self.s.contains(&TxMem { tx, words }, k)))
    }
    fn insert(&self, k: u32) -> Result<bool, IntSetError> {
        key_ok(k, self.range)?;
        let words = &self.words[..];
        Ok(atomically(|tx| self.s.insert(&mut TxMem { tx, words }, k)))
    }
    fn remove(&self, k: u32) -> Result<bool, IntSetError> {
        key_ok(k, self.range)?;
        let words = &self.words[..];
        Ok(atomically(|tx| self.s.remove(&mut TxMem { tx, words }, k)))
    }
    fn check(&self) -> Result<Vec<u32>, String> {
        let words = &self.words[..];
        // One transaction reads every word: a consistent snapshot even if someone is running.
        let snap: Vec<u32> = atomically(|tx| words.iter().map(|w| tx.read(w)).collect());
        self.s.check(&snap)
    }
}

/// A set of plain words behind one `Mutex`.
pub struct MutexSet<S: Structure> {
    s: S,
    range: u32,
    words: Mutex<Vec<u32>>,
}

impl<S: Structure> MutexSet<S> {
    /// An empty set for keys in `0..range`.
    pub fn new(range: u32) -> Result<Self, IntSetError> {
        check_range(range)?;
        let s = S::new(range);
        let words = Mutex::new(s.empty());
        Ok(MutexSet { s, range, words })
    }

    fn with<R>(&self, f: impl FnOnce(&mut PlainMut<'_>) -> Result<R, Abort>) -> R {
        let mut g = self.words.lock().unwrap_or_else(|e| e.into_inner());
        match f(&mut PlainMut(&mut g)) {
            Ok(r) => r,
            Err(_) => unreachable!("plain memory never aborts"),
        }
    }
}

impl<S: Structure> ConcurrentSet for MutexSet<S> {
    fn sync_name(&self) -> &'static str {
        "mutex"
    }
    fn range(&self) -> u32 {
        self.range
    }
    fn contains(&self, k: u32) -> Result<bool, IntSetError> {
        key_ok(k, self.range)?;
        Ok(self.with(|m| self.s.contains(m, k)))
    }
    fn insert(&self, k: u32) -> Result<bool, IntSetError> {
        key_ok(k, self.range)?;
        Ok(self.with(|m| self.s.insert(m, k)))
    }
    fn remove(&self, k: u32) -> Result<bool, IntSetError> {
        key_ok(k, self.range)?;
        Ok(self.with(|m| self.s.remove(m, k)))
    }
    fn check(&self) -> Result<Vec<u32>, String> {
        let g = self.words.lock().unwrap_or_else(|e| e.into_inner());
        self.s.check(&g)
    }
}

/// A set of plain words behind one `RwLock`: lookups take it shared, updates exclusive.
pub struct RwLockSet<S: Structure> {
    s: S,
    range: u32,
    words: RwLock<Vec<u32>>,
}

impl<S: Structure> RwLockSet<S> {
    /// An empty set for keys in `0..range`.
    pub fn new(range: u32) -> Result<Self, IntSetError> {
        check_range(range)?;
        let s = S::new(range);
        let words = RwLock::new(s.empty());
        Ok(RwLockSet { s, range, words })
    }

    fn update(&self, f: impl FnOnce(&mut PlainMut<'_>) -> Result<bool, Abort>) -> bool {
        let mut g = self.words.write().unwrap_or_else(|e| e.into_inner());
        match f(&mut PlainMut(&mut g)) {
            Ok(r) => r,
            Err(_) => unreachable!("plain memory never aborts"),
        }
    }
}

impl<S: Structure> ConcurrentSet for RwLockSet<S> {
    fn sync_name(&self) -> &'static str {
        "rwlock"
    }
    fn range(&self) -> u32 {
        self.range
    }
    fn contains(&self, k: u32) -> Result<bool, IntSetError> {
        key_ok(k, self.range)?;
        let g = self.words.read().unwrap_or_else(|e| e.into_inner());
        match self.s.contains(&Plain(&g), k) {
            Ok(r) => Ok(r),
            Err(_) => unreachable!("plain memory never aborts"),
        }
    }
    fn insert(&self, k: u32) -> Result<bool, IntSetError> {
        key_ok(k, self.range)?;
        Ok(self.update(|m| self.s.insert(m, k)))
    }
    fn remove(&self, k: u32) -> Result<bool, IntSetError> {
        key_ok(k, self.range)?;
        Ok(self.update(|m| self.s.remove(m, k)))
    }
    fn check(&self) -> Result<Vec<u32>, String> {
        let g = self.words.read().unwrap_or_else(|e| e.into_inner());
        self.s.check(&g)
    }
}

/// The hardware's floor for a structure's cache-line traffic: no synchronisation at all.
///
/// **Not a set.** Each operation runs against a private buffer of its own writes (so the
/// algorithm sees them, as a transaction would), then stores *the value already there* back
/// into every word it wrote, with relaxed atomics. The structure never changes, so lookups never
/// race with a half-done update; but each update still takes every written cache line away from
/// the other cores, as a committing transaction does. The words are 8 bytes apart, as `TVar`s
/// are. So this measures what the workload's memory traffic alone costs on the machine: a lower
/// bound for any STM that updates in place (which adds its lock words and clocks on top), used by
/// the `scaling` binary's "floor" rows. Its `insert` and `remove` results describe the unchanged
/// initial set, and [`check`](ConcurrentSet::check) checks the (unchanged) structure.
pub struct FloorSet<S: Structure> {
    s: S,
    range: u32,
    words: Box<[AtomicU64]>,
}

impl<S: Structure> FloorSet<S> {
    /// The floor for the set that `workload.fill(set, seed)` builds: the structure is built
    /// under a lock, then frozen into the floor's words.
    pub fn filled(workload: &IntSetWorkload, seed: u64) -> Result<Self, IntSetError> {
        let built = MutexSet::<S>::new(workload.range)?;
        workload.fill(&built, seed)?;
        let words = built.words.into_inner().unwrap_or_else(|e| e.into_inner());
        Ok(FloorSet {
            s: built.s,
            range: built.range,
            words: words
                .into_iter()
                .map(|w| AtomicU64::new(w.into()))
                .collect(),
        })
    }

    /// Runs `f` against the words with its writes buffered, then stores back the current value
    /// of every word it wrote.
    fn run<R>(&self, f: impl FnOnce(&mut Overlay<'_>) -> Result<R, Abort>) -> R {
        thread_local! {
            // The write buffer, reused so that an update allocates nothing (as in the STM).
            static WRITES: std::cell::Cell<Vec<(usize, u32)>> = const { std::cell::Cell::new(Vec::new()) };
        }
        let mut writes = WRITES.take();
        writes.clear();
        let mut o = Overlay {
            words: &self.words,
            writes,
        };
        let r = match f(&mut o) {
            Ok(r) => r,
            Err(_) => unreachable!("the floor's memory never aborts"),
        };
        for &(i, _) in &o.writes {
            let w = &self.words[i];
            w.store(w.load(Relaxed), Relaxed);
        }
        WRITES.set(o.writes);
        r
    }
}

/// The floor's memory: relaxed atomic words read through a private buffer of writes.
struct Overlay<'a> {
    words: &'a [AtomicU64],
    writes: Vec<(usize, u32)>,
}

impl Read for Overlay<'_> {
    #[inline]
    fn get(&self, i: usize) -> Result<u32, Abort> {
        if let Some(&(_, v)) = self.writes.iter().rev().find(|(j, _)| *j == i) {
            return Ok(v);
        }
        // Truncation is exact: only `u32`s are stored.
        Ok(self.words[i].load(Relaxed) as u32)
    }
}

impl Write for Overlay<'_> {
    #[inline]
    fn set(&mut self, i: usize, v: u32) -> Result<(), Abort> {
        self.writes.push((i, v));
        Ok(())
    }
}

impl<S: Structure> ConcurrentSet for FloorSet<S> {
    fn sync_name(&self) -> &'static str {
        "floor"
    }
    fn range(&self) -> u32 {
        self.range
    }
    fn contains(&self, k: u32) -> Result<bool, IntSetError> {
        key_ok(k, self.range)?;
        Ok(self.run(|m| self.s.contains(m, k)))
    }
    fn insert(&self, k: u32) -> Result<bool, IntSetError> {
        key_ok(k, self.range)?;
        Ok(self.run(|m| self.s.insert(m, k)))
    }
    fn remove(&self, k: u32) -> Result<bool, IntSetError> {
        key_ok(k, self.range)?;
        Ok(self.run(|m| self.s.remove(m, k)))
    }
    fn check(&self) -> Result<Vec<u32>, String> {
        let snap: Vec<u32> = self.words.iter().map(|w| w.load(Relaxed) as u32).collect();
        self.s.check(&snap)
    }
}

/// The intset workload's parameters (TinySTM's defaults: 256 elements, range 512, 20% updates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntSetWorkload {
    /// Keys are drawn from `0..range`.
    pub range: u32,
    /// Elements inserted before the measurement.
    pub initial: u32,
    /// Percentage of operations that update (half inserts, half removes); the rest look up.
    pub update_percent: u32,
}

impl Default for IntSetWorkload {
    fn default() -> Self {
        IntSetWorkload {
            range: 512,
            initial: 256,
            update_percent: 20,
        }
    }
}

impl IntSetWorkload {
    /// Inserts up to `initial` distinct random keys into `set` (keys already there do not
    /// count; stops when every key of the range has been tried).
    pub fn fill(&self, set: &dyn ConcurrentSet, seed: u64) -> Result<(), IntSetError> {
        let mut rng = Rng::new(seed);
        // A random permutation of the range (Fisher-Yates), inserted in order: bounded work.
        let mut keys: Vec<u32> = (0..set.range()).collect();
        for i in (1..keys.len()).rev() {
            keys.swap(i, rng.below(i as u32 + 1) as usize);
        }
        let mut n = 0;
        for k in keys {
            if n >= self.initial {
                break;
            }
            if set.insert(k)? {
                n += 1;
            }
        }
        Ok(())
    }

    /// One operation of the workload on `set`: a lookup, an insert or a remove of a random key.
    /// Returns the change in the set's size (-1, 0 or 1).
    #[inline]
    pub fn op(&self, set: &dyn ConcurrentSet, rng: &mut Rng) -> Result<i64, IntSetError> {
        let r = rng.below(200);
        let k = rng.below(self.range);
        Ok(if r < self.update_percent {
            i64::from(set.insert(k)?)
        } else if r < 2 * self.update_percent {
            -i64::from(set.remove(k)?)
        } else {
            set.contains(k)?;
            0
        })
    }
}

/// A set with its name, "structure/sync" (e.g. "rbtree/stm").
pub type NamedSet = (String, Box<dyn ConcurrentSet + Send>);

/// Every implementation the suites compare: (structure, synchronisation) → a new empty set.
pub fn all_sets(range: u32) -> Result<Vec<NamedSet>, IntSetError> {
    fn three<S: Structure>(out: &mut Vec<NamedSet>, range: u32) -> Result<(), IntSetError> {
        out.push((
            format!("{}/stm", S::NAME),
            Box::new(StmSet::<S>::new(range)?),
        ));
        out.push((
            format!("{}/mutex", S::NAME),
            Box::new(MutexSet::<S>::new(range)?),
        ));
        out.push((
            format!("{}/rwlock", S::NAME),
            Box::new(RwLockSet::<S>::new(range)?),
        ));
        Ok(())
    }
    let mut out = Vec::new();
    three::<List>(&mut out, range)?;
    three::<SkipList>(&mut out, range)?;
    three::<RbTree>(&mut out, range)?;
    three::<HashSet>(&mut out, range)?;
    Ok(out)
}

/// The [`FloorSet`] of every structure, each built as `workload.fill(set, seed)` builds it,
/// named "structure/floor".
pub fn all_floors(workload: &IntSetWorkload, seed: u64) -> Result<Vec<NamedSet>, IntSetError> {
    fn one<S: Structure>(
        out: &mut Vec<NamedSet>,
        w: &IntSetWorkload,
        seed: u64,
    ) -> Result<(), IntSetError> {
        out.push((
            format!("{}/floor", S::NAME),
            Box::new(FloorSet::<S>::filled(w, seed)?),
        ));
        Ok(())
    }
    let mut out = Vec::new();
    one::<List>(&mut out, workload, seed)?;
    one::<SkipList>(&mut out, workload, seed)?;
    one::<RbTree>(&mut out, workload, seed)?;
    one::<HashSet>(&mut out, workload, seed)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::run_threads;
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicI64, Ordering};

    /// Random operations against a `BTreeSet` model, with the invariants checked as it goes.
    fn against_model(set: &dyn ConcurrentSet, name: &str) {
        let range = set.range();
        let mut model = BTreeSet::new();
        let mut rng = Rng::new(42);
        for i in 0..4_000 {
            let k = rng.below(range);
            match rng.below(3) {
                0 => assert_eq!(set.insert(k), Ok(model.insert(k)), "{name}: insert {k}"),
                1 => assert_eq!(set.remove(k), Ok(model.remove(&k)), "{name}: remove {k}"),
                _ => assert_eq!(
                    set.contains(k),
                    Ok(model.contains(&k)),
                    "{name}: contains {k}"
                ),
            }
            if i % 97 == 0 {
                let keys = set.check().unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(keys, model.iter().copied().collect::<Vec<_>>(), "{name}");
            }
        }
        // Empty it completely, then refill: slots are reused.
        for k in 0..range {
            assert_eq!(set.remove(k), Ok(model.remove(&k)), "{name}: drain {k}");
        }
        assert_eq!(set.check(), Ok(vec![]), "{name}");
        for k in (0..range).rev() {
            assert_eq!(set.insert(k), Ok(true), "{name}: refill {k}");
        }
        assert_eq!(set.check(), Ok((0..range).collect::<Vec<_>>()), "{name}");
        // Filling a full set terminates and changes nothing.
        IntSetWorkload::default()
            .fill(set, 5)
            .expect("keys in range");
        assert_eq!(set.check().map(|k| k.len()), Ok(range as usize), "{name}");
    }

    #[test]
    fn every_set_matches_a_btreeset() {
        for range in [1, 2, 7, 64] {
            for (name, set) in all_sets(range).expect("valid range") {
                against_model(&*set, &format!("{name} range {range}"));
            }
        }
    }

    #[test]
    fn floors_answer_for_the_frozen_set_and_never_change_it() {
        let w = IntSetWorkload {
            range: 128,
            initial: 64,
            update_percent: 50,
        };
        for (name, floor) in all_floors(&w, 3).expect("valid range") {
            // The same structure, built the same way, as a real set: the floor's answers are
            // those of this set before any update.
            let (structure, _) = name.split_once('/').expect("structure/floor");
            let (_, real) = all_sets(w.range)
                .expect("valid range")
                .into_iter()
                .find(|(n, _)| n == &format!("{structure}/mutex"))
                .expect("a mutex set of each structure");
            w.fill(&*real, 3).expect("keys in range");
            let keys = real.check().expect("valid");
            assert_eq!(keys.len(), 64, "{name}");
            assert_eq!(floor.check(), Ok(keys.clone()), "{name}");
            run_threads(2, 3_000, 7, |_, rng| {
                let k = rng.below(w.range);
                let present = keys.binary_search(&k).is_ok();
                match rng.below(3) {
                    0 => assert_eq!(floor.insert(k), Ok(!present), "{name}: insert {k}"),
                    1 => assert_eq!(floor.remove(k), Ok(present), "{name}: remove {k}"),
                    _ => assert_eq!(floor.contains(k), Ok(present), "{name}: contains {k}"),
                }
            });
            assert_eq!(floor.check(), Ok(keys), "{name}: the floor changed");
            assert_eq!(floor.sync_name(), "floor");
            assert!(floor.insert(w.range).is_err(), "{name}");
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        for (name, set) in all_sets(8).expect("valid range") {
            let e = IntSetError::KeyOutOfRange { key: 8, range: 8 };
            assert_eq!(set.insert(8), Err(e), "{name}");
            assert!(set.remove(9).is_err(), "{name}");
            assert!(set.contains(u32::MAX).is_err(), "{name}");
        }
        assert_eq!(StmSet::<List>::new(0).err(), Some(IntSetError::BadRange(0)));
        assert!(MutexSet::<RbTree>::new(u32::MAX).is_err());
        assert!(IntSetError::BadRange(0).to_string().contains("between 1"));
    }

    #[test]
    fn concurrent_workload_keeps_every_structure_valid() {
        let w = IntSetWorkload {
            range: 128,
            initial: 64,
            update_percent: 50,
        };
        for (name, set) in all_sets(w.range).expect("valid range") {
            w.fill(&*set, 1).expect("keys in range");
            let delta = AtomicI64::new(0);
            run_threads(2, 3_000, 9, |_, rng| {
                let d = w.op(&*set, rng).expect("keys in range");
                delta.fetch_add(d, Ordering::Relaxed);
            });
            let keys = set.check().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                keys.len() as i64,
                i64::from(w.initial) + delta.load(Ordering::Relaxed),
                "{name}: size = initial + inserts - removes"
            );
        }
    }
}
