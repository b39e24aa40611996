// Twin of manually_drop_fail.rs: the Box lives outside the body and is freed after the commit.
use std::mem::ManuallyDrop;
use stm_core::{TVar, atomically};

fn main() {
    let b = Box::new(ManuallyDrop::new(TVar::new(0u64)));
    atomically(|tx| tx.write(&b, 1));
    assert_eq!(b.load(), 1);
    drop(b);
}
