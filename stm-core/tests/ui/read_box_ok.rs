// Twin of read_box_escape_fail.rs / read_box_local_fail.rs: the TBox lives outside the body; use
// the reference inside the attempt and carry out a clone (or what was computed from it).
use stm_core::{TBox, TxError, atomically, try_atomically};

fn main() {
    let names = TBox::new(vec![String::from("a")]);
    let first: String = atomically(|tx| Ok(tx.read_box(&names)?[0].clone()));
    let mut kept: Vec<Vec<String>> = Vec::new();
    atomically(|tx| {
        kept.push(tx.read_box(&names)?.clone());
        Ok(())
    });
    let err: Result<(), String> =
        try_atomically(|tx| Err(TxError::User(tx.read_box(&names)?[0].clone())));
    assert_eq!(err, Err(String::from("a")));
    atomically(|tx| tx.write_box(&names, Vec::new()));
    assert_eq!((first.as_str(), kept[0].len()), ("a", 1));
    assert!(names.load().is_empty());
}
