//! The transactional collections against sequential models: random operation sequences
//! (proptest), grouped into transactions, some of which are cancelled (their effects must
//! vanish), and a few deterministic edge cases.
// Real threads and the full API: not built under loom (see `tests/loom.rs` for the models).
#![cfg(not(loom))]

use proptest::prelude::*;
use std::collections::{HashMap, HashSet, VecDeque};
use stm_core::collections::{TBoundedQueue, TCounter, TMap, TQueue, TSet};
use stm_core::{Tx, TxError, TxResult, atomically, try_atomically};

/// Runs `body` as one transaction; when `cancel`, gives up at the end with a user error, so
/// nothing it did may stay.
fn run_tx<'env, R>(cancel: bool, mut body: impl for<'t> FnMut(&Tx<'t, 'env>) -> TxResult<R>) {
    let r: Result<R, ()> = try_atomically(|tx| {
        let r = body(tx)?;
        if cancel {
            Err(TxError::User(()))
        } else {
            Ok(r)
        }
    });
    assert_eq!(r.is_err(), cancel);
}

#[derive(Clone, Debug)]
enum MapOp {
    Insert(u8, u16),
    Remove(u8),
    Get(u8),
    /// `update` with: 0 remove, 1 add (insert 0 + n if absent), 2 add only if present.
    Update(u8, u8, u16),
    GetOrInsert(u8, u16),
    Len,
    Iter,
    Clear,
}

fn map_op() -> impl Strategy<Value = MapOp> {
    prop_oneof![
        6 => (0u8..48, any::<u16>()).prop_map(|(k, v)| MapOp::Insert(k, v)),
        3 => (0u8..48).prop_map(MapOp::Remove),
        3 => (0u8..48).prop_map(MapOp::Get),
        3 => (0u8..48, 0u8..3, any::<u16>()).prop_map(|(k, m, n)| MapOp::Update(k, m, n)),
        2 => (0u8..48, any::<u16>()).prop_map(|(k, v)| MapOp::GetOrInsert(k, v)),
        1 => Just(MapOp::Len),
        1 => Just(MapOp::Iter),
        1 => Just(MapOp::Clear).prop_filter("rare", |_| true),
    ]
}

fn apply_map(map: &TMap<u8, u16>, model: &mut HashMap<u8, u16>, ops: &[MapOp], cancel: bool) {
    let mut scratch = model.clone();
    run_tx(cancel, |tx| {
        // The body may run more than once: start from the committed model each time.
        scratch = model.clone();
        for op in ops {
            match *op {
                MapOp::Insert(k, v) => {
                    assert_eq!(map.insert(tx, k, v)?, scratch.insert(k, v));
                }
                MapOp::Remove(k) => assert_eq!(map.remove(tx, &k)?, scratch.remove(&k)),
                MapOp::Get(k) => {
                    assert_eq!(map.get(tx, &k)?, scratch.get(&k));
                    assert_eq!(map.contains_key(tx, &k)?, scratch.contains_key(&k));
                }
                MapOp::Update(k, mode, n) => {
                    let f = |v: Option<&u16>| match mode {
                        0 => None,
                        1 => Some(v.copied().unwrap_or(0).wrapping_add(n)),
                        _ => v.map(|v| v.wrapping_add(n)),
                    };
                    let want = f(scratch.get(&k));
                    match want {
                        Some(v) => scratch.insert(k, v),
                        None => scratch.remove(&k),
                    };
                    let mut calls = 0;
                    let got = map.update(tx, &k, |v| {
                        calls += 1;
                        f(v)
                    })?;
                    assert_eq!(calls, 1);
                    assert_eq!(got.copied(), want);
                }
                MapOp::GetOrInsert(k, v) => {
                    let want = *scratch.entry(k).or_insert(v);
                    assert_eq!(*map.get_or_insert_with(tx, &k, || v)?, want);
                    assert_eq!(map.get(tx, &k)?, Some(&want));
                }
                MapOp::Len => {
                    assert_eq!(map.len(tx)?, scratch.len());
                    assert_eq!(map.is_empty(tx)?, scratch.is_empty());
                }
                MapOp::Iter => {
                    let mut got: Vec<(u8, u16)> = map.iter(tx)?.map(|(k, v)| (*k, *v)).collect();
                    let mut want: Vec<(u8, u16)> = scratch.iter().map(|(k, v)| (*k, *v)).collect();
                    got.sort_unstable();
                    want.sort_unstable();
                    assert_eq!(got, want);
                }
                MapOp::Clear => {
                    map.clear(tx)?;
                    scratch.clear();
                }
            }
        }
        Ok(())
    });
    if !cancel {
        *model = scratch;
    }
}

