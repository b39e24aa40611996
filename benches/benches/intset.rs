//! TinySTM's integer-set workloads: committed operations per second.
//!
//! Workload (TinySTM `intset` defaults): keys drawn uniformly from `0..512`, 256 elements
//! inserted first, 20% updates (10% inserts, 10% removes of a random key, so the size stays near
//! 256) and 80% lookups; every operation is one transaction (or one lock hold). Structures: a
//! sorted linked list, a skip list, a red-black tree and a chained hash set, each
//! `stm_benches::intset` code run as `stm_core` transactions over `TVar<u32>` words, and the
//! same code over plain words behind one `Mutex` and behind one `RwLock`. 1 and 2 threads (and
//! every count up to the machine's parallelism); one criterion iteration is one operation per
//! thread, so the throughput line is committed operations per second.
//!
//! Run: `cargo bench -p stm-benches --bench intset`.

use criterion::{BenchmarkId, Criterion, Throughput};
use stm_benches::intset::{IntSetWorkload, all_sets};
use stm_benches::workload::run_threads;

fn intset(c: &mut Criterion) {
    let w = IntSetWorkload::default();
    let max = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2);
    let sets = all_sets(w.range).expect("the default range is valid");
    for (_, set) in &sets {
        w.fill(&**set, 1).expect("keys are in range");
    }
    for structure in ["list", "skiplist", "rbtree", "hashset"] {
        let mut g = c.benchmark_group(format!("intset/{structure}"));
        for threads in 1..=max {
            g.throughput(Throughput::Elements(threads as u64));
            let prefix = format!("{structure}/");
            for (_, set) in sets.iter().filter(|(n, _)| n.starts_with(&prefix)) {
                let sync = set.sync_name();
                g.bench_function(BenchmarkId::new(sync, threads), |b| {
                    b.iter_custom(|iters| {
                        run_threads(threads, iters, iters ^ 0x5eed, |_, rng| {
                            w.op(&**set, rng).expect("keys are in range");
                        })
                    })
                });
            }
        }
        g.finish();
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    intset(&mut c);
    c.final_summary();
}
