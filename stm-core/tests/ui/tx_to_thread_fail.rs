// If this compiled: two threads would drive one transaction's unsynchronised state at once
// (a data race on its redo log and read set).
use stm_core::{TVar, atomically};

fn main() {
    let (a, b) = (TVar::new(0u64), TVar::new(0u64));
    atomically(|tx| {
        std::thread::scope(|s| {
            s.spawn(|| tx.write(&a, 1));
            tx.write(&b, 1)
        })
    });
}
