//! [`TMap`]: a transactional hash map whose conflicts are per bucket.
//!
//! # Layout
//!
//! ```text
//! TMap ─ Arc<Inner> ─┬─ table: TBox<Table> ── buckets: [TBox<Vec<(K, V)>>; 2^k]
//!                    ├─ count: TCounter      (one shard per live thread)
//!                    └─ hasher: S
//! ```
//!
//! - `get`/`contains_key` read the table pointer and one bucket; `insert`/`remove` also write
//!   that bucket (a new `Vec`, copy-on-write) and add ±1 to the calling thread's count shard.
//!   Every operation reads the table pointer, but only growth writes it, so operations on keys
//!   in different buckets touch disjoint written words and never conflict.
//! - `len` sums the count shards: it conflicts with concurrent inserts and removes only.
//! - **Growth** is a transaction of its own, never part of the user's: an `insert` that leaves
//!   its bucket with [`GROW_CHAIN`] entries or more registers an after-commit action, which runs
//!   `grow` once the user's transaction has committed. `grow` checks, outside any transaction,
//!   that the table still has the size the insert saw and that the map holds more entries than
//!   buckets (an approximate count: the sum of the shards' committed values; a heuristic, so it
//!   conflicts with nothing). Then it copies every bucket into a table twice as large and
//!   installs it with one write of the table pointer. Readers never wait: until that commit
//!   they read the old table, which the epoch keeps alive while they can see it. Writers of any
//!   bucket invalidate the copy (it read every bucket): after [`GROW_OPTIMISTIC_ATTEMPTS`]
//!   failed copies the next attempt runs inevitable, and writers of buckets it has already
//!   copied pause until it commits (readers still do not). Without that, a copy under steady
//!   writing would redo the whole-table work up to the runtime's abort limit (16) before
//!   getting there. Each growth doubles the table, so its cost is amortised over the inserts
//!   that filled it; in-flight operations that read the old table pointer abort once when it
//!   commits.

use super::counter::TCounter;
use crate::{TBox, Tx, TxResult, atomically};
use core::borrow::Borrow;
use core::hash::{BuildHasher, Hash};
use std::hash::RandomState;
use std::sync::Arc;

/// An insert that leaves its bucket with this many entries or more asks for growth.
pub(crate) const GROW_CHAIN: usize = 4;
/// Growth happens only when the map holds more than this many entries per bucket (so a single
/// crowded bucket of colliding hashes does not double the table again and again).
const MAX_LOAD: usize = 1;
/// Attempts of the table copy before it runs inevitable.
const GROW_OPTIMISTIC_ATTEMPTS: u32 = 2;
/// Buckets of [`TMap::new`].
const DEFAULT_BUCKETS: usize = 16;

type Bucket<K, V> = Vec<(K, V)>;

struct Table<K: Send + Sync + 'static, V: Send + Sync + 'static> {
    buckets: Box<[TBox<Bucket<K, V>>]>,
}

impl<K: Send + Sync + 'static, V: Send + Sync + 'static> Table<K, V> {
    fn with_buckets(n: usize) -> Self {
        Table {
            buckets: (0..n).map(|_| TBox::new(Vec::new())).collect(),
        }
    }

    fn from_buckets(buckets: Vec<Bucket<K, V>>) -> Self {
        Table {
            buckets: buckets.into_iter().map(TBox::new).collect(),
        }
    }

    #[inline]
    fn bucket(&self, hash: u64) -> &TBox<Bucket<K, V>> {
        // The bucket count is a power of two.
        &self.buckets[hash as usize & (self.buckets.len() - 1)]
    }
}

struct Inner<K: Send + Sync + 'static, V: Send + Sync + 'static, S> {
    table: TBox<Table<K, V>>,
    count: TCounter,
    hasher: S,
}

