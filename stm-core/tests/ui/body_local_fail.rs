// If this compiled: `v` dies with the body's stack frame; the commit then stores 1 into that
// dead stack slot (stack use-after-return, corrupting whatever the runtime keeps there now).
use stm_core::{TVar, atomically};

fn main() {
    atomically(|tx| {
        let v = TVar::new(0u64);
        tx.write(&v, 1)
    });
}
