// Twin of move_closure_fail.rs: move a reference into the closure (or don't `move` at all).
use stm_core::{TVar, atomically};

fn main() {
    let v = TVar::new(0u64);
    let r = &v;
    atomically(move |tx| tx.write(r, 1));
    atomically(|tx| tx.modify(&v, |n| n + 1));
    assert_eq!(v.load(), 2);
}
