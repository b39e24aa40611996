// Twin of not_word_fail.rs and tuple_padding_fail.rs: a `String` goes in a `TBox`; a tuple
// whose fields fill it exactly is a `Word`.
use stm_core::{TBox, TVar, atomically};

fn main() {
    let name = TBox::new(String::from("a"));
    atomically(|tx| {
        let next = format!("{}b", tx.read_box(&name)?);
        tx.write_box(&name, next)
    });
    assert_eq!(name.load(), "ab");

    let v = TVar::new((1u8, 2u8, 3u16, 4u32));
    atomically(|tx| tx.modify(&v, |(a, b, c, d)| (b, a, c, d + 1)).map(drop));
    assert_eq!(v.load(), (2, 1, 3, 5));
}
