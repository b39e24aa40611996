//! Concurrent stress tests: fixed operation counts, invariants checked at the end and, where
//! opacity matters, inside the transactions themselves.
// Real threads and the full API: not built under loom (see `tests/loom.rs` for the models).
#![cfg(not(loom))]

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use stm_core::{TBox, TVar, atomically, inevitably, stats};

/// A small deterministic generator (xorshift), so runs are reproducible per seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const THREADS: usize = 4;

#[test]
fn bank_transfers_keep_the_total_and_audits_never_see_a_wrong_one() {
    const ACCOUNTS: usize = 64;
    const OPS: usize = 20_000;
    let accounts: Arc<Vec<TVar<i64>>> = Arc::new((0..ACCOUNTS).map(|_| TVar::new(1000)).collect());
    let bad_audits = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let accounts = accounts.clone();
            let bad = bad_audits.clone();
            thread::spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1));
                for i in 0..OPS {
                    if i % 10 == 0 {
                        // Audit inside a transaction: opacity says every attempt, even a doomed
                        // one, sees a total that some serial execution produced.
                        let total = atomically(|tx| {
                            let mut sum = 0;
                            for a in accounts.iter() {
                                sum += tx.read(a)?;
                            }
                            if sum != 1000 * ACCOUNTS as i64 {
                                bad.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(sum)
                        });
                        assert_eq!(total, 1000 * ACCOUNTS as i64);
                    } else {
                        let from = rng.below(ACCOUNTS as u64) as usize;
                        let to = rng.below(ACCOUNTS as u64) as usize;
                        let amount = rng.below(50) as i64;
                        atomically(|tx| {
                            let f = tx.read(&accounts[from])?;
                            tx.write(&accounts[from], f - amount)?;
                            let t = tx.read(&accounts[to])?;
                            tx.write(&accounts[to], t + amount)?;
                            Ok(())
                        });
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(
        bad_audits.load(Ordering::Relaxed),
        0,
        "an attempt saw an inconsistent total"
    );
    let total: i64 = accounts.iter().map(TVar::load).sum();
    assert_eq!(total, 1000 * ACCOUNTS as i64);
}

/// Every transaction increments two of three counters and records the values it read. The
/// history is serializable iff, per counter, the read values are exactly 0..n (no lost or
/// duplicated update) and the order they induce on transactions has no cycle across counters.
#[test]
fn recorded_history_is_serializable() {
    const OPS: usize = 5_000;
    let vars: Arc<[TVar<u64>; 3]> = Arc::new([TVar::new(0), TVar::new(0), TVar::new(0)]);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let vars = vars.clone();
            thread::spawn(move || {
                let mut rng = Rng(0xD1B5_4A32_D192_ED03 ^ (t as u64 + 7));
                let mut log = Vec::with_capacity(OPS);
                for _ in 0..OPS {
                    let skip = rng.below(3) as usize;
                    let seen = atomically(|tx| {
                        let mut seen = [None; 3];
                        for (i, v) in vars.iter().enumerate() {
                            if i != skip {
                                let x = tx.read(v)?;
                                tx.write(v, x + 1)?;
                                seen[i] = Some(x);
                            }
                        }
                        Ok(seen)
                    });
                    log.push(seen);
                }
                log
            })
        })
        .collect();
    let history: Vec<[Option<u64>; 3]> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let n = history.len();
    // Per counter: position -> transaction, and the read values must be 0..count exactly.
    let mut order: [HashMap<u64, usize>; 3] = Default::default();
    for (tx, seen) in history.iter().enumerate() {
        for i in 0..3 {
            if let Some(x) = seen[i] {
                assert!(
                    order[i].insert(x, tx).is_none(),
                    "counter {i}: value {x} read twice (lost update)"
                );
            }
        }
    }
    for i in 0..3 {
        let count = order[i].len() as u64;
        assert_eq!(vars[i].load(), count);
        assert!((0..count).all(|x| order[i].contains_key(&x)));
    }
    // Precedence graph: tx reading x precedes tx reading x+1 on the same counter. Must be acyclic.
    let mut succ = vec![Vec::new(); n];
    let mut indeg = vec![0usize; n];
    for o in &order {
        for (&x, &a) in o {
            if let Some(&b) = o.get(&(x + 1)) {
                succ[a].push(b);
                indeg[b] += 1;
            }
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&t| indeg[t] == 0).collect();
    let mut done = 0;
    while let Some(a) = ready.pop() {
        done += 1;
        for &b in &succ[a] {
            indeg[b] -= 1;
            if indeg[b] == 0 {
                ready.push(b);
            }
        }
    }
    assert_eq!(
        done, n,
        "the precedence graph has a cycle: not serializable"
    );
}

#[test]
fn after_commit_and_inevitable_bodies_run_exactly_once_under_contention() {
    const OPS: usize = 3_000;
    let counter = Arc::new(TVar::new(0u64));
    let after_runs = Arc::new(AtomicU64::new(0));
    let inevitable_runs = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (c, a, i) = (counter.clone(), after_runs.clone(), inevitable_runs.clone());
            thread::spawn(move || {
                for k in 0..OPS {
                    if (k + t) % 50 == 0 {
                        inevitably(|tx| {
                            // A side effect that must never be repeated.
                            i.fetch_add(1, Ordering::SeqCst);
                            let x = tx.read(&*c).unwrap();
                            tx.write(&*c, x + 1).unwrap();
                        });
                    } else if k % 7 == 0 {
                        // Becomes inevitable half-way: the part after it runs exactly once.
                        atomically(|tx| {
                            let x = tx.read(&*c)?;
                            tx.become_inevitable()?;
                            i.fetch_add(1, Ordering::SeqCst);
                            tx.write(&*c, x + 1)
                        });
                    } else {
                        atomically(|tx| {
                            let a = a.clone();
                            tx.after_commit(move || {
                                a.fetch_add(1, Ordering::SeqCst);
                            });
                            tx.modify(&*c, |x| x + 1).map(drop)
                        });
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let total = (THREADS * OPS) as u64;
    assert_eq!(counter.load(), total);
    assert_eq!(
        after_runs.load(Ordering::SeqCst) + inevitable_runs.load(Ordering::SeqCst),
        total
    );
}

/// One thread per mailbox of `slots` (0 = empty), each putting 1..=items into its mailbox,
/// waiting with `retry` while it is full.
fn mailbox_producers(slots: &Arc<Vec<TVar<u64>>>, items: u64) -> Vec<thread::JoinHandle<()>> {
    (0..slots.len())
        .map(|p| {
            let slots = slots.clone();
            thread::spawn(move || {
                for i in 1..=items {
                    atomically(|tx| {
                        if tx.read(&slots[p])? != 0 {
                            return tx.retry();
                        }
                        tx.write(&slots[p], i)
                    });
                }
            })
        })
        .collect()
}

#[test]
fn retry_as_producer_and_consumer() {
    const ITEMS: u64 = 2_000;
    // A one-slot mailbox per producer: 0 = empty.
    let slots: Arc<Vec<TVar<u64>>> = Arc::new((0..2).map(|_| TVar::new(0)).collect());
    let producers = mailbox_producers(&slots, ITEMS);
    let consumer = {
        let slots = slots.clone();
        thread::spawn(move || {
            let mut last = [0u64; 2];
            let mut sum = 0;
            for _ in 0..2 * ITEMS {
                let (p, v) = atomically(|tx| {
                    for (p, s) in slots.iter().enumerate() {
                        let v = tx.read(s)?;
                        if v != 0 {
                            tx.write(s, 0)?;
                            return Ok((p, v));
                        }
                    }
                    tx.retry()
                });
                assert_eq!(v, last[p] + 1, "FIFO per producer");
                last[p] = v;
                sum += v;
            }
            sum
        })
    };
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(consumer.join().unwrap(), ITEMS * (ITEMS + 1));
}

/// The mailbox consumer again, choosing with `or_else`: the first branch takes from mailbox 0
/// and scribbles on mailbox 1 before it retries, so an undo that leaked would lose or invent
/// items.
#[test]
fn or_else_consumer_takes_every_item_once() {
    const ITEMS: u64 = 1_500;
    let slots: Arc<Vec<TVar<u64>>> = Arc::new((0..2).map(|_| TVar::new(0)).collect());
    let producers = mailbox_producers(&slots, ITEMS);
    let consumer = {
        let slots = slots.clone();
        thread::spawn(move || {
            let mut last = [0u64; 2];
            for _ in 0..2 * ITEMS {
                let (p, v) = atomically(|tx| {
                    tx.or_else(
                        |tx| {
                            // Scribbled on, and undone if this branch retries.
                            let before = tx.read(&slots[1])?;
                            tx.write(&slots[1], u64::MAX)?;
                            match tx.read(&slots[0])? {
                                0 => tx.retry(),
                                v => {
                                    tx.write(&slots[0], 0)?;
                                    tx.write(&slots[1], before)?;
                                    Ok((0, v))
                                }
                            }
                        },
                        |tx| match tx.read(&slots[1])? {
                            0 => tx.retry(),
                            v => {
                                assert_ne!(v, u64::MAX, "the first branch's write leaked");
                                tx.write(&slots[1], 0)?;
                                Ok((1, v))
                            }
                        },
                    )
                });
                assert_eq!(
                    v,
                    last[p] + 1,
                    "FIFO per producer, no item lost or invented"
                );
                last[p] = v;
            }
            last
        })
    };
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(consumer.join().unwrap(), [ITEMS, ITEMS]);
    assert_eq!((slots[0].load(), slots[1].load()), (0, 0));
}

#[test]
fn a_long_reader_finishes_among_hot_writers() {
    const VARS: usize = 512;
    const READS: usize = 20;
    const WRITER_CAP: usize = 2_000_000;
    let vars: Arc<Vec<TVar<i64>>> = Arc::new((0..VARS).map(|_| TVar::new(0)).collect());
    let reader_done = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(3));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (vars, done, start) = (vars.clone(), reader_done.clone(), start.clone());
            thread::spawn(move || {
                let mut rng = Rng(77 + w);
                start.wait();
                let mut ops = 0;
                // Bounded: stops when the reader is done, or after a cap it must never reach.
                while !done.load(Ordering::Relaxed) && ops < WRITER_CAP {
                    let a = rng.below(VARS as u64) as usize;
                    let b = rng.below(VARS as u64) as usize;
                    atomically(|tx| {
                        tx.modify(&vars[a], |x| x + 1)?;
                        tx.modify(&vars[b], |x| x - 1)?;
                        Ok(())
                    });
                    ops += 1;
                }
                ops
            })
        })
        .collect();
    let reader = {
        let (vars, done, start) = (vars.clone(), reader_done.clone(), start.clone());
        thread::spawn(move || {
            start.wait();
            for _ in 0..READS {
                // Read everything, then write one word: an update transaction that conflicts
                // with nearly every writer commit; the progress guarantee must let it through.
                let sum = atomically(|tx| {
                    let mut s = 0;
                    for v in vars.iter() {
                        s += tx.read(v)?;
                    }
                    tx.modify(&vars[0], |x| x + 1)?;
                    tx.modify(&vars[1], |x| x - 1)?;
                    Ok(s)
                });
                assert_eq!(sum, 0);
            }
            done.store(true, Ordering::Relaxed);
        })
    };
    reader.join().unwrap();
    for w in writers {
        let ops = w.join().unwrap();
        assert!(ops < WRITER_CAP, "the long reader starved");
    }
    assert_eq!(vars.iter().map(TVar::load).sum::<i64>(), 0);
}

#[test]
fn panicking_bodies_leave_no_write_and_no_lock_under_contention() {
    const OPS: usize = 2_000;
    let vars: Arc<Vec<TVar<u64>>> = Arc::new((0..8).map(|_| TVar::new(0)).collect());
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let vars = vars.clone();
            thread::spawn(move || {
                let mut committed = 0u64;
                for k in 0..OPS {
                    let i = (k + t) % 8;
                    let panics = k % 3 == 0;
                    let inevitable = k % 11 == 0;
                    let r = catch_unwind(AssertUnwindSafe(|| {
                        atomically(|tx| {
                            if inevitable {
                                tx.become_inevitable()?;
                            }
                            tx.modify(&vars[i], |x| x + 1)?;
                            tx.modify(&vars[(i + 1) % 8], |x| x + 1)?;
                            if panics {
                                panic!("boom");
                            }
                            Ok(())
                        })
                    }));
                    if r.is_ok() {
                        committed += 2;
                    }
                }
                committed
            })
        })
        .collect();
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let committed: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    std::panic::set_hook(prev);
    assert_eq!(vars.iter().map(TVar::load).sum::<u64>(), committed);
    // Everything is free: an inevitable transaction over every word completes.
    inevitably(|tx| {
        for v in vars.iter() {
            tx.modify(v, |x| x + 1).unwrap();
        }
    });
    assert_eq!(vars.iter().map(TVar::load).sum::<u64>(), committed + 8);
}

