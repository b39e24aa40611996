// If this compiled: the held clone is dropped when the attempt ends; it was the last Arc, so
// `slot` and `held` point into the freed TVar (heap use-after-free read).
use std::cell::RefCell;
use std::sync::Arc;
use stm_core::{TVar, atomically};

fn main() {
    let slot: RefCell<Option<&TVar<u64>>> = RefCell::new(None);
    atomically(|tx| {
        *slot.borrow_mut() = Some(tx.hold(Arc::new(TVar::new(0))));
        Ok(())
    });
    let held: &TVar<u64> = atomically(|tx| Ok(tx.hold(Arc::new(TVar::new(0)))));
    println!("{} {}", slot.borrow().is_some(), held.load());
}
