// Twin of tbox_with_fail.rs: `read_box` lends the value for the whole attempt.
use stm_core::{TBox, TVar, atomically};

fn main() {
    let counters = TBox::new(vec![TVar::new(0u64)]);
    atomically(|tx| tx.write(&tx.read_box(&counters)?[0], 1));
    assert_eq!(counters.with(|c| c[0].load()), 1);
}
