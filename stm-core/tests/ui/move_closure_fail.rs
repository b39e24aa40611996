// If this compiled: no UB here (`atomically` keeps the closure alive past the commit), but a
// capture is lent for one call only; the same write under `inevitably` is a use-after-return.
use stm_core::{TVar, atomically};

fn main() {
    let v = TVar::new(0u64);
    atomically(move |tx| tx.write(&v, 1));
}
