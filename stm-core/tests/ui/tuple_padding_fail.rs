// `(u8, u32)` has 3 padding bytes, which a word copy would read uninitialised: the tuple impl of
// `Word` refuses it when `TVar::new` is instantiated. Twin: not_word_ok.rs.
use stm_core::TVar;

fn main() {
    let v = TVar::new((1u8, 2u32));
    assert_eq!(v.load(), (1, 2));
}
