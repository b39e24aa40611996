// If this compiled: `pop` moves the written TVar out of the Vec's buffer; the commit stores 1
// into the vacated slot (dead memory, freed or reused by the next push) and `done[0]` stays 0.
use stm_core::{TVar, atomically};

fn main() {
    let mut vars = vec![TVar::new(0u64), TVar::new(0)];
    let mut done = Vec::new();
    atomically(|tx| {
        tx.write(&vars[1], 1)?;
        done.extend(vars.pop());
        Ok(())
    });
    println!("{}", done.len());
}
