// Twin of or_else_local_fail.rs: the branches write variables from outside the body.
use stm_core::{TVar, atomically};

fn main() {
    let (a, b) = (TVar::new(0u64), TVar::new(0u64));
    atomically(|tx| {
        tx.or_else(
            |tx| {
                tx.write(&a, 1)?;
                tx.retry()
            },
            |tx| tx.write(&b, 1),
        )
    });
    assert_eq!((a.load(), b.load()), (0, 1));
}
