// If this compiled: the map, local to the body, is dropped with its buckets; the commit then
// installs the new entry into a freed bucket (heap use-after-free write).
use stm_core::{atomically, collections::TMap};

fn main() {
    atomically(|tx| {
        let hits = TMap::new();
        hits.insert(tx, "home", 1u64)?;
        Ok(())
    });
}
