// Twin of forged_ref_fail.rs: the TVar and the TBox live outside the body, so both stay alive
// (at distinct addresses) until the commit.
use stm_core::{TBox, TVar, atomically};

fn main() {
    let v = Box::new(TVar::new(0u64));
    let b = Box::new(TBox::new(String::from("x")));
    let len = atomically(|tx| {
        tx.write(&v, 0xdead)?;
        Ok(tx.read_box(&b)?.len())
    });
    assert_eq!((len, v.load()), (1, 0xdead));
}
