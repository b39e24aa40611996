// Twin of move_out_box_fail.rs / move_out_box_capture_fail.rs: the Box is borrowed from outside
// the body, and moved out of only after `atomically` has returned (the write is committed).
use stm_core::{TVar, atomically};

fn main() {
    let boxed = Box::new(TVar::new(0u64));
    atomically(|tx| tx.write(&boxed, 1));
    let moved: TVar<u64> = *boxed;
    assert_eq!(moved.into_inner(), 1);
}