/// A transactional hash map. Operations on keys in different buckets never conflict.
///
/// All operations run inside a transaction and take it as `&Tx`; the map's state is whatever
/// the transaction sees, its own writes included, and changes become visible to others when it
/// commits.
///
/// **Conflicts.** Each bucket is a separate transactional word, so two transactions conflict
/// only if they touch the same bucket and at least one writes it: the same key, or two keys
/// whose hashes collide in the bucket index (with `n` buckets, a given pair of distinct keys
/// shares a bucket with probability about `1/n`; the table grows to keep `n` at least the
/// number of entries). The element count is kept per thread (a [`TCounter`]), so inserts and
/// removes from different threads do not conflict through it; [`len`](TMap::len) and
/// [`iter`](TMap::iter) read all shards or all buckets and so conflict with concurrent writers.
/// In-place updates, in the manner of std's `entry` API: [`get_or_insert_with`](TMap::get_or_insert_with)
/// only reads when the key is present and writes (as an insert) when it is not;
/// [`update`](TMap::update) sets, inserts or removes from the current value, and writes the
/// bucket whenever its closure returns a value or removes one.
///
/// **Growth** never stops readers: it copies the table in a transaction of its own, after the
/// insert that found its bucket crowded has committed (see the `collections::map` source for
/// the details and costs), and publishes the copy with one pointer write.
///
/// ```
/// use stm_core::atomically;
/// use stm_core::collections::TMap;
/// use std::sync::Arc;
///
/// let map: Arc<TMap<u64, u64>> = Arc::new(TMap::new());
/// let threads: Vec<_> = (0..2u64)
///     .map(|t| {
///         let map = map.clone();
///         std::thread::spawn(move || {
///             for i in 0..500 {
///                 atomically(|tx| map.insert(tx, t * 1000 + i, i).map(drop));
///             }
///         })
///     })
///     .collect();
/// for t in threads {
///     t.join().unwrap();
/// }
/// atomically(|tx| {
///     assert_eq!(map.len(tx)?, 1000);
///     assert_eq!(map.get(tx, &1007)?, Some(&7));
///     assert_eq!(map.remove(tx, &1007)?, Some(7));
///     assert!(!map.contains_key(tx, &1007)?);
///     Ok(())
/// });
/// ```
pub struct TMap<K: Send + Sync + 'static, V: Send + Sync + 'static, S = RandomState> {
    inner: Arc<Inner<K, V, S>>,
}

impl<K, V> TMap<K, V, RandomState>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// An empty map with 16 buckets; it grows as entries are added.
    ///
    /// ```
    /// let m: stm_core::collections::TMap<String, u32> = stm_core::collections::TMap::new();
    /// assert_eq!(stm_core::atomically(|tx| m.len(tx)), 0);
    /// ```
    pub fn new() -> Self {
        Self::with_buckets(DEFAULT_BUCKETS)
    }

    /// An empty map with `n` buckets (rounded up to a power of two, at least 1). Size it for the
    /// expected number of entries to avoid growth (and its conflicts) while it fills.
    ///
    /// ```
    /// let m: stm_core::collections::TMap<u32, u32> =
    ///     stm_core::collections::TMap::with_buckets(1000);
    /// assert_eq!(m.buckets(), 1024);
    /// ```
    pub fn with_buckets(n: usize) -> Self {
        Self::with_buckets_and_hasher(n, RandomState::new())
    }
}

