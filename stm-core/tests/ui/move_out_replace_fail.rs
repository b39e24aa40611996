// If this compiled: `mem::replace` puts a String where the written TVar was; the commit then
// stores 1 over the String's bytes, and dropping it frees a forged pointer (heap corruption).
use stm_core::{TVar, atomically};

enum Slot {
    Counter(TVar<u64>),
    Name(String),
}

fn main() {
    let mut slot = Slot::Counter(TVar::new(0));
    atomically(|tx| {
        if let Slot::Counter(c) = &slot {
            tx.write(c, 1)?;
        }
        let old = std::mem::replace(&mut slot, Slot::Name("x".into()));
        Ok(matches!(old, Slot::Counter(_)))
    });
    if let Slot::Name(s) = slot {
        println!("{s}");
    }
}
