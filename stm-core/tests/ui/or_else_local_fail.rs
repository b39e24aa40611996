// If this compiled: the branch's write is kept, but `v` died with the branch closure's frame;
// the commit stores 1 into that dead stack slot (stack use-after-return).
use stm_core::{TVar, atomically};

fn main() {
    atomically(|tx| {
        tx.or_else(
            |tx| {
                let v = TVar::new(0u64);
                tx.write(&v, 1)
            },
            |_| Ok(()),
        )
    });
}
