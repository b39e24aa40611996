// If this compiled: another thread replaces the entry, `counter` (then the last Arc) is dropped
// at the end of the body, and the commit stores into the freed TVar (heap use-after-free write).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use stm_core::{TVar, atomically};

fn main() {
    let registry = Mutex::new(HashMap::from([("hits", Arc::new(TVar::new(0u64)))]));
    atomically(|tx| {
        let counter = registry.lock().unwrap()["hits"].clone();
        tx.modify(&counter, |n| n + 1)?;
        Ok(())
    });
}
