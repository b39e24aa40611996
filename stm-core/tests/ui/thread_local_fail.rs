// If this compiled: no UB by itself (the slot lives as long as the thread), but `with` lends it
// only for its closure, like a guard; refused conservatively (run the transaction inside `with`).
use stm_core::{TVar, atomically};

thread_local! {
    static HITS: TVar<u64> = const { TVar::new(0) };
}

fn main() {
    atomically(|tx| HITS.with(|h| tx.modify(h, |n| n + 1)));
}
