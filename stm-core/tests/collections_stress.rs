//! Concurrent stress tests of the collections: fixed operation counts, 2 to 4 threads,
//! invariants checked at the end and inside transactions (no lost or duplicated element, FIFO
//! per producer, exact counts).
// Real threads and the full API: not built under loom (see `tests/loom.rs` for the models).
#![cfg(not(loom))]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use stm_core::collections::{TBoundedQueue, TCounter, TMap, TQueue, TSet};
use stm_core::{Tx, TxResult, atomically};

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x % n
    }
}

#[test]
fn tmap_concurrent_inserts_and_removes_while_growing_keep_exact_contents() {
    const THREADS: u64 = 4;
    const KEYS: u64 = 1500;
    let map: Arc<TMap<u64, u64>> = Arc::new(TMap::with_buckets(1));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let map = map.clone();
            thread::spawn(move || {
                for i in 0..KEYS {
                    let k = t * 1_000_000 + i;
                    assert_eq!(atomically(|tx| map.insert(tx, k, i)), None);
                    if i % 3 == 0 {
                        assert_eq!(atomically(|tx| map.remove(tx, &k)), Some(i));
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let kept = KEYS - KEYS.div_ceil(3);
    assert!(map.buckets() >= 1024, "the table grew: {}", map.buckets());
    atomically(|tx| {
        assert_eq!(map.len(tx)?, (THREADS * kept) as usize);
        assert_eq!(map.iter(tx)?.count(), (THREADS * kept) as usize);
        for t in 0..THREADS {
            for i in 0..KEYS {
                let want = (i % 3 != 0).then_some(i);
                assert_eq!(map.get(tx, &(t * 1_000_000 + i))?.copied(), want);
            }
        }
        Ok(())
    });
}

#[test]
fn tmap_tokens_moving_between_keys_are_never_lost_or_duplicated() {
    // TOKENS keys out of SLOTS hold a token; movers move a token to a free key atomically,
    // auditors check (inside the transaction, so also on doomed attempts: opacity) that exactly
    // TOKENS keys are present and the token values are a permutation.
    const SLOTS: u64 = 64;
    const TOKENS: u64 = 16;
    const MOVES: usize = 3000;
    let map: Arc<TMap<u64, u64>> = Arc::new(TMap::with_buckets(4));
    atomically(|tx| {
        for i in 0..TOKENS {
            map.insert(tx, i, i)?;
        }
        Ok(())
    });
    let bad = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..3u64)
        .map(|t| {
            let map = map.clone();
            let bad = bad.clone();
            thread::spawn(move || {
                let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ (t + 1));
                for n in 0..MOVES {
                    if t == 2 && n % 4 == 0 {
                        atomically(|tx| {
                            let mut vals: Vec<u64> = map.iter(tx)?.map(|(_, v)| *v).collect();
                            vals.sort_unstable();
                            if vals != (0..TOKENS).collect::<Vec<_>>()
                                || map.len(tx)? != TOKENS as usize
                            {
                                bad.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(())
                        });
                        continue;
                    }
                    let (from, to) = (rng.below(SLOTS), rng.below(SLOTS));
                    atomically(|tx| {
                        if from == to || map.contains_key(tx, &to)? {
                            return Ok(());
                        }
                        if let Some(v) = map.remove(tx, &from)? {
                            assert_eq!(map.insert(tx, to, v)?, None);
                        }
                        Ok(())
                    });
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(bad.load(Ordering::Relaxed), 0);
    let mut vals: Vec<u64> = atomically(|tx| Ok(map.iter(tx)?.map(|(_, v)| *v).collect()));
    vals.sort_unstable();
    assert_eq!(vals, (0..TOKENS).collect::<Vec<_>>());
}

#[test]
fn tset_concurrent_inserts_of_the_same_elements_succeed_exactly_once() {
    const THREADS: usize = 4;
    const N: u32 = 1000;
    let set: Arc<TSet<u32>> = Arc::new(TSet::with_buckets(2));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let set = set.clone();
            thread::spawn(move || {
                let mut won = Vec::new();
                for i in 0..N {
                    let k = (i * 7 + t as u32 * 13) % N;
                    if atomically(|tx| set.insert(tx, k)) {
                        won.push(k);
                    }
                }
                won
            })
        })
        .collect();
    let mut all: Vec<u32> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..N).collect::<Vec<_>>(),
        "each element inserted exactly once"
    );
    assert_eq!(atomically(|tx| set.len(tx)), N as usize);
}

/// Two producers, two consumers; every element arrives exactly once, and each consumer sees
/// each producer's elements in the order they were pushed.
fn fifo_per_producer<Q: Send + Sync + 'static>(
    q: Arc<Q>,
    push: for<'t> fn(&'t Q, &Tx<'t, '_>, (u64, u64)) -> TxResult<()>,
    pop: for<'t> fn(&'t Q, &Tx<'t, '_>) -> TxResult<(u64, u64)>,
) {
    const PRODUCERS: u64 = 2;
    const CONSUMERS: u64 = 2;
    const PER_PRODUCER: u64 = 4000;
    const PER_CONSUMER: u64 = PRODUCERS * PER_PRODUCER / CONSUMERS;
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let q = q.clone();
            thread::spawn(move || {
                for i in 0..PER_PRODUCER {
                    atomically(|tx| push(&q, tx, (p, i)));
                }
            })
        })
        .collect();
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let q = q.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                for _ in 0..PER_CONSUMER {
                    got.push(atomically(|tx| pop(&q, tx)));
                }
                got
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    let mut seen = HashSet::new();
    for c in consumers {
        let got = c.join().unwrap();
        let mut last = [None::<u64>; PRODUCERS as usize];
        for &(p, i) in &got {
            let l = &mut last[p as usize];
            assert!(l.is_none_or(|l| l < i), "producer {p}: {i} after {l:?}");
            *l = Some(i);
            assert!(seen.insert((p, i)), "duplicate {p}/{i}");
        }
    }
    assert_eq!(seen.len() as u64, PRODUCERS * PER_PRODUCER, "nothing lost");
}

