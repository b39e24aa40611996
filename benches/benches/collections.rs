//! The transactional collections of `stm_core::collections` beside the structures a user would
//! otherwise pick.
//!
//! Workloads (one criterion group each, one row per implementation, 1 and 2 threads where the
//! workload is concurrent; one criterion iteration is one operation per thread, so the
//! throughput line is operations per second):
//!
//! - `collections/map_90read`: a map from `u64` to `u64` over the keys `0..8192`, half of them
//!   present at the start; each operation picks a uniform random key and does a lookup (90%),
//!   an insert (5%) or a remove (5%). `TMap` (each operation one transaction) against
//!   `Mutex<HashMap>`, `RwLock<HashMap>` and `dashmap::DashMap` (6.1).
//! - `collections/queue_spsc`: one producer thread sends `iters` `u64`s, one consumer thread
//!   receives them (blocking when empty); the time is until the last one is received.
//!   `TQueue` (push and blocking pop, one transaction each), `TBoundedQueue` of 1024, against
//!   `std::sync::mpsc::channel` and `sync_channel(1024)`, and crossbeam-channel (0.5)
//!   `unbounded` and `bounded(1024)`.
//! - `collections/queue_1thread`: one thread pushes then pops one element (no contention: the
//!   cost of the operations themselves).
//! - `collections/counter`: each thread adds 1 to a shared counter. `TCounter` (one transaction
//!   per add) against one `TVar<u64>` (every pair of concurrent adds conflicts) and an
//!   `AtomicU64` `fetch_add`.
//!
//! - `collections/map_fill`: 2 threads each insert their own distinct keys into an empty map;
//!   `TMap::new()` (growing from 16 buckets) against `TMap::with_buckets` (presized),
//!   `Mutex<HashMap>` and `DashMap`. One iteration is one insert per thread.
//!
//! After the criterion groups, the bench prints the runtime's commit and abort counts
//! (`stm_core::stats()` deltas) for fixed runs of the same workloads (2 threads), so that the
//! conflict claims can be checked: `TMap` 90% reads, filling a growing and a presized `TMap`,
//! `TCounter` and a single `TVar` counter (about ten seconds; `STM_BENCH_NO_CONFLICTS=1` skips
//! it).
//!
//! Run: `cargo bench -p stm-benches --bench collections`.

use criterion::{BenchmarkId, Criterion, Throughput};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex, RwLock, mpsc};
use std::time::{Duration, Instant};
use stm_core::collections::{TBoundedQueue, TCounter, TMap, TQueue};
use stm_core::{TVar, atomically, stats};

const KEYS: u64 = 8192;
const THREADS: [usize; 2] = [1, 2];

/// A xorshift generator: cheap, and the same sequence for every implementation.
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
}

/// Runs `op(thread, rng)` `ops` times on each of `threads` threads, started together; returns
/// the wall time until the last one finishes.
fn run_threads(threads: usize, ops: u64, op: impl Fn(usize, &mut Rng) + Sync) -> Duration {
    let start = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (start, op) = (&start, &op);
                s.spawn(move || {
                    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1).wrapping_mul(0xA24B));
                    start.wait();
                    for _ in 0..ops {
                        op(t, &mut rng);
                    }
                })
            })
            .collect();
        start.wait();
        let t0 = Instant::now();
        for h in handles {
            h.join().expect("a benchmark thread panicked");
        }
        t0.elapsed()
    })
}

/// The map operations every implementation provides.
trait BenchMap: Sync {
    fn name(&self) -> &'static str;
    fn get(&self, k: u64) -> Option<u64>;
    fn insert(&self, k: u64, v: u64);
    fn remove(&self, k: u64);
}

impl BenchMap for TMap<u64, u64> {
    fn name(&self) -> &'static str {
        "TMap"
    }
    fn get(&self, k: u64) -> Option<u64> {
        atomically(|tx| Ok(TMap::get(self, tx, &k)?.copied()))
    }
    fn insert(&self, k: u64, v: u64) {
        atomically(|tx| TMap::insert(self, tx, k, v).map(drop));
    }
    fn remove(&self, k: u64) {
        atomically(|tx| TMap::remove(self, tx, &k).map(drop));
    }
}

