// Twin of refcell_guard_fail.rs: keep the guard alive across the transaction; push after it.
use std::cell::RefCell;
use stm_core::{TVar, atomically};

fn main() {
    let cell = RefCell::new(vec![TVar::new(0u64)]);
    {
        let vars = cell.borrow();
        atomically(|tx| tx.write(&vars[0], 1));
    }
    cell.borrow_mut().push(TVar::new(2));
    let all: Vec<u64> = cell.borrow().iter().map(TVar::load).collect();
    assert_eq!(all, [1, 2]);
}
