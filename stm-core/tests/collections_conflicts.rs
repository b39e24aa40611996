//! Which operations of the collections conflict, shown by forcing an interleaving: transaction A
//! does its operations and then, on its first attempt only, waits (inside the transaction,
//! before committing) until transaction B, on another thread, has committed. A then commits: if
//! B wrote something A read, A's commit-time validation fails and A runs a second attempt.
//! Counting A's attempts tells, deterministically, whether the two conflict.
//!
//! The tests take a global lock so that they run one at a time: transactions of concurrently
//! running tests could otherwise conflict with A (they share `SCRATCH`, and words allocated by
//! different threads can share a versioned lock: the lock index is the word's address bits 3 to
//! 22, and glibc's per-thread heaps are 64 MiB aligned, so objects allocated by two threads at
//! the same offset of their heaps share a lock). For the same reason every structure whose
//! words A or B touch is allocated on the test thread.
// Real threads and the full API: not built under loom (see `tests/loom.rs` for the models).
#![cfg(not(loom))]

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use stm_core::collections::{TBoundedQueue, TCounter, TMap, TQueue, TSet};
use stm_core::{TVar, Tx, TxResult, atomically};

/// Hashes an integer key to itself, so tests choose buckets.
#[derive(Clone, Copy, Default)]
struct Identity;
struct IdentityHasher(u64);
impl BuildHasher for Identity {
    type Hasher = IdentityHasher;
    fn build_hasher(&self) -> IdentityHasher {
        IdentityHasher(0)
    }
}
impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0 << 8 | b as u64;
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = n as u64;
    }
}

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs A and B interleaved as described in the module doc; returns A's number of attempts that
/// got through A's operations.
fn attempts_of_a<'env>(
    a: impl for<'t> Fn(&Tx<'t, 'env>) -> TxResult<()> + Sync,
    b: impl for<'t> Fn(&Tx<'t, 'env>) -> TxResult<()> + Sync,
) -> u32 {
    let attempts = AtomicU32::new(0);
    let a_ready = Barrier::new(2);
    let b_done = Barrier::new(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            atomically(|tx| {
                a(tx)?;
                // Counted once A's operations are done: an attempt that stopped inside them is
                // not a conflict with B (the first attempt of a call site runs without a read
                // set and stops at its first write, to run again with one).
                let n = attempts.fetch_add(1, Ordering::Relaxed) + 1;
                if n == 1 {
                    a_ready.wait();
                    b_done.wait();
                }
                Ok(())
            })
        });
        s.spawn(|| {
            a_ready.wait();
            atomically(|tx| b(tx));
            b_done.wait();
        });
    });
    attempts.load(Ordering::Relaxed)
}

/// A word that A writes, so that A is an update transaction and validates at commit.
static SCRATCH: TVar<u64> = TVar::new(0);

fn touch(tx: &Tx<'_, '_>) -> TxResult<()> {
    tx.modify(&SCRATCH, |x| x + 1).map(drop)
}

fn map() -> Box<TMap<u32, u32, Identity>> {
    let m = Box::new(TMap::with_buckets_and_hasher(64, Identity));
    atomically(|tx| {
        m.insert(tx, 5, 5)?;
        m.insert(tx, 7, 7).map(drop)
    });
    m
}

#[test]
fn tmap_keys_in_different_buckets_do_not_conflict() {
    let _serial = serial();
    let m = map();
    let n = attempts_of_a(
        |tx| {
            assert_eq!(m.get(tx, &5)?, Some(&5));
            m.insert(tx, 1, 1).map(drop)
        },
        |tx| {
            m.insert(tx, 2, 2)?;
            m.remove(tx, &7).map(drop)
        },
    );
    assert_eq!(n, 1);
    assert_eq!(atomically(|tx| m.len(tx)), 3);
}

#[test]
fn tmap_same_bucket_conflicts() {
    let _serial = serial();
    let m = map();
    // Keys 1 and 65 share bucket 1 of 64.
    let n = attempts_of_a(
        |tx| m.insert(tx, 1, 1).map(drop),
        |tx| m.insert(tx, 65, 65).map(drop),
    );
    assert_eq!(n, 2);
    assert_eq!(atomically(|tx| m.len(tx)), 4);
}

#[test]
fn tmap_len_conflicts_with_a_concurrent_insert_but_not_with_an_update() {
    let _serial = serial();
    let m = map();
    let n = attempts_of_a(
        |tx| {
            m.len(tx)?;
            touch(tx)
        },
        |tx| m.insert(tx, 5, 6).map(drop), // present key: value update, count unchanged
    );
    assert_eq!(n, 1);
    let n = attempts_of_a(
        |tx| {
            m.len(tx)?;
            touch(tx)
        },
        |tx| m.insert(tx, 9, 9).map(drop),
    );
    assert_eq!(n, 2);
}

