// Twin of body_local_fail.rs: the variable is a local of the caller, borrowed by the body.
use stm_core::{TVar, atomically};

fn main() {
    let v = TVar::new(0u64);
    atomically(|tx| tx.write(&v, 1));
    assert_eq!(v.load(), 1);
}
