// A `TVar` holds one machine word: a `String` is refused, and the error points at `TBox`
// (the `#[diagnostic::on_unimplemented]` on `Word`). Twin: not_word_ok.rs.
use stm_core::TVar;

fn main() {
    let _name = TVar::new(String::from("a"));
}
