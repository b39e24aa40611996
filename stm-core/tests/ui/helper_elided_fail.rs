// If this compiled: the helper could be handed a body-local variable (see body_local_fail.rs),
// whose dead stack slot the commit then writes (stack use-after-return).
use stm_core::{TVar, Tx, TxResult, atomically};

fn bump(tx: &Tx<'_, '_>, v: &TVar<u64>) -> TxResult<u64> {
    tx.modify(v, |n| n + 1)
}

fn main() {
    let v = TVar::new(0u64);
    atomically(|tx| bump(tx, &v));
}
