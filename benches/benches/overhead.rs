//! Single-thread cost of one small transaction, side by side with the alternatives a user would
//! pick, and the 2-thread speed-up on disjoint words.
//!
//! Workloads (each in its own criterion group, one row per implementation):
//!
//! - `read_only_1`: a transaction that reads one word (the `Mutex` row locks, reads, unlocks);
//! - `read_write_1`: read one word and write it back incremented (the `Mutex` row is
//!   lock + increment + unlock, the reference the targets are stated against);
//! - `read10_write1`: read ten words, write their sum into an eleventh;
//! - `disjoint`: every thread increments its own word (its own cache line) in its own
//!   transaction, a fixed number of times; one criterion iteration is one increment per thread,
//!   so the throughput line (elements/s) of `threads=2` over `threads=1` is the speed-up.
//!
//! Implementations: `stm-core` (this workspace), `stm` 0.4 (crates.io, Haskell-style, `Arc`-boxed
//! values), `kovan-stm` 0.2.0 (TL2 with per-variable version locks), `std::sync::Mutex` and plain
//! code on a local variable.
//!
//! Run: `cargo bench -p stm-benches --bench overhead`.

use criterion::{BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

/// Words read by the `read10_write1` workload.
const READS: usize = 10;

fn read_only_1(c: &mut Criterion) {
    let mut g = c.benchmark_group("read_only_1");

    let v = stm_core::TVar::new(7u64);
    g.bench_function("stm-core", |b| {
        b.iter(|| stm_core::atomically(|tx| tx.read(black_box(&v))))
    });

    let v = stm::TVar::new(7u64);
    g.bench_function("stm-0.4", |b| {
        b.iter(|| stm::atomically(|tx| black_box(&v).read(tx)))
    });

    let v = kovan_stm::TVar::new(7u64);
    g.bench_function("kovan-stm-0.2", |b| {
        b.iter(|| kovan_stm::atomically(|tx| tx.load(black_box(&v))))
    });

    let m = Mutex::new(7u64);
    g.bench_function("mutex", |b| {
        b.iter(|| *black_box(&m).lock().unwrap_or_else(|e| e.into_inner()))
    });

    let x = 7u64;
    g.bench_function("plain", |b| b.iter(|| *black_box(&x)));
    g.finish();
}

fn read_write_1(c: &mut Criterion) {
    let mut g = c.benchmark_group("read_write_1");

    let v = stm_core::TVar::new(0u64);
    g.bench_function("stm-core", |b| {
        b.iter(|| stm_core::atomically(|tx| tx.modify(black_box(&v), |x| x.wrapping_add(1))))
    });

    let v = stm::TVar::new(0u64);
    g.bench_function("stm-0.4", |b| {
        b.iter(|| {
            stm::atomically(|tx| {
                let v = black_box(&v);
                let x = v.read(tx)?;
                v.write(tx, x.wrapping_add(1))
            })
        })
    });

    let v = kovan_stm::TVar::new(0u64);
    g.bench_function("kovan-stm-0.2", |b| {
        b.iter(|| {
            kovan_stm::atomically(|tx| {
                let v = black_box(&v);
                let x = tx.load(v)?;
                tx.store(v, x.wrapping_add(1))
            })
        })
    });

    let m = Mutex::new(0u64);
    g.bench_function("mutex", |b| {
        b.iter(|| {
            let mut g = black_box(&m).lock().unwrap_or_else(|e| e.into_inner());
            *g = g.wrapping_add(1);
        })
    });

    let mut x = 0u64;
    g.bench_function("plain", |b| {
        b.iter(|| {
            let x = black_box(&mut x);
            *x = x.wrapping_add(1);
        })
    });
    g.finish();
}

fn read10_write1(c: &mut Criterion) {
    let mut g = c.benchmark_group("read10_write1");

    let src: Vec<stm_core::TVar<u64>> = (0..READS as u64).map(stm_core::TVar::new).collect();
    let dst = stm_core::TVar::new(0u64);
    g.bench_function("stm-core", |b| {
        b.iter(|| {
            stm_core::atomically(|tx| {
                let mut sum = 0u64;
                for v in black_box(&src) {
                    sum = sum.wrapping_add(tx.read(v)?);
                }
                tx.write(&dst, sum)
            })
        })
    });

    let src: Vec<stm::TVar<u64>> = (0..READS as u64).map(stm::TVar::new).collect();
    let dst = stm::TVar::new(0u64);
    g.bench_function("stm-0.4", |b| {
        b.iter(|| {
            stm::atomically(|tx| {
                let mut sum = 0u64;
                for v in black_box(&src) {
                    sum = sum.wrapping_add(v.read(tx)?);
                }
                dst.write(tx, sum)
            })
        })
    });

    let src: Vec<kovan_stm::TVar<u64>> = (0..READS as u64).map(kovan_stm::TVar::new).collect();
    let dst = kovan_stm::TVar::new(0u64);
    g.bench_function("kovan-stm-0.2", |b| {
        b.iter(|| {
            kovan_stm::atomically(|tx| {
                let mut sum = 0u64;
                for v in black_box(&src) {
                    sum = sum.wrapping_add(tx.load(v)?);
                }
                tx.store(&dst, sum)
            })
        })
    });

    // One lock around the eleven words: what a user would write instead.
    let m = Mutex::new(((0..READS as u64).collect::<Vec<u64>>(), 0u64));
    g.bench_function("mutex", |b| {
        b.iter(|| {
            let mut g = black_box(&m).lock().unwrap_or_else(|e| e.into_inner());
            let sum = g.0.iter().fold(0u64, |a, &x| a.wrapping_add(x));
            g.1 = sum;
        })
    });

    let mut plain = ((0..READS as u64).collect::<Vec<u64>>(), 0u64);
    g.bench_function("plain", |b| {
        b.iter(|| {
            let p = black_box(&mut plain);
            p.1 = p.0.iter().fold(0u64, |a, &x| a.wrapping_add(x));
        })
    });
    g.finish();
}

/// One word per cache line, so that threads share neither a line nor (with the default lock
/// table) an ownership record.
#[repr(align(128))]
struct Padded<T>(T);

/// Runs `iters` increments on each of `threads` threads, each on its own word, and returns the
/// wall time from the first thread's start to the last thread's end (each thread times itself:
/// the spawning thread may be descheduled after the barrier).
fn disjoint_run<W: Sync>(
    words: &[Padded<W>],
    threads: usize,
    iters: u64,
    op: impl Fn(&W) + Sync,
) -> Duration {
    let start = Barrier::new(threads);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let handles: Vec<_> = words[..threads]
            .iter()
            .map(|w| {
                let (start, op) = (&start, &op);
                s.spawn(move || {
                    start.wait();
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        op(&w.0);
                    }
                    (t0, Instant::now())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let first = spans.iter().map(|s| s.0).min();
    let last = spans.iter().map(|s| s.1).max();
    match (first, last) {
        (Some(a), Some(b)) => b.saturating_duration_since(a),
        _ => Duration::ZERO,
    }
}

fn disjoint(c: &mut Criterion) {
    let mut g = c.benchmark_group("disjoint");
    let max = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2);
    let stm_words: Vec<Padded<stm_core::TVar<u64>>> =
        (0..max).map(|_| Padded(stm_core::TVar::new(0))).collect();
    let mutex_words: Vec<Padded<Mutex<u64>>> = (0..max).map(|_| Padded(Mutex::new(0))).collect();
    for threads in [1, 2] {
        g.throughput(Throughput::Elements(threads as u64));
        g.bench_function(BenchmarkId::new("stm-core", threads), |b| {
            b.iter_custom(|iters| {
                disjoint_run(&stm_words, threads, iters, |v| {
                    stm_core::atomically(|tx| tx.modify(v, |x| x.wrapping_add(1)));
                })
            })
        });
        g.bench_function(BenchmarkId::new("mutex", threads), |b| {
            b.iter_custom(|iters| {
                disjoint_run(&mutex_words, threads, iters, |m| {
                    let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
                    *g = g.wrapping_add(1);
                })
            })
        });
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    read_only_1(&mut c);
    read_write_1(&mut c);
    read10_write1(&mut c);
    disjoint(&mut c);
    c.final_summary();
}
