// Twin of inevitably_move_fail.rs: the body borrows the variable from the caller.
use stm_core::{TVar, inevitably};

fn main() {
    let captured = TVar::new(0u64);
    inevitably(|tx| tx.write(&captured, 1)).unwrap();
    let r = &captured;
    inevitably(move |tx| tx.modify(r, |n| n + 1)).unwrap();
    assert_eq!(captured.load(), 2);
}