#[test]
fn tset_different_elements_do_not_conflict() {
    let _serial = serial();
    let s = Box::new(TSet::with_buckets_and_hasher(64, Identity));
    let n = attempts_of_a(
        |tx| s.insert(tx, 3u32).map(drop),
        |tx| s.insert(tx, 4u32).map(drop),
    );
    assert_eq!(n, 1);
    assert_eq!(atomically(|tx| s.len(tx)), 2);
}

#[test]
fn tcounter_adds_do_not_conflict_but_get_does() {
    let _serial = serial();
    let c = Box::new(TCounter::new());
    assert_eq!(attempts_of_a(|tx| c.add(tx, 1), |tx| c.add(tx, 10)), 1);
    let n = attempts_of_a(
        |tx| {
            c.get(tx)?;
            c.add(tx, 1)
        },
        |tx| c.add(tx, 10),
    );
    assert_eq!(n, 2);
    assert_eq!(c.load(), 22);
}

#[test]
fn hits_on_the_same_key_of_a_map_of_counters_do_not_conflict() {
    let _serial = serial();
    let hits: Box<TMap<u32, Arc<TCounter>, Identity>> =
        Box::new(TMap::with_buckets_and_hasher(64, Identity));
    atomically(|tx| hits.insert(tx, 1, Arc::new(TCounter::new())).map(drop));
    /// One hit: a read of the bucket and a write of this thread's shard.
    fn hit<'t>(hits: &'t TMap<u32, Arc<TCounter>, Identity>, tx: &Tx<'t, '_>) -> TxResult<()> {
        hits.get(tx, &1)?.expect("present").add(tx, 1)
    }
    assert_eq!(attempts_of_a(|tx| hit(&hits, tx), |tx| hit(&hits, tx)), 1);
    assert_eq!(
        atomically(|tx| hits.get(tx, &1)?.expect("present").get(tx)),
        2
    );
    // The same with a plain value per key conflicts: both rewrite the bucket.
    let plain = map();
    fn bump<'t>(plain: &'t TMap<u32, u32, Identity>, tx: &Tx<'t, '_>) -> TxResult<()> {
        let v = *plain.get(tx, &5)?.expect("present");
        plain.insert(tx, 5, v + 1).map(drop)
    }
    assert_eq!(
        attempts_of_a(|tx| bump(&plain, tx), |tx| bump(&plain, tx)),
        2
    );
}

#[test]
fn get_or_insert_with_on_a_present_key_only_reads_its_bucket() {
    let _serial = serial();
    let hits: Box<TMap<u32, Arc<TCounter>, Identity>> =
        Box::new(TMap::with_buckets_and_hasher(64, Identity));
    fn hit<'t>(
        hits: &'t TMap<u32, Arc<TCounter>, Identity>,
        tx: &Tx<'t, '_>,
        key: u32,
    ) -> TxResult<()> {
        hits.get_or_insert_with(tx, &key, || Arc::new(TCounter::new()))?
            .add(tx, 1)
    }
    // Both find the key absent: both insert it, so they conflict (A reran and found B's).
    assert_eq!(
        attempts_of_a(|tx| hit(&hits, tx, 1), |tx| hit(&hits, tx, 1)),
        2
    );
    // Present: both only read the bucket and add to their own shards.
    assert_eq!(
        attempts_of_a(|tx| hit(&hits, tx, 1), |tx| hit(&hits, tx, 1)),
        1
    );
    assert_eq!(
        atomically(|tx| hits.get(tx, &1)?.expect("present").get(tx)),
        4
    );
    assert_eq!(atomically(|tx| hits.len(tx)), 1);
}

#[test]
fn tmap_update_conflicts_only_when_it_writes() {
    let _serial = serial();
    let m = map();
    // Absent and left absent: a read of the bucket, which B's write of another bucket misses
    // and B's insert into the same bucket (key 65, bucket 1) invalidates.
    let n = attempts_of_a(
        |tx| {
            assert_eq!(m.update(tx, &1, |_| None)?, None);
            touch(tx)
        },
        |tx| m.insert(tx, 2, 2).map(drop),
    );
    assert_eq!(n, 1);
    let n = attempts_of_a(
        |tx| {
            m.update(tx, &1, |_| None)?;
            touch(tx)
        },
        |tx| m.insert(tx, 65, 65).map(drop),
    );
    assert_eq!(n, 2);
    // Replacing a present value does not write the count: a `len` in A does not conflict
    // with it, as it does with an insert.
    let n = attempts_of_a(
        |tx| {
            m.len(tx)?;
            touch(tx)
        },
        |tx| m.update(tx, &5, |v| v.map(|v| v + 1)).map(drop),
    );
    assert_eq!(n, 1);
    let n = attempts_of_a(
        |tx| {
            m.len(tx)?;
            touch(tx)
        },
        |tx| m.update(tx, &9, |_| Some(9)).map(drop),
    );
    assert_eq!(n, 2);
    assert_eq!(atomically(|tx| Ok(m.get(tx, &5)?.copied())), Some(6));
}

