// If this compiled: `push` reallocates the buffer and frees the old one; the commit then stores
// 1 into the freed block (heap use-after-free write) and `vars[0]` stays 0.
use stm_core::{TVar, atomically};

fn main() {
    let mut vars = vec![TVar::new(0u64)];
    atomically(|tx| {
        tx.write(&vars[0], 1)?;
        vars.push(TVar::new(0));
        Ok(())
    });
    println!("{}", vars[0].load());
}
