// If this compiled: the closure owns the Box; `*boxed` moves the TVar out and frees the heap
// block before the commit stores 1 into it (heap use-after-free write).
use stm_core::{TVar, inevitably};

fn main() {
    let boxed = Box::new(TVar::new(0u64));
    let n = inevitably(move |tx| {
        tx.write(&boxed, 1).unwrap();
        let moved: TVar<u64> = *boxed;
        moved.into_inner()
    });
    println!("{n}");
}
