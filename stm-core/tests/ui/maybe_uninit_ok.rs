// Twin of maybe_uninit_fail.rs: initialise and free the Box outside the transaction.
use std::mem::MaybeUninit;
use stm_core::{TVar, atomically};

fn main() {
    let mut b = Box::new(MaybeUninit::uninit());
    let v: &TVar<u64> = b.write(TVar::new(0));
    assert_eq!(atomically(|tx| tx.modify(v, |n| n + 1)), 1);
    assert_eq!(v.load(), 1);
    drop(b);
}
