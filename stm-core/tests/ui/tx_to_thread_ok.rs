// Twin of tx_to_thread_fail.rs: each thread runs its own transaction.
use stm_core::{TVar, atomically};

fn main() {
    let (a, b) = (TVar::new(0u64), TVar::new(0u64));
    std::thread::scope(|s| {
        s.spawn(|| atomically(|tx| tx.write(&a, 1)));
        atomically(|tx| tx.write(&b, 1));
    });
    assert_eq!((a.load(), b.load()), (1, 1));
}
