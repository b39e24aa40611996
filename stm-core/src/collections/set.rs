//! [`TSet`]: a transactional hash set, a [`TMap`] with unit values.

use super::map::{Iter, TMap};
use crate::{Tx, TxResult};
use core::borrow::Borrow;
use core::hash::{BuildHasher, Hash};
use std::hash::RandomState;

/// A transactional hash set: a [`TMap<K, ()>`](TMap), with the same conflict behaviour
/// (operations on elements in different buckets never conflict; `len` and `iter` conflict with
/// concurrent writers) and the same growth.
///
/// ```
/// use stm_core::{atomically, collections::TSet};
/// let seen: TSet<String> = TSet::new();
/// assert!(atomically(|tx| seen.insert(tx, "/index.html".to_string())));
/// assert!(!atomically(|tx| seen.insert(tx, "/index.html".to_string())));
/// assert!(atomically(|tx| seen.contains(tx, "/index.html")));
/// assert_eq!(atomically(|tx| seen.len(tx)), 1);
/// ```
pub struct TSet<K: Send + Sync + 'static, S = RandomState> {
    map: TMap<K, (), S>,
}

impl<K> TSet<K, RandomState>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// An empty set with 16 buckets; it grows as elements are added.
    ///
    /// ```
    /// let s: stm_core::collections::TSet<u32> = stm_core::collections::TSet::new();
    /// assert!(stm_core::atomically(|tx| s.is_empty(tx)));
    /// ```
    pub fn new() -> Self {
        TSet { map: TMap::new() }
    }

    /// An empty set with `n` buckets (rounded up to a power of two, at least 1).
    ///
    /// ```
    /// let s: stm_core::collections::TSet<u32> = stm_core::collections::TSet::with_buckets(64);
    /// assert_eq!(s.buckets(), 64);
    /// ```
    pub fn with_buckets(n: usize) -> Self {
        TSet {
            map: TMap::with_buckets(n),
        }
    }
}

impl<K> Default for TSet<K, RandomState>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K, S> TSet<K, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// An empty set with `n` buckets that hashes elements with `hasher`.
    ///
    /// ```
    /// let s: stm_core::collections::TSet<u8> =
    ///     stm_core::collections::TSet::with_buckets_and_hasher(4, std::hash::RandomState::new());
    /// assert_eq!(s.buckets(), 4);
    /// ```
    pub fn with_buckets_and_hasher(n: usize, hasher: S) -> Self {
        TSet {
            map: TMap::with_buckets_and_hasher(n, hasher),
        }
    }

    /// The number of buckets of the committed table (outside a transaction).
    ///
    /// ```
    /// let s: stm_core::collections::TSet<u8> = stm_core::collections::TSet::new();
    /// assert_eq!(s.buckets(), 16);
    /// ```
    pub fn buckets(&self) -> usize {
        self.map.buckets()
    }

    /// Adds `key`; `true` if it was not present.
    ///
    /// ```
    /// let s = stm_core::collections::TSet::new();
    /// assert!(stm_core::atomically(|tx| s.insert(tx, 1)));
    /// ```
    #[track_caller]
    pub fn insert<'t>(&'t self, tx: &Tx<'t, '_>, key: K) -> TxResult<bool> {
        if self.map.contains_key(tx, &key)? {
            // Present: read only, so concurrent "already there" inserts do not conflict.
            return Ok(false);
        }
        Ok(self.map.insert(tx, key, ())?.is_none())
    }

    /// Removes `key`; `true` if it was present.
    ///
    /// ```
    /// let s = stm_core::collections::TSet::new();
    /// stm_core::atomically(|tx| s.insert(tx, 1).map(drop));
    /// assert!(stm_core::atomically(|tx| s.remove(tx, &1)));
    /// ```
    #[track_caller]
    pub fn remove<'t, Q>(&'t self, tx: &Tx<'t, '_>, key: &Q) -> TxResult<bool>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        Ok(self.map.remove(tx, key)?.is_some())
    }

    /// Whether `key` is present. Reads one bucket.
    ///
    /// ```
    /// let s: stm_core::collections::TSet<u8> = stm_core::collections::TSet::new();
    /// assert!(!stm_core::atomically(|tx| s.contains(tx, &1)));
    /// ```
    #[track_caller]
    pub fn contains<'t, Q>(&'t self, tx: &Tx<'t, '_>, key: &Q) -> TxResult<bool>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.contains_key(tx, key)
    }

    /// The number of elements (reads every count shard; see [`TMap::len`]).
    ///
    /// ```
    /// let s = stm_core::collections::TSet::new();
    /// stm_core::atomically(|tx| s.insert(tx, 'a').map(drop));
    /// assert_eq!(stm_core::atomically(|tx| s.len(tx)), 1);
    /// ```
    #[track_caller]
    pub fn len(&self, tx: &Tx<'_, '_>) -> TxResult<usize> {
        self.map.len(tx)
    }

    /// Whether the set is empty (reads every count shard).
    ///
    /// ```
    /// let s: stm_core::collections::TSet<u8> = stm_core::collections::TSet::new();
    /// assert!(stm_core::atomically(|tx| s.is_empty(tx)));
    /// ```
    #[track_caller]
    pub fn is_empty(&self, tx: &Tx<'_, '_>) -> TxResult<bool> {
        self.map.is_empty(tx)
    }

    /// Every element, in no particular order (reads every bucket; see [`TMap::iter`]).
    ///
    /// ```
    /// let s = stm_core::collections::TSet::new();
    /// stm_core::atomically(|tx| s.insert(tx, 5).map(drop));
    /// let v: Vec<i32> = stm_core::atomically(|tx| Ok(s.iter(tx)?.copied().collect()));
    /// assert_eq!(v, [5]);
    /// ```
    #[track_caller]
    pub fn iter<'a>(&'a self, tx: &Tx<'a, '_>) -> TxResult<SetIter<'a, K>> {
        Ok(SetIter {
            inner: self.map.iter(tx)?,
        })
    }

    /// Removes every element.
    ///
    /// ```
    /// let s = stm_core::collections::TSet::new();
    /// stm_core::atomically(|tx| { s.insert(tx, 1)?; s.clear(tx) });
    /// assert!(stm_core::atomically(|tx| s.is_empty(tx)));
    /// ```
    #[track_caller]
    pub fn clear<'t>(&'t self, tx: &Tx<'t, '_>) -> TxResult<()> {
        self.map.clear(tx)
    }
}

/// The elements of a [`TSet`], from [`TSet::iter`].
///
/// ```
/// let s = stm_core::collections::TSet::new();
/// stm_core::atomically(|tx| s.insert(tx, 2u8).map(drop));
/// assert_eq!(stm_core::atomically(|tx| Ok(s.iter(tx)?.count())), 1);
/// ```
pub struct SetIter<'a, K> {
    inner: Iter<'a, K, ()>,
}

impl<'a, K> Iterator for SetIter<'a, K> {
    type Item = &'a K;

    fn next(&mut self) -> Option<&'a K> {
        self.inner.next().map(|(k, _)| k)
    }
}