impl BenchMap for Mutex<HashMap<u64, u64>> {
    fn name(&self) -> &'static str {
        "Mutex<HashMap>"
    }
    fn get(&self, k: u64) -> Option<u64> {
        self.lock().unwrap().get(&k).copied()
    }
    fn insert(&self, k: u64, v: u64) {
        self.lock().unwrap().insert(k, v);
    }
    fn remove(&self, k: u64) {
        self.lock().unwrap().remove(&k);
    }
}

impl BenchMap for RwLock<HashMap<u64, u64>> {
    fn name(&self) -> &'static str {
        "RwLock<HashMap>"
    }
    fn get(&self, k: u64) -> Option<u64> {
        self.read().unwrap().get(&k).copied()
    }
    fn insert(&self, k: u64, v: u64) {
        self.write().unwrap().insert(k, v);
    }
    fn remove(&self, k: u64) {
        self.write().unwrap().remove(&k);
    }
}

impl BenchMap for dashmap::DashMap<u64, u64> {
    fn name(&self) -> &'static str {
        "DashMap"
    }
    fn get(&self, k: u64) -> Option<u64> {
        dashmap::DashMap::get(self, &k).map(|r| *r)
    }
    fn insert(&self, k: u64, v: u64) {
        dashmap::DashMap::insert(self, k, v);
    }
    fn remove(&self, k: u64) {
        dashmap::DashMap::remove(self, &k);
    }
}

fn map_90read(c: &mut Criterion) {
    let maps: Vec<Box<dyn BenchMap>> = vec![
        Box::new(TMap::<u64, u64>::new()),
        Box::new(Mutex::new(HashMap::new())),
        Box::new(RwLock::new(HashMap::new())),
        Box::new(dashmap::DashMap::new()),
    ];
    for m in &maps {
        for k in (0..KEYS).step_by(2) {
            m.insert(k, k);
        }
    }
    let mut g = c.benchmark_group("collections/map_90read");
    for threads in THREADS {
        g.throughput(Throughput::Elements(threads as u64));
        for m in &maps {
            g.bench_function(BenchmarkId::new(m.name(), threads), |b| {
                b.iter_custom(|iters| {
                    run_threads(threads, iters, |_, rng| {
                        let r = rng.next();
                        let k = (r >> 8) % KEYS;
                        match r % 100 {
                            0..90 => {
                                black_box(m.get(k));
                            }
                            90..95 => m.insert(k, r),
                            _ => m.remove(k),
                        }
                    })
                })
            });
        }
    }
    g.finish();
}

/// One producer and one consumer moving `n` items; the time until the last is received.
fn spsc(n: u64, send: impl Fn(u64) + Sync, recv: impl Fn() -> u64 + Sync) -> Duration {
    run_threads(2, 1, |t, _| {
        if t == 0 {
            for i in 0..n {
                send(i);
            }
        } else {
            let mut sum = 0u64;
            for _ in 0..n {
                sum = sum.wrapping_add(recv());
            }
            assert_eq!(sum, n * n.saturating_sub(1) / 2);
        }
    })
}

