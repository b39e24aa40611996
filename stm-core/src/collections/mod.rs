//! Every operation takes the running transaction (`&Tx`) and composes with any other
//! transactional code: move an element from a queue into a map and bump a counter, all in one
//! atomic step. Each structure is laid out so that operations which do not logically depend on
//! each other touch disjoint words, and therefore never conflict:
//!
//! | structure | conflict-free | conflicts (documented on the type) |
//! | --- | --- | --- |
//! | [`TMap`](crate::collections::TMap), [`TSet`](crate::collections::TSet) | operations on keys in different buckets; `insert`/`remove` counts; `get_or_insert_with` of a present key (a read) | same bucket (same key, or a rare hash collision); `len`/`iter` with writers; growth |
//! | [`TQueue`](crate::collections::TQueue) | `push` with `pop` while not empty | producers with producers, consumers with consumers |
//! | [`TBoundedQueue`](crate::collections::TBoundedQueue) | `push` with `pop` while neither empty nor full | as `TQueue`; `len` with both ends |
//! | [`TCounter`](crate::collections::TCounter) | `add` with `add` (distinct shards per live thread) | `get` with `add` |
//!
//! ```
//! use stm_core::atomically;
//! use stm_core::collections::{TCounter, TMap, TQueue};
//!
//! let jobs: TQueue<u32> = TQueue::new();
//! let done: TMap<u32, String> = TMap::new();
//! let finished = TCounter::new();
//! atomically(|tx| jobs.push(tx, 7));
//! atomically(|tx| {
//!     let job = jobs.pop(tx)?;                // blocks (retry) while the queue is empty
//!     done.insert(tx, job, format!("job {job}"))?;
//!     finished.add(tx, 1)
//! });
//! assert_eq!(atomically(|tx| Ok(done.get(tx, &7)?.cloned())), Some("job 7".to_string()));
//! assert_eq!(finished.load(), 1);
//! ```
//!
//! # Shards and threads
//!
//! [`TCounter`](crate::collections::TCounter) (and the element count inside
//! [`TMap`](crate::collections::TMap)) keep one word per shard, each on its own cache line (so
//! also under its own versioned lock). A thread writes only the shard of its
//! *slot*: a small index that each live thread holds for its whole life and hands back when it
//! exits, the lowest free one first. With at least as many shards as live threads (the default
//! is twice the available parallelism, at least 16), two threads never share a shard, so their
//! `add`s never conflict.
//!
//! # Per-key counters that do not conflict
//!
//! Counting hits per key with `TMap<String, u64>` makes two hits on the same key conflict (both
//! rewrite its bucket). A map of shared [`TCounter`](crate::collections::TCounter)s does not:
//! after the first hit, each hit only reads the bucket and adds to its own shard. (Each
//! counter takes a cache line per shard;
//! [`TCounter::with_shards`](crate::collections::TCounter::with_shards) bounds that for maps
//! with many keys.) [`TMap::get_or_insert_with`](crate::collections::TMap::get_or_insert_with)
//! inserts the counter on the first hit and lends it for the rest of the transaction:
//!
//! ```
//! use stm_core::{Tx, TxResult, atomically};
//! use stm_core::collections::{TCounter, TMap};
//! use std::sync::Arc;
//!
//! fn hit<'t>(
//!     hits: &'t TMap<String, Arc<TCounter>>,
//!     tx: &Tx<'t, '_>,
//!     path: &str,
//! ) -> TxResult<()> {
//!     // Present: a read of the bucket, then a write of our shard. Absent: an insert.
//!     hits.get_or_insert_with(tx, path, || Arc::new(TCounter::new()))?.add(tx, 1)
//! }
//!
//! let hits = TMap::new();
//! for _ in 0..3 {
//!     atomically(|tx| hit(&hits, tx, "/index.html"));
//! }
//! assert_eq!(atomically(|tx| hits.get(tx, "/index.html")?.unwrap().get(tx)), 3);
//! ```
//!
//! # Values and memory
//!
//! Buckets and queue cells are [`TBox`](crate::TBox)es: a write installs a new allocation and the
//! replaced one is reclaimed through the epoch once no transaction can still see it. Reading
//! gives references valid for the rest of the transaction; `pop` returns a clone of the element
//! (so `T: Clone`; wrap large or non-`Clone` values in an `Arc`).

#![cfg(not(loom))]

mod counter;
mod map;
mod queue;
mod set;

pub use counter::TCounter;
pub use map::{Iter, TMap};
pub use queue::{TBoundedQueue, TQueue};
pub use set::{SetIter, TSet};
