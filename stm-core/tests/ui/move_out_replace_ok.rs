// Twin of move_out_replace_fail.rs: write inside the transaction, replace after the commit.
use stm_core::{TVar, atomically};

enum Slot {
    Counter(TVar<u64>),
    Name(String),
}

fn main() {
    let mut slot = Slot::Counter(TVar::new(0));
    atomically(|tx| match &slot {
        Slot::Counter(c) => tx.write(c, 1),
        Slot::Name(_) => Ok(()),
    });
    let old = std::mem::replace(&mut slot, Slot::Name("x".into()));
    let Slot::Counter(c) = old else {
        panic!("the counter was there")
    };
    assert_eq!(c.into_inner(), 1);
    assert!(matches!(slot, Slot::Name(s) if s == "x"));
}
