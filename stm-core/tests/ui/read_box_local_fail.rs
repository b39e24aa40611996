// If this compiled: the TBox local to the body is dropped, freeing its value, and `r` then reads
// the freed vector (heap use-after-free read).
use stm_core::{TBox, atomically};

fn main() {
    let n = atomically(|tx| {
        let b = TBox::new(vec![1u8, 2, 3]);
        let r: &Vec<u8> = tx.read_box(&b)?;
        drop(b);
        Ok(r.len())
    });
    println!("{n}");
}
