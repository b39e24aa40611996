// If this compiled: the references point into the box's current value; the next `write_box`
// retires it and the epoch frees it, so `first`, `kept`, `err` read freed memory (use-after-free).
use stm_core::{TBox, TxError, atomically, try_atomically};

fn main() {
    let names = TBox::new(vec![String::from("a")]);
    let first: &String = atomically(|tx| Ok(&tx.read_box(&names)?[0]));
    let mut kept: Vec<&Vec<String>> = Vec::new();
    atomically(|tx| {
        kept.push(tx.read_box(&names)?);
        Ok(())
    });
    let err: Result<(), &String> =
        try_atomically(|tx| Err(TxError::User(&tx.read_box(&names)?[0])));
    atomically(|tx| tx.write_box(&names, Vec::new()));
    println!("{first} {} {err:?}", kept.len());
}
