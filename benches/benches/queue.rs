//! `stm_loop::TransactionQueue` against a plain loop and rayon's `par_iter`, over the same
//! closures.
//!
//! Workloads: a batch of tasks, each a transaction body `Fn(&mut Tx, &Cells) -> TxResult<()>`
//! over 1000 shared cells (the queue's state; the other rows lend the same cells):
//! - `empty`: 1000 bodies that do nothing;
//! - `tiny`: 1000 bodies that increment their own `TVar` (no conflicts);
//! - `heavy`: 64 bodies that count the primes below 20 000 by trial division (~0.5 ms of CPU
//!   each), then store the count in their own `TVar`.
//!
//! Rows: the queue with 1..=cores workers (the batch is added, then `run`: adding boxes each
//! closure, which is part of the queue's cost), a plain loop running each body in
//! `stm_core::atomically` on one thread, and rayon's `par_iter` doing the same on its global
//! pool (one thread per core). Throughput: tasks per second.
//!
//! Run: `cargo bench -p stm-benches --bench queue`.

use criterion::{BenchmarkId, Criterion, Throughput};
use rayon::prelude::*;
use std::hint::black_box;
use std::sync::Arc;
use stm_core::{TVar, Tx, TxResult, atomically};
use stm_loop::TransactionQueue;

/// The variables the tasks write: the queue's state.
type Cells = Vec<TVar<u64>>;
type Task = Arc<dyn for<'t, 'e> Fn(&mut Tx<'t, 'e>, &'t Cells) -> TxResult<()> + Send + Sync>;

/// Boxes a task body (a function, so that the closure's parameter types come from its bound).
fn task(
    f: impl for<'t, 'e> Fn(&mut Tx<'t, 'e>, &'t Cells) -> TxResult<()> + Send + Sync + 'static,
) -> Task {
    Arc::new(f)
}

fn count_primes(below: u64) -> u64 {
    (2..below)
        .filter(|&n| (2..).take_while(|d| d * d <= n).all(|d| n % d != 0))
        .count() as u64
}

fn batch(kind: &str) -> Vec<Task> {
    let n = match kind {
        "heavy" => 64,
        _ => 1000,
    };
    (0..n)
        .map(|i| match kind {
            "empty" => task(|_, _| Ok(())),
            "tiny" => task(move |tx, cells| {
                tx.modify(&cells[i], |x| x.wrapping_add(1))?;
                Ok(())
            }),
            _ => task(move |tx, cells| {
                let c = count_primes(black_box(20_000));
                tx.write(&cells[i], c)
            }),
        })
        .collect()
}

fn queue(c: &mut Criterion) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cells: Arc<Cells> = Arc::new((0..1000).map(|_| TVar::new(0)).collect());
    for kind in ["empty", "tiny", "heavy"] {
        let tasks = batch(kind);
        let mut g = c.benchmark_group(format!("queue/{kind}"));
        g.throughput(Throughput::Elements(tasks.len() as u64));
        if kind == "heavy" {
            g.sample_size(10);
        }
        for workers in 1..=cores {
            let mut q = TransactionQueue::with_state(cells.clone()).workers(workers);
            g.bench_function(BenchmarkId::new("transaction-queue", workers), |b| {
                b.iter(|| {
                    for t in &tasks {
                        let t = t.clone();
                        q.add(move |tx, cells| t(tx, cells));
                    }
                    q.run()
                })
            });
        }
        g.bench_function("plain-loop", |b| {
            b.iter(|| {
                for t in &tasks {
                    atomically(|tx| t(tx, &cells));
                }
            })
        });
        g.bench_function(
            BenchmarkId::new("rayon-par-iter", rayon::current_num_threads()),
            |b| {
                b.iter(|| {
                    tasks
                        .par_iter()
                        .for_each(|t| atomically(|tx| t(tx, &cells)))
                })
            },
        );
        g.finish();
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    queue(&mut c);
    c.final_summary();
}
