// Twin of tmap_local_fail.rs: the map lives outside the body; a value borrowed from it (here an
// `Arc<TCounter>`) lives for the attempt, so it can be written too.
use std::sync::Arc;
use stm_core::{
    atomically,
    collections::{TCounter, TMap},
};

fn main() {
    let hits: TMap<&str, Arc<TCounter>> = TMap::new();
    atomically(|tx| hits.insert(tx, "home", Arc::new(TCounter::new())).map(drop));
    atomically(|tx| hits.get(tx, "home")?.unwrap().add(tx, 1));
    assert_eq!(atomically(|tx| hits.get(tx, "home")?.unwrap().get(tx)), 1);
}
