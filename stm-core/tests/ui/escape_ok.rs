// Twin of tx_escape_fail.rs / hold_escape_fail.rs: hand the `Tx` to helpers inside the body and
// carry out values (or an `Arc` clone), never the `Tx` or a reference it lent.
use std::cell::RefCell;
use std::sync::Arc;
use stm_core::{TVar, Tx, TxResult, atomically};

fn bump<'t>(tx: &Tx<'t, '_>, v: &'t TVar<u64>) -> TxResult<u64> {
    tx.modify(v, |n| n + 1)
}

fn main() {
    let v = TVar::new(0u64);
    let slot: RefCell<Option<Arc<TVar<u64>>>> = RefCell::new(None);
    let n = atomically(|tx| {
        let shared = Arc::new(TVar::new(10u64));
        *slot.borrow_mut() = Some(shared.clone());
        let held = tx.hold(shared);
        tx.write(held, 11)?;
        bump(tx, &v)
    });
    assert_eq!(n, 1);
    assert_eq!(slot.borrow().as_ref().map(|s| s.load()), Some(11));
}