#[test]
fn tbox_values_under_contention_are_never_torn() {
    const OPS: usize = 3_000;
    // Each value is a vector whose elements all equal its length: a torn or freed read breaks it.
    let b = Arc::new(TBox::new(vec![1u64]));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let b = b.clone();
            thread::spawn(move || {
                for _ in 0..OPS {
                    atomically(|tx| {
                        let v = tx.read_box(&b)?;
                        let n = v.len() as u64;
                        assert!(v.iter().all(|&x| x == n));
                        let next = if n >= 16 { 1 } else { n + 1 };
                        tx.write_box(&b, vec![next; next as usize])
                    });
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let v = b.load();
    assert!(v.iter().all(|&x| x == v.len() as u64));
}

#[test]
fn inevitable_runs_beside_committing_writers() {
    const OPS: usize = 3_000;
    let mine = Arc::new(TVar::new(0u64));
    let theirs: Arc<Vec<TVar<u64>>> = Arc::new((0..4).map(|_| TVar::new(0)).collect());
    let before = stats();
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let theirs = theirs.clone();
            thread::spawn(move || {
                for _ in 0..OPS {
                    atomically(|tx| tx.modify(&theirs[w], |x| x + 1).map(drop));
                }
            })
        })
        .collect();
    for _ in 0..OPS / 10 {
        inevitably(|tx| {
            let x = tx.read(&*mine).unwrap();
            tx.write(&*mine, x + 1).unwrap();
        });
    }
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(mine.load(), (OPS / 10) as u64);
    assert_eq!(theirs[0].load() + theirs[1].load(), 2 * OPS as u64);
    assert!(stats().since(&before).inevitable_runs >= (OPS / 10) as u64);
}

/// Write skew: one transaction writes `b` if it reads `a == 0`, the other writes `a` if it
/// reads `b == 0`; run side by side on fresh words, round after round. A serialisable runtime
/// commits exactly one of the two writes each round (the second one sees the first's write).
#[test]
fn write_skew_never_commits_both_sides() {
    const ROUNDS: usize = 3_000;
    let pairs: Arc<Vec<(TVar<u64>, TVar<u64>)>> =
        Arc::new((0..ROUNDS).map(|_| (TVar::new(0), TVar::new(0))).collect());
    let barrier = Arc::new(Barrier::new(2));
    let side = |first: bool| {
        let (pairs, barrier) = (pairs.clone(), barrier.clone());
        thread::spawn(move || {
            for (a, b) in pairs.iter() {
                let (from, to) = if first { (a, b) } else { (b, a) };
                barrier.wait();
                atomically(|tx| {
                    let seen = tx.read(from)?;
                    // Widen the window between the read and the commit, so that the two
                    // sides overlap (the barrier alone lets one finish before the other).
                    for _ in 0..500 {
                        std::hint::spin_loop();
                    }
                    if seen == 0 {
                        tx.write(to, 1)?;
                    }
                    Ok(())
                });
            }
        })
    };
    let (t1, t2) = (side(true), side(false));
    t1.join().unwrap();
    t2.join().unwrap();
    for (i, (a, b)) in pairs.iter().enumerate() {
        assert_eq!(
            a.load() + b.load(),
            1,
            "round {i}: a = {}, b = {} (write skew)",
            a.load(),
            b.load()
        );
    }
}

/// Each thread stamps its commits with its own version clock; the runtime has 1023 of them
/// (`SLOT_BITS = 10`), and threads beyond that share one clock. 1100 threads alive at once,
/// every one committing transfers between shared accounts and auditing them: nothing is lost
/// and no audit sees a wrong total, with owners and sharers of clocks mixed.
#[test]
fn more_threads_than_version_clocks() {
    const THREADS: usize = 1_100;
    const ACCOUNTS: usize = 16;
    const OPS: usize = 20;
    let accounts: Arc<Vec<TVar<i64>>> = Arc::new((0..ACCOUNTS).map(|_| TVar::new(100)).collect());
    let commits = Arc::new(TVar::new(0u64));
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (accounts, commits, barrier) = (accounts.clone(), commits.clone(), barrier.clone());
            thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || {
                    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1));
                    // First transaction: every thread takes its clock before any exits.
                    atomically(|tx| tx.modify(&*commits, |c| c + 1).map(drop));
                    barrier.wait();
                    for _ in 0..OPS {
                        let (i, j) = (rng.below(ACCOUNTS as u64), rng.below(ACCOUNTS as u64));
                        atomically(|tx| {
                            let x = tx.read(&accounts[i as usize])?;
                            tx.write(&accounts[i as usize], x - 1)?;
                            let y = tx.read(&accounts[j as usize])?;
                            tx.write(&accounts[j as usize], y + 1)?;
                            tx.modify(&*commits, |c| c + 1).map(drop)
                        });
                        let total = atomically(|tx| {
                            let mut s = 0;
                            for a in accounts.iter() {
                                s += tx.read(a)?;
                            }
                            Ok(s)
                        });
                        assert_eq!(total, 100 * ACCOUNTS as i64, "audit saw a wrong total");
                    }
                })
                .unwrap()
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let total: i64 = accounts.iter().map(|a| a.load()).sum();
    assert_eq!(total, 100 * ACCOUNTS as i64);
    assert_eq!(commits.load(), (THREADS * (OPS + 1)) as u64);
}

