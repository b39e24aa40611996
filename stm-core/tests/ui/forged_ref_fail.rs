// If this compiled: `v`'s block is freed and reused for the TBox; the redo log, keyed by address,
// answers `read_box` with the u64 written to `v`: a `&String` forged from 0xdead (wild read).
use stm_core::{TBox, TVar, atomically};

fn main() {
    let len = atomically(|tx| {
        let v = Box::new(TVar::new(0u64));
        tx.write(&v, 0xdead)?;
        drop(v);
        let b = Box::new(TBox::new(String::from("x")));
        Ok(tx.read_box(&b)?.len())
    });
    println!("{len}");
}
