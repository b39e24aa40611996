// Twin of realloc_push_fail.rs: size the Vec before the transaction, push after it.
use stm_core::{TVar, atomically};

fn main() {
    let mut vars: Vec<TVar<u64>> = (0..4).map(|_| TVar::new(0)).collect();
    atomically(|tx| {
        for v in &vars {
            tx.modify(v, |n| n + 1)?;
        }
        Ok(())
    });
    vars.push(TVar::new(0));
    atomically(|tx| tx.write(&vars[4], 7));
    let all: Vec<u64> = vars.iter().map(TVar::load).collect();
    assert_eq!(all, [1, 1, 1, 1, 7]);
}
