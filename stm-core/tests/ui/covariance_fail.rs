// If this compiled: 't shortened through `&Tx` to the life of a body local; the commit then
// stores 1 into the dead stack slot of `v` (stack use-after-return).
use stm_core::{TVar, Tx, TxResult, atomically};

fn set<'a>(tx: &'a Tx<'a, '_>, v: &'a TVar<u64>) -> TxResult<()> {
    tx.write(v, 1)
}

fn main() {
    atomically(|tx| {
        let v = TVar::new(0u64);
        set(tx, &v)
    });
}