#[test]
fn tqueue_push_and_pop_do_not_conflict_when_not_empty() {
    let _serial = serial();
    // One element: the consumer takes it while the producer appends behind it. (Every node
    // whose words A or B touch is allocated here, on the test thread: see the module doc.)
    let q = Box::new(TQueue::new());
    atomically(|tx| q.push(tx, 1));
    let n = attempts_of_a(|tx| q.push(tx, 2), |tx| q.pop(tx).map(|v| assert_eq!(v, 1)));
    assert_eq!(n, 1);
    assert_eq!(atomically(|tx| q.try_pop(tx)), Some(2));
    // And the other way round: A consumes, B produces.
    let q = Box::new(TQueue::new());
    atomically(|tx| {
        q.push(tx, 10)?;
        q.push(tx, 20)?;
        q.pop(tx).map(drop)
    });
    let n = attempts_of_a(
        |tx| q.pop(tx).map(|v| assert_eq!(v, 20)),
        |tx| q.push(tx, 30),
    );
    assert_eq!(n, 1);
    assert_eq!(atomically(|tx| q.try_pop(tx)), Some(30));
}

/// A queue into which the test thread pushed `pushed` elements and popped `popped`.
fn queue_at(pushed: u32, popped: u32) -> Box<TQueue<u32>> {
    let q = Box::new(TQueue::new());
    atomically(|tx| (0..pushed).try_for_each(|i| q.push(tx, i)));
    atomically(|tx| (0..popped).try_for_each(|_| q.pop(tx).map(drop)));
    q
}

#[test]
fn tqueue_ends_do_not_conflict_across_segment_boundaries() {
    let _serial = serial();
    // The producer starts a new segment while the consumer takes the last cell of the old one.
    let q = queue_at(32, 31);
    let n = attempts_of_a(
        |tx| q.push(tx, 32),
        |tx| q.pop(tx).map(|v| assert_eq!(v, 31)),
    );
    assert_eq!(n, 1);
    // The consumer moves to the next segment while the producer fills it.
    let q = queue_at(33, 32);
    let n = attempts_of_a(
        |tx| q.push(tx, 33),
        |tx| q.pop(tx).map(|v| assert_eq!(v, 32)),
    );
    assert_eq!(n, 1);
    let n = attempts_of_a(
        |tx| q.pop(tx).map(|v| assert_eq!(v, 33)),
        |tx| q.push(tx, 34),
    );
    assert_eq!(n, 1);
    assert_eq!(atomically(|tx| q.len(tx)), 1);
}

#[test]
fn tqueue_pop_on_empty_at_a_segment_boundary_conflicts_with_push() {
    let _serial = serial();
    let q = queue_at(32, 32);
    let n = attempts_of_a(
        |tx| {
            q.try_pop(tx)?;
            touch(tx)
        },
        |tx| q.push(tx, 7),
    );
    assert_eq!(n, 2);
}

#[test]
fn tqueue_pop_on_empty_conflicts_with_push() {
    let _serial = serial();
    let q = Box::new(TQueue::new());
    let n = attempts_of_a(
        |tx| {
            q.try_pop(tx)?;
            touch(tx)
        },
        |tx| q.push(tx, 1),
    );
    assert_eq!(n, 2);
}

#[test]
fn tqueue_producers_conflict_with_each_other() {
    let _serial = serial();
    let q = Box::new(TQueue::new());
    assert_eq!(attempts_of_a(|tx| q.push(tx, 1), |tx| q.push(tx, 2)), 2);
    assert_eq!(atomically(|tx| Ok((q.pop(tx)?, q.pop(tx)?))), (2, 1));
}

#[test]
fn tboundedqueue_ends_do_not_conflict_when_neither_empty_nor_full() {
    let _serial = serial();
    let q = Box::new(TBoundedQueue::with_capacity(3));
    atomically(|tx| q.push(tx, 1));
    let n = attempts_of_a(|tx| q.push(tx, 2), |tx| q.pop(tx).map(|v| assert_eq!(v, 1)));
    assert_eq!(n, 1);
    // One element (2) left, two free cells: consumer A, producer B.
    let n = attempts_of_a(|tx| q.pop(tx).map(|v| assert_eq!(v, 2)), |tx| q.push(tx, 3));
    assert_eq!(n, 1);
}

#[test]
fn tboundedqueue_full_and_empty_do_conflict() {
    let _serial = serial();
    let q = Box::new(TBoundedQueue::with_capacity(2));
    atomically(|tx| {
        q.push(tx, 1)?;
        q.push(tx, 2)
    });
    let n = attempts_of_a(
        |tx| {
            // Full on the first attempt (Err); after B's pop, the second attempt pushes.
            let _ = q.try_push(tx, 9)?;
            touch(tx)
        },
        |tx| q.pop(tx).map(drop),
    );
    assert_eq!(n, 2);
    // Now [2, 9]: empty it.
    atomically(|tx| Ok((q.pop(tx)?, q.pop(tx)?)));
    let n = attempts_of_a(
        |tx| {
            q.try_pop(tx)?;
            touch(tx)
        },
        |tx| q.push(tx, 5),
    );
    assert_eq!(n, 2);
}