#[derive(Clone, Debug)]
enum QueueOp {
    Push(u32),
    TryPop,
    Peek,
    Len,
}

fn queue_op() -> impl Strategy<Value = QueueOp> {
    prop_oneof![
        4 => any::<u32>().prop_map(QueueOp::Push),
        3 => Just(QueueOp::TryPop),
        1 => Just(QueueOp::Peek),
        1 => Just(QueueOp::Len),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn tmap_matches_a_hashmap(
        buckets in 1usize..8,
        txs in prop::collection::vec(
            (prop::collection::vec(map_op(), 1..8), prop::bool::weighted(0.2)),
            1..60,
        ),
    ) {
        let map = TMap::with_buckets(buckets);
        let mut model = HashMap::new();
        for (ops, cancel) in &txs {
            apply_map(&map, &mut model, ops, *cancel);
        }
        // A fresh transaction sees exactly the committed model.
        let all: HashMap<u8, u16> =
            atomically(|tx| Ok(map.iter(tx)?.map(|(k, v)| (*k, *v)).collect()));
        prop_assert_eq!(all, model.clone());
        prop_assert_eq!(atomically(|tx| map.len(tx)), model.len());
    }

    #[test]
    fn tset_matches_a_hashset(
        txs in prop::collection::vec(
            (prop::collection::vec((0u8..3, 0u16..40), 1..8), prop::bool::weighted(0.2)),
            1..60,
        ),
    ) {
        let set = TSet::with_buckets(2);
        let mut model: HashSet<u16> = HashSet::new();
        for (ops, cancel) in &txs {
            let mut scratch = model.clone();
            run_tx(*cancel, |tx| {
                scratch = model.clone();
                for &(op, k) in ops {
                    match op {
                        0 => assert_eq!(set.insert(tx, k)?, scratch.insert(k)),
                        1 => assert_eq!(set.remove(tx, &k)?, scratch.remove(&k)),
                        _ => {
                            assert_eq!(set.contains(tx, &k)?, scratch.contains(&k));
                            assert_eq!(set.len(tx)?, scratch.len());
                        }
                    }
                }
                Ok(())
            });
            if !*cancel {
                model = scratch;
            }
        }
        let all: HashSet<u16> = atomically(|tx| Ok(set.iter(tx)?.copied().collect()));
        prop_assert_eq!(all, model);
    }

    #[test]
    fn tqueue_matches_a_vecdeque(
        txs in prop::collection::vec(
            (prop::collection::vec(queue_op(), 1..8), prop::bool::weighted(0.2)),
            1..60,
        ),
    ) {
        let q = TQueue::new();
        let mut model: VecDeque<u32> = VecDeque::new();
        for (ops, cancel) in &txs {
            let mut scratch = model.clone();
            run_tx(*cancel, |tx| {
                scratch = model.clone();
                for op in ops {
                    match *op {
                        QueueOp::Push(v) => {
                            q.push(tx, v)?;
                            scratch.push_back(v);
                        }
                        QueueOp::TryPop => assert_eq!(q.try_pop(tx)?, scratch.pop_front()),
                        QueueOp::Peek => assert_eq!(q.peek(tx)?, scratch.front().copied()),
                        QueueOp::Len => {
                            assert_eq!(q.len(tx)?, scratch.len());
                            assert_eq!(q.is_empty(tx)?, scratch.is_empty());
                        }
                    }
                }
                Ok(())
            });
            if !*cancel {
                model = scratch;
            }
        }
        let rest: Vec<u32> = atomically(|tx| {
            let mut v = Vec::new();
            while let Some(x) = q.try_pop(tx)? {
                v.push(x);
            }
            Ok(v)
        });
        prop_assert_eq!(rest, Vec::from(model));
    }

    #[test]
    fn tboundedqueue_matches_a_capped_vecdeque(
        cap in 1usize..6,
        txs in prop::collection::vec(
            (prop::collection::vec(queue_op(), 1..8), prop::bool::weighted(0.2)),
            1..60,
        ),
    ) {
        let q = TBoundedQueue::with_capacity(cap);
        let mut model: VecDeque<u32> = VecDeque::new();
        for (ops, cancel) in &txs {
            let mut scratch = model.clone();
            run_tx(*cancel, |tx| {
                scratch = model.clone();
                for op in ops {
                    match *op {
                        QueueOp::Push(v) => {
                            let r = q.try_push(tx, v)?;
                            if scratch.len() < cap {
                                assert_eq!(r, Ok(()));
                                scratch.push_back(v);
                            } else {
                                assert_eq!(r, Err(v));
                            }
                        }
                        QueueOp::TryPop => assert_eq!(q.try_pop(tx)?, scratch.pop_front()),
                        QueueOp::Peek => assert_eq!(q.is_empty(tx)?, scratch.is_empty()),
                        QueueOp::Len => assert_eq!(q.len(tx)?, scratch.len()),
                    }
                }
                Ok(())
            });
            if !*cancel {
                model = scratch;
            }
        }
        let rest: Vec<u32> = atomically(|tx| {
            let mut v = Vec::new();
            while let Some(x) = q.try_pop(tx)? {
                v.push(x);
            }
            Ok(v)
        });
        prop_assert_eq!(rest, Vec::from(model));
    }

    #[test]
    fn tcounter_matches_a_sum(
        shards in 1usize..5,
        txs in prop::collection::vec(
            (prop::collection::vec(-1000i64..1000, 1..6), prop::bool::weighted(0.2)),
            1..40,
        ),
    ) {
        let c = TCounter::with_shards(shards);
        let mut model = 0i64;
        for (adds, cancel) in &txs {
            run_tx(*cancel, |tx| {
                let before = c.get(tx)?;
                for &d in adds {
                    c.add(tx, d)?;
                }
                assert_eq!(c.get(tx)?, before + adds.iter().sum::<i64>());
                Ok(())
            });
            if !*cancel {
                model += adds.iter().sum::<i64>();
            }
            prop_assert_eq!(c.load(), model);
        }
    }
}

#[test]
fn tmap_grows_from_one_bucket_and_keeps_every_entry() {
    let map = TMap::with_buckets(1);
    for i in 0..2000u32 {
        assert_eq!(atomically(|tx| map.insert(tx, i, i * 3)), None);
    }
    // Growth keeps the load at most about one entry per bucket.
    assert!(map.buckets() >= 1024, "buckets: {}", map.buckets());
    atomically(|tx| {
        assert_eq!(map.len(tx)?, 2000);
        for i in 0..2000u32 {
            assert_eq!(map.get(tx, &i)?, Some(&(i * 3)));
        }
        Ok(())
    });
}

#[test]
fn tmap_with_colliding_hashes_stays_correct_and_does_not_grow_without_load() {
    /// Every key hashes to the same value.
    #[derive(Clone, Default)]
    struct Constant;
    impl std::hash::BuildHasher for Constant {
        type Hasher = ConstantHasher;
        fn build_hasher(&self) -> ConstantHasher {
            ConstantHasher
        }
    }
    struct ConstantHasher;
    impl std::hash::Hasher for ConstantHasher {
        fn finish(&self) -> u64 {
            7
        }
        fn write(&mut self, _: &[u8]) {}
    }
    let map = TMap::with_buckets_and_hasher(64, Constant);
    for i in 0..40u32 {
        atomically(|tx| map.insert(tx, i, i).map(drop));
    }
    // 40 entries in 64 buckets: one crowded bucket, not a crowded table.
    assert_eq!(map.buckets(), 64);
    for i in 40..200u32 {
        atomically(|tx| map.insert(tx, i, i).map(drop));
    }
    // Now more entries than buckets: it grows (and stays correct, if slow).
    assert!(map.buckets() >= 128);
    atomically(|tx| {
        for i in 0..200u32 {
            assert_eq!(map.remove(tx, &i)?, Some(i));
        }
        assert_eq!(map.len(tx)?, 0);
        Ok(())
    });
}

#[test]
fn large_cancelled_transactions_leave_nothing_behind() {
    // Many writes in one transaction (past the runtime's write-set index threshold), then a
    // user cancel: every pending node and bucket must be dropped without a trace.
    let q = TQueue::new();
    let map = TMap::with_buckets(4);
    let bq = TBoundedQueue::with_capacity(64);
    for round in 0..3 {
        let r: Result<(), ()> = try_atomically(|tx| {
            for i in 0..100u32 {
                q.push(tx, i)?;
                map.insert(tx, i, i)?;
                bq.try_push(tx, i)?.ok();
            }
            Err(TxError::User(()))
        });
        assert_eq!(r, Err(()), "round {round}");
        atomically(|tx| {
            assert!(q.is_empty(tx)?);
            assert!(map.is_empty(tx)?);
            assert!(bq.is_empty(tx)?);
            Ok(())
        });
    }
    // And the same committed, then drained.
    atomically(|tx| {
        for i in 0..100u32 {
            q.push(tx, i)?;
            map.insert(tx, i, i)?;
        }
        Ok(())
    });
    let got: Vec<u32> = atomically(|tx| (0..100).map(|_| q.pop(tx)).collect());
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    assert_eq!(atomically(|tx| map.len(tx)), 100);
}

#[test]
fn a_long_queue_drops_without_overflowing_the_stack() {
    let q = TQueue::new();
    for chunk in 0..100u32 {
        atomically(|tx| {
            for i in 0..1000u32 {
                q.push(tx, chunk * 1000 + i)?;
            }
            Ok(())
        });
    }
    assert_eq!(atomically(|tx| q.len(tx)), 100_000);
    drop(q);
}

#[test]
fn tmap_grows_after_an_inevitable_transaction_and_not_after_a_cancelled_one() {
    let map = TMap::with_buckets(1);
    let r: Result<(), ()> = try_atomically(|tx| {
        for i in 0..64u32 {
            map.insert(tx, i, i)?;
        }
        Err(TxError::User(()))
    });
    assert_eq!(r, Err(()));
    assert_eq!(
        map.buckets(),
        1,
        "a cancelled transaction leaves no growth behind"
    );
    stm_core::inevitably(|tx| {
        for i in 0..64u32 {
            map.insert(tx, i, i).unwrap();
        }
    });
    // The growth ran after the inevitable commit, as a transaction of its own.
    assert!(map.buckets() >= 64, "buckets: {}", map.buckets());
    assert_eq!(atomically(|tx| map.len(tx)), 64);
}

#[test]
fn tmap_get_or_insert_with_lends_the_new_value_past_later_writes_of_its_bucket() {
    use std::sync::Arc;
    // One bucket: every insert below rewrites the bucket the first reference points into.
    let hits: TMap<String, Arc<TCounter>> = TMap::with_buckets(1);
    let mut calls = 0;
    atomically(|tx| {
        calls += 1;
        let a = hits.get_or_insert_with(tx, "/a", || Arc::new(TCounter::new()))?;
        for i in 0..8 {
            // Superseded pending buckets stay alive until the attempt ends.
            hits.insert(tx, format!("/x{i}"), Arc::new(TCounter::new()))?;
        }
        a.add(tx, 1)?;
        let again = hits.get_or_insert_with(tx, "/a", || unreachable!("present"))?;
        assert!(std::ptr::eq(&**a, &**again));
        again.add(tx, 1)
    });
    // The site's first attempt runs without a read set and stops at its first write; the second
    // runs with one and commits.
    assert_eq!(calls, 2);
    assert_eq!(atomically(|tx| hits.get(tx, "/a")?.unwrap().get(tx)), 2);
    assert_eq!(atomically(|tx| hits.len(tx)), 9);
    // Crowding a bucket through `get_or_insert_with` grows the table like `insert` does.
    assert!(hits.buckets() > 1, "buckets: {}", hits.buckets());
    // A cancelled insert leaves nothing, and `f` runs again in the next transaction.
    let r: Result<(), ()> = try_atomically(|tx| {
        hits.get_or_insert_with(tx, "/b", || Arc::new(TCounter::new()))?
            .add(tx, 5)?;
        Err(TxError::User(()))
    });
    assert_eq!(r, Err(()));
    assert!(!atomically(|tx| hits.contains_key(tx, "/b")));
    assert_eq!(atomically(|tx| hits.len(tx)), 9);
}

#[test]
fn tmap_update_inserts_replaces_and_removes() {
    let m: TMap<String, u32> = TMap::with_buckets(1);
    // Absent, left absent: nothing happens.
    assert_eq!(
        atomically(|tx| Ok(m.update(tx, "k", |_| None)?.copied())),
        None
    );
    assert!(atomically(|tx| m.is_empty(tx)));
    // Absent, inserted; then replaced; the reference is the value now in the map.
    atomically(|tx| {
        assert_eq!(
            m.update(tx, "k", |v| Some(v.map_or(1, |v| v + 1)))?,
            Some(&1)
        );
        assert_eq!(
            m.update(tx, "k", |v| Some(v.map_or(1, |v| v + 1)))?,
            Some(&2)
        );
        assert_eq!(m.len(tx)?, 1);
        Ok(())
    });
    assert_eq!(atomically(|tx| Ok(m.get(tx, "k")?.copied())), Some(2));
    // Present, removed.
    atomically(|tx| {
        assert_eq!(
            m.update(tx, "k", |v| {
                assert_eq!(v, Some(&2));
                None
            })?,
            None
        );
        assert_eq!(m.len(tx)?, 0);
        Ok(())
    });
    assert!(atomically(|tx| m.is_empty(tx)));
}
