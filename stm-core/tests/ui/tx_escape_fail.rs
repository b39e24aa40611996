// If this compiled: a `Tx` used after its attempt ended would write into the thread's reset
// transaction state (or a later transaction's), bypassing validation and the commit protocol.
use std::cell::RefCell;
use stm_core::atomically;

fn main() {
    let mut leaked = None;
    atomically(|tx| {
        leaked = Some(tx);
        Ok(())
    });
    let mut all = Vec::new();
    atomically(|tx| {
        all.push(tx);
        Ok(())
    });
    let cell = RefCell::new(None);
    atomically(|tx| {
        *cell.borrow_mut() = Some(tx);
        Ok(())
    });
    let returned = atomically(|tx| Ok(tx));
    let inevitable = returned.is_inevitable();
    println!("{} {} {inevitable}", leaked.is_some(), all.len());
}
