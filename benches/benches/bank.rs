//! The bank workload: committed operations per second.
//!
//! Workload: 1024 accounts of 1000 each; 80% of operations transfer 1..=10 between two random
//! accounts, 20% read every account and check the total (an audit). `stm_core` (each operation
//! one transaction over `TVar<i64>` accounts) against a `Mutex` per account (transfers lock two
//! in index order, audits lock all 1024 in order) and one global `Mutex`. 1 and 2 threads (and
//! every count up to the machine's parallelism); one criterion iteration is one operation per
//! thread, so the throughput line is committed operations per second.
//!
//! Run: `cargo bench -p stm-benches --bench bank`.

use criterion::{BenchmarkId, Criterion, Throughput};
use stm_benches::bank::BankWorkload;
use stm_benches::workload::run_threads;

fn bank(c: &mut Criterion) {
    let w = BankWorkload::default();
    let max = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2);
    let banks = w.all_banks();
    let mut g = c.benchmark_group("bank");
    for threads in 1..=max {
        g.throughput(Throughput::Elements(threads as u64));
        for bank in &banks {
            g.bench_function(BenchmarkId::new(bank.name(), threads), |b| {
                b.iter_custom(|iters| {
                    run_threads(threads, iters, iters ^ 0xba4c, |_, rng| {
                        let ok = w.op(&**bank, rng);
                        assert!(ok, "{}: an audit saw a wrong total", bank.name());
                    })
                })
            });
        }
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bank(&mut c);
    c.final_summary();
}
