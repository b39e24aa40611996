// If this compiled: `*boxed` moves the written TVar out and frees the Box's heap block; the
// commit then stores 1 into the freed block (heap use-after-free write).
use stm_core::{TVar, atomically};

fn main() {
    let n = atomically(|tx| {
        let boxed = Box::new(TVar::new(0u64));
        tx.write(&boxed, 1)?;
        let moved: TVar<u64> = *boxed;
        Ok(moved.into_inner())
    });
    println!("{n}");
}
