// If this compiled: `borrow_mut().push` reallocates the Vec the released guard lent; the commit
// then stores 1 into the freed buffer (heap use-after-free write).
use std::cell::RefCell;
use stm_core::{TVar, atomically};

fn main() {
    let cell = RefCell::new(vec![TVar::new(0u64)]);
    atomically(|tx| {
        tx.write(&cell.borrow()[0], 1)?;
        cell.borrow_mut().push(TVar::new(0));
        Ok(())
    });
}
