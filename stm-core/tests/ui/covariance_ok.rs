// Twin of covariance_fail.rs / helper_elided_fail.rs: a writing helper names the attempt `'t`
// and takes a variable that lives for it (borrowed from outside the body).
use stm_core::{TVar, Tx, TxResult, atomically};

fn set<'t>(tx: &Tx<'t, '_>, v: &'t TVar<u64>) -> TxResult<()> {
    tx.write(v, 1)
}

fn main() {
    let v = TVar::new(0u64);
    atomically(|tx| set(tx, &v));
    assert_eq!(v.load(), 1);
}
