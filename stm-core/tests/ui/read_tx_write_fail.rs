// The body of `atomically_read` gets a `ReadTx`, which has no way to write: a write, a
// `modify` or `become_inevitable` there does not compile (it would make a transaction that runs
// without a read set commit a write it never validated).
use stm_core::{TVar, atomically_read};

fn main() {
    let v = TVar::new(1u64);
    atomically_read(|tx| tx.write(&v, 2));
    atomically_read(|tx| tx.modify(&v, |x| x + 1));
    atomically_read(|tx| tx.become_inevitable());
}