#[test]
fn tqueue_two_producers_two_consumers_fifo_per_producer() {
    let q = Arc::new(TQueue::new());
    fifo_per_producer(q.clone(), |q, tx, v| q.push(tx, v), |q, tx| q.pop(tx));
    assert!(atomically(|tx| q.is_empty(tx)));
}

#[test]
fn tboundedqueue_two_producers_two_consumers_fifo_per_producer_blocking_on_full() {
    let q = Arc::new(TBoundedQueue::with_capacity(4));
    fifo_per_producer(q.clone(), |q, tx, v| q.push(tx, v), |q, tx| q.pop(tx));
    assert_eq!(atomically(|tx| q.len(tx)), 0);
}

#[test]
fn elements_moved_between_queues_are_conserved() {
    // Three threads move elements between an unbounded and a bounded queue in both directions,
    // one transaction per move; the multiset of elements never changes.
    const N: u64 = 64;
    const MOVES: usize = 3000;
    let a = Arc::new(TQueue::new());
    let b = Arc::new(TBoundedQueue::with_capacity(32));
    atomically(|tx| (0..N).try_for_each(|i| a.push(tx, i)));
    let handles: Vec<_> = (0..3)
        .map(|t| {
            let (a, b) = (a.clone(), b.clone());
            thread::spawn(move || {
                for n in 0..MOVES {
                    atomically(|tx| {
                        if (n + t) % 2 == 0 {
                            if let Some(v) = a.try_pop(tx)?
                                && let Err(v) = b.try_push(tx, v)?
                            {
                                a.push(tx, v)?;
                            }
                        } else if let Some(v) = b.try_pop(tx)? {
                            a.push(tx, v)?;
                        }
                        // Opacity: a consistent total in every attempt.
                        assert_eq!(a.len(tx)? + b.len(tx)?, N as usize);
                        Ok(())
                    });
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut all: Vec<u64> = atomically(|tx| {
        let mut v = Vec::new();
        while let Some(x) = a.try_pop(tx)? {
            v.push(x);
        }
        while let Some(x) = b.try_pop(tx)? {
            v.push(x);
        }
        Ok(v)
    });
    all.sort_unstable();
    assert_eq!(all, (0..N).collect::<Vec<_>>());
}

#[test]
fn tcounter_concurrent_adds_are_exact_and_readers_see_monotonic_totals() {
    const THREADS: i64 = 4;
    const ADDS: i64 = 5000;
    let c = Arc::new(TCounter::new());
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let c = c.clone();
            thread::spawn(move || {
                let mut last = 0;
                for i in 0..ADDS {
                    if t == 0 && i % 10 == 0 {
                        // Only increments happen, so totals never go down.
                        let now = atomically(|tx| c.get(tx));
                        assert!(now >= last);
                        last = now;
                    }
                    atomically(|tx| c.add(tx, 1));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(c.load(), THREADS * ADDS);
}
