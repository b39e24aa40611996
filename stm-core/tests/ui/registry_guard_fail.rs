// If this compiled: once the guard is gone another thread may replace the entry, dropping the
// last Arc and freeing the TVar before this commit stores into it (heap use-after-free write).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use stm_core::{TVar, atomically};

fn main() {
    let registry = Mutex::new(HashMap::from([("hits", Arc::new(TVar::new(0u64)))]));
    atomically(|tx| {
        let guard = registry.lock().unwrap();
        tx.modify(&guard["hits"], |n| n + 1)?;
        drop(guard);
        Ok(())
    });
}
