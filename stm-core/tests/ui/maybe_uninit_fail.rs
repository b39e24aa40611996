// If this compiled: the Box<MaybeUninit<TVar>> is freed (MaybeUninit runs no destructor) and the
// commit then stores 1 into the freed block (heap use-after-free write).
use std::mem::MaybeUninit;
use stm_core::{TVar, atomically};

fn main() {
    atomically(|tx| {
        let mut b = Box::new(MaybeUninit::uninit());
        let v: &TVar<u64> = b.write(TVar::new(0));
        tx.write(v, 1)?;
        drop(b);
        Ok(())
    });
}