fn queues(c: &mut Criterion) {
    let mut g = c.benchmark_group("collections/queue_spsc");
    g.throughput(Throughput::Elements(1));
    g.bench_function("TQueue", |b| {
        b.iter_custom(|n| {
            let q = TQueue::new();
            spsc(
                n,
                |v| atomically(|tx| q.push(tx, v)),
                || atomically(|tx| q.pop(tx)),
            )
        })
    });
    g.bench_function("TBoundedQueue(1024)", |b| {
        b.iter_custom(|n| {
            let q = TBoundedQueue::with_capacity(1024);
            spsc(
                n,
                |v| atomically(|tx| q.push(tx, v)),
                || atomically(|tx| q.pop(tx)),
            )
        })
    });
    g.bench_function("mpsc::channel", |b| {
        b.iter_custom(|n| {
            let (tx, rx) = mpsc::channel();
            let rx = Mutex::new(rx); // Receiver is !Sync; uncontended lock by the one consumer
            spsc(
                n,
                |v| tx.send(v).unwrap(),
                || rx.lock().unwrap().recv().unwrap(),
            )
        })
    });
    g.bench_function("mpsc::sync_channel(1024)", |b| {
        b.iter_custom(|n| {
            let (tx, rx) = mpsc::sync_channel(1024);
            let rx = Mutex::new(rx);
            spsc(
                n,
                |v| tx.send(v).unwrap(),
                || rx.lock().unwrap().recv().unwrap(),
            )
        })
    });
    g.bench_function("crossbeam::unbounded", |b| {
        b.iter_custom(|n| {
            let (tx, rx) = crossbeam_channel::unbounded();
            spsc(n, |v| tx.send(v).unwrap(), || rx.recv().unwrap())
        })
    });
    g.bench_function("crossbeam::bounded(1024)", |b| {
        b.iter_custom(|n| {
            let (tx, rx) = crossbeam_channel::bounded(1024);
            spsc(n, |v| tx.send(v).unwrap(), || rx.recv().unwrap())
        })
    });
    g.finish();

    let mut g = c.benchmark_group("collections/queue_1thread");
    g.throughput(Throughput::Elements(1));
    let q = TQueue::new();
    g.bench_function("TQueue", |b| {
        b.iter(|| {
            atomically(|tx| q.push(tx, black_box(1u64)));
            atomically(|tx| q.pop(tx))
        })
    });
    let bq = TBoundedQueue::with_capacity(1024);
    g.bench_function("TBoundedQueue(1024)", |b| {
        b.iter(|| {
            atomically(|tx| bq.push(tx, black_box(1u64)));
            atomically(|tx| bq.pop(tx))
        })
    });
    let (tx, rx) = mpsc::channel();
    g.bench_function("mpsc::channel", |b| {
        b.iter(|| {
            tx.send(black_box(1u64)).unwrap();
            rx.recv().unwrap()
        })
    });
    let (tx, rx) = crossbeam_channel::unbounded();
    g.bench_function("crossbeam::unbounded", |b| {
        b.iter(|| {
            tx.send(black_box(1u64)).unwrap();
            rx.recv().unwrap()
        })
    });
    g.finish();
}

fn counter(c: &mut Criterion) {
    let mut g = c.benchmark_group("collections/counter");
    for threads in THREADS {
        g.throughput(Throughput::Elements(threads as u64));
        let tc = TCounter::new();
        g.bench_function(BenchmarkId::new("TCounter", threads), |b| {
            b.iter_custom(|n| run_threads(threads, n, |_, _| atomically(|tx| tc.add(tx, 1))))
        });
        let tv = TVar::new(0u64);
        g.bench_function(BenchmarkId::new("TVar<u64>", threads), |b| {
            b.iter_custom(|n| {
                run_threads(threads, n, |_, _| {
                    atomically(|tx| tx.modify(&tv, |x| x + 1).map(drop))
                })
            })
        });
        let a = AtomicU64::new(0);
        g.bench_function(BenchmarkId::new("AtomicU64", threads), |b| {
            b.iter_custom(|n| {
                run_threads(threads, n, |_, _| {
                    // Relaxed: a pure counter, read only after the threads are joined.
                    a.fetch_add(1, Ordering::Relaxed);
                })
            })
        });
        black_box(tc.load());
    }
    g.finish();
}

