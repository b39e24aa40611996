// Twin of registry_guard_fail.rs / registry_clone_fail.rs: `tx.hold` keeps the clone alive until
// the attempt has ended, so replacing the entry (dropping the map's Arc) before the commit is fine.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use stm_core::{TVar, atomically};

fn main() {
    let old = Arc::new(TVar::new(0u64));
    let watch = Arc::downgrade(&old);
    let registry = Mutex::new(HashMap::from([("hits", old)]));
    let n = atomically(|tx| {
        let counter = tx.hold(registry.lock().unwrap()["hits"].clone());
        let n = tx.modify(counter, |n| n + 1)?;
        // What another thread may do at any time: the map's Arc is dropped here.
        let fresh = Arc::new(TVar::new(100));
        registry.lock().unwrap().insert("hits", fresh);
        Ok(n)
    });
    assert_eq!(n, 1);
    assert_eq!(registry.lock().unwrap()["hits"].load(), 100);
    // The held clone was the last one: released after the commit.
    assert!(watch.upgrade().is_none());
}
