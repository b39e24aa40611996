// Twin of move_out_pop_fail.rs: write inside the transaction, pop after it has committed.
use stm_core::{TVar, atomically};

fn main() {
    let mut vars = vec![TVar::new(0u64), TVar::new(0)];
    let mut done = Vec::new();
    atomically(|tx| tx.write(&vars[1], 1));
    done.extend(vars.pop());
    assert_eq!(vars.len(), 1);
    assert_eq!(done[0].load(), 1);
}