/// Threads come and go (their clocks are handed to later threads, and continue from where the
/// previous owner stopped): a shared counter incremented by 2000 short-lived threads, 8 alive
/// at a time, while a long-lived reader checks that the counter never goes backwards.
#[test]
fn version_clocks_are_reused_by_later_threads() {
    const WAVES: usize = 250;
    const PER_WAVE: usize = 8;
    const OPS: u64 = 5;
    let counter = Arc::new(TVar::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (counter, stop) = (counter.clone(), stop.clone());
        thread::spawn(move || {
            let mut last = 0;
            let mut checks = 0u64;
            // Bounded: stops when the writers are done or after a fixed number of checks.
            while !stop.load(Ordering::Acquire) && checks < 5_000_000 {
                let now = atomically(|tx| tx.read(&*counter));
                assert!(now >= last, "counter went back from {last} to {now}");
                last = now;
                checks += 1;
            }
        })
    };
    for _ in 0..WAVES {
        let wave: Vec<_> = (0..PER_WAVE)
            .map(|_| {
                let counter = counter.clone();
                thread::spawn(move || {
                    for _ in 0..OPS {
                        atomically(|tx| tx.modify(&*counter, |c| c + 1).map(drop));
                    }
                })
            })
            .collect();
        for h in wave {
            h.join().unwrap();
        }
    }
    stop.store(true, Ordering::Release);
    reader.join().unwrap();
    assert_eq!(counter.load(), (WAVES * PER_WAVE) as u64 * OPS);
}