fn map_fill(c: &mut Criterion) {
    let mut g = c.benchmark_group("collections/map_fill");
    g.throughput(Throughput::Elements(2));
    let key = |t: usize, i: u64| (t as u64) << 40 | i;
    g.bench_function("TMap::new (grows)", |b| {
        b.iter_custom(|n| {
            let m = TMap::<u64, u64>::new();
            fill_with(n, |t, i| BenchMap::insert(&m, key(t, i), i))
        })
    });
    g.bench_function("TMap::with_buckets (presized)", |b| {
        b.iter_custom(|n| {
            let m = TMap::<u64, u64>::with_buckets(2 * n as usize);
            fill_with(n, |t, i| BenchMap::insert(&m, key(t, i), i))
        })
    });
    g.bench_function("Mutex<HashMap>", |b| {
        b.iter_custom(|n| {
            let m = Mutex::new(HashMap::new());
            fill_with(n, |t, i| BenchMap::insert(&m, key(t, i), i))
        })
    });
    g.bench_function("DashMap", |b| {
        b.iter_custom(|n| {
            let m = dashmap::DashMap::new();
            fill_with(n, |t, i| BenchMap::insert(&m, key(t, i), i))
        })
    });
    g.finish();
}

/// Two threads, each calling `insert(thread, i)` for `i` in `0..n`; the wall time.
fn fill_with(n: u64, insert: impl Fn(usize, u64) + Sync) -> Duration {
    let next = [AtomicU64::new(0), AtomicU64::new(0)];
    run_threads(2, n, |t, _| {
        // Relaxed: each counter is used by its own thread only.
        let i = next[t].fetch_add(1, Ordering::Relaxed);
        insert(t, i)
    })
}

/// Prints the runtime's commits and aborts for fixed 2-thread runs of the workloads.
fn conflict_report() {
    let measure = |name: &str, run: &dyn Fn()| {
        let before = stats();
        let t0 = Instant::now();
        run();
        let d = stats().since(&before);
        eprintln!(
            "conflicts {name}: {} commits, {} aborts (write-write {}, write-read {}, \
             inevitable {}), {} inevitable runs, {:.2?}",
            d.commits,
            d.aborts(),
            d.aborts_write_write,
            d.aborts_write_read,
            d.aborts_inevitable,
            d.inevitable_runs,
            t0.elapsed()
        );
    };
    const OPS: u64 = 1_000_000;
    let map = TMap::<u64, u64>::new();
    for k in (0..KEYS).step_by(2) {
        BenchMap::insert(&map, k, k);
    }
    measure("TMap 90% reads, 2 x 1M ops", &|| {
        run_threads(2, OPS, |_, rng| {
            let r = rng.next();
            let k = (r >> 8) % KEYS;
            match r % 100 {
                0..90 => {
                    black_box(BenchMap::get(&map, k));
                }
                90..95 => BenchMap::insert(&map, k, r),
                _ => BenchMap::remove(&map, k),
            }
        });
    });
    measure("TMap::new filled with 2 x 500k keys", &|| {
        let m = TMap::<u64, u64>::new();
        fill_with(500_000, |t, i| {
            BenchMap::insert(&m, (t as u64) << 40 | i, i)
        });
    });
    measure("TMap::with_buckets(1M) filled with 2 x 500k keys", &|| {
        let m = TMap::<u64, u64>::with_buckets(1 << 20);
        fill_with(500_000, |t, i| {
            BenchMap::insert(&m, (t as u64) << 40 | i, i)
        });
    });
    let tc = TCounter::new();
    measure("TCounter, 2 x 1M adds", &|| {
        run_threads(2, OPS, |_, _| atomically(|tx| tc.add(tx, 1)));
    });
    let tv = TVar::new(0u64);
    measure("one TVar counter, 2 x 1M adds", &|| {
        run_threads(2, OPS, |_, _| {
            atomically(|tx| tx.modify(&tv, |x| x + 1).map(drop))
        });
    });
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    map_90read(&mut c);
    map_fill(&mut c);
    queues(&mut c);
    counter(&mut c);
    c.final_summary();
    // Only under `cargo bench` (which passes `--bench`), not when `cargo test` runs this target
    // once in test mode; `STM_BENCH_NO_CONFLICTS=1` skips it.
    if std::env::args().any(|a| a == "--bench")
        && std::env::var_os("STM_BENCH_NO_CONFLICTS").is_none()
    {
        conflict_report();
    }
}
