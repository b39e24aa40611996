// If this compiled: the FnOnce's captures die with its frame before the commit, which then
// stores 1 into that dead stack slot (stack use-after-return).
use stm_core::{TVar, inevitably};

fn main() {
    let captured = TVar::new(0u64);
    inevitably(move |tx| tx.write(&captured, 1)).unwrap();
}