impl<K, V> Default for TMap<K, V, RandomState>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V, S> TMap<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// An empty map with `n` buckets (rounded up to a power of two, at least 1) that hashes keys
    /// with `hasher`.
    ///
    /// ```
    /// use std::hash::RandomState;
    /// let m: stm_core::collections::TMap<u32, u32> =
    ///     stm_core::collections::TMap::with_buckets_and_hasher(8, RandomState::new());
    /// assert_eq!(m.buckets(), 8);
    /// ```
    pub fn with_buckets_and_hasher(n: usize, hasher: S) -> Self {
        TMap {
            inner: Arc::new(Inner {
                table: TBox::new(Table::with_buckets(n.max(1).next_power_of_two())),
                count: TCounter::new(),
                hasher,
            }),
        }
    }

    /// The number of buckets of the committed table (outside a transaction; it only grows).
    ///
    /// ```
    /// let m: stm_core::collections::TMap<u32, u32> = stm_core::collections::TMap::new();
    /// assert_eq!(m.buckets(), 16);
    /// ```
    pub fn buckets(&self) -> usize {
        self.inner.table.with(|t| t.buckets.len())
    }

    #[inline]
    fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.inner.hasher.hash_one(key)
    }

    #[track_caller]
    #[inline]
    fn bucket_of<'a, Q: Hash + ?Sized>(
        &'a self,
        tx: &Tx<'a, '_>,
        key: &Q,
    ) -> TxResult<&'a TBox<Bucket<K, V>>> {
        let table = tx.read_box(&self.inner.table)?;
        Ok(table.bucket(self.hash(key)))
    }

    /// The value for `key`, borrowed for the rest of the transaction. Reads one bucket.
    ///
    /// ```
    /// use stm_core::{atomically, collections::TMap};
    /// let m = TMap::new();
    /// atomically(|tx| m.insert(tx, "a".to_string(), 1).map(drop));
    /// assert_eq!(atomically(|tx| Ok(m.get(tx, "a")?.copied())), Some(1));
    /// ```
    ///
    /// The reference cannot leave the transaction (copy or clone the value out instead):
    ///
    /// ```compile_fail
    /// use stm_core::{atomically, collections::TMap};
    /// let m: TMap<u32, u32> = TMap::new();
    /// let leaked: Option<&u32> = atomically(|tx| m.get(tx, &1));
    /// ```
    #[track_caller]
    pub fn get<'a, Q>(&'a self, tx: &Tx<'a, '_>, key: &Q) -> TxResult<Option<&'a V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let bucket = tx.read_box(self.bucket_of(tx, key)?)?;
        Ok(bucket
            .iter()
            .find(|(k, _)| k.borrow() == key)
            .map(|(_, v)| v))
    }

    /// Whether `key` is present. Reads one bucket.
    ///
    /// ```
    /// use stm_core::{atomically, collections::TMap};
    /// let m = TMap::new();
    /// atomically(|tx| m.insert(tx, 3u8, ()).map(drop));
    /// assert!(atomically(|tx| m.contains_key(tx, &3)));
    /// ```
    #[track_caller]
    pub fn contains_key<'t, Q>(&'t self, tx: &Tx<'t, '_>, key: &Q) -> TxResult<bool>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        Ok(self.get(tx, key)?.is_some())
    }

    /// Inserts `key -> value`, returning the previous value. Writes one bucket and, for a new
    /// key, the calling thread's count shard.
    ///
    /// ```
    /// use stm_core::{atomically, collections::TMap};
    /// let m = TMap::new();
    /// assert_eq!(atomically(|tx| m.insert(tx, 1u32, "one")), None);
    /// assert_eq!(atomically(|tx| m.insert(tx, 1u32, "uno")), Some("one"));
    /// ```
    #[track_caller]
    pub fn insert<'t>(&'t self, tx: &Tx<'t, '_>, key: K, value: V) -> TxResult<Option<V>> {
        let table = tx.read_box(&self.inner.table)?;
        let cell = table.bucket(self.hash(&key));
        let cur = tx.read_box(cell)?;
        if let Some(i) = cur.iter().position(|(k, _)| *k == key) {
            let mut next = cur.clone();
            let old = core::mem::replace(&mut next[i].1, value);
            tx.write_box(cell, next)?;
            return Ok(Some(old));
        }
        self.push_new(tx, table, cell, cur, key, value)?;
        Ok(None)
    }

    /// Adds `key -> value` to bucket `cell` of `table`, whose entries are `cur` and do not
    /// include `key`: writes the bucket and adds 1 to the calling thread's count shard; asks for
    /// growth if the bucket is now crowded.
    #[track_caller]
    fn push_new<'t>(
        &'t self,
        tx: &Tx<'t, '_>,
        table: &'t Table<K, V>,
        cell: &'t TBox<Bucket<K, V>>,
        cur: &[(K, V)],
        key: K,
        value: V,
    ) -> TxResult<()> {
        let mut next = Vec::with_capacity(cur.len() + 1);
        next.extend(cur.iter().cloned());
        next.push((key, value));
        let crowded = next.len() >= GROW_CHAIN;
        tx.write_box(cell, next)?;
        self.inner.count.add(tx, 1)?;
        if crowded {
            let inner = self.inner.clone();
            let seen = table.buckets.len();
            tx.after_commit(move || grow(&inner, seen));
        }
        Ok(())
    }

    /// The value for `key`, inserting `f()` first if the key is absent (std's
    /// `entry(key).or_insert_with(f)`); borrowed for the rest of the transaction, like
    /// [`get`](Self::get).
    ///
    /// **Conflicts.** When the key is present this only reads its bucket, like `get`: two
    /// transactions that find the same key present do not conflict. When it is absent it is an
    /// [`insert`](Self::insert) of a new key: it writes the bucket and the calling thread's count
    /// shard, and `f` runs once per attempt. The key is taken by reference and cloned into
    /// the map (`to_owned`) only when it is inserted, so a hit allocates nothing.
    ///
    /// With shared values, such as one [`TCounter`] per key, the returned reference is
    /// enough to write them: it lives for the attempt, so no [`Tx::hold`] is needed, and a hit on
    /// a present key reads the bucket and writes only the counter's shard.
    ///
    /// ```
    /// use stm_core::{atomically, collections::{TCounter, TMap}};
    /// use std::sync::Arc;
    ///
    /// let hits: TMap<String, Arc<TCounter>> = TMap::new();
    /// for path in ["/", "/about", "/"] {
    ///     atomically(|tx| hits.get_or_insert_with(tx, path, || Arc::new(TCounter::new()))?.add(tx, 1));
    /// }
    /// assert_eq!(atomically(|tx| hits.get(tx, "/")?.unwrap().get(tx)), 2);
    /// assert_eq!(atomically(|tx| hits.len(tx)), 2);
    /// ```
    #[track_caller]
    pub fn get_or_insert_with<'t, Q>(
        &'t self,
        tx: &Tx<'t, '_>,
        key: &Q,
        f: impl FnOnce() -> V,
    ) -> TxResult<&'t V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let table = tx.read_box(&self.inner.table)?;
        let cell = table.bucket(self.hash(key));
        let cur = tx.read_box(cell)?;
        if let Some((_, v)) = cur.iter().find(|(k, _)| k.borrow() == key) {
            return Ok(v);
        }
        self.push_new(tx, table, cell, cur, key.to_owned(), f())?;
        // The bucket this attempt just wrote: its pending value lives until the attempt ends
        // (even if written again), with the new entry last.
        let next = tx.read_box(cell)?;
        Ok(&next.last().expect("the entry just pushed").1)
    }

    /// Sets, inserts or removes the entry for `key` in one step, as `f` decides from the current
    /// value: `f(Some(&v))` or `f(None)` returns `Some(new)` to store `new` (inserting the key,
    /// cloned with `to_owned`, if it was absent) or `None` to remove the key (or leave it
    /// absent). Returns the value now in the map, borrowed for the rest of the transaction.
    /// `f` runs exactly once per attempt.
    ///
    /// **Conflicts.** Always reads the key's bucket. Writes it whenever `f` returns `Some`, even a
    /// value equal to the current one (the map cannot tell it is unchanged: read with
    /// [`get`](Self::get) first when the common case changes nothing, or use
    /// [`get_or_insert_with`](Self::get_or_insert_with)), and when `f` removes a present key.
    /// Inserting or removing also writes the calling thread's count shard (so it conflicts with
    /// [`len`](Self::len)); replacing a value does not. When the key is absent and `f` returns
    /// `None`, nothing is written.
    ///
    /// ```
    /// use stm_core::{atomically, collections::TMap};
    ///
    /// let stock: TMap<String, u32> = TMap::new();
    /// // Add 5 apples: inserts the key.
    /// atomically(|tx| stock.update(tx, "apple", |n| Some(n.copied().unwrap_or(0) + 5)).map(drop));
    /// // Take 2: replaces the value.
    /// let left = atomically(|tx| Ok(stock.update(tx, "apple", |n| n.map(|n| n - 2))?.copied()));
    /// assert_eq!(left, Some(3));
    /// // Take 3: none left, so the key goes.
    /// let take3 = |n: Option<&u32>| n.map(|n| n - 3).filter(|&n| n > 0);
    /// assert_eq!(atomically(|tx| Ok(stock.update(tx, "apple", take3)?.copied())), None);
    /// assert!(atomically(|tx| stock.is_empty(tx)));
    /// ```
    #[track_caller]
    pub fn update<'t, Q>(
        &'t self,
        tx: &Tx<'t, '_>,
        key: &Q,
        f: impl FnOnce(Option<&V>) -> Option<V>,
    ) -> TxResult<Option<&'t V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let table = tx.read_box(&self.inner.table)?;
        let cell = table.bucket(self.hash(key));
        let cur = tx.read_box(cell)?;
        let found = cur.iter().position(|(k, _)| k.borrow() == key);
        let new = f(found.map(|i| &cur[i].1));
        match (found, new) {
            (None, None) => Ok(None),
            (None, Some(value)) => {
                self.push_new(tx, table, cell, cur, key.to_owned(), value)?;
                // As in `get_or_insert_with`: the pending bucket, the new entry last.
                let next = tx.read_box(cell)?;
                Ok(Some(&next.last().expect("the entry just pushed").1))
            }
            (Some(i), Some(value)) => {
                let mut next = cur.clone();
                next[i].1 = value;
                tx.write_box(cell, next)?;
                let next = tx.read_box(cell)?;
                Ok(Some(&next[i].1))
            }
            (Some(i), None) => {
                self.remove_at(tx, cell, cur, i)?;
                Ok(None)
            }
        }
    }

    /// Removes `key`, returning its value. Writes one bucket and the calling thread's count
    /// shard when the key was present; reads only when it was not.
    ///
    /// ```
    /// use stm_core::{atomically, collections::TMap};
    /// let m = TMap::new();
    /// atomically(|tx| m.insert(tx, 1u32, 10u32).map(drop));
    /// assert_eq!(atomically(|tx| m.remove(tx, &1)), Some(10));
    /// assert_eq!(atomically(|tx| m.remove(tx, &1)), None);
    /// ```
    #[track_caller]
    pub fn remove<'t, Q>(&'t self, tx: &Tx<'t, '_>, key: &Q) -> TxResult<Option<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let cell = self.bucket_of(tx, key)?;
        let cur = tx.read_box(cell)?;
        let Some(i) = cur.iter().position(|(k, _)| k.borrow() == key) else {
            return Ok(None);
        };
        let old = cur[i].1.clone();
        self.remove_at(tx, cell, cur, i)?;
        Ok(Some(old))
    }

    /// Removes entry `i` of bucket `cell`, whose entries are `cur`: writes the bucket and takes
    /// 1 from the calling thread's count shard.
    #[track_caller]
    fn remove_at<'t>(
        &'t self,
        tx: &Tx<'t, '_>,
        cell: &'t TBox<Bucket<K, V>>,
        cur: &[(K, V)],
        i: usize,
    ) -> TxResult<()> {
        let mut next = Vec::with_capacity(cur.len() - 1);
        next.extend(cur[..i].iter().cloned());
        next.extend(cur[i + 1..].iter().cloned());
        tx.write_box(cell, next)?;
        self.inner.count.add(tx, -1)
    }

    /// The number of entries. Reads every count shard: conflicts with concurrent inserts and
    /// removes (of new or present keys), not with lookups or with value updates.
    ///
    /// ```
    /// use stm_core::{atomically, collections::TMap};
    /// let m = TMap::new();
    /// atomically(|tx| { m.insert(tx, 1, 1)?; m.insert(tx, 2, 2)?; Ok(()) });
    /// assert_eq!(atomically(|tx| m.len(tx)), 2);
    /// ```
    #[track_caller]
    pub fn len(&self, tx: &Tx<'_, '_>) -> TxResult<usize> {
        Ok(self.inner.count.get(tx)?.max(0) as usize)
    }

    /// Whether the map is empty (reads every count shard, like [`len`](Self::len)).
    ///
    /// ```
    /// let m: stm_core::collections::TMap<u8, u8> = stm_core::collections::TMap::new();
    /// assert!(stm_core::atomically(|tx| m.is_empty(tx)));
    /// ```
    #[track_caller]
    pub fn is_empty(&self, tx: &Tx<'_, '_>) -> TxResult<bool> {
        Ok(self.len(tx)? == 0)
    }

    /// Every entry, in no particular order, borrowed for the rest of the transaction. Reads
    /// every bucket up front (so the iterator itself cannot fail), and so conflicts with every
    /// concurrent writer: iterate in transactions that can afford it.
    ///
    /// ```
    /// use stm_core::{atomically, collections::TMap};
    /// let m = TMap::new();
    /// atomically(|tx| { m.insert(tx, 1, 10)?; m.insert(tx, 2, 20)?; Ok(()) });
    /// let sum: i32 = atomically(|tx| Ok(m.iter(tx)?.map(|(_, v)| v).sum()));
    /// assert_eq!(sum, 30);
    /// ```
    #[track_caller]
    pub fn iter<'a>(&'a self, tx: &Tx<'a, '_>) -> TxResult<Iter<'a, K, V>> {
        let table = tx.read_box(&self.inner.table)?;
        let mut buckets = Vec::new();
        for cell in table.buckets.iter() {
            let b = tx.read_box(cell)?;
            if !b.is_empty() {
                buckets.push(b.as_slice());
            }
        }
        Ok(Iter {
            buckets: buckets.into_iter(),
            current: [].iter(),
        })
    }

    /// Removes every entry. Writes every non-empty bucket and the calling thread's count shard
    /// (after reading all shards).
    ///
    /// ```
    /// use stm_core::{atomically, collections::TMap};
    /// let m = TMap::new();
    /// atomically(|tx| m.insert(tx, 1, 1).map(drop));
    /// atomically(|tx| m.clear(tx));
    /// assert!(atomically(|tx| m.is_empty(tx)));
    /// ```
    #[track_caller]
    pub fn clear<'t>(&'t self, tx: &Tx<'t, '_>) -> TxResult<()> {
        let table = tx.read_box(&self.inner.table)?;
        let mut removed = 0i64;
        for cell in table.buckets.iter() {
            let n = tx.read_box(cell)?.len();
            if n > 0 {
                removed += n as i64;
                tx.write_box(cell, Vec::new())?;
            }
        }
        if removed > 0 {
            self.inner.count.add(tx, -removed)?;
        }
        Ok(())
    }
}

