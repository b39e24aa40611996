// If this compiled: dropping the Box frees its heap block (ManuallyDrop only skips TVar's own
// destructor) and the commit then stores 1 into it (heap use-after-free write).
use std::mem::ManuallyDrop;
use stm_core::{TVar, atomically};

fn main() {
    atomically(|tx| {
        let b = Box::new(ManuallyDrop::new(TVar::new(0u64)));
        tx.write(&b, 1)?;
        drop(b);
        Ok(())
    });
}
