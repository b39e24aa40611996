// The twin of `read_tx_write_fail`: reads in `atomically_read`, the write in `atomically`.
use stm_core::{TVar, atomically, atomically_read};

fn main() {
    let v = TVar::new(1u64);
    atomically(|tx| tx.modify(&v, |x| x + 1));
    assert_eq!(atomically_read(|tx| tx.read(&v)), 2);
}
