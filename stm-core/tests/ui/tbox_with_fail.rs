// If this compiled: `with` lends the value without pinning it for the attempt; a concurrent
// `write_box` retires it and the epoch frees it before this commit stores into it (use-after-free).
use stm_core::{TBox, TVar, atomically};

fn main() {
    let counters = TBox::new(vec![TVar::new(0u64)]);
    atomically(|tx| counters.with(|c| tx.write(&c[0], 1)));
}