/// Doubles the table if it still has `seen` buckets and holds more than `MAX_LOAD` entries per
/// bucket. A transaction of its own, run from an after-commit action (never nested).
fn grow<K, V, S>(inner: &Inner<K, V, S>, seen: usize)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    // The checks run outside any transaction: they are only a heuristic (growing is always
    // correct), and a transaction reading every count shard would conflict with every insert.
    if inner.table.with(|t| t.buckets.len()) != seen {
        return; // someone else grew it already
    }
    let len = inner.count.approximate().max(0) as usize;
    if len <= seen * MAX_LOAD {
        return; // a crowded bucket, not a crowded table
    }
    // Attempts that got as far as copying.
    let mut copies = 0u32;
    atomically(|tx| {
        if copies >= GROW_OPTIMISTIC_ATTEMPTS {
            // Writers keep invalidating the copy: stop wasting whole-table copies and run
            // inevitable (writers of buckets already copied pause until it commits; readers
            // do not).
            tx.become_inevitable()?;
        }
        let table = tx.read_box(&inner.table)?;
        let n = table.buckets.len();
        if n != seen {
            return Ok(()); // grown meanwhile
        }
        copies += 1;
        let m = (n * 2).max((len / MAX_LOAD).next_power_of_two());
        let mut buckets: Vec<Bucket<K, V>> = (0..m).map(|_| Vec::new()).collect();
        for cell in table.buckets.iter() {
            for (k, v) in tx.read_box(cell)? {
                let h = inner.hasher.hash_one(k) as usize & (m - 1);
                buckets[h].push((k.clone(), v.clone()));
            }
        }
        tx.write_box(&inner.table, Table::from_buckets(buckets))
    });
}

/// The entries of a [`TMap`], from [`TMap::iter`].
///
/// ```
/// use stm_core::{atomically, collections::TMap};
/// let m = TMap::new();
/// atomically(|tx| m.insert(tx, 'x', 1).map(drop));
/// let all: Vec<(char, i32)> = atomically(|tx| Ok(m.iter(tx)?.map(|(k, v)| (*k, *v)).collect()));
/// assert_eq!(all, [('x', 1)]);
/// ```
pub struct Iter<'a, K, V> {
    buckets: std::vec::IntoIter<&'a [(K, V)]>,
    current: core::slice::Iter<'a, (K, V)>,
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((k, v)) = self.current.next() {
                return Some((k, v));
            }
            self.current = self.buckets.next()?.iter();
        }
    }
}
